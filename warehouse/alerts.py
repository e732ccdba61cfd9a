"""Alerts a channel owner wants to hear about, computed in SQL from the feature tables.

Kinds: ``view_spike`` (a recent post far above the channel's norm), ``quiet_period``
(no post for much longer than the channel's usual gap), ``subscriber_growth`` /
``subscriber_loss`` (a day's subscriber change far outside the last four weeks) and
``ghost_subscribers`` (reach far below what the subscriber count implies). Alerts are
keyed by (kind, channel, post, day) and inserted once, so ``monitoring.alerts`` is a
history that re-runs never duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

DDL = """
CREATE TABLE IF NOT EXISTS monitoring.alerts (
    alert_key TEXT PRIMARY KEY,     -- kind|channel|post|day: one alert per event
    kind TEXT,
    channel_id BIGINT,
    post_id BIGINT,                 -- NULL for channel-level alerts
    severity TEXT,                  -- info | warning | critical
    observed DOUBLE,                -- the value that triggered it
    expected DOUBLE,                -- what the channel's norm says
    threshold DOUBLE,               -- the configured threshold it crossed
    message TEXT,
    detected_for TIMESTAMP,         -- the data time the alert is about
    created_at TIMESTAMP            -- when it was first written (UTC)
)
"""

DESCRIPTIONS = {
    "alert_key": "kind|channel_id|post_id|day — one alert per event, never duplicated",
    "kind": "view_spike, quiet_period, subscriber_growth, subscriber_loss, ghost_subscribers",
    "channel_id": "channel", "post_id": "post for post-level alerts, else NULL",
    "severity": "info, warning or critical",
    "observed": "value that triggered the alert", "expected": "the channel's norm",
    "threshold": "configured threshold that was crossed", "message": "readable summary",
    "detected_for": "data time the alert is about", "created_at": "first written (UTC)",
}


@dataclass(frozen=True)
class AlertThresholds:
    spike_z: float = 3.0             # trending z-score of a post's 3 h views
    spike_recent_hours: float = 72.0  # only posts this recent
    quiet_factor: float = 3.0        # gap > factor × the channel's median gap between posts ...
    quiet_min_hours: float = 24.0    # ... and at least this many hours
    growth_z: float = 3.5            # |z| of the latest daily subscriber delta vs 28 days before
    ghost_ratio: float = 0.5         # reach_48h below ratio × the median channel's reach_48h


CANDIDATES_SQL = """
WITH clock AS (
    SELECT max(as_of) AS as_of FROM features.channel_metrics
),
spikes AS (
    SELECT 'view_spike' AS kind, t.channel_id, t.post_id,
           CASE WHEN t.z_score >= 2 * $spike_z THEN 'critical' ELSE 'warning' END AS severity,
           t.views_3h::DOUBLE AS observed,
           exp(t.baseline_mean_log_views) - 1 AS expected,
           $spike_z AS threshold,
           printf('post %d: %d views at 3 h, z = %.1f against the previous %d posts',
                  t.post_id, t.views_3h, t.z_score, t.baseline_posts) AS message,
           t.published_at AS detected_for
    FROM features.trending_posts t, clock
    WHERE t.basis = '3h' AND t.z_score >= $spike_z
      AND t.published_at >= clock.as_of - to_hours(CAST($spike_recent_hours AS BIGINT))
),
gaps AS (
    SELECT channel_id,
           median(date_diff('minute', prev, published_at) / 60.0) AS median_gap_hours,
           max(published_at) AS last_post
    FROM (SELECT channel_id, published_at,
                 lag(published_at) OVER (PARTITION BY channel_id ORDER BY published_at) AS prev
          FROM raw.posts)
    GROUP BY channel_id
),
quiet AS (
    SELECT 'quiet_period', g.channel_id, NULL::BIGINT,
           'warning',
           date_diff('minute', g.last_post, clock.as_of) / 60.0,
           g.median_gap_hours,
           greatest($quiet_factor * g.median_gap_hours, $quiet_min_hours),
           printf('no post for %.0f h (usual gap %.1f h)',
                  date_diff('minute', g.last_post, clock.as_of) / 60.0, g.median_gap_hours),
           clock.as_of
    FROM gaps g, clock
    WHERE g.median_gap_hours IS NOT NULL
      AND date_diff('minute', g.last_post, clock.as_of) / 60.0
          > greatest($quiet_factor * g.median_gap_hours, $quiet_min_hours)
),
deltas AS (
    SELECT channel_id, day, subscriber_delta,
           avg(subscriber_delta) OVER w AS mean_delta,
           stddev_samp(subscriber_delta) OVER w AS sd_delta,
           count(subscriber_delta) OVER w AS n_prev,
           row_number() OVER (PARTITION BY channel_id ORDER BY day DESC) AS recency
    FROM features.channel_daily_features
    WINDOW w AS (PARTITION BY channel_id ORDER BY day ROWS BETWEEN 28 PRECEDING AND 1 PRECEDING)
),
growth AS (
    SELECT CASE WHEN subscriber_delta > mean_delta THEN 'subscriber_growth'
                ELSE 'subscriber_loss' END,
           channel_id, NULL::BIGINT,
           CASE WHEN abs(subscriber_delta - mean_delta) / greatest(sd_delta, 1) >= 2 * $growth_z
                THEN 'critical' ELSE 'warning' END,
           subscriber_delta::DOUBLE, mean_delta, $growth_z,
           printf('%+d subscribers on %s (usual %+.0f ± %.0f a day)',
                  subscriber_delta, day::VARCHAR, mean_delta, sd_delta),
           day::TIMESTAMP
    FROM deltas
    WHERE recency <= 3 AND n_prev >= 14 AND subscriber_delta IS NOT NULL
      AND abs(subscriber_delta - mean_delta) / greatest(sd_delta, 1) >= $growth_z
),
reach AS (
    SELECT channel_id, reach_48h, as_of,
           median(reach_48h) OVER () AS network_reach
    FROM features.channel_metrics WHERE reach_48h IS NOT NULL
),
ghosts AS (
    SELECT 'ghost_subscribers', channel_id, NULL::BIGINT, 'info',
           reach_48h, network_reach, $ghost_ratio * network_reach,
           printf('48 h reach %.1f%% of subscribers vs %.1f%% for the median channel',
                  100 * reach_48h, 100 * network_reach),
           date_trunc('day', as_of)
    FROM reach
    WHERE reach_48h < $ghost_ratio * network_reach
)
SELECT * FROM spikes UNION ALL SELECT * FROM quiet
UNION ALL SELECT * FROM growth UNION ALL SELECT * FROM ghosts
"""


def detect_alerts(conn: duckdb.DuckDBPyConnection, thresholds: AlertThresholds) -> int:
    """Insert new alerts; returns how many were new (existing keys are left untouched)."""
    conn.execute(DDL)
    params = {
        "spike_z": thresholds.spike_z,
        "spike_recent_hours": thresholds.spike_recent_hours,
        "quiet_factor": thresholds.quiet_factor,
        "quiet_min_hours": thresholds.quiet_min_hours,
        "growth_z": thresholds.growth_z,
        "ghost_ratio": thresholds.ghost_ratio,
    }
    before = conn.execute("SELECT count(*) FROM monitoring.alerts").fetchall()[0][0]
    conn.execute(
        f"""
        INSERT OR IGNORE INTO monitoring.alerts
        SELECT concat_ws('|', kind, channel_id, coalesce(post_id::VARCHAR, '-'),
                         strftime(detected_for, '%Y-%m-%d')) AS alert_key,
               kind, channel_id, post_id, severity, observed, expected, threshold, message,
               detected_for, now()::TIMESTAMP AS created_at
        FROM ({CANDIDATES_SQL}) AS c(kind, channel_id, post_id, severity, observed, expected,
                                     threshold, message, detected_for)
        """,
        params,
    )
    return conn.execute("SELECT count(*) FROM monitoring.alerts").fetchall()[0][0] - before
