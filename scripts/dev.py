"""`make dev`: the Dagster UI and the MLflow UI, started and stopped together.

Each server runs in its own process group; Ctrl-C, SIGTERM (GNU make forwards it) or
either server exiting stops both groups — SIGTERM first, SIGKILL after
``STOP_GRACE_S`` — so no server is left running in the background.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

STOP_GRACE_S = 10.0


def stop(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM each process group, then SIGKILL what is still there after the grace."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def supervise(commands: Sequence[Sequence[str]]) -> int:
    """Run the commands together until one exits or we are told to stop; stop them all."""
    procs = [subprocess.Popen(list(cmd), start_new_session=True) for cmd in commands]

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    rc = 0
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        rc = next(p.returncode for p in procs if p.returncode is not None)
        print(f"a server exited ({rc}); stopping the other", flush=True)
    except KeyboardInterrupt:
        print("stopping the Dagster and MLflow UIs", flush=True)
    finally:
        stop(procs)
    return rc


def main() -> int:
    from resources.settings import load_settings

    settings = load_settings()
    bin_dir = Path(sys.executable).parent
    return supervise(
        [
            [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", settings.mlflow_uri, "--port", "5000"],
            [str(bin_dir / "dagster"), "dev", "-w", "workspace.yaml"],
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
