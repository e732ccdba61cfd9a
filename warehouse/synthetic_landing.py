"""A synthetic world written as a user's landing folder: raw tables only, no truth.

Real users bring files, not a generator: no ``truth.*`` tables, weeks rather than
half-years of history, sparse interactions. ``make evaluate`` and the end-to-end
tests use this to check every model on data shaped like that, through the same
landing loader a user's files go through.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from warehouse import synthetic

RAW_PREFIX = "raw."


def sparsify_interactions(frame: pd.DataFrame, user_share: float, seed: int) -> pd.DataFrame:
    """Keep the interactions of a seeded ``user_share`` of users (real data sees few of them:
    commenters in a linked group, reactions), so most users leave no trace at all."""
    if user_share >= 1.0 or frame.empty:
        return frame
    users = np.sort(frame["user_id"].unique())
    rng = np.random.default_rng(seed)
    kept = rng.choice(users, size=max(1, int(round(len(users) * user_share))), replace=False)
    return frame[frame["user_id"].isin(kept)].reset_index(drop=True)


def write_landing(
    cfg: synthetic.SyntheticConfig,
    folder: str | Path,
    *,
    interaction_user_share: float = 1.0,
) -> dict[str, int]:
    """Generate ``cfg``'s world and write its raw tables as ``<table>.parquet`` in ``folder``.

    Returns rows written per table. The truth tables are not written: a landing folder
    never has them.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    world = synthetic.generate(cfg)
    written = {}
    for name, frame in world.tables().items():
        if not name.startswith(RAW_PREFIX):
            continue
        table = name[len(RAW_PREFIX) :]
        if table == "interactions":
            frame = sparsify_interactions(frame, interaction_user_share, cfg.seed)
        frame.to_parquet(folder / f"{table}.parquet", index=False)
        written[table] = len(frame)
    return written
