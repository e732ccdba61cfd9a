"""``post_viral_scores`` and the per-request viral check (``detect``).

Which posts: every post published in the last ``RECENT_DAYS`` days of its channel
(counted back from the channel's latest post). That window holds every post still
gathering its first 48 h — the ones a viral score is useful for — plus two weeks of
posts whose outcome is known, so analysts can compare score and outcome; its size
grows with posting rate, not with history (≈ 11 k posts on the large setting).

Inputs are built exactly as in training: frozen MiniLM token states through the
shared token cache (``text_data.encode_texts``, keyed by text hash), and the channel
context of ``text_data.context_features`` from the same prior-post aggregates as
``text_data.POSTS_SQL`` (posts of the channel published ≥ 48 h 5 min earlier). The
aggregates are computed here for the scored posts only (``CONTEXT_SQL``), not for the
whole history as training does, and for a hypothetical post in ``detect``;
tests/test_forecasts_text.py checks both equal the training context.

``viral_probability`` comes from the ``ViralDetector`` champion (text + context),
``content_score`` from the ``ContentAnalyzer`` champion (text alone, sigmoid of its
calibrated logit). Without a champion, the strongest baseline serves instead
(``scoring_baselines``): the baselines of ``nn_models.baselines_text`` are tuned on a
time split of the labelled history in the warehouse (fitted on its earlier 80 %,
chosen on the latest 20 %), and the chosen one is refitted on all labelled posts —
for ``viral_probability`` the best of TF-IDF / context-only / TF-IDF + context LR,
for ``content_score`` the tuned TF-IDF LR (text only, like the content model). Rows
then carry ``source = baseline`` and the ``fallback_reason``; with too little
labelled history even for that (``text_data.check_history``), the channel's observed
viral rate serves, and the reason says so. ``detect`` falls back the same way.
The tuned scoring baselines are persisted under ``$PULSE_DATA_DIR/cache/scoring_baselines``
(keyed by the labelled history, the seed, scikit-learn and the tuning code; written
atomically under a file lock), so ``post_viral_scores``, ``content_patterns`` and
``content_recommendations`` — separate processes under a multiprocess executor — tune
once per history. They are not the training step's tuned baselines: those are chosen on
a different split (train → validation, holdout left out) and fitted on training rows only.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import math
import os
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import joblib
import numpy as np
import pandas as pd
import torch

from nn_models import baselines_text, text_data
from nn_models.champions import LoadedModel
from nn_models.forecasts.base import Champions, ForecastResult, missing_champion, stamp
from nn_models.task import InsufficientData

TABLE = "post_viral_scores"
COLUMNS = [
    "channel_id",
    "post_id",
    "viral_probability",
    "content_score",
    # extras
    "published_at",
    "media_type",
    "observed_viral",
    "content_model_version",
]
RECENT_DAYS = 14
SCORE_BATCH = 256
MAX_TEXT_CHARS = 10_000  # Telegram caps a message at 4096 characters (captions 1024)
LABEL_DEFINITION = "top decile of 48 h forwards among the channel's earlier posts (90 days)"
SELECTION_FRACTION = 0.20  # scoring-time baselines: chosen on the latest 20 % of labelled posts
BASELINE_CACHE_VERSION = 1  # bump when ScoringBaselines or the tuning changes
CHANNEL_FEATURES = (
    "log_subscribers",
    "prior_log_median_views",
    "prior_slot_effect",
    "prior_weekday_effect",
    "has_prior",
)

# ----------------------------------------------------------------- shared text helpers

_encoder_lock = threading.RLock()
_encoder = None
_tokenizer = None


def shared_encoder():
    """One ``MiniLMEncoder`` per process (loading it costs ~1 s; encoding is locked)."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            from nn_models.text_encoder import MiniLMEncoder

            _encoder = MiniLMEncoder(max_length=text_data.TOKEN_MAX_LENGTH)
        return _encoder


