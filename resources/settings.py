"""Environment configuration (DESIGN §7), read once with documented defaults.

Dagster's ``EnvVar`` fails when a variable is unset; Channel Pulse must run from
a fresh clone with nothing set, so the defaults live here and the resolved values
are passed into the resources (and show up in the Dagster UI's resource config).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SOURCES = ("synthetic", "landing", "telegram")
SIZES = ("tiny", "demo", "large")
EXECUTORS = ("multiprocess", "in_process")
PROFILES = ("tiny", "demo", "full")


@dataclass(frozen=True)
class PulseSettings:
    data_dir: Path
    source: str
    landing_dir: Path
    size: str
    seed: int
    device: str = "auto"
    profile: str = "demo"
    # scale-out overrides (deploy/k8s): same code, other backends
    mlflow_uri_override: str = ""
    mlflow_artifacts_override: str = ""
    optuna_uri_override: str = ""
    parquet_uri_override: str = ""
    telegram_channels: tuple[str, ...] = ()
    # how steps run: "multiprocess" (independent steps in parallel processes, `make run`,
    # `make dev`) or "in_process" (one process, steps in order: tests that patch code)
    executor: str = "multiprocess"
    max_concurrent: int = 0  # steps at once; 0 = one per CPU core

    @property
    def parallel_steps(self) -> int:
        return self.max_concurrent or max(1, os.cpu_count() or 1)

    @property
    def step_cpu_threads(self) -> int:
        """torch intra-op threads per step: the cores shared by the steps that run at once."""
        return max(1, (os.cpu_count() or 1) // self.parallel_steps)

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_uri_override or f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> str:
        return self.mlflow_artifacts_override or str(self.data_dir / "mlartifacts")

    @property
    def optuna_uri(self) -> str:
        return self.optuna_uri_override or f"sqlite:///{self.data_dir / 'optuna.db'}"

    @property
    def parquet_uri(self) -> str:
        """Where published tables go for readers (a folder, or s3://… with httpfs)."""
        return self.parquet_uri_override or str(self.data_dir / "published")


def load_settings(env: dict[str, str] | None = None) -> PulseSettings:
    """Resolve PULSE_* variables, validating the enumerations early with clear errors."""
    env = dict(os.environ if env is None else env)
    data_dir = Path(env.get("PULSE_DATA_DIR") or "data").resolve()
    source = env.get("PULSE_SOURCE") or "synthetic"
    size = env.get("PULSE_SIZE") or "demo"
    if source not in SOURCES:
        raise ValueError(f"PULSE_SOURCE={source!r}: expected one of {SOURCES}")
    if size not in SIZES:
        raise ValueError(f"PULSE_SIZE={size!r}: expected one of {SIZES}")
    try:
        seed = int(env.get("PULSE_SEED") or 42)
    except ValueError as exc:
        raise ValueError(f"PULSE_SEED={env.get('PULSE_SEED')!r} is not an integer") from exc
    landing = Path(env.get("PULSE_LANDING_DIR") or data_dir / "landing").resolve()
    device = env.get("PULSE_DEVICE") or "auto"
    profile = env.get("PULSE_PROFILE") or ("tiny" if size == "tiny" else "demo")
    if profile not in PROFILES:
        raise ValueError(f"PULSE_PROFILE={profile!r}: expected one of {PROFILES}")
    executor = env.get("PULSE_EXECUTOR") or "multiprocess"
    if executor not in EXECUTORS:
        raise ValueError(f"PULSE_EXECUTOR={executor!r}: expected one of {EXECUTORS}")
    raw_concurrent = env.get("PULSE_MAX_CONCURRENT") or "0"
    try:
        max_concurrent = int(raw_concurrent)
    except ValueError as exc:
        raise ValueError(f"PULSE_MAX_CONCURRENT={raw_concurrent!r} is not an integer") from exc
    if max_concurrent < 0:
        raise ValueError(f"PULSE_MAX_CONCURRENT={max_concurrent}: expected 0 (one per core) or more")
    return PulseSettings(
        data_dir=data_dir,
        source=source,
        landing_dir=landing,
        size=size,
        seed=seed,
        device=device,
        profile=profile,
        mlflow_uri_override=env.get("PULSE_MLFLOW_URI", ""),
        mlflow_artifacts_override=env.get("PULSE_MLFLOW_ARTIFACTS", ""),
        optuna_uri_override=env.get("PULSE_OPTUNA_URI", ""),
        parquet_uri_override=env.get("PULSE_PARQUET_URI", ""),
        executor=executor,
        max_concurrent=max_concurrent,
        telegram_channels=tuple(
            c.strip() for c in (env.get("PULSE_TELEGRAM_CHANNELS") or "").split(",") if c.strip()
        ),
    )
