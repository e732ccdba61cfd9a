"""``user_segments``: every user assigned to the nearest behaviour-segment centroid, with a name.

Scoring: the champion ``BehaviorClusterer`` takes the raw behaviour shares of
``features.user_behavior_features`` (built by the task's own ``behavior_inputs``, in
the column order the model was trained with) and returns the squared latent
distance to each centroid; the segment is the nearest one and ``distance`` is the
Euclidean distance to it in the latent space (units of the bottleneck noise).

Readable labels come from what the segment's members actually do — the mean of
their input shares (the same features the model was fed) — so a label describes
the users it is attached to, in this order:

* **active hours**: the members' mean hour profile, circularly smoothed (sd 1 h),
  marks hours at least ``PEAK_LIFT`` × the uniform share (1/24); contiguous runs of
  such hours (wrapping midnight) become windows ``"22–03 h"`` (end exclusive), named
  by the part of day of their busiest hour (night 22–04, morning 05–09, midday
  10–13, afternoon 14–17, evening 18–21). At most two windows, the second only when
  it holds at least half the first's activity; no elevated hour → "round-the-clock".
* **action**: ``reactors`` / ``commenters`` / ``sharers`` when one action has at
  least ``DOMINANT_ACTION`` of the members' interactions, else the two largest
  (``reactors/commenters``).
* **week**: weekend (Sat + Sun) share of activity ÷ 2/7: ≥ ``WEEKEND_HEAVY`` →
  "weekend-heavy", ≤ ``WEEKDAY_FOCUSED`` → "weekday-focused", else "all week".
* **activity** (only when distinctive): the members' median interaction count ÷
  all users' median ≥ ``ACTIVE_LIFT`` → "very active", ≤ 1 / ``ACTIVE_LIFT`` →
  "occasional".

Labels are unique per segment: a clash first adds the activity level, then the
segment number.

**Without a champion** (or when it cannot assign, e.g. no centroids) every user is
segmented by the strongest baseline, fitted at scoring time (``source='baseline'``,
``fallback_reason`` says why): ``BehaviorTask.load`` runs the task's protocol on
``raw.interactions`` — PCA + k-means with inputs and k chosen on the validation
period, or the global profile when that predicted the validation period better — and
the chosen rule is refitted on every user's whole-history features (users with at
least ``MIN_FIT_INTERACTIONS`` interactions; everyone is assigned). ``distance`` is
then the Euclidean distance to the segment's centre in PCA space. When interactions
are too sparse for that protocol, one global profile serves: every user in segment 0,
distance = Euclidean distance of his shares to the mean shares, and the reason
(the task's InsufficientData message) is in the note and ``fallback_reason``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from nn_models.baselines_behavior import fit_pca_kmeans
from nn_models.champions import LoadedModel
from nn_models.forecasts.base import Champions, ForecastResult, missing_champion, parse_channel_id, stamp
from nn_models.models.behavior import (
    ACTION_FEATURES,
    FEATURES,
    HOUR_FEATURES,
    WEEKDAY_FEATURES,
    behavior_inputs,
    hour_smoothing_kernel,
)
from nn_models.task import InsufficientData
from nn_models.tasks.behavior import (
    LATENT_DIM,
    MIN_FIT_INTERACTIONS,
    BehaviorTask,
    _table_exists,
    baseline_inputs,
)

TABLE = "user_segments"
COLUMNS = ["user_id", "segment_id", "segment_label", "distance", "segment_size", "n_interactions"]
BATCH = 65_536

PEAK_LIFT = 1.5  # an hour is "active" at >= 1.5 x the uniform share (1/24)
PROFILE_SMOOTHING = 1.0  # sd (hours) of the circular smoothing of the members' hour profile
DOMINANT_ACTION = 0.6  # one action named alone when it has >= 60 % of interactions
WEEKEND_HEAVY = 1.25  # weekend share / (2/7)
WEEKDAY_FOCUSED = 0.75
ACTIVE_LIFT = 1.5  # members' median interactions vs all users' median
ACTION_NAMES = {"share_reaction": "reactors", "share_reply": "commenters", "share_forward": "sharers"}
ACTION_KEYS = {"share_reaction": "reaction", "share_reply": "reply", "share_forward": "forward"}
_HOURS = [FEATURES.index(f) for f in HOUR_FEATURES]
_WEEKDAYS = [FEATURES.index(f) for f in WEEKDAY_FEATURES]
_ACTIONS = [FEATURES.index(f) for f in ACTION_FEATURES]
_KERNEL = hour_smoothing_kernel(PROFILE_SMOOTHING)


# ------------------------------------------------------------------ inputs and assignment
def _frame(conn: duckdb.DuckDBPyConnection, sql: str, params: list) -> pd.DataFrame | None:
    """The query's rows, or None when a table it needs is not built/published yet."""
    try:
        return conn.execute(sql, params).fetchdf()
    except duckdb.CatalogException:
        return None


