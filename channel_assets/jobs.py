"""Jobs and schedules: what a click, a sensor or a clock materializes.

What the README calls automatic is RUNNING by default; only the Telegram collector
waits for its source to be chosen.
"""

import dagster as dg

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.groups("ingestion", "truth", "features"),
    description="Load raw data from the configured source and rebuild the feature tables.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("models"),
    description="Tune, train, gate and register every model (weekly, or on drift).",
)

everything_job = dg.define_asset_job(
    "everything_job",
    selection=dg.AssetSelection.all(),
    description="Materialize the whole graph (what `make run` does).",
)

weekly_retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain_schedule",
    job=training_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00 UTC
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain every model weekly on the latest features.",
)

collect_job = dg.define_asset_job(
    "collect_job",
    selection=dg.AssetSelection.groups("ingestion", "truth"),
    description="Poll Telegram (PULSE_SOURCE=telegram) and append snapshots; features follow "
    "through automation.",
)


def telegram_schedule(enabled: bool) -> dg.ScheduleDefinition:
    """Every 5 minutes (the finest snapshot tier); running by default only for the telegram source."""
    return dg.ScheduleDefinition(
        name="telegram_collect_schedule",
        job=collect_job,
        cron_schedule="*/5 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if enabled else dg.DefaultScheduleStatus.STOPPED,
        description="Age-tiered Telegram collection with change detection.",
    )


forecasts_job = dg.define_asset_job(
    "forecasts_job",
    selection=dg.AssetSelection.groups("forecasts"),
    description="Score every forecast table from the current champions.",
)

daily_forecasts_schedule = dg.ScheduleDefinition(
    name="daily_forecasts_schedule",
    job=forecasts_job,
    cron_schedule="30 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refresh the forecast tables daily.",
)

# Declarative automation (eager features, forecasts and alerts; the daily drift report)
# is evaluated by an automation condition sensor. Dagster's implicit
# `default_automation_condition_sensor` starts STOPPED; this one replaces it and runs.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates every asset's automation condition (features after new raw data, "
    "forecasts after new features, alerts, the daily drift report).",
)
