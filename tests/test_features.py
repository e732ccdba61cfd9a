"""Feature SQL on a tiny hand-made warehouse, with every expected number worked out by hand.

Timeline (UTC; 2024-01-01 is a Monday). Channel 1 "alpha" has subscribers,
channel 2 only posts + snapshots, channel 3 only a raw.channels row.

    post     published         snapshots (age: views/forwards/replies/reactions)
    1/101    Mon 01-01 09:00   16m:100  3h02m:300/3/1/5  24h03m:600  48h01m:900/9/3/18  96h:1000
    1/102    Tue 01-02 10:00   3h:100/0/0/1  48h:300/1/0/2
    1/103    Wed 01-03 09:30   3h01m:200/2/1/3  47h58m:2000/40/2/6
    1/104    Fri 01-05 08:00   15m:50  2h:120                (young: 3 h not yet known)
    2/201    Mon 01-01 20:00   3h:100  48h:400/4/4/12
    2/202    Tue 01-02 20:00   3h01m:150  48h02m:500/5/5/10

As-of rule: value at h = last snapshot at or before h + 5 min, only once the
post was observed at an age >= h - 5 min.
"""

from __future__ import annotations

import math
import random
import statistics
from datetime import date, datetime, timedelta

import duckdb
import pytest

import warehouse.features as features
from warehouse.features import (
    FEATURE_TABLES,
    TABLE_DESCRIPTIONS,
    TRAJECTORY_GRID_MINUTES,
    build_all_feature_tables,
    build_feature_table,
    sql_for,
)
from warehouse.schema import ensure_schema

T = datetime.fromisoformat

CHANNELS = [
    (1, "alpha", "Alpha News", T("2023-06-01 00:00")),
    (3, "gamma", "Gamma", T("2023-07-01 00:00")),
]
POSTS = [
    (1, 101, T("2024-01-01 09:00"), "hello world", "photo"),
    (1, 102, T("2024-01-02 10:00"), "second post", "none"),
    (1, 103, T("2024-01-03 09:30"), "big news!", "video"),
    (1, 104, T("2024-01-05 08:00"), "", "none"),
    (2, 201, T("2024-01-01 20:00"), None, "none"),
    (2, 202, T("2024-01-02 20:00"), "beta", "photo"),
]
SNAPSHOTS = [
    (1, 101, T("2024-01-01 09:16"), 100, 1, 0, 2),
    (1, 101, T("2024-01-01 12:02"), 300, 3, 1, 5),
    (1, 101, T("2024-01-02 09:03"), 600, 6, 2, 10),
    (1, 101, T("2024-01-03 09:01"), 900, 9, 3, 18),
    (1, 101, T("2024-01-05 09:00"), 1000, 10, 3, 20),
    (1, 102, T("2024-01-02 13:00"), 100, 0, 0, 1),
    (1, 102, T("2024-01-04 10:00"), 300, 1, 0, 2),
    (1, 103, T("2024-01-03 12:31"), 200, 2, 1, 3),
    (1, 103, T("2024-01-05 09:28"), 2000, 40, 2, 6),
    (1, 104, T("2024-01-05 08:15"), 50, 0, 0, 0),
    (1, 104, T("2024-01-05 10:00"), 120, 1, 0, 1),
    (2, 201, T("2024-01-01 23:00"), 100, 1, 0, 2),
    (2, 201, T("2024-01-03 20:00"), 400, 4, 4, 12),
    (2, 202, T("2024-01-02 23:01"), 150, 1, 1, 1),
    (2, 202, T("2024-01-04 20:02"), 500, 5, 5, 10),
]
# Channel 1 only; 01-04 is missing on purpose (delta is vs the previous recorded day).
CHANNEL_DAILY = [
    (1, date(2023, 12, 31), 9950),
    (1, date(2024, 1, 1), 10000),
    (1, date(2024, 1, 2), 10100),
    (1, date(2024, 1, 3), 10300),
    (1, date(2024, 1, 5), 10600),
]
INTERACTIONS = [
    # user 7: Mon 10h (1 h after 1/101), Mon 12h (3 h), Tue 10:30 (0.5 h after 1/102),
    #         Tue 20h (24 h after 2/201)
    (1, 101, 7, "reaction", T("2024-01-01 10:00")),
    (1, 101, 7, "reply", T("2024-01-01 12:00")),
    (1, 102, 7, "reaction", T("2024-01-02 10:30")),
    (2, 201, 7, "forward", T("2024-01-02 20:00")),
    # user 8: Wed 02h, 6 h after 2/202
    (2, 202, 8, "reaction", T("2024-01-03 02:00")),
]


