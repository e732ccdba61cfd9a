"""Behaviour-segment model card (DESIGN §4): autoencoder + k-means, gated without labels.

Data: ``raw.interactions`` split in time into three periods of the interaction span —
fit (first ``FIT_SHARE``), validation (next ``VAL_SHARE``) and holdout (the rest, the
latest period). Per user and period the task computes (in DuckDB) the same shares as
``features.user_behavior_features``: 24 hour, 7 weekday and 3 action shares
(``models.behavior.FEATURES``). Topics are not part of the profile: interactions carry
no topic, and the model's inputs are these shares.

Who counts: a user needs ``MIN_FIT_INTERACTIONS`` interactions in the fit period to be
segmented, and ``MIN_OUTCOME_INTERACTIONS`` in a later period for his behaviour there
to be scored; the model needs ``MIN_TRAIN_USERS`` such users to learn from and
``MIN_HOLDOUT_USERS`` scored in the holdout period (real interactions — commenters,
reactions — are sparse: below that the model is skipped with the counts).

Gate (label-free, on the latest period): segments found on the fit period must predict
each user's holdout-period profile — the mean fit-period profile of his segment's
members (``baselines_behavior.profile_error``: squared error over the 34 shares; lower
is better; primary metric ``profile_error``) — better than PCA + k-means segments
(inputs and k chosen on the validation period) and better than one global profile,
each by a paired bootstrap 90 % interval over users with lower bound ≥ 0; and the
segments must be stable: k-means refitted on bootstrap samples of the training users'
latent codes agrees with the fitted segments (mean ARI ≥ ``STABILITY_THRESHOLD``).
ARI against ``truth.users`` personas is reported where that table has rows (synthetic
data); never required, never gated. Also reported: each user's own fit-period profile
as the prediction (not a segmentation; a reference for how much grouping costs).

Training: the autoencoder (noisy bottleneck, linear path started at PCA) is fitted on
the fit-period shares (early stopping on the validation period's reconstruction);
k-means runs on the training users' latent codes for k = 3..10 and keeps the k whose
segments best predict the validation period (the baseline's rule), then encoder and
centroids are refined together (IDEC). Optuna tunes the optimiser; latent size,
bottleneck noise, hour smoothing and group weights are fixed by the card.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import duckdb
import numpy as np
import optuna
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits
from torch import nn

from nn_models import baselines_behavior as bb
from nn_models import plots
from nn_models.baselines_behavior import K_RANGE, silhouette
from nn_models.device import DeviceChoice, single_cpu_thread
from nn_models.metrics import Margin, bootstrap_margin
from nn_models.models.behavior import (
    ACTION_FEATURES,
    FEATURES,
    HOUR_SMOOTHING,
    BehaviorClusterer,
    idec_loss,
    preprocess,
    preprocessing,
    sharpened_target,
)
from nn_models.task import Gate, InsufficientData, ModelTask, PreparedData
from nn_models.training import TrainConfig, TrainResult, fit, seed_everything

FIT_SHARE = 0.50
VAL_SHARE = 0.20
MIN_FIT_INTERACTIONS = 8  # a user's fit-period interactions to be segmented
MIN_OUTCOME_INTERACTIONS = 3  # a user's later-period interactions to be scored there
MIN_TRAIN_USERS = 100
MIN_VAL_USERS = 20
MIN_HOLDOUT_USERS = 40
STABILITY_THRESHOLD = 0.8
STABILITY_BOOT = 10
LATENT_DIM = 8
LATENT_NOISE = 0.7
LATENT_L2 = 0.01
IDEC_ROUNDS = 4
IDEC_EPOCHS = 3
BOOTSTRAP_SEED = 0
BASELINE_VARIANTS = ("model_inputs", "plain")


def _table_exists(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchall()
    return bool(row and row[0][0])


def _share_columns() -> str:
    hours = [f"avg((hour(occurred_at) = {h})::DOUBLE) AS hour_{h:02d}" for h in range(24)]
    days = [f"avg((isodow(occurred_at) = {d + 1})::DOUBLE) AS wd_{d}" for d in range(7)]
    actions = [f"avg((action = '{a.removeprefix('share_')}')::DOUBLE) AS {a}" for a in ACTION_FEATURES]
    return ",\n    ".join(hours + days + actions)


PERIOD_SQL = f"""
SELECT user_id,
    CASE WHEN occurred_at < ? THEN 0 WHEN occurred_at < ? THEN 1 ELSE 2 END AS period,
    count(*) AS n_interactions,
    {_share_columns()}
