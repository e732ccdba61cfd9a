"""`make dev`'s supervisor: the two servers start and stop together (scripts/dev.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _supervisor(tmp_path: Path, second: str) -> tuple[subprocess.Popen, Path]:
    """The supervisor over two stand-in servers that write their pid and then wait."""
    pids = tmp_path / "pids"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from scripts.dev import supervise
        server = "import os, time; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\\\n'); time.sleep(%s)"
        py = sys.executable
        sys.exit(supervise([[py, "-c", server % "600"], [py, "-c", server % {second!r}]]))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.1)
    return proc, pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_sigterm_stops_both_servers(tmp_path):
    proc, pids = _supervisor(tmp_path, "600")
    servers = [int(p) for p in pids.read_text().split()]
    assert len(servers) == 2 and all(_alive(p) for p in servers)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    time.sleep(0.2)
    assert not any(_alive(p) for p in servers)


def test_one_server_exiting_stops_the_other(tmp_path):
    proc, pids = _supervisor(tmp_path, "1")
    servers = [int(p) for p in pids.read_text().split()]
    proc.wait(timeout=30)
    time.sleep(0.2)
    assert not any(_alive(p) for p in servers)
