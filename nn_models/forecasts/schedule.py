"""``posting_schedule_recommendations``: all 7 × 24 UTC slots per channel, ranked by the model.

``expected_engagement`` is the champion ``ScheduleOptimizer``'s output for a post in
that slot: the expected log 48 h reach relative to the channel's typical post
(0 = typical, +0.10 ≈ 10 % more reach), the media types weighted by the channel's
usual mix (the mix stored on the model for its training channels — what its holdout
metrics were measured with). ``expected_reach_ratio`` (extra column) is its
exponential: 1.10 = 10 % more reach than the channel's typical post. Inputs are built
by the task's own ``ScheduleTask.model_inputs``; the model runs through ``model.run``
(ONNX Runtime or torch) on every (channel, weekday, hour, media) row at once.

**Basis.** A channel is scored from its own embedding (``basis='channel'``) when the
model knows it (it was a training channel) and it has at least ``MIN_CHANNEL_POSTS``
posts with 48 h data (the task's ``MIN_CHANNEL_TRAIN_POSTS``, 20: the history the
task requires of a training channel). Otherwise (a new channel after training, or
too little history) it gets network-wide slots (``basis='network'``): the model's
prediction averaged over all channels it knows, per media type, weighted by the
channel's own media mix in ``raw.posts`` (the network's average mix when it has no
posts). The asset note lists the fallback channels.

**Confidence** (0–1, per slot), from the model's holdout metrics (``LoadedModel.metrics``)
and the slot's evidence:

* skill on slots with history ``q_seen`` = ``top_slot_ratio`` (true effect of the
  top-ranked slot ÷ the best slot's, synthetic truth), else the holdout Spearman ρ
  of slot means clipped at 0; skill on slots without history ``q_unseen`` =
  ``unseen_top_slot_ratio``, else ``q_seen``;
* slot skill ``q = q_unseen + (q_seen − q_unseen) · n_slot / (n_slot + 1)`` where
  ``n_slot`` is the channel's posts in that slot (``sample_size``);
* ``basis='channel'``: ``confidence = q · n_channel / (n_channel + MIN_CHANNEL_POSTS)``
  (``n_channel`` = the channel's posts with 48 h data: 20 posts → ×0.5, 180 → ×0.9);
* ``basis='network'``: ``confidence = q_unseen · agreement``, where agreement is the
  share of known channels for which the model puts that slot above the channel's
  own median slot (how much the network's channels agree on it).

With no recorded holdout metric the confidence is NaN and the note says so.
"""

from __future__ import annotations

import math
import weakref
from datetime import datetime
from threading import Lock

import duckdb
import numpy as np
import pandas as pd

from nn_models.baselines_schedule import N_SLOTS
from nn_models.champions import LoadedModel
from nn_models.forecasts.base import Champions, ForecastResult, missing_champion, parse_channel_id, stamp
from nn_models.tasks.schedule import MIN_CHANNEL_TRAIN_POSTS, ScheduleTask

TABLE = "posting_schedule_recommendations"
COLUMNS = ["channel_id", "weekday", "hour", "expected_engagement", "rank", "confidence",
           "sample_size", "basis", "expected_reach_ratio"]
MIN_CHANNEL_POSTS = MIN_CHANNEL_TRAIN_POSTS
TOP_SLOTS = 5
BATCH = 262_144
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_GRID_CACHE: dict[tuple, dict] = {}
_GRID_LOCK = Lock()