def assign(model: LoadedModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(segment index, latent distance to its centroid) per row of user_behavior_features.

    Inputs come from the task's ``behavior_inputs`` in the model's own column order;
    the model runs in batches (ONNX Runtime or torch, whichever ``model.run`` uses).
    """
    names = list(getattr(model.module, "feature_names", FEATURES))
    x = behavior_inputs(frame, names)
    segments = np.empty(len(x), dtype=np.int64)
    distances = np.empty(len(x), dtype=np.float64)
    for lo in range(0, len(x), BATCH):
        squared = np.asarray(model.run(features=x[lo : lo + BATCH])[0], dtype=np.float64)
        if squared.ndim != 2 or squared.shape[1] == 0:
            raise ValueError("the behaviour model has no centroids: its latent space was never clustered")
        segments[lo : lo + BATCH] = squared.argmin(axis=1)
        best = squared[np.arange(len(squared)), segments[lo : lo + BATCH]]
        distances[lo : lo + BATCH] = np.sqrt(np.clip(best, 0.0, None))
    return segments, distances


# ------------------------------------------------------------------------ profiles
def profile(x: np.ndarray, n_interactions: np.ndarray | None = None) -> dict:
    """Mean hour / weekday / action shares and median activity of a group of users.

    ``x``: their ``behavior_inputs`` rows in ``FEATURES`` order (the model's input shares).
    """
    means = np.asarray(x, dtype=np.float64).mean(axis=0) if len(x) else np.zeros(len(FEATURES))
    hours = means[_HOURS]
    return {
        "hours": hours @ _KERNEL,
        "raw_hours": hours,
        "weekdays": means[_WEEKDAYS],
        "actions": {f: float(means[i]) for f, i in zip(ACTION_FEATURES, _ACTIONS, strict=True)},
        "median_interactions": float(np.median(n_interactions))
        if n_interactions is not None and len(n_interactions)
        else float("nan"),
        "users": int(len(x)),
    }


def part_of_day(hour: int) -> str:
    if hour >= 22 or hour <= 4:
        return "night"
    if hour <= 9:
        return "morning"
    if hour <= 13:
        return "midday"
    if hour <= 17:
        return "afternoon"
    return "evening"


def active_windows(hours: np.ndarray) -> list[dict]:
    """Contiguous runs (wrapping midnight) of hours with >= PEAK_LIFT x the uniform share.

    Each window: start, end (exclusive), peak hour, share of activity, part of day;
    busiest first, at most two (the second only with >= half the first's share).
    """
    hours = np.asarray(hours, dtype=float)
    total = hours.sum()
    if total <= 0:
        return []
    share = hours / total
    hot = share >= PEAK_LIFT / 24
    if not hot.any() or hot.all():
        return []
    start = int(np.flatnonzero(~hot)[0])  # walk the circle from a quiet hour
    runs, current = [], []
    for step in range(1, 25):
        h = (start + step) % 24
        if hot[h]:
            current.append(h)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    windows = []
    for run in runs:
        peak = max(run, key=lambda h: share[h])
        windows.append(
            {
                "start": run[0],
                "end": (run[-1] + 1) % 24,
                "peak": int(peak),
                "share": float(share[run].sum()),
                "part": part_of_day(int(peak)),
            }
        )
    windows.sort(key=lambda w: -w["share"])
    return [w for i, w in enumerate(windows[:2]) if i == 0 or w["share"] >= 0.5 * windows[0]["share"]]


def window_text(window: dict) -> str:
    return f"{window['part']} {window['start']:02d}–{window['end']:02d} h"


def traits(prof: dict, population_median_interactions: float) -> dict:
    """The readable traits of a profile (see the module docstring for the rules)."""
    windows = active_windows(prof["hours"])
    hours = " + ".join(window_text(w) for w in windows) or "round-the-clock"
    actions = sorted(prof["actions"].items(), key=lambda kv: -kv[1])
    total = sum(v for _, v in actions) or 1.0
    if actions[0][1] / total >= DOMINANT_ACTION:
        action = ACTION_NAMES[actions[0][0]]
    else:
        action = "/".join(ACTION_NAMES[a] for a, _ in actions[:2])
    weekdays = np.asarray(prof["weekdays"], dtype=float)
    weekend = float(weekdays[5:].sum() / weekdays.sum()) if weekdays.sum() > 0 else float("nan")
    ratio = weekend / (2 / 7)
    week = (
        "weekend-heavy"
        if ratio >= WEEKEND_HEAVY
        else "weekday-focused"
        if ratio <= WEEKDAY_FOCUSED
        else "all week"
    )
    activity = None
    lift = (
        prof["median_interactions"] / population_median_interactions
        if population_median_interactions and population_median_interactions > 0
        else float("nan")
    )
    if math.isfinite(lift):
        activity = (
            "very active" if lift >= ACTIVE_LIFT else ("occasional" if lift <= 1 / ACTIVE_LIFT else "regular")
        )
    return {
        "hours": hours,
        "windows": windows,
        "action": action,
        "week": week,
        "weekend_share": weekend,
        "activity": activity,
        "activity_lift": lift,
    }


def labels_for(segment_traits: dict[int, dict]) -> dict[int, str]:
    """Unique readable label per segment: hours · action · week [· activity]."""
    base = {s: f"{t['hours']} · {t['action']} · {t['week']}" for s, t in segment_traits.items()}
    for s, t in segment_traits.items():
        if t["activity"] in ("very active", "occasional"):
            base[s] += f" · {t['activity']}"
    labels = dict(base)
    clashes = [s for s in base if list(base.values()).count(base[s]) > 1]
    for s in clashes:
        activity = segment_traits[s]["activity"]
        if activity and activity not in labels[s]:
            labels[s] = f"{labels[s]} · {activity}"
    values = list(labels.values())
    for s in labels:
        if values.count(labels[s]) > 1:
            labels[s] = f"{labels[s]} (segment {s})"
    return labels


def segment_traits(frame: pd.DataFrame, segments: np.ndarray) -> dict[int, dict]:
    """segment -> traits of its members (frame = user_behavior_features rows)."""
    x = behavior_inputs(frame, FEATURES)
    activity = frame["n_interactions"].to_numpy(np.float64)
    population = float(np.median(activity)) if len(activity) else float("nan")
    return {
        int(s): traits(profile(x[segments == s], activity[segments == s]), population)
        for s in np.unique(segments)
    }


# ------------------------------------------------------------------------ baseline
@dataclass
class BaselineSegments:
    """Every user's segment and distance from the strongest baseline, and how it was chosen."""

    segments: np.ndarray
    distances: np.ndarray
    rule: str
    how: str


def fit_baseline(conn: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> BaselineSegments:
    """Segments of ``frame``'s users (user_behavior_features rows) by the strongest baseline."""
    x = behavior_inputs(frame, FEATURES)
    try:
        data = BehaviorTask().load(conn)
    except InsufficientData as exc:
        data, why = None, f"one global profile: PCA + k-means could not be validated ({exc})"
    if data is not None and data.info["strongest_baseline"] == "pca_kmeans":
        variant, k = data.info["baseline_pca_kmeans_variant"], data.info["baseline_pca_kmeans_k"]
        active = frame["n_interactions"].to_numpy() >= MIN_FIT_INTERACTIONS
        if active.sum() > k:
            inputs, weight = baseline_inputs(variant, x[active])
            fitted = fit_pca_kmeans(inputs, k, LATENT_DIM, weight)
            segments, distances = fitted.assign(baseline_inputs(variant, x)[0])
            how = (
                f"PCA + k-means ({variant} inputs, k={k} chosen on the validation period; "
                f"validation profile error {data.info['baseline_pca_kmeans_val_error']:.4f} vs "
                f"global profile {data.info['baseline_global_profile_val_error']:.4f}), "
                f"refitted on {int(active.sum())} users' whole history"
            )
            return BaselineSegments(segments.astype(np.int64), distances, "pca_kmeans", how)
        why = f"one global profile: {int(active.sum())} active users, too few for k={k}"
    elif data is not None:
        why = (
            f"one global profile: it predicted the validation period better than PCA + "
            f"k-means ({data.info['baseline_global_profile_val_error']:.4f} vs "
            f"{data.info['baseline_pca_kmeans_val_error']:.4f})"
        )
    distances = np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1)) if len(x) else np.zeros(0)
    return BaselineSegments(
        np.zeros(len(x), dtype=np.int64), distances.astype(np.float64), "global_profile", why
    )


# ------------------------------------------------------------------------- scoring
def _result(
    frame: pd.DataFrame,
    model: LoadedModel | None,
    scored_at: datetime,
    notes: dict[str, str],
    fallback_reason: str | None = None,
) -> ForecastResult:
    models = {model.registered_model: model.version} if model else {}
    return ForecastResult(
        stamp(
            frame[COLUMNS],
            model,
            scored_at,
            model_name=None if model else BehaviorTask.registered_model,
            fallback_reason=fallback_reason,
        ),
        notes=notes,
        models=models,
    )


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype="int64"),
            "segment_id": pd.Series(dtype="int64"),
            "segment_label": pd.Series(dtype="object"),
            "distance": pd.Series(dtype="float64"),
            "segment_size": pd.Series(dtype="int64"),
            "n_interactions": pd.Series(dtype="int64"),
        }
    )


