"""FastAPI app: one endpoint per service method, plus /health and /models.

Answers (all documented in /openapi.json with their models, see ``api.schemas``):

* 200: the method's answer; a model with no champion is answered by its strongest
  baseline (``source`` / ``fallback_reason`` in the body);
* 404: unknown channel;
* 422: bad input of any kind, with a reason that itself renders (no echo of the
  input: NaN or a lone surrogate cannot be written back as JSON);
* 503: nothing to answer from yet (no published tables, or a registry that has never
  been readable), with the reason;
* 500: a bug, with an ``error_id``; the traceback goes to the log under that id.

Every error is answered inside the app (``_AnswerBugs``), so the server never sees
an exception and the client's keep-alive connection survives it.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import (
    MAX_CHANNEL_ID,
    ChampionInfo,
    EngagementRequest,
    EngagementResponse,
    GrowthResponse,
    GrowthWhatIf,
    Health,
    InsightsResponse,
    PatternsResponse,
    RecommendationsResponse,
    ScheduleResponse,
    SegmentsResponse,
    TextsRequest,
    ViralRequest,
    ViralResponse,
    WhatIfResponse,
    errors,
)
from nn_models.service import (
    DeepLearningService,
    InvalidInput,
    ModelUnavailable,
    ServiceError,
    UnknownChannel,
)
from resources.settings import load_settings

log = logging.getLogger(__name__)
ChannelId = Annotated[int, Path(ge=1, le=MAX_CHANNEL_ID, description="Telegram channel id")]


def _printable(value: Any) -> Any:
    """A string that UTF-8 can encode (lone surrogates escaped), recursively."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


def _where(loc: list) -> str:
    """``body.snapshots.0.views`` → ``snapshots.0.views`` (the part after body/query/path)."""
    return ".".join(str(p) for p in loc[1:]) or (str(loc[0]) if loc else "request")


def _problem(status: int, **content: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content=_printable(content))


