"""``DeepLearningService``: the insight service behind the REST API (DESIGN §6).

It answers the seed's nine methods from the current ``champion`` models (ONNX
Runtime where the export was parity-checked, PyTorch otherwise) and the published
Parquet tables, so it keeps answering while a Dagster run writes the warehouse.
A model without a champion is answered by its strongest baseline: every answer
carries ``source`` (``model`` / ``baseline``) and, for a baseline, ``fallback_reason``.
Results are cached with a TTL; the cache key holds the champion versions a method
used, so a promotion invalidates exactly what it changes. Champions are re-read
from the registry every few seconds and swapped in one assignment: a request sees
the old set or the new set, never a mix, and no restart is needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from importlib import import_module
from typing import Any

import duckdb
from cachetools import TTLCache
from mlflow import MlflowClient

from nn_models.champions import LoadedModel, load_champion
from nn_models.registry import CHAMPION, RegistryUnavailable, version_by_alias
from nn_models.tasks import TASKS, get_task
from warehouse.publish import open_reader

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base for errors the API maps to 4xx."""


class UnknownChannel(ServiceError):
    """The channel is not in the published tables (404)."""


class InvalidInput(ServiceError):
    """The request is well-formed JSON but makes no sense (422)."""


class ModelUnavailable(ServiceError):
    """Nothing to answer from yet (503 with the reason): no published tables, or no
    champion set loaded because the registry has not been readable since start. A model
    without a champion is not this: its method answers from the strongest baseline."""


class ChampionLoadFailed(RuntimeError):
    """A champion's artifacts could not be loaded; the current set keeps serving."""


def _call(path: str) -> Callable[..., dict]:
    module, function = path.split(":")
    return getattr(import_module(module), function)


