"""DeepLearningService's champion set: swapped whole or not at all, kept through a registry
outage, and insight confidence judged by the version that scored the rows.

A real registry: a toy network trained once and registered under the engagement and
growth model names (the service loads whatever the alias points at), so every load,
alias move and artifact failure here is MLflow's own.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from api.app import create_app
from nn_models.champions import load_champion
from nn_models.device import choose_device
from nn_models.forecasts.insights import insights, skill
from nn_models.pipeline import train_and_register
from nn_models.service import DeepLearningService, ModelUnavailable
from nn_models.task import PROFILES
from nn_models.tasks import get_task
from tests.helpers.stores import fresh_stores
from tests.toy_task import ToyTask, toy_data

ENGAGEMENT, GROWTH = get_task("engagement").registered_model, get_task("growth").registered_model
LOCKED = "(sqlite3.OperationalError) database is locked"


@pytest.fixture
def registry(tmp_path):
    stores = fresh_stores(tmp_path / "stores")
    toy = train_and_register(
        ToyTask(toy_data()),
        data=toy_data(),
        choice=choose_device("cpu"),
        profile=PROFILES["tiny"],
        seed=1,
        **stores,
    )
    client = MlflowClient(stores["tracking_uri"], registry_uri=stores["tracking_uri"])
    source = f"models:/toy_model/{toy.version}"
    for name in (ENGAGEMENT, GROWTH):
        version = client.copy_model_version(source, name).version
        client.set_registered_model_alias(name, "champion", version)
    return {"stores": stores, "client": client, "source": source, "tmp": tmp_path}


def _versions(champions) -> dict[str, str | None]:
    return {
        name: (model.version if model else None)
        for name, model in champions.items()
        if name in ("engagement", "growth")
    }


def _promote(client: MlflowClient, name: str, source: str) -> str:
    version = client.copy_model_version(source, name).version
    client.set_registered_model_alias(name, "champion", version)
    return str(version)


def test_a_failed_load_keeps_the_whole_old_set_never_a_mix(registry):
    client, source = registry["client"], registry["source"]
    service = DeepLearningService(
        registry["stores"]["tracking_uri"], str(registry["tmp"]), refresh_seconds=0.0
    )
    first = service.champions()
    assert _versions(first) == {"engagement": "1", "growth": "1"}

    # both move; growth's new version has no artifacts, so it cannot be loaded
    _promote(client, ENGAGEMENT, source)
    broken = client.create_model_version(GROWTH, source=str(registry["tmp"] / "gone"))
    client.set_registered_model_alias(GROWTH, "champion", broken.version)
    second = service.champions()
    assert _versions(second) == {"engagement": "1", "growth": "1"}  # old set, not 2 + 1
    assert second is first
    assert "growth v2" in service.last_refresh_error

    # growth is fixed: the next refresh swaps both at once
    fixed = _promote(client, GROWTH, source)
    third = service.champions()
    assert _versions(third) == {"engagement": "2", "growth": fixed}
    assert service.last_refresh_error is None


def test_an_unreadable_registry_keeps_the_current_set(registry, monkeypatch):
    service = DeepLearningService(
        registry["stores"]["tracking_uri"], str(registry["tmp"]), refresh_seconds=0.0
    )
    loaded = service.champions()
    assert _versions(loaded) == {"engagement": "1", "growth": "1"}

    def locked(self, name, alias):
        raise MlflowException(LOCKED, error_code="TEMPORARILY_UNAVAILABLE")

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", locked)
    # not "no champion anywhere" (which would serve every answer from baselines)
    assert service.champions() is loaded
    assert service.model_versions()["engagement"]["version"] == "1"
    assert "locked" in service.last_refresh_error

    # a service that never read the registry has no set to keep: 503 with the reason
    fresh = DeepLearningService(registry["stores"]["tracking_uri"], str(registry["tmp"]), refresh_seconds=0.0)
    with pytest.raises(ModelUnavailable, match="locked"):
        fresh.champions()
    response = TestClient(create_app(fresh), raise_server_exceptions=False).get("/models")
    assert response.status_code == 503 and "locked" in response.json()["detail"]


def test_insight_confidence_comes_from_the_version_that_scored_the_rows(registry):
    client, source = registry["client"], registry["source"]
    primary = get_task("engagement").primary_metric
    client.set_model_version_tag(ENGAGEMENT, "1", f"metric.{primary}", "0.9")
    newer = _promote(client, ENGAGEMENT, source)
    client.set_model_version_tag(ENGAGEMENT, newer, f"metric.{primary}", "0.6")
    champion = load_champion(registry["stores"]["tracking_uri"], "engagement")
    assert champion.version == newer

    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA forecasts")
    rows = pd.DataFrame(
        {  # scored by version 1, before version 2 became champion
            "channel_id": [7, 7],
            "post_id": [1, 2],
            "hours_observed": [3.0, 3.0],
            "engagement_score": [0.7, 0.4],
            "predicted_views_48h": [120.0, 80.0],
            "views_48h_lo": [90.0, 60.0],
            "views_48h_hi": [150.0, 100.0],
            "source": ["model", "model"],
            "fallback_reason": [None, None],
            "model_version": ["1", "1"],
        }
    )
    conn.register("scored", rows)
    conn.execute("CREATE TABLE forecasts.post_engagement_forecasts AS SELECT * FROM scored")
    doc = insights(conn, {"engagement": champion}, 7)
    assert doc["confidence"]["engagement"] == pytest.approx(skill(primary, 0.9))
    assert doc["confidence"]["engagement"] != pytest.approx(skill(primary, 0.6))

    # rows of the current champion are judged by its own numbers
    conn.execute("UPDATE forecasts.post_engagement_forecasts SET model_version = ?", [newer])
    again = insights(conn, {"engagement": champion}, 7)
    assert again["confidence"]["engagement"] == pytest.approx(skill(primary, 0.6))
