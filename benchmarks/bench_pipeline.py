"""`make run` wall time beside each asset's seconds, read back from the latest run.

Reads the latest ``everything_job`` run in the Dagster instance under
``$PULSE_DATA_DIR/dagster_home``: the run's wall time (start to end), each step's
seconds and the sum of step seconds — their ratio to the wall time is how many
steps ran at once on average (the multiprocess executor, ``channel_assets.executor``).
Run ``make run`` first; the baseline for each asset is the run's wall time.
"""

from __future__ import annotations

import os
from pathlib import Path


def run() -> list[str]:
    data_dir = Path(os.environ.get("PULSE_DATA_DIR", "data")).resolve()
    home = data_dir / "dagster_home"
    if not home.exists():
        return [f"pipeline timings skipped: no Dagster instance at {home} (run `make run`)"]
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(dg.RunsFilter(job_name="everything_job"), limit=1)
    if not runs:
        return ["pipeline timings skipped: no everything_job run yet (run `make run`)"]
    run = runs[0]
    stats = instance.get_run_stats(run.run_id)
    wall = (stats.end_time or 0) - (stats.start_time or 0)
    steps = instance.get_run_step_stats(run.run_id)
    seconds = {s.step_key: (s.end_time or 0) - (s.start_time or 0) for s in steps}
    busy = sum(seconds.values())
    lines = [
        f"make run ({run.run_id[:8]}, {run.status.value}): {wall:.0f} s wall time, "
        f"{busy:.0f} s in steps ({busy / max(wall, 1e-9):.2f} steps at once on average)"
    ]
    for step, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {step:<36} {s:7.1f} s  ({s / max(wall, 1e-9):5.1%} of the wall time)")
    return lines


if __name__ == "__main__":
    for line in run():
        print(line, flush=True)
