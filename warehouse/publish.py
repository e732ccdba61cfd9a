"""Published snapshots of analyst-facing tables as Parquet, so reads never wait on a writer.

DuckDB lets one process write a database file, and while it does no other process
can open it. Analysts and the API therefore read *published* copies.

DuckDB opens a Parquet file more than once per query (footer at bind time, data in
the scan, by path), so replacing a file in place can pair one version's footer with
another's bytes (a torn read, found by tests/test_concurrency.py). Each publish
therefore writes a new, never-overwritten version file under
``<root>/<schema>/.versions/`` and then atomically re-points the symlink
``<root>/<schema>/<table>.parquet`` at it. ``PublishedReader`` resolves the link
once per query, so every query reads exactly one version; old versions are removed
only after a grace period. On object storage (``s3://…``) the key is written
directly (one PUT per version) — a pointer object would be the equivalent there.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import duckdb

PUBLISHED_SCHEMAS = ("raw", "forecasts", "features", "monitoring")
KEEP_VERSIONS = 3
GRACE_SECONDS = 600.0


def _is_remote(root: str) -> bool:
    return "://" in root


def table_path(root: str, schema: str, table: str) -> str:
    return f"{root.rstrip('/')}/{schema}/{table}.parquet"


def _prune(versions: Path, table: str) -> None:
    """Drop old versions beyond the newest few, once no query can still be reading them."""
    files = sorted(versions.glob(f"{table}-*.parquet"), key=lambda p: p.stat().st_mtime)
    now = time.time()
    for path in files[:-KEEP_VERSIONS]:
        if now - path.stat().st_mtime > GRACE_SECONDS:
            path.unlink(missing_ok=True)


def publish_table(conn: duckdb.DuckDBPyConnection, root: str, schema: str, table: str) -> str:
    """Publish ``schema.table`` as a new Parquet version; returns the table's stable path."""
    final = table_path(root, schema, table)
    source = f"{schema}.{table}"  # identifiers from our own contract, never user input
    if _is_remote(root):
        conn.execute(f"COPY (SELECT * FROM {source}) TO '{final}' (FORMAT parquet)")
        return final
    folder = Path(final).parent
    versions = folder / ".versions"
    versions.mkdir(parents=True, exist_ok=True)
    token = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    version = versions / f"{table}-{token}.parquet"
    tmp = versions / f".{table}-{token}.tmp"
    link_tmp = folder / f".{table}-{token}.link"
    try:
        conn.execute(f"COPY (SELECT * FROM {source}) TO '{tmp}' (FORMAT parquet)")
        os.replace(tmp, version)
        os.symlink(os.path.relpath(version, folder), link_tmp)
        os.replace(link_tmp, final)  # atomic: readers resolve the old or the new version
    finally:
        for leftover in (tmp, link_tmp):
            if os.path.lexists(leftover):
                os.remove(leftover)
    _prune(versions, table)
    return final


def published_tables(root: str) -> dict[str, str]:
    """``schema.table`` → stable parquet path for every published table under a local root."""
    out = {}
    base = Path(root)
    for schema in PUBLISHED_SCHEMAS:
        for path in sorted((base / schema).glob("*.parquet")):
            out[f"{schema}.{path.stem}"] = str(path)
    return out


class PublishedReader:
    """A DuckDB connection whose views always point at one whole published version.

    Before each query the links are resolved and any view whose table was
    republished is re-pointed at the new version file, so a long-lived reader sees
    new data and never a mix. Other connection methods pass through.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._conn = duckdb.connect()
        self._targets: dict[str, str] = {}
        for schema in PUBLISHED_SCHEMAS:
            self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        self.refresh()

    def refresh(self) -> None:
        for name, path in published_tables(self.root).items():
            target = os.path.realpath(path)
            if self._targets.get(name) != target:
                escaped = target.replace("'", "''")
                self._conn.execute(
                    f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{escaped}')"
                )
                self._targets[name] = target

    def execute(self, query: str, parameters=None):
        self.refresh()
        return self._conn.execute(query, parameters) if parameters is not None else self._conn.execute(query)

    def sql(self, query: str, *args, **kwargs):
        self.refresh()
        return self._conn.sql(query, *args, **kwargs)

    query = sql

    def close(self) -> None:
        self._conn.close()

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def open_reader(root: str) -> PublishedReader:
    """A reader over the published tables (``forecasts.channel_insights``, ``features.*``…)."""
    return PublishedReader(root)
