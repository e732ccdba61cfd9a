"""MLflow registry helpers: aliases ``challenger`` / ``champion`` (stages are deprecated).

"No champion" and "the registry could not be read" are different answers: the
first lets a first version be promoted and the forecasts fall back to baselines,
the second must stop both (a busy SQLite registry says "database is locked" for a
moment; treating that as "no champion" would promote blindly and rescore every
forecast from baselines). So only MLflow's own "not found" answers mean None here;
every other registry error is raised as ``RegistryUnavailable``.
"""

from __future__ import annotations

import re

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

CHAMPION = "champion"
CHALLENGER = "challenger"

# MLflow's SQL and file stores answer a missing alias with INVALID_PARAMETER_VALUE
# "Registered model alias <alias> not found." (mlflow.store.model_registry); a missing
# registered model is RESOURCE_DOES_NOT_EXIST.
_ALIAS_NOT_FOUND = re.compile(r"alias .+ not found", re.IGNORECASE)


class RegistryUnavailable(RuntimeError):
    """The registry could not answer; callers must fail (and retry), not assume no champion."""


def alias_missing(exc: MlflowException) -> bool:
    """Whether an MLflow error means "this model or alias does not exist" and nothing else."""
    code = exc.error_code
    if code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
        return True
    return code == ErrorCode.Name(INVALID_PARAMETER_VALUE) and bool(_ALIAS_NOT_FOUND.search(exc.message))


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``; None only when the model or alias does not exist.

    Raises ``RegistryUnavailable`` for any other registry error (locked, unreachable, ...).
    """
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if alias_missing(exc):
            return None
        raise RegistryUnavailable(
            f"registry could not be read for {name}@{alias} ({exc.error_code}): {exc.message}"
        ) from exc


def champion_uri(name: str) -> str:
    return f"models:/{name}@{CHAMPION}"
