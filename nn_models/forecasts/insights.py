"""``channel_insights``: traditional metrics + neural predictions + recommendations per channel.

Replaces the seed's ``generate_neural_insights``, which typed its confidences in.
Here each model's confidence is computed from what was *measured* on its holdout
at registration (version tags), and for the growth forecast also from the width of
this channel's own interval. When a model has no champion, that part is left out
and ``fallback_reason`` says so; with no champion at all the insight is the
traditional analytics alone.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import duckdb
import pandas as pd

from nn_models.champions import LoadedModel
from nn_models.forecasts.base import Champions, ForecastResult, stamp

MODEL_ORDER = ("engagement", "growth", "viral", "content", "schedule", "behavior")


def _clip01(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def model_confidence(name: str, model: LoadedModel, interval_width: float | None = None) -> float:
    """A 0–1 confidence from the champion's measured holdout quality.

    engagement: median-split accuracy at 3 h rescaled from chance (0.5 → 0, 1 → 1);
    content/viral: ROC AUC rescaled the same way; schedule: the top slot's share of
    the best true slot effect; behavior: ARI against personas; growth: 80 % interval
    coverage closeness to 0.8 times (1 − relative width of this channel's interval).
    """
    m = model.metrics
    if name == "engagement" and "accuracy_3h" in m:
        return _clip01((m["accuracy_3h"] - 0.5) / 0.5)
    if name in ("content", "viral") and "roc_auc" in m:
        return _clip01((m["roc_auc"] - 0.5) / 0.5)
    if name == "schedule" and "top_slot_ratio" in m:
        return _clip01(m["top_slot_ratio"])
    if name == "behavior" and "ari" in m:
        return _clip01(m["ari"])
    if name == "growth" and "coverage_80" in m:
        calibration = _clip01(1 - abs(m["coverage_80"] - 0.8) / 0.8)
        sharpness = 1.0 if interval_width is None else _clip01(1 - interval_width)
        return calibration * sharpness
    return float("nan")


def _table(conn: duckdb.DuckDBPyConnection, sql: str, params: list) -> pd.DataFrame:
    try:
        return conn.execute(sql, params).fetchdf()
    except duckdb.CatalogException:   # table not built/published yet
        return pd.DataFrame()


def _traditional(conn, channel_id: int) -> dict:
    frame = _table(conn, "SELECT * FROM features.channel_metrics WHERE channel_id = ?", [channel_id])
    if frame.empty:
        return {}
    row = frame.iloc[0].to_dict()
    keep = ("subscribers", "daily_growth", "growth_rate_30d", "posts_per_day", "views_per_post",
            "err", "er", "reach_12h", "reach_24h", "reach_48h", "best_hours", "top_post_ids")
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


def _neural(conn, champions: Champions, channel_id: int) -> tuple[dict, dict, list[str]]:
    parts, confidence, missing = {}, {}, []
    for name in MODEL_ORDER:
        if champions.get(name) is None:
            missing.append(name)
    eng = _table(conn, """
        SELECT post_id, hours_observed, engagement_score, predicted_views_48h, views_48h_lo,
               views_48h_hi FROM forecasts.post_engagement_forecasts
        WHERE channel_id = ? ORDER BY engagement_score DESC""", [channel_id])
    if champions.get("engagement") is not None and not eng.empty:
        parts["engagement"] = {
            "young_posts_scored": len(eng),
            "expected_above_median": int((eng["engagement_score"] > 0.5).sum()),
            "top_posts": eng.head(3).to_dict("records"),
        }
        confidence["engagement"] = model_confidence("engagement", champions["engagement"])
    growth = _table(conn, """
        SELECT horizon_days, subscribers_p10, subscribers_p50, subscribers_p90
        FROM forecasts.channel_growth_forecasts WHERE channel_id = ? AND horizon_days IN (7, 30)
        ORDER BY horizon_days""", [channel_id])
    if champions.get("growth") is not None and not growth.empty:
        last = growth.iloc[-1]
        width = float((last.subscribers_p90 - last.subscribers_p10) / max(last.subscribers_p50, 1))
        parts["growth"] = {"forecast": growth.to_dict("records"), "relative_interval_width": width}
        confidence["growth"] = model_confidence("growth", champions["growth"], width)
    viral = _table(conn, """
        SELECT post_id, viral_probability, content_score FROM forecasts.post_viral_scores
        WHERE channel_id = ? ORDER BY viral_probability DESC LIMIT 3""", [channel_id])
    if champions.get("viral") is not None and not viral.empty:
        parts["viral"] = {"most_likely_viral": viral.to_dict("records")}
        confidence["viral"] = model_confidence("viral", champions["viral"])
        if champions.get("content") is not None:
            confidence["content"] = model_confidence("content", champions["content"])
    slots = _table(conn, """
        SELECT weekday, hour, expected_engagement, confidence
        FROM forecasts.posting_schedule_recommendations WHERE channel_id = ?
        ORDER BY rank LIMIT 3""", [channel_id])
    if champions.get("schedule") is not None and not slots.empty:
        parts["schedule"] = {"best_slots": slots.to_dict("records")}
        confidence["schedule"] = model_confidence("schedule", champions["schedule"])
    segments = _table(conn, """
        SELECT s.segment_label, count(*) AS users
        FROM forecasts.user_segments s
        JOIN (SELECT DISTINCT user_id FROM raw.interactions WHERE channel_id = ?) u
          USING (user_id)
        GROUP BY s.segment_label ORDER BY users DESC""", [channel_id])
    if champions.get("behavior") is not None and not segments.empty:
        parts["audience"] = {"segments": segments.to_dict("records")}
        confidence["behavior"] = model_confidence("behavior", champions["behavior"])
    return parts, confidence, missing


def insights(conn: duckdb.DuckDBPyConnection, champions: Champions, channel_id: int) -> dict:
    """One channel's insight document (also what the API returns)."""
    traditional = _traditional(conn, channel_id)
    neural, confidence, missing = _neural(conn, champions, channel_id)
    recs = _table(conn, """
        SELECT rank, recommendation, rationale, expected_lift FROM forecasts.content_recommendations
        WHERE channel_id = ? ORDER BY rank""", [channel_id])
    measured = [v for v in confidence.values() if not math.isnan(v)]
    overall = float(sum(measured) / len(measured)) if measured else 0.0
    reasons = []
    if missing:
        reasons.append(f"no champion for {', '.join(missing)}: those parts use traditional "
                       "analytics only")
    if not neural:
        reasons.append("no neural predictions available for this channel")
    return {
        "channel_id": channel_id,
        "traditional": traditional,
        "neural": _jsonable_tree(neural),
        "recommendations": _jsonable_tree(recs.to_dict("records")) if not recs.empty else [],
        "confidence": {"overall": overall, **{k: (None if math.isnan(v) else v)
                                              for k, v in confidence.items()}},
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


def score(conn: duckdb.DuckDBPyConnection, champions: Champions,
          scored_at: datetime) -> ForecastResult:
    channels = _table(conn, "SELECT channel_id FROM features.channel_metrics ORDER BY channel_id",
                      [])
    rows = []
    for channel_id in channels.get("channel_id", pd.Series(dtype="int64")).tolist():
        doc = insights(conn, champions, int(channel_id))
        rows.append({"channel_id": int(channel_id), "insights": json.dumps(doc, default=str),
                     "confidence": doc["confidence"]["overall"],
                     "fallback_reason": doc["fallback_reason"]})
    frame = pd.DataFrame(rows, columns=["channel_id", "insights", "confidence", "fallback_reason"])
    used = {n: m.version for n, m in champions.items() if m is not None}
    frame = stamp(frame, None, scored_at, model_name="channel_pulse_insights")
    frame["model_version"] = ",".join(f"{n}:v{v}" for n, v in sorted(used.items())) or "none"
    return ForecastResult(frame, models={n: str(v) for n, v in used.items()})
