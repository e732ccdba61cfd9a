"""``channel_growth_forecasts``, the per-request growth forecast and its posting what-if.

The ``growth`` champion reads the last ``history_days`` days of a channel's
``features.channel_daily_features`` (the raw columns ``RAW_FEATURES``, made gap-free by
the task's own ``channel_series``: a missing day repeats the last subscriber count and
has no posts) and returns ln(subscribers) at p10/p50/p90 for each of the next
``horizon`` days. The forecast origin is the channel's LATEST observed day, so horizon
1 is the day after it. The model itself hides the 48 h post statistics of the last two
days (not known yet on the origin day), exactly as in training.

What-if ("growth under a planned posting frequency"). The model has no input for
future posting; its only handle on posting is the activity in the window it reads.
The counterfactual therefore rewrites that window as if the channel had posted at the
planned rate: every day's ``posts`` and the per-post sums that scale with the number
of posts (``views_48h_sum``, ``forwards_48h_sum``, ``interactions_48h_sum``,
``reach_48h`` = views / subscribers, ``viral_posts``) are multiplied by
``planned / recent posts per day``. Per-post rates (views, forwards and interactions
per post, the engagement rate, the viral share, text length) stay what the channel
actually had, day by day, and the subscriber history is left as observed. The answer
is the model's forecast for that rewritten window next to the forecast for the real
one, nothing more: the model learned how past activity relates to later growth
across channels, not what a change of schedule causes.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from nn_models.champions import LoadedModel
from nn_models.forecasts.base import (
    LINEAGE_COLUMNS,
    Champions,
    ForecastResult,
    missing_champion,
    stamp,
)
from nn_models.models.growth import RAW_FEATURES
from nn_models.service import InvalidInput
from nn_models.tasks.growth import DAILY_SQL, channel_series

TABLE = "channel_growth_forecasts"
COLUMNS = ["channel_id", "forecast_date", "horizon_days", "subscribers_p10", "subscribers_p50",
           "subscribers_p90"]
EXTRA_COLUMNS = ["origin_date", "origin_subscribers"]
BATCH = 1024

CHANNEL_SQL = f"""
SELECT channel_id, day, {", ".join(RAW_FEATURES)}
FROM features.channel_daily_features
WHERE channel_id = ?
ORDER BY day
"""

# Daily columns proportional to the number of posts (rescaled in the what-if).
POSTING_COLUMNS = ("posts", "views_48h_sum", "forwards_48h_sum", "interactions_48h_sum",
                   "reach_48h", "viral_posts")
MAX_POSTS_PER_DAY = 200.0      # the API's bound as well
WHAT_IF_ASSUMPTION = (
    "The model has no input for future posting. The what-if rewrites the window it reads "
    "({days} days) as if the channel had posted {planned:g} instead of {recent:.3g} posts "
    "per day: each day's posts and post-proportional sums (48 h views, forwards, "
    "interactions, reach, viral posts) are multiplied by {factor:.3g}, while per-post "
    "rates (views, forwards and interactions per post, engagement rate, viral share, text "
    "length) stay at the channel's own recent values and the subscriber history stays as "
    "observed. It is the model's forecast for that counterfactual window, a learned "
    "association between activity and later growth, not a causal estimate."
)


# ----------------------------------------------------------------------------- helpers


def _stamped(frame: pd.DataFrame, model: LoadedModel | None,
             scored_at: datetime) -> pd.DataFrame:
    """DESIGN columns, then the lineage columns, then the extras (text columns typed as
    strings so an empty frame still becomes VARCHAR, not NULL-typed, in DuckDB)."""
    out = stamp(frame, model, scored_at)[[*COLUMNS, *LINEAGE_COLUMNS, *EXTRA_COLUMNS]]
    return out.astype({"model_name": "string", "model_version": "string"})


def _empty() -> pd.DataFrame:
    day_type = pd.ArrowDtype(pa.date32())      # DATE in DuckDB, as the filled frame gives
    types = {"channel_id": "int64", "horizon_days": "int64", "forecast_date": day_type,
             "origin_date": day_type}
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, "float64"))
                         for c in COLUMNS + EXTRA_COLUMNS})


def lookback(model: LoadedModel) -> tuple[int, int]:
    """(history days the model reads, days it forecasts)."""
    return int(model.module.history_days), int(model.module.horizon)


def run_model(model: LoadedModel, windows: np.ndarray) -> np.ndarray:
    """(N, L, len(RAW_FEATURES)) windows → (N, horizon, 3) subscriber quantiles (counts)."""
    parts = [model.run(history=np.ascontiguousarray(windows[s : s + BATCH], dtype=np.float32))[0]
             for s in range(0, len(windows), BATCH)]
    return np.exp(np.concatenate(parts).astype(np.float64))   # monotone by construction


def _window(frame: pd.DataFrame, history_days: int) -> np.ndarray:
    return frame[list(RAW_FEATURES)].to_numpy(np.float64)[-history_days:]


def _channel_frame(conn: duckdb.DuckDBPyConnection, model: LoadedModel,
                   channel_id: int) -> pd.DataFrame:
    """The channel's gap-free daily series, long enough for the model, else InvalidInput."""
    daily = conn.execute(CHANNEL_SQL, [channel_id]).fetchdf()
    frame = channel_series(daily).get(channel_id)
    history_days, _ = lookback(model)
    if frame is None:
        raise InvalidInput(f"channel {channel_id} has no subscriber history in "
                           "features.channel_daily_features")
    if len(frame) < history_days:
        raise InvalidInput(f"channel {channel_id} has {len(frame)} days of subscriber history; "
                           f"the growth model reads the last {history_days}")
    return frame


