"""Telegram Desktop export import: what the export has loads, bad messages are quarantined."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from warehouse import quality
from warehouse.desktop_export import LIMITATIONS, find_exports, load_desktop_export
from warehouse.landing import load_landing
from warehouse.schema import ensure_schema

EXPORTED_AT = datetime(2026, 11, 1, 12, 0, 0)
T0 = 1_793_000_000  # 2026-10-26 unix seconds, well before EXPORTED_AT


def msg(post_id, offset_s=0, **fields) -> dict:
    """A plain channel message ``offset_s`` seconds after T0."""
    base = {
        "id": post_id,
        "type": "message",
        "date": "2026-10-26T10:13:20",
        "date_unixtime": str(T0 + offset_s),
        "from": "Pulse News",
        "from_id": "channel1234567890",
        "text": "",
        "text_entities": [],
    }
    return {**base, **fields}


def export_doc(messages: list, **top) -> dict:
    return {"name": "Pulse News", "type": "public_channel", "id": 1234567890, "messages": messages, **top}


def write_export(folder: Path, doc: dict | str, name: str = "result.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def rows(conn, sql: str) -> list[tuple]:
    return conn.execute(sql).fetchall()


def table_counts(conn) -> dict[str, int]:
    names = ("channels", "posts", "post_snapshots", "quarantine")
    return {t: rows(conn, f"SELECT count(*) FROM raw.{t}")[0][0] for t in names}


@pytest.fixture
def conn():
    connection = duckdb.connect()
    yield connection
    connection.close()


@pytest.fixture
def rich_export(tmp_path: Path) -> Path:
    """Every message shape the importer must handle, good and bad."""
    messages = [
        msg(
            1,
            text="Plain text post",
            reactions=[
                {"type": "emoji", "count": 5, "emoji": "👍"},
                {"type": "custom_emoji", "count": 2, "document_id": "x"},
            ],
        ),
        msg(
            2,
            60,
            text=[
                "Read ",
                {"type": "bold", "text": "this"},
                " at ",
                {"type": "link", "text": "https://t.me/x"},
                " ",
                {"type": "hashtag", "text": "#news"},
            ],
            photo="photos/photo_1.jpg",
            width=800,
            height=600,
        ),
        msg(3, 120, text="", file="video_files/v.mp4", media_type="video_file", mime_type="video/mp4"),
        msg(
            4,
            180,
            file="files/report.pdf",
            mime_type="application/pdf",
            text_entities=[{"type": "plain", "text": "Quarterly "}, {"type": "italic", "text": "report"}],
        )
        | {"text": None},
        msg(5, 240, poll={"question": "Which?", "closed": False, "total_voters": 3, "answers": []}),
        msg(6, 300, file="stickers/s.webp", media_type="sticker"),
        msg(7, 360, file="voice/v.ogg", media_type="voice_message"),
        msg(8, 420, file="gif/a.mp4", media_type="animation"),
        msg(9, 480, file="round/r.mp4", media_type="video_message"),
        msg(10, 540, file="music/m.mp3", media_type="audio_file"),
        {"id": 11, "type": "message", "date_unixtime": str(T0 + 600)},  # bare minimum
        {"id": 12, "type": "service", "date_unixtime": str(T0 + 660), "action": "pin_message"},
        {"type": "message", "date_unixtime": str(T0 + 720), "text": "no id"},
        msg(14, text="bad date") | {"date_unixtime": "yesterday"},
        {"id": 15, "type": "message", "date": "2026-10-26T10:00:00", "text": "local date only"},
        msg(16, 780, text=["ok", 42]),
        msg(17, 840, text="bad reactions", reactions=[{"type": "emoji", "count": -1}]),
    ]
    return write_export(tmp_path / "landing" / "ChannelExport_2026-11-01", export_doc(messages))


def test_export_loads_posts_channel_and_reaction_snapshots(conn, rich_export):
    load = load_desktop_export(conn, rich_export, exported_at=EXPORTED_AT)

    assert (load.channel_id, load.title) == (1234567890, "Pulse News")
    assert load.messages_read == 17 and load.service_skipped == 1
    assert load.posts_loaded == 11 and load.snapshots_loaded == 11
    assert load.posts_quarantined == 5 and load.file_rejected is None
    assert load.limitations == LIMITATIONS
    assert rows(conn, "SELECT * FROM raw.channels") == [(1234567890, None, "Pulse News", None)]
    posts = {r[0]: r[1:] for r in rows(conn, "SELECT post_id, published_at, text, media_type FROM raw.posts")}
    assert posts[1] == (datetime.fromtimestamp(T0, UTC).replace(tzinfo=None), "Plain text post", "none")
    assert posts[2][1:] == ("Read this at https://t.me/x #news", "photo")
    assert posts[3][1:] == ("", "video")
    assert posts[4][1:] == ("Quarterly report", "document")
    media = {pid: p[2] for pid, p in posts.items()}
    assert media == {
        1: "none",
        2: "photo",
        3: "video",
        4: "document",
        5: "poll",
        6: "other",
        7: "other",
        8: "video",
        9: "video",
        10: "other",
        11: "none",
    }
    assert posts[11][1] == ""

    snaps = rows(
        conn,
        "SELECT post_id, observed_at, views, forwards, replies, reactions "
        "FROM raw.post_snapshots ORDER BY post_id",
    )
    assert {s[1] for s in snaps} == {EXPORTED_AT}
    assert all(s[2:5] == (None, None, None) for s in snaps)  # not observed, not zero
    assert snaps[0][5] == 7 and {s[5] for s in snaps[1:]} == {0}


def test_bad_messages_are_quarantined_with_reasons(conn, rich_export):
    load_desktop_export(conn, rich_export, exported_at=EXPORTED_AT)
    quarantined = rows(
        conn, "SELECT source, target_table, record, reason, loaded_at FROM raw.quarantine ORDER BY reason"
    )
    assert {q[0] for q in quarantined} == {str(rich_export.resolve())}
    assert {q[1] for q in quarantined} == {"posts"}
    assert all(q[4] is not None for q in quarantined)
    reasons = [q[3] for q in quarantined]
    assert reasons == sorted(
        [
            "missing key: id",
            'bad type: date_unixtime="yesterday" is not unix seconds',
            "missing date_unixtime (date is local time without an offset)",
            "unreadable text part: 42",
            "bad reactions: count -1 is not a count >= 0",
        ]
    )
    record = json.loads(next(q[2] for q in quarantined if q[3] == "missing key: id"))
    assert record["text"] == "no id"  # the original message, for fixing by hand


def test_second_import_changes_nothing(conn, rich_export):
    load_desktop_export(conn, rich_export, exported_at=EXPORTED_AT)
    before = table_counts(conn)
    snapshot = rows(conn, "SELECT * FROM raw.post_snapshots ORDER BY ALL")
    again = load_desktop_export(conn, rich_export, exported_at=EXPORTED_AT)
    assert table_counts(conn) == before
    assert rows(conn, "SELECT * FROM raw.post_snapshots ORDER BY ALL") == snapshot
    assert again.posts_loaded == 11 and again.quarantined == 5


def test_default_export_time_is_file_mtime_in_utc(conn, tmp_path):
    path = write_export(tmp_path, export_doc([msg(1, text="hi")]))
    mtime = datetime(2026, 11, 2, 8, 30, tzinfo=UTC).timestamp()
    os.utime(path, (mtime, mtime))
    load = load_desktop_export(conn, path)
    assert load.exported_at == datetime(2026, 11, 2, 8, 30)
    assert rows(conn, "SELECT observed_at FROM raw.post_snapshots") == [(load.exported_at,)]
    load_desktop_export(conn, path)
    assert table_counts(conn)["post_snapshots"] == 1


@pytest.mark.parametrize(
    ("content", "reason_start"),
    [
        ('{"name": "x", "messages": [', "unreadable json file"),
        ("", "unreadable json file"),
        ("[1, 2]", "not a Telegram Desktop export"),
        (
            '{"about": "full account export", "chats": {"list": []}}',
            "not a single-chat Telegram Desktop export",
        ),
        ('{"name": "x", "type": "personal_chat", "id": 5, "messages": []}', "not a channel export"),
        ('{"name": "x", "type": "public_channel", "messages": []}', "missing or bad channel id"),
    ],
)
def test_unusable_file_is_one_quarantine_record(conn, tmp_path, content, reason_start):
    path = write_export(tmp_path, content)
    load = load_desktop_export(conn, path, exported_at=EXPORTED_AT)
    assert load.file_rejected.startswith(reason_start) and load.quarantined == 1
    counts = table_counts(conn)
    assert counts == {"channels": 0, "posts": 0, "post_snapshots": 0, "quarantine": 1}
    record = json.loads(rows(conn, "SELECT record FROM raw.quarantine")[0][0])
    assert record["file"] == "result.json"
    load_desktop_export(conn, path, exported_at=EXPORTED_AT)
    assert table_counts(conn)["quarantine"] == 1


def test_non_utf8_file_is_rejected_whole(conn, tmp_path):
    path = tmp_path / "result.json"
    path.write_bytes(b'{"name": "\xff\xfe"}')
    load = load_desktop_export(conn, path, exported_at=EXPORTED_AT)
    assert load.file_rejected.startswith("not UTF-8")


def test_duplicate_ids_collapse_or_conflict(conn, tmp_path):
    doc = export_doc([msg(1, text="same"), msg(1, text="same"), msg(2, text="a"), msg(2, text="b")])
    load = load_desktop_export(conn, write_export(tmp_path, doc), exported_at=EXPORTED_AT)
    assert load.duplicates_collapsed == 1 and load.posts_loaded == 1
    assert rows(conn, "SELECT reason, count(*) FROM raw.quarantine GROUP BY ALL") == [
        ("duplicate key with conflicting values", 2)
    ]


def test_channel_username_from_other_sources_is_kept(conn, tmp_path):
    ensure_schema(conn)
    conn.execute("INSERT INTO raw.channels VALUES (1234567890, 'pulse', 'Old title', TIMESTAMP '2020-01-01')")
    load_desktop_export(conn, write_export(tmp_path, export_doc([msg(1)])), exported_at=EXPORTED_AT)
    assert rows(conn, "SELECT * FROM raw.channels") == [
        (1234567890, "pulse", "Pulse News", datetime(2020, 1, 1))
    ]


def test_snapshot_rules_match_the_landing_loader(conn, tmp_path):
    """Export snapshots never break the blocking quality checks, old or new data alike."""
    ensure_schema(conn)
    published = datetime.fromtimestamp(T0, UTC).replace(tzinfo=None)
    conn.execute(
        "INSERT INTO raw.posts VALUES (1234567890, 1, $p, 'x', 'none'), (1234567890, 2, $p, 'y', 'none')",
        {"p": published},
    )
    conn.execute(  # collector snapshots: post 1 had 9 reactions before the export
        "INSERT INTO raw.post_snapshots VALUES "
        "(1234567890, 1, TIMESTAMP '2026-10-30 00:00', 100, 3, 1, 9), "
        "(1234567890, 2, TIMESTAMP '2026-10-30 00:00', 50, 1, 0, 1)"
    )
    doc = export_doc(
        [
            msg(1, text="x", reactions=[{"type": "emoji", "count": 4}]),
            msg(2, text="y", reactions=[{"type": "emoji", "count": 2}]),
            msg(3, 10 * 86400, text="published after the export time"),
        ]
    )
    load = load_desktop_export(conn, write_export(tmp_path, doc), exported_at=EXPORTED_AT)
    assert (load.snapshots_loaded, load.snapshots_quarantined) == (1, 2)
    reasons = dict(
        rows(
            conn,
            "SELECT json_extract(record, '$.post_id')::INT, reason "
            "FROM raw.quarantine WHERE target_table = 'post_snapshots'",
        )
    )
    assert reasons[1] == "counter decreased: reactions 4 < 9 at an earlier snapshot"
    assert reasons[3].startswith("snapshot before post published")
    assert rows(conn, "SELECT count(*) FROM raw.posts")[0][0] == 3  # posts still load

    # Later landing CSV with views: the NULL-view export row neither blocks nor hides it.
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "post_snapshots.csv").write_text(
        "channel_id,post_id,observed_at,views,forwards,replies,reactions\n"
        "1234567890,2,2026-11-02 00:00:00,60,1,0,2\n"
        "1234567890,2,2026-11-03 00:00:00,40,1,0,2\n"
    )
    report = load_landing(conn, landing, tables=["post_snapshots"])
    assert report.tables["post_snapshots"].rows_loaded == 1  # 40 < 60 still caught
    for rule in (quality.negative_counters, quality.decreasing_counters, quality.snapshots_before_post):
        assert rule(conn).passed


def test_find_exports_walks_subfolders(tmp_path):
    older = write_export(tmp_path / "ChannelExport_2026-10-01", export_doc([]))
    newer = write_export(tmp_path, export_doc([]))
    write_export(tmp_path / ".hidden", export_doc([]))
    write_export(tmp_path, export_doc([]), name="posts.json")
    os.utime(older, (1_000_000, 1_000_000))
    assert find_exports(tmp_path) == [older.resolve(), newer.resolve()]
    assert find_exports(tmp_path / "missing") == []
