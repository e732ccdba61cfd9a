-- features.post_features: one row per post in raw.posts.
-- Early trajectory (as-of views at 1/3/6/12/24/48 h), the same normalised by
-- subscribers at publish (reach), calendar, media, text, channel baselines
-- computed without look-ahead, and the 48 h targets of the engagement and
-- viral models. Columns needing a missing raw table come out NULL.
--
-- Value at age h = the last snapshot with observed_at <= published_at + h + 5 min,
-- kept only when the post has been observed at an age >= h - 5 min (else NULL:
-- not yet known).
-- One hash join (each snapshot gets its post's age) and one aggregate per post
-- compute the latest counters and every as-of value: no ASOF join over
-- posts x ages, no pivot. Ages are integer microseconds (epoch_us difference);
-- the constants below are (h * 60 +- 5) minutes * 60 000 000.
WITH aged AS (
    SELECT
        s.channel_id,
        s.post_id,
        s.observed_at,
        s.views,
        s.forwards,
        s.replies,
        s.reactions,
        epoch_us(s.observed_at) - epoch_us(p.published_at) AS age_us
    FROM raw.post_snapshots AS s
    JOIN raw.posts AS p USING (channel_id, post_id)
),
per_post AS (
    SELECT
        channel_id,
        post_id,
        -- snapshots without views (a Telegram Desktop export carries reactions only)
        -- must not count as "observed at this age" for the view features
        max(observed_at) FILTER (WHERE views IS NOT NULL) AS last_observed_at,
        max(age_us) FILTER (WHERE views IS NOT NULL) AS last_age_us,
        arg_max(views, observed_at) FILTER (WHERE views IS NOT NULL) AS views_latest,
        arg_max(forwards, observed_at) FILTER (WHERE forwards IS NOT NULL) AS forwards_latest,
        arg_max(replies, observed_at) FILTER (WHERE replies IS NOT NULL) AS replies_latest,
        arg_max(reactions, observed_at) FILTER (WHERE reactions IS NOT NULL) AS reactions_latest,
        -- the latest snapshot with views at an age <= h + 5 min; arg_max_null keeps that
        -- row's counter even when it is NULL
        arg_max_null(views, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 3900000000) AS v1,
        arg_max_null(views, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 11100000000) AS v3,
        arg_max_null(views, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 21900000000) AS v6,
        arg_max_null(views, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 43500000000) AS v12,
        arg_max_null(views, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 86700000000) AS v24,
        arg_max_null(views, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 173100000000) AS v48,
        arg_max_null(forwards, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 11100000000) AS f3,
        arg_max_null(replies, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 11100000000) AS r3,
        arg_max_null(reactions, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 11100000000) AS x3,
        arg_max_null(forwards, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 173100000000) AS f48,
        arg_max_null(replies, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 173100000000) AS r48,
        arg_max_null(reactions, age_us) FILTER (WHERE views IS NOT NULL AND age_us <= 173100000000)
            AS x48
    FROM aged
    GROUP BY channel_id, post_id
),
-- a value at h is kept only once the post was observed at an age >= h - 5 min
observed AS (
    SELECT
        channel_id,
        post_id,
        last_observed_at,
        views_latest,
        forwards_latest,
        replies_latest,
        reactions_latest,
        CASE WHEN last_age_us >= 3300000000 THEN v1 END AS views_1h,
        CASE WHEN last_age_us >= 10500000000 THEN v3 END AS views_3h,
        CASE WHEN last_age_us >= 21300000000 THEN v6 END AS views_6h,
        CASE WHEN last_age_us >= 42900000000 THEN v12 END AS views_12h,
        CASE WHEN last_age_us >= 86100000000 THEN v24 END AS views_24h,
        CASE WHEN last_age_us >= 172500000000 THEN v48 END AS views_48h,
        CASE WHEN last_age_us >= 10500000000 THEN f3 END AS forwards_3h,
        CASE WHEN last_age_us >= 10500000000 THEN r3 END AS replies_3h,
        CASE WHEN last_age_us >= 10500000000 THEN x3 END AS reactions_3h,
        CASE WHEN last_age_us >= 172500000000 THEN f48 END AS forwards_48h,
        CASE WHEN last_age_us >= 172500000000 THEN r48 END AS replies_48h,
        CASE WHEN last_age_us >= 172500000000 THEN x48 END AS reactions_48h
    FROM per_post
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
        o.views_1h,
        o.views_3h,
        o.views_6h,
        o.views_12h,
        o.views_24h,
        o.views_48h,
        o.forwards_3h,
        o.replies_3h,
        o.reactions_3h,
        o.forwards_48h,
        o.replies_48h,
        o.reactions_48h,
        o.forwards_48h + o.replies_48h + o.reactions_48h AS interactions_48h
    FROM raw.posts AS p
    LEFT JOIN observed AS o USING (channel_id, post_id)
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
