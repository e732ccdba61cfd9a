"""Engagement task: score a post from its first hours (DESIGN §4, model card "engagement").

Data: ``features.post_features`` (context, targets) and ``features.post_trajectories``
(the counters on the 15-minute grid). Posts whose 48 h views are known are split by
publish time: holdout = the latest ~15 % of the time span, validation = the ~15 %
before it, training = everything earlier.

One model scores posts of any age. The LSTM is causal, so one pass over a post's
12-hour trajectory yields its prediction after every grid step, i.e. for every
truncation of the sequence at once; the loss averages them (weight 1 at 1, 3, 6 and
12 h, ``OTHER_AGES_WEIGHT`` at the ages between), so training sees every post at every
age without sampling truncations. The holdout is scored by feeding each post cut at
1, 3, 6 and 12 h (``accuracy_1h`` ... ``accuracy_12h``).

Engagement-score target. The warehouse's ``view_percentile_48h`` ranks a post among
*all* of its channel's posts, including later ones; for a growing channel an early
post's rank is then mostly a statement about the channel's future growth, which no
early trajectory can know. The score head therefore learns the percentile of the
post's 48 h views among the channel's posts known at publication (those behind
``channel_prior_median_views_48h``), the causal version of the same quantity; posts
with fewer than ``MIN_PRIOR_POSTS`` such posts do not train the score head. The
holdout is judged against the warehouse's ``above_channel_median`` as the card says.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import optuna
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from nn_models import metrics as M
from nn_models import plots
from nn_models.baselines_engagement import NAME as BASELINE_NAME
from nn_models.baselines_engagement import LogLinearExtrapolation
from nn_models.device import DeviceChoice
from nn_models.models.engagement import (
    QUANTILES,
    SEQUENCE_FEATURES,
    STATIC_FEATURES,
    EngagementPredictor,
)
from nn_models.task import Gate, InsufficientData, ModelTask, PreparedData
from nn_models.training import TrainConfig, TrainResult, fit, seed_everything

# The grid of features.post_trajectories (warehouse.features.TRAJECTORY_GRID_MINUTES).
GRID_MINUTES = np.array([*range(15, 181, 15), *range(240, 721, 60)])
HOURS = (1, 3, 6, 12)
LENGTHS = {h: int((GRID_MINUTES <= h * 60).sum()) for h in HOURS}   # 1 h -> 4 points ...
MEDIA = ("none", "photo", "video", "document", "poll", "other")

HOLDOUT_SHARE = 0.15
VALIDATION_SHARE = 0.15
OTHER_AGES_WEIGHT = 0.2       # loss weight of grid ages other than 1/3/6/12 h
MIN_PRIOR_POSTS = 10           # prior posts needed before a post trains the score head
MIN_POSTS = {"train": 100, "val": 20, "holdout": 20}
# At batch 64 every epoch is ~120 updates on the demo data and the validation loss
# flattens after 3-5 epochs; more epochs cost LSTM CPU time for < 0.01 of loss.
EPOCH_CAP = 6
ACCURACY_THRESHOLD = 0.80

MODEL_INPUTS = ("sequence", "length", "static")
TRAIN_ARRAYS = (*MODEL_INPUTS, "score_target", "score_weight", "log_views_48h",
                "log_interactions_48h", "interactions_weight")

# How the channel's earlier posts grew from h hours to 48 h: the mean of
# ln(1 + views_48h) - ln(1 + views_h) over the channel's posts published at least
# 48 h 5 min before this one (known at publication, as channel_prior_median_views_48h),
# over all of them and over those published in the same 3-hour UTC band of the day
# (the audience's daily rhythm: a 23:00 post gathers its views the next morning).
CURVE_HOURS = (1, 3, 6, 12)
HOUR_BAND = 3
MIN_CURVE_POSTS = 3
CURVE_COLUMNS: tuple[str, ...] = tuple(
    f"channel_{scope}growth_{h}h_48h" for scope in ("", "band_") for h in CURVE_HOURS)


def _curve_sql(window: str) -> str:
    return ",\n".join(
        f"CASE WHEN count(views_{h}h) FILTER (WHERE views_48h IS NOT NULL) OVER {window}"
        f" >= {MIN_CURVE_POSTS} THEN avg(ln(1 + views_48h) - ln(1 + views_{h}h)) OVER {window}"
        f" END AS channel_{'band_' if window == 'band' else ''}growth_{h}h_48h"
        for h in CURVE_HOURS)


CHANNEL_CURVE_SQL = f"""
SELECT channel_id, post_id,
{_curve_sql("channel")},
{_curve_sql("band")}
FROM features.post_features
WINDOW
    channel AS (PARTITION BY channel_id ORDER BY published_at
                RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '48 hours 5 minutes' PRECEDING),
    band AS (PARTITION BY channel_id, hour // {HOUR_BAND} ORDER BY published_at
             RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL '48 hours 5 minutes' PRECEDING)
