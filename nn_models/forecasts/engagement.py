"""``post_engagement_forecasts`` and the per-request engagement prediction.

Young posts (no 48 h value yet, at least one point of ``features.post_trajectories``)
are scored from their observed prefix of the grid (every 15 min to 3 h, hourly to
24 h, then 30/36/42 h), i.e. from their latest snapshot, exactly as at training: the
sequence and static arrays come from the task's own builders (``trajectory_counters``,
``sequence_features``, ``static_features``, ``model_growth`` in
``nn_models.tasks.engagement``) and the model sees ``length`` = the grid points the
post has reached. Its outputs are

* ``engagement_score``: the predicted percentile of the post's 48 h views among its
  channel's earlier posts (> 0.5 = above the channel's prior median);
* p10/p50/p90 of 48 h views and interactions, in ``log1p`` space from the model and
  turned back into counts here (``expm1``).

Without an ``engagement`` champion (or when it cannot score the current inputs) every
young post is served by the strongest baseline instead (``source`` = ``baseline``
with a ``fallback_reason``): ``nn_models.baselines_engagement`` tuned at scoring time
on the labelled history in the warehouse (the latest ``VALIDATION_SHARE`` of it is the
validation period), the rule chosen per age bucket, its interval from the 10th/90th
percentiles of its validation log errors and its score ``P(above the median)`` from
their spread. ``model_name`` then names the rule (``baseline:channel_growth``).

A draft (``predict_post`` with ``snapshots``) is put on the same grid with the rule of
``warehouse/sql/post_trajectories.sql``: the value at grid age ``g`` is the last
snapshot at or before ``g + 5`` min, and ``g`` counts as reached once a snapshot at
``g - 5`` min or later exists. Its static context (subscribers at publication, the
channel's prior median 48 h views and how many posts it rests on) follows
``post_features.sql``, read from the published feature tables. ``predict_post`` takes
``model=None`` and then answers from the baseline the same way.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from nn_models.baselines_engagement import (
    BUCKETS,
    LABELS,
    RULES,
    EngagementBaselines,
    GridPosts,
    GrowthIndex,
    bucket_of,
    fit_baselines,
    shrunk_growth,
)
from nn_models.champions import LoadedModel
from nn_models.forecasts.base import (
    LINEAGE_COLUMNS,
    Champions,
    ForecastResult,
    missing_champion,
    stamp,
)
from nn_models.service import InvalidInput
from nn_models.task import InsufficientData
from nn_models.tasks.engagement import (
    CHANNEL_CURVE_SQL,
    GRID_MINUTES,
    HOURS,
    MEDIA,
    MODEL_GROWTH_SHRINK,
    VALIDATION_SHARE,
    channel_curve_at,
    grid_posts,
    load_labelled,
    model_growth,
    sequence_features,
    static_features,
    trajectory_counters,
    with_channel_curves,
)
from warehouse.features import AS_OF_TOLERANCE_MINUTES
from warehouse.publish import PublishedReader, table_path

TABLE = "post_engagement_forecasts"
COLUMNS = [
    "channel_id",
    "post_id",
    "hours_observed",
    "engagement_score",
    "predicted_views_48h",
    "views_48h_lo",
    "views_48h_hi",
]
EXTRA_COLUMNS = [
    "predicted_interactions_48h",
    "interactions_48h_lo",
    "interactions_48h_hi",
    "views_observed",
    "grid_hours_used",
    "published_at",
]
BATCH = 4096
# The baseline ranks a post against its channel's prior median 48 h views, which
# post_features.sql defines from this many earlier posts (the label's own minimum).
MIN_PRIOR_POSTS_48H = 5
COUNTERS = ("views", "forwards", "replies", "reactions")

# What the static builder reads (the columns of features.post_features it needs).
_POST_COLUMNS = """
    channel_id, post_id, published_at, weekday, hour, media_type, text_length,
    subscribers_at_publish, channel_prior_posts_48h, channel_prior_median_views_48h,
    hours_observed, views_latest, views_48h, interactions_48h
"""

YOUNG_POSTS_SQL = f"""
SELECT {_POST_COLUMNS}
FROM features.post_features AS p
WHERE p.views_48h IS NULL
  AND EXISTS (SELECT 1 FROM features.post_trajectories AS t
              WHERE t.channel_id = p.channel_id AND t.post_id = p.post_id)