def _insert(conn: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    if rows:
        marks = ", ".join("?" * len(rows[0]))
        conn.executemany(f"INSERT INTO raw.{table} VALUES ({marks})", rows)


def _warehouse(**tables: list[tuple]) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    ensure_schema(conn)
    for table, rows in tables.items():
        _insert(conn, table, rows)
    return conn


def _full() -> duckdb.DuckDBPyConnection:
    return _warehouse(
        channels=CHANNELS,
        posts=POSTS,
        post_snapshots=SNAPSHOTS,
        channel_daily=CHANNEL_DAILY,
        interactions=INTERACTIONS,
    )


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> dict:
    """First column -> dict of the remaining columns."""
    cur = conn.execute(sql)
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names[1:], r[1:], strict=True)) for r in cur.fetchall()}


@pytest.fixture(scope="module")
def wh() -> duckdb.DuckDBPyConnection:
    conn = _full()
    build_all_feature_tables(conn)
    return conn


# --------------------------------------------------------------------------- trajectories


def test_trajectory_grid_matches_sql(wh):
    # 1/101 was observed up to 96 h, so it reached every grid point.
    ages = [
        r[0]
        for r in wh.execute(
            "SELECT age_minutes FROM features.post_trajectories WHERE post_id = 101 ORDER BY 1"
        ).fetchall()
    ]
    assert tuple(ages) == TRAJECTORY_GRID_MINUTES
    assert TRAJECTORY_GRID_MINUTES[:3] == (15, 30, 45) and TRAJECTORY_GRID_MINUTES[-1] == 2520


def test_trajectory_values(wh):
    t = {
        (p, a): v
        for p, a, v in wh.execute(
            "SELECT post_id, age_minutes, views FROM features.post_trajectories"
        ).fetchall()
    }
    assert t[101, 15] == 100  # 09:16 <= 09:20
    assert t[101, 180] == 300  # 12:02 <= 12:05
    assert t[101, 720] == 300  # next snapshot is at 24 h
    # 1/102's first snapshot is at 3 h: earlier grid points are reached but unknown
    assert t[102, 165] is None and t[102, 180] == 100
    # 1/104 was last seen at 2 h: grid points up to 120 min only (120 - 5 <= 120)
    assert sorted(a for p, a in t if p == 104) == list(range(15, 121, 15))
    assert t[104, 120] == 120 and t[104, 15] == 50


# --------------------------------------------------------------------------- post features


def test_post_as_of_values(wh):
    pf = _rows(wh, "SELECT post_id, * EXCLUDE (post_id) FROM features.post_features")
    p1 = pf[101]
    assert (p1["views_1h"], p1["views_3h"], p1["views_6h"], p1["views_12h"]) == (100, 300, 300, 300)
    assert (p1["views_24h"], p1["views_48h"]) == (600, 900)  # 09:03 <= 09:05 next day
    assert (p1["forwards_3h"], p1["replies_3h"], p1["reactions_3h"]) == (3, 1, 5)
    assert (p1["forwards_48h"], p1["replies_48h"], p1["reactions_48h"]) == (9, 3, 18)
    assert p1["interactions_48h"] == 30
    assert p1["hours_observed"] == 96.0 and p1["views_latest"] == 1000
    assert (p1["weekday"], p1["hour"], p1["text_length"], p1["media_type"]) == (0, 9, 11, "photo")
    # 1/102: nothing at or before 1 h 05 -> unknown although the post is 48 h old
    assert pf[102]["views_1h"] is None and pf[102]["views_3h"] == 100
    # 1/103: last seen at 47 h 58 m (>= 47 h 55 m), so its 48 h value is known
    assert pf[103]["views_48h"] == 2000
    assert pf[103]["hours_observed"] == pytest.approx(47 + 58 / 60)
    # 1/104: observed to 2 h only -> 3 h not yet known, even though a snapshot
    # exists at or before 3 h 05
    p4 = pf[104]
    assert (p4["views_1h"], p4["views_3h"], p4["views_48h"]) == (50, None, None)
    assert p4["hours_observed"] == 2.0 and p4["weekday"] == 4
    # channel 2 has no channel_daily: subscribers and reach unknown
    assert pf[201]["subscribers_at_publish"] is None and pf[201]["reach_48h"] is None
    assert pf[201]["text_length"] == 0 and pf[201]["views_48h"] == 400


