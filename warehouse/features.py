"""Feature tables (DuckDB schema ``features``) built with plain SQL from the raw tables.

Each table's query lives in ``warehouse/sql/<table>.sql`` so analysts can run it
directly in a DuckDB shell. ``build_feature_table`` wraps it in
``CREATE OR REPLACE TABLE features.<table> AS ...`` inside a transaction, so a
reader never sees a half-built table. Every query works on an empty or partially
loaded warehouse: columns that need a missing raw table come out NULL.
Definitions of every metric: ``docs/metrics.md``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from warehouse.schema import ensure_schema

SQL_DIR = Path(__file__).with_name("sql")

# Build order: a table only reads raw tables and tables listed before it.
FEATURE_TABLES: tuple[str, ...] = (
    "post_trajectories",
    "post_features",
    "channel_daily_features",
    "user_behavior_features",
    "posting_slot_features",
    "channel_metrics",
    "trending_posts",
)

# Feature tables each table reads (raw tables aside); Dagster asset deps come from here.
FEATURE_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "post_trajectories": (),
    "post_features": (),
    "channel_daily_features": ("post_features",),
    "user_behavior_features": (),
    "posting_slot_features": ("post_features",),
    "channel_metrics": ("post_features",),
    "trending_posts": ("post_features",),
}

# Every 15 min to 3 h, hourly to 24 h, then 30/36/42 h (the literal grid in
# post_trajectories.sql): everything a collector sees of a post before its 48 h value.
TRAJECTORY_GRID_MINUTES: tuple[int, ...] = (
    tuple(range(15, 181, 15)) + tuple(range(240, 1441, 60)) + tuple(range(1800, 2521, 360))
)

# As-of lookups accept a snapshot up to this many minutes after the target age,
# and call an age reached once the post was observed this close to it.
AS_OF_TOLERANCE_MINUTES = 5

_COUNTERS_AT = "as-of {what} at {age} (NULL: not yet known)"


def _at(what: str, age: str) -> str:
    return _COUNTERS_AT.format(what=what, age=age)


TABLE_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "post_trajectories": {
        "channel_id": "channel key",
        "post_id": "post key (unique within the channel)",
        "age_minutes": "grid age after publication, minutes (TRAJECTORY_GRID_MINUTES)",
        "views": "as-of views at age_minutes (NULL: no snapshot that early)",
        "forwards": "as-of forwards at age_minutes",
        "replies": "as-of replies at age_minutes",
        "reactions": "as-of reactions at age_minutes",
        "snapshot_age_minutes": "age of the snapshot the values come from, minutes",
    },
    "post_features": {
        "channel_id": "channel key",
        "post_id": "post key (unique within the channel)",
        "published_at": "publication time, UTC",
        "weekday": "publication weekday, 0 = Monday",
        "hour": "publication hour, UTC",
        "media_type": "none, photo, video, document, poll or other",
        "text_length": "characters of text (0 when no text)",
        "text": "post text, for the text models",
        "subscribers_at_publish": "subscribers on the latest channel_daily day <= publish day",
        "last_observed_at": "time of the post's latest snapshot",
        "hours_observed": "age of the latest snapshot, hours",
        "views_latest": "views at the latest snapshot",
        "forwards_latest": "forwards at the latest snapshot",
        "replies_latest": "replies at the latest snapshot",
        "reactions_latest": "reactions at the latest snapshot",
        "views_1h": _at("views", "1 h"),
        "views_3h": _at("views", "3 h"),
        "views_6h": _at("views", "6 h"),
        "views_12h": _at("views", "12 h"),
        "views_24h": _at("views", "24 h"),
        "views_48h": _at("views", "48 h"),
        "forwards_3h": _at("forwards", "3 h"),
        "replies_3h": _at("replies", "3 h"),
        "reactions_3h": _at("reactions", "3 h"),
        "forwards_48h": _at("forwards", "48 h"),
        "replies_48h": _at("replies", "48 h"),
        "reactions_48h": _at("reactions", "48 h"),
        "interactions_48h": "forwards_48h + replies_48h + reactions_48h",
        "reach_1h": "views_1h / subscribers_at_publish",
        "reach_3h": "views_3h / subscribers_at_publish",
        "reach_6h": "views_6h / subscribers_at_publish",
        "reach_12h": "views_12h / subscribers_at_publish",
        "reach_24h": "views_24h / subscribers_at_publish",
        "reach_48h": "views_48h / subscribers_at_publish",
        "channel_prior_posts": "posts of the channel published before this one",
        "channel_prior_posts_48h": "earlier posts 48 h 5 min to 90 days old, views_48h known",
        "channel_prior_median_views_48h": "median views_48h of those posts (no look-ahead)",
        "channel_prior_mean_log_views_48h": "mean ln(1 + views_48h) over those earlier posts",
        "view_percentile_48h": "target: share of the channel's earlier posts (trailing 90 days) "
        "with lower views_48h, ties half; NULL with < 5 earlier posts",
        "above_channel_median": "target: views_48h > channel_prior_median_views_48h "
        "(NULL with < 5 such posts)",
        "forwards_percentile_48h": "the same backward-looking percentile of forwards_48h",
        "is_viral": "target: forwards_percentile_48h >= 0.9 (top decile of earlier posts)",
        "views_settled": "views_48h, or the latest views of a post older than 7 days without it",
        "views_settled_basis": "'48h' or 'latest_after_7d' (NULL: not settled yet)",
        "settled_view_percentile": "backward-looking percentile of views_settled, like view_percentile_48h",
    },
    "channel_daily_features": {
        "channel_id": "channel key",
        "day": "UTC day of the raw.channel_daily row",
        "weekday": "0 = Monday",
        "subscribers": "subscribers that day",
        "subscriber_delta": "subscribers - subscribers on the previous recorded day",
        "subscriber_growth_rate": "subscriber_delta / previous recorded subscribers",
        "posts": "posts published that day (UTC)",
        "views_48h_sum": "sum of views_48h of that day's posts (0 when none known)",
        "forwards_48h_sum": "sum of forwards_48h of that day's posts",
        "interactions_48h_sum": "sum of interactions_48h of that day's posts",
        "engagement_rate": "interactions_48h_sum / views_48h_sum (0 when no views)",
        "reach_48h": "views_48h_sum / subscribers (0 when unknown)",
        "viral_posts": "that day's posts with is_viral",
        "mean_text_length": "mean text_length of that day's posts (0 when no posts)",
    },
    "user_behavior_features": {
        "user_id": "user key",
        "n_interactions": "interactions of the user",
        "n_channels": "distinct channels interacted with",
        "n_posts": "distinct posts interacted with",
        "active_days": "distinct UTC days with an interaction",
        "first_interaction_at": "first interaction time",
        "last_interaction_at": "last interaction time",
        **{f"hour_{h:02d}": f"share of the user's interactions at {h:02d}h UTC" for h in range(24)},
        **{f"wd_{d}": f"share of the user's interactions on weekday {d} (0 = Monday)" for d in range(7)},
        "share_reaction": "share of interactions that are reactions",
        "share_reply": "share of interactions that are replies",
        "share_forward": "share of interactions that are forwards",
        "median_delay_hours": "median hours from post publication to the interaction",
    },
    "posting_slot_features": {
        "channel_id": "channel key",
        "weekday": "publication weekday, 0 = Monday",
        "hour": "publication hour, UTC",
        "n_posts": "posts in the slot with known views_48h",
        "mean_log_views_48h": "mean ln(1 + views_48h)",
        "mean_view_percentile": "mean view_percentile_48h",
        "mean_relative_views": "mean views_48h / channel median views_48h",
        "mean_reach_48h": "mean reach_48h (NULL without subscribers)",
        "mean_engagement_rate": "mean interactions_48h / views_48h",
        "viral_share": "share of the slot's posts that are viral",
    },
    "channel_metrics": {
        "channel_id": "channel key",
        "username": "from raw.channels",
        "title": "from raw.channels",
        "subscribers": "latest known subscribers",
        "subscribers_day": "day of the latest subscriber count",
        "subscribers_30d_ago": "subscribers on the latest day <= subscribers_day - 30",
        "daily_growth": "mean daily subscriber delta over the last 30 days of data",
        "growth_rate_30d": "(subscribers - subscribers_30d_ago) / subscribers_30d_ago",
        "n_posts": "posts in raw.posts",
        "posts_per_day": "n_posts / days from the first post to as_of (inclusive)",
        "views_per_post": "mean views_settled per post (settled posts only)",
        "mean_views_48h_30d": "mean views_settled of the last 30 days' posts",
        "err": "ERR = mean_views_48h_30d / subscribers",
        "er": "ER = sum(interactions) / sum(views) at the settled basis, last 30 days' posts",
        "reach_12h": "mean views_12h / subscribers_at_publish, last 30 days' posts",
        "reach_24h": "mean views_24h / subscribers_at_publish, last 30 days' posts",
        "reach_48h": "mean views_48h / subscribers_at_publish, last 30 days' posts",
        "best_hours": "up to 3 UTC hours with the highest mean settled_view_percentile (>= 3 posts)",
        "top_post_ids": "up to 5 post_ids with the highest views_settled",
        "views_basis": "which view counts the view metrics rest on (48 h, or latest after 7 days)",
        "as_of": "latest observation of the channel (snapshot, post or daily row)",
    },
    "trending_posts": {
        "channel_id": "channel key",
        "post_id": "post key",
        "published_at": "publication time, UTC",
        "hours_observed": "age of the latest snapshot, hours",
        "basis": "'3h' (views_3h compared) or 'settled' (no 3 h value: views_settled compared)",
        "views_3h": "as-of views at 3 h",
        "views_24h": _at("views", "24 h"),
        "views_latest": "views at the latest snapshot",
        "views_settled": "views_48h, or the latest views of a post older than 7 days",
        "baseline_posts": "previous posts of the same basis in the baseline (at most 20)",
        "baseline_mean_log_views": "mean ln(1 + compared views) of the previous posts",
        "baseline_sd_log_views": "sample stddev of ln(1 + compared views) of the previous posts",
        "z_score": "(ln(1 + compared views) - mean) / max(sd, 0.1); NULL with < 5 previous posts",
        "is_trending": "z_score >= 2",
    },
}


def sql_for(name: str) -> str:
    """The SELECT that defines ``features.<name>`` (no trailing semicolon)."""
    if name not in FEATURE_TABLES:
        raise KeyError(f"unknown feature table {name!r}; known: {', '.join(FEATURE_TABLES)}")
    return (SQL_DIR / f"{name}.sql").read_text().strip().rstrip(";")


def _exists(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'features' AND table_name = ?",
        [name],
    ).fetchall()[0]
    return bool(row and row[0])


def build_feature_table(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    """Rebuild ``features.<name>`` atomically and return its row count.

    Missing upstream feature tables are built first so a table can be built on
    its own; existing ones are used as they are (the orchestrator keeps them fresh).
    """
    sql = sql_for(name)
    ensure_schema(conn)  # raw tables exist (maybe empty), so every query can run
    for dependency in FEATURE_DEPENDENCIES[name]:
        if not _exists(conn, dependency):
            build_feature_table(conn, dependency)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(f"CREATE OR REPLACE TABLE features.{name} AS\n{sql}")
        row = conn.execute(f"SELECT count(*) FROM features.{name}").fetchall()[0]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(row[0]) if row else 0


def build_all_feature_tables(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rebuild every feature table in build order; table -> row count."""
    return {name: build_feature_table(conn, name) for name in FEATURE_TABLES}
