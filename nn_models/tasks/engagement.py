"""Engagement task: score a post from everything observed of it so far (DESIGN §4,
model card "engagement").

Data: ``features.post_features`` (context, targets) and ``features.post_trajectories``
(the counters on the grid: every 15 min to 3 h, hourly to 24 h, then 30/36/42 h, i.e.
every snapshot a collector takes before the 48 h value). Posts whose 48 h views are
known are split by publish time: holdout = the latest ~15 % of the time span,
validation = the ~15 % before it, training = everything earlier. The smallest history
the model learns from is ``MIN_POSTS``: 100 / 20 / 20 such posts in the three periods.

One model scores posts of any age. The LSTM is causal, so one pass over a post's
trajectory yields its prediction after every grid step, i.e. for every truncation of
the sequence at once; the loss averages them with the three age buckets (<= 3 h,
3-12 h, 12-48 h) weighted equally. Every step also carries the channel-growth rule's
own reading of it (the latest views plus the channel's usual log growth from that age
to 48 h, measured on its posts >= 48 h 5 min older, against the channel's prior
median), so a post observed for 36 h is read from its 36 h snapshot and the model
starts from what the strongest baseline knows.

Labels and gates. The holdout is scored at every grid age it has an as-of view count
for (as the forecast table scores live posts of every age); an example's bucket is the
age at which it is scored. Per bucket: accuracy of above/below
``channel_prior_median_views_48h`` (the warehouse's backward-looking
``above_channel_median``; posts without it are left out) >= ``ACCURACY_THRESHOLD``, and
model - strongest baseline (``nn_models.baselines_engagement``: the channel-growth rule
and Szabo–Huberman, tuned and chosen per bucket on validation only) with a paired
bootstrap 90 % interval whose lower bound is >= 0. The bootstrap resamples whole
channels when the holdout has >= ``MIN_BOOTSTRAP_CHANNELS`` of them, else whole posts
(the ages of one post are never independent).

Engagement-score target: the percentile of the post's 48 h views among its channel's
posts known at publication within 90 days (the set behind
``channel_prior_median_views_48h``), so score > 0.5 is the label's "above the median";
posts with fewer than ``MIN_PRIOR_POSTS`` such posts do not train the score head.
"""

from __future__ import annotations

import bisect
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
from nn_models.baselines_engagement import (
    BUCKETS,
    LABELS,
    RULES,
    EngagementBaselines,
    GridPosts,
    bucket_of,
    fit_baselines,
    prior_growth,
    shrunk_growth,
)
from nn_models.device import DeviceChoice
from nn_models.metrics import Margin, bootstrap_margin
from nn_models.models.engagement import (
    QUANTILES,
    SEQUENCE_FEATURES,
    STATIC_FEATURES,
    EngagementPredictor,
)
from nn_models.task import Gate, InsufficientData, ModelTask, PreparedData
from nn_models.training import TrainConfig, TrainResult, fit, seed_everything
from warehouse.features import TRAJECTORY_GRID_MINUTES

# The grid of features.post_trajectories.
GRID_MINUTES = np.array(TRAJECTORY_GRID_MINUTES)
HOURS = (1, 3, 6, 12, 24)  # card ages reported one by one
LENGTHS = {h: int((GRID_MINUTES <= h * 60).sum()) for h in HOURS}  # 1 h -> 4 points ...
STEP_BUCKET = bucket_of(GRID_MINUTES)  # index into BUCKETS of every grid step
MEDIA = ("none", "photo", "video", "document", "poll", "other")

HOLDOUT_SHARE = 0.15
VALIDATION_SHARE = 0.15
PRIOR_WINDOW_DAYS = 90  # the label's trailing window (post_features.sql)
MIN_PRIOR_POSTS = 10  # prior posts needed before a post trains the score head
# Smallest history the model learns from: posts with a known 48 h count per period.
MIN_POSTS = {"train": 100, "val": 20, "holdout": 20}
MODEL_GROWTH_SHRINK = 3.0  # pseudo-posts of the all-channel growth in the model's input
MIN_BOOTSTRAP_CHANNELS = 10  # resample channels from this many, else posts
N_BOOT = 500
BOOTSTRAP_LEVEL = 0.90
BOOTSTRAP_SEED = 0
# At batch 64 every epoch is ~120 updates on the demo data and the validation loss
# flattens after 3-5 epochs; more epochs cost LSTM CPU time for < 0.01 of loss.
EPOCH_CAP = 6
ACCURACY_THRESHOLD = 0.80

MODEL_INPUTS = ("sequence", "length", "static")
TRAIN_ARRAYS = (
    *MODEL_INPUTS,
    "score_target",
    "score_weight",
    "log_views_48h",
    "log_interactions_48h",
    "interactions_weight",
)