"""
"""Per post of ``features.post_features``: its ``CURVE_COLUMNS`` (NULL with fewer than
``MIN_CURVE_POSTS`` earlier posts). Join it on (channel_id, post_id) to score posts."""

CHANNEL_CURVE_AT_SQL = (
    "SELECT "
    + ", ".join(
        f"CASE WHEN count(views_{h}h) >= {MIN_CURVE_POSTS} THEN "
        f"avg(ln(1 + views_48h) - ln(1 + views_{h}h)) END" for h in CURVE_HOURS)
    + ", "
    + ", ".join(
        f"CASE WHEN count(views_{h}h) FILTER (WHERE hour // {HOUR_BAND} = $hour // {HOUR_BAND})"
        f" >= {MIN_CURVE_POSTS} THEN avg(ln(1 + views_48h) - ln(1 + views_{h}h))"
        f" FILTER (WHERE hour // {HOUR_BAND} = $hour // {HOUR_BAND}) END" for h in CURVE_HOURS)
    + " FROM features.post_features WHERE channel_id = $channel AND views_48h IS NOT NULL"
      " AND published_at <= CAST($at AS TIMESTAMP) - INTERVAL '48 hours 5 minutes'"
)


def channel_curve_at(conn: duckdb.DuckDBPyConnection, channel_id: int, published_at,
                     hour: int) -> dict[str, float]:
    """``CURVE_COLUMNS`` for one post (or draft) of ``channel_id`` published at
    ``published_at`` in UTC hour ``hour``, from the warehouse as it is now."""
    row = conn.execute(CHANNEL_CURVE_AT_SQL, {"channel": int(channel_id), "hour": int(hour),
                                              "at": str(pd.Timestamp(published_at))}).fetchall()
    values = row[0] if row else (None,) * len(CURVE_COLUMNS)
    return {c: np.nan if v is None else float(v)
            for c, v in zip(CURVE_COLUMNS, values, strict=True)}


def with_channel_curves(conn: duckdb.DuckDBPyConnection, posts: pd.DataFrame) -> pd.DataFrame:
    """``posts`` (channel_id, post_id, published_at, hour, ...) with ``CURVE_COLUMNS``
    added, as known at each post's publication: from ``CHANNEL_CURVE_SQL`` for posts in
    ``features.post_features``, from ``channel_curve_at`` for the others (drafts)."""
    keys = ["channel_id", "post_id"]
    base = posts.drop(columns=[c for c in CURVE_COLUMNS if c in posts.columns])
    channels = sorted({int(c) for c in base["channel_id"]})
    curves = conn.execute(
        f"SELECT * FROM ({CHANNEL_CURVE_SQL}) WHERE list_contains(?::BIGINT[], channel_id)",
        [channels]).df()
    out = base.merge(curves.assign(_known=True), on=keys, how="left")
    for i in np.flatnonzero(out["_known"].isna().to_numpy()):
        row = out.iloc[i]
        at = channel_curve_at(conn, row["channel_id"], row["published_at"], row["hour"])
        for column, value in at.items():
            out.iloc[i, out.columns.get_loc(column)] = value
    return out.drop(columns="_known")


POSTS_SQL = """
SELECT p.channel_id, p.post_id, p.published_at, p.weekday, p.hour, p.media_type,
       p.text_length, p.subscribers_at_publish, p.channel_prior_posts_48h,
       p.channel_prior_median_views_48h, c.* EXCLUDE (channel_id, post_id),
       p.views_1h, p.views_3h, p.views_6h, p.views_12h, p.views_48h, p.interactions_48h,
       p.view_percentile_48h, p.above_channel_median
