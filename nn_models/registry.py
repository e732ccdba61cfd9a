"""MLflow registry helpers: aliases ``challenger`` / ``champion`` (stages are deprecated)."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def champion_uri(name: str) -> str:
    return f"models:/{name}@{CHAMPION}"
