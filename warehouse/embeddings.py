"""Incremental text-embedding table keyed by text hash (``features.post_text_embeddings``).

Only texts whose hash is not stored yet are embedded, so re-runs embed new posts only.
The hash is DuckDB's ``md5(coalesce(text, ''))`` so SQL can join posts to it.

One MiniLM pass serves both this table and the text models: ``embed_texts`` encodes
each missing text's token states once (first ``TOKEN_MAX_LENGTH`` = 48 tokens, the
models' length), writes them to the models' token cache and pools them into the
sentence embedding (``text_data.embed_via_cache``). The three steps are separate so the
asset holds no DuckDB connection while it encodes: ``missing_texts`` (read),
``embed_texts`` (no connection), ``write_embeddings`` (write).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd

from nn_models import text_data
from nn_models.text_encoder import EMBEDDING_DIM, ENCODER_NAME, MiniLMEncoder

DDL = f"""
CREATE TABLE IF NOT EXISTS features.post_text_embeddings (
    text_hash TEXT PRIMARY KEY,
    encoder TEXT,
    n_chars INTEGER,
    embedding FLOAT[{EMBEDDING_DIM}]
)
"""

DESCRIPTIONS = {
    "text_hash": "md5 of the post text (join: md5(coalesce(raw.posts.text, '')))",
    "encoder": "sentence encoder that produced the vector",
    "n_chars": "length of the text in characters",
    "embedding": (
        f"L2-normalised mean-pooled {ENCODER_NAME} sentence embedding ({EMBEDDING_DIM}) of the "
        f"first {text_data.TOKEN_MAX_LENGTH} tokens"
    ),
}


def missing_texts(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Distinct post texts with no stored embedding yet."""
    conn.execute(DDL)
    return conn.execute(
        """
        SELECT DISTINCT md5(coalesce(p.text, '')) AS text_hash, coalesce(p.text, '') AS text
        FROM raw.posts p
        ANTI JOIN features.post_text_embeddings e ON e.text_hash = md5(coalesce(p.text, ''))
        ORDER BY text_hash
        """
    ).fetchdf()


def embed_texts(
    todo: pd.DataFrame,
    encoder: MiniLMEncoder | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """Rows for the table from ``missing_texts``' frame; needs no warehouse connection.

    ``cache_dir``: the models' token cache (default ``text_data.default_cache_dir()``);
    texts found there are pooled from it, the rest are encoded once and added to it.
    """
    texts = todo["text"].tolist()
    cache_dir = cache_dir if cache_dir is not None else text_data.default_cache_dir()
    if texts and encoder is None:
        encoder = MiniLMEncoder(max_length=text_data.TOKEN_MAX_LENGTH)
    vectors, _, _ = text_data.embed_via_cache(
        texts, text_data.TOKEN_MAX_LENGTH, cache_dir, batch_size, encoder, progress
    )
    return pd.DataFrame(
        {
            "text_hash": todo["text_hash"].to_numpy(),
            "encoder": ENCODER_NAME,
            "n_chars": [len(t) for t in texts],
            "embedding": [v.tolist() for v in vectors],
        }
    )


def write_embeddings(conn: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> int:
    """Upsert ``embed_texts`` rows; returns how many were written."""
    if frame.empty:
        return 0
    conn.execute(DDL)
    conn.register("new_embeddings", frame)
    try:
        conn.execute(
            "INSERT OR REPLACE INTO features.post_text_embeddings "
            f"SELECT text_hash, encoder, n_chars, embedding::FLOAT[{EMBEDDING_DIM}] FROM new_embeddings"
        )
    finally:
        conn.unregister("new_embeddings")
    return len(frame)


def embed_new_texts(
    conn: duckdb.DuckDBPyConnection,
    encoder: MiniLMEncoder | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Embed texts not yet in the table, holding ``conn`` throughout (scripts); returns how many."""
    todo = missing_texts(conn)
    if todo.empty:
        return 0
    return write_embeddings(conn, embed_texts(todo, encoder, batch_size, progress))
