"""Train, gate and register one model outside Dagster (notebook-style development).

    .venv/bin/python scripts/train_model.py engagement --data-dir /tmp/pulse_demo --profile demo

The warehouse must exist (``scripts/build_warehouse.py``). Prints the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import duckdb

from nn_models.device import choose_device
from nn_models.pipeline import train_and_register
from nn_models.task import PROFILES
from nn_models.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data_dir = Path(args.data_dir).resolve()
    conn = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    report = train_and_register(
        get_task(args.task),
        conn,
        tracking_uri=f"sqlite:///{data_dir / 'mlflow.db'}",
        artifact_root=str(data_dir / "mlartifacts"),
        optuna_uri=f"sqlite:///{data_dir / 'optuna.db'}",
        choice=choose_device(args.device),
        profile=PROFILES[args.profile],
        seed=args.seed,
        progress=print,
    )
    print(json.dumps(report.as_dict(), indent=2, default=str))


if __name__ == "__main__":
    main()
