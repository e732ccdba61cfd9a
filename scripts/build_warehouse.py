"""Build raw + feature tables without Dagster (for model development and benchmarks).

.venv/bin/python scripts/build_warehouse.py --data-dir /tmp/pulse_demo --size demo [--embeddings]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import duckdb

from warehouse import embeddings, features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--size", default="demo")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--embeddings", action="store_true")
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(data_dir / "warehouse.duckdb"))
    ensure_schema(conn)
    t = time.perf_counter()
    world = synthetic.generate(synthetic.config_for(args.size, seed=args.seed))
    print(f"generated in {time.perf_counter() - t:.1f}s")
    for name, frame in world.tables().items():
        upsert_frame(conn, name, frame)
        print(f"  {name}: {len(frame):,}")
    for name in features.FEATURE_TABLES:
        t = time.perf_counter()
        rows = features.build_feature_table(conn, name)
        print(f"  features.{name}: {rows:,} rows in {time.perf_counter() - t:.1f}s")
    if args.embeddings:
        t = time.perf_counter()
        added = embeddings.embed_new_texts(conn, progress=lambda d, n: None)
        print(f"  features.post_text_embeddings: +{added:,} in {time.perf_counter() - t:.1f}s")
    conn.close()


if __name__ == "__main__":
    main()