def _rows(
    frame: pd.DataFrame, segments: np.ndarray, distances: np.ndarray
) -> tuple[pd.DataFrame, dict[int, str], np.ndarray]:
    labels = labels_for(segment_traits(frame, segments))
    sizes = np.bincount(segments)
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].to_numpy(np.int64),
            "segment_id": segments.astype(np.int64),
            "segment_label": [labels[int(s)] for s in segments],
            "distance": np.asarray(distances, dtype=np.float64),
            "segment_size": sizes[segments].astype(np.int64),
            "n_interactions": frame["n_interactions"].to_numpy(np.int64),
        }
    )
    return out, labels, sizes


def score(conn: duckdb.DuckDBPyConnection, champions: Champions, scored_at: datetime) -> ForecastResult:
    model = champions.get("behavior")
    frame = _frame(conn, "SELECT * FROM features.user_behavior_features ORDER BY user_id", [])
    if frame is None or frame.empty:
        why = "does not exist yet" if frame is None else "is empty (no interactions)"
        reason = f"{TABLE}: features.user_behavior_features {why}"
        return _result(_empty(), model, scored_at, {"skipped": reason}, reason)
    reason = missing_champion(TABLE, ("behavior",), champions)
    if model is not None:
        try:
            segments, distances = assign(model, frame)
        except ValueError as exc:
            reason = f"{TABLE}: champion v{model.version} cannot assign segments: {exc}"
    if reason:
        base = fit_baseline(conn, frame)
        out, labels, sizes = _rows(frame, base.segments, base.distances)
        notes = {
            "baseline": f"{base.rule}: {base.how}",
            "fallback": reason,
            "segments": "; ".join(f"{s}: {labels[s]} ({int(sizes[s])} users)" for s in labels),
        }
        return _result(out, None, scored_at, notes, reason)
    assert model is not None
    out, labels, sizes = _rows(frame, segments, distances)
    n_segments = getattr(model.module, "n_segments", len(labels))
    notes = {"segments": "; ".join(f"{s}: {labels[s]} ({int(sizes[s])} users)" for s in labels)}
    if len(labels) < n_segments:
        notes["empty_segments"] = (
            f"{n_segments - len(labels)} of the model's {n_segments} centroids have no users today"
        )
    return _result(out, model, scored_at, notes)


