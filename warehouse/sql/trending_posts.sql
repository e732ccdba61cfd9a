-- features.trending_posts: one row per post whose 3 h views are known, scored
-- against the channel's recent norm. z_score = (ln(1 + views_3h) - mean) / sd,
-- where mean and sd (sample) are over ln(1 + views_3h) of the channel's previous
-- 20 posts with known 3 h views (by publish time); sd is floored at 0.1 (about
-- +-10 %) so very regular channels don't flag noise. NULL with < 5 previous posts.
WITH scored AS (
    SELECT
        channel_id,
        post_id,
        published_at,
        hours_observed,
        views_3h,
        views_24h,
        views_latest,
        ln(1 + views_3h) AS log_views_3h,
        count(*) OVER previous AS baseline_posts,
        avg(ln(1 + views_3h)) OVER previous AS baseline_mean_log_views_3h,
        stddev_samp(ln(1 + views_3h)) OVER previous AS baseline_sd_log_views_3h
    FROM features.post_features
    WHERE views_3h IS NOT NULL
    WINDOW previous AS (
        PARTITION BY channel_id ORDER BY published_at, post_id
        ROWS BETWEEN 20 PRECEDING AND 1 PRECEDING
    )
),
z AS (
    SELECT
        *,
        CASE WHEN baseline_posts >= 5 THEN
            (log_views_3h - baseline_mean_log_views_3h)
                / greatest(baseline_sd_log_views_3h, 0.1)
        END AS z_score
    FROM scored
)
SELECT
    channel_id,
    post_id,
    published_at,
    hours_observed,
    views_3h,
    views_24h,
    views_latest,
    baseline_posts,
    baseline_mean_log_views_3h,
    baseline_sd_log_views_3h,
    z_score,
    coalesce(z_score >= 2, false) AS is_trending
FROM z
ORDER BY channel_id, published_at, post_id
