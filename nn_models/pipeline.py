"""Tune → train → evaluate against the baseline → register → gate → maybe promote.

Plain MLflow + Optuna, no Dagster: the ``models`` assets call ``train_and_register``
and turn its report into metadata and asset-check results. Nothing is registered
until training and evaluation have succeeded, and ``champion`` only moves when every
gate passed and the new version is at least as good as the champion *on the same
holdout* — so a failed or crashed run leaves the registry's aliases as they were.
A champion that cannot be loaded or evaluated on the new holdout blocks promotion
(with the reason), and a registry that cannot be read raises ``RegistryUnavailable``
instead of passing for "no champion": neither ever promotes blindly.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import mlflow
import mlflow.pytorch
import numpy as np
import optuna
from mlflow import MlflowClient
from mlflow.models import infer_signature
from optuna_integration.mlflow import MLflowCallback

from nn_models import plots
from nn_models.device import DeviceChoice
from nn_models.onnx_export import ParityReport, check_parity, export_onnx
from nn_models.registry import CHALLENGER, CHAMPION, version_by_alias
from nn_models.task import Gate, InsufficientData, ModelTask, PreparedData, Profile
from nn_models.tuning import pruning_reporter, run_study

log = logging.getLogger(__name__)


@dataclass
class TrainingReport:
    task: str
    registered_model: str
    status: str  # "registered" or "skipped"
    reason: str = ""
    version: str | None = None
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    promoted: bool = False
    promotion_reason: str = ""
    champion_version: str | None = None  # after this run
    champion_metric_on_holdout: float | None = None
    device: str = "cpu"
    train_seconds: float = 0.0
    total_seconds: float = 0.0
    n_trials: int = 0
    best_params: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    # the same plots as small PNG bytes, for pictures shown inline (Dagster metadata)
    images: dict[str, bytes] = field(default_factory=dict, repr=False)
    data_info: dict[str, Any] = field(default_factory=dict)

    @property
    def gates_passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    def as_dict(self) -> dict:
        """Plain data for JSON; ``images`` as their sizes in bytes (the PNGs are in MLflow)."""
        out = asdict(self)
        out["images"] = {name: len(data) for name, data in self.images.items()}
        return out


def configure_mlflow(tracking_uri: str, artifact_root: str, experiment: str) -> str:
    """Point MLflow at the SQLite backend and our artifact folder; return the experiment id."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        exp_id = found.experiment_id
    else:
        if "://" in artifact_root:  # object storage (s3://…) on a cluster
            location = artifact_root
        else:
            Path(artifact_root).mkdir(parents=True, exist_ok=True)
            location = Path(artifact_root).resolve().as_uri()
        exp_id = client.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in values.items()
        if isinstance(v, int | float | np.floating | np.integer) and np.isfinite(v)
    }


def _tune(task, data, choice, profile, seed, optuna_uri, tracking_uri, progress) -> optuna.Study:
    def objective(trial: optuna.Trial) -> float:
        params = task.suggest(trial)
        trial.set_user_attr("params", params)
        result = task.train(params, data, choice, profile.max_epochs, seed, on_epoch=pruning_reporter(trial))
        progress(f"{task.name}: trial {trial.number} val_loss={result.best_val_loss:.5f}")
        return result.best_val_loss

    callback = MLflowCallback(
        tracking_uri=tracking_uri,
        metric_name="val_loss",
        create_experiment=False,
        mlflow_kwargs={"nested": True},
    )
    return run_study(
        objective,
        study_name=f"{task.name}-{data.fingerprint()}-seed{seed}",
        storage_uri=optuna_uri,
        n_trials=profile.n_trials,
        seed=seed,
        callbacks=[callback],
    )


def _best_params(task: ModelTask, study: optuna.Study) -> dict[str, Any]:
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return task.default_params()
    return dict(study.best_trial.user_attrs.get("params", task.default_params()))


def _log_figures(
    figures: dict, artifacts: dict[str, str], run_id: str, images: dict[str, bytes] | None = None
) -> None:
    """Log each figure to MLflow; keep a small PNG of it in ``images`` for inline display."""
    for name, fig in figures.items():
        path = f"plots/{name}.png"
        mlflow.log_figure(fig, path)
        artifacts[name] = f"{mlflow.get_artifact_uri()}/{path}"
        if images is not None:
            images[name] = plots.png_bytes(fig)
        plots.close(fig)