# ------------------------------------------------------------------------ the model
def model_grids(model: LoadedModel) -> dict:
    """Predictions of every known channel × slot × media type, and derived grids.

    Returns ``channel_ids`` (known to the model), ``per_media`` (channels, 168, media),
    ``grids`` (channels, 168: media weighted by each channel's mix), ``network``
    (168, media: mean over channels), ``network_mix`` (media) and ``above_median``
    (168: share of channels whose grid puts the slot above its own median slot).
    Cached per model version and module object (a champion's weights never change).
    """
    key = (model.registered_model, str(model.version), id(model.module))
    with _GRID_LOCK:
        cached = _GRID_CACHE.get(key)
        if cached is not None and cached["module"]() is model.module:
            return cached
    module = model.module
    channel_ids = np.asarray(module.channel_ids, dtype=np.int64)
    n_media = len(module.media_types)
    weekday, hour = np.divmod(np.arange(N_SLOTS), 24)
    n_rows = N_SLOTS * n_media
    split = {   # the rows in the layout ScheduleTask.model_inputs expects
        "channel_id": np.repeat(channel_ids, n_rows),
        "weekday": np.tile(np.repeat(weekday, n_media), len(channel_ids)),
        "hour": np.tile(np.repeat(hour, n_media), len(channel_ids)),
        "media": np.tile(np.arange(n_media), N_SLOTS * len(channel_ids)),
    }
    inputs, _ = ScheduleTask.model_inputs(module, split)
    total = len(inputs["channel"])
    pred = np.concatenate([
        np.asarray(model.run(**{k: v[lo:lo + BATCH] for k, v in inputs.items()})[0],
                   dtype=np.float64).reshape(-1)
        for lo in range(0, total, BATCH)
    ]) if total else np.zeros(0)
    per_media = pred.reshape(len(channel_ids), N_SLOTS, n_media)
    mix = module.media_mix.detach().cpu().numpy().astype(np.float64)
    grids = np.einsum("csm,cm->cs", per_media, mix)
    above = (grids > np.median(grids, axis=1, keepdims=True)).mean(axis=0) \
        if len(channel_ids) else np.zeros(N_SLOTS)
    out = {
        "module": weakref.ref(module),
        "channel_ids": channel_ids,
        "index": {int(c): i for i, c in enumerate(channel_ids)},
        "media_types": list(module.media_types),
        "per_media": per_media,
        "grids": grids,
        "network": per_media.mean(axis=0),
        "network_mix": mix.mean(axis=0),
        "above_median": above,
    }
    with _GRID_LOCK:
        if len(_GRID_CACHE) > 8:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = out
    return out


def skill(model: LoadedModel) -> tuple[float, float, str]:
    """(q_seen, q_unseen, which metrics) from the measured holdout metrics; NaN if none."""
    m = model.metrics
    if math.isfinite(m.get("top_slot_ratio", float("nan"))):
        seen, source = float(np.clip(m["top_slot_ratio"], 0, 1)), "top_slot_ratio"
    elif math.isfinite(m.get("spearman", float("nan"))):
        seen, source = float(np.clip(m["spearman"], 0, 1)), "spearman"
    else:
        return float("nan"), float("nan"), "none"
    unseen = m.get("unseen_top_slot_ratio", float("nan"))
    if math.isfinite(unseen):
        return seen, float(np.clip(unseen, 0, 1)), f"{source} + unseen_top_slot_ratio"
    return seen, seen, source


# ---------------------------------------------------------------------- the history
def _frame(conn: duckdb.DuckDBPyConnection, sql: str, params: list) -> pd.DataFrame | None:
    try:
        return conn.execute(sql, params).fetchdf()
    except duckdb.CatalogException:   # table not built/published yet
        return None


def _where(channel_id: int | None) -> tuple[str, list]:
    return ("WHERE channel_id = ?", [channel_id]) if channel_id is not None else ("", [])


def slot_history(conn, channel_id: int | None = None) -> pd.DataFrame | None:
    where, params = _where(channel_id)
    return _frame(conn, f"""
        SELECT channel_id, weekday, hour, n_posts, mean_view_percentile, mean_relative_views
        FROM features.posting_slot_features {where}""", params)


def media_mix(conn, media_types: list[str], channel_id: int | None = None) -> dict[int, np.ndarray]:
    """channel_id -> share of its posts per media type (model order; unknown types → other)."""
    where, params = _where(channel_id)
    rows = _frame(conn, f"""
        SELECT channel_id, media_type, count(*) AS n FROM raw.posts {where}
        GROUP BY channel_id, media_type""", params)
    if rows is None or rows.empty:
        return {}
    lookup = {m: i for i, m in enumerate(media_types)}
    other = lookup.get("other", len(media_types) - 1)
    out: dict[int, np.ndarray] = {}
    for r in rows.itertuples():
        mix = out.setdefault(int(r.channel_id), np.zeros(len(media_types)))
        mix[lookup.get(r.media_type, other)] += float(r.n)
    return {c: m / m.sum() for c, m in out.items() if m.sum() > 0}


def channel_list(conn) -> list[int] | None:
    rows = _frame(conn, "SELECT channel_id FROM raw.channels UNION SELECT channel_id FROM raw.posts",
                  [])
    if rows is None:
        rows = _frame(conn, "SELECT DISTINCT channel_id FROM features.posting_slot_features", [])
    return None if rows is None else sorted(int(c) for c in rows["channel_id"])


