-- features.posting_slot_features: one row per channel x weekday x UTC hour with
-- at least one post whose 48 h views are known; the history the schedule model
-- and its "historical mean per slot" baseline learn from.
WITH known AS (
    SELECT
        *,
        median(views_48h) OVER (PARTITION BY channel_id) AS channel_median_views_48h
    FROM features.post_features
    WHERE views_48h IS NOT NULL
)
SELECT
    channel_id,
    weekday,
    hour,
    count(*) AS n_posts,
    avg(ln(1 + views_48h)) AS mean_log_views_48h,
    avg(view_percentile_48h) AS mean_view_percentile,
    avg(views_48h / NULLIF(channel_median_views_48h, 0)) AS mean_relative_views,
    avg(reach_48h) AS mean_reach_48h,
    avg(interactions_48h / NULLIF(views_48h, 0)) AS mean_engagement_rate,
    avg(is_viral::DOUBLE) AS viral_share
FROM known
GROUP BY channel_id, weekday, hour
ORDER BY channel_id, weekday, hour
