-- features.post_features: one row per post in raw.posts.
-- Early trajectory (as-of views at 1/3/6/12/24/48 h), the same normalised by
-- subscribers at publish (reach), calendar, media, text, channel baselines
-- computed without look-ahead, and the 48 h targets of the engagement and
-- viral models. Columns needing a missing raw table come out NULL.
--
-- Value at age h = the last snapshot with observed_at <= published_at + h + 5 min,
-- kept only when the post has been observed at an age >= h - 5 min (else NULL:
-- not yet known).
WITH ages AS (
    SELECT unnest([60, 180, 360, 720, 1440, 2880])::INTEGER AS age_minutes
),
observed AS (
    SELECT
        channel_id,
        post_id,
        -- snapshots without views (a Telegram Desktop export carries reactions only)
        -- must not count as "observed at this age" for the view features
        max(observed_at) FILTER (WHERE views IS NOT NULL) AS last_observed_at,
        arg_max(views, observed_at) FILTER (WHERE views IS NOT NULL) AS views_latest,
        arg_max(forwards, observed_at) FILTER (WHERE forwards IS NOT NULL) AS forwards_latest,
        arg_max(replies, observed_at) FILTER (WHERE replies IS NOT NULL) AS replies_latest,
        arg_max(reactions, observed_at) FILTER (WHERE reactions IS NOT NULL) AS reactions_latest
    FROM raw.post_snapshots
    GROUP BY channel_id, post_id
),
probe AS (
    SELECT
        p.channel_id,
        p.post_id,
        a.age_minutes,
        p.published_at + to_minutes(a.age_minutes + 5) AS lookup_at
    FROM raw.posts AS p
    JOIN observed AS o USING (channel_id, post_id)
    CROSS JOIN ages AS a
    WHERE o.last_observed_at >= p.published_at + to_minutes(a.age_minutes - 5)
),
as_of_age AS (
    SELECT pr.channel_id, pr.post_id, pr.age_minutes,
           s.views, s.forwards, s.replies, s.reactions
    FROM probe AS pr
    ASOF JOIN (SELECT * FROM raw.post_snapshots WHERE views IS NOT NULL) AS s
        ON pr.channel_id = s.channel_id
        AND pr.post_id = s.post_id
        AND pr.lookup_at >= s.observed_at
),
at_age AS (
    SELECT
        channel_id,
        post_id,
        max(views) FILTER (WHERE age_minutes = 60) AS views_1h,
        max(views) FILTER (WHERE age_minutes = 180) AS views_3h,
        max(views) FILTER (WHERE age_minutes = 360) AS views_6h,
        max(views) FILTER (WHERE age_minutes = 720) AS views_12h,
        max(views) FILTER (WHERE age_minutes = 1440) AS views_24h,
        max(views) FILTER (WHERE age_minutes = 2880) AS views_48h,
        max(forwards) FILTER (WHERE age_minutes = 180) AS forwards_3h,
        max(replies) FILTER (WHERE age_minutes = 180) AS replies_3h,
        max(reactions) FILTER (WHERE age_minutes = 180) AS reactions_3h,
        max(forwards) FILTER (WHERE age_minutes = 2880) AS forwards_48h,
        max(replies) FILTER (WHERE age_minutes = 2880) AS replies_48h,
        max(reactions) FILTER (WHERE age_minutes = 2880) AS reactions_48h
    FROM as_of_age
    GROUP BY channel_id, post_id
),
base AS (
    SELECT
        p.channel_id,
        p.post_id,
        p.published_at,
        (isodow(p.published_at) - 1)::INTEGER AS weekday,
        hour(p.published_at)::INTEGER AS hour,
        p.media_type,
        length(coalesce(p.text, ''))::INTEGER AS text_length,
        p.text,
        d.subscribers AS subscribers_at_publish,
        o.last_observed_at,
        date_diff('second', p.published_at, o.last_observed_at) / 3600.0 AS hours_observed,
        o.views_latest,
        o.forwards_latest,
        o.replies_latest,
        o.reactions_latest,
        a.views_1h,
        a.views_3h,
        a.views_6h,
        a.views_12h,
        a.views_24h,
        a.views_48h,
        a.forwards_3h,
        a.replies_3h,
        a.reactions_3h,
        a.forwards_48h,
        a.replies_48h,
        a.reactions_48h,
        a.forwards_48h + a.replies_48h + a.reactions_48h AS interactions_48h
    FROM raw.posts AS p
    LEFT JOIN observed AS o USING (channel_id, post_id)
    LEFT JOIN at_age AS a USING (channel_id, post_id)
    ASOF LEFT JOIN raw.channel_daily AS d
        ON p.channel_id = d.channel_id
        AND p.published_at::DATE >= d.day
)
SELECT
    * EXCLUDE (prior_views, prior_forwards, prior_settled, views_settled, views_settled_basis,
               channel_prior_posts_48h, channel_prior_median_views_48h,
               channel_prior_mean_log_views_48h),
    views_1h / NULLIF(subscribers_at_publish, 0) AS reach_1h,
    views_3h / NULLIF(subscribers_at_publish, 0) AS reach_3h,
    views_6h / NULLIF(subscribers_at_publish, 0) AS reach_6h,
    views_12h / NULLIF(subscribers_at_publish, 0) AS reach_12h,
    views_24h / NULLIF(subscribers_at_publish, 0) AS reach_24h,
    views_48h / NULLIF(subscribers_at_publish, 0) AS reach_48h,
    -- posts of the channel published strictly earlier (ties are not "before")
    (rank() OVER (PARTITION BY channel_id ORDER BY published_at) - 1)::BIGINT
        AS channel_prior_posts,
    channel_prior_posts_48h,
    channel_prior_median_views_48h,
    channel_prior_mean_log_views_48h,
    -- targets, each against the channel's posts published before this one within a
    -- trailing window (labels never look ahead: a later post cannot change them).
    -- percentile = (earlier posts below + half of those equal) / earlier posts known,
    -- NULL until the channel has 5 earlier posts with the value known
    CASE WHEN views_48h IS NOT NULL AND len(list_filter(prior_views, lambda x: x IS NOT NULL)) >= 5 THEN
        (len(list_filter(prior_views, lambda x: x < views_48h))
         + 0.5 * len(list_filter(prior_views, lambda x: x = views_48h)))
        / len(list_filter(prior_views, lambda x: x IS NOT NULL))
    END AS view_percentile_48h,
    -- above the median of the posts whose 48 h value was known when this one was published
    CASE WHEN views_48h IS NOT NULL AND channel_prior_posts_48h >= 5 THEN
        views_48h > channel_prior_median_views_48h
    END AS above_channel_median,
    CASE WHEN forwards_48h IS NOT NULL
              AND len(list_filter(prior_forwards, lambda x: x IS NOT NULL)) >= 5 THEN
        (len(list_filter(prior_forwards, lambda x: x < forwards_48h))
         + 0.5 * len(list_filter(prior_forwards, lambda x: x = forwards_48h)))
        / len(list_filter(prior_forwards, lambda x: x IS NOT NULL))
    END AS forwards_percentile_48h,
    -- viral = top decile of 48 h forwards among the channel's earlier posts
    CASE WHEN forwards_48h IS NOT NULL
              AND len(list_filter(prior_forwards, lambda x: x IS NOT NULL)) >= 5 THEN
        (len(list_filter(prior_forwards, lambda x: x < forwards_48h))
         + 0.5 * len(list_filter(prior_forwards, lambda x: x = forwards_48h)))
        / len(list_filter(prior_forwards, lambda x: x IS NOT NULL)) >= 0.9
    END AS is_viral,
    views_settled,
    views_settled_basis,
    -- the same backward-looking percentile on the settled count (partial data: a
    -- post seen once, days after publication, still ranks against earlier posts)
    CASE WHEN views_settled IS NOT NULL
              AND len(list_filter(prior_settled, lambda x: x IS NOT NULL)) >= 5 THEN
        (len(list_filter(prior_settled, lambda x: x < views_settled))
         + 0.5 * len(list_filter(prior_settled, lambda x: x = views_settled)))
        / len(list_filter(prior_settled, lambda x: x IS NOT NULL))
    END AS settled_view_percentile