ORDER BY channel_id, post_id
"""

YOUNG_TRAJECTORIES_SQL = """
SELECT t.channel_id, t.post_id, t.age_minutes, t.views, t.forwards, t.replies, t.reactions
FROM features.post_trajectories AS t
SEMI JOIN features.post_features AS p
    ON t.channel_id = p.channel_id AND t.post_id = p.post_id AND p.views_48h IS NULL
"""

# Every post and every trajectory point, for the per-request state (RequestState).
ALL_POSTS_SQL = f"SELECT {_POST_COLUMNS} FROM features.post_features"
ALL_TRAJECTORIES_SQL = """
SELECT channel_id, post_id, age_minutes, views, forwards, replies, reactions
FROM features.post_trajectories
"""

# Static context of a draft, as post_features.sql computes it for a published post.
SUBSCRIBERS_SQL = """
SELECT subscribers FROM features.channel_daily_features
WHERE channel_id = ? AND day <= CAST(? AS DATE)
ORDER BY day DESC LIMIT 1
"""
PRIOR_SQL = """
SELECT count(views_48h) AS prior_posts, median(views_48h) AS prior_median
FROM features.post_features
WHERE channel_id = ? AND published_at <= CAST(? AS TIMESTAMP) - INTERVAL '48 hours 5 minutes'
"""


# --------------------------------------------------------------------------- scoring core


def _stamped(
    frame: pd.DataFrame,
    model: LoadedModel | None,
    scored_at: datetime,
    fallback_reason: str | None = None,
    rules: np.ndarray | None = None,
) -> pd.DataFrame:
    """DESIGN columns, then the lineage columns, then the extras (text columns typed as
    strings so an empty frame still becomes VARCHAR, not NULL-typed, in DuckDB).
    Baseline rows name their rule in ``model_name`` (``rules``: index into ``RULES``)."""
    out = stamp(frame, model, scored_at, fallback_reason=fallback_reason)
    if model is None and rules is not None and len(out):
        out["model_name"] = pd.Series(
            [f"baseline:{RULES[r]}" for r in rules], index=out.index, dtype="string"
        )
    out = out[[*COLUMNS, *LINEAGE_COLUMNS, *EXTRA_COLUMNS]]
    return out.astype({"model_name": "string", "model_version": "string"})


def _empty() -> pd.DataFrame:
    types = {"channel_id": "int64", "post_id": "int64", "published_at": "datetime64[us]"}
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, "float64")) for c in COLUMNS + EXTRA_COLUMNS})


def build_inputs(
    posts: pd.DataFrame,
    trajectories: pd.DataFrame,
    history: GridPosts,
    growth_index: GrowthIndex | None = None,
) -> dict[str, np.ndarray]:
    """Model inputs with the task's builders: full-grid ``sequence``, observed ``length``
    (grid points reached, 0 = none), ``static``; ``grid`` (the posts as ``GridPosts``,
    for the baseline) rides along. ``history``: the labelled posts (``labelled_history``)
    the channel's growth to 48 h is measured on; ``growth_index`` (over ``history``, for
    a request) gives the same growth as ``model_growth`` by lookup."""
    counters, length = trajectory_counters(posts, trajectories)
    grid = grid_posts(posts, counters)
    if growth_index is None:
        growth = model_growth(history, grid)
    else:
        assert growth_index.history is history, "the index must be over this history"
        growth = shrunk_growth(growth_index.prior_growth(grid, "views"), MODEL_GROWTH_SHRINK)
    return {
        "sequence": sequence_features(counters, posts, growth),
        "length": length.astype(np.int64),
        "static": static_features(posts),
        "grid": grid,
    }  # type: ignore[dict-item]


def run_model(model: LoadedModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Score in batches; quantiles come back as counts (``expm1`` of the log1p outputs)."""
    n = len(inputs["length"])
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, n, BATCH):
        sl = slice(start, start + BATCH)
        parts.append(
            model.run(
                sequence=np.ascontiguousarray(inputs["sequence"][sl]),
                length=np.ascontiguousarray(inputs["length"][sl]),
                static=np.ascontiguousarray(inputs["static"][sl]),
            )
        )
    score, log_views, log_interactions = (np.concatenate(p) for p in zip(*parts, strict=True))
    return {
        "score": score.astype(np.float64),
        "views": np.expm1(log_views.astype(np.float64)),
        "interactions": np.expm1(log_interactions.astype(np.float64)),
    }


