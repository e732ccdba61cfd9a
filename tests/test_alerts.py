"""Alerts fire on constructed events, once per episode, stamped in UTC, and the sensor
delivers each exactly once (the outbox is its own ledger)."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb

from channel_assets.monitoring import AlertOutbox, alerts_sensor
from resources.warehouse import DuckDBWarehouse
from warehouse import features
from warehouse.alerts import AlertThresholds, detect_alerts
from warehouse.schema import ensure_schema

END = datetime(2026, 11, 1)


def _world(conn: duckdb.DuckDBPyConnection, spike: bool, quiet: bool) -> None:
    """Two channels, a post every 6 h for 20 days; channel 2 reaches few of its subscribers."""
    ensure_schema(conn)
    conn.execute(
        "INSERT INTO raw.channels VALUES (1, 'a', 'A', ?), (2, 'b', 'B', ?)", [END - timedelta(days=400)] * 2
    )
    last_post = END - timedelta(days=5) if quiet else END - timedelta(hours=6)
    for channel, reach in ((1, 0.4), (2, 0.05)):
        t, post = END - timedelta(days=20), 0
        while t <= last_post:
            post += 1
            views = int(10_000 * reach * (1 + 0.05 * (post % 3)))
            if spike and channel == 1 and t == last_post:
                views *= 20
            conn.execute("INSERT INTO raw.posts VALUES (?, ?, ?, 'x', 'none')", [channel, post, t])
            for hours, share in ((3, 0.5), (48, 1.0)):
                if t + timedelta(hours=hours) <= END:
                    conn.execute(
                        "INSERT INTO raw.post_snapshots VALUES (?, ?, ?, ?, 1, 1, 1)",
                        [channel, post, t + timedelta(hours=hours), int(views * share)],
                    )
            t += timedelta(hours=6)
        for day in range(21):
            conn.execute(
                "INSERT INTO raw.channel_daily VALUES (?, ?, ?)",
                [channel, (END - timedelta(days=20 - day)).date(), 10_000 + day],
            )
    for name in features.FEATURE_TABLES:
        features.build_feature_table(conn, name)


def test_constructed_spike_fires_once():
    conn = duckdb.connect()
    _world(conn, spike=True, quiet=False)
    assert detect_alerts(conn, AlertThresholds()) >= 1
    kinds = dict(conn.execute("SELECT kind, count(*) FROM monitoring.alerts GROUP BY kind").fetchall())
    assert kinds.get("view_spike") == 1
    assert kinds.get("ghost_subscribers") == 1  # channel 2: 5 % reach vs 40 %
    assert "quiet_period" not in kinds
    row = conn.execute(
        "SELECT channel_id, observed, expected FROM monitoring.alerts WHERE kind = 'view_spike'"
    ).fetchall()[0]
    assert row[0] == 1 and row[1] > 10 * row[2]
    assert detect_alerts(conn, AlertThresholds()) == 0  # re-run adds nothing


def test_no_spike_no_spike_alert_and_quiet_channel_flagged():
    conn = duckdb.connect()
    _world(conn, spike=False, quiet=True)
    detect_alerts(conn, AlertThresholds())
    kinds = dict(conn.execute("SELECT kind, count(*) FROM monitoring.alerts GROUP BY kind").fetchall())
    assert "view_spike" not in kinds
    assert kinds.get("quiet_period") == 2  # both stopped posting 5 days ago (usual gap 6 h)


def test_thresholds_are_configurable():
    conn = duckdb.connect()
    _world(conn, spike=True, quiet=False)
    detect_alerts(conn, AlertThresholds(spike_z=1000.0, ghost_ratio=0.0))
    assert (
        conn.execute(
            "SELECT count(*) FROM monitoring.alerts WHERE kind IN ('view_spike', 'ghost_subscribers')"
        ).fetchall()[0][0]
        == 0
    )


def test_sensor_delivers_new_alerts_once(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    conn = duckdb.connect(str(path))
    _world(conn, spike=True, quiet=False)
    detect_alerts(conn, AlertThresholds())
    conn.close()
    outbox = tmp_path / "outbox.jsonl"
    resources = {"warehouse": DuckDBWarehouse(path=str(path)), "alert_outbox": AlertOutbox(path=str(outbox))}
    first = alerts_sensor(dg.build_sensor_context(resources=resources))
    assert isinstance(first, dg.SensorResult)
    delivered = outbox.read_text().splitlines()
    assert len(delivered) == 2
    second = alerts_sensor(dg.build_sensor_context(cursor=first.cursor, resources=resources))
    assert isinstance(second, dg.SkipReason)
    assert len(outbox.read_text().splitlines()) == 2


def test_sensor_skips_when_warehouse_missing(tmp_path):
    resources = {
        "warehouse": DuckDBWarehouse(path=str(tmp_path / "none.duckdb"), lock_retry_seconds=0),
        "alert_outbox": AlertOutbox(path=str(tmp_path / "o.jsonl")),
    }
    assert isinstance(alerts_sensor(dg.build_sensor_context(resources=resources)), dg.SkipReason)


def _kinds(conn) -> dict[str, int]:
    return dict(conn.execute("SELECT kind, count(*) FROM monitoring.alerts GROUP BY kind").fetchall())


def _advance_clock(conn, days: int, post_at: datetime | None = None) -> None:
    """The source's clock moves on by whole days (subscriber counts), optionally with a post."""
    for channel in (1, 2):
        last = conn.execute(
            "SELECT max(day) FROM raw.channel_daily WHERE channel_id = ?", [channel]
        ).fetchall()[0][0]
        for day in range(1, days + 1):
            conn.execute(
                "INSERT INTO raw.channel_daily VALUES (?, ?, ?)",
                [channel, last + timedelta(days=day), 10_021 + day],
            )
        if post_at is not None:
            post = conn.execute(
                "SELECT max(post_id) + 1 FROM raw.posts WHERE channel_id = ?", [channel]
            ).fetchall()[0][0]
            conn.execute("INSERT INTO raw.posts VALUES (?, ?, ?, 'x', 'none')", [channel, post, post_at])
    for name in features.FEATURE_TABLES:
        features.build_feature_table(conn, name)


