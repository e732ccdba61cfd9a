"""Growth task: subscriber quantiles per channel for the next 30 days (DESIGN §4, card "growth").

Data: ``features.channel_daily_features``, one row per channel and day. One model learns
across channels from a ``HISTORY_DAYS``-day window, so any channel with
``MIN_HISTORY_DAYS`` days of subscriber counts can be forecast; to *train* and gate it
the channels need ``MIN_TRAIN_DAYS`` (a window, then training, validation and holdout
periods of at least ``MIN_EVAL_DAYS`` days each).

Splits shrink with the data (``split_plan``, on the median channel length ``n``): the
holdout/validation horizon is ``h = min(30, (n - HISTORY_DAYS) // 4)`` days, the holdout
= each channel's last ``h`` days (origin = the day before them), validation = the latest
``min(14, h // 2)`` origins whose ``h`` target days end on or before the holdout origin
(every second one when there are more than 7), training = the origins whose targets end
on or before the first validation origin (purged). ``data.info`` says by how much the
horizon shrank (``horizon_shrunk_by_days``). The model always forecasts 30 days; days past
``h`` are extrapolated by its random-walk-with-drift frame and not validated.

Baselines (``nn_models.baselines_growth``): log-drift (lookback tuned on validation),
seasonal naive and AutoETS, each fitted on the channel's whole history before the
origin; the strongest is chosen by validation MASE only (``data.info``), and its holdout
forecasts are made once in ``load``.

Gates on the holdout: MASE (m = 7, per channel, averaged) of the model minus the
strongest baseline's, with a paired bootstrap 90 % interval over channels; passes when
its lower bound ≥ 0 (``Gate.beats``). p10–p90 coverage within ``COVERAGE_RANGE`` is a
card gate. Every baseline's MASE and coverage are reported.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import optuna
import pandas as pd
import torch
from torch import nn

from nn_models import baselines_growth as B
from nn_models import metrics as M
from nn_models import plots
from nn_models.device import DeviceChoice
from nn_models.models.growth import QUANTILES, RAW_FEATURES, TABLE_FEATURES, GrowthForecaster
from nn_models.task import Gate, InsufficientData, ModelTask, PreparedData
from nn_models.training import TrainConfig, TrainResult, fit, seed_everything

HORIZON = 30  # days forecast for every channel
MIN_HISTORY_DAYS = 28  # the least subscriber history a channel is forecast from
HISTORY_DAYS = 28  # the model's window: it can score any channel it can forecast
MIN_EVAL_DAYS = 7  # the shortest holdout / validation horizon (one week, m = 7)
MIN_TRAIN_DAYS = HISTORY_DAYS + 4 * MIN_EVAL_DAYS  # 56: window + train, val, holdout
VAL_ORIGINS = 14
VAL_STRIDE = 2  # when there are more than 7 validation origins
SEASON = 7
COVERAGE_RANGE = (0.70, 0.90)
MIN_WINDOWS = {"train": 12, "val": 3}
N_BOOT = 1000
MARGIN_PREFIX = "margin_mase_vs_"

DAILY_SQL = f"""
SELECT channel_id, day, {", ".join(TABLE_FEATURES)}
FROM features.channel_daily_features
ORDER BY channel_id, day
"""


def channel_series(daily: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Per channel, a gap-free daily frame of RAW_FEATURES from its first subscriber count.

    Missing days repeat the last subscriber count and have no post activity.
    ``history_drift`` on day t is (ln S_t - ln S_first) / t: only days up to t (0 on day 0).
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
        frame = frame.fillna({c: 0.0 for c in TABLE_FEATURES if c != "subscribers"})
        frame["weekday"] = frame.index.weekday
        log_s = np.log(np.maximum(frame["subscribers"].to_numpy(np.float64), 1.0))
        frame["history_drift"] = (log_s - log_s[0]) / np.maximum(np.arange(len(log_s)), 1)
        out[int(channel)] = frame[list(RAW_FEATURES)].astype(np.float64)
    return out


def split_plan(days: int, history: int = HISTORY_DAYS) -> tuple[int, int, int]:
    """(holdout = validation horizon, validation origins, their stride) for ``days`` of data.

    A quarter of the days after the first window each for the holdout and validation
    targets, the rest for training targets, capped at the full 30-day horizon.
    """
    h = min(HORIZON, (days - history) // 4)
    origins = min(VAL_ORIGINS, max(1, h // 2))
    return h, origins, VAL_STRIDE if origins > 7 else 1


def _windows(values: np.ndarray, origins: list[int], history: int, horizon: int) -> tuple[np.ndarray, ...]:
    x = np.stack([values[o - history + 1 : o + 1] for o in origins])
    y = np.stack([values[o + 1 : o + 1 + horizon, 0] for o in origins])
    return x.astype(np.float32), y.astype(np.float32)


def growth_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Pinball loss of the normalised quantiles over the target days there are (the
    horizon shrinks with short histories), averaged over days and quantiles."""
    history, future = batch["history"], batch["future"]
    log0, sigma = model.scale(history)
    target = (torch.log(future.clamp_min(1.0)) - log0.unsqueeze(1)) / sigma.unsqueeze(1)
    q = torch.tensor(QUANTILES, dtype=target.dtype, device=target.device)
    diff = target.unsqueeze(-1) - model.normalised(history)[:, : future.shape[1]]
    return torch.maximum(q * diff, (q - 1) * diff).mean()


