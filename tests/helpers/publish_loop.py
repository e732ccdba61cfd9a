"""A writer that holds the warehouse and republishes one table as fast as it can.

Usage: python -m tests.helpers.publish_loop WAREHOUSE ROOT READY STOP RESULT

Opens WAREHOUSE read-write (so it holds DuckDB's single-writer lock all along)
and alternates ``forecasts.pulse_check`` between two known versions, publishing
each with ``warehouse.publish.publish_table`` (temp file + atomic rename):

* version 1: ``VERSION_ROWS[1]`` rows, every ``value`` = 1
* version 2: ``VERSION_ROWS[2]`` rows, every ``value`` = 2

``row_id`` runs 0..n-1 in both. READY appears after the first publish; the loop
ends when STOP appears; RESULT then holds the number of publishes (JSON).
"""

from __future__ import annotations

import json
import sys
import time

VERSION_ROWS = {1: 60_000, 2: 100_000}
TABLE = "pulse_check"


def main() -> None:
    warehouse_path, root, ready, stop, result = sys.argv[1:]
    from pathlib import Path

    import duckdb

    from tests.helpers.sync import signal
    from warehouse.publish import publish_table

    conn = duckdb.connect(warehouse_path)
    conn.execute("CREATE SCHEMA IF NOT EXISTS forecasts")
    publishes, started = 0, time.time()
    while not Path(stop).exists() and time.time() - started < 300:
        version = 1 + publishes % 2
        conn.execute(
            f"CREATE OR REPLACE TABLE forecasts.{TABLE} AS "
            f"SELECT {version} AS value, i AS row_id, 'v{version}-' || i AS label "
            f"FROM range({VERSION_ROWS[version]}) t(i)"
        )
        publish_table(conn, root, "forecasts", TABLE)
        publishes += 1
        if publishes == 1:
            signal(ready)
    conn.close()
    signal(result, json.dumps({"publishes": publishes, "seconds": time.time() - started}))


if __name__ == "__main__":
    main()
