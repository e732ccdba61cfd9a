"""Measure the peak memory of one ``load_landing`` call in a fresh process.

Usage: python -m tests.helpers.landing_memory FOLDER WAREHOUSE [PRIME]

Prints one JSON line: ``baseline_bytes`` (resident set after imports, a warm-up
load of a tiny folder — lazy imports and DuckDB extensions cost the same for any
file — and the optional PRIME folder loaded into the warehouse), ``peak_bytes``
(the process's high-water mark during the load of FOLDER, reset after the
baseline where the kernel allows it) and ``data_bytes`` (total size of FOLDER's
files). Run in its own process so that nothing the test runner allocated counts,
and so the high-water mark is this load's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (kB) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _warm_up(folder: Path) -> None:
    """Load a two-table, two-format folder once, into a throwaway database."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from warehouse.landing import load_landing

    folder.mkdir()
    (folder / "posts.csv").write_text(
        "channel_id,post_id,published_at,text\n1,1,2026-01-01T10:00:00Z,hello\n1,2,x,bad\n"
    )
    (folder / "post_snapshots.csv").write_text(
        "channel_id,post_id,observed_at,views\n1,1,2026-01-01 11:00:00,5\n1,1,2026-01-01 12:00:00,3\n"
    )
    pq.write_table(
        pa.table({"channel_id": [1], "post_id": [3], "published_at": pa.array([1767261600], pa.int64())}),
        folder / "posts.parquet",
    )
    with duckdb.connect() as conn:
        load_landing(conn, folder)


def main() -> None:
    folder, warehouse_path, *prime = sys.argv[1:4]
    import tempfile

    import duckdb

    from warehouse.landing import load_landing
    from warehouse.schema import ensure_schema

    with tempfile.TemporaryDirectory() as tmp:
        _warm_up(Path(tmp) / "warm")
    conn = duckdb.connect(warehouse_path)
    ensure_schema(conn)
    if prime:
        load_landing(conn, prime[0])
    data_bytes = sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
    baseline = _status_bytes("VmRSS")
    reset = _reset_peak()
    report = load_landing(conn, folder)
    peak = _status_bytes("VmHWM")
    conn.close()
    print(
        json.dumps(
            {
                "baseline_bytes": baseline,
                "peak_bytes": peak,
                "data_bytes": data_bytes,
                "peak_reset": reset,
                "rows_loaded": sum(t.rows_loaded for t in report.tables.values()),
            }
        )
    )


if __name__ == "__main__":
    main()
