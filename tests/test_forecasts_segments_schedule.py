"""Forecast tables ``user_segments`` and ``posting_schedule_recommendations`` and their API calls."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from nn_models.champions import LoadedModel
from nn_models.device import choose_device
from nn_models.forecasts import get_scorer, schedule, segments
from nn_models.forecasts.base import LINEAGE_COLUMNS
from nn_models.models.behavior import FEATURES
from nn_models.service import InvalidInput
from nn_models.tasks.behavior import BehaviorTask
from nn_models.tasks.schedule import ScheduleTask
from warehouse import features, synthetic
from warehouse.forecast_tables import write_forecast
from warehouse.publish import open_reader, publish_table
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame

SCORED_AT = datetime(2024, 5, 1, 6, 0)
BAD_IDS = ["abc", None, 1.5, True, [1]]


@pytest.fixture(scope="module")
def warehouse():
    # tiny world, but with 400 users so the behaviour task has a holdout to measure on
    config = dataclasses.replace(synthetic.config_for("tiny", seed=42), n_users=400)
    conn = duckdb.connect()
    ensure_schema(conn)
    for name, frame in synthetic.generate(config).tables().items():
        upsert_frame(conn, name, frame)
    for name in ("post_trajectories", "post_features", "posting_slot_features", "user_behavior_features"):
        features.build_feature_table(conn, name)
    yield conn
    conn.close()


def _loaded(task, model, metrics: dict[str, float]) -> LoadedModel:
    return LoadedModel(
        task=task.name,
        registered_model=task.registered_model,
        version="1",
        module=model.eval(),
        tags={f"metric.{k}": str(v) for k, v in metrics.items()},
    )


@pytest.fixture(scope="module")
def behavior(warehouse) -> LoadedModel:
    task = BehaviorTask()
    data = task.load(warehouse)
    params = {**task.default_params(), "hidden": [64, 32, 16]}
    model = task.train(params, data, choose_device("cpu"), 2, seed=0).model
    return _loaded(task, model, task.evaluate(model, data))


@pytest.fixture(scope="module")
def sched(warehouse) -> LoadedModel:
    task = ScheduleTask()
    data = task.load(warehouse)
    params = {**task.default_params(), "hidden": [32, 16]}
    model = task.train(params, data, choose_device("cpu"), 3, seed=0).model
    return _loaded(task, model, task.evaluate(model, data))


@pytest.fixture(scope="module")
def segment_result(warehouse, behavior):
    return segments.score(warehouse, {"behavior": behavior}, SCORED_AT)


@pytest.fixture(scope="module")
def schedule_result(warehouse, sched):
    return schedule.score(warehouse, {"schedule": sched}, SCORED_AT)


def _channel(warehouse) -> int:
    return int(
        warehouse.execute("""
        SELECT channel_id FROM raw.interactions GROUP BY channel_id
        ORDER BY count(DISTINCT user_id) DESC, channel_id LIMIT 1""").fetchall()[0][0]
    )


# ----------------------------------------------------------------------------- segments
def test_segments_score_assigns_every_user_to_its_nearest_centroid(warehouse, behavior, segment_result):
    frame = segment_result.frame
    assert list(frame.columns) == segments.COLUMNS + list(LINEAGE_COLUMNS)
    assert get_scorer("user_segments") is segments.score
    users = warehouse.execute("SELECT * FROM features.user_behavior_features ORDER BY user_id").fetchdf()
    assert frame["user_id"].tolist() == users["user_id"].tolist()
    # same segment and latent distance as the torch module computes itself
    index, distance = behavior.module.segment(torch.as_tensor(users[list(FEATURES)].to_numpy(np.float32)))
    assert frame["segment_id"].tolist() == index.tolist()
    np.testing.assert_allclose(frame["distance"], distance.numpy(), rtol=1e-4, atol=1e-5)
    assert (frame["distance"] >= 0).all()
    assert frame["segment_id"].between(0, behavior.module.n_segments - 1).all()
    # one readable label per segment, unique across segments; sizes are the member counts
    pairs = frame[["segment_id", "segment_label"]].drop_duplicates()
    assert pairs["segment_id"].is_unique and pairs["segment_label"].is_unique
    assert all(
        " · " in label and "h" in label or "round-the-clock" in label for label in pairs["segment_label"]
    )
    counts = frame["segment_id"].map(frame["segment_id"].value_counts())
    assert (frame["segment_size"] == counts).all()
    assert (frame["model_name"] == "channel_pulse_behavior").all()
    assert (frame["model_version"] == "1").all()
    assert (frame["scored_at"] == pd.Timestamp(SCORED_AT)).all()
    assert segment_result.models == {"channel_pulse_behavior": "1"}
    assert (frame["source"] == "model").all() and frame["fallback_reason"].isna().all()
    assert "users" in segment_result.notes["segments"]


def _users(
    n: int,
    hours: dict[int, float],
    weekdays: dict[int, float],
    actions: tuple[float, float, float],
    n_interactions: int,
) -> pd.DataFrame:
    row = {f"hour_{h:02d}": hours.get(h, 0.0) for h in range(24)}
    row |= {f"wd_{d}": weekdays.get(d, 0.0) for d in range(7)}
    row |= dict(zip(("share_reaction", "share_reply", "share_forward"), actions, strict=True))
    row["n_interactions"] = n_interactions
    return pd.DataFrame([row] * n)


def test_labels_name_hours_actions_week_and_activity():
    night = _users(5, {22: 0.25, 23: 0.25, 0: 0.25, 1: 0.25}, {5: 0.5, 6: 0.5}, (0.1, 0.1, 0.8), 200)
    morning = _users(5, {7: 0.5, 8: 0.5}, {d: 0.2 for d in range(5)}, (0.9, 0.05, 0.05), 20)
    mixed = _users(5, {h: 1 / 24 for h in range(24)}, {d: 1 / 7 for d in range(7)}, (0.5, 0.4, 0.1), 110)
    twin = mixed.copy()
    frame = pd.concat([night, morning, mixed, twin], ignore_index=True)
    labels = segments.labels_for(segments.segment_traits(frame, np.repeat([0, 1, 2, 3], 5)))
    assert labels[0] == "night 21–03 h · sharers · weekend-heavy · very active"
    assert labels[1] == "morning 06–10 h · reactors · weekday-focused · occasional"
    assert labels[2].startswith("round-the-clock · reactors/commenters · all week")
    assert len(set(labels.values())) == 4  # identical profiles still get distinct labels
    # two activity peaks: both windows, busiest first
    windows = segments.active_windows(
        np.array([0.1 if h in (8, 9) else 0.06 if h in (18, 19) else 0.0 for h in range(24)])
    )
    assert [(w["start"], w["end"]) for w in windows][0] == (8, 10)
    assert len(windows) == 2 and windows[1]["part"] == "evening"


def test_segments_without_champion_come_from_the_baseline(warehouse, behavior):
    result = segments.score(warehouse, {"behavior": None}, SCORED_AT)
    frame = result.frame
    assert list(frame.columns) == segments.COLUMNS + list(LINEAGE_COLUMNS)
    users = (
        warehouse.execute("SELECT user_id FROM features.user_behavior_features ORDER BY 1")
        .fetchdf()["user_id"]
        .tolist()
    )
    assert frame["user_id"].tolist() == users  # every user, none dropped
    assert (frame["source"] == "baseline").all() and (frame["model_version"] == "none").all()
    assert frame["fallback_reason"].str.contains("no champion for behavior").all()
    assert "PCA + k-means" in result.notes["baseline"] or "global profile" in result.notes["baseline"]
    pairs = frame[["segment_id", "segment_label"]].drop_duplicates()
    assert pairs["segment_id"].is_unique and pairs["segment_label"].is_unique
    assert (frame["distance"] >= 0).all() and result.models == {}
    # the baseline's k is the one chosen on the validation period
    data = BehaviorTask().load(warehouse)
    if data.info["strongest_baseline"] == "pca_kmeans":
        assert frame["segment_id"].nunique() <= data.info["baseline_pca_kmeans_k"]
    empty = duckdb.connect()  # no feature tables at all
    no_inputs = segments.score(empty, {"behavior": behavior}, SCORED_AT)
    assert no_inputs.frame.empty and "does not exist" in no_inputs.notes["skipped"]


def test_sparse_interactions_fall_back_to_one_global_profile():
    conn = duckdb.connect()  # the tiny preset: 60 users, too few to validate k-means
    ensure_schema(conn)
    tables = synthetic.generate(synthetic.config_for("tiny", seed=42)).tables()
    for name in ("raw.channels", "raw.posts", "raw.interactions"):
        upsert_frame(conn, name, tables[name])
    features.build_feature_table(conn, "user_behavior_features")
    result = segments.score(conn, {"behavior": None}, SCORED_AT)
    frame = result.frame
    assert len(frame) == conn.execute("SELECT count(DISTINCT user_id) FROM raw.interactions").fetchall()[0][0]
    assert (frame["segment_id"] == 0).all() and (frame["source"] == "baseline").all()
    assert "one global profile" in result.notes["baseline"]
    assert "needs at least" in result.notes["baseline"]  # the task's stated minimum
    conn.close()


def test_channel_segments_mix_of_a_channel(warehouse, behavior, segment_result):
    channel = _channel(warehouse)
    out = segments.channel_segments(warehouse, behavior, channel)
    users = warehouse.execute(
        """
        SELECT count(DISTINCT user_id) FROM raw.interactions WHERE channel_id = ?""",
        [channel],
    ).fetchall()[0][0]
    assert out["channel_id"] == channel and out["users"] == users > 0
    parts = out["segments"]
    assert sum(p["users"] for p in parts) == users
    assert sum(p["share"] for p in parts) == pytest.approx(1.0, abs=1e-3)
    assert sum(p["interaction_share"] for p in parts) == pytest.approx(1.0, abs=1e-3)
    assert [p["users"] for p in parts] == sorted((p["users"] for p in parts), reverse=True)
    table_labels = dict(
        segment_result.frame[["segment_id", "segment_label"]].drop_duplicates().itertuples(index=False)
    )
    for p in parts:
        assert p["label"] == table_labels[p["segment_id"]]
        assert sum(p["action_mix"].values()) == pytest.approx(1.0, abs=1e-3)
        assert p["mean_distance"] >= 0 and 0 <= p["weekend_share"] <= 1
        assert len(p["peak_hours"]) == 3 and p["active_hours"]
    for bad in BAD_IDS:
        with pytest.raises(InvalidInput):
            segments.channel_segments(warehouse, behavior, bad)
    nobody = segments.channel_segments(warehouse, behavior, 123456789)
    assert nobody["users"] == 0 and nobody["segments"] == [] and nobody["note"]
    assert out["source"] == "model" and out["fallback_reason"] is None


def test_channel_segments_without_a_model(warehouse):
    channel = _channel(warehouse)
    out = segments.channel_segments(warehouse, None, channel)
    assert out["source"] == "baseline" and "no champion" in out["fallback_reason"]
    assert out["model_version"] == "none" and out["label_source"].startswith("baseline fitted now")
    assert sum(p["users"] for p in out["segments"]) == out["users"] > 0
    table = segments.score(warehouse, {"behavior": None}, SCORED_AT).frame
    labels = dict(table[["segment_id", "segment_label"]].drop_duplicates().itertuples(index=False))
    assert all(p["label"] == labels[p["segment_id"]] for p in out["segments"])
    for bad in BAD_IDS:
        with pytest.raises(InvalidInput):
            segments.channel_segments(warehouse, None, bad)


# ----------------------------------------------------------------------------- schedule
def test_schedule_score_ranks_all_slots_of_every_channel(warehouse, sched, schedule_result):
    frame = schedule_result.frame
    assert list(frame.columns) == schedule.COLUMNS + list(LINEAGE_COLUMNS)
    channels = [
        c for (c,) in warehouse.execute("SELECT channel_id FROM raw.channels ORDER BY channel_id").fetchall()
    ]
    assert len(frame) == 168 * len(channels)
    assert sorted(frame["channel_id"].unique()) == channels
    for channel, group in frame.groupby("channel_id"):
        assert sorted(group["rank"]) == list(range(1, 169))
        assert group.loc[group["rank"] == 1, "expected_engagement"].iloc[0] == pytest.approx(
            group["expected_engagement"].max()
        )
        assert set(zip(group["weekday"], group["hour"], strict=True)) == {
            (d, h) for d in range(7) for h in range(24)
        }
        # the module's own slot grid (media weighted by the channel's mix)
        grid = sched.module.slot_grid(sched.module.channel_index[channel]).numpy().reshape(-1)
        ordered = group.sort_values(["weekday", "hour"])
        np.testing.assert_allclose(ordered["expected_engagement"], grid, rtol=1e-4, atol=1e-5)
    assert frame["confidence"].between(0, 1).all()
    assert (frame["basis"] == "channel").all()  # every tiny channel is a training channel
    np.testing.assert_allclose(frame["expected_reach_ratio"], np.exp(frame["expected_engagement"]))
    history = warehouse.execute("""
        SELECT channel_id, weekday, hour, n_posts FROM features.posting_slot_features""").fetchdf()
    merged = frame.merge(history, on=["channel_id", "weekday", "hour"], how="left")
    assert (merged["sample_size"] == merged["n_posts"].fillna(0)).all()
    assert (
        frame["sample_size"].sum()
        == warehouse.execute(
            "SELECT count(*) FROM features.post_features WHERE views_48h IS NOT NULL"
        ).fetchall()[0][0]
    )
    assert (frame["model_name"] == "channel_pulse_schedule").all()
    assert (frame["model_version"] == "1").all()
    assert (frame["source"] == "model").all() and frame["fallback_reason"].isna().all()
    assert "spearman" in schedule_result.notes["confidence"]


def test_schedule_confidence_follows_the_documented_formula(warehouse, sched):
    tagged = dataclasses.replace(sched, version="2", tags={"metric.spearman": "0.4"})
    frame = schedule.score(warehouse, {"schedule": tagged}, SCORED_AT).frame
    n_channel = frame.groupby("channel_id")["sample_size"].transform("sum").to_numpy(float)
    expected = 0.4 * n_channel / (n_channel + schedule.MIN_CHANNEL_POSTS)
    np.testing.assert_allclose(frame["confidence"], expected, rtol=1e-6)
    # a negative measured rank correlation gives no confidence at all
    worse = dataclasses.replace(sched, version="3", tags={"metric.spearman": "-0.2"})
    assert (schedule.score(warehouse, {"schedule": worse}, SCORED_AT).frame["confidence"] == 0).all()
    # no measured metric -> no confidence, and the note says why
    bare = dataclasses.replace(sched, version="4", tags={})
    result = schedule.score(warehouse, {"schedule": bare}, SCORED_AT)
    assert result.frame["confidence"].isna().all() and "NaN" in result.notes["confidence"]


def _check_baseline_rows(group: pd.DataFrame) -> None:
    assert len(group) == 168 and sorted(group["rank"]) == list(range(1, 169))
    assert (group["source"] == "baseline").all() and group["fallback_reason"].notna().all()
    assert (group["model_version"] == "none").all()
    assert group["confidence"].between(0, 1).all()


def test_schedule_without_champion_comes_from_the_strongest_baseline(warehouse):
    result = schedule.score(warehouse, {"schedule": None}, SCORED_AT)
    frame = result.frame
    assert list(frame.columns) == schedule.COLUMNS + list(LINEAGE_COLUMNS)
    channels = [
        c for (c,) in warehouse.execute("SELECT channel_id FROM raw.channels ORDER BY channel_id").fetchall()
    ]
    assert sorted(frame["channel_id"].unique()) == channels
    for _, group in frame.groupby("channel_id"):
        _check_baseline_rows(group)
    assert frame["fallback_reason"].str.contains("no champion for schedule").all()
    assert (frame["basis"] == "channel").all() and result.models == {}
    # the rule chosen on validation, refitted on all labelled posts: the same ranking
    base = schedule.fit_baseline(warehouse)
    data = ScheduleTask().load(warehouse)
    assert base.rule == data.info["strongest_baseline"]
    assert base.spearman == pytest.approx(ScheduleTask().baseline(data)[f"baseline_{base.rule}_spearman"])
    assert base.rule in result.notes["baseline"]
    one = frame[frame["channel_id"] == channels[0]].sort_values(["weekday", "hour"])
    top = int(np.argmax(base.tables[channels[0]]))
    assert one["rank"].to_numpy()[top] == 1
    if base.rule != "most_posted_hour":
        np.testing.assert_allclose(one["expected_engagement"], base.tables[channels[0]])
    n_channel = one["sample_size"].sum()
    np.testing.assert_allclose(
        one["confidence"], np.clip(base.spearman, 0, 1) * n_channel / (n_channel + schedule.MIN_CHANNEL_POSTS)
    )
    out = schedule.channel_schedule(warehouse, None, channels[0])
    assert out["source"] == "baseline" and "no champion" in out["fallback_reason"]
    assert [(s["weekday"], s["hour"]) for s in out["top_slots"]] == [
        divmod(int(i), 24) for i in np.argsort(one["rank"].to_numpy(), kind="stable")[:5]
    ]


def test_schedule_channels_the_model_cannot_score_get_baseline_rows(warehouse, sched, monkeypatch):
    warehouse.execute("BEGIN TRANSACTION")
    try:
        warehouse.execute("INSERT INTO raw.channels VALUES (999, 'newbie', 'New', ?)", [SCORED_AT])
        warehouse.execute(
            """
            INSERT INTO raw.posts (channel_id, post_id, published_at, text, media_type)
            VALUES (999, 1, ?, 'hi', 'photo'), (999, 2, ?, 'hello', 'photo')""",
            [SCORED_AT, SCORED_AT],
        )
        result = schedule.score(warehouse, {"schedule": sched}, SCORED_AT)
        new = result.frame[result.frame["channel_id"] == 999]
        _check_baseline_rows(new)
        assert (new["basis"] == "network").all() and (new["sample_size"] == 0).all()
        assert new["fallback_reason"].str.contains("unknown").all()
        old = result.frame[result.frame["channel_id"] != 999]
        assert (old["source"] == "model").all()
        assert result.models == {"channel_pulse_schedule": "1"}
        assert "999" in result.notes["fallback"]
        api = schedule.channel_schedule(warehouse, sched, 999)
        assert api["source"] == "baseline" and "unknown" in api["fallback_reason"]
        assert api["basis"] == "network"
    finally:
        warehouse.execute("ROLLBACK")
    # known channels with too little history also fall back to the baseline
    monkeypatch.setattr(schedule, "MIN_CHANNEL_POSTS", 10**6)
    result = schedule.score(warehouse, {"schedule": sched}, SCORED_AT)
    assert (result.frame["source"] == "baseline").all()
    assert result.frame["fallback_reason"].str.contains("fewer than the 1000000").all()


def test_schedule_without_inputs(warehouse, sched):
    empty = schedule.score(duckdb.connect(), {"schedule": sched}, SCORED_AT)
    assert empty.frame.empty and empty.notes["skipped"]
    assert list(empty.frame.columns) == schedule.COLUMNS + list(LINEAGE_COLUMNS)


def test_no_truth_no_champion_both_tables_are_filled(warehouse):
    warehouse.execute("BEGIN TRANSACTION")
    try:
        warehouse.execute("DROP SCHEMA truth CASCADE")
        seg = segments.score(warehouse, {"behavior": None}, SCORED_AT).frame
        plan = schedule.score(warehouse, {"schedule": None}, SCORED_AT).frame
    finally:
        warehouse.execute("ROLLBACK")
    for frame in (seg, plan):
        assert len(frame) > 0 and (frame["source"] == "baseline").all()
        assert frame["fallback_reason"].notna().all()


def test_channel_schedule_top_slots_and_history(warehouse, sched, schedule_result):
    channel = _channel(warehouse)
    out = schedule.channel_schedule(warehouse, sched, channel)
    assert out["basis"] == "channel" and out["source"] == "model"
    assert out["fallback_reason"] is None
    top = out["top_slots"]
    assert [s["rank"] for s in top] == [1, 2, 3, 4, 5]
    rows = schedule_result.frame.query("channel_id == @channel and rank <= 5").sort_values("rank")
    assert [(s["weekday"], s["hour"]) for s in top] == list(zip(rows["weekday"], rows["hour"], strict=True))
    assert [s["expected_engagement"] for s in top] == sorted(
        (s["expected_engagement"] for s in top), reverse=True
    )
    assert all(0 <= s["confidence"] <= 1 for s in top)
    best = out["historical_best_hours"]
    assert best and all(b["posts"] >= 3 for b in best)
    assert [b["mean_view_percentile"] for b in best] == sorted(
        (b["mean_view_percentile"] for b in best), reverse=True
    )
    assert out["posts_with_48h_data"] == int(
        schedule_result.frame.query("channel_id == @channel")["sample_size"].sum()
    )
    for bad in BAD_IDS:
        with pytest.raises(InvalidInput):
            schedule.channel_schedule(warehouse, sched, bad)


# ---------------------------------------------------------------------- published path
def test_api_functions_read_published_parquet(warehouse, behavior, sched, segment_result, tmp_path):
    write_forecast(warehouse, "user_segments", segment_result.frame)
    for schema, table in (
        ("raw", "channels"),
        ("raw", "posts"),
        ("raw", "interactions"),
        ("features", "user_behavior_features"),
        ("features", "posting_slot_features"),
        ("forecasts", "user_segments"),
    ):
        publish_table(warehouse, str(tmp_path), schema, table)
    reader = open_reader(str(tmp_path))
    channel = _channel(warehouse)
    published = segments.channel_segments(reader, behavior, channel)
    direct = segments.channel_segments(warehouse, behavior, channel)
    assert published["label_source"] == "forecasts.user_segments"
    assert published["segments"] == direct["segments"] and published["users"] == direct["users"]
    plan = schedule.channel_schedule(reader, sched, channel)
    assert plan == schedule.channel_schedule(warehouse, sched, channel)
    # without a champion: the published baseline rows answer
    write_forecast(
        warehouse,
        "posting_schedule_recommendations",
        schedule.score(warehouse, {"schedule": None}, SCORED_AT).frame,
    )
    write_forecast(warehouse, "user_segments", segments.score(warehouse, {"behavior": None}, SCORED_AT).frame)
    for table in ("posting_schedule_recommendations", "user_segments"):
        publish_table(warehouse, str(tmp_path), "forecasts", table)
    reader = open_reader(str(tmp_path))
    fallback = schedule.channel_schedule(reader, None, channel)
    assert fallback["source"] == "baseline" and "baseline rows" in fallback["confidence_basis"]["how"]
    assert fallback["top_slots"] == schedule.channel_schedule(warehouse, None, channel)["top_slots"]
    mix = segments.channel_segments(reader, None, channel)
    assert mix["source"] == "baseline" and mix["label_source"].endswith("(baseline rows)")
    assert mix["segments"] == segments.channel_segments(warehouse, None, channel)["segments"]
    assert not any(isinstance(v, float) and math.isnan(v) for s in plan["top_slots"] for v in s.values())
