"""``posting_schedule_recommendations``: all 7 × 24 UTC slots per channel, ranked.

**Source.** With a champion ``ScheduleOptimizer``, ``expected_engagement`` is its output
for a post in that slot: the expected log 48 h reach relative to the channel's typical
post (0 = typical, +0.10 ≈ 10 % more reach), media types weighted by the channel's
usual mix (stored on the model for its training channels). ``expected_reach_ratio``
(extra column) is its exponential. Inputs are built by ``ScheduleTask.model_inputs``;
the model runs through ``model.run`` (ONNX Runtime or torch) on every row at once.

A channel the champion cannot score — unknown to its embedding (not a training
channel) or with fewer than ``MIN_CHANNEL_POSTS`` posts with 48 h data — and every
channel when there is no champion, is served by the **strongest baseline**
(``source='baseline'``, ``fallback_reason`` says why): the rule the schedule task
would pick (``nn_models.baselines_schedule.choose``: shrunk weekday × hour mean,
hour-only mean or most-posted hour, α/β and the rule chosen on a validation period),
fitted at scoring time on the warehouse's labelled history (the same target, so
``expected_engagement`` has the same unit; NaN for ``most_posted_hour``, which ranks
by posting habit and estimates no engagement). A channel with fewer than
``MIN_CHANNEL_POSTS`` posts gets the rule fitted on all channels pooled
(``basis='network'``); otherwise ``basis='channel'``.

**Confidence** (0–1, per slot) from measured holdout quality, never a constant:
``q`` = the serving source's mean per-channel Spearman ρ between predicted slot value
and observed 48 h view percentile on the latest period (the model: its registered
``spearman`` metric; the baseline: measured by the same protocol at scoring time;
``network``: the pooled rule's ρ), clipped to [0, 1]. Then
``confidence = q · n_channel / (n_channel + MIN_CHANNEL_POSTS)`` for ``basis='channel'``
(``n_channel`` = the channel's posts with 48 h data: 20 → ×0.5, 180 → ×0.9) and
``q`` for ``basis='network'``. NaN (and a note) when nothing could be measured.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from threading import Lock

import duckdb
import numpy as np
import pandas as pd

from nn_models import baselines_schedule as bs
from nn_models.baselines_schedule import N_SLOTS
from nn_models.champions import LoadedModel
from nn_models.forecasts.base import Champions, ForecastResult, missing_champion, parse_channel_id, stamp
from nn_models.tasks.schedule import (
    MIN_CHANNEL_TRAIN_POSTS,
    MIN_HOLDOUT_CHANNELS,
    ScheduleTask,
    _table_exists,
    history,
    relative_log_reach,
    time_split,
)

TABLE = "posting_schedule_recommendations"
COLUMNS = [
    "channel_id",
    "weekday",
    "hour",
    "expected_engagement",
    "rank",
    "confidence",
    "sample_size",
    "basis",
    "expected_reach_ratio",
]
MIN_CHANNEL_POSTS = MIN_CHANNEL_TRAIN_POSTS
TOP_SLOTS = 5
BATCH = 262_144
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_GRID_CACHE: dict[tuple, dict] = {}
_GRID_LOCK = Lock()


# ------------------------------------------------------------------------ the model
def model_grids(model: LoadedModel) -> dict:
    """Predictions of every known channel × slot × media type, and the slot grids.

    Returns ``channel_ids`` (known to the model), ``index`` (channel_id -> row),
    ``per_media`` (channels, 168, media) and ``grids`` (channels, 168: media weighted
    by each channel's mix). Cached per model version and module object (a champion's weights never change).
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
    split = {  # the rows in the layout ScheduleTask.model_inputs expects
        "channel_id": np.repeat(channel_ids, n_rows),
        "weekday": np.tile(np.repeat(weekday, n_media), len(channel_ids)),
        "hour": np.tile(np.repeat(hour, n_media), len(channel_ids)),
        "media": np.tile(np.arange(n_media), N_SLOTS * len(channel_ids)),
    }
    inputs, _ = ScheduleTask.model_inputs(module, split)
    total = len(inputs["channel"])
    pred = (
        np.concatenate(
            [
                np.asarray(
                    model.run(**{k: v[lo : lo + BATCH] for k, v in inputs.items()})[0], dtype=np.float64
                ).reshape(-1)
                for lo in range(0, total, BATCH)
            ]
        )
        if total
        else np.zeros(0)
    )
    per_media = pred.reshape(len(channel_ids), N_SLOTS, n_media)
    mix = module.media_mix.detach().cpu().numpy().astype(np.float64)
    grids = np.einsum("csm,cm->cs", per_media, mix)
    out = {
        "module": weakref.ref(module),
        "channel_ids": channel_ids,
        "index": {int(c): i for i, c in enumerate(channel_ids)},
        "media_types": list(module.media_types),
        "per_media": per_media,
        "grids": grids,
    }
    with _GRID_LOCK:
        if len(_GRID_CACHE) > 8:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = out
    return out


