"""Shared fixtures: tiny settings in a temp data dir, and a tiny warehouse built once."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PULSE_SIZE", "tiny")
os.environ.setdefault("PULSE_DATA_DIR", "/tmp/pulse-test-default")

from resources.settings import load_settings  # noqa: E402


@pytest.fixture
def tiny_settings(tmp_path):
    return load_settings(
        {
            "PULSE_DATA_DIR": str(tmp_path),
            "PULSE_SIZE": "tiny",
            "PULSE_PROFILE": "tiny",
            "PULSE_DEVICE": "cpu",
        }
    )


@pytest.fixture
def stores(tmp_path):
    """MLflow (SQLite + artifact folder) and Optuna storage in a temp dir."""
    return {
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "artifact_root": str(tmp_path / "artifacts"),
        "optuna_uri": f"sqlite:///{tmp_path / 'optuna.db'}",
    }
