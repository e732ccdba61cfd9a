"""Per-channel exports: CSVs of forecast rows and two PNG charts, linked from metadata."""

import io
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from channel_assets.metadata import served_by
from channel_assets.monitoring import ExportFolder, channel_exports
from resources.warehouse import DuckDBWarehouse
from warehouse import features, synthetic
from warehouse.exports import export_channel
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
    forecast = pd.DataFrame(
        {
            "channel_id": [channel] * 3,
            "horizon_days": [1, 2, 3],
            "forecast_date": pd.date_range("2026-11-01", periods=3),
            "subscribers_p10": [90.0, 91, 92],
            "subscribers_p50": [100.0, 101, 102],
            "subscribers_p90": [110.0, 111, 112],
        }
    )
    conn.register("forecast_frame", forecast)
    conn.execute("CREATE TABLE forecasts.channel_growth_forecasts AS SELECT * FROM forecast_frame")
    conn.close()
    resources = {
        "warehouse": DuckDBWarehouse(path=str(path)),
        "export_folder": ExportFolder(path=str(tmp_path / "exports")),
    }
    result = dg.materialize([channel_exports], resources=resources)
    assert result.success
    folder = tmp_path / "exports" / str(channel)
    csv = pd.read_csv(folder / "channel_growth_forecasts.csv")
    assert list(csv["subscribers_p50"]) == [100.0, 101.0, 102.0]
    for png in ("growth_forecast.png", "engagement_by_hour.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = result.asset_materializations_for_node("channel_exports")[0].metadata
    assert meta["files"].value >= 3 * 2  # every channel: two charts, channel 1 also a CSV
    assert "example/growth_forecast.png" in meta


# --- pictures: one per forecast table, saying who served it ------------------------------


def _stamped(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    from datetime import datetime

    from nn_models.forecasts.base import stamp

    class _Champion:
        registered_model, version = "channel_pulse_x", "7"

    if source == "model":
        return stamp(frame, _Champion(), datetime(2026, 11, 1))
    return stamp(frame, None, datetime(2026, 11, 1), fallback_reason="no champion for x")


def _frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    channels = np.repeat([1, 2, 3], 24 * 7)
    slots = pd.DataFrame(
        {
            "channel_id": channels,
            "weekday": np.tile(np.repeat(range(7), 24), 3),
            "hour": np.tile(range(24), 21),
            "expected_engagement": rng.random(len(channels)),
            "confidence": 0.5,
        }
    )
    slots["rank"] = (
        slots.groupby("channel_id")["expected_engagement"].rank(ascending=False, method="first").astype(int)
    )
    days = pd.date_range("2026-11-01", periods=30)
    growth = pd.DataFrame(
        {
            "channel_id": np.repeat([1, 2], 30),
            "horizon_days": np.tile(range(1, 31), 2),
            "forecast_date": np.tile(days, 2),
        }
    )
    growth["subscribers_p50"] = np.where(growth["channel_id"] == 1, 1000.0, 50.0) + growth["horizon_days"]
    growth["subscribers_p10"] = growth["subscribers_p50"] * 0.95
    growth["subscribers_p90"] = growth["subscribers_p50"] * 1.05
    posts = pd.DataFrame(
        {
            "channel_id": 1,
            "post_id": range(60),
            "hours_observed": 3,
            "engagement_score": rng.random(60),
            "predicted_views_48h": rng.integers(100, 1000, 60).astype(float),
        }
    )
    posts["views_48h_lo"] = posts["predicted_views_48h"] * 0.8
    posts["views_48h_hi"] = posts["predicted_views_48h"] * 1.2
    return {
        "channel_growth_forecasts": growth,
        "posting_schedule_recommendations": slots,
        "post_engagement_forecasts": posts,
        "user_segments": pd.DataFrame(
            {
                "user_id": range(40),
                "segment_id": np.arange(40) % 3,
                "segment_label": np.array(["lurkers", "fans", "talkers"])[np.arange(40) % 3],
                "distance": rng.random(40),
            }
        ),
        "post_viral_scores": pd.DataFrame(
            {
                "channel_id": 1,
                "post_id": range(50),
                "viral_probability": rng.random(50),
                "content_score": rng.random(50),
            }
        ),
        "content_patterns": pd.DataFrame(
            {
                "channel_id": 1,
                "pattern": [f"p{i}" for i in range(8)],
                "kind": "topic",
                "effect": rng.normal(size=8),
            }
        ),
        "content_recommendations": pd.DataFrame(
            {
                "channel_id": np.repeat([1, 2], 3),
                "rank": np.tile([1, 2, 3], 2),
                "recommendation": "post more",
                "rationale": "x",
                "expected_lift": rng.random(6),
            }
        ),
        "channel_insights": pd.DataFrame(
            {"channel_id": [1, 2, 3], "insights": "{}", "confidence": [0.2, 0.5, 0.9]}
        ),
    }


@pytest.mark.parametrize("source", ["model", "baseline"])
def test_every_forecast_table_has_a_picture_that_says_who_served_it(source):
    import matplotlib.image
    import matplotlib.pyplot as plt

    from nn_models.forecasts import FORECASTS, pictures

    frames = _frames()
    assert set(frames) == set(FORECASTS)
    for table, frame in frames.items():
        frame = _stamped(frame, source)
        fig = pictures.figure(table, frame)
        title = fig._suptitle.get_text()
        plt.close(fig)
        expected = "served by model v7" if source == "model" else "served by baseline (no champion for x)"
        assert expected in title, (table, title)
        png = pictures.png(table, frame)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 150_000, table
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
        assert pixels.std() > 0.02, table  # not a blank canvas
    assert pictures.figure("user_segments", frames["user_segments"].iloc[:0]) is None


def test_mixed_sources_are_counted_in_the_label():
    from nn_models.forecasts import pictures

    frame = pd.concat(
        [
            _stamped(_frames()["channel_insights"].iloc[:2], "model"),
            _stamped(_frames()["channel_insights"].iloc[2:], "baseline"),
        ]
    )
    assert pictures.served_label(frame) == (
        "served by baseline (no champion for x): 1 rows; model v7: 2 rows"
    )
    assert served_by(frame) == "baseline: 1 rows — no champion for x; model: 2 rows (version 7)"


def test_schedule_top_slot_agreement_with_history():
    from nn_models.forecasts.pictures import top_slot_agreement

    recommended = pd.DataFrame(
        {
            "channel_id": [1, 1, 2, 2, 3],
            "weekday": [0, 1, 2, 3, 4],
            "hour": [9, 10, 11, 12, 13],
            "rank": [1, 2, 1, 2, 1],
        }
    )
    observed = pd.DataFrame(
        {
            "channel_id": [1, 1, 2, 2],
            "weekday": [0, 1, 2, 3],
            "hour": [9, 10, 11, 12],
            "observed": [0.9, 0.1, 0.2, 0.8],
            "posts": [5, 5, 5, 5],
        }
    )
    # channel 1 agrees (Mon 9h), channel 2 does not (history best is Thu 12h), channel 3
    # has no history and is not counted
    assert top_slot_agreement(recommended, observed) == (0.5, 2)


def test_exports_carry_the_forecast_pictures(tmp_path):
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA forecasts")
    frames = _frames()
    for table in ("channel_growth_forecasts", "posting_schedule_recommendations"):
        conn.register("frame", _stamped(frames[table], "baseline"))
        conn.execute(f"CREATE TABLE forecasts.{table} AS SELECT * FROM frame")
        conn.unregister("frame")
    written = export_channel(conn, 1, tmp_path)
    for table in ("channel_growth_forecasts", "posting_schedule_recommendations"):
        png = tmp_path / "1" / f"{table}.png"
        assert str(png) in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # per channel: channel 3 has schedule rows but no growth rows, so only that picture
    written = export_channel(conn, 3, tmp_path)
    assert [Path(p).name for p in written if p.endswith(".png")] == ["posting_schedule_recommendations.png"]


def test_segment_picture_shows_profiles_from_behaviour_features():
    import matplotlib.pyplot as plt

    from nn_models.forecasts import pictures

    frame = _stamped(_frames()["user_segments"], "model")
    profiles = pd.DataFrame(
        {
            "user_id": range(40),
            **{c: np.arange(40.0) % 3 * (i + 1) for i, c in enumerate(pictures.PROFILE_COLUMNS)},
        }
    )
    fig = pictures.figure("user_segments", frame, {"profiles": profiles})
    heatmap = fig.axes[1].images[0].get_array()
    plt.close(fig)
    # segment s has every feature equal to s * k: scaled per column, rows are 0, 0.5, 1
    assert np.allclose(heatmap[:, 0], [0.0, 0.5, 1.0])
