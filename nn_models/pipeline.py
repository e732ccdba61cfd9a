"""Tune → train → evaluate against the baseline → register → gate → maybe promote.

Plain MLflow + Optuna, no Dagster: the ``models`` assets call ``train_and_register``
and turn its report into metadata and asset-check results. Nothing is registered
until training and evaluation have succeeded, and ``champion`` only moves when every
gate passed and the new version is at least as good as the champion *on the same
holdout* — so a failed or crashed run leaves the registry's aliases as they were.
A champion that cannot be loaded or evaluated on the new holdout blocks promotion
(with the reason), and a registry that cannot be read raises ``RegistryUnavailable``
instead of passing for "no champion": neither ever promotes blindly.

Each Optuna trial is a nested MLflow run (params, val_loss, state, epochs, seconds),
written directly (Optuna's ``MLflowCallback`` is deprecated). ``progress`` gets one line
per trial and, during a final fit, an epoch line at most every ``EPOCH_LINE_S``. When
the final fit would repeat the best trial exactly (same params, seed, data and epoch
budget; training is deterministic) that trial's fit is the final model.
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

from nn_models import plots
from nn_models.device import DeviceChoice
from nn_models.onnx_export import ParityReport, check_parity, export_onnx
from nn_models.registry import CHALLENGER, CHAMPION, version_by_alias
from nn_models.task import Gate, InsufficientData, ModelTask, PreparedData, Profile
from nn_models.training import TrainResult
from nn_models.tuning import pruning_reporter, run_study

log = logging.getLogger(__name__)
EPOCH_LINE_S = 10.0  # at most one progress line per final-fit epoch this often


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


@dataclass
class _Tuned:
    study: optuna.Study
    # the TrainResult of the best trial run in this process (None after a resume that ran
    # no better trial); reused as the final fit when that fit would be the same computation
    best_result: TrainResult | None = None
    best_trial: int | None = None


def _short(params: dict[str, Any]) -> str:
    """``hidden=128 lr=0.0023``: a parameter set on one short line."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One nested MLflow run per finished trial: its params, val_loss, state, epochs, seconds
    (what Optuna's deprecated ``MLflowCallback`` logged, written directly)."""
    with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
        mlflow.log_params(trial.params)
        if trial.value is not None:
            mlflow.log_metric("val_loss", float(trial.value))
        for key in ("epochs", "seconds"):
            if key in trial.user_attrs:
                mlflow.log_metric(key, float(trial.user_attrs[key]))
        mlflow.set_tags(
            {
                "trial_number": str(trial.number),
                "trial_state": trial.state.name,
                "study_name": study.study_name,
                "direction": study.direction.name,
            }
        )


def _tune(task, data, choice, profile, seed, optuna_uri, progress) -> _Tuned:
    tuned = _Tuned(study=None)  # type: ignore[arg-type]
    total = profile.n_trials

    def objective(trial: optuna.Trial) -> float:
        params = task.suggest(trial)
        trial.set_user_attr("params", params)
        report = pruning_reporter(trial)
        epochs = [0]
        started = time.perf_counter()

        def on_epoch(epoch: int, val_loss: float) -> None:
            epochs[0] = epoch + 1
            report(epoch, val_loss)

        k = f"{trial.number + 1}/{total}"
        try:
            result = task.train(params, data, choice, profile.max_epochs, seed, on_epoch=on_epoch)
        except optuna.TrialPruned as pruned:
            seconds = time.perf_counter() - started
            trial.set_user_attr("epochs", epochs[0])
            trial.set_user_attr("seconds", round(seconds, 2))
            progress(f"{task.name}: trial {k} pruned: {pruned} ({seconds:.0f} s)")
            raise
        seconds = time.perf_counter() - started
        trial.set_user_attr("epochs", result.epochs)
        trial.set_user_attr("seconds", round(seconds, 2))
        value = result.best_val_loss
        best = tuned.best_result.best_val_loss if tuned.best_result is not None else float("inf")
        if value < best:
            tuned.best_result, tuned.best_trial = result, trial.number
        stop = ", stopped early" if result.stopped_early else ""
        progress(
            f"{task.name}: trial {k} val_loss={value:.4g} ({result.epochs} epochs{stop}, {seconds:.0f} s)"
        )
        return value

    tuned.study = run_study(
        objective,
        study_name=f"{task.name}-{data.fingerprint()}-seed{seed}",
        storage_uri=optuna_uri,
        n_trials=profile.n_trials,
        seed=seed,
        callbacks=[_log_trial],
    )
    return tuned


def _final_fit(task, data, choice, profile, seed, tuned: _Tuned, params, progress) -> tuple[TrainResult, str]:
    """The final model: the best trial's own fit when retraining would repeat it exactly
    (same params, seed, data and epoch budget: training is deterministic), else a new fit
    with ``profile.final_epochs``, reporting its progress at most every ``EPOCH_LINE_S``."""
    same_budget = task.epoch_budget(profile.max_epochs) == task.epoch_budget(profile.final_epochs)
    best = tuned.study.best_trial if _complete(tuned.study) else None
    if same_budget and best is not None and tuned.best_trial == best.number and tuned.best_result is not None:
        progress(
            f"{task.name}: final model = trial {best.number + 1}'s fit (its params, seed and "
            f"{task.epoch_budget(profile.final_epochs)}-epoch budget are the final fit's)"
        )
        return tuned.best_result, f"trial {best.number}'s fit (identical to a retrain)"
    budget = task.epoch_budget(profile.final_epochs)
    progress(f"{task.name}: final fit, up to {budget} epochs, {_short(params)}")
    started = time.perf_counter()
    last = [started]

    def on_epoch(epoch: int, val_loss: float) -> None:
        now = time.perf_counter()
        if now - last[0] >= EPOCH_LINE_S:
            last[0] = now
            progress(
                f"{task.name}: final fit epoch {epoch + 1}/{budget} val_loss={val_loss:.4g} "
                f"({now - started:.0f} s)"
            )

    result = task.train(params, data, choice, profile.final_epochs, seed, on_epoch=on_epoch)
    stop = ", stopped early" if result.stopped_early else ""
    progress(
        f"{task.name}: final fit {result.epochs} epochs{stop}, best epoch {result.best_epoch + 1} "
        f"val_loss={result.best_val_loss:.4g} ({time.perf_counter() - started:.0f} s)"
    )
    return result, "retrained with the best params"


def _complete(study: optuna.Study) -> bool:
    return any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


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


class _DropPickleNotice(logging.Filter):
    """Drops MLflow's notice that pickled models can run code when loaded (see ``_log_model``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle format" not in record.getMessage()


def _log_model(task: ModelTask, model, data: PreparedData):
    """Log the model with a signature and no input example.

    Pickle (not MLflow's safer ``pt2``): ``pt2`` stores only the traced ``forward``
    graph, while champions and the service call the loaded module's other methods
    (``forward_steps``, calibration, clustering) — so MLflow's notice that pickles can
    run code on load is dropped here; the registry is this project's own store. No
    input example: the PyTorch flavour's serving check cannot take named tensors (dict
    inputs) and rejected even single arrays once converted to JSON lists; the signature
    keeps the input names, dtypes and shapes.
    """
    import torch

    example = task.input_example(data)
    signature = None
    if example:
        with torch.no_grad():
            output = model.cpu()(**{k: torch.as_tensor(v) for k, v in example.items()})
        output = output[0] if isinstance(output, tuple) else output
        signature = infer_signature(example, output.numpy())
    notice = _DropPickleNotice()
    logger = logging.getLogger("mlflow.pytorch")
    logger.addFilter(notice)
    try:
        return mlflow.pytorch.log_model(
            model.cpu(),
            name="model",
            signature=signature,
            pip_requirements=["torch"],
            serialization_format="pickle",
        )
    finally:
        logger.removeFilter(notice)


def _export_onnx(task: ModelTask, model, data: PreparedData) -> dict[str, str]:
    """Export to ONNX, check parity against PyTorch, log it; tags say whether to use it."""
    examples = task.onnx_examples(data)
    if not examples:
        return {"onnx_parity": "skipped", "onnx_reason": "task provides no ONNX examples"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            # trace the largest batch (a batch of 1 could be baked into the graph); the
            # parity check then runs every example, batches of 1 included
            largest = max(examples, key=lambda e: len(next(iter(e.values()))))
            export_onnx(model, largest, path, task.onnx_dynamic_axes)
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
        tuned = _tune(task, data, choice, profile, seed, optuna_uri, progress)
        study = tuned.study
        report.n_trials = len(study.trials)
        report.best_params = _best_params(task, study)
        final, final_fit = _final_fit(task, data, choice, profile, seed, tuned, report.best_params, progress)
        mlflow.set_tags({"final_fit": final_fit, "final_stopped_early": str(final.stopped_early)})
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
                "epochs_run": final.epochs,
            }
        )
        for epoch, (tr, va) in enumerate(zip(final.train_losses, final.val_losses, strict=True)):
            mlflow.log_metrics({"train_loss": tr, "val_loss": va}, step=epoch)
        figures = {"loss_curve": plots.loss_curve(final.train_losses, final.val_losses, f"{task.name}: loss")}
        figures.update(task.plots(final.model, data, final))
        _log_figures(figures, report.artifacts, report.run_id, report.images)

        info = _log_model(task, final.model, data)
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