# ---------------------------------------------------------------------- per request
def _channel_id(channel_id) -> int:
    return parse_channel_id(channel_id)


def _published_labels(conn: duckdb.DuckDBPyConnection, model: LoadedModel) -> dict[int, dict]:
    """segment -> {label, size} from forecasts.user_segments scored by this very version."""
    if not _table_exists(conn, "forecasts", TABLE):  # a failed query would abort a transaction
        return {}
    rows = _frame(
        conn,
        """
        SELECT segment_id, any_value(segment_label) AS label, count(*) AS size
        FROM forecasts.user_segments WHERE model_name = ? AND model_version = ?
        GROUP BY segment_id""",
        [model.registered_model, str(model.version)],
    )
    if rows is None or rows.empty:
        return {}
    return {int(r.segment_id): {"label": r.label, "size": int(r.size)} for r in rows.itertuples()}


def _all_user_labels(conn: duckdb.DuckDBPyConnection, model: LoadedModel) -> dict[int, dict]:
    """The same labels ``score`` gives, computed over every user (no published table yet)."""
    frame = _frame(conn, "SELECT * FROM features.user_behavior_features", [])
    if frame is None or frame.empty:
        return {}
    segments, _ = assign(model, frame)
    labels = labels_for(segment_traits(frame, segments))
    sizes = np.bincount(segments)
    return {s: {"label": label, "size": int(sizes[s])} for s, label in labels.items()}


