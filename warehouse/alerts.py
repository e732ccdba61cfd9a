"""Alerts a channel owner wants to hear about, computed in SQL from the feature tables.

Kinds: ``view_spike`` (a recent post far above the channel's norm), ``quiet_period``
(no post for much longer than the channel's usual gap), ``subscriber_growth`` /
``subscriber_loss`` (a day's subscriber change far outside the last four weeks) and
``ghost_subscribers`` (reach far below what the subscriber count implies).

One alert per *episode*, keyed ``kind|channel|post|episode start``, inserted once, so
``monitoring.alerts`` is a history that re-runs never duplicate and an ongoing
condition does not fire again every day:

* a spike's episode is its post; a subscriber jump's is its day;
* a quiet period starts at the channel's last post (from the data: the same silence
  has the same start however long it lasts; a post ends it);
* a ghost audience has no start in the data, so ``monitoring.alert_episodes`` keeps the
  open episodes: a channel still below the threshold continues its episode, one no
  longer below it closes it, and the next time it drops below is a new episode.

Timestamps are UTC: ``created_at`` is bound from Python's UTC clock, never DuckDB's
session-local ``now()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

DDL = """
CREATE TABLE IF NOT EXISTS monitoring.alerts (
    alert_key TEXT PRIMARY KEY,     -- kind|channel|post|episode start: one alert per episode
    kind TEXT,
    channel_id BIGINT,
    post_id BIGINT,                 -- NULL for channel-level alerts
    severity TEXT,                  -- info | warning | critical
    observed DOUBLE,                -- the value that triggered it
    expected DOUBLE,                -- what the channel's norm says
    threshold DOUBLE,               -- the configured threshold it crossed
    message TEXT,
    detected_for TIMESTAMP,         -- the data time the alert is about
    created_at TIMESTAMP,           -- when it was first written (UTC)
    episode_start TIMESTAMP         -- when the condition began (UTC)
);
ALTER TABLE monitoring.alerts ADD COLUMN IF NOT EXISTS episode_start TIMESTAMP;
CREATE TABLE IF NOT EXISTS monitoring.alert_episodes (
    kind TEXT,
    channel_id BIGINT,
    episode_start TIMESTAMP,        -- first detection of the open episode (data time, UTC)
    last_seen TIMESTAMP,            -- latest detection (data time, UTC)
    PRIMARY KEY (kind, channel_id)
)
"""

ALERT_COLUMNS = (
    "alert_key",
    "kind",
    "channel_id",
    "post_id",
    "severity",
    "observed",
    "expected",
    "threshold",
    "message",
    "detected_for",
    "created_at",
    "episode_start",
)

# kinds whose episode start is not in the data: kept open in monitoring.alert_episodes
STATEFUL_KINDS = ("ghost_subscribers",)

DESCRIPTIONS = {
    "alert_key": "kind|channel_id|post_id|episode start — one alert per episode, never duplicated",
    "kind": "view_spike, quiet_period, subscriber_growth, subscriber_loss, ghost_subscribers",
    "channel_id": "channel",
    "post_id": "post for post-level alerts, else NULL",
    "severity": "info, warning or critical",
    "observed": "value that triggered the alert",
    "expected": "the channel's norm",
    "threshold": "configured threshold that was crossed",
    "message": "readable summary",
    "detected_for": "data time the alert is about",
    "created_at": "first written (UTC)",
    "episode_start": "when the condition began: the post, the day, the last post before a "
    "quiet period, the first detection of a ghost audience (UTC)",
}


@dataclass(frozen=True)
class AlertThresholds:
    spike_z: float = 3.0  # trending z-score of a post's 3 h views
    spike_recent_hours: float = 72.0  # only posts this recent
    quiet_factor: float = 3.0  # gap > factor × the channel's median gap between posts ...
    quiet_min_hours: float = 24.0  # ... and at least this many hours
    growth_z: float = 3.5  # |z| of the latest daily subscriber delta vs 28 days before
    ghost_ratio: float = 0.5  # reach_48h below ratio × the median channel's reach_48h


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
           t.published_at AS detected_for,
           t.published_at AS episode_start
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
           clock.as_of,
           g.last_post
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
           day::TIMESTAMP,
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
           as_of,
           date_trunc('day', as_of)
    FROM reach
    WHERE reach_48h < $ghost_ratio * network_reach
)
SELECT * FROM spikes UNION ALL SELECT * FROM quiet
UNION ALL SELECT * FROM growth UNION ALL SELECT * FROM ghosts
"""


