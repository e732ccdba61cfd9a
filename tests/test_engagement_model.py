"""Engagement model: shapes, causality, feature builders, the baselines (channel-growth
rule and Szabo–Huberman) by hand and tuned on validation only, per-bucket gates with
bootstrap intervals, deterministic training and the whole lifecycle on a tiny warehouse."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from nn_models.baselines_engagement import (
    BUCKETS,
    GridPosts,
    LogLinear,
    fit_baselines,
    prior_growth,
    shrunk_growth,
)
from nn_models.device import choose_device
from nn_models.models.engagement import (
    RULE,
    SEQUENCE_FEATURES,
    STATIC_FEATURES,
    VIEWS,
    EngagementPredictor,
)
from nn_models.pipeline import train_and_register
from nn_models.registry import version_by_alias
from nn_models.task import PROFILES, InsufficientData
from nn_models.tasks.engagement import (
    CHANNEL_CURVE_SQL,
    CURVE_COLUMNS,
    GRID_MINUTES,
    LENGTHS,
    MIN_POSTS,
    STEP_BUCKET,
    EngagementTask,
    channel_curve_at,
    engagement_loss,
    prior_percentile,
    static_features,
    step_weights,
    trajectory_counters,
    with_channel_curves,
)
from tests.test_training import no_library_warnings
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
    assert LENGTHS == {1: 4, 3: 12, 6: 15, 12: 21, 24: 33}
    assert GRID_MINUTES[-1] == 42 * 60  # everything seen before the 48 h value


def test_forward_shapes_and_ordered_quantiles_above_observed_views():
    model = _small_model()
    sequence, length, static = _inputs()
    with torch.no_grad():
        score, views, interactions = model(sequence=sequence, length=length, static=static)
    assert score.shape == (5,) and views.shape == (5, 3) and interactions.shape == (5, 3)
    assert torch.all((score > 0) & (score < 1))
    assert torch.all(views[:, 0] <= views[:, 1]) and torch.all(views[:, 1] <= views[:, 2])
    observed = sequence[torch.arange(5), length - 1, VIEWS]
    assert torch.all(views[:, 0] >= observed)  # cumulative counters never fall


def test_prediction_at_an_age_ignores_everything_after_it():
    model = _small_model()
    sequence, _, static = _inputs()
    length = torch.full((5,), LENGTHS[3])
    scrambled = sequence.clone()
    scrambled[:, LENGTHS[3] :] = torch.randn_like(scrambled[:, LENGTHS[3] :]) * 100
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
    trajectories = pd.DataFrame(
        {
            "channel_id": [1, 1, 1, 1, 2],
            "post_id": [10, 10, 10, 11, 10],
            "age_minutes": [15, 30, 45, 15, 15],
            "views": [5.0, np.nan, 9.0, 3.0, 99.0],  # post 10 has no snapshot by 30 min
            "forwards": [0.0, np.nan, 1.0, 0.0, 0.0],
            "replies": [0.0, np.nan, 0.0, 0.0, 0.0],
            "reactions": [1.0, np.nan, 2.0, 0.0, 0.0],
        }
    )
    counters, reached = trajectory_counters(posts, trajectories)
    assert reached.tolist() == [3, 1]
    assert counters[0, :3, 0].tolist() == [5.0, 5.0, 9.0]  # 30 min repeats 15 min
    assert np.isnan(counters[0, 3:, 0]).all() and np.isnan(counters[1, 1:, 0]).all()


def test_prior_percentile_ranks_against_posts_known_at_publication():
    posts = pd.DataFrame(
        {
            "channel_id": [7, 7, 7, 7, 8],
            "published_at": [
                T("2026-01-01"),
                T("2026-01-04"),
                T("2026-01-05"),
                T("2026-01-08"),
                T("2026-01-08"),
            ],
            "views_48h": [100.0, 300.0, 200.0, 300.0, 5.0],
        }
    )
    percentile, count = prior_percentile(posts)
    # post 2 (01-04) knows post 1; post 3 (01-05) knows post 1 only (post 2 is < 48 h old);
    # post 4 (01-08) knows 100, 300, 200: below 2, equal 1 -> (2 + 0.5) / 3
    assert np.isnan(percentile[0]) and count[0] == 0
    assert percentile[1] == 1.0 and count[1] == 1
    assert percentile[2] == 1.0 and count[2] == 1
    assert percentile[3] == pytest.approx(2.5 / 3) and count[3] == 3
    assert np.isnan(percentile[4])  # another channel, nothing before


def test_channel_growth_priors_use_only_earlier_posts(warehouse):
    curves = warehouse.execute(
        "SELECT p.channel_id, p.post_id, p.published_at, p.hour, c.* EXCLUDE (channel_id, post_id)"
        f" FROM features.post_features p JOIN ({CHANNEL_CURVE_SQL}) c USING (channel_id, post_id)"
        " ORDER BY p.channel_id, p.published_at"
    ).df()
    first = curves.groupby("channel_id").head(3)
    assert first[list(CURVE_COLUMNS)].isna().all().all()  # nothing known yet
    late = curves.groupby("channel_id").tail(1)
    assert late["channel_growth_1h_48h"].notna().all()
    # early views grow more by 48 h from 1 h than from 12 h
    assert (late["channel_growth_1h_48h"] > late["channel_growth_12h_48h"]).all()
    for _, row in late.iterrows():  # the single-post query agrees with the window query
        at = channel_curve_at(warehouse, row.channel_id, row.published_at, row.hour)
        np.testing.assert_allclose(
            [at[c] for c in CURVE_COLUMNS], row[list(CURVE_COLUMNS)].astype(float), rtol=1e-9
        )
        # a value by hand: mean growth from 3 h of the channel's posts >= 48 h 5 min older
        by_hand = warehouse.execute(
            "SELECT avg(ln(1 + views_48h) - ln(1 + views_3h)) FROM features.post_features "
            "WHERE channel_id = ? AND published_at <= ? - INTERVAL '48 hours 5 minutes'",
            [int(row.channel_id), row.published_at],
        ).fetchall()[0][0]
        assert at["channel_growth_3h_48h"] == pytest.approx(by_hand)
    with pytest.raises(KeyError, match="CHANNEL_CURVE_SQL"):
        static_features(curves.drop(columns=list(CURVE_COLUMNS)))
    # the helper for scoring: published posts from the window query, drafts as of "now"
    posts = late[["channel_id", "post_id", "published_at", "hour"]].copy()
    draft = posts.iloc[:1].assign(post_id=-1, published_at=pd.Timestamp("2030-01-01"))
    added = with_channel_curves(warehouse, pd.concat([draft, posts], ignore_index=True))
    assert added["post_id"].tolist() == [-1, *posts["post_id"].tolist()]
    np.testing.assert_allclose(
        added.iloc[1:][list(CURVE_COLUMNS)].to_numpy(float), late[list(CURVE_COLUMNS)].to_numpy(float)
    )
    expected = channel_curve_at(warehouse, draft.channel_id.iloc[0], "2030-01-01", draft.hour.iloc[0])
    assert added.iloc[0]["channel_growth_3h_48h"] == pytest.approx(expected["channel_growth_3h_48h"])


def _grid(channel, published_h, views, v48, median=np.nan) -> GridPosts:
    views = np.asarray(views, float)
    n = len(views)
    return GridPosts(
        channel_id=np.asarray(channel, np.int64),
        published_s=(np.asarray(published_h, float) * 3600).astype(np.int64),
        log_views=np.log1p(views),
        log_interactions=np.log1p(views / 10),
        log_median=np.log1p(np.full(n, median, float)),
        log_views_48h=np.log1p(np.asarray(v48, float)),
        log_interactions_48h=np.log1p(np.asarray(v48, float) / 10),
    )


def test_channel_growth_rule_by_hand():
    # channel 1: two posts grew x4 and x2 from the single grid age to 48 h; channel 2: x8
    history = _grid([1, 1, 2], [0, 10, 0], [[99.0], [199.0], [9.0]], [399.0, 399.0, 79.0])
    target = _grid([1, 1, 3], [100, 55, 100], [[49.0], [49.0], [49.0]], [np.nan] * 3)
    sums = prior_growth(history, target)
    # post at 100 h knows both channel-1 posts; at 55 h only the first (>= 48 h 5 min older),
    # and of all channels' posts the two published at 0 h
    assert sums[1][:, 0].tolist() == [2, 1, 0] and sums[3][:, 0].tolist() == [3, 2, 3]
    g1, g2 = np.log(400 / 100), np.log(400 / 200)
    both = (g1 + g2) / 2
    everyone = (g1 + g2 + np.log(80 / 10)) / 3
    np.testing.assert_allclose(shrunk_growth(sums, 0.0)[:, 0], [both, g1, everyone])
    np.testing.assert_allclose(shrunk_growth(sums, 3.0)[0, 0], (2 * both + 3 * everyone) / 5)
    window = prior_growth(history, target, window=1)  # only the channel's last post
    assert shrunk_growth(window, 0.0)[0, 0] == pytest.approx(g2)


def test_szabo_huberman_lines_by_hand():
    x = np.log1p(np.array([10.0, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120]))
    y48 = np.expm1(1 + 0.9 * x)
    posts = _grid(
        np.r_[np.ones(10), [2, 2]],
        np.arange(12),
        np.r_[np.expm1(x), [100, 1000]][:, None],
        np.r_[y48, [300, 3000]],
    )
    sh = LogLinear().fit(posts)
    np.testing.assert_allclose(sh.channel_ab[1][0], [1.0, 0.9], atol=1e-9)
    np.testing.assert_allclose(sh.channel_ab[2][0], sh.global_ab[0])  # too few posts
    pred = sh.predict(posts, "channel")
    np.testing.assert_allclose(pred[:10, 0], 1 + 0.9 * x, atol=1e-9)


def test_baselines_are_tuned_on_validation_only(data):
    """Changing every holdout outcome changes no choice of rule, parameter or threshold."""
    baselines = data.baselines
    assert set(baselines.strongest) == set(BUCKETS)
    assert data.info["strongest_baseline"].count(":") == len(BUCKETS)
    n = len(baselines.history)
    train = np.flatnonzero(baselines.history.published_s < np.quantile(baselines.history.published_s, 0.7))
    val = np.setdiff1d(
        np.flatnonzero(baselines.history.published_s < np.quantile(baselines.history.published_s, 0.85)),
        train,
    )
    holdout = np.setdiff1d(np.arange(n), np.r_[train, val])
    above = baselines.history.above.copy()
    a = fit_baselines(baselines.history, above, GRID_MINUTES, train, val, np.r_[train, val])
    flipped = above.copy()
    flipped[holdout] = 1 - flipped[holdout]
    b = fit_baselines(baselines.history, flipped, GRID_MINUTES, train, val, np.r_[train, val])
    assert a.strongest == b.strongest
    for rule in a.fits:
        for bucket in BUCKETS:
            assert a.fits[rule][bucket].params == b.fits[rule][bucket].params
            assert 0.5 <= a.fits[rule][bucket].val_accuracy <= 1.0


def test_holdout_is_scored_at_every_observed_age(data):
    h = data.holdout
    scored = h["scored"]
    assert scored.shape == (len(h["length"]), len(GRID_MINUTES))
    for i, bucket in enumerate(BUCKETS):
        assert data.info[f"holdout_examples_{bucket}"] == int(scored[:, STEP_BUCKET == i].sum())
        assert data.info[f"holdout_examples_{bucket}"] > len(h["length"])  # several ages/post
    # the baseline reads each age's own as-of views: later ages, later (larger) counts
    lv = h["baseline_log_views"]
    assert np.nanmean(lv[:, LENGTHS[24] - 1] - h["grid_log_views"][:, LENGTHS[24] - 1]) < np.nanmean(
        lv[:, LENGTHS[1] - 1] - h["grid_log_views"][:, LENGTHS[1] - 1]
    )


def test_step_weights_give_every_age_bucket_the_same_weight():
    w = step_weights().numpy()
    assert w.shape == (len(GRID_MINUTES),)
    for i in range(len(BUCKETS)):
        assert w[STEP_BUCKET == i].sum() == pytest.approx(1.0)


def test_loss_cut_at_the_longest_trajectory_equals_the_full_grid_loss(data):
    """The loss skips the steps after a batch's longest trajectory (speed); the LSTM is causal
    and those steps weigh 0, so it is the loss over the full padded grid, computed by hand."""
    from nn_models.tasks.engagement import _pinball, _weighted_mean

    torch.manual_seed(0)
    model = EngagementTask().build({**EngagementTask().default_params(), "hidden": 16}).eval()
    keys = ("sequence", "length", "static", "score_target", "score_weight", "log_views_48h")
    keys += ("log_interactions_48h", "interactions_weight")
    batch = {k: torch.as_tensor(data.val[k][:32]) for k in keys}
    batch["length"] = torch.clamp(batch["length"], max=LENGTHS[6])  # young posts: a real cut
    batch["length"][0] = LENGTHS[3]
    with torch.no_grad():
        cut = engagement_loss(model, batch)
        score, views, inter = model.forward_steps(sequence=batch["sequence"], static=batch["static"])
    steps = torch.arange(len(GRID_MINUTES))[None, :]
    w = (steps < batch["length"].view(-1, 1)).float() * step_weights()
    bce = torch.nn.functional.binary_cross_entropy(
        score.clamp(1e-6, 1 - 1e-6), batch["score_target"].view(-1, 1).expand_as(score), reduction="none"
    )
    full = (
        _weighted_mean(bce, w * batch["score_weight"].view(-1, 1))
        + _weighted_mean(_pinball(views, batch["log_views_48h"]), w)
        + _weighted_mean(
            _pinball(inter, batch["log_interactions_48h"]), w * batch["interactions_weight"].view(-1, 1)
        )
    )
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-6)


def test_the_score_starts_from_the_rule_margin():
    """With the trunk's score output zeroed the score is sigmoid(rule_weight x margin)."""
    model = _small_model()
    torch.nn.init.zeros_(model.score_head.weight)
    torch.nn.init.zeros_(model.score_head.bias)
    sequence, length, static = _inputs()
    sequence[..., RULE] = torch.linspace(-1, 1, 5)[:, None]
    with torch.no_grad():
        score, _, _ = model(sequence=sequence, length=length, static=static)
    torch.testing.assert_close(score, torch.sigmoid(model.rule_weight * torch.linspace(-1, 1, 5)))


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
        assert {"sequence_mean", "sequence_std", "static_mean", "static_std"} <= set(
            result.model.state_dict()
        )
    assert torch.equal(weights[0], weights[1])
    batch = {
        k: torch.as_tensor(v[:8])
        for k, v in data.val.items()
        if k
        in (
            "sequence",
            "length",
            "static",
            "score_target",
            "score_weight",
            "log_views_48h",
            "log_interactions_48h",
            "interactions_weight",
        )
    }
    assert torch.isfinite(engagement_loss(result.model, batch))


