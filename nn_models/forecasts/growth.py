"""``channel_growth_forecasts``, the per-request growth forecast and its posting what-if.

Every channel with ``MIN_HISTORY_DAYS`` (28) days of subscriber counts gets a 30-day
forecast. The ``growth`` champion serves the channels with at least the days its window
reads (``source = 'model'``); the others — all of them when there is no champion — are
served by the strongest growth baseline (``source = 'baseline'``, ``fallback_reason`` says
why and which). That baseline is chosen at scoring time exactly as in training, on the
warehouse's own latest period: every channel's last ``BACKTEST_ORIGINS`` origins with
``backtest_horizon`` days after them are validation windows, log-drift's lookback and
the strongest of log-drift / seasonal naive / AutoETS are picked by MASE on them, and
its p10/p90 come from its errors on them (``nn_models.baselines_growth``). The choice is
cached per warehouse content, so per-request answers match the table.

The ``growth`` champion reads the last ``history_days`` days of a channel's
``features.channel_daily_features`` (the columns ``RAW_FEATURES``, made gap-free by
the task's own ``channel_series``, which adds ``history_drift``: a missing day repeats
the last subscriber count and has no posts) and returns ln(subscribers) at p10/p50/p90 for each of the next
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
from collections import OrderedDict
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from nn_models import baselines_growth as B
from nn_models.champions import LoadedModel
from nn_models.forecasts.base import (
    LINEAGE_COLUMNS,
    Champions,
    ForecastResult,
    missing_champion,
    stamp,
)
from nn_models.models.growth import RAW_FEATURES, TABLE_FEATURES
from nn_models.service import InvalidInput
from nn_models.tasks.growth import DAILY_SQL, HORIZON, MIN_HISTORY_DAYS, channel_series

TABLE = "channel_growth_forecasts"
COLUMNS = [
    "channel_id",
    "forecast_date",
    "horizon_days",
    "subscribers_p10",
    "subscribers_p50",
    "subscribers_p90",
]
EXTRA_COLUMNS = ["origin_date", "origin_subscribers"]
BATCH = 1024
BACKTEST_ORIGINS = 4  # validation origins per channel for the scoring-time baseline
_CHOICES: OrderedDict[str, B.BaselineChoice] = OrderedDict()  # by warehouse content

CHANNEL_SQL = f"""
SELECT channel_id, day, {", ".join(TABLE_FEATURES)}
FROM features.channel_daily_features
WHERE channel_id = ?
ORDER BY day
"""

# Daily columns proportional to the number of posts (rescaled in the what-if).
POSTING_COLUMNS = (
    "posts",
    "views_48h_sum",
    "forwards_48h_sum",
    "interactions_48h_sum",
    "reach_48h",
    "viral_posts",
)
MAX_POSTS_PER_DAY = 200.0  # the API's bound as well
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


def _stamped(
    frame: pd.DataFrame,
    model: LoadedModel | None,
    scored_at: datetime,
    fallback_reason: str | None = None,
    model_name: str | None = None,
) -> pd.DataFrame:
    """DESIGN columns, then the lineage columns, then the extras (text columns typed as
    strings so an empty frame still becomes VARCHAR, not NULL-typed, in DuckDB)."""
    out = stamp(frame, model, scored_at, model_name, fallback_reason=fallback_reason)
    out = out[[*COLUMNS, *LINEAGE_COLUMNS, *EXTRA_COLUMNS]]
    return out.astype({"model_name": "string", "model_version": "string"})


def _empty() -> pd.DataFrame:
    day_type = pd.ArrowDtype(pa.date32())  # DATE in DuckDB, as the filled frame gives
    types = {
        "channel_id": "int64",
        "horizon_days": "int64",
        "forecast_date": day_type,
        "origin_date": day_type,
    }
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, "float64")) for c in COLUMNS + EXTRA_COLUMNS})


def _rows(channels: list[int], frames: dict[int, pd.DataFrame], q: np.ndarray) -> pd.DataFrame:
    """Long frame: one row per channel and horizon day from (N, horizon, 3) quantiles."""
    horizon = q.shape[1]
    origins = [frames[c].index[-1].date() for c in channels]
    last = [float(frames[c]["subscribers"].iloc[-1]) for c in channels]
    return pd.DataFrame(
        {
            "channel_id": np.repeat(np.array(channels, dtype=np.int64), horizon),
            "forecast_date": [o + timedelta(days=d) for o in origins for d in range(1, horizon + 1)],
            "horizon_days": np.tile(np.arange(1, horizon + 1), len(channels)).astype(np.int64),
            "subscribers_p10": q[..., 0].reshape(-1),
            "subscribers_p50": q[..., 1].reshape(-1),
            "subscribers_p90": q[..., 2].reshape(-1),
            "origin_date": np.repeat(np.array(origins, dtype=object), horizon),
            "origin_subscribers": np.repeat(np.array(last), horizon),
        }
    )


def lookback(model: LoadedModel) -> tuple[int, int]:
    """(history days the model reads, days it forecasts)."""
    return int(model.module.history_days), int(model.module.horizon)


def run_model(model: LoadedModel, windows: np.ndarray) -> np.ndarray:
    """(N, L, len(RAW_FEATURES)) windows → (N, horizon, 3) subscriber quantiles (counts)."""
    parts = [
        model.run(history=np.ascontiguousarray(windows[s : s + BATCH], dtype=np.float32))[0]
        for s in range(0, len(windows), BATCH)
    ]
    return np.exp(np.concatenate(parts).astype(np.float64))  # monotone by construction


def _window(frame: pd.DataFrame, history_days: int) -> np.ndarray:
    return frame[list(RAW_FEATURES)].to_numpy(np.float64)[-history_days:]


# ------------------------------------------------------------------------- the baseline


def backtest_horizon(days: int) -> int:
    """Validation horizon at scoring time for channels of ``days`` days: up to 30 days,
    half of what is left after the 14 days the first fit needs."""
    return int(min(HORIZON, max(1, (days - 2 * B.SEASON) // 2)))


def fit_baseline(frames: dict[int, pd.DataFrame]) -> B.BaselineChoice:
    """The strongest baseline, tuned and chosen on every channel's latest period.

    Cached by content: the table and the per-request answers use the same choice.
    """
    key_frame = pd.concat({c: f["subscribers"] for c, f in sorted(frames.items())})
    key = str(int(pd.util.hash_pandas_object(key_frame).sum()) & 0xFFFFFFFFFFFF) + f"/{len(key_frame)}"
    if key in _CHOICES:
        _CHOICES.move_to_end(key)
        return _CHOICES[key]
    days = int(np.median([len(f) for f in frames.values()]))
    insamples, actuals = B.backtest_windows(
        [f["subscribers"].to_numpy(np.float64) for _, f in sorted(frames.items())],
        backtest_horizon(days),
        BACKTEST_ORIGINS,
    )
    choice = B.choose(insamples, actuals)
    _CHOICES[key] = choice
    while len(_CHOICES) > 8:
        _CHOICES.popitem(last=False)
    return choice


def baseline_quantiles(choice: B.BaselineChoice, frames: list[pd.DataFrame]) -> np.ndarray:
    """(N, HORIZON, 3) subscriber quantiles of the strongest baseline from each latest day."""
    return B.quantile_forecast(choice, [f["subscribers"].to_numpy(np.float64) for f in frames], HORIZON)


def _eligible(daily: pd.DataFrame) -> tuple[dict[int, pd.DataFrame], dict[int, pd.DataFrame]]:
    """(every channel's series, those with at least MIN_HISTORY_DAYS days)."""
    series = channel_series(daily)
    return series, {c: f for c, f in series.items() if len(f) >= MIN_HISTORY_DAYS}


def _no_champion_reason() -> str:
    return missing_champion(TABLE, ("growth",), {"growth": None}) or ""


def _short_reason(days: int, model: LoadedModel) -> str:
    history_days, _ = lookback(model)
    return (
        f"the channel has {days} days of subscriber history; the growth champion "
        f"v{model.version} reads the last {history_days}"
    )


# ------------------------------------------------------------------------------ scoring


def score(conn: duckdb.DuckDBPyConnection, champions: Champions, scored_at: datetime) -> ForecastResult:
    """A 30-day forecast for every channel with 28 days of subscribers, from its latest day:
    the champion's where it can read the channel, else the strongest baseline's."""
    model = champions.get("growth")
    no_champion = missing_champion(TABLE, ("growth",), champions)
    models = {"growth": model.version} if model is not None else {}
    notes: dict[str, str] = {}
    if no_champion:
        notes["no_champion"] = no_champion
    try:
        daily = conn.execute(DAILY_SQL).fetchdf()
    except duckdb.CatalogException as exc:
        why = f"{TABLE}: features.channel_daily_features missing ({exc})"
        return ForecastResult(
            _stamped(_empty(), model, scored_at, why), models=models, notes={**notes, "skipped": why}
        )
    series, eligible = _eligible(daily)
    short = sorted(set(series) - set(eligible))
    if short:
        notes["too_short"] = (
            f"{len(short)} channel(s) without a forecast: fewer than the {MIN_HISTORY_DAYS} "
            f"days of subscriber history any forecast needs ({', '.join(map(str, short[:20]))}"
            f"{', ...' if len(short) > 20 else ''})"
        )
    no_subs = sorted(set(daily["channel_id"].astype(int)) - set(series))
    if no_subs:
        notes["no_subscribers"] = (
            f"{len(no_subs)} channel(s) excluded: no subscriber counts in features.channel_daily_features"
        )
    if not eligible:
        why = f"{TABLE}: no channel has {MIN_HISTORY_DAYS} days of subscriber history"
        notes.setdefault("empty", why)
        return ForecastResult(_stamped(_empty(), model, scored_at, why), notes=notes, models=models)
    parts = []
    by_model = [] if model is None else sorted(c for c, f in eligible.items() if len(f) >= lookback(model)[0])
    failed = None
    if by_model:
        history_days, horizon = lookback(model)
        windows = np.stack([_window(eligible[c], history_days) for c in by_model])
        try:
            q = run_model(model, windows)
        except Exception as exc:  # e.g. a champion saved for other inputs: serve the baseline
            failed = (
                f"the growth champion v{model.version} could not score "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            )
            notes["model_failed"] = failed
            by_model = []
    if by_model:
        parts.append(_stamped(_rows(by_model, eligible, q), model, scored_at))
        notes["scored"] = (
            f"{len(by_model)} channels x {horizon} days by the model from each "
            f"channel's latest day (window {history_days} days); p10-p90 is its "
            "80 % interval"
        )
        coverage = model.metrics.get("coverage_80")
        if coverage is not None:
            notes["scored"] += f", measured holdout coverage {coverage:.2f}"
    rest = sorted(set(eligible) - set(by_model))
    if rest:
        choice = fit_baseline(eligible)
        q = baseline_quantiles(choice, [eligible[c] for c in rest])
        name = f"baseline:{choice.name}"
        if model is None or failed:
            parts.append(
                _stamped(
                    _rows(rest, eligible, q),
                    None,
                    scored_at,
                    f"{no_champion or failed}; served by the {choice.describe()}",
                    name,
                )
            )
        else:
            for days in sorted({len(eligible[c]) for c in rest}):
                idx = [i for i, c in enumerate(rest) if len(eligible[c]) == days]
                parts.append(
                    _stamped(
                        _rows([rest[i] for i in idx], eligible, q[idx]),
                        None,
                        scored_at,
                        f"{_short_reason(days, model)}; served by the {choice.describe()}",
                        name,
                    )
                )
        notes["baseline"] = f"{len(rest)} channels x {HORIZON} days by the {choice.describe()}"
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    frame = frame.sort_values(["channel_id", "horizon_days"], ignore_index=True)
    return ForecastResult(frame, notes=notes, models=models)


# --------------------------------------------------------------------------- per request


def _prediction_days(value: Any, horizon: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= int(value) <= horizon:
        raise InvalidInput(f"prediction_days must be an integer between 1 and {horizon}, got {value!r}")
    return int(value)


def _path(q: np.ndarray, origin: date, days: int) -> list[dict[str, Any]]:
    return [
        {
            "date": (origin + timedelta(days=h)).isoformat(),
            "horizon_days": h,
            "p10": float(q[h - 1, 0]),
            "p50": float(q[h - 1, 1]),
            "p90": float(q[h - 1, 2]),
        }
        for h in range(1, days + 1)
    ]


def _holdout(model: LoadedModel) -> dict[str, float]:
    keys = (
        "mase",
        "coverage_80",
        "mape",
        "baseline_log_drift_mase",
        "baseline_seasonal_naive_mase",
        "baseline_autoets_mase",
    )
    out = {k: model.metrics[k] for k in keys if k in model.metrics}
    out.update({k: v for k, v in model.metrics.items() if k.startswith("margin_mase_vs_")})
    return out


def _model_info(model: LoadedModel) -> dict[str, Any]:
    history_days, horizon = lookback(model)
    return {
        "name": model.registered_model,
        "version": model.version,
        "backend": model.backend,
        "history_days": history_days,
        "horizon_days": horizon,
    }


class _Served:
    """Who answers a request for one channel: the champion, or the baseline and why."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, model: LoadedModel | None, channel_id: int) -> None:
        frame = channel_series(conn.execute(CHANNEL_SQL, [channel_id]).fetchdf()).get(channel_id)
        if frame is None:
            raise InvalidInput(
                f"channel {channel_id} has no subscriber history in features.channel_daily_features"
            )
        if len(frame) < MIN_HISTORY_DAYS:
            raise InvalidInput(
                f"channel {channel_id} has {len(frame)} days of subscriber "
                f"history; a growth forecast needs at least {MIN_HISTORY_DAYS}"
            )
        self.frame = frame
        self.origin = frame.index[-1].date()
        self.model = model if model is not None and len(frame) >= lookback(model)[0] else None
        self.choice: B.BaselineChoice | None = None
        self.reason: str | None = None
        if self.model is None:  # the choice is pooled over every channel, as in the table
            _, eligible = _eligible(conn.execute(DAILY_SQL).fetchdf())
            self.choice = fit_baseline(eligible)
            why = _no_champion_reason() if model is None else _short_reason(len(frame), model)
            self.reason = f"{why}; served by the {self.choice.describe()}"

    def quantiles(self) -> np.ndarray:
        """(HORIZON, 3) subscriber quantiles from the channel's latest day."""
        if self.model is not None:
            return run_model(self.model, _window(self.frame, lookback(self.model)[0])[None])[0]
        return baseline_quantiles(self.choice, [self.frame])[0]

    def lineage(self) -> dict[str, Any]:
        if self.model is not None:
            return {
                "source": "model",
                "fallback_reason": None,
                "holdout": _holdout(self.model),
                "model": _model_info(self.model),
            }
        return {
            "source": "baseline",
            "fallback_reason": self.reason,
            "holdout": {f"validation_mase_{k}": v for k, v in self.choice.val_mase.items()},
            "model": {
                "name": f"baseline:{self.choice.name}",
                "version": "none",
                "backend": "numpy" if self.choice.name != "autoets" else "statsforecast",
                "history_days": len(self.frame),
                "horizon_days": HORIZON,
            },
        }


def forecast_channel(
    conn: duckdb.DuckDBPyConnection, model: LoadedModel | None, channel_id: int, prediction_days: int = 30
) -> dict:
    """The first ``prediction_days`` days of the channel's forecast from its latest day,
    from the champion (``source = 'model'``) or, with ``model=None`` or too short a history
    for it, from the strongest baseline (``source = 'baseline'`` and ``fallback_reason``)."""
    days = _prediction_days(prediction_days, HORIZON if model is None else lookback(model)[1])
    channel_id = int(channel_id)
    served = _Served(conn, model, channel_id)
    q = served.quantiles()
    interval = (
        "p10-p90 is the model's 80 % interval"
        if served.model is not None
        else "p10-p90 from the baseline's errors on the latest validation windows (80 %)"
    )
    return {
        "channel_id": channel_id,
        "last_observed_date": served.origin.isoformat(),
        "last_observed_subscribers": float(served.frame["subscribers"].iloc[-1]),
        "prediction_days": days,
        "forecast": _path(q, served.origin, days),
        "interval": interval,
        **served.lineage(),
    }


def counterfactual_window(window: np.ndarray, posts_per_day: float) -> tuple[np.ndarray, float, float]:
    """The window rewritten for ``posts_per_day`` (see the module docstring):
    (new window, recent posts per day, scale factor)."""
    recent = float(window[:, RAW_FEATURES.index("posts")].mean())
    if recent <= 0:
        raise InvalidInput(
            f"the channel published no post in the last {len(window)} days: "
            "there are no per-post rates to scale to a planned frequency"
        )
    factor = posts_per_day / recent
    out = window.copy()
    for name in POSTING_COLUMNS:
        out[:, RAW_FEATURES.index(name)] *= factor
    return out, recent, factor


def _what_if_request(features: Any, horizon: int) -> tuple[float, int]:
    if not isinstance(features, dict):
        raise InvalidInput("features must be an object {posts_per_day, prediction_days}")
    unknown = set(features) - {"posts_per_day", "prediction_days"}
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(sorted(map(str, unknown)))}; expected "
            "posts_per_day and optionally prediction_days"
        )
    planned = features.get("posts_per_day")
    if (
        isinstance(planned, bool)
        or not isinstance(planned, int | float)
        or not math.isfinite(planned)
        or not 0 <= planned <= MAX_POSTS_PER_DAY
    ):
        raise InvalidInput(
            f"posts_per_day must be a number between 0 and {MAX_POSTS_PER_DAY:g}, got {planned!r}"
        )
    return float(planned), _prediction_days(features.get("prediction_days", horizon), horizon)


