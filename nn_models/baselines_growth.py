"""The growth model's baselines — log-drift, seasonal naive (m = 7) and AutoETS — and how
the strongest of them is chosen and given a p10–p90 band, on validation windows only.

Each baseline is fitted per channel on its whole subscriber history up to the forecast
origin (the same or more information than the model's window):

- ``log_drift``: ln S continues its mean daily change over the last ``lookback`` days
  (0 = the whole history; the zero-parameter drift method in log space). The lookback
  is the one tuning knob, chosen on validation from ``LOG_DRIFT_LOOKBACKS``.
- ``seasonal_naive``: the last week repeated (m = 7).
- ``autoets``: statsforecast's ``AutoETS(season_length=7)`` on the counts (it picks its
  own error/trend/season form by AICc, in sample).

``choose`` scores them by MASE (m = 7) on validation windows (``insample`` = history up
to an origin, ``actual`` = the days after it) and keeps the lowest as the strongest.
Bands come from the same windows, not from constants: per window and day the log error
``ln(actual / point)`` is divided by the channel's scale (mean |7-day change of ln S| over
the last 28 days before the origin) times ``h ** BAND_POWER``; the 10 % and 90 % quantiles
of those pooled z-values give ``p10 = point * exp(z10 * scale * h ** BAND_POWER)`` (p90
likewise) at every horizon, also beyond the validated days. ``BAND_POWER`` is itself
chosen on validation: the power whose per-day coverage is flattest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nn_models import metrics as M

SEASON = 7
BASELINES = ("log_drift", "seasonal_naive", "autoets")
LOG_DRIFT_LOOKBACKS = (7, 14, 28, 0)  # 0: the whole history before the origin
BAND_POWERS = (0.5, 0.75, 1.0)
SCALE_DAYS = 28
MIN_INSAMPLE = SEASON + 1  # MASE's scale needs more than m points


def seasonal_naive(insample: np.ndarray, horizon: int, m: int = SEASON) -> np.ndarray:
    """The last season repeated: y_{T+h} = y_{T+h-m*ceil(h/m)} (hand-checkable reference)."""
    insample = np.asarray(insample, dtype=float)
    if len(insample) < m:
        raise ValueError(f"need at least m={m} points, got {len(insample)}")
    last = insample[-m:]
    return np.array([last[(h - 1) % m] for h in range(1, horizon + 1)])


def log_drift(insample: np.ndarray, horizon: int, lookback: int = 0) -> np.ndarray:
    """S_T * exp(h * mean daily change of ln S over the last ``lookback`` days (0 = all))."""
    log_s = np.log(np.maximum(np.asarray(insample, dtype=float), 1.0))
    span = len(log_s) - 1 if lookback <= 0 else min(lookback, len(log_s) - 1)
    drift = (log_s[-1] - log_s[-1 - span]) / span if span > 0 else 0.0
    return np.exp(log_s[-1] + drift * np.arange(1, horizon + 1))


def autoets(series: list[np.ndarray], horizon: int) -> np.ndarray:
    """(len(series), horizon) AutoETS(season_length=7) point forecasts, one fit per series."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    if not series:
        return np.zeros((0, horizon))
    frames = []
    for i, values in enumerate(series):
        values = np.asarray(values, dtype=float)
        days = pd.date_range(end=pd.Timestamp("2000-01-01"), periods=len(values), freq="D")
        frames.append(pd.DataFrame({"unique_id": i, "ds": days, "y": values}))
    sf = StatsForecast(models=[AutoETS(season_length=SEASON)], freq="D")
    forecast = sf.forecast(df=pd.concat(frames, ignore_index=True), h=horizon)
    forecast = forecast.sort_values(["unique_id", "ds"])
    out = forecast["AutoETS"].to_numpy(dtype=float).reshape(len(series), horizon)
    # a collapsing trend must not forecast a non-positive audience
    return np.maximum(out, 1.0)


def point_forecasts(name: str, series: list[np.ndarray], horizon: int, lookback: int = 0) -> np.ndarray:
    """(len(series), horizon) point forecasts of one named baseline."""
    if name == "log_drift":
        return np.array([log_drift(s, horizon, lookback) for s in series]).reshape(-1, horizon)
    if name == "seasonal_naive":
        return np.array([seasonal_naive(s, horizon) for s in series]).reshape(-1, horizon)
    if name == "autoets":
        return autoets(series, horizon)
    raise ValueError(f"unknown growth baseline {name!r}; expected one of {BASELINES}")


def channel_scale(insample: np.ndarray) -> float:
    """Mean |7-day change of ln S| over the last ``SCALE_DAYS`` days (floored at 1e-4)."""
    log_s = np.log(np.maximum(np.asarray(insample, dtype=float)[-SCALE_DAYS:], 1.0))
    if len(log_s) <= SEASON:
        return 1e-4
    return float(max(np.abs(log_s[SEASON:] - log_s[:-SEASON]).mean(), 1e-4))


def mase_per_window(insamples: list[np.ndarray], actuals: np.ndarray, points: np.ndarray) -> np.ndarray:
    """MASE (m = 7) of each window, scaled by its own history before the origin."""
    return np.array([M.mase(a, p, s, m=SEASON) for s, a, p in zip(insamples, actuals, points, strict=True)])