def skill(model: LoadedModel) -> tuple[float, str]:
    """(q, which metric): the champion's holdout per-channel Spearman clipped to [0, 1]."""
    rho = model.metrics.get("spearman", float("nan"))
    if math.isfinite(rho):
        return float(np.clip(rho, 0.0, 1.0)), "spearman"
    return float("nan"), "none"


# ------------------------------------------------------------------- the baseline
@dataclass
class BaselineSchedule:
    """The strongest baseline fitted on the whole labelled history, with its measured quality."""

    rule: str
    tables: dict[int, np.ndarray]  # channel -> 168 values (fitted on all history)
    network: np.ndarray  # 168 values, every channel pooled
    spearman: float  # measured on the latest period (NaN: too little)
    network_spearman: float
    how: str  # how rule and quality were chosen / measured
    val_spearman: dict[str, float] = field(default_factory=dict)


def fit_baseline(conn: duckdb.DuckDBPyConnection) -> BaselineSchedule | None:
    """The schedule task's protocol without the model: choose the rule (and α, β) on the
    validation period, measure it on the latest period, then refit it on every post.

    With too little history to validate (or measure) anything, the hour-only mean
    (nothing to tune) serves and its quality is NaN. None without labelled posts.
    """
    frame = history(conn)
    if frame is None or frame.empty:
        return None
    split, _, _ = time_split(frame["published_at"].to_numpy())
    arrays = {
        "channel_id": frame["channel_id"].to_numpy(np.int64),
        "weekday": frame["weekday"].to_numpy(np.int64),
        "hour": frame["hour"].to_numpy(np.int64),
        "percentile": frame["view_percentile_48h"].to_numpy(np.float64),
    }
    measured = relative_log_reach(frame, split < 2)[0]
    parts = [
        {**{k: v[split == i] for k, v in arrays.items()}, "target": measured[split == i]} for i in range(3)
    ]
    train, val, holdout = parts
    choice = bs.BaselineChoice(0.0, 0.0, {}, "hour_mean")
    spearman = network_rho = float("nan")
    how = (
        "too little history to choose a rule on validation: hour-only mean (nothing to "
        "tune), quality not measured"
    )
    if len(train["target"]) and len(val["target"]) and len(holdout["target"]):
        choice = bs.choose(train, val)
        pre = {k: np.concatenate([train[k], val[k]]) for k in train}
        slot_h = bs.slot_of(holdout["weekday"], holdout["hour"])
        scores = bs.channel_scores(
            holdout["channel_id"],
            bs.lookup(bs.fit(choice.strongest, choice, pre), holdout["channel_id"], slot_h),
            holdout["percentile"],
        )
        if len(scores.channel_ids) >= MIN_HOLDOUT_CHANNELS:
            spearman = scores.mean("spearman")
            net = bs.network_grid(choice.strongest, choice, pre)
            network_rho = bs.channel_scores(holdout["channel_id"], net[slot_h], holdout["percentile"]).mean(
                "spearman"
            )
        how = (
            f"{choice.strongest} chosen on validation (α={choice.alpha:g}, "
            f"β={choice.beta:g}); holdout ρ {spearman:.3f} over "
            f"{len(scores.channel_ids)} channels"
        )
    everything = {**arrays, "target": relative_log_reach(frame, np.ones(len(frame), bool))[0]}
    return BaselineSchedule(
        rule=choice.strongest,
        tables=bs.fit(choice.strongest, choice, everything),
        network=bs.network_grid(choice.strongest, choice, everything),
        spearman=spearman,
        network_spearman=network_rho,
        how=how,
        val_spearman=dict(choice.val_spearman),
    )


