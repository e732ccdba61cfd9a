"""Synthetic source: contract, determinism, internal consistency and ground truth (tiny size)."""

from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
import pandas as pd
import pytest

from warehouse.schema import ACTIONS, MEDIA_TYPES, RAW_TABLES, ensure_schema
from warehouse.synthetic import (
    SIZES,
    SNAPSHOT_AGES_MINUTES,
    SyntheticWorld,
    config_for,
    generate,
)

COUNTERS = ["views", "forwards", "replies", "reactions"]
POST_KEY = ["channel_id", "post_id"]
TRUTH_KEYS = {
    "truth.channels": ["channel_id"],
    "truth.slot_effects": ["channel_id", "weekday", "hour"],
    "truth.topics": ["topic"],
    "truth.posts": POST_KEY,
    "truth.users": ["user_id"],
}


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return generate(config_for("tiny"))


@pytest.fixture(scope="module")
def snaps(world: SyntheticWorld) -> pd.DataFrame:
    """Snapshots with publish time and age in minutes."""
    s = world.post_snapshots.merge(world.posts[[*POST_KEY, "published_at"]], on=POST_KEY)
    s["age_min"] = (s.observed_at - s.published_at).dt.total_seconds() / 60
    return s


def _at_age(snaps: pd.DataFrame, minutes: int) -> pd.DataFrame:
    return snaps[(snaps.age_min - minutes).abs() <= 5].set_index(POST_KEY)


def _final_counters(snaps: pd.DataFrame) -> pd.DataFrame:
    return snaps.sort_values("observed_at").groupby(POST_KEY)[COUNTERS].last()


def _schema_columns() -> dict[str, list[tuple[str, str]]]:
    """(column, DuckDB type) per qualified table, read from the DDL in warehouse/schema.py."""
    conn = duckdb.connect()
    ensure_schema(conn)
    rows = conn.execute(
        "SELECT table_schema || '.' || table_name, column_name, data_type "
        "FROM information_schema.columns WHERE table_schema IN ('raw', 'truth') "
        "ORDER BY table_schema, table_name, ordinal_position"
    ).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, typ in rows:
        out.setdefault(table, []).append((column, typ))
    return out


# ----------------------------------------------------------------- contract


def test_columns_and_dtypes_match_schema(world: SyntheticWorld) -> None:
    schema = _schema_columns()
    tables = world.tables()
    assert set(tables) == {t for t in schema if t != "raw.quarantine"}
    for name, frame in tables.items():
        assert list(frame.columns) == [c for c, _ in schema[name]], name
        for column, typ in schema[name]:
            dtype = frame[column].dtype
            if typ in ("BIGINT", "INTEGER"):
                assert dtype == np.int64, (name, column, dtype)
            elif typ == "TIMESTAMP":
                assert dtype == "datetime64[ns]", (name, column, dtype)
            elif typ == "DATE":
                assert pd.api.types.is_datetime64_dtype(dtype), (name, column, dtype)
            elif typ == "DOUBLE":
                assert dtype == np.float64, (name, column, dtype)
            elif typ == "BOOLEAN":
                assert dtype == np.bool_, (name, column, dtype)
            else:
                assert frame[column].map(type).eq(str).all(), (name, column)


def test_raw_columns_follow_raw_tables(world: SyntheticWorld) -> None:
    for table, (columns, _key) in RAW_TABLES.items():
        assert list(world.tables()[f"raw.{table}"].columns) == list(columns)


def test_frames_load_into_duckdb_tables(world: SyntheticWorld) -> None:
    """The DDL's primary keys and types accept every frame as is."""
    conn = duckdb.connect()
    ensure_schema(conn)
    for name, frame in world.tables().items():
        conn.register("frame", frame)
        conn.execute(f"INSERT INTO {name} SELECT * FROM frame").fetchall()
        conn.unregister("frame")
        assert conn.execute(f"SELECT count(*) FROM {name}").fetchall() == [(len(frame),)]


