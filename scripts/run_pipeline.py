"""`make run`: materialize the whole graph into the Dagster instance, then say where things are.

Runs are recorded in $DAGSTER_HOME, so `make dev` shows them (materializations,
checks, lineage) afterwards.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb

ROOT = Path(__file__).resolve().parents[1]


def prepare_instance() -> dg.DagsterInstance:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path("data/dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return dg.DagsterInstance.get()


def summarize(warehouse: Path) -> None:
    conn = duckdb.connect(str(warehouse), read_only=True)
    rows = conn.execute(
        """
        SELECT schema_name, table_name, estimated_size
        FROM duckdb_tables() WHERE schema_name IN ('raw','truth','features','forecasts')
        ORDER BY schema_name, table_name
        """
    ).fetchall()
    print("\nTables in", warehouse)
    for schema, table, _ in rows:
        n = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchall()[0][0]
        print(f"  {schema}.{table:<28} {n:>10,} rows")
    conn.close()
    print(
        "\nQuery them, e.g.:\n"
        f"  .venv/bin/python -c \"import duckdb; print(duckdb.connect('{warehouse}', read_only=True)"
        ".sql('SELECT channel_id, subscribers, err, er, best_hours FROM features.channel_metrics"
        " ORDER BY subscribers DESC LIMIT 5'))\"\n"
        "Browse runs, checks and lineage with `make dev`."
    )


def main() -> int:
    instance = prepare_instance()
    from channel_assets.definitions import defs
    from resources.settings import load_settings

    settings = load_settings()
    print(f"source={settings.source} size={settings.size} seed={settings.seed} "
          f"data_dir={settings.data_dir}")
    started = time.perf_counter()
    result = defs.get_job_def("everything_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    elapsed = time.perf_counter() - started
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]
    print(f"\nrun {result.run_id} {'succeeded' if result.success else 'FAILED'} "
          f"in {elapsed:.0f} s")
    if failed_checks:
        print("checks that did not pass:", ", ".join(failed_checks))
    summarize(settings.warehouse_path)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
