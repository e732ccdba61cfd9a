"""Load the ``champion`` version of each registered model for scoring and serving.

Forecast tables and the insight service read champions only — a version that
failed its gates never gets the alias, so it can never reach a forecast. A
``LoadedModel`` runs NumPy in → NumPy out through ONNX Runtime when the version
carries a parity-checked ONNX export, else through PyTorch eager (with the reason).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import mlflow.pytorch
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from torch import nn

from nn_models.registry import CHAMPION, RegistryUnavailable, alias_missing, version_by_alias
from nn_models.tasks import TASKS, get_task

log = logging.getLogger(__name__)


class _Measured:
    """Holdout numbers recorded at registration, read from a version's tags."""

    tags: dict[str, str]

    def _tagged(self, prefix: str) -> dict[str, float]:
        out = {}
        for key, value in self.tags.items():
            if key.startswith(prefix):
                try:
                    out[key[len(prefix) :]] = float(value)
                except ValueError:
                    continue
        return out

    @property
    def metrics(self) -> dict[str, float]:
        """Holdout metrics recorded at registration (``metric.*`` version tags)."""
        return self._tagged("metric.")

    @property
    def baseline_metrics(self) -> dict[str, float]:
        """The baselines' metrics on the same holdout (``baseline.*`` version tags)."""
        return self._tagged("baseline.")


@dataclass
class VersionCard(_Measured):
    """What was measured for one registered version, without its weights: the numbers a
    row scored by an earlier champion is judged by (not today's champion's)."""

    task: str
    registered_model: str
    version: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadedModel(_Measured):
    """A champion ready to score: ``run(**arrays) -> tuple of arrays``."""

    task: str
    registered_model: str
    version: str
    module: nn.Module
    backend: str = "torch"
    backend_reason: str = "no parity-checked ONNX export"
    tags: dict[str, str] = field(default_factory=dict)
    onnx_run: Callable[..., tuple[np.ndarray, ...]] | None = None
    tracking_uri: str | None = None

    def card(self, version: str) -> _Measured:
        """The measured numbers of ``version`` of this registered model (itself when it is
        this version). A version gone from the registry has no numbers (empty tags);
        a registry that cannot be read raises ``RegistryUnavailable``."""
        if str(version) == self.version:
            return self
        if self.tracking_uri is None:
            raise RegistryUnavailable(f"no registry to read {self.registered_model} v{version}")
        return _card(self.tracking_uri, self.task, self.registered_model, str(version))

    def run(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.onnx_run is not None:
            return self.onnx_run(**arrays)
        return self.run_torch(**arrays)

    @torch.inference_mode()
    def run_torch(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        out = self.module(**{k: torch.as_tensor(v) for k, v in arrays.items()})
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(o.detach().cpu().numpy() for o in outs)


@functools.lru_cache(maxsize=256)
def _card(tracking_uri: str, task: str, registered_model: str, version: str) -> VersionCard:
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        found = client.get_model_version(registered_model, version)
    except MlflowException as exc:
        if alias_missing(exc):
            return VersionCard(task, registered_model, version)
        raise RegistryUnavailable(
            f"registry could not be read for {registered_model} v{version} ({exc.error_code}): {exc.message}"
        ) from exc
    return VersionCard(task, registered_model, version, dict(found.tags or {}))


def load_champion(tracking_uri: str, task_name: str) -> LoadedModel | None:
    """The task's current champion, or None when no version has earned the alias.

    A registry that cannot be read raises ``RegistryUnavailable`` (never None): a
    caller that took it for "no champion" would serve or write baseline-only results.
    """
    task = get_task(task_name)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    version = version_by_alias(client, task.registered_model, CHAMPION)
    if version is None:
        return None
    module = mlflow.pytorch.load_model(
        f"models:/{task.registered_model}/{version.version}", map_location="cpu"
    )
    module.eval()
    loaded = LoadedModel(
        task=task_name,
        registered_model=task.registered_model,
        version=str(version.version),
        module=module,
        tags=dict(version.tags or {}),
        tracking_uri=tracking_uri,
    )
    _attach_onnx(loaded, client, version)
    return loaded


def _attach_onnx(loaded: LoadedModel, client: MlflowClient, version) -> None:
    """Use the version's ONNX export when registration verified its parity."""
    if loaded.tags.get("onnx_parity") != "passed":
        loaded.backend_reason = loaded.tags.get("onnx_reason", "no parity-checked ONNX export")
        return
    try:
        from nn_models.onnx_export import onnx_runner

        path = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="onnx/model.onnx")
        loaded.onnx_run = onnx_runner(path)
        loaded.backend, loaded.backend_reason = "onnx", "parity-checked at registration"
    except Exception as exc:  # never fail scoring because the fast path is unavailable
        log.warning("ONNX runtime unavailable for %s v%s: %s", loaded.task, loaded.version, exc)
        loaded.backend_reason = f"ONNX load failed: {exc}"


def load_champions(tracking_uri: str) -> dict[str, LoadedModel | None]:
    return {name: load_champion(tracking_uri, name) for name in TASKS}
