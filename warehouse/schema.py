"""The data contract (DESIGN §2) as DuckDB DDL, in one place.

Every table's columns are defined here once; loaders, feature SQL and tests
read the column lists from ``RAW_TABLES`` instead of repeating them.
"""

from __future__ import annotations

import duckdb

SCHEMAS = ("raw", "truth", "features", "forecasts", "monitoring", "staging")

MEDIA_TYPES = ("none", "photo", "video", "document", "poll", "other")
ACTIONS = ("reaction", "reply", "forward")

# table -> (ordered columns with DuckDB types, primary key)
RAW_TABLES: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "channels": (
        {
            "channel_id": "BIGINT",
            "username": "TEXT",
            "title": "TEXT",
            "created_at": "TIMESTAMP",
        },
        ("channel_id",),
    ),
    "posts": (
        {
            "channel_id": "BIGINT",
            "post_id": "BIGINT",
            "published_at": "TIMESTAMP",
            "text": "TEXT",
            "media_type": "TEXT",
        },
        ("channel_id", "post_id"),
    ),
    "post_snapshots": (
        {
            "channel_id": "BIGINT",
            "post_id": "BIGINT",
            "observed_at": "TIMESTAMP",
            "views": "BIGINT",
            "forwards": "BIGINT",
            "replies": "BIGINT",
            "reactions": "BIGINT",
        },
        ("channel_id", "post_id", "observed_at"),
    ),
    "channel_daily": (
        {"channel_id": "BIGINT", "day": "DATE", "subscribers": "BIGINT"},
        ("channel_id", "day"),
    ),
    "interactions": (
        {
            "channel_id": "BIGINT",
            "post_id": "BIGINT",
            "user_id": "BIGINT",
            "action": "TEXT",
            "occurred_at": "TIMESTAMP",
        },
        ("channel_id", "post_id", "user_id", "action", "occurred_at"),
    ),
}

COUNTER_COLUMNS = ("views", "forwards", "replies", "reactions")

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS raw.quarantine (
    source TEXT,          -- file path or source name the record came from
    target_table TEXT,    -- raw table it was meant for
    record TEXT,          -- the rejected record as JSON (original values)
    reason TEXT,          -- why it was rejected
    loaded_at TIMESTAMP   -- when the load that rejected it ran (UTC)
)
"""

# Ground truth written by the synthetic source only (DESIGN §2).
TRUTH_DDL = (
    """
    CREATE TABLE IF NOT EXISTS truth.channels (
        channel_id BIGINT PRIMARY KEY,
        best_weekday INTEGER,     -- 0 = Monday
        best_hour INTEGER,        -- UTC
        is_ghost BOOLEAN,         -- carries ghost subscribers (high count, low reach)
        ghost_share DOUBLE,       -- share of subscribers that never read
        base_reach DOUBLE,        -- expected 48 h views / active subscribers
        half_life_hours DOUBLE    -- view accumulation time scale
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS truth.slot_effects (
        channel_id BIGINT,
        weekday INTEGER,
        hour INTEGER,
        effect DOUBLE,            -- multiplicative reach effect of publishing in this slot
        PRIMARY KEY (channel_id, weekday, hour)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS truth.topics (
        topic TEXT PRIMARY KEY,
        virality DOUBLE           -- multiplicative forward-rate effect
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS truth.posts (
        channel_id BIGINT,
        post_id BIGINT,
        topic TEXT,
        quality DOUBLE,           -- latent log-reach noise drawn for the post
        PRIMARY KEY (channel_id, post_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS truth.users (
        user_id BIGINT PRIMARY KEY,
        persona TEXT
    )
    """,
)


def raw_ddl(table: str) -> str:
    columns, key = RAW_TABLES[table]
    cols = ",\n    ".join(f"{name} {typ}" for name, typ in columns.items())
    return f"CREATE TABLE IF NOT EXISTS raw.{table} (\n    {cols},\n    PRIMARY KEY ({', '.join(key)})\n)"


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create every schema and raw/truth table if missing (idempotent)."""
    for schema in SCHEMAS:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for table in RAW_TABLES:
        conn.execute(raw_ddl(table))
    conn.execute(QUARANTINE_DDL)
    for ddl in TRUTH_DDL:
        conn.execute(ddl)


RAW_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "channels": {
        "channel_id": "Telegram channel id (primary key)",
        "username": "public @username, without the @",
        "title": "display title",
        "created_at": "channel creation time (UTC)",
    },
    "posts": {
        "channel_id": "channel the post belongs to",
        "post_id": "message id within the channel",
        "published_at": "publication time (UTC)",
        "text": "message text or caption",
        "media_type": "one of none, photo, video, document, poll, other",
    },
    "post_snapshots": {
        "channel_id": "channel of the post",
        "post_id": "post observed",
        "observed_at": "when the counters were read (UTC)",
        "views": "cumulative views at observed_at",
        "forwards": "cumulative forwards at observed_at",
        "replies": "cumulative replies (comments) at observed_at",
        "reactions": "cumulative reactions (all emoji) at observed_at",
    },
    "channel_daily": {
        "channel_id": "channel",
        "day": "calendar day (UTC)",
        "subscribers": "subscriber count at the end of the day",
    },
    "interactions": {
        "channel_id": "channel of the post",
        "post_id": "post interacted with",
        "user_id": "interacting user",
        "action": "reaction, reply or forward",
        "occurred_at": "when it happened (UTC)",
    },
}
