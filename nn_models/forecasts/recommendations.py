"""``content_recommendations``: what each channel should post more of, and when.

Built from the channel's own measured patterns (``patterns.analyse``: topic clusters
of its posts and the phrases the ContentAnalyzer CNN reads), checked against the
models and timed with the schedule model:

* observed lift — the pattern's mean within-channel 48 h view percentile minus the
  channel's mean, on ``n_posts`` posts;
* ``expected_lift`` — that lift shrunk towards 0 by empirical Bayes: for a pattern
  with n of the channel's N posts the sampling variance of the lift is
  σ²_c·(1/n − 1/N) (σ²_c: variance of the channel's view percentiles), the spread of
  true lifts τ² is estimated across all (channel, pattern) cells of the same kind by
  the method of moments (mean lift² − mean sampling variance), and the lift is
  multiplied by τ² / (τ² + sampling variance). Only patterns whose expected lift is
  above 0 are recommended, best first (at most ``MAX_RECOMMENDATIONS`` per channel);
* the content model's mean probability for the pattern's posts vs the channel's
  posts, and the viral model's (text + channel context), cited in the rationale;
* the channel's best (weekday, hour) slot: rank 1 of
  ``forecasts.posting_schedule_recommendations``, served there by the schedule
  champion or its strongest baseline (the rationale names which), with its expected
  engagement (relative log 48 h reach vs the channel's typical post).

A channel none of whose patterns beats sampling noise still gets one row: keep the
current mix (expected lift 0, the shrunk estimate), and its best slot.

Without a content champion the patterns come from the text baseline
(``patterns.analyse``: ``tfidf_term`` rows and topic clusters, content scores from the
tuned TF-IDF LR) and rows are stamped ``source = baseline`` with the reason; without
a viral champion the viral check uses the strongest viral baseline
(``viral.scoring_baselines``).
The rationale always names which model or baseline made each check.

``recommend`` serves one channel and can add a short draft per recommendation from
a local ``transformers`` causal LM (``PULSE_TEXT_GENERATOR``); nothing is ever
downloaded.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import torch

from nn_models import text_data
from nn_models.champions import LoadedModel
from nn_models.forecasts import patterns as pattern_analysis
from nn_models.forecasts import viral as text_models
from nn_models.forecasts.base import Champions, ForecastResult, missing_champion, stamp

TABLE = "content_recommendations"
MODEL_NAME = "channel_pulse_content_recommendations"
COLUMNS = [
    "channel_id",
    "rank",
    "recommendation",
    "rationale",
    "expected_lift",
    # extras
    "kind",
    "pattern",
    "n_posts",
    "observed_lift",
    "shrinkage",
    "mean_view_percentile",
    "channel_mean_view_percentile",
    "content_score",
    "channel_content_score",
    "viral_probability",
    "channel_viral_probability",
    "best_weekday",
    "best_hour",
    "slot_expected_engagement",
]
DTYPES = {
    "channel_id": "int64",
    "rank": "int64",
    "recommendation": "object",
    "rationale": "object",
    "expected_lift": "float64",
    "kind": "object",
    "pattern": "object",
    "n_posts": "int64",
    "observed_lift": "float64",
    "shrinkage": "float64",
    "mean_view_percentile": "float64",
    "channel_mean_view_percentile": "float64",
    "content_score": "float64",
    "channel_content_score": "float64",
    "viral_probability": "float64",
    "channel_viral_probability": "float64",
    "best_weekday": "float64",
    "best_hour": "float64",
    "slot_expected_engagement": "float64",
}
MAX_RECOMMENDATIONS = 5
MAX_PHRASE_RECOMMENDATIONS = 2  # hooks complement topics; they do not crowd them out
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DRAFT_TOKENS = 40
DRAFT_SEED = 0


# -------------------------------------------------------------------- model checks


def _viral_scores(
    conn: duckdb.DuckDBPyConnection, viral: LoadedModel | None, analysis: pattern_analysis.Analysis
) -> np.ndarray:
    """Viral probability of every analysed post (text + its pre-publication context), from
    the viral champion or, without one, the strongest viral baseline."""
    posts = analysis.posts
    ctx = text_models.stored_post_context(conn, posts[["channel_id", "post_id"]])
    ctx = posts[["channel_id", "post_id"]].merge(ctx, on=["channel_id", "post_id"], how="left")
    if viral is None:
        baselines = text_models.scoring_baselines(conn)
        ctx["text"] = posts["text"].to_numpy()
        return baselines.viral_scores(text_data.baseline_frame(ctx), posts["channel_id"].to_numpy())
    tokens, mask = analysis.tokens, analysis.mask
    if tokens is None:
        encoded = text_models.encode(posts["text"].tolist(), cached=True)
        tokens, mask = encoded.tokens, encoded.mask
    return text_models.viral_probabilities(viral, tokens, mask, text_data.context_features(ctx))


@dataclass(frozen=True)
class Slot:
    """A channel's top-ranked posting slot and who ranked it."""

    weekday: int
    hour: int
    expected_engagement: float
    served_by: str  # "ScheduleOptimizer v3" or "the schedule baseline (...)"


