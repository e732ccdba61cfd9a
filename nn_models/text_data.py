"""Inputs shared by the content and viral models: posts, labels, time split, token states.

Both models read the same posts — those with a defined ``is_viral`` label from
``features.post_features`` (top decile of 48 h forwards among the channel's *earlier*
posts within 90 days, NULL for a channel's first 5 posts; nothing here recomputes
it) — split them by publication time (train < validation < holdout, the holdout
being the latest ~20 %) and feed frozen all-MiniLM-L6-v2 token states to a small
network. Each split also keeps its texts, pre-publication context and channel ids for
the tuned baselines (``nn_models.baselines_text``) and the clustered bootstrap.
Encoding ~10 k texts costs minutes of CPU, so the states are computed once
and cached on disk as float16, keyed by ``md5(text)`` (the same key as
``features.post_text_embeddings``), under ``$PULSE_DATA_DIR/cache/text_tokens/`` when
that variable is set; the content model, the viral model and every re-run share them.
Without the variable nothing is cached (each load encodes its texts again). The
``post_text_embeddings`` asset fills this cache in the same MiniLM pass that gives its
sentence embeddings (``embed_via_cache``: the mean of the cached real-token states,
L2-normalised), so the models' loads normally encode nothing.

Smallest history: ``MIN_LABELLED_POSTS`` labelled posts, and every split (train,
validation, holdout) with at least ``MIN_CLASS_PER_SPLIT`` viral and as many non-viral
posts (below that ROC AUC is undefined or rests on one or two posts); the paired
bootstrap of the gate then says whether the holdout is large enough to tell model
and baseline apart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from nn_models.task import InsufficientData, PreparedData
from nn_models.text_encoder import EMBEDDING_DIM, ENCODER_NAME
from warehouse.schema import MEDIA_TYPES

log = logging.getLogger(__name__)

TOKEN_MAX_LENGTH = 48  # MiniLM tokens per post (99 % of synthetic posts fit in 46)
HOLDOUT_FRACTION = 0.20  # latest share of posts (by publish time)
VAL_FRACTION = 0.15  # the share just before the holdout
MIN_LABELLED_POSTS = 100  # below this a top-decile label has < 10 positives overall
MIN_CLASS_PER_SPLIT = 3  # each split needs this many viral and non-viral posts
LABEL = "is_viral"
AUX = "aux_targets"

# Dense training-only targets (standardised): the ~10 % viral labels alone are too few
# to learn which words travel, the forwards of every post are not.
AUX_TARGETS: tuple[str, ...] = (
    "log_forward_rate",  # ln((forwards + .5) / (views + 1))
    "relative_log_forward_rate",  # the same minus the channel's train mean
    "relative_log_forwards",  # ln(1 + forwards_48h) - the channel's train mean
    "forwards_percentile",  # within-channel percentile of forwards_48h
)

# Channel context known before publishing (the viral model's second input, and the
# context-only baseline's only input). Channel trends — subscriber growth so far, prior
# forward rate, prior forward quantiles, history length — were left out when the label
# still ranked a post among *later* posts too (viral posts then piled up at the end of
# growing channels and those trends flipped sign between training and holdout); with
# the trailing label they have not been re-tried.
CONTEXT_FEATURES: tuple[str, ...] = (
    *(f"media_{m}" for m in MEDIA_TYPES),
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
    "log_subscribers",  # ln(1 + subscribers at publish)
    "prior_log_median_views",  # ln(1 + channel prior median views_48h)
    "prior_slot_effect",  # channel prior log reach at this hour (+-1 h) vs its mean, shrunk
    "prior_weekday_effect",  # the same for the weekday
    "has_prior",  # 1 when the channel had posts >= 48 h old before this one
    "log_text_length",  # ln(1 + characters)
)

# Posts with a defined viral label, and context computed from earlier posts only: a
# post's "prior" posts are the channel's posts published >= 48 h 5 min before it, whose
# 48 h counters were already observed when it was published (as in post_features).
# Slot effects: mean log reach (ln views_48h - ln subscribers) of prior posts published
# within +-1 h of the same hour (or on the same weekday) minus the channel's prior mean.
# The prior-post aggregates of ``{targets}`` rows over ``{history}`` rows (both relations with
# channel_id, published_at, hour, weekday; history with log_reach). Shared by training
# (POSTS_SQL) and scoring (nn_models.forecasts.viral.CONTEXT_SQL) so they cannot drift.
PRIOR_SLOTS_CTE = """slots AS (
    SELECT
        a.channel_id,
        a.post_id,
        avg(b.log_reach) AS prior_log_reach,
        count(b.log_reach) FILTER (WHERE least(abs(a.hour - b.hour), 24 - abs(a.hour - b.hour)) <= 1)
            AS prior_slot_posts,
        avg(b.log_reach) FILTER (WHERE least(abs(a.hour - b.hour), 24 - abs(a.hour - b.hour)) <= 1)
            AS prior_slot_log_reach,
        count(b.log_reach) FILTER (WHERE a.weekday = b.weekday) AS prior_weekday_posts,
        avg(b.log_reach) FILTER (WHERE a.weekday = b.weekday) AS prior_weekday_log_reach
    FROM {targets} AS a
    JOIN {history} AS b
        ON a.channel_id = b.channel_id
        AND b.published_at <= a.published_at - INTERVAL '48 hours 5 minutes'
    GROUP BY a.channel_id, a.post_id
)
"""

POSTS_SQL = (
    """
