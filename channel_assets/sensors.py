"""Sensors that react to new data."""


import hashlib
import json
from pathlib import Path

import dagster as dg

from channel_assets.jobs import ingestion_job
from resources.data_source import ChannelDataSource
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
