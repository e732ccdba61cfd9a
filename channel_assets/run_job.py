"""The reconstructable job `make run` launches: built in each step process from the run's env.

``dg.build_reconstructable_job`` calls :func:`everything_job` in every step process with
the PULSE_* settings of the run, so a step never reads a stale environment (the step
processes fork from a server started by the first run of the process; see
``channel_assets.executor``).
"""

from __future__ import annotations

import os

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableJob  # the type build_* returns

ENV_PREFIXES = ("PULSE_", "DAGSTER_HOME")


def run_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The variables that decide what a run does (what the step processes must see)."""
    env = dict(os.environ if env is None else env)
    return {k: v for k, v in env.items() if k.startswith(ENV_PREFIXES)}


def everything_job(env: dict[str, str]) -> dg.JobDefinition:
    for key in [k for k in os.environ if k.startswith(ENV_PREFIXES) and k not in env]:
        del os.environ[key]
    os.environ.update(env)
    from channel_assets.definitions import build_definitions
    from resources.settings import load_settings

    return build_definitions(load_settings()).resolve_job_def("everything_job")


def reconstructable_everything_job(env: dict[str, str]) -> ReconstructableJob:
    return dg.build_reconstructable_job(
        "channel_assets.run_job", "everything_job", reconstructable_kwargs={"env": env}
    )
