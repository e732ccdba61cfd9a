"""Import a landing folder of user files into the raw tables (DESIGN §2).

A landing folder holds ``<table>*.csv`` / ``<table>*.parquet`` files. Every
record either ends up in ``raw.<table>`` (upserted by primary key) or in
``raw.quarantine`` with a reason; nothing is dropped silently.

The load runs in two phases per table:

1. *Parse* each file on a private in-memory DuckDB connection into an Arrow
   table of VARCHAR columns named after the contract. A parse error in DuckDB
   aborts the surrounding transaction, so unreadable files must fail on a
   connection that is not the warehouse; they become whole-file rejects.
2. *Validate and upsert* on the warehouse connection, in SQL, inside one
   transaction for the whole folder: any unexpected error rolls everything back.

No Dagster here; the ``landing`` source of ``ChannelDataSource`` calls into it.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from warehouse import schema
from warehouse.schema import RAW_TABLES

SUFFIXES = (".csv", ".parquet")
# Cumulative counts that must be >= 0 (subscribers is a counter too).
COUNTERS = (*schema.COUNTER_COLUMNS, "subscribers")
CSV_DELIMITERS = (",", ";", "\t", "|")
CONFLICT_REASON = "duplicate key with conflicting values"
_TYPE_WORDS = {"BIGINT": "an integer", "TIMESTAMP": "a timestamp", "DATE": "a date"}
_REJECT_COLUMNS = ("source", "target_table", "record", "reason")
# Value shapes, as DuckDB regexes (Python raw strings, bound as parameters).
_INTEGER_RE = r"[+-]?\d+(\.0*)?"  # '12.0' comes from float columns written by pandas
_UNIX_SECONDS_RE = r"[+-]?\d+(\.\d+)?"
_WITH_OFFSET_RE = r".*\d:\d\d(:\d\d(\.\d+)?)?\s*([zZ]|[+-]\d\d?(:?\d\d)?)"


@dataclass
class TableLoad:
    """What one load did to one raw table.

    ``rows_read`` counts parsed rows plus unparseable CSV lines;
    ``rows_read = rows_loaded + rows_quarantined + rows_duplicate``.
    Whole-file rejects are not rows: they are in ``LandingReport.rejected_files``.
    """

    table: str
    files: list[str]
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    rows_duplicate: int = 0  # exact duplicates collapsed into one loaded record
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> extra columns


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
            meta[f"{name}_ignored_columns"] = sorted(
                {col for cols in load.ignored_columns.values() for col in cols}
            )
        return meta


class FileRejected(Exception):
    """A file that cannot be imported at all; it goes to quarantine as one record."""

    def __init__(self, reason: str, **details: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


@dataclass
class _FileRead:
    """One parsed file: contract columns as VARCHAR plus its unparseable lines."""

    path: Path
    rows: pa.Table
    line_rejects: list[tuple[str, str]]  # (record JSON, reason)
    ignored_columns: list[str]


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


def _normalize(column: str) -> str:
    """Header name as matched against the contract: no BOM, trimmed, lower, '_' for spaces."""
    return "_".join(column.replace("\ufeff", "").strip().lower().split())


def _column_positions(header: list[str], table: str) -> tuple[dict[str, int], list[str]]:
    """Contract column -> 1-based position in the file, and the extra columns.

    Raises FileRejected when a key column is missing.
    """
    columns, key = RAW_TABLES[table]
    positions: dict[str, int] = {}
    extra: list[str] = []
    for index, name in enumerate(header, start=1):
        norm = _normalize(name)
        if norm in columns and norm not in positions:
            positions[norm] = index
        else:
            extra.append(name)
    missing = [col for col in key if col not in positions]
    if missing:
        raise FileRejected(f"missing key column(s): {', '.join(missing)}", columns=header)
    return positions, extra


def _select_list(positions: dict[str, int], table: str) -> str:
    """SELECT list by position (``#n``), so file header names never reach the SQL text."""
    items = ["CAST($source AS VARCHAR) AS _source"]
    for col in RAW_TABLES[table][0]:
        ref = f"#{positions[col]}" if col in positions else "NULL"
        items.append(f"CAST({ref} AS VARCHAR) AS {col}")
    return ", ".join(items)


def _check_utf8(path: Path) -> None:
    """Reject non-UTF-8 files whole: a wrong encoding garbles every line, not a few."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise FileRejected(
                    f"not UTF-8 encoded: invalid byte at offset {offset + err.start}"
                ) from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise FileRejected("not UTF-8 encoded: truncated character at end of file") from None


def _csv_header(path: Path) -> tuple[list[str], str]:
    """Header fields and delimiter, taken from the first line (the most frequent candidate)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        first = handle.readline().rstrip("\r\n")
    if not first.strip():
        raise FileRejected("empty file: no records")
    delim = max(CSV_DELIMITERS, key=first.count) if any(d in first for d in CSV_DELIMITERS) else ","
    try:
        return next(csv.reader([first], delimiter=delim)), delim
    except csv.Error as err:
        raise FileRejected(f"unreadable csv header: {err}") from None


def _physical_lines(path: Path, byte_positions: list[int]) -> list[int]:
    """1-based line numbers (as an editor shows them) of DuckDB's 1-based line byte offsets.

    DuckDB's own ``line`` counts records, which drifts after quoted multi-line
    fields, and its offset may point at the line break before the line.
    """
    if not byte_positions:
        return []
    data = path.read_bytes()
    lines = []
    for position in byte_positions:
        start = max(position - 1, 0)
        while start < len(data) and data[start] in b"\r\n":
            start += 1
        lines.append(data.count(b"\n", 0, start) + 1)
    return lines


def _read_csv(scratch: duckdb.DuckDBPyConnection, path: Path, table: str) -> _FileRead:
    """Read a CSV as RFC 4180 with a fixed dialect; broken lines go to DuckDB's reject table.

    Sniffing is off on purpose: on a file with broken lines the sniffer guesses
    wrong (e.g. no quoting) and then mangles the good lines too.
    """
    _check_utf8(path)
    header, delim = _csv_header(path)
    positions, extra = _column_positions(header, table)
    columns = {f"c{i}": "VARCHAR" for i in range(len(header))}
    rows = scratch.sql(
        f"""SELECT {_select_list(positions, table)}
        FROM read_csv($path, auto_detect = false, header = true, delim = $delim,
                      quote = '"', escape = '"', columns = $columns,
                      ignore_errors = true, store_rejects = true)""",
        params={"path": str(path), "delim": delim, "columns": columns, "source": str(path)},
    ).to_arrow_table()
    rejects = scratch.execute(
        """SELECT min(line_byte_position), first(csv_line ORDER BY column_idx),
                  string_agg(DISTINCT error_message, '; ' ORDER BY error_message)
        FROM reject_errors GROUP BY line ORDER BY line"""
    ).fetchall()
    lines = _physical_lines(path, [r[0] for r in rejects])
    line_rejects = [
        (
            _json({"line": line, "csv_line": text.strip("\r\n")}),
            f"unparseable CSV line {line}: {message}",
        )
        for line, (_, text, message) in zip(lines, rejects, strict=True)
    ]
    return _FileRead(path, rows, line_rejects, extra)


def _read_parquet(scratch: duckdb.DuckDBPyConnection, path: Path, table: str) -> _FileRead:
    """Read a parquet file with every contract column cast to VARCHAR (validated later)."""
    described = scratch.execute("DESCRIBE SELECT * FROM read_parquet($path)", {"path": str(path)})
    header = [row[0] for row in described.fetchall()]
    positions, extra = _column_positions(header, table)
    rows = scratch.sql(
        f"SELECT {_select_list(positions, table)} FROM read_parquet($path)",
        params={"path": str(path), "source": str(path)},
    ).to_arrow_table()
    return _FileRead(path, rows, [], extra)


def _read_file(path: Path, table: str) -> _FileRead:
    """Parse one file on a throwaway connection; any failure becomes FileRejected."""
    if path.stat().st_size == 0:
        raise FileRejected("empty file: no records")
    scratch = duckdb.connect()
    try:
        scratch.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ columns print as UTC
        reader = _read_parquet if path.suffix.lower() == ".parquet" else _read_csv
        read = reader(scratch, path, table)
    except duckdb.Error as err:
        message = str(err).strip().splitlines()[0][:300]
        raise FileRejected(
            f"unreadable {path.suffix.lower().lstrip('.')} file: {message}"
        ) from None
    finally:
        scratch.close()
    if read.rows.num_rows == 0 and not read.line_rejects:
        raise FileRejected("empty file: no records")
    return read


def _json(value: dict) -> str:
    """Compact JSON, spelled like DuckDB's json_object so all quarantine records look alike."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _file_record(path: Path, details: dict[str, object]) -> str:
    """The quarantine record of a whole-file reject: a short JSON description."""
    return _json({"file": path.name, "size_bytes": path.stat().st_size, **details})


# --------------------------------------------------------------------------- SQL pieces


def _parse_expr(col: str, typ: str) -> str:
    """SQL turning the VARCHAR column ``col`` into its contract type (NULL when it can't)."""
    v = f"nullif(trim({col}), '')"
    if typ == "BIGINT":
        # TRY_CAST would round '1.5' to 2, so only integer-shaped text is cast.
        return (
            f"CASE WHEN regexp_full_match({v}, $integer_re) "
            f"THEN TRY_CAST(regexp_extract({v}, '^[+-]?\\d+') AS BIGINT) END"
        )
    if typ == "TIMESTAMP":
        # Unix seconds; ISO with an offset converted to UTC (a plain TIMESTAMP cast
        # would drop the offset); otherwise a naive ISO string taken as UTC.
        return (
            f"CASE WHEN regexp_full_match({v}, $unix_seconds_re) "
            f"THEN TRY(make_timestamp(CAST(round(CAST({v} AS DOUBLE) * 1000000) AS BIGINT))) "
            f"WHEN regexp_full_match({v}, $with_offset_re) "
            f"THEN timezone('UTC', TRY_CAST({v} AS TIMESTAMPTZ)) "
            f"ELSE TRY_CAST({v} AS TIMESTAMP) END"
        )
    if typ == "DATE":
        return f"TRY_CAST({v} AS DATE)"
    if col == "media_type":
        return f"coalesce(lower({v}), 'none')"
    if col == "action":
        return f"lower({v})"
    return col


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
    if col in COUNTERS:
        checks.append(f"CASE WHEN {col} < 0 THEN 'negative counter: {col}=' || {col} END")
    if col == "media_type":
        checks.append(
            f"CASE WHEN NOT list_contains($media_types, {col}) "
            f"THEN 'bad media_type: ''' || {raw} || '''' END"
        )
    if col == "action":
        checks.append(
            f"CASE WHEN {col} IS NOT NULL AND NOT list_contains($actions, {col}) "
            f"THEN 'bad action: ''' || {raw} || '''' END"
        )
    return checks


def _row_check_sql(table: str) -> tuple[str, dict[str, object]]:
    """SQL building ``_landing_rows``: typed values, JSON record and row-level reason."""
    columns, key = RAW_TABLES[table]
    raw_cols = ", ".join(f"{col} AS _raw_{col}" for col in columns)
    record = ", ".join(f"'{col}', {col}" for col in columns)
    parsed = ", ".join(f"{_parse_expr(col, typ)} AS {col}" for col, typ in columns.items())
    checks = [c for col, typ in columns.items() for c in _check_exprs(col, typ, col in key)]
    sql = f"""
        CREATE OR REPLACE TEMP TABLE _landing_rows AS
        WITH typed AS (
            SELECT _source, json_object({record}) AS _record, {raw_cols}, {parsed}
            FROM _landing_src
        )
        SELECT *, concat_ws('; ', {", ".join(checks)}) AS _reason FROM typed
    """
    params: dict[str, object] = {"integer_re": _INTEGER_RE}  # every table has a BIGINT
    if "TIMESTAMP" in columns.values():
        params |= {"unix_seconds_re": _UNIX_SECONDS_RE, "with_offset_re": _WITH_OFFSET_RE}
    if "media_type" in columns:
        params["media_types"] = list(schema.MEDIA_TYPES)
    if "action" in columns:
        params["actions"] = list(schema.ACTIONS)
    return sql, params


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


def _reject_good_rows(conn: duckdb.DuckDBPyConnection, table: str, verdicts: str) -> None:
    """Quarantine every valid source row whose key is in the ``verdicts`` temp table.

    ``verdicts`` holds (key columns, reason) for distinct records; the rows go to
    quarantine with their original values and leave ``_landing_good``.
    """
    key = ", ".join(RAW_TABLES[table][1])
    conn.execute(
        f"""INSERT INTO _landing_rejects
        SELECT r._source, $table, r._record, v.reason
        FROM _landing_rows r JOIN {verdicts} v USING ({key})
        WHERE r._reason = ''""",
        {"table": table},
    )
    matches = " AND ".join(f"v.{col} = g.{col}" for col in RAW_TABLES[table][1])
    conn.execute(
        f"DELETE FROM _landing_good g WHERE EXISTS (SELECT 1 FROM {verdicts} v WHERE {matches})"
    )


def _collapse_duplicates(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """Exact duplicates become one record; a key with differing records is rejected whole."""
    columns, key_cols = RAW_TABLES[table]
    cols, key = ", ".join(columns), ", ".join(key_cols)
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE _landing_good AS "
        f"SELECT DISTINCT {cols} FROM _landing_rows WHERE _reason = ''"
    )
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _landing_verdict AS
        SELECT {key}, $reason AS reason FROM _landing_good GROUP BY {key} HAVING count(*) > 1""",
        {"reason": CONFLICT_REASON},
    )
    _reject_good_rows(conn, table, "_landing_verdict")


def _check_published(conn: duckdb.DuckDBPyConnection) -> None:
    """Reject snapshots observed before their post was published (post known in raw.posts)."""
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


def _upsert(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    """Insert-or-update the surviving records by primary key; returns how many."""
    columns, key_cols = RAW_TABLES[table]
    cols, key = ", ".join(columns), ", ".join(key_cols)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key_cols)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    conn.execute(
        f"INSERT INTO raw.{table} ({cols}) SELECT {cols} FROM _landing_good "
        f"ON CONFLICT ({key}) {action}"
    )
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


def _load_table(
    conn: duckdb.DuckDBPyConnection, table: str, paths: list[Path], report: LandingReport
) -> TableLoad:
    """Parse, validate and upsert all files of one table (inside the caller's transaction)."""
    load = TableLoad(table, [str(p) for p in paths], 0, 0, 0)
    reads: list[_FileRead] = []
    for path in paths:
        try:
            reads.append(_read_file(path, table))
        except FileRejected as rej:
            report.rejected_files.append(str(path))
            _add_rejects(conn, [(str(path), table, _file_record(path, rej.details), rej.reason)])
    if not reads:
        return load

    rejects_before = _count(conn, "_landing_rejects")
    for read in reads:
        if read.ignored_columns:
            load.ignored_columns[str(read.path)] = read.ignored_columns
        _add_rejects(conn, [(str(read.path), table, rec, why) for rec, why in read.line_rejects])
        load.rows_read += read.rows.num_rows + len(read.line_rejects)

    source = pa.concat_tables([read.rows for read in reads])
    conn.register("_landing_src", source)
    try:
        sql, params = _row_check_sql(table)
        conn.execute(sql, params)
    finally:
        conn.unregister("_landing_src")
    conn.execute(
        "INSERT INTO _landing_rejects SELECT _source, $table, _record, _reason "
        "FROM _landing_rows WHERE _reason <> ''",
        {"table": table},
    )
    _collapse_duplicates(conn, table)
    if table == "post_snapshots":
        _check_published(conn)
        _check_monotonic(conn)
    load.rows_loaded = _upsert(conn, table)
    load.rows_quarantined = _count(conn, "_landing_rejects") - rejects_before
    load.rows_duplicate = load.rows_read - load.rows_loaded - load.rows_quarantined
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


def load_landing(
    conn: duckdb.DuckDBPyConnection, folder: str | Path, tables: Iterable[str] | None = None
) -> LandingReport:
    """Load a landing folder into the raw tables in one transaction; returns what happened.

    Files of tables not in ``tables`` and files matching no table are reported
    as ignored. Loading the same folder twice changes nothing.
    """
    selected = _selected_tables(tables)
    found = landing_files(folder)
    report = LandingReport(
        tables={},
        ignored_files=[
            str(p) for p in _folder_files(folder) if _match_table(p.name) not in selected
        ],
        rejected_files=[],
        missing_tables=[t for t in selected if t not in found],
    )
    loaded_at = datetime.now(UTC).replace(tzinfo=None)
    conn.execute("BEGIN TRANSACTION")
    try:
        schema.ensure_schema(conn)
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE _landing_rejects "
            "(source TEXT, target_table TEXT, record TEXT, reason TEXT)"
        )
        for table in selected:
            if table in found:
                report.tables[table] = _load_table(conn, table, found[table], report)
        _flush_quarantine(conn, loaded_at)
        for temp in ("_landing_rejects", "_landing_rows", "_landing_good", "_landing_verdict"):
            conn.execute(f"DROP TABLE IF EXISTS {temp}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return report
