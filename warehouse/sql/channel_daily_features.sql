-- features.channel_daily_features: one row per channel per day of
-- raw.channel_daily, the daily input series of the growth model. Post activity
-- of the day comes from features.post_features (posts grouped by their UTC
-- publish date); days without posts get 0, never NULL, so the model's inputs
-- are dense. 48 h sums count only posts whose 48 h value is already known.
WITH daily AS (
    SELECT
        channel_id,
        day,
        subscribers,
        lag(subscribers) OVER (PARTITION BY channel_id ORDER BY day) AS previous_subscribers
    FROM raw.channel_daily
),
day_posts AS (
    SELECT
        channel_id,
        published_at::DATE AS day,
        count(*) AS posts,
        sum(views_48h) AS views_48h_sum,
        sum(forwards_48h) AS forwards_48h_sum,
        sum(interactions_48h) AS interactions_48h_sum,
        sum(interactions_48h) FILTER (WHERE views_48h IS NOT NULL) AS engaged_sum,
        sum(views_48h) FILTER (WHERE interactions_48h IS NOT NULL) AS engaged_views_sum,
        count(*) FILTER (WHERE is_viral) AS viral_posts,
        avg(text_length) AS mean_text_length
    FROM features.post_features
    GROUP BY channel_id, published_at::DATE
)
SELECT
    d.channel_id,
    d.day,
    (isodow(d.day) - 1)::INTEGER AS weekday,
    d.subscribers,
    -- vs the previous recorded day of the channel (NULL on its first day)
    d.subscribers - d.previous_subscribers AS subscriber_delta,
    (d.subscribers - d.previous_subscribers) / NULLIF(d.previous_subscribers, 0)
        AS subscriber_growth_rate,
    coalesce(p.posts, 0)::BIGINT AS posts,
    coalesce(p.views_48h_sum, 0)::BIGINT AS views_48h_sum,
    coalesce(p.forwards_48h_sum, 0)::BIGINT AS forwards_48h_sum,
    coalesce(p.interactions_48h_sum, 0)::BIGINT AS interactions_48h_sum,
    coalesce(p.engaged_sum / NULLIF(p.engaged_views_sum, 0), 0)::DOUBLE AS engagement_rate,
    coalesce(p.views_48h_sum / NULLIF(d.subscribers, 0), 0)::DOUBLE AS reach_48h,
    coalesce(p.viral_posts, 0)::BIGINT AS viral_posts,
    coalesce(p.mean_text_length, 0)::DOUBLE AS mean_text_length
FROM daily AS d
LEFT JOIN day_posts AS p USING (channel_id, day)
ORDER BY d.channel_id, d.day
