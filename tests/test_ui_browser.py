"""The pictures are seen in the Dagster UI, checked in a real browser.

A tiny instance (ingestion, features, the schedule model and its forecast) is
materialized into a temporary DAGSTER_HOME while ``dagster-webserver`` starts on
127.0.0.1 against it; headless Debian Chromium, driven by Playwright, opens the
model's and the forecast's asset pages, opens a plot's markdown and checks the
image loaded (non-zero natural size) and is not blank (its screenshot is not one
colour). Nothing downloads a browser: Playwright launches ``/usr/bin/chromium``
(``make chromium`` installs it; .ci/run does so before the tests, so CI never skips).
The server is stopped by its process id (its process group: it starts a code server).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from channel_assets.metadata import image_markdown
from channel_assets.models import _metadata
from nn_models import plots
from nn_models.pipeline import TrainingReport
from resources.mlflow_tracking import MlflowTracking

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
MODEL, MODEL_PLOT = "schedule_model", "plot/loss_curve"
FORECAST, FORECAST_PLOT = "posting_schedule_recommendations", "picture"

MATERIALIZE = f"""
import dagster as dg
from channel_assets.definitions import defs
from channel_assets.ingestion import raw_tables
selection = (dg.AssetSelection.assets({MODEL!r}, {FORECAST!r}).upstream()
             | dg.AssetSelection.assets(*raw_tables.keys))
result = dg.materialize(list(defs.assets), selection=selection, resources=defs.resources,
                        instance=dg.DagsterInstance.get())
assert result.success
"""


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "Debian chromium is missing: run `make chromium` (apt-get install -y "
            "chromium); .ci/run installs it before the tests",
            pytrace=False,
        )
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, server: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"dagster-webserver exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"dagster-webserver did not answer {url} in time")


def _stop(process: subprocess.Popen) -> None:
    """Stop a process we started, and the children in its group, by its id."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _not_blank(png: bytes) -> float:
    """The standard deviation of the image's pixels (0 for a single colour)."""
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2
    return float(pixels.std())


def test_model_metadata_embeds_each_plot_as_small_inline_png(tmp_path):
    """A plot is a data URL in markdown (no file:// link a browser refuses), under 150 KB."""
    fig = plots.loss_curve([1.0, 0.8, 0.7], [1.1, 0.9, 0.85], "toy: loss")
    png = plots.png_bytes(fig)
    plots.close(fig)
    report = TrainingReport(
        "toy",
        "toy_model",
        "registered",
        version="1",
        run_id="abc",
        artifacts={"loss_curve": "file:///tmp/mlartifacts/loss_curve.png"},
        images={"loss_curve": png},
    )
    tracking = MlflowTracking(
        tracking_uri=f"sqlite:///{tmp_path}/m.db",
        artifact_root=str(tmp_path / "a"),
        optuna_uri="",
        experiment="x",
    )
    meta = _metadata(report, tracking)
    text = meta["plot/loss_curve"].value
    assert text.startswith("![loss_curve](data:image/png;base64,")
    assert base64.b64decode(text.split("base64,")[1].rstrip(")")) == png
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 150_000
    assert _not_blank(png) > 0.01
    assert meta["plot_file/loss_curve"].value.endswith("loss_curve.png")  # MLflow artifact stays
    assert "images=" not in repr(report)  # the bytes stay out of logs and reprs
    assert report.as_dict()["images"] == {"loss_curve": len(png)}


def test_png_bytes_shrinks_until_under_the_budget():
    fig = plots.scatter_plot(np.arange(1, 5000.0), np.arange(1, 5000.0) * 1.1, "big")
    big = plots.png_bytes(fig, dpi=200, max_bytes=10**9)
    small = plots.png_bytes(fig, dpi=200, max_bytes=len(big) // 3)
    plots.close(fig)
    assert len(small) <= len(big) // 3
    assert image_markdown("x", small).startswith("![x](data:image/png;base64,")


def test_plots_load_and_are_not_blank_in_chromium(tmp_path):
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: install the dev extra (make install)", pytrace=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PULSE_DATA_DIR": str(tmp_path / "data"),
        "PULSE_SIZE": "tiny",
        "PULSE_PROFILE": "tiny",
        "PULSE_DEVICE": "cpu",
        "PULSE_SOURCE": "synthetic",
        "HF_HUB_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    port = _free_port()
    start = time.monotonic()
    # the server starts (imports, code server) while the tiny instance is materialized
    materialize = subprocess.Popen(
        [sys.executable, "-c", MATERIALIZE],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        try:
            out, _ = materialize.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            _stop(materialize)
            raise AssertionError("materializing the tiny instance took over 180 s") from None
        assert materialize.returncode == 0, out.decode(errors="replace")[-3000:]
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/server_info", server, start + 240)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=CHROMIUM_ARGS, headless=True, timeout=30_000
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(30_000)
                # the first-visit "join the community" dialog covers the page: dismiss it
                page.add_locator_handler(
                    page.get_by_role("button", name="Skip"), lambda button: button.click()
                )
                for asset, key in ((MODEL, MODEL_PLOT), (FORECAST, FORECAST_PLOT)):
                    page.goto(f"{base}/assets/{asset}")
                    row = page.locator("tr", has_text=key).first
                    row.wait_for()
                    # markdown this long sits behind "[Show Markdown]", shown in a dialog
                    row.get_by_text("[Show Markdown]").click()
                    img = page.locator(".bp5-dialog img[src^='data:image/png']").first
                    img.wait_for()
                    complete, width, height = img.evaluate(
                        "i => [i.complete, i.naturalWidth, i.naturalHeight]"
                    )
                    assert complete and width > 100 and height > 100, (asset, width, height)
                    assert _not_blank(img.screenshot()) > 0.02, asset
                    if asset == FORECAST:
                        assert "served by" in page.locator(".bp5-dialog").inner_text()
                    page.keyboard.press("Escape")
            finally:
                browser.close()
    finally:
        _stop(server)
        _stop(materialize)
    assert time.monotonic() - start < 240
