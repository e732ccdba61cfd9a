"""Group ``models``: one asset per model card, each gated by asset checks.

Every asset tunes with Optuna, trains, evaluates against its strongest baseline on
the latest period, registers a version (alias ``challenger``) and moves ``champion``
only when every gate passed and it is at least as good as the champion on the
same holdout (``nn_models.pipeline``). The gates are reported as ERROR checks that
do not block: a losing version is news (red in the UI, with its numbers), not an
outage, and the forecasts downstream still refresh in the same run. They read
``@champion`` or, without one, the strongest baseline, and never the new version:
promotion is the gate a failing model cannot pass.
"""

import dagster as dg

from channel_assets.executor import priority
from channel_assets.metadata import image
from nn_models.pipeline import TrainingReport, train_and_register
from nn_models.task import PROFILES, InsufficientData
from nn_models.tasks import TASKS, get_task
from resources.compute import TorchCompute
from resources.mlflow_tracking import MlflowTracking
from resources.settings import load_settings
from resources.warehouse import DuckDBWarehouse
from warehouse.snapshot import copy_out

MODEL_DEPS: dict[str, list[str]] = {
    "engagement": ["post_trajectories", "post_features"],
    "growth": ["channel_daily_features"],
    "content": ["post_features", "post_text_embeddings"],
    "viral": ["post_features", "post_text_embeddings"],
    "behavior": ["user_behavior_features", "raw_interactions"],
    "schedule": ["post_features"],
}


def _table(asset: str) -> str:
    """The table an upstream asset writes (``raw_interactions`` → ``raw.interactions``)."""
    return f"raw.{asset[4:]}" if asset.startswith("raw_") else f"features.{asset}"


# What each model reads: its upstream assets' tables, plus the truth schema (read only
# for extra reports). tests/test_concurrency.py checks each task loads the same data
# from this copy as from the warehouse, so a dependency a task reads but does not
# declare fails there.
MODEL_TABLES: dict[str, list[str]] = {
    name: [_table(asset) for asset in deps] for name, deps in MODEL_DEPS.items()
}

CARD_CHECK = "meets_model_card"
BASELINE_CHECK = "not_worse_than_baseline"


_SETTINGS = load_settings()


class TrainingConfig(dg.Config):
    """Run config: ``profile`` tiny | demo | full (50 Optuna trials as in the seed).

    Defaults come from PULSE_PROFILE (tiny when PULSE_SIZE=tiny, else demo) and PULSE_SEED.
    """

    profile: str = _SETTINGS.profile
    seed: int = _SETTINGS.seed


def _gate_table(report: TrainingReport) -> str:
    lines = ["| gate | value | 90 % interval | threshold | passed |", "|---|---|---|---|---|"]
    lines += [
        f"| {g.name} | {g.value:.4f} | "
        f"{'' if g.lo is None else f'[{g.lo:+.4f}, {g.hi:+.4f}]'} | {g.threshold:.4f} | "
        f"{g.passed} |"
        for g in report.gates
    ]
    return "\n".join(lines)


def _metadata(report: TrainingReport, tracking: MlflowTracking) -> dict:
    meta: dict = {
        "status": dg.MetadataValue.text(report.status),
        "registered_model": dg.MetadataValue.text(report.registered_model),
        "device": dg.MetadataValue.text(report.device),
    }
    if report.status != "registered":
        meta["skip_reason"] = dg.MetadataValue.text(report.reason)
        return meta
    meta.update(
        {
            "version": dg.MetadataValue.text(str(report.version)),
            "champion_version": dg.MetadataValue.text(str(report.champion_version)),
            "promoted": dg.MetadataValue.bool(report.promoted),
            "promotion_reason": dg.MetadataValue.text(report.promotion_reason),
            "mlflow_run_id": dg.MetadataValue.text(str(report.run_id)),
            "mlflow_run": dg.MetadataValue.url(tracking.run_url(str(report.run_id))),
            "gates": dg.MetadataValue.md(_gate_table(report)),
            "gates_json": dg.MetadataValue.json(
                [
                    {
                        "name": g.name,
                        "passed": g.passed,
                        "value": g.value,
                        "threshold": g.threshold,
                        "lo": g.lo,
                        "hi": g.hi,
                        "against_baseline": g.against_baseline,
                        "description": g.description,
                    }
                    for g in report.gates
                ]
            ),
            "train_seconds": dg.MetadataValue.float(round(report.train_seconds, 2)),
            "total_seconds": dg.MetadataValue.float(round(report.total_seconds, 2)),
            "optuna_trials": dg.MetadataValue.int(report.n_trials),
            "best_params": dg.MetadataValue.json(report.best_params),
            "data": dg.MetadataValue.json({k: str(v) for k, v in report.data_info.items()}),
        }
    )
    for key, value in report.metrics.items():
        meta[f"holdout/{key}"] = dg.MetadataValue.float(float(value))
    for key, value in report.baseline.items():
        meta[f"holdout/{key}"] = dg.MetadataValue.float(float(value))
    for name, uri in report.artifacts.items():
        # shown inline (a data URL: a browser will not open file:// from the UI); the
        # MLflow artifact stays, linked under plot_file/
        if name in report.images:
            meta[f"plot/{name}"] = image(name, report.images[name])
        meta[f"plot_file/{name}"] = dg.MetadataValue.path(uri)
    return meta


