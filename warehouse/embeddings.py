"""Incremental text-embedding table keyed by text hash (``features.post_text_embeddings``).

Only texts whose hash is not stored yet are encoded, so re-runs embed new posts only.
The hash is DuckDB's ``md5(coalesce(text, ''))`` so SQL can join posts to it.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import pandas as pd

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
    "embedding": f"L2-normalised mean-pooled {ENCODER_NAME} sentence embedding ({EMBEDDING_DIM})",
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


def embed_new_texts(
    conn: duckdb.DuckDBPyConnection,
    encoder: MiniLMEncoder | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Embed texts not yet in the table; returns how many were added."""
    todo = missing_texts(conn)
    if todo.empty:
        return 0
    encoder = encoder or MiniLMEncoder()
    texts = todo["text"].tolist()
    vectors = [v for chunk in encoder.encode_batches(texts, batch_size, progress) for v in chunk]
    frame = pd.DataFrame(
        {
            "text_hash": todo["text_hash"],
            "encoder": ENCODER_NAME,
            "n_chars": [len(t) for t in texts],
            "embedding": [v.tolist() for v in vectors],
        }
    )
    conn.register("new_embeddings", frame)
    try:
        conn.execute(
            "INSERT OR REPLACE INTO features.post_text_embeddings "
            "SELECT text_hash, encoder, n_chars, embedding::FLOAT[384] FROM new_embeddings"
        )
    finally:
        conn.unregister("new_embeddings")
    return len(frame)