WITH posts AS (
    SELECT
        *,
        ln(1 + views_48h) - ln(1 + subscribers_at_publish) AS log_reach
    FROM features.post_features
),
"""
    + PRIOR_SLOTS_CTE.format(targets="posts", history="posts")
    + """
SELECT
    p.channel_id, p.post_id, p.published_at, coalesce(p.text, '') AS text,
    p.media_type, p.hour, p.weekday, p.text_length,
    p.subscribers_at_publish, p.channel_prior_posts_48h, p.channel_prior_median_views_48h,
    s.prior_log_reach, s.prior_slot_posts, s.prior_slot_log_reach,
    s.prior_weekday_posts, s.prior_weekday_log_reach,
    p.views_48h, p.forwards_48h, p.forwards_percentile_48h, p.is_viral
FROM posts AS p
LEFT JOIN slots AS s USING (channel_id, post_id)
WHERE p.forwards_48h IS NOT NULL AND p.is_viral IS NOT NULL
ORDER BY p.published_at, p.channel_id, p.post_id
"""
)
SLOT_SHRINKAGE = 5.0  # prior posts' weight k in n / (n + k) shrinkage of slot effects


def text_hash(text: str | None) -> str:
    """md5 hex of the UTF-8 text, equal to DuckDB's ``md5(coalesce(text, ''))``."""
    return hashlib.md5((text or "").encode("utf-8")).hexdigest()


def default_cache_dir() -> Path | None:
    """``$PULSE_DATA_DIR/cache/text_tokens`` when the variable is set, else no cache."""
    root = os.environ.get("PULSE_DATA_DIR")
    return Path(root) / "cache" / "text_tokens" if root else None


# --------------------------------------------------------------------- token cache