def _mase_rows(future: np.ndarray, insample: np.ndarray, point: np.ndarray) -> np.ndarray:
    """MASE (m = 7) per channel; ``insample`` rows are NaN-padded on the left."""
    return np.array(
        [M.mase(f, p, s[~np.isnan(s)], m=SEASON) for f, p, s in zip(future, point, insample, strict=True)]
    )


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
        min_train = history + 4 * MIN_EVAL_DAYS
        eligible = {c: s for c, s in series.items() if len(s) >= MIN_HISTORY_DAYS}
        if not eligible:
            longest = max((len(s) for s in series.values()), default=0)
            raise InsufficientData(
                f"growth: needs at least {MIN_HISTORY_DAYS} days of subscriber counts in a "
                f"channel to forecast it, has {longest} (longest channel)"
            )
        plan_days = int(np.median([len(s) for s in eligible.values()]))
        h, n_val, stride = split_plan(plan_days, history)
        if h < MIN_EVAL_DAYS:
            raise InsufficientData(
                f"growth: needs at least {min_train} days of subscriber counts per channel to "
                f"train ({history}-day window, then training, validation and holdout periods "
                f"of >= {MIN_EVAL_DAYS} days each), has {plan_days} (median channel); channels "
                f"with >= {MIN_HISTORY_DAYS} days are forecast by the strongest baseline"
            )
        usable = {c: s for c, s in eligible.items() if len(s) >= history + h}
        parts: dict[str, list] = {"train": [], "val": []}
        val_insample: list[np.ndarray] = []
        val_actual: list[np.ndarray] = []
        holdout: dict[str, list] = {
            "history": [],
            "insample": [],
            "future": [],
            "channel_id": [],
            "origin_day": [],
        }
        longest = max(len(s) for s in usable.values()) - h
        for channel, frame in usable.items():
            values = frame.to_numpy()
            origin = len(values) - h - 1
            pad = np.full((longest - origin - 1, len(RAW_FEATURES)), np.nan)
            holdout["history"].append(np.concatenate([pad, values[: origin + 1]]))
            holdout["insample"].append(np.concatenate([pad[:, 0], values[: origin + 1, 0]]))
            holdout["future"].append(values[origin + 1 :, 0])
            holdout["channel_id"].append(channel)
            holdout["origin_day"].append(frame.index[origin].to_datetime64())
            origins = list(range(history - 1, origin - h + 1))
            val_origins = origins[-n_val:][::-stride][::-1]
            # purged: training targets end on or before the first validation origin
            train_origins = origins[: max(0, len(origins) - n_val - h + 1)]
            if train_origins:
                parts["train"].append(_windows(values, train_origins, history, h))
            if val_origins:
                parts["val"].append(_windows(values, val_origins, history, h))
                for o in val_origins:
                    val_insample.append(values[: o + 1, 0])
                    val_actual.append(values[o + 1 : o + 1 + h, 0])
        splits = {}
        for split, need_windows in MIN_WINDOWS.items():
            n = sum(len(x) for x, _ in parts[split])
            if n < need_windows:
                raise InsufficientData(
                    f"growth: {n} {split} windows (need {need_windows}); needs at least "
                    f"{min_train} days of subscriber counts in several channels, has "
                    f"{plan_days} (median) in {len(usable)} channel(s)"
                )
            splits[split] = {
                "history": np.concatenate([x for x, _ in parts[split]]),
                "future": np.concatenate([y for _, y in parts[split]]),
            }
        # the strongest baseline, tuned and chosen on the validation windows only
        choice = B.choose(val_insample, np.asarray(val_actual))
        insamples = [s[~np.isnan(s)] for s in holdout["insample"]]
        hold = {
            "history": np.stack(holdout["history"]).astype(np.float32),
            "insample": np.stack(holdout["insample"]),
            "future": np.stack(holdout["future"]),
            "channel_id": np.array(holdout["channel_id"], dtype=np.int64),
            "origin_day": np.array(holdout["origin_day"], dtype="datetime64[D]").astype(np.int64),
        }
        for name in B.BASELINES:  # (channels, h, 3): fitted before each holdout origin
            hold[f"baseline_{name}"] = B.quantile_forecast(choice, insamples, h, name)
        info = {
            "channels": len(usable),
            "channels_too_short": len(series) - len(usable),
            "train_windows": len(splits["train"]["future"]),
            "val_windows": len(splits["val"]["future"]),
            "history_days": history,
            "min_history_days": MIN_HISTORY_DAYS,
            "min_train_days": min_train,
            "median_channel_days": plan_days,
            "horizon_days": HORIZON,
            "holdout_days": h,
            "val_horizon_days": h,
            "horizon_shrunk_by_days": HORIZON - h,
            "split_note": (
                f"holdout and validation horizon {h} of {HORIZON} days (shrunk by "
                f"{HORIZON - h}) for a median channel of {plan_days} days"
                if h < HORIZON
                else f"full {HORIZON}-day holdout"
            ),
            "holdout_origin_last": str(max(holdout["origin_day"]))[:10],
            **choice.as_info(),
            "baseline_choice": choice.describe(),
        }
        return PreparedData(splits["train"], splits["val"], hold, info)

    # ----------------------------------------------------------------- model
    def default_params(self) -> dict[str, Any]:
        return {
            "hidden": 256,
            "layers": 2,
            "dropout": 0.2,
            "dense": 128,
            "lr": 3e-4,
            "weight_decay": 1e-3,
            "batch_size": 64,
        }

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        params = self.default_params()
        params.update(
            hidden=trial.suggest_categorical("hidden", [128, 256]),
            dropout=trial.suggest_float("dropout", 0.1, 0.4),
            lr=trial.suggest_float("lr", 1e-4, 1e-3, log=True),
            weight_decay=trial.suggest_float("weight_decay", 1e-4, 1e-2, log=True),
        )
        return params

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
        history = data.train["history"].shape[1]
        model = GrowthForecaster(
            history_days=history,
            horizon=HORIZON,
            hidden=params["hidden"],
            layers=params["layers"],
            dropout=params["dropout"],
            dense=params["dense"],
        )
        model.set_normalisation(torch.as_tensor(data.train["history"]))
        cfg = TrainConfig(
            max_epochs=max_epochs,
            lr=params["lr"],
            weight_decay=params["weight_decay"],
            batch_size=params["batch_size"],
            patience=3,
            seed=seed,
        )
        result = fit(model, data.train, data.val, growth_loss, cfg, choice, on_epoch)
        device = next(result.model.parameters()).device
        scale = result.model.calibrate_intervals(
            torch.as_tensor(data.val["history"], device=device),
            torch.as_tensor(data.val["future"], device=device),
        )
        result.note = f"{result.note} p10-p90 band x{scale:.3f} (split-conformal on validation)"
        return result

    # ------------------------------------------------------------ evaluation
    @staticmethod
    def forecast(model: nn.Module, data: PreparedData) -> np.ndarray:
        """(channels, HORIZON, 3) subscriber quantiles of the holdout days (counts)."""
        h = data.holdout
        history = h["history"][:, -model.history_days :]
        if np.isnan(history).any():
            raise ValueError(
                f"model needs {model.history_days} days of history before the "
                "origin; some holdout channels have fewer"
            )
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model(history=torch.as_tensor(history, device=device))
        return np.exp(out.cpu().numpy().astype(np.float64))[:, : h["future"].shape[1]]

    @staticmethod
    def _scores(future: np.ndarray, insample: np.ndarray, q: np.ndarray) -> dict[str, float]:
        mases = _mase_rows(future, insample, q[..., 1])
        return {
            "mase": float(np.mean(mases)),
            "mase_median": float(np.median(mases)),
            "coverage_80": M.interval_coverage(future, q[..., 0], q[..., 2]),
            "mape": float(np.mean(np.abs(q[..., 1] - future) / np.maximum(future, 1.0))),
        }

    @staticmethod
    def strongest(data: PreparedData) -> str:
        """The baseline chosen on validation in ``load``."""
        return str(data.info["strongest_baseline"])

    def evaluate(self, model: nn.Module, data: PreparedData) -> dict[str, float]:
        """Holdout metrics, and the MASE margin over the strongest baseline with a paired
        bootstrap interval over channels (one row per channel)."""
        h = data.holdout
        q = self.forecast(model, data)
        out = self._scores(h["future"], h["insample"], q)
        out["pinball_p50_relative"] = float(
            np.mean(np.abs(q[..., 1] - h["future"]) / h["future"].clip(1.0)) / 2
        )
        name = self.strongest(data)
        model_rows = _mase_rows(h["future"], h["insample"], q[..., 1])
        base_rows = _mase_rows(h["future"], h["insample"], h[f"baseline_{name}"][..., 1])
        margin = M.bootstrap_margin(
            lambda idx: float(model_rows[idx].mean()),
            lambda idx: float(base_rows[idx].mean()),
            len(model_rows),
            higher_is_better=False,
            clusters=h["channel_id"],
            n_boot=N_BOOT,
            seed=0,
        )
        out.update(margin.as_metrics(f"mase_vs_{name}"))
        return out

    def baseline(self, data: PreparedData) -> dict[str, float]:
        """Every baseline's holdout MASE, coverage and MAPE (forecasts made in ``load``)."""
        h = data.holdout
        out: dict[str, float] = {}
        for name in B.BASELINES:
            scores = self._scores(h["future"], h["insample"], h[f"baseline_{name}"])
            out.update({f"baseline_{name}_{k}": v for k, v in scores.items()})
        return out

    def gates(self, metrics: dict[str, float], baseline: dict[str, float]) -> list[Gate]:
        keys = [k for k in metrics if k.startswith(MARGIN_PREFIX) and not k.endswith(("_lo", "_hi"))]
        if len(keys) != 1:
            raise ValueError(f"growth: expected one {MARGIN_PREFIX}<baseline> metric, got {keys}")
        key = keys[0]
        name = key[len(MARGIN_PREFIX) :]
        margin = M.Margin(metrics[key], metrics[f"{key}_lo"], metrics[f"{key}_hi"], 0.90, N_BOOT)
        cov = metrics["coverage_80"]
        lo, hi = COVERAGE_RANGE
        return [
            Gate.beats(
                "mase_vs_strongest_baseline",
                margin,
                "MASE (m=7) on the holdout, per channel, clusters = channels",
                name,
            ),
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
            ax.fill_between(t_future, q[i, :, 0], q[i, :, 2], color="C0", alpha=0.25, label="p10–p90")
            ax.set_title(f"channel {h['channel_id'][i]}")
            ax.set_xlabel("days from origin")
        axes[0][0].set_ylabel("subscribers")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        return {"forecast_vs_actual": fig}

    def input_example(self, data: PreparedData) -> dict[str, np.ndarray]:
        return {"history": data.train["history"][:3]}