# ------------------------------------------------------------------------- scoring
def rank_channels(model: LoadedModel, channels: list[int], history: pd.DataFrame,
                  mixes: dict[int, np.ndarray], min_posts: int | None = None) -> pd.DataFrame:
    """The 168 ranked slots of each channel (COLUMNS), vectorised over channels."""
    min_posts = MIN_CHANNEL_POSTS if min_posts is None else min_posts
    g = model_grids(model)
    q_seen, q_unseen, _ = skill(model)
    n = len(channels)
    ids = np.asarray(channels, dtype=np.int64)
    sample = np.zeros((n, N_SLOTS), dtype=np.int64)
    if history is not None and not history.empty:
        row = pd.Series(np.arange(n), index=ids).reindex(history["channel_id"].to_numpy())
        ok = row.notna().to_numpy()
        slots = (history["weekday"].to_numpy(np.int64) * 24 + history["hour"].to_numpy(np.int64))
        np.add.at(sample, (row.to_numpy()[ok].astype(np.int64), slots[ok]),
                  history["n_posts"].to_numpy(np.int64)[ok])
    n_channel = sample.sum(axis=1)
    known = np.array([c in g["index"] for c in ids], dtype=bool)
    own = known & (n_channel >= min_posts)

    expected = np.empty((n, N_SLOTS))
    if own.any():
        expected[own] = g["grids"][[g["index"][int(c)] for c in ids[own]]]
    if (~own).any():
        mix = np.stack([mixes.get(int(c), g["network_mix"]) for c in ids[~own]])
        expected[~own] = mix @ g["network"].T

    q_slot = q_unseen + (q_seen - q_unseen) * sample / (sample + 1.0)
    confidence = np.where(
        own[:, None],
        q_slot * (n_channel / (n_channel + float(min_posts)))[:, None],
        q_unseen * g["above_median"][None, :],
    )
    order = np.argsort(-expected, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, N_SLOTS + 1)[None, :].repeat(n, 0), axis=1)
    weekday, hour = np.divmod(np.arange(N_SLOTS), 24)
    return pd.DataFrame({
        "channel_id": np.repeat(ids, N_SLOTS),
        "weekday": np.tile(weekday, n).astype(np.int64),
        "hour": np.tile(hour, n).astype(np.int64),
        "expected_engagement": expected.reshape(-1),
        "rank": rank.reshape(-1).astype(np.int64),
        "confidence": np.clip(confidence, 0.0, 1.0).reshape(-1),
        "sample_size": sample.reshape(-1),
        "basis": np.repeat(np.where(own, "channel", "network"), N_SLOTS),
        "expected_reach_ratio": np.exp(expected.reshape(-1)),
    })[COLUMNS]


def _fallback_reason(model: LoadedModel, channel_id: int, n_posts: int, min_posts: int) -> str:
    if channel_id not in set(int(c) for c in model.module.channel_ids):
        return ("channel unknown to the model's channel embedding (not a training channel of "
                f"v{model.version}): network-wide slots")
    return (f"{n_posts} posts with 48 h data, fewer than {min_posts}: network-wide slots")


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(COLUMNS, (
        "int64", "int64", "int64", "float64", "int64", "float64", "int64", "object", "float64"),
        strict=True)})


def score(conn: duckdb.DuckDBPyConnection, champions: Champions,
          scored_at: datetime) -> ForecastResult:
    reason = missing_champion(TABLE, ("schedule",), champions)
    if reason:
        return ForecastResult(stamp(_empty(), None, scored_at,
                                    model_name=ScheduleTask.registered_model),
                              notes={"skipped": reason})
    model = champions["schedule"]
    assert model is not None
    models = {model.registered_model: model.version}
    channels = channel_list(conn)
    history = slot_history(conn)
    if not channels or history is None:
        why = ("no channels in raw.channels / raw.posts" if not channels
               else "features.posting_slot_features does not exist yet")
        return ForecastResult(stamp(_empty(), model, scored_at), notes={"skipped": f"{TABLE}: {why}"},
                              models=models)
    mixes = media_mix(conn, list(model.module.media_types))
    frame = rank_channels(model, channels, history, mixes)
    notes = {"basis": (f"basis='channel' needs a channel known to the model's embedding with "
                       f">= {MIN_CHANNEL_POSTS} posts with 48 h data; otherwise basis='network' "
                       "(the model's prediction averaged over its known channels)")}
    fallback = frame.loc[frame["basis"] == "network"].groupby("channel_id")["sample_size"].sum()
    if len(fallback):
        notes["network_fallback"] = "; ".join(
            f"{c}: {_fallback_reason(model, int(c), int(n), MIN_CHANNEL_POSTS)}"
            for c, n in fallback.items())
    q_seen, q_unseen, source = skill(model)
    notes["confidence"] = (f"from holdout {source} (q_seen={q_seen:.3f}, q_unseen={q_unseen:.3f}) "
                           "× slot/channel evidence (see nn_models/forecasts/schedule.py)"
                           if source != "none" else
                           "NaN: the model version records no holdout top_slot_ratio or spearman")
    return ForecastResult(stamp(frame, model, scored_at), notes=notes, models=models)


