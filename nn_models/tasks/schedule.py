"""Posting-schedule model card (DESIGN §4): which weekday × hour slot gives a post the most reach.

Data: ``features.post_features`` (posts whose 48 h views and backward-looking 48 h view
percentile are known; a channel's first posts have no percentile and are left out).
Target: log 48 h reach (views / subscribers at publish; log views for a channel whose
subscriber counts are incomplete) minus the channel's median over pre-holdout posts,
so 0 is a typical post of that channel and subscriber growth does not leak into the
slot effect.

Split by publish time: the latest 20 % of posts are the holdout, the 12 % before them
validation (early stopping, Optuna, and every baseline's tuning), the rest training.

Gate, on observed outcomes of the holdout period only (``nn_models.baselines_schedule``
defines the metrics): how well the model's slot ranking predicts the holdout posts'
``view_percentile_48h`` — mean per-channel Spearman ρ between the predicted slot effect
(the model's 7 × 24 grid, media weighted by the channel's mix) and the observed
percentile (primary metric), and the top- minus bottom-quartile ``lift``. Baselines get
the same posts and target: the weekday × hour mean shrunk toward the hour's mean (α, β
chosen on validation), the hour-only mean, and the most-posted hour; the strongest on
validation (``data.info['strongest_baseline']``) is the one gated against, refitted on
train + validation. Gates: model − strongest ρ with a paired bootstrap 90 % interval
over channels, lower bound ≥ 0, with at least ``MIN_GATE_CHANNELS`` channels scored (a
bootstrap over fewer clusters is too narrow to trust); ρ > 0 and lift > 0 (the ranking
points the right way on posts it never saw). ``truth.slot_effects`` (synthetic only) adds the reported
``top_slot_ratio`` where it exists; it is never required and never gated.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import optuna
import torch
from torch import nn

from nn_models import baselines_schedule as bs
from nn_models import plots
from nn_models.baselines_schedule import N_SLOTS, slot_of
from nn_models.device import DeviceChoice, single_cpu_thread
from nn_models.metrics import Margin, bootstrap_margin
from nn_models.models.schedule import ScheduleOptimizer
from nn_models.task import Gate, InsufficientData, ModelTask, PreparedData
from nn_models.training import TrainConfig, TrainResult, fit, seed_everything
from warehouse.schema import MEDIA_TYPES

HOLDOUT_SHARE = 0.20
VAL_SHARE = 0.12
MIN_TRAIN_POSTS = 150  # the smallest history the model learns from (all channels)
MIN_HOLDOUT_POSTS = 40
MIN_CHANNEL_TRAIN_POSTS = 20  # a channel's own training posts for its embedding
MIN_HOLDOUT_CHANNELS = 2  # per-channel scores to compare at all
MIN_GATE_CHANNELS = 5  # fewer clusters make a bootstrap interval too narrow to trust
INPUTS = ("channel", "weekday", "hour", "media")
BOOTSTRAP_SEED = 0

HISTORY_SQL = """
    SELECT channel_id, post_id, published_at, weekday, hour, media_type,
           views_48h, subscribers_at_publish, view_percentile_48h
    FROM features.post_features
    WHERE views_48h IS NOT NULL AND view_percentile_48h IS NOT NULL
    ORDER BY published_at, channel_id, post_id
