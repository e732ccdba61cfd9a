"""Single-prediction latency (ONNX Runtime vs PyTorch eager) and batch scoring throughput.

Uses the registered engagement champion when ``PULSE_DATA_DIR`` holds one (after
``make run``), else the model card's default architecture with seeded weights —
latency depends on the architecture, not on the weights. Threads are pinned
(torch and ORT), both paths are warmed up before timing, in the same process.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import percentiles_ms, ratio_line
from nn_models.models.engagement import SEQUENCE_FEATURES, STATIC_FEATURES, EngagementPredictor
from nn_models.onnx_export import check_parity, export_onnx, onnx_runner
from warehouse.features import TRAJECTORY_GRID_MINUTES

THREADS = 1
T = len(TRAJECTORY_GRID_MINUTES)


def _model() -> tuple[torch.nn.Module, str]:
    data_dir = Path(os.environ.get("PULSE_DATA_DIR", "data"))
    if (data_dir / "mlflow.db").exists():
        from nn_models.champions import load_champion

        champion = load_champion(f"sqlite:///{data_dir.resolve() / 'mlflow.db'}", "engagement")
        if champion is not None:
            return champion.module, f"champion v{champion.version}"
    torch.manual_seed(0)
    return EngagementPredictor().eval(), "default architecture, seeded weights"


def _inputs(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "sequence": rng.normal(size=(n, T, len(SEQUENCE_FEATURES))).astype(np.float32),
        "length": rng.integers(1, T + 1, size=n).astype(np.int64),
        "static": rng.normal(size=(n, len(STATIC_FEATURES))).astype(np.float32),
    }


def _time(fn, inputs, repeats: int) -> list[float]:
    for _ in range(20):
        fn(**inputs)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(**inputs)
        samples.append(time.perf_counter() - start)
    return samples


def run(repeats: int = 500, batch: int = 4096) -> list[str]:
    torch.set_num_threads(THREADS)
    model, source = _model()
    rng = np.random.default_rng(0)
    single = _inputs(1, rng)
    big = _inputs(batch, rng)

    @torch.inference_mode()
    def eager(**arrays):
        return model(**{k: torch.as_tensor(v) for k, v in arrays.items()})

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "engagement.onnx"
        export_onnx(model, single, path)
        parity = check_parity(model, path, [single, _inputs(7, rng), big])
        ort = onnx_runner(path, threads=THREADS)
        eager_p50, eager_p99 = percentiles_ms(_time(eager, single, repeats))
        ort_p50, ort_p99 = percentiles_ms(_time(ort, single, repeats))
        eager_batch = min(_time(eager, big, 5))
        ort_batch = min(_time(ort, big, 5))
    return [
        f"engagement model: {source}; {THREADS} thread; ONNX parity: {parity.reason}",
        "single prediction p50: " + ratio_line("ONNX Runtime", ort_p50, "PyTorch eager", eager_p50, "ms"),
        "single prediction p99: "
        + ratio_line("ONNX Runtime", ort_p99, "PyTorch eager", eager_p99, "ms")
        + f" (target p99 < 5 ms: {'met' if ort_p99 < 5 else 'NOT met'})",
        "batch scoring: "
        + ratio_line(
            "ONNX Runtime",
            batch / ort_batch,
            "PyTorch eager",
            batch / eager_batch,
            "posts/s",
            higher_is_better=True,
        )
        + f" (target ≥ 20k posts/s: {'met' if batch / ort_batch >= 20_000 else 'NOT met'})",
    ]


if __name__ == "__main__":
    for line in run():
        print(line, flush=True)