FROM features.post_features AS p
JOIN (""" + CHANNEL_CURVE_SQL + """) AS c USING (channel_id, post_id)
WHERE p.views_48h IS NOT NULL
ORDER BY p.published_at, p.channel_id, p.post_id
"""

TRAJECTORY_SQL = """
SELECT t.channel_id, t.post_id, t.age_minutes, t.views, t.forwards, t.replies, t.reactions
FROM features.post_trajectories AS t
SEMI JOIN features.post_features AS p
    ON t.channel_id = p.channel_id AND t.post_id = p.post_id AND p.views_48h IS NOT NULL
"""


# ----------------------------------------------------------------------- features


def _log1p(values) -> np.ndarray:
    return np.log1p(np.clip(np.asarray(values, dtype=np.float64), 0, None))


def static_features(posts: pd.DataFrame) -> np.ndarray:
    """(N, len(STATIC_FEATURES)) context known at publication; missing values -> 0 + flag.

    ``posts`` holds the columns of ``features.post_features`` read in ``POSTS_SQL`` and
    the ``CURVE_COLUMNS`` (join ``CHANNEL_CURVE_SQL``, or ``channel_curve_at`` for one
    post). A missing band value falls back to the channel's, then to 0 with a flag.
    """
    missing = [c for c in CURVE_COLUMNS if c not in posts.columns]
    if missing:
        raise KeyError(f"static_features needs {missing}: join CHANNEL_CURVE_SQL on "
                       "(channel_id, post_id) or use channel_curve_at for a single post")
    published = pd.to_datetime(posts["published_at"])
    hour = (published.dt.hour + published.dt.minute / 60.0).to_numpy()
    weekday = posts["weekday"].to_numpy(dtype=np.float64)
    media = posts["media_type"].fillna("other").where(posts["media_type"].isin(MEDIA), "other")
    subscribers = posts["subscribers_at_publish"].to_numpy(dtype=np.float64)
    median = posts["channel_prior_median_views_48h"].to_numpy(dtype=np.float64)
    columns = {
        "hour_sin": np.sin(2 * np.pi * hour / 24),
        "hour_cos": np.cos(2 * np.pi * hour / 24),
        "weekday_sin": np.sin(2 * np.pi * weekday / 7),
        "weekday_cos": np.cos(2 * np.pi * weekday / 7),
        **{f"media_{m}": (media == m).to_numpy(dtype=np.float64) for m in MEDIA},
        "log_text_length": _log1p(posts["text_length"].fillna(0)),
        "log_subscribers": np.nan_to_num(_log1p(subscribers)),
        "has_subscribers": np.isfinite(subscribers).astype(np.float64),
        "log_channel_median_views": np.nan_to_num(_log1p(median)),
        "has_channel_median": np.isfinite(median).astype(np.float64),
        "log_channel_prior_posts": _log1p(posts["channel_prior_posts_48h"].fillna(0)),
    }
    for h in CURVE_HOURS:
        channel = posts[f"channel_growth_{h}h_48h"].to_numpy(dtype=np.float64)
        band = posts[f"channel_band_growth_{h}h_48h"].to_numpy(dtype=np.float64)
        columns[f"channel_growth_{h}h"] = np.nan_to_num(channel)
        columns[f"band_growth_{h}h"] = np.nan_to_num(np.where(np.isfinite(band), band, channel))
    columns["has_channel_growth"] = np.isfinite(
        posts["channel_growth_3h_48h"].to_numpy(dtype=np.float64)).astype(np.float64)
    return np.stack([columns[name] for name in STATIC_FEATURES], axis=1).astype(np.float32)


def trajectory_counters(posts: pd.DataFrame, trajectories: pd.DataFrame) -> tuple[np.ndarray,
                                                                                     np.ndarray]:
    """(N, T, 4) as-of counters on the grid (forward-filled, NaN before any snapshot) and
    (N,) number of grid points each post has reached."""
    keys = posts[["channel_id", "post_id"]].assign(row=np.arange(len(posts)))
    t = trajectories.merge(keys, on=["channel_id", "post_id"], how="inner")
    rows = t["row"].to_numpy(np.int64)
    steps = np.searchsorted(GRID_MINUTES, t["age_minutes"].to_numpy())
    counters = np.full((len(posts), len(GRID_MINUTES), 4), np.nan)
    counters[rows, steps] = t[["views", "forwards", "replies", "reactions"]].to_numpy(np.float64)
    reached = np.zeros(len(posts), dtype=np.int64)
    np.maximum.at(reached, rows, steps + 1)
    # as-of semantics: a gap inside the reached part repeats the last known value
    for step in range(1, len(GRID_MINUTES)):
        gap = np.isnan(counters[:, step]) & (step < reached)[:, None]
        counters[:, step] = np.where(gap, counters[:, step - 1], counters[:, step])
    return counters, reached


def sequence_features(counters: np.ndarray, posts: pd.DataFrame) -> np.ndarray:
    """(N, T, len(SEQUENCE_FEATURES)) model inputs from the counters (unknown -> 0)."""
    logs = _log1p(np.nan_to_num(counters))
    median = _log1p(posts["channel_prior_median_views_48h"].to_numpy(np.float64))[:, None]
    subscribers = _log1p(posts["subscribers_at_publish"].to_numpy(np.float64))[:, None]
    interactions = _log1p(np.nan_to_num(counters[..., 1:]).sum(axis=-1))
    columns = {
        "log_views": logs[..., 0],
        "log_forwards": logs[..., 1],
        "log_replies": logs[..., 2],
        "log_reactions": logs[..., 3],
        "log_interactions": interactions,
        "views_vs_channel": np.nan_to_num(logs[..., 0] - median),
        "views_vs_subscribers": np.nan_to_num(logs[..., 0] - subscribers),
        "age_hours": np.broadcast_to(GRID_MINUTES / 720.0, logs.shape[:2]),
    }
    return np.stack([columns[name] for name in SEQUENCE_FEATURES], axis=-1).astype(np.float32)


def prior_percentile(posts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Mid-rank percentile of each post's 48 h views among its channel's posts published
    >= 48 h 5 min earlier (what was known at publication), and how many there were."""
    percentile = np.full(len(posts), np.nan)
    count = np.zeros(len(posts), dtype=np.int64)
    published = posts["published_at"].to_numpy("datetime64[s]")
    views = posts["views_48h"].to_numpy(np.float64)
    horizon = np.timedelta64(48 * 3600 + 300, "s")
    for _, rows in posts.groupby("channel_id", sort=False).indices.items():
        rows = rows[np.argsort(published[rows], kind="stable")]
        known = np.searchsorted(published[rows], published[rows] - horizon, side="right")
        history: list[float] = []
        added = 0
        for i, row in enumerate(rows):
            while added < known[i]:
                history.insert(int(np.searchsorted(history, views[rows[added]])),
                               views[rows[added]])
                added += 1
            if added:
                below = np.searchsorted(history, views[row], side="left")
                equal = np.searchsorted(history, views[row], side="right") - below
                percentile[row] = (below + 0.5 * equal) / added
            count[row] = added
    return percentile, count


