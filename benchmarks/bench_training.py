"""Training speed: torch intra-op threads 1 vs 2, and the engagement loss's padded-step cut.

One Optuna-style trial (the model card's default parameters, ``--epochs`` epochs, the
same seed) of the engagement and the growth model on a demo world, timed in this
process with ``torch.set_num_threads(1)`` and then 2: the ratio says whether a model
step should get both cores or share them with another step (`make run` runs two steps
at once with one thread each). The engagement loss skips the grid steps after a batch's
longest trajectory; its baseline here is the same loss over the full padded grid
(the code before the cut), with the largest |difference| of the two losses on the
validation set, which must be ~0 (the LSTM is causal).

    python -m benchmarks.bench_training [--warehouse PATH] [--epochs 2] [--repeat 1]

Without ``--warehouse`` a demo world is built in a temporary folder (~1 min).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import torch

from benchmarks.common import build_warehouse, ratio_line
from nn_models.device import choose_device
from nn_models.task import ModelTask, PreparedData
from nn_models.tasks.engagement import (
    TRAIN_ARRAYS,
    EngagementTask,
    _pinball,
    _weighted_mean,
    engagement_loss,
    step_weights,
)
from nn_models.tasks.growth import GrowthTask
from nn_models.training import TrainConfig, fit, seed_everything


def _load(task: ModelTask, warehouse: Path) -> PreparedData:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        return task.load(conn)
    finally:
        conn.close()


def _trial_seconds(task: ModelTask, data: PreparedData, threads: int, epochs: int) -> float:
    choice = choose_device("cpu", threads)  # sets torch's intra-op threads
    started = time.perf_counter()
    task.train(task.default_params(), data, choice, epochs, seed=42)
    return time.perf_counter() - started


def _full_grid_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``engagement_loss`` as it was before the cut: the LSTM runs every padded step."""
    sequence = batch["sequence"]
    score, log_views, log_interactions = model.forward_steps(sequence=sequence, static=batch["static"])
    steps = torch.arange(sequence.shape[1])[None, :]
    observed = (steps < batch["length"].view(-1, 1)).to(score.dtype)
    weight = observed * step_weights(sequence.shape[1])
    bce = torch.nn.functional.binary_cross_entropy(
        score.clamp(1e-6, 1 - 1e-6), batch["score_target"].view(-1, 1).expand_as(score), reduction="none"
    )
    return (
        _weighted_mean(bce, weight * batch["score_weight"].view(-1, 1))
        + _weighted_mean(_pinball(log_views, batch["log_views_48h"]), weight)
        + _weighted_mean(
            _pinball(log_interactions, batch["log_interactions_48h"]),
            weight * batch["interactions_weight"].view(-1, 1),
        )
    )


def _engagement_cut(task: EngagementTask, data: PreparedData, epochs: int) -> list[str]:
    """Seconds of ``epochs`` epochs with the cut loss vs the full-grid loss (1 thread)."""
    torch.set_num_threads(1)
    params = task.default_params()
    train = {k: data.train[k] for k in TRAIN_ARRAYS}
    val = {k: data.val[k] for k in TRAIN_ARRAYS}
    seconds = {}
    for name, loss in (("cut", engagement_loss), ("full grid", _full_grid_loss)):
        seed_everything(42)
        model = task.build(params)
        model.set_normalisation(*(torch.as_tensor(data.train[k]) for k in ("sequence", "length", "static")))
        cfg = TrainConfig(max_epochs=epochs, lr=params["lr"], batch_size=params["batch_size"], seed=42)
        started = time.perf_counter()
        fit(model, train, val, loss, cfg, choose_device("cpu", 1))
        seconds[name] = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        diffs = []
        for start in range(0, len(val["length"]), 256):
            batch = {k: torch.as_tensor(v[start : start + 256]) for k, v in val.items()}
            diffs.append(abs(float(engagement_loss(model, batch)) - float(_full_grid_loss(model, batch))))
    steps = int(np.max(data.train["length"]))
    return [
        f"engagement loss, {epochs} epochs, 1 thread, longest trajectory {steps}/"
        f"{data.train['sequence'].shape[1]} grid steps: "
        + ratio_line(
            "cut at the longest trajectory", seconds["cut"], "full padded grid", seconds["full grid"]
        )
        + f"; max |loss difference| on validation {max(diffs):.1e}"
    ]


def run(warehouse: Path | None = None, epochs: int = 2, repeat: int = 1) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        if warehouse is None:
            warehouse = Path(tmp) / "demo.duckdb"
            build_warehouse(warehouse, "demo")
        lines = [f"one trial of {epochs} epochs, default parameters, seed 42, on {warehouse.name}"]
        tasks = [EngagementTask(), GrowthTask()]
        loaded = [(task, _load(task, warehouse)) for task in tasks]
    previous = torch.get_num_threads()
    try:
        for task, data in loaded:
            seconds: dict[int, list[float]] = {1: [], 2: []}
            for i in range(repeat):  # alternate the order: 1, 2, then 2, 1, ...
                for threads in (1, 2) if i % 2 == 0 else (2, 1):
                    seconds[threads].append(_trial_seconds(task, data, threads, epochs))
            one, two = min(seconds[1]), min(seconds[2])
            lines.append(
                f"{task.name} trial (best of {repeat}): " + ratio_line("2 threads", two, "1 thread", one)
            )
        lines += _engagement_cut(loaded[0][0], loaded[0][1], epochs)
    finally:
        torch.set_num_threads(previous)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", type=Path, default=None, help="an existing warehouse (read only)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="timings per thread count (best kept)")
    args = parser.parse_args()
    for line in run(args.warehouse, args.epochs, args.repeat):
        print(line, flush=True)


if __name__ == "__main__":
    main()