def test_lifecycle_registers_a_challenger_with_gates(warehouse, tmp_path):
    torch.set_num_threads(1)
    # every library warning the console used to show (Optuna's deprecated MLflow callback and
    # experimental heartbeat, MLflow's pickle and input-example notices, ONNX's RNN batch) is gone
    with no_library_warnings() as found:
        report = train_and_register(
            EngagementTask(),
            warehouse,
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            artifact_root=str(tmp_path / "artifacts"),
            optuna_uri=f"sqlite:///{tmp_path / 'optuna.db'}",
            choice=choose_device("cpu", 1),
            profile=PROFILES["tiny"],
            seed=1,
        )
    assert found == []
    assert report.status == "registered", report.reason
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    challenger = version_by_alias(client, "channel_pulse_engagement", "challenger")
    assert str(challenger.version) == report.version
    assert {g.name for g in report.gates} == {
        f"accuracy_{b}_{kind}" for b in BUCKETS for kind in ("min", "vs_baseline")
    }
    for bucket in BUCKETS:
        acc = report.metrics[f"accuracy_{bucket}"]
        card = next(g for g in report.gates if g.name == f"accuracy_{bucket}_min")
        assert card.passed == (acc >= 0.80)
        beats = next(g for g in report.gates if g.name == f"accuracy_{bucket}_vs_baseline")
        # model - strongest baseline on the same holdout examples, with its bootstrap interval
        assert beats.value == pytest.approx(acc - report.baseline[f"baseline_accuracy_{bucket}"])
        assert beats.lo <= beats.value <= beats.hi and beats.passed == (beats.lo >= 0)
        assert beats.lo == report.metrics[f"margin_accuracy_{bucket}_lo"]
        assert "bootstrap" in beats.description
        for rule in ("channel_growth", "szabo_huberman"):
            assert 0.0 <= report.baseline[f"baseline_{rule}_accuracy_{bucket}"] <= 1.0
    for hours in (1, 3, 6, 12, 24):
        assert 0.0 <= report.metrics[f"accuracy_{hours}h"] <= 1.0
        assert 0.0 <= report.baseline[f"baseline_accuracy_{hours}h"] <= 1.0
    tags = client.get_model_version("channel_pulse_engagement", report.version).tags
    assert tags["onnx_parity"] == "passed", tags.get("onnx_reason")


def test_too_little_history_is_insufficient_data():
    conn = _warehouse(synthetic.config_for("tiny", seed=42))
    # keep only the first five days of posts: no holdout worth scoring
    conn.execute(
        "DELETE FROM raw.posts WHERE published_at > "
        "(SELECT min(published_at) + INTERVAL 5 DAY FROM raw.posts)"
    )
    features.build_feature_table(conn, "post_features")
    with pytest.raises(
        InsufficientData,
        match=f"needs at least {MIN_POSTS['holdout']} holdout"
        r"|needs at least \d+ posts with known 48 h views",
    ):
        EngagementTask().load(conn)
    conn.close()
