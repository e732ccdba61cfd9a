"""Data-quality rules over the raw tables, as SQL that counts violations.

Each rule returns how many rows break it plus a few examples, so a Dagster check
(or a notebook) can report them without loading the table into Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from warehouse.schema import RAW_TABLES


@dataclass
class RuleResult:
    violations: int
    examples: list[dict]

    @property
    def passed(self) -> bool:
        return self.violations == 0


def _run(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> RuleResult:
    """One pass: up to five offending rows, each carrying the total count of violations."""
    rows = conn.execute(
        f"SELECT *, count(*) OVER () AS _violations FROM ({sql}) LIMIT 5", params or []
    ).fetchdf()
    count = int(rows["_violations"].iloc[0]) if len(rows) else 0
    examples = rows.drop(columns="_violations").astype(str).to_dict("records")
    return RuleResult(count, examples)


def duplicate_keys(conn: duckdb.DuckDBPyConnection, table: str) -> RuleResult:
    """Primary keys that occur more than once (defence in depth beside the PK)."""
    key = ", ".join(RAW_TABLES[table][1])
    return _run(conn, f"SELECT {key}, count(*) AS n FROM raw.{table} GROUP BY {key} HAVING n > 1")


def negative_counters(conn: duckdb.DuckDBPyConnection) -> RuleResult:
    return _run(
        conn,
        "SELECT * FROM raw.post_snapshots "
        "WHERE views < 0 OR forwards < 0 OR replies < 0 OR reactions < 0",
    )


def decreasing_counters(conn: duckdb.DuckDBPyConnection) -> RuleResult:
    """Cumulative counters must never drop below any earlier snapshot of the post.

    Compared with the running maximum rather than ``lag()``: a NULL counter (a
    reactions-only Desktop export snapshot) must not hide a drop around it.
    """
    return _run(
        conn,
        """
        SELECT * FROM (
            SELECT channel_id, post_id, observed_at, views, forwards, replies, reactions,
                   max(views) OVER w AS prev_views, max(forwards) OVER w AS prev_forwards,
                   max(replies) OVER w AS prev_replies, max(reactions) OVER w AS prev_reactions
            FROM raw.post_snapshots
            WINDOW w AS (PARTITION BY channel_id, post_id ORDER BY observed_at
                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        )
        WHERE views < prev_views OR forwards < prev_forwards
           OR replies < prev_replies OR reactions < prev_reactions
        """,
    )


def snapshots_before_post(conn: duckdb.DuckDBPyConnection) -> RuleResult:
    return _run(
        conn,
        """
        SELECT s.channel_id, s.post_id, s.observed_at, p.published_at
        FROM raw.post_snapshots s JOIN raw.posts p USING (channel_id, post_id)
        WHERE s.observed_at < p.published_at
        """,
    )


def latest_observation(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    return conn.execute("SELECT max(observed_at) FROM raw.post_snapshots").fetchall()[0][0]


def staleness_hours(conn: duckdb.DuckDBPyConnection, as_of: datetime) -> float | None:
    """Hours between the newest snapshot and the source's clock (None when empty)."""
    latest = latest_observation(conn)
    if latest is None:
        return None
    return (as_of - latest).total_seconds() / 3600.0
