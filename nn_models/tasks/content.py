"""Content model task: ``ContentAnalyzer`` (text CNN) predicting ``is_viral`` from text alone.

``ViralLabelTask`` holds what the content and viral tasks share — data (labelled posts
split by publish time, frozen MiniLM token states from ``nn_models.text_data``),
weighted BCE for the ~10 % positives, holdout metrics, baselines, gates and plots; the
two subclasses differ in model, inputs and which baselines get the same information.

Baselines (``nn_models.baselines_text``) are tuned when the data is loaded, on the
training and validation splits only; the one with the best validation ROC AUC is the
*strongest* (``data.info["strongest_baseline"]``). Gates on the holdout (the latest
period): ROC AUC ≥ ``AUC_THRESHOLD`` (model card), and model − strongest baseline ROC
AUC with a paired bootstrap 90 % interval whose lower bound is ≥ 0 (``Gate.beats``).
The bootstrap resamples whole channels when the holdout has at least
``MIN_BOOTSTRAP_CLUSTERS`` of them (posts of one channel share its audience), single
posts otherwise.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import optuna
import torch
from torch import nn

from nn_models import plots, text_data
from nn_models.baselines_text import binary_metrics, strongest, tune_baselines
from nn_models.device import DeviceChoice
from nn_models.metrics import Margin, bootstrap_margin
from nn_models.models.content import ContentAnalyzer
from nn_models.task import Gate, ModelTask, PreparedData
from nn_models.training import TrainConfig, TrainResult, fit, seed_everything

AUC_THRESHOLD = 0.75
LABEL = text_data.LABEL
SCORE_BATCH = 512
MIN_BOOTSTRAP_CLUSTERS = 10  # channels in the holdout to resample channels, not posts
BOOTSTRAP_SEED = 0
N_BOOT = 500
BOOTSTRAP_LEVEL = 0.90
BASELINE_SEED = 0


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, NaN with a single class (a bootstrap replicate that is then dropped)."""
    return binary_metrics(y, score)["roc_auc"]


