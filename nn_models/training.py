"""One training loop for every model: seeded, early-stopped, AMP on CUDA, CPU fallback.

Each model supplies ``loss_fn(model, batch) -> loss``; the loop owns batching,
optimisation, early stopping on validation loss, progress and per-epoch reports
(which Optuna uses for pruning).

The weights kept are those of the lowest validation loss. Early stopping counts an epoch
as progress only when the validation loss falls by more than ``min_delta`` *relative*
to the loss at the last such epoch (an absolute 1e-6 let a loss
that drifted down by 0.01 % per epoch run every epoch), and stops after ``patience``
epochs without one (each task sets a patience that fits its epoch budget).
``TrainResult.stopped_early`` says whether it stopped before ``max_epochs``.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from nn_models.device import DeviceChoice, choose_device, is_out_of_memory

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    patience: int = 5
    # an epoch improves on the best only when val_loss < best - min_delta * |best|
    min_delta: float = 1e-3
    grad_clip: float = 1.0
    seed: int = 42


@dataclass
class TrainResult:
    model: nn.Module
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    seconds: float = 0.0
    device: str = "cpu"
    note: str = ""
    stopped_early: bool = False  # stopped by patience before max_epochs

    @property
    def epochs(self) -> int:
        return len(self.val_losses)


def improved(val_loss: float, best: float, min_delta: float) -> bool:
    """Is ``val_loss`` better than ``best`` by more than ``min_delta`` relative to ``best``?"""
    if not np.isfinite(best):
        return bool(np.isfinite(val_loss))
    return val_loss < best - min_delta * abs(best)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; make CPU kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _batches(
    arrays: Mapping[str, np.ndarray], batch_size: int, shuffle: bool, generator: np.random.Generator
):
    n = len(next(iter(arrays.values())))
    order = generator.permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield {key: value[idx] for key, value in arrays.items()}


def _to_device(batch: Mapping[str, np.ndarray], device: torch.device) -> Batch:
    return {key: torch.as_tensor(value).to(device) for key, value in batch.items()}


def _evaluate(model, arrays, loss_fn, cfg, device, rng, autocast) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast():
        for batch in _batches(arrays, cfg.batch_size * 4, False, rng):
            n = len(next(iter(batch.values())))
            total += float(loss_fn(model, _to_device(batch, device))) * n
            count += n
    return total / max(count, 1)


def fit(
    model: nn.Module,
    train: Mapping[str, np.ndarray],
    val: Mapping[str, np.ndarray],
    loss_fn: LossFn,
    cfg: TrainConfig,
    choice: DeviceChoice | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train with AdamW, keep the weights of the best validation epoch.

    ``on_epoch(epoch, val_loss)`` may raise (Optuna's ``TrialPruned``) to stop early.
    A GPU out-of-memory error restarts the fit on CPU from the model's initial weights
    (a copy taken before the first step), with the same seed: the CPU run is the run a
    CPU-only machine would have made, not a continuation of half-trained GPU weights.
    """
    choice = choice or choose_device("cpu")
    initial = None
    if choice.device != "cpu":
        initial = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    try:
        return _fit(model, train, val, loss_fn, cfg, choice, on_epoch)
    except RuntimeError as exc:
        if initial is None or not is_out_of_memory(exc):
            raise
        log.warning(
            "out of memory on %s (%s); restarting on CPU from the initial weights", choice.device, exc
        )
        if choice.device == "cuda":
            torch.cuda.empty_cache()
        model = model.cpu()
        model.load_state_dict(initial)
        result = _fit(model, train, val, loss_fn, cfg, choose_device("cpu", choice.threads), on_epoch)
        result.note = f"restarted on CPU from the initial weights after {choice.device} ran out of memory"
        return result


def _fit(model, train, val, loss_fn, cfg, choice, on_epoch) -> TrainResult:
    seed_everything(cfg.seed)
    device = choice.torch_device
    model = model.to(device)
    rng = np.random.default_rng(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = choice.mixed_precision and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    def autocast():
        return torch.autocast(device_type=device.type, enabled=use_amp)

    result = TrainResult(model=model, device=choice.device)
    best_state = copy.deepcopy(model.state_dict())
    stale, reference = 0, float("inf")
    started = time.perf_counter()
    for epoch in range(cfg.max_epochs):
        model.train()
        total, count = 0.0, 0
        for batch in _batches(train, cfg.batch_size, True, rng):
            tensors = _to_device(batch, device)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model, tensors)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            n = len(next(iter(batch.values())))
            total += float(loss.detach()) * n
            count += n
        val_loss = _evaluate(model, val, loss_fn, cfg, device, rng, autocast)
        result.train_losses.append(total / max(count, 1))
        result.val_losses.append(val_loss)
        log.info(
            "epoch %d/%d train_loss=%.5f val_loss=%.5f",
            epoch + 1,
            cfg.max_epochs,
            result.train_losses[-1],
            val_loss,
        )
        if val_loss < result.best_val_loss:  # keep the best weights, however small the gain
            result.best_val_loss, result.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        if improved(val_loss, reference, cfg.min_delta):  # patience resets only on a real gain
            reference, stale = val_loss, 0
        else:
            stale += 1
        if on_epoch is not None:
            on_epoch(epoch, val_loss)
        if stale >= cfg.patience and epoch + 1 < cfg.max_epochs:
            result.stopped_early = True
            break
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
