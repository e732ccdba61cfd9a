"""Posting-schedule model card (DESIGN §4): which weekday × hour slot gives a post the most reach.

Data: ``features.post_features`` (posts whose 48 h views are known). Target: log 48 h
reach (views / subscribers at publish; log views for a channel whose subscriber
counts are incomplete) minus the channel's median over pre-holdout posts, so 0 is a
typical post of that channel and subscriber growth does not leak into the slot effect.

Split by publish time: the latest 20 % of posts are the holdout, the 12 % before them
validation (early stopping, Optuna), the rest training. The baseline, needing no
validation, learns from every pre-holdout post.

Gated metric (synthetic truth only): ``top_slot_ratio`` = true effect of the slot the
model ranks first ÷ the channel's best true effect, averaged over channels (a slot's
predicted engagement averages the media types by the channel's usual mix).
Also reported: Spearman ρ between predicted and realised mean engagement of holdout
(channel, slot) groups with ≥ 2 posts (pooled over channels; a group's prediction is
the mean prediction for its posts), holdout MSE of the target, and
``unseen_top_slot_ratio`` — the same ratio among the slots a channel never posted in
before the holdout, i.e. how well the model ranks slots it has no data for.

Without ``truth.slot_effects`` (landing data) the gated metric cannot be computed:
``load`` raises InsufficientData so the pipeline skips the model instead of
registering one whose accuracy is unknown. ``ScheduleTask(require_truth=False)``
still loads, trains and reports the rank correlation and MSE (its gates fail).
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import optuna
import torch
from torch import nn

from nn_models import plots
from nn_models.baselines_schedule import (
    N_SLOTS,
    baseline_metrics,
    historical_slot_means,
    slot_of,
    slot_rank_correlation,
    top_slot_ratio,
    unseen_slot_ratio,
)
from nn_models.device import DeviceChoice, single_cpu_thread
from nn_models.models.schedule import ScheduleOptimizer
from nn_models.task import Gate, InsufficientData, ModelTask, PreparedData
from nn_models.training import TrainConfig, TrainResult, fit, seed_everything
from warehouse.schema import MEDIA_TYPES

HOLDOUT_SHARE = 0.20
VAL_SHARE = 0.12
MIN_TRAIN_POSTS = 150
MIN_HOLDOUT_POSTS = 40
MIN_CHANNEL_TRAIN_POSTS = 20
TOP_SLOT_THRESHOLD = 0.9
INPUTS = ("channel", "weekday", "hour", "media")

NO_TRUTH = (
    "no ground-truth slot effects (truth.slot_effects empty): the top_slot_ratio gate "
    "cannot be evaluated, so the model cannot be promoted; ScheduleTask(require_truth=False) "
    "still trains it and reports the holdout rank correlation"
)


def _table_exists(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchall()
    return bool(row and row[0][0])


def _media_index(media: np.ndarray) -> np.ndarray:
    lookup = {m: i for i, m in enumerate(MEDIA_TYPES)}
    other = lookup["other"]
    return np.array([lookup.get(m, other) for m in media], dtype=np.int64)


class ScheduleTask(ModelTask):
    name = "schedule"
    registered_model = "channel_pulse_schedule"
    primary_metric = "top_slot_ratio"
    higher_is_better = True

    def __init__(self, require_truth: bool = True) -> None:
        self.require_truth = require_truth

    # ------------------------------------------------------------------ data
    def load(self, conn: duckdb.DuckDBPyConnection) -> PreparedData:
        if not _table_exists(conn, "features", "post_features"):
            raise InsufficientData("features.post_features does not exist yet")
        frame = conn.execute(
            """
            SELECT channel_id, post_id, published_at, weekday, hour, media_type,
                   views_48h, subscribers_at_publish
            FROM features.post_features
            WHERE views_48h IS NOT NULL
            ORDER BY published_at, channel_id, post_id
            """
        ).df()
        if len(frame) < MIN_TRAIN_POSTS + MIN_HOLDOUT_POSTS:
            raise InsufficientData(
                f"{len(frame)} posts with known 48 h views; need at least "
                f"{MIN_TRAIN_POSTS + MIN_HOLDOUT_POSTS} for training plus a holdout"
            )
        truth = self._truth(conn)
        if not truth and self.require_truth:
            raise InsufficientData(NO_TRUTH)

        published = frame["published_at"].to_numpy()
        n = len(frame)
        holdout_from = published[int(n * (1 - HOLDOUT_SHARE))]
        val_from = published[int(n * (1 - HOLDOUT_SHARE - VAL_SHARE))]
        split = np.where(published >= holdout_from, 2, np.where(published >= val_from, 1, 0))

        views = frame["views_48h"].to_numpy(float)
        subs = frame["subscribers_at_publish"].to_numpy(float)
        channel = frame["channel_id"].to_numpy(np.int64)
        log_views = np.log1p(views)
        # reach where every post of the channel has a subscriber count, else views
        has_subs = np.isfinite(subs) & (subs > 0)
        full = {c: bool(has_subs[channel == c].all()) for c in np.unique(channel)}
        use_reach = np.array([full[c] for c in channel]) & has_subs
        raw = np.where(use_reach, log_views - np.log(np.where(has_subs, subs, 1.0)), log_views)

        pre = split < 2
        counts = {c: int((channel[split == 0] == c).sum()) for c in np.unique(channel)}
        medians = {c: float(np.median(raw[pre & (channel == c)]))
                   for c in np.unique(channel[pre])}
        keep = np.array([counts.get(c, 0) >= MIN_CHANNEL_TRAIN_POSTS for c in channel])
        target = raw - np.array([medians.get(c, np.nan) for c in channel])

        arrays = {
            "channel_id": channel,
            "weekday": frame["weekday"].to_numpy(np.int64),
            "hour": frame["hour"].to_numpy(np.int64),
            "media": _media_index(frame["media_type"].to_numpy(object)),
            "target": target.astype(np.float32),
        }
        parts = [{k: v[keep & (split == s)] for k, v in arrays.items()} for s in range(3)]
        train, val, holdout = parts
        if len(train["target"]) < MIN_TRAIN_POSTS or len(holdout["target"]) < MIN_HOLDOUT_POSTS:
            raise InsufficientData(
                f"{len(train['target'])} training and {len(holdout['target'])} holdout posts "
                f"in channels with >= {MIN_CHANNEL_TRAIN_POSTS} training posts; need "
                f">= {MIN_TRAIN_POSTS} and >= {MIN_HOLDOUT_POSTS}"
            )
        if len(val["target"]) == 0:
            raise InsufficientData("no validation posts between training and holdout")
        if truth:
            ids = np.array(sorted(truth), dtype=np.int64)
            holdout["truth_channel_id"] = ids
            holdout["truth_effect"] = np.stack([truth[int(c)] for c in ids])
        info = {
            "target": "log 48h reach (views / subscribers) minus channel median before holdout",
            "holdout_from": str(holdout_from),
            "val_from": str(val_from),
            "n_train": int(len(train["target"])),
            "n_val": int(len(val["target"])),
            "n_holdout": int(len(holdout["target"])),
            "n_channels": int(len(np.unique(train["channel_id"]))),
            "channels_without_reach": int(sum(not v for v in full.values())),
            "dropped_posts_small_channels": int((~keep).sum()),
            "has_truth": bool(truth),
        }
        return PreparedData(train=train, val=val, holdout=holdout, info=info)

    @staticmethod
    def _truth(conn: duckdb.DuckDBPyConnection) -> dict[int, np.ndarray]:
        """channel_id -> 168 true slot effects (hour of week), from the synthetic source."""
        if not _table_exists(conn, "truth", "slot_effects"):
            return {}
        rows = conn.execute(
            "SELECT channel_id, weekday, hour, effect FROM truth.slot_effects"
        ).fetchall()
        table: dict[int, np.ndarray] = {}
        for channel, weekday, hour, effect in rows:
            grid = table.setdefault(int(channel), np.full(N_SLOTS, np.nan))
            grid[int(weekday) * 24 + int(hour)] = float(effect)
        return {c: g for c, g in table.items() if np.isfinite(g).all()}

    # ---------------------------------------------------------------- search
    def default_params(self) -> dict[str, Any]:
        return {"embedding_dim": 8, "hidden": [128, 64], "hour_order": 3, "weekday_order": 2,
                "dropout": 0.1, "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 128}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        width = trial.suggest_categorical("width", [64, 128])
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [4, 8, 16]),
            "hidden": [width, width // 2],
            "hour_order": trial.suggest_int("hour_order", 2, 4),
            "weekday_order": trial.suggest_int("weekday_order", 1, 2),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "lr": trial.suggest_float("lr", 5e-4, 3e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-3, log=True),
            "batch_size": 128,
        }

    # ------------------------------------------------------------------ train
    def build(self, params: dict[str, Any], data: PreparedData) -> ScheduleOptimizer:
        channels = np.unique(data.train["channel_id"])
        model = ScheduleOptimizer(
            channels,
            embedding_dim=int(params["embedding_dim"]),
            hidden=tuple(int(h) for h in params["hidden"]),
            hour_order=int(params["hour_order"]),
            weekday_order=int(params["weekday_order"]),
            dropout=float(params["dropout"]),
        )
        index = np.searchsorted(channels, data.train["channel_id"])
        mix = np.zeros((len(channels), len(MEDIA_TYPES)))
        np.add.at(mix, (index, data.train["media"]), 1.0)
        model.set_media_mix(mix / mix.sum(axis=1, keepdims=True))
        return model

    @staticmethod
    def model_inputs(model: ScheduleOptimizer, split: dict[str, np.ndarray]):
        """Inputs for the rows of ``split`` whose channel the model knows, and that mask."""
        index = model.channel_index
        known = np.array([c in index for c in split["channel_id"]], dtype=bool)
        inputs = {
            "channel": np.array([index[c] for c in split["channel_id"][known]], dtype=np.int64),
            "weekday": split["weekday"][known].astype(np.int64),
            "hour": split["hour"][known].astype(np.int64),
            "media": split["media"][known].astype(np.int64),
        }
        return inputs, known

    def train(self, params, data, choice: DeviceChoice, max_epochs, seed, on_epoch=None):
        # a small MLP: on CPU, intra-op threads cost more in synchronisation than they
        # gain (6-8x slower with 2 threads on a busy 2-core machine), so use one
        with single_cpu_thread(choice):
            return self._train(params, data, choice, max_epochs, seed, on_epoch)

    def _train(self, params, data, choice, max_epochs, seed, on_epoch) -> TrainResult:
        seed_everything(seed)
        model = self.build(params, data)
        train_in, keep_tr = self.model_inputs(model, data.train)
        val_in, keep_va = self.model_inputs(model, data.val)
        train_in["target"] = data.train["target"][keep_tr]
        val_in["target"] = data.val["target"][keep_va]

        def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            pred = m(**{k: batch[k] for k in INPUTS})
            return torch.mean((pred - batch["target"]) ** 2)

        cfg = TrainConfig(max_epochs=max_epochs, lr=float(params["lr"]),
                          weight_decay=float(params["weight_decay"]),
                          batch_size=int(params["batch_size"]), patience=6, seed=seed)
        return fit(model, train_in, val_in, loss_fn, cfg, choice, on_epoch)

    # --------------------------------------------------------------- scoring
    @staticmethod
    def _truth_of(data: PreparedData) -> dict[int, np.ndarray]:
        if "truth_channel_id" not in data.holdout:
            return {}
        return {int(c): e for c, e in zip(data.holdout["truth_channel_id"],
                                          data.holdout["truth_effect"], strict=True)}

    @staticmethod
    def predicted_grids(model: ScheduleOptimizer) -> dict[int, np.ndarray]:
        """channel_id -> 168 predicted slot engagements (media weighted by the channel's mix)."""
        model = model.cpu().eval()
        grids = model.slot_grids().reshape(len(model.channel_ids), N_SLOTS).numpy()
        return {c: grids[i] for i, c in enumerate(model.channel_ids)}

    def evaluate(self, model: nn.Module, data: PreparedData) -> dict[str, float]:
        model = model.cpu().eval()
        inputs, known = self.model_inputs(model, data.holdout)
        with torch.no_grad():
            pred = model(**{k: torch.as_tensor(v) for k, v in inputs.items()}).numpy()
        target = data.holdout["target"][known]
        slot = slot_of(inputs["weekday"], inputs["hour"])
        rho, n_groups = slot_rank_correlation(data.holdout["channel_id"][known], slot, target, pred)
        metrics = {
            "spearman": rho,
            "spearman_slots": float(n_groups),
            "mse": float(np.mean((pred - target) ** 2)) if len(target) else float("nan"),
            "holdout_posts_scored": float(known.sum()),
        }
        grids = self.predicted_grids(model)
        seen = self._seen_slots(data)
        unseen_top = [bool(c in seen and not seen[c][int(np.argmax(g))]) for c, g in grids.items()]
        metrics["top_slot_unseen_share"] = float(np.mean(unseen_top)) if unseen_top else float("nan")
        truth = self._truth_of(data)
        if truth:
            ratio, per_channel = top_slot_ratio(grids, truth)
            metrics["top_slot_ratio"] = ratio
            metrics["top_slot_ratio_min"] = float(min(per_channel.values()))
            metrics["channels_scored"] = float(len(per_channel))
            metrics["unseen_top_slot_ratio"] = unseen_slot_ratio(grids, truth, seen)
        return metrics

    @staticmethod
    def _seen_slots(data: PreparedData) -> dict[int, np.ndarray]:
        """channel_id -> 168 flags: did the channel post in that slot before the holdout?"""
        seen: dict[int, np.ndarray] = {}
        for split in (data.train, data.val):
            for c, s in zip(split["channel_id"], slot_of(split["weekday"], split["hour"]),
                            strict=True):
                seen.setdefault(int(c), np.zeros(N_SLOTS, dtype=bool))[s] = True
        return seen

    def baseline(self, data: PreparedData) -> dict[str, float]:
        pre = {k: np.concatenate([data.train[k], data.val[k]]) for k in data.train}
        truth = self._truth_of(data)
        metrics = baseline_metrics(pre, data.holdout, truth)
        if truth:
            table = historical_slot_means(pre["channel_id"], pre["weekday"], pre["hour"],
                                          pre["target"])
            metrics["baseline_unseen_top_slot_ratio"] = unseen_slot_ratio(
                table, truth, self._seen_slots(data))
        return metrics

    def gates(self, metrics: dict[str, float], baseline: dict[str, float]) -> list[Gate]:
        value = metrics.get("top_slot_ratio", float("nan"))
        base = baseline.get("baseline_top_slot_ratio", float("nan"))
        measurable = np.isfinite(value)
        return [
            Gate("top_slot_ratio", bool(measurable and value >= TOP_SLOT_THRESHOLD), value,
                 TOP_SLOT_THRESHOLD,
                 "true effect of the top-ranked slot / the best slot's, averaged over channels"
                 if measurable else NO_TRUTH),
            Gate("top_slot_ratio_vs_baseline",
                 bool(measurable and np.isfinite(base) and value >= base), value, base,
                 "not worse than the historical mean per slot on the same holdout",
                 kind="baseline"),
        ]

    # ------------------------------------------------------------ artefacts
    def plots(self, model: nn.Module, data: PreparedData, result: TrainResult) -> dict:
        truth = self._truth_of(data)
        grids = self.predicted_grids(model)
        channels = [c for c in grids if c in truth] or list(grids)
        if not channels:
            return {}
        counts = {c: int((data.train["channel_id"] == c).sum()) for c in channels}
        channel = max(channels, key=counts.get)
        pre = {k: np.concatenate([data.train[k], data.val[k]]) for k in data.train}
        history = historical_slot_means(pre["channel_id"], pre["weekday"], pre["hour"],
                                        pre["target"])
        panels = {"model (predicted)": grids[channel]}
        if channel in truth:
            panels["truth (log effect)"] = np.log(truth[channel])
        if channel in history:
            panels["historical mean per slot"] = history[channel]
        return {"slot_heatmap": _heatmaps(panels, f"schedule: channel {channel}")}

    def input_example(self, data: PreparedData) -> dict[str, np.ndarray]:
        # the index the trained model gives these channels (its channels = training channels)
        index = np.searchsorted(np.unique(data.train["channel_id"]), data.holdout["channel_id"][:5])
        return {
            "channel": index.astype(np.int64),
            "weekday": data.holdout["weekday"][:5].astype(np.int64),
            "hour": data.holdout["hour"][:5].astype(np.int64),
            "media": data.holdout["media"][:5].astype(np.int64),
        }


def _heatmaps(panels: dict[str, np.ndarray], title: str):
    fig, axes = plots.plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), squeeze=False)
    for ax, (name, grid) in zip(axes[:, 0], panels.items(), strict=True):
        image = ax.imshow(np.asarray(grid).reshape(7, 24), aspect="auto", cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_yticks(range(7), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], fontsize=7)
        ax.set_xticks(range(0, 24, 3), [f"{h:02d}" for h in range(0, 24, 3)], fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.025)
    axes[-1, 0].set_xlabel("hour (UTC)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
