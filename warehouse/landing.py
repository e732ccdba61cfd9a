"""Import a landing folder of user files into the raw tables (DESIGN §2).

A landing folder holds ``<table>*.csv`` / ``<table>*.parquet`` files. Every
record either ends up in ``raw.<table>`` (upserted by primary key) or in
``raw.quarantine`` with a reason; nothing is dropped silently.

The load runs per table, inside one transaction for the whole folder (any
unexpected error rolls everything back):

1. *Read* each file in chunks of about half a megabyte (``landing_read``: CSV via
   ``landing_csv``, Parquet via pyarrow batches; times via ``landing_timestamps``).
   Each chunk is
   checked row by row in DuckDB SQL: bad rows go to the reject buffer with their
   original values, good rows are staged typed in ``_landing_good``. Memory follows
   the chunk and the staged typed rows, not the file.
2. *Cross-row checks* on the staged rows: conflicting duplicates, posts published
   after their stored snapshots, snapshots of posts not yet known (they wait in
   quarantine and are retried on every load), snapshots before their post, counters
   that go down. Then the upsert.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from warehouse import schema
from warehouse.landing_read import (
    TIME_TYPES,
    ChunkBuilder,
    FileRead,
    FileRejected,
    csv_chunks,
    parquet_chunks,
)
from warehouse.landing_timestamps import TimeRules
from warehouse.schema import RAW_TABLES

SUFFIXES = (".csv", ".parquet")
# Cumulative counts that must be >= 0 (subscribers is a counter too).
COUNTERS = (*schema.COUNTER_COLUMNS, "subscribers")
CONFLICT_REASON = "duplicate key with conflicting values"
WAITING_PREFIX = "post not yet known: "
_TYPE_WORDS = {"BIGINT": "an integer"}
_REJECT_COLUMNS = ("source", "target_table", "record", "reason")
_INTEGER_RE = r"[+-]?\d+(\.0*)?"  # '12.0' comes from float columns written by pandas
_ALLOCATOR_FLUSH = "8MB"  # DuckDB's default (128 MB) keeps a load's garbage resident


@dataclass
class TableLoad:
    """What one load did to one raw table.

    ``rows_read`` counts parsed rows plus unparseable CSV lines; ``rows_retried`` the
    snapshots that waited in quarantine for their post and were checked again;
    ``rows_read + rows_retried = rows_loaded + rows_quarantined + rows_duplicate``.
    Whole-file rejects are not rows: they are in ``LandingReport.rejected_files``.
    """

    table: str
    files: list[str]
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    rows_duplicate: int = 0  # exact duplicates collapsed into one loaded record
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> extra columns
    rows_retried: int = 0


@dataclass
class LandingReport:
    """Outcome of one landing load; file lists hold absolute paths.

    ``missing_tables``: requested tables with no file in the folder.
    ``rejected_files``: files quarantined whole (unreadable, empty, no key columns).
    ``ignored_files``: files matching no requested table (e.g. ``result.json``).
    """

    tables: dict[str, TableLoad]
    ignored_files: list[str]
    rejected_files: list[str]
    missing_tables: list[str]

    def as_metadata(self) -> dict:
        """Flat, JSON-able summary for asset metadata (no nested dicts)."""
        meta: dict = {
            "tables_loaded": sorted(self.tables),
            "missing_tables": list(self.missing_tables),
            "ignored_files": [Path(f).name for f in self.ignored_files],
            "rejected_files": [Path(f).name for f in self.rejected_files],
            "rows_read": sum(t.rows_read for t in self.tables.values()),
            "rows_loaded": sum(t.rows_loaded for t in self.tables.values()),
            "rows_quarantined": sum(t.rows_quarantined for t in self.tables.values()),
        }
        for name, load in self.tables.items():
            meta[f"{name}_files"] = [Path(f).name for f in load.files]
            meta[f"{name}_rows_read"] = load.rows_read
            meta[f"{name}_rows_loaded"] = load.rows_loaded
            meta[f"{name}_rows_quarantined"] = load.rows_quarantined
            meta[f"{name}_rows_duplicate"] = load.rows_duplicate
            meta[f"{name}_rows_retried"] = load.rows_retried
            meta[f"{name}_ignored_columns"] = sorted(
                {col for cols in load.ignored_columns.values() for col in cols}
            )
        return meta


# --------------------------------------------------------------------------- files


def _match_table(filename: str) -> str | None:
    """Table a file belongs to; longest name first so post_snapshots beats posts."""
    name = filename.lower()
    if not name.endswith(SUFFIXES):
        return None
    for table in sorted(RAW_TABLES, key=len, reverse=True):
        if name.startswith(table):
            return table
    return None


def _folder_files(folder: str | Path) -> list[Path]:
    """Files directly in ``folder``, absolute so quarantine sources are stable across loads."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"landing folder not found: {root}")
    return sorted(p for p in root.iterdir() if p.is_file())


