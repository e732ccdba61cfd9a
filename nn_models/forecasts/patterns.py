"""``content_patterns``: the text patterns that go with engagement, per channel.

Two kinds of pattern, both measured on the channel's own posts whose 48 h outcome is
known (its latest ``MAX_POSTS_PER_CHANNEL``, fewer per channel when there are many
channels so a run stays within ``MAX_POSTS`` posts):

``cnn_phrase`` — what the ``ContentAnalyzer`` CNN reads. Over all analysed posts, the
    ``N_FILTERS`` filters whose max-pooled activation correlates most with the viral
    label are kept. A filter *fires strongly* on a post when its activation reaches the
    filter's ``STRONG_QUANTILE`` quantile over all posts; the phrase is the token window
    at the argmax position (MiniLM tokens decoded with its tokenizer), and the pattern
    named for a channel is the phrase the filter fires on most often among that
    channel's posts. ``effect`` = mean within-channel view percentile of the channel's
    posts where the filter fires strongly − the channel's mean; ``viral_lift`` the same
    for the viral rate.
``topic_cluster`` — per channel, k-means (scikit-learn, seeded) of its posts' MiniLM
    sentence embeddings (``features.post_text_embeddings``; for a text missing there,
    the L2-normalised mean of its token states, which is how MiniLMEncoder.encode
    pools), k in ``K_CANDIDATES`` chosen by silhouette; each cluster is named by the
    TF-IDF terms most over-represented in it against the channel's posts (IDF over all
    analysed posts). ``effect`` = the cluster's mean within-channel view percentile −
    the channel's mean. Clustering each channel on its own finds the topics *that
    channel* mixes (a network-wide k-means put most channels in one or two clusters).

``tfidf_term`` — instead of ``cnn_phrase`` when there is no content champion: the
    word n-grams with the largest positive weights of the strongest text baseline
    (the TF-IDF LR tuned on validation and fitted on the labelled history,
    ``viral.scoring_baselines``; ``baselines_text.word_term_weights``). Per channel the
    ``N_TERMS`` best-weighted terms that occur in at least ``MIN_PATTERN_POSTS`` of its
    posts; ``effect`` / ``viral_lift`` as above over the posts containing the term.
    Rows are then stamped ``source = baseline`` with the reason, and the posts'
    content score is the baseline's probability.

Every row carries ``n_posts`` (the sample size behind ``effect``); rows with fewer
than ``MIN_PATTERN_POSTS`` posts are left out. ``detail`` (JSON) holds the numbers
behind the row (means, rates, mean content score, filter id and threshold or term
weight, and ``content_model_version``: the champion's version or ``baseline:tfidf``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import torch

from nn_models import text_data
from nn_models.champions import LoadedModel
from nn_models.forecasts import viral as text_models
from nn_models.forecasts.base import Champions, ForecastResult, missing_champion, stamp

TABLE = "content_patterns"
COLUMNS = [
    "channel_id",
    "pattern",
    "kind",
    "effect",
    # extras
    "n_posts",
    "viral_lift",
    "detail",
]
KINDS = ("cnn_phrase", "tfidf_term", "topic_cluster")
PHRASE_KINDS = ("cnn_phrase", "tfidf_term")

N_FILTERS = 8  # viral-associated CNN filters whose phrases are reported
N_TERMS = 8  # baseline terms per channel (no content champion)
STRONG_QUANTILE = 0.9  # "fires strongly": top decile of the filter's activations
MIN_PATTERN_POSTS = 5  # fewer posts behind an effect → no row
MIN_ANALYSIS_POSTS = 30  # fewer labelled posts → nothing to analyse
MAX_POSTS_PER_CHANNEL = 600  # latest labelled posts per channel
MAX_POSTS = 20_000  # bound on one run (token states: ~37 kB per post in memory)
K_CANDIDATES = tuple(range(2, 9))  # topic clusters per channel (silhouette picks)
TOP_TERMS = 3
TOP_PHRASES = 5
MAX_REQUEST_TEXTS = 50
SEED = 0

POSTS_SQL = """
SELECT channel_id, post_id, published_at, coalesce(text, '') AS text,
       md5(coalesce(text, '')) AS text_hash,
       view_percentile_48h, is_viral::DOUBLE AS is_viral
