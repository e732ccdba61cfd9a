"""Figures people would rather look at than read: loss curves, forecasts, ROC, calibration."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def loss_curve(train_losses: list[float], val_losses: list[float], title: str):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(train_losses) + 1), train_losses, label="train")
    ax.plot(range(1, len(val_losses) + 1), val_losses, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def roc_plot(y_true: np.ndarray, scores: dict[str, np.ndarray], title: str):
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(y_true, score)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def calibration_plot(y_true: np.ndarray, prob: np.ndarray, title: str, bins: int = 10):
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(prob, edges) - 1, 0, bins - 1)
    mean_p = [prob[idx == b].mean() for b in range(bins) if (idx == b).any()]
    mean_y = [y_true[idx == b].mean() for b in range(bins) if (idx == b).any()]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.plot(mean_p, mean_y, "o-")
    ax.set_xlabel("predicted")
    ax.set_ylabel("observed")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def scatter_plot(actual: np.ndarray, predicted: np.ndarray, title: str, log: bool = True):
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(actual, predicted, s=4, alpha=0.4)
    lo, hi = float(np.nanmin(actual)), float(np.nanmax(actual))
    ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)


# Inline pictures travel inside Dagster's event log (one copy per materialization), so
# they are rendered small: 72 dpi, and smaller still until under the byte budget.
INLINE_DPI = 72
INLINE_MAX_BYTES = 150_000


def png_bytes(fig, dpi: int = INLINE_DPI, max_bytes: int = INLINE_MAX_BYTES) -> bytes:
    """The figure as PNG bytes small enough to embed in metadata (lower dpi until it fits)."""
    import io

    while True:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        data = buffer.getvalue()
        if len(data) <= max_bytes or dpi <= 24:
            return data
        dpi = int(dpi * 0.75)