def landing_files(folder: str | Path) -> dict[str, list[Path]]:
    """Map each raw table to its files in ``folder`` (sorted; tables without files left out)."""
    found: dict[str, list[Path]] = {}
    for path in _folder_files(folder):
        table = _match_table(path.name)
        if table is not None:
            found.setdefault(table, []).append(path)
    return found


def _json(value: dict) -> str:
    """Compact JSON, spelled like DuckDB's json_object so all quarantine records look alike."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _file_record(path: Path, details: dict[str, object]) -> str:
    """The quarantine record of a whole-file reject: a short JSON description."""
    return _json({"file": path.name, "size_bytes": path.stat().st_size, **details})


# --------------------------------------------------------------------------- SQL pieces


def _parse_expr(col: str, typ: str) -> str:
    """SQL turning the chunk's value of ``col`` into its contract type (NULL when it can't)."""
    v = f"nullif(trim({col}), '')"
    if typ == "BIGINT":
        # TRY_CAST would round '1.5' to 2, so only integer-shaped text is cast.
        return (
            f"CASE WHEN regexp_full_match({v}, $integer_re) "
            f"THEN TRY_CAST(regexp_extract({v}, '^[+-]?\\d+') AS BIGINT) END"
        )
    if typ in TIME_TYPES:
        return f"_t_{col}"  # read by landing_timestamps
    if col == "media_type":
        return f"coalesce(lower({v}), 'none')"
    if col == "action":
        return f"lower({v})"
    return f"nullif({col}, '')"  # CSV cannot tell an empty field from a missing one


def _check_exprs(col: str, typ: str, is_key: bool) -> list[str]:
    """SQL expressions yielding a reason string when ``col`` is bad, else NULL.

    ``col`` is the parsed value and ``_raw_<col>`` the value as read.
    """
    raw = f"_raw_{col}"
    checks = []
    if is_key:
        checks.append(f"CASE WHEN nullif(trim({raw}), '') IS NULL THEN 'missing key: {col}' END")
    if typ in _TYPE_WORDS:
        checks.append(
            f"CASE WHEN nullif(trim({raw}), '') IS NOT NULL AND {col} IS NULL "
            f"THEN 'bad type: {col}=''' || {raw} || ''' is not {_TYPE_WORDS[typ]}' END"
        )
    if typ in TIME_TYPES:
        checks.append(f"_terr_{col}")
    if col in COUNTERS:
        checks.append(f"CASE WHEN {col} < 0 THEN 'negative counter: {col}=' || {col} END")
    if col == "media_type":
        checks.append(
            f"CASE WHEN NOT list_contains($media_types, {col}) THEN 'bad media_type: ''' || {raw} || '''' END"
        )
    if col == "action":
        checks.append(
            f"CASE WHEN {col} IS NOT NULL AND NOT list_contains($actions, {col}) "
            f"THEN 'bad action: ''' || {raw} || '''' END"
        )
    return checks


def _row_check_sql(table: str) -> tuple[str, dict[str, object]]:
    """A SELECT over ``_landing_chunk``: value as read, typed value and reason per row.

    Used as a subquery, not a temp table: inside the load's transaction every
    replaced temp table would be kept until COMMIT.
    """
    columns, key = RAW_TABLES[table]
    raw_cols = ", ".join(f"{col} AS _raw_{col}" for col in columns)
    parsed = ", ".join(f"{_parse_expr(col, typ)} AS {col}" for col, typ in columns.items())
    errors = "".join(f", _terr_{c}" for c, t in columns.items() if t in TIME_TYPES)
    checks = [c for col, typ in columns.items() for c in _check_exprs(col, typ, col in key)]
    sql = f"""
        SELECT *, concat_ws('; ', {", ".join(checks)}) AS _reason FROM (
            SELECT _file, _source, {raw_cols}, {parsed}{errors} FROM _landing_chunk
        )
    """
    params: dict[str, object] = {"integer_re": _INTEGER_RE}  # every table has a BIGINT
    if "media_type" in columns:
        params["media_types"] = list(schema.MEDIA_TYPES)
    if "action" in columns:
        params["actions"] = list(schema.ACTIONS)
    return sql, params


def _typed_record(table: str, alias: str) -> str:
    """json_object of a staged row's typed values as text (the record of a cross-row reject)."""
    return (
        "json_object("
        + ", ".join(f"'{col}', CAST({alias}.{col} AS VARCHAR)" for col in RAW_TABLES[table][0])
        + ")"
    )