def labelled_history(conn: duckdb.DuckDBPyConnection) -> GridPosts:
    """Every post with a known 48 h count, on the grid: what the channel-growth rule and
    the model's growth input are measured on, and what the baseline is tuned on."""
    posts, counters, _ = load_labelled(conn)
    return grid_posts(posts, counters)


def fit_scoring_baselines(history: GridPosts) -> EngagementBaselines:
    """The baselines tuned now on the warehouse's labelled posts: validation = the latest
    ``VALIDATION_SHARE`` of their time span, Szabo–Huberman fitted on the earlier ones
    and then refitted on all of them."""
    t = history.published_s
    cut = t.min() + (1 - VALIDATION_SHARE) * (t.max() - t.min())
    fit_rows, val_rows = np.flatnonzero(t < cut), np.flatnonzero(t >= cut)
    assert history.above is not None, "labelled_history carries the label"
    return fit_baselines(history, history.above, GRID_MINUTES, fit_rows, val_rows, np.arange(len(history)))


_CACHE: dict[tuple, tuple[GridPosts, EngagementBaselines | None]] = {}
# the content the labelled history is read from (posts and their trajectories); a
# connection's id is no key: ids are reused once a connection is collected
_FINGERPRINT_SQL = """
SELECT (SELECT count(*) FROM features.post_features),
       (SELECT sum(hash(channel_id, post_id, published_at, views_48h, above_channel_median,
                        channel_prior_median_views_48h)) FROM features.post_features),
       (SELECT count(*) FROM features.post_trajectories),
       (SELECT sum(hash(channel_id, post_id, age_minutes, views, forwards, replies, reactions))
        FROM features.post_trajectories)
"""


def scoring_baselines(conn: duckdb.DuckDBPyConnection) -> tuple[GridPosts, EngagementBaselines | None]:
    """(labelled history, tuned baselines or None without labelled posts), cached per
    warehouse content (per-request calls must not re-tune every time)."""
    key = tuple(conn.execute(_FINGERPRINT_SQL).fetchall()[0])
    if key not in _CACHE:
        history = labelled_history(conn)
        baselines = fit_scoring_baselines(history) if len(history) else None
        _CACHE.clear()
        _CACHE[key] = (history, baselines)
    return _CACHE[key]


def run_baseline(
    baselines: EngagementBaselines, grid: GridPosts, length: np.ndarray
) -> dict[str, np.ndarray]:
    """The strongest rule of each post's age bucket at its last reached grid point:
    score, views and interactions p10/p50/p90 as counts, and the rule used."""
    out = baselines.predict(grid)
    rows = np.arange(len(length))
    step = np.clip(length - 1, 0, None)
    pick = lambda key: out[key][rows, step]  # noqa: E731
    return {
        "score": pick("score"),
        "views": np.expm1(np.stack([pick("lo"), pick("log_views"), pick("hi")], axis=1)),
        "interactions": np.expm1(
            np.stack([pick("inter_lo"), pick("log_interactions"), pick("inter_hi")], axis=1)
        ),
        "rule": pick("rule"),
    }


def _baseline_note(baselines: EngagementBaselines) -> str:
    return "; ".join(
        f"{b}: {baselines.strongest[b]} (validation accuracy "
        f"{baselines.fits[baselines.strongest[b]][b].val_accuracy:.3f})"
        for b in BUCKETS
    )


