"""The engagement model's baselines: the strongest simple rules given the same information.

At grid age g a post has shown its as-of counters up to g, and its channel's earlier
posts (published >= 48 h 5 min before it, so their 48 h value was known) are history.
Two rules turn that into log 48 h views:

* ``channel_growth``: ``log1p(views_g)`` + the channel's usual log growth from g to
  48 h, i.e. the mean of ``log1p(views_48h) - log1p(views_g)`` over its earlier posts
  (all of them, or its last ``window``), shrunk toward the same mean over every
  channel with weight ``k`` (``k`` pseudo-posts);
* ``szabo_huberman``: Szabo & Huberman (2010), ``log1p(views_48h) = a_g + b_g *
  log1p(views_g)`` fitted by least squares on earlier labelled posts, per channel
  (>= ``MIN_CHANNEL_POSTS`` posts) or one line across channels.

Either calls a post above its channel's median when the prediction exceeds
``log1p(channel_prior_median_views_48h) + delta``, the same reference as the label.
Per age bucket (<= 3 h, 3-12 h, 12-48 h) every variant, ``k``, ``window`` and
``delta`` are chosen by accuracy on validation only; the strongest rule of a bucket is
the one with the higher validation accuracy. Its validation log errors give its
interval (10th/90th percentiles) and its score, ``P(above)`` under a normal error with
their standard deviation, so neither is a constant picked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.special import ndtr

RULES = ("channel_growth", "szabo_huberman")
LABELS = {
    "channel_growth": "channel growth rule (latest views + the channel's usual log growth to 48 h)",
    "szabo_huberman": "Szabo–Huberman log-linear",
}
# Bucket of the age at which a post is scored: (lower, upper] minutes.
BUCKETS: dict[str, tuple[int, int]] = {"le3h": (0, 180), "3_12h": (180, 720), "12_48h": (720, 2880)}
HORIZON_S = 48 * 3600 + 300  # a post's 48 h value is known 48 h 5 min after it
MIN_CHANNEL_POSTS = 10  # Szabo–Huberman per channel from this many posts
SHRINK_GRID = (0.0, 3.0, 10.0, 30.0)  # k of channel_growth
WINDOW_GRID: tuple[int | None, ...] = (None, 30)  # last posts of the channel
DELTA_GRID = tuple(np.round(np.linspace(-0.15, 0.15, 13), 3))
DEFAULTS = {
    "channel_growth": {"k": 3.0, "window": None, "delta": 0.0},
    "szabo_huberman": {"variant": "channel", "delta": 0.0},
}


def bucket_of(minutes: np.ndarray) -> np.ndarray:
    """Index into ``BUCKETS`` of each age in minutes."""
    edges = [hi for _, hi in BUCKETS.values()][:-1]
    return np.searchsorted(np.asarray(edges), np.asarray(minutes), side="left")


@dataclass
class GridPosts:
    """Posts on the trajectory grid (log1p counters, NaN = not known at that age)."""

    channel_id: np.ndarray  # (N,) int64
    published_s: np.ndarray  # (N,) int64 seconds
    log_views: np.ndarray  # (N, T)
    log_interactions: np.ndarray  # (N, T)
    log_median: np.ndarray  # (N,) log1p(channel prior median 48 h views), NaN unknown
    log_views_48h: np.ndarray  # (N,) NaN when not yet known
    log_interactions_48h: np.ndarray
    above: np.ndarray | None = None  # (N,) the label, 1/0, NaN unknown (labelled posts)

    def take(self, rows: np.ndarray) -> GridPosts:
        return GridPosts(**{k: None if v is None else v[rows] for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return len(self.channel_id)


def _growth(history: GridPosts, counter: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) ``log1p(x_48h) - log1p(x_g)`` of the history (0 where unknown) and where known."""
    now = getattr(history, f"log_{counter}")
    final = getattr(history, f"log_{counter}_48h")
    growth = final[:, None] - now
    known = np.isfinite(growth)
    return np.where(known, growth, 0.0), known