# --------------------------------------------------------------------------- warehouse steps


def _add_rejects(conn: duckdb.DuckDBPyConnection, rows: list[tuple[str, str, str, str]]) -> None:
    """Append (source, target_table, record, reason) rows to the load's reject buffer."""
    if not rows:
        return
    batch = pa.table({name: [r[i] for r in rows] for i, name in enumerate(_REJECT_COLUMNS)})
    conn.register("_landing_reject_batch", batch)
    try:
        conn.execute("INSERT INTO _landing_rejects SELECT * FROM _landing_reject_batch")
    finally:
        conn.unregister("_landing_reject_batch")


class _Stage:
    """The typed good rows of one table (``_landing_good``) and where they came from."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, table: str, rules: TimeRules) -> None:
        self.conn, self.table = conn, table
        self.builder = ChunkBuilder(table, rules)
        self.sql, self.params = _row_check_sql(table)
        self.sources: list[str] = []
        columns = RAW_TABLES[table][0]
        typed = ", ".join(f"{c} {t}" for c, t in columns.items())
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _landing_good (_file INTEGER, {typed})")
        conn.execute("CREATE OR REPLACE TEMP TABLE _landing_sources (_file INTEGER, source TEXT)")

    def new_file(self, source: str) -> int:
        self.sources.append(source)
        file_id = len(self.sources)
        self.conn.execute(
            "INSERT INTO _landing_sources VALUES ($id, $source)", {"id": file_id, "source": source}
        )
        return file_id

    def add(self, chunk: pa.Table) -> None:
        """Check one chunk: bad rows to the reject buffer, good rows staged typed."""
        cols = ", ".join(RAW_TABLES[self.table][0])
        record = ", ".join(f"'{c}', _raw_{c}" for c in RAW_TABLES[self.table][0])
        self.conn.register("_landing_chunk", chunk)
        try:
            self.conn.execute(
                f"INSERT INTO _landing_rejects SELECT _source, $table, json_object({record}), "
                f"_reason FROM ({self.sql}) WHERE _reason <> ''",
                {**self.params, "table": self.table},
            )
            self.conn.execute(
                f"INSERT INTO _landing_good SELECT _file, {cols} FROM ({self.sql}) WHERE _reason = ''",
                self.params,
            )
        finally:
            self.conn.unregister("_landing_chunk")

    def forget(self, file_id: int, source: str) -> None:
        """Undo a file's rows (it is rejected whole, or read again)."""
        self.conn.execute("DELETE FROM _landing_good WHERE _file = $id", {"id": file_id})
        self.conn.execute(
            "DELETE FROM _landing_rejects WHERE source = $source AND target_table = $table",
            {"source": source, "table": self.table},
        )