def test_subscribers_and_reach(wh):
    pf = _rows(
        wh,
        "SELECT post_id, subscribers_at_publish, reach_12h, reach_48h "
        "FROM features.post_features WHERE channel_id = 1",
    )
    assert [pf[p]["subscribers_at_publish"] for p in (101, 102, 103, 104)] == [
        10000,
        10100,
        10300,
        10600,
    ]
    assert pf[101]["reach_12h"] == pytest.approx(300 / 10000)
    assert pf[103]["reach_48h"] == pytest.approx(2000 / 10300)


def test_no_look_ahead_in_channel_prior(wh):
    pf = _rows(
        wh,
        "SELECT post_id, channel_prior_posts, channel_prior_posts_48h, "
        "channel_prior_median_views_48h, channel_prior_mean_log_views_48h "
        "FROM features.post_features WHERE channel_id = 1",
    )
    assert [pf[p]["channel_prior_posts"] for p in (101, 102, 103, 104)] == [0, 1, 2, 3]
    # 1/102 (01-02 10:00): 1/101 is only 25 h old -> no baseline yet
    assert pf[102]["channel_prior_posts_48h"] == 0
    assert pf[102]["channel_prior_median_views_48h"] is None
    # 1/103 (01-03 09:30): 1/101 is 48 h 30 m old -> baseline {900}
    assert pf[103]["channel_prior_median_views_48h"] == 900
    assert pf[103]["channel_prior_mean_log_views_48h"] == pytest.approx(math.log(901))
    # 1/104 (01-05 08:00): 1/101 and 1/102 qualify; 1/103 (46.5 h old, 2000 views)
    # must not: median(900, 300) = 600 (with look-ahead it would be 900)
    assert pf[104]["channel_prior_posts_48h"] == 2
    assert pf[104]["channel_prior_median_views_48h"] == 600
    assert pf[104]["channel_prior_mean_log_views_48h"] == pytest.approx((math.log(901) + math.log(301)) / 2)


# The as-of rule written the direct way (probe per post and age, ASOF JOIN): the
# feature SQL computes it with one conditional aggregate per post instead, and must agree.
ASOF_REFERENCE_SQL = """
WITH observed AS (
    SELECT channel_id, post_id, max(observed_at) FILTER (WHERE views IS NOT NULL) AS last_observed_at
    FROM raw.post_snapshots GROUP BY channel_id, post_id
),
probe AS (
    SELECT p.channel_id, p.post_id, a.age_minutes,
           p.published_at + to_minutes(a.age_minutes + 5) AS lookup_at
    FROM raw.posts AS p JOIN observed AS o USING (channel_id, post_id)
    CROSS JOIN (SELECT unnest([60, 180, 360, 720, 1440, 2880]) AS age_minutes) AS a
    WHERE o.last_observed_at >= p.published_at + to_minutes(a.age_minutes - 5)
)
SELECT pr.channel_id, pr.post_id, pr.age_minutes, s.views, s.forwards, s.replies, s.reactions
FROM probe AS pr
ASOF JOIN (SELECT * FROM raw.post_snapshots WHERE views IS NOT NULL) AS s
    ON pr.channel_id = s.channel_id AND pr.post_id = s.post_id AND pr.lookup_at >= s.observed_at
"""


