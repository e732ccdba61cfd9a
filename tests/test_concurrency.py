"""Concurrency under stress: parallel Dagster runs, readers during writes, promotion while serving.

Subprocess handshakes go through files (``tests/helpers/sync.py``): a child says
"ready" by creating a file and waits for a "go" file, so nothing here depends on
fixed sleeps; every wait has a generous timeout for a loaded 2-core machine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import mlflow.pytorch
import pytest
import torch
from mlflow import MlflowClient

from channel_assets.models import MODEL_TABLES, model_assets
from nn_models import text_data
from nn_models.device import choose_device
from nn_models.pipeline import train_and_register
from nn_models.registry import version_by_alias
from nn_models.task import InsufficientData, Profile
from nn_models.tasks import TASKS, get_task
from resources.compute import TorchCompute
from resources.data_source import ChannelDataSource
from resources.mlflow_tracking import MlflowTracking
from resources.warehouse import DuckDBWarehouse
from tests.helpers.publish_loop import TABLE, VERSION_ROWS
from tests.helpers.stores import fresh_stores
from tests.helpers.sync import finish, signal, spawn, wait_for
from tests.toy_task import ToyTask, toy_data
from warehouse import features
from warehouse.features import build_feature_table
from warehouse.publish import open_reader
from warehouse.schema import ensure_schema
from warehouse.snapshot import copy_out

FEATURES = ("post_trajectories", "post_features")
STARTUP_TIMEOUT = 300  # importing dagster/torch on a busy 2-core machine can take a minute


def _table_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = conn.execute(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
        "WHERE schema_name IN ('raw', 'truth', 'features') ORDER BY 1"
    ).fetchall()
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for (t,) in tables}


# --------------------------------------------------------------------------- (a) two runs


def test_two_dagster_runs_writing_one_warehouse_at_once_both_succeed(tmp_path):
    """Two processes run ingestion + features against the same warehouse at the same time.

    DuckDB lets one process hold the file for writing; DuckDBWarehouse retries the
    lock, so the runs interleave their writes instead of failing. The helper makes
    the collision certain (the first to get the lock holds it until the other has
    been refused once). Loads are idempotent, so the result equals one run's.
    """
    data_dir, shared = tmp_path / "data", tmp_path / "shared"
    shared.mkdir()
    children = []
    for name in ("run0", "run1"):
        result = tmp_path / f"{name}.json"
        proc = spawn(
            "tests.helpers.dagster_run",
            str(data_dir),
            name,
            str(shared),
            str(result),
            *FEATURES,
            log=tmp_path / f"{name}.log",
        )
        children.append((proc, shared / f"ready_{name}", result))

    # meanwhile, what a single run produces, computed in-process without Dagster
    single = duckdb.connect()
    ensure_schema(single)
    ChannelDataSource(source="synthetic", size="tiny", seed=42).load(single)
    for name in FEATURES:
        build_feature_table(single, name)
    expected = _table_counts(single)
    single.close()

    for proc, ready, _ in children:
        wait_for(ready, STARTUP_TIMEOUT, proc, "dagster run child")
    signal(shared / "go")  # both start materializing now
    results = []
    for proc, _, result in children:
        finish(proc, STARTUP_TIMEOUT)
        results.append(json.loads(result.read_text()))

    failures = [f for r in results for f in r["failures"]]
    assert failures == [], failures  # failures under concurrency: 0
    assert all(r["success"] for r in results)
    assert sum(r["lock_conflicts"] for r in results) >= 1  # they did collide on the lock
    assert max(r["start"] for r in results) < min(r["end"] for r in results), (
        "the two runs did not overlap in time"
    )
    with DuckDBWarehouse(path=str(data_dir / "warehouse.duckdb")).connect(read_only=True) as conn:
        got = _table_counts(conn)
    assert got == expected  # two concurrent runs = one run
    assert got["raw.post_snapshots"] > 0 and got["features.post_features"] > 0


# --------------------------------------------------------------------------- (b) readers


# Known bug (found by this test): ``publish_table`` replaces ``<table>.parquet`` in place
# (temp file + rename), but DuckDB opens a Parquet file more than once per query (the
# footer at bind time, the data again in the scan, by path). A rename between the two
# opens pairs version A's footer with version B's bytes: the read fails ("Prefetch
# registered for bytes outside file", "don't know what type") in about 1 of 100-250 reads
# while republishing twice a second (threads=1, prefetching and the external file cache
# off do not help). The fix is immutable version files resolved once per query; see the
# report of issue "Proof under stress". Set to False once publish.py has it, so that any
# failed or torn read fails this test again.
KNOWN_TORN_READ_BUG = False


def test_published_reads_while_a_writer_holds_the_warehouse(tmp_path):
    """A child holds warehouse.duckdb and republishes a table nonstop, alternating two versions.

    * Reading the warehouse file itself fails (or waits, with the resource's retry)
      while the writer holds it: DuckDB admits one writing process and no reader
      beside it. That is why analyst-facing tables are published as Parquet.
    * Reading the published Parquet is never blocked by the writer, and every read
      must be exactly version 1 (60k rows of 1) or version 2 (100k rows of 2),
      through a long-lived reader and through fresh ones.
    """
    warehouse_path, root = tmp_path / "warehouse.duckdb", tmp_path / "published"
    ready, stop, result = tmp_path / "ready", tmp_path / "stop", tmp_path / "result.json"
    writer = spawn(
        "tests.helpers.publish_loop",
        str(warehouse_path),
        str(root),
        str(ready),
        str(stop),
        str(result),
        log=tmp_path / "writer.log",
    )
    try:
        wait_for(ready, STARTUP_TIMEOUT, writer, "publishing writer")

        # the warehouse file is locked by the writer: a plain reader fails at once ...
        with pytest.raises(duckdb.IOException, match="(?i)lock"):
            duckdb.connect(str(warehouse_path), read_only=True)
        # ... and the resource waits (lock retry) for its budget, then gives up
        started = time.monotonic()
        with pytest.raises(duckdb.IOException, match="(?i)lock"):
            with DuckDBWarehouse(path=str(warehouse_path), lock_retry_seconds=1.0).connect(read_only=True):
                pass
        assert time.monotonic() - started >= 1.0

        expected = {
            v: (n, v, v, n * (n - 1) // 2, n) for v, n in VERSION_ROWS.items()
        }  # rows, min(value), max(value), sum(row_id), rows whose label matches the value
        query = (
            f"SELECT count(*), min(value), max(value), sum(row_id), "
            f"count(*) FILTER (WHERE label = 'v' || value || '-' || row_id) "
            f"FROM forecasts.{TABLE}"
        )
        long_lived = open_reader(str(root))  # views re-read the file at each query
        seen: dict[int, int] = {1: 0, 2: 0}
        failed: list[str] = []  # reads that raised
        torn: list[tuple] = []  # reads that returned anything but one whole version
        reads = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (reads < 200 or min(seen.values()) < 10):
            for reader in (long_lived, None):
                conn = reader or open_reader(str(root))
                try:
                    row = conn.execute(query).fetchall()[0]
                    if expected.get(row[1]) != row:
                        torn.append(row)
                    else:
                        seen[row[1]] += 1
                except Exception as exc:  # noqa: BLE001 - any failed read is the finding
                    failed.append(repr(exc)[:300])
                finally:
                    if reader is None:
                        conn.close()
                reads += 1
        long_lived.close()
    finally:
        signal(stop)
        finish(writer, STARTUP_TIMEOUT)
    publishes = json.loads(result.read_text())["publishes"]

    assert not any("lock" in f.lower() for f in failed), failed  # the writer never blocks
    assert reads >= 200 and min(seen.values()) >= 10, (reads, seen)  # both versions read
    assert publishes >= 10, publishes  # the table really was rewritten meanwhile
    # the writer is gone: the file opens again, and holds what was published last
    conn = duckdb.connect(str(warehouse_path), read_only=True)
    in_warehouse = conn.execute(f"SELECT count(*) FROM forecasts.{TABLE}").fetchall()[0][0]
    conn.close()
    published = open_reader(str(root))
    assert published.execute(f"SELECT count(*) FROM forecasts.{TABLE}").fetchall()[0][0] == in_warehouse
    published.close()

    summary = (
        f"{reads} reads during {publishes} publishes: {len(failed)} failed, "
        f"{len(torn)} torn; e.g. {(failed + [repr(t) for t in torn])[:2]}"
    )
    if (failed or torn) and KNOWN_TORN_READ_BUG:
        pytest.xfail(f"known bug, in-place replace of published Parquet: {summary}")
    assert not failed and not torn, summary  # failed or torn reads: 0


# --------------------------------------------------------------------------- (c) promotion


def _fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def test_champion_loads_never_fail_while_a_better_version_is_promoted(tmp_path):
    """A serving thread keeps loading ``models:/toy_model@champion`` while the main
    thread trains, registers and promotes a better version: every load succeeds and
    is exactly the old or the new champion."""
    stores = fresh_stores(tmp_path / "stores")
    cpu = choose_device("cpu")
    weak = train_and_register(
        ToyTask(toy_data()),
        data=toy_data(),
        choice=cpu,
        profile=Profile("weak", n_trials=1, max_epochs=2, final_epochs=4),
        seed=1,
        **stores,
    )
    assert weak.promoted, weak.promotion_reason
    client = MlflowClient(stores["tracking_uri"])

    loads: list[tuple[str, str, str]] = []  # (alias version before, after, weights)
    errors: list[str] = []
    stop = threading.Event()
    first_loads = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                before = client.get_model_version_by_alias("toy_model", "champion").version
                model = mlflow.pytorch.load_model("models:/toy_model@champion", map_location="cpu")
                after = client.get_model_version_by_alias("toy_model", "champion").version
                with torch.no_grad():
                    out = model(x=torch.zeros(2, 1))
                assert out.shape == (2,)
                loads.append((str(before), str(after), _fingerprint(model)))
            except Exception as exc:  # noqa: BLE001 - a failed load is the finding
                errors.append(repr(exc)[:300])
            if len(loads) >= 2:
                first_loads.set()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        assert first_loads.wait(STARTUP_TIMEOUT), errors[:3]
        better = train_and_register(
            ToyTask(toy_data()),
            data=toy_data(),
            choice=cpu,
            profile=Profile("better", n_trials=1, max_epochs=2, final_epochs=40),
            seed=1,
            **stores,
        )
        assert better.promoted, better.promotion_reason
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while sum(1 for b, a, _ in loads if b == a == better.version) < 3 and not errors:
            assert time.monotonic() < deadline, "no load of the new champion"
            time.sleep(0.05)
    finally:
        stop.set()
        server.join(STARTUP_TIMEOUT)

    assert errors == [], errors[:5]  # failed loads: 0
    weights = {
        v: _fingerprint(mlflow.pytorch.load_model(f"models:/toy_model/{v}", map_location="cpu"))
        for v in (weak.version, better.version)
    }
    assert weights[weak.version] != weights[better.version]
    assert all(fp in weights.values() for _, _, fp in loads)  # old or new, nothing else
    for before, after, fp in loads:
        if before == after:  # alias stable around the load: it must be that version's weights
            assert fp == weights[before]
    versions_loaded = {fp for _, _, fp in loads}
    assert versions_loaded == set(weights.values())
    assert str(version_by_alias(client, "toy_model", "champion").version) == better.version


# --------------------------------------------------------------------------- (d) long reads


@pytest.fixture(scope="module")
def tiny_warehouse(tmp_path_factory) -> Path:
    """A tiny synthetic warehouse with every feature table (built once, copied per test)."""
    path = tmp_path_factory.mktemp("long_reads") / "warehouse.duckdb"
    conn = duckdb.connect(str(path))
    ensure_schema(conn)
    ChannelDataSource(source="synthetic", size="tiny", seed=42).load(conn)
    for name in features.FEATURE_TABLES:
        build_feature_table(conn, name)
    conn.close()
    return path


def test_each_model_reads_the_same_data_from_its_copied_tables(tiny_warehouse):
    """The model assets copy MODEL_TABLES out and close the warehouse before task.load:
    every task must prepare exactly what it prepares from the warehouse itself (a table
    a task reads but its asset does not declare would be missing from the copy)."""
    volatile = {"encode_seconds", "texts_encoded", "texts_from_cache"}
    with duckdb.connect(str(tiny_warehouse), read_only=True) as conn:
        for name in TASKS:
            outcomes = []
            for source in (conn, copy_out(conn, MODEL_TABLES[name], schemas=("truth",))):
                try:
                    data = get_task(name).load(source)
                    info = {k: v for k, v in data.info.items() if k not in volatile}
                    outcomes.append((data.fingerprint(), info))
                except InsufficientData as exc:  # too little data on tiny: same reason
                    outcomes.append(("insufficient", str(exc)))
            assert outcomes[0] == outcomes[1], name


def test_a_writer_next_to_a_long_model_asset_read_never_fails(tmp_path, tiny_warehouse, monkeypatch):
    """The content model asset encodes every text with MiniLM (minutes on real data). A
    writer in another process writes the warehouse during that step, with a 10 s lock
    retry (the resource's is 60 s); the step lasts until the writer is done. Before, the
    asset held its read-only connection through the encode and the writer failed."""
    path = tmp_path / "warehouse.duckdb"
    shutil.copyfile(tiny_warehouse, path)
    ready, go, result = tmp_path / "ready", tmp_path / "go", tmp_path / "result.json"
    writer = spawn(
        "tests.helpers.warehouse_writer",
        str(path),
        str(ready),
        str(go),
        str(result),
        "10",
        log=tmp_path / "writer.log",
    )
    outcomes: list[dict] = []
    real_encode = text_data.encode_texts

    def encode_while_a_writer_writes(*args, **kwargs):
        if not outcomes:
            signal(go)
            wait_for(result, STARTUP_TIMEOUT, writer, "warehouse writer")
            outcomes.append(json.loads(result.read_text()))
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(text_data, "encode_texts", encode_while_a_writer_writes)
    try:
        wait_for(ready, STARTUP_TIMEOUT, writer, "warehouse writer")
        stores = fresh_stores(tmp_path / "stores")
        asset = next(a for a in model_assets if a.key == dg.AssetKey("content_model"))
        run = dg.materialize(
            [asset],
            resources={
                "warehouse": DuckDBWarehouse(path=str(path)),
                "compute": TorchCompute(device="cpu", cpu_threads=1),
                "mlflow_tracking": MlflowTracking(**stores),
            },
            run_config={"ops": {"content_model": {"config": {"profile": "tiny", "seed": 1}}}},
            raise_on_error=False,
        )
    finally:
        finish(writer, STARTUP_TIMEOUT)
    assert len(outcomes) == 1, "the asset never reached its encoding step"
    failures = [o for o in outcomes if not o["ok"]]
    assert failures == [], failures  # writer failures next to the read: 0
    assert outcomes[0]["seconds"] < 5, outcomes  # not even a wait for the lock
    assert run.success
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM monitoring.writer_probe").fetchall() == [(1,)]


def _probe_writer(path: Path, probes: list[str]):
    """Open the warehouse for writing from this process: DuckDB refuses while any
    connection of this process still holds it (read-only or not)."""
    try:
        duckdb.connect(str(path)).close()
        probes.append("free")
    except duckdb.ConnectionException as exc:
        probes.append(f"held: {exc}")


def test_channel_exports_and_drift_hold_no_connection_while_they_compute(
    tmp_path, tiny_warehouse, monkeypatch
):
    """Rendering the exports' charts and Evidently's drift report run with the warehouse
    closed (the probe could open it for writing at that moment)."""
    import channel_assets.drift as drift_defs
    import warehouse.drift as drift_lib
    import warehouse.exports as exports
    from channel_assets.monitoring import AlertOutbox, ExportFolder, channel_exports

    path = tmp_path / "warehouse.duckdb"
    shutil.copyfile(tiny_warehouse, path)
    probes: dict[str, list[str]] = {"exports": [], "drift": []}
    real_channel, real_drift = exports.export_channel, drift_lib.detect_drift

    def export_channel(*args, **kwargs):
        _probe_writer(path, probes["exports"])
        return real_channel(*args, **kwargs)

    def detect_drift(*args, **kwargs):
        _probe_writer(path, probes["drift"])
        return real_drift(*args, **kwargs)

    monkeypatch.setattr(exports, "export_channel", export_channel)
    monkeypatch.setattr(drift_lib, "detect_drift", detect_drift)
    stores = fresh_stores(tmp_path / "stores")
    run = dg.materialize(
        [channel_exports, drift_defs.feature_drift],
        resources={
            "warehouse": DuckDBWarehouse(path=str(path), lock_retry_seconds=1.0),
            "export_folder": ExportFolder(path=str(tmp_path / "exports")),
            "alert_outbox": AlertOutbox(path=str(tmp_path / "outbox.jsonl")),
            "mlflow_tracking": MlflowTracking(**stores),
        },
        run_config={"ops": {"feature_drift": {"config": {"recent_days": 14}}}},
    )
    assert run.success
    assert len(probes["exports"]) >= 3 and len(probes["drift"]) == 1, probes
    assert all(p == "free" for found in probes.values() for p in found), probes
