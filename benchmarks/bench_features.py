"""Feature SQL in DuckDB vs the same computation in pandas, on the same data in one run.

The compared query: for every post, views at 1/3/6/12/24/48 h by the as-of rule
(last snapshot ≤ age + 5 min, only once the post was observed that old) and the
within-channel percentile of 48 h views — the heart of ``features.post_features``.
Both results are checked equal before timing is reported.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from benchmarks.common import build_warehouse, peak_rss_mb, ratio_line, timed

AGES_H = (1, 3, 6, 12, 24, 48)
TOL = pd.Timedelta(minutes=5)

# One hash join (snapshots -> their post's publish time) and one hash aggregate per post:
# the as-of value at h is the views of the latest snapshot at an age <= h + 5 min
# (arg_max_null keeps that row's value even when it is NULL, as the ASOF join does),
# and "observed that old" is the largest age, all in the same GROUP BY; ages are
# integer microseconds (epoch_us difference), so no interval arithmetic per row.
DUCKDB_SQL = """
WITH aged AS (
    SELECT s.channel_id, s.post_id, s.views,
           epoch_us(s.observed_at) - epoch_us(p.published_at) AS age_us
    FROM raw.post_snapshots s JOIN raw.posts p USING (channel_id, post_id)
),
per_post AS (  -- constants: (h * 60 +- 5) minutes in microseconds
    SELECT channel_id, post_id, max(age_us) AS last_age_us,
           arg_max_null(views, age_us) FILTER (WHERE age_us <= 3900000000) AS a1,
           arg_max_null(views, age_us) FILTER (WHERE age_us <= 11100000000) AS a3,
           arg_max_null(views, age_us) FILTER (WHERE age_us <= 21900000000) AS a6,
           arg_max_null(views, age_us) FILTER (WHERE age_us <= 43500000000) AS a12,
           arg_max_null(views, age_us) FILTER (WHERE age_us <= 86700000000) AS a24,
           arg_max_null(views, age_us) FILTER (WHERE age_us <= 173100000000) AS a48
    FROM aged GROUP BY channel_id, post_id
),
wide AS (
    SELECT channel_id, post_id,
           CASE WHEN last_age_us >= 3300000000 THEN a1 END AS v1,
           CASE WHEN last_age_us >= 10500000000 THEN a3 END AS v3,
           CASE WHEN last_age_us >= 21300000000 THEN a6 END AS v6,
           CASE WHEN last_age_us >= 42900000000 THEN a12 END AS v12,
           CASE WHEN last_age_us >= 86100000000 THEN a24 END AS v24,
           CASE WHEN last_age_us >= 172500000000 THEN a48 END AS v48
    FROM per_post
)
SELECT channel_id, post_id, v1, v3, v6, v12, v24, v48,
       CASE WHEN v48 IS NOT NULL THEN percent_rank() OVER (
            PARTITION BY channel_id, (v48 IS NULL) ORDER BY v48) END AS pct48
FROM wide ORDER BY channel_id, post_id
"""

# The previous formulation (probes x ages, ASOF LEFT JOIN, PIVOT), timed beside it.
ASOF_SQL = """
WITH probes AS (
    SELECT p.channel_id, p.post_id, p.published_at, a.h,
           p.published_at + to_minutes(a.h * 60 + 5) AS lookup_at
    FROM raw.posts p, (SELECT unnest([1, 3, 6, 12, 24, 48]) AS h) a
),
last_seen AS (
    SELECT channel_id, post_id, max(observed_at) AS last_observed_at
    FROM raw.post_snapshots GROUP BY ALL
),
as_of_views AS (
    SELECT pr.channel_id, pr.post_id, pr.h,
           CASE WHEN l.last_observed_at >= pr.published_at + to_minutes(pr.h * 60 - 5)
                THEN s.views END AS views
    FROM probes pr
    JOIN last_seen l USING (channel_id, post_id)
    ASOF LEFT JOIN raw.post_snapshots s
      ON pr.channel_id = s.channel_id AND pr.post_id = s.post_id AND pr.lookup_at >= s.observed_at
),
wide AS (
    PIVOT as_of_views ON h IN (1, 3, 6, 12, 24, 48) USING first(views) GROUP BY channel_id, post_id
)
SELECT channel_id, post_id, "1" AS v1, "3" AS v3, "6" AS v6, "12" AS v12, "24" AS v24, "48" AS v48,
       CASE WHEN "48" IS NOT NULL THEN percent_rank() OVER (
            PARTITION BY channel_id, ("48" IS NULL) ORDER BY "48") END AS pct48