def score(conn: duckdb.DuckDBPyConnection, champions: Champions, scored_at: datetime) -> ForecastResult:
    """Every young post (no 48 h value yet, >= 1 trajectory point), scored in batches by
    the champion, or by the strongest baseline when there is none or it cannot score."""
    model = champions.get("engagement")
    reason = missing_champion(TABLE, ("engagement",), champions)
    models = {"engagement": model.version} if model is not None else {}
    try:
        posts = conn.execute(YOUNG_POSTS_SQL).fetchdf()
        trajectories = conn.execute(YOUNG_TRAJECTORIES_SQL).fetchdf()
        history, baselines = scoring_baselines(conn)
    except (duckdb.CatalogException, InsufficientData) as exc:
        return ForecastResult(
            _stamped(_empty(), model, scored_at, reason),
            notes={"skipped": f"{TABLE}: feature tables missing ({exc})"},
            models=models,
        )
    notes: dict[str, str] = {}
    if posts.empty:
        notes["empty"] = f"{TABLE}: no young posts (every post with a trajectory already has its 48 h value)"
        return ForecastResult(_stamped(_empty(), model, scored_at, reason), notes=notes, models=models)
    posts = with_channel_curves(conn, posts)
    inputs = build_inputs(posts, trajectories, history)
    grid: GridPosts = inputs.pop("grid")  # type: ignore[assignment]
    keep = inputs["length"] > 0  # a trajectory row always reaches its grid point
    if not keep.all():
        notes["no_grid_point"] = f"{int((~keep).sum())} young posts reached no grid point"
        posts = posts[keep].reset_index(drop=True)
        inputs = {k: v[keep] for k, v in inputs.items()}
        grid = grid.take(np.flatnonzero(keep))
    out: dict[str, np.ndarray] | None = None
    if model is not None:
        try:
            out = run_model(model, inputs)
        except Exception as exc:  # a champion of an older input schema must not empty the table
            reason = (
                f"{TABLE}: champion v{model.version} of engagement cannot score the "
                f"current inputs ({type(exc).__name__}: {str(exc)[:200]})"
            )
            notes["champion_failed"] = reason
            models, model = {}, None
    if out is None:
        if baselines is None:
            notes["skipped"] = (
                f"{reason}; no post in the warehouse has a known 48 h count, "
                "so no baseline can be measured either"
            )
            return ForecastResult(_stamped(_empty(), None, scored_at, reason), notes=notes)
        out = run_baseline(baselines, grid, inputs["length"])
        reason = (
            f"{reason}; served by the strongest baseline per age bucket, tuned on the latest labelled posts"
        )
        notes["no_champion"] = reason
        notes["baseline"] = _baseline_note(baselines)
    frame = pd.DataFrame(
        {
            "channel_id": posts["channel_id"].astype("int64"),
            "post_id": posts["post_id"].astype("int64"),
            "hours_observed": posts["hours_observed"].astype("float64"),
            "engagement_score": out["score"],
            "predicted_views_48h": out["views"][:, 1],
            "views_48h_lo": out["views"][:, 0],
            "views_48h_hi": out["views"][:, 2],
            "predicted_interactions_48h": out["interactions"][:, 1],
            "interactions_48h_lo": out["interactions"][:, 0],
            "interactions_48h_hi": out["interactions"][:, 2],
            "views_observed": posts["views_latest"].astype("float64"),
            "grid_hours_used": GRID_MINUTES[inputs["length"] - 1] / 60.0,
            "published_at": pd.to_datetime(posts["published_at"]),
        }
    )
    source = (
        "the model's p10/p90"
        if model is not None
        else "the baseline's 10th/90th percentile of validation log errors"
    )
    notes["scored"] = (
        f"{len(frame)} young posts of {frame['channel_id'].nunique()} channels; "
        f"views_48h_lo/hi = {source} (an 80 % interval)"
    )
    coverage = model.metrics.get("views_coverage_80_3h") if model is not None else None
    if coverage is not None:
        notes["scored"] += f", measured holdout coverage at 3 h {coverage:.2f}"
    stamped = _stamped(frame, model, scored_at, None if model is not None else reason, out.get("rule"))
    if model is None:
        unranked = stamped["engagement_score"].isna()
        if unranked.any():
            why = (
                f"; engagement_score NULL: the channel has fewer than {MIN_PRIOR_POSTS_48H} "
                "posts with a known 48 h count published >= 48 h 5 min before this one "
                "(no prior median to rank against)"
            )
            stamped.loc[unranked, "fallback_reason"] = reason + why
            notes["unranked"] = f"{int(unranked.sum())} young posts{why[1:]}"
    return ForecastResult(stamped, notes=notes, models=models)


# --------------------------------------------------------------------------- per request