# ---------------------------------------------------------------------- the history
def _frame(conn: duckdb.DuckDBPyConnection, sql: str, params: list) -> pd.DataFrame | None:
    try:
        return conn.execute(sql, params).fetchdf()
    except duckdb.CatalogException:  # table not built/published yet
        return None


def _where(channel_id: int | None) -> tuple[str, list]:
    return ("WHERE channel_id = ?", [channel_id]) if channel_id is not None else ("", [])


def slot_history(conn, channel_id: int | None = None) -> pd.DataFrame | None:
    where, params = _where(channel_id)
    return _frame(
        conn,
        f"""
        SELECT channel_id, weekday, hour, n_posts, mean_view_percentile, mean_relative_views
        FROM features.posting_slot_features {where}""",
        params,
    )


def channel_list(conn) -> list[int] | None:
    rows = _frame(conn, "SELECT channel_id FROM raw.channels UNION SELECT channel_id FROM raw.posts", [])
    if rows is None:
        rows = _frame(conn, "SELECT DISTINCT channel_id FROM features.posting_slot_features", [])
    return None if rows is None else sorted(int(c) for c in rows["channel_id"])


# ------------------------------------------------------------------------- scoring
def _evidence(channels: np.ndarray, history: pd.DataFrame | None) -> np.ndarray:
    """(channels, 168) posts with 48 h data per slot, from posting_slot_features."""
    sample = np.zeros((len(channels), N_SLOTS), dtype=np.int64)
    if history is not None and not history.empty:
        row = pd.Series(np.arange(len(channels)), index=channels).reindex(history["channel_id"].to_numpy())
        ok = row.notna().to_numpy()
        slots = history["weekday"].to_numpy(np.int64) * 24 + history["hour"].to_numpy(np.int64)
        np.add.at(
            sample,
            (row.to_numpy()[ok].astype(np.int64), slots[ok]),
            history["n_posts"].to_numpy(np.int64)[ok],
        )
    return sample


def _frame_of(
    ids: np.ndarray,
    expected: np.ndarray,
    confidence: np.ndarray,
    sample: np.ndarray,
    basis: np.ndarray,
    order_by: np.ndarray,
) -> pd.DataFrame:
    n = len(ids)
    order = np.argsort(-order_by, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, N_SLOTS + 1)[None, :].repeat(n, 0), axis=1)
    weekday, hour = np.divmod(np.arange(N_SLOTS), 24)
    return pd.DataFrame(
        {
            "channel_id": np.repeat(ids, N_SLOTS).astype(np.int64),
            "weekday": np.tile(weekday, n).astype(np.int64),
            "hour": np.tile(hour, n).astype(np.int64),
            "expected_engagement": expected.reshape(-1).astype(np.float64),
            "rank": rank.reshape(-1).astype(np.int64),
            "confidence": np.clip(confidence, 0.0, 1.0).reshape(-1).astype(np.float64),
            "sample_size": sample.reshape(-1).astype(np.int64),
            "basis": pd.Series(np.repeat(basis, N_SLOTS), dtype="object"),
            "expected_reach_ratio": np.exp(expected.reshape(-1)).astype(np.float64),
        }
    )[COLUMNS]


