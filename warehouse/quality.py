"""Data-quality rules over the raw tables, as SQL that counts violations.

Each rule returns how many rows break it, the first offending rows, the query that
lists them all and how to fix the data, so a failing Dagster check (or a notebook)
tells the reader what is wrong and what to do, without loading the table into Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from warehouse.schema import RAW_TABLES

EXAMPLES = 20  # offending rows named in a failing check's metadata


@dataclass
class RuleResult:
    """Violations of one rule: how many, the first offending rows, and what to do.

    ``query`` lists every offending row (run it read-only against the warehouse);
    ``fix`` says how to repair the data so the rule passes on the next run.
    """

    violations: int
    examples: list[dict]
    query: str = ""
    fix: str = ""

    @property
    def passed(self) -> bool:
        return self.violations == 0


def _run(conn: duckdb.DuckDBPyConnection, sql: str, fix: str) -> RuleResult:
    """One pass: the first offending rows, each carrying the total count of violations."""
    sql = " ".join(sql.split())
    rows = conn.execute(f"SELECT *, count(*) OVER () AS _violations FROM ({sql}) LIMIT {EXAMPLES}").fetchdf()
    count = int(rows["_violations"].iloc[0]) if len(rows) else 0
    examples = rows.drop(columns="_violations").astype(str).to_dict("records")
    return RuleResult(count, examples, query=sql, fix=fix)


def duplicate_keys(conn: duckdb.DuckDBPyConnection, table: str) -> RuleResult:
    """Primary keys that occur more than once (defence in depth beside the PK)."""
    key = ", ".join(RAW_TABLES[table][1])
    return _run(
        conn,
        f"SELECT {key}, count(*) AS n FROM raw.{table} GROUP BY {key} HAVING n > 1",
        f"raw.{table} holds the same ({key}) more than once, which the primary key should "
        "prevent: a writer bypassed it. Keep one row per key, e.g. "
        f"CREATE TABLE t AS SELECT DISTINCT ON ({key}) * FROM raw.{table}; DELETE FROM "
        f"raw.{table}; INSERT INTO raw.{table} SELECT * FROM t; then re-run the checks.",
    )


def negative_counters(conn: duckdb.DuckDBPyConnection) -> RuleResult:
    """Counters are cumulative counts; a negative one is a broken record."""
    return _run(
        conn,
        "SELECT * FROM raw.post_snapshots WHERE views < 0 OR forwards < 0 OR replies < 0 OR reactions < 0",
        "These snapshots carry a negative counter (the landing loader quarantines such "
        "rows, so another writer stored them). Delete them: DELETE FROM raw.post_snapshots "
        "WHERE views < 0 OR forwards < 0 OR replies < 0 OR reactions < 0; then reload a "
        "corrected file if you have one.",
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
        "Each listed snapshot shows a counter lower than an earlier snapshot of the same "
        "post (prev_* is the highest earlier value): a cumulative count cannot decrease. "
        "Delete the listed rows by key, e.g. DELETE FROM raw.post_snapshots WHERE "
        "(channel_id, post_id, observed_at) IN (<the listed keys>); the landing loader "
        "rejects such rows on arrival, so reloading the corrected file is safe.",
    )


def snapshots_before_post(conn: duckdb.DuckDBPyConnection) -> RuleResult:
    """A post cannot be observed before it was published."""
    return _run(
        conn,
        """
        SELECT s.channel_id, s.post_id, s.observed_at, p.published_at
        FROM raw.post_snapshots s JOIN raw.posts p USING (channel_id, post_id)
        WHERE s.observed_at < p.published_at
        """,
        "Each listed snapshot was observed before its post's published_at. Either the "
        "snapshot time or the publication time is wrong. To drop the snapshots: DELETE FROM "
        "raw.post_snapshots s USING raw.posts p WHERE s.channel_id = p.channel_id AND "
        "s.post_id = p.post_id AND s.observed_at < p.published_at; to keep them, correct "
        "the post's published_at in a landing file and reload (a post published after its "
        "stored snapshots is quarantined, and snapshots of unknown posts now wait in "
        "raw.quarantine until their post arrives, so this does not recur from landing files).",
    )


def latest_observation(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    return conn.execute("SELECT max(observed_at) FROM raw.post_snapshots").fetchall()[0][0]


def staleness_hours(conn: duckdb.DuckDBPyConnection, as_of: datetime) -> float | None:
    """Hours between the newest snapshot and the source's clock (None when empty)."""
    latest = latest_observation(conn)
    if latest is None:
        return None
    return (as_of - latest).total_seconds() / 3600.0
