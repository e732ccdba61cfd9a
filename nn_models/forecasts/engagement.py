"""``post_engagement_forecasts`` and the per-request engagement prediction.

Young posts (no 48 h value yet, at least one point of ``features.post_trajectories``)
are scored by the ``engagement`` champion from their observed prefix of the
15-minute grid, exactly as at training: the sequence and static arrays come from the
task's own builders (``trajectory_counters``, ``sequence_features``,
``static_features`` in ``nn_models.tasks.engagement``), the model sees ``length`` =
the grid points the post has reached, and its outputs are

* ``engagement_score``: the predicted percentile of the post's 48 h views among its
  channel's posts (> 0.5 = above the channel's median);
* p10/p50/p90 of 48 h views and interactions, in ``log1p`` space from the model and
  turned back into counts here (``expm1``).

A draft (``predict_post`` with ``snapshots``) is put on the same grid with the rule of
``warehouse/sql/post_trajectories.sql``: the value at grid age ``g`` is the last
snapshot at or before ``g + 5`` min, and ``g`` counts as reached once a snapshot at
``g - 5`` min or later exists. Its static context (subscribers at publication, the
channel's prior median 48 h views and how many posts it rests on) follows
``post_features.sql``, read from the published feature tables.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from nn_models.champions import LoadedModel
from nn_models.forecasts.base import (
    LINEAGE_COLUMNS,
    Champions,
    ForecastResult,
    missing_champion,
    stamp,
)
from nn_models.service import InvalidInput
from nn_models.tasks.engagement import (
    GRID_MINUTES,
    HOURS,
    MEDIA,
    sequence_features,
    static_features,
    trajectory_counters,
    with_channel_curves,
)
from warehouse.features import AS_OF_TOLERANCE_MINUTES

TABLE = "post_engagement_forecasts"
COLUMNS = ["channel_id", "post_id", "hours_observed", "engagement_score", "predicted_views_48h",
           "views_48h_lo", "views_48h_hi"]
EXTRA_COLUMNS = ["predicted_interactions_48h", "interactions_48h_lo", "interactions_48h_hi",
                 "views_observed", "grid_hours_used", "published_at"]
BATCH = 4096
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

POST_SQL = f"""
SELECT {_POST_COLUMNS}
FROM features.post_features WHERE channel_id = ? AND post_id = ?
"""

POST_TRAJECTORY_SQL = """
SELECT channel_id, post_id, age_minutes, views, forwards, replies, reactions
FROM features.post_trajectories WHERE channel_id = ? AND post_id = ?
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


def _stamped(frame: pd.DataFrame, model: LoadedModel | None,
             scored_at: datetime) -> pd.DataFrame:
    """DESIGN columns, then the lineage columns, then the extras (text columns typed as
    strings so an empty frame still becomes VARCHAR, not NULL-typed, in DuckDB)."""
    out = stamp(frame, model, scored_at)[[*COLUMNS, *LINEAGE_COLUMNS, *EXTRA_COLUMNS]]
    return out.astype({"model_name": "string", "model_version": "string"})


def _empty() -> pd.DataFrame:
    types = {"channel_id": "int64", "post_id": "int64", "published_at": "datetime64[us]"}
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, "float64"))
                         for c in COLUMNS + EXTRA_COLUMNS})


def build_inputs(posts: pd.DataFrame, trajectories: pd.DataFrame) -> dict[str, np.ndarray]:
    """Model inputs with the task's builders: full-grid ``sequence``, observed ``length``
    (grid points reached, 0 = none), ``static``."""
    counters, length = trajectory_counters(posts, trajectories)
    return {"sequence": sequence_features(counters, posts),
            "length": length.astype(np.int64),
            "static": static_features(posts)}


