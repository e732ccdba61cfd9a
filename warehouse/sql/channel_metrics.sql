-- features.channel_metrics: the traditional analytics, one row per channel seen
-- in raw.channels, raw.posts or raw.channel_daily. Subscriber-based metrics are
-- NULL when the channel has no raw.channel_daily rows. "Recent" metrics (ERR,
-- ER, reach) use the channel's posts published in the 30 days up to as_of whose
-- value at that age is known. View-based metrics use each post's settled count
-- (48 h views, or the latest count of a post older than 7 days without one);
-- views_basis says which.
WITH channel_ids AS (
    SELECT channel_id FROM raw.channels
    UNION
    SELECT channel_id FROM raw.posts
    UNION
    SELECT channel_id FROM raw.channel_daily
),
subs AS (
    SELECT
        channel_id,
        max(day) AS subscribers_day,
        arg_max(subscribers, day) AS subscribers,
        min(day) AS first_day,
        arg_min(subscribers, day) AS first_subscribers
    FROM raw.channel_daily
    GROUP BY channel_id
),
subs_30d AS (
    -- as-of: the latest row on or before (latest day - 30 days)
    SELECT s.channel_id, d.day AS ref_day, d.subscribers AS subscribers_30d_ago
    FROM subs AS s
    ASOF JOIN raw.channel_daily AS d
        ON s.channel_id = d.channel_id
        AND s.subscribers_day - 30 >= d.day
),
post_stats AS (
    SELECT
        channel_id,
        count(*) AS n_posts,
        min(published_at) AS first_published_at,
        max(published_at) AS last_published_at,
        max(last_observed_at) AS last_observed_at,
        avg(views_settled) AS views_per_post,
        count(*) FILTER (WHERE views_settled_basis = '48h') AS n_posts_48h,
        count(*) FILTER (WHERE views_settled_basis = 'latest_after_7d') AS n_posts_settled_late
    FROM features.post_features
    GROUP BY channel_id
),
as_of AS (
    SELECT
        c.channel_id,
        greatest(ps.last_observed_at, ps.last_published_at, s.subscribers_day::TIMESTAMP)
            AS as_of
    FROM channel_ids AS c
    LEFT JOIN post_stats AS ps USING (channel_id)
    LEFT JOIN subs AS s USING (channel_id)
),
recent AS (
    SELECT
        pf.channel_id,
        avg(pf.views_settled) AS mean_views_48h_30d,
        sum(pf.interactions_settled) FILTER (WHERE pf.views_settled IS NOT NULL)
            / NULLIF(sum(pf.views_settled) FILTER (WHERE pf.interactions_settled IS NOT NULL), 0)
            AS er,
        avg(pf.reach_12h) AS reach_12h,
        avg(pf.reach_24h) AS reach_24h,
        avg(pf.reach_48h) AS reach_48h
    FROM (
        SELECT
            *,
            CASE WHEN views_settled_basis = '48h' THEN interactions_48h
                 WHEN views_settled_basis = 'latest_after_7d'
                 THEN forwards_latest + replies_latest + reactions_latest
            END AS interactions_settled
        FROM features.post_features
    ) AS pf
    JOIN as_of AS a USING (channel_id)
    WHERE pf.published_at > a.as_of - INTERVAL 30 DAY
    GROUP BY pf.channel_id
),
hour_stats AS (
    SELECT channel_id, hour, avg(settled_view_percentile) AS mean_view_percentile
    FROM features.post_features
    WHERE settled_view_percentile IS NOT NULL
    GROUP BY channel_id, hour
    HAVING count(*) >= 3
),
best AS (
    SELECT channel_id, list(hour ORDER BY mean_view_percentile DESC, hour)[1:3] AS best_hours
    FROM hour_stats
    GROUP BY channel_id
),
top AS (
    SELECT channel_id, list(post_id ORDER BY views_settled DESC, post_id)[1:5] AS top_post_ids
    FROM features.post_features
    WHERE views_settled IS NOT NULL
    GROUP BY channel_id
)
SELECT
    c.channel_id,
    ch.username,
    ch.title,
    s.subscribers,
    s.subscribers_day,
    s30.subscribers_30d_ago,
    -- mean daily delta since the 30-days-back row (or the first row if the
    -- history is shorter): telescoped, so gaps in the daily series are fine
    (s.subscribers - coalesce(s30.subscribers_30d_ago, s.first_subscribers))
        / NULLIF(date_diff('day', coalesce(s30.ref_day, s.first_day), s.subscribers_day), 0)
        AS daily_growth,
    (s.subscribers - s30.subscribers_30d_ago) / NULLIF(s30.subscribers_30d_ago, 0)
        AS growth_rate_30d,
    coalesce(ps.n_posts, 0)::BIGINT AS n_posts,
    ps.n_posts / (date_diff('day', ps.first_published_at::DATE, a.as_of::DATE) + 1)
        AS posts_per_day,
    ps.views_per_post,
    r.mean_views_48h_30d,
    r.mean_views_48h_30d / NULLIF(s.subscribers, 0) AS err,
    r.er,
    r.reach_12h,
    r.reach_24h,
    r.reach_48h,
    b.best_hours,
    t.top_post_ids,
    -- which view counts the view-based metrics rest on
    CASE WHEN coalesce(ps.n_posts_48h, 0) + coalesce(ps.n_posts_settled_late, 0) = 0 THEN NULL
         WHEN coalesce(ps.n_posts_settled_late, 0) = 0 THEN '48h views'
         WHEN coalesce(ps.n_posts_48h, 0) = 0 THEN 'latest views of posts older than 7 days'
         ELSE printf('48h views (%d posts) + latest views of posts older than 7 days (%d posts)',
                     ps.n_posts_48h, ps.n_posts_settled_late)
    END AS views_basis,
    a.as_of
FROM channel_ids AS c
LEFT JOIN raw.channels AS ch USING (channel_id)
LEFT JOIN subs AS s USING (channel_id)
LEFT JOIN subs_30d AS s30 USING (channel_id)
LEFT JOIN post_stats AS ps USING (channel_id)
LEFT JOIN as_of AS a USING (channel_id)
LEFT JOIN recent AS r USING (channel_id)
LEFT JOIN best AS b USING (channel_id)
LEFT JOIN top AS t USING (channel_id)
ORDER BY c.channel_id
