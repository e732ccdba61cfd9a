"""Per-channel exports: CSVs of forecast rows and two PNG charts, linked from metadata."""

import dagster as dg
import duckdb
import pandas as pd

from channel_assets.monitoring import ExportFolder, channel_exports
from resources.warehouse import DuckDBWarehouse
from warehouse import features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame


def test_exports_write_csvs_and_pngs(tmp_path):
    path = tmp_path / "w.duckdb"
    conn = duckdb.connect(str(path))
    ensure_schema(conn)
    for name, frame in synthetic.generate(synthetic.config_for("tiny")).tables().items():
        upsert_frame(conn, name, frame)
    for name in features.FEATURE_TABLES:
        features.build_feature_table(conn, name)
    channel = conn.execute("SELECT min(channel_id) FROM raw.channels").fetchall()[0][0]
    forecast = pd.DataFrame({"channel_id": [channel] * 3, "horizon_days": [1, 2, 3],
                             "forecast_date": pd.date_range("2026-11-01", periods=3),
                             "subscribers_p10": [90.0, 91, 92], "subscribers_p50": [100.0, 101, 102],
                             "subscribers_p90": [110.0, 111, 112]})
    conn.register("forecast_frame", forecast)
    conn.execute("CREATE TABLE forecasts.channel_growth_forecasts AS SELECT * FROM forecast_frame")
    conn.close()
    resources = {"warehouse": DuckDBWarehouse(path=str(path)),
                 "export_folder": ExportFolder(path=str(tmp_path / "exports"))}
    result = dg.materialize([channel_exports], resources=resources)
    assert result.success
    folder = tmp_path / "exports" / str(channel)
    csv = pd.read_csv(folder / "channel_growth_forecasts.csv")
    assert list(csv["subscribers_p50"]) == [100.0, 101.0, 102.0]
    for png in ("growth_forecast.png", "engagement_by_hour.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = result.asset_materializations_for_node("channel_exports")[0].metadata
    assert meta["files"].value >= 3 * 2   # every channel: two charts, channel 1 also a CSV
    assert "example/growth_forecast.png" in meta
