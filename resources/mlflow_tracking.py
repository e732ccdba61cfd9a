"""MLflow tracking + registry (SQLite backend, artifacts under the data dir) and Optuna storage.

Why not ``dagster-mlflow``'s ``mlflow_tracking``: it is a legacy config-schema
resource that opens one MLflow run per Dagster run (looked up by run-id tag) and
ends it with an op hook. Our six model assets each need their own MLflow run with
nested Optuna trials, possibly in separate processes, so we wrap ``MlflowClient``
in this small ``ConfigurableResource`` instead (README: "MLflow").

Steps run in parallel processes: on a fresh data dir two of them would create (migrate)
the same SQLite databases at once and one would fail, so each step opens both stores
under a file lock first (``setup_for_execution``); afterwards that is a version check.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import dagster as dg
import optuna
from mlflow import MlflowClient

from nn_models.registry import CHAMPION, version_by_alias


class MlflowTracking(dg.ConfigurableResource):
    """Where runs, registered models and Optuna studies live."""

    tracking_uri: str
    artifact_root: str
    optuna_uri: str
    experiment: str = "channel_pulse"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        sqlite_files = [
            Path(uri.removeprefix("sqlite:///"))
            for uri in (self.tracking_uri, self.optuna_uri)
            if uri.startswith("sqlite:///")
        ]
        if not sqlite_files:
            return  # a database server migrates under its own locks
        lock = sqlite_files[0].with_name(".stores.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            self.client().search_experiments(max_results=1)  # creates / migrates the tables
            optuna.storages.RDBStorage(self.optuna_uri)

    def client(self) -> MlflowClient:
        if "://" not in self.artifact_root:
            Path(self.artifact_root).mkdir(parents=True, exist_ok=True)
        return MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)

    def champion_version(self, registered_model: str) -> str | None:
        found = version_by_alias(self.client(), registered_model, CHAMPION)
        return found.version if found else None

    def run_url(self, run_id: str) -> str:
        """Where the run is in `mlflow ui` (started by `make dev` on port 5000)."""
        exp = self.client().get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp else "0"
        return f"http://localhost:5000/#/experiments/{exp_id}/runs/{run_id}"