def _channel_factor(n_channel: np.ndarray, min_posts: int) -> np.ndarray:
    return (n_channel / (n_channel + float(min_posts)))[:, None]


def rank_channels(
    model: LoadedModel, channels: list[int], history: pd.DataFrame | None, min_posts: int | None = None
) -> pd.DataFrame:
    """The model's 168 ranked slots of each channel (COLUMNS); every channel must be
    one the model can score (see ``scorable``)."""
    min_posts = MIN_CHANNEL_POSTS if min_posts is None else min_posts
    g = model_grids(model)
    q, _ = skill(model)
    ids = np.asarray(channels, dtype=np.int64)
    sample = _evidence(ids, history)
    expected = g["grids"][[g["index"][int(c)] for c in ids]] if len(ids) else np.zeros((0, N_SLOTS))
    confidence = q * _channel_factor(sample.sum(axis=1), min_posts) * np.ones((len(ids), N_SLOTS))
    return _frame_of(ids, expected, confidence, sample, np.full(len(ids), "channel"), expected)


def rank_baseline(
    base: BaselineSchedule, channels: list[int], history: pd.DataFrame | None, min_posts: int | None = None
) -> pd.DataFrame:
    """The baseline's 168 ranked slots of each channel (own table or the network's)."""
    min_posts = MIN_CHANNEL_POSTS if min_posts is None else min_posts
    ids = np.asarray(channels, dtype=np.int64)
    sample = _evidence(ids, history)
    n_channel = sample.sum(axis=1)
    own = np.array([int(c) in base.tables for c in ids], dtype=bool) & (n_channel >= min_posts)
    values = (
        np.stack([base.tables[int(c)] if o else base.network for c, o in zip(ids, own, strict=True)])
        if len(ids)
        else np.zeros((0, N_SLOTS))
    )
    confidence = np.where(
        own[:, None], base.spearman * _channel_factor(n_channel, min_posts), base.network_spearman
    )
    confidence = np.clip(confidence, 0.0, 1.0) * np.ones_like(values)
    expected = values if base.rule != "most_posted_hour" else np.full_like(values, np.nan)
    return _frame_of(ids, expected, confidence, sample, np.where(own, "channel", "network"), values)


def scorable(model: LoadedModel, n_posts: int, channel_id: int, min_posts: int | None = None) -> str | None:
    """None when the champion can score the channel, else why the baseline serves it."""
    min_posts = MIN_CHANNEL_POSTS if min_posts is None else min_posts
    if channel_id not in set(int(c) for c in model.module.channel_ids):
        return (
            f"channel unknown to {model.registered_model} v{model.version}'s channel "
            "embedding (not one of its training channels): served by the baseline"
        )
    if n_posts < min_posts:
        return (
            f"{n_posts} posts with 48 h data, fewer than the {min_posts} the model needs "
            "to score a channel: served by the baseline"
        )
    return None


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c: pd.Series(dtype=t)
            for c, t in zip(
                COLUMNS,
                ("int64", "int64", "int64", "float64", "int64", "float64", "int64", "object", "float64"),
                strict=True,
            )
        }
    )


def _baseline_note(base: BaselineSchedule) -> str:
    return (
        f"baseline {base.rule}: {base.how}; network-pooled ρ {base.network_spearman:.3f}; "
        "confidence = measured ρ × channel evidence"
    )