FROM features.post_features
WHERE view_percentile_48h IS NOT NULL AND is_viral IS NOT NULL {channel_filter}
QUALIFY row_number() OVER (PARTITION BY channel_id ORDER BY published_at DESC, post_id DESC)
        <= ?
ORDER BY channel_id, published_at, post_id
"""


class NotEnoughPosts(Exception):
    """Too few labelled posts to measure patterns."""


@dataclass
class Analysis:
    """Everything measured on the analysed posts (``recommendations`` reuses it)."""

    posts: pd.DataFrame  # ids, text, view_percentile_48h, is_viral, content_score, cluster
    tokens: np.ndarray | None  # MiniLM token states of the posts (n, L, 384) float16
    mask: np.ndarray | None  # (n, L); both None on the baseline path
    filters: pd.DataFrame  # selected filters: filter, width, correlation, threshold
    activations: np.ndarray  # (n, n_selected) max-pooled activation
    positions: np.ndarray  # (n, n_selected) start of the best window
    phrases: list[dict[int, str]]  # per selected filter: post row -> decoded best window (strong only)
    cluster_terms: dict[tuple[int, int], list[str]]  # (channel_id, cluster) -> TF-IDF terms
    clustering: dict[str, Any]  # embedding source; per channel k and silhouette
    patterns: pd.DataFrame  # rows of forecasts.content_patterns (COLUMNS)
    notes: dict[str, str] = field(default_factory=dict)
    content_version: str = ""  # the content champion's version, or "baseline:tfidf"
    content_label: str = ""  # who scored content_score, for rationales
    term_rows: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    baselines: Any = None  # viral.ScoringBaselines on the baseline path


# -------------------------------------------------------------------------- inputs


def load_posts(conn: duckdb.DuckDBPyConnection, channel_id: int | None = None) -> pd.DataFrame:
    if channel_id is None:
        n_channels = conn.execute(
            "SELECT count(DISTINCT channel_id) FROM features.post_features "
            "WHERE view_percentile_48h IS NOT NULL"
        ).fetchall()[0][0]
        cap = min(MAX_POSTS_PER_CHANNEL, max(MIN_ANALYSIS_POSTS, MAX_POSTS // max(n_channels, 1)))
        return conn.execute(POSTS_SQL.format(channel_filter=""), [cap]).fetchdf()
    return conn.execute(
        POSTS_SQL.format(channel_filter="AND channel_id = ?"), [int(channel_id), MAX_POSTS_PER_CHANNEL]
    ).fetchdf()


def mean_pooled(tokens: np.ndarray, mask: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """L2-normalised mean of the real tokens' states (MiniLMEncoder.encode's pooling)."""
    out = np.zeros((len(tokens), tokens.shape[-1]), dtype=np.float32)
    for start in range(0, len(tokens), chunk):
        t = tokens[start : start + chunk].astype(np.float32)
        m = mask[start : start + chunk].astype(np.float32)
        pooled = np.einsum("nld,nl->nd", t, m) / np.maximum(m.sum(1), 1.0)[:, None]
        out[start : start + chunk] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9)
    return out


def sentence_embeddings(
    conn: duckdb.DuckDBPyConnection, posts: pd.DataFrame, tokens: np.ndarray | None, mask: np.ndarray | None
) -> tuple[np.ndarray, str]:
    """Stored sentence embeddings by text hash; mean-pooled token states where missing
    (``tokens`` None: only the missing texts are encoded, through the token cache)."""
    name = f"_hashes_{uuid.uuid4().hex[:12]}"
    conn.register(name, pd.DataFrame({"text_hash": posts["text_hash"].unique()}))
    try:
        stored = conn.execute(
            f"SELECT e.text_hash, e.embedding FROM features.post_text_embeddings e "
            f"JOIN {name} USING (text_hash)"
        ).fetchdf()
    except duckdb.CatalogException:
        stored = pd.DataFrame(columns=["text_hash", "embedding"])
    finally:
        conn.unregister(name)
    found = dict(zip(stored["text_hash"], stored["embedding"], strict=True))
    hit = posts["text_hash"].map(lambda h: h in found).to_numpy(dtype=bool)
    vectors = np.zeros((len(posts), text_data.EMBEDDING_DIM), dtype=np.float32)
    if hit.any():
        vectors[hit] = np.stack([np.asarray(found[h], dtype=np.float32) for h in posts["text_hash"][hit]])
    if not hit.all():
        if tokens is None:
            missing = text_models.encode(posts["text"][~hit].tolist(), cached=True)
            vectors[~hit] = mean_pooled(missing.tokens, missing.mask)
        else:
            vectors[~hit] = mean_pooled(tokens[~hit], mask[~hit])
    if hit.all():
        source = "features.post_text_embeddings"
    elif hit.any():
        source = (
            f"features.post_text_embeddings ({int(hit.sum())} posts) + mean-pooled token "
            f"states ({int((~hit).sum())} posts not embedded yet)"
        )
    else:
        source = "mean-pooled MiniLM token states (features.post_text_embeddings not available)"
    return vectors, source


@torch.inference_mode()
def filter_activations(
    content: LoadedModel, tokens: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-pooled activation and best-window start of every CNN filter, in batches."""
    module = content.module.eval()
    values, positions = [], []
    for start in range(0, len(tokens), text_models.SCORE_BATCH):
        acts = module.filter_activations(
            torch.as_tensor(tokens[start : start + text_models.SCORE_BATCH], dtype=torch.float32),
            torch.as_tensor(mask[start : start + text_models.SCORE_BATCH], dtype=torch.float32),
        )
        values.append(acts.values.cpu().numpy())
        positions.append(acts.positions.cpu().numpy())
    widths = module.filter_widths.cpu().numpy()
    return np.concatenate(values), np.concatenate(positions), widths


