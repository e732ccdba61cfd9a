"""The schedule model's baselines and the observed-outcome metrics both are scored with.

Every rule maps a channel to 168 slot values (hour of week, 0 = Monday 00 h UTC) from
the same pre-holdout posts and target the model learns from (log 48 h reach relative
to the channel's typical post):

* ``shrunk_slot_mean`` — a slot's mean shrunk toward its hour's mean (over all
  weekdays), which is itself shrunk toward the channel's mean:
  ``hour = (Σ_hour y + β·channel) / (n_hour + β)``, ``slot = (Σ_slot y + α·hour) / (n_slot + α)``.
  α and β are chosen on validation (a slot with 0–2 posts no longer wins by luck);
* ``hour_mean`` — the channel's mean per hour (unseen hours: the channel's mean);
* ``most_posted_hour`` — slots ranked by how many posts the channel published in
  that hour (a channel's habit as its own recommendation).

Metrics, on the latest period's posts, against their within-channel 48 h view
percentile (``view_percentile_48h``, ranked against earlier posts only):

* ``spearman`` — per-channel Spearman ρ between a post's predicted slot value and its
  observed percentile, averaged over channels with ≥ ``MIN_CHANNEL_HOLDOUT_POSTS``
  posts (a rule whose values tie for every post of a channel ranks nothing: ρ = 0);
* ``lift`` — per channel, the mean percentile of its posts in the rule's top quartile
  (predicted value ≥ the 75th percentile of the channel's predictions) minus that of
  its bottom quartile (≤ the 25th), averaged over channels (0 when they coincide).

Per-channel scores are the rows of the paired bootstrap (resampling channels =
clusters of posts), so a margin's interval reflects how much the verdict depends
on which channels happen to be in the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

N_SLOTS = 7 * 24
MIN_CHANNEL_HOLDOUT_POSTS = 5
ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
BETAS = (0.0, 2.0, 8.0, 32.0)
BASELINES = ("shrunk_slot_mean", "hour_mean", "most_posted_hour")


def slot_of(weekday: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """Hour-of-week index 0..167 (0 = Monday 00:00 UTC)."""
    return np.asarray(weekday, dtype=np.int64) * 24 + np.asarray(hour, dtype=np.int64)


def _sums(slot: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.bincount(slot, weights=y, minlength=N_SLOTS),
        np.bincount(slot, minlength=N_SLOTS).astype(np.float64),
    )


def _hour_means(s_sum: np.ndarray, s_n: np.ndarray, mean: float, beta: float) -> np.ndarray:
    h_sum = s_sum.reshape(7, 24).sum(axis=0)
    h_n = s_n.reshape(7, 24).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(h_n + beta > 0, (h_sum + beta * mean) / (h_n + beta), mean)


def shrunk_grid(slot: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """168 slot values of one channel: slot mean → hour mean (α) → channel mean (β)."""
    y = np.asarray(y, dtype=np.float64)
    s_sum, s_n = _sums(slot, y)
    mean = float(y.mean()) if len(y) else 0.0
    prior = np.tile(_hour_means(s_sum, s_n, mean, beta), 7)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s_n + alpha > 0, (s_sum + alpha * prior) / (s_n + alpha), prior)


def hour_grid(slot: np.ndarray, y: np.ndarray) -> np.ndarray:
    """168 slot values of one channel: its mean per hour (unseen hours: its mean)."""
    y = np.asarray(y, dtype=np.float64)
    s_sum, s_n = _sums(slot, y)
    return np.tile(_hour_means(s_sum, s_n, float(y.mean()) if len(y) else 0.0, 0.0), 7)


def posted_grid(slot: np.ndarray) -> np.ndarray:
    """168 slot values of one channel: its number of posts in that hour (any weekday)."""
    per_hour = np.bincount(np.asarray(slot) % 24, minlength=24).astype(np.float64)
    return np.tile(per_hour, 7)


def grids(
    rule: str, channel: np.ndarray, slot: np.ndarray, y: np.ndarray, alpha: float = 0.0, beta: float = 0.0
) -> dict[int, np.ndarray]:
    """channel_id -> 168 slot values of ``rule`` (one of ``BASELINES``)."""
    channel = np.asarray(channel)
    out: dict[int, np.ndarray] = {}
    for c in np.unique(channel):
        m = channel == c
        if rule == "shrunk_slot_mean":
            out[int(c)] = shrunk_grid(slot[m], y[m], alpha, beta)
        elif rule == "hour_mean":
            out[int(c)] = hour_grid(slot[m], y[m])
        elif rule == "most_posted_hour":
            out[int(c)] = posted_grid(slot[m])
        else:
            raise ValueError(f"unknown schedule baseline {rule!r}")
    return out


def lookup(table: dict[int, np.ndarray], channel: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Each row's slot value (NaN for a channel the table does not know)."""
    return np.array(
        [table[int(c)][int(s)] if int(c) in table else np.nan for c, s in zip(channel, slot, strict=True)],
        dtype=np.float64,
    )