def _reject_good_rows(conn: duckdb.DuckDBPyConnection, table: str, verdicts: str) -> None:
    """Quarantine every staged row whose key is in the ``verdicts`` temp table.

    ``verdicts`` holds (key columns, reason), repeated when copies of a record are
    staged; every copy goes to quarantine with its typed values and leaves
    ``_landing_good``.
    """
    key_cols = RAW_TABLES[table][1]
    key = ", ".join(key_cols)
    conn.execute(
        f"""INSERT INTO _landing_rejects
        SELECT s.source, $table, {_typed_record(table, "g")}, v.reason
        FROM _landing_good g JOIN (SELECT DISTINCT * FROM {verdicts}) v USING ({key})
        JOIN _landing_sources s USING (_file)""",
        {"table": table},
    )
    matches = " AND ".join(f"v.{col} = g.{col}" for col in key_cols)
    conn.execute(f"DELETE FROM _landing_good g WHERE EXISTS (SELECT 1 FROM {verdicts} v WHERE {matches})")


def _collapse_duplicates(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """A key with differing records is rejected whole (exact copies are dropped later).

    Only keys that occur more than once are compared, so the work follows the
    duplicates, not the table.
    """
    columns, key_cols = RAW_TABLES[table]
    cols, key = ", ".join(columns), ", ".join(key_cols)
    # group 8-byte key hashes first (a third of the memory of grouping the keys), then
    # the real keys of the few rows whose hash repeats
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _landing_dupkeys AS
        SELECT {key} FROM _landing_good
        WHERE hash({key}) IN (
            SELECT h FROM (SELECT hash({key}) AS h FROM _landing_good)
            GROUP BY h HAVING count(*) > 1)
        GROUP BY {key} HAVING count(*) > 1"""
    )
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _landing_verdict AS
        SELECT {key}, $reason AS reason FROM (
            SELECT DISTINCT {cols} FROM _landing_good SEMI JOIN _landing_dupkeys USING ({key})
        ) GROUP BY {key} HAVING count(*) > 1""",
        {"reason": CONFLICT_REASON},
    )
    _reject_good_rows(conn, table, "_landing_verdict")


def _drop_exact_duplicates(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """Keep one copy of each exact duplicate, just before the upsert.

    Copies stay staged through the cross-row checks, so a rejected record is
    quarantined once per file that holds it (each file's account stays complete).
    """
    key = ", ".join(RAW_TABLES[table][1])
    conn.execute(
        f"""DELETE FROM _landing_good WHERE rowid IN (
            SELECT rowid FROM (
                SELECT rowid, row_number() OVER (PARTITION BY {key} ORDER BY rowid) AS n
                FROM _landing_good SEMI JOIN _landing_dupkeys USING ({key})
            ) WHERE n > 1)"""
    )


def _check_posts_after_snapshots(conn: duckdb.DuckDBPyConnection) -> None:
    """Reject a post published after a snapshot of it already stored.

    Otherwise the blocking ``no_snapshot_before_post`` check would fail on every run
    after this load; the post is the newcomer, so it is the one held back.
    """
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE _landing_verdict AS
        SELECT g.channel_id, g.post_id,
               'post published after its stored snapshots: published_at ' || g.published_at
               || ' > observed_at ' || s.first_seen || ' in raw.post_snapshots' AS reason
        FROM _landing_good g JOIN (
            SELECT channel_id, post_id, min(observed_at) AS first_seen FROM raw.post_snapshots
            SEMI JOIN _landing_good USING (channel_id, post_id) GROUP BY ALL
        ) s USING (channel_id, post_id)
        WHERE s.first_seen < g.published_at"""
    )
    _reject_good_rows(conn, "posts", "_landing_verdict")


def _check_known_posts(conn: duckdb.DuckDBPyConnection) -> None:
    """Snapshots of posts not in raw.posts wait in quarantine (retried on every load)."""
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE _landing_verdict AS
        SELECT DISTINCT channel_id, post_id, observed_at,
               $prefix || 'post (' || channel_id || ', ' || post_id || ') is not in raw.posts; '
               || 'the snapshot waits here and is retried on every load' AS reason
        FROM _landing_good ANTI JOIN raw.posts USING (channel_id, post_id)""",
        {"prefix": WAITING_PREFIX},
    )
    _reject_good_rows(conn, "post_snapshots", "_landing_verdict")


