"""One Dagster run (``dg.materialize``) of ingestion + feature assets against a data dir.

Usage: python -m tests.helpers.dagster_run DATA_DIR NAME SHARED RESULT [ASSET ...]

Imports, creates SHARED/ready_NAME, waits for SHARED/go (so two of these start
their runs together), materializes ``raw_tables`` plus the named feature assets
with the project's resources, and writes RESULT (JSON: success, start/end times,
failed steps, lock conflicts met).

To make the two runs really collide on DuckDB's single-writer lock (instead of
hoping the scheduler interleaves them), the warehouse's ``duckdb.connect`` is
wrapped: a lock conflict is counted and announced as SHARED/blocked_NAME, and a
process that got the lock without ever being blocked holds it (at most 120 s)
until the other one announces it was blocked. The resource's own retry then has
to resolve the conflict.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.helpers.sync import signal, wait_for


def _collide(warehouse_path: str, name: str, shared: Path, stats: dict) -> None:
    import duckdb

    original = duckdb.connect

    def connect(database=":memory:", *args, **kwargs):
        if str(database) != warehouse_path:
            return original(database, *args, **kwargs)
        try:
            conn = original(database, *args, **kwargs)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                stats["lock_conflicts"] += 1
                signal(shared / f"blocked_{name}")
            raise
        if not stats["lock_conflicts"] and not stats["held"]:
            stats["held"] = True  # hold the lock until the other run has run into it
            deadline = time.monotonic() + 120
            while not [p for p in shared.glob("blocked_*") if p.name != f"blocked_{name}"]:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        return conn

    duckdb.connect = connect


def main() -> None:
    data_dir, name, shared_dir, result_path, *feature_names = sys.argv[1:]
    shared = Path(shared_dir)
    import dagster as dg

    from channel_assets.features import feature_table_assets
    from channel_assets.ingestion import raw_tables
    from resources.data_source import ChannelDataSource
    from resources.settings import load_settings
    from resources.telegram_collector import TelegramCollector
    from resources.warehouse import DuckDBWarehouse, PublishedTables

    settings = load_settings(
        {"PULSE_DATA_DIR": data_dir, "PULSE_SIZE": "tiny", "PULSE_PROFILE": "tiny", "PULSE_DEVICE": "cpu"}
    )
    # the resources build_resources() wires, minus the ML ones these assets don't use
    # (importing channel_assets.definitions pulls in every model: ~20 s more per process)
    resources = {
        "warehouse": DuckDBWarehouse(path=str(settings.warehouse_path)),  # default lock retry
        "published": PublishedTables(root=settings.parquet_uri),
        "data_source": ChannelDataSource(
            source="synthetic", size="tiny", seed=settings.seed, landing_dir=str(settings.landing_dir)
        ),
        "telegram": TelegramCollector(channels=[]),
    }
    by_name = {a.key.to_user_string(): a for a in feature_table_assets}
    assets = [raw_tables, *(by_name[n] for n in feature_names)]
    stats = {"lock_conflicts": 0, "held": False}
    _collide(str(settings.warehouse_path), name, shared, stats)
    signal(shared / f"ready_{name}")
    wait_for(shared / "go", timeout=600)
    start = time.time()
    result = dg.materialize(assets, resources=resources, raise_on_error=False)
    end = time.time()
    failures = [
        f"{event.step_key}: {event.event_specific_data.error.message[:500]}"
        for event in result.all_events
        if event.event_type_value == "STEP_FAILURE"
    ]
    signal(
        result_path,
        json.dumps({"success": result.success, "start": start, "end": end, "failures": failures, **stats}),
    )


if __name__ == "__main__":
    main()
