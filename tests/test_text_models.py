"""Content (CNN) and viral (Transformer) text models: shapes, masking, data, baseline, lifecycle."""

from __future__ import annotations

import math

import duckdb
import mlflow.pytorch
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from nn_models import baselines_text, text_data
from nn_models.baselines_text import binary_metrics, tfidf_logreg_scores
from nn_models.device import choose_device
from nn_models.metrics import bootstrap_margin
from nn_models.models.content import ContentAnalyzer
from nn_models.models.viral import ViralDetector
from nn_models.pipeline import train_and_register
from nn_models.registry import CHALLENGER, version_by_alias
from nn_models.task import PROFILES, InsufficientData
from nn_models.tasks import content as content_task
from nn_models.tasks.content import AUC_THRESHOLD, ContentTask
from nn_models.tasks.viral import ViralTask
from warehouse import features, synthetic
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame

N_CONTEXT = len(text_data.CONTEXT_FEATURES)
N_AUX = len(text_data.AUX_TARGETS)


# ------------------------------------------------------------------ fixtures


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


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("token_cache")


@pytest.fixture(scope="module")
def content_data(warehouse, cache_dir):
    return ContentTask(cache_dir=cache_dir).load(warehouse)


@pytest.fixture(scope="module")
def viral_data(warehouse, cache_dir, content_data):  # after content: reads its cache
    return ViralTask(cache_dir=cache_dir).load(warehouse)


def _tokens(batch: int, length: int, n_real: list[int], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, 384, generator=gen)
    mask = torch.zeros(batch, length)
    for row, n in enumerate(n_real):
        mask[row, :n] = 1.0
    return tokens, mask