def _check_results(report: TrainingReport) -> list[dg.AssetCheckResult]:
    if report.status != "registered":
        why = {"skipped": dg.MetadataValue.text(report.reason)}
        return [
            dg.AssetCheckResult(
                check_name=name, passed=False, severity=dg.AssetCheckSeverity.WARN, metadata=why
            )
            for name in (CARD_CHECK, BASELINE_CHECK)
        ]
    results = []
    for name, gates in (
        (CARD_CHECK, [g for g in report.gates if not g.against_baseline]),
        (BASELINE_CHECK, [g for g in report.gates if g.against_baseline]),
    ):
        results.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=bool(gates) and all(g.passed for g in gates),
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    **{g.name: dg.MetadataValue.float(float(g.value)) for g in gates},
                    **{f"{g.name}_threshold": dg.MetadataValue.float(float(g.threshold)) for g in gates},
                    # the margin's bootstrap interval: a gate against a baseline passes
                    # only when its lower bound is >= 0
                    **{
                        f"{g.name}_{end}": dg.MetadataValue.float(float(v))
                        for g in gates
                        if g.lo is not None
                        for end, v in (("lo", g.lo), ("hi", g.hi))
                    },
                    "version": dg.MetadataValue.text(str(report.version)),
                    "rules": dg.MetadataValue.text("; ".join(g.description for g in gates)),
                },
            )
        )
    return results


def _model_asset(name: str) -> dg.AssetsDefinition:
    key = f"{name}_model"
    task_path = TASKS[name]

    @dg.asset(
        name=key,
        group_name="models",
        deps=MODEL_DEPS[name],
        # no pool: models run beside each other and beside one warehouse writer (each
        # step's torch gets the cores divided by the steps at once, TorchCompute)
        kinds={"pytorch", "mlflow", "optuna"},
        op_tags=priority(key),
        description=f"{task_path.split(':')[1]}: tuned with Optuna, registered in MLflow, "
        "gated by the model card.",
        check_specs=[
            # not blocking: a failed gate is news, not an outage. The guarantee that a
            # failing version never reaches a forecast is the promotion rule
            # (nn_models.pipeline moves @champion only when every gate passed) and the
            # forecasts reading @champion or the baseline, never the new version.
            dg.AssetCheckSpec(
                CARD_CHECK,
                asset=key,
                blocking=False,
                description="holdout metrics meet the model card's thresholds",
            ),
            dg.AssetCheckSpec(
                BASELINE_CHECK,
                asset=key,
                blocking=False,
                description="beats its strongest baseline by more than the "
                "holdout's noise (bootstrap interval)",
            ),
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        warehouse: DuckDBWarehouse,
        compute: TorchCompute,
        mlflow_tracking: MlflowTracking,
    ):
        task = get_task(name)
        choice = compute.choose()
        context.log.info(f"{key}: device {choice.device} ({choice.reason}), profile {config.profile}")
        report = TrainingReport(task.name, task.registered_model, "skipped", device=choice.device)
        # not in the duckdb pool: it holds the warehouse only for the copy, never while
        # MiniLM encodes or baselines are tuned in task.load
        with warehouse.connect(read_only=True) as conn:
            inputs = copy_out(conn, MODEL_TABLES[name], schemas=("truth",))
        try:
            data = task.load(inputs)
        except InsufficientData as exc:
            report.reason = str(exc)
            data = None
        finally:
            inputs.close()
        if data is not None:
            report = train_and_register(
                task,
                data=data,
                tracking_uri=mlflow_tracking.tracking_uri,
                artifact_root=mlflow_tracking.artifact_root,
                optuna_uri=mlflow_tracking.optuna_uri,
                experiment=mlflow_tracking.experiment,
                choice=choice,
                profile=PROFILES[config.profile],
                seed=config.seed,
                progress=context.log.info,
            )
        else:
            # info, not a warning: the step line and the WARN checks already say it
            context.log.info(f"{key} skipped: {report.reason}")
        meta = _metadata(report, mlflow_tracking)
        meta["primary_metric"] = dg.MetadataValue.text(task.primary_metric)
        yield dg.MaterializeResult(metadata=meta)
        yield from _check_results(report)

    return _asset


model_assets = [_model_asset(name) for name in TASKS]
