"""Text forecasts: post_viral_scores, content_patterns, content_recommendations (+ API calls).

A tiny synthetic warehouse, a ContentAnalyzer and a ViralDetector trained two epochs by
their own tasks, and an untrained ScheduleOptimizer that knows two of the three channels
(so the "schedule model does not know this channel" path runs too).
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from nn_models import text_data
from nn_models.champions import LoadedModel
from nn_models.device import choose_device
from nn_models.forecasts import patterns, recommendations, viral
from nn_models.forecasts.base import LINEAGE_COLUMNS
from nn_models.models.schedule import ScheduleOptimizer
from nn_models.service import InvalidInput, ModelUnavailable, UnknownChannel
from nn_models.tasks.content import ContentTask
from nn_models.tasks.viral import ViralTask
from warehouse import features, synthetic
from warehouse.forecast_tables import write_forecast
from warehouse.publish import open_reader, publish_table
from warehouse.schema import ensure_schema
from warehouse.upsert import upsert_frame

SCORED_AT = datetime(2026, 11, 1, 6, 0)
CHANNEL = 1001


@pytest.fixture(scope="module")
def conn():
    conn = duckdb.connect()
    ensure_schema(conn)
    world = synthetic.generate(synthetic.config_for("tiny", seed=42))
    for name, frame in world.tables().items():
        upsert_frame(conn, name, frame)
    for name in features.FEATURE_TABLES:
        features.build_feature_table(conn, name)
    yield conn
    conn.close()


def _loaded(task, data, seed: int) -> LoadedModel:
    result = task.train(task.default_params(), data, choose_device("cpu"), max_epochs=2, seed=seed)
    model = result.model.cpu().eval()
    metrics = task.evaluate(model, data)          # measured on the holdout, as at registration
    return LoadedModel(task=task.name, registered_model=task.registered_model, version="1",
                       module=model, tags={f"metric.{k}": str(v) for k, v in metrics.items()})


@pytest.fixture(scope="module")
def viral_data(conn):
    return ViralTask().load(conn)


@pytest.fixture(scope="module")
def champions(conn, viral_data):
    content_task = ContentTask()
    content = _loaded(content_task, content_task.load(conn), seed=1)
    vir = _loaded(ViralTask(), viral_data, seed=2)
    torch.manual_seed(0)
    schedule = ScheduleOptimizer([CHANNEL, 1002]).eval()       # 1003 unknown to it
    return {"content": content, "viral": vir,
            "schedule": LoadedModel(task="schedule", registered_model="channel_pulse_schedule",
                                    version="4", module=schedule)}


@pytest.fixture(scope="module")
def embeddings_table(conn):
    """features.post_text_embeddings, filled with the MiniLM sentence pooling of the cached
    token states (L2-normalised mean of the token states, as MiniLMEncoder.encode pools):
    the same vectors without a second MiniLM pass over every text in the test."""
    texts = conn.execute("SELECT DISTINCT coalesce(text, '') AS t FROM raw.posts").fetchdf()["t"]
    encoded = viral.encode(texts.tolist())
    vectors = patterns.mean_pooled(encoded.tokens, encoded.mask)
    frame = pd.DataFrame({"text_hash": [text_data.text_hash(t) for t in texts],
                          "encoder": "all-MiniLM-L6-v2", "n_chars": texts.str.len(),
                          "embedding": [v.tolist() for v in vectors]})
    conn.register("emb", frame)
    conn.execute("CREATE OR REPLACE TABLE features.post_text_embeddings AS "
                 "SELECT text_hash, encoder, n_chars::INTEGER AS n_chars, "
                 "embedding::FLOAT[384] AS embedding FROM emb")
    conn.unregister("emb")
    return vectors


@pytest.fixture(scope="module")
def analysis(conn, champions, embeddings_table):
    return patterns.analyse(conn, champions["content"])


@pytest.fixture(scope="module")
def scored(conn, champions, analysis):
    """The three tables scored and written to the warehouse, as the Dagster assets do."""
    out = {}
    for table, module in (("post_viral_scores", viral), ("content_patterns", patterns),
                          ("content_recommendations", recommendations)):
        out[table] = module.score(conn, champions, SCORED_AT)
        write_forecast(conn, table, out[table].frame)
    return out


@pytest.fixture(scope="module")
def reader(conn, scored, tmp_path_factory):
    """The API's view: published Parquet copies read through ``open_reader``."""
    root = str(tmp_path_factory.mktemp("published"))
    for schema, table in (("raw", "posts"), ("features", "post_features"),
                          ("features", "channel_daily_features"),
                          ("features", "post_text_embeddings"),
                          *(("forecasts", t) for t in scored)):
        publish_table(conn, root, schema, table)
    reader = open_reader(root)
    yield reader
    reader.close()


