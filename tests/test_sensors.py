"""Sensors and automation: new files start ingestion once per event, a champion change
(rollback included) rescores, and what the README calls automatic is on by default."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from channel_assets.definitions import build_definitions
from channel_assets.sensors import champion_sensor, landing_sensor
from resources.data_source import ChannelDataSource
from resources.mlflow_tracking import MlflowTracking


def _tick(folder, cursor=None):
    context = dg.build_sensor_context(
        cursor=cursor, resources={"data_source": ChannelDataSource(source="landing", landing_dir=str(folder))}
    )
    return landing_sensor(context)


def test_new_file_requests_one_run_and_advances_cursor(tmp_path):
    (tmp_path / "posts.csv").write_text("channel_id,post_id,published_at\n1,1,2026-01-01\n")
    (tmp_path / "notes.txt").write_text("ignored")
    result = _tick(tmp_path)
    assert isinstance(result, dg.SensorResult)
    assert len(result.run_requests) == 1
    cursor = json.loads(result.cursor)
    assert list(cursor["files"]) == [str(tmp_path / "posts.csv")]

    again = _tick(tmp_path, result.cursor)
    assert isinstance(again, dg.SkipReason)


def test_changed_or_added_file_requests_a_new_run_key(tmp_path):
    posts = tmp_path / "posts.csv"
    posts.write_text("channel_id,post_id,published_at\n1,1,2026-01-01\n")
    first = _tick(tmp_path)
    posts.write_text("channel_id,post_id,published_at\n1,1,2026-01-01\n1,2,2026-01-02\n")
    (tmp_path / "post_snapshots_2.parquet").write_bytes(b"not yet parsed by the sensor")
    second = _tick(tmp_path, first.cursor)
    assert len(second.run_requests) == 1
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    assert len(json.loads(second.cursor)["files"]) == 2


def test_missing_folder_skips(tmp_path):
    result = _tick(tmp_path / "absent")
    assert isinstance(result, dg.SkipReason)


# ------------------------------------------------------------------ run keys are unique per event
def test_file_changed_back_to_earlier_content_is_loaded_again(tmp_path):
    posts = tmp_path / "posts.csv"
    a = "channel_id,post_id,published_at\n1,1,2026-01-01\n"
    b = "channel_id,post_id,published_at\n1,1,2026-01-01\n1,2,2026-01-02\n"
    keys, cursor = [], None
    for content in (a, b, a):
        posts.write_text(content)
        result = _tick(tmp_path, cursor)
        assert isinstance(result, dg.SensorResult), result
        assert len(result.run_requests) == 1
        # a retried tick (same cursor, same files) asks for the same run: Dagster dedupes it
        assert _tick(tmp_path, cursor).run_requests[0].run_key == result.run_requests[0].run_key
        keys.append(result.run_requests[0].run_key)
        cursor = result.cursor
    assert len(set(keys)) == 3, keys  # A → B → A: the third is a new event
    assert isinstance(_tick(tmp_path, cursor), dg.SkipReason)


def _tracking(tmp_path) -> MlflowTracking:
    return MlflowTracking(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=str(tmp_path / "art"),
        optuna_uri=f"sqlite:///{tmp_path / 'optuna.db'}",
    )


def _champion_tick(tracking: MlflowTracking, cursor=None):
    return champion_sensor(dg.build_sensor_context(cursor=cursor, resources={"mlflow_tracking": tracking}))


def test_rollback_to_an_earlier_champion_set_rescores(tmp_path):
    tracking = _tracking(tmp_path)
    client = tracking.client()
    name = "channel_pulse_engagement"
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source=str(tmp_path / "model"))
    keys, cursor = [], None
    for version in ("1", "2", "1"):  # promote v1, v2, then roll back to v1
        client.set_registered_model_alias(name, "champion", version)
        result = _champion_tick(tracking, cursor)
        assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1, result
        keys.append(result.run_requests[0].run_key)
        cursor = result.cursor
    assert len(set(keys)) == 3, keys
    assert isinstance(_champion_tick(tracking, cursor), dg.SkipReason)


def test_champion_sensor_keeps_its_cursor_when_the_registry_is_locked(tmp_path, monkeypatch):
    tracking = _tracking(tmp_path)
    client = tracking.client()
    client.create_registered_model("channel_pulse_engagement")
    client.create_model_version("channel_pulse_engagement", source=str(tmp_path / "model"))
    client.set_registered_model_alias("channel_pulse_engagement", "champion", "1")
    first = _champion_tick(tracking)

    def locked(self, name, alias):
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", locked)
    during = _champion_tick(tracking, first.cursor)
    assert isinstance(during, dg.SkipReason) and "registry" in during.skip_message
    monkeypatch.undo()
    after = _champion_tick(tracking, first.cursor)  # outage over: nothing changed, no rescore
    assert isinstance(after, dg.SkipReason)


# ------------------------------------------------------------------ automatic means on by default
def test_what_the_readme_calls_automatic_runs_by_default(tiny_settings):
    repo = build_definitions(tiny_settings).get_repository_def()
    running = dg.DefaultSensorStatus.RUNNING
    sensors = {s.name: s for s in repo.sensor_defs}
    for name in ("landing_sensor", "champion_sensor", "alerts_sensor", "drift_retrain_sensor"):
        assert sensors[name].default_status == running, name
    schedules = {s.name: s for s in repo.schedule_defs}
    for name in ("weekly_retrain_schedule", "daily_forecasts_schedule"):
        assert schedules[name].default_status == dg.DefaultScheduleStatus.RUNNING, name
    # every asset with an automation condition is evaluated by a sensor that is running
    automation = [s for s in repo.sensor_defs if isinstance(s, dg.AutomationConditionSensorDefinition)]
    assert automation and all(s.default_status == running for s in automation), [
        (s.name, s.default_status) for s in automation
    ]
    graph = repo.asset_graph
    automated = {k for k in graph.get_all_asset_keys() if graph.get(k).automation_condition is not None}
    assert dg.AssetKey("feature_drift") in automated
    covered = set().union(*(s.asset_selection.resolve(graph) for s in automation))
    assert automated <= covered, automated - covered


def test_feature_drift_runs_by_itself_after_new_features(tiny_settings):
    """Once a day (04:00 UTC), when post_features were updated since the last tick."""
    defs = build_definitions(tiny_settings)
    instance = dg.DagsterInstance.ephemeral()
    drift = dg.AssetSelection.assets("feature_drift")
    now = datetime.now(UTC)
    before_last_tick = now - timedelta(days=1, hours=1)
    first = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=drift, evaluation_time=before_last_tick
    )
    assert first.total_requested == 0
    instance.report_runless_asset_event(dg.AssetMaterialization("post_features"))
    second = dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        asset_selection=drift,
        cursor=first.cursor,
        evaluation_time=now + timedelta(seconds=1),
    )
    assert second.get_requested_partitions(dg.AssetKey("feature_drift")) == {None}
    third = dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        asset_selection=drift,
        cursor=second.cursor,
        evaluation_time=now + timedelta(seconds=2),
    )
    assert third.total_requested == 0  # once per tick, not every evaluation
