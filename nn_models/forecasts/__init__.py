"""Scoring functions that turn champion models + feature tables into forecast tables.

One module per forecast table (DESIGN §3, schema ``forecasts``). Each exposes
``score(conn, champions, scored_at) -> ForecastResult``; the Dagster asset of the
same name writes the frame and publishes it. No Dagster here.
"""

from __future__ import annotations

from importlib import import_module

from nn_models.forecasts.base import ForecastResult, Scorer

# table -> (module:function, champions it needs)
FORECASTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "post_engagement_forecasts": ("nn_models.forecasts.engagement:score", ("engagement",)),
    "channel_growth_forecasts": ("nn_models.forecasts.growth:score", ("growth",)),
    "post_viral_scores": ("nn_models.forecasts.viral:score", ("viral", "content")),
    "content_patterns": ("nn_models.forecasts.patterns:score", ("content",)),
    "user_segments": ("nn_models.forecasts.segments:score", ("behavior",)),
    "posting_schedule_recommendations": ("nn_models.forecasts.schedule:score", ("schedule",)),
    "content_recommendations": (
        "nn_models.forecasts.recommendations:score",
        ("content", "viral", "schedule"),
    ),
    "channel_insights": (
        "nn_models.forecasts.insights:score",
        ("engagement", "growth", "content", "viral", "behavior", "schedule"),
    ),
}

# model -> the forecast table that answers its question (the others combine several)
SERVES: dict[str, str] = {
    "engagement": "post_engagement_forecasts",
    "growth": "channel_growth_forecasts",
    "content": "content_patterns",
    "viral": "post_viral_scores",
    "behavior": "user_segments",
    "schedule": "posting_schedule_recommendations",
}


def get_scorer(table: str) -> Scorer:
    module, function = FORECASTS[table][0].split(":")
    return getattr(import_module(module), function)


__all__ = ["FORECASTS", "SERVES", "ForecastResult", "Scorer", "get_scorer"]