def _assert_lineage(frame: pd.DataFrame, name: str, version: str) -> None:
    assert list(frame.columns[-3:]) == list(LINEAGE_COLUMNS)
    assert (frame["model_name"] == name).all() and (frame["model_version"] == version).all()
    assert (frame["scored_at"] == pd.Timestamp(SCORED_AT)).all()


# --------------------------------------------------------------------- viral scores


def test_serving_context_equals_training_context(conn):
    posts = text_data.load_posts(conn)
    want = text_data.context_features(posts)
    stored = viral.stored_post_context(conn, posts[["channel_id", "post_id"]])
    aligned = posts[["channel_id", "post_id"]].merge(stored, on=["channel_id", "post_id"],
                                                     how="left")
    np.testing.assert_array_equal(text_data.context_features(aligned), want)
    # a post described before publishing gets the context its stored twin was trained with
    for i in (0, len(posts) // 2, len(posts) - 1):
        row = posts.iloc[i]
        got = viral.hypothetical_context(conn, int(row.channel_id),
                                         row.published_at.to_pydatetime(), row.media_type,
                                         row.text)
        np.testing.assert_allclose(text_data.context_features(got)[0], want[i], rtol=1e-6)


def test_viral_scores_rows_ranges_and_training_parity(conn, champions, scored, viral_data):
    result = scored["post_viral_scores"]
    frame = result.frame
    assert list(frame.columns) == viral.COLUMNS + list(LINEAGE_COLUMNS)
    _assert_lineage(frame, "channel_pulse_viral", "1")
    posts = conn.execute("SELECT channel_id, post_id, published_at FROM features.post_features"
                         ).fetchdf()
    last = posts.groupby("channel_id")["published_at"].transform("max")
    recent = posts[posts["published_at"] >= last - pd.Timedelta(days=viral.RECENT_DAYS)]
    assert len(frame) == len(recent) > 0
    assert set(zip(frame.channel_id, frame.post_id, strict=True)) == set(
        zip(recent.channel_id, recent.post_id, strict=True))
    assert frame["viral_probability"].between(0, 1).all()
    assert frame["content_score"].between(0, 1).all()
    assert frame["observed_viral"].isna().any() and frame["observed_viral"].notna().any()
    # the same numbers the task computes on its own holdout arrays (inputs built alike)
    labelled = text_data.load_posts(conn)
    holdout = text_data.time_split(labelled["published_at"])[2]
    keys = labelled.loc[holdout, ["channel_id", "post_id"]].reset_index(drop=True)
    keys["task_probability"] = ViralTask().probabilities(champions["viral"].module,
                                                         viral_data.holdout)
    both = keys.merge(frame, on=["channel_id", "post_id"])
    assert len(both) > 10
    np.testing.assert_allclose(both["viral_probability"], both["task_probability"], atol=1e-5)
    assert "scope" in result.notes


def test_viral_scores_without_champions(conn, champions):
    empty = viral.score(conn, {"viral": None, "content": champions["content"]}, SCORED_AT)
    assert empty.frame.empty and "no champion for viral" in empty.notes["skipped"]
    assert list(empty.frame.columns) == viral.COLUMNS + list(LINEAGE_COLUMNS)
    text_only = viral.score(conn, {"viral": champions["viral"], "content": None}, SCORED_AT)
    assert len(text_only.frame) > 0 and text_only.frame["content_score"].isna().all()
    assert "content_score is NULL" in text_only.notes["content_score"]


def test_detect_matches_the_batch_score_of_a_stored_post(conn, champions, scored):
    frame = scored["post_viral_scores"].frame
    row = frame.sort_values("viral_probability").iloc[-1]
    text = conn.execute("SELECT coalesce(text, '') FROM raw.posts WHERE channel_id = ? AND "
                        "post_id = ?", [int(row.channel_id), int(row.post_id)]).fetchall()[0][0]
    out = viral.detect(conn, champions["viral"], champions["content"], {
        "text": text, "media_type": row.media_type, "channel_id": int(row.channel_id),
        "published_at": pd.Timestamp(row.published_at).isoformat() + "Z"})
    assert out["context"] == "channel" and out["published_at_assumed"] is False
    assert out["viral_probability"] == pytest.approx(row.viral_probability, abs=1e-5)
    assert out["content_score"] == pytest.approx(row.content_score, abs=1e-5)
    rate, n = conn.execute("SELECT avg(is_viral::DOUBLE), count(is_viral) FROM "
                           "features.post_features WHERE channel_id = ?",
                           [int(row.channel_id)]).fetchall()[0]
    assert out["base_rate"]["viral_rate"] == pytest.approx(rate) and out["base_rate"]["n_posts"] == n
    assert out["models"]["viral"]["holdout_metrics"]["roc_auc"] == pytest.approx(
        champions["viral"].metrics["roc_auc"])
    json.dumps(out)


def test_detect_network_context_and_bad_input(conn, champions):
    out = viral.detect(conn, champions["viral"], None, {"text": "BREAKING: huge news!!!",
                                                        "media_type": "photo"})
    assert out["context"] == "network" and out["channel_id"] is None
    assert 0 <= out["viral_probability"] <= 1 and out["content_score"] is None
    assert out["base_rate"]["scope"] == "network" and out["published_at_assumed"]
    assert any("training mean" in n for n in out["notes"])
    bad = [None, {"media_type": "photo"}, {"text": 5, "media_type": "photo"},
           {"text": "x", "media_type": "hologram"},
           {"text": "x", "media_type": "none", "published_at": "not a time"},
           {"text": "x", "media_type": "none", "channel_id": "abc"},
           {"text": "x" * (viral.MAX_TEXT_CHARS + 1), "media_type": "none"}]
    for post_content in bad:
        with pytest.raises(InvalidInput):
            viral.detect(conn, champions["viral"], champions["content"], post_content)
    with pytest.raises(UnknownChannel):
        viral.detect(conn, champions["viral"], None, {"text": "x", "media_type": "none",
                                                      "channel_id": 999_999})
    for channel in (CHANNEL, None):       # nothing published yet: 503 with the reason
        with pytest.raises(ModelUnavailable, match="not published"):
            viral.detect(duckdb.connect(), champions["viral"], None,
                         {"text": "x", "media_type": "none", "channel_id": channel})


# ------------------------------------------------------------------------- patterns


def test_patterns_effects_are_measured(conn, analysis, scored, champions):
    frame = scored["content_patterns"].frame
    assert list(frame.columns) == patterns.COLUMNS + list(LINEAGE_COLUMNS)
    _assert_lineage(frame, "channel_pulse_content", "1")
    assert set(frame["kind"]) == set(patterns.KINDS)
    assert (frame["n_posts"] >= patterns.MIN_PATTERN_POSTS).all()
    assert frame["effect"].between(-1, 1).all() and frame["viral_lift"].between(-1, 1).all()
    # the scored table is the analysis' rows (deterministic: seeded k-means, same inputs)
    pd.testing.assert_frame_equal(frame[patterns.COLUMNS],
                                  patterns._table_frame(analysis.patterns), check_dtype=False)
    assert "post_text_embeddings" in analysis.clustering["embedding_source"]
    posts = analysis.posts
    for row in analysis.patterns.to_dict("records"):
        channel = posts[posts["channel_id"] == row["channel_id"]]
        if row["kind"] == "topic_cluster":
            members = channel[channel["cluster"] == row["detail"]["cluster"]]
            words = " ".join(members["text"]).lower()
            assert all(term in words for term in row["detail"]["terms"])
        else:
            j = analysis.filters["filter"].tolist().index(row["detail"]["filter"])
            strong = patterns.strong_mask(analysis.activations[channel.index], analysis.filters)
            members = channel[strong[:, j]]
            phrase_ids = patterns.token_ids([row["pattern"]])[0][1:-1]
            assert any(patterns._contains(ids, phrase_ids)
                       for ids in patterns.token_ids(members["text"].tolist()))
        assert len(members) == row["n_posts"]
        want = members["view_percentile_48h"].mean() - channel["view_percentile_48h"].mean()
        assert row["effect"] == pytest.approx(want)
        assert row["viral_lift"] == pytest.approx(members["is_viral"].mean()
                                                  - channel["is_viral"].mean())
    # filters are ranked by their measured association with the label
    assert analysis.filters["correlation"].is_monotonic_decreasing
    assert (analysis.filters["correlation"] > 0).all()


def test_topic_clusters_same_with_stored_or_pooled_embeddings(conn, analysis, embeddings_table):
    stored, source = patterns.sentence_embeddings(conn, analysis.posts, analysis.tokens,
                                                  analysis.mask)
    assert source == "features.post_text_embeddings"
    pooled = patterns.mean_pooled(analysis.tokens, analysis.mask)
    np.testing.assert_allclose(stored, pooled, atol=1e-6)


def test_patterns_without_champion_or_data(champions):
    result = patterns.score(duckdb.connect(), {"content": None}, SCORED_AT)
    assert result.frame.empty and "no champion for content" in result.notes["skipped"]
    assert list(result.frame.columns) == patterns.COLUMNS + list(LINEAGE_COLUMNS)
    no_tables = patterns.score(duckdb.connect(), {"content": champions["content"]}, SCORED_AT)
    assert no_tables.frame.empty and "not built" in no_tables.notes["skipped"]


def test_analyze_through_published_parquet(reader, champions, scored):
    content = champions["content"]
    texts = ["BREAKING: huge news tonight!!!", "quiet day"]
    out = patterns.analyze(reader, content, CHANNEL, texts)
    stored = scored["content_patterns"].frame
    mine = stored[stored["channel_id"] == CHANNEL]
    assert out["source"]["table"] == "forecasts.content_patterns"
    assert sum(len(v) for v in out["patterns"].values()) == len(mine)
    encoded = viral.encode(texts, cached=False)
    want = viral.content_probabilities(content, encoded.tokens, encoded.mask)
    assert [t["content_score"] for t in out["texts"]] == pytest.approx(want.tolist(), abs=1e-6)
    for t in out["texts"]:
        for hit in t["strong_phrases"]:
            assert hit["activation"] >= hit["threshold"] and hit["phrase"]
    # a channel's own phrase is found in a text that contains it
    phrase = out["patterns"]["cnn_phrase"][0]["pattern"]
    again = patterns.analyze(reader, content, CHANNEL, [f"so {phrase} today"])
    assert phrase in [m["pattern"] for m in again["texts"][0]["matched_patterns"]]
    json.dumps(out)
    for bad in ("text", [1, 2], ["x"] * (patterns.MAX_REQUEST_TEXTS + 1)):
        with pytest.raises(InvalidInput):
            patterns.analyze(reader, content, CHANNEL, bad)


# ------------------------------------------------------------------- recommendations


def test_recommendations_ranked_with_measured_numbers(scored, champions):
    result = scored["content_recommendations"]
    frame = result.frame
    assert list(frame.columns) == recommendations.COLUMNS + list(LINEAGE_COLUMNS)
    assert len(frame) > 0
    _assert_lineage(frame, recommendations.MODEL_NAME, "content:v1,schedule:v4,viral:v1")
    for _, group in frame.groupby("channel_id"):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert group["expected_lift"].is_monotonic_decreasing
        assert len(group) <= recommendations.MAX_RECOMMENDATIONS
        assert (group["kind"] == "cnn_phrase").sum() <= recommendations.MAX_PHRASE_RECOMMENDATIONS
    assert (frame["expected_lift"] > 0).all()
    assert (frame["shrinkage"].between(0, 1)).all()
    np.testing.assert_allclose(frame["expected_lift"], frame["observed_lift"] * frame["shrinkage"])
    assert frame["viral_probability"].between(0, 1).all()
    patterns_frame = scored["content_patterns"].frame
    for row in frame.to_dict("records"):
        assert f"{row['n_posts']} of the channel's posts" in row["rationale"]
        assert f"{row['mean_view_percentile']:.2f}" in row["rationale"]
        assert f"x shrinkage {row['shrinkage']:.2f}" in row["rationale"]
        match = patterns_frame[(patterns_frame["channel_id"] == row["channel_id"])
                               & (patterns_frame["pattern"] == row["pattern"])]
        assert row["observed_lift"] == pytest.approx(match["effect"].iloc[0])
        if row["channel_id"] == 1003:          # not in the schedule model
            assert math.isnan(row["best_hour"]) and "trained without this channel" in row[
                "rationale"]
        else:
            grid = champions["schedule"].module.slot_grids()[
                [CHANNEL, 1002].index(row["channel_id"])].reshape(-1)
            slot = int(torch.argmax(grid))
            assert (row["best_weekday"], row["best_hour"]) == (slot // 24, slot % 24)
            assert f"{int(row['best_hour']):02d}:00 UTC" in row["recommendation"]


def test_recommendations_degrade_without_viral_and_schedule(conn, analysis, champions):
    frame, notes = recommendations.build(conn, {"content": champions["content"]}, analysis)
    assert len(frame) > 0 and frame["viral_probability"].isna().all()
    assert frame["best_hour"].isna().all()
    assert all("No viral champion" in r and "No schedule champion" in r for r in frame.rationale)
    assert "viral" in notes and "schedule" in notes
    empty = recommendations.score(conn, {"content": None, "viral": champions["viral"]},
                                  SCORED_AT)
    assert empty.frame.empty and "no champion for content" in empty.notes["skipped"]
    assert list(empty.frame.columns) == recommendations.COLUMNS + list(LINEAGE_COLUMNS)


def test_recommend_with_a_local_tiny_gpt2(conn, reader, champions, scored, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from nn_models.text_encoder import model_path

    tok = AutoTokenizer.from_pretrained(model_path(), local_files_only=True)
    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=128,
                                     vocab_size=tok.vocab_size, bos_token_id=tok.cls_token_id,
                                     eos_token_id=tok.sep_token_id))
    gpt.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    out = recommendations.recommend(reader, champions, CHANNEL, str(tmp_path))
    stored = scored["content_recommendations"].frame
    assert [r["rank"] for r in out["recommendations"]] == stored.loc[
        stored["channel_id"] == CHANNEL, "rank"].tolist()
    assert out["source"]["table"] == "forecasts.content_recommendations"
    assert out["text_generator"]["status"] == "used"
    drafts = [r["draft"] for r in out["recommendations"]]
    assert drafts and all(isinstance(d, str) and d for d in drafts)
    again = recommendations.recommend(reader, champions, CHANNEL, str(tmp_path))
    assert [r["draft"] for r in again["recommendations"]] == drafts       # seeded
    json.dumps(out)

    plain = recommendations.recommend(reader, champions, CHANNEL, None)
    assert "draft" not in plain["recommendations"][0]
    assert "not configured" in plain["text_generator"]["status"]
    missing = recommendations.recommend(reader, champions, CHANNEL, str(tmp_path / "nope"))
    assert missing["text_generator"]["status"].startswith("unavailable")
    assert all(r["draft"] is None for r in missing["recommendations"])

    # no published table: computed on request from the channel's posts
    fresh = recommendations.recommend(_without_forecasts(conn), champions, CHANNEL, None)
    assert fresh["source"]["table"] is None
    assert all(r["expected_lift"] > 0 for r in fresh["recommendations"])
    with pytest.raises(ModelUnavailable):
        recommendations.recommend(reader, {**champions, "content": None}, CHANNEL, None)
    with pytest.raises(InvalidInput):
        recommendations.recommend(reader, champions, "abc", None)


def _without_forecasts(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A reader with the feature tables but no forecasts schema (nothing scored yet)."""
    other = duckdb.connect()
    other.execute("CREATE SCHEMA features")
    for table in ("post_features", "post_text_embeddings", "channel_daily_features"):
        frame = conn.execute(f"SELECT * FROM features.{table}").fetchdf()
        other.register("f", frame)
        other.execute(f"CREATE TABLE features.{table} AS SELECT * FROM f")
        other.unregister("f")
    return other