FROM (
    SELECT
        *,
        -- earlier posts (strictly earlier publish time) within the trailing 90 days
        list(views_48h) OVER earlier AS prior_views,
        list(forwards_48h) OVER earlier AS prior_forwards,
        list(views_settled) OVER earlier AS prior_settled,
        count(views_48h) OVER prior_48h AS channel_prior_posts_48h,
        median(views_48h) OVER prior_48h AS channel_prior_median_views_48h,
        avg(ln(1 + views_48h)) OVER prior_48h AS channel_prior_mean_log_views_48h
    FROM (
        SELECT
            *,
            -- settled views: the 48 h count, or for a post older than 7 days without
            -- one (a collector that started late, a one-off export) its latest count;
            -- views saturate within ~48 h, so after 7 days the latest is as good
            coalesce(views_48h, CASE WHEN hours_observed >= 168 THEN views_latest END)
                AS views_settled,
            CASE WHEN views_48h IS NOT NULL THEN '48h'
                 WHEN hours_observed >= 168 AND views_latest IS NOT NULL THEN 'latest_after_7d'
            END AS views_settled_basis
        FROM base
    )
    WINDOW
        earlier AS (
            PARTITION BY channel_id ORDER BY published_at
            RANGE BETWEEN INTERVAL '90 days' PRECEDING AND INTERVAL '1 microsecond' PRECEDING),
        -- posts published >= 48 h 5 min before this one: their as-of 48 h value
        -- (tolerance included) was observed before this post existed
        prior_48h AS (
            PARTITION BY channel_id ORDER BY published_at
            RANGE BETWEEN INTERVAL '90 days' PRECEDING
                      AND INTERVAL '48 hours 5 minutes' PRECEDING)
)
ORDER BY channel_id, published_at, post_id