# What a request reads. The service's reader is over published Parquet, where each
# publish is a new, never-overwritten version file: the resolved paths name the content.
REQUEST_TABLES = (
    ("features", "post_features"),
    ("features", "post_trajectories"),
    ("features", "channel_daily_features"),
)
DRAFT_TABLES = (("features", "post_features"), ("features", "channel_daily_features"))
# The same content check as scoring_baselines', plus the subscribers a draft reads.
_REQUEST_FINGERPRINT_SQL = f"""
SELECT * FROM ({_FINGERPRINT_SQL}),
    (SELECT count(*), sum(hash(channel_id, day, subscribers)) FROM features.channel_daily_features)
"""


@dataclass
class RequestState:
    """Everything ``predict_post`` reads, built once per content of ``REQUEST_TABLES``.

    Per request, the old path re-read Parquet five times, ran ``CHANNEL_CURVE_SQL`` over
    the channel's posts, built one post's inputs with pandas and sorted and summed the
    whole labelled history seven times (``prior_growth``). Here the model inputs of
    every published post are built once, in one batch, by the same ``build_inputs`` (its
    builders work row by row, so row i of the batch is what one post alone gets), and a
    request for a published post is a lookup. A draft's inputs are built per request as
    before, its context by the same SQL (``SUBSCRIBERS_SQL``, ``PRIOR_SQL``,
    ``channel_curve_at``) on an in-memory copy of ``DRAFT_TABLES`` (one DuckDB cursor per
    thread), its channel's growth from a ``GrowthIndex`` over the same labelled history.
    Memory: the published posts' inputs, about (posts x 36 x 14) floats."""

    key: tuple
    history: GridPosts
    baselines: EngagementBaselines | None  # indexed; None without labelled posts
    growth: GrowthIndex
    posts: pd.DataFrame  # ALL_POSTS_SQL with CURVE_COLUMNS, one row per post
    rows: dict[tuple[int, int], int]  # (channel_id, post_id) -> row of posts
    inputs: dict[str, np.ndarray]  # build_inputs of posts (length 0: no trajectory point)
    grid: GridPosts  # the same posts as GridPosts
    db: duckdb.DuckDBPyConnection  # in-memory copy of DRAFT_TABLES
    _local: threading.local = field(default_factory=threading.local)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the in-memory copy (a connection is not shared by threads)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self.db.cursor()
        return cur

    def published(self, channel_id: int, post_id: int) -> tuple[pd.Series, dict, GridPosts] | None:
        """(the post's row, its model inputs, its GridPosts), or None for an unknown post."""
        row = self.rows.get((channel_id, post_id))
        if row is None:
            return None
        inputs = {k: v[row : row + 1] for k, v in self.inputs.items()}
        return self.posts.iloc[row], inputs, self.grid.take(np.array([row]))


def _content_key(conn: duckdb.DuckDBPyConnection) -> tuple:
    """The resolved version files of a local published reader; else a content hash (SQL)."""
    if isinstance(conn, PublishedReader) and "://" not in conn.root:
        paths = [table_path(conn.root, schema, table) for schema, table in REQUEST_TABLES]
        if all(os.path.exists(path) for path in paths):
            return ("published", *(os.path.realpath(path) for path in paths))
    return ("content", *conn.execute(_REQUEST_FINGERPRINT_SQL).fetchall()[0])


def _build_state(conn: duckdb.DuckDBPyConnection, key: tuple) -> RequestState:
    history = labelled_history(conn)
    baselines = fit_scoring_baselines(history).indexed() if len(history) else None
    growth = baselines.growth_index if baselines is not None else GrowthIndex(history)
    assert growth is not None
    keys = ["channel_id", "post_id"]
    posts = conn.execute(ALL_POSTS_SQL).fetchdf()
    curves = conn.execute(CHANNEL_CURVE_SQL).df()
    posts = posts.merge(curves, on=keys, how="left").reset_index(drop=True)
    rows = {
        (int(c), int(p)): i
        for i, (c, p) in enumerate(zip(posts["channel_id"], posts["post_id"], strict=True))
    }
    inputs = build_inputs(posts, conn.execute(ALL_TRAJECTORIES_SQL).fetchdf(), history, growth)
    grid: GridPosts = inputs.pop("grid")  # type: ignore[assignment]
    db = duckdb.connect()
    for schema, table in DRAFT_TABLES:
        frame = conn.sql(f"SELECT * FROM {schema}.{table}").to_arrow_table()  # our own names
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        db.register("copied", frame)
        db.execute(f"CREATE TABLE {schema}.{table} AS SELECT * FROM copied")
        db.unregister("copied")
    return RequestState(key, history, baselines, growth, posts, rows, inputs, grid, db)