def select_filters(values: np.ndarray, label: np.ndarray, widths: np.ndarray) -> pd.DataFrame:
    """The ``N_FILTERS`` filters whose activation correlates most (positively) with the label."""
    v = values - values.mean(0)
    y = label - label.mean()
    denom = np.sqrt((v**2).sum(0) * (y**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, (v * y[:, None]).sum(0) / denom, np.nan)
    order = [
        int(f) for f in np.argsort(-np.nan_to_num(corr, nan=-np.inf)) if np.isfinite(corr[f]) and corr[f] > 0
    ][:N_FILTERS]
    return pd.DataFrame(
        {
            "filter": order,
            "width": [int(widths[f]) for f in order],
            "correlation": [float(corr[f]) for f in order],
            "threshold": [float(np.quantile(values[:, f], STRONG_QUANTILE)) for f in order],
        }
    )


def token_ids(texts: list[str]) -> list[list[int]]:
    """MiniLM token ids as encoded for the models (same truncation as the token cache)."""
    return text_models.tokenizer()(list(texts), truncation=True, max_length=text_data.TOKEN_MAX_LENGTH)[
        "input_ids"
    ]


def decode_window(ids: list[int], start: int, width: int) -> str:
    """The filter's token window as text, widened to whole words (no dangling ``##`` pieces)."""
    tok = text_models.tokenizer()
    pieces = tok.convert_ids_to_tokens(ids)
    end = min(start + width, len(ids))
    while 0 < start < len(pieces) and pieces[start].startswith("##"):
        start -= 1
    while end < len(pieces) and pieces[end].startswith("##"):
        end += 1
    text = tok.decode(ids[start:end], skip_special_tokens=True, clean_up_tokenization_spaces=True)
    return re.sub(r"\s+([:;,.!?%)])", r"\1", text).strip()


def strong_mask(activations: np.ndarray, filters: pd.DataFrame) -> np.ndarray:
    """(n, n_selected): the filter fires strongly (>= its threshold and above zero)."""
    return (activations >= filters["threshold"].to_numpy()[None, :]) & (activations > 0)


def _contains(haystack: list[int], needle: list[int]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


# ------------------------------------------------------------------------ clusters


def cluster_posts(vectors: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Seeded k-means of one channel's posts; k with the best silhouette (k = 1: too few)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    n = len(vectors)
    scores, fits = {}, {}
    # one BLAS thread: these matrices are small, and on a shared 2-core host threads
    # spent 10x longer synchronising than computing (3.7 s vs 0.37 s per channel measured)
    with threadpool_limits(limits=1):
        for k in K_CANDIDATES:
            if k * MIN_PATTERN_POSTS > n:
                break
            labels = KMeans(k, random_state=SEED, n_init=3).fit_predict(vectors)
            if len(set(labels.tolist())) > 1:
                scores[k] = float(silhouette_score(vectors, labels))
                fits[k] = labels
    if not scores:
        return np.zeros(n, dtype=np.int64), {"k": 1, "silhouette": None}
    k = max(scores, key=scores.get)
    return fits[k].astype(np.int64), {"k": k, "silhouette": round(scores[k], 4)}


def tfidf_matrix(texts: list[str]):
    """TF-IDF of the analysed posts (IDF over all of them) and its vocabulary; None if empty."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        vec = TfidfVectorizer(
            stop_words="english",
            token_pattern=r"(?u)\b[^\W\d_]{2,}\b",
            min_df=2,
            sublinear_tf=True,
            max_features=20_000,
        )
        return vec.fit_transform(texts), np.asarray(vec.get_feature_names_out())
    except ValueError:  # no term occurs twice: nothing distinctive to name
        return None, None


def cluster_terms(matrix, vocab, labels: np.ndarray) -> dict[int, list[str]]:
    """Per cluster, the TF-IDF terms most over-represented against the channel's posts."""
    clusters = sorted(set(labels.tolist()))
    if matrix is None:
        return {c: [] for c in clusters}
    overall = np.asarray(matrix.mean(axis=0)).ravel()
    out = {}
    for c in clusters:
        diff = np.asarray(matrix[labels == c].mean(axis=0)).ravel() - overall
        top = [i for i in np.argsort(-diff)[:TOP_TERMS] if diff[i] > 0]
        out[c] = [str(vocab[i]) for i in top]
    return out


# ------------------------------------------------------------------------ analysis


def _mean(values: pd.Series | np.ndarray) -> float | None:
    values = np.asarray(values, dtype=float)
    return float(values.mean()) if len(values) else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def analyse(
    conn: duckdb.DuckDBPyConnection, content: LoadedModel | None, channel_id: int | None = None
) -> Analysis:
    """Measure the pattern kinds on all channels (or one channel's posts alone).

    ``content`` None (no champion): ``tfidf_term`` rows from the strongest text baseline
    replace the CNN's phrases, and the baseline scores ``content_score``.
    """
    posts = load_posts(conn, channel_id)
    if len(posts) < MIN_ANALYSIS_POSTS:
        raise NotEnoughPosts(
            f"{len(posts)} posts with known 48 h outcome; patterns need >= {MIN_ANALYSIS_POSTS}"
        )
    label = posts["is_viral"].to_numpy(float)
    baselines = None
    if content is not None:
        encoded = text_models.encode(posts["text"].tolist(), cached=True)
        tokens, mask = encoded.tokens, encoded.mask
        posts["content_score"] = text_models.content_probabilities(content, tokens, mask)
        values, positions, widths = filter_activations(content, tokens, mask)
        filters = select_filters(values, label, widths)
        chosen = filters["filter"].to_numpy(dtype=np.int64)
        activations, starts = values[:, chosen], positions[:, chosen]
        strong = strong_mask(activations, filters)
        needed = np.flatnonzero(strong.any(axis=1))
        ids = dict(zip(needed.tolist(), token_ids(posts["text"].iloc[needed].tolist()), strict=True))
        phrases = [
            {
                int(i): decode_window(ids[int(i)], int(starts[i, j]), int(w))
                for i in np.flatnonzero(strong[:, j])
            }
            for j, w in enumerate(filters["width"])
        ]
        token_note = f"token states: {encoded.n_cached} from cache, {encoded.n_encoded} encoded"
        version, content_label = content.version, f"ContentAnalyzer v{content.version}"
    else:
        baselines = text_models.scoring_baselines(conn)
        tokens = mask = None
        posts["content_score"] = baselines.content_scores(posts["text"].tolist())
        filters = pd.DataFrame(
            {
                "filter": pd.Series(dtype="int64"),
                "width": pd.Series(dtype="int64"),
                "correlation": pd.Series(dtype="float64"),
                "threshold": pd.Series(dtype="float64"),
            }
        )
        activations = np.zeros((len(posts), 0))
        starts = np.zeros((len(posts), 0), dtype=np.int64)
        phrases = []
        token_note = "no content champion: patterns from the text baseline's term weights"
        version = f"baseline:{baselines.content.name}" if baselines.content is not None else "baseline:none"
        content_label = f"the {baselines.describe('content')}"
    vectors, source = sentence_embeddings(conn, posts, tokens, mask)
    matrix, vocab = tfidf_matrix(posts["text"].tolist())
    labels = np.zeros(len(posts), dtype=np.int64)
    terms: dict[tuple[int, int], list[str]] = {}
    clustering: dict[str, Any] = {"embedding_source": source, "channels": {}}
    for channel, rows in posts.groupby("channel_id").indices.items():
        labels[rows], info = cluster_posts(vectors[rows])
        clustering["channels"][int(channel)] = info
        named = cluster_terms(matrix[rows] if matrix is not None else None, vocab, labels[rows])
        terms.update({(int(channel), c): t for c, t in named.items()})
    posts["cluster"] = labels
    analysis = Analysis(
        posts,
        tokens,
        mask,
        filters,
        activations,
        starts,
        phrases,
        terms,
        clustering,
        pd.DataFrame(columns=COLUMNS),
        content_version=version,
        content_label=content_label,
        baselines=baselines,
    )
    if baselines is not None:
        analysis.term_rows = term_members(posts, baselines)
        analysis.notes["terms"] = (
            baselines.term_note
            if baselines.term_weights is not None
            else f"no term patterns: {baselines.describe('content')}"
        )
    analysis.patterns = _pattern_rows(analysis)
    analysis.notes["posts"] = (
        f"{len(posts)} posts with known 48 h outcome from {posts['channel_id'].nunique()} "
        f"channel(s) (latest <= {MAX_POSTS_PER_CHANNEL} per channel); {token_note}"
    )
    ks = Counter(info["k"] for info in clustering["channels"].values())
    analysis.notes["clusters"] = (
        "topic clusters per channel, k by silhouette: "
        + ", ".join(f"k={k} in {n} channel(s)" for k, n in sorted(ks.items()))
        + f"; embeddings: {source}"
    )
    return analysis


def term_members(posts: pd.DataFrame, baselines) -> dict[tuple[int, str], np.ndarray]:
    """(channel, term) -> positions within the channel's posts that contain the term.

    Per channel the ``N_TERMS`` terms with the largest positive baseline weight that
    occur in at least ``MIN_PATTERN_POSTS`` of its posts, best weight first.
    """
    weights = baselines.term_weights
    if weights is None:
        return {}
    positive = weights[weights > 0]
    analyzer = baselines.term_analyzer
    docs = [set(analyzer(t)) for t in posts["text"]]
    out: dict[tuple[int, str], np.ndarray] = {}
    for channel, rows in posts.groupby("channel_id").indices.items():
        counts = Counter(term for r in rows for term in docs[r])
        picked = [t for t in positive.index if counts.get(t, 0) >= MIN_PATTERN_POSTS][:N_TERMS]
        for term in picked:
            out[(int(channel), str(term))] = np.array(
                [i for i, r in enumerate(rows) if term in docs[r]], dtype=np.int64
            )
    return out


def _pattern_rows(a: Analysis) -> pd.DataFrame:
    posts = a.posts
    rows = []
    for channel_id, idx in posts.groupby("channel_id").indices.items():
        channel = posts.iloc[idx]
        base = {
            "channel_mean_view_percentile": _mean(channel["view_percentile_48h"]),
            "channel_viral_rate": _mean(channel["is_viral"]),
            "channel_mean_content_score": _mean(channel["content_score"]),
            "channel_posts": len(channel),
        }

        def measured(members: np.ndarray, base=base, channel=channel) -> dict[str, Any]:
            sel = channel.iloc[members]
            return {
                "n_posts": len(sel),
                "mean_view_percentile": _mean(sel["view_percentile_48h"]),
                "viral_rate": _mean(sel["is_viral"]),
                "mean_content_score": _mean(sel["content_score"]),
                **base,
            }

        phrase_rows: dict[str, dict] = {}
        strong_posts = strong_mask(a.activations[idx], a.filters)
        for j, f in enumerate(a.filters.itertuples()):
            strong = np.flatnonzero(strong_posts[:, j])
            found = Counter(p for p in (a.phrases[j][int(idx[i])] for i in strong) if p)
            if len(strong) < MIN_PATTERN_POSTS or not found:
                continue
            m = measured(strong)
            phrase = found.most_common(1)[0][0]
            detail = {
                **m,
                "filter": int(f.filter),
                "width": int(f.width),
                "viral_correlation": _round(f.correlation),
                "threshold": _round(f.threshold, 6),
                "top_phrases": found.most_common(TOP_PHRASES),
                "content_model_version": a.content_version,
            }
            row = {
                "channel_id": int(channel_id),
                "pattern": phrase,
                "kind": "cnn_phrase",
                "effect": m["mean_view_percentile"] - base["channel_mean_view_percentile"],
                "n_posts": m["n_posts"],
                "viral_lift": m["viral_rate"] - base["channel_viral_rate"],
                "detail": detail,
            }
            if phrase not in phrase_rows or phrase_rows[phrase]["n_posts"] < row["n_posts"]:
                phrase_rows[phrase] = row  # two filters, same phrase: keep the larger sample
        rows.extend(phrase_rows.values())
        weights = a.baselines.term_weights if a.baselines is not None else None
        for (channel_, term), members in a.term_rows.items():
            if channel_ != int(channel_id):
                continue
            m = measured(members)
            detail = {
                **m,
                "term": term,
                "weight": _round(float(weights[term]), 6),
                "baseline": a.baselines.content.label,
                "term_source": a.baselines.term_note,
                "content_model_version": a.content_version,
            }
            rows.append(
                {
                    "channel_id": int(channel_id),
                    "pattern": term,
                    "kind": "tfidf_term",
                    "effect": m["mean_view_percentile"] - base["channel_mean_view_percentile"],
                    "n_posts": m["n_posts"],
                    "viral_lift": m["viral_rate"] - base["channel_viral_rate"],
                    "detail": detail,
                }
            )
        info = a.clustering["channels"][int(channel_id)]
        if info["k"] < 2:
            continue  # one cluster is the channel itself: no topic contrast to measure
        for cluster, members in channel.groupby("cluster").indices.items():
            if len(members) < MIN_PATTERN_POSTS:
                continue
            m = measured(members)
            words = a.cluster_terms.get((int(channel_id), int(cluster))) or [f"topic {int(cluster)}"]
            detail = {
                **m,
                "cluster": int(cluster),
                "terms": words,
                "k": info["k"],
                "silhouette": info["silhouette"],
                "embedding_source": a.clustering["embedding_source"],
                "content_model_version": a.content_version,
            }
            rows.append(
                {
                    "channel_id": int(channel_id),
                    "pattern": ", ".join(words),
                    "kind": "topic_cluster",
                    "effect": m["mean_view_percentile"] - base["channel_mean_view_percentile"],
                    "n_posts": m["n_posts"],
                    "viral_lift": m["viral_rate"] - base["channel_viral_rate"],
                    "detail": detail,
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        return frame
    frame = frame.sort_values(["channel_id", "kind", "effect"], ascending=[True, True, False])
    return frame.reset_index(drop=True)


def _table_frame(patterns: pd.DataFrame) -> pd.DataFrame:
    out = patterns.copy()
    out["channel_id"] = out["channel_id"].astype("int64")
    out["effect"] = out["effect"].astype("float64")
    out["n_posts"] = out["n_posts"].astype("int64")
    out["viral_lift"] = out["viral_lift"].astype("float64")
    out["detail"] = [json.dumps(d, default=_json_default) for d in out["detail"]]
    return out[COLUMNS]


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def empty_frame(model: LoadedModel | None, scored_at: datetime, reason: str | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "channel_id": pd.Series(dtype="int64"),
            "pattern": pd.Series(dtype="object"),
            "kind": pd.Series(dtype="object"),
            "effect": pd.Series(dtype="float64"),
            "n_posts": pd.Series(dtype="int64"),
            "viral_lift": pd.Series(dtype="float64"),
            "detail": pd.Series(dtype="object"),
        }
    )
    return text_models.text_columns_typed(stamp(frame, model, scored_at, fallback_reason=reason))


def baseline_reason(champions: Champions) -> str | None:
    """Why the table is served from the baseline (None with a content champion)."""
    reason = missing_champion(TABLE, ("content",), champions)
    return reason and (
        f"{reason}; patterns from the TF-IDF baseline's term weights and "
        "topic clusters instead of CNN filters"
    )


def score(conn: duckdb.DuckDBPyConnection, champions: Champions, scored_at: datetime) -> ForecastResult:
    """Patterns of every channel, from the content champion or (none) the text baseline."""
    content = champions.get("content")
    reason = baseline_reason(champions)
    models = {"content": content.version} if content is not None else {}
    try:
        analysis = analyse(conn, content)
    except duckdb.CatalogException as exc:
        why = f"features.post_features is not built yet ({exc})"
        return ForecastResult(
            empty_frame(content, scored_at, reason and f"{reason}; {why}"),
            models=models,
            notes={"skipped": why},
        )
    except NotEnoughPosts as exc:
        return ForecastResult(
            empty_frame(content, scored_at, reason and f"{reason}; {exc}"),
            notes={"skipped": str(exc)},
            models=models,
        )
    model_name = None if content is not None else f"baseline:{analysis.content_version[9:]}"
    frame = text_models.text_columns_typed(
        stamp(_table_frame(analysis.patterns), content, scored_at, model_name, fallback_reason=reason)
    )
    counts = frame["kind"].value_counts().to_dict()
    analysis.notes["rows"] = ", ".join(f"{counts.get(k, 0)} {k}" for k in KINDS)
    if reason:
        analysis.notes["source"] = reason
    return ForecastResult(frame, notes=analysis.notes, models=models)


# ---------------------------------------------------------------------- per request


def _stored_patterns(conn: duckdb.DuckDBPyConnection, channel_id: int) -> pd.DataFrame | None:
    try:
        return conn.execute(
            f"SELECT {', '.join(COLUMNS)}, model_version, scored_at FROM forecasts.{TABLE} "
            "WHERE channel_id = ? ORDER BY kind, effect DESC",
            [channel_id],
        ).fetchdf()
    except duckdb.CatalogException:
        return None


def _pattern_json(row: dict) -> dict:
    detail = row["detail"] if isinstance(row["detail"], dict) else json.loads(row["detail"])
    return {
        "pattern": row["pattern"],
        "effect": float(row["effect"]),
        "n_posts": int(row["n_posts"]),
        "viral_lift": float(row["viral_lift"]),
        "detail": json.loads(json.dumps(detail, default=_json_default)),
    }


def _validate_texts(text_data_: Any) -> list[str] | None:
    from nn_models.service import InvalidInput

    if text_data_ is None:
        return None
    if not isinstance(text_data_, list | tuple) or not all(isinstance(t, str) for t in text_data_):
        raise InvalidInput("text_data must be a list of strings")
    if len(text_data_) > MAX_REQUEST_TEXTS:
        raise InvalidInput(f"text_data has {len(text_data_)} texts; at most {MAX_REQUEST_TEXTS}")
    too_long = [i for i, t in enumerate(text_data_) if len(t) > text_models.MAX_TEXT_CHARS]
    if too_long:
        raise InvalidInput(f"text_data[{too_long[0]}] is longer than {text_models.MAX_TEXT_CHARS} characters")
    return list(text_data_)


def score_texts(content: LoadedModel, texts: list[str], phrase_rows: list[dict]) -> list[dict]:
    """Content probability of each text and which of the channel's strong phrases it holds.

    ``strong_phrases``: the report's CNN filters (same content model version only) that
    fire on the text at or above their strong threshold, with the window they read;
    ``matched_patterns``: the channel's phrase patterns whose tokens occur in the text.
    """
    if not texts:
        return []
    with text_models.request_threads():
        encoded = text_models.encode(texts, cached=False)
        probability = text_models.content_probabilities(content, encoded.tokens, encoded.mask)
        values, positions, _ = filter_activations(content, encoded.tokens, encoded.mask)
    ids = token_ids(texts)
    pattern_ids = {r["pattern"]: token_ids([r["pattern"]])[0][1:-1] for r in phrase_rows}
    out = []
    for i, text in enumerate(texts):
        strong = []
        for r in phrase_rows:
            d = r["detail"]
            if d.get("content_model_version") != content.version:
                continue
            f = int(d["filter"])
            if values[i, f] >= d["threshold"] and values[i, f] > 0:
                strong.append(
                    {
                        "filter": f,
                        "phrase": decode_window(ids[i], int(positions[i, f]), int(d["width"])),
                        "activation": float(values[i, f]),
                        "threshold": d["threshold"],
                        "channel_pattern": r["pattern"],
                        "pattern_effect": r["effect"],
                    }
                )
        matched = [
            {"pattern": r["pattern"], "effect": r["effect"], "n_posts": r["n_posts"]}
            for r in phrase_rows
            if _contains(ids[i], pattern_ids[r["pattern"]])
        ]
        out.append(
            {
                "text": text,
                "content_score": float(probability[i]),
                "strong_phrases": strong,
                "matched_patterns": matched,
            }
        )
    return out


def score_texts_baseline(baselines, texts: list[str], term_rows: list[dict]) -> list[dict]:
    """Baseline content probability of each text and which of the channel's terms it holds."""
    if not texts:
        return []
    probability = baselines.content_scores(texts)
    analyzer = baselines.term_analyzer
    out = []
    for text, p in zip(texts, probability, strict=True):
        grams = set(analyzer(text)) if analyzer is not None else set()
        matched = [
            {"pattern": r["pattern"], "effect": r["effect"], "n_posts": r["n_posts"]}
            for r in term_rows
            if r["pattern"] in grams
        ]
        out.append(
            {
                "text": text,
                "content_score": None if np.isnan(p) else float(p),
                "strong_phrases": [],
                "matched_patterns": matched,
            }
        )
    return out


def analyze(
    conn: duckdb.DuckDBPyConnection, model: LoadedModel | None, channel_id: int, text_data: list[str] | None
) -> dict:
    """The channel's patterns (published table, else measured now) and optional text scores.

    ``model`` None (no content champion): patterns and text scores come from the text
    baseline (``source = "baseline"`` with ``fallback_reason``); ``served_from`` says
    whether the patterns were read from the published table or measured now.
    """
    channel_id = text_models.parse_channel_id(channel_id)
    texts = _validate_texts(text_data)
    notes = []
    reason = baseline_reason({"content": model})
    stored = _stored_patterns(conn, channel_id)
    if stored is not None and not stored.empty:
        rows = [{**r, "detail": json.loads(r["detail"])} for r in stored.to_dict("records")]
        versions = sorted(set(stored["model_version"].astype(str)))
        served_from = {
            "table": f"forecasts.{TABLE}",
            "scored_at": pd.Timestamp(stored["scored_at"].max()).isoformat(),
            "model_version": ",".join(versions),
        }
        if model is not None and versions != [model.version]:
            notes.append(
                f"patterns were scored with content model v{','.join(versions)}; the "
                f"champion is now v{model.version} (strong-phrase detection needs the "
                "same version and is skipped until the table is re-scored)"
            )
        elif model is None and "model" in set(stored["source"].astype(str)):
            notes.append(
                "no content champion now: the stored patterns were scored by a "
                "former champion; text scores below come from the baseline"
            )
    else:
        served_from = {
            "table": None,
            "computed": "on request from this channel's posts alone",
            "model_version": model.version if model is not None else "none",
        }
        try:
            rows = analyse(conn, model, channel_id).patterns.to_dict("records")
            notes.append(
                f"forecasts.{TABLE} has no rows for this channel: patterns measured now on its posts alone"
            )
        except NotEnoughPosts as exc:
            rows = []
            notes.append(f"no patterns: {exc}")
        except duckdb.CatalogException as exc:
            raise text_models.tables_missing(exc) from exc
    patterns = {kind: [_pattern_json(r) for r in rows if r["kind"] == kind] for kind in KINDS}
    result = {
        "channel_id": channel_id,
        "patterns": patterns,
        "effect_definition": "mean within-channel 48 h view percentile of the posts with the "
        "pattern minus the channel's mean (n_posts = sample size)",
        "source": "model" if model is not None else "baseline",
        "fallback_reason": reason,
        "served_from": served_from,
        "model": text_models.model_info(model),
        "notes": notes,
    }
    if texts is not None:

        def parsed(kind: str) -> list[dict]:
            return [
                {**r, "detail": r["detail"] if isinstance(r["detail"], dict) else json.loads(r["detail"])}
                for r in rows
                if r["kind"] == kind
            ]

        if model is not None:
            result["texts"] = score_texts(model, texts, parsed("cnn_phrase"))
        else:
            try:
                baselines = text_models.scoring_baselines(conn)
            except duckdb.CatalogException as exc:
                raise text_models.tables_missing(exc) from exc
            result["texts"] = score_texts_baseline(baselines, texts, parsed("tfidf_term"))
            result["baseline"] = text_models.baseline_info(baselines, "content")
    return result
