"""Behaviour clustering: preprocessing, label-free metrics by hand, the time split, gates
without truth (a one-segment model fails them), determinism and the full lifecycle."""

from __future__ import annotations

import dataclasses

import duckdb
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from sklearn.metrics import adjusted_rand_score

from nn_models import baselines_behavior as bb
from nn_models.baselines_behavior import assign, kmeans_by_silhouette, pca_kmeans_baseline
from nn_models.device import choose_device
from nn_models.models.behavior import (
    FEATURES,
    BehaviorClusterer,
    hour_smoothing_kernel,
    preprocess,
)
from nn_models.pipeline import train_and_register
from nn_models.registry import version_by_alias
from nn_models.task import PROFILES, InsufficientData
from nn_models.tasks.behavior import MIN_FIT_INTERACTIONS, MIN_TRAIN_USERS, BehaviorTask
from warehouse import features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame


def _warehouse(config: synthetic.SyntheticConfig) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    ensure_schema(conn)
    world = synthetic.generate(config)
    for name in ("raw.channels", "raw.posts", "raw.interactions", "truth.users"):
        upsert_frame(conn, name, world.tables()[name])
    features.build_feature_table(conn, "user_behavior_features")
    return conn


@pytest.fixture(scope="module")
def warehouse():
    # the tiny preset has 60 users, too few for a 20 % holdout; same world, more users
    config = dataclasses.replace(synthetic.config_for("tiny", seed=42), n_users=400)
    conn = _warehouse(config)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def data(warehouse):
    return BehaviorTask().load(warehouse)