# How the channel's earlier posts grew from h hours to 48 h: the mean of
# ln(1 + views_48h) - ln(1 + views_h) over the channel's posts published at least
# 48 h 5 min before this one (known at publication, as channel_prior_median_views_48h),
# over all of them and over those published in the same 3-hour UTC band of the day
# (the audience's daily rhythm: a 23:00 post gathers its views the next morning).
CURVE_HOURS = (1, 3, 6, 12)
HOUR_BAND = 3
MIN_CURVE_POSTS = 3
CURVE_COLUMNS: tuple[str, ...] = tuple(
    f"channel_{scope}growth_{h}h_48h" for scope in ("", "band_") for h in CURVE_HOURS
)


def _curve_sql(window: str) -> str:
    return ",\n".join(
        f"CASE WHEN count(views_{h}h) FILTER (WHERE views_48h IS NOT NULL) OVER {window}"
        f" >= {MIN_CURVE_POSTS} THEN avg(ln(1 + views_48h) - ln(1 + views_{h}h)) OVER {window}"
        f" END AS channel_{'band_' if window == 'band' else ''}growth_{h}h_48h"
        for h in CURVE_HOURS
    )


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
        f"avg(ln(1 + views_48h) - ln(1 + views_{h}h)) END"
        for h in CURVE_HOURS
    )
    + ", "
    + ", ".join(
        f"CASE WHEN count(views_{h}h) FILTER (WHERE hour // {HOUR_BAND} = $hour // {HOUR_BAND})"
        f" >= {MIN_CURVE_POSTS} THEN avg(ln(1 + views_48h) - ln(1 + views_{h}h))"
        f" FILTER (WHERE hour // {HOUR_BAND} = $hour // {HOUR_BAND}) END"
        for h in CURVE_HOURS
    )
    + " FROM features.post_features WHERE channel_id = $channel AND views_48h IS NOT NULL"
    " AND published_at <= CAST($at AS TIMESTAMP) - INTERVAL '48 hours 5 minutes'"
)


def channel_curve_at(
    conn: duckdb.DuckDBPyConnection, channel_id: int, published_at, hour: int
) -> dict[str, float]:
    """``CURVE_COLUMNS`` for one post (or draft) of ``channel_id`` published at
    ``published_at`` in UTC hour ``hour``, from the warehouse as it is now."""
    row = conn.execute(
        CHANNEL_CURVE_AT_SQL,
        {"channel": int(channel_id), "hour": int(hour), "at": str(pd.Timestamp(published_at))},
    ).fetchall()
    values = row[0] if row else (None,) * len(CURVE_COLUMNS)
    return {c: np.nan if v is None else float(v) for c, v in zip(CURVE_COLUMNS, values, strict=True)}


def with_channel_curves(conn: duckdb.DuckDBPyConnection, posts: pd.DataFrame) -> pd.DataFrame:
    """``posts`` (channel_id, post_id, published_at, hour, ...) with ``CURVE_COLUMNS``
    added, as known at each post's publication: from ``CHANNEL_CURVE_SQL`` for posts in
    ``features.post_features``, from ``channel_curve_at`` for the others (drafts)."""
    keys = ["channel_id", "post_id"]
    base = posts.drop(columns=[c for c in CURVE_COLUMNS if c in posts.columns])
    channels = sorted({int(c) for c in base["channel_id"]})
    curves = conn.execute(
        f"SELECT * FROM ({CHANNEL_CURVE_SQL}) WHERE list_contains(?::BIGINT[], channel_id)", [channels]
    ).df()
    out = base.merge(curves.assign(_known=True), on=keys, how="left")
    for i in np.flatnonzero(out["_known"].isna().to_numpy()):
        row = out.iloc[i]
        at = channel_curve_at(conn, row["channel_id"], row["published_at"], row["hour"])
        for column, value in at.items():
            out.iloc[i, out.columns.get_loc(column)] = value
    return out.drop(columns="_known")


POSTS_SQL = (
    """
SELECT p.channel_id, p.post_id, p.published_at, p.weekday, p.hour, p.media_type,
       p.text_length, p.subscribers_at_publish, p.channel_prior_posts_48h,
       p.channel_prior_median_views_48h, c.* EXCLUDE (channel_id, post_id),
       p.views_1h, p.views_3h, p.views_6h, p.views_12h, p.views_24h, p.views_48h,
       p.interactions_48h, p.view_percentile_48h, p.above_channel_median
FROM features.post_features AS p
JOIN ("""
    + CHANNEL_CURVE_SQL
    + """) AS c USING (channel_id, post_id)
WHERE p.views_48h IS NOT NULL
ORDER BY p.published_at, p.channel_id, p.post_id
"""
)
"""Every post with a known 48 h count: the model's examples and every rule's history."""

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
        raise KeyError(
            f"static_features needs {missing}: join CHANNEL_CURVE_SQL on "
            "(channel_id, post_id) or use channel_curve_at for a single post"
        )
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
        posts["channel_growth_3h_48h"].to_numpy(dtype=np.float64)
    ).astype(np.float64)
    return np.stack([columns[name] for name in STATIC_FEATURES], axis=1).astype(np.float32)