class ViralLabelTask(ModelTask):
    """Shared parts of the content and viral tasks (see the module docstring)."""

    primary_metric = "roc_auc"
    higher_is_better = True
    model_label = "model"  # legend of the ROC plot
    with_context: bool = False
    input_names: tuple[str, ...] = ("tokens", "mask")
    # These models converge in 2-6 epochs on frozen MiniLM states; more only overfits
    # (validation loss rises) and costs CPU time, so epochs are capped below the profile's.
    epoch_cap: int = 6
    # baselines given the same information as the model (see baselines_text)
    baseline_names: tuple[str, ...] = ("tfidf",)

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir if cache_dir is not None else text_data.default_cache_dir()
        self.strongest_label = "the strongest baseline"  # set by fit_baselines

    # ---------------------------------------------------------------- data

    def load(self, conn: duckdb.DuckDBPyConnection) -> PreparedData:
        data = text_data.prepare(conn, with_context=self.with_context, cache_dir=self.cache_dir)
        self.fit_baselines(data)
        return data

    def fit_baselines(self, data: text_data.TextPreparedData) -> None:
        """Tune every baseline on train → validation (the holdout is not passed) and record
        the choices and the strongest in ``data.info``."""
        data.baselines = tune_baselines(
            self.baseline_names,
            data.frames["train"],
            data.train[LABEL],
            data.frames["val"],
            data.val[LABEL],
            text_data.CONTEXT_FEATURES,
            seed=BASELINE_SEED,
        )
        best = strongest(data.baselines)
        data.info["strongest_baseline"] = best
        for name, tuned in data.baselines.items():
            data.info[f"baseline_{name}_params"] = tuned.label
            data.info[f"baseline_{name}_val_roc_auc"] = round(tuned.val_roc_auc, 4)
        self.strongest_label = data.baselines[best].label

    def baseline_holdout_scores(self, data: PreparedData) -> dict[str, np.ndarray]:
        """Each tuned baseline's viral probability of the holdout posts (computed once)."""
        if not getattr(data, "baselines", None):
            self.fit_baselines(data)  # type: ignore[arg-type]
        cached = getattr(data, "_baseline_holdout", None)
        if cached is None:
            cached = {
                n: b.scores(data.frames["holdout"])  # type: ignore[attr-defined]
                for n, b in data.baselines.items()
            }  # type: ignore[attr-defined]
            data._baseline_holdout = cached  # type: ignore[attr-defined]
        best = data.info["strongest_baseline"]
        self.strongest_label = data.baselines[best].label  # type: ignore[attr-defined]
        return cached

    # --------------------------------------------------------------- model

    @abstractmethod
    def build_model(self, params: dict[str, Any], data: PreparedData) -> nn.Module:
        """A fresh model for these hyper-parameters (content or viral)."""

    @abstractmethod
    def heads(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training outputs: viral logit (before the prior correction) and auxiliary."""

    @abstractmethod
    def predict(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Viral probability of one batch of inputs (``input_names``)."""

    def probabilities(self, model: nn.Module, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Viral probability of every row, scored in batches on the CPU."""
        model = model.cpu().eval()
        n = len(arrays[self.input_names[0]])
        out = []
        with torch.no_grad():
            for start in range(0, n, SCORE_BATCH):
                batch = {k: torch.as_tensor(arrays[k][start : start + SCORE_BATCH]) for k in self.input_names}
                out.append(self.predict(model, batch).numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

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
        model = self.build_model(params, data)
        y = data.train[LABEL]
        pos_weight = torch.tensor(float((len(y) - y.sum()) / max(y.sum(), 1.0)), device=choice.torch_device)

        aux_weight = float(params.get("aux_weight", 0.0))

        def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            logit, aux = self.heads(m, batch)
            loss = nn.functional.binary_cross_entropy_with_logits(logit, batch[LABEL], pos_weight=pos_weight)
            if aux is not None and aux_weight > 0:
                loss = loss + aux_weight * nn.functional.mse_loss(aux, batch[text_data.AUX])
            return loss

        cfg = TrainConfig(
            max_epochs=min(max_epochs, self.epoch_cap),
            lr=params["lr"],
            weight_decay=params["weight_decay"],
            batch_size=params["batch_size"],
            patience=int(params.get("patience", 2)),
            seed=seed,
        )
        result = fit(model, data.train, data.val, loss_fn, cfg, choice, on_epoch)
        # Weighted BCE learns odds x pos_weight; undo it so outputs are probabilities.
        result.model.set_prior_correction(math.log(float(pos_weight)))
        return result

    # ---------------------------------------------------------- evaluation

    def evaluate(self, model: nn.Module, data: PreparedData) -> dict[str, float]:
        """Holdout metrics, and the margin over every baseline with its bootstrap interval
        (``margin_<baseline>``; ``margin_strongest`` is the one the gate reads)."""
        y = data.holdout[LABEL]
        prob = self.probabilities(model, data.holdout)
        metrics = binary_metrics(y, prob)
        metrics["brier"] = float(np.mean((prob - y) ** 2))
        metrics["n_holdout"] = float(len(y))
        metrics["viral_rate_holdout"] = float(y.mean())
        metrics["mean_probability"] = float(prob.mean())
        channels = data.channels["holdout"]  # type: ignore[attr-defined]
        clusters = channels if np.unique(channels).size >= MIN_BOOTSTRAP_CLUSTERS else None
        metrics["bootstrap_clusters"] = float(np.unique(channels).size if clusters is not None else 0)
        baselines = self.baseline_holdout_scores(data)
        for name, score in baselines.items():
            margin = bootstrap_margin(
                lambda idx: roc_auc(y[idx], prob[idx]),
                lambda idx, s=score: roc_auc(y[idx], s[idx]),
                len(y),
                higher_is_better=True,
                clusters=clusters,
                n_boot=N_BOOT,
                level=BOOTSTRAP_LEVEL,
                seed=BOOTSTRAP_SEED,
            )
            metrics.update(margin.as_metrics(name))
            if name == data.info["strongest_baseline"]:
                metrics.update(margin.as_metrics("strongest"))
        return metrics

    def baseline(self, data: PreparedData) -> dict[str, float]:
        """Every baseline's holdout metrics (``baseline_<name>_<metric>``) and its validation
        AUC; ``baseline_roc_auc`` / ``baseline_average_precision`` are the strongest's."""
        out: dict[str, float] = {}
        y = data.holdout[LABEL]
        for name, score in self.baseline_holdout_scores(data).items():
            for key, value in binary_metrics(y, score).items():
                out[f"baseline_{name}_{key}"] = value
            out[f"baseline_{name}_val_roc_auc"] = data.baselines[name].val_roc_auc  # type: ignore[attr-defined]
        best = data.info["strongest_baseline"]
        out["baseline_roc_auc"] = out[f"baseline_{best}_roc_auc"]
        out["baseline_average_precision"] = out[f"baseline_{best}_average_precision"]
        return out

    def gates(self, metrics: dict[str, float], baseline: dict[str, float]) -> list[Gate]:
        auc = metrics["roc_auc"]
        margin = Margin(
            metrics["margin_strongest"],
            metrics["margin_strongest_lo"],
            metrics["margin_strongest_hi"],
            BOOTSTRAP_LEVEL,
            N_BOOT,
        )
        return [
            Gate(
                "roc_auc",
                bool(auc >= AUC_THRESHOLD),
                auc,
                AUC_THRESHOLD,
                f"holdout ROC AUC >= {AUC_THRESHOLD} (model card)",
            ),
            Gate.beats(
                "beats_baseline", margin, "holdout ROC AUC", f"strongest baseline {self.strongest_label}"
            ),
        ]

    def plots(self, model: nn.Module, data: PreparedData, result: TrainResult) -> dict:
        y = data.holdout[LABEL]
        prob = self.probabilities(model, data.holdout)
        curves = {self.model_label: prob}
        for name, score in self.baseline_holdout_scores(data).items():
            curves[data.baselines[name].label] = score  # type: ignore[attr-defined]
        return {
            "roc_holdout": plots.roc_plot(y, curves, f"{self.name}: holdout ROC"),
            "calibration_holdout": plots.calibration_plot(y, prob, f"{self.name}: holdout calibration"),
        }

    def input_example(self, data: PreparedData) -> dict[str, np.ndarray]:
        return {k: data.holdout[k][:3].astype(np.float32) for k in self.input_names}

    # the token axis of the mask varies with the tokenizer's max_length, like the tokens'
    onnx_dynamic_axes = {"mask": {1: "steps"}}

    def onnx_examples(self, data: PreparedData) -> list[dict[str, np.ndarray]]:
        """One post, three posts, and three posts cut to 16 tokens (another length)."""
        full = self.input_example(data)
        short = {k: v[:, :16] if k in ("tokens", "mask") else v for k, v in full.items()}
        return [{k: v[:1] for k, v in full.items()}, full, short]


class ContentTask(ViralLabelTask):
    """Text-only viral score from the CNN (model card: ROC AUC >= 0.75 and beats tuned TF-IDF)."""

    name = "content"
    registered_model = "channel_pulse_content"
    model_label = "ContentAnalyzer (CNN)"
    with_context = False
    input_names = ("tokens", "mask")

    def default_params(self) -> dict[str, Any]:
        return {
            "proj_dim": 16,
            "hidden": 128,
            "dropout": 0.3,
            "lr": 2e-3,
            "weight_decay": 1e-4,
            "batch_size": 256,
            "aux_weight": 1.0,
        }

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        # proj_dim 16 vs 32 made no measurable difference; 16 halves the convolution cost
        return {
            "proj_dim": 16,
            "hidden": 128,
            "dropout": trial.suggest_float("dropout", 0.1, 0.5),
            "lr": trial.suggest_float("lr", 1e-3, 4e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
            "batch_size": 256,
            "aux_weight": 1.0,
        }

    def build_model(self, params: dict[str, Any], data: PreparedData) -> nn.Module:
        return ContentAnalyzer(
            proj_dim=int(params["proj_dim"]),
            hidden=int(params["hidden"]),
            dropout=float(params["dropout"]),
            n_aux=len(text_data.AUX_TARGETS),
        )

    def heads(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        return model.heads(tokens=batch["tokens"], mask=batch["mask"])

    def predict(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(model(**batch))  # the CNN outputs the calibrated logit