@dataclass
class _Prefix:
    """History rows sorted by publication with the prefix sums of their growth."""

    published_s: np.ndarray  # (M,) sorted
    cum_s: np.ndarray  # (M + 1, T)
    cum_n: np.ndarray  # (M + 1, T)

    @classmethod
    def of(cls, history: GridPosts, h_rows: np.ndarray, growth: np.ndarray, known: np.ndarray) -> _Prefix:
        order = h_rows[np.argsort(history.published_s[h_rows], kind="stable")]
        n_steps = growth.shape[1]
        return cls(
            history.published_s[order],
            np.vstack([np.zeros(n_steps), np.cumsum(growth[order], axis=0)]),
            np.vstack([np.zeros(n_steps), np.cumsum(known[order], axis=0)]),
        )

    def sums(
        self,
        targets: GridPosts,
        t_rows: np.ndarray,
        sums: np.ndarray,
        counts: np.ndarray,
        window: int | None,
    ) -> None:
        """Fill ``sums``/``counts`` at ``t_rows`` with each target's prior rows (the last ``window``)."""
        hi = np.searchsorted(self.published_s, targets.published_s[t_rows] - HORIZON_S, side="right")
        lo = np.maximum(hi - window, 0) if window else np.zeros_like(hi)
        sums[t_rows] = self.cum_s[hi] - self.cum_s[lo]
        counts[t_rows] = self.cum_n[hi] - self.cum_n[lo]


def prior_growth(
    history: GridPosts, targets: GridPosts, counter: str = "views", window: int | None = None
) -> tuple[np.ndarray, ...]:
    """Sum and count of ``log1p(x_48h) - log1p(x_g)`` at every grid age over each target's
    channel's history posts published >= 48 h 5 min before it (the last ``window`` of
    them), and the same over every channel: four (N, T) arrays."""
    growth, known = _growth(history, counter)
    out = [np.zeros((len(targets), growth.shape[1])) for _ in range(4)]
    h_by = _groups(history.channel_id)
    for channel, t_rows in _groups(targets.channel_id).items():
        if channel in h_by:
            _Prefix.of(history, h_by[channel], growth, known).sums(targets, t_rows, out[0], out[1], window)
    if len(history):
        _Prefix.of(history, np.arange(len(history)), growth, known).sums(
            targets, np.arange(len(targets)), out[2], out[3], None
        )
    return tuple(out)


class GrowthIndex:
    """``prior_growth`` with the history side computed once, for scoring a few posts at a
    time against a fixed history (the API: one post per request). Sorting the history and
    summing its growth is the whole cost of ``prior_growth`` for one target; here it is
    done once per counter, per channel and over all channels, and a call is a binary
    search. The same sorted order and the same cumulative sums: the same numbers.
    Memory: 4 (N + 1, T) arrays per counter."""

    def __init__(self, history: GridPosts, counters: tuple[str, ...] = ("views", "interactions")) -> None:
        self.history = history
        self.n_steps = history.log_views.shape[1]
        self._parts: dict[str, tuple[dict[int, _Prefix], _Prefix | None]] = {}
        for counter in counters:
            growth, known = _growth(history, counter)
            channels = {
                channel: _Prefix.of(history, rows, growth, known)
                for channel, rows in _groups(history.channel_id).items()
            }
            overall = _Prefix.of(history, np.arange(len(history)), growth, known) if len(history) else None
            self._parts[counter] = (channels, overall)

    def prior_growth(
        self, targets: GridPosts, counter: str = "views", window: int | None = None
    ) -> tuple[np.ndarray, ...]:
        """What ``prior_growth(self.history, targets, counter, window)`` returns."""
        channels, overall = self._parts[counter]
        out = [np.zeros((len(targets), self.n_steps)) for _ in range(4)]
        for channel, t_rows in _groups(targets.channel_id).items():
            if channel in channels:
                channels[channel].sums(targets, t_rows, out[0], out[1], window)
        if overall is not None:
            overall.sums(targets, np.arange(len(targets)), out[2], out[3], None)
        return tuple(out)


