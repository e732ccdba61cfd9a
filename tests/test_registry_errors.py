"""A registry that cannot be read is an outage, not "no champion".

Only "alias not found" (or a registered model that does not exist yet) means there is
no champion. Any other registry error fails the caller: training never promotes
blindly, a forecast table is never replaced, and the forecast asset retries.
"""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import channel_assets.forecasts as forecast_defs
from nn_models.champions import load_champion
from nn_models.registry import RegistryUnavailable, version_by_alias
from resources.mlflow_tracking import MlflowTracking
from resources.warehouse import DuckDBWarehouse, PublishedTables
from tests.toy_task import ToyTask, run_toy, toy_data
from warehouse import features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame

LOCKED = "(sqlite3.OperationalError) database is locked"
_REAL_LOOKUP = MlflowClient.get_model_version_by_alias


def _lock_registry(
    monkeypatch,
    calls: list | None = None,
    message: str = LOCKED,
    code: str = "INTERNAL_ERROR",
    after: int = 0,
) -> None:
    """Alias lookups (after the first ``after``) fail the way a busy SQLite registry fails."""
    seen = []

    def locked(self, name, alias):
        seen.append((name, alias))
        if calls is not None:
            calls.append((name, alias))
        if len(seen) <= after:
            return _REAL_LOOKUP(self, name, alias)
        raise MlflowException(message, error_code=code)

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", locked)


def _champion(stores, name="toy_model") -> str:
    client = MlflowClient(stores["tracking_uri"], registry_uri=stores["tracking_uri"])
    return str(_REAL_LOOKUP(client, name, "champion").version)


# ------------------------------------------------------------------ what "no champion" means
def test_missing_model_or_alias_is_no_champion(stores):
    client = MlflowClient(stores["tracking_uri"], registry_uri=stores["tracking_uri"])
    assert version_by_alias(client, "never_registered", "champion") is None
    client.create_registered_model("registered_without_alias")
    assert version_by_alias(client, "registered_without_alias", "champion") is None


@pytest.mark.parametrize(
    "message, code",
    [
        (LOCKED, "INTERNAL_ERROR"),
        (LOCKED, "TEMPORARILY_UNAVAILABLE"),  # what MLflow's SQL store raises
        ("Invalid alias name 'champion'", "INVALID_PARAMETER_VALUE"),
    ],
)
def test_any_other_registry_error_is_an_outage(stores, monkeypatch, message, code):
    _lock_registry(monkeypatch, message=message, code=code)
    client = MlflowClient(stores["tracking_uri"], registry_uri=stores["tracking_uri"])
    with pytest.raises(RegistryUnavailable, match="could not be read"):
        version_by_alias(client, "toy_model", "champion")


def test_load_champion_fails_when_the_registry_is_locked(stores, monkeypatch):
    _lock_registry(monkeypatch)
    with pytest.raises(RegistryUnavailable):
        load_champion(stores["tracking_uri"], "engagement")


# ------------------------------------------------------------------ training never promotes blindly
@pytest.mark.parametrize("locked_after", [0, 1], ids=["before training", "after registering"])
def test_locked_registry_fails_training_and_never_promotes(stores, monkeypatch, locked_after):
    first = run_toy(ToyTask(toy_data()), stores)
    assert first.promoted
    _lock_registry(monkeypatch, after=locked_after)
    with pytest.raises(RegistryUnavailable):
        run_toy(ToyTask(toy_data(seed=1)), stores, seed=3)  # would pass every gate
    monkeypatch.undo()
    assert _champion(stores) == first.version
    client = MlflowClient(stores["tracking_uri"], registry_uri=stores["tracking_uri"])
    versions = client.search_model_versions("name = 'toy_model'")
    # failing fast registers nothing; failing late leaves an unpromoted challenger
    assert len(versions) == 1 + locked_after


@pytest.mark.parametrize("broken", ["load", "evaluate"])
def test_champion_that_cannot_be_evaluated_blocks_promotion(stores, monkeypatch, broken):
    first = run_toy(ToyTask(toy_data()), stores)
    task = ToyTask(toy_data(seed=1))
    if broken == "load":
        import nn_models.pipeline as pipeline

        def unloadable(*args, **kwargs):
            raise RuntimeError("size mismatch for net.0.weight")

        monkeypatch.setattr(pipeline.mlflow.pytorch, "load_model", unloadable)
    else:
        evaluate = ToyTask.evaluate

        def evaluate_new_only(model, data):
            if getattr(model, "_new", False):
                return evaluate(task, model, data)
            raise KeyError("holdout column 'x2' missing for the champion's inputs")

        task.evaluate = evaluate_new_only
        train = ToyTask.train

        def train_marked(params, data, choice, max_epochs, seed, on_epoch=None):
            result = train(task, params, data, choice, max_epochs, seed, on_epoch)
            result.model._new = True
            return result

        task.train = train_marked
    second = run_toy(task, stores, seed=3)
    assert second.gates_passed and second.status == "registered"
    assert not second.promoted
    assert f"champion v{first.version} could not be evaluated" in second.promotion_reason
    assert ("size mismatch" if broken == "load" else "x2") in second.promotion_reason
    assert second.champion_version == first.version
    assert _champion(stores) == first.version


# ------------------------------------------------------------------ forecast tables are kept
@pytest.fixture
def warehouse_path(tmp_path):
    path = tmp_path / "w.duckdb"
    conn = duckdb.connect(str(path))
    ensure_schema(conn)
    for name, frame in synthetic.generate(synthetic.config_for("tiny", seed=3)).tables().items():
        upsert_frame(conn, name, frame)
    for name in ("post_trajectories", "post_features", "posting_slot_features"):
        features.build_feature_table(conn, name)
    conn.execute("CREATE SCHEMA IF NOT EXISTS forecasts")
    conn.execute(
        "CREATE TABLE forecasts.posting_schedule_recommendations AS "
        "SELECT 7::BIGINT AS channel_id, 'scored yesterday' AS marker"
    )
    conn.close()
    return path


def test_forecast_table_unchanged_and_asset_retries_when_registry_locked(
    warehouse_path, tmp_path, stores, monkeypatch
):
    calls: list = []
    _lock_registry(monkeypatch, calls)
    monkeypatch.setattr(forecast_defs, "REGISTRY_RETRY_SECONDS", 0)
    asset = next(
        a for a in forecast_defs.forecast_assets if a.key.path[-1] == "posting_schedule_recommendations"
    )
    resources = {
        "warehouse": DuckDBWarehouse(path=str(warehouse_path)),
        "published": PublishedTables(root=str(tmp_path / "parquet")),
        "mlflow_tracking": MlflowTracking(**stores),
    }
    result = dg.materialize([asset], resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "could not be read" in str(failure.event_specific_data.error)
    assert len(calls) == 1 + forecast_defs.REGISTRY_RETRIES  # the step retried
    conn = duckdb.connect(str(warehouse_path), read_only=True)
    rows = conn.execute("SELECT * FROM forecasts.posting_schedule_recommendations").fetchall()
    conn.close()
    assert rows == [(7, "scored yesterday")]
    assert not (tmp_path / "parquet").exists()  # nothing published either
