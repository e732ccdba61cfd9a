"""`make evaluate`: every model against its strongest baseline on worlds it was not built on.

A benchmark, not a test. Each world is a synthetic world written as a user's
landing folder (raw tables only, no ``truth.*``) and run through the whole graph
exactly as `make run` runs a user's data, so the numbers are the gates' own: the
latest period's observed outcomes, model − strongest baseline with its paired
bootstrap 90 % interval. Prints one table (model × world) and writes it to
``$PULSE_EVAL_DIR/evaluation.md``.

    PULSE_EVAL_WORLDS=other_seed,short_90d make evaluate     # a subset
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import duckdb

from nn_models.forecasts import SERVES
from warehouse.synthetic import SyntheticConfig
from warehouse.synthetic_landing import write_landing

# name -> (generator config, share of users whose interactions are seen, what it checks)
WORLDS: dict[str, tuple[SyntheticConfig, float, str]] = {
    "other_seed": (
        SyntheticConfig(n_channels=12, n_days=120, n_users=1200, posts_per_day=5.0, seed=7),
        1.0,
        "seed 7, 5 posts/day, 12 channels: parameters not developed on",
    ),
    "short_90d": (
        SyntheticConfig(n_channels=16, n_days=90, n_users=1500, posts_per_day=3.0, seed=42),
        1.0,
        "90 days of history",
    ),
    "landing_only": (
        SyntheticConfig(n_channels=20, n_days=150, n_users=2000, posts_per_day=3.0, seed=5),
        1.0,
        "a landing folder as a user brings it (no truth tables)",
    ),
    "sparse_interactions": (
        SyntheticConfig(n_channels=14, n_days=120, n_users=2000, posts_per_day=3.0, seed=9),
        0.15,
        "interactions of 15 % of users only",
    ),
}

# the forecast table each model serves, to say who served it


def _fmt(x) -> str:
    return "–" if x is None else f"{x:+.3f}" if isinstance(x, float) else str(x)


def _model_row(world: str, model: str, meta: dict, served: dict) -> dict:
    """One table row from a model asset's materialization metadata."""
    status = meta.get("status", "not run")
    row = {"world": world, "model": model, "status": status, "served": served}
    if status != "registered":
        row["note"] = str(meta.get("skip_reason", ""))[:160]
        return row
    gates = meta.get("gates_json", [])
    data = meta.get("data", {})
    row["strongest"] = data.get("strongest_baseline", "?")
    row["baselines"] = {
        k.removeprefix("holdout/"): v
        for k, v in meta.items()
        if k.startswith("holdout/baseline_") and isinstance(v, float)
    }
    row["margins"] = [g for g in gates if g.get("lo") is not None]
    row["card"] = [g for g in gates if g.get("lo") is None]
    row["promoted"] = bool(meta.get("promoted"))
    row["note"] = str(meta.get("promotion_reason", ""))[:160]
    return row


def evaluate_world(name: str, root: Path, runner) -> list[dict]:
    from channel_assets.models import model_assets
    from resources.settings import load_settings

    cfg, share, _ = WORLDS[name]
    data_dir = root / name
    shutil.rmtree(data_dir, ignore_errors=True)
    write_landing(cfg, data_dir / "landing", interaction_user_share=share)
    env = {
        **os.environ,
        "PULSE_DATA_DIR": str(data_dir),
        "PULSE_SOURCE": "landing",
        "PULSE_LANDING_DIR": str(data_dir / "landing"),
        "PULSE_PROFILE": os.environ.get("PULSE_PROFILE", "demo"),
    }
    os.environ["DAGSTER_HOME"] = str(data_dir / "dagster_home")
    settings = load_settings(env)
    started = time.perf_counter()
    result = runner.execute(settings)
    print(
        f"  {name}: graph ran in {time.perf_counter() - started:.0f} s "
        f"({'ok' if result.success else 'FAILED'})",
        flush=True,
    )
    conn = duckdb.connect(str(settings.warehouse_path), read_only=True)
    rows = []
    for asset in model_assets:
        model = asset.key.to_user_string().removesuffix("_model")
        mats = result.asset_materializations_for_node(asset.key.to_user_string())
        meta = {k: v.value for k, v in mats[-1].metadata.items()} if mats else {}
        served = dict(
            conn.execute(f"SELECT source, count(*) FROM forecasts.{SERVES[model]} GROUP BY ALL").fetchall()
        )
        rows.append(_model_row(name, model, meta, served))
    conn.close()
    return rows


def render(rows: list[dict]) -> str:
    lines = [
        "| model | world | status | model − strongest baseline (90 % interval) | "
        "baselines on the holdout | card gates | promoted | served by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["model"], r["world"])):
        served = ", ".join(f"{k}: {v}" for k, v in sorted(r["served"].items())) or "empty"
        if r["status"] != "registered":
            lines.append(
                f"| {r['model']} | {r['world']} | {r['status']}: {r.get('note', '')} | | | | | {served} |"
            )
            continue
        margins = (
            "<br>".join(
                f"{g['name']}: {g['value']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}] "
                f"{'✓' if g['passed'] else '✗'}"
                for g in r["margins"]
            )
            or "–"
        )
        baselines = "<br>".join(f"{k}: {v:.3f}" for k, v in sorted(r["baselines"].items()))
        card = (
            "<br>".join(
                f"{g['name']}: {g['value']:.3f} vs {g['threshold']:.3f} {'✓' if g['passed'] else '✗'}"
                for g in r["card"]
            )
            or "–"
        )
        lines.append(
            f"| {r['model']} | {r['world']} | strongest: {r['strongest']} | {margins} | "
            f"{baselines} | {card} | {'yes' if r['promoted'] else 'no'} | {served} |"
        )
    return "\n".join(lines)


def main() -> None:
    root = Path(os.environ.get("PULSE_EVAL_DIR", "data/evaluate")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    names = [w for w in os.environ.get("PULSE_EVAL_WORLDS", ",".join(WORLDS)).split(",") if w]
    unknown = set(names) - set(WORLDS)
    if unknown:
        raise SystemExit(f"unknown world(s) {sorted(unknown)}; known: {', '.join(WORLDS)}")
    from scripts import run_pipeline as runner

    rows = []
    for name in names:
        cfg, share, what = WORLDS[name]
        print(f"== {name}: {what} ({dataclasses.asdict(cfg)}, interaction share {share})", flush=True)
        rows += evaluate_world(name, root, runner)
    table = render(rows)
    print(table)
    (root / "evaluation.md").write_text(table + "\n")
    (root / "evaluation.json").write_text(json.dumps(rows, indent=1, default=str))
    print(f"\nwritten to {root / 'evaluation.md'}")


if __name__ == "__main__":
    main()
