"""Growth model: shapes, scale-free inputs, the 48 h blind spot, baselines by hand and
their choice on validation only, splits that shrink with short histories, deterministic
training, split-conformal calibration, the bootstrap gate and the whole lifecycle."""

from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from nn_models import baselines_growth as B
from nn_models.baselines_growth import log_drift, seasonal_naive
from nn_models.device import choose_device
from nn_models.models.growth import NEEDS_48H, RAW_FEATURES, GrowthForecaster
from nn_models.pipeline import train_and_register
from nn_models.registry import version_by_alias
from nn_models.task import PROFILES, InsufficientData
from nn_models.tasks.growth import (
    HORIZON,
    MIN_TRAIN_DAYS,
    GrowthTask,
    channel_series,
    growth_loss,
    split_plan,
)
from tests.test_training import no_library_warnings
from warehouse import features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame

HISTORY = 28  # a short lookback keeps the test warehouse small
DAYS = 150  # long enough for the full 30-day holdout: (150 - 28) // 4 >= 30


def _warehouse(config) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    ensure_schema(conn)
    world = synthetic.generate(config)
    for name in ("raw.channels", "raw.posts", "raw.post_snapshots", "raw.channel_daily"):
        upsert_frame(conn, name, world.tables()[name])
    features.build_feature_table(conn, "channel_daily_features")
    return conn


@pytest.fixture(scope="module")
def warehouse():
    config = dataclasses.replace(synthetic.config_for("tiny", seed=42), n_days=DAYS)
    conn = _warehouse(config)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def data(warehouse):
    return GrowthTask(history_days=HISTORY).load(warehouse)


def _history(n: int = 4, days: int = HISTORY, seed: int = 0, growth: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, days, len(RAW_FEATURES)), np.float32)
    size = rng.uniform(1e3, 1e6, n)[:, None]
    out[..., 0] = size * np.exp(growth * np.arange(days) + rng.normal(0, 0.002, (n, days)))
    for i in range(1, len(RAW_FEATURES)):
        out[..., i] = rng.uniform(0, 5, (n, days))
    out[..., RAW_FEATURES.index("weekday")] = np.arange(days) % 7
    log_s = np.log(out[..., 0].astype(np.float64))
    out[..., RAW_FEATURES.index("history_drift")] = (log_s - log_s[:, :1]) / np.maximum(np.arange(days), 1)
    return out


def _model(seed: int = 0, **kwargs) -> GrowthForecaster:
    torch.manual_seed(seed)
    model = GrowthForecaster(history_days=HISTORY, hidden=16, dense=16, **kwargs)
    model.set_normalisation(torch.as_tensor(_history(32, seed=seed + 1)))
    return model.eval()


def test_forward_shapes_monotone_quantiles_in_log_subscribers():
    model = _model()
    history = torch.as_tensor(_history())
    with torch.no_grad():
        out = model(history=history)
    assert out.shape == (4, HORIZON, 3)
    assert torch.all(out[..., 0] <= out[..., 1]) and torch.all(out[..., 1] <= out[..., 2])
    # log subscribers: day 1 sits near the last observed count
    last = torch.log(history[:, -1, 0])
    assert torch.all((out[:, 0, 1] - last).abs() < 0.1)


def test_same_shape_at_any_size_gives_the_same_relative_forecast():
    model = _model()
    history = _history(1)
    bigger = history.copy()
    bigger[..., 0] *= 1000.0  # same channel, 1000x the audience
    for name in ("views_48h_sum", "forwards_48h_sum", "interactions_48h_sum"):
        bigger[..., RAW_FEATURES.index(name)] *= 1000.0
    with torch.no_grad():
        a = model(history=torch.as_tensor(history))
        b = model(history=torch.as_tensor(bigger))
    torch.testing.assert_close(b - np.log(1000.0), a, atol=1e-4, rtol=0)


def test_the_last_two_days_48h_statistics_are_not_read():
    model = _model()
    history = _history(2)
    changed = history.copy()
    subscribers = history[..., :1]
    for name in NEEDS_48H:
        changed[:, -2:, RAW_FEATURES.index(name)] += 0.05 * subscribers[:, -2:, 0]
    earlier = history.copy()
    earlier[:, -3, RAW_FEATURES.index("forwards_48h_sum")] += 0.05 * subscribers[:, -3, 0]
    with torch.no_grad():
        base = model(history=torch.as_tensor(history))
        same = model(history=torch.as_tensor(changed))
        other = model(history=torch.as_tensor(earlier))
    assert torch.equal(base, same)
    assert not torch.equal(base, other)
    derived = model.derive(torch.as_tensor(earlier)) - model.derive(torch.as_tensor(history))
    assert derived[:, -3].abs().sum() > 0.1


