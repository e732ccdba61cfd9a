"""`make run`: materialize the whole graph into the Dagster instance, then say what it did.

Steps run in parallel processes (``channel_assets.executor``); the console gets one
line per step (``channel_assets.loggers``), the full event log goes to the UI and to
``$PULSE_DATA_DIR/logs/pulse.log``. It ends with the six models against their strongest
baselines, the forecast tables and what to do next. Runs are recorded in
$DAGSTER_HOME, so `make dev` shows them (materializations, checks, lineage) afterwards.

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
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb

ROOT = Path(__file__).resolve().parents[1]
DEV_URLS = ("Dagster UI  http://127.0.0.1:3000", "MLflow UI   http://127.0.0.1:5000")
SERVE_URL = "REST API    http://127.0.0.1:8000/docs"


def prepare_instance() -> dg.DagsterInstance:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path("data/dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return dg.DagsterInstance.get()


def log_path(settings) -> Path:
    return settings.data_dir / "logs" / "pulse.log"


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
    meta: dict = field(default_factory=dict, repr=False)

    @property
    def serving(self) -> str:
        if self.champion not in (None, "None"):
            return f"champion v{self.champion}"
        return "strongest baseline (no champion)"


def _gate_text(gate: dict) -> str:
    if gate.get("lo") is not None:
        return f"{gate['name']} {gate['value']:+.4f} [{gate['lo']:+.4f}, {gate['hi']:+.4f}]"
    return f"{gate['name']} {gate['value']:.4f} (needs {gate['threshold']:.4f})"


def model_outcomes(result: dg.ExecutionResult, model_assets: list[str]) -> list[ModelOutcome]:
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
                meta,
            )
        )
    return out


def root_cause(error) -> str:
    """The innermost error's message: Dagster wraps a step's exception in its own."""
    while error is not None and error.cause is not None:
        error = error.cause
    return (error.message if error else "").strip()


def step_failures(result: dg.ExecutionResult) -> list[str]:
    """Steps that raised (not gate failures: model checks are non-blocking)."""
    return [
        f"{e.step_key}: {root_cause(e.event_specific_data.error)[:300]}"
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]


def _lower_end(gate: dict) -> float:
    return gate["lo"] if gate.get("lo") is not None else gate["value"]


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def model_rows(outcomes: list[ModelOutcome], served: dict[str, dict[str, int]]) -> list[list[str]]:
    """The closing table: metric, strongest baseline, gate, promoted or why not, who serves."""
    from nn_models.forecasts import SERVES

    rows = []
    for o in outcomes:
        name = o.asset.removesuffix("_model")
        meta = o.meta
        metric = meta.get("primary_metric", "")
        strongest = str((meta.get("data") or {}).get("strongest_baseline", "")) or "–"
        base_value = meta.get(f"holdout/baseline_{strongest}_{metric}")
        baseline_gates = [g for g in meta.get("gates_json", []) if g.get("against_baseline")]
        worst = min(baseline_gates, key=_lower_end, default=None)
        failed = [g["name"] for g in meta.get("gates_json", []) if not g["passed"]]
        if o.status != "registered":
            verdict = _short(f"{o.status}: {o.reason}", 48)
        elif o.promoted:
            verdict = f"v{o.version} promoted"
        else:
            verdict = _short(f"v{o.version} no: {', '.join(failed) or o.reason}", 48)
        by_source = served.get(SERVES[name], {})
        serves = ", ".join(f"{s} {n:,}" for s, n in sorted(by_source.items())) or "no rows"
        rows.append(
            [
                name,
                f"{metric} {_fmt(meta.get(f'holdout/{metric}'))}" if metric else "–",
                _short(f"{strongest} {_fmt(base_value)}" if base_value is not None else strongest, 28),
                "–" if worst is None else _gate_text(worst).replace("_vs_baseline", ""),
                verdict,
                f"{SERVES[name]}: {serves}",
            ]
        )
    return rows


def table_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]


def forecast_rows(warehouse: Path) -> dict[str, dict[str, int]]:
    """Rows per forecast table and source (model / baseline)."""
    from nn_models.forecasts import FORECASTS

    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        out = {}
        for table in FORECASTS:
            try:
                rows = conn.execute(f"SELECT source, count(*) FROM forecasts.{table} GROUP BY ALL").fetchall()
            except duckdb.CatalogException:
                rows = []
            out[table] = {str(s): int(n) for s, n in rows}
        return out
    finally:
        conn.close()


def print_summary(outcomes: list[ModelOutcome], served: dict[str, dict[str, int]], settings) -> None:
    print("\nModels (holdout = the latest period; gate = model − strongest baseline, 90 % interval)")
    header = ["model", "holdout", "strongest baseline", "gate (worst)", "promoted or why not", "serves"]
    for line in table_lines(header, model_rows(outcomes, served)):
        print(line)
    print("\nForecast tables (rows by source)")
    for table, by_source in served.items():
        parts = ", ".join(f"{s} {n:,}" for s, n in sorted(by_source.items())) or "no rows"
        print(f"  forecasts.{table:<34} {sum(by_source.values()):>8,}  {parts}")
    print(
        "\nNext:\n"
        f"  SQL   .venv/bin/python -c \"import duckdb; print(duckdb.connect('{settings.warehouse_path}', "
        "read_only=True).sql('SELECT channel_id, horizon_days, subscribers_p50, source "
        "FROM forecasts.channel_growth_forecasts WHERE horizon_days = 30 LIMIT 5'))\"\n"
        f"  make dev    {DEV_URLS[0]}  ·  {DEV_URLS[1]}\n"
        f"  make serve  {SERVE_URL}\n"
        f"  full log    {log_path(settings)}"
    )


def run_config(settings) -> dict:
    return {"loggers": {"step_lines": {}, "run_file": {"config": {"path": str(log_path(settings))}}}}


def execute(settings) -> dg.ExecutionResult:
    """Materialize ``everything_job`` for ``settings`` into $DAGSTER_HOME's instance.

    ``settings.executor``: multiprocess (steps in parallel processes, the job rebuilt in
    each from the run's PULSE_* variables) or in_process (one process, e.g. for tests
    that patch code: a patch does not reach other processes).
    """
    from channel_assets.run_job import reconstructable_everything_job, run_env

    instance = prepare_instance()
    if settings.executor == "in_process":
        from channel_assets.definitions import build_definitions

        job = build_definitions(settings).resolve_job_def("everything_job")
        return job.execute_in_process(
            instance=instance, run_config=run_config(settings), raise_on_error=False
        )
    with dg.execute_job(
        reconstructable_everything_job(run_env()),
        instance,
        run_config=run_config(settings),
        raise_on_error=False,
    ) as result:
        return result


def main() -> int:
    from channel_assets.loggers import route_to_file
    from channel_assets.models import model_assets
    from resources.settings import load_settings

    settings = load_settings()
    route_to_file(log_path(settings))
    print(
        f"source={settings.source} size={settings.size} profile={settings.profile} seed={settings.seed} "
        f"steps at once={settings.parallel_steps if settings.executor == 'multiprocess' else 1}\n"
        f"data: {settings.data_dir}  (full log: {log_path(settings)})",
        flush=True,
    )
    started = time.perf_counter()
    result = execute(settings)
    elapsed = time.perf_counter() - started
    errors = step_failures(result)
    ok = result.success and not errors
    print(f"\nrun {result.run_id[:8]} {'succeeded' if ok else 'FAILED'} in {elapsed:.0f} s")
    served = forecast_rows(settings.warehouse_path) if settings.warehouse_path.exists() else {}
    print_summary(model_outcomes(result, [a.key.to_user_string() for a in model_assets]), served, settings)
    if errors:
        print("\nErrors (tracebacks in the full log and the Dagster UI):")
        for line in errors:
            print(f"  {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
