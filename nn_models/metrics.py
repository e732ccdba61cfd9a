"""Holdout metrics named on the model cards, in plain NumPy (scikit-learn where it has them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def median_split_accuracy(y_true_above: np.ndarray, score: np.ndarray, threshold: float = 0.5):
    """Share of posts whose predicted side of the channel median matches the truth."""
    y = np.asarray(y_true_above).astype(bool)
    pred = np.asarray(score) > threshold
    return float((pred == y).mean()) if len(y) else float("nan")


def mase(actual: np.ndarray, forecast: np.ndarray, insample: np.ndarray, m: int = 7) -> float:
    """Mean absolute scaled error: MAE of the forecast / in-sample MAE of the seasonal naive.

    ``insample`` is the series before the forecast origin; scale = mean |y_t - y_{t-m}|.
    """
    insample = np.asarray(insample, dtype=float)
    if len(insample) <= m:
        raise ValueError(f"need more than m={m} in-sample points, got {len(insample)}")
    scale = np.mean(np.abs(insample[m:] - insample[:-m]))
    err = np.mean(np.abs(np.asarray(actual, float) - np.asarray(forecast, float)))
    return float(err / scale) if scale > 0 else float("inf") if err > 0 else 0.0


def interval_coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of actual values inside [lower, upper]."""
    actual = np.asarray(actual, float)
    inside = (actual >= np.asarray(lower, float)) & (actual <= np.asarray(upper, float))
    return float(inside.mean()) if actual.size else float("nan")


def pinball_loss(actual: np.ndarray, predicted: np.ndarray, quantile: float) -> float:
    diff = np.asarray(actual, float) - np.asarray(predicted, float)
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1) * diff)))


@dataclass(frozen=True)
class Margin:
    """How much better the model is than a baseline, with a paired bootstrap interval.

    ``diff`` is oriented so that positive always means "the model is better"
    (baseline − model for error metrics). A gate against a baseline passes when
    ``lo`` ≥ 0: the model wins by more than the holdout's sampling noise.
    """

    diff: float
    lo: float
    hi: float
    level: float
    n_boot: int

    @property
    def beats(self) -> bool:
        return bool(np.isfinite(self.lo) and self.lo >= 0)

    def as_metrics(self, key: str) -> dict[str, float]:
        return {f"margin_{key}": self.diff, f"margin_{key}_lo": self.lo, f"margin_{key}_hi": self.hi}


def bootstrap_margin(
    score_model: Callable[[np.ndarray], float],
    score_baseline: Callable[[np.ndarray], float],
    n_rows: int,
    *,
    higher_is_better: bool = True,
    clusters: np.ndarray | None = None,
    n_boot: int = 500,
    level: float = 0.90,
    seed: int = 0,
) -> Margin:
    """Paired bootstrap of ``score_model(idx) − score_baseline(idx)`` over holdout rows.

    Both scores see the same resampled row indices, so noise shared by model and
    baseline cancels. With ``clusters`` (one label per row, e.g. channel ids) whole
    clusters are resampled, for metrics whose rows are not independent. Replicates
    where a score is undefined (NaN, e.g. AUC with one class) are dropped; with
    fewer than half left the interval is NaN and the margin does not count as a win.
    """
    sign = 1.0 if higher_is_better else -1.0
    full = np.arange(n_rows)
    diff = sign * (score_model(full) - score_baseline(full))
    rng = np.random.default_rng(seed)
    if clusters is not None:
        clusters = np.asarray(clusters)
        groups = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
    reps = []
    for _ in range(n_boot):
        if clusters is None:
            idx = rng.integers(0, n_rows, n_rows)
        else:
            picks = rng.integers(0, len(groups), len(groups))
            idx = np.concatenate([groups[p] for p in picks])
        reps.append(sign * (score_model(idx) - score_baseline(idx)))
    reps = np.asarray(reps, dtype=float)
    reps = reps[np.isfinite(reps)]
    if n_rows == 0 or len(reps) < n_boot / 2:
        return Margin(float(diff), float("nan"), float("nan"), level, n_boot)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(reps, [tail, 100 - tail])
    return Margin(float(diff), float(lo), float(hi), level, n_boot)
