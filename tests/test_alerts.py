"""Alerts fire on constructed events, once, and the sensor delivers each exactly once."""

from datetime import datetime, timedelta

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
    conn.execute("INSERT INTO raw.channels VALUES (1, 'a', 'A', ?), (2, 'b', 'B', ?)",
                 [END - timedelta(days=400)] * 2)
    last_post = END - timedelta(days=5) if quiet else END - timedelta(hours=6)
    for channel, reach in ((1, 0.4), (2, 0.05)):
        t, post = END - timedelta(days=20), 0
        while t <= last_post:
            post += 1
            views = int(10_000 * reach * (1 + 0.05 * (post % 3)))
            if spike and channel == 1 and t == last_post:
                views *= 20
            conn.execute("INSERT INTO raw.posts VALUES (?, ?, ?, 'x', 'none')",
                         [channel, post, t])
            for hours, share in ((3, 0.5), (48, 1.0)):
                if t + timedelta(hours=hours) <= END:
                    conn.execute("INSERT INTO raw.post_snapshots VALUES (?, ?, ?, ?, 1, 1, 1)",
                                 [channel, post, t + timedelta(hours=hours), int(views * share)])
            t += timedelta(hours=6)
        for day in range(21):
            conn.execute("INSERT INTO raw.channel_daily VALUES (?, ?, ?)",
                         [channel, (END - timedelta(days=20 - day)).date(), 10_000 + day])
    for name in features.FEATURE_TABLES:
        features.build_feature_table(conn, name)


def test_constructed_spike_fires_once():
    conn = duckdb.connect()
    _world(conn, spike=True, quiet=False)
    assert detect_alerts(conn, AlertThresholds()) >= 1
    kinds = dict(conn.execute(
        "SELECT kind, count(*) FROM monitoring.alerts GROUP BY kind").fetchall())
    assert kinds.get("view_spike") == 1
    assert kinds.get("ghost_subscribers") == 1       # channel 2: 5 % reach vs 40 %
    assert "quiet_period" not in kinds
    row = conn.execute("SELECT channel_id, observed, expected FROM monitoring.alerts "
                       "WHERE kind = 'view_spike'").fetchall()[0]
    assert row[0] == 1 and row[1] > 10 * row[2]
    assert detect_alerts(conn, AlertThresholds()) == 0   # re-run adds nothing


def test_no_spike_no_spike_alert_and_quiet_channel_flagged():
    conn = duckdb.connect()
    _world(conn, spike=False, quiet=True)
    detect_alerts(conn, AlertThresholds())
    kinds = dict(conn.execute(
        "SELECT kind, count(*) FROM monitoring.alerts GROUP BY kind").fetchall())
    assert "view_spike" not in kinds
    assert kinds.get("quiet_period") == 2   # both stopped posting 5 days ago (usual gap 6 h)


def test_thresholds_are_configurable():
    conn = duckdb.connect()
    _world(conn, spike=True, quiet=False)
    detect_alerts(conn, AlertThresholds(spike_z=1000.0, ghost_ratio=0.0))
    assert conn.execute("SELECT count(*) FROM monitoring.alerts WHERE kind IN "
                        "('view_spike', 'ghost_subscribers')").fetchall()[0][0] == 0


def test_sensor_delivers_new_alerts_once(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    conn = duckdb.connect(str(path))
    _world(conn, spike=True, quiet=False)
    detect_alerts(conn, AlertThresholds())
    conn.close()
    outbox = tmp_path / "outbox.jsonl"
    resources = {"warehouse": DuckDBWarehouse(path=str(path)),
                 "alert_outbox": AlertOutbox(path=str(outbox))}
    first = alerts_sensor(dg.build_sensor_context(resources=resources))
    assert isinstance(first, dg.SensorResult)
    delivered = outbox.read_text().splitlines()
    assert len(delivered) == 2
    second = alerts_sensor(dg.build_sensor_context(cursor=first.cursor, resources=resources))
    assert isinstance(second, dg.SkipReason)
    assert len(outbox.read_text().splitlines()) == 2


def test_sensor_skips_when_warehouse_missing(tmp_path):
    resources = {"warehouse": DuckDBWarehouse(path=str(tmp_path / "none.duckdb"),
                                              lock_retry_seconds=0),
                 "alert_outbox": AlertOutbox(path=str(tmp_path / "o.jsonl"))}
    assert isinstance(alerts_sensor(dg.build_sensor_context(resources=resources)), dg.SkipReason)