class DeepLearningService:
    """Champion-backed predictions with TTL caching; see the module docstring."""

    def __init__(
        self,
        tracking_uri: str,
        published_root: str,
        ttl_seconds: float = 300.0,
        refresh_seconds: float = 5.0,
        text_generator_path: str | None = None,
        cache_bytes: int = 64 * 2**20,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.published_root = published_root
        self.refresh_seconds = refresh_seconds
        self.text_generator_path = text_generator_path
        # bounded in bytes: each entry is (its JSON size, the answer), see _cached
        self._cache: TTLCache = TTLCache(
            maxsize=cache_bytes, ttl=ttl_seconds, getsizeof=lambda entry: entry[0] + KEY_BYTES
        )
        self._lock = threading.RLock()
        self._champions: dict[str, LoadedModel | None] = {}
        self._versions: dict[str, str | None] = {}
        self.last_refresh_error: str | None = None
        self._checked_at = 0.0
        self._local = threading.local()
        self.stats = {"hits": 0, "misses": 0, "reloads": 0}

    # -- champions ---------------------------------------------------------------------------

    def _registry_versions(self) -> dict[str, str | None]:
        """The champion version of each task; None only for "no champion" (no alias/model).

        Any other registry error raises ``RegistryUnavailable`` (never read as None).
        """
        client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
        out = {}
        for name in TASKS:
            found = version_by_alias(client, get_task(name).registered_model, CHAMPION)
            out[name] = str(found.version) if found else None
        return out

    def champions(self) -> dict[str, LoadedModel | None]:
        """The current champion set (re-checked at most every ``refresh_seconds``).

        The set is swapped whole or not at all: if the registry cannot be read, or any
        changed champion fails to load, the current set keeps serving (and the refresh is
        retried next time), so no request ever sees a mix of old and new champions. With
        no set loaded yet, that failure is ``ModelUnavailable`` (503 with the reason).
        """
        now = time.monotonic()
        if now - self._checked_at < self.refresh_seconds and self._champions:
            return self._champions
        with self._lock:
            if time.monotonic() - self._checked_at < self.refresh_seconds and self._champions:
                return self._champions
            try:
                versions = self._registry_versions()
                if versions != self._versions or not self._champions:
                    self._champions = self._load_set(versions)  # one assignment
                    self._versions = versions
                    self.stats["reloads"] += 1
            except (RegistryUnavailable, ChampionLoadFailed) as exc:
                self.last_refresh_error = str(exc)
                if not self._champions:
                    raise ModelUnavailable(f"no champion set loaded yet: {exc}") from exc
                log.warning("keeping champion set %s: %s", self._versions, exc)
            else:
                self.last_refresh_error = None
            self._checked_at = time.monotonic()
            return self._champions

    def _load_set(self, versions: dict[str, str | None]) -> dict[str, LoadedModel | None]:
        """A complete new set: unchanged champions reused, changed ones loaded, or raise."""
        loaded: dict[str, LoadedModel | None] = {}
        for name, version in versions.items():
            current = self._champions.get(name)
            if version is None:
                loaded[name] = None
            elif current is not None and current.version == version:
                loaded[name] = current
            else:
                try:
                    model = load_champion(self.tracking_uri, name)
                except RegistryUnavailable:
                    raise
                except Exception as exc:
                    raise ChampionLoadFailed(
                        f"champion {name} v{version} could not be loaded: {exc!r}"
                    ) from exc
                if model is None or model.version != version:  # the alias moved meanwhile
                    raise ChampionLoadFailed(
                        f"champion {name} moved from v{version} while loading; retried at the next refresh"
                    )
                loaded[name] = model
        return loaded

    def model_versions(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for name, model in self.champions().items():
            out[name] = (
                None
                if model is None
                else {
                    "registered_model": model.registered_model,
                    "version": model.version,
                    "backend": model.backend,
                    "backend_reason": model.backend_reason,
                    # a metric that could not be measured (NaN) is unknown, not a number
                    "holdout_metrics": {k: v for k, v in model.metrics.items() if math.isfinite(v)},
                }
            )
        return out

    # -- data --------------------------------------------------------------------------------

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A per-thread DuckDB over the published Parquet tables (views re-read files)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_reader(self.published_root)
            self._local.conn = conn
        return conn

    def refresh_tables(self) -> None:
        """Pick up tables published for the first time since the reader was opened."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def require_tables(self) -> None:
        """``ModelUnavailable`` until the pipeline has published its tables."""
        try:
            self.reader().execute("SELECT 1 FROM raw.posts LIMIT 1").fetchall()
        except (duckdb.CatalogException, duckdb.IOException) as exc:
            self.refresh_tables()
            raise ModelUnavailable("no published tables yet: run the pipeline (make run)") from exc

    def require_channel(self, channel_id: int) -> None:
        conn = self.reader()
        try:
            found = conn.execute(
                "SELECT count(*) FROM raw.posts WHERE channel_id = ?", [channel_id]
            ).fetchall()[0][0]
        except (duckdb.CatalogException, duckdb.IOException) as exc:
            self.refresh_tables()
            raise ModelUnavailable("no published tables yet: run the pipeline (make run)") from exc
        if not found:
            raise UnknownChannel(f"channel {channel_id} has no posts in the published tables")

    # -- caching -----------------------------------------------------------------------------

    def _cached(
        self,
        method: str,
        args: Any,
        models: tuple[str, ...],
        compute: Callable[[dict[str, LoadedModel | None]], dict],
    ) -> dict:
        """Answer from the cache, keyed by a digest of (method, request, champion versions).

        The digest keeps a key at 32 bytes whatever the request (50 texts of 10,000
        characters would otherwise be a 1 MB key); answers count by their JSON size
        against ``cache_bytes``, and one larger than a tenth of it is not cached.
        """
        champions = self.champions()
        key = _digest((method, args, [(m, self._version(champions, m)) for m in models]))
        with self._lock:
            found = self._cache.get(key)
        if found is not None:
            self.stats["hits"] += 1
            return found[1]
        self.stats["misses"] += 1
        result = compute(champions)
        size = _size(result)
        if size <= self._cache.maxsize // 10:
            with self._lock:
                self._cache[key] = (size, result)
        return result

    @staticmethod
    def _version(champions: dict[str, LoadedModel | None], name: str) -> str | None:
        model = champions.get(name)
        return model.version if model else None

    # -- the seed's methods ------------------------------------------------------------------

    def predict_engagement_neural(self, channel_id: int, content_features: dict) -> dict:
        self.require_channel(channel_id)
        fn = _call("nn_models.forecasts.engagement:predict_post")
        return self._cached(
            "engagement",
            (channel_id, content_features),
            ("engagement",),
            lambda c: fn(self.reader(), c.get("engagement"), channel_id, content_features),
        )

    def forecast_growth_lstm(self, channel_id: int, prediction_days: int = 30) -> dict:
        if not 1 <= int(prediction_days) <= 30:
            raise InvalidInput("prediction_days must be between 1 and 30")
        self.require_channel(channel_id)
        fn = _call("nn_models.forecasts.growth:forecast_channel")
        return self._cached(
            "growth",
            (channel_id, int(prediction_days)),
            ("growth",),
            lambda c: fn(self.reader(), c.get("growth"), channel_id, int(prediction_days)),
        )

    def predict_audience_growth_rnn(self, channel_id: int, features: dict) -> dict:
        self.require_channel(channel_id)
        fn = _call("nn_models.forecasts.growth:what_if")
        return self._cached(
            "growth_what_if",
            (channel_id, features),
            ("growth",),
            lambda c: fn(self.reader(), c.get("growth"), channel_id, features),
        )

    def analyze_content_patterns_cnn(self, channel_id: int, text_data: list[str] | None = None) -> dict:
        self.require_channel(channel_id)
        fn = _call("nn_models.forecasts.patterns:analyze")
        return self._cached(
            "patterns",
            (channel_id, list(text_data or ())),
            ("content",),
            lambda c: fn(self.reader(), c.get("content"), channel_id, text_data),
        )

    def detect_viral_potential_transformer(self, post_content: dict) -> dict:
        channel_id = post_content.get("channel_id")
        if channel_id is not None:
            self.require_channel(int(channel_id))
        fn = _call("nn_models.forecasts.viral:detect")
        return self._cached(
            "viral",
            (post_content,),
            ("viral", "content"),
            lambda c: fn(self.reader(), c.get("viral"), c.get("content"), post_content),
        )

    def cluster_user_behavior_autoencoder(self, channel_id: int) -> dict:
        self.require_channel(channel_id)
        fn = _call("nn_models.forecasts.segments:channel_segments")
        return self._cached(
            "segments",
            (channel_id,),
            ("behavior",),
            lambda c: fn(self.reader(), c.get("behavior"), channel_id),
        )

    def optimize_posting_schedule_neural(self, channel_id: int) -> dict:
        self.require_channel(channel_id)
        fn = _call("nn_models.forecasts.schedule:channel_schedule")
        return self._cached(
            "schedule",
            (channel_id,),
            ("schedule",),
            lambda c: fn(self.reader(), c.get("schedule"), channel_id),
        )

    def generate_content_recommendations_gpt(self, channel_id: int) -> dict:
        self.require_channel(channel_id)
        fn = _call("nn_models.forecasts.recommendations:recommend")
        return self._cached(
            "recommendations",
            (channel_id,),
            ("content", "viral", "schedule"),
            lambda c: fn(self.reader(), c, channel_id, self.text_generator_path),
        )

    def generate_neural_insights(self, channel_id: int) -> dict:
        self.require_channel(channel_id)
        fn = _call("nn_models.forecasts.insights:insights")
        return self._cached(
            "insights", (channel_id,), tuple(TASKS), lambda c: fn(self.reader(), c, channel_id)
        )


KEY_BYTES = 200  # a digest key and the cache's own bookkeeping per entry


def _digest(value: Any) -> bytes:
    """sha256 of a JSON-like value in canonical form (sorted keys; any str escapes)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=True, default=repr)
    return hashlib.sha256(text.encode("ascii")).digest()


def _size(answer: Any) -> int:
    """An answer's size in bytes, as JSON (what the cache holds is about this much)."""
    return len(json.dumps(answer, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace"))