FROM wide ORDER BY channel_id, post_id
"""


def pandas_features(posts: pd.DataFrame, snaps: pd.DataFrame) -> pd.DataFrame:
    """The same computation with pandas (merge_asof per age)."""
    snaps = snaps.assign(observed_at=snaps["observed_at"].astype("datetime64[ns]"))
    posts = posts.assign(published_at=posts["published_at"].astype("datetime64[ns]"))
    snaps = snaps.sort_values("observed_at")
    last = snaps.groupby(["channel_id", "post_id"], as_index=False)["observed_at"].max()
    last = last.rename(columns={"observed_at": "last_observed_at"})
    base = posts[["channel_id", "post_id", "published_at"]].merge(last, on=["channel_id", "post_id"])
    out = base[["channel_id", "post_id"]].copy()
    for h in AGES_H:
        probe = base.assign(lookup_at=base["published_at"] + pd.Timedelta(hours=h) + TOL)
        probe = probe.sort_values("lookup_at")
        joined = pd.merge_asof(
            probe,
            snaps[["channel_id", "post_id", "observed_at", "views"]],
            left_on="lookup_at",
            right_on="observed_at",
            by=["channel_id", "post_id"],
            direction="backward",
        )
        seen = joined["last_observed_at"] >= joined["published_at"] + pd.Timedelta(hours=h) - TOL
        joined["v"] = joined["views"].where(seen)
        out = out.merge(
            joined[["channel_id", "post_id", "v"]].rename(columns={"v": f"v{h}"}),
            on=["channel_id", "post_id"],
        )
    known = out["v48"].notna()
    ranks = out[known].groupby("channel_id")["v48"].rank(method="min")
    sizes = out[known].groupby("channel_id")["v48"].transform("size")
    out["pct48"] = np.nan
    out.loc[known, "pct48"] = ((ranks - 1) / (sizes - 1).replace(0, np.nan)).fillna(0.0)
    return out.sort_values(["channel_id", "post_id"]).reset_index(drop=True)


def _check_equal(got: pd.DataFrame, want: pd.DataFrame, name: str) -> None:
    if len(got) != len(want):
        raise AssertionError(f"{name}: {len(got)} rows vs {len(want)}")
    for col in ("channel_id", "post_id", "v1", "v3", "v6", "v12", "v24", "v48", "pct48"):
        a = pd.to_numeric(got[col], errors="coerce").to_numpy(dtype=float)
        b = pd.to_numeric(want[col], errors="coerce").to_numpy(dtype=float)
        if not np.allclose(a, b, equal_nan=True):
            raise AssertionError(f"{name} and pandas disagree on {col}")


def time_queries(conn: duckdb.DuckDBPyConnection, repeat: int = 1) -> dict[str, float]:
    """Median seconds of the DuckDB SQL, the ASOF-join SQL and pandas; all results checked equal."""
    posts = conn.execute("SELECT channel_id, post_id, published_at FROM raw.posts").fetchdf()
    snaps = conn.execute("SELECT channel_id, post_id, observed_at, views FROM raw.post_snapshots").fetchdf()
    samples: dict[str, list[float]] = {"duckdb": [], "asof": [], "pandas": []}
    for _ in range(repeat):  # interleaved, so background load hits all three alike
        duck_s, duck = timed(lambda: conn.execute(DUCKDB_SQL).fetchdf())
        asof_s, asof = timed(lambda: conn.execute(ASOF_SQL).fetchdf())
        pandas_s, pdf = timed(pandas_features, posts, snaps)
        _check_equal(duck, pdf, "DuckDB SQL")
        _check_equal(asof, pdf, "ASOF-join SQL")
        for key, value in (("duckdb", duck_s), ("asof", asof_s), ("pandas", pandas_s)):
            samples[key].append(value)
    out = {key: float(np.median(values)) for key, values in samples.items()}
    out["posts"] = float(len(pdf))
    return out


def _ratio_lines(size: str, t: dict[str, float], repeat: int) -> list[str]:
    note = f" (results equal, {int(t['posts']):,} posts, median of {repeat})"
    return [
        f"[{size}] "
        + ratio_line("as-of features DuckDB SQL", t["duckdb"], "pandas merge_asof", t["pandas"])
        + note,
        f"[{size}] "
        + ratio_line("as-of features DuckDB SQL", t["duckdb"], "the ASOF JOIN + PIVOT SQL", t["asof"])
        + note,
    ]


def run(size: str, repeat: int = 1) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        built = build_warehouse(path, size, with_features=True)
        conn = duckdb.connect(str(path), read_only=True)
        times = time_queries(conn, repeat)
        conn.close()
    feats = built["features_s"]
    lines.append(
        f"[{size}] generator: {built['generate_s']:.1f} s for {built['snapshots']:,} "
        f"snapshots ({built['snapshots'] / built['generate_s']:,.0f} rows/s); "
        f"load into DuckDB {built['load_s']:.1f} s"
    )
    lines.append(
        f"[{size}] all feature tables: {sum(feats.values()):.1f} s "
        + ", ".join(f"{k} {v:.1f}s" for k, v in feats.items())
    )
    lines.extend(_ratio_lines(size, times, repeat))
    lines.append(f"[{size}] peak RSS {peak_rss_mb():,.0f} MB")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="tiny,demo")
    parser.add_argument("--repeat", type=int, default=1, help="runs per query; medians are reported")
    parser.add_argument(
        "--warehouse",
        type=Path,
        help="time the queries on this existing warehouse (opened read-only) instead of building sizes",
    )
    args = parser.parse_args()
    if args.warehouse:
        conn = duckdb.connect(str(args.warehouse), read_only=True)
        times = time_queries(conn, args.repeat)
        conn.close()
        for line in _ratio_lines(args.warehouse.name, times, args.repeat):
            print(line, flush=True)
        return
    for size in args.sizes.split(","):
        for line in run(size, args.repeat):
            print(line, flush=True)


if __name__ == "__main__":
    main()
