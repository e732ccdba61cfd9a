"""Text forecasts: post_viral_scores, content_patterns, content_recommendations (+ API calls).

A tiny synthetic warehouse, a ContentAnalyzer and a ViralDetector trained two epochs by
their own tasks, and an untrained ScheduleOptimizer that knows two of the three channels
(so the "schedule model does not know this channel" path runs too). Without champions
every table is still filled, from the strongest baseline fitted on the labelled history.
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
    metrics = task.evaluate(model, data)  # measured on the holdout, as at registration
    return LoadedModel(
        task=task.name,
        registered_model=task.registered_model,
        version="1",
        module=model,
        tags={f"metric.{k}": str(v) for k, v in metrics.items()},
    )


@pytest.fixture(scope="module")
def viral_data(conn):
    return ViralTask().load(conn)


@pytest.fixture(scope="module")
def champions(conn, viral_data):
    content_task = ContentTask()
    content = _loaded(content_task, content_task.load(conn), seed=1)
    vir = _loaded(ViralTask(), viral_data, seed=2)
    torch.manual_seed(0)
    schedule = ScheduleOptimizer([CHANNEL, 1002]).eval()  # 1003 unknown to it
    return {
        "content": content,
        "viral": vir,
        "schedule": LoadedModel(
            task="schedule", registered_model="channel_pulse_schedule", version="4", module=schedule
        ),
    }


@pytest.fixture(scope="module")
def embeddings_table(conn):
    """features.post_text_embeddings, filled with the MiniLM sentence pooling of the cached
    token states (L2-normalised mean of the token states, as MiniLMEncoder.encode pools):
    the same vectors without a second MiniLM pass over every text in the test."""
    texts = conn.execute("SELECT DISTINCT coalesce(text, '') AS t FROM raw.posts").fetchdf()["t"]
    encoded = viral.encode(texts.tolist())
    vectors = patterns.mean_pooled(encoded.tokens, encoded.mask)
    frame = pd.DataFrame(
        {
            "text_hash": [text_data.text_hash(t) for t in texts],
            "encoder": "all-MiniLM-L6-v2",
            "n_chars": texts.str.len(),
            "embedding": [v.tolist() for v in vectors],
        }
    )
    conn.register("emb", frame)
    conn.execute(
        "CREATE OR REPLACE TABLE features.post_text_embeddings AS "
        "SELECT text_hash, encoder, n_chars::INTEGER AS n_chars, "
        "embedding::FLOAT[384] AS embedding FROM emb"
    )
    conn.unregister("emb")
    return vectors


@pytest.fixture(scope="module")
def analysis(conn, champions, embeddings_table):
    return patterns.analyse(conn, champions["content"])


@pytest.fixture(scope="module")
def scored(conn, champions, analysis):
    """The three tables scored and written to the warehouse, as the Dagster assets do."""
    out = {}
    for table, module in (
        ("post_viral_scores", viral),
        ("content_patterns", patterns),
        ("content_recommendations", recommendations),
    ):
        out[table] = module.score(conn, champions, SCORED_AT)
        write_forecast(conn, table, out[table].frame)
    return out


@pytest.fixture(scope="module")
def reader(conn, scored, tmp_path_factory):
    """The API's view: published Parquet copies read through ``open_reader``."""
    root = str(tmp_path_factory.mktemp("published"))
    for schema, table in (
        ("raw", "posts"),
        ("features", "post_features"),
        ("features", "channel_daily_features"),
        ("features", "post_text_embeddings"),
        *(("forecasts", t) for t in scored),
    ):
        publish_table(conn, root, schema, table)
    reader = open_reader(root)
    yield reader
    reader.close()


def _assert_lineage(frame: pd.DataFrame, name: str, version: str) -> None:
    assert list(frame.columns[-len(LINEAGE_COLUMNS) :]) == list(LINEAGE_COLUMNS)
    assert (frame["model_name"] == name).all() and (frame["model_version"] == version).all()
    assert (frame["scored_at"] == pd.Timestamp(SCORED_AT)).all()
    assert (frame["source"] == "model").all() and frame["fallback_reason"].isna().all()


def _assert_baseline_rows(frame: pd.DataFrame, reason: str) -> None:
    assert len(frame) > 0
    assert (frame["source"] == "baseline").all()
    assert frame["fallback_reason"].str.contains(reason).all()