def what_if(
    conn: duckdb.DuckDBPyConnection, model: LoadedModel | None, channel_id: int, features: dict
) -> dict:
    """Forecast under the current and under a planned posting frequency (champion only).

    Without a champion that can read the channel, the answer is the baseline's forecast
    and ``what_if`` is ``None``: the baselines extrapolate subscribers alone and have no
    link from posting to growth, so ``explanation`` says what cannot be answered.
    """
    planned, days = _what_if_request(features, HORIZON if model is None else lookback(model)[1])
    channel_id = int(channel_id)
    served = _Served(conn, model, channel_id)
    frame, origin = served.frame, served.origin
    recent = float(frame["posts"].to_numpy()[-MIN_HISTORY_DAYS:].mean())
    common = {
        "channel_id": channel_id,
        "last_observed_date": origin.isoformat(),
        "last_observed_subscribers": float(frame["subscribers"].iloc[-1]),
        "prediction_days": days,
        "recent_posts_per_day": recent,
        "planned_posts_per_day": planned,
    }
    if served.model is None:
        q = served.quantiles()
        return {
            **common,
            "scale_factor": None,
            "baseline": _path(q, origin, days),
            "what_if": None,
            "difference_at_last_horizon": None,
            "explanation": (
                f"No growth model can read this channel ({served.reason.split(';')[0]}). The "
                f"{served.choice.name} baseline forecasts subscribers from their own history "
                "only; it has no input for posting, so it cannot say how "
                f"{planned:g} posts per day instead of {recent:.3g} would change growth. "
                "'baseline' is its forecast under the channel's current behaviour; the "
                "what-if needs a growth champion."
            ),
            "caveats": [],
            **served.lineage(),
        }
    history_days = lookback(served.model)[0]
    window = _window(frame, history_days)
    changed, recent, factor = counterfactual_window(window, planned)
    q = run_model(served.model, np.stack([window, changed]))
    last = days - 1
    base, alt = q[0, last], q[1, last]
    busiest = float(window[:, RAW_FEATURES.index("posts")].max())
    caveats = []
    if planned > busiest:
        caveats.append(
            f"{planned:g} posts/day is more than the channel's busiest day in the "
            f"window ({busiest:g}): the model extrapolates"
        )
    return {
        **common,
        "recent_posts_per_day": recent,
        "scale_factor": factor,
        "baseline": _path(q[0], origin, days),
        "what_if": _path(q[1], origin, days),
        "difference_at_last_horizon": {
            "horizon_days": days,
            "date": (origin + timedelta(days=days)).isoformat(),
            "p10": float(alt[0] - base[0]),
            "p50": float(alt[1] - base[1]),
            "p90": float(alt[2] - base[2]),
            "p50_relative": float(alt[1] / base[1] - 1.0),
        },
        "assumption": WHAT_IF_ASSUMPTION.format(
            days=history_days, planned=planned, recent=recent, factor=factor
        ),
        "caveats": caveats,
        **served.lineage(),
    }
