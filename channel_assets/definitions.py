"""The Dagster code location: assets, checks, jobs, sensors and resources."""

import dagster as dg

from channel_assets.drift import drift_retrain_sensor, feature_drift
from channel_assets.executor import step_executor
from channel_assets.features import feature_assets
from channel_assets.forecasts import forecast_assets
from channel_assets.ingestion import raw_tables
from channel_assets.ingestion_checks import ingestion_checks
from channel_assets.jobs import (
    automation_sensor,
    collect_job,
    daily_forecasts_schedule,
    everything_job,
    forecasts_job,
    ingestion_job,
    telegram_schedule,
    training_job,
    weekly_retrain_schedule,
)
from channel_assets.loggers import run_file, step_lines
from channel_assets.models import model_assets
from channel_assets.monitoring import (
    AlertOutbox,
    ExportFolder,
    alerts_sensor,
    alerts_table,
    channel_exports,
)
from channel_assets.sensors import champion_sensor, landing_sensor
from resources.compute import TorchCompute
from resources.data_source import ChannelDataSource
from resources.mlflow_tracking import MlflowTracking
from resources.settings import PulseSettings, load_settings
from resources.telegram_collector import TelegramCollector
from resources.warehouse import DuckDBWarehouse, PublishedTables


def build_resources(settings: PulseSettings) -> dict:
    return {
        "warehouse": DuckDBWarehouse(path=str(settings.warehouse_path)),
        "published": PublishedTables(root=settings.parquet_uri),
        "data_source": ChannelDataSource(
            source=settings.source,
            size=settings.size,
            seed=settings.seed,
            landing_dir=str(settings.landing_dir),
        ),
        "alert_outbox": AlertOutbox(path=str(settings.data_dir / "alerts" / "outbox.jsonl")),
        "export_folder": ExportFolder(path=str(settings.data_dir / "exports")),
        "telegram": TelegramCollector(channels=list(settings.telegram_channels)),
        "compute": TorchCompute(device=settings.device, cpu_threads=settings.step_cpu_threads),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=settings.mlflow_uri,
            artifact_root=settings.mlflow_artifacts,
            optuna_uri=settings.optuna_uri,
        ),
    }


def build_definitions(settings: PulseSettings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    return dg.Definitions(
        assets=[
            raw_tables,
            *feature_assets,
            *model_assets,
            *forecast_assets,
            alerts_table,
            feature_drift,
            channel_exports,
        ],
        asset_checks=ingestion_checks,
        jobs=[ingestion_job, collect_job, training_job, forecasts_job, everything_job],
        schedules=[
            weekly_retrain_schedule,
            daily_forecasts_schedule,
            telegram_schedule(settings.source == "telegram"),
        ],
        sensors=[landing_sensor, champion_sensor, alerts_sensor, drift_retrain_sensor, automation_sensor],
        resources=build_resources(settings),
        executor=step_executor(settings.parallel_steps),
        loggers={"step_lines": step_lines, "run_file": run_file},
    )


defs = build_definitions()
