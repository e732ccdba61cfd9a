"""Content model task: ``ContentAnalyzer`` (text CNN) predicting ``is_viral`` from text alone.

``ViralLabelTask`` holds what the content and viral tasks share — data (posts with 48 h
forwards split by publish time, frozen MiniLM token states from ``nn_models.text_data``),
weighted BCE for the ~10 % positives, holdout metrics, the TF-IDF + logistic regression
baseline, gates and plots; the two subclasses differ in model and inputs only.
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
from nn_models.baselines_text import BASELINE_NAME, binary_metrics, tfidf_logreg_scores
from nn_models.device import DeviceChoice
from nn_models.models.content import ContentAnalyzer
from nn_models.task import Gate, ModelTask, PreparedData
from nn_models.training import TrainConfig, TrainResult, fit, seed_everything

AUC_THRESHOLD = 0.75
LABEL = text_data.LABEL
SCORE_BATCH = 512


class ViralLabelTask(ModelTask):
    """Shared parts of the content and viral tasks (see the module docstring)."""

    primary_metric = "roc_auc"
    higher_is_better = True
    model_label = "model"                    # legend of the ROC plot
    with_context: bool = False
    input_names: tuple[str, ...] = ("tokens", "mask")
    # These models converge in 2-6 epochs on frozen MiniLM states; more only overfits
    # (validation loss rises) and costs CPU time, so epochs are capped below the profile's.
    epoch_cap: int = 6

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir if cache_dir is not None else text_data.default_cache_dir()

    # ---------------------------------------------------------------- data

    def load(self, conn: duckdb.DuckDBPyConnection) -> PreparedData:
        return text_data.prepare(conn, with_context=self.with_context, cache_dir=self.cache_dir)

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
                batch = {k: torch.as_tensor(arrays[k][start : start + SCORE_BATCH])
                         for k in self.input_names}
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
        pos_weight = torch.tensor(
            float((len(y) - y.sum()) / max(y.sum(), 1.0)), device=choice.torch_device
        )

        aux_weight = float(params.get("aux_weight", 0.0))

        def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            logit, aux = self.heads(m, batch)
            loss = nn.functional.binary_cross_entropy_with_logits(
                logit, batch[LABEL], pos_weight=pos_weight
            )
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
        y = data.holdout[LABEL]
        prob = self.probabilities(model, data.holdout)
        metrics = binary_metrics(y, prob)
        metrics["brier"] = float(np.mean((prob - y) ** 2))
        metrics["n_holdout"] = float(len(y))
        metrics["viral_rate_holdout"] = float(y.mean())
        metrics["mean_probability"] = float(prob.mean())
        return metrics

    def baseline_scores(self, data: PreparedData) -> np.ndarray:
        texts = data.texts  # type: ignore[attr-defined]
        return tfidf_logreg_scores(texts["train"], data.train[LABEL], texts["holdout"])

    def baseline(self, data: PreparedData) -> dict[str, float]:
        metrics = binary_metrics(data.holdout[LABEL], self.baseline_scores(data))
        return {f"baseline_{k}": v for k, v in metrics.items()}

    def gates(self, metrics: dict[str, float], baseline: dict[str, float]) -> list[Gate]:
        auc, base = metrics["roc_auc"], baseline["baseline_roc_auc"]
        return [
            Gate("roc_auc", bool(auc >= AUC_THRESHOLD), auc, AUC_THRESHOLD,
                 f"holdout ROC AUC >= {AUC_THRESHOLD}"),
            Gate("beats_baseline", bool(auc > base), auc, base,
                 f"holdout ROC AUC > {BASELINE_NAME} ({base:.4f})"),
        ]

    def plots(self, model: nn.Module, data: PreparedData, result: TrainResult) -> dict:
        y = data.holdout[LABEL]
        prob = self.probabilities(model, data.holdout)
        return {
            "roc_holdout": plots.roc_plot(
                y, {self.model_label: prob, BASELINE_NAME: self.baseline_scores(data)},
                f"{self.name}: holdout ROC",
            ),
            "calibration_holdout": plots.calibration_plot(
                y, prob, f"{self.name}: holdout calibration"
            ),
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
    """Text-only viral score from the CNN (model card: ROC AUC >= 0.75 and > TF-IDF)."""

    name = "content"
    registered_model = "channel_pulse_content"
    model_label = "ContentAnalyzer (CNN)"
    with_context = False
    input_names = ("tokens", "mask")

    def default_params(self) -> dict[str, Any]:
        return {"proj_dim": 16, "hidden": 128, "dropout": 0.3, "lr": 2e-3,
                "weight_decay": 1e-4, "batch_size": 256, "aux_weight": 1.0}

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
            proj_dim=int(params["proj_dim"]), hidden=int(params["hidden"]),
            dropout=float(params["dropout"]), n_aux=len(text_data.AUX_TARGETS),
        )

    def heads(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        return model.heads(tokens=batch["tokens"], mask=batch["mask"])

    def predict(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(model(**batch))  # the CNN outputs the calibrated logit
