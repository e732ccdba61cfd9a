"""`make run`'s entry point end to end on a user's kind of data (tiny sizes).

- A landing folder with no truth tables: every model trains (passing or failing its
  gates) or is skipped with a reason, and all eight forecast tables are filled, each
  row saying whether a model or a baseline served it.
- A failed gate is news, not a crash: the entry point returns 0, the champion stays,
  the forecasts refresh from it, and the check is recorded failed with its numbers.
- An exception in a feature asset is an error: the entry point returns non-zero.
- The console shows one line per step and the closing tables; no DEBUG event, no warning.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import duckdb
import pytest
from mlflow import MlflowClient

from nn_models.forecasts import FORECASTS
from nn_models.registry import CHAMPION, version_by_alias
from nn_models.task import Gate
from nn_models.tasks.engagement import EngagementTask
from warehouse import synthetic
from warehouse.synthetic_landing import write_landing

MODELS = ("engagement", "growth", "content", "viral", "behavior", "schedule")


def _entry_point():
    """scripts/run_pipeline.py, `make run`'s entry point."""
    from scripts import run_pipeline

    return run_pipeline


def _run(monkeypatch, data_dir: Path, **env: str) -> int:
    """`make run` with PULSE_* pointed at ``data_dir`` (tiny profile, CPU)."""
    settings = {
        "PULSE_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(data_dir / "dagster_home"),
        "PULSE_SIZE": "tiny",
        "PULSE_PROFILE": "tiny",
        "PULSE_DEVICE": "cpu",
        **env,
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    return _entry_point().main()


def _forced(passed: bool):
    """A test double for a task's gates: the card and the baseline rule, verdict fixed."""

    def gates(self, metrics, baseline):
        value = 1.0 if passed else -1.0
        return [
            Gate("forced_card", passed, value, 0.0, "test double: verdict fixed"),
            Gate(
                "forced_by_test",
                passed,
                value,
                0.0,
                "test double: verdict fixed",
                kind="baseline",
                lo=value,
                hi=value,
            ),
        ]

    return gates


def _sources(path: Path) -> dict[str, dict[str | None, int]]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for table in FORECASTS:
            rows = conn.execute(f"SELECT source, count(*) FROM forecasts.{table} GROUP BY ALL")
            out[table] = dict(rows.fetchall())
        return out
    finally:
        conn.close()


@pytest.fixture(scope="module")
def landing_run(tmp_path_factory):
    """A 3-channel, 30-day world as landing files (no truth, a third of the users seen);
    run once with engagement forced to pass, then again with it forced to fail."""
    data_dir = tmp_path_factory.mktemp("landing_world")
    cfg = dataclasses.replace(synthetic.SIZES["tiny"], seed=11)
    write_landing(cfg, data_dir / "landing", interaction_user_share=0.35)
    mp = pytest.MonkeyPatch()
    try:
        # in one process: the patched gates must reach the step
        mp.setattr(EngagementTask, "gates", _forced(True))
        first = _run(mp, data_dir, PULSE_SOURCE="landing", PULSE_EXECUTOR="in_process")
        first_sources = _sources(data_dir / "warehouse.duckdb")
        mp.setattr(EngagementTask, "gates", _forced(False))
        second = _run(mp, data_dir, PULSE_SOURCE="landing", PULSE_EXECUTOR="in_process")
        second_sources = _sources(data_dir / "warehouse.duckdb")
    finally:
        mp.undo()
    return {"dir": data_dir, "rc": (first, second), "sources": (first_sources, second_sources)}


def test_landing_only_world_fills_every_forecast(landing_run):
    assert landing_run["rc"][0] == 0
    conn = duckdb.connect(str(landing_run["dir"] / "warehouse.duckdb"), read_only=True)
    truth = conn.execute(
        "SELECT table_name, estimated_size FROM duckdb_tables() WHERE schema_name = 'truth'"
    ).fetchall()
    conn.close()
    assert all(rows == 0 for _, rows in truth), truth  # a user's data has no ground truth
    for table, by_source in landing_run["sources"][0].items():
        assert sum(by_source.values()) > 0, f"forecasts.{table} is empty"
        assert set(by_source) <= {"model", "baseline"}, (table, by_source)


def test_a_failed_gate_keeps_the_champion_and_refreshes_forecasts(landing_run):
    data_dir = landing_run["dir"]
    assert landing_run["rc"] == (0, 0)
    client = MlflowClient(f"sqlite:///{data_dir / 'mlflow.db'}")
    name = EngagementTask.registered_model
    champion = version_by_alias(client, name, CHAMPION)
    versions = client.search_model_versions(f"name = '{name}'")
    assert champion is not None and str(champion.version) == "1"
    assert len(versions) == 2  # the losing version is registered, not promoted
    # the engagement forecasts were rewritten in the second run, still from v1
    conn = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    rows = conn.execute(
        "SELECT DISTINCT source, model_version FROM forecasts.post_engagement_forecasts"
    ).fetchall()
    conn.close()
    assert rows == [("model", "1")]


def test_failed_check_is_recorded_with_its_numbers(landing_run):
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(landing_run["dir"] / "dagster_home"))
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("engagement_model"), "not_worse_than_baseline")]
    )
    record = next(iter(records.values()))
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.passed is False
    assert evaluation.metadata["forced_by_test"].value == -1.0