_STATE: list[RequestState] = []  # the current one (a new content replaces it)
_STATE_LOCK = threading.Lock()


def request_state(conn: duckdb.DuckDBPyConnection) -> RequestState:
    """The state for the tables ``conn`` reads now (built once per content, one builder at
    a time; other requests wait for it rather than build their own)."""
    key = _content_key(conn)
    current = _STATE[0] if _STATE else None
    if current is not None and current.key == key:
        return current
    with _STATE_LOCK:
        if _STATE and _STATE[0].key == key:
            return _STATE[0]
        _STATE.clear()  # the old state's memory goes before the new one is built
        state = _build_state(conn, key)
        _STATE.append(state)
        return state


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidInput(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _parse_time(value: Any) -> pd.Timestamp:
    if value is None:
        return pd.Timestamp(datetime.now(UTC).replace(tzinfo=None))
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"published_at must be an ISO timestamp or null, got {value!r}") from exc
    if pd.isna(ts):
        raise InvalidInput("published_at must be an ISO timestamp or null")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def snapshots_to_trajectory(snapshots: Any, channel_id: int = 0, post_id: int = -1) -> pd.DataFrame:
    """Validated draft snapshots → the rows post_trajectories.sql would hold for them."""
    if not isinstance(snapshots, list) or not snapshots:
        raise InvalidInput(
            "snapshots must be a non-empty list of {minutes, views, forwards, replies, reactions}"
        )
    rows = []
    for i, snap in enumerate(snapshots):
        if not isinstance(snap, dict):
            raise InvalidInput(f"snapshots[{i}] must be an object")
        missing = [k for k in ("minutes", *COUNTERS) if k not in snap]
        if missing:
            raise InvalidInput(f"snapshots[{i}] lacks {', '.join(missing)}")
        rows.append([_number(snap[k], f"snapshots[{i}].{k}") for k in ("minutes", *COUNTERS)])
    values = np.array(rows)
    if (np.diff(values[:, 0]) <= 0).any():
        raise InvalidInput("snapshots must be in strictly increasing order of minutes")
    if (np.diff(values[:, 1:], axis=0) < 0).any():
        raise InvalidInput(
            "snapshot counters are cumulative: views, forwards, replies and reactions must not decrease"
        )
    minutes = values[:, 0]
    tol = AS_OF_TOLERANCE_MINUTES
    reached = GRID_MINUTES[GRID_MINUTES - tol <= minutes.max()]
    if not len(reached):
        raise InvalidInput(
            f"the first grid point is {GRID_MINUTES[0]} min after publication: "
            f"the snapshots must reach at least {GRID_MINUTES[0] - tol} min"
        )
    # last snapshot at or before g + tolerance (none: unknown, NaN)
    index = np.searchsorted(minutes, reached + tol, side="right") - 1
    counters = np.where((index >= 0)[:, None], values[np.clip(index, 0, None), 1:], np.nan)
    frame = pd.DataFrame(counters, columns=list(COUNTERS))
    frame.insert(0, "age_minutes", reached.astype(np.int64))
    frame.insert(0, "post_id", np.int64(post_id))
    frame.insert(0, "channel_id", np.int64(channel_id))
    return frame


