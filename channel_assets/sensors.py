"""Sensors that react to new data."""


import hashlib
import json
from pathlib import Path

import dagster as dg

from channel_assets.jobs import forecasts_job, ingestion_job
from nn_models.registry import CHAMPION, version_by_alias
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


@dg.sensor(job=ingestion_job, minimum_interval_seconds=30)
def landing_sensor(context: dg.SensorEvaluationContext, data_source: ChannelDataSource):
    """Start ingestion when landing files appear or change.

    Cursor: ``{path: sha256}`` of files already seen. The run key is the hash of the
    new files' hashes, so the same content never triggers two runs.
    """
    folder = Path(data_source.landing_dir)
    if not folder.is_dir():
        return dg.SkipReason(f"landing folder {folder} does not exist")
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = {
        str(path): file_digest(path)
        for paths in landing_files(folder).values()
        for path in paths
    }
    current |= {str(path): file_digest(path) for path in find_exports(folder)}
    changed = {path: digest for path, digest in current.items() if seen.get(path) != digest}
    if not changed:
        return dg.SkipReason(f"no new landing files in {folder}")
    run_key = hashlib.sha256("".join(sorted(changed.values())).encode()).hexdigest()
    context.log.info(f"new landing files: {sorted(changed)}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, tags={"landing_files": str(len(changed))})],
        cursor=json.dumps({**seen, **current}, sort_keys=True),
    )


@dg.sensor(job=forecasts_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING)
def champion_sensor(context: dg.SensorEvaluationContext, mlflow_tracking: MlflowTracking):
    """Re-score the forecasts whenever any model's ``champion`` alias moves."""
    client = mlflow_tracking.client()
    current = {}
    for name in TASKS:
        registered = get_task(name).registered_model
        try:
            version = version_by_alias(client, registered, CHAMPION)
        except Exception:  # registry not created yet
            version = None
        current[registered] = str(version.version) if version else None
    seen = json.loads(context.cursor) if context.cursor else {}
    if current == seen:
        return dg.SkipReason("no champion changed")
    changed = {k: v for k, v in current.items() if seen.get(k) != v and v is not None}
    cursor = json.dumps(current, sort_keys=True)
    if not changed:
        return dg.SensorResult(skip_reason="no new champion", cursor=cursor)
    key = hashlib.sha256(cursor.encode()).hexdigest()[:16]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"champions-{key}",
                                    tags={"pulse/trigger": "new_champion"})],
        cursor=cursor,
    )
