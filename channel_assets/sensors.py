"""Sensors that react to new data and to new champions; both run by default."""

import hashlib
import json
from pathlib import Path

import dagster as dg

from channel_assets.jobs import forecasts_job, ingestion_job
from nn_models.registry import CHAMPION, RegistryUnavailable, version_by_alias
from nn_models.tasks import TASKS, get_task
from resources.data_source import ChannelDataSource
from resources.mlflow_tracking import MlflowTracking
from warehouse.desktop_export import find_exports
from warehouse.landing import landing_files


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sequenced(cursor: str | None, key: str) -> tuple[int, dict]:
    """(event sequence number, state) from a cursor; the pre-sequence flat format is seq 0."""
    if not cursor:
        return 0, {}
    loaded = json.loads(cursor)
    if "seq" in loaded and key in loaded:
        return int(loaded["seq"]), dict(loaded[key])
    return 0, dict(loaded)


def _run_key(prefix: str, seq: int, state: dict) -> str:
    """Unique per event (the sequence number) and the same when a tick is retried."""
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
    return f"{prefix}-{seq}-{digest}"


@dg.sensor(job=ingestion_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, data_source: ChannelDataSource):
    """Start ingestion when landing files appear or change.

    Cursor: ``{"seq": n, "files": {path: sha256}}``, the files present at the last
    request. The run key is ``landing-<n+1>-<hash of the changed files>``: a new event
    (content A → B → A included) gets a new key, while a retried tick with the same
    cursor asks for the same run and Dagster dedupes it. Skips when the folder is
    absent, so it can run by default with every source.
    """
    folder = Path(data_source.landing_dir)
    if not folder.is_dir():
        return dg.SkipReason(f"landing folder {folder} does not exist")
    seq, seen = _sequenced(context.cursor, "files")
    current = {str(path): file_digest(path) for paths in landing_files(folder).values() for path in paths}
    current |= {str(path): file_digest(path) for path in find_exports(folder)}
    changed = {path: digest for path, digest in current.items() if seen.get(path) != digest}
    if not changed:
        return dg.SkipReason(f"no new landing files in {folder}")
    context.log.info(f"new landing files: {sorted(changed)}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=_run_key("landing", seq + 1, changed), tags={"landing_files": str(len(changed))}
            )
        ],
        cursor=json.dumps({"seq": seq + 1, "files": current}, sort_keys=True),
    )


@dg.sensor(job=forecasts_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def champion_sensor(context: dg.SensorEvaluationContext, mlflow_tracking: MlflowTracking):
    """Re-score the forecasts whenever any model's ``champion`` alias moves (rollbacks too).

    Cursor: ``{"seq": n, "champions": {model: version}}``; run key
    ``champions-<n+1>-<hash of the set>``, so returning to an earlier set is a new event.
    A registry that cannot be read skips the tick and keeps the cursor: an outage is
    not "every champion removed" (which would rescore everything from baselines, and
    again when the registry answers).
    """
    client = mlflow_tracking.client()
    current = {}
    try:
        for name in TASKS:
            registered = get_task(name).registered_model
            version = version_by_alias(client, registered, CHAMPION)
            current[registered] = str(version.version) if version else None
    except RegistryUnavailable as exc:
        return dg.SkipReason(f"registry not readable, will look again: {exc}")
    seq, seen = _sequenced(context.cursor, "champions")
    if current == seen:
        return dg.SkipReason("no champion changed")
    changed = {k: v for k, v in current.items() if seen.get(k) != v and v is not None}
    cursor = json.dumps({"seq": seq + 1, "champions": current}, sort_keys=True)
    if not changed:
        return dg.SensorResult(skip_reason="no new champion", cursor=cursor)
    context.log.info(f"champions moved: {changed}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=_run_key("champions", seq + 1, current), tags={"pulse/trigger": "new_champion"}
            )
        ],
        cursor=cursor,
    )
