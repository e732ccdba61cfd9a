"""``TorchCompute``: the device models train and score on (DESIGN §5)."""

from __future__ import annotations

import dagster as dg

from nn_models.device import DeviceChoice, choose_device


class TorchCompute(dg.ConfigurableResource):
    """``device``: auto (cuda → mps → cpu), cuda, mps or cpu; ``cpu_threads``: 0 = all cores."""

    device: str = "auto"
    cpu_threads: int = 0

    def choose(self) -> DeviceChoice:
        if self.device not in ("auto", "cuda", "mps", "cpu"):
            raise ValueError(f"TorchCompute.device={self.device!r}: use auto, cuda, mps or cpu")
        return choose_device(self.device, self.cpu_threads or None)
