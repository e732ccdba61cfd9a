"""Faults: SIGKILL in the middle of a warehouse write or of training, and run retries.

The child processes freeze at a precise point (inside the write's transaction
just before COMMIT; inside a tuning trial after its first epoch) and say so by
creating a file; the test then kills them with SIGKILL, so the crash point is
deterministic and no fixed sleep is involved.
"""

from __future__ import annotations

import copy
import json
import os
import signal as signals
import sqlite3
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import optuna
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from nn_models.device import DeviceChoice, choose_device
from nn_models.pipeline import train_and_register
from nn_models.task import PROFILES, Profile
from nn_models.training import TrainConfig, fit
from nn_models.tuning import finished_trials
from tests.helpers.kill_mid_write import FORECAST_ROWS
from tests.helpers.stores import fresh_stores
from tests.helpers.sync import output, signal, spawn, wait_for
from tests.toy_task import ToyRegressor, ToyTask, toy_data
from tests.toy_task import _loss as toy_loss
from warehouse.features import build_feature_table
from warehouse.forecast_tables import write_forecast
from warehouse.landing import load_landing
from warehouse.schema import RAW_TABLES, ensure_schema

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # generous: imports on a busy 2-core machine


def _kill9(proc: subprocess.Popen) -> str:
    """SIGKILL the child (if it still runs) and reap it; returns its output."""
    if proc.poll() is None:
        os.kill(proc.pid, signals.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    return output(proc)


def _rows(conn: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


# --------------------------------------------------------------------------- (a) warehouse


def _insert_posts(conn: duckdb.DuckDBPyConnection, first: int, n: int) -> None:
    """``n`` posts of channel 1 with 12 snapshots each (every 30 min, counters rising)."""
    conn.execute(
        """INSERT INTO raw.posts
        SELECT 1, i, TIMESTAMP '2026-01-01' + to_minutes(i), 'post ' || i, 'none'
        FROM range($first, $first + $n) t(i)""",
        {"first": first, "n": n},
    )
    conn.execute(
        """INSERT INTO raw.post_snapshots
        SELECT 1, i, TIMESTAMP '2026-01-01' + to_minutes(i + 30 * k), 10 * k, k, 0, 2 * k
        FROM range($first, $first + $n) t(i), range(1, 13) s(k)""",
        {"first": first, "n": n},
    )


def _setup_forecast(conn, tmp_path) -> tuple[list[str], list[str]]:
    frame = pd.DataFrame(
        {
            "channel_id": np.arange(1000) % 7,
            "post_id": np.arange(1000),
            "engagement_score": 0.5,
            "model_name": "crash_test",
            "model_version": "old",
        }
    )
    write_forecast(conn, "engagement_check", frame)
    return ["forecasts.engagement_check"], []


def _setup_feature(conn, tmp_path) -> tuple[list[str], list[str]]:
    ensure_schema(conn)
    _insert_posts(conn, 0, 200)
    build_feature_table(conn, "post_trajectories")  # the old table: 200 posts
    _insert_posts(conn, 200, 20_000)  # committed raw data for the rebuild
    return ["features.post_trajectories", "raw.posts", "raw.post_snapshots"], []


def _setup_landing(conn, tmp_path) -> tuple[list[str], list[str]]:
    old = tmp_path / "landing_old"
    old.mkdir()
    (old / "posts.csv").write_text(
        "channel_id,post_id,published_at,text,media_type\n"
        + "".join(f"1,{i},2026-01-01 00:00:00,old {i},photo\n" for i in range(100))
        + "1,x,2026-01-01 00:00:00,bad id,photo\n"
    )
    load_landing(conn, old)
    new = tmp_path / "landing_new"
    new.mkdir()
    n = 300_000
    pq.write_table(
        pa.table(
            {
                "channel_id": pa.array(np.full(n, 2), pa.int64()),
                "post_id": pa.array(np.arange(n), pa.int64()),
                "published_at": pa.array(np.full(n, np.datetime64("2026-02-01T00:00:00", "us"))),
                "text": pa.array([f"new {i}" for i in range(n)]),
                "media_type": pa.array(["video"] * n),
            }
        ),
        new / "posts_big.parquet",
    )
    (new / "posts_bad.csv").write_text(
        "channel_id,post_id,published_at,text,media_type\n2,-1,never,bad,gif\n"
    )
    return [f"raw.{t}" for t in (*RAW_TABLES, "quarantine")], [str(new)]


SETUPS = {"forecast": _setup_forecast, "feature": _setup_feature, "landing": _setup_landing}
NEW_ROWS_AT_LEAST = {"forecast": FORECAST_ROWS, "feature": 20_000 * 12, "landing": 300_000}


@pytest.mark.parametrize("mode", sorted(SETUPS))
def test_kill_9_inside_a_write_transaction_leaves_the_old_table(tmp_path, mode):
    """write_forecast / build_feature_table / load_landing, SIGKILLed after their big
    INSERT/CREATE and before COMMIT: the reopened warehouse holds the old content."""
    warehouse_path = tmp_path / "warehouse.duckdb"
    conn = duckdb.connect(str(warehouse_path))
    tables, args = SETUPS[mode](conn, tmp_path)
    before = {t: _rows(conn, t) for t in tables}
    conn.close()

    ready = tmp_path / "ready.json"
    child = spawn(
        "tests.helpers.kill_mid_write",
        mode,
        str(warehouse_path),
        str(ready),
        *args,
        log=tmp_path / "child.log",
    )
    try:
        wait_for(ready, TIMEOUT, child, f"{mode} writer")
    finally:
        out = _kill9(child)
    assert child.returncode == -signals.SIGKILL, out[-3000:]
    # the child really was mid-way: its open transaction already held the new rows
    assert json.loads(ready.read_text())["rows_in_open_transaction"] >= NEW_ROWS_AT_LEAST[mode]

    conn = duckdb.connect(str(warehouse_path))  # the next writer: replays the WAL, if any
    after = {t: _rows(conn, t) for t in tables}
    for table in tables:
        assert after[table] == before[table], f"{table} changed by a killed transaction"
    # and the file is healthy: the same write, done properly, commits
    write_forecast(conn, "after_crash", pd.DataFrame({"x": [1, 2, 3]}))
    assert conn.execute("SELECT sum(x) FROM forecasts.after_crash").fetchall() == [(6,)]
    conn.close()


# --------------------------------------------------------------------------- (b) training


def _registry(client: MlflowClient, name: str) -> dict:
    versions = client.search_model_versions(f"name = '{name}'")
    model = client.get_registered_model(name)
    return {
        "versions": sorted(
            (str(v.version), v.run_id, v.status, tuple(sorted(v.tags.items()))) for v in versions
        ),
        "aliases": {alias: str(version) for alias, version in model.aliases.items()},
    }


def test_kill_9_during_training_leaves_the_registry_and_the_study_resumes(tmp_path):
    """A champion exists; a second ``train_and_register`` is SIGKILLed inside tuning trial 1
    (trial 0 finished). The registry is exactly as before (versions, tags, aliases), and
    the next run resumes the Optuna study: trial 0 kept, the dead trial marked FAIL by
    ``open_study``, only the missing trials run, then it registers normally."""
    stores = fresh_stores(tmp_path / "stores")
    ready, go = tmp_path / "ready", tmp_path / "go"
    crash_profile = Profile("crash", n_trials=3, max_epochs=3, final_epochs=4)
    # the child imports (slow) while this process registers the champion
    child = spawn(
        "tests.helpers.train_until_killed",
        json.dumps(stores),
        str(ready),
        str(go),
        "2",
        str(crash_profile.n_trials),
        "2",  # seed 2, freeze in trial 1
        log=tmp_path / "child.log",
    )
    try:
        cpu = choose_device("cpu")
        champion = train_and_register(
            ToyTask(toy_data()), data=toy_data(), choice=cpu, profile=PROFILES["tiny"], seed=1, **stores
        )
        assert champion.promoted
        client = MlflowClient(stores["tracking_uri"])
        before = _registry(client, "toy_model")
        assert before["aliases"] == {"champion": champion.version, "challenger": champion.version}

        wait_for(ready, TIMEOUT, child, "training child")
        signal(go)
        wait_for(f"{ready}.training", TIMEOUT, child, "training child")
    finally:
        out = _kill9(child)
    assert child.returncode == -signals.SIGKILL, out[-3000:]

    # registry: no new version, aliases where they were (champion still the earlier one)
    assert _registry(client, "toy_model") == before

    study_name = f"toy-{toy_data().fingerprint()}-seed2"
    study = optuna.load_study(study_name=study_name, storage=stores["optuna_uri"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    kept = study.trials[0]

    # time passes: the dead trial's heartbeat ages past open_study's grace period (30 s)
    db = sqlite3.connect(stores["optuna_uri"].removeprefix("sqlite:///"))
    with db:
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-120 seconds')")
    db.close()

    resumed = train_and_register(
        ToyTask(toy_data()), data=toy_data(), choice=cpu, profile=crash_profile, seed=2, **stores
    )
    study = optuna.load_study(study_name=study_name, storage=stores["optuna_uri"])
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.COMPLETE, TrialState.FAIL]  # stale RUNNING → FAIL
    assert len(states) == 4 and set(states[2:]) <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert finished_trials(study) == crash_profile.n_trials
    first = study.trials[0]
    assert (first.params, first.value, first.datetime_complete) == (
        kept.params,
        kept.value,
        kept.datetime_complete,
    )  # the earlier trial is kept as is
    assert resumed.status == "registered" and resumed.n_trials == 4
    assert int(resumed.version) == int(champion.version) + 1
    after = _registry(client, "toy_model")
    assert len(after["versions"]) == 2
    assert after["aliases"]["challenger"] == resumed.version
    assert after["aliases"]["champion"] == (resumed.version if resumed.promoted else champion.version)


# --------------------------------------------------------------------------- (c) retries


def test_instance_config_retries_runs_and_limits_pools_to_one():
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    retries = config["run_retries"]
    assert retries["enabled"] is True
    assert retries["max_retries"] >= 1
    assert config["concurrency"]["pools"]["default_limit"] == 1  # one DuckDB writer at a time


# --------------------------------------------------------------------------- (d) GPU memory


class _FakeGpu(DeviceChoice):
    """A "cuda" choice whose tensors live on the CPU: the loop takes its GPU path."""

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cpu")


def test_out_of_memory_restarts_the_fit_on_cpu_from_the_initial_weights():
    """The fake GPU runs out of memory in the second epoch, after one epoch of updates.
    The fit restarts on CPU from the weights it was given (not the half-trained ones), so
    it equals a CPU-only fit of the same initial model, seed and data, bit for bit."""
    data = toy_data()
    train = {"x": data.train["x"], "y": data.train["y"]}
    val = {"x": data.val["x"], "y": data.val["y"]}
    cfg = TrainConfig(max_epochs=4, lr=1e-2, batch_size=32, patience=10, seed=3)
    torch.manual_seed(0)
    initial = ToyRegressor(8)
    reference = copy.deepcopy(initial)
    steps = {"gpu": 0}
    gpu_run = {"on": True}

    def loss_on_fake_gpu(model, batch):
        if model.training and gpu_run["on"]:
            steps["gpu"] += 1
            if steps["gpu"] > len(train["x"]) // cfg.batch_size + 2:  # into epoch 2
                gpu_run["on"] = False
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return toy_loss(model, batch)

    gpu = _FakeGpu("cuda", "fake GPU", mixed_precision=False, threads=1)
    result = fit(initial, train, val, loss_on_fake_gpu, cfg, gpu)
    assert steps["gpu"] > len(train["x"]) // cfg.batch_size  # the GPU run did train

    expected = fit(reference, train, val, toy_loss, cfg, choose_device("cpu", 1))
    assert result.val_losses == expected.val_losses
    for name, tensor in expected.model.state_dict().items():
        assert torch.equal(result.model.state_dict()[name], tensor), name
    assert result.device == "cpu" and "initial weights" in result.note