SLOT_SQL = """
SELECT channel_id, weekday, hour, expected_engagement, source, model_name, model_version
FROM forecasts.posting_schedule_recommendations WHERE rank = 1
"""


def table_slots(conn: duckdb.DuckDBPyConnection) -> dict[int, Slot] | None:
    """Rank-1 slots from ``forecasts.posting_schedule_recommendations`` (champion or
    baseline rows, whichever served each channel); None when the table is not built."""
    try:
        rows = conn.execute(SLOT_SQL).fetchall()
    except duckdb.CatalogException:
        return None
    out = {}
    for channel, weekday, hour, expected, source, name, version in rows:
        who = f"ScheduleOptimizer v{version}" if source == "model" else f"the schedule baseline ({name})"
        out[int(channel)] = Slot(
            int(weekday), int(hour), float("nan") if expected is None else float(expected), who
        )
    return out


def best_slots(schedule: LoadedModel) -> dict[int, tuple[int, int, float]]:
    """channel_id -> (weekday, hour, expected engagement) of the schedule model's top slot."""
    from nn_models.tasks.schedule import ScheduleTask

    out = {}
    for channel_id, grid in ScheduleTask.predicted_grids(schedule.module).items():
        slot = int(np.argmax(grid))
        out[int(channel_id)] = (slot // 24, slot % 24, float(grid[slot]))
    return out


def _members(
    analysis: pattern_analysis.Analysis, channel_rows: np.ndarray, kind: str, detail: dict
) -> np.ndarray:
    """Rows (into analysis.posts) of a channel's posts that carry the pattern."""
    if kind == "topic_cluster":
        clusters = analysis.posts["cluster"].to_numpy()[channel_rows]
        return channel_rows[clusters == detail["cluster"]]
    if kind == "tfidf_term":
        channel = int(analysis.posts["channel_id"].iloc[channel_rows[0]])
        return channel_rows[analysis.term_rows[(channel, detail["term"])]]
    j = int(np.flatnonzero(analysis.filters["filter"].to_numpy() == detail["filter"])[0])
    strong = pattern_analysis.strong_mask(analysis.activations[channel_rows], analysis.filters)
    return channel_rows[strong[:, j]]


def _shrinkage(cells: pd.DataFrame) -> tuple[np.ndarray, float]:
    """Empirical-Bayes factor τ² / (τ² + v) per cell, and τ² (per kind, see module doc)."""
    v = cells["sampling_variance"].to_numpy(float)
    d = cells["observed_lift"].to_numpy(float)
    tau2 = max(0.0, float(np.mean(d**2) - np.mean(v))) if len(d) else 0.0
    factor = np.where(tau2 + v > 0, tau2 / np.maximum(tau2 + v, 1e-12), 0.0)
    return factor, tau2


def _keep_phrases(frame: pd.DataFrame) -> np.ndarray:
    """Per channel (rows best first): at most ``MAX_PHRASE_RECOMMENDATIONS`` hooks, and
    none that contains, or is contained in, a better one ("you in?" / "are you in?")."""
    keep = np.ones(len(frame), dtype=bool)
    kept: dict[int, list[str]] = {}
    for i, (channel, kind, pattern) in enumerate(
        zip(frame["channel_id"], frame["kind"], frame["pattern"], strict=True)
    ):
        if kind not in pattern_analysis.PHRASE_KINDS:
            continue
        better = kept.setdefault(int(channel), [])
        if len(better) >= MAX_PHRASE_RECOMMENDATIONS or any(pattern in b or b in pattern for b in better):
            keep[i] = False
        else:
            better.append(pattern)
    return keep


# ------------------------------------------------------------------------- wording


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _slot_text(weekday: int, hour: int) -> str:
    return f"{WEEKDAYS[weekday]}s at {hour:02d}:00 UTC"


def _wording(
    row: dict,
    analysis: pattern_analysis.Analysis,
    viral: LoadedModel | None,
    schedule: LoadedModel | None,
    slot_note: str | None,
) -> tuple[str, str]:
    if row["kind"] == "topic_cluster":
        what = f"Post more about {row['pattern']}"
        subject = f"{row['n_posts']} of the channel's posts on this topic"
    elif row["kind"] == "tfidf_term":
        what = f"Use words like \u201c{row['pattern']}\u201d"
        subject = f"{row['n_posts']} of the channel's posts containing this term"
    else:
        what = f"Use hooks like \u201c{row['pattern']}\u201d"
        subject = f"{row['n_posts']} of the channel's posts where the CNN reads this phrase"
    slot = ""
    if not math.isnan(row["best_weekday"]):
        slot = f" on {_slot_text(int(row['best_weekday']), int(row['best_hour']))}"
    parts = [
        f"{subject} reached a mean 48 h view percentile of {row['mean_view_percentile']:.2f} vs "
        f"{row['channel_mean_view_percentile']:.2f} for the channel (viral rate "
        f"{_pct(row['viral_rate'])} vs {_pct(row['channel_viral_rate'])}).",
    ]
    if not math.isnan(row["content_score"]):
        who = (
            analysis.content_label
            if analysis.baselines is None
            else f"No content champion; {analysis.content_label}"
        )
        parts.append(
            f"{who} gives them a mean viral probability of {row['content_score']:.3f} vs "
            f"{row['channel_content_score']:.3f} for the channel's posts."
        )
    if viral is not None:
        parts.append(
            f"ViralDetector v{viral.version} (text + channel context): "
            f"{row['viral_probability']:.3f} vs {row['channel_viral_probability']:.3f}."
        )
    elif not math.isnan(row["viral_probability"]):
        parts.append(
            f"No viral champion; {row['viral_source']}: "
            f"{row['viral_probability']:.3f} vs {row['channel_viral_probability']:.3f}."
        )
    else:
        parts.append("No viral champion and no viral baseline: the viral check was skipped.")
    if slot:
        rho = schedule.metrics.get("spearman") if schedule is not None else None
        when = _slot_text(int(row["best_weekday"]), int(row["best_hour"]))
        by_model = row["slot_served_by"].startswith("ScheduleOptimizer")
        expected = (
            ""
            if math.isnan(row["slot_expected_engagement"])
            else f": expected 48 h reach {math.expm1(row['slot_expected_engagement']):+.0%} "
            "vs the channel's typical post"
        )
        parts.append(
            f"{row['slot_served_by'][0].upper()}{row['slot_served_by'][1:]} ranks {when} "
            f"first{expected}"
            + (
                f" (holdout rank correlation with observed percentiles ρ = {rho:.2f})."
                if by_model and rho is not None
                else "."
            )
        )
    elif slot_note:
        parts.append(slot_note)
    parts.append(
        f"Expected lift = observed {row['observed_lift']:+.3f} x shrinkage {row['shrinkage']:.2f} "
        f"(empirical Bayes over {row['cells']} {row['kind']} cells: spread of true lifts "
        f"{row['tau2']:.4f} vs this pattern's sampling variance {row['sampling_variance']:.4f})."
    )
    return what + slot, " ".join(parts)


# ------------------------------------------------------------------------ building


def build(
    conn: duckdb.DuckDBPyConnection, champions: Champions, analysis: pattern_analysis.Analysis
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Ranked recommendations for every channel in ``analysis`` (COLUMNS order)."""
    viral, schedule = (champions.get(n) for n in ("viral", "schedule"))
    notes: dict[str, str] = {}
    posts = analysis.posts
    viral_prob = _viral_scores(conn, viral, analysis)
    viral_source = ""
    if viral is None:
        viral_source = f"the {text_models.scoring_baselines(conn).describe('viral')}"
        notes["viral"] = f"no viral champion: the viral check uses {viral_source}"
    slots = table_slots(conn)
    if slots is None:  # not scored yet (a request before the first run): the champion
        slots = (
            {
                c: Slot(w, h, e, f"ScheduleOptimizer v{schedule.version}")
                for c, (w, h, e) in best_slots(schedule).items()
            }
            if schedule
            else {}
        )
        notes["schedule"] = (
            "slots from the schedule champion"
            if schedule
            else "no schedule champion and no schedule forecast: no slot suggested"
        )
    else:
        notes["schedule"] = (
            "slots from forecasts.posting_schedule_recommendations (rank 1, "
            "served by the schedule champion or its baseline)"
        )
    channel_rows = posts.groupby("channel_id").indices
    pct = posts["view_percentile_48h"].to_numpy(float)
    viral_rate = posts["is_viral"].to_numpy(float)
    content_score = posts["content_score"].to_numpy(float)
    cells = []
    for row in analysis.patterns.to_dict("records"):
        rows = channel_rows[row["channel_id"]]
        members = _members(analysis, rows, row["kind"], row["detail"])
        n, total = len(members), len(rows)
        cells.append(
            {
                **{k: row[k] for k in ("channel_id", "kind", "pattern", "n_posts")},
                "observed_lift": float(pct[members].mean() - pct[rows].mean()),
                "sampling_variance": float(pct[rows].var() * (1 / n - 1 / total)),
                "mean_view_percentile": float(pct[members].mean()),
                "channel_mean_view_percentile": float(pct[rows].mean()),
                "viral_rate": float(viral_rate[members].mean()),
                "channel_viral_rate": float(viral_rate[rows].mean()),
                "content_score": float(content_score[members].mean()),
                "channel_content_score": float(content_score[rows].mean()),
                "viral_probability": (
                    float(viral_prob[members].mean()) if viral_prob is not None else np.nan
                ),
                "channel_viral_probability": (
                    float(viral_prob[rows].mean()) if viral_prob is not None else np.nan
                ),
            }
        )
    frame = pd.DataFrame(cells)
    every_channel = sorted(int(c) for c in posts["channel_id"].unique())
    if frame.empty:
        return _no_lift_rows(every_channel, frame, slots, analysis), notes
    frame["viral_source"] = viral_source
    frame["shrinkage"], frame["tau2"], frame["cells"] = 0.0, 0.0, 0
    for kind, idx in frame.groupby("kind").indices.items():
        factor, tau2 = _shrinkage(frame.iloc[idx])
        frame.loc[frame.index[idx], "shrinkage"] = factor
        frame.loc[frame.index[idx], "tau2"] = tau2
        frame.loc[frame.index[idx], "cells"] = len(idx)
        notes[f"shrinkage_{kind}"] = f"{len(idx)} cells, spread of true lifts tau^2 = {tau2:.5f}" + (
            " (no lift beyond sampling noise: none recommended)" if tau2 == 0 else ""
        )
    frame["expected_lift"] = frame["observed_lift"] * frame["shrinkage"]
    cells_frame = frame
    frame = frame[frame["expected_lift"] > 0].sort_values(
        ["channel_id", "expected_lift"], ascending=[True, False]
    )
    frame = frame[_keep_phrases(frame)]
    frame = frame.groupby("channel_id").head(MAX_RECOMMENDATIONS).copy()
    frame["rank"] = frame.groupby("channel_id").cumcount() + 1
    _attach_slots(frame, slots)
    texts = []
    for row in frame.to_dict("records"):
        slot_note = (
            None if not math.isnan(row["best_weekday"]) else "No posting slot ranked for this channel."
        )
        texts.append(_wording(row, analysis, viral, schedule, slot_note))
    frame["recommendation"] = [t[0] for t in texts]
    frame["rationale"] = [t[1] for t in texts]
    with_lift = set(frame["channel_id"].astype(int))
    notes["channels"] = (
        f"{len(with_lift)} of {len(every_channel)} channels have a pattern "
        "with expected lift > 0; the others are told that none beats noise"
    )
    rest = _no_lift_rows([c for c in every_channel if c not in with_lift], cells_frame, slots, analysis)
    out = pd.concat([frame[COLUMNS].astype(DTYPES), rest], ignore_index=True)
    return out.sort_values(["channel_id", "rank"], ignore_index=True), notes


def _attach_slots(frame: pd.DataFrame, slots: dict[int, Slot]) -> None:
    best = [slots.get(int(c)) for c in frame["channel_id"]]
    frame["best_weekday"] = [b.weekday if b else np.nan for b in best]
    frame["best_hour"] = [b.hour if b else np.nan for b in best]
    frame["slot_expected_engagement"] = [b.expected_engagement if b else np.nan for b in best]
    frame["slot_served_by"] = [b.served_by if b else "" for b in best]


def _no_lift_rows(
    channels: list[int], cells: pd.DataFrame, slots: dict[int, Slot], analysis: pattern_analysis.Analysis
) -> pd.DataFrame:
    """One row for a channel none of whose patterns beats sampling noise: say so (expected
    lift 0, the shrunk estimate), and still give its best posting slot."""
    if not channels:
        return empty_rows()
    n_posts = analysis.posts.groupby("channel_id").size()
    rows = []
    for channel in channels:
        mine = cells[cells["channel_id"] == channel] if not cells.empty else cells
        best = mine["observed_lift"].max() if not mine.empty else float("nan")
        rows.append(
            {
                "channel_id": channel,
                "rank": 1,
                "expected_lift": 0.0,
                "kind": "none",
                "pattern": "",
                "n_posts": int(n_posts.get(channel, 0)),
                "observed_lift": best,
                "shrinkage": 0.0,
            }
        )
    frame = pd.DataFrame(rows)
    _attach_slots(frame, slots)
    recs, rationales = [], []
    for row in frame.to_dict("records"):
        checked = int((cells["channel_id"] == row["channel_id"]).sum()) if not cells.empty else 0
        what = "Keep the current content mix"
        why = (
            f"None of the {checked} content patterns measured on the channel's "
            f"{row['n_posts']} posts with known 48 h outcome lifts views beyond sampling "
            "noise once shrunk by empirical Bayes (expected lift 0"
            + (f"; best observed {row['observed_lift']:+.3f})." if checked else ").")
        )
        if not math.isnan(row["best_weekday"]):
            when = _slot_text(int(row["best_weekday"]), int(row["best_hour"]))
            what += f"; post on {when}"
            why += f" {row['slot_served_by'][0].upper()}{row['slot_served_by'][1:]} ranks it first."
        recs.append(what)
        rationales.append(why)
    frame["recommendation"], frame["rationale"] = recs, rationales
    for column in COLUMNS:
        if column not in frame:
            frame[column] = np.nan
    return frame[COLUMNS].astype(DTYPES)


def empty_rows() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DTYPES.items()})[COLUMNS]


def _versions(champions: Champions) -> str:
    """Lineage of a row: what made each check, e.g. content:v2,schedule:v1,viral:baseline
    (content and viral fall back to their baselines; no schedule champion, no slot)."""
    used = {
        n: f"v{champions[n].version}" if champions.get(n) is not None else "baseline"
        for n in ("content", "viral")
    }
    if champions.get("schedule") is not None:
        used["schedule"] = f"v{champions['schedule'].version}"
    return ",".join(f"{n}:{v}" for n, v in sorted(used.items()))


def baseline_reason(champions: Champions) -> str | None:
    """Why rows are served from the text baseline (None with a content champion)."""
    reason = missing_champion(TABLE, ("content",), champions)
    return reason and (
        f"{reason}; recommended from the TF-IDF baseline's patterns "
        "(term weights, topic clusters) and its content scores"
    )


def _stamped(
    frame: pd.DataFrame, champions: Champions, scored_at: datetime, why: str | None = None
) -> pd.DataFrame:
    reason = baseline_reason(champions)
    out = stamp(
        frame,
        champions.get("content"),
        scored_at,
        model_name=MODEL_NAME,
        fallback_reason=reason and (f"{reason}; {why}" if why else reason),
    )
    out["model_version"] = pd.Series(_versions(champions), index=out.index, dtype="string")
    return text_models.text_columns_typed(out)


def score(conn: duckdb.DuckDBPyConnection, champions: Champions, scored_at: datetime) -> ForecastResult:
    """Recommendations for every channel (from the text baseline without a content champion)."""
    content = champions.get("content")
    models = {
        n: m.version for n, m in champions.items() if m is not None and n in ("content", "viral", "schedule")
    }
    try:
        analysis = pattern_analysis.analyse(conn, content)
    except duckdb.CatalogException as exc:
        why = f"features.post_features is not built yet ({exc})"
        return ForecastResult(
            _stamped(empty_rows(), champions, scored_at, why), models=models, notes={"skipped": why}
        )
    except pattern_analysis.NotEnoughPosts as exc:
        return ForecastResult(
            _stamped(empty_rows(), champions, scored_at, str(exc)), models=models, notes={"skipped": str(exc)}
        )
    frame, notes = build(conn, champions, analysis)
    reason = baseline_reason(champions)
    if reason:
        notes["source"] = reason
    return ForecastResult(
        _stamped(frame, champions, scored_at), notes={**analysis.notes, **notes}, models=models
    )


# ------------------------------------------------------------------ text generation

_generator_lock = threading.Lock()
_generators: dict[str, tuple[Any, Any]] = {}


def _generator(path: str):
    """(tokenizer, causal LM) from a local directory; cached per path; never downloads."""
    with _generator_lock:
        if path not in _generators:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if not Path(path).is_dir():
                raise FileNotFoundError(f"{path} is not a directory")
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
            _generators[path] = (tok, model)
        return _generators[path]


def _prompt(rec: dict) -> str:
    if rec["kind"] == "topic_cluster":
        return f"Telegram channel post about {rec['pattern']}:"
    return f'Telegram channel post using the phrase "{rec["pattern"]}":'


def draft_posts(
    path: str, recs: list[dict], seed: int = DRAFT_SEED, max_new_tokens: int = DRAFT_TOKENS
) -> tuple[list[str | None], dict[str, Any]]:
    """A short seeded draft per recommendation (None each, and the reason, if unavailable)."""
    status: dict[str, Any] = {"path": path, "max_new_tokens": max_new_tokens, "seed": seed}
    try:
        tok, model = _generator(path)
    except Exception as exc:  # a misconfigured generator must not break recommendations
        return [None] * len(recs), {**status, "status": f"unavailable: {exc}"}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    drafts: list[str | None] = []
    with _generator_lock, torch.inference_mode():
        for i, rec in enumerate(recs):
            batch = tok(_prompt(rec), return_tensors="pt")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + i)
                out = model.generate(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    do_sample=True,
                    top_p=0.95,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad if pad is not None else 0,
                )
            new = out[0, batch["input_ids"].shape[1] :]
            drafts.append(tok.decode(new, skip_special_tokens=True).strip())
    return drafts, {**status, "status": "used", "model": type(model).__name__}


# ---------------------------------------------------------------------- per request


def _stored(conn: duckdb.DuckDBPyConnection, channel_id: int) -> pd.DataFrame | None:
    try:
        return conn.execute(
            f"SELECT {', '.join(COLUMNS)}, model_version, scored_at FROM forecasts.{TABLE} "
            "WHERE channel_id = ? ORDER BY rank",
            [channel_id],
        ).fetchdf()
    except duckdb.CatalogException:
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return value


def recommend(
    conn: duckdb.DuckDBPyConnection, champions: Champions, channel_id: int, text_generator_path: str | None
) -> dict:
    """One channel's ranked recommendations (published table, else computed now) + drafts.

    ``champions`` may hold None for any model: without a content champion the text
    baseline's patterns serve (``source = "baseline"``, ``fallback_reason``); the
    provenance of the rows is in ``served_from``.
    """
    channel_id = text_models.parse_channel_id(channel_id)
    content = champions.get("content")
    notes: list[str] = []
    stored = _stored(conn, channel_id)
    if stored is not None:
        frame = stored
        served_from = {
            "table": f"forecasts.{TABLE}",
            "scored_at": None if frame.empty else _jsonable(frame["scored_at"].max()),
            "model_version": (None if frame.empty else str(frame["model_version"].iloc[0])),
        }
        if frame.empty:
            notes.append(
                "no pattern of this channel has an expected lift above 0 (or the channel was not scored yet)"
            )
        elif served_from["model_version"] != _versions(champions):
            notes.append(
                f"scored with {served_from['model_version']}; the champions are now "
                f"{_versions(champions)} (the table is re-scored when a champion changes)"
            )
    else:
        try:
            analysis = pattern_analysis.analyse(conn, content, channel_id)
            frame, built_notes = build(conn, champions, analysis)
            notes.extend(built_notes.values())
        except pattern_analysis.NotEnoughPosts as exc:
            frame = empty_rows()
            notes.append(f"no recommendations: {exc}")
        except duckdb.CatalogException as exc:
            raise text_models.tables_missing(exc) from exc
        notes.append(f"forecasts.{TABLE} is not published: computed now from this channel's posts alone")
        served_from = {"table": None, "computed": "on request"}
    recs = [{k: _jsonable(v) for k, v in r.items() if k in COLUMNS} for r in frame.to_dict("records")]
    if text_generator_path:
        drafts, generator = draft_posts(text_generator_path, recs)
        for rec, draft in zip(recs, drafts, strict=True):
            rec["draft"] = draft
    else:
        generator = {
            "status": "not configured (set PULSE_TEXT_GENERATOR to a local transformers causal-LM directory)"
        }
    return {
        "channel_id": channel_id,
        "recommendations": recs,
        "expected_lift_definition": "expected gain in the post's within-channel 48 h view "
        "percentile (0-1 scale), shrunk by sample size",
        "source": "model" if content is not None else "baseline",
        "fallback_reason": baseline_reason(champions),
        "served_from": served_from,
        "models": {n: text_models.model_info(champions.get(n)) for n in ("content", "viral", "schedule")},
        "text_generator": generator,
        "notes": notes,
    }
