"""``channel_insights``: traditional metrics + neural predictions + recommendations per channel.

Replaces the seed's ``generate_neural_insights``, which typed its confidences in.
Every part comes from its forecast table and says who served it (``source``:
``model`` or ``baseline``, with the table's ``fallback_reason``). Its confidence is
computed from what was *measured* on the holdout at registration (version tags):
the champion's primary metric for a model-served part, the strongest baseline's
on the same holdout for a baseline-served one (NULL when nothing was measured,
e.g. the model was skipped for too little data), rescaled to 0–1 as skill over
chance (for behaviour: 1 − profile error / one global profile's error). For growth,
the width of this channel's own interval scales it too.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import duckdb
import pandas as pd

from nn_models.champions import LoadedModel
from nn_models.forecasts.base import Champions, ForecastResult, stamp
from nn_models.tasks import get_task

MODEL_ORDER = ("engagement", "growth", "viral", "content", "schedule", "behavior")


def _clip01(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def skill(metric: str, value: float) -> float:
    """A measured holdout metric as 0–1 skill: 0 = chance or no better than naive, 1 = perfect.

    accuracy / AUC: (v − 0.5) / 0.5; MASE: 1 − v (0 at the in-sample seasonal naive's
    error); rank correlations, ARI, ratios, lifts and shares: clipped to 0–1.
    """
    if value is None or not math.isfinite(value):
        return float("nan")
    name = metric.lower()
    if "auc" in name or "accuracy" in name:
        return _clip01((value - 0.5) / 0.5)
    if "mase" in name:
        return _clip01(1 - value)
    if any(k in name for k in ("spearman", "ari", "ratio", "lift", "corr", "share")):
        return _clip01(value)
    return float("nan")


def model_confidence(
    name: str, model: LoadedModel | None, source: str, interval_width: float | None = None
) -> float:
    """Confidence of one insight part from measured holdout numbers (NaN: not measured).

    ``source = model``: the champion's primary metric. ``source = baseline``: the
    strongest baseline's primary metric as measured beside the champion (a channel the
    champion could not score), NaN without a champion (nothing was measured).
    """
    if model is None:
        return float("nan")
    primary = get_task(name).primary_metric
    if source == "model":
        value = model.metrics.get(primary)
    else:
        strongest = model.tags.get("strongest_baseline", "")
        value = model.baseline_metrics.get(f"baseline_{strongest}_{primary}")
    value = float("nan") if value is None else value
    if name == "behavior":
        # profile error has no absolute scale: skill = improvement over one global profile
        reference = model.baseline_metrics.get(f"baseline_global_profile_{primary}")
        return _clip01(1 - value / reference) if reference else float("nan")
    conf = skill(primary, value)
    if name == "growth" and interval_width is not None and math.isfinite(conf):
        conf *= _clip01(1 - interval_width)
    return conf


def _table(conn: duckdb.DuckDBPyConnection, sql: str, params: list) -> pd.DataFrame:
    try:
        return conn.execute(sql, params).fetchdf()
    except duckdb.CatalogException:  # table not built/published yet
        return pd.DataFrame()


def _traditional(conn, channel_id: int) -> dict:
    frame = _table(conn, "SELECT * FROM features.channel_metrics WHERE channel_id = ?", [channel_id])
    if frame.empty:
        return {}
    row = frame.iloc[0].to_dict()
    keep = (
        "subscribers",
        "daily_growth",
        "growth_rate_30d",
        "posts_per_day",
        "views_per_post",
        "err",
        "er",
        "reach_12h",
        "reach_24h",
        "reach_48h",
        "best_hours",
        "top_post_ids",
    )
    return {k: _jsonable(row.get(k)) for k in keep if k in row}


def _jsonable(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def _served(frame: pd.DataFrame) -> tuple[str, str | None]:
    """Who served a part: model, baseline or both (rows of one channel), and why a baseline."""
    sources = sorted(set(frame["source"].dropna())) if "source" in frame else []
    source = sources[0] if len(sources) == 1 else "mixed" if sources else "unknown"
    reasons = sorted(set(frame["fallback_reason"].dropna())) if "fallback_reason" in frame else []
    return source, "; ".join(reasons) or None


PART_SQL = {
    "engagement": """
        SELECT post_id, hours_observed, engagement_score, predicted_views_48h, views_48h_lo,
               views_48h_hi, source, fallback_reason, model_version FROM forecasts.post_engagement_forecasts
        WHERE channel_id = ? ORDER BY engagement_score DESC""",
    "growth": """
        SELECT horizon_days, subscribers_p10, subscribers_p50, subscribers_p90, source,
               fallback_reason, model_version
        FROM forecasts.channel_growth_forecasts WHERE channel_id = ? AND horizon_days IN (7, 30)
        ORDER BY horizon_days""",
    "viral": """
        SELECT post_id, viral_probability, content_score, source, fallback_reason, model_version
        FROM forecasts.post_viral_scores
        WHERE channel_id = ? ORDER BY viral_probability DESC LIMIT 3""",
    "content": """
        SELECT pattern, kind, effect, source, fallback_reason, model_version
        FROM forecasts.content_patterns
        WHERE channel_id = ? ORDER BY effect DESC LIMIT 5""",
    "schedule": """
        SELECT weekday, hour, expected_engagement, confidence, source, fallback_reason,
               model_version
        FROM forecasts.posting_schedule_recommendations WHERE channel_id = ?
        ORDER BY rank LIMIT 3""",
    "behavior": """
        SELECT s.segment_label, count(*) AS users, any_value(s.source) AS source,
               any_value(s.fallback_reason) AS fallback_reason,
               any_value(s.model_version) AS model_version
        FROM forecasts.user_segments s
        JOIN (SELECT DISTINCT user_id FROM raw.interactions WHERE channel_id = ?) u
          USING (user_id)
        GROUP BY s.segment_label ORDER BY users DESC""",
}


def _summary(name: str, frame: pd.DataFrame) -> dict:
    rows = frame.drop(columns=["source", "fallback_reason", "model_version"], errors="ignore")
    if name == "engagement":
        return {
            "young_posts_scored": len(rows),
            "expected_above_median": int((rows["engagement_score"] > 0.5).sum()),
            "top_posts": rows.head(3).to_dict("records"),
        }
    if name == "growth":
        last = rows.iloc[-1]
        width = float((last.subscribers_p90 - last.subscribers_p10) / max(last.subscribers_p50, 1))
        return {"forecast": rows.to_dict("records"), "relative_interval_width": width}
    key = {
        "viral": "most_likely_viral",
        "content": "top_patterns",
        "schedule": "best_slots",
        "behavior": "segments",
    }[name]
    return {key: rows.to_dict("records")}


def _neural(conn, champions: Champions, channel_id: int) -> tuple[dict, dict]:
    """Each part that has rows for this channel, with its source and measured confidence."""
    parts, confidence = {}, {}
    for name in MODEL_ORDER:
        frame = _table(conn, PART_SQL[name], [channel_id])
        if frame.empty:
            continue
        source, reason = _served(frame)
        part = {"source": source, "fallback_reason": reason, **_summary(name, frame)}
        parts[name] = part
        confidence[name] = min(
            (
                model_confidence(name, judge, source, part.get("relative_interval_width"))
                for judge in _judges(champions.get(name), source, frame)
            ),
            key=_nan_first,
        )
    return parts, confidence


def _judges(champion: LoadedModel | None, source: str, frame: pd.DataFrame) -> list:
    """Whose measured numbers judge these rows: the versions that scored them, not today's
    champion (rows scored by an earlier one keep that one's confidence)."""
    versions = sorted(set(frame["model_version"].dropna())) if "model_version" in frame else []
    if champion is None or source != "model" or not versions:
        return [champion]
    return [champion.card(v) for v in versions]


def _nan_first(value: float) -> float:
    """Order for ``min``: an unmeasured (NaN) confidence is the least."""
    return -math.inf if math.isnan(value) else value


def insights(conn: duckdb.DuckDBPyConnection, champions: Champions, channel_id: int) -> dict:
    """One channel's insight document (also what the API returns)."""
    traditional = _traditional(conn, channel_id)
    neural, confidence = _neural(conn, champions, channel_id)
    recs = _table(
        conn,
        """
        SELECT rank, recommendation, rationale, expected_lift FROM forecasts.content_recommendations
        WHERE channel_id = ? ORDER BY rank""",
        [channel_id],
    )
    measured = [v for v in confidence.values() if not math.isnan(v)]
    # parts nobody measured count as no skill: the overall number never claims more
    # than was shown on a holdout
    overall = float(sum(measured) / len(confidence)) if confidence else 0.0
    reasons = [
        f"{name}: {part['fallback_reason']}"
        for name, part in neural.items()
        if part["source"] != "model" and part.get("fallback_reason")
    ]
    absent = [name for name in MODEL_ORDER if name not in neural]
    if absent:
        reasons.append(f"no forecast rows for {', '.join(absent)}")
    return {
        "channel_id": channel_id,
        "traditional": traditional,
        "neural": _jsonable_tree(neural),
        "sources": {name: part["source"] for name, part in neural.items()},
        "recommendations": _jsonable_tree(recs.to_dict("records")) if not recs.empty else [],
        "confidence": {
            "overall": overall,
            **{k: (None if math.isnan(v) else v) for k, v in confidence.items()},
        },
        "fallback_reason": "; ".join(reasons) or None,
    }


def _jsonable_tree(value):
    if isinstance(value, dict):
        return {k: _jsonable_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable_tree(v) for v in value]
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return _jsonable(value)


def score(conn: duckdb.DuckDBPyConnection, champions: Champions, scored_at: datetime) -> ForecastResult:
    channels = _table(conn, "SELECT channel_id FROM features.channel_metrics ORDER BY channel_id", [])
    rows = []
    for channel_id in channels.get("channel_id", pd.Series(dtype="int64")).tolist():
        doc = insights(conn, champions, int(channel_id))
        rows.append(
            {
                "channel_id": int(channel_id),
                "insights": json.dumps(doc, default=str),
                "confidence": doc["confidence"]["overall"],
                "reason": doc["fallback_reason"],
                "all_model": all(v == "model" for v in doc["sources"].values())
                and len(doc["sources"]) == len(MODEL_ORDER),
            }
        )
    frame = pd.DataFrame(rows, columns=["channel_id", "insights", "confidence", "reason", "all_model"])
    used = {n: m.version for n, m in champions.items() if m is not None}
    # a channel's insight is "model"-served only when every part was
    model_rows = frame[frame["all_model"]].drop(columns=["reason", "all_model"])
    base_rows = frame[~frame["all_model"]]
    parts = [stamp(model_rows, _Insights(used), scored_at, model_name=MODEL_NAME)]
    for reason, group in base_rows.groupby(base_rows["reason"].fillna("no neural part served"), sort=False):
        parts.append(
            stamp(
                group.drop(columns=["reason", "all_model"]),
                None,
                scored_at,
                model_name=MODEL_NAME,
                fallback_reason=reason,
            )
        )
    out = pd.concat(parts, ignore_index=True).sort_values("channel_id", ignore_index=True)
    out["model_version"] = ",".join(f"{n}:v{v}" for n, v in sorted(used.items())) or "none"
    return ForecastResult(out, models={n: str(v) for n, v in used.items()})


MODEL_NAME = "channel_pulse_insights"


class _Insights:
    """Stands in for one model in ``stamp``: the insight combines the champions in ``used``."""

    def __init__(self, used: dict[str, str]) -> None:
        self.registered_model = MODEL_NAME
        self.version = ",".join(f"{n}:v{v}" for n, v in sorted(used.items())) or "none"
