"""Engagement model: shapes, causality, feature builders, the Szabo–Huberman baseline by
hand, deterministic training and the whole lifecycle on a tiny warehouse."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from nn_models.baselines_engagement import LogLinearExtrapolation
from nn_models.device import choose_device
from nn_models.models.engagement import SEQUENCE_FEATURES, STATIC_FEATURES, VIEWS, EngagementPredictor
from nn_models.pipeline import train_and_register
from nn_models.registry import version_by_alias
from nn_models.task import PROFILES, InsufficientData
from nn_models.tasks.engagement import (
    CHANNEL_CURVE_SQL,
    CURVE_COLUMNS,
    GRID_MINUTES,
    LENGTHS,
    EngagementTask,
    channel_curve_at,
    engagement_loss,
    prior_percentile,
    static_features,
    step_weights,
    trajectory_counters,
    with_channel_curves,
)
from warehouse import features, synthetic
from warehouse.features import TRAJECTORY_GRID_MINUTES
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame

T = pd.Timestamp


def _warehouse(config) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    ensure_schema(conn)
    world = synthetic.generate(config)
    for name in ("raw.channels", "raw.posts", "raw.post_snapshots", "raw.channel_daily"):
        upsert_frame(conn, name, world.tables()[name])
    for name in ("post_trajectories", "post_features"):
        features.build_feature_table(conn, name)
    return conn


@pytest.fixture(scope="module")
def warehouse():
    conn = _warehouse(synthetic.config_for("tiny", seed=42))
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def data(warehouse):
    return EngagementTask().load(warehouse)


def _small_model(seed: int = 0) -> EngagementPredictor:
    torch.manual_seed(seed)
    return EngagementPredictor(hidden=16, dense=16, dense2=8).eval()


def _inputs(n: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    steps = len(GRID_MINUTES)
    views = np.cumsum(rng.uniform(0, 50, (n, steps)), axis=1)
    sequence = np.zeros((n, steps, len(SEQUENCE_FEATURES)), np.float32)
    sequence[..., VIEWS] = np.log1p(views)
    sequence[..., 1:] += rng.normal(0, 1, (n, steps, len(SEQUENCE_FEATURES) - 1))
    length = rng.integers(1, steps + 1, n)
    static = rng.normal(0, 1, (n, len(STATIC_FEATURES))).astype(np.float32)
    return torch.as_tensor(sequence), torch.as_tensor(length), torch.as_tensor(static)


def test_grid_matches_the_feature_table():
    assert tuple(GRID_MINUTES) == TRAJECTORY_GRID_MINUTES
    assert LENGTHS == {1: 4, 3: 12, 6: 15, 12: 21}


def test_forward_shapes_and_ordered_quantiles_above_observed_views():
    model = _small_model()
    sequence, length, static = _inputs()
    with torch.no_grad():
        score, views, interactions = model(sequence=sequence, length=length, static=static)
    assert score.shape == (5,) and views.shape == (5, 3) and interactions.shape == (5, 3)
    assert torch.all((score > 0) & (score < 1))
    assert torch.all(views[:, 0] <= views[:, 1]) and torch.all(views[:, 1] <= views[:, 2])
    observed = sequence[torch.arange(5), length - 1, VIEWS]
    assert torch.all(views[:, 0] >= observed)   # cumulative counters never fall


def test_prediction_at_an_age_ignores_everything_after_it():
    model = _small_model()
    sequence, _, static = _inputs()
    length = torch.full((5,), LENGTHS[3])
    scrambled = sequence.clone()
    scrambled[:, LENGTHS[3]:] = torch.randn_like(scrambled[:, LENGTHS[3]:]) * 100
    truncated = sequence[:, : LENGTHS[3]].contiguous()
    with torch.no_grad():
        a = model(sequence=sequence, length=length, static=static)
        b = model(sequence=scrambled, length=length, static=static)
        c = model(sequence=truncated, length=length, static=static)
        steps = model.forward_steps(sequence=sequence, static=static)
    for x, y, z, s in zip(a, b, c, steps, strict=True):
        torch.testing.assert_close(x, y)
        torch.testing.assert_close(x, z)
        torch.testing.assert_close(x, s[:, LENGTHS[3] - 1])


def test_trajectory_counters_forward_fill_gaps_and_count_reached_points():
    posts = pd.DataFrame({"channel_id": [1, 1], "post_id": [10, 11]})
    trajectories = pd.DataFrame({
        "channel_id": [1, 1, 1, 1, 2],
        "post_id": [10, 10, 10, 11, 10],
        "age_minutes": [15, 30, 45, 15, 15],
        "views": [5.0, np.nan, 9.0, 3.0, 99.0],   # post 10 has no snapshot by 30 min
        "forwards": [0.0, np.nan, 1.0, 0.0, 0.0],
        "replies": [0.0, np.nan, 0.0, 0.0, 0.0],
        "reactions": [1.0, np.nan, 2.0, 0.0, 0.0],
    })
    counters, reached = trajectory_counters(posts, trajectories)
    assert reached.tolist() == [3, 1]
    assert counters[0, :3, 0].tolist() == [5.0, 5.0, 9.0]       # 30 min repeats 15 min
    assert np.isnan(counters[0, 3:, 0]).all() and np.isnan(counters[1, 1:, 0]).all()


def test_prior_percentile_ranks_against_posts_known_at_publication():
    posts = pd.DataFrame({
        "channel_id": [7, 7, 7, 7, 8],
        "published_at": [T("2026-01-01"), T("2026-01-04"), T("2026-01-05"),
                         T("2026-01-08"), T("2026-01-08")],
        "views_48h": [100.0, 300.0, 200.0, 300.0, 5.0],
    })
    percentile, count = prior_percentile(posts)
    # post 2 (01-04) knows post 1; post 3 (01-05) knows post 1 only (post 2 is < 48 h old);
    # post 4 (01-08) knows 100, 300, 200: below 2, equal 1 -> (2 + 0.5) / 3
    assert np.isnan(percentile[0]) and count[0] == 0
    assert percentile[1] == 1.0 and count[1] == 1
    assert percentile[2] == 1.0 and count[2] == 1
    assert percentile[3] == pytest.approx(2.5 / 3) and count[3] == 3
    assert np.isnan(percentile[4])                     # another channel, nothing before


def test_channel_growth_priors_use_only_earlier_posts(warehouse):
    curves = warehouse.execute(
        "SELECT p.channel_id, p.post_id, p.published_at, p.hour, c.* EXCLUDE (channel_id, post_id)"
        f" FROM features.post_features p JOIN ({CHANNEL_CURVE_SQL}) c USING (channel_id, post_id)"
        " ORDER BY p.channel_id, p.published_at").df()
    first = curves.groupby("channel_id").head(3)
    assert first[list(CURVE_COLUMNS)].isna().all().all()      # nothing known yet
    late = curves.groupby("channel_id").tail(1)
    assert late["channel_growth_1h_48h"].notna().all()
    # early views grow more by 48 h from 1 h than from 12 h
    assert (late["channel_growth_1h_48h"] > late["channel_growth_12h_48h"]).all()
    for _, row in late.iterrows():   # the single-post query agrees with the window query
        at = channel_curve_at(warehouse, row.channel_id, row.published_at, row.hour)
        np.testing.assert_allclose([at[c] for c in CURVE_COLUMNS],
                                   row[list(CURVE_COLUMNS)].astype(float), rtol=1e-9)
        # a value by hand: mean growth from 3 h of the channel's posts >= 48 h 5 min older
        by_hand = warehouse.execute(
            "SELECT avg(ln(1 + views_48h) - ln(1 + views_3h)) FROM features.post_features "
            "WHERE channel_id = ? AND published_at <= ? - INTERVAL '48 hours 5 minutes'",
            [int(row.channel_id), row.published_at]).fetchall()[0][0]
        assert at["channel_growth_3h_48h"] == pytest.approx(by_hand)
    with pytest.raises(KeyError, match="CHANNEL_CURVE_SQL"):
        static_features(curves.drop(columns=list(CURVE_COLUMNS)))
    # the helper for scoring: published posts from the window query, drafts as of "now"
    posts = late[["channel_id", "post_id", "published_at", "hour"]].copy()
    draft = posts.iloc[:1].assign(post_id=-1, published_at=pd.Timestamp("2030-01-01"))
    added = with_channel_curves(warehouse, pd.concat([draft, posts], ignore_index=True))
    assert added["post_id"].tolist() == [-1, *posts["post_id"].tolist()]
    np.testing.assert_allclose(added.iloc[1:][list(CURVE_COLUMNS)].to_numpy(float),
                               late[list(CURVE_COLUMNS)].to_numpy(float))
    expected = channel_curve_at(warehouse, draft.channel_id.iloc[0], "2030-01-01",
                                draft.hour.iloc[0])
    assert added.iloc[0]["channel_growth_3h_48h"] == pytest.approx(
        expected["channel_growth_3h_48h"])


def test_log_linear_baseline_by_hand():
    # channel 1: log1p(v48) = 1 + 1 * log1p(v3) exactly; channel 2: too few posts -> global
    v3 = np.array([10.0, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120])
    v48 = np.expm1(1 + np.log1p(v3))
    model = LogLinearExtrapolation().fit(
        np.r_[np.ones(10), [2, 2]], np.r_[v3, [100, 1000]], np.r_[v48, [300, 3000]])
    assert model.per_channel[1].coef_[0] == pytest.approx(1.0)
    assert model.per_channel[1].intercept_ == pytest.approx(1.0)
    assert 2 not in model.per_channel
    predicted = model.predict_views(np.array([1, 2]), np.array([50.0, 100.0]))
    assert predicted[0] == pytest.approx(np.expm1(1 + np.log1p(50.0)))
    glob = model.global_model
    expected = np.expm1(glob.intercept_ + glob.coef_[0] * np.log1p(100.0))
    assert predicted[1] == pytest.approx(expected)
    # decision vs the channel's training median of 48 h views
    median1 = np.median(v48)
    assert model.medians[1] == pytest.approx(median1)
    v3_at_median = np.expm1(np.log1p(median1) - 1)
    above = model.above_median(np.array([1, 1, 1]), np.array([v3_at_median * 1.1,
                                                              v3_at_median * 0.9, np.nan]))
    assert above.tolist() == [True, False, False]


def test_step_weights_put_full_weight_on_the_card_ages():
    w = step_weights()
    assert w.shape == (len(GRID_MINUTES),)
    assert [i for i, x in enumerate(w.tolist()) if x == 1.0] == [3, 11, 14, 20]


def test_load_splits_by_time_with_finite_inputs(data):
    last_train = data.train["published_at"].max()
    assert last_train < data.val["published_at"].min()
    assert data.val["published_at"].max() < data.holdout["published_at"].min()
    assert data.holdout["sequence"].shape[1:] == (len(GRID_MINUTES), len(SEQUENCE_FEATURES))
    assert np.isfinite(data.train["sequence"]).all() and np.isfinite(data.train["static"]).all()


def test_training_is_deterministic_for_a_seed(data):
    task = EngagementTask()
    params = {**task.default_params(), "hidden": 16, "dense": 16, "dense2": 8}
    weights = []
    for _ in range(2):
        result = task.train(params, data, choose_device("cpu", 1), max_epochs=2, seed=3)
        weights.append(torch.cat([p.detach().flatten() for p in result.model.parameters()]))
        assert torch.all(result.model.sequence_std > 0)
        # normalisation travels with the weights (a registry-loaded model needs no task)
        assert {"sequence_mean", "sequence_std", "static_mean", "static_std"} \
            <= set(result.model.state_dict())
    assert torch.equal(weights[0], weights[1])
    batch = {k: torch.as_tensor(v[:8]) for k, v in data.val.items()
             if k in ("sequence", "length", "static", "score_target", "score_weight",
                      "log_views_48h", "log_interactions_48h", "interactions_weight")}
    assert torch.isfinite(engagement_loss(result.model, batch))


def test_lifecycle_registers_a_challenger_with_gates(warehouse, tmp_path):
    torch.set_num_threads(1)
    report = train_and_register(
        EngagementTask(), warehouse,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=str(tmp_path / "artifacts"),
        optuna_uri=f"sqlite:///{tmp_path / 'optuna.db'}",
        choice=choose_device("cpu", 1), profile=PROFILES["tiny"], seed=1,
    )
    assert report.status == "registered", report.reason
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    challenger = version_by_alias(client, "channel_pulse_engagement", "challenger")
    assert str(challenger.version) == report.version
    assert {g.name for g in report.gates} == {"accuracy_3h_min", "accuracy_3h_vs_baseline"}
    for hours in (1, 3, 6, 12):
        assert 0.0 <= report.metrics[f"accuracy_{hours}h"] <= 1.0
        assert 0.0 <= report.baseline[f"baseline_accuracy_{hours}h"] <= 1.0
    gate = next(g for g in report.gates if g.name == "accuracy_3h_min")
    assert gate.passed == (report.metrics["accuracy_3h"] >= 0.80)
    tags = client.get_model_version("channel_pulse_engagement", report.version).tags
    assert tags["onnx_parity"] == "passed", tags.get("onnx_reason")


def test_too_little_history_is_insufficient_data():
    conn = _warehouse(synthetic.config_for("tiny", seed=42))
    # keep only the first five days of posts: no holdout worth scoring
    conn.execute("DELETE FROM raw.posts WHERE published_at > "
                 "(SELECT min(published_at) + INTERVAL 5 DAY FROM raw.posts)")
    features.build_feature_table(conn, "post_features")
    with pytest.raises(InsufficientData, match="engagement"):
        EngagementTask().load(conn)
    conn.close()
