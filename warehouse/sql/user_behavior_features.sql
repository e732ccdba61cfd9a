-- features.user_behavior_features: one row per user in raw.interactions, the
-- input of the behaviour autoencoder. Shares are fractions of the user's
-- interactions (each group of shares sums to 1). Publish times come from
-- raw.posts; median_delay_hours is NULL when none of the user's posts are known.
SELECT
    i.user_id,
    count(*) AS n_interactions,
    count(DISTINCT i.channel_id) AS n_channels,
    count(DISTINCT (i.channel_id, i.post_id)) AS n_posts,
    count(DISTINCT i.occurred_at::DATE) AS active_days,
    min(i.occurred_at) AS first_interaction_at,
    max(i.occurred_at) AS last_interaction_at,
    avg((hour(i.occurred_at) = 0)::DOUBLE) AS hour_00,
    avg((hour(i.occurred_at) = 1)::DOUBLE) AS hour_01,
    avg((hour(i.occurred_at) = 2)::DOUBLE) AS hour_02,
    avg((hour(i.occurred_at) = 3)::DOUBLE) AS hour_03,
    avg((hour(i.occurred_at) = 4)::DOUBLE) AS hour_04,
    avg((hour(i.occurred_at) = 5)::DOUBLE) AS hour_05,
    avg((hour(i.occurred_at) = 6)::DOUBLE) AS hour_06,
    avg((hour(i.occurred_at) = 7)::DOUBLE) AS hour_07,
    avg((hour(i.occurred_at) = 8)::DOUBLE) AS hour_08,
    avg((hour(i.occurred_at) = 9)::DOUBLE) AS hour_09,
    avg((hour(i.occurred_at) = 10)::DOUBLE) AS hour_10,
    avg((hour(i.occurred_at) = 11)::DOUBLE) AS hour_11,
    avg((hour(i.occurred_at) = 12)::DOUBLE) AS hour_12,
    avg((hour(i.occurred_at) = 13)::DOUBLE) AS hour_13,
    avg((hour(i.occurred_at) = 14)::DOUBLE) AS hour_14,
    avg((hour(i.occurred_at) = 15)::DOUBLE) AS hour_15,
    avg((hour(i.occurred_at) = 16)::DOUBLE) AS hour_16,
    avg((hour(i.occurred_at) = 17)::DOUBLE) AS hour_17,
    avg((hour(i.occurred_at) = 18)::DOUBLE) AS hour_18,
    avg((hour(i.occurred_at) = 19)::DOUBLE) AS hour_19,
    avg((hour(i.occurred_at) = 20)::DOUBLE) AS hour_20,
    avg((hour(i.occurred_at) = 21)::DOUBLE) AS hour_21,
    avg((hour(i.occurred_at) = 22)::DOUBLE) AS hour_22,
    avg((hour(i.occurred_at) = 23)::DOUBLE) AS hour_23,
    avg((isodow(i.occurred_at) = 1)::DOUBLE) AS wd_0,
    avg((isodow(i.occurred_at) = 2)::DOUBLE) AS wd_1,
    avg((isodow(i.occurred_at) = 3)::DOUBLE) AS wd_2,
    avg((isodow(i.occurred_at) = 4)::DOUBLE) AS wd_3,
    avg((isodow(i.occurred_at) = 5)::DOUBLE) AS wd_4,
    avg((isodow(i.occurred_at) = 6)::DOUBLE) AS wd_5,
    avg((isodow(i.occurred_at) = 7)::DOUBLE) AS wd_6,
    avg((i.action = 'reaction')::DOUBLE) AS share_reaction,
    avg((i.action = 'reply')::DOUBLE) AS share_reply,
    avg((i.action = 'forward')::DOUBLE) AS share_forward,
    median(date_diff('second', p.published_at, i.occurred_at) / 3600.0) AS median_delay_hours
FROM raw.interactions AS i
LEFT JOIN raw.posts AS p USING (channel_id, post_id)
GROUP BY i.user_id
ORDER BY i.user_id