def _random_world(seed: int) -> duckdb.DuckDBPyConnection:
    """Posts with irregular snapshots (many exactly at h +- 5 min), NULL views and NULL counters."""
    rng = random.Random(seed)
    start = T("2024-01-01 00:00")
    edges = [m for h in (1, 3, 6, 12, 24, 48) for m in (h * 60 - 5, h * 60 + 5)]
    posts, snaps = [], []
    for channel in (1, 2):
        for post in range(1, 31):
            published = start + timedelta(minutes=rng.randrange(0, 20 * 24 * 60))
            posts.append((channel, post, published, "", "none"))
            ages = {rng.choice(edges) + rng.choice((-1, 0, 0, 1)) * 1e-6 for _ in range(rng.randrange(0, 6))}
            if rng.random() < 0.5:  # else only edge snapshots: the last one decides what is known
                ages |= {rng.uniform(-10, 3500) for _ in range(rng.randrange(0, 12))}
            for minutes in sorted(ages):
                at = published + timedelta(minutes=minutes)
                counters = [rng.randrange(0, 10**5) if rng.random() > 0.15 else None for _ in range(4)]
                snaps.append((channel, post, at, *counters))
    return _warehouse(posts=posts, post_snapshots=snaps)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_as_of_values_equal_the_asof_join_definition(seed):
    conn = _random_world(seed)
    build_feature_table(conn, "post_features")
    want: dict[tuple, object] = {}
    for channel, post, age, views, forwards, replies, reactions in conn.execute(
        ASOF_REFERENCE_SQL
    ).fetchall():
        hours = age // 60
        want[channel, post, f"views_{hours}h"] = views
        if hours in (3, 48):
            want[channel, post, f"forwards_{hours}h"] = forwards
            want[channel, post, f"replies_{hours}h"] = replies
            want[channel, post, f"reactions_{hours}h"] = reactions
    cols = [f"views_{h}h" for h in (1, 3, 6, 12, 24, 48)] + [
        f"{c}_{h}h" for c in ("forwards", "replies", "reactions") for h in (3, 48)
    ]
    rows = conn.execute(f"SELECT channel_id, post_id, {', '.join(cols)} FROM features.post_features")
    got = {
        (channel, post, col): value
        for channel, post, *values in rows.fetchall()
        for col, value in zip(cols, values, strict=True)
        if value is not None or (channel, post, col) in want
    }
    assert got == want
    assert any(v is None for v in want.values())  # a NULL counter at an as-of row is kept NULL


def _series(views: list[int], forwards: list[int]) -> duckdb.DuckDBPyConnection:
    """Channel 9: one post a day at 12:00 from Mon 2024-01-01, each with a 48 h snapshot."""
    start = T("2024-01-01 12:00")
    posts, snaps = [], []
    for i, (v, f) in enumerate(zip(views, forwards, strict=True)):
        at = start + timedelta(days=i)
        posts.append((9, i + 1, at, f"post {i}", "none"))
        snaps.append((9, i + 1, at + timedelta(hours=48), v, f, 0, 0))
    conn = _warehouse(posts=posts, post_snapshots=snaps)
    build_feature_table(conn, "post_features")
    return conn


SERIES_VIEWS = [100, 300, 200, 500, 400, 250, 600, 100]
SERIES_FORWARDS = [1, 2, 3, 4, 5, 6, 30, 1]


def test_targets_rank_against_earlier_posts_only():
    pf = _rows(
        _series(SERIES_VIEWS, SERIES_FORWARDS),
        "SELECT post_id, view_percentile_48h, above_channel_median, "
        "forwards_percentile_48h, is_viral FROM features.post_features",
    )
    # posts 1-5 have < 5 earlier posts: no label yet
    assert all(pf[p]["view_percentile_48h"] is None for p in range(1, 6))
    # post 6 (250) vs 100 300 200 500 400: 2 below -> 0.4; post 7 (600): 5 of 6 -> 1.0
    assert pf[6]["view_percentile_48h"] == pytest.approx(2 / 5)
    assert pf[7]["view_percentile_48h"] == pytest.approx(1.0)
    assert pf[8]["view_percentile_48h"] == pytest.approx(0.5 / 7)  # ties with post 1
    # forwards 30 tops six earlier posts -> viral; 6 vs 1..5 -> 1.0 too
    assert pf[7]["is_viral"] and pf[6]["is_viral"] and not pf[8]["is_viral"]
    # above_channel_median: median of posts published >= 48 h 5 min earlier
    # post 8 (day 7) sees posts 1-5 (days 0-4): median 300 -> 100 is below;
    # post 7 (day 6) sees posts 1-4 only (< 5): no label yet
    assert pf[8]["above_channel_median"] is False
    assert pf[7]["above_channel_median"] is None