def run_model(model: LoadedModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Score in batches; quantiles come back as counts (``expm1`` of the log1p outputs)."""
    n = len(inputs["length"])
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, n, BATCH):
        sl = slice(start, start + BATCH)
        parts.append(model.run(sequence=np.ascontiguousarray(inputs["sequence"][sl]),
                               length=np.ascontiguousarray(inputs["length"][sl]),
                               static=np.ascontiguousarray(inputs["static"][sl])))
    score, log_views, log_interactions = (np.concatenate(p) for p in zip(*parts, strict=True))
    return {
        "score": score.astype(np.float64),
        "views": np.expm1(log_views.astype(np.float64)),
        "interactions": np.expm1(log_interactions.astype(np.float64)),
    }


def score(conn: duckdb.DuckDBPyConnection, champions: Champions,
          scored_at: datetime) -> ForecastResult:
    """Every young post (no 48 h value yet, >= 1 trajectory point), scored in batches."""
    model = champions.get("engagement")
    reason = missing_champion(TABLE, ("engagement",), champions)
    if reason:
        return ForecastResult(_stamped(_empty(), None, scored_at), notes={"skipped": reason})
    try:
        posts = conn.execute(YOUNG_POSTS_SQL).fetchdf()
        trajectories = conn.execute(YOUNG_TRAJECTORIES_SQL).fetchdf()
    except duckdb.CatalogException as exc:
        return ForecastResult(_stamped(_empty(), model, scored_at),
                              notes={"skipped": f"{TABLE}: feature tables missing ({exc})"},
                              models={"engagement": model.version})
    notes: dict[str, str] = {}
    if posts.empty:
        notes["empty"] = (f"{TABLE}: no young posts (every post with a trajectory already has "
                          "its 48 h value)")
        return ForecastResult(_stamped(_empty(), model, scored_at), notes=notes,
                              models={"engagement": model.version})
    posts = with_channel_curves(conn, posts)
    inputs = build_inputs(posts, trajectories)
    keep = inputs["length"] > 0   # a trajectory row always reaches its grid point
    if not keep.all():
        notes["no_grid_point"] = f"{int((~keep).sum())} young posts reached no grid point"
        posts = posts[keep].reset_index(drop=True)
        inputs = {k: v[keep] for k, v in inputs.items()}
    out = run_model(model, inputs)
    frame = pd.DataFrame({
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
    })
    notes["scored"] = (f"{len(frame)} young posts of {frame['channel_id'].nunique()} channels; "
                       "views_48h_lo/hi = the model's p10/p90 (an 80 % interval)")
    coverage = model.metrics.get("views_coverage_80_3h")
    if coverage is not None:
        notes["scored"] += f", measured holdout coverage at 3 h {coverage:.2f}"
    return ForecastResult(_stamped(frame, model, scored_at), notes=notes,
                          models={"engagement": model.version})


# --------------------------------------------------------------------------- per request


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


def snapshots_to_trajectory(snapshots: Any, channel_id: int = 0,
                            post_id: int = -1) -> pd.DataFrame:
    """Validated draft snapshots → the rows post_trajectories.sql would hold for them."""
    if not isinstance(snapshots, list) or not snapshots:
        raise InvalidInput("snapshots must be a non-empty list of {minutes, views, forwards, "
                       "replies, reactions}")
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
        raise InvalidInput("snapshot counters are cumulative: views, forwards, replies and "
                       "reactions must not decrease")
    minutes = values[:, 0]
    tol = AS_OF_TOLERANCE_MINUTES
    reached = GRID_MINUTES[GRID_MINUTES - tol <= minutes.max()]
    if not len(reached):
        raise InvalidInput(f"the first grid point is {GRID_MINUTES[0]} min after publication: "
                       f"the snapshots must reach at least {GRID_MINUTES[0] - tol} min")
    # last snapshot at or before g + tolerance (none: unknown, NaN)
    index = np.searchsorted(minutes, reached + tol, side="right") - 1
    counters = np.where((index >= 0)[:, None], values[np.clip(index, 0, None), 1:], np.nan)
    frame = pd.DataFrame(counters, columns=list(COUNTERS))
    frame.insert(0, "age_minutes", reached.astype(np.int64))
    frame.insert(0, "post_id", np.int64(post_id))
    frame.insert(0, "channel_id", np.int64(channel_id))
    return frame


def _draft_post(conn: duckdb.DuckDBPyConnection, channel_id: int,
                content: dict) -> tuple[pd.DataFrame, dict]:
    """One-row frame shaped like features.post_features for a draft post."""
    published = _parse_time(content.get("published_at"))
    media = content.get("media_type", "none")      # the API's defaults
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
    post = pd.DataFrame([{
        "channel_id": channel_id, "post_id": -1, "published_at": published,
        "weekday": published.dayofweek, "hour": published.hour, "media_type": media,
        "text_length": text_length,
        "subscribers_at_publish": float(subs[0][0]) if subs and subs[0][0] is not None
        else np.nan,
        "channel_prior_posts_48h": int(prior[0] or 0),
        "channel_prior_median_views_48h": float(prior[1]) if prior[1] is not None else np.nan,
    }])
    context = {
        "published_at": published.isoformat(),
        "media_type": media,
        "text_length": text_length,
        "published_at_assumed_now": content.get("published_at") is None,
        "subscribers_at_publish": None if np.isnan(post.at[0, "subscribers_at_publish"])
        else post.at[0, "subscribers_at_publish"],
        "channel_prior_median_views_48h": None
        if np.isnan(post.at[0, "channel_prior_median_views_48h"])
        else post.at[0, "channel_prior_median_views_48h"],
        "channel_prior_posts_48h": int(post.at[0, "channel_prior_posts_48h"]),
    }
    return post, context


def _quantiles(row: np.ndarray) -> dict[str, float]:
    return {"p10": float(row[0]), "p50": float(row[1]), "p90": float(row[2])}


def _holdout(model: LoadedModel, grid_hours: float) -> dict[str, Any]:
    """Measured holdout quality at the card age closest below what was observed."""
    age = max([h for h in HOURS if h <= grid_hours] or [HOURS[0]])
    m = model.metrics
    picked = {f"accuracy_above_median_{age}h": m.get(f"accuracy_{age}h"),
              f"views_coverage_80_{age}h": m.get(f"views_coverage_80_{age}h"),
              f"views_mape_{age}h": m.get(f"views_mape_{age}h")}
    return {k: v for k, v in picked.items() if v is not None}


def predict_post(conn: duckdb.DuckDBPyConnection, model: LoadedModel, channel_id: int,
                 content_features: dict) -> dict:
    """Engagement of one post: ``{"post_id": id}`` (published) or a draft with ``snapshots``."""
    if not isinstance(content_features, dict):
        raise InvalidInput("content_features must be an object")
    channel_id = int(channel_id)
    # the API sends every field (post_id None, snapshots [] when not given)
    has_post = content_features.get("post_id") is not None
    has_snaps = bool(content_features.get("snapshots"))
    if has_post == has_snaps:
        raise InvalidInput("give either post_id (a published post) or snapshots (a draft's early "
                       "counters), not both and not neither")
    if has_post:
        post_id = content_features["post_id"]
        if isinstance(post_id, bool) or not isinstance(post_id, int):
            raise InvalidInput(f"post_id must be an integer, got {post_id!r}")
        post = conn.execute(POST_SQL, [channel_id, post_id]).fetchdf()
        if post.empty:
            raise InvalidInput(f"post {post_id} is not a post of channel {channel_id}")
        trajectory = conn.execute(POST_TRAJECTORY_SQL, [channel_id, post_id]).fetchdf()
        if trajectory.empty:
            raise InvalidInput(f"post {post_id} has no trajectory point yet (needs a snapshot "
                           f"about {GRID_MINUTES[0]} min after publication)")
        row = post.iloc[0]
        source: dict[str, Any] = {"kind": "published", "post_id": int(post_id),
                                  "published_at": pd.Timestamp(row["published_at"]).isoformat()}
        hours_observed = float(row["hours_observed"])
        if pd.notna(row["views_48h"]):
            source["actual_views_48h"] = float(row["views_48h"])
            if pd.notna(row["interactions_48h"]):
                source["actual_interactions_48h"] = float(row["interactions_48h"])
    else:
        trajectory = snapshots_to_trajectory(content_features["snapshots"], channel_id)
        post, context = _draft_post(conn, channel_id, content_features)
        source = {"kind": "draft", **context}
        hours_observed = max(float(s["minutes"]) for s in content_features["snapshots"]) / 60.0
    post = with_channel_curves(conn, post)
    inputs = build_inputs(post, trajectory)
    length = int(inputs["length"][0])
    if length < 1:
        raise InvalidInput("the post reached no grid point of its trajectory")
    out = run_model(model, inputs)
    score_value = float(out["score"][0])
    grid_hours = float(GRID_MINUTES[length - 1] / 60.0)
    return {
        "channel_id": channel_id,
        "post": source,
        "hours_observed": hours_observed,
        "grid_hours_used": grid_hours,
        "engagement_score": score_value,
        "above_median": bool(score_value > 0.5),
        "predicted_views_48h": _quantiles(out["views"][0]),
        "predicted_interactions_48h": _quantiles(out["interactions"][0]),
        "interpretation": ("engagement_score is the predicted percentile of this post's 48 h "
                           "views among the channel's posts (> 0.5: above the channel median); "
                           "p10-p90 is the model's 80 % interval"),
        "holdout": _holdout(model, grid_hours),
        "model": {"name": model.registered_model, "version": model.version,
                  "backend": model.backend},
    }
