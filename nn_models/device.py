"""Pick a torch device (cuda → mps → cpu) and fall back to CPU when a GPU misbehaves.

Plain PyTorch so notebooks and the inference service use the same rules as the
Dagster ``TorchCompute`` resource that wraps it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda", "mps" or "cpu"
    reason: str  # why this device (and why not a faster one)
    mixed_precision: bool  # autocast on CUDA
    threads: int  # torch intra-op threads on CPU

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


def _cuda_works() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "CUDA not available"
    try:
        probe = torch.ones(8, device="cuda")
        float((probe * 2).sum().item())
        return True, f"CUDA device {torch.cuda.get_device_name(0)}"
    except Exception as exc:  # a present-but-broken driver must not kill the run
        log.warning("CUDA reported available but failed to initialise (%s); using CPU", exc)
        return False, f"CUDA present but failed: {exc}"


def _mps_works() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def choose_device(requested: str = "auto", cpu_threads: int | None = None) -> DeviceChoice:
    """Resolve ``auto``/``cuda``/``mps``/``cpu`` to a working device, never raising."""
    threads = cpu_threads or max(1, os.cpu_count() or 1)
    why = "no usable GPU"
    if requested in ("auto", "cuda"):
        ok, why = _cuda_works()
        if ok:
            return DeviceChoice("cuda", why, mixed_precision=True, threads=threads)
        if requested == "cuda":
            log.warning("requested cuda but %s; falling back to CPU", why)
            return DeviceChoice("cpu", f"fallback: {why}", False, threads)
    if requested in ("auto", "mps") and _mps_works():
        return DeviceChoice("mps", "Apple MPS available", False, threads)
    torch.set_num_threads(threads)
    reason = (
        f"fallback: {why}" if "failed" in why else ("no usable GPU" if requested == "auto" else "requested")
    )
    return DeviceChoice("cpu", reason, False, threads)


def batch_size_for(choice: DeviceChoice, bytes_per_sample: int, ceiling: int = 4096) -> int:
    """Largest power-of-two batch using ≤ 1/4 of free GPU memory (CPU: a cache-friendly 256)."""
    if choice.device != "cuda":
        return min(256, ceiling)
    free, _total = torch.cuda.mem_get_info()
    fit = max(1, int(free // 4 // max(bytes_per_sample, 1)))
    size = 1
    while size * 2 <= min(fit, ceiling):
        size *= 2
    return size


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@contextmanager
def single_cpu_thread(choice: DeviceChoice) -> Iterator[None]:
    """One intra-op thread for small models on CPU, restored afterwards.

    On a busy 2-core machine, synchronising two threads cost small MLPs and
    k-means 6–8× their single-thread time.
    """
    previous = torch.get_num_threads()
    if choice.device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