# --------------------------------------------------------------------- viral scores


def test_serving_context_equals_training_context(conn):
    posts = text_data.load_posts(conn)
    want = text_data.context_features(posts)
    stored = viral.stored_post_context(conn, posts[["channel_id", "post_id"]])
    aligned = posts[["channel_id", "post_id"]].merge(stored, on=["channel_id", "post_id"], how="left")
    np.testing.assert_array_equal(text_data.context_features(aligned), want)
    # a post described before publishing gets the context its stored twin was trained with
    for i in (0, len(posts) // 2, len(posts) - 1):
        row = posts.iloc[i]
        got = viral.hypothetical_context(
            conn, int(row.channel_id), row.published_at.to_pydatetime(), row.media_type, row.text
        )
        np.testing.assert_allclose(text_data.context_features(got)[0], want[i], rtol=1e-6)


def test_viral_scores_rows_ranges_and_training_parity(conn, champions, scored, viral_data):
    result = scored["post_viral_scores"]
    frame = result.frame
    assert list(frame.columns) == viral.COLUMNS + list(LINEAGE_COLUMNS)
    _assert_lineage(frame, "channel_pulse_viral", "1")
    posts = conn.execute("SELECT channel_id, post_id, published_at FROM features.post_features").fetchdf()
    last = posts.groupby("channel_id")["published_at"].transform("max")
    recent = posts[posts["published_at"] >= last - pd.Timedelta(days=viral.RECENT_DAYS)]
    assert len(frame) == len(recent) > 0
    assert set(zip(frame.channel_id, frame.post_id, strict=True)) == set(
        zip(recent.channel_id, recent.post_id, strict=True)
    )
    assert frame["viral_probability"].between(0, 1).all()
    assert frame["content_score"].between(0, 1).all()
    assert frame["observed_viral"].isna().any() and frame["observed_viral"].notna().any()
    # the same numbers the task computes on its own holdout arrays (inputs built alike)
    labelled = text_data.load_posts(conn)
    holdout = text_data.time_split(labelled["published_at"])[2]
    keys = labelled.loc[holdout, ["channel_id", "post_id"]].reset_index(drop=True)
    keys["task_probability"] = ViralTask().probabilities(champions["viral"].module, viral_data.holdout)
    both = keys.merge(frame, on=["channel_id", "post_id"])
    assert len(both) > 10
    np.testing.assert_allclose(both["viral_probability"], both["task_probability"], atol=1e-5)
    assert "scope" in result.notes


def test_viral_scores_without_champions(conn, champions, scored):
    """No viral champion: every recent post is scored by the strongest viral baseline,
    tuned on a time split of the labelled history and refitted on all of it."""
    result = viral.score(conn, {"viral": None, "content": champions["content"]}, SCORED_AT)
    frame = result.frame
    assert list(frame.columns) == viral.COLUMNS + list(LINEAGE_COLUMNS)
    _assert_baseline_rows(frame, "no champion for viral")
    assert frame["fallback_reason"].str.contains("chosen on the latest 20%").all()
    model_rows = scored["post_viral_scores"].frame
    assert set(zip(frame.channel_id, frame.post_id, strict=True)) == set(
        zip(model_rows.channel_id, model_rows.post_id, strict=True)
    )
    assert frame["viral_probability"].between(0, 1).all()
    assert frame["viral_probability"].nunique() > 10  # a model of the post, not a rate
    np.testing.assert_allclose(frame["content_score"], model_rows["content_score"], atol=1e-6)
    # the same numbers as the chosen baseline refitted on all labelled posts
    baselines = viral.scoring_baselines(conn)
    posts = viral.stored_post_context(conn, frame[["channel_id", "post_id"]])
    want = baselines.viral.scores(text_data.baseline_frame(posts))
    np.testing.assert_allclose(frame["viral_probability"], want)
    assert (frame["model_name"] == f"baseline:{baselines.viral.name}").all()
    assert baselines.viral.name in baselines.selection
    assert baselines.selection[baselines.viral.name] == max(baselines.selection.values())
    # no content champion: content_score from the tuned TF-IDF baseline
    text_only = viral.score(conn, {"viral": champions["viral"], "content": None}, SCORED_AT)
    assert (text_only.frame["source"] == "model").all()
    assert text_only.frame["content_score"].between(0, 1).all()
    assert (text_only.frame["content_model_version"] == "baseline:tfidf").all()
    assert "content_score from the baseline tfidf" in text_only.notes["content_score"]


def test_detect_matches_the_batch_score_of_a_stored_post(conn, champions, scored):
    frame = scored["post_viral_scores"].frame
    row = frame.sort_values("viral_probability").iloc[-1]
    text = conn.execute(
        "SELECT coalesce(text, '') FROM raw.posts WHERE channel_id = ? AND post_id = ?",
        [int(row.channel_id), int(row.post_id)],
    ).fetchall()[0][0]
    out = viral.detect(
        conn,
        champions["viral"],
        champions["content"],
        {
            "text": text,
            "media_type": row.media_type,
            "channel_id": int(row.channel_id),
            "published_at": pd.Timestamp(row.published_at).isoformat() + "Z",
        },
    )
    assert out["context"] == "channel" and out["published_at_assumed"] is False
    assert out["viral_probability"] == pytest.approx(row.viral_probability, abs=1e-5)
    assert out["content_score"] == pytest.approx(row.content_score, abs=1e-5)
    rate, n = conn.execute(
        "SELECT avg(is_viral::DOUBLE), count(is_viral) FROM features.post_features WHERE channel_id = ?",
        [int(row.channel_id)],
    ).fetchall()[0]
    assert out["base_rate"]["viral_rate"] == pytest.approx(rate) and out["base_rate"]["n_posts"] == n
    assert out["models"]["viral"]["holdout_metrics"]["roc_auc"] == pytest.approx(
        champions["viral"].metrics["roc_auc"]
    )
    json.dumps(out)


def test_detect_network_context_and_bad_input(conn, champions):
    out = viral.detect(
        conn, champions["viral"], None, {"text": "BREAKING: huge news!!!", "media_type": "photo"}
    )
    assert out["context"] == "network" and out["channel_id"] is None
    assert 0 <= out["viral_probability"] <= 1 and 0 <= out["content_score"] <= 1
    assert out["source"] == "model" and out["fallback_reason"] is None
    assert any(
        n.startswith("no content champion: content_score from the baseline tfidf") for n in out["notes"]
    )
    assert out["base_rate"]["scope"] == "network" and out["published_at_assumed"]
    assert any("training mean" in n for n in out["notes"])
    bad = [
        None,
        {"media_type": "photo"},
        {"text": 5, "media_type": "photo"},
        {"text": "x", "media_type": "hologram"},
        {"text": "x", "media_type": "none", "published_at": "not a time"},
        {"text": "x", "media_type": "none", "channel_id": "abc"},
        {"text": "x" * (viral.MAX_TEXT_CHARS + 1), "media_type": "none"},
    ]
    for post_content in bad:
        with pytest.raises(InvalidInput):
            viral.detect(conn, champions["viral"], champions["content"], post_content)
    with pytest.raises(UnknownChannel):
        viral.detect(
            conn, champions["viral"], None, {"text": "x", "media_type": "none", "channel_id": 999_999}
        )
    for channel in (CHANNEL, None):  # nothing published yet: 503 with the reason
        with pytest.raises(ModelUnavailable, match="not published"):
            viral.detect(
                duckdb.connect(),
                champions["viral"],
                None,
                {"text": "x", "media_type": "none", "channel_id": channel},
            )


# ------------------------------------------------------------------------- patterns


def test_patterns_effects_are_measured(conn, analysis, scored, champions):
    frame = scored["content_patterns"].frame
    assert list(frame.columns) == patterns.COLUMNS + list(LINEAGE_COLUMNS)
    _assert_lineage(frame, "channel_pulse_content", "1")
    assert set(frame["kind"]) == {"cnn_phrase", "topic_cluster"}  # the champion serves
    assert (frame["n_posts"] >= patterns.MIN_PATTERN_POSTS).all()
    assert frame["effect"].between(-1, 1).all() and frame["viral_lift"].between(-1, 1).all()
    # the scored table is the analysis' rows (deterministic: seeded k-means, same inputs)
    pd.testing.assert_frame_equal(
        frame[patterns.COLUMNS], patterns._table_frame(analysis.patterns), check_dtype=False
    )
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
            assert any(
                patterns._contains(ids, phrase_ids) for ids in patterns.token_ids(members["text"].tolist())
            )
        assert len(members) == row["n_posts"]
        want = members["view_percentile_48h"].mean() - channel["view_percentile_48h"].mean()
        assert row["effect"] == pytest.approx(want)
        assert row["viral_lift"] == pytest.approx(members["is_viral"].mean() - channel["is_viral"].mean())
    # filters are ranked by their measured association with the label
    assert analysis.filters["correlation"].is_monotonic_decreasing
    assert (analysis.filters["correlation"] > 0).all()


def test_topic_clusters_same_with_stored_or_pooled_embeddings(conn, analysis, embeddings_table):
    stored, source = patterns.sentence_embeddings(conn, analysis.posts, analysis.tokens, analysis.mask)
    assert source == "features.post_text_embeddings"
    pooled = patterns.mean_pooled(analysis.tokens, analysis.mask)
    np.testing.assert_allclose(stored, pooled, atol=1e-6)


def test_patterns_without_champion_or_data(conn, champions, embeddings_table):
    result = patterns.score(conn, {"content": None}, SCORED_AT)
    frame = result.frame
    assert list(frame.columns) == patterns.COLUMNS + list(LINEAGE_COLUMNS)
    _assert_baseline_rows(frame, "no champion for content")
    assert set(frame["kind"]) == {"tfidf_term", "topic_cluster"}
    assert frame["channel_id"].nunique() == 3
    baselines = viral.scoring_baselines(conn)
    posts = patterns.load_posts(conn)
    for row in frame[frame["kind"] == "tfidf_term"].to_dict("records"):
        detail = json.loads(row["detail"])
        assert detail["weight"] > 0 and detail["content_model_version"] == "baseline:tfidf"
        assert baselines.term_weights[row["pattern"]] == pytest.approx(detail["weight"], abs=1e-6)
        channel = posts[posts["channel_id"] == row["channel_id"]]
        members = channel[[row["pattern"] in set(baselines.term_analyzer(t)) for t in channel["text"]]]
        assert len(members) == row["n_posts"] >= patterns.MIN_PATTERN_POSTS
        assert row["effect"] == pytest.approx(
            members["view_percentile_48h"].mean() - channel["view_percentile_48h"].mean()
        )
    no_tables = patterns.score(duckdb.connect(), {"content": champions["content"]}, SCORED_AT)
    assert no_tables.frame.empty and "not built" in no_tables.notes["skipped"]


def test_analyze_through_published_parquet(reader, champions, scored):
    content = champions["content"]
    texts = ["BREAKING: huge news tonight!!!", "quiet day"]
    out = patterns.analyze(reader, content, CHANNEL, texts)
    stored = scored["content_patterns"].frame
    mine = stored[stored["channel_id"] == CHANNEL]
    assert out["served_from"]["table"] == "forecasts.content_patterns"
    assert out["source"] == "model" and out["fallback_reason"] is None
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
    # no champion: measured now from the baseline (the published table has model rows)
    fresh = patterns.analyze(_without_forecasts(reader), None, CHANNEL, texts)
    assert fresh["source"] == "baseline" and "no champion for content" in fresh["fallback_reason"]
    assert fresh["patterns"]["tfidf_term"] and not fresh["patterns"]["cnn_phrase"]
    baselines = viral.scoring_baselines(reader)
    assert [t["content_score"] for t in fresh["texts"]] == pytest.approx(
        baselines.content_scores(texts).tolist()
    )
    term = fresh["patterns"]["tfidf_term"][0]["pattern"]
    hit = patterns.analyze(_without_forecasts(reader), None, CHANNEL, [f"so {term} today"])
    assert term in [m["pattern"] for m in hit["texts"][0]["matched_patterns"]]
    json.dumps(fresh)


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
        match = patterns_frame[
            (patterns_frame["channel_id"] == row["channel_id"])
            & (patterns_frame["pattern"] == row["pattern"])
        ]
        assert row["observed_lift"] == pytest.approx(match["effect"].iloc[0])
        if row["channel_id"] == 1003:  # not in the schedule model, no schedule table
            assert math.isnan(row["best_hour"]) and "No posting slot ranked" in row["rationale"]
        else:
            grid = (
                champions["schedule"]
                .module.slot_grids()[[CHANNEL, 1002].index(row["channel_id"])]
                .reshape(-1)
            )
            slot = int(torch.argmax(grid))
            assert (row["best_weekday"], row["best_hour"]) == (slot // 24, slot % 24)
            assert f"{int(row['best_hour']):02d}:00 UTC" in row["recommendation"]


def test_recommendations_degrade_without_viral_and_schedule(conn, analysis, champions):
    frame, notes = recommendations.build(conn, {"content": champions["content"]}, analysis)
    assert len(frame) > 0 and frame["viral_probability"].between(0, 1).all()
    assert frame["best_hour"].isna().all()
    assert all(
        "No viral champion; the baseline" in r and "No posting slot ranked" in r for r in frame.rationale
    )
    assert "viral" in notes and "schedule" in notes
    result = recommendations.score(conn, {"content": None, "viral": champions["viral"]}, SCORED_AT)
    frame = result.frame
    assert list(frame.columns) == recommendations.COLUMNS + list(LINEAGE_COLUMNS)
    _assert_baseline_rows(frame, "no champion for content")
    assert set(frame["kind"]) <= {"tfidf_term", "topic_cluster"}
    assert (frame["model_version"] == "content:baseline,viral:v1").all()
    assert (frame["expected_lift"] > 0).all() and frame["content_score"].between(0, 1).all()
    assert all("No content champion; the baseline tfidf" in r for r in frame.rationale)


def test_recommend_with_a_local_tiny_gpt2(conn, reader, champions, scored, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from nn_models.text_encoder import model_path

    tok = AutoTokenizer.from_pretrained(model_path(), local_files_only=True)
    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(
        GPT2Config(
            n_layer=1,
            n_head=2,
            n_embd=32,
            n_positions=128,
            vocab_size=tok.vocab_size,
            bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id,
        )
    )
    gpt.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    out = recommendations.recommend(reader, champions, CHANNEL, str(tmp_path))
    stored = scored["content_recommendations"].frame
    assert [r["rank"] for r in out["recommendations"]] == stored.loc[
        stored["channel_id"] == CHANNEL, "rank"
    ].tolist()
    assert out["served_from"]["table"] == "forecasts.content_recommendations"
    assert out["source"] == "model" and out["fallback_reason"] is None
    assert out["text_generator"]["status"] == "used"
    drafts = [r["draft"] for r in out["recommendations"]]
    assert drafts and all(isinstance(d, str) and d for d in drafts)
    again = recommendations.recommend(reader, champions, CHANNEL, str(tmp_path))
    assert [r["draft"] for r in again["recommendations"]] == drafts  # seeded
    json.dumps(out)

    plain = recommendations.recommend(reader, champions, CHANNEL, None)
    assert "draft" not in plain["recommendations"][0]
    assert "not configured" in plain["text_generator"]["status"]
    missing = recommendations.recommend(reader, champions, CHANNEL, str(tmp_path / "nope"))
    assert missing["text_generator"]["status"].startswith("unavailable")
    assert all(r["draft"] is None for r in missing["recommendations"])

    # no published table: computed on request from the channel's posts
    fresh = recommendations.recommend(_without_forecasts(conn), champions, CHANNEL, None)
    assert fresh["served_from"]["table"] is None
    assert all(r["expected_lift"] > 0 for r in fresh["recommendations"])
    none = {"content": None, "viral": None, "schedule": None}
    base = recommendations.recommend(_without_forecasts(conn), none, CHANNEL, None)
    assert base["source"] == "baseline" and "no champion for content" in base["fallback_reason"]
    assert base["recommendations"] and all(
        r["kind"] in ("tfidf_term", "topic_cluster") for r in base["recommendations"]
    )
    json.dumps(base)
    with pytest.raises(InvalidInput):
        recommendations.recommend(reader, champions, "abc", None)


# ------------------------------------------------------------------- no champion at all


def test_every_table_filled_from_baselines_without_any_champion(conn, embeddings_table):
    """A world where no text model has passed its gates: all three tables have rows for
    every channel, each saying it was served by a baseline and why."""
    none = {"content": None, "viral": None, "schedule": None}
    channels = set(
        conn.execute("SELECT DISTINCT channel_id FROM features.post_features").fetchdf()["channel_id"]
    )
    for module, reason in (
        (viral, "no champion for viral"),
        (patterns, "no champion for content"),
        (recommendations, "no champion for content"),
    ):
        result = module.score(conn, none, SCORED_AT)
        frame = result.frame
        assert list(frame.columns) == module.COLUMNS + list(LINEAGE_COLUMNS)
        _assert_baseline_rows(frame, reason)
        assert frame["model_version"].notna().all()
        if module is not recommendations:  # a channel may have no pattern with lift > 0
            assert set(frame["channel_id"]) == channels
        write_forecast(conn, f"_baseline_{module.TABLE}", frame)  # DuckDB takes the types
        conn.execute(f"DROP TABLE forecasts._baseline_{module.TABLE}")


def test_detect_without_champions(conn):
    post = {
        "text": "BREAKING: huge news!!!",
        "media_type": "photo",
        "channel_id": CHANNEL,
        "published_at": "2026-10-30T12:00:00Z",
    }
    out = viral.detect(conn, None, None, post)
    assert out["source"] == "baseline" and "no champion for viral" in out["fallback_reason"]
    baselines = viral.scoring_baselines(conn)
    frame = viral.hypothetical_context(conn, CHANNEL, datetime(2026, 10, 30, 12), "photo", post["text"])
    frame["text"] = post["text"]
    assert out["viral_probability"] == pytest.approx(
        float(baselines.viral.scores(text_data.baseline_frame(frame))[0])
    )
    assert out["content_score"] == pytest.approx(float(baselines.content_scores([post["text"]])[0]))
    assert out["models"]["baselines"]["viral"]["baseline"] == baselines.viral.name
    network = viral.detect(conn, None, None, {"text": "quiet day", "media_type": "none"})
    assert network["context"] == "network" and 0 <= network["viral_probability"] <= 1
    json.dumps(out)


def test_scoring_baselines_fall_back_to_rates_below_the_minimum(conn):
    """Below the text models' smallest history no baseline is fitted; the channel's
    observed viral rate serves and the reason names the minimum."""
    few = duckdb.connect()
    few.execute("CREATE SCHEMA features")
    frame = conn.execute("SELECT * FROM features.post_features ORDER BY published_at LIMIT 80").fetchdf()
    few.register("f", frame)
    few.execute("CREATE TABLE features.post_features AS SELECT * FROM f")
    baselines = viral.scoring_baselines(few)
    assert baselines.viral is None and "at least 100 labelled posts" in baselines.reason
    rates = (
        frame[frame["is_viral"].notna() & frame["forwards_48h"].notna()]
        .groupby("channel_id")["is_viral"]
        .mean()
    )
    got = baselines.viral_scores(pd.DataFrame({"text": ["x"] * len(rates)}), rates.index.to_numpy())
    np.testing.assert_allclose(got, rates.to_numpy(float))
    assert "observed viral rate" in baselines.describe("viral")


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


def test_scoring_baselines_persist_across_processes(conn, monkeypatch, tmp_path):
    """Tuned once per labelled history: a second call (another process: empty in-process
    cache) reads the file; a different history tunes again."""
    monkeypatch.setenv("PULSE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(viral, "_baseline_cache", {})
    tuned = []
    real = viral._tune_scoring_baselines

    def counting(posts, seed):
        tuned.append(len(posts))
        return real(posts, seed)

    monkeypatch.setattr(viral, "_tune_scoring_baselines", counting)
    first = viral.scoring_baselines(conn)
    assert len(tuned) == 1 and len(list((tmp_path / "cache" / "scoring_baselines").glob("*.joblib"))) == 1
    viral._baseline_cache.clear()  # as in a fresh process
    second = viral.scoring_baselines(conn)
    assert len(tuned) == 1
    assert second.viral.label == first.viral.label and second.selection == first.selection
    texts = ["big news today", "quiet day"]
    np.testing.assert_array_equal(second.content_scores(texts), first.content_scores(texts))
    # a shorter history (the latest 30 labelled posts not there yet) is another key
    shorter = duckdb.connect()
    shorter.execute("CREATE SCHEMA features")
    frame = conn.execute("SELECT * FROM features.post_features ORDER BY published_at").fetchdf()
    labelled = frame[frame["is_viral"].notna() & frame["forwards_48h"].notna()]
    shorter.register("f", frame.drop(labelled.index[-30:]))
    shorter.execute("CREATE TABLE features.post_features AS SELECT * FROM f")
    viral.scoring_baselines(shorter)
    assert len(tuned) == 2 and tuned[1] < tuned[0]
