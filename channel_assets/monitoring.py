"""Group ``monitoring``: alerts for channel owners, and the sensor that delivers them."""

import json
from pathlib import Path

import dagster as dg

from channel_assets.metadata import column_schema, table_metadata
from resources.warehouse import DuckDBWarehouse, PublishedTables
from warehouse import alerts


class AlertConfig(dg.Config):
    """Thresholds (defaults in ``warehouse.alerts.AlertThresholds``)."""

    spike_z: float = alerts.AlertThresholds.spike_z
    spike_recent_hours: float = alerts.AlertThresholds.spike_recent_hours
    quiet_factor: float = alerts.AlertThresholds.quiet_factor
    quiet_min_hours: float = alerts.AlertThresholds.quiet_min_hours
    growth_z: float = alerts.AlertThresholds.growth_z
    ghost_ratio: float = alerts.AlertThresholds.ghost_ratio


@dg.asset(
    name="alerts",
    group_name="monitoring",
    deps=["trending_posts", "channel_metrics", "channel_daily_features", "raw_posts"],
    pool="duckdb",
    kinds={"duckdb", "sql"},
    metadata={
        "dagster/column_schema": column_schema(alerts.DESCRIPTIONS),
        "dagster/table_name": "monitoring.alerts",
    },
    automation_condition=dg.AutomationCondition.eager(),
)
def alerts_table(context: dg.AssetExecutionContext, config: AlertConfig,
                 warehouse: DuckDBWarehouse, published: PublishedTables) -> dg.MaterializeResult:
    """monitoring.alerts: view spikes, quiet periods, unusual subscriber change, ghost audiences."""
    thresholds = alerts.AlertThresholds(**config.model_dump())
    with warehouse.connect() as conn:
        added = alerts.detect_alerts(conn, thresholds)
        by_kind = conn.execute(
            "SELECT kind, count(*) FROM monitoring.alerts GROUP BY kind ORDER BY kind"
        ).fetchall()
        meta = table_metadata(conn, "monitoring.alerts")
        meta["published_parquet"] = dg.MetadataValue.path(
            published.publish(conn, "monitoring", "alerts"))
    context.log.info(f"{added} new alerts")
    meta["new_alerts"] = dg.MetadataValue.int(added)
    meta["alerts_by_kind"] = dg.MetadataValue.json(dict(by_kind))
    meta["thresholds"] = dg.MetadataValue.json(config.model_dump())
    return dg.MaterializeResult(metadata=meta)


class AlertOutbox(dg.ConfigurableResource):
    """Where delivered alerts go: one JSON line each (point a webhook relay or tail -f at it)."""

    path: str

    def deliver(self, rows: list[dict]) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, default=str) + "\n")


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def alerts_sensor(context: dg.SensorEvaluationContext, warehouse: DuckDBWarehouse,
                  alert_outbox: AlertOutbox):
    """Deliver alerts written since the last tick (cursor = newest created_at delivered)."""
    cursor = context.cursor or "1970-01-01 00:00:00"
    try:
        with warehouse.connect(read_only=True) as conn:
            frame = conn.execute(
                "SELECT * FROM monitoring.alerts WHERE created_at > CAST(? AS TIMESTAMP) "
                "ORDER BY created_at, alert_key",
                [cursor],
            ).fetchdf()
    except Exception as exc:  # warehouse busy or table not created yet
        return dg.SkipReason(f"alerts not readable yet: {exc}")
    if frame.empty:
        return dg.SkipReason("no new alerts")
    rows = frame.to_dict("records")
    alert_outbox.deliver(rows)
    for row in rows:
        context.log.warning(f"[{row['severity']}] {row['kind']} channel {row['channel_id']}: "
                            f"{row['message']}")
    return dg.SensorResult(cursor=str(frame["created_at"].max()))


class ExportFolder(dg.ConfigurableResource):
    """Where per-channel exports are written (``$PULSE_DATA_DIR/exports``)."""

    path: str


@dg.asset(
    group_name="forecasts",
    deps=["channel_metrics", "channel_daily_features", "post_features",
          "post_engagement_forecasts", "channel_growth_forecasts", "post_viral_scores",
          "content_patterns", "posting_schedule_recommendations", "content_recommendations",
          "channel_insights"],
    kinds={"csv", "png"},
)
def channel_exports(context: dg.AssetExecutionContext, warehouse: DuckDBWarehouse,
                    export_folder: ExportFolder) -> dg.MaterializeResult:
    """Per-channel CSVs of every forecast and PNG charts (growth with intervals, engagement by hour)."""
    from warehouse.exports import export_all

    root = Path(export_folder.path)
    with warehouse.connect(read_only=True) as conn:
        written = export_all(conn, root)
    files = sum(len(v) for v in written.values())
    context.log.info(f"{files} files for {len(written)} channels under {root}")
    first = next((c for c, paths in written.items() if paths), None)
    meta = {
        "folder": dg.MetadataValue.path(str(root)),
        "files": dg.MetadataValue.int(files),
        "channels": dg.MetadataValue.int(len(written)),
    }
    if first is not None:
        for path in written[first]:
            if path.endswith(".png"):
                meta[f"example/{Path(path).name}"] = dg.MetadataValue.path(path)
    return dg.MaterializeResult(metadata=meta)
