"""Subprocess plumbing for the stress tests: spawn with a log file, file handshakes.

Children never write to a pipe the test might not be draining (a child blocked on
a full pipe while holding the DuckDB lock would stall the other one): their
output goes to a log file, shown when something goes wrong. Handshakes are files
created atomically and polled, so nothing depends on fixed sleeps.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def spawn(module: str, *args: str, log: Path) -> subprocess.Popen:
    """``python -m module args…`` from the repository root, output to ``log``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    proc.log_path = Path(log)  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen, tail: int = 4000) -> str:
    path = getattr(proc, "log_path", None)
    if path is None or not Path(path).exists():
        return ""
    return Path(path).read_text(errors="replace")[-tail:]


def finish(proc: subprocess.Popen, timeout: float) -> None:
    """Wait for a child to exit by itself and require exit status 0."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"child timed out after {timeout:.0f} s:\n{output(proc)}") from None
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{output(proc)}"


def wait_for(path: str | Path, timeout: float, proc=None, what: str = "") -> None:
    """Poll until ``path`` exists; fail early if ``proc`` (a Popen) exited first."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"{what or path.name}: process exited with {proc.returncode} "
                f"before signalling\n{output(proc)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {path}"
                + (f"\n{output(proc)}" if proc is not None else "")
            )
        time.sleep(0.05)


def signal(path: str | Path, text: str = "ok") -> None:
    """Create ``path`` atomically (write a temp file, rename), so pollers never see half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