def _draft_post(conn: duckdb.DuckDBPyConnection, channel_id: int, content: dict) -> tuple[pd.DataFrame, dict]:
    """One-row frame shaped like features.post_features for a draft post, with its
    ``CURVE_COLUMNS`` (``channel_curve_at``: what ``with_channel_curves`` gives a draft)."""
    published = _parse_time(content.get("published_at"))
    media = content.get("media_type", "none")  # the API's defaults
    if media not in MEDIA:
        raise InvalidInput(f"media_type must be one of {', '.join(MEDIA)}, got {media!r}")
    text_length = content.get("text_length")
    if text_length is None:
        text = content.get("text")
        text_length = len(text) if isinstance(text, str) else 0
    if isinstance(text_length, bool) or not isinstance(text_length, int) or text_length < 0:
        raise InvalidInput(f"text_length must be an integer >= 0, got {text_length!r}")
    stamp_str = published.isoformat()
    subs = conn.execute(SUBSCRIBERS_SQL, [channel_id, stamp_str]).fetchall()
    prior = conn.execute(PRIOR_SQL, [channel_id, stamp_str]).fetchall()[0]
    post = pd.DataFrame(
        [
            {
                "channel_id": channel_id,
                "post_id": -1,
                "published_at": published,
                "weekday": published.dayofweek,
                "hour": published.hour,
                "media_type": media,
                "text_length": text_length,
                "subscribers_at_publish": float(subs[0][0]) if subs and subs[0][0] is not None else np.nan,
                "channel_prior_posts_48h": int(prior[0] or 0),
                "channel_prior_median_views_48h": float(prior[1]) if prior[1] is not None else np.nan,
            }
        ]
    )
    context = {
        "published_at": published.isoformat(),
        "media_type": media,
        "text_length": text_length,
        "published_at_assumed_now": content.get("published_at") is None,
        "subscribers_at_publish": None
        if np.isnan(post.at[0, "subscribers_at_publish"])
        else post.at[0, "subscribers_at_publish"],
        "channel_prior_median_views_48h": None
        if np.isnan(post.at[0, "channel_prior_median_views_48h"])
        else post.at[0, "channel_prior_median_views_48h"],
        "channel_prior_posts_48h": int(post.at[0, "channel_prior_posts_48h"]),
    }
    at = channel_curve_at(conn, channel_id, published, published.hour)
    for column, value in at.items():
        post[column] = value
    return post, context


def _quantiles(row: np.ndarray) -> dict[str, float]:
    return {"p10": float(row[0]), "p50": float(row[1]), "p90": float(row[2])}


def _holdout(model: LoadedModel, grid_hours: float) -> dict[str, Any]:
    """Measured holdout quality at the card age closest below what was observed, and in
    the age bucket of what was observed (with the margin over the strongest baseline)."""
    age = max([h for h in HOURS if h <= grid_hours] or [HOURS[0]])
    bucket = list(BUCKETS)[int(bucket_of(np.array([grid_hours * 60]))[0])]
    m = model.metrics
    picked = {
        f"accuracy_above_median_{age}h": m.get(f"accuracy_{age}h"),
        f"views_coverage_80_{age}h": m.get(f"views_coverage_80_{age}h"),
        f"views_mape_{age}h": m.get(f"views_mape_{age}h"),
        f"accuracy_{bucket}": m.get(f"accuracy_{bucket}"),
        f"margin_accuracy_{bucket}": m.get(f"margin_accuracy_{bucket}"),
        f"margin_accuracy_{bucket}_lo": m.get(f"margin_accuracy_{bucket}_lo"),
    }
    return {k: v for k, v in picked.items() if v is not None}


def _baseline_validation(baselines: EngagementBaselines, grid_hours: float) -> dict[str, Any]:
    """What the serving rule measured on the validation period in this age bucket."""
    bucket = list(BUCKETS)[int(bucket_of(np.array([grid_hours * 60]))[0])]
    rule = baselines.strongest[bucket]
    fit = baselines.fits[rule][bucket]
    return {
        "bucket": bucket,
        f"accuracy_{bucket}": fit.val_accuracy,
        "examples": fit.val_pairs,
        "log_error_p10": fit.q10,
        "log_error_p90": fit.q90,
    }


def _state(conn: duckdb.DuckDBPyConnection) -> RequestState:
    try:
        return request_state(conn)
    except InsufficientData as exc:
        raise InvalidInput(f"engagement cannot be predicted: {exc}") from exc