FROM raw.interactions
GROUP BY ALL
ORDER BY user_id, period
"""


def period_bounds(conn: duckdb.DuckDBPyConnection):
    """(first, validation start, holdout start, last) interaction times, or None."""
    lo, hi = conn.execute("SELECT min(occurred_at), max(occurred_at) FROM raw.interactions").fetchall()[0]
    if lo is None or hi is None or hi <= lo:
        return None
    span = (hi - lo).total_seconds()
    return (
        lo,
        lo + timedelta(seconds=span * FIT_SHARE),
        lo + timedelta(seconds=span * (FIT_SHARE + VAL_SHARE)),
        hi,
    )


def period_profiles(conn: duckdb.DuckDBPyConnection, val_from, holdout_from):
    """Per user: (user ids, shares[3, users, F], interactions[3, users])."""
    frame = conn.execute(PERIOD_SQL, [val_from, holdout_from]).df()
    users = np.unique(frame["user_id"].to_numpy(np.int64))
    row = np.searchsorted(users, frame["user_id"].to_numpy(np.int64))
    period = frame["period"].to_numpy(np.int64)
    shares = np.zeros((3, len(users), len(FEATURES)), dtype=np.float32)
    counts = np.zeros((3, len(users)), dtype=np.int64)
    shares[period, row] = frame[list(FEATURES)].to_numpy(np.float32)
    counts[period, row] = frame["n_interactions"].to_numpy(np.int64)
    return users, shares, counts


def baseline_inputs(variant: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """PCA + k-means inputs: the model's own preprocessing (weighted) or the plain shares."""
    if variant == "model_inputs":
        return preprocess(x, FEATURES, HOUR_SMOOTHING), preprocessing(FEATURES, HOUR_SMOOTHING)[2]
    return np.asarray(x, dtype=np.float64), None