def test_changing_a_later_post_leaves_earlier_labels_unchanged():
    cols = ("view_percentile_48h", "above_channel_median", "forwards_percentile_48h", "is_viral")
    sql = f"SELECT post_id, {', '.join(cols)} FROM features.post_features"
    before = _rows(_series(SERIES_VIEWS, SERIES_FORWARDS), sql)
    views, forwards = list(SERIES_VIEWS), list(SERIES_FORWARDS)
    views[-1], forwards[-1] = 10**7, 10**5  # the last post goes wildly viral
    after = _rows(_series(views, forwards), sql)
    assert {p: before[p] for p in range(1, 8)} == {p: after[p] for p in range(1, 8)}
    assert after[8] != before[8]


def test_settled_views_for_posts_seen_once_days_later():
    """One late count per post (partial data): settled views, percentiles, best hours, top posts."""
    start = T("2024-01-01 09:00")
    posts, snaps = [], []
    for i in range(12):
        at = start + timedelta(days=i, hours=(i % 2) * 9)  # 09:00 or 18:00
        posts.append((5, i + 1, at, f"post {i}", "none"))
        views = 1000 + 100 * i + (500 if i % 2 else 0)  # 18:00 posts do better
        snaps.append((5, i + 1, T("2024-02-01 00:00"), views, 1, 1, 1))
    conn = _warehouse(posts=posts, post_snapshots=snaps)
    build_all_feature_tables(conn)
    pf = _rows(
        conn, "SELECT post_id, views_48h, views_settled, views_settled_basis FROM features.post_features"
    )
    assert all(r["views_48h"] is None for r in pf.values())
    assert pf[1]["views_settled"] == 1000 and pf[1]["views_settled_basis"] == "latest_after_7d"
    m = _rows(
        conn,
        "SELECT channel_id, views_per_post, best_hours, top_post_ids, views_basis "
        "FROM features.channel_metrics",
    )[5]
    assert m["views_basis"] == "latest views of posts older than 7 days"
    assert m["best_hours"][0] == 18
    assert m["top_post_ids"][0] == 12
    assert m["views_per_post"] == pytest.approx(
        statistics.mean(1000 + 100 * i + (500 if i % 2 else 0) for i in range(12))
    )
    trend = _rows(conn, "SELECT post_id, basis, z_score FROM features.trending_posts")
    assert {r["basis"] for r in trend.values()} == {"settled"}
    assert trend[12]["z_score"] is not None


# --------------------------------------------------------------------------- daily, users, slots


def test_channel_daily_features(wh):
    d = _rows(wh, "SELECT day, * EXCLUDE (day) FROM features.channel_daily_features")
    assert list(d) == [
        date(2023, 12, 31),
        date(2024, 1, 1),
        date(2024, 1, 2),
        date(2024, 1, 3),
        date(2024, 1, 5),
    ]
    sun = d[date(2023, 12, 31)]  # no posts: zeros, first day: no delta
    assert sun["weekday"] == 6 and sun["subscriber_delta"] is None
    assert (sun["posts"], sun["views_48h_sum"], sun["engagement_rate"], sun["viral_posts"]) == (
        0,
        0,
        0.0,
        0,
    )
    mon = d[date(2024, 1, 1)]
    assert mon["subscriber_delta"] == 50
    assert mon["subscriber_growth_rate"] == pytest.approx(50 / 9950)
    assert (mon["posts"], mon["views_48h_sum"], mon["forwards_48h_sum"]) == (1, 900, 9)
    assert mon["interactions_48h_sum"] == 30
    assert mon["engagement_rate"] == pytest.approx(30 / 900)
    assert mon["reach_48h"] == pytest.approx(900 / 10000)
    wed = d[date(2024, 1, 3)]
    # 1/103 tops its 2 earlier posts, but viral needs 5 earlier posts to rank against
    assert (wed["subscriber_delta"], wed["viral_posts"]) == (200, 0)
    assert wed["engagement_rate"] == pytest.approx(48 / 2000)
    fri = d[date(2024, 1, 5)]  # vs 01-03 (01-04 missing); its post is too young for 48 h
    assert (fri["subscriber_delta"], fri["posts"], fri["views_48h_sum"]) == (300, 1, 0)
    assert fri["engagement_rate"] == 0.0 and fri["mean_text_length"] == 0.0


