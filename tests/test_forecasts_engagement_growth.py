"""Scoring and per-request functions of the engagement and growth forecasts on tiny data.

The engagement model is trained for two epochs with its task's own ``train`` on the
task's ``load``; tiny data (30 days) is too short for the growth task's split, so a
small ``GrowthForecaster`` with a 14-day lookback is built and normalised on the tiny
channels' windows (untrained weights: the tests check plumbing, not accuracy).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from nn_models.baselines_engagement import BUCKETS, bucket_of
from nn_models.champions import LoadedModel
from nn_models.device import choose_device
from nn_models.forecasts import engagement as eng
from nn_models.forecasts import growth as gro
from nn_models.forecasts.base import LINEAGE_COLUMNS
from nn_models.models.growth import RAW_FEATURES, GrowthForecaster
from nn_models.service import DeepLearningService, InvalidInput
from nn_models.tasks.engagement import EngagementTask
from nn_models.tasks.growth import DAILY_SQL, channel_series
from warehouse import features, synthetic
from warehouse.forecast_tables import write_forecast
from warehouse.publish import open_reader, publish_table
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame

SCORED_AT = datetime(2026, 11, 1, 6, 0)
PUBLISHED = [
    ("raw", "posts"),
    ("raw", "channels"),
    ("features", "post_features"),
    ("features", "post_trajectories"),
    ("features", "channel_daily_features"),
]


@pytest.fixture(scope="module")
def conn():
    conn = duckdb.connect()
    ensure_schema(conn)
    world = synthetic.generate(synthetic.config_for("tiny"))
    for name, frame in world.tables().items():
        upsert_frame(conn, name, frame)
    for name in features.FEATURE_TABLES:
        features.build_feature_table(conn, name)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def engagement_model(conn) -> LoadedModel:
    torch.set_num_threads(1)
    task = EngagementTask()
    data = task.load(conn)
    params = {**task.default_params(), "hidden": 16, "dense": 16, "dense2": 8}
    result = task.train(params, data, choose_device("cpu", 1), max_epochs=2, seed=0)
    module = result.model.cpu().eval()
    metrics = task.evaluate(module, data)
    return LoadedModel(
        task="engagement",
        registered_model=task.registered_model,
        version="1",
        module=module,
        tags={f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()},
    )


def _growth(conn, history_days: int) -> LoadedModel:
    torch.manual_seed(0)
    module = GrowthForecaster(history_days=history_days, hidden=16, dense=16)
    series = channel_series(conn.execute(DAILY_SQL).fetchdf())
    windows = [
        f.to_numpy()[s : s + history_days]
        for f in series.values()
        for s in range(0, len(f) - history_days + 1)
    ]
    if windows:
        module.set_normalisation(torch.as_tensor(np.stack(windows), dtype=torch.float32))
    return LoadedModel(
        task="growth",
        registered_model="channel_pulse_growth",
        version="3",
        module=module.eval(),
        tags={"metric.mase": "1.25", "metric.coverage_80": "0.8"},
    )


@pytest.fixture(scope="module")
def growth_model(conn) -> LoadedModel:
    return _growth(conn, 14)


def _young(conn) -> pd.DataFrame:
    """Independently of the scorer: no 48 h value yet, observed past the first grid point
    (15 min, minus the 5 min as-of tolerance)."""
    return conn.execute("""
        SELECT channel_id, post_id FROM features.post_features
        WHERE views_48h IS NULL AND hours_observed >= 10 / 60
        ORDER BY channel_id, post_id""").fetchdf()


# ------------------------------------------------------------------------- engagement


def test_engagement_score_young_posts(conn, engagement_model):
    result = eng.score(conn, {"engagement": engagement_model}, SCORED_AT)
    frame = result.frame
    assert list(frame.columns[:7]) == eng.COLUMNS
    assert list(frame.columns[7:12]) == list(LINEAGE_COLUMNS)
    assert set(frame["source"]) == {"model"} and frame["fallback_reason"].isna().all()
    young = _young(conn)
    assert len(young) > 0
    assert sorted(zip(frame.channel_id, frame.post_id, strict=True)) == sorted(
        zip(young.channel_id, young.post_id, strict=True)
    )
    assert frame["engagement_score"].between(0, 1).all()
    assert (frame["views_48h_lo"] <= frame["predicted_views_48h"]).all()
    assert (frame["predicted_views_48h"] <= frame["views_48h_hi"]).all()
    assert (frame["interactions_48h_lo"] <= frame["predicted_interactions_48h"]).all()
    assert (frame["hours_observed"] < 48).all()
    # cumulative counters: p10 is at least the views at the last grid point used
    last = conn.execute("""
        SELECT channel_id, post_id, max(views) AS grid_views FROM features.post_trajectories
        GROUP BY ALL""").fetchdf()
    merged = frame.merge(last, on=["channel_id", "post_id"])
    assert (merged["views_48h_lo"] >= merged["grid_views"] * (1 - 1e-4) - 1e-3).all()
    assert set(frame["model_name"]) == {"channel_pulse_engagement"}
    assert set(frame["model_version"]) == {"1"}
    assert (frame["scored_at"] == pd.Timestamp(SCORED_AT)).all()
    assert result.models == {"engagement": "1"}


def test_engagement_missing_champion_is_served_by_the_baseline(conn):
    result = eng.score(conn, {"engagement": None}, SCORED_AT)
    frame = result.frame
    assert list(frame.columns[:7]) == eng.COLUMNS
    young = _young(conn)
    assert sorted(zip(frame.channel_id, frame.post_id, strict=True)) == sorted(
        zip(young.channel_id, young.post_id, strict=True)
    )
    assert set(frame["source"]) == {"baseline"}
    assert frame["fallback_reason"].str.contains("no champion for engagement").all()
    assert frame["model_name"].str.startswith("baseline:").all()
    assert "no champion for engagement" in result.notes["no_champion"]
    assert frame["engagement_score"].between(0, 1).all()
    assert (frame["views_48h_lo"] <= frame["predicted_views_48h"]).all()
    assert (frame["predicted_views_48h"] <= frame["views_48h_hi"]).all()
    # the interval comes from the serving rule's validation errors in the row's age bucket
    _, baselines = eng.scoring_baselines(conn)
    buckets = np.array(list(BUCKETS))[bucket_of(frame["grid_hours_used"].to_numpy() * 60)]
    q90 = [baselines.fits[baselines.strongest[b]][b].q90 for b in buckets]
    upper = np.log1p(frame["views_48h_hi"]) - np.log1p(frame["predicted_views_48h"])
    unclamped = frame["views_48h_hi"] > frame["views_48h_lo"] * (1 + 1e-9)
    np.testing.assert_allclose(upper[unclamped], np.array(q90)[unclamped], rtol=1e-6)
    assert len({round(baselines.fits["channel_growth"][b].q90, 9) for b in BUCKETS}) == 3
    # p10 never below what the post already has at the grid point used
    last = conn.execute("""SELECT channel_id, post_id, arg_max(views, age_minutes) AS v
                           FROM features.post_trajectories GROUP BY ALL""").fetchdf()
    merged = frame.merge(last, on=["channel_id", "post_id"])
    assert (merged["views_48h_lo"] >= merged["v"] * (1 - 1e-9)).all()


def test_engagement_missing_feature_tables_is_a_note(engagement_model):
    empty = duckdb.connect()
    result = eng.score(empty, {"engagement": engagement_model}, SCORED_AT)
    assert result.frame.empty and "missing" in result.notes["skipped"]


def _draft_of(conn, channel_id: int, post_id: int) -> dict:
    post = (
        conn.execute(
            """
        SELECT published_at, media_type, text_length FROM features.post_features
        WHERE channel_id = ? AND post_id = ?""",
            [channel_id, post_id],
        )
        .fetchdf()
        .iloc[0]
    )
    snaps = conn.execute(
        """
        SELECT date_diff('second', p.published_at, s.observed_at) / 60.0 AS minutes,
               s.views, s.forwards, s.replies, s.reactions
        FROM raw.post_snapshots s JOIN raw.posts p USING (channel_id, post_id)
        WHERE channel_id = ? AND post_id = ? AND s.views IS NOT NULL
        ORDER BY s.observed_at""",
        [channel_id, post_id],
    ).fetchdf()
    return {
        "published_at": pd.Timestamp(post.published_at).isoformat(),
        "media_type": post.media_type,
        "text_length": int(post.text_length),
        "snapshots": [
            {k: (float(v) if k == "minutes" else int(v)) for k, v in r.items()}
            for r in snaps.to_dict("records")
        ],
    }


def test_predict_post_published_matches_table_and_draft(conn, engagement_model):
    frame = eng.score(conn, {"engagement": engagement_model}, SCORED_AT).frame
    row = frame.sort_values("hours_observed").iloc[-1]  # the most observed young post
    cid, pid = int(row.channel_id), int(row.post_id)
    out = eng.predict_post(conn, engagement_model, cid, {"post_id": pid})
    assert out["post"]["kind"] == "published"
    assert out["engagement_score"] == pytest.approx(row.engagement_score, abs=1e-6)
    assert out["predicted_views_48h"]["p50"] == pytest.approx(row.predicted_views_48h, rel=1e-5)
    assert out["above_median"] == (row.engagement_score > 0.5)
    assert out["model"] == {"name": "channel_pulse_engagement", "version": "1", "backend": "torch"}
    assert out["holdout"] and all(0 <= v for k, v in out["holdout"].items() if not k.startswith("margin_"))
    assert out["source"] == "model" and out["fallback_reason"] is None
    # the same post sent as a draft: the same grid (as-of rule) and the same context
    draft = eng.predict_post(conn, engagement_model, cid, _draft_of(conn, cid, pid))
    assert draft["post"]["kind"] == "draft"
    assert draft["grid_hours_used"] == out["grid_hours_used"]
    assert draft["engagement_score"] == pytest.approx(out["engagement_score"], abs=1e-6)
    for q in ("p10", "p50", "p90"):
        assert draft["predicted_views_48h"][q] == pytest.approx(out["predicted_views_48h"][q], rel=1e-5)
        assert draft["predicted_interactions_48h"][q] == pytest.approx(
            out["predicted_interactions_48h"][q], rel=1e-5
        )
    # an old post: its actual 48 h value comes back next to the prediction
    old = conn.execute(
        """SELECT post_id FROM features.post_features
                          WHERE channel_id = ? AND views_48h IS NOT NULL LIMIT 1""",
        [cid],
    ).fetchall()[0][0]
    assert "actual_views_48h" in eng.predict_post(conn, engagement_model, cid, {"post_id": int(old)})["post"]


def test_draft_grid_follows_the_as_of_rule():
    snaps = [
        {"minutes": 14, "views": 10, "forwards": 0, "replies": 0, "reactions": 1},
        {"minutes": 36, "views": 30, "forwards": 1, "replies": 0, "reactions": 2},
        {"minutes": 61, "views": 50, "forwards": 2, "replies": 1, "reactions": 3},
    ]
    grid = eng.snapshots_to_trajectory(snaps, 7, 9)
    # reached: every grid age <= 61 + 5 min -> 15, 30, 45, 60
    assert grid["age_minutes"].tolist() == [15, 30, 45, 60]
    # value at g = last snapshot at or before g + 5 min
    assert grid["views"].tolist() == [10, 10, 30, 50]
    assert grid["reactions"].tolist() == [1, 1, 2, 3]
    late = eng.snapshots_to_trajectory(
        [{"minutes": 40, "views": 5, "forwards": 0, "replies": 0, "reactions": 0}]
    )
    assert late["age_minutes"].tolist() == [15, 30, 45]
    assert late["views"].isna().tolist() == [True, True, False]  # nothing observed that early


@pytest.mark.parametrize(
    "body, match",
    [
        ({}, "either post_id"),
        ({"post_id": None, "snapshots": []}, "either post_id"),
        (
            {
                "post_id": 1,
                "snapshots": [{"minutes": 20, "views": 1, "forwards": 0, "replies": 0, "reactions": 0}],
            },
            "either post_id",
        ),
        ({"post_id": 987654321}, "is not a post of channel"),
        ({"post_id": "7"}, "integer"),
        (
            {
                "snapshots": [
                    {"minutes": 30, "views": 5, "forwards": 0, "replies": 0, "reactions": 0},
                    {"minutes": 20, "views": 6, "forwards": 0, "replies": 0, "reactions": 0},
                ]
            },
            "increasing order",
        ),
        (
            {
                "snapshots": [
                    {"minutes": 20, "views": 5, "forwards": 0, "replies": 0, "reactions": 0},
                    {"minutes": 40, "views": 4, "forwards": 0, "replies": 0, "reactions": 0},
                ]
            },
            "must not decrease",
        ),
        (
            {"snapshots": [{"minutes": 3, "views": 5, "forwards": 0, "replies": 0, "reactions": 0}]},
            "at least 10 min",
        ),
        ({"snapshots": [{"minutes": 20, "views": -5, "forwards": 0, "replies": 0, "reactions": 0}]}, ">= 0"),
        ({"snapshots": [{"minutes": 20, "views": 5}]}, "lacks forwards"),
        (
            {
                "media_type": "gif",
                "snapshots": [{"minutes": 20, "views": 5, "forwards": 0, "replies": 0, "reactions": 0}],
            },
            "media_type",
        ),
        (
            {
                "published_at": "yesterday-ish",
                "snapshots": [{"minutes": 20, "views": 5, "forwards": 0, "replies": 0, "reactions": 0}],
            },
            "published_at",
        ),
    ],
)
def test_predict_post_rejects_nonsense(conn, engagement_model, body, match):
    channel = int(conn.execute("SELECT min(channel_id) FROM raw.posts").fetchall()[0][0])
    with pytest.raises(InvalidInput, match=match):
        eng.predict_post(conn, engagement_model, channel, body)


def test_predict_post_api_shaped_draft(conn, engagement_model):
    """The API sends every field; published_at None means 'posting now'."""
    channel = int(conn.execute("SELECT min(channel_id) FROM raw.posts").fetchall()[0][0])
    body = {
        "post_id": None,
        "published_at": None,
        "media_type": "photo",
        "text_length": 120,
        "snapshots": [
            {"minutes": m, "views": 40 * i, "forwards": i, "replies": 0, "reactions": 2 * i}
            for i, m in enumerate((15, 60, 180), 1)
        ],
    }
    out = eng.predict_post(conn, engagement_model, channel, body)
    assert out["post"]["published_at_assumed_now"] is True
    assert out["grid_hours_used"] == 3.0 and out["hours_observed"] == 3.0
    assert 0 <= out["engagement_score"] <= 1
    views = out["predicted_views_48h"]
    assert 120 * (1 - 1e-4) <= views["p10"] <= views["p50"] <= views["p90"]
    assert out["post"]["subscribers_at_publish"] > 0  # the channel's latest count


def _constructed_36h(channel: int, views_36h: int) -> dict:
    """A draft seen every hour to 12 h (100 views/h), then once at 36 h."""
    snaps = [
        {"minutes": 60 * h, "views": 100 * h, "forwards": h, "replies": 0, "reactions": 2 * h}
        for h in range(1, 13)
    ]
    snaps.append({"minutes": 36 * 60, "views": views_36h, "forwards": 20, "replies": 1, "reactions": 30})
    return {
        "post_id": None,
        "published_at": "2026-10-30T08:00:00",
        "media_type": "none",
        "text_length": 50,
        "snapshots": snaps,
    }


@pytest.mark.parametrize("with_model", [True, False])
def test_a_post_observed_for_36h_is_forecast_from_its_36h_snapshot(conn, engagement_model, with_model):
    model = engagement_model if with_model else None
    channel = int(conn.execute("SELECT min(channel_id) FROM raw.posts").fetchall()[0][0])
    low = eng.predict_post(conn, model, channel, _constructed_36h(channel, 2000))
    high = eng.predict_post(conn, model, channel, _constructed_36h(channel, 6000))
    assert low["grid_hours_used"] == high["grid_hours_used"] == 36.0
    assert low["source"] == ("model" if with_model else "baseline")
    # only the 36 h snapshot differs, and the forecast moves with it
    assert high["predicted_views_48h"]["p50"] > low["predicted_views_48h"]["p50"]
    assert high["engagement_score"] >= low["engagement_score"]
    for out, seen in ((low, 2000), (high, 6000)):
        assert (
            seen * (1 - 1e-4)
            <= out["predicted_views_48h"]["p10"]
            <= out["predicted_views_48h"]["p50"]
            <= out["predicted_views_48h"]["p90"]
        )
    # the same post seen only to 12 h is read at 12 h (1200 views), not at 36 h
    body = _constructed_36h(channel, 2000)
    body["snapshots"] = body["snapshots"][:-1]
    early = eng.predict_post(conn, model, channel, body)
    assert early["grid_hours_used"] == 12.0
    assert early["predicted_views_48h"]["p50"] != pytest.approx(low["predicted_views_48h"]["p50"], rel=1e-3)
    if not with_model:
        # the baseline: the channel-growth rule moves 1:1 in log space with the 36 h views
        _, baselines = eng.scoring_baselines(conn)
        if baselines.strongest["12_48h"] == "channel_growth":
            assert np.log1p(high["predicted_views_48h"]["p50"]) - np.log1p(
                low["predicted_views_48h"]["p50"]
            ) == pytest.approx(np.log1p(6000) - np.log1p(2000), rel=1e-9)


def test_predict_post_without_a_champion_answers_from_the_baseline(conn):
    frame = eng.score(conn, {"engagement": None}, SCORED_AT).frame
    row = frame.sort_values("hours_observed").iloc[-1]
    cid, pid = int(row.channel_id), int(row.post_id)
    out = eng.predict_post(conn, None, cid, {"post_id": pid})
    assert out["source"] == "baseline" and "no champion for engagement" in out["fallback_reason"]
    assert out["model"]["name"] == row.model_name
    assert out["engagement_score"] == pytest.approx(row.engagement_score, abs=1e-9)
    assert out["predicted_views_48h"]["p50"] == pytest.approx(row.predicted_views_48h, rel=1e-9)
    assert out["predicted_views_48h"]["p90"] == pytest.approx(row.views_48h_hi, rel=1e-9)
    assert 0 <= out["validation"][f"accuracy_{out['validation']['bucket']}"] <= 1
    draft = eng.predict_post(conn, None, cid, _draft_of(conn, cid, pid))
    assert draft["engagement_score"] == pytest.approx(out["engagement_score"], abs=1e-9)
    # a channel with no history: views from every channel's growth, no median to rank against
    stranger = eng.predict_post(conn, None, 987654, _constructed_36h(987654, 2000))
    assert stranger["engagement_score"] is None and stranger["above_median"] is None
    assert stranger["predicted_views_48h"]["p50"] >= 2000


# ----------------------------------------------------------------------------- growth


def test_growth_score_from_latest_day(conn, growth_model):
    result = gro.score(conn, {"growth": growth_model}, SCORED_AT)
    frame = result.frame
    assert list(frame.columns[:6]) == gro.COLUMNS
    assert list(frame.columns[6:11]) == list(LINEAGE_COLUMNS)
    assert set(frame["source"]) == {"model"} and frame["fallback_reason"].isna().all()
    last = conn.execute("""
        SELECT channel_id, max(day) AS last_day, arg_max(subscribers, day) AS last_subs
        FROM features.channel_daily_features GROUP BY ALL ORDER BY channel_id""").fetchdf()
    assert len(frame) == len(last) * 30
    for row in last.itertuples():
        part = frame[frame.channel_id == row.channel_id].sort_values("horizon_days")
        assert part["horizon_days"].tolist() == list(range(1, 31))
        assert part["forecast_date"].tolist() == [
            (row.last_day + timedelta(days=h)).date() for h in range(1, 31)
        ]
        assert (part["origin_subscribers"] == row.last_subs).all()
    assert (frame["subscribers_p10"] > 0).all()
    assert (frame["subscribers_p10"] <= frame["subscribers_p50"]).all()
    assert (frame["subscribers_p50"] <= frame["subscribers_p90"]).all()
    # the band widens with the horizon (random-walk frame of the model)
    width = (frame.subscribers_p90 - frame.subscribers_p10).groupby(frame.horizon_days).mean()
    assert width.iloc[-1] > width.iloc[0]
    assert set(frame["model_version"]) == {"3"}
    # it lands in DuckDB with a DATE column
    conn.register("growth_frame", frame)
    kind = conn.execute("SELECT typeof(forecast_date) FROM growth_frame LIMIT 1").fetchall()
    conn.unregister("growth_frame")
    assert kind == [("DATE",)]


def test_growth_missing_champion_and_short_history(conn):
    # without a champion every channel is still forecast, by the strongest baseline
    missing = gro.score(conn, {"growth": None}, SCORED_AT)
    assert len(missing.frame) == 3 * 30 and list(missing.frame.columns[:6]) == gro.COLUMNS
    assert set(missing.frame["source"]) == {"baseline"}
    assert missing.frame["fallback_reason"].str.contains("no champion for growth").all()
    assert "no champion for growth" in missing.notes["no_champion"]
    no_tables = gro.score(duckdb.connect(), {"growth": _growth(conn, 14)}, SCORED_AT)
    assert no_tables.frame.empty and "missing" in no_tables.notes["skipped"]
    long_window = _growth(conn, 56)  # tiny channels have 30 days: the baseline serves
    short = gro.score(conn, {"growth": long_window}, SCORED_AT)
    assert len(short.frame) == 3 * 30 and set(short.frame["source"]) == {"baseline"}
    assert short.frame["fallback_reason"].str.contains("reads the last 56").all()
    out = gro.forecast_channel(conn, long_window, 1001, 7)
    assert out["source"] == "baseline" and "reads the last 56" in out["fallback_reason"]


def test_forecast_channel_matches_table(conn, growth_model):
    frame = gro.score(conn, {"growth": growth_model}, SCORED_AT).frame
    channel = int(frame.channel_id.iloc[0])
    out = gro.forecast_channel(conn, growth_model, channel, 7)
    assert len(out["forecast"]) == 7 and out["prediction_days"] == 7
    table = frame[frame.channel_id == channel].sort_values("horizon_days").head(7)
    assert [f["p50"] for f in out["forecast"]] == pytest.approx(table.subscribers_p50.tolist(), rel=1e-6)
    assert out["forecast"][0]["date"] == table.forecast_date.iloc[0].isoformat()
    assert out["last_observed_subscribers"] == table.origin_subscribers.iloc[0]
    assert out["holdout"] == {"mase": 1.25, "coverage_80": 0.8}
    for bad in (0, 31, "7", True, 2.5):
        with pytest.raises(InvalidInput, match="prediction_days"):
            gro.forecast_channel(conn, growth_model, channel, bad)
    with pytest.raises(InvalidInput, match="no subscriber history"):
        gro.forecast_channel(conn, growth_model, 424242, 7)


def test_counterfactual_window_keeps_per_post_rates(conn, growth_model):
    series = channel_series(conn.execute(DAILY_SQL).fetchdf())
    window = next(iter(series.values())).to_numpy()[-14:]
    col = {n: i for i, n in enumerate(RAW_FEATURES)}
    recent = window[:, col["posts"]].mean()
    changed, got_recent, factor = gro.counterfactual_window(window, 2 * recent)
    assert got_recent == pytest.approx(recent) and factor == pytest.approx(2.0)
    assert changed[:, col["posts"]].mean() == pytest.approx(2 * recent)
    posted = window[:, col["posts"]] > 0
    for name in ("views_48h_sum", "forwards_48h_sum", "interactions_48h_sum", "viral_posts"):
        np.testing.assert_allclose(
            changed[posted, col[name]] / changed[posted, col["posts"]],
            window[posted, col[name]] / window[posted, col["posts"]],
        )
    for name in ("subscribers", "engagement_rate", "mean_text_length", "weekday"):
        np.testing.assert_array_equal(changed[:, col[name]], window[:, col[name]])
    np.testing.assert_allclose(changed[:, col["reach_48h"]], 2 * window[:, col["reach_48h"]])


def test_what_if_posting_frequency(conn, growth_model):
    channel = 1001
    base = gro.forecast_channel(conn, growth_model, channel, 30)
    same = gro.what_if(conn, growth_model, channel, {"posts_per_day": 1.0})
    recent = same["recent_posts_per_day"]
    unchanged = gro.what_if(conn, growth_model, channel, {"posts_per_day": recent, "prediction_days": 30})
    assert unchanged["scale_factor"] == pytest.approx(1.0)
    assert unchanged["baseline"] == base["forecast"]
    assert [f["p50"] for f in unchanged["what_if"]] == pytest.approx(
        [f["p50"] for f in base["forecast"]], rel=1e-6
    )
    tolerance = 1e-6 * base["forecast"][-1]["p50"]
    assert unchanged["difference_at_last_horizon"]["p50"] == pytest.approx(0, abs=tolerance)
    more = gro.what_if(conn, growth_model, channel, {"posts_per_day": 3 * recent, "prediction_days": 10})
    assert len(more["what_if"]) == 10 and more["baseline"] == base["forecast"][:10]
    diff = more["difference_at_last_horizon"]
    assert diff["horizon_days"] == 10
    assert diff["p50"] == pytest.approx(more["what_if"][-1]["p50"] - more["baseline"][-1]["p50"])
    assert diff["p50"] != 0  # the model reads posting activity
    assert "not a causal estimate" in more["assumption"]
    for f in more["what_if"]:
        assert f["p10"] <= f["p50"] <= f["p90"]
    for bad, match in (
        ({"posts_per_day": -1}, "posts_per_day"),
        ({"posts_per_day": 1e4}, "posts_per_day"),
        ({"posts_per_day": float("nan")}, "posts_per_day"),
        ({}, "posts_per_day"),
        ({"posts_per_day": 2, "prediction_days": 0}, "prediction_days"),
        ({"posts_per_day": 2, "budget": 5}, "unknown field"),
    ):
        with pytest.raises(InvalidInput, match=match):
            gro.what_if(conn, growth_model, channel, bad)


# ------------------------------------------------------------- through published Parquet


def test_per_request_functions_on_published_parquet(conn, engagement_model, growth_model, tmp_path):
    for schema, table in PUBLISHED:
        publish_table(conn, str(tmp_path), schema, table)
    reader = open_reader(str(tmp_path))
    try:
        young = _young(conn).iloc[0]
        cid, pid = int(young.channel_id), int(young.post_id)
        direct = eng.predict_post(conn, engagement_model, cid, {"post_id": pid})
        published = eng.predict_post(reader, engagement_model, cid, {"post_id": pid})
        assert published == direct
        draft = _draft_of(conn, cid, pid)
        assert eng.predict_post(reader, engagement_model, cid, draft)["engagement_score"] == pytest.approx(
            direct["engagement_score"], abs=1e-6
        )
        assert gro.forecast_channel(reader, growth_model, cid, 30) == gro.forecast_channel(
            conn, growth_model, cid, 30
        )
        scored = eng.score(reader, {"engagement": engagement_model}, SCORED_AT).frame
        assert len(scored) == len(_young(conn))
        assert len(gro.score(reader, {"growth": growth_model}, SCORED_AT).frame) == 3 * 30
    finally:
        reader.close()
    # the service's methods call these functions with API-shaped bodies
    service = DeepLearningService(
        tracking_uri=f"sqlite:///{tmp_path}/none.db", published_root=str(tmp_path), refresh_seconds=1e9
    )
    service._champions = {"engagement": engagement_model, "growth": growth_model}
    service._checked_at = time.monotonic()
    body = {"post_id": pid, "published_at": None, "media_type": "none", "text_length": 0, "snapshots": []}
    assert service.predict_engagement_neural(cid, body) == direct
    assert (
        service.forecast_growth_lstm(cid, 5)["forecast"]
        == gro.forecast_channel(conn, growth_model, cid, 5)["forecast"]
    )
    what = service.predict_audience_growth_rnn(cid, {"posts_per_day": 4.0, "prediction_days": 5})
    assert len(what["what_if"]) == 5
    with pytest.raises(InvalidInput):
        service.predict_engagement_neural(cid, {**body, "post_id": None})


def test_empty_and_filled_frames_get_the_same_warehouse_types(conn, engagement_model, growth_model):
    out = duckdb.connect()
    for table, scorer, name, model in (
        ("post_engagement_forecasts", eng.score, "engagement", engagement_model),
        ("channel_growth_forecasts", gro.score, "growth", growth_model),
    ):
        types = []
        for champion in (model, None):
            frame = scorer(conn, {name: champion}, SCORED_AT).frame
            write_forecast(out, table, frame)
            types.append(
                out.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = 'forecasts' AND table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
            )
        assert types[0] == types[1]
        assert "NULL" not in {t for _, t in types[0]}
