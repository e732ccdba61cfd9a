"""Helpers shared by the benchmarks: timing, percentiles, peak memory, a warehouse per size."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np

from warehouse import features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame


def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def percentiles_ms(samples_s: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples_s) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_warehouse(path: Path, size: str, seed: int = 42, with_features: bool = True) -> dict:
    """Generate ``size`` into a fresh DuckDB file; returns timings and row counts."""
    if path.exists():
        path.unlink()
    conn = duckdb.connect(str(path))
    ensure_schema(conn)
    gen_s, world = timed(synthetic.generate, synthetic.config_for(size, seed=seed))
    load_start = time.perf_counter()
    for name, frame in world.tables().items():
        upsert_frame(conn, name, frame)
    load_s = time.perf_counter() - load_start
    out = {
        "generate_s": gen_s,
        "load_s": load_s,
        "snapshots": len(world.post_snapshots),
        "posts": len(world.posts),
    }
    del world
    if with_features:
        per_table = {}
        for name in features.FEATURE_TABLES:
            per_table[name], _ = timed(features.build_feature_table, conn, name)
        out["features_s"] = per_table
    conn.close()
    return out


def ratio_line(
    name: str,
    value: float,
    baseline_name: str,
    baseline: float,
    unit: str = "s",
    higher_is_better: bool = False,
) -> str:
    ratio = (value / baseline) if higher_is_better else (baseline / value if value else float("inf"))
    return (
        f"{name}: {value:.4g} {unit} vs {baseline_name} {baseline:.4g} {unit} "
        f"→ {ratio:.2f}× {'better' if ratio >= 1 else 'WORSE'}"
    )
