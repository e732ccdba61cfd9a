"""DuckDB warehouse resource: one file, schema ensured, lock conflicts retried.

DuckDB allows one writing process per file. Writers in Dagster are serialised by
the ``duckdb`` concurrency pool; the retry here covers the short window where an
analyst or the API holds the file open from another process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from warehouse.publish import open_reader, publish_table
from warehouse.schema import ensure_schema


class DuckDBWarehouse(dg.ConfigurableResource):
    """The analytics warehouse (``warehouse.duckdb`` under the data dir)."""

    path: str
    lock_retry_seconds: float = 60.0

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the warehouse; writers get the schema created first."""
        if not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._open(read_only)
        try:
            if not read_only:
                ensure_schema(conn)
            yield conn
        finally:
            conn.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_retry_seconds
        delay = 0.05
        while True:
            try:
                return duckdb.connect(self.path, read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)


class PublishedTables(dg.ConfigurableResource):
    """Parquet copies of analyst-facing tables (``warehouse.publish``): reads never block."""

    root: str

    def publish(self, conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> str:
        return publish_table(conn, self.root, schema, table)

    def reader(self) -> duckdb.DuckDBPyConnection:
        return open_reader(self.root)