def _check_published(conn: duckdb.DuckDBPyConnection) -> None:
    """Reject snapshots observed before their post was published."""
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE _landing_verdict AS
        SELECT s.channel_id, s.post_id, s.observed_at,
               'snapshot before post published: observed_at ' || s.observed_at
               || ' < published_at ' || p.published_at AS reason
        FROM _landing_good s JOIN raw.posts p USING (channel_id, post_id)
        WHERE s.observed_at < p.published_at"""
    )
    _reject_good_rows(conn, "post_snapshots", "_landing_verdict")


def _counter_verdicts(conn: duckdb.DuckDBPyConnection, window: str, checks: str) -> None:
    """Fill ``_landing_verdict`` from per-counter window ``checks`` over each post's history.

    The history is the batch (``is_new``) plus the stored snapshots of the same
    posts, minus stored rows the batch is about to replace.
    """
    counters = ", ".join(schema.COUNTER_COLUMNS)
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _landing_verdict AS
        WITH stored AS (
            SELECT s.channel_id, s.post_id, s.observed_at, {counters}, false AS is_new
            FROM raw.post_snapshots s
            SEMI JOIN (SELECT DISTINCT channel_id, post_id FROM _landing_good) b
                USING (channel_id, post_id)
            ANTI JOIN _landing_good g USING (channel_id, post_id, observed_at)
        ),
        history AS (
            SELECT channel_id, post_id, observed_at, {counters}, true AS is_new
            FROM _landing_good
            UNION ALL SELECT * FROM stored
        ),
        checked AS (
            SELECT channel_id, post_id, observed_at, is_new, concat_ws('; ', {checks}) AS reason
            FROM history
            WINDOW w AS (PARTITION BY channel_id, post_id ORDER BY observed_at {window})
        )
        SELECT channel_id, post_id, observed_at, reason FROM checked
        WHERE is_new AND reason <> ''"""
    )
    _reject_good_rows(conn, "post_snapshots", "_landing_verdict")


def _check_monotonic(conn: duckdb.DuckDBPyConnection) -> None:
    """Reject snapshots whose counters go down over time, per post.

    Stored snapshots are trusted, so a new snapshot above a later stored one is
    rejected first (it would otherwise raise the bar for the rows after it).
    Then a snapshot is kept only if each counter is >= every earlier one, batch
    and stored alike; a rejected lower row never changes that maximum.
    """
    above_later = ", ".join(
        f"CASE WHEN {c} > min({c}) FILTER (WHERE NOT is_new) OVER w "
        f"THEN 'counter increased past a stored later snapshot: {c} ' || {c} || ' > ' "
        f"|| min({c}) FILTER (WHERE NOT is_new) OVER w END"
        for c in schema.COUNTER_COLUMNS
    )
    _counter_verdicts(conn, "ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING", above_later)
    below_earlier = ", ".join(
        f"CASE WHEN {c} < max({c}) OVER w THEN 'counter decreased: {c} ' || {c} || ' < ' "
        f"|| max({c}) OVER w || ' at an earlier snapshot' END"
        for c in schema.COUNTER_COLUMNS
    )
    _counter_verdicts(conn, "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING", below_earlier)


def _release_waiting(conn: duckdb.DuckDBPyConnection) -> None:
    """Drop waiting snapshots from raw.quarantine that this load no longer holds back.

    A retried snapshot is either loaded now, rejected for another reason (that reject
    is in the buffer), or still waiting (the same row is in the buffer, and the flush
    keeps the stored one with its original ``loaded_at``).
    """
    conn.execute(
        """DELETE FROM raw.quarantine q
        WHERE q.target_table = 'post_snapshots' AND starts_with(q.reason, $prefix)
          AND NOT EXISTS (
            SELECT 1 FROM _landing_rejects r
            WHERE r.target_table = q.target_table AND r.source IS NOT DISTINCT FROM q.source
              AND r.record = q.record AND r.reason = q.reason)""",
        {"prefix": WAITING_PREFIX},
    )


