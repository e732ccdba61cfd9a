"""Group ``monitoring``: alerts for channel owners, and the sensor that delivers each once."""

import fcntl
import json
import math
import os
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from channel_assets.executor import priority
from channel_assets.metadata import column_schema, table_metadata
from resources.warehouse import DuckDBWarehouse, PublishedTables
from warehouse import alerts
from warehouse.snapshot import copy_out


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
def alerts_table(
    context: dg.AssetExecutionContext,
    config: AlertConfig,
    warehouse: DuckDBWarehouse,
    published: PublishedTables,
) -> dg.MaterializeResult:
    """monitoring.alerts: view spikes, quiet periods, unusual subscriber change, ghost audiences."""
    thresholds = alerts.AlertThresholds(**config.model_dump())
    with warehouse.connect() as conn:
        added = alerts.detect_alerts(conn, thresholds)
        by_kind = conn.execute(
            "SELECT kind, count(*) FROM monitoring.alerts GROUP BY kind ORDER BY kind"
        ).fetchall()
        meta = table_metadata(conn, "monitoring.alerts")
        meta["published_parquet"] = dg.MetadataValue.path(published.publish(conn, "monitoring", "alerts"))
    context.log.info(f"{added} new alerts")
    meta["new_alerts"] = dg.MetadataValue.int(added)
    meta["alerts_by_kind"] = dg.MetadataValue.json(dict(by_kind))
    meta["thresholds"] = dg.MetadataValue.json(config.model_dump())
    return dg.MaterializeResult(metadata=meta)


def _json_value(value: object) -> object:
    """Timestamps as ISO 8601 UTC (``…Z``: the warehouse stores naive UTC)."""
    if isinstance(value, datetime):
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    return str(value)


def _finite(row: dict) -> dict:
    """NaN/inf are not JSON: they become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


class AlertOutbox(dg.ConfigurableResource):
    """Where delivered alerts go: one JSON line each (point a webhook relay or tail -f at it).

    The outbox is its own delivery ledger: an alert is delivered when its line is in the
    file, so ``deliver`` writes only keys that are not there yet, in one fsynced append
    under an exclusive lock, after cutting off a torn last line (a crash mid-write: that
    alert was not delivered and is written whole next time). Replaying a tick — Dagster
    lost the cursor after a crash — therefore delivers nothing twice. A relay forwarding
    the file keeps its own offset, or dedupes by ``alert_key``.
    """

    path: str

    def delivered_keys(self) -> set[str]:
        path = Path(self.path)
        if not path.exists():
            return set()
        with path.open("rb") as handle:
            return self._keys(handle.read())

    @staticmethod
    def _keys(data: bytes) -> set[str]:
        complete = data[: data.rfind(b"\n") + 1]
        return {json.loads(line)["alert_key"] for line in complete.splitlines() if line.strip()}

    def deliver(self, rows: list[dict]) -> list[dict]:
        """Append the rows whose ``alert_key`` is not delivered yet; return those rows."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            handle.seek(0)
            data = handle.read()
            complete = data.rfind(b"\n") + 1
            if complete < len(data):  # torn last line: never delivered
                handle.truncate(complete)
            seen = self._keys(data)
            new = []
            for row in rows:
                if row["alert_key"] not in seen:
                    seen.add(row["alert_key"])
                    new.append(row)
            if new:
                handle.write(
                    b"".join(
                        json.dumps(
                            _finite(row), default=_json_value, ensure_ascii=False, allow_nan=False
                        ).encode()
                        + b"\n"
                        for row in new
                    )
                )
                handle.flush()
                os.fsync(handle.fileno())
        return new


# Re-read alerts this far behind the cursor: the outbox drops what it already has, and a
# clock step back (NTP) or a batch stamped before the cursor but committed after it
# is not lost.
CURSOR_OVERLAP = timedelta(hours=1)


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def alerts_sensor(context: dg.SensorEvaluationContext, warehouse: DuckDBWarehouse, alert_outbox: AlertOutbox):
    """Deliver each alert exactly once to the outbox.

    Cursor: the newest ``created_at`` seen (ISO 8601 UTC). It only bounds the query;
    exactly-once comes from the outbox's ledger (``AlertOutbox.deliver``), so a tick
    replayed without its cursor writes nothing twice.
    """
    since = datetime(1970, 1, 1)
    if context.cursor:
        since = datetime.fromisoformat(context.cursor.replace("Z", "")) - CURSOR_OVERLAP
    try:
        with warehouse.connect(read_only=True) as conn:
            cursor = conn.execute(
                "SELECT * FROM monitoring.alerts WHERE created_at >= ? ORDER BY created_at, alert_key",
                [since],
            )
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    except (duckdb.CatalogException, duckdb.IOException) as exc:
        # warehouse busy, not created yet, or no alerts table yet
        return dg.SkipReason(f"alerts not readable yet: {exc}")
    if not rows:
        return dg.SkipReason("no new alerts")
    delivered = alert_outbox.deliver(rows)
    for row in delivered:
        context.log.warning(
            f"[{row['severity']}] {row['kind']} channel {row['channel_id']}: {row['message']}"
        )
    newest = max(row["created_at"] for row in rows)
    cursor_value = _json_value(newest)
    if not delivered:
        if cursor_value == context.cursor:
            return dg.SkipReason("no new alerts")
        return dg.SensorResult(skip_reason="no new alerts (all delivered already)", cursor=cursor_value)
    return dg.SensorResult(cursor=cursor_value)


# what warehouse.exports reads, besides every forecast table
EXPORT_TABLES = ("features.channel_metrics", "features.channel_daily_features", "features.post_features")


class ExportFolder(dg.ConfigurableResource):
    """Where per-channel exports are written (``$PULSE_DATA_DIR/exports``)."""

    path: str


@dg.asset(
    group_name="forecasts",
    op_tags=priority("channel_exports"),
    deps=[
        "channel_metrics",
        "channel_daily_features",
        "post_features",
        "post_engagement_forecasts",
        "channel_growth_forecasts",
        "post_viral_scores",
        "content_patterns",
        "posting_schedule_recommendations",
        "content_recommendations",
        "channel_insights",
    ],
    kinds={"csv", "png"},
)
def channel_exports(
    context: dg.AssetExecutionContext, warehouse: DuckDBWarehouse, export_folder: ExportFolder
) -> dg.MaterializeResult:
    """Per-channel CSVs of every forecast and PNG charts (growth with intervals, engagement by hour)."""
    from warehouse.exports import export_all

    root = Path(export_folder.path)
    # copy out, then render: charts take minutes of CPU on many channels, and a reader
    # held open meanwhile locks every writer out of the warehouse
    with warehouse.connect(read_only=True) as conn:
        tables = copy_out(conn, EXPORT_TABLES, schemas=("forecasts",))
    try:
        written = export_all(tables, root)
    finally:
        tables.close()
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