class TokenCache:
    """Float16 MiniLM token states on disk, keyed by text hash.

    Each write adds one ``.npz`` chunk (hashes, token counts, the concatenated states of
    the real tokens only: padding is not stored) via a temporary file and an atomic
    rename, so concurrent writers never corrupt each other and an interrupted encode
    keeps the chunks already written.
    """

    def __init__(self, directory: Path | None, max_length: int = TOKEN_MAX_LENGTH) -> None:
        self.directory = Path(directory) / f"{ENCODER_NAME}_L{max_length}" if directory is not None else None
        self.max_length = max_length

    def load(self, wanted: set[str]) -> dict[str, np.ndarray]:
        """hash -> (tokens, 384) float16 states for the wanted hashes found on disk."""
        found: dict[str, np.ndarray] = {}
        if self.directory is None or not self.directory.is_dir():
            return found
        for path in sorted(self.directory.glob("chunk-*.npz")):
            try:
                with np.load(path) as chunk:
                    hashes = chunk["hashes"]
                    hit = [i for i, h in enumerate(hashes) if h in wanted and h not in found]
                    if not hit:
                        continue
                    offsets = np.concatenate([[0], np.cumsum(chunk["lengths"])])
                    flat = chunk["states"]
                    for i in hit:
                        found[str(hashes[i])] = flat[offsets[i] : offsets[i + 1]]
            except (OSError, ValueError, KeyError) as exc:  # a damaged chunk is re-encoded
                log.warning("ignoring unreadable token cache chunk %s (%s)", path, exc)
        return found

    def save(self, hashes: Sequence[str], states: Sequence[np.ndarray]) -> None:
        if self.directory is None or not hashes:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1("".join(hashes).encode()).hexdigest()[:16]
        final = self.directory / f"chunk-{name}.npz"
        tmp = self.directory / f".tmp-{uuid.uuid4().hex}.npz"
        np.savez(
            tmp,
            hashes=np.asarray(hashes),
            lengths=np.asarray([len(s) for s in states], dtype=np.int32),
            states=np.concatenate(states).astype(np.float16),
        )
        os.replace(tmp, final)


@dataclass
class EncodedTexts:
    """Token states of a list of texts, padded to ``max_length``."""

    tokens: np.ndarray  # (n, max_length, 384) float16; zeros at padding
    mask: np.ndarray  # (n, max_length) float32; 1 = real token
    n_encoded: int  # texts encoded now
    n_cached: int  # texts read from the cache
    encode_seconds: float  # time spent in MiniLM (0 when everything was cached)