def _posts_only_warehouse(frame: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA features")
    conn.register("frame", frame)
    conn.execute("CREATE TABLE features.post_features AS SELECT * FROM frame")
    conn.unregister("frame")
    return conn


# ------------------------------------------------------------------- models


def test_content_shapes_and_filter_activations():
    model = ContentAnalyzer(proj_dim=16, n_aux=N_AUX).eval()
    tokens, mask = _tokens(4, 20, [20, 9, 5, 2])
    logit = model(tokens=tokens, mask=mask)
    assert logit.shape == (4,)
    main, aux = model.heads(tokens, mask)
    assert main.shape == (4,) and aux.shape == (4, N_AUX)
    acts = model.filter_activations(tokens, mask)
    assert acts.values.shape == (4, 64 + 128 + 256) and acts.positions.shape == (4, 448)
    assert acts.widths.tolist() == [3] * 64 + [4] * 128 + [5] * 256
    assert torch.all(acts.values >= 0)
    # every best window starts on a real token
    n_real = mask.sum(1, keepdim=True).long()
    assert torch.all(acts.positions < n_real)


def test_content_ignores_padding_states_and_length():
    model = ContentAnalyzer(proj_dim=16).eval()
    tokens, mask = _tokens(2, 12, [7, 12])
    noisy = tokens.clone()
    noisy[0, 7:] = 100.0  # garbage in the padding of post 0
    longer = torch.cat([tokens, torch.randn(2, 6, 384)], 1)
    longer_mask = torch.cat([mask, torch.zeros(2, 6)], 1)
    with torch.no_grad():
        base = model(tokens, mask)
        assert torch.allclose(model(noisy, mask), base, atol=1e-5)
        assert torch.allclose(model(longer, longer_mask), base, atol=1e-5)


def test_viral_shapes_padding_and_context_stats():
    model = ViralDetector(context_dim=N_CONTEXT, d_model=32, n_layers=2, max_length=16, n_aux=N_AUX).eval()
    tokens, mask = _tokens(3, 16, [16, 4, 2])
    context = torch.randn(3, N_CONTEXT)
    prob = model(tokens=tokens, mask=mask, context=context)
    assert prob.shape == (3,) and torch.all((prob > 0) & (prob < 1))
    assert model.heads(tokens, mask, context)[1].shape == (3, N_AUX)
    noisy = tokens.clone()
    noisy[1, 4:] = 50.0
    with torch.no_grad():
        assert torch.allclose(model(noisy, mask, context), prob, atol=1e-5)
    mean, std = torch.arange(N_CONTEXT, dtype=torch.float32), torch.zeros(N_CONTEXT)
    model.set_context_stats(mean, std)
    assert torch.equal(model.context_mean, mean)
    assert torch.all(model.context_std == 1.0)  # zero spread -> 1, never a division by 0
    assert "context_mean" in model.state_dict()


def test_prior_correction_shifts_logit_by_log_pos_weight():
    model = ContentAnalyzer(proj_dim=16).eval()
    tokens, mask = _tokens(2, 10, [10, 6])
    with torch.no_grad():
        before = model(tokens, mask)
        model.set_prior_correction(math.log(9.0))
        after = model(tokens, mask)
    assert torch.allclose(before - after, torch.full((2,), math.log(9.0)), atol=1e-6)


# --------------------------------------------------------------- baselines


def test_binary_metrics_hand_computed():
    y = np.array([0, 0, 1, 1])
    score = np.array([0.1, 0.4, 0.35, 0.8])
    m = binary_metrics(y, score)
    # 3 of the 4 (positive, negative) pairs are ordered correctly
    assert m["roc_auc"] == pytest.approx(0.75)
    # ranks: 0.8 (pos, precision 1), 0.4 (neg), 0.35 (pos, precision 2/3)
    assert m["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert math.isnan(binary_metrics(np.zeros(3), np.arange(3.0))["roc_auc"])


def _baseline_frames(data):
    return data.frames["train"], data.train["is_viral"], data.frames["val"], data.val["is_viral"]


def test_baselines_chosen_on_validation_only(viral_data, monkeypatch):
    """The selection sees train and validation rows only; the choice is the validation best,
    is recorded, and does not move when every holdout label is flipped."""
    tuned = viral_data.baselines
    assert set(tuned) == set(baselines_text.BASELINE_NAMES)
    info = viral_data.info
    assert info["strongest_baseline"] == max(tuned, key=lambda n: tuned[n].val_roc_auc)
    for name, b in tuned.items():
        assert info[f"baseline_{name}_params"] == b.label
        assert b.val_roc_auc == max(c["val_roc_auc"] for c in b.grid)
        assert len(b.grid) == len(baselines_text.C_GRID) * (
            len(baselines_text.NGRAM_GRID) if "tfidf" in name else 1
        )
    # the recorded validation AUC of the chosen text settings, recomputed by hand
    tf = tuned["tfidf"]
    train, y_train, val, y_val = _baseline_frames(viral_data)
    model = baselines_text.make_pipeline("tfidf", ngrams=tf.params["ngrams"], c=tf.params["C"])
    model.fit(train, y_train.astype(int))
    assert binary_metrics(y_val, model.predict_proba(val)[:, 1])["roc_auc"] == pytest.approx(tf.val_roc_auc)
    # the task hands the selection the train and validation rows, never the holdout
    seen = []
    real = content_task.tune_baselines

    def spy(names, train, y_train, val, y_val, *args, **kwargs):
        seen.append((len(train), len(val)))
        return real(names, train, y_train, val, y_val, *args, **kwargs)

    monkeypatch.setattr(content_task, "tune_baselines", spy)
    flipped = text_data.TextPreparedData(
        train=viral_data.train,
        val=viral_data.val,
        holdout={**viral_data.holdout, "is_viral": 1 - viral_data.holdout["is_viral"]},
        info={},
        frames=viral_data.frames,
        channels=viral_data.channels,
    )
    ViralTask().fit_baselines(flipped)
    assert seen == [(info["n_train"], info["n_val"])]
    assert {n: b.params for n, b in flipped.baselines.items()} == {n: b.params for n, b in tuned.items()}


def test_gate_is_the_bootstrap_margin_over_the_strongest(viral_data):
    task = ViralTask()
    y = viral_data.holdout["is_viral"]
    scores = task.baseline_holdout_scores(viral_data)
    best = viral_data.info["strongest_baseline"]

    # a "model" that scores the holdout labels themselves: AUC 1
    task.probabilities = lambda model, arrays: arrays["is_viral"].astype(np.float64)
    metrics = task.evaluate(torch.nn.Identity(), viral_data)
    assert metrics["roc_auc"] == 1.0
    want = bootstrap_margin(
        lambda i: content_task.roc_auc(y[i], y[i]),
        lambda i: content_task.roc_auc(y[i], scores[best][i]),
        len(y),
        n_boot=content_task.N_BOOT,
        seed=content_task.BOOTSTRAP_SEED,
    )
    assert metrics["margin_strongest"] == pytest.approx(want.diff)
    assert (metrics["margin_strongest_lo"], metrics["margin_strongest_hi"]) == pytest.approx(
        (want.lo, want.hi)
    )
    base = task.baseline(viral_data)
    gates = task.gates(metrics, base)
    assert gates[1].passed == (want.lo >= 0) and gates[1].kind == "baseline"
    # a margin whose interval reaches below 0 fails, whatever the point estimate
    noisy = {**metrics, "margin_strongest": 0.05, "margin_strongest_lo": -0.01}
    assert not task.gates(noisy, base)[1].passed


def test_labels_are_the_warehouse_trailing_labels(warehouse, content_data):
    """is_viral is read from post_features (trailing window), never recomputed here."""
    posts = text_data.load_posts(warehouse)
    stored = warehouse.execute(
        "SELECT channel_id, post_id, is_viral FROM features.post_features "
        "WHERE is_viral IS NOT NULL AND forwards_48h IS NOT NULL"
    ).fetchdf()
    both = posts.merge(stored, on=["channel_id", "post_id"], suffixes=("", "_stored"))
    assert len(both) == len(posts) and (both["is_viral"] == both["is_viral_stored"]).all()
    labels = np.concatenate(
        [content_data.train["is_viral"], content_data.val["is_viral"], content_data.holdout["is_viral"]]
    )
    np.testing.assert_array_equal(labels, posts["is_viral"].astype(float).to_numpy())


def test_tfidf_baseline_learns_a_word_and_its_bigram():
    train = [
        "boom big news",
        "boom today",
        "quiet day",
        "nothing new",
        "quiet evening",
        "plain update",
        "boom again",
    ]
    labels = np.array([1, 1, 0, 0, 0, 0, 1])
    scores = tfidf_logreg_scores(train, labels, ["boom now", "quiet now"])
    assert scores[0] > 0.5 > scores[1]


@pytest.mark.parametrize("name", baselines_text.BASELINE_NAMES)
def test_fast_tuning_chooses_what_grid_search_chooses(viral_data, name):
    """Vectoriser fitted once per n-gram set, C searched on the matrices: the same
    candidates, validation AUCs, choice and fitted model as GridSearchCV over the pipeline."""
    frames = viral_data.frames
    args = (
        frames["train"],
        viral_data.train["is_viral"],
        frames["val"],
        viral_data.val["is_viral"],
        text_data.CONTEXT_FEATURES,
    )
    fast = baselines_text.tune_baseline(name, *args)
    reference = baselines_text.grid_search_baseline(name, *args)
    assert fast.params == reference.params and fast.val_roc_auc == reference.val_roc_auc
    assert [{k: v for k, v in c.items() if k != "val_roc_auc"} for c in fast.grid] == [
        {k: v for k, v in c.items() if k != "val_roc_auc"} for c in reference.grid
    ]
    np.testing.assert_array_equal(
        [c["val_roc_auc"] for c in fast.grid], [c["val_roc_auc"] for c in reference.grid]
    )
    np.testing.assert_array_equal(fast.scores(frames["holdout"]), reference.scores(frames["holdout"]))


# ---------------------------------------------------------------------- data


def test_text_hash_matches_duckdb_md5():
    texts = ["⚡️ Breaking: ok", "", None]
    got = [text_data.text_hash(t) for t in texts]
    conn = duckdb.connect()
    want = [conn.execute("SELECT md5(coalesce(?, ''))", [t]).fetchone()[0] for t in texts]
    assert got == want


class _FakeEncoder:
    """Whitespace 'tokenizer' and states that depend on the word only (no MiniLM)."""

    class _Tok:
        def __call__(self, texts, truncation=True, max_length=48):
            return {"input_ids": [[0] + [1] * min(len(t.split()), max_length - 2) + [2] for t in texts]}

    def __init__(self):
        self.tokenizer = self._Tok()
        self.max_length = 48
        self.calls = 0

    def encode_tokens(self, texts):
        self.calls += 1
        states = np.zeros((len(texts), self.max_length, 384), np.float32)
        mask = np.zeros((len(texts), self.max_length), np.int64)
        for i, t in enumerate(texts):
            words = ["[CLS]", *t.split(), "[SEP]"][: self.max_length]
            for j, w in enumerate(words):
                states[i, j] = (sum(map(ord, w)) % 97) / 97.0 + j
                mask[i, j] = 1
        return states, mask


def test_token_cache_encodes_each_text_once(tmp_path):
    texts = ["a b c", "dd", "a b c", "eee fff ggg hhh", ""]
    fake = _FakeEncoder()
    first = text_data.encode_texts(texts, max_length=8, cache_dir=tmp_path, batch_size=2, encoder=fake)
    assert first.n_encoded == 4 and first.n_cached == 0  # duplicates encoded once
    assert first.tokens.dtype == np.float16 and first.tokens.shape == (5, 8, 384)
    assert first.mask.sum(1).tolist() == [5, 3, 5, 6, 2]
    assert np.array_equal(first.tokens[0], first.tokens[2])
    assert fake.max_length == 48  # the per-batch padding length is restored
    again = text_data.encode_texts(texts, max_length=8, cache_dir=tmp_path, encoder=fake)
    assert again.n_encoded == 0 and again.n_cached == 4
    assert np.array_equal(again.tokens, first.tokens) and np.array_equal(again.mask, first.mask)
    # no cache directory: nothing is written, everything is encoded
    none = text_data.encode_texts(texts[:2], max_length=8, cache_dir=None, encoder=fake)
    assert none.n_encoded == 2 and none.n_cached == 0


def test_length_bucketed_encoding_matches_full_padding(tmp_path):
    from nn_models.text_encoder import MiniLMEncoder

    encoder = MiniLMEncoder(max_length=24)
    texts = [
        "short",
        "a somewhat longer post about the market today!!!",
        "🚀 Top 5: bitcoin surged again #crypto",
        "ok",
    ]
    states, mask = encoder.encode_tokens(texts)
    got = text_data.encode_texts(texts, max_length=24, cache_dir=tmp_path, batch_size=2, encoder=encoder)
    assert np.array_equal(got.mask, mask.astype(np.float32))
    real = mask.astype(bool)
    np.testing.assert_allclose(got.tokens.astype(np.float32)[real], states[real], atol=2e-2, rtol=1e-2)
    assert np.all(got.tokens[~real] == 0)


def test_split_is_by_time_and_arrays_line_up(content_data, viral_data):
    info = content_data.info
    assert info["val_start"] < info["holdout_start"] <= info["holdout_end"]
    n = info["n_train"] + info["n_val"] + info["n_holdout"]
    assert info["n_holdout"] == pytest.approx(0.2 * n, abs=3)
    for split in (content_data.train, content_data.val, content_data.holdout):
        rows = len(split["is_viral"])
        assert split["tokens"].shape == (rows, text_data.TOKEN_MAX_LENGTH, 384)
        assert split["mask"].shape == (rows, text_data.TOKEN_MAX_LENGTH)
        assert split[text_data.AUX].shape == (rows, N_AUX)
        assert "context" not in split
    assert viral_data.holdout["context"].shape == (info["n_holdout"], N_CONTEXT)
    assert viral_data.info["texts_encoded"] == 0  # the content load filled the cache
    assert len(content_data.texts["holdout"]) == info["n_holdout"]


def test_context_uses_only_earlier_posts(warehouse):
    full = warehouse.execute("SELECT * FROM features.post_features").fetchdf()
    cut = full["published_at"].sort_values().iloc[len(full) // 2]
    early = _posts_only_warehouse(full[full["published_at"] < cut])
    ctx_full = text_data.context_features(text_data.load_posts(_posts_only_warehouse(full)))
    posts_full = text_data.load_posts(_posts_only_warehouse(full))
    posts_early = text_data.load_posts(early)
    keep = posts_full["published_at"] < cut
    # context from earlier posts only: cutting the later half changes none of it
    pd.testing.assert_frame_equal(
        pd.DataFrame(ctx_full[keep.to_numpy()]),
        pd.DataFrame(text_data.context_features(posts_early)),
    )
    # labelled posts start after a channel's first 5, so some already have 48 h-old priors
    has_prior = ctx_full[:, text_data.CONTEXT_FEATURES.index("has_prior")]
    np.testing.assert_array_equal(
        has_prior, (posts_full["channel_prior_posts_48h"].fillna(0) > 0).to_numpy(float)
    )


def test_insufficient_data(warehouse, tmp_path):
    with pytest.raises(InsufficientData, match="not built"):
        ContentTask(cache_dir=tmp_path).load(duckdb.connect())
    full = warehouse.execute("SELECT * FROM features.post_features").fetchdf()
    labelled = full[full["is_viral"].notna() & full["forwards_48h"].notna()]
    with pytest.raises(
        InsufficientData, match=rf"at least {text_data.MIN_LABELLED_POSTS} labelled posts.*has 60"
    ):
        ContentTask(cache_dir=tmp_path).load(_posts_only_warehouse(labelled.head(60)))
    no_viral = full.assign(is_viral=full["is_viral"].notna() & False)
    with pytest.raises(InsufficientData, match=r"at least 3 viral.*has 0 viral"):
        ViralTask(cache_dir=tmp_path).load(_posts_only_warehouse(no_viral))


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("task_cls", [ContentTask, ViralTask])
def test_training_is_deterministic(task_cls, content_data, viral_data, cache_dir):
    task = task_cls(cache_dir=cache_dir)
    data = content_data if task_cls is ContentTask else viral_data
    params = task.default_params()
    cpu = choose_device("cpu")
    a = task.train(params, data, cpu, max_epochs=2, seed=7)
    b = task.train(params, data, cpu, max_epochs=2, seed=7)
    assert a.val_losses == b.val_losses
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key
    # pos_weight correction stored on the model
    y = data.train["is_viral"]
    assert float(a.model.logit_offset) == pytest.approx(math.log((len(y) - y.sum()) / y.sum()))


@pytest.mark.parametrize("task_cls", [ContentTask, ViralTask])
def test_train_and_register_tiny(task_cls, warehouse, cache_dir, tmp_path):
    task = task_cls(cache_dir=cache_dir)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = train_and_register(
        task,
        warehouse,
        tracking_uri=tracking,
        artifact_root=str(tmp_path / "artifacts"),
        optuna_uri=f"sqlite:///{tmp_path / 'optuna.db'}",
        choice=choose_device("cpu"),
        profile=PROFILES["tiny"],
        seed=3,
        progress=lambda _msg: None,
    )
    assert report.status == "registered" and report.version == "1"
    assert [g.name for g in report.gates] == ["roc_auc", "beats_baseline"]
    gate = report.gates[0]
    assert gate.threshold == AUC_THRESHOLD and gate.passed == (gate.value >= AUC_THRESHOLD)
    assert 0.0 <= report.metrics["roc_auc"] <= 1.0
    assert 0.0 <= report.baseline["baseline_roc_auc"] <= 1.0
    best = report.data_info["strongest_baseline"]
    assert best in task.baseline_names
    for name in task.baseline_names:  # every baseline's holdout metric and its margin
        assert f"baseline_{name}_roc_auc" in report.baseline and f"margin_{name}_lo" in report.metrics
    beats = report.gates[1]
    assert beats.value == pytest.approx(report.metrics["roc_auc"] - report.baseline["baseline_roc_auc"])
    assert beats.lo == report.metrics["margin_strongest_lo"] and beats.passed == (beats.lo >= 0)
    assert report.data_info[f"baseline_{best}_params"] in beats.description
    assert {"roc_holdout", "calibration_holdout"} <= set(report.artifacts)
    client = MlflowClient(tracking)
    version = version_by_alias(client, task.registered_model, CHALLENGER)
    assert str(version.version) == "1"
    assert version.tags["onnx_parity"] == "passed", version.tags.get("onnx_reason")
    # the registered model scores the holdout on its own (how a champion is re-evaluated)
    loaded = mlflow.pytorch.load_model(f"models:/{task.registered_model}/1", map_location="cpu")
    data = task.load(warehouse)
    assert task.evaluate(loaded, data)["roc_auc"] == pytest.approx(report.metrics["roc_auc"])
