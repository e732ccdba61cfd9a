"""Holdout metrics named on the model cards, in plain NumPy (scikit-learn where it has them)."""

from __future__ import annotations

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