def test_scale_and_drift_by_hand():
    days = np.arange(HISTORY)
    history = np.zeros((1, HISTORY, len(RAW_FEATURES)), np.float32)
    history[0, :, 0] = 1000.0 * np.exp(0.01 * days)  # exactly 1 % a day
    log0, sigma = GrowthForecaster.scale(torch.as_tensor(history))
    assert float(log0) == pytest.approx(np.log(1000.0) + 0.01 * (HISTORY - 1), abs=1e-4)
    assert float(sigma) == pytest.approx(0.07, rel=1e-3)  # |7-day change| = 0.07
    drift, noise = GrowthForecaster.drift_and_noise(torch.as_tensor(history), sigma)
    assert float(drift) == pytest.approx(1 / 7, rel=1e-3) and float(noise) < 1e-3


def test_baselines_by_hand():
    series = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15.0])
    expected = [9, 10, 11, 12, 13, 14, 15, 9, 10, 11]
    assert seasonal_naive(series, 10).tolist() == expected
    np.testing.assert_allclose(B.point_forecasts("seasonal_naive", [series], 10)[0], expected)
    growing = 100.0 * np.exp(0.02 * np.arange(40))
    growing[:30] *= np.exp(0.01 * np.arange(30) - 0.3)  # slower growth before the last 10 days
    np.testing.assert_allclose(
        log_drift(growing, 3, lookback=7), growing[-1] * np.exp(0.02 * np.arange(1, 4)), rtol=1e-9
    )
    whole = (np.log(growing[-1]) - np.log(growing[0])) / 39
    np.testing.assert_allclose(log_drift(growing, 2), growing[-1] * np.exp(whole * np.arange(1, 3)))
    flat = np.full(40, 500.0)
    np.testing.assert_allclose(B.autoets([flat], 10)[0], 500.0, rtol=1e-6)


def _drifting(n: int, seed: int, days: int = 60) -> list[np.ndarray]:
    """Channels growing at a steady daily rate with noise: log-drift is the right rule."""
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.002, 0.02, n)[:, None]
    steps = rates + rng.normal(0, 0.004, (n, days))
    return list(1e4 * np.exp(np.cumsum(steps, axis=1)))


def test_baseline_choice_and_band_come_from_validation_windows():
    series = _drifting(12, seed=3)
    insamples, actuals = B.backtest_windows(series, 10, 4)
    assert len(insamples) == 48 and actuals.shape == (48, 10)
    assert all(len(s) == 50 - k for s in insamples[:4] for k in [50 - len(s)])
    np.testing.assert_array_equal(actuals[0], series[0][-10:])
    choice = B.choose(insamples, actuals)
    assert choice.name == "log_drift"  # steady growth: drift beats the others
    assert choice.val_mase["log_drift"] < choice.val_mase["seasonal_naive"]
    assert set(choice.val_mase) == set(B.BASELINES)
    # the band is measured: about 80 % of the validation points fall inside it
    q = np.stack([B.quantile_forecast(choice, [s], 10)[0] for s in insamples])
    assert np.all(q[..., 0] <= q[..., 1]) and np.all(q[..., 1] <= q[..., 2])
    inside = (actuals >= q[..., 0]) & (actuals <= q[..., 2])
    assert inside.mean() == pytest.approx(0.8, abs=0.05)
    # noisier channels get wider bands (scale from each channel's own history)
    wild = series[0] * np.exp(np.random.default_rng(0).normal(0, 0.05, len(series[0])))
    calm, noisy = B.quantile_forecast(choice, [series[0], wild], 10)
    assert (noisy[-1, 2] / noisy[-1, 0]) > (calm[-1, 2] / calm[-1, 0])


def test_split_plan_shrinks_with_the_history():
    assert split_plan(180) == (30, 14, 2)
    assert split_plan(90) == (15, 7, 1)
    assert split_plan(60) == (8, 4, 1)
    assert split_plan(MIN_TRAIN_DAYS)[0] == 7
    assert split_plan(MIN_TRAIN_DAYS - 1)[0] < 7


def test_channel_series_fills_gaps_without_inventing_posts():
    daily = pd.DataFrame(
        {
            "channel_id": [1, 1, 1],
            "day": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-04"]),
            **{c: [0.0, 0.0, 0.0] for c in RAW_FEATURES},
        }
    )
    daily["subscribers"] = [100.0, 110.0, 130.0]
    daily["posts"] = [1.0, 2.0, 3.0]
    frame = channel_series(daily)[1]
    assert frame["subscribers"].tolist() == [100.0, 110.0, 110.0, 130.0]
    assert frame["posts"].tolist() == [1.0, 2.0, 0.0, 3.0]
    assert frame["weekday"].tolist() == [3.0, 4.0, 5.0, 6.0]  # 2026-01-01 is a Thursday


def test_split_purges_and_keeps_the_holdout_out_of_training(data):
    assert data.train["history"].shape[1:] == (HISTORY, len(RAW_FEATURES))
    assert data.train["future"].shape[1] == HORIZON
    assert data.holdout["future"].shape[1] == HORIZON
    assert data.info["holdout_days"] == HORIZON and data.info["horizon_shrunk_by_days"] == 0
    n_channels = len(data.holdout["channel_id"])
    assert len(data.val["future"]) == n_channels * 7
    assert data.info["train_windows"] == len(data.train["future"])
    assert data.info["strongest_baseline"] in B.BASELINES
    for name in B.BASELINES:
        assert data.holdout[f"baseline_{name}"].shape == (n_channels, HORIZON, 3)


