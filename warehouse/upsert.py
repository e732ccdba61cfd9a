"""Idempotent upserts of in-memory frames into warehouse tables."""

from __future__ import annotations

import duckdb
import pandas as pd


def table_count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    """Row count of a contract table (``schema.table`` from our fixed DDL, never user input)."""
    return conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def upsert_frame(conn: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> int:
    """Insert-or-replace ``frame`` into ``table`` by its primary key; return net new rows.

    Loading the same frame twice leaves the table unchanged, which is what makes
    re-materialising an ingestion asset safe.
    """
    before = table_count(conn, table)
    if len(frame):
        conn.register("incoming_frame", frame)
        try:
            conn.execute(f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM incoming_frame")
        finally:
            conn.unregister("incoming_frame")
    return table_count(conn, table) - before
