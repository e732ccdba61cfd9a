-- features.post_trajectories: as-of counters of every post at fixed ages
-- (the LSTM's input sequence): every 15 min to 3 h, hourly to 24 h, then 30, 36
-- and 42 h, so a post observed for up to 48 h is read up to its latest snapshot.
-- One row per post and grid age the post has reached; counters are NULL where no
-- snapshot exists at or before that age (collection started late), so every
-- reached grid point is present.
--
-- Value at age h = the last snapshot with observed_at <= published_at + h + 5 min,
-- kept only when the post has been observed at an age >= h - 5 min.
-- The grid must equal warehouse.features.TRAJECTORY_GRID_MINUTES (a test checks it).
WITH grid AS (
    SELECT unnest(range(15, 181, 15) || range(240, 1441, 60) || range(1800, 2521, 360))::INTEGER
        AS age_minutes
),
observed AS (
    SELECT channel_id, post_id, max(observed_at) AS last_observed_at
    FROM raw.post_snapshots
    WHERE views IS NOT NULL  -- reactions-only snapshots (Desktop exports) are no trajectory
    GROUP BY channel_id, post_id
),
probe AS (
    SELECT
        p.channel_id,
        p.post_id,
        p.published_at,
        g.age_minutes,
        p.published_at + to_minutes(g.age_minutes + 5) AS lookup_at
    FROM raw.posts AS p
    JOIN observed AS o USING (channel_id, post_id)
    CROSS JOIN grid AS g
    WHERE o.last_observed_at >= p.published_at + to_minutes(g.age_minutes - 5)
)
SELECT
    pr.channel_id,
    pr.post_id,
    pr.age_minutes,
    s.views,
    s.forwards,
    s.replies,
    s.reactions,
    date_diff('second', pr.published_at, s.observed_at) / 60.0 AS snapshot_age_minutes
FROM probe AS pr
ASOF LEFT JOIN (SELECT * FROM raw.post_snapshots WHERE views IS NOT NULL) AS s
    ON pr.channel_id = s.channel_id
    AND pr.post_id = s.post_id
    AND pr.lookup_at >= s.observed_at
ORDER BY pr.channel_id, pr.post_id, pr.age_minutes
