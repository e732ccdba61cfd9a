"""FastAPI app: one endpoint per service method, plus /health and /models.

Bad input → 422 with the reason, unknown channel → 404, no published tables yet →
503 with the reason. A model with no champion is answered by its strongest baseline
(``source`` / ``fallback_reason`` in the body); anything unexpected is logged and
answered as 503, never a bare 500. OpenAPI docs at /docs.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nn_models.service import (
    DeepLearningService,
    InvalidInput,
    ModelUnavailable,
    ServiceError,
    UnknownChannel,
)
from resources.settings import load_settings

log = logging.getLogger(__name__)
MAX_TEXT = 10_000
ChannelId = Annotated[int, Path(ge=1, le=2**62, description="Telegram channel id")]


class Snapshot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    minutes: float = Field(ge=0, le=7 * 24 * 60, description="post age at the observation")
    views: int = Field(ge=0)
    forwards: int = Field(0, ge=0)
    replies: int = Field(0, ge=0)
    reactions: int = Field(0, ge=0)


class EngagementRequest(BaseModel):
    """Either an existing ``post_id`` or a draft post with its first snapshots."""

    model_config = ConfigDict(extra="forbid")
    post_id: int | None = Field(None, ge=0)
    published_at: str | None = Field(None, max_length=40, description="ISO time, UTC")
    media_type: str = Field("none", pattern="^(none|photo|video|document|poll|other)$")
    text_length: int = Field(0, ge=0, le=100_000)
    snapshots: list[Snapshot] = Field(default_factory=list, max_length=200)


class GrowthWhatIf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    posts_per_day: float = Field(ge=0, le=200, description="planned posting frequency")
    prediction_days: int = Field(30, ge=1, le=30)


class TextsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Annotated[str, Field(max_length=MAX_TEXT)]] | None = Field(None, max_length=500)


class ViralRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    channel_id: int | None = Field(None, ge=1, le=2**62)
    media_type: str = Field("none", pattern="^(none|photo|video|document|poll|other)$")
    published_at: str | None = Field(None, max_length=40)


def create_app(service: DeepLearningService | None = None) -> FastAPI:
    settings = load_settings()
    service = service or DeepLearningService(
        tracking_uri=settings.mlflow_uri,
        published_root=settings.parquet_uri,
        text_generator_path=os.environ.get("PULSE_TEXT_GENERATOR") or None,
    )
    app = FastAPI(title="Channel Pulse", version="0.1.0",
                  description="Deep-learning analytics for Telegram channels.")
    app.state.service = service

    def _answer(status: int):
        async def handler(request: Request, exc: ServiceError):
            return JSONResponse(status_code=status, content={"detail": str(exc)})

        return handler

    # most specific first: Starlette picks the handler by the exception's MRO
    for error, status in ((UnknownChannel, 404), (InvalidInput, 422),
                          (ModelUnavailable, 503), (ServiceError, 422)):
        app.add_exception_handler(error, _answer(status))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(status_code=503, content={
            "detail": f"temporarily unable to answer: {type(exc).__name__}"})

    @app.get("/health")
    def health() -> dict[str, Any]:
        versions = service.model_versions()
        return {"status": "ok", "time": time.time(),
                "champions": {k: (v["version"] if v else None) for k, v in versions.items()}}

    @app.get("/models")
    def models() -> dict[str, Any]:
        return service.model_versions()

    @app.post("/channels/{channel_id}/engagement")
    def predict_engagement(channel_id: ChannelId, body: EngagementRequest) -> dict:
        return service.predict_engagement_neural(channel_id, body.model_dump())

    @app.get("/channels/{channel_id}/growth")
    def forecast_growth(channel_id: ChannelId,
                        prediction_days: Annotated[int, Query(ge=1, le=30)] = 30) -> dict:
        return service.forecast_growth_lstm(channel_id, prediction_days)

    @app.post("/channels/{channel_id}/growth/what-if")
    def growth_what_if(channel_id: ChannelId, body: GrowthWhatIf) -> dict:
        return service.predict_audience_growth_rnn(channel_id, body.model_dump())

    @app.post("/channels/{channel_id}/content-patterns")
    def content_patterns(channel_id: ChannelId, body: TextsRequest | None = None) -> dict:
        return service.analyze_content_patterns_cnn(channel_id, body.texts if body else None)

    @app.post("/viral-potential")
    def viral_potential(body: ViralRequest) -> dict:
        return service.detect_viral_potential_transformer(body.model_dump())

    @app.get("/channels/{channel_id}/user-segments")
    def user_segments(channel_id: ChannelId) -> dict:
        return service.cluster_user_behavior_autoencoder(channel_id)

    @app.get("/channels/{channel_id}/posting-schedule")
    def posting_schedule(channel_id: ChannelId) -> dict:
        return service.optimize_posting_schedule_neural(channel_id)

    @app.get("/channels/{channel_id}/content-recommendations")
    def content_recommendations(channel_id: ChannelId) -> dict:
        return service.generate_content_recommendations_gpt(channel_id)

    @app.get("/channels/{channel_id}/insights")
    def insights(channel_id: ChannelId) -> dict:
        return service.generate_neural_insights(channel_id)

    return app
