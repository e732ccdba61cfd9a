"""`make run`: materialize the whole graph into the Dagster instance, then say where things are.

Runs are recorded in $DAGSTER_HOME, so `make dev` shows them (materializations,
checks, lineage) afterwards.

Exit status: 0 when the graph ran, even if some model gates failed — a version that
loses to its baseline is news (registered, not promoted; the forecasts are served by
the champion or the baseline), not an outage. Non-zero on errors: an exception in
any step, a blocking data check on ingestion, an unreadable source.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
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


@dataclass
class ModelOutcome:
    """What one model asset did in this run, and what serves its forecasts afterwards."""

    asset: str
    status: str  # registered | skipped | not run
    version: str | None
    promoted: bool
    reason: str  # promotion reason or skip reason
    champion: str | None
    failed_gates: list[str]

    @property
    def serving(self) -> str:
        if self.champion not in (None, "None"):
            return f"champion v{self.champion}"
        return "strongest baseline (no champion)"


def _gate_text(gate: dict) -> str:
    if gate.get("lo") is not None:
        return (
            f"{gate['name']} {gate['value']:+.4f} "
            f"[{gate['lo']:+.4f}, {gate['hi']:+.4f}] (needs lower bound >= 0)"
        )
    return f"{gate['name']} {gate['value']:.4f} (threshold {gate['threshold']:.4f})"


def model_outcomes(result: dg.ExecuteInProcessResult, model_assets: list[str]) -> list[ModelOutcome]:
    """One row per model asset from its materialization metadata (gates included)."""
    out = []
    for asset in model_assets:
        mats = result.asset_materializations_for_node(asset)
        if not mats:
            out.append(ModelOutcome(asset, "not run", None, False, "step did not run", None, []))
            continue
        meta = {k: v.value for k, v in mats[-1].metadata.items()}
        status = str(meta.get("status", "?"))
        failed = [_gate_text(g) for g in meta.get("gates_json", []) if not g["passed"]]
        out.append(
            ModelOutcome(
                asset,
                status,
                meta.get("version"),
                bool(meta.get("promoted", False)),
                str(meta.get("promotion_reason") or meta.get("skip_reason") or ""),
                meta.get("champion_version"),
                failed,
            )
        )
    return out


def step_failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """Steps that raised (not gate failures: model checks are non-blocking)."""
    return [
        f"{e.step_key}: {e.event_specific_data.error.message.strip()[:300]}"
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]


def print_summary(outcomes: list[ModelOutcome]) -> None:
    print("\nModels")
    for o in outcomes:
        line = f"  {o.asset:<17} {o.status:<10}"
        if o.status == "registered":
            line += f" v{o.version} {'promoted' if o.promoted else 'not promoted'}"
        print(f"{line}; serves: {o.serving}")
        if o.reason:
            print(f"  {'':<17} {o.reason[:300]}")
    failed = [o for o in outcomes if o.failed_gates]
    if failed:
        print("\nGates that failed (the version is registered, not promoted):")
        for o in failed:
            print(f"  {o.asset}: {'; '.join(o.failed_gates)} -> served by {o.serving}")


def summarize(warehouse: Path) -> None:
    conn = duckdb.connect(str(warehouse), read_only=True)
    tables = conn.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "WHERE schema_name IN ('raw', 'truth', 'features', 'forecasts') "
        "ORDER BY schema_name, table_name"
    ).fetchall()
    print("\nTables in", warehouse)
    for schema, table in tables:
        name = f'"{schema}"."{table}"'
        n = conn.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        served = ""
        if schema == "forecasts":
            by_source = conn.execute(
                f"SELECT source, count(*) FROM {name} GROUP BY source ORDER BY source"
            ).fetchall()
            served = "  " + ", ".join(f"{s}: {c:,}" for s, c in by_source)
        print(f"  {schema}.{table:<34} {n:>10,} rows{served}")
    conn.close()
    print(
        "\nQuery them, e.g.:\n"
        f"  .venv/bin/python -c \"import duckdb; print(duckdb.connect('{warehouse}', read_only=True)"
        ".sql('SELECT channel_id, subscribers, err, er, best_hours FROM features.channel_metrics"
        " ORDER BY subscribers DESC LIMIT 5'))\"\n"
        "Browse runs, checks and lineage with `make dev`."
    )


def execute(settings) -> dg.ExecuteInProcessResult:
    """Materialize ``everything_job`` for ``settings`` into $DAGSTER_HOME's instance."""
    from channel_assets.definitions import build_definitions

    instance = prepare_instance()
    defs = build_definitions(settings)
    return defs.get_job_def("everything_job").execute_in_process(instance=instance, raise_on_error=False)


def main() -> int:
    from channel_assets.models import model_assets
    from resources.settings import load_settings

    settings = load_settings()
    print(f"source={settings.source} size={settings.size} seed={settings.seed} data_dir={settings.data_dir}")
    started = time.perf_counter()
    result = execute(settings)
    elapsed = time.perf_counter() - started
    errors = step_failures(result)
    print(
        f"\nrun {result.run_id} {'succeeded' if result.success and not errors else 'FAILED'} "
        f"in {elapsed:.0f} s"
    )
    print_summary(model_outcomes(result, [a.key.to_user_string() for a in model_assets]))
    if errors:
        print("\nErrors:")
        for line in errors:
            print(f"  {line}")
    if settings.warehouse_path.exists():
        summarize(settings.warehouse_path)
    return 0 if result.success and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
