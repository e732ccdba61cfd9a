"""Posting-schedule model: baselines and metrics by hand, the time split, gates without truth,
determinism, and the full lifecycle."""

from __future__ import annotations

import duckdb
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from nn_models import baselines_schedule as bs
from nn_models.device import choose_device
from nn_models.models.schedule import ScheduleOptimizer, harmonics
from nn_models.pipeline import train_and_register
from nn_models.registry import version_by_alias
from nn_models.task import PROFILES, InsufficientData
from nn_models.tasks.schedule import MIN_TRAIN_POSTS, ScheduleTask
from warehouse import features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame


@pytest.fixture(scope="module")
def warehouse():
    conn = duckdb.connect()
    ensure_schema(conn)
    world = synthetic.generate(synthetic.config_for("tiny", seed=42))
    for name, frame in world.tables().items():
        upsert_frame(conn, name, frame)
    for name in ("post_trajectories", "post_features"):
        features.build_feature_table(conn, name)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def data(warehouse):
    return ScheduleTask().load(warehouse)


@pytest.fixture
def no_truth(warehouse):
    """The same world as a user's landing data: no truth schema at all."""
    warehouse.execute("BEGIN TRANSACTION")
    warehouse.execute("DROP SCHEMA truth CASCADE")
    try:
        yield ScheduleTask().load(warehouse)
    finally:
        warehouse.execute("ROLLBACK")


def test_forward_shapes_and_slot_grid():
    model = ScheduleOptimizer([11, 22, 33], embedding_dim=4, hidden=(16, 8)).eval()
    n = 5
    out = model(
        channel=torch.tensor([0, 1, 2, 0, 1]),
        weekday=torch.arange(n),
        hour=torch.tensor([0, 6, 12, 18, 23]),
        media=torch.tensor([0, 1, 2, 3, 5]),
    )
    assert out.shape == (n,)
    assert model.slot_grid(1).shape == (7, 24)
    assert model.slot_grids().shape == (3, 7, 24)
    assert model.channel_index == {11: 0, 22: 1, 33: 2}


def test_hour_harmonics_are_circular():
    h = harmonics(torch.tensor([0.0, 24.0, 12.0]), 24.0, 3)
    assert h.shape == (3, 6)
    assert torch.allclose(h[0], h[1], atol=1e-5)  # 24 h wraps to 0 h
    assert not torch.allclose(h[0], h[2], atol=1e-3)


def test_baseline_grids_by_hand():
    # Mon 09h: 1.0, 3.0; Tue 09h: 5.0; Tue 10h: 4.0 -> channel mean 3.25, hour 09 mean 3.0
    slot = bs.slot_of(np.array([0, 0, 1, 1]), np.array([9, 9, 9, 10]))
    y = np.array([1.0, 3.0, 5.0, 4.0])
    raw = bs.shrunk_grid(slot, y, alpha=0.0, beta=0.0)
    assert raw[9] == pytest.approx(2.0) and raw[24 + 9] == pytest.approx(5.0)
    assert raw[2 * 24 + 9] == pytest.approx(3.0)  # unseen slot -> its hour's mean
    assert raw[3] == pytest.approx(3.25)  # unseen hour -> the channel's mean
    shrunk = bs.shrunk_grid(slot, y, alpha=2.0, beta=0.0)
    assert shrunk[9] == pytest.approx((4.0 + 2 * 3.0) / 4)  # 2 posts + 2 pseudo-posts
    assert shrunk[24 + 9] == pytest.approx((5.0 + 2 * 3.0) / 3)
    beta = bs.shrunk_grid(slot, y, alpha=0.0, beta=1.0)
    assert beta[24 + 10] == pytest.approx(4.0)
    assert beta[2 * 24 + 10] == pytest.approx((4.0 + 3.25) / 2)  # hour 10 shrunk toward 3.25
    assert np.allclose(bs.hour_grid(slot, y)[[9, 24 + 9, 6 * 24 + 9]], 3.0)
    posted = bs.posted_grid(slot)
    assert posted[9] == posted[5 * 24 + 9] == 3 and posted[10] == 1 and posted[0] == 0


def test_channel_scores_by_hand():
    channel = np.repeat([1, 2, 3], 8)
    pct = np.tile(np.linspace(0.1, 0.8, 8), 3)
    pred = np.concatenate([np.arange(8.0), -np.arange(8.0), np.zeros(8)])
    scores = bs.channel_scores(channel, pred, pct)
    assert list(scores.channel_ids) == [1, 2, 3]
    assert scores.spearman == pytest.approx([1.0, -1.0, 0.0])  # ties everywhere rank nothing
    # top quartile (2 highest) mean 0.75 vs bottom (2 lowest) mean 0.15
    assert scores.lift[0] == pytest.approx(0.6) and scores.lift[1] == pytest.approx(-0.6)
    assert scores.lift[2] == 0.0 and scores.mean("spearman") == pytest.approx(0.0)
    few = bs.channel_scores(np.array([1, 1, 1]), np.arange(3.0), np.arange(3.0))
    assert len(few.channel_ids) == 0  # fewer than MIN_CHANNEL_HOLDOUT_POSTS posts