def trajectory_counters(posts: pd.DataFrame, trajectories: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
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


def grid_posts(posts: pd.DataFrame, counters: np.ndarray) -> GridPosts:
    """``posts`` (columns of ``features.post_features``) and their as-of ``counters``
    (``trajectory_counters``) as the rules' ``GridPosts`` (NaN = not known at that age)."""
    inter = counters[..., 1:].sum(axis=-1)  # NaN when any counter is unknown
    views_48h = (
        posts["views_48h"].to_numpy(np.float64) if "views_48h" in posts else np.full(len(posts), np.nan)
    )
    inter_48h = (
        posts["interactions_48h"].to_numpy(np.float64)
        if "interactions_48h" in posts
        else np.full(len(posts), np.nan)
    )
    return GridPosts(
        channel_id=posts["channel_id"].to_numpy(np.int64),
        published_s=pd.to_datetime(posts["published_at"]).to_numpy("datetime64[s]").astype(np.int64),
        log_views=np.log1p(np.clip(counters[..., 0], 0, None)),
        log_interactions=np.log1p(np.clip(inter, 0, None)),
        log_median=np.log1p(np.clip(posts["channel_prior_median_views_48h"].to_numpy(np.float64), 0, None)),
        log_views_48h=np.log1p(np.clip(views_48h, 0, None)),
        log_interactions_48h=np.log1p(np.clip(inter_48h, 0, None)),
        above=posts["above_channel_median"].astype("float64").to_numpy()
        if "above_channel_median" in posts
        else None,
    )


def model_growth(history: GridPosts, targets: GridPosts) -> np.ndarray:
    """(N, T) the channel's usual log growth from each grid age to 48 h, as the model
    reads it: its posts >= 48 h 5 min older than the target, shrunk toward every
    channel's with ``MODEL_GROWTH_SHRINK`` pseudo-posts (a fixed rule, so the model's
    inputs never depend on the baselines' validation tuning)."""
    return shrunk_growth(prior_growth(history, targets, "views"), MODEL_GROWTH_SHRINK)


def sequence_features(counters: np.ndarray, posts: pd.DataFrame, growth: np.ndarray) -> np.ndarray:
    """(N, T, len(SEQUENCE_FEATURES)) model inputs from the counters and the channel's
    growth to 48 h at every grid age (``model_growth``); unknown -> 0."""
    logs = _log1p(np.nan_to_num(counters))
    median = _log1p(posts["channel_prior_median_views_48h"].to_numpy(np.float64))[:, None]
    subscribers = _log1p(posts["subscribers_at_publish"].to_numpy(np.float64))[:, None]
    interactions = _log1p(np.nan_to_num(counters[..., 1:]).sum(axis=-1))
    known = np.isfinite(counters[..., 0])
    columns = {
        "log_views": logs[..., 0],
        "log_forwards": logs[..., 1],
        "log_replies": logs[..., 2],
        "log_reactions": logs[..., 3],
        "log_interactions": interactions,
        "views_vs_channel": np.nan_to_num(logs[..., 0] - median),
        "views_vs_subscribers": np.nan_to_num(logs[..., 0] - subscribers),
        "age_hours": np.broadcast_to(GRID_MINUTES / 720.0, logs.shape[:2]),
        "channel_growth_to_48h": np.nan_to_num(growth),
        "rule_vs_channel": np.where(known, np.nan_to_num(logs[..., 0] + growth - median), 0.0),
    }
    return np.stack([columns[name] for name in SEQUENCE_FEATURES], axis=-1).astype(np.float32)


def prior_percentile(
    posts: pd.DataFrame, window_days: int = PRIOR_WINDOW_DAYS
) -> tuple[np.ndarray, np.ndarray]:
    """Mid-rank percentile of each post's 48 h views among its channel's posts published
    >= 48 h 5 min earlier and within ``window_days`` (what was known at publication, the
    set behind ``channel_prior_median_views_48h``), and how many there were."""
    percentile = np.full(len(posts), np.nan)
    count = np.zeros(len(posts), dtype=np.int64)
    published = posts["published_at"].to_numpy("datetime64[s]")
    views = posts["views_48h"].to_numpy(np.float64)
    horizon = np.timedelta64(48 * 3600 + 300, "s")
    window = np.timedelta64(window_days * 86400, "s")
    for _, rows in posts.groupby("channel_id", sort=False).indices.items():
        rows = rows[np.argsort(published[rows], kind="stable")]
        known = np.searchsorted(published[rows], published[rows] - horizon, side="right")
        # the label's window includes a post exactly 90 days older (RANGE ... PRECEDING)
        expired = np.searchsorted(published[rows], published[rows] - window, side="left")
        history: list[float] = []
        added = dropped = 0
        for i, row in enumerate(rows):
            while added < known[i]:
                bisect.insort(history, views[rows[added]])
                added += 1
            while dropped < min(expired[i], added):
                del history[bisect.bisect_left(history, views[rows[dropped]])]
                dropped += 1
            if history:
                below = bisect.bisect_left(history, views[row])
                equal = bisect.bisect_right(history, views[row]) - below
                percentile[row] = (below + 0.5 * equal) / len(history)
            count[row] = len(history)
    return percentile, count


# -------------------------------------------------------------------------- loss


def step_weights(n_steps: int = len(GRID_MINUTES)) -> torch.Tensor:
    """Loss weight of each grid step: every age bucket weighs the same in total."""
    buckets = STEP_BUCKET[:n_steps]
    sizes = np.bincount(buckets, minlength=len(BUCKETS))
    return torch.as_tensor(1.0 / sizes[buckets], dtype=torch.float32)


def _pinball(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, T) pinball loss summed over the quantiles; ``target`` is (N,)."""
    q = torch.tensor(QUANTILES, device=predicted.device, dtype=predicted.dtype)
    diff = target.view(-1, 1, 1) - predicted
    return torch.maximum(q * diff, (q - 1) * diff).sum(dim=-1)


def _weighted_mean(loss: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (loss * weight).sum() / weight.sum().clamp_min(1e-6)


def engagement_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """BCE of the score vs the percentile target + pinball of both 48 h quantile heads,
    at every observed age of every post at once (see ``forward_steps``).

    The grid steps after the batch's longest observed trajectory weigh 0, so they are cut
    before the LSTM runs (the LSTM is causal: the kept steps' outputs are unchanged). On
    the demo world, where trajectories reach 12 h, this skips 15 of the 36 steps."""
    full_steps = batch["sequence"].shape[1]
    keep = max(1, min(full_steps, int(batch["length"].max())))
    sequence = batch["sequence"][:, :keep]
    score, log_views, log_interactions = model.forward_steps(sequence=sequence, static=batch["static"])
    steps = torch.arange(keep, device=sequence.device)[None, :]
    observed = (steps < batch["length"].view(-1, 1)).to(score.dtype)
    # the weights of the full grid (every bucket weighs the same), cut like the sequence
    weight = observed * step_weights(full_steps)[:keep].to(score.device)
    bce = F.binary_cross_entropy(
        score.clamp(1e-6, 1 - 1e-6), batch["score_target"].view(-1, 1).expand_as(score), reduction="none"
    )
    return (
        _weighted_mean(bce, weight * batch["score_weight"].view(-1, 1))
        + _weighted_mean(_pinball(log_views, batch["log_views_48h"]), weight)
        + _weighted_mean(
            _pinball(log_interactions, batch["log_interactions_48h"]),
            weight * batch["interactions_weight"].view(-1, 1),
        )
    )


# -------------------------------------------------------------------------- task


def _split_arrays(
    posts: pd.DataFrame,
    sequence: np.ndarray,
    length: np.ndarray,
    static: np.ndarray,
    grid: GridPosts,
    rows: np.ndarray,
) -> dict[str, np.ndarray]:
    p = posts.iloc[rows]
    target = p["score_target"].to_numpy(np.float64)
    interactions = p["interactions_48h"].to_numpy(np.float64)
    label = p["above_channel_median"].astype("float64").to_numpy()  # NaN = no label
    steps = np.arange(len(GRID_MINUTES))[None, :]
    scored = (steps < length[rows, None]) & np.isfinite(grid.log_views[rows]) & np.isfinite(label)[:, None]
    return {
        "sequence": sequence[rows],
        "length": length[rows],
        "static": static[rows],
        "score_target": np.nan_to_num(target, nan=0.5).astype(np.float32),
        "score_weight": np.isfinite(target).astype(np.float32),
        "log_views_48h": _log1p(p["views_48h"]).astype(np.float32),
        "log_interactions_48h": np.nan_to_num(_log1p(interactions)).astype(np.float32),
        "interactions_weight": np.isfinite(interactions).astype(np.float32),
        # evaluation and baselines only (not model inputs)
        "channel_id": p["channel_id"].to_numpy(np.int64),
        "post_id": p["post_id"].to_numpy(np.int64),
        "published_at": p["published_at"].to_numpy("datetime64[s]").astype(np.int64),
        "views_48h": p["views_48h"].to_numpy(np.float64),
        "interactions_48h": interactions,
        "view_percentile_48h": p["view_percentile_48h"].to_numpy(np.float64),
        "above_median": np.nan_to_num(label, nan=0.0).astype(bool),
        "has_label": np.isfinite(label),
        # (N, T): the (post, age) examples scored on the holdout
        "scored": scored,
        "grid_log_views": grid.log_views[rows],
        **{f"views_{h}h": p[f"views_{h}h"].to_numpy(np.float64) for h in HOURS},
    }


def predict(
    model: nn.Module, split: dict[str, np.ndarray], hours: int, batch_size: int = 2048
) -> dict[str, np.ndarray]:
    """Score every post of ``split`` as if it were ``hours`` old."""
    model.eval()
    device = next(model.parameters()).device
    length = np.minimum(split["length"], LENGTHS[hours])
    parts: list[tuple[np.ndarray, ...]] = []
    with torch.no_grad():
        for start in range(0, len(length), batch_size):
            sl = slice(start, start + batch_size)
            out = model(
                sequence=torch.as_tensor(split["sequence"][sl], device=device),
                length=torch.as_tensor(length[sl], device=device),
                static=torch.as_tensor(split["static"][sl], device=device),
            )
            parts.append(tuple(t.float().cpu().numpy() for t in out))
    score, views, interactions = (np.concatenate(p) for p in zip(*parts, strict=True))
    return {"score": score, "log_views": views, "log_interactions": interactions}


def predict_steps(
    model: nn.Module, split: dict[str, np.ndarray], batch_size: int = 1024
) -> dict[str, np.ndarray]:
    """Every post of ``split`` scored at every grid age at once (the LSTM is causal):
    score (N, T), log views and interactions quantiles (N, T, 3)."""
    model.eval()
    device = next(model.parameters()).device
    parts: list[tuple[np.ndarray, ...]] = []
    with torch.no_grad():
        for start in range(0, len(split["length"]), batch_size):
            sl = slice(start, start + batch_size)
            out = model.forward_steps(
                sequence=torch.as_tensor(split["sequence"][sl], device=device),
                static=torch.as_tensor(split["static"][sl], device=device),
            )
            parts.append(tuple(t.float().cpu().numpy() for t in out))
    score, views, interactions = (np.concatenate(p) for p in zip(*parts, strict=True))
    return {"score": score, "log_views": views, "log_interactions": interactions}


def _mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error; NaN (not a numpy warning) when nothing is comparable."""
    keep = np.isfinite(actual) & (actual > 0) & np.isfinite(predicted)
    if not keep.any():
        return float("nan")
    return float(np.mean(np.abs(predicted[keep] - actual[keep]) / actual[keep]))


def _clustered_margin(correct_model: np.ndarray, correct_base: np.ndarray, clusters: np.ndarray) -> Margin:
    """Accuracy margin with a paired bootstrap over whole clusters: per cluster the sums
    of correct examples and the example count, resampled together (ratio estimator;
    the same as resampling the clusters' rows)."""
    labels, index = np.unique(clusters, return_inverse=True)
    n = np.bincount(index, minlength=len(labels)).astype(float)
    ours = np.bincount(index, weights=correct_model.astype(float), minlength=len(labels))
    theirs = np.bincount(index, weights=correct_base.astype(float), minlength=len(labels))
    return bootstrap_margin(
        lambda i: float(ours[i].sum() / max(n[i].sum(), 1.0)),
        lambda i: float(theirs[i].sum() / max(n[i].sum(), 1.0)),
        len(labels),
        higher_is_better=True,
        n_boot=N_BOOT,
        level=BOOTSTRAP_LEVEL,
        seed=BOOTSTRAP_SEED,
    )


def load_labelled(conn: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Posts with a known 48 h count (``POSTS_SQL``), their as-of counters on the grid and
    the grid points they reached; ``InsufficientData`` when the feature tables are missing."""
    try:
        posts = conn.execute(POSTS_SQL).df()
        trajectories = conn.execute(TRAJECTORY_SQL).df()
    except duckdb.CatalogException as exc:
        raise InsufficientData(f"engagement: feature tables missing ({exc})") from exc
    counters, length = trajectory_counters(posts, trajectories)
    return posts, counters, length


def split_by_time(
    published_s: np.ndarray, observed: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Row indices of train / val / holdout by publish time, and the boundaries."""
    t = published_s
    t0, t1 = int(t.min()), int(t.max())
    holdout_from = t0 + (1 - HOLDOUT_SHARE) * (t1 - t0)
    val_from = t0 + (1 - HOLDOUT_SHARE - VALIDATION_SHARE) * (t1 - t0)
    rows = {
        "train": np.flatnonzero(observed & (t < val_from)),
        "val": np.flatnonzero(observed & (t >= val_from) & (t < holdout_from)),
        "holdout": np.flatnonzero(observed & (t >= holdout_from)),
    }
    fmt = lambda s: str(np.datetime64(int(s), "s"))  # noqa: E731
    return rows, {"val_from": fmt(val_from), "holdout_from": fmt(holdout_from), "data_until": fmt(t1)}


class EngagementTask(ModelTask):
    name = "engagement"
    registered_model = "channel_pulse_engagement"
    primary_metric = "accuracy_3h"
    higher_is_better = True

    def __init__(self) -> None:
        self.strongest: dict[str, str] = {}  # bucket -> rule, set by load

    # ------------------------------------------------------------------ data
    def load(self, conn: duckdb.DuckDBPyConnection) -> PreparedData:
        posts, counters, length = load_labelled(conn)
        need = sum(MIN_POSTS.values())
        if len(posts) < need:
            raise InsufficientData(
                f"engagement: needs at least {need} posts with known 48 h views "
                f"({MIN_POSTS['train']} train / {MIN_POSTS['val']} validation / "
                f"{MIN_POSTS['holdout']} holdout by time), has {len(posts)}"
            )
        posts["score_target"], posts["prior_posts"] = prior_percentile(posts)
        posts.loc[posts["prior_posts"] < MIN_PRIOR_POSTS, "score_target"] = np.nan
        grid = grid_posts(posts, counters)
        sequence = sequence_features(counters, posts, model_growth(grid, grid))
        static = static_features(posts)

        rows, bounds = split_by_time(grid.published_s, length > 0)
        for split, need_split in MIN_POSTS.items():
            if len(rows[split]) < need_split:
                raise InsufficientData(
                    f"engagement: needs at least {need_split} {split} posts with known 48 h "
                    f"views and a trajectory, has {len(rows[split])}; the warehouse covers "
                    "too little time"
                )
        trained = int(np.isfinite(posts["score_target"].to_numpy()[rows["train"]]).sum())
        if trained < MIN_POSTS["train"] // 2:
            raise InsufficientData(
                f"engagement: needs at least {MIN_POSTS['train'] // 2} training posts with "
                f">= {MIN_PRIOR_POSTS} earlier posts of their channel to rank against, "
                f"has {trained}"
            )
        holdout_labels = posts["above_channel_median"].to_numpy()[rows["holdout"]]
        holdout_labels = holdout_labels[pd.notna(holdout_labels)].astype(bool)
        if len(np.unique(holdout_labels)) < 2:
            raise InsufficientData(
                f"engagement: needs both classes of above_channel_median in the holdout, has "
                f"{len(holdout_labels)} labelled holdout posts of one class"
            )

        above = posts["above_channel_median"].astype("float64").to_numpy()
        baselines = fit_baselines(
            grid,
            above,
            GRID_MINUTES,
            rows["train"],
            rows["val"],
            np.concatenate([rows["train"], rows["val"]]),
        )
        self.strongest = dict(baselines.strongest)
        splits = {k: _split_arrays(posts, sequence, length, static, grid, v) for k, v in rows.items()}
        hold = splits["holdout"]
        target = grid.take(rows["holdout"])
        for rule in (None, *RULES):
            out = baselines.predict(target, rule)
            suffix = f"_{rule}" if rule else ""
            hold[f"baseline_above{suffix}"] = out["above"]
            hold[f"baseline_log_views{suffix}"] = out["log_views"]
            if rule is None:
                hold["baseline_views_lo"], hold["baseline_views_hi"] = out["lo"], out["hi"]
        n_channels = int(np.unique(hold["channel_id"]).size)
        info = {
            "posts": len(posts),
            "channels": int(posts["channel_id"].nunique()),
            "train_posts": len(rows["train"]),
            "val_posts": len(rows["val"]),
            "holdout_posts": len(rows["holdout"]),
            "holdout_labelled_posts": int(hold["has_label"].sum()),
            **bounds,
            "holdout_above_median_share": float(holdout_labels.mean()),
            "min_posts": f"{MIN_POSTS['train']}/{MIN_POSTS['val']}/{MIN_POSTS['holdout']} "
            "posts with known 48 h views (train/validation/holdout)",
            "grid_hours_max": float(GRID_MINUTES[-1] / 60),
            "bootstrap_clusters": "channel" if n_channels >= MIN_BOOTSTRAP_CHANNELS else "post",
            "score_target": "percentile among the channel's posts known at publication "
            f"(within {PRIOR_WINDOW_DAYS} days)",
            **{
                f"holdout_examples_{b}": int((hold["scored"] & (STEP_BUCKET == i)).sum())
                for i, b in enumerate(BUCKETS)
            },
            **baselines.describe(),
        }
        data = PreparedData(splits["train"], splits["val"], hold, info)
        data.baselines = baselines  # type: ignore[attr-defined]
        return data

    # ----------------------------------------------------------------- model
    def default_params(self) -> dict[str, Any]:
        return {
            "hidden": 128,
            "layers": 2,
            "dropout": 0.2,
            "dense": 64,
            "dense2": 32,
            "lr": 2e-3,
            "weight_decay": 1e-4,
            "batch_size": 64,
        }

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        params = self.default_params()
        params.update(
            hidden=trial.suggest_categorical("hidden", [64, 128]),
            dropout=trial.suggest_float("dropout", 0.1, 0.3),
            lr=trial.suggest_float("lr", 1e-3, 4e-3, log=True),
            weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        )
        return params

    def epoch_budget(self, max_epochs: int) -> int:
        return min(max_epochs, EPOCH_CAP)

    def build(self, params: dict[str, Any]) -> EngagementPredictor:
        return EngagementPredictor(
            hidden=params["hidden"],
            layers=params["layers"],
            dropout=params["dropout"],
            dense=params["dense"],
            dense2=params["dense2"],
        )

    def train(
        self,
        params: dict[str, Any],
        data: PreparedData,
        choice: DeviceChoice,
        max_epochs: int,
        seed: int,
        on_epoch=None,
    ) -> TrainResult:
        seed_everything(seed)
        model = self.build(params)
        model.set_normalisation(*(torch.as_tensor(data.train[k]) for k in MODEL_INPUTS))
        cfg = TrainConfig(
            max_epochs=self.epoch_budget(max_epochs),
            lr=params["lr"],
            weight_decay=params["weight_decay"],
            batch_size=params["batch_size"],
            patience=2,
            seed=seed,
        )
        train = {k: data.train[k] for k in TRAIN_ARRAYS}
        val = {k: data.val[k] for k in TRAIN_ARRAYS}
        return fit(model, train, val, engagement_loss, cfg, choice, on_epoch)

    # ------------------------------------------------------------ evaluation
    def _clusters(self, data: PreparedData) -> np.ndarray:
        h = data.holdout
        by_channel = data.info.get("bootstrap_clusters") == "channel"
        return np.broadcast_to(
            (h["channel_id"] if by_channel else np.arange(len(h["length"])))[:, None], h["scored"].shape
        )

    def evaluate(self, model: nn.Module, data: PreparedData) -> dict[str, float]:
        """Per age bucket: accuracy, 48 h views MAPE and 80 % coverage of the model on the
        holdout scored at every grid age, and its margin over the bucket's strongest
        baseline with the bootstrap interval (``margin_accuracy_<bucket>``); the same at
        the card ages 1/3/6/12/24 h (``accuracy_<h>h`` ...)."""
        h = data.holdout
        pred = predict_steps(model, h)
        scored, y = h["scored"], h["above_median"][:, None]
        ours = (pred["score"] > 0.5) == y
        theirs = h["baseline_above"] == y
        views = np.expm1(pred["log_views"])
        actual = np.broadcast_to(h["views_48h"][:, None], scored.shape)
        clusters = self._clusters(data)
        out: dict[str, float] = {}
        for i, bucket in enumerate(BUCKETS):
            mask = scored & (STEP_BUCKET == i)[None, :]
            out[f"accuracy_{bucket}"] = float(ours[mask].mean()) if mask.any() else float("nan")
            out[f"examples_{bucket}"] = float(mask.sum())
            out[f"views_mape_{bucket}"] = _mape(actual[mask], views[..., 1][mask])
            out[f"views_coverage_80_{bucket}"] = M.interval_coverage(
                actual[mask], views[..., 0][mask], views[..., 2][mask]
            )
            margin = _clustered_margin(ours[mask], theirs[mask], clusters[mask])
            out.update(margin.as_metrics(f"accuracy_{bucket}"))
        known = np.isfinite(h["interactions_48h"])
        inter = np.expm1(pred["log_interactions"])
        for hours in HOURS:
            step = LENGTHS[hours] - 1
            rows = scored[:, step]
            out[f"accuracy_{hours}h"] = float(ours[rows, step].mean()) if rows.any() else float("nan")
            out[f"views_mape_{hours}h"] = _mape(h["views_48h"][rows], views[rows, step, 1])
            out[f"views_coverage_80_{hours}h"] = M.interval_coverage(
                h["views_48h"][rows], views[rows, step, 0], views[rows, step, 2]
            )
            both = rows & known
            out[f"interactions_coverage_80_{hours}h"] = M.interval_coverage(
                h["interactions_48h"][both], inter[both, step, 0], inter[both, step, 2]
            )
            errors = np.abs(pred["score"][rows, step] - h["view_percentile_48h"][rows])
            # NaN without numpy's empty-slice warning when no post reached this age
            known_errors = errors[np.isfinite(errors)]
            out[f"score_percentile_mae_{hours}h"] = (
                float(known_errors.mean()) if known_errors.size else float("nan")
            )
        return out

    def baseline(self, data: PreparedData) -> dict[str, float]:
        """Every rule's holdout accuracy per bucket (``baseline_<rule>_accuracy_<bucket>``),
        its validation accuracy, and the strongest's accuracy, MAPE and interval coverage
        per bucket and card age (``baseline_accuracy_<bucket>``, ``baseline_accuracy_<h>h``)."""
        h = data.holdout
        scored, y = h["scored"], h["above_median"][:, None]
        actual = np.broadcast_to(h["views_48h"][:, None], scored.shape)
        baselines: EngagementBaselines | None = getattr(data, "baselines", None)
        out: dict[str, float] = {}
        for i, bucket in enumerate(BUCKETS):
            mask = scored & (STEP_BUCKET == i)[None, :]
            for rule in (None, *RULES):
                suffix = f"_{rule}" if rule else ""
                right = h[f"baseline_above{suffix}"] == y
                name = f"baseline{suffix}"
                out[f"{name}_accuracy_{bucket}"] = float(right[mask].mean()) if mask.any() else float("nan")
                views = np.expm1(h[f"baseline_log_views{suffix}"])
                out[f"{name}_views_mape_{bucket}"] = _mape(actual[mask], views[mask])
                if rule and baselines is not None:
                    out[f"{name}_val_accuracy_{bucket}"] = baselines.fits[rule][bucket].val_accuracy
            out[f"baseline_views_coverage_80_{bucket}"] = M.interval_coverage(
                actual[mask], np.expm1(h["baseline_views_lo"])[mask], np.expm1(h["baseline_views_hi"])[mask]
            )
        for hours in HOURS:
            step = LENGTHS[hours] - 1
            rows = scored[:, step]
            right = h["baseline_above"][:, step] == h["above_median"]
            out[f"baseline_accuracy_{hours}h"] = float(right[rows].mean()) if rows.any() else float("nan")
            out[f"baseline_views_mape_{hours}h"] = _mape(
                h["views_48h"][rows], np.expm1(h["baseline_log_views"][rows, step])
            )
        return out

    def gates(self, metrics: dict[str, float], baseline: dict[str, float]) -> list[Gate]:
        """Per age bucket: accuracy >= 0.80 (card) and model - strongest baseline with a
        bootstrap interval whose lower bound is >= 0."""
        gates: list[Gate] = []
        for bucket, (lo, hi) in BUCKETS.items():
            ages = f"scored at ages in ({lo / 60:g} h, {hi / 60:g} h]"
            acc = metrics[f"accuracy_{bucket}"]
            gates.append(
                Gate(
                    f"accuracy_{bucket}_min",
                    bool(np.isfinite(acc) and acc >= ACCURACY_THRESHOLD),
                    acc,
                    ACCURACY_THRESHOLD,
                    f"above/below the channel's prior median, holdout posts {ages}: accuracy >= "
                    f"{ACCURACY_THRESHOLD:.2f} (model card)",
                )
            )
            key = f"accuracy_{bucket}"
            margin = Margin(
                metrics[f"margin_{key}"],
                metrics[f"margin_{key}_lo"],
                metrics[f"margin_{key}_hi"],
                BOOTSTRAP_LEVEL,
                N_BOOT,
            )
            rule = self.strongest.get(bucket)
            gates.append(
                Gate.beats(
                    f"accuracy_{bucket}_vs_baseline",
                    margin,
                    f"holdout accuracy {ages}",
                    f"strongest baseline on validation ({LABELS[rule]})"
                    if rule
                    else "the strongest baseline on validation",
                )
            )
        return gates

    # ------------------------------------------------------------- reporting
    def plots(self, model: nn.Module, data: PreparedData, result: TrainResult) -> dict:
        h = data.holdout
        pred = predict(model, h, 3)
        return {
            "score_calibration_3h": plots.calibration_plot(
                h["above_median"][h["has_label"]].astype(float),
                pred["score"][h["has_label"]],
                "engagement score at 3 h vs share above channel median",
            ),
            "views_48h_predicted_vs_actual_3h": plots.scatter_plot(
                h["views_48h"],
                np.expm1(pred["log_views"][:, 1]),
                "48 h views: p50 predicted at 3 h vs actual",
            ),
        }

    def input_example(self, data: PreparedData) -> dict[str, np.ndarray]:
        h = data.holdout
        return {
            "sequence": h["sequence"][:3],
            "length": np.minimum(h["length"][:3], LENGTHS[3]),
            "static": h["static"][:3],
        }

    def onnx_examples(self, data: PreparedData) -> list[dict[str, np.ndarray]]:
        """Posts at every card age, and sequences cut to fewer grid steps."""
        h = data.holdout
        out = []
        for n, hours in ((1, 1), (3, 3), (5, 6), (4, 12), (2, 24)):
            out.append(
                {
                    "sequence": h["sequence"][:n],
                    "length": np.minimum(h["length"][:n], LENGTHS[hours]),
                    "static": h["static"][:n],
                }
            )
        short = LENGTHS[3]
        out.append(
            {
                "sequence": np.ascontiguousarray(h["sequence"][:2, :short]),
                "length": np.minimum(h["length"][:2], short),
                "static": h["static"][:2],
            }
        )
        return out