def test_created_at_is_utc_whatever_the_session_time_zone():
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'Asia/Tokyo'")  # UTC+9, no daylight saving
    _world(conn, spike=True, quiet=False)
    before = datetime.now(UTC).replace(tzinfo=None)
    assert detect_alerts(conn, AlertThresholds()) >= 1
    after = datetime.now(UTC).replace(tzinfo=None)
    stamps = [r[0] for r in conn.execute("SELECT created_at FROM monitoring.alerts").fetchall()]
    assert all(before - timedelta(seconds=1) <= t <= after for t in stamps), (before, stamps)


def test_an_ongoing_quiet_period_is_one_alert_and_a_new_silence_another():
    conn = duckdb.connect()
    _world(conn, spike=False, quiet=True)
    detect_alerts(conn, AlertThresholds())
    assert _kinds(conn)["quiet_period"] == 2
    for _ in range(3):  # still silent, day after day: no new alert
        _advance_clock(conn, days=1)
        detect_alerts(conn, AlertThresholds())
        assert _kinds(conn)["quiet_period"] == 2
    # both channels post once, then fall silent again: a new episode, a new alert each
    last = conn.execute("SELECT max(day) FROM raw.channel_daily").fetchall()[0][0]
    _advance_clock(conn, days=5, post_at=datetime.combine(last, datetime.min.time()))
    detect_alerts(conn, AlertThresholds())
    assert _kinds(conn)["quiet_period"] == 4
    starts = conn.execute(
        "SELECT DISTINCT episode_start FROM monitoring.alerts WHERE kind = 'quiet_period' ORDER BY 1"
    ).fetchall()
    assert len(starts) == 2


def test_a_ghost_audience_is_one_alert_until_it_recovers():
    conn = duckdb.connect()
    _world(conn, spike=False, quiet=False)
    detect_alerts(conn, AlertThresholds())
    assert _kinds(conn)["ghost_subscribers"] == 1
    for _ in range(2):  # the clock moves on, reach is still low
        _advance_clock(conn, days=1)
        detect_alerts(conn, AlertThresholds())
        assert _kinds(conn)["ghost_subscribers"] == 1
    detect_alerts(conn, AlertThresholds(ghost_ratio=0.0))  # condition gone: episode ends
    assert _kinds(conn)["ghost_subscribers"] == 1
    _advance_clock(conn, days=1)
    detect_alerts(conn, AlertThresholds())  # back again: a new episode
    assert _kinds(conn)["ghost_subscribers"] == 2


def _sensor_resources(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    conn = duckdb.connect(str(path))
    _world(conn, spike=True, quiet=False)
    detect_alerts(conn, AlertThresholds())
    conn.close()
    outbox = tmp_path / "outbox.jsonl"
    return outbox, {
        "warehouse": DuckDBWarehouse(path=str(path)),
        "alert_outbox": AlertOutbox(path=str(outbox)),
    }


def _keys(outbox) -> list[str]:
    return [json.loads(line)["alert_key"] for line in outbox.read_text().splitlines()]


def test_delivery_is_exactly_once_when_the_cursor_was_not_saved(tmp_path):
    """A crash after delivering but before Dagster stored the cursor replays the tick."""
    outbox, resources = _sensor_resources(tmp_path)
    first = alerts_sensor(dg.build_sensor_context(resources=resources))
    assert len(_keys(outbox)) == 2
    replay = alerts_sensor(dg.build_sensor_context(resources=resources))  # cursor lost
    assert isinstance(replay, dg.SkipReason) or not replay.run_requests
    assert sorted(_keys(outbox)) == sorted(set(_keys(outbox))) and len(_keys(outbox)) == 2
    assert first.cursor.endswith("Z") or "+00:00" in first.cursor  # the cursor says UTC


def test_a_torn_last_line_is_discarded_and_that_alert_delivered_whole(tmp_path):
    outbox, resources = _sensor_resources(tmp_path)
    alerts_sensor(dg.build_sensor_context(resources=resources))
    lines = outbox.read_text().splitlines()
    # crash in the middle of writing the second alert: it was never delivered
    outbox.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    alerts_sensor(dg.build_sensor_context(resources=resources))
    assert sorted(_keys(outbox)) == sorted(json.loads(line)["alert_key"] for line in lines)
