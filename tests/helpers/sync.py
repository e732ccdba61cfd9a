"""File-based handshakes between a test and its subprocesses (no fixed sleeps)."""

from __future__ import annotations

import time
from pathlib import Path


def wait_for(path: str | Path, timeout: float, proc=None, what: str = "") -> None:
    """Poll until ``path`` exists; fail early if ``proc`` (a Popen) exited first."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"{what or path.name}: process exited with {proc.returncode} "
                                 f"before signalling\n{out}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {path}")
        time.sleep(0.05)


def signal(path: str | Path, text: str = "ok") -> None:
    """Create ``path`` atomically (write a temp file, rename), so pollers never see half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
