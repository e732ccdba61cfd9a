"""`make run` wall time by asset and training time per model, read back from the runs.

Reads the latest ``everything_job`` run in the Dagster instance under
``$PULSE_DATA_DIR/dagster_home`` (step start/end events) and the model runs in
MLflow. Run ``make run`` first; the baseline for each asset is the whole run.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlflow import MlflowClient


def run() -> list[str]:
    data_dir = Path(os.environ.get("PULSE_DATA_DIR", "data")).resolve()
    home = data_dir / "dagster_home"
    if not home.exists():
        return [f"pipeline timings skipped: no Dagster instance at {home} (run `make run`)"]
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(dg.RunsFilter(job_name="everything_job"), limit=1)
    lines = []
    if runs:
        run = runs[0]
        stats = instance.get_run_step_stats(run.run_id)
        total = sum((s.end_time or 0) - (s.start_time or 0) for s in stats)
        lines.append(f"make run ({run.run_id[:8]}, {run.status.value}): {total:.0f} s in steps")
        for s in sorted(stats, key=lambda s: -((s.end_time or 0) - (s.start_time or 0))):
            seconds = (s.end_time or 0) - (s.start_time or 0)
            lines.append(f"  {s.step_key:<36} {seconds:7.1f} s  ({seconds / total:5.1%} of run)")
    client = MlflowClient(f"sqlite:///{data_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("channel_pulse")
    if experiment is not None:
        for r in client.search_runs(
            [experiment.experiment_id],
            "tags.mlflow.parentRunId IS NULL",
            max_results=50,
            order_by=["attributes.start_time DESC"],
        ):
            task = r.data.tags.get("task")
            if task and "train_seconds" in r.data.metrics:
                lines.append(
                    f"  training {task:<12} final fit {r.data.metrics['train_seconds']:.1f} s"
                    f" on {r.data.tags.get('device')}; "
                    f"promoted={r.data.tags.get('promoted')}"
                )
    return lines


if __name__ == "__main__":
    for line in run():
        print(line, flush=True)
