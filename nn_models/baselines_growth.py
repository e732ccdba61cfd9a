"""The growth model's named baselines: seasonal naive (m = 7) and AutoETS, from statsforecast.

Both are fitted per channel on its whole history before the forecast origin and
forecast the same 30 days as the neural model, with 80 % prediction intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SEASON = 7
LEVEL = 80
MODELS = ("SeasonalNaive", "AutoETS")


@dataclass(frozen=True)
class BaselineForecast:
    """Per model: (series, horizon) point forecasts and the 80 % interval bounds."""

    mean: dict[str, np.ndarray]
    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]


def seasonal_naive(insample: np.ndarray, horizon: int, m: int = SEASON) -> np.ndarray:
    """The last season repeated: y_{T+h} = y_{T+h-m*ceil(h/m)} (hand-checkable reference)."""
    insample = np.asarray(insample, dtype=float)
    if len(insample) < m:
        raise ValueError(f"need at least m={m} points, got {len(insample)}")
    last = insample[-m:]
    return np.array([last[(h - 1) % m] for h in range(1, horizon + 1)])


def statsforecast_baselines(
    series: list[np.ndarray], origin_days: list[np.datetime64], horizon: int
) -> BaselineForecast:
    """Fit ``SeasonalNaive(7)`` and ``AutoETS(season_length=7)`` per series and forecast.

    ``series[i]`` are daily values ending on ``origin_days[i]`` (no gaps, no NaN).
    """
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, SeasonalNaive

    frames = []
    for i, (values, end) in enumerate(zip(series, origin_days, strict=True)):
        values = np.asarray(values, dtype=float)
        days = pd.date_range(end=pd.Timestamp(end), periods=len(values), freq="D")
        frames.append(pd.DataFrame({"unique_id": i, "ds": days, "y": values}))
    frame = pd.concat(frames, ignore_index=True)
    sf = StatsForecast(models=[SeasonalNaive(SEASON), AutoETS(season_length=SEASON)], freq="D")
    forecast = sf.forecast(df=frame, h=horizon, level=[LEVEL])
    forecast = forecast.sort_values(["unique_id", "ds"])
    n = len(series)

    def grid(column: str) -> np.ndarray:
        return forecast[column].to_numpy(dtype=float).reshape(n, horizon)

    return BaselineForecast(
        mean={m: grid(m) for m in MODELS},
        lo={m: grid(f"{m}-lo-{LEVEL}") for m in MODELS},
        hi={m: grid(f"{m}-hi-{LEVEL}") for m in MODELS},
    )
