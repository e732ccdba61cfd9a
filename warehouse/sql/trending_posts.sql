-- features.trending_posts: one row per post whose 3 h views or settled views are
-- known, scored against the channel's recent norm. basis = '3h' compares
-- ln(1 + views_3h) (the early signal, what alerts use); a post without a 3 h value
-- but with a settled count (48 h, or latest after 7 days: partial data such as one
-- late count per post) gets basis = 'settled' and compares ln(1 + views_settled).
-- z_score = (value - mean) / max(sd, 0.1) over the channel's previous 20 posts of
-- the same basis (by publish time); the floor (about +-10 %) keeps very regular
-- channels from flagging noise. NULL with < 5 previous posts.
WITH compared AS (
    SELECT
        channel_id,
        post_id,
        published_at,
        hours_observed,
        views_3h,
        views_24h,
        views_latest,
        views_settled,
        CASE WHEN views_3h IS NOT NULL THEN '3h' ELSE 'settled' END AS basis,
        ln(1 + coalesce(views_3h, views_settled)) AS log_views
    FROM features.post_features
    WHERE views_3h IS NOT NULL OR views_settled IS NOT NULL
),
scored AS (
    SELECT
        *,
        count(*) OVER previous AS baseline_posts,
        avg(log_views) OVER previous AS baseline_mean_log_views,
        stddev_samp(log_views) OVER previous AS baseline_sd_log_views
    FROM compared
    WINDOW previous AS (
        PARTITION BY channel_id, basis ORDER BY published_at, post_id
        ROWS BETWEEN 20 PRECEDING AND 1 PRECEDING
    )
),
z AS (
    SELECT
        *,
        CASE WHEN baseline_posts >= 5 THEN
            (log_views - baseline_mean_log_views) / greatest(baseline_sd_log_views, 0.1)
        END AS z_score
    FROM scored
)
SELECT
    channel_id,
    post_id,
    published_at,
    hours_observed,
    basis,
    views_3h,
    views_24h,
    views_latest,
    views_settled,
    baseline_posts,
    baseline_mean_log_views,
    baseline_sd_log_views,
    z_score,
    coalesce(z_score >= 2, false) AS is_trending
FROM z
ORDER BY channel_id, published_at, post_id