def test_user_behavior_features(wh):
    u = _rows(wh, "SELECT user_id, * EXCLUDE (user_id) FROM features.user_behavior_features")
    u7 = u[7]
    assert (u7["n_interactions"], u7["n_channels"], u7["n_posts"], u7["active_days"]) == (
        4,
        2,
        3,
        2,
    )
    assert (u7["hour_10"], u7["hour_12"], u7["hour_20"], u7["hour_09"]) == (0.5, 0.25, 0.25, 0.0)
    assert sum(u7[f"hour_{h:02d}"] for h in range(24)) == pytest.approx(1.0)
    assert (u7["wd_0"], u7["wd_1"], u7["wd_2"]) == (0.5, 0.5, 0.0)
    assert (u7["share_reaction"], u7["share_reply"], u7["share_forward"]) == (0.5, 0.25, 0.25)
    assert u7["median_delay_hours"] == pytest.approx(2.0)  # median(0.5, 1, 3, 24)
    u8 = u[8]
    assert (u8["n_interactions"], u8["hour_02"], u8["wd_2"], u8["share_reaction"]) == (
        1,
        1.0,
        1.0,
        1.0,
    )
    assert u8["median_delay_hours"] == pytest.approx(6.0)


def test_posting_slot_features(wh):
    s = {
        (c, w, h): r
        for (c, w, h), r in (
            ((r[0], r[1], r[2]), r[3:])
            for r in wh.execute(
                "SELECT channel_id, weekday, hour, n_posts, mean_log_views_48h, "
                "mean_view_percentile, mean_relative_views FROM features.posting_slot_features"
            ).fetchall()
        )
    }
    # 1/104 has no 48 h value, so (1, Fri, 8) has no slot row
    assert sorted(s) == [(1, 0, 9), (1, 1, 10), (1, 2, 9), (2, 0, 20), (2, 1, 20)]
    n, mean_log, pct, rel = s[1, 2, 9]  # 1/103: 2000 views vs channel median 900
    assert (n, pct) == (1, None)  # percentiles need 5 earlier posts
    assert mean_log == pytest.approx(math.log(2001))
    assert rel == pytest.approx(2000 / 900)
    assert s[2, 0, 20][3] == pytest.approx(400 / 450)


# --------------------------------------------------------------------------- channel metrics


def test_channel_metrics(wh):
    m = _rows(wh, "SELECT channel_id, * EXCLUDE (channel_id) FROM features.channel_metrics")
    assert list(m) == [1, 2, 3]  # raw.channels (1, 3) union raw.posts (1, 2)
    a = m[1]
    assert (a["username"], a["subscribers"], a["subscribers_30d_ago"]) == ("alpha", 10600, None)
    assert a["growth_rate_30d"] is None  # less than 30 days of history
    assert a["daily_growth"] == pytest.approx((10600 - 9950) / 5)  # 12-31 .. 01-05
    assert a["n_posts"] == 4
    assert a["posts_per_day"] == pytest.approx(4 / 5)  # 01-01 .. as_of 01-05
    # settled counts only (48 h values: 900, 300, 2000; 1/104 is 2 h old)
    assert a["views_per_post"] == pytest.approx((900 + 300 + 2000) / 3)
    assert a["views_basis"] == "48h views"
    assert a["as_of"] == T("2024-01-05 10:00")  # 1/104's last snapshot
    # ERR: mean views_48h (900, 300, 2000) / 10600 current subscribers
    assert a["err"] == pytest.approx((900 + 300 + 2000) / 3 / 10600)
    # ER: (30 + 3 + 48) / (900 + 300 + 2000)
    assert a["er"] == pytest.approx(81 / 3200)
    assert a["reach_12h"] == pytest.approx((300 / 10000 + 100 / 10100 + 200 / 10300) / 3)
    assert a["reach_24h"] == pytest.approx((600 / 10000 + 100 / 10100 + 200 / 10300) / 3)
    assert a["reach_48h"] == pytest.approx((900 / 10000 + 300 / 10100 + 2000 / 10300) / 3)
    assert a["best_hours"] is None  # no hour has 3 posts
    assert a["top_post_ids"] == [103, 101, 102]
    b = m[2]  # posts only: subscriber metrics unknown, engagement still there
    assert (b["username"], b["subscribers"], b["err"], b["reach_48h"]) == (None, None, None, None)
    assert b["er"] == pytest.approx((20 + 20) / 900)
    assert b["posts_per_day"] == pytest.approx(2 / 4)  # 01-01 .. 01-04 20:02
    assert b["top_post_ids"] == [202, 201]
    c = m[3]  # a channel row only
    assert (c["username"], c["n_posts"], c["posts_per_day"], c["as_of"]) == ("gamma", 0, None, None)


