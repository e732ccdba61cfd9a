"""Start a warehouse write and freeze inside its transaction, just before COMMIT.

Usage: python -m tests.helpers.kill_mid_write MODE WAREHOUSE READY [ARG]

MODE is one of

* ``forecast``: ``write_forecast`` of a FORECAST_ROWS-row frame into
  ``forecasts.engagement_check``;
* ``feature``: ``build_feature_table(conn, "post_trajectories")``;
* ``landing``: ``load_landing(conn, ARG)`` (ARG = a landing folder).

The real function runs on a connection wrapper whose ``execute("COMMIT")``
first measures what the open transaction sees, writes it to READY (JSON), then
sleeps until the test kills the process with SIGKILL. So the kill always lands
after every INSERT / CREATE of the write and before its COMMIT.
"""

from __future__ import annotations

import json
import sys
import time

FORECAST_ROWS = 400_000
PROBES = {
    "forecast": "SELECT count(*) FROM forecasts.engagement_check",
    "feature": "SELECT count(*) FROM features.post_trajectories",
    "landing": "SELECT count(*) FROM raw.posts",
}


class FreezeBeforeCommit:
    """Delegates to a DuckDB connection; COMMIT reports and hangs instead of committing."""

    def __init__(self, conn, probe: str, ready: str) -> None:
        self._conn, self._probe, self._ready = conn, probe, ready

    def execute(self, sql, *args, **kwargs):
        if isinstance(sql, str) and sql.strip().upper() == "COMMIT":
            from tests.helpers.sync import signal

            rows = self._conn.execute(self._probe).fetchall()[0][0]
            signal(self._ready, json.dumps({"rows_in_open_transaction": rows}))
            while True:  # wait for SIGKILL
                time.sleep(1)
        return self._conn.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def main() -> None:
    mode, warehouse_path, ready, *rest = sys.argv[1:]
    import duckdb

    conn = duckdb.connect(warehouse_path)
    frozen = FreezeBeforeCommit(conn, PROBES[mode], ready)
    if mode == "forecast":
        import numpy as np
        import pandas as pd

        from warehouse.forecast_tables import write_forecast

        ids = np.arange(FORECAST_ROWS)
        frame = pd.DataFrame(
            {
                "channel_id": ids % 50,
                "post_id": ids,
                "engagement_score": (ids % 1000) / 1000.0,
                "model_name": "crash_test",
                "model_version": "new",
            }
        )
        write_forecast(frozen, "engagement_check", frame)
    elif mode == "feature":
        from warehouse.features import build_feature_table

        build_feature_table(frozen, "post_trajectories")
    elif mode == "landing":
        from warehouse.landing import load_landing

        load_landing(frozen, rest[0])
    else:
        raise SystemExit(f"unknown mode {mode}")
    raise SystemExit("the write committed: the freeze hook did not run")


if __name__ == "__main__":
    main()
