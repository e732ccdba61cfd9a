"""Growth task: 30-day subscriber quantiles per channel (DESIGN §4, model card "growth").

Data: ``features.channel_daily_features``, one row per channel and day. Holdout = the
last ``HORIZON`` days of every channel: the forecast origin is the day before them and
the model sees the ``history_days`` days up to it. Windows slide over every earlier
origin whose 30 target days end on or before the holdout origin, so no target of any
training or validation window lies in the holdout. Validation = each channel's latest
``VAL_ORIGINS`` origins (every ``VAL_STRIDE``-th); training = the origins whose targets
end on or before the first validation origin (purged, so validation is out of sample
for early stopping and for the split-conformal calibration of the p10–p90 band).

Metrics on the holdout: MASE (m = 7; scale from each channel's whole history before
the origin) averaged over channels, and the coverage of the p10–p90 interval. The
baselines (seasonal naive and AutoETS from statsforecast) forecast the same days.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import optuna
import pandas as pd
import torch
from torch import nn

from nn_models import metrics as M
from nn_models import plots
from nn_models.baselines_growth import statsforecast_baselines
from nn_models.device import DeviceChoice
from nn_models.models.growth import QUANTILES, RAW_FEATURES, GrowthForecaster
from nn_models.task import Gate, InsufficientData, ModelTask, PreparedData
from nn_models.training import TrainConfig, TrainResult, fit, seed_everything

HORIZON = 30
HISTORY_DAYS = 56
VAL_ORIGINS = 14
VAL_STRIDE = 2   # neighbouring validation origins share 55 of 56 days
SEASON = 7
COVERAGE_RANGE = (0.70, 0.90)
MIN_WINDOWS = {"train": 20, "val": 5}

DAILY_SQL = f"""
SELECT channel_id, day, {", ".join(RAW_FEATURES)}
FROM features.channel_daily_features
ORDER BY channel_id, day
"""


def channel_series(daily: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Per channel, a gap-free daily frame of RAW_FEATURES from its first subscriber count.

    Missing days repeat the last subscriber count and have no post activity.
    """
    out: dict[int, pd.DataFrame] = {}
    for channel, frame in daily.groupby("channel_id", sort=True):
        frame = frame.assign(day=pd.to_datetime(frame["day"])).set_index("day").sort_index()
        frame = frame[frame["subscribers"].notna()]
        if frame.empty:
            continue
        days = pd.date_range(frame.index.min(), frame.index.max(), freq="D")
        frame = frame.reindex(days)
        frame["subscribers"] = frame["subscribers"].ffill()
        frame = frame.fillna({c: 0.0 for c in RAW_FEATURES if c != "subscribers"})
        frame["weekday"] = frame.index.weekday
        out[int(channel)] = frame[list(RAW_FEATURES)].astype(np.float64)
    return out


def _windows(values: np.ndarray, origins: list[int], history: int) -> tuple[np.ndarray, ...]:
    x = np.stack([values[o - history + 1 : o + 1] for o in origins])
    y = np.stack([values[o + 1 : o + 1 + HORIZON, 0] for o in origins])
    return x.astype(np.float32), y.astype(np.float32)