class BehaviorTask(ModelTask):
    name = "behavior"
    registered_model = "channel_pulse_behavior"
    primary_metric = "profile_error"
    higher_is_better = False

    # ------------------------------------------------------------------ data
    def load(self, conn: duckdb.DuckDBPyConnection) -> PreparedData:
        if not _table_exists(conn, "raw", "interactions"):
            raise InsufficientData("raw.interactions does not exist yet")
        bounds = period_bounds(conn)
        if bounds is None:
            raise InsufficientData(
                f"needs at least {MIN_TRAIN_USERS} users with >= {MIN_FIT_INTERACTIONS} "
                "interactions in the fit period, has 0 (no interactions over time)"
            )
        first, val_from, holdout_from, last = bounds
        users, shares, counts = period_profiles(conn, val_from, holdout_from)
        fitted = counts[0] >= MIN_FIT_INTERACTIONS
        in_val = fitted & (counts[1] >= MIN_OUTCOME_INTERACTIONS)
        in_holdout = fitted & (counts[2] >= MIN_OUTCOME_INTERACTIONS)
        n_train, n_val, n_holdout = int(fitted.sum()), int(in_val.sum()), int(in_holdout.sum())
        if n_train < MIN_TRAIN_USERS or n_val < MIN_VAL_USERS or n_holdout < MIN_HOLDOUT_USERS:
            raise InsufficientData(
                f"needs at least {MIN_TRAIN_USERS} users with >= {MIN_FIT_INTERACTIONS} "
                f"interactions in the fit period ({first:%Y-%m-%d} to {val_from:%Y-%m-%d}), of "
                f"whom >= {MIN_VAL_USERS} validation and >= {MIN_HOLDOUT_USERS} holdout users "
                f"with >= {MIN_OUTCOME_INTERACTIONS} interactions in that later period; has "
                f"{n_train}, {n_val} and {n_holdout}"
            )
        personas = self._personas(conn, users[fitted])
        train = {"user_id": users[fitted], "features": shares[0][fitted], "n_interactions": counts[0][fitted]}
        if personas is not None:
            train["persona"] = personas[0]
        val = {"user_id": users[in_val], "features": shares[1][in_val], "fit_features": shares[0][in_val]}
        holdout = {
            "user_id": users[in_holdout],
            "features": shares[2][in_holdout],
            "fit_features": shares[0][in_holdout],
        }
        data = PreparedData(
            train=train,
            val=val,
            holdout=holdout,
            info={
                "split": (f"time: fit {first} – {val_from}, validation – {holdout_from}, holdout – {last}"),
                "val_from": str(val_from),
                "holdout_from": str(holdout_from),
                "n_train": n_train,
                "n_val": n_val,
                "n_holdout": n_holdout,
                "n_users_too_few_fit_interactions": int((~fitted).sum()),
                "min_fit_interactions": MIN_FIT_INTERACTIONS,
                "min_outcome_interactions": MIN_OUTCOME_INTERACTIONS,
                "features": list(FEATURES),
            },
        )
        if personas is not None:
            data.info["personas"] = personas[1]
        self._fit_baselines(data)
        return data

    @staticmethod
    def _personas(conn, user_ids: np.ndarray):
        """(persona index per user, -1 unknown; names) from truth.users, else None."""
        if not _table_exists(conn, "truth", "users"):
            return None
        rows = conn.execute("SELECT user_id, persona FROM truth.users").fetchall()
        if not rows:
            return None
        names = sorted({p for _, p in rows if p is not None})
        lookup = {int(u): names.index(p) for u, p in rows if p is not None}
        return np.array([lookup.get(int(u), -1) for u in user_ids], dtype=np.int64), names

    @staticmethod
    def _fit_baselines(data: PreparedData) -> None:
        """PCA + k-means (inputs and k by validation error) and the global profile; their
        holdout predictions go into ``data.holdout`` and the strongest into ``data.info``."""
        train_x = data.train["features"]
        val_errors: dict[tuple[str, int], float] = {}
        with threadpool_limits(1):
            for variant in BASELINE_VARIANTS:
                x, weight = baseline_inputs(variant, train_x)
                for k in K_RANGE:
                    if k >= len(x):
                        continue
                    fitted = bb.fit_pca_kmeans(x, k, LATENT_DIM, weight)
                    labels = fitted.km.labels_
                    prof = bb.centroid_profiles(labels, train_x, k)
                    seg, _ = fitted.assign(baseline_inputs(variant, data.val["fit_features"])[0])
                    val_errors[(variant, k)] = float(bb.profile_error(prof[seg], data.val["features"]).mean())
            variant, k = min(val_errors, key=val_errors.get)
            x, weight = baseline_inputs(variant, train_x)
            best = bb.fit_pca_kmeans(x, k, LATENT_DIM, weight)
            labels = best.km.labels_
            seg, _ = best.assign(baseline_inputs(variant, data.holdout["fit_features"])[0])
            stability = bb.bootstrap_stability(best.project(x), labels, k, STABILITY_BOOT, BOOTSTRAP_SEED)
        prof = bb.centroid_profiles(labels, train_x, k)
        global_profile = train_x.astype(np.float64).mean(axis=0)
        data.holdout["pred_pca_kmeans"] = prof[seg]
        data.holdout["pred_global_profile"] = np.tile(global_profile, (len(seg), 1))
        val_global = float(bb.profile_error(global_profile[None], data.val["features"]).mean())
        val_pca = val_errors[(variant, k)]
        data.info.update(
            {
                "baseline_pca_kmeans_variant": variant,
                "baseline_pca_kmeans_k": int(k),
                "baseline_pca_kmeans_stability": stability,
                "baseline_pca_kmeans_val_error": val_pca,
                "baseline_global_profile_val_error": val_global,
                "strongest_baseline": "pca_kmeans" if val_pca <= val_global else "global_profile",
            }
        )
        if "persona" in data.train:
            known = data.train["persona"] >= 0
            data.info["baseline_pca_kmeans_ari_personas"] = float(
                adjusted_rand_score(data.train["persona"][known], labels[known])
            )

    # ---------------------------------------------------------------- search
    def default_params(self) -> dict[str, Any]:
        return {
            "hidden": [512, 256, 128],
            "latent_dim": LATENT_DIM,
            "dropout": 0.1,
            "lr": 1e-3,
            "weight_decay": 1e-5,
            "batch_size": 128,
        }

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "hidden": [512, 256, 128],
            "latent_dim": LATENT_DIM,
            "dropout": trial.suggest_float("dropout", 0.0, 0.2),
            "lr": trial.suggest_float("lr", 5e-4, 2e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-4, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [64, 128]),
        }

    # ------------------------------------------------------------------ train
    def train(self, params, data, choice: DeviceChoice, max_epochs, seed, on_epoch=None):
        # a small MLP: on CPU, intra-op threads cost more in synchronisation than they
        # gain (6-8x slower with 2 threads on a busy 2-core machine), so use one
        with single_cpu_thread(choice):
            return self._train(params, data, choice, max_epochs, seed, on_epoch)

    def _train(self, params, data, choice, max_epochs, seed, on_epoch) -> TrainResult:
        seed_everything(seed)
        model = BehaviorClusterer(
            FEATURES,
            latent_dim=int(params["latent_dim"]),
            hidden=tuple(int(h) for h in params["hidden"]),
            dropout=float(params["dropout"]),
            latent_noise=LATENT_NOISE,
            latent_l2=LATENT_L2,
            hour_smoothing=HOUR_SMOOTHING,
        )
        model.fit_preprocessing(data.train["features"])
        cfg = TrainConfig(
            max_epochs=max_epochs,
            lr=float(params["lr"]),
            weight_decay=float(params["weight_decay"]),
            batch_size=int(params["batch_size"]),
            patience=5,
            seed=seed,
        )
        train_x = {"features": data.train["features"]}
        val_x = {"features": data.val["features"]}
        result = fit(
            model, train_x, val_x, lambda m, b: m.autoencoder_loss(b["features"])[0], cfg, choice, on_epoch
        )
        model = result.model

        # k-means on the training users' latent codes; k whose segments best predict
        # the validation period (the same rule that picks the baseline's k)
        latent = self._latent(model, data.train["features"])
        val_latent = self._latent(model, data.val["fit_features"])
        errors: dict[int, float] = {}
        fits = {}
        with threadpool_limits(1):  # sklearn's OpenMP pool fights torch's on a few cores
            for k in K_RANGE:
                if k >= len(latent):
                    continue
                km = bb.kmeans(latent, k, seed)
                prof = bb.centroid_profiles(km.labels_, data.train["features"], k)
                seg = bb.assign(val_latent, km.cluster_centers_)
                errors[k] = float(bb.profile_error(prof[seg], data.val["features"]).mean())
                fits[k] = km
        best_k = min(errors, key=errors.get)
        model.set_centroids(fits[best_k].cluster_centers_)
        model.validation_error_by_k = errors

        # IDEC: refine encoder and centroids towards confident assignments
        refine_seconds = 0.0
        for round_ in range(IDEC_ROUNDS):
            train_p = {**train_x, "p": self._target(model, data.train["features"])}
            val_p = {**val_x, "p": self._target(model, data.val["features"])}
            refine_cfg = TrainConfig(
                max_epochs=IDEC_EPOCHS,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                batch_size=cfg.batch_size,
                patience=IDEC_EPOCHS,
                seed=seed + 1 + round_,
            )
            refined = fit(
                model, train_p, val_p, lambda m, b: idec_loss(m, b["features"], b["p"]), refine_cfg, choice
            )
            refine_seconds += refined.seconds
        model.cpu().eval()
        result.model = model
        result.seconds += refine_seconds
        result.note = (
            f"k={best_k} by validation profile error; IDEC refinement {IDEC_ROUNDS}×"
            f"{IDEC_EPOCHS} epochs after the autoencoder (loss curve = autoencoder)"
        )
        return result

    @staticmethod
    def _latent(model: BehaviorClusterer, features: np.ndarray) -> np.ndarray:
        model.eval()
        device = model.feature_mean.device
        with torch.no_grad():
            return model.encode(torch.as_tensor(features, device=device)).cpu().numpy()

    @staticmethod
    def _target(model: BehaviorClusterer, features: np.ndarray) -> np.ndarray:
        model.eval()
        device = model.feature_mean.device
        with torch.no_grad():
            q = model.soft_assignment(model.encode(torch.as_tensor(features, device=device)))
            return sharpened_target(q).cpu().numpy()

    # --------------------------------------------------------------- scoring
    @staticmethod
    def _columns(model: BehaviorClusterer, data: PreparedData, x: np.ndarray) -> np.ndarray:
        """``x`` (data's feature order) in the column order the (maybe older) model expects."""
        names = list(data.info.get("features", FEATURES))
        return x[:, [names.index(f) for f in model.feature_names]]

    def _segments(self, model: BehaviorClusterer, data: PreparedData, x: np.ndarray):
        with torch.no_grad():
            labels, _ = model.segment(torch.as_tensor(self._columns(model, data, x)))
        return labels.numpy()

    def _errors(self, model: nn.Module, data: PreparedData) -> dict[str, np.ndarray]:
        """Per holdout user: the model's and each rule's profile error."""
        model = model.cpu().eval()
        train_seg = self._segments(model, data, data.train["features"])
        prof = bb.centroid_profiles(train_seg, data.train["features"], model.n_segments)
        seg = self._segments(model, data, data.holdout["fit_features"])
        actual = data.holdout["features"]
        return {
            "model": bb.profile_error(prof[seg], actual),
            "pca_kmeans": bb.profile_error(data.holdout["pred_pca_kmeans"], actual),
            "global_profile": bb.profile_error(data.holdout["pred_global_profile"], actual),
            "own_profile": bb.profile_error(data.holdout["fit_features"], actual),
            "train_segments": train_seg,
        }

    def evaluate(self, model: nn.Module, data: PreparedData) -> dict[str, float]:
        errors = self._errors(model, data)
        model = model.cpu().eval()
        ours = errors["model"]
        metrics: dict[str, float] = {
            "profile_error": float(ours.mean()),
            "k": float(model.n_segments),
            "holdout_users": float(len(ours)),
        }
        for name in ("pca_kmeans", "global_profile"):
            base = errors[name]
            margin = bootstrap_margin(
                lambda i, e=ours: float(e[i].mean()),
                lambda i, e=base: float(e[i].mean()),
                len(ours),
                higher_is_better=False,
                seed=BOOTSTRAP_SEED,
            )
            metrics.update(margin.as_metrics(f"profile_error_vs_{name}"))
        latent = self._latent(model, self._columns(model, data, data.train["features"]))
        train_seg = errors["train_segments"]
        with threadpool_limits(1):
            metrics["stability_ari"] = bb.bootstrap_stability(
                latent, train_seg, model.n_segments, STABILITY_BOOT, BOOTSTRAP_SEED
            )
            metrics["silhouette"] = silhouette(latent, train_seg)
        metrics["segments_used"] = float(len(np.unique(train_seg)))
        if "persona" in data.train:  # synthetic truth: reported, never gated
            known = data.train["persona"] >= 0
            metrics["ari_personas"] = float(
                adjusted_rand_score(data.train["persona"][known], train_seg[known])
            )
        return metrics

    def baseline(self, data: PreparedData) -> dict[str, float]:
        """Holdout profile error of each rule (PCA + k-means and the global profile, both
        fitted on the fit period, inputs and k chosen on validation) and the reference
        "own profile" (each user's own fit-period shares; not a segmentation)."""
        actual = data.holdout["features"]
        out = {
            "baseline_pca_kmeans_profile_error": float(
                bb.profile_error(data.holdout["pred_pca_kmeans"], actual).mean()
            ),
            "baseline_global_profile_profile_error": float(
                bb.profile_error(data.holdout["pred_global_profile"], actual).mean()
            ),
            "baseline_own_profile_profile_error": float(
                bb.profile_error(data.holdout["fit_features"], actual).mean()
            ),
        }
        for key in (
            "baseline_pca_kmeans_k",
            "baseline_pca_kmeans_stability",
            "baseline_pca_kmeans_val_error",
            "baseline_global_profile_val_error",
            "baseline_pca_kmeans_ari_personas",
        ):
            if key in data.info:
                out[key] = float(data.info[key])
        return out

    def gates(self, metrics: dict[str, float], baseline: dict[str, float]) -> list[Gate]:
        gates = []
        for name in ("pca_kmeans", "global_profile"):
            key = f"margin_profile_error_vs_{name}"
            margin = Margin(
                metrics.get(key, float("nan")),
                metrics.get(f"{key}_lo", float("nan")),
                metrics.get(f"{key}_hi", float("nan")),
                0.90,
                500,
            )
            gates.append(
                Gate.beats(
                    f"profile_error_vs_{name}",
                    margin,
                    "holdout-period profile error (bootstrap over users)",
                    name,
                )
            )
        stability = metrics.get("stability_ari", float("nan"))
        gates.append(
            Gate(
                "stability_ari",
                bool(np.isfinite(stability) and stability >= STABILITY_THRESHOLD),
                stability,
                STABILITY_THRESHOLD,
                f"mean ARI between the segments and k-means refitted on "
                f"{STABILITY_BOOT} bootstrap samples of the training users' latent "
                f"codes >= {STABILITY_THRESHOLD}",
            )
        )
        return gates

    # ------------------------------------------------------------ artefacts
    def plots(self, model: nn.Module, data: PreparedData, result: TrainResult) -> dict:
        model = model.cpu().eval()
        x = self._columns(model, data, data.train["features"])
        labels = self._segments(model, data, data.train["features"])
        latent = self._latent(model, x)
        coords = PCA(n_components=2, random_state=0).fit_transform(latent)
        fig, ax = plots.plt.subplots(figsize=(6, 4))
        for s in np.unique(labels):
            mask = labels == s
            ax.scatter(coords[mask, 0], coords[mask, 1], s=6, alpha=0.6, label=f"segment {s}")
        ax.set_title("training users' latent codes (PCA), by segment", fontsize=9)
        ax.legend(fontsize=6, markerscale=2)
        fig.tight_layout()
        figures = {"latent_segments": fig}
        errors = getattr(model, "validation_error_by_k", None)
        if errors:
            fig2, ax2 = plots.plt.subplots(figsize=(5, 3))
            ax2.plot(list(errors), list(errors.values()), "o-")
            ax2.axvline(model.n_segments, color="k", ls=":", lw=0.8)
            ax2.set_xlabel("k")
            ax2.set_ylabel("validation profile error")
            ax2.set_title("k-means on the latent space: k by validation error", fontsize=9)
            fig2.tight_layout()
            figures["validation_error_by_k"] = fig2
        return figures

    def input_example(self, data: PreparedData) -> dict[str, np.ndarray]:
        return {"features": data.holdout["fit_features"][:5]}
