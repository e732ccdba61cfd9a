"""The contract every model implements so one pipeline can tune, gate and register it.

A task knows its data (from the DuckDB feature tables, split by time), its
search space, how to train, how to score itself and its baseline on the holdout,
and which gates (model-card thresholds) it must pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import optuna
from torch import nn

from nn_models.device import DeviceChoice
from nn_models.metrics import Margin
from nn_models.training import TrainResult


class InsufficientData(Exception):
    """The inputs are missing or too small for a meaningful holdout; the model is skipped."""


@dataclass
class PreparedData:
    """Arrays per split; the holdout is always later in time than train and validation."""

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    holdout: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)  # split boundaries, sizes, context

    def fingerprint(self) -> str:
        """Identifies the data a study was tuned on (resume only on the same data)."""
        import hashlib

        digest = hashlib.sha256()
        for split in (self.train, self.val, self.holdout):
            for key in sorted(split):
                arr = np.ascontiguousarray(split[key])
                digest.update(key.encode())
                digest.update(str(arr.shape).encode())
                digest.update(arr.tobytes()[:1_000_000])
        return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Gate:
    """One model-card requirement evaluated on the holdout."""

    name: str
    passed: bool
    value: float
    threshold: float
    description: str
    kind: str = ""  # "baseline" for rules against a baseline, else a card threshold
    lo: float | None = None  # bootstrap interval of a margin against a baseline
    hi: float | None = None

    @property
    def against_baseline(self) -> bool:
        return self.kind == "baseline" or "baseline" in self.name.lower()

    @classmethod
    def beats(cls, name: str, margin: Margin, metric: str, baseline: str) -> Gate:
        """Model beats ``baseline`` on ``metric`` by more than the holdout's noise (lo ≥ 0)."""
        return cls(
            name,
            margin.beats,
            margin.diff,
            0.0,
            f"{metric}: model − {baseline} = {margin.diff:+.4f}, "
            f"{margin.level:.0%} paired bootstrap interval [{margin.lo:+.4f}, {margin.hi:+.4f}] "
            "(positive = model better); passes when the lower bound ≥ 0",
            kind="baseline",
            lo=margin.lo,
            hi=margin.hi,
        )


@dataclass(frozen=True)
class Profile:
    """How hard to search: ``tiny`` for tests, ``demo`` for `make run`, ``full`` as in the seed."""

    name: str
    n_trials: int
    max_epochs: int
    final_epochs: int


PROFILES = {
    "tiny": Profile("tiny", n_trials=2, max_epochs=3, final_epochs=4),
    "demo": Profile("demo", n_trials=4, max_epochs=15, final_epochs=30),
    "full": Profile("full", n_trials=50, max_epochs=60, final_epochs=100),
}


class ModelTask(ABC):
    """Subclass per model (see ``nn_models/tasks/``)."""

    name: str  # short name, also the asset's prefix: "engagement"
    registered_model: str  # MLflow registered model name
    primary_metric: str  # holdout metric used to compare with the champion
    higher_is_better: bool = True

    @abstractmethod
    def load(self, conn: duckdb.DuckDBPyConnection) -> PreparedData:
        """Read feature tables, build arrays, split by time; raise InsufficientData."""

    @abstractmethod
    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Hyper-parameters for one Optuna trial."""

    @abstractmethod
    def default_params(self) -> dict[str, Any]:
        """The model card's default architecture."""

    @abstractmethod
    def train(
        self,
        params: dict[str, Any],
        data: PreparedData,
        choice: DeviceChoice,
        max_epochs: int,
        seed: int,
        on_epoch=None,
    ) -> TrainResult:
        """Fit on ``data.train``, early-stop on ``data.val``."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: PreparedData) -> dict[str, float]:
        """Holdout metrics of a trained model (includes ``primary_metric``)."""

    @abstractmethod
    def baseline(self, data: PreparedData) -> dict[str, float]:
        """The named baseline's holdout metrics (keys prefixed ``baseline_``)."""

    @abstractmethod
    def gates(self, metrics: dict[str, float], baseline: dict[str, float]) -> list[Gate]:
        """Model-card thresholds and the not-worse-than-baseline rule."""

    def epoch_budget(self, max_epochs: int) -> int:
        """The epochs ``train`` really allows for a profile's ``max_epochs`` (a task may cap
        them); equal budgets for trials and the final fit let the pipeline reuse the best
        trial's fit instead of repeating it."""
        return max_epochs

    def plots(self, model: nn.Module, data: PreparedData, result: TrainResult) -> dict:
        """Named matplotlib figures to log (loss curve is added by the pipeline)."""
        return {}

    def input_example(self, data: PreparedData) -> dict[str, np.ndarray]:
        """A few holdout rows of model inputs, for the MLflow signature."""
        return {}

    # extra dynamic ONNX axes beyond batch (axis 0) and steps (axis 1 of 3-D inputs),
    # e.g. {"mask": {1: "steps"}} for a 2-D padding mask
    onnx_dynamic_axes: dict[str, dict[int, str]] = {}

    def onnx_examples(self, data: PreparedData) -> list[dict[str, np.ndarray]]:
        """Batches for the ONNX parity check; override to vary sequence lengths too."""
        example = self.input_example(data)
        if not example:
            return []
        single = {k: v[:1] for k, v in example.items()}
        return [single, example]

    def better(self, new: float, old: float) -> bool:
        """Is ``new`` at least as good as ``old`` on the primary metric?"""
        return new >= old if self.higher_is_better else new <= old