def test_choose_tunes_on_validation_and_finds_the_rule_that_generalises():
    rng = np.random.default_rng(0)

    def posts(n):
        channel = rng.integers(1, 4, n)
        weekday, hour = rng.integers(0, 7, n), rng.integers(0, 24, n)
        effect = np.sin(2 * np.pi * hour / 24)  # only the hour matters
        return {
            "channel_id": channel,
            "weekday": weekday,
            "hour": hour,
            "target": effect + rng.normal(0, 1.0, n),
            "percentile": effect + rng.normal(0, 1, n),
        }

    choice = bs.choose(posts(1500), posts(600))
    assert set(choice.val_spearman) == set(bs.BASELINES)
    # a pure hour effect: the slot mean must borrow heavily from the hour (large alpha)
    assert choice.alpha >= 8
    assert choice.strongest in ("shrunk_slot_mean", "hour_mean")
    assert choice.val_spearman["most_posted_hour"] < choice.val_spearman[choice.strongest]


def test_load_splits_by_time_and_fits_baselines_before_the_holdout(data):
    assert data.info["n_train"] > 0 and data.info["n_holdout"] > 0
    assert data.info["val_from"] <= data.info["holdout_from"]
    assert data.info["strongest_baseline"] in bs.BASELINES
    for split in (data.train, data.val, data.holdout):
        assert np.isfinite(split["target"]).all()
        assert ((split["percentile"] >= 0) & (split["percentile"] <= 1)).all()
    for rule in bs.BASELINES:
        assert data.holdout[f"pred_{rule}"].shape == data.holdout["target"].shape
    assert data.info["has_truth"]


def test_training_is_deterministic_for_a_seed(data):
    task = ScheduleTask()
    params = task.default_params()
    weights = []
    for _ in range(2):
        model = task.train(params, data, choose_device("cpu"), 2, seed=5).model
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_without_truth_the_model_trains_and_gates_on_observed_outcomes(no_truth):
    assert not no_truth.info["has_truth"] and "truth_effect" not in no_truth.holdout
    task = ScheduleTask()
    model = task.train(task.default_params(), no_truth, choose_device("cpu"), 3, seed=1).model
    metrics = task.evaluate(model, no_truth)
    baseline = task.baseline(no_truth)
    assert "top_slot_ratio" not in metrics
    assert -1 <= metrics["spearman"] <= 1 and metrics["channels_scored"] >= 2
    assert metrics["margin_spearman_lo"] <= metrics["margin_spearman"] <= metrics["margin_spearman_hi"]
    strongest = no_truth.info["strongest_baseline"]
    assert metrics["strongest_baseline_spearman"] == pytest.approx(baseline[f"baseline_{strongest}_spearman"])
    assert metrics["margin_spearman"] == pytest.approx(
        metrics["spearman"] - metrics["strongest_baseline_spearman"]
    )
    gates = task.gates(metrics, baseline)
    assert [g.name for g in gates] == [
        "spearman_positive",
        "lift_positive",
        f"spearman_vs_{strongest}",
        "channels_scored",
    ]
    # the tiny world has 3 channels: too few for the interval, so the gates fail
    assert not gates[-1].passed and gates[-1].value == 3
    vs = gates[2]
    assert vs.against_baseline and vs.passed == (vs.lo >= 0)


def test_a_model_that_ranks_backwards_fails(data):
    task = ScheduleTask()
    model = task.train(task.default_params(), data, choose_device("cpu"), 3, seed=1).model
    with torch.no_grad():  # negate the output layer: the ranking is reversed
        last = model.mlp[-1]
        last.weight.mul_(-1)
        last.bias.mul_(-1)
    metrics = task.evaluate(model, data)
    gates = {g.name: g for g in task.gates(metrics, task.baseline(data))}
    assert metrics["spearman"] < 0 and not gates["spearman_positive"].passed
    assert not gates[f"spearman_vs_{data.info['strongest_baseline']}"].passed


def test_too_little_history_is_skipped_with_the_minimum(warehouse):
    warehouse.execute("BEGIN TRANSACTION")
    try:
        first = warehouse.execute("SELECT min(published_at) FROM features.post_features").fetchall()
        warehouse.execute(
            "DELETE FROM features.post_features WHERE published_at > ? + INTERVAL 7 DAY", [first[0][0]]
        )
        expected = rf"needs at least \d+ posts .*\({MIN_TRAIN_POSTS} to train on.*has 46"
        with pytest.raises(InsufficientData, match=expected):
            ScheduleTask().load(warehouse)
    finally:
        warehouse.execute("ROLLBACK")


def test_train_and_register_end_to_end(warehouse, data, tmp_path):
    task = ScheduleTask()
    stores = {
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "artifact_root": str(tmp_path / "artifacts"),
        "optuna_uri": f"sqlite:///{tmp_path / 'optuna.db'}",
    }
    report = train_and_register(
        task, data=data, choice=choose_device("cpu"), profile=PROFILES["tiny"], seed=3, **stores
    )
    assert report.status == "registered" and report.version == "1"
    strongest = data.info["strongest_baseline"]
    assert {g.name for g in report.gates} == {
        "spearman_positive",
        "lift_positive",
        f"spearman_vs_{strongest}",
        "channels_scored",
    }
    assert not report.promoted and "channels_scored" in report.promotion_reason
    for rule in bs.BASELINES:
        assert np.isfinite(report.baseline[f"baseline_{rule}_spearman"])
        assert f"baseline_{rule}_lift" in report.baseline
    assert 0.0 < report.metrics["top_slot_ratio"] <= 1.0  # truth exists: reported only
    client = MlflowClient(stores["tracking_uri"])
    assert str(version_by_alias(client, task.registered_model, "challenger").version) == "1"
    # a registered model scores itself on the holdout without the task's training state
    loaded = mlflow.pytorch.load_model(f"models:/{task.registered_model}/1", map_location="cpu")
    again = task.evaluate(loaded, data)
    assert again["spearman"] == pytest.approx(report.metrics["spearman"])
    assert "slot_heatmap" in report.artifacts