def _prediction_days(value: Any, horizon: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) \
            or not 1 <= int(value) <= horizon:
        raise InvalidInput(f"prediction_days must be an integer between 1 and {horizon}, "
                           f"got {value!r}")
    return int(value)


def _path(q: np.ndarray, origin: date, days: int) -> list[dict[str, Any]]:
    return [{"date": (origin + timedelta(days=h)).isoformat(), "horizon_days": h,
             "p10": float(q[h - 1, 0]), "p50": float(q[h - 1, 1]), "p90": float(q[h - 1, 2])}
            for h in range(1, days + 1)]


def _holdout(model: LoadedModel) -> dict[str, float]:
    keys = ("mase", "coverage_80", "mape", "baseline_seasonal_naive_mase", "baseline_autoets_mase")
    return {k: model.metrics[k] for k in keys if k in model.metrics}


def _model_info(model: LoadedModel) -> dict[str, Any]:
    history_days, horizon = lookback(model)
    return {"name": model.registered_model, "version": model.version, "backend": model.backend,
            "history_days": history_days, "horizon_days": horizon}


# ------------------------------------------------------------------------------ scoring


def score(conn: duckdb.DuckDBPyConnection, champions: Champions,
          scored_at: datetime) -> ForecastResult:
    """A ``horizon``-day forecast per channel from its latest day of daily features."""
    model = champions.get("growth")
    reason = missing_champion(TABLE, ("growth",), champions)
    if reason:
        return ForecastResult(_stamped(_empty(), None, scored_at), notes={"skipped": reason})
    models = {"growth": model.version}
    try:
        daily = conn.execute(DAILY_SQL).fetchdf()
    except duckdb.CatalogException as exc:
        return ForecastResult(_stamped(_empty(), model, scored_at), models=models,
                              notes={"skipped": f"{TABLE}: features.channel_daily_features "
                                                f"missing ({exc})"})
    history_days, horizon = lookback(model)
    series = channel_series(daily)
    usable = {c: f for c, f in series.items() if len(f) >= history_days}
    notes: dict[str, str] = {}
    short = sorted(set(series) - set(usable))
    if short:
        notes["too_short"] = (
            f"{len(short)} channel(s) excluded: fewer than the {history_days} days of "
            f"subscriber history the model reads ({', '.join(map(str, short[:20]))}"
            f"{', ...' if len(short) > 20 else ''})")
    no_subs = sorted(set(daily["channel_id"].astype(int)) - set(series))
    if no_subs:
        notes["no_subscribers"] = (f"{len(no_subs)} channel(s) excluded: no subscriber counts "
                                   "in features.channel_daily_features")
    if not usable:
        notes.setdefault("empty", f"{TABLE}: no channel has enough daily history")
        return ForecastResult(_stamped(_empty(), model, scored_at), notes=notes, models=models)
    channels = sorted(usable)
    windows = np.stack([_window(usable[c], history_days) for c in channels])
    q = run_model(model, windows)                                   # (N, H, 3)
    origins = [usable[c].index[-1].date() for c in channels]
    n = len(channels)
    h = np.tile(np.arange(1, horizon + 1), n)
    frame = pd.DataFrame({
        "channel_id": np.repeat(np.array(channels, dtype=np.int64), horizon),
        "forecast_date": [o + timedelta(days=int(d)) for o in origins for d in range(1, horizon + 1)],
        "horizon_days": h.astype(np.int64),
        "subscribers_p10": q[..., 0].reshape(-1),
        "subscribers_p50": q[..., 1].reshape(-1),
        "subscribers_p90": q[..., 2].reshape(-1),
        "origin_date": np.repeat(np.array(origins, dtype=object), horizon),
        "origin_subscribers": np.repeat(windows[:, -1, RAW_FEATURES.index("subscribers")],
                                        horizon),
    })
    notes["scored"] = (f"{n} channels x {horizon} days from each channel's latest day "
                       f"(window {history_days} days); p10-p90 is the model's 80 % interval")
    coverage = model.metrics.get("coverage_80")
    if coverage is not None:
        notes["scored"] += f", measured holdout coverage {coverage:.2f}"
    return ForecastResult(_stamped(frame, model, scored_at), notes=notes, models=models)