def predict_post(
    conn: duckdb.DuckDBPyConnection, model: LoadedModel | None, channel_id: int, content_features: dict
) -> dict:
    """Engagement of one post: ``{"post_id": id}`` (published) or a draft with ``snapshots``.

    ``model=None`` (no champion) answers from the strongest baseline tuned on the
    warehouse's labelled posts; the answer says which served (``source``) and why
    (``fallback_reason``)."""
    if not isinstance(content_features, dict):
        raise InvalidInput("content_features must be an object")
    channel_id = int(channel_id)
    # the API sends every field (post_id None, snapshots [] when not given)
    has_post = content_features.get("post_id") is not None
    has_snaps = bool(content_features.get("snapshots"))
    if has_post == has_snaps:
        raise InvalidInput(
            "give either post_id (a published post) or snapshots (a draft's early "
            "counters), not both and not neither"
        )
    if has_post:
        post_id = content_features["post_id"]
        if isinstance(post_id, bool) or not isinstance(post_id, int):
            raise InvalidInput(f"post_id must be an integer, got {post_id!r}")
        state = _state(conn)
        found = state.published(channel_id, post_id)
        if found is None:
            raise InvalidInput(f"post {post_id} is not a post of channel {channel_id}")
        row, inputs, grid = found
        if inputs["length"][0] < 1:
            raise InvalidInput(
                f"post {post_id} has no trajectory point yet (needs a snapshot "
                f"about {GRID_MINUTES[0]} min after publication)"
            )
        source: dict[str, Any] = {
            "kind": "published",
            "post_id": int(post_id),
            "published_at": pd.Timestamp(row["published_at"]).isoformat(),
        }
        hours_observed = float(row["hours_observed"])
        if pd.notna(row["views_48h"]):
            source["actual_views_48h"] = float(row["views_48h"])
            if pd.notna(row["interactions_48h"]):
                source["actual_interactions_48h"] = float(row["interactions_48h"])
    else:
        trajectory = snapshots_to_trajectory(content_features["snapshots"], channel_id)
        state = _state(conn)
        post, context = _draft_post(state.cursor(), channel_id, content_features)
        source = {"kind": "draft", **context}
        hours_observed = max(float(s["minutes"]) for s in content_features["snapshots"]) / 60.0
        inputs = build_inputs(post, trajectory, state.history, state.growth)
        grid = inputs.pop("grid")  # type: ignore[assignment]
    baselines = state.baselines
    length = int(inputs["length"][0])
    if length < 1:
        raise InvalidInput("the post reached no grid point of its trajectory")
    grid_hours = float(GRID_MINUTES[length - 1] / 60.0)
    answer = {
        "channel_id": channel_id,
        "post": source,
        "hours_observed": hours_observed,
        "grid_hours_used": grid_hours,
    }
    if model is not None:
        out = run_model(model, inputs)
        score_value = float(out["score"][0])
        return {
            **answer,
            "engagement_score": score_value,
            "above_median": bool(score_value > 0.5),
            "predicted_views_48h": _quantiles(out["views"][0]),
            "predicted_interactions_48h": _quantiles(out["interactions"][0]),
            "interpretation": (
                "engagement_score is the predicted percentile of this post's "
                "48 h views among the channel's earlier posts (> 0.5: above the "
                "channel median); p10-p90 is the model's 80 % interval"
            ),
            "holdout": _holdout(model, grid_hours),
            "model": {"name": model.registered_model, "version": model.version, "backend": model.backend},
            "source": "model",
            "fallback_reason": None,
        }
    reason = (
        "no champion for engagement: no version has passed its gates yet; answered by "
        "the strongest baseline of this age bucket, tuned on the latest labelled posts"
    )
    if baselines is None:
        raise InvalidInput(
            f"{reason.split(';')[0]}, and no post in the warehouse has a known "
            "48 h count to measure a baseline on"
        )
    out = run_baseline(baselines, grid, inputs["length"])
    score_value = float(out["score"][0])
    rule = RULES[int(out["rule"][0])]
    return {
        **answer,
        "engagement_score": None if not np.isfinite(score_value) else score_value,
        "above_median": None if not np.isfinite(score_value) else bool(score_value > 0.5),
        "predicted_views_48h": _quantiles(out["views"][0]),
        "predicted_interactions_48h": _quantiles(out["interactions"][0]),
        "interpretation": (
            "engagement_score is P(this post's 48 h views end above the channel's "
            "prior median) under the baseline's validation error; p10-p90 is its "
            "80 % interval from the 10th/90th percentile of those errors"
        ),
        "validation": _baseline_validation(baselines, grid_hours),
        "model": {"name": f"baseline:{rule}", "version": None, "backend": "rule", "rule": LABELS[rule]},
        "source": "baseline",
        "fallback_reason": reason,
    }