def score(conn: duckdb.DuckDBPyConnection, champions: Champions, scored_at: datetime) -> ForecastResult:
    model = champions.get("schedule")
    channels = channel_list(conn)
    history = slot_history(conn)
    if not channels or history is None:
        why = (
            "no channels in raw.channels / raw.posts"
            if not channels
            else "features.posting_slot_features does not exist yet"
        )
        return ForecastResult(
            stamp(_empty(), model, scored_at, model_name=ScheduleTask.registered_model, fallback_reason=why),
            notes={"skipped": f"{TABLE}: {why}"},
            models={model.registered_model: model.version} if model else {},
        )
    counts = history.groupby("channel_id")["n_posts"].sum()
    reasons: dict[int, str] = {}
    if model is None:
        why = missing_champion(TABLE, ("schedule",), champions) or "no schedule champion"
        reasons = {c: why for c in channels}
    else:
        for c in channels:
            reason = scorable(model, int(counts.get(c, 0)), c)
            if reason:
                reasons[c] = reason
    frames, notes, models = [], {}, {}
    served = [c for c in channels if c not in reasons]
    if model is not None:
        models[model.registered_model] = model.version
        q, source = skill(model)
        notes["confidence"] = (
            f"model: holdout {source} {q:.3f} × channel evidence"
            if source != "none"
            else "model: NaN, the version records no holdout spearman"
        )
        if served:
            frames.append(stamp(rank_channels(model, served, history), model, scored_at))
    if reasons:
        base = fit_baseline(conn)
        if base is None:
            notes["skipped_baseline"] = (
                f"{len(reasons)} channels: no labelled posts (48 h "
                "views and percentile) to fit the baseline on"
            )
        else:
            notes["baseline"] = _baseline_note(base)
            by_reason: dict[str, list[int]] = {}
            for c, why in reasons.items():
                by_reason.setdefault(why, []).append(c)
            for why, ids in by_reason.items():
                frames.append(
                    stamp(
                        rank_baseline(base, ids, history),
                        None,
                        scored_at,
                        model_name=ScheduleTask.registered_model,
                        fallback_reason=why,
                    )
                )
            notes["fallback"] = "; ".join(
                f"{len(ids)} channel(s) {ids[:10]}: {why}" for why, ids in by_reason.items()
            )
    frame = (
        pd.concat(frames, ignore_index=True)
        if frames
        else stamp(
            _empty(),
            model,
            scored_at,
            model_name=ScheduleTask.registered_model,
            fallback_reason="nothing to score",
        )
    )
    frame = frame.sort_values(["channel_id", "rank"], kind="stable").reset_index(drop=True)
    return ForecastResult(frame, notes=notes, models=models)


# ---------------------------------------------------------------------- per request
def _num(value, digits: int = 4):
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _published_baseline(conn, channel_id: int) -> pd.DataFrame | None:
    if not _table_exists(conn, "forecasts", TABLE):  # a failed query would abort a transaction
        return None
    rows = _frame(
        conn,
        f"""
        SELECT {", ".join(COLUMNS)}, fallback_reason FROM forecasts.{TABLE}
        WHERE channel_id = ? AND source = 'baseline' ORDER BY weekday, hour""",
        [channel_id],
    )
    return rows if rows is not None and len(rows) == N_SLOTS else None


