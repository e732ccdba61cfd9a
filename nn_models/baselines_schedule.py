"""The schedule model's named baseline, "historical mean per slot", and the metrics both share.

Baseline: the mean target of a channel's training posts in each (weekday, hour)
slot; a slot the channel never posted in falls back to the channel's mean.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

N_SLOTS = 7 * 24


def slot_of(weekday: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """Hour-of-week index 0..167 (0 = Monday 00:00 UTC)."""
    return np.asarray(weekday, dtype=np.int64) * 24 + np.asarray(hour, dtype=np.int64)


def historical_slot_means(
    channel_id: np.ndarray, weekday: np.ndarray, hour: np.ndarray, target: np.ndarray
) -> dict[int, np.ndarray]:
    """channel_id -> 168 slot means (unseen slots = the channel's mean over all its posts)."""
    channel_id = np.asarray(channel_id)
    slot = slot_of(weekday, hour)
    target = np.asarray(target, dtype=np.float64)
    table: dict[int, np.ndarray] = {}
    for channel in np.unique(channel_id):
        mask = channel_id == channel
        sums = np.bincount(slot[mask], weights=target[mask], minlength=N_SLOTS)
        counts = np.bincount(slot[mask], minlength=N_SLOTS)
        means = np.full(N_SLOTS, target[mask].mean())
        seen = counts > 0
        means[seen] = sums[seen] / counts[seen]
        table[int(channel)] = means
    return table


def top_slot_ratio(
    predicted: dict[int, np.ndarray], true_effect: dict[int, np.ndarray]
) -> tuple[float, dict[int, float]]:
    """Mean over channels of true_effect[top predicted slot] / max true_effect.

    ``predicted`` and ``true_effect`` map channel_id -> 168 values (hour of week);
    only channels present in both count. Ties go to the earliest slot.
    """
    ratios = {}
    for channel, grid in predicted.items():
        truth = true_effect.get(channel)
        if truth is None:
            continue
        ratios[channel] = float(truth[int(np.argmax(grid))] / np.max(truth))
    mean = float(np.mean(list(ratios.values()))) if ratios else float("nan")
    return mean, ratios


def unseen_slot_ratio(
    predicted: dict[int, np.ndarray],
    true_effect: dict[int, np.ndarray],
    seen: dict[int, np.ndarray],
) -> float:
    """``top_slot_ratio`` restricted to the slots a channel never posted in before the holdout.

    How well a model ranks slots it has no posts for: the true effect of its top
    unseen slot ÷ the best unseen slot's, averaged over channels with unseen slots.
    """
    ratios = []
    for channel, grid in predicted.items():
        truth, was_seen = true_effect.get(channel), seen.get(channel)
        if truth is None or was_seen is None or was_seen.all():
            continue
        candidates = np.flatnonzero(~was_seen)
        best = candidates[int(np.argmax(np.asarray(grid)[candidates]))]
        ratios.append(truth[best] / truth[candidates].max())
    return float(np.mean(ratios)) if ratios else float("nan")


def slot_rank_correlation(
    channel_id: np.ndarray,
    slot: np.ndarray,
    target: np.ndarray,
    predicted: np.ndarray,
    min_posts: int = 2,
) -> tuple[float, int]:
    """Spearman ρ between mean predicted and mean realised target per (channel, slot).

    Only (channel, slot) groups with at least ``min_posts`` holdout posts count.
    Returns (ρ, number of groups); ρ is NaN with fewer than 3 groups.
    """
    key = np.asarray(channel_id, dtype=np.int64) * N_SLOTS + np.asarray(slot, dtype=np.int64)
    groups, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    real = np.bincount(inverse, weights=np.asarray(target, float)) / counts
    pred = np.bincount(inverse, weights=np.asarray(predicted, float)) / counts
    keep = counts >= min_posts
    if keep.sum() < 3:
        return float("nan"), int(keep.sum())
    rho = spearmanr(pred[keep], real[keep]).statistic
    return float(rho), int(keep.sum())


def baseline_metrics(
    train: dict[str, np.ndarray],
    holdout: dict[str, np.ndarray],
    true_effect: dict[int, np.ndarray],
) -> dict[str, float]:
    """Historical mean per slot scored like the model (keys prefixed ``baseline_``)."""
    table = historical_slot_means(
        train["channel_id"], train["weekday"], train["hour"], train["target"]
    )
    known = np.isin(holdout["channel_id"], list(table))
    channel = holdout["channel_id"][known]
    slot = slot_of(holdout["weekday"][known], holdout["hour"][known])
    target = holdout["target"][known]
    predicted = np.array([table[int(c)][s] for c, s in zip(channel, slot, strict=True)])
    rho, n_groups = slot_rank_correlation(channel, slot, target, predicted)
    metrics = {
        "baseline_spearman": rho,
        "baseline_spearman_slots": float(n_groups),
        "baseline_mse": float(np.mean((predicted - target) ** 2)) if len(target) else float("nan"),
    }
    if true_effect:
        metrics["baseline_top_slot_ratio"] = top_slot_ratio(table, true_effect)[0]
    return metrics
