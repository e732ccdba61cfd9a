"""How every job runs its steps: independent steps in parallel processes.

Dagster's multiprocess executor, ``max_concurrent`` steps at a time (PULSE_MAX_CONCURRENT,
one per core by default); the ``duckdb`` pool still lets one warehouse writer run at a
time. Step processes fork from a server that has already imported the heavy libraries
(importing them costs ~20 s per process on two cores); our own modules are imported in
each step after its environment is set (``channel_assets.run_job``), so module-level
settings are never those of an earlier run.
"""

import dagster as dg

# third-party modules only: anything that reads PULSE_* at import must not be preloaded
PRELOAD_MODULES = (
    "dagster",
    "duckdb",
    "pandas",
    "pyarrow",
    "numpy",
    "torch",
    "sklearn.linear_model",
    "sklearn.feature_extraction.text",
    "mlflow",
    "mlflow.pytorch",
    "optuna",
    "statsforecast",
    "onnxruntime",
    "matplotlib.pyplot",
    "transformers",
    "evidently",
)


# When more steps are ready than slots, higher runs first: the cheap feature tables that
# unblock others, then the longest chains (trajectories → engagement, the MiniLM pass →
# the text models), so two cores stay busy to the end. Unlisted steps: 0.
PRIORITY: dict[str, int] = {
    "raw_data_checks": 10,
    "post_features": 10,
    "post_text_embeddings": 9,
    "post_trajectories": 9,
    "channel_daily_features": 8,
    "user_behavior_features": 8,
    "engagement_model": 7,
    "growth_model": 6,
    "content_model": 5,
    "viral_model": 5,
    "behavior_model": 4,
    "schedule_model": 4,
    "feature_drift": -5,
    "channel_exports": -5,
}


def priority(step: str) -> dict[str, str]:
    """The op tag Dagster's executors order ready steps by."""
    return {"dagster/priority": str(PRIORITY.get(step, 0))}


def step_executor(max_concurrent: int) -> dg.ExecutorDefinition:
    return dg.multiprocess_executor.configured(
        {
            "max_concurrent": max_concurrent,
            "start_method": {"forkserver": {"preload_modules": list(PRELOAD_MODULES)}},
        },
        name="parallel_steps",
    )
