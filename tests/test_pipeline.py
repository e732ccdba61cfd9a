"""The shared lifecycle: tuning resumes, gates block, champions move only when earned."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from mlflow import MlflowClient

from nn_models import device as device_mod
from nn_models.device import choose_device
from nn_models.registry import version_by_alias
from nn_models.task import PROFILES
from nn_models.training import TrainConfig, fit
from nn_models.tuning import finished_trials, open_study, run_study
from tests.toy_task import ToyRegressor, ToyTask, _loss, run_toy, toy_data


def test_training_is_deterministic_for_a_seed():
    data = toy_data()
    weights = []
    for _ in range(2):
        torch.manual_seed(3)
        model = ToyRegressor(8)
        fit(model, data.train, data.val, _loss, TrainConfig(max_epochs=3, batch_size=16, seed=3))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_broken_model_fails_gate_and_champion_stays(stores):
    good = run_toy(ToyTask(toy_data()), stores)
    assert good.status == "registered" and good.gates_passed and good.promoted
    client = MlflowClient(stores["tracking_uri"])
    assert str(version_by_alias(client, "toy_model", "champion").version) == good.version

    broken = run_toy(ToyTask(toy_data(shuffle_labels=True)), stores)
    assert broken.status == "registered"
    assert not broken.gates_passed
    assert not broken.promoted and "gates failed" in broken.promotion_reason
    assert str(version_by_alias(client, "toy_model", "champion").version) == good.version
    assert str(version_by_alias(client, "toy_model", "challenger").version) == broken.version
    tags = client.get_model_version("toy_model", broken.version).tags
    assert tags["gates_passed"] == "False"


def test_better_model_is_promoted_and_worse_one_is_not(stores, monkeypatch):
    first = run_toy(ToyTask(toy_data()), stores)
    client = MlflowClient(stores["tracking_uri"])
    # a real model that passes every gate but is worse than the champion on the same
    # holdout: the champion's own training (same data and seed, so the same weights)
    # with every prediction shifted by 0.35 (R² drops by 0.35² / var(y) ≈ 0.09)
    weak = ToyTask(toy_data())

    def train_shifted(params, data, choice, max_epochs, seed, on_epoch=None):
        result = ToyTask.train(weak, params, data, choice, max_epochs, seed, on_epoch)
        with torch.no_grad():
            result.model.net[-1].bias.add_(0.35)
        return result

    weak.train = train_shifted
    weaker = run_toy(weak, stores, seed=1)
    assert weaker.gates_passed, weaker.gates
    assert weaker.metrics["r2"] < first.metrics["r2"] - 0.05, (weaker.metrics, first.metrics)
    assert not weaker.promoted
    assert f"champion v{first.version} stays" in weaker.promotion_reason
    # the champion was reloaded from the registry and scored on the same holdout
    assert weaker.champion_metric_on_holdout == pytest.approx(first.metrics["r2"], abs=1e-6)
    assert str(version_by_alias(client, "toy_model", "champion").version) == first.version
    # the champion is compared on the new holdout: make the champion look bad, then promote
    better = ToyTask(toy_data())
    evaluate = ToyTask.evaluate
    better.evaluate = lambda model, data: (
        {"r2": 0.55} if getattr(model, "_is_champion", True) else evaluate(better, model, data)
    )
    orig_train = ToyTask.train

    def train_marked(params, data, choice, max_epochs, seed, on_epoch=None):
        result = orig_train(better, params, data, choice, 12, seed, on_epoch)
        result.model._is_champion = False
        return result

    better.train = train_marked
    promoted = run_toy(better, stores, seed=7)
    assert promoted.promoted, promoted.promotion_reason
    assert promoted.champion_metric_on_holdout == pytest.approx(0.55)
    assert str(version_by_alias(client, "toy_model", "champion").version) == promoted.version


def test_interrupted_study_resumes_with_earlier_trials(tmp_path):
    """Ctrl-C inside a trial (in-process): finished trials count on resume. A real
    ``kill -9`` of a training subprocess is tests/test_faults.py's job."""
    uri = f"sqlite:///{tmp_path / 'optuna.db'}"
    calls = {"n": 0}

    def objective(trial):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("interrupted")
        return (trial.suggest_float("x", -1, 1) - 0.3) ** 2

    with pytest.raises(KeyboardInterrupt):
        run_study(objective, "resume-me", uri, n_trials=5, seed=0)
    assert finished_trials(open_study("resume-me", uri, seed=0)) == 2
    study = run_study(objective, "resume-me", uri, n_trials=5, seed=0)
    assert finished_trials(study) == 5
    assert calls["n"] == 3 + 3  # only the missing three trials ran again
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_cuda_present_but_failing_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def broken_ones(*args, **kwargs):
        if kwargs.get("device") == "cuda":
            raise RuntimeError("CUDA error: no kernel image is available")
        return torch.zeros(*args)

    monkeypatch.setattr(device_mod.torch, "ones", broken_ones)
    choice = choose_device("auto")
    assert choice.device == "cpu"
    assert "failed" in choice.reason
    assert choose_device("cuda").device == "cpu"


def test_profiles_are_ordered():
    assert PROFILES["tiny"].n_trials < PROFILES["demo"].n_trials < PROFILES["full"].n_trials == 50
    assert np.isfinite(PROFILES["demo"].max_epochs)
