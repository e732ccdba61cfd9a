"""One ``ModelTask`` per model card (DESIGN §4), looked up by short name."""

from __future__ import annotations

from importlib import import_module

from nn_models.task import ModelTask

TASKS: dict[str, str] = {
    "engagement": "nn_models.tasks.engagement:EngagementTask",
    "growth": "nn_models.tasks.growth:GrowthTask",
    "content": "nn_models.tasks.content:ContentTask",
    "viral": "nn_models.tasks.viral:ViralTask",
    "behavior": "nn_models.tasks.behavior:BehaviorTask",
    "schedule": "nn_models.tasks.schedule:ScheduleTask",
}


def get_task(name: str) -> ModelTask:
    module, cls = TASKS[name].split(":")
    return getattr(import_module(module), cls)()
