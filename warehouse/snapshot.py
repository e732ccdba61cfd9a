"""Copy what a long step needs out of the warehouse, so its connection closes first.

DuckDB admits one writing process per file, and a read-only connection in another
process is enough to lock a writer out. A step that reads for a second and then
computes for minutes (encoding texts with MiniLM, tuning baselines, rendering charts)
must not hold the file meanwhile: it copies its tables into an in-memory DuckDB —
streamed as Arrow record batches, same names, same types — closes the warehouse, and
works on the copy.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

BATCH_ROWS = 100_000


def _exists(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?", [schema, table]
        ).fetchall()[0][0]
    )


def copy_out(
    conn: duckdb.DuckDBPyConnection, tables: Iterable[str] = (), schemas: Iterable[str] = ()
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding ``tables`` (``schema.table``) and every table of
    ``schemas``. A table that does not exist is left out, so the reader sees exactly
    what it would have seen in the warehouse (and says "not built yet" the same way)."""
    wanted = [tuple(name.split(".", 1)) for name in tables]
    for schema in schemas:
        wanted += conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE schema_name = ? ORDER BY table_name",
            [schema],
        ).fetchall()
    local = duckdb.connect()
    for schema, table in dict.fromkeys(wanted):
        if not _exists(conn, schema, table):
            continue
        # identifiers come from code (asset names), never from a request; quoted anyway
        source = f'"{schema}"."{table}"'
        batches = conn.sql(f"SELECT * FROM {source}").to_arrow_reader(BATCH_ROWS)
        local.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        local.register("_batches", batches)
        local.execute(f"CREATE TABLE {source} AS SELECT * FROM _batches")
        local.unregister("_batches")
    return local