def _random_shares(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = [rng.dirichlet(np.ones(size), n) for size in (24, 7, 3)]
    return np.hstack(blocks).astype(np.float32)


def test_forward_shapes_and_segments():
    x = _random_shares(10)
    model = BehaviorClusterer(FEATURES, latent_dim=4, hidden=(32, 16, 8)).eval()
    model.fit_preprocessing(x)
    distances, latent = model(torch.as_tensor(x))
    assert distances.shape == (10, 0) and latent.shape == (10, 4)
    with pytest.raises(RuntimeError, match="no centroids"):
        model.segment(torch.as_tensor(x))
    model.set_centroids(np.zeros((3, 4)))
    distances, latent = model(torch.as_tensor(x))
    assert distances.shape == (10, 3)
    index, dist = model.segment(torch.as_tensor(x))
    assert index.shape == (10,) and torch.all(dist >= 0)
    # squared distances match a direct computation
    expected = ((latent[:, None, :] - model.centroids[None]) ** 2).sum(-1)
    assert torch.allclose(distances, expected, atol=1e-5)


def test_model_starts_as_pca_and_preprocessing_matches_numpy():
    x = _random_shares(200, seed=1)
    model = BehaviorClusterer(FEATURES, latent_dim=5, hidden=(32, 16, 8)).eval()
    model.fit_preprocessing(x)
    with torch.no_grad():
        transformed = model.transform(torch.as_tensor(x)).numpy()
        z = model.standardise(torch.as_tensor(x))
        latent = model.encode(torch.as_tensor(x))
    assert np.allclose(transformed, preprocess(x, FEATURES), atol=1e-5)
    # the MLP paths start at zero, so the code is the PCA projection of the inputs
    _, _, vt = np.linalg.svd(z.numpy() - z.numpy().mean(0), full_matrices=False)
    assert np.allclose(np.abs(latent.numpy()), np.abs(z.numpy() @ vt[:5].T), atol=1e-3)


def test_hour_smoothing_keeps_shares():
    kernel = hour_smoothing_kernel(2.0)
    assert np.allclose(kernel.sum(axis=0), 1.0)
    one_hour = np.zeros(24)
    one_hour[23] = 1.0
    smoothed = one_hour @ kernel
    assert smoothed.sum() == pytest.approx(1.0)
    assert smoothed[0] == pytest.approx(smoothed[22])  # wraps around midnight
    assert np.array_equal(hour_smoothing_kernel(0.0), np.eye(24))


def test_kmeans_by_silhouette_finds_separated_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    truth = np.repeat(np.arange(4), 50)
    points = centres[truth] + rng.normal(0, 0.5, (200, 2))
    clustering = kmeans_by_silhouette(points, range(2, 8), seed=0)
    assert clustering.k == 4
    assert adjusted_rand_score(truth, clustering.labels) == pytest.approx(1.0)
    assert adjusted_rand_score(truth, assign(points, clustering.centroids)) == pytest.approx(1.0)
    result = pca_kmeans_baseline(points, points, truth, n_components=2, k_range=range(2, 8))
    assert result["baseline_ari"] == pytest.approx(1.0) and result["baseline_k"] == 4


def test_profile_error_and_centroid_profiles_by_hand():
    profiles = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    labels = np.array([0, 0, 1])
    centres = bb.centroid_profiles(labels, profiles, 3)
    assert np.allclose(centres[0], [0.5, 0.5]) and np.allclose(centres[1], [0.5, 0.5])
    assert np.allclose(centres[2], profiles.mean(axis=0))  # empty segment: everyone's mean
    errors = bb.profile_error(centres[labels], np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    assert errors == pytest.approx([0.5, 0.5, 0.5])


def test_bootstrap_stability_high_for_blobs_low_for_noise():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = np.repeat(np.arange(3), 60)
    blobs = centres[truth] + rng.normal(0, 0.5, (180, 2))
    assert bb.bootstrap_stability(blobs, truth, 3, n_boot=5) == pytest.approx(1.0)
    noise = rng.normal(0, 1, (180, 6))
    labels = bb.kmeans(noise, 8).labels_
    assert bb.bootstrap_stability(noise, labels, 8, n_boot=5) < 0.8


def test_load_splits_interactions_in_time(data):
    info = data.info
    assert info["val_from"] < info["holdout_from"]
    assert info["n_train"] >= 100 and info["n_holdout"] >= 40
    # rows of val/holdout are users segmented on the fit period, scored on a later one
    assert set(data.holdout["user_id"]) <= set(data.train["user_id"])
    assert data.holdout["fit_features"].shape == data.holdout["features"].shape
    for split in (data.train["features"], data.holdout["features"], data.holdout["fit_features"]):
        assert split.shape[1] == len(FEATURES)
        assert np.allclose(split[:, :24].sum(axis=1), 1.0, atol=1e-5)  # hour shares
        assert np.allclose(split[:, -3:].sum(axis=1), 1.0, atol=1e-5)  # action shares
    assert info["strongest_baseline"] in ("pca_kmeans", "global_profile")
    assert info["baseline_pca_kmeans_k"] in range(3, 11)
    assert data.holdout["pred_pca_kmeans"].shape == data.holdout["features"].shape


def test_training_is_deterministic_for_a_seed(data):
    task = BehaviorTask()
    weights = []
    for _ in range(2):
        model = task.train(task.default_params(), data, choose_device("cpu"), 2, seed=5).model
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_too_few_users_are_skipped_with_the_minimum():
    small = _warehouse(synthetic.config_for("tiny", seed=42))  # 60 users
    with pytest.raises(
        InsufficientData,
        match=rf"needs at least {MIN_TRAIN_USERS} users with "
        rf">= {MIN_FIT_INTERACTIONS} interactions.*; has \d+, \d+ and \d+",
    ):
        BehaviorTask().load(small)
    small.close()


def test_without_truth_the_model_trains_and_gates(warehouse):
    warehouse.execute("BEGIN TRANSACTION")
    try:
        warehouse.execute("DROP SCHEMA truth CASCADE")
        data = BehaviorTask().load(warehouse)
    finally:
        warehouse.execute("ROLLBACK")
    assert "persona" not in data.train and "personas" not in data.info
    task = BehaviorTask()
    params = {**task.default_params(), "hidden": [64, 32, 16]}
    model = task.train(params, data, choose_device("cpu"), 3, seed=0).model
    metrics = task.evaluate(model, data)
    baseline = task.baseline(data)
    assert "ari_personas" not in metrics
    assert metrics["profile_error"] > 0 and 0 <= metrics["stability_ari"] <= 1
    assert metrics["margin_profile_error_vs_global_profile"] == pytest.approx(
        baseline["baseline_global_profile_profile_error"] - metrics["profile_error"]
    )
    gates = task.gates(metrics, baseline)
    assert [g.name for g in gates] == [
        "profile_error_vs_pca_kmeans",
        "profile_error_vs_global_profile",
        "stability_ari",
    ]
    for gate in gates[:2]:
        assert gate.against_baseline and gate.passed == (gate.lo >= 0)


def test_one_segment_for_everyone_loses_to_pca_kmeans(data):
    task = BehaviorTask()
    params = {**task.default_params(), "hidden": [64, 32, 16]}
    model = task.train(params, data, choose_device("cpu"), 2, seed=0).model
    model.set_centroids(np.zeros((1, model.latent_dim)))  # every user in one segment
    metrics = task.evaluate(model, data)
    gates = {g.name: g for g in task.gates(metrics, task.baseline(data))}
    # one segment predicts the global profile exactly
    assert metrics["margin_profile_error_vs_global_profile"] == pytest.approx(0.0, abs=1e-12)
    assert not gates["profile_error_vs_pca_kmeans"].passed
    assert not gates["stability_ari"].passed  # k = 1: stability is undefined


def test_train_and_register_end_to_end(data, tmp_path):
    task = BehaviorTask()
    stores = {
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "artifact_root": str(tmp_path / "artifacts"),
        "optuna_uri": f"sqlite:///{tmp_path / 'optuna.db'}",
    }
    report = train_and_register(
        task, data=data, choice=choose_device("cpu"), profile=PROFILES["tiny"], seed=3, **stores
    )
    assert report.status == "registered" and report.version == "1"
    assert {g.name for g in report.gates} == {
        "profile_error_vs_pca_kmeans",
        "profile_error_vs_global_profile",
        "stability_ari",
    }
    assert report.metrics["profile_error"] > 0 and report.metrics["k"] >= 3
    assert -1.0 <= report.metrics["ari_personas"] <= 1.0  # truth exists: reported only
    assert np.isfinite(report.baseline["baseline_pca_kmeans_profile_error"])
    client = MlflowClient(stores["tracking_uri"])
    assert str(version_by_alias(client, task.registered_model, "challenger").version) == "1"
    loaded = mlflow.pytorch.load_model(f"models:/{task.registered_model}/1", map_location="cpu")
    assert task.evaluate(loaded, data)["profile_error"] == pytest.approx(report.metrics["profile_error"])
    assert loaded.n_segments == report.metrics["k"]
