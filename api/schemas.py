"""Request and response models of the REST API (what /openapi.json documents).

Requests are strict: a number is a JSON number (``true`` and ``"5"`` are not), every
number is finite and within the bounds stated here, texts are valid Unicode, times
are ISO 8601 in a plausible range, and unknown fields are rejected. The limits are
the service's own (``MAX_REQUEST_TEXTS``, ``MAX_TEXT_CHARS``), so the schema accepts
exactly what the service can answer. Responses name the fields every answer carries
(who served it: ``source`` / ``fallback_reason``, which model) and allow the
method-specific detail beside them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from nn_models.forecasts.patterns import MAX_REQUEST_TEXTS
from nn_models.forecasts.viral import MAX_TEXT_CHARS

MEDIA_PATTERN = "^(none|photo|video|document|poll|other)$"
MAX_COUNTER = 10**9  # views/forwards/replies/reactions of one post
MAX_MINUTES = 7 * 24 * 60  # snapshots of a draft's first week
MAX_CHANNEL_ID = 2**62
MAX_SNAPSHOTS = 200
TELEGRAM_LAUNCH = datetime(2013, 8, 1)
MAX_DAYS_AHEAD = 366  # a draft may be planned up to a year ahead


def _valid_unicode(text: str) -> str:
    """A lone surrogate ("\\ud800") is valid JSON but no text: it cannot be encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not valid Unicode (lone surrogate at position {exc.start})") from None
    return text


def _plausible_time(value: str) -> str:
    """ISO 8601 → naive UTC ISO string, between Telegram's launch and a year from now."""
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 time, e.g. 2026-11-01T10:00:00Z") from None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    latest = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=MAX_DAYS_AHEAD)
    if not TELEGRAM_LAUNCH <= stamp <= latest:
        raise ValueError(
            f"must lie between {TELEGRAM_LAUNCH.date()} (Telegram's launch) and "
            f"{MAX_DAYS_AHEAD} days from now (UTC)"
        )
    return stamp.isoformat()


Text = Annotated[str, AfterValidator(_valid_unicode)]
IsoTime = Annotated[
    str,
    Field(
        max_length=40,
        json_schema_extra={"format": "date-time"},
        description="ISO 8601 time (naive = UTC), from 2013-08-01 to a year from now",
    ),
    AfterValidator(_valid_unicode),
    AfterValidator(_plausible_time),
]
Counter = Annotated[int, Field(ge=0, le=MAX_COUNTER)]


class Request(BaseModel):
    """Strict: no coercion, no NaN/Infinity, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Snapshot(Request):
    minutes: float = Field(ge=0, le=MAX_MINUTES, description="post age at the observation")
    views: Counter
    forwards: Counter = 0
    replies: Counter = 0
    reactions: Counter = 0


class EngagementRequest(Request):
    """Either an existing ``post_id`` or a draft post with its first snapshots."""

    post_id: int | None = Field(None, ge=0, le=2**62)
    published_at: IsoTime | None = None
    media_type: str = Field("none", pattern=MEDIA_PATTERN)
    text_length: int = Field(0, ge=0, le=MAX_TEXT_CHARS)
    snapshots: list[Snapshot] = Field(default_factory=list, max_length=MAX_SNAPSHOTS)


class GrowthWhatIf(Request):
    posts_per_day: float = Field(ge=0, le=200, description="planned posting frequency")
    prediction_days: int = Field(30, ge=1, le=30)


class TextsRequest(Request):
    texts: list[Annotated[Text, Field(max_length=MAX_TEXT_CHARS)]] | None = Field(
        None, max_length=MAX_REQUEST_TEXTS
    )


class ViralRequest(Request):
    text: Text = Field(max_length=MAX_TEXT_CHARS, description="the post's text ('' for none)")
    channel_id: int | None = Field(None, ge=1, le=MAX_CHANNEL_ID)
    media_type: str = Field("none", pattern=MEDIA_PATTERN)
    published_at: IsoTime | None = None


# ----------------------------------------------------------------------------- errors


class Problem(BaseModel):
    """404 (unknown channel), 503 (nothing published yet): the reason."""

    detail: str


class Issue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class InvalidProblem(BaseModel):
    """422: what is wrong with the request; ``errors`` lists each field (schema checks)."""

    detail: str
    errors: list[Issue] = Field(default_factory=list)


class ServerProblem(BaseModel):
    """500: a bug. The traceback is in the server log under ``error_id``."""

    detail: str
    error_id: str


# -------------------------------------------------------------------------- responses


class Open(BaseModel):
    """Named fields are checked; method-specific detail is passed through."""

    model_config = ConfigDict(extra="allow")


class Served(Open):
    channel_id: int | None
    source: Literal["model", "baseline"]
    fallback_reason: str | None


class Quantiles(Open):
    p10: float
    p50: float
    p90: float


class ModelRef(Open):
    name: str
    version: str | None
    backend: str


class EngagementResponse(Served):
    post: dict[str, Any]
    hours_observed: float
    grid_hours_used: float
    engagement_score: float | None = Field(ge=0, le=1)
    above_median: bool | None
    predicted_views_48h: Quantiles
    predicted_interactions_48h: Quantiles
    model: ModelRef


class GrowthPoint(Open):
    date: str
    horizon_days: int
    p10: float
    p50: float
    p90: float


class GrowthResponse(Served):
    last_observed_date: str
    last_observed_subscribers: float
    prediction_days: int
    forecast: list[GrowthPoint]
    model: ModelRef


class WhatIfResponse(Served):
    last_observed_date: str
    prediction_days: int
    planned_posts_per_day: float
    baseline: list[GrowthPoint]
    what_if: list[GrowthPoint] | None
    explanation: str


class PatternsResponse(Served):
    patterns: dict[str, list[dict[str, Any]]]


class ViralResponse(Served):
    viral_probability: float = Field(ge=0, le=1)
    base_rate: dict[str, Any]


class SegmentsResponse(Served):
    model_version: str
    segments: list[dict[str, Any]]


class ScheduleResponse(Served):
    model_version: str
    top_slots: list[dict[str, Any]]
    best_hours: list[int]


class RecommendationsResponse(Served):
    recommendations: list[dict[str, Any]]


class InsightsResponse(Open):
    channel_id: int
    traditional: dict[str, Any]
    neural: dict[str, Any]
    sources: dict[str, str]
    recommendations: list[dict[str, Any]]
    confidence: dict[str, float | None]
    fallback_reason: str | None


class ChampionInfo(BaseModel):
    registered_model: str
    version: str
    backend: str
    backend_reason: str
    holdout_metrics: dict[str, float]


class Health(BaseModel):
    """``ok`` (200) when the published tables can be read; else ``unavailable`` (503)."""

    status: Literal["ok", "unavailable"]
    detail: str | None = None
    time: float
    tables: bool
    registry: str
    champions: dict[str, str | None]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route."""
    known: dict[int, tuple[type[BaseModel], str]] = {
        404: (Problem, "unknown channel"),
        422: (InvalidProblem, "the request is invalid (the reason says why)"),
        500: (ServerProblem, "a bug: logged with its traceback under error_id"),
        503: (Problem, "no published tables yet, or the model registry cannot be read yet"),
    }
    return {s: {"model": known[s][0], "description": known[s][1]} for s in statuses}