def test_keys_unique(world: SyntheticWorld) -> None:
    tables = world.tables()
    for table, (_columns, key) in RAW_TABLES.items():
        frame = tables[f"raw.{table}"]
        assert not frame.duplicated(list(key)).any(), table
    for name, key in TRUTH_KEYS.items():
        assert not tables[name].duplicated(key).any(), name


def test_categorical_values(world: SyntheticWorld) -> None:
    assert set(world.posts.media_type) <= set(MEDIA_TYPES)
    assert set(world.interactions.action) <= set(ACTIONS)
    assert set(world.interactions.action) == set(ACTIONS)


# -------------------------------------------------------------- determinism


def test_same_config_is_reproducible(world: SyntheticWorld) -> None:
    again = generate(config_for("tiny"))
    for name, frame in world.tables().items():
        pd.testing.assert_frame_equal(frame, again.tables()[name], obj=name)


def test_different_seed_differs(world: SyntheticWorld) -> None:
    other = generate(config_for("tiny", seed=7))
    assert not world.posts.equals(other.posts)
    assert not world.post_snapshots.equals(other.post_snapshots)
    assert not world.truth_users.equals(other.truth_users)


def test_sizes_and_config_for() -> None:
    assert set(SIZES) == {"tiny", "demo", "large"}
    assert config_for("demo", seed=3) == dataclasses.replace(SIZES["demo"], seed=3)
    large = SIZES["large"]
    expected_rows = large.n_channels * large.n_days * large.posts_per_day
    assert expected_rows * len(SNAPSHOT_AGES_MINUTES) * 0.95 >= 10_000_000
    with pytest.raises(ValueError):
        config_for("huge")


# ------------------------------------------------------------ time and order


def test_snapshots_within_publication_and_end(world: SyntheticWorld, snaps: pd.DataFrame) -> None:
    end = pd.Timestamp(config_for("tiny").end)
    assert (snaps.observed_at > snaps.published_at).all()
    assert (snaps.observed_at <= end).all()
    assert (world.posts.published_at < end).all()
    assert (world.channels.created_at < world.posts.published_at.min()).all()


def test_snapshots_near_nominal_ages(snaps: pd.DataFrame) -> None:
    nominal = np.asarray(SNAPSHOT_AGES_MINUTES)
    nearest = np.abs(snaps.age_min.to_numpy()[:, None] - nominal[None, :]).min(axis=1)
    assert nearest.max() <= 2.0


def test_newest_posts_have_short_histories(world: SyntheticWorld, snaps: pd.DataFrame) -> None:
    n_obs = snaps.groupby(POST_KEY).size()
    assert n_obs.max() == len(SNAPSHOT_AGES_MINUTES)
    assert n_obs.min() < len(SNAPSHOT_AGES_MINUTES) - 6  # posts of the last day or so


def test_post_ids_increase_with_publish_time(world: SyntheticWorld) -> None:
    for _, posts in world.posts.groupby("channel_id"):
        ordered = posts.sort_values("published_at")
        assert ordered.post_id.is_monotonic_increasing


def test_channel_daily_covers_every_day(world: SyntheticWorld) -> None:
    cfg = config_for("tiny")
    daily = world.channel_daily
    assert len(daily) == cfg.n_channels * cfg.n_days
    assert (daily.groupby("channel_id").day.nunique() == cfg.n_days).all()
    assert (daily.day == daily.day.dt.normalize()).all()
    assert (daily.subscribers > 0).all()


# ---------------------------------------------------------------- counters


def test_counters_non_negative_and_non_decreasing(snaps: pd.DataFrame) -> None:
    ordered = snaps.sort_values([*POST_KEY, "observed_at"])
    assert (ordered[COUNTERS] >= 0).all().all()
    steps = ordered.groupby(POST_KEY)[COUNTERS].diff().dropna()
    assert (steps >= 0).all().all()


def test_interactions_bounded_by_views(snaps: pd.DataFrame) -> None:
    for column in ("forwards", "replies", "reactions"):
        assert (snaps[column] <= snaps.views).all(), column


