"""`make bench`: every benchmark, each printed as a ratio against its named baseline.

Sizes for the feature benchmark come from PULSE_BENCH_SIZES (default tiny,demo;
add `large` for the ≥ 10 M snapshot run, which takes minutes and ~4 GB).
"""

from __future__ import annotations

import os

from benchmarks import bench_api, bench_features, bench_inference, bench_pipeline


def main() -> None:
    sections = [
        (
            "feature SQL and generator",
            lambda: [
                line
                for size in os.environ.get("PULSE_BENCH_SIZES", "tiny,demo").split(",")
                for line in bench_features.run(size)
            ],
        ),
        ("inference", bench_inference.run),
        ("REST API", bench_api.run),
        ("pipeline", bench_pipeline.run),
    ]
    for title, fn in sections:
        print(f"== {title}", flush=True)
        for line in fn():
            print(line, flush=True)


if __name__ == "__main__":
    main()