@contextmanager
def request_threads():
    """One intra-op thread while a request scores a handful of texts.

    A single short text gains nothing from a second thread, and on a busy 2-core host
    thread synchronisation made one MiniLM pass ~30x slower (1.3 s vs 40 ms measured).
    Held under the encoder lock, so concurrent requests never race on the setting.
    """
    with _encoder_lock:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def tokenizer():
    """The MiniLM tokenizer alone (token ids → the windows the CNN filters read)."""
    global _tokenizer
    if _tokenizer is None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        from nn_models.text_encoder import model_path

        _tokenizer = AutoTokenizer.from_pretrained(model_path(), local_files_only=True)
    return _tokenizer


def encode(texts: list[str], cached: bool = True) -> text_data.EncodedTexts:
    """MiniLM token states as the models were trained on (``TOKEN_MAX_LENGTH`` tokens).

    ``cached``: read/write the shared on-disk token cache (batch scoring of stored posts,
    which training has usually encoded already; MiniLM is loaded only for texts missing
    from it); per-request texts skip the cache and use the process's shared encoder.
    """
    encoder = _encoder if cached else shared_encoder()
    cache_dir = text_data.default_cache_dir() if cached else None
    with _encoder_lock:  # encode_texts adjusts the encoder's padding length per batch
        return text_data.encode_texts(texts, text_data.TOKEN_MAX_LENGTH, cache_dir, encoder=encoder)