def test_training_is_deterministic_and_calibrates_the_band(data):
    task = GrowthTask(history_days=HISTORY)
    params = {**task.default_params(), "hidden": 16, "dense": 16}
    results = [task.train(params, data, choose_device("cpu", 1), max_epochs=2, seed=5) for _ in range(2)]
    weights = [torch.cat([p.detach().flatten() for p in r.model.parameters()]) for r in results]
    assert torch.equal(weights[0], weights[1])
    model = results[0].model
    assert float(model.interval_scale) > 0 and "split-conformal" in results[0].note
    assert {"feature_mean", "feature_std", "interval_scale"} <= set(model.state_dict())
    # after calibration the band covers 80 % of the validation points it was fitted on
    with torch.no_grad():
        q = np.exp(model(history=torch.as_tensor(data.val["history"])).numpy())
    inside = (data.val["future"] >= q[..., 0]) & (data.val["future"] <= q[..., 2])
    assert inside.mean() == pytest.approx(0.8, abs=0.03)
    batch = {k: torch.as_tensor(v[:4]) for k, v in data.train.items()}
    assert torch.isfinite(growth_loss(model, batch))


def test_lifecycle_registers_a_challenger_with_gates(warehouse, tmp_path):
    torch.set_num_threads(1)
    # every library warning the console used to show (Optuna's deprecated MLflow callback and
    # experimental heartbeat, MLflow's pickle and input-example notices, ONNX's RNN batch) is gone
    with no_library_warnings() as found:
        report = train_and_register(
            GrowthTask(history_days=HISTORY),
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
    challenger = version_by_alias(client, "channel_pulse_growth", "challenger")
    assert str(challenger.version) == report.version
    assert {g.name for g in report.gates} == {
        "mase_vs_strongest_baseline",
        "coverage_80_min",
        "coverage_80_max",
    }
    assert np.isfinite(report.metrics["mase"]) and 0 <= report.metrics["coverage_80"] <= 1
    for name in B.BASELINES:
        assert np.isfinite(report.baseline[f"baseline_{name}_mase"])
    strongest = report.data_info["strongest_baseline"]
    gate = next(g for g in report.gates if g.name == "mase_vs_strongest_baseline")
    diff = report.baseline[f"baseline_{strongest}_mase"] - report.metrics["mase"]
    assert gate.value == pytest.approx(diff)
    assert gate.lo <= gate.value <= gate.hi and "bootstrap" in gate.description
    assert gate.passed == (gate.lo >= 0)
    tags = client.get_model_version("channel_pulse_growth", report.version).tags
    assert tags["onnx_parity"] == "passed", tags.get("onnx_reason")


def test_a_30_day_warehouse_is_insufficient_data_with_the_minimum():
    conn = _warehouse(synthetic.config_for("tiny", seed=42))  # 30 days
    with pytest.raises(InsufficientData, match=f"needs at least {MIN_TRAIN_DAYS} days.*has 30"):
        GrowthTask().load(conn)
    conn.close()


def test_a_60_day_world_trains_on_a_shrunk_holdout_and_gates_with_the_bootstrap():
    config = dataclasses.replace(synthetic.config_for("tiny", seed=7), n_days=60)
    conn = _warehouse(config)
    task = GrowthTask()
    data = task.load(conn)
    assert data.info["holdout_days"] == 8 and data.info["horizon_shrunk_by_days"] == 22
    assert "shrunk by 22" in data.info["split_note"]
    assert data.holdout["future"].shape == (3, 8) and data.val["future"].shape[1] == 8
    # the baseline is chosen on validation only: changing the holdout days changes
    # nothing about the choice, but does change the holdout scores
    conn.execute("""
        UPDATE features.channel_daily_features SET subscribers = subscribers * 1.05
        WHERE day > (SELECT max(day) FROM features.channel_daily_features) - INTERVAL 8 DAY""")
    moved = task.load(conn)
    keys = [k for k in data.info if k.startswith(("baseline_val_", "strongest", "log_drift"))]
    assert {k: moved.info[k] for k in keys} == {k: data.info[k] for k in keys}
    assert task.baseline(moved) != task.baseline(data)
    conn.close()
    params = {**task.default_params(), "hidden": 16, "dense": 16}
    model = task.train(params, data, choose_device("cpu", 1), max_epochs=1, seed=0).model
    metrics = task.evaluate(model, data)
    name = data.info["strongest_baseline"]
    assert {f"margin_mase_vs_{name}", f"margin_mase_vs_{name}_lo", f"margin_mase_vs_{name}_hi"} <= set(
        metrics
    )
    gates = {g.name: g for g in task.gates(metrics, task.baseline(data))}
    gate = gates["mase_vs_strongest_baseline"]
    assert gate.lo < gate.hi and gate.passed == (gate.lo >= 0) and name in gate.description
