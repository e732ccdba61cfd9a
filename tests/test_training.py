"""The shared training loop and lifecycle: early stopping that stops, determinism per seed,
trials logged to MLflow without Optuna's deprecated callback, progress lines, the best
trial's fit reused only when a retrain would repeat it, and no third-party warnings."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import mlflow.models
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from nn_models.device import choose_device
from nn_models.onnx_export import check_parity, export_onnx
from nn_models.pipeline import train_and_register
from nn_models.task import Profile
from nn_models.training import TrainConfig, fit, improved
from tests.toy_task import ToyRegressor, ToyTask, _loss, toy_data

LIBRARY_LOGGERS = ("mlflow", "optuna", "torch", "alembic")


@contextlib.contextmanager
def no_library_warnings() -> Iterator[list[str]]:
    """Collect every Python warning and every WARNING+ record of the libraries' loggers
    (MLflow logs its pickle and input-example notices instead of warning) into the list."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                found.append(f"{record.name}: {record.getMessage()[:300]}")

    handler = Collect()
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
        for w in caught:
            # MLflow's SQLAlchemy store module warns once, when first imported (a
            # DeprecationWarning Python hides by default): not caused by training
            if w.category.__name__ == "SADeprecationWarning":
                continue
            found.append(f"{w.category.__name__}: {str(w.message)[:300]} ({w.filename}:{w.lineno})")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class _Dropout(nn.Module):
    """A model whose training draws random numbers (dropout) every step."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def test_relative_min_delta():
    assert improved(0.99, 1.0, 1e-3)
    assert not improved(0.9995, 1.0, 1e-3)  # 0.05 % is noise, not progress
    assert not improved(1.0, 1.0, 0.0)
    assert improved(5.0, float("inf"), 1e-3)
    assert improved(-1.01, -1.0, 1e-3) and not improved(-1.0005, -1.0, 1e-3)  # negative losses


def test_early_stopping_stops_on_a_plateau_and_keeps_the_best_weights():
    data = toy_data()
    torch.manual_seed(0)
    # lr 0: the validation loss never moves, so patience must end the fit
    cfg = TrainConfig(max_epochs=30, lr=0.0, batch_size=32, patience=3, seed=0)
    result = fit(ToyRegressor(8), data.train, data.val, _loss, cfg)
    assert result.stopped_early and result.epochs == 4 and result.best_epoch == 0

    torch.manual_seed(0)
    learning = fit(
        ToyRegressor(8), data.train, data.val, _loss, TrainConfig(max_epochs=40, lr=1e-2, patience=3, seed=0)
    )
    assert learning.best_val_loss == min(learning.val_losses)  # weights of the lowest loss
    assert learning.val_losses[-1] < learning.val_losses[0] / 2
    if learning.stopped_early:  # the last patience epochs gained < 0.1 % on the reference
        assert learning.epochs < 40


def test_training_is_deterministic_for_a_seed_and_depends_on_it():
    data = toy_data()
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        model = _Dropout()
        cfg = TrainConfig(max_epochs=4, batch_size=16, seed=seed)
        result = fit(model, data.train, data.val, _loss, cfg, choose_device("cpu", 1))
        runs.append((_weights(result.model), result.val_losses))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0])


def test_onnx_export_of_an_lstm_handles_the_batch_without_warnings(tmp_path):
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 8, num_layers=2, batch_first=True)
            self.head = nn.Linear(8, 1)

        def forward(self, sequence: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(sequence)
            return self.head(out[:, -1]).squeeze(-1)

    torch.manual_seed(0)
    model = Seq().eval()
    rng = np.random.default_rng(0)
    examples = [
        {"sequence": rng.normal(size=(n, t, 3)).astype(np.float32)} for n, t in ((4, 6), (1, 6), (7, 3))
    ]
    with no_library_warnings() as found:
        export_onnx(model, examples[0], tmp_path / "m.onnx")
    assert found == []
    parity = check_parity(model, tmp_path / "m.onnx", examples)
    assert parity.passed, parity.reason  # batches of 1, 4 and 7, two lengths


def _runs(tracking_uri: str, run_id: str):
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    return client, run, children


def test_lifecycle_logs_trials_to_mlflow_reports_progress_and_warns_nothing(stores):
    task = ToyTask(toy_data())
    lines: list[str] = []
    # 2-epoch trials: Optuna's median pruner (2 warm-up steps) cannot prune any of them
    profile = Profile("t", n_trials=3, max_epochs=2, final_epochs=5)
    with no_library_warnings() as found:
        report = train_and_register(
            task,
            data=task.data,
            choice=choose_device("cpu", 1),
            profile=profile,
            progress=lines.append,
            **stores,
        )
    assert found == []
    assert report.status == "registered"
    client, run, children = _runs(stores["tracking_uri"], report.run_id)
    # one nested run per trial with its params and val_loss (as Optuna's MLflowCallback did)
    assert sorted(int(c.data.tags["trial_number"]) for c in children) == [0, 1, 2]
    for child in children:
        assert child.data.tags["trial_state"] == "COMPLETE"
        assert "hidden" in child.data.params and np.isfinite(child.data.metrics["val_loss"])
        assert child.data.metrics["epochs"] == 2
    assert [line.split(" val_loss")[0] for line in lines[:3]] == [f"toy: trial {k}/3" for k in (1, 2, 3)]
    assert all("(2 epochs" in line for line in lines[:3])
    # the final fit had a larger budget, so it was retrained, with its epochs reported
    assert run.data.tags["final_fit"] == "retrained with the best params"
    assert any(line.startswith("toy: final fit 5 epochs") for line in lines)
    assert run.data.metrics["epochs_run"] == 5
    # logged with a signature (no input example) and loads back as the full module
    uri = f"models:/toy_model/{report.version}"
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None and info.signature.inputs.input_names() == ["x"]
    assert info.saved_input_example_info is None
    loaded = mlflow.pytorch.load_model(uri, map_location="cpu")
    with torch.no_grad():
        x = torch.as_tensor(task.data.holdout["x"])
        assert loaded(x=x).shape == (len(x),)
        assert isinstance(loaded, ToyRegressor)


def test_final_fit_reuses_the_best_trial_only_when_a_retrain_would_repeat_it(stores):
    task = ToyTask(toy_data())
    lines: list[str] = []
    profile = Profile("t", n_trials=2, max_epochs=4, final_epochs=4)
    report = train_and_register(
        task, data=task.data, choice=choose_device("cpu", 1), profile=profile, progress=lines.append, **stores
    )
    _, run, _ = _runs(stores["tracking_uri"], report.run_id)
    assert run.data.tags["final_fit"].startswith("trial ")
    assert any("final model = trial" in line for line in lines)
    # the reused fit is the model a retrain with the best params would produce, exactly
    retrained = task.train(report.best_params, task.data, choose_device("cpu", 1), 4, seed=42)
    assert report.metrics["r2"] == pytest.approx(task.evaluate(retrained.model, task.data)["r2"], abs=0)