def _run(model: LoadedModel, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """First output of ``model.run`` over the rows of ``arrays``, in batches."""
    n = len(next(iter(arrays.values())))
    out = []
    for start in range(0, n, SCORE_BATCH):
        batch = {
            k: np.ascontiguousarray(v[start : start + SCORE_BATCH], dtype=np.float32)
            for k, v in arrays.items()
        }
        out.append(np.asarray(model.run(**batch)[0], dtype=np.float64).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0)


def content_probabilities(model: LoadedModel, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """ContentAnalyzer outputs a calibrated logit; its probability is the sigmoid."""
    logit = _run(model, {"tokens": tokens, "mask": mask})
    return 1.0 / (1.0 + np.exp(-logit))


def viral_probabilities(
    model: LoadedModel, tokens: np.ndarray, mask: np.ndarray, context: np.ndarray
) -> np.ndarray:
    """ViralDetector outputs the probability itself."""
    return _run(model, {"tokens": tokens, "mask": mask, "context": context})


def text_columns_typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns as pandas ``string``: DuckDB then types them VARCHAR even when the
    frame is empty or a column is all NULL (an object column would become type "NULL")."""
    out = frame.copy()
    for column in out.select_dtypes(include="object").columns:
        out[column] = out[column].astype("string")
    return out


def model_info(model: LoadedModel | None) -> dict[str, Any] | None:
    if model is None:
        return None
    return {
        "registered_model": model.registered_model,
        "version": model.version,
        "backend": model.backend,
        "holdout_metrics": model.metrics,
    }


# ----------------------------------------------------------------------- context


# The same prior-post aggregates as training (text_data.PRIOR_SLOTS_CTE), for the
# ``targets`` rows only.
CONTEXT_SQL = (
    """
WITH targets AS ({targets}),
history AS (
    SELECT channel_id, published_at, hour, weekday,
           ln(1 + views_48h) - ln(1 + subscribers_at_publish) AS log_reach
    FROM features.post_features
    WHERE channel_id IN (SELECT DISTINCT channel_id FROM targets)
),
"""
    + text_data.PRIOR_SLOTS_CTE.format(targets="targets", history="history")
    + """
SELECT t.*, s.prior_log_reach, s.prior_slot_posts, s.prior_slot_log_reach,
       s.prior_weekday_posts, s.prior_weekday_log_reach
FROM targets AS t
LEFT JOIN slots AS s USING (channel_id, post_id)
ORDER BY t.channel_id, t.published_at, t.post_id
"""
)

STORED_TARGETS = """
    SELECT p.channel_id, p.post_id, p.published_at, p.hour, p.weekday, p.media_type,
           p.text_length, coalesce(p.text, '') AS text, p.subscribers_at_publish,
           p.channel_prior_posts_48h, p.channel_prior_median_views_48h,
           p.view_percentile_48h, p.is_viral
    FROM features.post_features AS p
    JOIN {keys} AS k USING (channel_id, post_id)
"""

# A post that does not exist yet (post_id -1): calendar from published_at, subscribers as
# of its day (as post_features' ASOF join on the daily counts), prior aggregates from posts
# published >= 48 h 5 min before it (as post_features' prior_48h window).
HYPOTHETICAL_TARGETS = """
    SELECT
        $channel_id::BIGINT AS channel_id, -1::BIGINT AS post_id,
        $published_at::TIMESTAMP AS published_at,
        hour($published_at::TIMESTAMP)::INTEGER AS hour,
        (isodow($published_at::TIMESTAMP) - 1)::INTEGER AS weekday,
        $media_type::VARCHAR AS media_type, length($text::VARCHAR)::INTEGER AS text_length,
        $text::VARCHAR AS text,
        {subscribers} AS subscribers_at_publish,
        (SELECT count(views_48h) FROM features.post_features
         WHERE channel_id = $channel_id
           AND published_at <= $published_at::TIMESTAMP - INTERVAL '48 hours 5 minutes')
            AS channel_prior_posts_48h,
        (SELECT median(views_48h) FROM features.post_features
         WHERE channel_id = $channel_id
           AND published_at <= $published_at::TIMESTAMP - INTERVAL '48 hours 5 minutes')
            AS channel_prior_median_views_48h,
        NULL::DOUBLE AS view_percentile_48h, NULL::BOOLEAN AS is_viral
"""
SUBSCRIBERS_DAILY = """(SELECT arg_max(subscribers, day) FROM features.channel_daily_features
         WHERE channel_id = $channel_id AND day <= $published_at::DATE)"""
SUBSCRIBERS_POSTS = """(SELECT arg_max(subscribers_at_publish, published_at)
         FROM features.post_features
         WHERE channel_id = $channel_id AND published_at::DATE <= $published_at::DATE)"""


def stored_post_context(conn: duckdb.DuckDBPyConnection, keys: pd.DataFrame) -> pd.DataFrame:
    """Posts of ``keys`` (channel_id, post_id) with text, outcome and the context inputs."""
    name = f"_keys_{uuid.uuid4().hex[:12]}"
    conn.register(name, keys[["channel_id", "post_id"]].drop_duplicates())
    try:
        sql = CONTEXT_SQL.format(targets=STORED_TARGETS.format(keys=name))
        return conn.execute(sql).fetchdf()
    finally:
        conn.unregister(name)


def hypothetical_context(
    conn: duckdb.DuckDBPyConnection, channel_id: int, published_at: datetime, media_type: str, text: str
) -> pd.DataFrame:
    """One row of context inputs for a post not published yet."""
    params = {
        "channel_id": int(channel_id),
        "published_at": published_at,
        "media_type": media_type,
        "text": text,
    }
    for subscribers in (SUBSCRIBERS_DAILY, SUBSCRIBERS_POSTS):
        sql = CONTEXT_SQL.format(targets=HYPOTHETICAL_TARGETS.format(subscribers=subscribers))
        try:
            return conn.execute(sql, params).fetchdf()
        except duckdb.CatalogException:
            continue  # channel_daily_features not built / published: latest post's count
    raise duckdb.CatalogException("features.post_features is not available")


def network_context(model: LoadedModel, frame: pd.DataFrame) -> np.ndarray:
    """Context with the channel features at the training mean (no channel given).

    The request's own facts (media type, publish time, text length) are kept; the
    channel-specific features take the mean of the viral model's training posts, which
    is what the model's input normalisation maps to zero.
    """
    context = text_data.context_features(frame)
    mean = model.module.context_mean.detach().cpu().numpy()
    for feature in CHANNEL_FEATURES:
        i = text_data.CONTEXT_FEATURES.index(feature)
        context[:, i] = mean[i]
    return context


# ------------------------------------------------------------------ baselines


@dataclass
class ScoringBaselines:
    """The strongest baselines, tuned and fitted at scoring time on the labelled history.

    ``content``: tuned TF-IDF LR (text only); ``viral``: the best on validation of the
    three viral baselines. Both None when the history is below the text models' minimum
    (``reason``); ``viral_rates`` (channel -> observed viral rate) then serve instead.
    """

    content: baselines_text.TunedBaseline | None
    viral: baselines_text.TunedBaseline | None
    n_posts: int
    reason: str | None = None
    selection: dict[str, float] = field(default_factory=dict)  # name -> validation AUC
    viral_rates: dict[int, float] = field(default_factory=dict)
    network_rate: float | None = None
    context_mean: np.ndarray | None = None  # mean context of the labelled posts
    term_weights: pd.Series | None = None  # word n-gram -> LR weight (content patterns)
    term_analyzer: Any = None  # text -> its word n-grams
    term_note: str = ""

    def describe(self, which: str) -> str:
        """Which baseline serves ``which`` ("viral" / "content") and how it was chosen."""
        tuned = self.viral if which == "viral" else self.content
        if tuned is None:
            return f"the channel's observed viral rate (no baseline could be fitted: {self.reason})"
        chosen = ", ".join(f"{n} {auc:.3f}" for n, auc in self.selection.items())
        return (
            f"baseline {tuned.label}, chosen on the latest {SELECTION_FRACTION:.0%} of "
            f"{self.n_posts} labelled posts (validation ROC AUC: {chosen}) and refitted "
            "on all of them"
        )

    def rate(self, channel_id: int | None) -> float:
        if channel_id is not None and int(channel_id) in self.viral_rates:
            return self.viral_rates[int(channel_id)]
        return float("nan") if self.network_rate is None else self.network_rate

    def viral_scores(self, frame: pd.DataFrame, channel_ids: np.ndarray) -> np.ndarray:
        """Viral probability of ``frame`` rows (``text_data.baseline_frame`` columns)."""
        if self.viral is not None:
            return self.viral.scores(frame)
        return np.array([self.rate(c) for c in channel_ids], dtype=np.float64)

    def content_scores(self, texts: list[str]) -> np.ndarray:
        """Text-only viral probability (NaN without a fitted baseline)."""
        if self.content is None:
            return np.full(len(texts), np.nan)
        return self.content.scores(pd.DataFrame({baselines_text.TEXT: list(texts)}))


_baseline_lock = threading.Lock()
_baseline_cache: dict[tuple, ScoringBaselines] = {}


def selection_split(published_at: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Earlier 80 % (fit) / latest 20 % (choose) of the labelled posts, by publish time."""
    ts = pd.to_datetime(published_at).to_numpy()
    if len(ts) == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    start = np.sort(ts)[int(np.floor(len(ts) * (1 - SELECTION_FRACTION)))]
    return ts < start, ts >= start


def baseline_cache_dir() -> Path | None:
    """``$PULSE_DATA_DIR/cache/scoring_baselines`` when the variable is set, else no disk cache."""
    root = os.environ.get("PULSE_DATA_DIR")
    return Path(root) / "cache" / "scoring_baselines" if root else None


def _baseline_file(key: tuple) -> Path | None:
    directory = baseline_cache_dir()
    if directory is None:
        return None
    import sklearn

    # the tuning code is part of the key: an edited baselines_text never reads an old fit
    code = hashlib.sha1(inspect.getsource(baselines_text).encode()).hexdigest()
    digest = hashlib.sha1(repr((BASELINE_CACHE_VERSION, sklearn.__version__, code, key)).encode()).hexdigest()
    return directory / f"baselines-{digest[:20]}.joblib"


@contextmanager
def _locked(path: Path):
    """Exclusive lock on ``path`` + ``.lock`` (one process tunes, the others wait and read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def scoring_baselines(conn: duckdb.DuckDBPyConnection, seed: int = 0) -> ScoringBaselines:
    """Tune, choose and fit the baselines on the warehouse's labelled posts (see module doc).

    Cached on the labelled history (post count, latest post, post-id sum, label count)
    and the seed: in the process, and on disk when ``PULSE_DATA_DIR`` is set, so the
    three forecast tables and repeated requests share one fit. A missing
    ``features.post_features`` raises ``duckdb.CatalogException`` (callers map it).
    """
    posts = conn.execute(text_data.POSTS_SQL).fetchdf()
    key = (
        len(posts),
        str(posts["published_at"].max()) if len(posts) else "",
        int(posts["post_id"].sum()) if len(posts) else 0,
        int(posts[text_data.LABEL].astype(bool).sum()) if len(posts) else 0,
        seed,
    )
    with _baseline_lock:
        if key in _baseline_cache:
            return _baseline_cache[key]
        path = _baseline_file(key)
        if path is None:
            out = _tune_scoring_baselines(posts, seed)
        else:
            with _locked(path):
                if path.exists():
                    out = joblib.load(path)
                else:
                    out = _tune_scoring_baselines(posts, seed)
                    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
                    joblib.dump(out, tmp)
                    os.replace(tmp, path)
        _baseline_cache.clear()  # one history per process is enough
        _baseline_cache[key] = out
        return out


def _tune_scoring_baselines(posts: pd.DataFrame, seed: int) -> ScoringBaselines:
    """The tuning behind ``scoring_baselines`` (no caching)."""
    labels = posts[text_data.LABEL].astype(bool).to_numpy()
    rates = posts.assign(v=labels.astype(float)).groupby("channel_id")["v"].mean()
    frame = text_data.baseline_frame(posts)
    out = ScoringBaselines(
        None,
        None,
        len(posts),
        viral_rates={int(c): float(r) for c, r in rates.items()},
        network_rate=float(labels.mean()) if len(labels) else None,
        context_mean=(
            frame[list(text_data.CONTEXT_FEATURES)].to_numpy().mean(axis=0) if len(frame) else None
        ),
    )
    fit, val = selection_split(posts["published_at"])
    try:
        text_data.check_history(posts, {"fit": fit, "validation": val})
    except InsufficientData as exc:
        out.reason = str(exc)
    else:
        tuned = baselines_text.tune_baselines(
            baselines_text.BASELINE_NAMES,
            frame[fit],
            labels[fit],
            frame[val],
            labels[val],
            text_data.CONTEXT_FEATURES,
            seed=seed,
        )
        best = baselines_text.strongest(tuned)
        out.selection = {n: round(b.val_roc_auc, 4) for n, b in tuned.items()}
        out.viral = tuned[best].refit(frame, labels, text_data.CONTEXT_FEATURES, seed)
        out.content = tuned["tfidf"].refit(frame, labels, text_data.CONTEXT_FEATURES, seed)
        out.term_weights, out.term_analyzer, out.term_note = baselines_text.word_term_weights(
            out.content, frame, labels, seed
        )
    return out


def baseline_info(baselines: ScoringBaselines, which: str) -> dict[str, Any]:
    """The serving baseline as a request's JSON (name, chosen settings, validation AUCs)."""
    tuned = baselines.viral if which == "viral" else baselines.content
    return {
        "baseline": None if tuned is None else tuned.name,
        "params": None if tuned is None else tuned.params,
        "validation_roc_auc": baselines.selection or None,
        "n_labelled_posts": baselines.n_posts,
        "description": baselines.describe(which),
    }


# --------------------------------------------------------------------------- batch


def _recent_keys(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute(
        """
        SELECT channel_id, post_id FROM features.post_features
        QUALIFY published_at >= max(published_at) OVER (PARTITION BY channel_id)
                                - to_days(CAST(? AS INTEGER))
        """,
        [RECENT_DAYS],
    ).fetchdf()


def empty_frame(model: LoadedModel | None, scored_at: datetime, reason: str | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS})
    frame = frame.astype(
        {
            "channel_id": "int64",
            "post_id": "int64",
            "published_at": "datetime64[us]",
            "media_type": "object",
            "observed_viral": "float64",
            "content_model_version": "object",
        }
    )
    return text_columns_typed(stamp(frame, model, scored_at, fallback_reason=reason))


def score(conn: duckdb.DuckDBPyConnection, champions: Champions, scored_at: datetime) -> ForecastResult:
    """Score the recent posts with the champions, or the strongest baseline without one."""
    viral = champions.get("viral")
    content = champions.get("content")
    reason = missing_champion(TABLE, ("viral",), champions)
    models = {n: m.version for n, m in (("viral", viral), ("content", content)) if m is not None}
    try:
        keys = _recent_keys(conn)
    except duckdb.CatalogException as exc:
        why = f"features.post_features is not built yet ({exc})"
        return ForecastResult(
            empty_frame(viral, scored_at, reason and f"{reason}; {why}"),
            notes={"skipped": why},
            models=models,
        )
    if keys.empty:
        why = "features.post_features has no posts"
        return ForecastResult(
            empty_frame(viral, scored_at, reason and f"{reason}; {why}"),
            notes={"skipped": why},
            models=models,
        )
    notes: dict[str, str] = {}
    posts = stored_post_context(conn, keys)
    context = text_data.context_features(posts)
    channel_ids = posts["channel_id"].to_numpy(dtype=np.int64)
    fallback = scoring_baselines(conn) if viral is None or content is None else None
    token_note = "token states: not needed (no champion to score with)"
    if viral is not None or content is not None:
        encoded = encode(posts["text"].tolist(), cached=True)
        token_note = f"token states: {encoded.n_cached} from cache, {encoded.n_encoded} encoded"
    frame = pd.DataFrame(
        {"channel_id": posts["channel_id"].astype("int64"), "post_id": posts["post_id"].astype("int64")}
    )
    if viral is not None:
        frame["viral_probability"] = viral_probabilities(viral, encoded.tokens, encoded.mask, context)
    else:
        frame["viral_probability"] = fallback.viral_scores(text_data.baseline_frame(posts), channel_ids)
        reason = f"{reason}; viral_probability from the {fallback.describe('viral')}"
        notes["viral_probability"] = reason
    if content is not None:
        frame["content_score"] = content_probabilities(content, encoded.tokens, encoded.mask)
        content_version = content.version
    else:
        frame["content_score"] = fallback.content_scores(posts["text"].tolist())
        content_version = f"baseline:{fallback.content.name}" if fallback.content is not None else None
        notes["content_score"] = (
            missing_champion(TABLE, ("content",), champions)
            + f"; content_score from the {fallback.describe('content')}"
            + ("" if fallback.content is not None else " (NULL)")
        )
    frame["published_at"] = pd.to_datetime(posts["published_at"]).astype("datetime64[us]")
    frame["media_type"] = posts["media_type"].astype(object)
    frame["observed_viral"] = posts["is_viral"].astype("float64")  # NULL until 48 h known
    frame["content_model_version"] = content_version
    pending = int(posts["is_viral"].isna().sum())
    notes["scope"] = (
        f"{len(frame)} posts from the last {RECENT_DAYS} days of "
        f"{frame['channel_id'].nunique()} channels ({pending} without 48 h data yet); "
        f"{token_note}"
    )
    model_name = None if viral is not None or fallback.viral is None else (f"baseline:{fallback.viral.name}")
    stamped = stamp(frame[COLUMNS], viral, scored_at, model_name, fallback_reason=reason)
    return ForecastResult(text_columns_typed(stamped), notes=notes, models=models)


# ---------------------------------------------------------------------- per request


def _invalid(message: str) -> Exception:
    from nn_models.service import InvalidInput

    return InvalidInput(message)


def parse_time(value: Any, field: str = "published_at") -> datetime:
    """ISO string / datetime → naive UTC datetime (InvalidInput otherwise)."""
    try:
        stamp_ = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise _invalid(f"{field} must be an ISO 8601 time, got {value!r}") from exc
    if stamp_ is pd.NaT or pd.isna(stamp_):
        raise _invalid(f"{field} must be an ISO 8601 time, got {value!r}")
    if stamp_.tzinfo is not None:
        stamp_ = stamp_.tz_convert("UTC").tz_localize(None)
    return stamp_.to_pydatetime()


def parse_channel_id(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise _invalid(f"channel_id must be an integer, got {value!r}")
    try:
        as_float = float(value)
    except (TypeError, ValueError) as exc:
        raise _invalid(f"channel_id must be an integer, got {value!r}") from exc
    if not math.isfinite(as_float) or as_float != int(as_float):
        raise _invalid(f"channel_id must be an integer, got {value!r}")
    return int(as_float)


def _validated(post_content: Any) -> tuple[str, str, int | None, datetime, bool]:
    if not isinstance(post_content, dict):
        raise _invalid("post_content must be an object with text and media_type")
    text = post_content.get("text")
    if not isinstance(text, str):
        raise _invalid("post_content.text must be a string (the post's text; '' for none)")
    if len(text) > MAX_TEXT_CHARS:
        raise _invalid(f"post_content.text has {len(text)} characters; at most {MAX_TEXT_CHARS}")
    media = post_content.get("media_type")
    if media not in text_data.MEDIA_TYPES:
        raise _invalid(f"post_content.media_type must be one of {list(text_data.MEDIA_TYPES)}, got {media!r}")
    channel = post_content.get("channel_id")
    channel_id = None if channel is None else parse_channel_id(channel)
    raw_time = post_content.get("published_at")
    assumed = raw_time is None
    published_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0) if assumed else parse_time(raw_time)
    return text, media, channel_id, published_at, assumed


def base_rate(conn: duckdb.DuckDBPyConnection, channel_id: int | None) -> dict[str, Any]:
    """Observed share of viral posts (posts whose 48 h forwards are known)."""
    where, params = ("WHERE channel_id = ?", [channel_id]) if channel_id is not None else ("", [])
    rate, n = conn.execute(
        f"SELECT avg(is_viral::DOUBLE), count(is_viral) FROM features.post_features {where}", params
    ).fetchall()[0]
    return {
        "scope": "channel" if channel_id is not None else "network",
        "viral_rate": None if rate is None else float(rate),
        "n_posts": int(n),
        "definition": f"share of posts in the {LABEL_DEFINITION}",
    }


def tables_missing(exc: Exception) -> Exception:
    """A missing feature table at request time: 503 with the reason, not a crash."""
    from nn_models.service import ModelUnavailable

    return ModelUnavailable(f"feature tables are not published yet (run the pipeline): {exc}")


def detect(
    conn: duckdb.DuckDBPyConnection,
    viral: LoadedModel | None,
    content: LoadedModel | None,
    post_content: dict,
) -> dict:
    """Viral probability of a post before it is published (what the API returns).

    ``viral`` / ``content`` may be None (no champion): the strongest baseline fitted on
    the labelled history answers instead, and ``source`` / ``fallback_reason`` say so.
    """
    text, media, channel_id, published_at, assumed = _validated(post_content)
    try:
        return _detect(conn, viral, content, text, media, channel_id, published_at, assumed)
    except duckdb.CatalogException as exc:
        raise tables_missing(exc) from exc


def _detect(
    conn: duckdb.DuckDBPyConnection,
    viral: LoadedModel | None,
    content: LoadedModel | None,
    text: str,
    media: str,
    channel_id: int | None,
    published_at: datetime,
    assumed: bool,
) -> dict:
    notes = []
    fallback = scoring_baselines(conn) if viral is None or content is None else None
    if channel_id is not None:
        known = conn.execute(
            "SELECT count(*) FROM features.post_features WHERE channel_id = ?", [channel_id]
        ).fetchall()[0][0]
        if not known:
            from nn_models.service import UnknownChannel

            raise UnknownChannel(f"channel {channel_id} has no posts in features.post_features")
        frame = hypothetical_context(conn, channel_id, published_at, media, text)
        context = text_data.context_features(frame)
        context_kind = "channel"
        notes.append(
            f"channel context of channel {channel_id} as of {published_at.isoformat()} "
            "(subscribers, prior reach, slot effects from its published posts)"
        )
    else:
        frame = pd.DataFrame(
            [
                {
                    "media_type": media,
                    "hour": published_at.hour,
                    "weekday": published_at.weekday(),
                    "text_length": conn.execute("SELECT length(?)", [text]).fetchall()[0][0],
                    "subscribers_at_publish": np.nan,
                    "channel_prior_posts_48h": np.nan,
                    "channel_prior_median_views_48h": np.nan,
                    "prior_log_reach": np.nan,
                    "prior_slot_posts": np.nan,
                    "prior_slot_log_reach": np.nan,
                    "prior_weekday_posts": np.nan,
                    "prior_weekday_log_reach": np.nan,
                }
            ]
        )
        if viral is not None:
            context = network_context(viral, frame)
            notes.append(
                "no channel_id: channel features (audience size, prior reach, slot "
                "effects) set to the viral model's training mean, i.e. an average channel"
            )
        else:
            context = text_data.context_features(frame)
            if fallback.context_mean is not None:
                for feature in CHANNEL_FEATURES:
                    i = text_data.CONTEXT_FEATURES.index(feature)
                    context[:, i] = fallback.context_mean[i]
            notes.append(
                "no channel_id: channel features (audience size, prior reach, slot "
                "effects) set to the mean of the labelled posts, i.e. an average channel"
            )
        context_kind = "network"
    if assumed:
        notes.append("no published_at: assumed publication now")
    fallback_reason = None
    if viral is not None or content is not None:
        with request_threads():
            encoded = encode([text], cached=False)
            if viral is not None:
                probability = float(viral_probabilities(viral, encoded.tokens, encoded.mask, context)[0])
            if content is not None:
                content_score = float(content_probabilities(content, encoded.tokens, encoded.mask)[0])
    if viral is None:
        base = pd.DataFrame(context, columns=list(text_data.CONTEXT_FEATURES))
        base.insert(0, "text", [text])
        probability = float(fallback.viral_scores(base, np.array([channel_id]))[0])
        fallback_reason = (
            missing_champion("viral:detect", ("viral",), {"viral": None})
            + f"; viral_probability from the {fallback.describe('viral')}"
        )
    if content is None:
        value = float(fallback.content_scores([text])[0])
        content_score = None if math.isnan(value) else value
        notes.append("no content champion: content_score from the " + fallback.describe("content"))
    rate = base_rate(conn, channel_id)
    relative = (probability / rate["viral_rate"]) if rate["viral_rate"] else None
    models = {"viral": model_info(viral), "content": model_info(content)}
    if fallback is not None:
        models["baselines"] = {
            w: baseline_info(fallback, w) for w, m in (("viral", viral), ("content", content)) if m is None
        }
    return {
        "channel_id": channel_id,
        "context": context_kind,
        "published_at": published_at.isoformat(),
        "published_at_assumed": assumed,
        "media_type": media,
        "viral_probability": None if math.isnan(probability) else probability,
        "content_score": content_score,
        "base_rate": rate,
        "relative_to_base_rate": relative,
        "label": LABEL_DEFINITION,
        "source": "model" if viral is not None else "baseline",
        "fallback_reason": fallback_reason,
        "models": models,
        "notes": notes,
    }