def _baseline_assignment(conn: duckdb.DuckDBPyConnection, users: pd.DataFrame):
    """(segments, distances, labels {segment: {label, size}}, label source) of ``users`` from
    the published baseline rows, or from the baseline fitted now when they are missing."""
    rows = (
        _frame(
            conn,
            """
        SELECT user_id, segment_id, segment_label, distance, segment_size
        FROM forecasts.user_segments WHERE source = 'baseline'""",
            [],
        )
        if _table_exists(conn, "forecasts", TABLE)
        else None
    )
    if rows is not None and set(users["user_id"]) <= set(rows["user_id"]):
        mine = users[["user_id"]].merge(rows, on="user_id", how="left")
        labels = {
            int(r.segment_id): {"label": r.segment_label, "size": int(r.segment_size)}
            for r in rows.drop_duplicates("segment_id").itertuples()
        }
        return (
            mine["segment_id"].to_numpy(np.int64),
            mine["distance"].to_numpy(np.float64),
            labels,
            "forecasts.user_segments (baseline rows)",
        )
    frame = _frame(conn, "SELECT * FROM features.user_behavior_features ORDER BY user_id", [])
    base = fit_baseline(conn, frame)
    _, names, sizes = _rows(frame, base.segments, base.distances)
    row = (
        pd.Series(np.arange(len(frame)), index=frame["user_id"].to_numpy())
        .reindex(users["user_id"].to_numpy())
        .to_numpy(np.int64)
    )
    labels = {s: {"label": label, "size": int(sizes[s])} for s, label in names.items()}
    return base.segments[row], base.distances[row], labels, f"baseline fitted now: {base.how}"


