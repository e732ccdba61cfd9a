"""One Dagster run (``dg.materialize``) of ingestion + feature assets against a data dir.

Usage: python -m tests.helpers.dagster_run DATA_DIR READY GO RESULT [ASSET ...]

Imports, writes READY, waits for GO (so two of these start their runs together),
materializes ``raw_tables`` plus the named feature assets with the project's
resources, and writes RESULT (JSON: success, start/end times, failed steps).
"""

from __future__ import annotations

import json
import sys
import time

from tests.helpers.sync import signal, wait_for


def main() -> None:
    data_dir, ready, go, result_path, *feature_names = sys.argv[1:]
    import dagster as dg

    from channel_assets.features import feature_table_assets
    from channel_assets.ingestion import raw_tables
    from resources.data_source import ChannelDataSource
    from resources.settings import load_settings
    from resources.telegram_collector import TelegramCollector
    from resources.warehouse import DuckDBWarehouse, PublishedTables

    settings = load_settings({"PULSE_DATA_DIR": data_dir, "PULSE_SIZE": "tiny",
                              "PULSE_PROFILE": "tiny", "PULSE_DEVICE": "cpu"})
    # the same resources build_resources() wires, minus the ML ones these assets don't use
    resources = {
        "warehouse": DuckDBWarehouse(path=str(settings.warehouse_path), lock_retry_seconds=240),
        "published": PublishedTables(root=settings.parquet_uri),
        "data_source": ChannelDataSource(source="synthetic", size="tiny", seed=settings.seed,
                                         landing_dir=str(settings.landing_dir)),
        "telegram": TelegramCollector(channels=[]),
    }
    by_name = {a.key.to_user_string(): a for a in feature_table_assets}
    assets = [raw_tables, *(by_name[name] for name in feature_names)]
    signal(ready)
    wait_for(go, timeout=600)
    start = time.time()
    result = dg.materialize(assets, resources=resources, raise_on_error=False)
    end = time.time()
    failures = [
        f"{event.step_key}: {event.event_specific_data.error.message[:500]}"
        for event in result.all_events if event.event_type_value == "STEP_FAILURE"
    ]
    signal(result_path, json.dumps({"success": result.success, "start": start, "end": end,
                                    "failures": failures}))


if __name__ == "__main__":
    main()
