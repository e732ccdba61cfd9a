"""Run ``train_and_register`` on the toy task and freeze in the middle of tuning.

Usage: python -m tests.helpers.train_until_killed STORES_JSON READY GO SEED N_TRIALS HANG_AT

Imports everything, writes READY ("imported"), waits for GO, then runs the
pipeline. Call number HANG_AT of ``ToyTask.train`` (1-based; trial 0 is call 1)
first runs one real epoch, then writes READY again ("training") and sleeps until
the test kills the process with SIGKILL: a crash mid-training, after the earlier
trials finished and before anything was registered.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    stores_json, ready, go, seed, n_trials, hang_at = sys.argv[1:]
    from nn_models.device import choose_device
    from nn_models.pipeline import train_and_register
    from nn_models.task import Profile
    from tests.helpers.sync import signal, wait_for
    from tests.toy_task import ToyTask, toy_data

    class FreezingToyTask(ToyTask):
        calls = 0

        def train(self, params, data, choice, max_epochs, seed, on_epoch=None):
            FreezingToyTask.calls += 1
            if FreezingToyTask.calls != int(hang_at):
                return super().train(params, data, choice, max_epochs, seed, on_epoch)

            def freeze(epoch: int, val_loss: float) -> None:
                if on_epoch is not None:
                    on_epoch(epoch, val_loss)
                signal(f"{ready}.training", json.dumps({"call": FreezingToyTask.calls, "epoch": epoch}))
                while True:  # wait for SIGKILL
                    time.sleep(1)

            return super().train(params, data, choice, max_epochs, seed, freeze)

    stores = json.loads(stores_json)
    signal(ready, "imported")
    wait_for(go, timeout=600)
    train_and_register(
        FreezingToyTask(toy_data()),
        data=toy_data(),
        choice=choose_device("cpu"),
        profile=Profile("crash", n_trials=int(n_trials), max_epochs=3, final_epochs=4),
        seed=int(seed),
        **stores,
    )
    signal(f"{ready}.finished", "not killed")  # should never happen


if __name__ == "__main__":
    main()
