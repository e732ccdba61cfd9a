"""Scale-out configuration loads, and the published Parquet layout works on a local path."""

from pathlib import Path

import duckdb
import pytest
import yaml

from resources.settings import load_settings
from warehouse.publish import open_reader, publish_table

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_instance_config_is_valid_dagster_config(monkeypatch, tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    for var in (
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB",
        "DAGSTER_K8S_NAMESPACE",
        "PULSE_BUCKET",
    ):
        monkeypatch.setenv(var, "x")
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "instance" / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert "postgres" in config["storage"]
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_kubernetes_files_parse_and_env_resolves_to_remote_backends():
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert "channel_assets.definitions" in deployment["dagsterApiGrpcArgs"]
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "channel-pulse-env.yaml").read_text()))
    env = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    settings = load_settings(env)
    assert settings.mlflow_uri.startswith("postgresql://")
    assert settings.mlflow_artifacts.startswith("s3://")
    assert settings.optuna_uri.startswith("postgresql://")
    assert settings.parquet_uri.startswith("s3://")
    assert settings.source == "landing"
    yaml.safe_load((DEPLOY / "k8s" / "mlflow.yaml").read_text())


def test_local_defaults_stay_on_one_machine(tmp_path):
    settings = load_settings({"PULSE_DATA_DIR": str(tmp_path)})
    assert settings.mlflow_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.parquet_uri == str(tmp_path / "published")


def test_parquet_layout_round_trips_on_a_local_path(tmp_path):
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA forecasts")
    conn.execute(
        "CREATE TABLE forecasts.channel_insights AS "
        "SELECT range AS channel_id, range * 0.5 AS confidence FROM range(10)"
    )
    path = publish_table(conn, str(tmp_path), "forecasts", "channel_insights")
    assert path == str(tmp_path / "forecasts" / "channel_insights.parquet")
    reader = open_reader(str(tmp_path))
    assert reader.execute("SELECT sum(confidence) FROM forecasts.channel_insights").fetchall()[0][
        0
    ] == pytest.approx(22.5)
    conn.execute("UPDATE forecasts.channel_insights SET confidence = 1")
    publish_table(conn, str(tmp_path), "forecasts", "channel_insights")
    # the same reader sees the new version: views read the file at query time
    assert reader.execute("SELECT sum(confidence) FROM forecasts.channel_insights").fetchall()[0][
        0
    ] == pytest.approx(10.0)
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.link"))
