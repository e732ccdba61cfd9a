"""Published snapshots of analyst-facing tables as Parquet, so reads never wait on a writer.

DuckDB lets one process write a database file, and while it does no other process
can open it. Analysts and the API therefore read *published* copies: each table is
written to ``<root>/<schema>/<table>.parquet`` through a temporary file and an atomic
rename, so a reader sees the old or the new table, never half of one. The same
layout works on object storage (``s3://…`` with DuckDB's httpfs; a PUT is atomic).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb

PUBLISHED_SCHEMAS = ("raw", "forecasts", "features", "monitoring")


def _is_remote(root: str) -> bool:
    return "://" in root


def table_path(root: str, schema: str, table: str) -> str:
    return f"{root.rstrip('/')}/{schema}/{table}.parquet"


def publish_table(conn: duckdb.DuckDBPyConnection, root: str, schema: str, table: str) -> str:
    """Copy ``schema.table`` to Parquet atomically; returns the published path."""
    final = table_path(root, schema, table)
    source = f"{schema}.{table}"  # identifiers from our own contract, never user input
    if _is_remote(root):
        conn.execute(f"COPY (SELECT * FROM {source}) TO '{final}' (FORMAT parquet)")
        return final
    Path(final).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{final}.{uuid.uuid4().hex}.tmp"
    try:
        conn.execute(f"COPY (SELECT * FROM {source}) TO '{tmp}' (FORMAT parquet)")
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return final


def published_tables(root: str) -> dict[str, str]:
    """``schema.table`` → parquet path for every published table under a local root."""
    out = {}
    base = Path(root)
    for schema in PUBLISHED_SCHEMAS:
        for path in sorted((base / schema).glob("*.parquet")):
            out[f"{schema}.{path.stem}"] = str(path)
    return out


def open_reader(root: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per published table (``forecasts.channel_insights``…).

    Views read the Parquet file at query time, so a long-lived reader sees each
    newly published version without reconnecting.
    """
    conn = duckdb.connect()
    for schema in PUBLISHED_SCHEMAS:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for name, path in published_tables(root).items():
        escaped = path.replace("'", "''")
        conn.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{escaped}')")
    return conn