def _export_onnx(task: ModelTask, model, data: PreparedData) -> dict[str, str]:
    """Export to ONNX, check parity against PyTorch, log it; tags say whether to use it."""
    examples = task.onnx_examples(data)
    if not examples:
        return {"onnx_parity": "skipped", "onnx_reason": "task provides no ONNX examples"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            export_onnx(model, examples[0], path, task.onnx_dynamic_axes)
            parity = check_parity(model, path, examples)
        except Exception as exc:  # an unexportable op must not lose the trained model
            parity = ParityReport(False, float("inf"), f"export failed: {exc}"[:500])
        if path.exists():
            mlflow.log_artifact(str(path), "onnx")
    mlflow.log_metric("onnx_max_abs_diff", parity.max_abs_diff if np.isfinite(parity.max_abs_diff) else -1.0)
    return {
        "onnx_parity": "passed" if parity.passed else "failed",
        "onnx_max_abs_diff": f"{parity.max_abs_diff:.3g}",
        "onnx_reason": parity.reason,
    }


def _champion_on_holdout(task: ModelTask, data: PreparedData, client: MlflowClient):
    """(version, primary metric of the current champion on *this* holdout, note).

    No champion → (None, None, note). A registry that cannot be read raises
    ``RegistryUnavailable`` (the asset fails and retries; nothing is promoted). A
    champion that cannot be loaded or evaluated on this holdout → (version, None, why):
    ``_decide`` then keeps it, because a new version that cannot be compared has not
    shown that it is at least as good.
    """
    current = version_by_alias(client, task.registered_model, CHAMPION)
    if current is None:
        return None, None, "no champion yet"
    try:
        model = mlflow.pytorch.load_model(
            f"models:/{task.registered_model}/{current.version}", map_location="cpu"
        )
        metric = float(task.evaluate(model, data)[task.primary_metric])
    except Exception as exc:  # noqa: BLE001 - any failure to compare is a reason, see _decide
        log.warning(
            "champion %s v%s could not be evaluated", task.registered_model, current.version, exc_info=True
        )
        return (
            current,
            None,
            (
                f"champion v{current.version} could not be evaluated on this "
                f"holdout: {type(exc).__name__}: {exc}"[:1000]
            ),
        )
    if not np.isfinite(metric):
        return (
            current,
            None,
            (
                f"champion v{current.version} could not be evaluated on this "
                f"holdout: {task.primary_metric} = {metric}"
            ),
        )
    return current, metric, ""


def _decide(task, report, current, champion_metric, note) -> tuple[bool, str]:
    """Promote only a version that passed every gate and beat (or tied) the champion."""
    if not report.gates_passed:
        failed = ", ".join(
            f"{g.name} ({g.value:.4f} vs {g.threshold:.4f})" for g in report.gates if not g.passed
        )
        keep = f"champion stays v{current.version}" if current else "no champion"
        return False, f"gates failed: {failed}; {keep}"
    if current is None:
        return True, "first version to pass every gate"
    if champion_metric is None:
        return False, (
            f"passed every gate but not promoted: {note}; champion stays "
            f"v{current.version} (compare by hand, then move alias "
            f"'{CHAMPION}' to v{report.version} if it is better)"
        )
    new = report.metrics[task.primary_metric]
    if task.better(new, champion_metric):
        return True, (
            f"{task.primary_metric} {new:.4f} vs champion v{current.version} "
            f"{champion_metric:.4f} on the same holdout"
        )
    return False, (
        f"champion v{current.version} stays: {task.primary_metric} "
        f"{champion_metric:.4f} beats {new:.4f} on the same holdout"
    )


def train_and_register(
    task: ModelTask,
    conn: duckdb.DuckDBPyConnection | None = None,
    *,
    data: PreparedData | None = None,
    tracking_uri: str,
    artifact_root: str,
    optuna_uri: str,
    choice: DeviceChoice,
    profile: Profile,
    seed: int = 42,
    experiment: str = "channel_pulse",
    progress: Callable[[str], None] = log.info,
) -> TrainingReport:
    """The whole model lifecycle for one task; see the module docstring.

    Pass ``data`` already loaded (the Dagster asset does, so it can close the
    warehouse before the long training) or a ``conn`` to load it from.
    """
    started = time.perf_counter()
    report = TrainingReport(task.name, task.registered_model, status="skipped", device=choice.device)
    if data is None:
        try:
            data = task.load(conn)
        except InsufficientData as exc:
            report.reason = str(exc)
            return report
    report.data_info = data.info
    configure_mlflow(tracking_uri, artifact_root, experiment)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    # an unreadable registry fails now (RegistryUnavailable), not after the whole training;
    # the champion is looked up again after registration, where the decision is made
    version_by_alias(client, task.registered_model, CHAMPION)

    with mlflow.start_run(run_name=f"{task.name}-{profile.name}") as run:
        report.run_id = run.info.run_id
        mlflow.set_tags(
            {
                "task": task.name,
                "device": choice.device,
                "profile": profile.name,
                "device_reason": choice.reason,
                "data_fingerprint": data.fingerprint(),
            }
        )
        mlflow.log_params({f"data.{k}": v for k, v in data.info.items() if isinstance(v, int | float | str)})
        study = _tune(task, data, choice, profile, seed, optuna_uri, tracking_uri, progress)
        report.n_trials = len(study.trials)
        report.best_params = _best_params(task, study)
        progress(f"{task.name}: final training with {report.best_params}")
        final = task.train(report.best_params, data, choice, profile.final_epochs, seed)
        report.train_seconds = final.seconds
        report.device = final.device
        report.metrics = task.evaluate(final.model, data)
        report.baseline = task.baseline(data)
        report.gates = task.gates(report.metrics, report.baseline)

        mlflow.log_params({f"model.{k}": v for k, v in report.best_params.items()})
        mlflow.log_metrics(
            {
                **_flat("holdout_", report.metrics),
                **_flat("", report.baseline),
                "train_seconds": final.seconds,
                "best_epoch": final.best_epoch,
            }
        )
        for epoch, (tr, va) in enumerate(zip(final.train_losses, final.val_losses, strict=True)):
            mlflow.log_metrics({"train_loss": tr, "val_loss": va}, step=epoch)
        figures = {"loss_curve": plots.loss_curve(final.train_losses, final.val_losses, f"{task.name}: loss")}
        figures.update(task.plots(final.model, data, final))
        _log_figures(figures, report.artifacts, report.run_id, report.images)

        example = task.input_example(data)
        signature = None
        if example:
            import torch

            with torch.no_grad():
                tensors = {k: torch.as_tensor(v) for k, v in example.items()}
                output = final.model.cpu()(**tensors)
            output = output[0] if isinstance(output, tuple) else output
            signature = infer_signature(example, output.numpy())
        info = mlflow.pytorch.log_model(
            final.model.cpu(),
            name="model",
            signature=signature,
            # the PyTorch flavour validates only single-array examples; multi-input
            # models keep the named-tensor signature without an example payload
            input_example=next(iter(example.values())) if len(example) == 1 else None,
            pip_requirements=["torch"],
            serialization_format="pickle",
        )
        onnx_tags = _export_onnx(task, final.model, data)
        version = mlflow.register_model(info.model_uri, task.registered_model)
        report.version = str(version.version)
        report.status = "registered"
        tags = {
            "gates_passed": str(report.gates_passed),
            "run_id": report.run_id,
            **{f"gate.{g.name}": str(g.passed) for g in report.gates},
            **{f"metric.{k}": f"{v:.6g}" for k, v in _flat("", report.metrics).items()},
            # the baselines measured on the same holdout: what a baseline-served
            # forecast's confidence is computed from
            **{f"baseline.{k}": f"{v:.6g}" for k, v in _flat("", report.baseline).items()},
            "strongest_baseline": str(data.info.get("strongest_baseline", "")),
            **onnx_tags,
        }
        for key, value in tags.items():
            client.set_model_version_tag(task.registered_model, report.version, key, value)
        client.set_registered_model_alias(task.registered_model, CHALLENGER, report.version)

        current, champion_metric, note = _champion_on_holdout(task, data, client)
        report.champion_metric_on_holdout = champion_metric
        report.promoted, report.promotion_reason = _decide(task, report, current, champion_metric, note)
        if report.promoted:
            client.set_registered_model_alias(task.registered_model, CHAMPION, report.version)
        champion = version_by_alias(client, task.registered_model, CHAMPION)
        report.champion_version = str(champion.version) if champion else None
        mlflow.set_tags(
            {"promoted": str(report.promoted), "promotion_reason": report.promotion_reason[:4000]}
        )
    report.total_seconds = time.perf_counter() - started
    progress(f"{task.name}: v{report.version} promoted={report.promoted} ({report.promotion_reason})")
    return report