def _upsert(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    """Replace-or-insert the surviving records by primary key; returns how many.

    DELETE + INSERT in the load's transaction is the same upsert as ``INSERT … ON
    CONFLICT DO UPDATE`` (the staged keys are unique) at half its peak memory.
    """
    columns, key_cols = RAW_TABLES[table]
    cols = ", ".join(columns)
    matches = " AND ".join(f"t.{c} = g.{c}" for c in key_cols)
    conn.execute(f"DELETE FROM raw.{table} t USING _landing_good g WHERE {matches}")
    conn.execute(f"INSERT INTO raw.{table} ({cols}) SELECT {cols} FROM _landing_good")
    return _count(conn, "_landing_good")


def _flush_quarantine(conn: duckdb.DuckDBPyConnection, loaded_at: datetime) -> None:
    """Move the reject buffer to raw.quarantine, skipping rows it already holds (idempotent)."""
    conn.execute(
        """INSERT INTO raw.quarantine (source, target_table, record, reason, loaded_at)
        SELECT source, target_table, record, reason, $loaded_at
        FROM (SELECT DISTINCT * FROM _landing_rejects) r
        WHERE NOT EXISTS (
            SELECT 1 FROM raw.quarantine q
            WHERE q.source IS NOT DISTINCT FROM r.source
              AND q.target_table IS NOT DISTINCT FROM r.target_table
              AND q.record IS NOT DISTINCT FROM r.record
              AND q.reason IS NOT DISTINCT FROM r.reason
        )""",
        {"loaded_at": loaded_at},
    )


def _count(conn: duckdb.DuckDBPyConnection, relation: str) -> int:
    """Row count of a temp table (fetchall: DuckDB 2 refuses new work on a half-read result)."""
    return conn.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0]


# --------------------------------------------------------------------------- per table


def _stage_file(stage: _Stage, path: Path) -> FileRead:
    """Read and stage one file; a file with a time column of numbers and date strings
    mixed is read again with numbers refused in that column (they are not Unix times)."""
    numbers_ok: dict[str, bool] = {}
    while True:
        file_id = stage.new_file(str(path))
        read = FileRead(numbers_ok=numbers_ok)
        try:
            if path.stat().st_size == 0:
                raise FileRejected("empty file: no records")
            if path.suffix.lower() == ".parquet":
                chunks = parquet_chunks(path, stage.builder, file_id, read)
            else:
                chunks = csv_chunks(path, stage.builder, file_id, read)
            for chunk in chunks:
                stage.add(chunk)
        except FileRejected:
            stage.forget(file_id, str(path))
            raise
        except (duckdb.Error, pa.ArrowException, OSError) as err:
            stage.forget(file_id, str(path))
            message = str(err).strip().splitlines()[0][:300] if str(err).strip() else repr(err)
            raise FileRejected(f"unreadable {path.suffix.lower().lstrip('.')} file: {message}") from None
        if read.rows == 0 and not read.broken:
            stage.forget(file_id, str(path))
            raise FileRejected("empty file: no records")
        mixed = {
            c
            for c, (numbers, texts) in read.number_columns.items()
            if numbers and texts and numbers_ok.get(c, True)
        }
        if not mixed:
            return read
        stage.forget(file_id, str(path))
        numbers_ok.update(dict.fromkeys(mixed, False))


def _stage_waiting(stage: _Stage) -> int:
    """Stage the snapshots waiting in quarantine for their post; returns how many."""
    columns = list(RAW_TABLES["post_snapshots"][0])
    extract = ", ".join(f"json_extract_string(record, '$.{c}') AS {c}" for c in columns)
    waiting = stage.conn.sql(
        f"""SELECT source, {extract} FROM raw.quarantine
        WHERE target_table = 'post_snapshots' AND starts_with(reason, $prefix)
        ORDER BY source, record""",
        params={"prefix": WAITING_PREFIX},
    ).to_arrow_table()
    for source in pc.unique(waiting["source"]).to_pylist():
        rows = waiting.filter(pc.equal(waiting["source"], source))
        file_id = stage.new_file(source)
        raw = {c: rows[c].to_pylist() for c in columns}
        stage.add(stage.builder.build(file_id, source, raw, rows.num_rows))
    return waiting.num_rows