# ---------------------------------------------------------------------- per request
def _channel_id(channel_id) -> int:
    return parse_channel_id(channel_id)


def _num(value, digits: int = 4):
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def channel_schedule(conn: duckdb.DuckDBPyConnection, model: LoadedModel, channel_id,
                     top: int = TOP_SLOTS) -> dict:
    """The channel's best slots by the model, with the channel's historical best hours."""
    channel_id = _channel_id(channel_id)
    history = slot_history(conn, channel_id)
    if history is None:
        history = pd.DataFrame(columns=["channel_id", "weekday", "hour", "n_posts",
                                        "mean_view_percentile", "mean_relative_views"])
    mixes = media_mix(conn, list(model.module.media_types), channel_id)
    ranked = rank_channels(model, [channel_id], history, mixes)
    basis = str(ranked["basis"].iloc[0])
    n_posts = int(ranked["sample_size"].sum())
    past = dict(zip(history["weekday"].astype(int) * 24 + history["hour"].astype(int),
                    history["mean_view_percentile"], strict=True))
    expected = ranked["expected_engagement"].to_numpy()   # slot order: weekday * 24 + hour
    confidence = ranked["confidence"].to_numpy()
    sample = ranked["sample_size"].to_numpy()
    slots = []
    for rank, slot in enumerate(np.argsort(ranked["rank"].to_numpy(), kind="stable")[:top], 1):
        weekday, hour = divmod(int(slot), 24)
        slots.append({
            "rank": rank, "weekday": weekday, "weekday_name": WEEKDAYS[weekday], "hour": hour,
            "expected_engagement": _num(expected[slot]),
            "expected_reach_ratio": _num(math.exp(expected[slot])),
            "confidence": _num(confidence[slot]), "sample_size": int(sample[slot]),
            "historical_mean_view_percentile": _num(past.get(int(slot))),
        })
    by_hour = expected.reshape(7, 24).mean(axis=0)
    q_seen, q_unseen, source = skill(model)
    return {
        "channel_id": channel_id,
        "model_name": model.registered_model,
        "model_version": str(model.version),
        "basis": basis,
        "basis_reason": None if basis == "channel"
        else _fallback_reason(model, channel_id, n_posts, MIN_CHANNEL_POSTS),
        "posts_with_48h_data": n_posts,
        "top_slots": slots,
        "model_best_hours": [int(h) for h in np.argsort(-by_hour, kind="stable")[:3]],
        "historical_best_hours": historical_best_hours(history),
        "confidence_basis": {"metrics": source, "q_seen": _num(q_seen), "q_unseen": _num(q_unseen)},
        "expected_engagement_unit": ("log 48 h reach relative to the channel's typical post "
                                     "(0 = typical, +0.1 ≈ 10 % more reach)"),
    }


def historical_best_hours(history: pd.DataFrame, top: int = 3, min_posts: int = 3) -> list[dict]:
    """The channel's best UTC hours by its own past posts (mean within-channel view
    percentile at 48 h, hours with >= ``min_posts`` posts, as in channel_metrics)."""
    if history is None or history.empty:
        return []
    hour = history["hour"].to_numpy(np.int64)
    n = history["n_posts"].to_numpy(np.float64)
    posts = np.bincount(hour, weights=n, minlength=24)
    pct = np.bincount(hour, weights=np.nan_to_num(history["mean_view_percentile"].to_numpy(
        np.float64)) * n, minlength=24)
    rel = np.bincount(hour, weights=np.nan_to_num(history["mean_relative_views"].to_numpy(
        np.float64)) * n, minlength=24)
    hours = np.flatnonzero(posts >= min_posts)
    order = hours[np.argsort(-pct[hours] / posts[hours], kind="stable")][:top]
    return [{"hour": int(h), "posts": int(posts[h]), "mean_view_percentile": _num(pct[h] / posts[h]),
             "mean_relative_views": _num(rel[h] / posts[h])} for h in order]