def test_views_saturate_within_48h(snaps: pd.DataFrame) -> None:
    v48 = _at_age(snaps, 2880).views
    v6 = _at_age(snaps, 360).views.reindex(v48.index)
    v7d = _at_age(snaps, 10080).views
    assert len(v48) > 50
    assert 0.4 <= (v6 / v48).median() <= 0.9
    growth = (v7d / v48.reindex(v7d.index)).median()
    assert 1.1 <= growth <= 1.5  # views keep growing slowly after 48 h


# ------------------------------------------------------------- interactions


def test_interactions_within_final_counters(world: SyntheticWorld, snaps: pd.DataFrame) -> None:
    final = _final_counters(snaps)
    counts = world.interactions.groupby([*POST_KEY, "action"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(ACTIONS), fill_value=0)
    caps = final.reindex(counts.index)
    assert caps.notna().all().all(), "interaction on a post that was never observed"
    assert (counts["reaction"] <= caps.reactions).all()
    assert (counts["reply"] <= caps.replies).all()
    assert (counts["forward"] <= caps.forwards).all()


def test_interactions_happen_after_publication(world: SyntheticWorld, snaps: pd.DataFrame) -> None:
    last = snaps.groupby(POST_KEY).observed_at.max().rename("last_observed_at")
    inter = world.interactions.merge(world.posts[[*POST_KEY, "published_at"]], on=POST_KEY)
    inter = inter.merge(last, left_on=POST_KEY, right_index=True)
    assert len(inter) == len(world.interactions)
    assert (inter.occurred_at > inter.published_at).all()
    assert (inter.occurred_at <= inter.last_observed_at).all()


def test_every_user_has_a_profile(world: SyntheticWorld) -> None:
    per_user = world.interactions.groupby("user_id").size()
    assert set(per_user.index) <= set(world.truth_users.user_id)
    assert per_user.median() >= 20


# -------------------------------------------------------------------- truth


def test_best_slot_is_argmax_of_slot_effects(world: SyntheticWorld) -> None:
    effects = world.truth_slot_effects
    assert (effects.groupby("channel_id").size() == 168).all()
    best = effects.loc[effects.groupby("channel_id").effect.idxmax()].set_index("channel_id")
    truth = world.truth_channels.set_index("channel_id")
    assert (best.weekday == truth.best_weekday).all()
    assert (best.hour == truth.best_hour).all()
    ratio = effects.groupby("channel_id").effect.agg(lambda e: e.max() / e.min())
    assert ratio.between(1.8, 3.5).all()


def test_every_post_has_truth_with_known_topic(world: SyntheticWorld) -> None:
    truth = world.truth_posts
    merged = world.posts[POST_KEY].merge(truth, on=POST_KEY, how="left")
    assert merged.topic.notna().all()
    assert len(truth) == len(world.posts)
    assert set(truth.topic) <= set(world.truth_topics.topic)
    assert world.truth_topics.virality.between(0.2, 3.5).all()


def test_interacting_users_have_personas(world: SyntheticWorld) -> None:
    personas = world.truth_users.set_index("user_id").persona
    users = world.interactions.user_id.unique()
    assert personas.reindex(users).notna().all()
    assert personas.nunique() >= 5


def test_ghost_channels_have_lower_reach(world: SyntheticWorld, snaps: pd.DataFrame) -> None:
    v48 = _at_age(snaps, 2880).reset_index()
    v48["day"] = v48.published_at.dt.normalize()
    v48 = v48.merge(world.channel_daily, on=["channel_id", "day"])
    reach = (v48.views / v48.subscribers).groupby(v48.channel_id).mean()
    ghost = world.truth_channels.set_index("channel_id").is_ghost.reindex(reach.index)
    assert ghost.any() and (~ghost).any()
    assert reach[ghost].mean() < reach[~ghost].mean()
    truth = world.truth_channels
    assert (truth.ghost_share[truth.is_ghost] >= 0.4).all()
    assert truth.half_life_hours.between(0.5, 12).all()