@dataclass(frozen=True)
class BaselineChoice:
    """The strongest baseline on validation, and everything needed to forecast with it."""

    name: str  # strongest on validation (lowest MASE)
    lookback: int  # log-drift lookback chosen on validation
    band_power: float  # h ** power in the band's growth
    val_mase: dict[str, float]  # every baseline's validation MASE
    z: dict[str, tuple[float, float]]  # per baseline: (z10, z90) of the band
    val_coverage: dict[str, float] = field(default_factory=dict)
    n_windows: int = 0
    val_horizon: int = 0

    def describe(self) -> str:
        scores = ", ".join(f"{n} {v:.3f}" for n, v in self.val_mase.items())
        drift = f" (log-drift lookback {self.lookback or 'all'} days)" if self.name == "log_drift" else ""
        return (
            f"strongest baseline {self.name}{drift}, chosen on {self.n_windows} "
            f"validation windows of {self.val_horizon} days by MASE ({scores}); p10-p90 "
            f"from its validation errors (z {self.z[self.name][0]:+.2f}/"
            f"{self.z[self.name][1]:+.2f} x scale x h^{self.band_power:g})"
        )

    def as_info(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {
            "strongest_baseline": self.name,
            "log_drift_lookback": self.lookback,
            "baseline_band_power": self.band_power,
        }
        out.update({f"baseline_val_mase_{n}": v for n, v in self.val_mase.items()})
        return out


def _z_values(
    insamples: list[np.ndarray], actuals: np.ndarray, points: np.ndarray, power: float
) -> np.ndarray:
    """(windows, days) normalised log errors of a point forecast."""
    scale = np.array([channel_scale(s) for s in insamples])[:, None]
    h = np.arange(1, actuals.shape[1] + 1)[None, :] ** power
    return np.log(np.maximum(actuals, 1.0) / np.maximum(points, 1.0)) / (scale * h)


def choose(insamples: list[np.ndarray], actuals: np.ndarray) -> BaselineChoice:
    """Tune every baseline on these validation windows and pick the strongest (lowest MASE).

    ``insamples[i]`` is a channel's history up to an origin, ``actuals[i]`` the days after.
    """
    actuals = np.asarray(actuals, dtype=float)
    if not len(insamples):
        raise ValueError("no validation windows to choose a growth baseline on")
    horizon = actuals.shape[1]
    drift_scores = {
        lb: float(
            mase_per_window(insamples, actuals, point_forecasts("log_drift", insamples, horizon, lb)).mean()
        )
        for lb in LOG_DRIFT_LOOKBACKS
    }
    lookback = min(drift_scores, key=lambda lb: (drift_scores[lb], LOG_DRIFT_LOOKBACKS.index(lb)))
    points = {name: point_forecasts(name, insamples, horizon, lookback) for name in BASELINES}
    val_mase = {name: float(mase_per_window(insamples, actuals, p).mean()) for name, p in points.items()}
    strongest = min(BASELINES, key=lambda n: (val_mase[n], BASELINES.index(n)))

    def flatness(power: float) -> float:
        z = _z_values(insamples, actuals, points[strongest], power)
        lo, hi = np.quantile(z, [0.1, 0.9])
        per_day = ((z >= lo) & (z <= hi)).mean(axis=0)
        return float(np.abs(per_day - 0.8).mean())

    power = min(BAND_POWERS, key=flatness) if horizon > 1 else 0.5
    z, coverage = {}, {}
    for name, p in points.items():
        values = _z_values(insamples, actuals, p, power)
        lo, hi = np.quantile(values, [0.1, 0.9])
        z[name] = (float(lo), float(hi))
        coverage[name] = float(((values >= lo) & (values <= hi)).mean())
    return BaselineChoice(
        strongest,
        int(lookback),
        float(power),
        val_mase,
        z,
        coverage,
        n_windows=len(insamples),
        val_horizon=horizon,
    )


def quantile_forecast(
    choice: BaselineChoice, insamples: list[np.ndarray], horizon: int, name: str | None = None
) -> np.ndarray:
    """(len(insamples), horizon, 3) p10/p50/p90 counts of baseline ``name`` (default: the
    strongest), its band from the validation errors measured in ``choose``."""
    name = name or choice.name
    point = point_forecasts(name, insamples, horizon, choice.lookback)
    scale = np.array([channel_scale(s) for s in insamples])[:, None]
    width = scale * np.arange(1, horizon + 1)[None, :] ** choice.band_power
    z10, z90 = choice.z[name]
    return np.stack([point * np.exp(z10 * width), point, point * np.exp(z90 * width)], axis=-1)


def backtest_windows(
    series: list[np.ndarray], horizon: int, origins: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Validation windows from the latest period of each series: up to ``origins`` origins,
    one day apart, the last ``horizon`` days after the latest one (used at scoring time,
    when the latest observed days are the freshest validation there is)."""
    insamples, actuals = [], []
    for values in series:
        values = np.asarray(values, dtype=float)
        for k in range(origins):
            end = len(values) - horizon - k  # insample = values[:end]
            if end < MIN_INSAMPLE:
                break
            insamples.append(values[:end])
            actuals.append(values[end : end + horizon])
    return insamples, np.asarray(actuals, dtype=float).reshape(-1, horizon)