# --------------------------------------------------------------------------- channel 9: weekly


# Channel 9 posts every Monday, alternating 09:00 and 18:00 UTC.
#   post  published      views_3h  views_48h (forwards_48h = views_48h / 100)
WEEKLY = [
    (1, T("2024-01-01 09:00"), 99, 500),
    (2, T("2024-01-08 18:00"), 119, 700),
    (3, T("2024-01-15 09:00"), 79, 300),
    (4, T("2024-01-22 18:00"), 109, 600),
    (5, T("2024-01-29 09:00"), 89, 400),
    (6, T("2024-02-05 18:00"), 999, 5000),  # the spike
    (7, T("2024-02-12 09:00"), 104, None),  # only 3 h old
]


@pytest.fixture(scope="module")
def weekly() -> duckdb.DuckDBPyConnection:
    posts, snaps = [], []
    for pid, pub, v3, v48 in WEEKLY:
        posts.append((9, pid, pub, f"post {pid}", "none"))
        snaps.append((9, pid, pub + timedelta(hours=3), v3, 0, 0, 0))
        if v48 is not None:
            snaps.append((9, pid, pub + timedelta(hours=48), v48, v48 // 100, 0, 0))
    daily = [
        (9, date(2024, 1, 1), 1000),
        (9, date(2024, 1, 20), 1100),
        (9, date(2024, 2, 12), 1300),
    ]
    conn = _warehouse(posts=posts, post_snapshots=snaps, channel_daily=daily)
    build_all_feature_tables(conn)
    return conn


def test_trending_z_score(weekly):
    t = _rows(weekly, "SELECT post_id, baseline_posts, z_score, is_trending FROM features.trending_posts")
    # posts 1-5 have fewer than 5 previous posts: no score
    assert [t[p]["baseline_posts"] for p in range(1, 8)] == [0, 1, 2, 3, 4, 5, 6]
    assert all(t[p]["z_score"] is None and not t[p]["is_trending"] for p in range(1, 6))
    # post 6: ln(1000) vs ln(100, 120, 80, 110, 90): mean 4.595, sd 0.160 -> z = 14.43
    base = [math.log(v) for v in (100, 120, 80, 110, 90)]
    z6 = (math.log(1000) - statistics.mean(base)) / statistics.stdev(base)
    assert t[6]["z_score"] == pytest.approx(z6) and z6 == pytest.approx(14.43, abs=0.01)
    assert t[6]["is_trending"]
    # post 7: ln(105) vs a baseline that now includes the spike
    # (mean 4.980, sd 0.955): z = -0.34
    base7 = base + [math.log(1000)]
    z7 = (math.log(105) - statistics.mean(base7)) / statistics.stdev(base7)
    assert t[7]["z_score"] == pytest.approx(z7) == pytest.approx(-0.34, abs=0.01)
    assert not t[7]["is_trending"]


def test_best_hours_slots_and_growth(weekly):
    # percentiles rank a post against >= 5 earlier ones: only post 6 (5000 views, above
    # all five) has one, so no hour has the 3 ranked posts best_hours asks for
    m = _rows(weekly, "SELECT channel_id, * EXCLUDE (channel_id) FROM features.channel_metrics")[9]
    assert m["best_hours"] is None
    assert m["top_post_ids"] == [6, 2, 4, 1, 5]
    # latest 02-12: 1300; 30 days back (<= 01-13) the 01-01 row: 1000
    assert (m["subscribers"], m["subscribers_30d_ago"]) == (1300, 1000)
    assert m["growth_rate_30d"] == pytest.approx(0.3)
    assert m["daily_growth"] == pytest.approx(300 / 42)
    s = {
        (w, h): r
        for w, h, *r in weekly.execute(
            "SELECT weekday, hour, n_posts, mean_log_views_48h, mean_view_percentile, "
            "mean_relative_views, viral_share FROM features.posting_slot_features"
        ).fetchall()
    }
    # channel median views_48h = (500 + 600) / 2 = 550; post 6 (50 forwards) is the viral one
    assert s[0, 9][0] == 3 and s[0, 18][0] == 3
    assert s[0, 9][1] == pytest.approx((math.log(501) + math.log(301) + math.log(401)) / 3)
    assert s[0, 9][2] is None and s[0, 18][2] == pytest.approx(1.0)
    assert s[0, 9][3] == pytest.approx(400 / 550) and s[0, 18][3] == pytest.approx(2100 / 550)
    # viral share among the slot's labelled posts (post 6 is the only one, and viral)
    assert (s[0, 9][4], s[0, 18][4]) == (None, 1.0)


# --------------------------------------------------------------------------- robustness


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in conn.execute(f"DESCRIBE features.{table}").fetchall()]


def test_every_table_builds_on_an_empty_warehouse():
    conn = duckdb.connect()  # not even the schemas exist
    counts = build_all_feature_tables(conn)
    assert counts == {name: 0 for name in FEATURE_TABLES}
    for name in FEATURE_TABLES:
        assert _columns(conn, name) == list(TABLE_DESCRIPTIONS[name]), name


def test_single_table_builds_its_missing_dependencies():
    conn = _full()
    assert build_feature_table(conn, "channel_metrics") == 3
    assert build_feature_table(conn, "post_features") == len(POSTS)


def test_tables_build_with_only_posts_and_snapshots():
    conn = _warehouse(posts=POSTS, post_snapshots=SNAPSHOTS)
    counts = build_all_feature_tables(conn)
    assert counts["post_features"] == 6 and counts["channel_daily_features"] == 0
    assert counts["user_behavior_features"] == 0 and counts["channel_metrics"] == 2
    pf = _rows(
        conn,
        "SELECT post_id, views_48h, subscribers_at_publish, reach_48h, "
        "view_percentile_48h FROM features.post_features",
    )
    assert (pf[101]["views_48h"], pf[101]["subscribers_at_publish"], pf[101]["reach_48h"]) == (
        900,
        None,
        None,
    )
    assert pf[101]["view_percentile_48h"] is None  # first post of its channel: nothing earlier
    m = _rows(conn, "SELECT channel_id, username, subscribers, err, er FROM features.channel_metrics")
    assert (m[1]["username"], m[1]["subscribers"], m[1]["err"]) == (None, None, None)
    assert m[1]["er"] == pytest.approx(81 / 3200)


def test_rebuild_is_idempotent():
    conn = _full()

    def snapshot() -> dict[str, list[tuple]]:
        return {
            name: conn.execute(f"SELECT * FROM features.{name} ORDER BY ALL").fetchall()
            for name in FEATURE_TABLES
        }

    first = build_all_feature_tables(conn)
    before = snapshot()
    assert build_all_feature_tables(conn) == first
    assert snapshot() == before


def test_failed_rebuild_keeps_the_old_table(monkeypatch):
    conn = _full()
    assert build_feature_table(conn, "post_features") == 6
    monkeypatch.setattr(features, "sql_for", lambda name: "SELECT error('boom') AS x")
    with pytest.raises(duckdb.Error, match="boom"):
        build_feature_table(conn, "post_features")
    assert conn.execute("SELECT count(*) FROM features.post_features").fetchone() == (6,)


def test_api_contract():
    assert set(TABLE_DESCRIPTIONS) == set(FEATURE_TABLES)
    assert all(desc for cols in TABLE_DESCRIPTIONS.values() for desc in cols.values())
    assert sql_for("post_features").lstrip().startswith("--")
    with pytest.raises(KeyError):
        sql_for("raw.posts; DROP TABLE x")