def channel_schedule(
    conn: duckdb.DuckDBPyConnection, model: LoadedModel | None, channel_id, top: int = TOP_SLOTS
) -> dict:
    """The channel's best slots, from the champion or (``model=None`` or a channel it
    cannot score) from the strongest baseline, with the channel's historical best hours.

    ``source`` says which served it (``model`` / ``baseline``) and ``fallback_reason`` why.
    Baseline answers come from the published table's baseline rows when present, else
    the baseline is fitted on the history now.
    """
    channel_id = parse_channel_id(channel_id)
    history = slot_history(conn, channel_id)
    if history is None:
        history = pd.DataFrame(
            columns=[
                "channel_id",
                "weekday",
                "hour",
                "n_posts",
                "mean_view_percentile",
                "mean_relative_views",
            ]
        )
    n_posts = int(history["n_posts"].sum()) if len(history) else 0
    reason = (
        missing_champion(TABLE, ("schedule",), {"schedule": None})
        if model is None
        else scorable(model, n_posts, channel_id)
    )
    base_note = None
    if reason is None:
        assert model is not None
        ranked = rank_channels(model, [channel_id], history)
        q, metric = skill(model)
        source, name, version = "model", model.registered_model, str(model.version)
        basis_q = {"metric": metric, "q": _num(q)}
    else:
        ranked = _published_baseline(conn, channel_id)
        if ranked is not None:
            base_note = "forecasts.posting_schedule_recommendations (baseline rows)"
        else:
            base = fit_baseline(conn)
            if base is None:
                ranked = None
            else:
                ranked = rank_baseline(base, [channel_id], history)
                base_note = _baseline_note(base)
        source, name, version = "baseline", ScheduleTask.registered_model, "none"
        basis_q = {"metric": "baseline holdout spearman", "how": base_note}
    out = {
        "channel_id": channel_id,
        "model_name": name,
        "model_version": version,
        "source": source,
        "fallback_reason": reason,
        "posts_with_48h_data": n_posts,
        "historical_best_hours": historical_best_hours(history),
        "confidence_basis": basis_q,
        "expected_engagement_unit": (
            "log 48 h reach relative to the channel's typical post (0 = typical, +0.1 ≈ 10 % more reach)"
        ),
    }
    if ranked is None:
        return {
            **out,
            "basis": None,
            "top_slots": [],
            "best_hours": [],
            "note": "no labelled posts (48 h views and percentile) to rank slots from",
        }
    ranked = ranked.sort_values(["weekday", "hour"], kind="stable")
    past = dict(
        zip(
            history["weekday"].astype(int) * 24 + history["hour"].astype(int),
            history["mean_view_percentile"],
            strict=True,
        )
    )
    expected = ranked["expected_engagement"].to_numpy(np.float64)
    confidence = ranked["confidence"].to_numpy(np.float64)
    sample = ranked["sample_size"].to_numpy()
    slots = []
    for rank, slot in enumerate(np.argsort(ranked["rank"].to_numpy(), kind="stable")[:top], 1):
        weekday, hour = divmod(int(slot), 24)
        slots.append(
            {
                "rank": rank,
                "weekday": weekday,
                "weekday_name": WEEKDAYS[weekday],
                "hour": hour,
                "expected_engagement": _num(expected[slot]),
                "expected_reach_ratio": _num(math.exp(expected[slot]))
                if math.isfinite(expected[slot])
                else None,
                "confidence": _num(confidence[slot]),
                "sample_size": int(sample[slot]),
                "historical_mean_view_percentile": _num(past.get(int(slot))),
            }
        )
    rank_by_hour = ranked["rank"].to_numpy(np.float64).reshape(7, 24).mean(axis=0)
    return {
        **out,
        "basis": str(ranked["basis"].iloc[0]),
        "top_slots": slots,
        "best_hours": [int(h) for h in np.argsort(rank_by_hour, kind="stable")[:3]],
    }


def historical_best_hours(history: pd.DataFrame, top: int = 3, min_posts: int = 3) -> list[dict]:
    """The channel's best UTC hours by its own past posts (mean within-channel view
    percentile at 48 h, hours with >= ``min_posts`` posts, as in channel_metrics)."""
    if history is None or history.empty:
        return []
    hour = history["hour"].to_numpy(np.int64)
    n = history["n_posts"].to_numpy(np.float64)
    posts = np.bincount(hour, weights=n, minlength=24)
    pct = np.bincount(
        hour, weights=np.nan_to_num(history["mean_view_percentile"].to_numpy(np.float64)) * n, minlength=24
    )
    rel = np.bincount(
        hour, weights=np.nan_to_num(history["mean_relative_views"].to_numpy(np.float64)) * n, minlength=24
    )
    hours = np.flatnonzero(posts >= min_posts)
    order = hours[np.argsort(-pct[hours] / posts[hours], kind="stable")][:top]
    return [
        {
            "hour": int(h),
            "posts": int(posts[h]),
            "mean_view_percentile": _num(pct[h] / posts[h]),
            "mean_relative_views": _num(rel[h] / posts[h]),
        }
        for h in order
    ]
