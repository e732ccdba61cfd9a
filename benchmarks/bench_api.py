"""REST API latency over loopback vs calling the service in-process, same data, same run.

Needs a populated data dir (``make run``): published tables and champions. Sends a
bounded number of requests (default 300 per endpoint) after a warm-up; the first
call of each endpoint fills the TTL cache, so both cached and uncached paths are
reported (uncached = distinct post ids).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx

from benchmarks.common import percentiles_ms, ratio_line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"API did not come up at {url}")


def _sample_ids(published: Path) -> tuple[int, list[int]]:
    conn = duckdb.connect()
    path = published / "forecasts" / "post_engagement_forecasts.parquet"
    rows = conn.execute(
        "SELECT channel_id, post_id FROM read_parquet(?) ORDER BY post_id", [str(path)]
    ).fetchall()
    channel = rows[0][0]
    return channel, [p for c, p in rows if c == channel]


def run(requests: int = 300) -> list[str]:
    data_dir = Path(os.environ.get("PULSE_DATA_DIR", "data")).resolve()
    published = data_dir / "published"
    if not (published / "forecasts").exists():
        return [f"API benchmark skipped: no published forecasts under {published} (run `make run` first)"]
    channel, posts = _sample_ids(published)
    port = _free_port()
    env = {**os.environ, "PULSE_DATA_DIR": str(data_dir)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "api.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    lines = []
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/health")
        from api.app import create_app

        service = create_app().state.service
        with httpx.Client(base_url=base, timeout=30) as client:
            for name, http_call, local_call in (
                (
                    "insights (cached)",
                    lambda i: client.get(f"/channels/{channel}/insights"),
                    lambda i: service.generate_neural_insights(channel),
                ),
                (
                    "engagement (distinct posts)",
                    lambda i: client.post(
                        f"/channels/{channel}/engagement", json={"post_id": posts[i % len(posts)]}
                    ),
                    lambda i: service.predict_engagement_neural(channel, {"post_id": posts[i % len(posts)]}),
                ),
            ):
                for i in range(10):
                    http_call(i).raise_for_status()
                    local_call(i)
                http_s, local_s = [], []
                for i in range(requests):
                    start = time.perf_counter()
                    response = http_call(i + 10)
                    http_s.append(time.perf_counter() - start)
                    response.raise_for_status()
                    start = time.perf_counter()
                    local_call(i + 10)
                    local_s.append(time.perf_counter() - start)
                hp50, hp99 = percentiles_ms(http_s)
                lp50, lp99 = percentiles_ms(local_s)
                lines.append(
                    f"API {name} p50: " + ratio_line("HTTP loopback", hp50, "in-process service", lp50, "ms")
                )
                lines.append(
                    f"API {name} p99: " + ratio_line("HTTP loopback", hp99, "in-process service", lp99, "ms")
                )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return lines


if __name__ == "__main__":
    for line in run():
        print(line, flush=True)