def test_an_exception_in_a_feature_asset_is_an_error(tmp_path, monkeypatch):
    from warehouse import features

    original = features.build_feature_table

    def broken(conn, name):
        if name == "post_features":
            raise RuntimeError("injected by the test")
        return original(conn, name)

    monkeypatch.setattr(features, "build_feature_table", broken)
    assert _run(monkeypatch, tmp_path, PULSE_EXECUTOR="in_process") != 0


def test_sixty_day_world_every_model_trains_or_says_why(tmp_path, monkeypatch, capfd):
    """Weeks, not half-years, of history: growth trains from 60 days, every model either
    registers a version with its gates or is skipped with the reason, and every forecast
    table is filled with its source on every row. Run as `make run` runs it: steps in
    parallel processes."""
    cfg = synthetic.SyntheticConfig(n_channels=3, n_days=60, n_users=300, posts_per_day=3.0, seed=23)
    write_landing(cfg, tmp_path / "landing")
    runner = _entry_point()
    captured = {}
    execute = runner.execute

    def keep(settings):
        captured["result"] = execute(settings)
        return captured["result"]

    monkeypatch.setattr(runner, "execute", keep)
    assert _run(monkeypatch, tmp_path, PULSE_SOURCE="landing") == 0
    outcomes = runner.model_outcomes(captured["result"], [f"{m}_model" for m in MODELS])
    for outcome in outcomes:
        assert outcome.status in ("registered", "skipped"), outcome
        assert outcome.reason, outcome  # promoted-or-not, or skipped, says why
    assert next(o for o in outcomes if o.asset == "growth_model").status == "registered"
    for table, by_source in _sources(tmp_path / "warehouse.duckdb").items():
        assert sum(by_source.values()) > 0, f"forecasts.{table} is empty"
        assert set(by_source) <= {"model", "baseline"}, (table, by_source)
    # the console (this process and every step process): step lines and the closing tables
    console = capfd.readouterr()
    text = console.out + console.err
    assert " - DEBUG - " not in text
    assert not re.search(r"\w+Warning: ", text), re.findall(r".*\w+Warning: .*", text)[:5]
    assert re.search(r"^  growth_model +[0-9.]+ s  v1 ", console.out, re.M), console.out
    assert "Models (holdout" in console.out and "Forecast tables" in console.out
    assert "DEBUG" in (tmp_path / "logs" / "pulse.log").read_text()  # the full log is in the file