# --------------------------------------------------------------------------- per request


def forecast_channel(conn: duckdb.DuckDBPyConnection, model: LoadedModel, channel_id: int,
                     prediction_days: int = 30) -> dict:
    """The first ``prediction_days`` days of the channel's forecast from its latest day."""
    history_days, horizon = lookback(model)
    days = _prediction_days(prediction_days, horizon)
    channel_id = int(channel_id)
    frame = _channel_frame(conn, model, channel_id)
    q = run_model(model, _window(frame, history_days)[None])[0]
    origin = frame.index[-1].date()
    return {
        "channel_id": channel_id,
        "last_observed_date": origin.isoformat(),
        "last_observed_subscribers": float(frame["subscribers"].iloc[-1]),
        "prediction_days": days,
        "forecast": _path(q, origin, days),
        "interval": "p10-p90 is the model's 80 % interval",
        "holdout": _holdout(model),
        "model": _model_info(model),
    }


def counterfactual_window(window: np.ndarray, posts_per_day: float) -> tuple[np.ndarray, float,
                                                                             float]:
    """The window rewritten for ``posts_per_day`` (see the module docstring):
    (new window, recent posts per day, scale factor)."""
    recent = float(window[:, RAW_FEATURES.index("posts")].mean())
    if recent <= 0:
        raise InvalidInput(f"the channel published no post in the last {len(window)} days: "
                           "there are no per-post rates to scale to a planned frequency")
    factor = posts_per_day / recent
    out = window.copy()
    for name in POSTING_COLUMNS:
        out[:, RAW_FEATURES.index(name)] *= factor
    return out, recent, factor


def what_if(conn: duckdb.DuckDBPyConnection, model: LoadedModel, channel_id: int,
            features: dict) -> dict:
    """Baseline forecast and the forecast under a planned posting frequency."""
    if not isinstance(features, dict):
        raise InvalidInput("features must be an object {posts_per_day, prediction_days}")
    unknown = set(features) - {"posts_per_day", "prediction_days"}
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}; expected "
                           "posts_per_day and optionally prediction_days")
    history_days, horizon = lookback(model)
    planned = features.get("posts_per_day")
    if isinstance(planned, bool) or not isinstance(planned, int | float) \
            or not math.isfinite(planned) or not 0 <= planned <= MAX_POSTS_PER_DAY:
        raise InvalidInput(f"posts_per_day must be a number between 0 and {MAX_POSTS_PER_DAY:g}, "
                           f"got {planned!r}")
    days = _prediction_days(features.get("prediction_days", horizon), horizon)
    channel_id = int(channel_id)
    frame = _channel_frame(conn, model, channel_id)
    window = _window(frame, history_days)
    changed, recent, factor = counterfactual_window(window, float(planned))
    q = run_model(model, np.stack([window, changed]))
    origin = frame.index[-1].date()
    last = days - 1
    base, alt = q[0, last], q[1, last]
    busiest = float(window[:, RAW_FEATURES.index("posts")].max())
    caveats = []
    if planned > busiest:
        caveats.append(f"{planned:g} posts/day is more than the channel's busiest day in the "
                       f"window ({busiest:g}): the model extrapolates")
    return {
        "channel_id": channel_id,
        "last_observed_date": origin.isoformat(),
        "last_observed_subscribers": float(frame["subscribers"].iloc[-1]),
        "prediction_days": days,
        "recent_posts_per_day": recent,
        "planned_posts_per_day": float(planned),
        "scale_factor": factor,
        "baseline": _path(q[0], origin, days),
        "what_if": _path(q[1], origin, days),
        "difference_at_last_horizon": {
            "horizon_days": days,
            "date": (origin + timedelta(days=days)).isoformat(),
            "p10": float(alt[0] - base[0]), "p50": float(alt[1] - base[1]),
            "p90": float(alt[2] - base[2]),
            "p50_relative": float(alt[1] / base[1] - 1.0),
        },
        "assumption": WHAT_IF_ASSUMPTION.format(days=history_days, planned=float(planned),
                                                recent=recent, factor=factor),
        "caveats": caveats,
        "holdout": _holdout(model),
        "model": _model_info(model),
    }