def growth_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Pinball loss of the normalised quantiles, averaged over days and quantiles."""
    history, future = batch["history"], batch["future"]
    log0, sigma = model.scale(history)
    target = (torch.log(future.clamp_min(1.0)) - log0.unsqueeze(1)) / sigma.unsqueeze(1)
    q = torch.tensor(QUANTILES, dtype=target.dtype, device=target.device)
    diff = target.unsqueeze(-1) - model.normalised(history)
    return torch.maximum(q * diff, (q - 1) * diff).mean()


class GrowthTask(ModelTask):
    name = "growth"
    registered_model = "channel_pulse_growth"
    primary_metric = "mase"
    higher_is_better = False

    def __init__(self, history_days: int = HISTORY_DAYS) -> None:
        self.history_days = history_days

    # ------------------------------------------------------------------ data
    def load(self, conn: duckdb.DuckDBPyConnection) -> PreparedData:
        try:
            daily = conn.execute(DAILY_SQL).df()
        except duckdb.CatalogException as exc:
            raise InsufficientData(f"growth: feature table missing ({exc})") from exc
        series = channel_series(daily)
        history = self.history_days
        need = history + HORIZON
        usable = {c: s for c, s in series.items() if len(s) >= need}
        if not usable:
            longest = max((len(s) for s in series.values()), default=0)
            raise InsufficientData(
                f"growth: no channel has {need} days of subscribers ({history} days of "
                f"history + a {HORIZON}-day holdout); the longest has {longest}"
            )
        parts: dict[str, list] = {"train": [], "val": []}
        holdout: dict[str, list] = {"history": [], "insample": [], "future": [],
                                    "channel_id": [], "origin_day": []}
        longest = max(len(s) for s in usable.values()) - HORIZON
        for channel, frame in usable.items():
            values = frame.to_numpy()
            origin = len(values) - HORIZON - 1
            pad = np.full((longest - origin - 1, len(RAW_FEATURES)), np.nan)
            holdout["history"].append(np.concatenate([pad, values[: origin + 1]]))
            holdout["insample"].append(np.concatenate([pad[:, 0], values[: origin + 1, 0]]))
            holdout["future"].append(values[origin + 1 :, 0])
            holdout["channel_id"].append(channel)
            holdout["origin_day"].append(frame.index[origin].to_datetime64())
            origins = list(range(history - 1, origin - HORIZON + 1))
            # purged: training targets end on or before the first validation origin
            train_origins = origins[: max(0, len(origins) - VAL_ORIGINS - HORIZON + 1)]
            if train_origins:
                parts["train"].append(
                    _windows(values, train_origins, history))
            if origins:
                parts["val"].append(
                    _windows(values, origins[-VAL_ORIGINS:][::-VAL_STRIDE][::-1], history))
        splits = {}
        for split, need_windows in MIN_WINDOWS.items():
            n = sum(len(x) for x, _ in parts[split])
            if n < need_windows:
                raise InsufficientData(
                    f"growth: {n} {split} windows (need {need_windows}); a channel needs at "
                    f"least {history + 3 * HORIZON + VAL_ORIGINS - 1} days to train on"
                )
            splits[split] = {"history": np.concatenate([x for x, _ in parts[split]]),
                             "future": np.concatenate([y for _, y in parts[split]])}
        hold = {
            "history": np.stack(holdout["history"]).astype(np.float32),
            "insample": np.stack(holdout["insample"]),
            "future": np.stack(holdout["future"]),
            "channel_id": np.array(holdout["channel_id"], dtype=np.int64),
            "origin_day": np.array(holdout["origin_day"], dtype="datetime64[D]").astype(np.int64),
        }
        info = {
            "channels": len(usable), "channels_too_short": len(series) - len(usable),
            "train_windows": len(splits["train"]["future"]),
            "val_windows": len(splits["val"]["future"]),
            "history_days": history, "horizon_days": HORIZON,
            "holdout_origin_last": str(max(holdout["origin_day"]))[:10],
        }
        return PreparedData(splits["train"], splits["val"], hold, info)

    # ----------------------------------------------------------------- model
    def default_params(self) -> dict[str, Any]:
        return {"hidden": 256, "layers": 2, "dropout": 0.2, "dense": 128, "lr": 3e-4,
                "weight_decay": 1e-3, "batch_size": 64}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        params = self.default_params()
        params.update(
            hidden=trial.suggest_categorical("hidden", [128, 256]),
            dropout=trial.suggest_float("dropout", 0.1, 0.4),
            lr=trial.suggest_float("lr", 1e-4, 1e-3, log=True),
            weight_decay=trial.suggest_float("weight_decay", 1e-4, 1e-2, log=True),
        )
        return params

    def train(self, params: dict[str, Any], data: PreparedData, choice: DeviceChoice,
              max_epochs: int, seed: int, on_epoch=None) -> TrainResult:
        seed_everything(seed)
        history = data.train["history"].shape[1]
        model = GrowthForecaster(history_days=history, horizon=HORIZON, hidden=params["hidden"],
                                 layers=params["layers"], dropout=params["dropout"],
                                 dense=params["dense"])
        model.set_normalisation(torch.as_tensor(data.train["history"]))
        cfg = TrainConfig(max_epochs=max_epochs, lr=params["lr"],
                          weight_decay=params["weight_decay"], batch_size=params["batch_size"],
                          patience=3, seed=seed)
        result = fit(model, data.train, data.val, growth_loss, cfg, choice, on_epoch)
        device = next(result.model.parameters()).device
        scale = result.model.calibrate_intervals(
            torch.as_tensor(data.val["history"], device=device),
            torch.as_tensor(data.val["future"], device=device))
        result.note = f"{result.note} p10-p90 band x{scale:.3f} (split-conformal on validation)"
        return result

    # ------------------------------------------------------------ evaluation
    @staticmethod
    def forecast(model: nn.Module, data: PreparedData) -> np.ndarray:
        """(channels, HORIZON, 3) subscriber quantiles of the holdout days (counts)."""
        h = data.holdout
        history = h["history"][:, -model.history_days :]
        if np.isnan(history).any():
            raise ValueError(f"model needs {model.history_days} days of history before the "
                             "origin; some holdout channels have fewer")
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model(history=torch.as_tensor(history, device=device))
        return np.exp(out.cpu().numpy().astype(np.float64))[:, : h["future"].shape[1]]

    @staticmethod
    def _scores(future: np.ndarray, insample: np.ndarray, point: np.ndarray,
                lo: np.ndarray, hi: np.ndarray) -> dict[str, float]:
        mases = [M.mase(f, p, s[~np.isnan(s)], m=SEASON)
                 for f, p, s in zip(future, point, insample, strict=True)]
        return {
            "mase": float(np.mean(mases)),
            "mase_median": float(np.median(mases)),
            "coverage_80": M.interval_coverage(future, lo, hi),
            "mape": float(np.mean(np.abs(point - future) / np.maximum(future, 1.0))),
        }

    def evaluate(self, model: nn.Module, data: PreparedData) -> dict[str, float]:
        h = data.holdout
        q = self.forecast(model, data)
        out = self._scores(h["future"], h["insample"], q[..., 1], q[..., 0], q[..., 2])
        out["pinball_p50_relative"] = float(np.mean(np.abs(q[..., 1] - h["future"]) /
                                                    h["future"].clip(1.0)) / 2)
        return out

    def baseline(self, data: PreparedData) -> dict[str, float]:
        h = data.holdout
        series = [s[~np.isnan(s)] for s in h["insample"]]
        origins = [np.datetime64(int(d), "D") for d in h["origin_day"]]
        fc = statsforecast_baselines(series, origins, h["future"].shape[1])
        out: dict[str, float] = {}
        for model, prefix in (("SeasonalNaive", "seasonal_naive"), ("AutoETS", "autoets")):
            scores = self._scores(h["future"], h["insample"], fc.mean[model], fc.lo[model],
                                  fc.hi[model])
            out.update({f"baseline_{prefix}_{k}": v for k, v in scores.items()})
        return out

    def gates(self, metrics: dict[str, float], baseline: dict[str, float]) -> list[Gate]:
        mase, cov = metrics["mase"], metrics["coverage_80"]
        naive, ets = baseline["baseline_seasonal_naive_mase"], baseline["baseline_autoets_mase"]
        lo, hi = COVERAGE_RANGE
        return [
            Gate("mase_vs_seasonal_naive", mase < naive, mase, naive,
                 "MASE (m=7) on the 30-day holdout below seasonal naive's", kind="baseline"),
            Gate("mase_vs_autoets", mase < ets, mase, ets,
                 "MASE (m=7) on the 30-day holdout below AutoETS's", kind="baseline"),
            Gate("coverage_80_min", cov >= lo, cov, lo, "p10–p90 coverage >= 0.70"),
            Gate("coverage_80_max", cov <= hi, cov, hi, "p10–p90 coverage <= 0.90"),
        ]

    # ------------------------------------------------------------- reporting
    def plots(self, model: nn.Module, data: PreparedData, result: TrainResult) -> dict:
        h = data.holdout
        q = self.forecast(model, data)
        n = min(4, len(q))
        # the largest, the smallest and two in between
        order = np.argsort(h["future"][:, -1])
        picks = order[np.unique(np.linspace(0, len(order) - 1, n).round().astype(int))]
        fig, axes = plots.plt.subplots(1, len(picks), figsize=(4 * len(picks), 3.2), squeeze=False)
        for ax, i in zip(axes[0], picks, strict=False):
            past = h["insample"][i][~np.isnan(h["insample"][i])][-60:]
            t_past = np.arange(-len(past) + 1, 1)
            t_future = np.arange(1, h["future"].shape[1] + 1)
            ax.plot(t_past, past, color="black", lw=1, label="history")
            ax.plot(t_future, h["future"][i], color="black", ls="--", lw=1, label="actual")
            ax.plot(t_future, q[i, :, 1], color="C0", label="p50")
            ax.fill_between(t_future, q[i, :, 0], q[i, :, 2], color="C0", alpha=0.25,
                            label="p10–p90")
            ax.set_title(f"channel {h['channel_id'][i]}")
            ax.set_xlabel("days from origin")
        axes[0][0].set_ylabel("subscribers")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        return {"forecast_vs_actual": fig}

    def input_example(self, data: PreparedData) -> dict[str, np.ndarray]:
        return {"history": data.train["history"][:3]}
