"""Drift: a stationary world passes; a shifted one is flagged and requests retraining;
an unreadable registry fails the report."""

import dagster as dg
import duckdb
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from channel_assets.drift import drift_retrain_sensor, feature_drift
from resources.mlflow_tracking import MlflowTracking
from resources.warehouse import DuckDBWarehouse
from warehouse import features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame


def _warehouse(path, shift: bool) -> None:
    conn = duckdb.connect(str(path))
    ensure_schema(conn)
    world = synthetic.generate(synthetic.config_for("tiny", seed=3))
    for name, frame in world.tables().items():
        upsert_frame(conn, name, frame)
    if shift:  # the last 14 days: 8× the views and a third of the forwards (a changed audience)
        conn.execute("""
            UPDATE raw.post_snapshots s SET views = views * 8, forwards = forwards // 3
            FROM raw.posts p
            WHERE p.channel_id = s.channel_id AND p.post_id = s.post_id
              AND p.published_at >= (SELECT max(published_at) FROM raw.posts) - INTERVAL 14 DAY
        """)
    for name in ("post_trajectories", "post_features"):
        features.build_feature_table(conn, name)
    conn.close()


@pytest.mark.parametrize("shift", [False, True])
def test_drift_report_and_retraining_request(tmp_path, shift):
    _warehouse(tmp_path / "w.duckdb", shift)
    instance = dg.DagsterInstance.ephemeral()
    resources = {
        "warehouse": DuckDBWarehouse(path=str(tmp_path / "w.duckdb")),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
            artifact_root=str(tmp_path / "art"),
            optuna_uri=f"sqlite:///{tmp_path / 'o.db'}",
        ),
    }
    result = dg.materialize([feature_drift], resources=resources, instance=instance)
    assert result.success
    meta = result.asset_materializations_for_node("feature_drift")[0].metadata
    assert meta["drift_detected"].value is shift
    check = result.get_asset_check_evaluations()[0]
    assert check.passed is (not shift)

    tick = drift_retrain_sensor(dg.build_sensor_context(instance=instance))
    assert len(tick.run_requests) == (1 if shift else 0)
    again = drift_retrain_sensor(dg.build_sensor_context(instance=instance, cursor=tick.cursor))
    assert isinstance(again, dg.SkipReason)


def test_locked_registry_fails_the_drift_report_instead_of_guessing_the_window(tmp_path, monkeypatch):
    """Without the champion's cutoff the reference window would silently change."""
    _warehouse(tmp_path / "w.duckdb", shift=False)

    def locked(self, name, alias):
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", locked)
    resources = {
        "warehouse": DuckDBWarehouse(path=str(tmp_path / "w.duckdb")),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
            artifact_root=str(tmp_path / "art"),
            optuna_uri=f"sqlite:///{tmp_path / 'o.db'}",
        ),
    }
    result = dg.materialize([feature_drift], resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "RegistryUnavailable" in str(failure.event_specific_data.error)