CANDIDATE_COLUMNS = (
    "kind",
    "channel_id",
    "post_id",
    "severity",
    "observed",
    "expected",
    "threshold",
    "message",
    "detected_for",
    "episode_start",
)

# the episode start to the day (a post, a day, a first detection), to the second for a
# quiet period: it starts at a post, and two silences can start on the same day
KEY_SQL = """
concat_ws('|', c.kind, c.channel_id, coalesce(c.post_id::VARCHAR, '-'),
          CASE WHEN c.kind = 'quiet_period'
               THEN strftime(coalesce(e.episode_start, c.episode_start), '%Y-%m-%dT%H:%M:%S')
               ELSE strftime(coalesce(e.episode_start, c.episode_start), '%Y-%m-%d') END)
"""


def _utc_naive(moment: datetime | None) -> datetime:
    """A naive UTC timestamp (the warehouse's convention) from an aware or naive-UTC one."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def detect_alerts(
    conn: duckdb.DuckDBPyConnection, thresholds: AlertThresholds, now: datetime | None = None
) -> int:
    """Insert alerts for new episodes; returns how many (existing keys are left untouched).

    ``now`` (default: the UTC clock) stamps ``created_at``. Candidates, episode state and
    the new alerts are written in one transaction.
    """
    conn.execute("CREATE SCHEMA IF NOT EXISTS monitoring")
    conn.execute(DDL)
    params = {
        "spike_z": thresholds.spike_z,
        "spike_recent_hours": thresholds.spike_recent_hours,
        "quiet_factor": thresholds.quiet_factor,
        "quiet_min_hours": thresholds.quiet_min_hours,
        "growth_z": thresholds.growth_z,
        "ghost_ratio": thresholds.ghost_ratio,
    }
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE alert_candidates AS SELECT * FROM ({CANDIDATES_SQL}) "
            f"AS c({', '.join(CANDIDATE_COLUMNS)})",
            params,
        )
        stateful = {"stateful": list(STATEFUL_KINDS)}
        # close the episodes whose condition no longer holds ...
        conn.execute(
            """
            DELETE FROM monitoring.alert_episodes e
            WHERE list_contains($stateful, e.kind) AND NOT EXISTS (
                SELECT 1 FROM alert_candidates c
                WHERE c.kind = e.kind AND c.channel_id = e.channel_id)
        """,
            stateful,
        )
        # ... continue the open ones, and open new ones
        conn.execute(
            """
            INSERT INTO monitoring.alert_episodes
            SELECT kind, channel_id, min(episode_start), max(detected_for)
            FROM alert_candidates
            WHERE list_contains($stateful, kind)
            GROUP BY kind, channel_id
            ON CONFLICT (kind, channel_id) DO UPDATE SET last_seen = excluded.last_seen
        """,
            stateful,
        )
        before = conn.execute("SELECT count(*) FROM monitoring.alerts").fetchall()[0][0]
        conn.execute(
            f"""
            INSERT OR IGNORE INTO monitoring.alerts ({", ".join(ALERT_COLUMNS)})
            SELECT {KEY_SQL} AS alert_key,
                   c.kind, c.channel_id, c.post_id, c.severity, c.observed, c.expected,
                   c.threshold, c.message, c.detected_for, $created_at AS created_at,
                   coalesce(e.episode_start, c.episode_start) AS episode_start
            FROM alert_candidates c
            LEFT JOIN monitoring.alert_episodes e USING (kind, channel_id)
            """,
            {"created_at": _utc_naive(now)},
        )
        added = conn.execute("SELECT count(*) FROM monitoring.alerts").fetchall()[0][0] - before
        conn.execute("DROP TABLE alert_candidates")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return added