class _AnswerBugs:
    """Outermost app layer below Starlette's: an exception that escaped every handler
    becomes a 500 with an error id, logged with its traceback, and is not re-raised.

    (An ``Exception`` handler registered on FastAPI runs in Starlette's
    ServerErrorMiddleware, which re-raises after answering; the server then closes the
    keep-alive connection and the client's next request fails.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception(
                "error %s: unexpected exception on %s %s", error_id, scope.get("method"), scope.get("path")
            )
            if started:  # half an answer is out: only closing the connection is honest
                raise
            response = _problem(
                500,
                detail=f"internal error: the server has a bug; quote error_id {error_id} when reporting it",
                error_id=error_id,
            )
            await response(scope, receive, send)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def _answer(result: dict) -> dict:
    """An answer must be valid JSON: a NaN or infinity in it is a bug (500), not data."""
    if not _finite(result):
        raise ValueError("the answer holds a non-finite number (NaN/Infinity)")
    return result


def create_app(service: DeepLearningService | None = None) -> FastAPI:
    settings = load_settings()
    service = service or DeepLearningService(
        tracking_uri=settings.mlflow_uri,
        published_root=settings.parquet_uri,
        text_generator_path=os.environ.get("PULSE_TEXT_GENERATOR") or None,
    )
    app = FastAPI(
        title="Channel Pulse",
        version="0.1.0",
        description="Deep-learning analytics for Telegram channels. Errors: 404 unknown "
        "channel, 422 invalid request (with the reason), 503 nothing published yet, "
        "500 a bug (with an error_id to quote).",
    )
    app.state.service = service

    def _service_error(status: int):
        async def handler(request: Request, exc: ServiceError) -> JSONResponse:
            return _problem(status, detail=str(exc))

        return handler

    # most specific first: Starlette picks the handler by the exception's MRO
    for error, status in (
        (UnknownChannel, 404),
        (InvalidInput, 422),
        (ModelUnavailable, 503),
        (ServiceError, 422),
    ):
        app.add_exception_handler(error, _service_error(status))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        issues = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{_where(i['loc'])}: {i['msg']}" for i in issues[:5])
        return _problem(422, detail=f"invalid request: {summary}", errors=issues)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot decode (not UTF-8, not JSON) with 400: that is
        # bad input like any other, so 422; unknown routes (404), methods (405) stay
        status = 422 if exc.status_code == 400 else exc.status_code
        response = _problem(
            status, detail=f"invalid request: {exc.detail}" if status == 422 else str(exc.detail)
        )
        response.headers.update(exc.headers or {})
        return response

    app.add_middleware(_AnswerBugs)

    @app.get("/health", response_model=Health, responses=errors(500, 503))
    def health() -> Any:
        """``ok`` only when the published tables can be read (else 503 with the reason)."""
        detail = None
        try:
            service.require_tables()
            tables = True
        except ModelUnavailable as exc:
            tables, detail = False, str(exc)
        try:
            champions = {k: (v["version"] if v else None) for k, v in service.model_versions().items()}
            registry = "ok"
        except ModelUnavailable as exc:
            champions, registry = {}, f"unavailable: {exc}"
        body = {
            "status": "ok" if tables else "unavailable",
            "detail": detail,
            "time": time.time(),
            "tables": tables,
            "registry": registry,
            "champions": champions,
        }
        return body if tables else JSONResponse(status_code=503, content=_printable(jsonable_encoder(body)))

    @app.get("/models", response_model=dict[str, ChampionInfo | None], responses=errors(500, 503))
    def models() -> Any:
        """The champion of each model (None: answered by its strongest baseline)."""
        return _answer(service.model_versions())

    @app.post(
        "/channels/{channel_id}/engagement",
        response_model=EngagementResponse,
        responses=errors(404, 422, 500, 503),
    )
    def predict_engagement(channel_id: ChannelId, body: EngagementRequest) -> Any:
        return _answer(service.predict_engagement_neural(channel_id, body.model_dump()))

    @app.get(
        "/channels/{channel_id}/growth", response_model=GrowthResponse, responses=errors(404, 422, 500, 503)
    )
    def forecast_growth(
        channel_id: ChannelId, prediction_days: Annotated[int, Query(ge=1, le=30)] = 30
    ) -> Any:
        return _answer(service.forecast_growth_lstm(channel_id, prediction_days))

    @app.post(
        "/channels/{channel_id}/growth/what-if",
        response_model=WhatIfResponse,
        responses=errors(404, 422, 500, 503),
    )
    def growth_what_if(channel_id: ChannelId, body: GrowthWhatIf) -> Any:
        return _answer(service.predict_audience_growth_rnn(channel_id, body.model_dump()))

    @app.post(
        "/channels/{channel_id}/content-patterns",
        response_model=PatternsResponse,
        responses=errors(404, 422, 500, 503),
    )
    def content_patterns(channel_id: ChannelId, body: Annotated[TextsRequest | None, Body()] = None) -> Any:
        return _answer(service.analyze_content_patterns_cnn(channel_id, body.texts if body else None))

    @app.post("/viral-potential", response_model=ViralResponse, responses=errors(404, 422, 500, 503))
    def viral_potential(body: ViralRequest) -> Any:
        return _answer(service.detect_viral_potential_transformer(body.model_dump()))

    @app.get(
        "/channels/{channel_id}/user-segments",
        response_model=SegmentsResponse,
        responses=errors(404, 422, 500, 503),
    )
    def user_segments(channel_id: ChannelId) -> Any:
        return _answer(service.cluster_user_behavior_autoencoder(channel_id))

    @app.get(
        "/channels/{channel_id}/posting-schedule",
        response_model=ScheduleResponse,
        responses=errors(404, 422, 500, 503),
    )
    def posting_schedule(channel_id: ChannelId) -> Any:
        return _answer(service.optimize_posting_schedule_neural(channel_id))

    @app.get(
        "/channels/{channel_id}/content-recommendations",
        response_model=RecommendationsResponse,
        responses=errors(404, 422, 500, 503),
    )
    def content_recommendations(channel_id: ChannelId) -> Any:
        return _answer(service.generate_content_recommendations_gpt(channel_id))

    @app.get(
        "/channels/{channel_id}/insights",
        response_model=InsightsResponse,
        responses=errors(404, 422, 500, 503),
    )
    def insights(channel_id: ChannelId) -> Any:
        return _answer(service.generate_neural_insights(channel_id))

    return app