def _round(value: float, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def channel_segments(conn: duckdb.DuckDBPyConnection, model: LoadedModel | None, channel_id) -> dict:
    """The segment mix of the users who interacted with a channel (the API's answer).

    Per segment: its (network-wide) label and size, the channel's users in it, their
    share of the channel's users and of its interactions, their typical active hours
    and action mix (their own features), and their mean distance to the centre.
    ``model=None`` (no champion) answers from the strongest baseline: ``source`` says
    which served (``model`` / ``baseline``) and ``fallback_reason`` why.
    """
    channel_id = _channel_id(channel_id)
    users = _frame(
        conn,
        """
        WITH c AS (
            SELECT user_id, count(*) AS channel_interactions
            FROM raw.interactions WHERE channel_id = ? GROUP BY user_id
        )
        SELECT f.*, c.channel_interactions
        FROM features.user_behavior_features AS f JOIN c USING (user_id)
        ORDER BY f.user_id""",
        [channel_id],
    )
    reason = missing_champion(TABLE, ("behavior",), {"behavior": model})
    base = {
        "channel_id": channel_id,
        "model_name": model.registered_model if model else BehaviorTask.registered_model,
        "model_version": str(model.version) if model else "none",
        "source": "model" if model else "baseline",
        "fallback_reason": reason,
    }
    if users is None:
        return {
            **base,
            "users": 0,
            "segments": [],
            "note": "raw.interactions or features.user_behavior_features is not published yet",
        }
    if users.empty:
        return {**base, "users": 0, "segments": [], "note": "no user interactions recorded for this channel"}
    if model is not None:
        try:
            segments, distances = assign(model, users)
            known = _published_labels(conn, model)
            label_source = "forecasts.user_segments"
            if not set(np.unique(segments)) <= set(known):
                known, label_source = _all_user_labels(conn, model), "computed over all users"
        except ValueError as exc:
            model = None
            base.update(
                model_name=BehaviorTask.registered_model,
                model_version="none",
                source="baseline",
                fallback_reason=f"{TABLE}: the champion cannot assign segments: {exc}",
            )
    if model is None:
        segments, distances, known, label_source = _baseline_assignment(conn, users)
    weights = users["channel_interactions"].to_numpy(float)
    x = behavior_inputs(users, FEATURES)
    activity = users["n_interactions"].to_numpy(np.float64)
    out = []
    for s in np.unique(segments):
        mask = segments == s
        prof = profile(x[mask], activity[mask])
        windows = active_windows(prof["hours"])
        actions = prof["actions"]
        total = sum(actions.values()) or 1.0
        top_hours = np.argsort(-prof["raw_hours"], kind="stable")[:3]
        out.append(
            {
                "segment_id": int(s),
                "label": known.get(int(s), {}).get("label"),
                "segment_size": known.get(int(s), {}).get("size"),
                "users": int(mask.sum()),
                "share": _round(mask.mean()),
                "interaction_share": _round(weights[mask].sum() / weights.sum()),
                "active_hours": [f"{w['start']:02d}–{w['end']:02d}" for w in windows] or ["round-the-clock"],
                "peak_hours": [int(h) for h in top_hours],
                "weekend_share": _round(
                    float(prof["weekdays"][5:].sum() / max(prof["weekdays"].sum(), 1e-12))
                ),
                "action_mix": {ACTION_KEYS[a]: _round(v / total) for a, v in actions.items()},
                "median_interactions": _round(prof["median_interactions"], 1),
                "mean_distance": _round(float(distances[mask].mean())),
            }
        )
    out.sort(key=lambda r: (-r["users"], r["segment_id"]))
    return {**base, "users": int(len(users)), "label_source": label_source, "segments": out}