# ------------------------------------------------------------------ metrics
def _channel_scores(pred: np.ndarray, pct: np.ndarray) -> tuple[float, float]:
    """(Spearman ρ, top- minus bottom-quartile mean percentile) of one channel's posts."""
    if np.ptp(pred) == 0 or np.ptp(pct) == 0:
        return 0.0, 0.0
    rho = float(spearmanr(pred, pct).statistic)
    lo, hi = np.quantile(pred, [0.25, 0.75])
    top, bottom = pred >= hi, pred <= lo
    lift = float(pct[top].mean() - pct[bottom].mean()) if (top != bottom).any() else 0.0
    return (rho if np.isfinite(rho) else 0.0), lift


@dataclass
class ChannelScores:
    """Per-channel ``spearman`` and ``lift`` (aligned with ``channel_ids``)."""

    channel_ids: np.ndarray
    spearman: np.ndarray
    lift: np.ndarray
    n_posts: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def mean(self, metric: str, idx: np.ndarray | None = None) -> float:
        values = getattr(self, metric)
        values = values if idx is None else values[idx]
        return float(values.mean()) if len(values) else float("nan")


def channel_scores(
    channel: np.ndarray, pred: np.ndarray, pct: np.ndarray, channels: np.ndarray | None = None
) -> ChannelScores:
    """Scores of every channel with ≥ MIN_CHANNEL_HOLDOUT_POSTS posts (or of ``channels``)."""
    channel = np.asarray(channel)
    ok = np.isfinite(pred) & np.isfinite(pct)
    if channels is None:
        ids, counts = np.unique(channel[ok], return_counts=True)
        channels = ids[counts >= MIN_CHANNEL_HOLDOUT_POSTS]
    rows = [_channel_scores(pred[ok & (channel == c)], pct[ok & (channel == c)]) for c in channels]
    n = np.array([int((ok & (channel == c)).sum()) for c in channels], dtype=np.int64)
    arr = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return ChannelScores(np.asarray(channels, dtype=np.int64), arr[:, 0], arr[:, 1], n)


def top_slot_ratio(
    predicted: dict[int, np.ndarray], true_effect: dict[int, np.ndarray]
) -> tuple[float, dict[int, float]]:
    """Synthetic truth only (reported, never gated): mean over channels of
    true_effect[top predicted slot] / max true_effect. Ties go to the earliest slot."""
    ratios = {}
    for channel, grid in predicted.items():
        truth = true_effect.get(channel)
        if truth is None:
            continue
        ratios[channel] = float(truth[int(np.argmax(grid))] / np.max(truth))
    mean = float(np.mean(list(ratios.values()))) if ratios else float("nan")
    return mean, ratios


# ---------------------------------------------------------------- selection
@dataclass
class BaselineChoice:
    """Each rule's validation score, the tuned α/β and the strongest rule (on validation)."""

    alpha: float
    beta: float
    val_spearman: dict[str, float]
    strongest: str


def choose(train: dict[str, np.ndarray], val: dict[str, np.ndarray]) -> BaselineChoice:
    """Tune α, β of the shrunk mean and pick the strongest rule, all on validation only.

    Rules are fitted on ``train`` (keys channel_id, weekday, hour, target) and scored
    by mean per-channel Spearman against ``val['percentile']``.
    """
    slot_tr = slot_of(train["weekday"], train["hour"])
    slot_va = slot_of(val["weekday"], val["hour"])
    y = np.asarray(train["target"], dtype=np.float64)

    def score(table: dict[int, np.ndarray]) -> float:
        pred = lookup(table, val["channel_id"], slot_va)
        return channel_scores(val["channel_id"], pred, val["percentile"]).mean("spearman")

    best = (-np.inf, 1.0, 0.0)
    for alpha in ALPHAS:
        for beta in BETAS:
            s = score(grids("shrunk_slot_mean", train["channel_id"], slot_tr, y, alpha, beta))
            if np.isfinite(s) and s > best[0] + 1e-12:
                best = (s, alpha, beta)
    val_scores = {"shrunk_slot_mean": float(best[0])}
    for rule in ("hour_mean", "most_posted_hour"):
        val_scores[rule] = score(grids(rule, train["channel_id"], slot_tr, y))
    finite = {k: v for k, v in val_scores.items() if np.isfinite(v)}
    strongest = max(finite, key=finite.get) if finite else "shrunk_slot_mean"
    return BaselineChoice(
        alpha=float(best[1]), beta=float(best[2]), val_spearman=val_scores, strongest=strongest
    )


def fit(rule: str, choice: BaselineChoice, split: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """``rule``'s table fitted on ``split`` with the α/β chosen on validation."""
    return grids(
        rule,
        split["channel_id"],
        slot_of(split["weekday"], split["hour"]),
        np.asarray(split["target"], dtype=np.float64),
        choice.alpha,
        choice.beta,
    )


def network_grid(rule: str, choice: BaselineChoice, split: dict[str, np.ndarray]) -> np.ndarray:
    """One table for every channel pooled (for a channel with no history of its own)."""
    pooled = {**split, "channel_id": np.zeros(len(split["target"]), dtype=np.int64)}
    table = fit(rule, choice, pooled)
    return table.get(0, np.zeros(N_SLOTS))
