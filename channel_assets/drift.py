"""Feature drift against the champion's training period, and retraining when it is significant."""

import tempfile
from datetime import datetime
from pathlib import Path

import dagster as dg
import mlflow
from mlflow import MlflowClient

from channel_assets.executor import priority
from channel_assets.jobs import training_job
from nn_models.pipeline import configure_mlflow
from nn_models.registry import CHAMPION, version_by_alias
from resources.mlflow_tracking import MlflowTracking
from resources.warehouse import DuckDBWarehouse
from warehouse import drift

REFERENCE_MODEL = "channel_pulse_engagement"  # its training cutoff defines the reference window

# Once a day, and only when post_features changed since the previous tick: a report per
# new batch of data without a drift report (and possibly a retraining) every time the
# 5-minute Telegram collector refreshes the features.
DRIFT_AUTOMATION = dg.AutomationCondition.on_cron("0 4 * * *", "UTC")


class DriftConfig(dg.Config):
    recent_days: int = 14
    drift_share: float = 0.5  # dataset drift when at least this share of features drift


def _training_cutoff(tracking: MlflowTracking) -> datetime | None:
    """When the champion's training data ended (run param ``data.val_from``), if known.

    None only when there is no champion; a registry that cannot be read raises
    ``RegistryUnavailable`` (a report against the wrong reference window is worse than none).
    """
    client = MlflowClient(tracking.tracking_uri, registry_uri=tracking.tracking_uri)
    version = version_by_alias(client, REFERENCE_MODEL, CHAMPION)
    if version is None:
        return None
    value = client.get_run(version.run_id).data.params.get("data.val_from")
    return datetime.fromisoformat(value) if value else None


@dg.asset(
    group_name="monitoring",
    deps=["post_features"],
    op_tags=priority("feature_drift"),
    kinds={"evidently", "mlflow"},
    automation_condition=DRIFT_AUTOMATION,
    check_specs=[
        dg.AssetCheckSpec(
            "no_significant_drift",
            asset="feature_drift",
            description="share of drifted features below the threshold",
        )
    ],
)
def feature_drift(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    warehouse: DuckDBWarehouse,
    mlflow_tracking: MlflowTracking,
):
    """Evidently data-drift report: recent posts vs the engagement champion's training period."""
    cutoff = _training_cutoff(mlflow_tracking)
    with warehouse.connect(read_only=True) as conn:
        reference, current, windows = drift.drift_windows(conn, cutoff, config.recent_days)
    if len(reference) < 50 or len(current) < 50:
        reason = f"too few posts to compare (reference {len(reference)}, current {len(current)})"
        yield dg.MaterializeResult(metadata={"skipped": reason, "drift_detected": False})
        yield dg.AssetCheckResult(
            check_name="no_significant_drift",
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"skipped": reason},
        )
        return
    result = drift.detect_drift(reference, current, config.drift_share)
    result.windows = {
        **windows,
        "reference": "champion training period" if cutoff else "before the recent window (no champion yet)",
    }
    experiment_id = configure_mlflow(
        mlflow_tracking.tracking_uri,
        mlflow_tracking.artifact_root,
        f"{mlflow_tracking.experiment}_monitoring",
    )
    with mlflow.start_run(run_name="feature_drift", experiment_id=experiment_id) as run:
        mlflow.log_metrics(
            {
                "drifted_share": result.drifted_share,
                **{f"drift.{c}": v["score"] for c, v in result.columns.items()},
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "drift_report.html"
            path.write_text(result.html, encoding="utf-8")
            mlflow.log_artifact(str(path), "drift")
        report_uri = f"{run.info.artifact_uri}/drift/drift_report.html"
    drifted = [c for c, v in result.columns.items() if v["drifted"]]
    context.log.info(f"drift: {result.drifted_share:.0%} of features drifted {drifted}")
    yield dg.MaterializeResult(
        metadata={
            "drift_detected": dg.MetadataValue.bool(result.dataset_drift),
            "drifted_share": dg.MetadataValue.float(result.drifted_share),
            "drifted_features": dg.MetadataValue.json(drifted),
            "per_feature": dg.MetadataValue.json(result.columns),
            "summary": dg.MetadataValue.json(result.summary()),
            "report": dg.MetadataValue.path(report_uri),
            "mlflow_run_id": dg.MetadataValue.text(run.info.run_id),
        }
    )
    yield dg.AssetCheckResult(
        check_name="no_significant_drift",
        passed=not result.dataset_drift,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "drifted_share": dg.MetadataValue.float(result.drifted_share),
            "threshold": dg.MetadataValue.float(config.drift_share),
            "drifted_features": dg.MetadataValue.json(drifted),
        },
    )


@dg.sensor(job=training_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING)
def drift_retrain_sensor(context: dg.SensorEvaluationContext):
    """Request a retraining run once per drift report that found significant drift."""
    records = context.instance.fetch_materializations(
        dg.AssetKey("feature_drift"), limit=1, ascending=False
    ).records
    if not records:
        return dg.SkipReason("no drift report yet")
    event = records[0]
    if context.cursor and int(context.cursor) >= event.storage_id:
        return dg.SkipReason("no new drift report")
    materialization = event.asset_materialization
    flagged = materialization.metadata.get("drift_detected") if materialization else None
    cursor = str(event.storage_id)
    if flagged is None or not flagged.value:
        return dg.SensorResult(skip_reason="latest report found no significant drift", cursor=cursor)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"drift-{event.storage_id}", tags={"pulse/trigger": "feature_drift"})
        ],
        cursor=cursor,
    )
