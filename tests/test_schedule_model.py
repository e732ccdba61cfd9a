"""Posting-schedule model: shapes, baseline arithmetic, determinism, and the full lifecycle."""

from __future__ import annotations

import duckdb
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from nn_models.baselines_schedule import (
    historical_slot_means,
    slot_of,
    slot_rank_correlation,
    top_slot_ratio,
)
from nn_models.device import choose_device
from nn_models.models.schedule import ScheduleOptimizer, harmonics
from nn_models.pipeline import train_and_register
from nn_models.registry import version_by_alias
from nn_models.task import PROFILES, InsufficientData
from nn_models.tasks.schedule import NO_TRUTH, ScheduleTask
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


def test_forward_shapes_and_slot_grid():
    model = ScheduleOptimizer([11, 22, 33], embedding_dim=4, hidden=(16, 8)).eval()
    n = 5
    out = model(channel=torch.tensor([0, 1, 2, 0, 1]), weekday=torch.arange(n),
                hour=torch.tensor([0, 6, 12, 18, 23]), media=torch.tensor([0, 1, 2, 3, 5]))
    assert out.shape == (n,)
    assert model.slot_grid(1).shape == (7, 24)
    assert model.slot_grids().shape == (3, 7, 24)
    assert model.channel_index == {11: 0, 22: 1, 33: 2}


def test_hour_harmonics_are_circular():
    h = harmonics(torch.tensor([0.0, 24.0, 12.0]), 24.0, 3)
    assert h.shape == (3, 6)
    assert torch.allclose(h[0], h[1], atol=1e-5)        # 24 h wraps to 0 h
    assert not torch.allclose(h[0], h[2], atol=1e-3)


def test_historical_slot_means_by_hand():
    # channel 7: Mon 09h -> 1.0 and 3.0 (mean 2.0); Tue 10h -> 4.0; every other slot -> 8/3
    table = historical_slot_means(np.array([7, 7, 7]), np.array([0, 0, 1]),
                                  np.array([9, 9, 10]), np.array([1.0, 3.0, 4.0]))
    means = table[7]
    assert means.shape == (168,)
    assert means[9] == pytest.approx(2.0)
    assert means[24 + 10] == pytest.approx(4.0)
    assert means[0] == pytest.approx(8.0 / 3.0) and means[167] == pytest.approx(8.0 / 3.0)


def test_top_slot_ratio_by_hand():
    truth = {1: np.ones(168), 2: np.ones(168)}
    truth[1][5], truth[1][50] = 2.0, 1.5        # best 2.0 at slot 5
    truth[2][100] = 4.0
    predicted = {1: np.zeros(168), 2: np.zeros(168), 3: np.zeros(168)}  # 3 has no truth
    predicted[1][50] = 1.0                       # ranks slot 50 first -> 1.5 / 2.0
    predicted[2][100] = 1.0                      # right -> 1.0
    mean, per_channel = top_slot_ratio(predicted, truth)
    assert per_channel == {1: pytest.approx(0.75), 2: pytest.approx(1.0)}
    assert mean == pytest.approx(0.875)


def test_slot_rank_correlation_uses_groups_with_two_posts():
    channel = np.array([1, 1, 1, 1, 1, 1, 1, 2, 2])
    slot = np.array([0, 0, 1, 1, 2, 2, 3, 0, 0])
    target = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, -9.0, 0.0, 0.0])
    predicted = np.array([0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 9.0, 0.05, 0.05])
    rho, groups = slot_rank_correlation(channel, slot, target, predicted)
    assert groups == 4                 # (1,3) has one post and is left out
    assert rho == pytest.approx(1.0)   # the single-post outlier would break the ranking
    assert slot_of(np.array([1]), np.array([10]))[0] == 34


def test_load_splits_by_time_and_normalises_per_channel(data):
    assert data.info["has_truth"]
    assert data.info["n_train"] > 0 and data.info["n_holdout"] > 0
    assert data.holdout["truth_effect"].shape == (len(data.holdout["truth_channel_id"]), 168)
    # every holdout post is later than every training post (publish-time split)
    assert data.info["val_from"] <= data.info["holdout_from"]
    for split in (data.train, data.val, data.holdout):
        assert np.isfinite(split["target"]).all()


def test_training_is_deterministic_for_a_seed(data):
    task = ScheduleTask()
    params = task.default_params()
    weights = []
    for _ in range(2):
        model = task.train(params, data, choose_device("cpu"), 2, seed=5).model
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_too_little_data_and_no_truth_raise(warehouse):
    task = ScheduleTask()
    warehouse.execute("BEGIN TRANSACTION")
    try:
        warehouse.execute("DELETE FROM truth.slot_effects")
        with pytest.raises(InsufficientData, match="truth.slot_effects empty"):
            task.load(warehouse)
        assert "top_slot_ratio" in NO_TRUTH
        # without truth the model can still be trained and scored on rank correlation
        no_truth = ScheduleTask(require_truth=False).load(warehouse)
        assert "truth_effect" not in no_truth.holdout
        gates = task.gates({"spearman": 0.3}, {"baseline_spearman": 0.1})
        assert gates and not any(g.passed for g in gates)
        first = warehouse.execute("SELECT min(published_at) FROM features.post_features").fetchall()
        warehouse.execute("DELETE FROM features.post_features WHERE published_at > ? + INTERVAL 7 DAY",
                          [first[0][0]])
        with pytest.raises(InsufficientData, match="posts"):
            task.load(warehouse)
    finally:
        warehouse.execute("ROLLBACK")


def test_train_and_register_end_to_end(warehouse, data, tmp_path):
    task = ScheduleTask()
    stores = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
              "artifact_root": str(tmp_path / "artifacts"),
              "optuna_uri": f"sqlite:///{tmp_path / 'optuna.db'}"}
    report = train_and_register(task, data=data, choice=choose_device("cpu"),
                                profile=PROFILES["tiny"], seed=3, **stores)
    assert report.status == "registered" and report.version == "1"
    assert {g.name for g in report.gates} == {"top_slot_ratio", "top_slot_ratio_vs_baseline"}
    assert 0.0 < report.metrics["top_slot_ratio"] <= 1.0
    assert 0.0 < report.baseline["baseline_top_slot_ratio"] <= 1.0
    client = MlflowClient(stores["tracking_uri"])
    assert str(version_by_alias(client, task.registered_model, "challenger").version) == "1"
    # a registered model scores itself on the holdout without the task's training state
    loaded = mlflow.pytorch.load_model(f"models:/{task.registered_model}/1", map_location="cpu")
    again = task.evaluate(loaded, data)
    assert again["top_slot_ratio"] == pytest.approx(report.metrics["top_slot_ratio"])
    assert "slot_heatmap" in report.artifacts
