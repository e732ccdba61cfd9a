"""Optuna studies that are seeded, pruned per epoch and resumable from SQLite.

Trials of a process that died are marked failed through Optuna's heartbeat
(``heartbeat_interval`` and ``fail_stale_trials``), which Optuna still labels
experimental: its ``ExperimentalWarning`` is silenced around exactly those two calls.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def open_study(study_name: str, storage_uri: str, seed: int, direction: str = "minimize") -> optuna.Study:
    """Create or resume a study; trials of a process that died are marked failed."""
    # the heartbeat is what marks a killed process's RUNNING trials failed (tests/test_faults.py);
    # it has worked unchanged since Optuna 2.9 but is still flagged experimental
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        storage = optuna.storages.RDBStorage(storage_uri, heartbeat_interval=10, grace_period=30)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
        direction=direction,
        load_if_exists=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return study


def finished_trials(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state in FINISHED)


def run_study(
    objective: Callable[[optuna.Trial], float],
    study_name: str,
    storage_uri: str,
    n_trials: int,
    seed: int,
    direction: str = "minimize",
    callbacks: Sequence[Callable] = (),
) -> optuna.Study:
    """Run until ``n_trials`` trials have finished in total (earlier sessions count)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(study_name, storage_uri, seed, direction)
    remaining = max(0, n_trials - finished_trials(study))
    if remaining:
        study.optimize(objective, n_trials=remaining, callbacks=list(callbacks), catch=())
    return study


def pruning_reporter(trial: optuna.Trial) -> Callable[[int, float], None]:
    """Per-epoch hook for ``training.fit``: report validation loss, stop hopeless trials."""

    def report(epoch: int, val_loss: float) -> None:
        trial.report(val_loss, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} (val_loss={val_loss:.5f})")

    return report
