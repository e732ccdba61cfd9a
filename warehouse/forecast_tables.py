"""Write a forecast frame as ``forecasts.<table>`` in one transaction."""

from __future__ import annotations

import duckdb
import pandas as pd


def write_forecast(conn: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> int:
    """Replace the table atomically (readers of the warehouse see old or new, never a mix)."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS forecasts")
    conn.register("forecast_frame", frame)
    try:
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(f"CREATE OR REPLACE TABLE forecasts.{table} AS SELECT * FROM forecast_frame")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.unregister("forecast_frame")
    return len(frame)