# -------------------------------------------------------------------------- loss


def step_weights(n_steps: int = len(GRID_MINUTES), other: float | None = None) -> torch.Tensor:
    """Loss weight of each grid step: 1 at 1/3/6/12 h, ``other`` at the ages between."""
    weights = torch.full((n_steps,), OTHER_AGES_WEIGHT if other is None else other)
    weights[[LENGTHS[h] - 1 for h in HOURS if LENGTHS[h] <= n_steps]] = 1.0
    return weights


def _pinball(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, T) pinball loss summed over the quantiles; ``target`` is (N,)."""
    q = torch.tensor(QUANTILES, device=predicted.device, dtype=predicted.dtype)
    diff = target.view(-1, 1, 1) - predicted
    return torch.maximum(q * diff, (q - 1) * diff).sum(dim=-1)


def _weighted_mean(loss: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (loss * weight).sum() / weight.sum().clamp_min(1e-6)


def engagement_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """BCE of the score vs the percentile target + pinball of both 48 h quantile heads,
    at every observed age of every post at once (see ``forward_steps``)."""
    sequence = batch["sequence"]
    score, log_views, log_interactions = model.forward_steps(
        sequence=sequence, static=batch["static"])
    steps = torch.arange(sequence.shape[1], device=sequence.device)[None, :]
    observed = (steps < batch["length"].view(-1, 1)).to(score.dtype)
    weight = observed * step_weights(sequence.shape[1]).to(score.device)
    bce = F.binary_cross_entropy(
        score.clamp(1e-6, 1 - 1e-6),
        batch["score_target"].view(-1, 1).expand_as(score), reduction="none")
    return (
        _weighted_mean(bce, weight * batch["score_weight"].view(-1, 1))
        + _weighted_mean(_pinball(log_views, batch["log_views_48h"]), weight)
        + _weighted_mean(_pinball(log_interactions, batch["log_interactions_48h"]),
                         weight * batch["interactions_weight"].view(-1, 1))
    )


# -------------------------------------------------------------------------- task


def _split_arrays(posts: pd.DataFrame, sequence: np.ndarray, length: np.ndarray,
                  static: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    p = posts.iloc[rows]
    target = p["score_target"].to_numpy(np.float64)
    interactions = p["interactions_48h"].to_numpy(np.float64)
    return {
        "sequence": sequence[rows],
        "length": length[rows],
        "static": static[rows],
        "score_target": np.nan_to_num(target, nan=0.5).astype(np.float32),
        "score_weight": np.isfinite(target).astype(np.float32),
        "log_views_48h": _log1p(p["views_48h"]).astype(np.float32),
        "log_interactions_48h": np.nan_to_num(_log1p(interactions)).astype(np.float32),
        "interactions_weight": np.isfinite(interactions).astype(np.float32),
        # evaluation and baseline only (not model inputs)
        "channel_id": p["channel_id"].to_numpy(np.int64),
        "published_at": p["published_at"].to_numpy("datetime64[s]").astype(np.int64),
        "views_48h": p["views_48h"].to_numpy(np.float64),
        "interactions_48h": interactions,
        "view_percentile_48h": p["view_percentile_48h"].to_numpy(np.float64),
        "above_median": p["above_channel_median"].fillna(False).to_numpy(bool),
        **{f"views_{h}h": p[f"views_{h}h"].to_numpy(np.float64) for h in HOURS},
    }


def predict(model: nn.Module, split: dict[str, np.ndarray], hours: int,
            batch_size: int = 2048) -> dict[str, np.ndarray]:
    """Score every post of ``split`` as if it were ``hours`` old."""
    model.eval()
    device = next(model.parameters()).device
    length = np.minimum(split["length"], LENGTHS[hours])
    parts: list[tuple[np.ndarray, ...]] = []
    with torch.no_grad():
        for start in range(0, len(length), batch_size):
            sl = slice(start, start + batch_size)
            out = model(sequence=torch.as_tensor(split["sequence"][sl], device=device),
                        length=torch.as_tensor(length[sl], device=device),
                        static=torch.as_tensor(split["static"][sl], device=device))
            parts.append(tuple(t.float().cpu().numpy() for t in out))
    score, views, interactions = (np.concatenate(p) for p in zip(*parts, strict=True))
    return {"score": score, "log_views": views, "log_interactions": interactions}


def _mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    keep = np.isfinite(actual) & (actual > 0)
    return float(np.mean(np.abs(predicted[keep] - actual[keep]) / actual[keep]))


class EngagementTask(ModelTask):
    name = "engagement"
    registered_model = "channel_pulse_engagement"
    primary_metric = "accuracy_3h"
    higher_is_better = True

    # ------------------------------------------------------------------ data
    def load(self, conn: duckdb.DuckDBPyConnection) -> PreparedData:
        try:
            posts = conn.execute(POSTS_SQL).df()
            trajectories = conn.execute(TRAJECTORY_SQL).df()
        except duckdb.CatalogException as exc:
            raise InsufficientData(f"engagement: feature tables missing ({exc})") from exc
        if len(posts) < sum(MIN_POSTS.values()):
            raise InsufficientData(
                f"engagement: {len(posts)} posts with known 48 h views; need at least "
                f"{sum(MIN_POSTS.values())} for train/validation/holdout by time"
            )
        counters, length = trajectory_counters(posts, trajectories)
        posts["score_target"], posts["prior_posts"] = prior_percentile(posts)
        posts.loc[posts["prior_posts"] < MIN_PRIOR_POSTS, "score_target"] = np.nan
        sequence = sequence_features(counters, posts)
        static = static_features(posts)

        t = posts["published_at"].to_numpy("datetime64[s]").astype(np.int64)
        t0, t1 = int(t.min()), int(t.max())
        holdout_from = t0 + (1 - HOLDOUT_SHARE) * (t1 - t0)
        val_from = t0 + (1 - HOLDOUT_SHARE - VALIDATION_SHARE) * (t1 - t0)
        observed = length > 0
        rows = {
            "train": np.flatnonzero(observed & (t < val_from)),
            "val": np.flatnonzero(observed & (t >= val_from) & (t < holdout_from)),
            "holdout": np.flatnonzero(observed & (t >= holdout_from)),
        }
        for split, need in MIN_POSTS.items():
            if len(rows[split]) < need:
                raise InsufficientData(
                    f"engagement: {len(rows[split])} {split} posts with a trajectory "
                    f"(need {need}); the warehouse covers too little time"
                )
        trained = np.isfinite(posts["score_target"].to_numpy()[rows["train"]]).sum()
        if trained < MIN_POSTS["train"] // 2:
            raise InsufficientData(
                f"engagement: only {trained} training posts have >= {MIN_PRIOR_POSTS} "
                "earlier posts of their channel to rank against"
            )
        holdout_labels = posts["above_channel_median"].to_numpy()[rows["holdout"]]
        if len(np.unique(holdout_labels.astype(bool))) < 2:
            raise InsufficientData("engagement: the holdout has only one class of "
                                   "above_channel_median; accuracy would be meaningless")
        splits = {k: _split_arrays(posts, sequence, length, static, v) for k, v in rows.items()}
        fmt = lambda s: str(np.datetime64(int(s), "s"))  # noqa: E731
        info = {
            "posts": len(posts), "channels": int(posts["channel_id"].nunique()),
            "train_posts": len(rows["train"]), "val_posts": len(rows["val"]),
            "holdout_posts": len(rows["holdout"]),
            "val_from": fmt(val_from), "holdout_from": fmt(holdout_from), "data_until": fmt(t1),
            "holdout_above_median_share": float(holdout_labels.astype(bool).mean()),
            "score_target": "percentile among the channel's posts known at publication",
        }
        return PreparedData(splits["train"], splits["val"], splits["holdout"], info)

    # ----------------------------------------------------------------- model
    def default_params(self) -> dict[str, Any]:
        return {"hidden": 128, "layers": 2, "dropout": 0.2, "dense": 64, "dense2": 32,
                "lr": 2e-3, "weight_decay": 1e-4, "batch_size": 64}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        params = self.default_params()
        params.update(
            hidden=trial.suggest_categorical("hidden", [64, 128]),
            dropout=trial.suggest_float("dropout", 0.1, 0.3),
            lr=trial.suggest_float("lr", 1e-3, 4e-3, log=True),
            weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        )
        return params

    def build(self, params: dict[str, Any]) -> EngagementPredictor:
        return EngagementPredictor(hidden=params["hidden"], layers=params["layers"],
                                   dropout=params["dropout"], dense=params["dense"],
                                   dense2=params["dense2"])

    def train(self, params: dict[str, Any], data: PreparedData, choice: DeviceChoice,
              max_epochs: int, seed: int, on_epoch=None) -> TrainResult:
        seed_everything(seed)
        model = self.build(params)
        model.set_normalisation(*(torch.as_tensor(data.train[k]) for k in MODEL_INPUTS))
        cfg = TrainConfig(max_epochs=min(max_epochs, EPOCH_CAP), lr=params["lr"],
                          weight_decay=params["weight_decay"], batch_size=params["batch_size"],
                          patience=2, seed=seed)
        train = {k: data.train[k] for k in TRAIN_ARRAYS}
        val = {k: data.val[k] for k in TRAIN_ARRAYS}
        return fit(model, train, val, engagement_loss, cfg, choice, on_epoch)

    # ------------------------------------------------------------ evaluation
    def evaluate(self, model: nn.Module, data: PreparedData) -> dict[str, float]:
        h = data.holdout
        out: dict[str, float] = {}
        for hours in HOURS:
            pred = predict(model, h, hours)
            views = np.expm1(pred["log_views"])
            out[f"accuracy_{hours}h"] = M.median_split_accuracy(h["above_median"], pred["score"])
            out[f"views_mape_{hours}h"] = _mape(h["views_48h"], views[:, 1])
            out[f"views_coverage_80_{hours}h"] = M.interval_coverage(
                h["views_48h"], views[:, 0], views[:, 2])
            known = np.isfinite(h["interactions_48h"])
            inter = np.expm1(pred["log_interactions"])[known]
            out[f"interactions_coverage_80_{hours}h"] = M.interval_coverage(
                h["interactions_48h"][known], inter[:, 0], inter[:, 2])
            out[f"score_percentile_mae_{hours}h"] = float(
                np.nanmean(np.abs(pred["score"] - h["view_percentile_48h"])))
        return out

    def baseline(self, data: PreparedData) -> dict[str, float]:
        tr, h = data.train, data.holdout
        out: dict[str, float] = {}
        for hours in HOURS:
            key = f"views_{hours}h"
            model = LogLinearExtrapolation().fit(tr["channel_id"], tr[key], tr["views_48h"])
            above = model.above_median(h["channel_id"], h[key])
            out[f"baseline_accuracy_{hours}h"] = float((above == h["above_median"]).mean())
            out[f"baseline_views_mape_{hours}h"] = _mape(
                h["views_48h"], model.predict_views(h["channel_id"], h[key]))
        return out

    def gates(self, metrics: dict[str, float], baseline: dict[str, float]) -> list[Gate]:
        acc, base = metrics["accuracy_3h"], baseline["baseline_accuracy_3h"]
        return [
            Gate("accuracy_3h_min", acc >= ACCURACY_THRESHOLD, acc, ACCURACY_THRESHOLD,
                 "above/below channel median from the first 3 h, accuracy >= 0.80"),
            Gate("accuracy_3h_vs_baseline", acc >= base, acc, base,
                 f"accuracy_3h >= {BASELINE_NAME} baseline on the same holdout",
                 kind="baseline"),
        ]

    # ------------------------------------------------------------- reporting
    def plots(self, model: nn.Module, data: PreparedData, result: TrainResult) -> dict:
        h = data.holdout
        pred = predict(model, h, 3)
        return {
            "score_calibration_3h": plots.calibration_plot(
                h["above_median"].astype(float), pred["score"],
                "engagement score at 3 h vs share above channel median"),
            "views_48h_predicted_vs_actual_3h": plots.scatter_plot(
                h["views_48h"], np.expm1(pred["log_views"][:, 1]),
                "48 h views: p50 predicted at 3 h vs actual"),
        }

    def input_example(self, data: PreparedData) -> dict[str, np.ndarray]:
        h = data.holdout
        return {"sequence": h["sequence"][:3],
                "length": np.minimum(h["length"][:3], LENGTHS[3]),
                "static": h["static"][:3]}

    def onnx_examples(self, data: PreparedData) -> list[dict[str, np.ndarray]]:
        """Posts at every card age, and sequences cut to fewer grid steps."""
        h = data.holdout
        out = []
        for n, hours in ((1, 1), (3, 3), (5, 6), (4, 12)):
            out.append({"sequence": h["sequence"][:n],
                        "length": np.minimum(h["length"][:n], LENGTHS[hours]),
                        "static": h["static"][:n]})
        short = LENGTHS[3]
        out.append({"sequence": np.ascontiguousarray(h["sequence"][:2, :short]),
                    "length": np.minimum(h["length"][:2], short), "static": h["static"][:2]})
        return out
