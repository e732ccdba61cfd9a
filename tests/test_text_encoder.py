"""MiniLM encoder: ONNX Runtime vs PyTorch parity, and one pass for embeddings + token cache."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from nn_models import text_data
from nn_models.tasks.content import ContentTask
from nn_models.text_encoder import PARITY_TOLERANCE, MiniLMEncoder, onnx_cache_dir, pool
from warehouse import embeddings, features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame

TEXTS = [
    "",
    "short",
    "🚀 Top 5: bitcoin surged again #crypto",
    "Сегодня в канале: разбор новостей недели и ответы на ваши вопросы",
    "a somewhat longer post about the market today, with numbers 1 2 3 and a link example.com " * 3,
]


@pytest.fixture(scope="module")
def encoders():
    assert onnx_cache_dir() is not None  # conftest sets PULSE_DATA_DIR
    return MiniLMEncoder(max_length=48, backend="torch"), MiniLMEncoder(max_length=48, backend="onnx")


def test_auto_backend_is_onnx_on_cpu_after_a_passed_parity_check(encoders):
    auto = MiniLMEncoder(max_length=48)
    assert auto.backend == "onnx"
    assert auto.parity["passed"] and auto.parity["max_abs_diff_states"] <= PARITY_TOLERANCE
    assert MiniLMEncoder(device="cpu", backend="torch").backend == "torch"


def test_onnx_matches_pytorch(encoders):
    reference, candidate = encoders
    states_t, mask_t = reference.encode_tokens(TEXTS)
    states_o, mask_o = candidate.encode_tokens(TEXTS)
    assert np.array_equal(mask_t, mask_o) and mask_t.sum(1).max() == 48  # one text is truncated
    real = mask_t.astype(bool)
    assert np.abs(states_t - states_o)[real].max() <= PARITY_TOLERANCE
    emb_t, emb_o = reference.encode(TEXTS), candidate.encode(TEXTS)
    assert np.abs(emb_t - emb_o).max() <= PARITY_TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(emb_o, axis=1), 1.0, atol=1e-5)
    # the sentence embedding is the pooled token states (MiniLMEncoder.encode's pooling)
    np.testing.assert_allclose(pool(states_t, mask_t), emb_t, atol=1e-5)


@pytest.fixture(scope="module")
def warehouse():
    conn = duckdb.connect()
    ensure_schema(conn)
    world = synthetic.generate(synthetic.config_for("tiny", seed=42))
    for name, frame in world.tables().items():
        upsert_frame(conn, name, frame)
    for name in features.FEATURE_TABLES:
        features.build_feature_table(conn, name)
    yield conn
    conn.close()


def test_one_pass_fills_embeddings_and_the_token_cache(warehouse, encoders, tmp_path):
    todo = embeddings.missing_texts(warehouse)
    calls = []
    rows = embeddings.embed_texts(
        todo, encoder=encoders[1], cache_dir=tmp_path, progress=lambda d, n: calls.append((d, n))
    )
    assert calls and calls[-1] == (len(todo), len(todo))
    assert embeddings.write_embeddings(warehouse, rows) == len(todo)
    assert embeddings.missing_texts(warehouse).empty
    # a text model's load now finds every text in the token cache
    data = ContentTask(cache_dir=tmp_path).load(warehouse)
    assert data.info["texts_encoded"] == 0 and data.info["texts_from_cache"] > 0
    # the stored vectors are MiniLM's sentence embeddings of the first 48 tokens, pooled
    # from the float16 states in the cache
    sample = todo.head(32)
    stored = np.stack(rows.set_index("text_hash").loc[sample["text_hash"], "embedding"].map(np.asarray))
    direct = encoders[0].encode(sample["text"].tolist())
    assert np.abs(stored - direct).max() < 2e-3
    # a second pass encodes nothing: every text comes from the cache
    again, n_encoded, n_cached = text_data.embed_via_cache(
        todo["text"].tolist(), cache_dir=tmp_path, encoder=encoders[1]
    )
    assert n_encoded == 0 and n_cached == len(todo)
    assert np.array_equal(again, np.stack(rows["embedding"].map(np.asarray)).astype(np.float32))
