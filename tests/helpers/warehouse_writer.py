"""A writer in another process: waits for GO, then writes the warehouse once.

Usage: python -m tests.helpers.warehouse_writer WAREHOUSE READY GO RESULT RETRY_SECONDS

Imports, writes READY, waits for GO, then opens the warehouse for writing through the
project's ``DuckDBWarehouse`` (its lock retry, with RETRY_SECONDS as budget: the real
one is 60 s), inserts a row, commits and writes RESULT (JSON: ok, seconds, error).
A lock it cannot get within the budget is a failed write, reported, not raised.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    warehouse, ready, go, result, retry = sys.argv[1:]
    from resources.warehouse import DuckDBWarehouse
    from tests.helpers.sync import signal, wait_for

    signal(ready)
    wait_for(go, timeout=600)
    started = time.monotonic()
    outcome = {"ok": False, "error": None}
    try:
        with DuckDBWarehouse(path=warehouse, lock_retry_seconds=float(retry)).connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS monitoring.writer_probe (written_at TIMESTAMP)")
            conn.execute("INSERT INTO monitoring.writer_probe VALUES (now())")
        outcome["ok"] = True
    except Exception as exc:  # noqa: BLE001 - the failed write is what the test counts
        outcome["error"] = repr(exc)[:500]
    outcome["seconds"] = round(time.monotonic() - started, 2)
    signal(result, json.dumps(outcome))


if __name__ == "__main__":
    main()