def shrunk_growth(sums: tuple[np.ndarray, ...], k: float) -> np.ndarray:
    """Channel mean growth shrunk toward the all-channel mean with ``k`` pseudo-posts
    (the all-channel mean alone for a channel without history; 0 without any history)."""
    c_sum, c_n, g_sum, g_n = sums
    global_mean = np.divide(g_sum, g_n, out=np.zeros_like(g_sum), where=g_n > 0)
    weight = c_n + k
    mixed = np.divide(c_sum + k * global_mean, weight, out=global_mean.copy(), where=weight > 0)
    return mixed


def _groups(labels: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(labels, kind="stable")
    uniq, starts = np.unique(labels[order], return_index=True)
    return {int(u): order[s:e] for u, s, e in zip(uniq, starts, [*starts[1:], len(order)], strict=True)}


@dataclass
class LogLinear:
    """Szabo–Huberman lines per grid age: across channels and per channel."""

    global_ab: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (T, 2)
    channel_ab: dict[int, np.ndarray] = field(default_factory=dict)  # c -> (T, 2)
    min_channel_posts: int = MIN_CHANNEL_POSTS

    @staticmethod
    def _lines(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, 2) least-squares (a, b) of y on each column of x, and the rows used."""
        ok = np.isfinite(x) & np.isfinite(y)[:, None]
        n = ok.sum(axis=0)
        xs = np.where(ok, x, 0.0)
        ys = np.where(ok, y[:, None], 0.0)
        mx = xs.sum(0) / np.maximum(n, 1)
        my = ys.sum(0) / np.maximum(n, 1)
        sxx = (np.where(ok, (x - mx) ** 2, 0.0)).sum(0)
        sxy = (np.where(ok, (x - mx) * (y[:, None] - my), 0.0)).sum(0)
        b = np.divide(sxy, sxx, out=np.ones_like(sxx), where=sxx > 1e-9)
        return np.stack([my - b * mx, b], axis=1), n

    def fit(self, posts: GridPosts) -> LogLinear:
        self.global_ab, _ = self._lines(posts.log_views, posts.log_views_48h)
        self.channel_ab = {}
        for channel, rows in _groups(posts.channel_id).items():
            ab, n = self._lines(posts.log_views[rows], posts.log_views_48h[rows])
            use = n >= self.min_channel_posts
            self.channel_ab[channel] = np.where(use[:, None], ab, self.global_ab)
        return self

    def predict(self, posts: GridPosts, variant: str) -> np.ndarray:
        """(N, T) predicted log1p(views_48h) from the views at each grid age."""
        ab = np.broadcast_to(self.global_ab, (len(posts), *self.global_ab.shape)).copy()
        if variant == "channel":
            for channel, rows in _groups(posts.channel_id).items():
                if channel in self.channel_ab:
                    ab[rows] = self.channel_ab[channel]
        return ab[..., 0] + ab[..., 1] * posts.log_views


@dataclass
class RuleFit:
    """One rule in one bucket: its tuned parameters and its validation errors."""

    params: dict[str, Any]
    val_accuracy: float
    val_pairs: int
    q10: float  # validation log-error percentiles (interval)
    q90: float
    sd: float  # validation log-error sd (score)


@dataclass
class EngagementBaselines:
    """The tuned rules per bucket; ``predict`` scores posts at every grid age."""

    grid_minutes: np.ndarray
    history: GridPosts
    sh: LogLinear
    fits: dict[str, dict[str, RuleFit]]  # rule -> bucket -> fit
    interaction_fits: dict[str, RuleFit]  # bucket -> channel_growth on interactions
    strongest: dict[str, str]  # bucket -> rule
    # set by ``indexed()`` for per-request scoring; the same numbers as without it
    growth_index: GrowthIndex | None = None

    def indexed(self) -> EngagementBaselines:
        """A copy whose ``predict`` reads the history through a ``GrowthIndex`` built now."""
        return replace(self, growth_index=GrowthIndex(self.history))

    def _prior(self, targets: GridPosts, counter: str, window: int | None) -> tuple[np.ndarray, ...]:
        if self.growth_index is not None:
            return self.growth_index.prior_growth(targets, counter, window)
        return prior_growth(self.history, targets, counter, window)

    def _views(self, targets: GridPosts, rule: str, params: dict[str, Any]) -> np.ndarray:
        if rule == "channel_growth":
            sums = self._prior(targets, "views", params["window"])
            return targets.log_views + shrunk_growth(sums, params["k"])
        return self.sh.predict(targets, params["variant"])

    def predict(self, targets: GridPosts, rule: str | None = None) -> dict[str, np.ndarray]:
        """(N, T) per grid age: ``log_views`` (p50), ``lo``/``hi`` (80 % interval),
        ``score`` (P(above the channel median)), ``above``, ``rule`` (index into
        ``RULES``) and the interactions' p50/lo/hi, with each age's bucket's strongest
        rule (or ``rule``)."""
        n, steps = targets.log_views.shape
        buckets = bucket_of(self.grid_minutes)
        out = {
            k: np.full((n, steps), np.nan)
            for k in ("log_views", "lo", "hi", "score", "log_interactions", "inter_lo", "inter_hi")
        }
        out["rule"] = np.zeros((n, steps), dtype=np.int64)
        cache: dict[tuple, np.ndarray] = {}
        for b, name in enumerate(BUCKETS):
            cols = buckets == b
            chosen = rule or self.strongest[name]
            fit = self.fits[chosen][name]
            key = (chosen, tuple(sorted((k, v) for k, v in fit.params.items() if k != "delta")))
            if key not in cache:
                cache[key] = self._views(targets, chosen, fit.params)
            pred = cache[key][:, cols]
            margin = pred - targets.log_median[:, None] - fit.params["delta"]
            out["log_views"][:, cols] = pred
            out["lo"][:, cols] = np.fmax(pred + fit.q10, targets.log_views[:, cols])
            out["hi"][:, cols] = np.maximum(pred + fit.q90, out["lo"][:, cols])
            out["score"][:, cols] = ndtr(margin / max(fit.sd, 1e-3))
            out["rule"][:, cols] = RULES.index(chosen)
            ifit = self.interaction_fits[name]
            sums = self._prior(targets, "interactions", ifit.params["window"])
            inter = targets.log_interactions[:, cols] + shrunk_growth(sums, ifit.params["k"])[:, cols]
            out["log_interactions"][:, cols] = inter
            out["inter_lo"][:, cols] = np.fmax(inter + ifit.q10, targets.log_interactions[:, cols])
            out["inter_hi"][:, cols] = np.maximum(inter + ifit.q90, out["inter_lo"][:, cols])
        out["above"] = out["score"] > 0.5
        return out

    def describe(self) -> dict[str, Any]:
        """Flat, loggable summary: per bucket the strongest rule, its parameters and errors."""
        info: dict[str, Any] = {}
        for name in BUCKETS:
            best = self.strongest[name]
            info[f"strongest_baseline_{name}"] = best
            for rule in RULES:
                fit = self.fits[rule][name]
                info[f"baseline_{rule}_val_accuracy_{name}"] = fit.val_accuracy
                info[f"baseline_{rule}_params_{name}"] = ", ".join(f"{k}={v}" for k, v in fit.params.items())
            info[f"baseline_val_log_error_q10_{name}"] = self.fits[best][name].q10
            info[f"baseline_val_log_error_q90_{name}"] = self.fits[best][name].q90
        info["strongest_baseline"] = "; ".join(f"{b}: {self.strongest[b]}" for b in BUCKETS)
        return info


def _errors(pred: np.ndarray, actual: np.ndarray, mask: np.ndarray) -> tuple[float, ...]:
    err = (actual[:, None] - pred)[mask]
    if not len(err):
        return 0.0, 0.0, 1.0
    return (float(np.percentile(err, 10)), float(np.percentile(err, 90)), float(max(np.std(err), 1e-3)))


def _best_delta(margin: np.ndarray, above: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(accuracy, delta) maximising validation accuracy; ties go to the smallest |delta|."""
    best = (-1.0, 0.0)
    m, y = margin[mask], above[mask]
    for delta in sorted(DELTA_GRID, key=abs):
        acc = float(((m > delta) == y).mean()) if len(m) else float("nan")
        if acc > best[0]:
            best = (acc, float(delta))
    return best


def fit_baselines(
    history: GridPosts,
    above: np.ndarray,
    grid_minutes: np.ndarray,
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    refit_rows: np.ndarray,
) -> EngagementBaselines:
    """Tune both rules per bucket on ``val_rows`` (Szabo–Huberman fitted on ``fit_rows``),
    then refit Szabo–Huberman on ``refit_rows`` for scoring later posts.

    ``history`` holds every labelled post (the growth rule reads, for each post, only
    its channel's posts >= 48 h 5 min older); ``above`` is the warehouse's label
    (NaN = unknown). Without validation rows the ``fit_rows`` stand in for them; a
    bucket with no validation example keeps ``DEFAULTS`` (accuracy NaN).
    """
    if not len(val_rows):
        val_rows = fit_rows
    val = history.take(val_rows)
    y = above[val_rows]
    buckets = bucket_of(grid_minutes)
    base_mask = np.isfinite(val.log_views) & np.isfinite(val.log_median)[:, None] & np.isfinite(y)[:, None]
    y2 = np.broadcast_to(y[:, None] > 0.5, val.log_views.shape)
    sh = LogLinear().fit(history.take(fit_rows))
    fits: dict[str, dict[str, RuleFit]] = {r: {} for r in RULES}
    candidates: dict[str, list[tuple[dict, np.ndarray]]] = {"channel_growth": [], "szabo_huberman": []}
    for window in WINDOW_GRID:
        sums = prior_growth(history, val, "views", window)
        for k in SHRINK_GRID:
            candidates["channel_growth"].append(
                ({"k": k, "window": window}, val.log_views + shrunk_growth(sums, k))
            )
    for variant in ("channel", "global"):
        candidates["szabo_huberman"].append(({"variant": variant}, sh.predict(val, variant)))
    for b, name in enumerate(BUCKETS):
        mask = base_mask & (buckets == b)[None, :]
        for rule, options in candidates.items():
            best: tuple[float, dict, np.ndarray] | None = None
            for params, pred in options:
                acc, delta = _best_delta(pred - val.log_median[:, None], y2, mask)
                if best is None or acc > best[0]:
                    best = (acc, {**params, "delta": delta}, pred)
            assert best is not None
            acc, params, pred = best
            if not mask.any():  # nothing to tune on in this bucket
                acc, params = float("nan"), dict(DEFAULTS[rule])
            q10, q90, sd = _errors(pred, val.log_views_48h, mask & np.isfinite(pred))
            fits[rule][name] = RuleFit(params, acc, int(mask.sum()), q10, q90, sd)
    strongest = {
        name: max(
            RULES,
            key=lambda r, n=name: (np.nan_to_num(fits[r][n].val_accuracy, nan=-1.0), r == "channel_growth"),
        )
        for name in BUCKETS
    }
    interaction_fits = {}
    for b, name in enumerate(BUCKETS):
        params = {k: v for k, v in fits["channel_growth"][name].params.items() if k != "delta"}
        sums = prior_growth(history, val, "interactions", params["window"])
        pred = val.log_interactions + shrunk_growth(sums, params["k"])
        mask = np.isfinite(pred) & np.isfinite(val.log_interactions_48h)[:, None] & (buckets == b)[None, :]
        q10, q90, sd = _errors(pred, val.log_interactions_48h, mask)
        interaction_fits[name] = RuleFit(params, float("nan"), int(mask.sum()), q10, q90, sd)
    refit = LogLinear().fit(history.take(refit_rows))
    return EngagementBaselines(np.asarray(grid_minutes), history, refit, fits, interaction_fits, strongest)