def _encode_missing(
    texts: list[str],
    max_length: int,
    batch_size: int,
    on_chunk: Callable[[list[int], list[np.ndarray]], None],
    encoder=None,
    flush_every: int = 2048,
) -> None:
    """Encode with ``MiniLMEncoder.encode_tokens``, shortest texts first.

    Texts are grouped by token count and each batch is padded only to its longest text
    (BERT's attention mask makes the real tokens' states independent of padding): about
    1.5x faster than padding every batch to ``max_length`` on the synthetic posts
    (median 22 of 48 tokens). ``encode_tokens`` pads to ``encoder.max_length``, which is
    set per batch and restored afterwards.
    """
    from nn_models.text_encoder import MiniLMEncoder

    encoder = encoder or MiniLMEncoder(max_length=max_length)
    lengths = np.array(
        [len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    )
    order = np.argsort(lengths, kind="stable")
    saved_length = encoder.max_length
    done_idx: list[int] = []
    done_states: list[np.ndarray] = []
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            encoder.max_length = int(lengths[idx].max())
            states, mask = encoder.encode_tokens([texts[i] for i in idx])
            for row, i in enumerate(idx):
                n_real = int(mask[row].sum())
                done_idx.append(int(i))
                done_states.append(states[row, :n_real].astype(np.float16))
            if len(done_idx) >= flush_every:
                on_chunk(done_idx, done_states)
                done_idx, done_states = [], []
        if done_idx:
            on_chunk(done_idx, done_states)
    finally:
        encoder.max_length = saved_length


def embed_via_cache(
    texts: Sequence[str],
    max_length: int = TOKEN_MAX_LENGTH,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    encoder=None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int, int]:
    """Sentence embeddings of ``texts`` from one MiniLM pass that also fills the token cache.

    Texts already in the cache are pooled from their stored states; the others are
    encoded once (as ``encode_texts`` does) and written to the cache. Every embedding is
    pooled from the float16 states the cache holds, so it is the same whichever process
    encoded the text (vs pooling the float32 states: max abs diff ~1e-4, see
    tests/test_text_encoder.py). ``progress(done, total)`` counts texts. Returns
    ``(embeddings (n, 384) float32, n_encoded, n_cached)``.
    """
    from nn_models.text_encoder import pool

    texts = [t or "" for t in texts]
    hashes = [text_hash(t) for t in texts]
    cache = TokenCache(cache_dir, max_length)
    states = cache.load(set(hashes))
    n_cached = len(states)
    missing: dict[str, str] = {}
    for h, t in zip(hashes, texts, strict=True):
        if h not in states:
            missing.setdefault(h, t)
    total = n_cached + len(missing)
    if progress and n_cached:
        progress(n_cached, total)
    if missing:
        todo_hashes, todo_texts = list(missing), list(missing.values())

        def on_chunk(idx: list[int], chunk: list[np.ndarray]) -> None:
            for i, s in zip(idx, chunk, strict=True):
                states[todo_hashes[i]] = s
            cache.save([todo_hashes[i] for i in idx], chunk)
            if progress:
                progress(len(states), total)

        started = time.perf_counter()
        _encode_missing(todo_texts, max_length, batch_size, on_chunk, encoder, flush_every=1024)
        log.info(
            "encoded %d texts with %s in %.1fs", len(todo_texts), ENCODER_NAME, time.perf_counter() - started
        )
    out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
    for row, h in enumerate(hashes):
        s = states[h]
        out[row] = pool(s[None], np.ones((1, len(s)), dtype=np.float32))[0]
    return out, len(missing), n_cached


def encode_texts(
    texts: Sequence[str],
    max_length: int = TOKEN_MAX_LENGTH,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    encoder=None,
) -> EncodedTexts:
    """Frozen MiniLM token states for ``texts``, from the cache where possible."""
    texts = [t or "" for t in texts]
    hashes = [text_hash(t) for t in texts]
    cache = TokenCache(cache_dir, max_length)
    states = cache.load(set(hashes))
    n_cached = len(states)
    missing: dict[str, str] = {}
    for h, t in zip(hashes, texts, strict=True):
        if h not in states:
            missing.setdefault(h, t)
    seconds = 0.0
    if missing:
        todo_hashes, todo_texts = list(missing), list(missing.values())

        def on_chunk(idx: list[int], chunk: list[np.ndarray]) -> None:
            for i, s in zip(idx, chunk, strict=True):
                states[todo_hashes[i]] = s
            cache.save([todo_hashes[i] for i in idx], chunk)

        started = time.perf_counter()
        _encode_missing(todo_texts, max_length, batch_size, on_chunk, encoder)
        seconds = time.perf_counter() - started
        log.info("encoded %d texts with %s in %.1fs", len(todo_texts), ENCODER_NAME, seconds)
    tokens = np.zeros((len(texts), max_length, EMBEDDING_DIM), dtype=np.float16)
    mask = np.zeros((len(texts), max_length), dtype=np.float32)
    for row, h in enumerate(hashes):
        s = states[h][:max_length]
        tokens[row, : len(s)] = s
        mask[row, : len(s)] = 1.0
    return EncodedTexts(tokens, mask, len(missing), n_cached, seconds)


# ----------------------------------------------------------------- posts and split


def load_posts(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Posts with a defined viral label, ordered by publish time (see ``POSTS_SQL``)."""
    try:
        return conn.execute(POSTS_SQL).fetchdf()
    except duckdb.CatalogException as exc:
        raise InsufficientData(f"features.post_features is not built yet ({exc})") from exc


def _shrunk_effect(posts: pd.DataFrame, prefix: str) -> np.ndarray:
    """(slot mean - channel mean) log reach x n / (n + k): few prior posts -> near 0."""
    n = posts[f"{prefix}_posts"].astype(float).fillna(0).to_numpy()
    diff = posts[f"{prefix}_log_reach"].astype(float) - posts["prior_log_reach"].astype(float)
    return np.nan_to_num(diff.to_numpy() * n / (n + SLOT_SHRINKAGE), nan=0.0)


def context_features(posts: pd.DataFrame) -> np.ndarray:
    """(n, len(CONTEXT_FEATURES)) float32 channel context, NULLs (no history yet) as 0."""
    media = posts["media_type"].fillna("other").to_numpy()
    hour = posts["hour"].to_numpy(dtype=float)
    weekday = posts["weekday"].to_numpy(dtype=float)
    prior_posts = posts["channel_prior_posts_48h"].astype(float).fillna(0).to_numpy()
    columns = [
        *((media == m).astype(float) for m in MEDIA_TYPES),
        np.sin(2 * np.pi * hour / 24),
        np.cos(2 * np.pi * hour / 24),
        np.sin(2 * np.pi * weekday / 7),
        np.cos(2 * np.pi * weekday / 7),
        np.log1p(posts["subscribers_at_publish"].astype(float).fillna(0).to_numpy()),
        np.log1p(posts["channel_prior_median_views_48h"].astype(float).fillna(0).to_numpy()),
        _shrunk_effect(posts, "prior_slot"),
        _shrunk_effect(posts, "prior_weekday"),
        (prior_posts > 0).astype(float),
        np.log1p(posts["text_length"].astype(float).fillna(0).to_numpy()),
    ]
    out = np.stack(columns, axis=1).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def aux_targets(posts: pd.DataFrame, train: np.ndarray) -> np.ndarray:
    """(n, len(AUX_TARGETS)) float32, channel-centred and scaled on training rows only."""
    forwards = posts["forwards_48h"].astype(float).to_numpy()
    views = posts["views_48h"].astype(float).to_numpy()
    raw = np.stack(
        [
            np.log((forwards + 0.5) / (views + 1.0)),
            np.log((forwards + 0.5) / (views + 1.0)),
            np.log1p(forwards),
            posts["forwards_percentile_48h"].astype(float).to_numpy(),
        ],
        axis=1,
    )
    channel = posts["channel_id"].to_numpy()
    out = raw.copy()
    for col in (1, 2):  # centre per channel on its training posts (global mean if none)
        values = pd.Series(raw[train, col]).groupby(channel[train]).mean()
        centre = pd.Series(channel).map(values).fillna(raw[train, col].mean()).to_numpy()
        out[:, col] = raw[:, col] - centre
    out -= out[train].mean(axis=0)
    out /= np.where(out[train].std(axis=0) > 0, out[train].std(axis=0), 1.0)
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


@dataclass
class TextPreparedData(PreparedData):
    """``PreparedData`` plus, per split, what the baselines and the bootstrap read.

    ``frames``: a ``text`` column and the ``CONTEXT_FEATURES`` columns (the baselines'
    inputs); ``channels``: channel id per row (bootstrap clusters); ``baselines``: the
    tuned baselines, filled by the task (``ViralLabelTask.load``).
    """

    texts: dict[str, list[str]] = field(default_factory=dict)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    channels: dict[str, np.ndarray] = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)


def baseline_frame(posts: pd.DataFrame) -> pd.DataFrame:
    """The baselines' input frame: ``text`` + the context columns, one row per post."""
    context = pd.DataFrame(context_features(posts), columns=list(CONTEXT_FEATURES))
    context.insert(0, "text", posts["text"].fillna("").astype(str).to_numpy())
    return context


def check_history(posts: pd.DataFrame, splits: dict[str, np.ndarray] | None = None) -> None:
    """``InsufficientData`` below the smallest history the text models learn from.

    ``splits``: name -> boolean row mask; each needs both classes (see the module doc).
    """
    if len(posts) < MIN_LABELLED_POSTS:
        raise InsufficientData(
            f"the viral models need at least {MIN_LABELLED_POSTS} labelled posts (48 h forwards "
            f"known, after each channel's first 5), has {len(posts)}"
        )
    labels = posts[LABEL].astype(bool).to_numpy()
    for name, sel in (splits or {}).items():
        pos, neg = int(labels[sel].sum()), int((~labels[sel]).sum())
        if min(pos, neg) < MIN_CLASS_PER_SPLIT:
            raise InsufficientData(
                f"the viral models need at least {MIN_CLASS_PER_SPLIT} viral and "
                f"{MIN_CLASS_PER_SPLIT} non-viral posts in each time split; the {name} split "
                f"has {pos} viral and {neg} non-viral (labelled posts: {len(posts)})"
            )


def time_split(published_at: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Boolean masks train / validation / holdout by publish time, and the boundaries.

    Boundaries are publish-time quantiles, so posts published at the same instant never
    straddle two splits and every holdout post is later than every training post.
    """
    ts = pd.to_datetime(published_at).to_numpy()
    order = np.sort(ts)
    n = len(order)
    holdout_start = order[int(np.floor(n * (1 - HOLDOUT_FRACTION)))]
    val_start = order[int(np.floor(n * (1 - HOLDOUT_FRACTION - VAL_FRACTION)))]
    train = ts < val_start
    val = (ts >= val_start) & (ts < holdout_start)
    holdout = ts >= holdout_start
    info = {
        "val_start": str(pd.Timestamp(val_start)),
        "holdout_start": str(pd.Timestamp(holdout_start)),
        "holdout_end": str(pd.Timestamp(order[-1])),
    }
    return train, val, holdout, info


def prepare(
    conn: duckdb.DuckDBPyConnection,
    with_context: bool,
    max_length: int = TOKEN_MAX_LENGTH,
    cache_dir: Path | None = None,
) -> TextPreparedData:
    """Arrays ``tokens``, ``mask`` [, ``context``], ``is_viral`` and ``aux_targets`` per split.

    Raises ``InsufficientData`` below the smallest history (``check_history``).
    """
    posts = load_posts(conn)
    check_history(posts)
    train, val, holdout, info = time_split(posts["published_at"])
    check_history(posts, {"train": train, "validation": val, "holdout": holdout})
    labels = posts[LABEL].astype(bool).to_numpy()
    encoded = encode_texts(posts["text"].tolist(), max_length, cache_dir)
    arrays = {
        "tokens": encoded.tokens,
        "mask": encoded.mask,
        LABEL: labels.astype(np.float32),
        AUX: aux_targets(posts, train),
    }
    if with_context:
        arrays["context"] = context_features(posts)
    texts = posts["text"].tolist()
    frame = baseline_frame(posts)
    channel_ids = posts["channel_id"].to_numpy(dtype=np.int64)
    splits, text_splits, frames, channels = {}, {}, {}, {}
    for name, sel in (("train", train), ("val", val), ("holdout", holdout)):
        splits[name] = {k: v[sel] for k, v in arrays.items()}
        text_splits[name] = [t for t, keep in zip(texts, sel, strict=True) if keep]
        frames[name] = frame[sel].reset_index(drop=True)
        channels[name] = channel_ids[sel]
    info.update(
        {
            "n_train": int(train.sum()),
            "n_val": int(val.sum()),
            "n_holdout": int(holdout.sum()),
            "viral_rate_train": round(float(labels[train].mean()), 4),
            "viral_rate_val": round(float(labels[val].mean()), 4),
            "viral_rate_holdout": round(float(labels[holdout].mean()), 4),
            "n_channels": int(posts["channel_id"].nunique()),
            "n_channels_holdout": int(np.unique(channel_ids[holdout]).size),
            "token_max_length": max_length,
            "texts_encoded": encoded.n_encoded,
            "texts_from_cache": encoded.n_cached,
            "encode_seconds": round(encoded.encode_seconds, 2),
            "encoder": ENCODER_NAME,
        }
    )
    return TextPreparedData(
        train=splits["train"],
        val=splits["val"],
        holdout=splits["holdout"],
        info=info,
        texts=text_splits,
        frames=frames,
        channels=channels,
    )
