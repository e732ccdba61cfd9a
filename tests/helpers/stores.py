"""MLflow/Optuna stores for the stress tests, without paying MLflow's migrations each time.

Creating an MLflow SQLite database runs its Alembic migrations, ~10 s on a busy
2-core machine. Each test gets a *copy* of one migrated, empty database made
once per process, so every test still starts from a fresh, private registry.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_template: Path | None = None


def _template_db() -> Path:
    global _template
    if _template is None:
        from mlflow import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="pulse-mlflow-template-"))
        atexit.register(shutil.rmtree, folder, True)
        db = folder / "mlflow.db"
        MlflowClient(f"sqlite:///{db}").search_experiments()  # creates + migrates the schema
        _template = db
    return _template


def fresh_stores(folder: Path) -> dict[str, str]:
    """``tracking_uri``/``artifact_root``/``optuna_uri`` for ``train_and_register`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template_db(), folder / "mlflow.db")
    return {
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
        "artifact_root": str(folder / "artifacts"),
        "optuna_uri": f"sqlite:///{folder / 'optuna.db'}",
    }