"""


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


def history(conn: duckdb.DuckDBPyConnection):
    """Posts with known 48 h views and percentile, oldest first (None without the table)."""
    if not _table_exists(conn, "features", "post_features"):
        return None
    return conn.execute(HISTORY_SQL).df()


def time_split(published: np.ndarray) -> tuple[np.ndarray, Any, Any]:
    """0 = train, 1 = validation, 2 = holdout by publish time (shares of the posts)."""
    n = len(published)
    holdout_from = published[min(int(n * (1 - HOLDOUT_SHARE)), n - 1)]
    val_from = published[min(int(n * (1 - HOLDOUT_SHARE - VAL_SHARE)), n - 1)]
    split = np.where(published >= holdout_from, 2, np.where(published >= val_from, 1, 0))
    return split, holdout_from, val_from


def relative_log_reach(frame, reference: np.ndarray) -> tuple[np.ndarray, int]:
    """Log 48 h reach minus the channel's median over the ``reference`` rows.

    Reach = views / subscribers where every post of the channel has a subscriber
    count, else log views. Returns (target, channels measured in views).
    """
    views = frame["views_48h"].to_numpy(float)
    subs = frame["subscribers_at_publish"].to_numpy(float)
    channel = frame["channel_id"].to_numpy(np.int64)
    has_subs = np.isfinite(subs) & (subs > 0)
    full = {c: bool(has_subs[channel == c].all()) for c in np.unique(channel)}
    use_reach = np.array([full[c] for c in channel], dtype=bool) & has_subs
    raw = np.where(use_reach, np.log1p(views) - np.log(np.where(has_subs, subs, 1.0)), np.log1p(views))
    medians = {c: float(np.median(raw[reference & (channel == c)])) for c in np.unique(channel[reference])}
    target = raw - np.array([medians.get(c, np.nan) for c in channel])
    return target, int(sum(not v for v in full.values()))


class ScheduleTask(ModelTask):
    name = "schedule"
    registered_model = "channel_pulse_schedule"
    primary_metric = "spearman"
    higher_is_better = True

    # ------------------------------------------------------------------ data
    def load(self, conn: duckdb.DuckDBPyConnection) -> PreparedData:
        frame = history(conn)
        if frame is None:
            raise InsufficientData("features.post_features does not exist yet")
        if len(frame) < MIN_TRAIN_POSTS + MIN_HOLDOUT_POSTS:
            raise InsufficientData(
                f"needs at least {MIN_TRAIN_POSTS + MIN_HOLDOUT_POSTS} posts with known 48 h "
                f"views and view percentile ({MIN_TRAIN_POSTS} to train on plus a "
                f"{MIN_HOLDOUT_POSTS}-post holdout), has {len(frame)}"
            )
        split, holdout_from, val_from = time_split(frame["published_at"].to_numpy())
        target, no_reach = relative_log_reach(frame, split < 2)
        channel = frame["channel_id"].to_numpy(np.int64)
        counts = {c: int((channel[split == 0] == c).sum()) for c in np.unique(channel)}
        keep = np.array([counts.get(c, 0) >= MIN_CHANNEL_TRAIN_POSTS for c in channel])

        arrays = {
            "channel_id": channel,
            "weekday": frame["weekday"].to_numpy(np.int64),
            "hour": frame["hour"].to_numpy(np.int64),
            "media": _media_index(frame["media_type"].to_numpy(object)),
            "target": target.astype(np.float32),
            "percentile": frame["view_percentile_48h"].to_numpy(np.float64),
        }
        train, val, holdout = ({k: v[keep & (split == s)] for k, v in arrays.items()} for s in range(3))
        if len(train["target"]) < MIN_TRAIN_POSTS or len(holdout["target"]) < MIN_HOLDOUT_POSTS:
            raise InsufficientData(
                f"needs at least {MIN_TRAIN_POSTS} training and {MIN_HOLDOUT_POSTS} holdout "
                f"posts in channels with >= {MIN_CHANNEL_TRAIN_POSTS} training posts, has "
                f"{len(train['target'])} and {len(holdout['target'])}"
            )
        if len(val["target"]) == 0:
            raise InsufficientData("needs validation posts between training and holdout, has 0")
        scored = bs.channel_scores(
            holdout["channel_id"], holdout["percentile"], holdout["percentile"]
        ).channel_ids
        if len(scored) < MIN_HOLDOUT_CHANNELS:
            raise InsufficientData(
                f"needs at least {MIN_HOLDOUT_CHANNELS} channels with >= "
                f"{bs.MIN_CHANNEL_HOLDOUT_POSTS} holdout posts to compare rankings per channel, "
                f"has {len(scored)}"
            )

        # baselines: tuned and chosen on validation, refitted on train + validation
        choice = bs.choose(train, val)
        pre = {k: np.concatenate([train[k], val[k]]) for k in train}
        slot_h = slot_of(holdout["weekday"], holdout["hour"])
        for rule in bs.BASELINES:
            holdout[f"pred_{rule}"] = bs.lookup(bs.fit(rule, choice, pre), holdout["channel_id"], slot_h)
        seen = np.zeros(len(slot_h), dtype=bool)
        pre_keys = set(
            zip(pre["channel_id"].tolist(), slot_of(pre["weekday"], pre["hour"]).tolist(), strict=True)
        )
        seen[:] = [(int(c), int(s)) in pre_keys for c, s in zip(holdout["channel_id"], slot_h, strict=True)]
        holdout["slot_seen"] = seen
        truth = self._truth(conn)
        if truth:
            ids = np.array(sorted(truth), dtype=np.int64)
            holdout["truth_channel_id"] = ids
            holdout["truth_effect"] = np.stack([truth[int(c)] for c in ids])
        info = {
            "target": "log 48h reach (views / subscribers) minus channel median before holdout",
            "holdout_metric": "per-channel Spearman of predicted slot effect vs view_percentile_48h",
            "holdout_from": str(holdout_from),
            "val_from": str(val_from),
            "n_train": int(len(train["target"])),
            "n_val": int(len(val["target"])),
            "n_holdout": int(len(holdout["target"])),
            "n_channels": int(len(np.unique(train["channel_id"]))),
            "n_holdout_channels_scored": int(len(scored)),
            "channels_without_reach": no_reach,
            "dropped_posts_small_channels": int((~keep).sum()),
            "min_train_posts": MIN_TRAIN_POSTS,
            "strongest_baseline": choice.strongest,
            "baseline_alpha": choice.alpha,
            "baseline_beta": choice.beta,
            **{f"val_spearman_{k}": v for k, v in choice.val_spearman.items()},
            "has_truth": bool(truth),
        }
        return PreparedData(train=train, val=val, holdout=holdout, info=info)

    @staticmethod
    def _truth(conn: duckdb.DuckDBPyConnection) -> dict[int, np.ndarray]:
        """channel_id -> 168 true slot effects (synthetic source only; reported, never gated)."""
        if not _table_exists(conn, "truth", "slot_effects"):
            return {}
        rows = conn.execute("SELECT channel_id, weekday, hour, effect FROM truth.slot_effects").fetchall()
        table: dict[int, np.ndarray] = {}
        for channel, weekday, hour, effect in rows:
            grid = table.setdefault(int(channel), np.full(N_SLOTS, np.nan))
            grid[int(weekday) * 24 + int(hour)] = float(effect)
        return {c: g for c, g in table.items() if np.isfinite(g).all()}

    # ---------------------------------------------------------------- search
    def default_params(self) -> dict[str, Any]:
        return {
            "embedding_dim": 8,
            "hidden": [128, 64],
            "hour_order": 3,
            "weekday_order": 2,
            "dropout": 0.1,
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "batch_size": 128,
        }

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

        cfg = TrainConfig(
            max_epochs=max_epochs,
            lr=float(params["lr"]),
            weight_decay=float(params["weight_decay"]),
            batch_size=int(params["batch_size"]),
            patience=6,
            seed=seed,
        )
        return fit(model, train_in, val_in, loss_fn, cfg, choice, on_epoch)

    # --------------------------------------------------------------- scoring
    @staticmethod
    def predicted_grids(model: ScheduleOptimizer) -> dict[int, np.ndarray]:
        """channel_id -> 168 predicted slot engagements (media weighted by the channel's mix)."""
        model = model.cpu().eval()
        grids = model.slot_grids().reshape(len(model.channel_ids), N_SLOTS).numpy()
        return {c: grids[i] for i, c in enumerate(model.channel_ids)}

    @staticmethod
    def _scores(
        data: PreparedData, pred: np.ndarray, rows: np.ndarray, channels: np.ndarray | None = None
    ) -> bs.ChannelScores:
        h = data.holdout
        return bs.channel_scores(h["channel_id"][rows], pred[rows], h["percentile"][rows], channels)

    @staticmethod
    def margin(model: bs.ChannelScores, base: bs.ChannelScores, metric: str) -> Margin:
        """Paired bootstrap over channels (each channel = the cluster of its holdout posts)."""
        return bootstrap_margin(
            lambda i: model.mean(metric, i),
            lambda i: base.mean(metric, i),
            len(model.channel_ids),
            higher_is_better=True,
            seed=BOOTSTRAP_SEED,
        )

    def evaluate(self, model: nn.Module, data: PreparedData) -> dict[str, float]:
        h = data.holdout
        grids = self.predicted_grids(model)
        pred = bs.lookup(grids, h["channel_id"], slot_of(h["weekday"], h["hour"]))
        known = np.isfinite(pred)
        ours = self._scores(data, pred, known)
        strongest = data.info.get("strongest_baseline", "shrunk_slot_mean")
        self._strongest = strongest
        base = self._scores(data, h[f"pred_{strongest}"], known, ours.channel_ids)
        metrics = {
            "spearman": ours.mean("spearman"),
            "lift": ours.mean("lift"),
            "channels_scored": float(len(ours.channel_ids)),
            "holdout_posts_scored": float(known.sum()),
            "strongest_baseline_spearman": base.mean("spearman"),
            "strongest_baseline_lift": base.mean("lift"),
        }
        metrics.update(self.margin(ours, base, "spearman").as_metrics("spearman"))
        metrics.update(self.margin(ours, base, "lift").as_metrics("lift"))
        # posts in slots the channel never posted in before: can the model rank those?
        unseen = known & ~h["slot_seen"]
        metrics["unseen_slot_posts"] = float(unseen.sum())
        truth = self._truth_of(data)
        if truth:  # synthetic only: reported, never gated
            ratio, per_channel = bs.top_slot_ratio(grids, truth)
            metrics["top_slot_ratio"] = ratio
            metrics["top_slot_ratio_min"] = float(min(per_channel.values())) if per_channel else float("nan")
        return metrics

    def baseline(self, data: PreparedData) -> dict[str, float]:
        """Every rule's holdout Spearman and lift on all scored channels; α/β and val scores."""
        h = data.holdout
        out: dict[str, float] = {}
        pre = {k: np.concatenate([data.train[k], data.val[k]]) for k in data.train}
        choice = bs.BaselineChoice(
            float(data.info.get("baseline_alpha", 0.0)), float(data.info.get("baseline_beta", 0.0)), {}, ""
        )
        truth = self._truth_of(data)
        for rule in bs.BASELINES:
            pred = h[f"pred_{rule}"]
            scores = self._scores(data, pred, np.isfinite(pred))
            out[f"baseline_{rule}_spearman"] = scores.mean("spearman")
            out[f"baseline_{rule}_lift"] = scores.mean("lift")
            out[f"baseline_{rule}_val_spearman"] = float(data.info.get(f"val_spearman_{rule}", float("nan")))
            if truth:
                out[f"baseline_{rule}_top_slot_ratio"] = bs.top_slot_ratio(bs.fit(rule, choice, pre), truth)[
                    0
                ]
        out["baseline_alpha"] = choice.alpha
        out["baseline_beta"] = choice.beta
        return out

    def gates(self, metrics: dict[str, float], baseline: dict[str, float]) -> list[Gate]:
        strongest = getattr(self, "_strongest", "strongest baseline")
        rho, lift = metrics.get("spearman", float("nan")), metrics.get("lift", float("nan"))
        n_channels = float(metrics.get("channels_scored", 0.0))
        margin = Margin(
            metrics.get("margin_spearman", float("nan")),
            metrics.get("margin_spearman_lo", float("nan")),
            metrics.get("margin_spearman_hi", float("nan")),
            0.90,
            500,
        )
        return [
            Gate(
                "spearman_positive",
                bool(np.isfinite(rho) and rho > 0),
                rho,
                0.0,
                "mean per-channel Spearman ρ of predicted slot effect vs the holdout posts' "
                "observed 48 h view percentile > 0 (the ranking points the right way)",
            ),
            Gate(
                "lift_positive",
                bool(np.isfinite(lift) and lift > 0),
                lift,
                0.0,
                "mean percentile of holdout posts in the model's top-quartile slots minus "
                "its bottom quartile's > 0",
            ),
            Gate.beats(
                f"spearman_vs_{strongest}",
                margin,
                "mean per-channel Spearman (bootstrap over channels)",
                strongest,
            ),
            Gate(
                "channels_scored",
                bool(n_channels >= MIN_GATE_CHANNELS),
                n_channels,
                float(MIN_GATE_CHANNELS),
                f"at least {MIN_GATE_CHANNELS} channels with >= {bs.MIN_CHANNEL_HOLDOUT_POSTS} "
                "holdout posts: with fewer, resampling channels cannot say whether the margin "
                "is more than the noise",
            ),
        ]

    @staticmethod
    def _truth_of(data: PreparedData) -> dict[int, np.ndarray]:
        if "truth_channel_id" not in data.holdout:
            return {}
        return {
            int(c): e
            for c, e in zip(data.holdout["truth_channel_id"], data.holdout["truth_effect"], strict=True)
        }

    # ------------------------------------------------------------ artefacts
    def plots(self, model: nn.Module, data: PreparedData, result: TrainResult) -> dict:
        truth = self._truth_of(data)
        grids = self.predicted_grids(model)
        channels = list(grids)
        if not channels:
            return {}
        counts = {c: int((data.train["channel_id"] == c).sum()) for c in channels}
        channel = max(channels, key=counts.get)
        pre = {k: np.concatenate([data.train[k], data.val[k]]) for k in data.train}
        choice = bs.BaselineChoice(
            float(data.info.get("baseline_alpha", 0.0)), float(data.info.get("baseline_beta", 0.0)), {}, ""
        )
        shrunk = bs.fit("shrunk_slot_mean", choice, pre)
        panels = {"model (predicted)": grids[channel]}
        if channel in shrunk:
            panels["baseline: shrunk weekday × hour mean"] = shrunk[channel]
        if channel in truth:
            panels["truth (log effect, synthetic)"] = np.log(truth[channel])
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