def _load_table(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    paths: list[Path],
    report: LandingReport,
    rules: TimeRules,
) -> TableLoad:
    """Read, check and upsert all files of one table (inside the caller's transaction)."""
    load = TableLoad(table, [str(p) for p in paths], 0, 0, 0)
    rejects_before = _count(conn, "_landing_rejects")
    stage = _Stage(conn, table, rules)
    for path in paths:
        try:
            read = _stage_file(stage, path)
        except FileRejected as rej:
            report.rejected_files.append(str(path))
            _add_rejects(conn, [(str(path), table, _file_record(path, rej.details), rej.reason)])
            continue
        if read.extra:
            load.ignored_columns[str(path)] = read.extra
        _add_rejects(
            conn,
            [
                (
                    str(path),
                    table,
                    _json({"line": b.line, "csv_line": b.text}),
                    f"unparseable CSV line {b.line}: {b.problem}",
                )
                for b in read.broken
            ],
        )
        load.rows_read += read.rows + len(read.broken)
    if table == "post_snapshots":
        load.rows_retried = _stage_waiting(stage)
    whole_file_rejects = sum(1 for p in paths if str(p) in report.rejected_files)
    _collapse_duplicates(conn, table)
    if table == "posts":
        _check_posts_after_snapshots(conn)
    if table == "post_snapshots":
        _check_known_posts(conn)
        _check_published(conn)
        _check_monotonic(conn)
    _drop_exact_duplicates(conn, table)
    load.rows_loaded = _upsert(conn, table)
    if table == "post_snapshots":
        _release_waiting(conn)
    load.rows_quarantined = _count(conn, "_landing_rejects") - rejects_before - whole_file_rejects
    load.rows_duplicate = load.rows_read + load.rows_retried - load.rows_loaded - load.rows_quarantined
    return load


def _selected_tables(tables: Iterable[str] | None) -> list[str]:
    """Requested tables in load order (posts before post_snapshots); unknown names rejected."""
    if tables is None:
        return list(RAW_TABLES)
    wanted = set(tables)
    unknown = wanted - set(RAW_TABLES)
    if unknown:
        raise ValueError(f"unknown raw table(s): {', '.join(sorted(unknown))}")
    return [t for t in RAW_TABLES if t in wanted]


def _has_waiting(conn: duckdb.DuckDBPyConnection) -> bool:
    return conn.execute(
        "SELECT count(*) > 0 FROM raw.quarantine "
        "WHERE target_table = 'post_snapshots' AND starts_with(reason, $prefix)",
        {"prefix": WAITING_PREFIX},
    ).fetchall()[0][0]


def load_landing(
    conn: duckdb.DuckDBPyConnection,
    folder: str | Path,
    tables: Iterable[str] | None = None,
    clock: datetime | None = None,
) -> LandingReport:
    """Load a landing folder into the raw tables in one transaction; returns what happened.

    ``clock`` is the source's clock (naive UTC, default now): times more than a day
    after it are rejected. Files of tables not in ``tables`` and files matching no
    table are reported as ignored. Snapshots waiting for their post are retried
    whenever ``post_snapshots`` is loaded. Loading the same folder twice changes nothing.
    """
    selected = _selected_tables(tables)
    found = landing_files(folder)
    report = LandingReport(
        tables={},
        ignored_files=[str(p) for p in _folder_files(folder) if _match_table(p.name) not in selected],
        rejected_files=[],
        missing_tables=[t for t in selected if t not in found],
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    rules = TimeRules(clock=clock if clock is not None else now)
    flush_threshold = conn.execute("SELECT current_setting('allocator_flush_threshold')").fetchall()[0][0]
    # hand freed chunk memory back after each statement, not only past 128 MB
    conn.execute(f"SET allocator_flush_threshold = '{_ALLOCATOR_FLUSH}'")
    conn.execute("BEGIN TRANSACTION")
    try:
        schema.ensure_schema(conn)
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE _landing_rejects "
            "(source TEXT, target_table TEXT, record TEXT, reason TEXT)"
        )
        for table in selected:
            retry = table == "post_snapshots" and _has_waiting(conn)
            if table in found or retry:
                report.tables[table] = _load_table(conn, table, found.get(table, []), report, rules)
        _flush_quarantine(conn, now)
        for temp in (
            "_landing_rejects",
            "_landing_good",
            "_landing_verdict",
            "_landing_dupkeys",
            "_landing_sources",
        ):
            conn.execute(f"DROP TABLE IF EXISTS {temp}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute(f"SET allocator_flush_threshold = '{flush_threshold}'")
    return report
