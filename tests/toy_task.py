"""A tiny regression task for testing the shared pipeline without real models."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nn_models.task import Gate, ModelTask, PreparedData
from nn_models.training import TrainConfig, fit


class ToyRegressor(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def toy_data(n: int = 300, shuffle_labels: bool = False, seed: int = 0) -> PreparedData:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    y = (2 * x[:, 0] + rng.normal(0, 0.1, n)).astype(np.float32)
    if shuffle_labels:
        y[: int(n * 0.7)] = rng.permutation(y[: int(n * 0.7)])  # training part only
    cut1, cut2 = int(n * 0.6), int(n * 0.7)
    split = lambda a, b: {"x": x[a:b], "y": y[a:b]}  # noqa: E731
    return PreparedData(split(0, cut1), split(cut1, cut2), split(cut2, n), {"rows": n})


def _loss(model, batch):
    return nn.functional.mse_loss(model(x=batch["x"]), batch["y"])


class ToyTask(ModelTask):
    name = "toy"
    registered_model = "toy_model"
    primary_metric = "r2"

    def __init__(self, data: PreparedData) -> None:
        self.data = data

    def load(self, conn) -> PreparedData:
        return self.data

    def suggest(self, trial):
        return {"hidden": trial.suggest_int("hidden", 4, 16), "lr": 1e-2}

    def default_params(self):
        return {"hidden": 8, "lr": 1e-2}

    def train(self, params, data, choice, max_epochs, seed, on_epoch=None):
        torch.manual_seed(seed)
        model = ToyRegressor(params["hidden"])
        cfg = TrainConfig(max_epochs=max_epochs, lr=params["lr"], batch_size=32, seed=seed)
        return fit(
            model,
            {"x": data.train["x"], "y": data.train["y"]},
            {"x": data.val["x"], "y": data.val["y"]},
            _loss,
            cfg,
            choice,
            on_epoch,
        )

    def evaluate(self, model, data):
        with torch.no_grad():
            pred = model(x=torch.as_tensor(data.holdout["x"])).numpy()
        y = data.holdout["y"]
        return {"r2": float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())}

    def baseline(self, data):
        return {"baseline_r2": 0.0}  # the training mean predicts R² ≈ 0 by construction

    def gates(self, metrics, baseline):
        return [
            Gate("r2_min", metrics["r2"] >= 0.5, metrics["r2"], 0.5, "R² ≥ 0.5"),
            Gate(
                "r2_vs_baseline",
                metrics["r2"] >= baseline["baseline_r2"],
                metrics["r2"],
                baseline["baseline_r2"],
                "R² ≥ baseline",
                kind="baseline",
            ),
        ]

    def input_example(self, data):
        return {"x": data.holdout["x"][:3]}


def run_toy(task, stores: dict, seed: int = 1):
    """``train_and_register`` of a toy task on CPU, tiny profile, into ``stores``."""
    from nn_models.device import choose_device
    from nn_models.pipeline import train_and_register
    from nn_models.task import PROFILES

    return train_and_register(
        task, data=task.data, choice=choose_device("cpu"), profile=PROFILES["tiny"], seed=seed, **stores
    )
