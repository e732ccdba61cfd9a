"""Landing-folder import: good rows load, every bad record lands in quarantine."""

from __future__ import annotations

import textwrap
from datetime import date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warehouse import landing
from warehouse.landing import landing_files, load_landing
from warehouse.schema import RAW_TABLES

ALL_TABLES = (*RAW_TABLES, "quarantine")


def write(path: Path, text: str) -> Path:
    """Write a CSV fixture given as an indented block."""
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def write_snapshots_parquet(path: Path, rows: list[tuple]) -> Path:
    """post_snapshots rows (channel, post, observed_at, views, forwards, replies, reactions)."""
    names = ["channel_id", "post_id", "observed_at", "views", "forwards", "replies", "reactions"]
    columns = list(zip(*rows, strict=True))
    pq.write_table(pa.table(dict(zip(names, columns, strict=True))), path)
    return path


def counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM raw.{t}").fetchone()[0] for t in ALL_TABLES}


def reasons(conn: duckdb.DuckDBPyConnection, table: str | None = None) -> list[str]:
    rows = conn.execute(
        "SELECT reason FROM raw.quarantine WHERE $t IS NULL OR target_table = $t ORDER BY reason",
        {"t": table},
    ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def conn():
    connection = duckdb.connect()
    yield connection
    connection.close()


@pytest.fixture
def good_folder(tmp_path: Path) -> Path:
    """One good file per table; timestamps in several accepted spellings."""
    folder = tmp_path / "good"
    folder.mkdir()
    write(
        folder / "channels_export.csv",
        """
        channel_id,username,title,created_at
        1,alpha,Alpha,2025-01-01T00:00:00Z
        2,beta,"Beta, the second",2025-02-01 00:00:00
        """,
    )
    write(
        folder / "posts.csv",
        """
        channel_id,post_id,published_at,text,media_type
        1,10,2026-01-01T10:00:00,hello,photo
        1,11,2026-01-01T12:00:00+02:00,"multi
        line, text",
        """,
    )
    write(  # Unix seconds: read as such in a column of numbers only
        folder / "posts_unix.csv",
        """
        channel_id,post_id,published_at,text,media_type
        2,20,1767261600,x,VIDEO
        """,
    )
    write_snapshots_parquet(
        folder / "post_snapshots_2026-01.parquet",
        [
            (1, 10, datetime(2026, 1, 1, 11), 100, 1, 0, 5),
            (1, 10, datetime(2026, 1, 1, 12), 150, 2, 1, 6),
            (2, 20, datetime(2026, 1, 1, 11), 50, 0, 0, 0),
        ],
    )
    write(
        folder / "channel_daily.csv",
        """
        channel_id,day,subscribers
        1,2026-01-01,1000
        2,2026-01-01,500
        """,
    )
    write(
        folder / "interactions.csv",
        """
        channel_id,post_id,user_id,action,occurred_at
        1,10,100,reaction,2026-01-01T11:30:00
        1,10,101,Reply,2026-01-01T11:45:00
        """,
    )
    return folder


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    """Every kind of bad record, next to the few good ones the checks need."""
    folder = tmp_path / "bad"
    folder.mkdir()
    write(
        folder / "channels.csv",
        """
        channel_id,username,title,created_at
        x,name,title,2025-01-01
        3,a,b,garbage
        """,
    )
    write(
        folder / "posts.csv",
        """
        channel_id,post_id,published_at,text,media_type
        1,10,2026-01-01T10:00:00,good,photo
        1,,2026-01-01T10:00:00,no id,photo
        1,abc,2026-01-01T10:00:00,bad id,photo
        1,12,yesterday,bad ts,photo
        1,13,2026-01-01T10:00:00,gif,gif
        1,14,2026-01-01T10:00:00,first,photo
        1,14,2026-01-01T11:00:00,second,photo
        """,
    )
    write(
        folder / "post_snapshots.csv",
        """
        channel_id,post_id,observed_at,views,forwards,replies,reactions
        1,10,2026-01-01T11:00:00,150,1,0,0
        1,10,2026-01-01T12:00:00,120,1,0,0
        1,10,2026-01-01T09:00:00,5,0,0,0
        1,10,2026-01-01T13:00:00,-3,1,0,0
        1,10,2026-01-01T14:00:00,abc,1,0,0
        1,10,2026-01-01T15:00:00,1.5,1,0,0
        ,10,2026-01-01T16:00:00,1,1,1,1
        9,99,2026-01-01T08:00:00,1,0,0,0
        """,
    )
    write(
        folder / "channel_daily.csv",
        """
        channel_id,day,subscribers
        1,2026-13-01,5
        1,2026-01-01,-5
        1,2026-01-02,7
        """,
    )
    write(
        folder / "interactions.csv",
        """
        channel_id,post_id,user_id,action,occurred_at
        1,10,100,like,2026-01-01T11:00:00
        1,10,100,reaction,not-a-date
        1,10,101,REACTION,2026-01-01T11:00:00
        """,
    )
    return folder


def test_landing_files_matches_longest_table_name_first(tmp_path: Path) -> None:
    names = [
        "posts.csv",
        "Posts_2.CSV",
        "post_snapshots_2026-11.parquet",
        "channels_export.csv",
        "channel_daily.parquet",
        "posts.json",
        "readme.md",
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    found = {table: [p.name for p in paths] for table, paths in landing_files(tmp_path).items()}
    assert found == {
        "posts": ["Posts_2.CSV", "posts.csv"],
        "post_snapshots": ["post_snapshots_2026-11.parquet"],
        "channels": ["channels_export.csv"],
        "channel_daily": ["channel_daily.parquet"],
    }


def test_good_folder_loads_fully(conn, good_folder: Path) -> None:
    report = load_landing(conn, good_folder)

    assert counts(conn) == {
        "channels": 2,
        "posts": 3,
        "post_snapshots": 3,
        "channel_daily": 2,
        "interactions": 2,
        "quarantine": 0,
    }
    assert report.missing_tables == [] and report.rejected_files == []
    assert {t: (x.rows_read, x.rows_loaded, x.rows_quarantined) for t, x in report.tables.items()} == {
        "channels": (2, 2, 0),
        "posts": (3, 3, 0),
        "post_snapshots": (3, 3, 0),
        "channel_daily": (2, 2, 0),
        "interactions": (2, 2, 0),
    }
    # offset converted to UTC, unix seconds understood, media_type normalised
    assert conn.execute(
        "SELECT post_id, published_at, text, media_type FROM raw.posts ORDER BY post_id"
    ).fetchall() == [
        (10, datetime(2026, 1, 1, 10), "hello", "photo"),
        (11, datetime(2026, 1, 1, 10), "multi\nline, text", "none"),
        (20, datetime(2026, 1, 1, 10), "x", "video"),
    ]
    assert conn.execute("SELECT title FROM raw.channels WHERE channel_id = 2").fetchone() == (
        "Beta, the second",
    )
    assert conn.execute("SELECT list_sort(list(action)) FROM raw.interactions").fetchone() == (
        ["reaction", "reply"],
    )
    meta = report.as_metadata()
    assert meta["rows_loaded"] == 12 and meta["posts_rows_loaded"] == 3
    assert all(not isinstance(v, dict) for v in meta.values())


def test_bad_records_are_quarantined_with_reasons(conn, bad_folder: Path) -> None:
    report = load_landing(conn, bad_folder)

    assert reasons(conn, "channels") == [
        "bad type: channel_id='x' is not an integer",
        "bad type: created_at='garbage' is not a timestamp",
    ]
    assert reasons(conn, "posts") == [
        "bad media_type: 'gif'",
        "bad type: post_id='abc' is not an integer",
        "bad type: published_at='yesterday' is not a timestamp",
        "duplicate key with conflicting values",
        "duplicate key with conflicting values",
        "missing key: post_id",
    ]
    assert reasons(conn, "post_snapshots") == [
        "bad type: views='1.5' is not an integer",
        "bad type: views='abc' is not an integer",
        "counter decreased: views 120 < 150 at an earlier snapshot",
        "missing key: channel_id",
        "negative counter: views=-3",
        "post not yet known: post (9, 99) is not in raw.posts; the snapshot waits here and"
        " is retried on every load",
        "snapshot before post published: observed_at 2026-01-01 09:00:00 < published_at 2026-01-01 10:00:00",
    ]
    assert reasons(conn, "channel_daily") == [
        "bad type: day='2026-13-01' is not a date",
        "negative counter: subscribers=-5",
    ]
    assert reasons(conn, "interactions") == [
        "bad action: 'like'",
        "bad type: occurred_at='not-a-date' is not a timestamp",
    ]
    # only the good records made it; the snapshot of an unknown post waits in quarantine
    assert counts(conn) == {
        "channels": 0,
        "posts": 1,
        "post_snapshots": 1,
        "channel_daily": 1,
        "interactions": 1,
        "quarantine": 19,
    }
    assert conn.execute("SELECT post_id FROM raw.posts").fetchall() == [(10,)]
    assert conn.execute(
        "SELECT post_id, observed_at, views FROM raw.post_snapshots ORDER BY post_id"
    ).fetchall() == [(10, datetime(2026, 1, 1, 11), 150)]
    assert conn.execute("SELECT day, subscribers FROM raw.channel_daily").fetchall() == [
        (date(2026, 1, 2), 7)
    ]
    assert report.tables["posts"].rows_quarantined == 6
    # the quarantine keeps the original values and where they came from
    source, record = conn.execute(
        "SELECT source, record FROM raw.quarantine WHERE reason = 'bad media_type: ''gif'''"
    ).fetchone()
    assert source == str(bad_folder / "posts.csv")
    assert record == (
        '{"channel_id":"1","post_id":"13","published_at":"2026-01-01T10:00:00",'
        '"text":"gif","media_type":"gif"}'
    )


def test_all_problems_of_a_record_are_listed(conn, tmp_path: Path) -> None:
    write(
        tmp_path / "post_snapshots.csv",
        """
        channel_id,post_id,observed_at,views,forwards
        ,abc,2026-01-01,-1,-2
        """,
    )
    load_landing(conn, tmp_path)
    assert reasons(conn) == [
        "missing key: channel_id; bad type: post_id='abc' is not an integer; "
        "negative counter: views=-1; negative counter: forwards=-2"
    ]


def test_mixed_csv_keeps_good_rows_and_quarantines_broken_lines(conn, tmp_path: Path) -> None:
    good = "\n".join(f"1,{i},2026-01-01T10:00:00,post {i},photo" for i in range(1, 11))
    (tmp_path / "posts.csv").write_text(
        "channel_id,post_id,published_at,text,media_type\n"
        f"{good}\n"
        "1,50,2026-01-01T10:00:00,too,many,columns\n"  # line 12: parse reject
        "1,51\n"  # line 13: parse reject
        "1,52,2026-01-01T10:00:00,bad media,gif\n"  # value reject
        "1,1,2026-01-01T10:00:00,post 1,photo\n"  # exact duplicate of post 1
        '1,11,2026-01-01T10:00:00,"quoted\nnewline",video\n'  # good, spans two lines
        '1,12,2026-01-01T10:00:00,"never closed,photo\n',  # unterminated quote
        encoding="utf-8",
    )
    report = load_landing(conn, tmp_path)

    load = report.tables["posts"]
    assert (load.rows_read, load.rows_loaded, load.rows_quarantined, load.rows_duplicate) == (
        16,
        11,
        4,
        1,
    )
    assert counts(conn)["posts"] == 11
    assert conn.execute("SELECT max(post_id) FROM raw.posts").fetchone() == (11,)
    rejected = reasons(conn, "posts")
    assert len(rejected) == 4
    assert rejected[0] == "bad media_type: 'gif'"
    assert [r.split(":")[0] for r in rejected[1:]] == ["unparseable CSV line 12"] + [
        "unparseable CSV line 13",
        "unparseable CSV line 18",
    ]
    assert conn.execute("SELECT record FROM raw.quarantine WHERE reason LIKE '%line 13%'").fetchone() == (
        '{"line":13,"csv_line":"1,51"}',
    )


def test_unreadable_files_are_rejected_whole_and_others_load(conn, tmp_path: Path) -> None:
    write(
        tmp_path / "posts.csv",
        """
        channel_id,post_id,published_at
        1,10,2026-01-01T10:00:00
        """,
    )
    good_parquet = write_snapshots_parquet(
        tmp_path / "post_snapshots_a.parquet", [(1, 10, datetime(2026, 1, 1, 11), 1, 0, 0, 0)]
    )
    data = good_parquet.read_bytes()
    (tmp_path / "post_snapshots_b.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "posts_cp1251.csv").write_bytes("channel_id,post_id,text\n1,11,Привет\n".encode("cp1251"))
    (tmp_path / "posts_garbage.csv").write_bytes(bytes(range(256)) * 4)
    write(tmp_path / "posts_text.csv", "just some\nnotes here\n")
    (tmp_path / "posts_empty.csv").write_bytes(b"")
    write(tmp_path / "channels.csv", "channel_id,username\n")

    report = load_landing(conn, tmp_path)

    assert counts(conn) == {
        "channels": 0,
        "posts": 1,
        "post_snapshots": 1,
        "channel_daily": 0,
        "interactions": 0,
        "quarantine": 6,
    }
    assert sorted(Path(f).name for f in report.rejected_files) == [
        "channels.csv",
        "post_snapshots_b.parquet",
        "posts_cp1251.csv",
        "posts_empty.csv",
        "posts_garbage.csv",
        "posts_text.csv",
    ]
    rows = conn.execute("SELECT source, reason FROM raw.quarantine ORDER BY source").fetchall()
    by_file = {Path(source).name: reason for source, reason in rows}
    assert by_file["channels.csv"] == "empty file: no records"
    assert by_file["posts_empty.csv"] == "empty file: no records"
    assert by_file["posts_cp1251.csv"] == "not UTF-8 encoded: invalid byte at offset 29"
    assert by_file["posts_garbage.csv"].startswith("not UTF-8 encoded")
    assert by_file["posts_text.csv"] == "missing key column(s): channel_id, post_id"
    assert by_file["post_snapshots_b.parquet"].startswith("unreadable parquet file: ")
    assert len(rows) == 6
    assert report.tables["posts"].rows_loaded == 1


def test_second_load_changes_nothing(conn, good_folder: Path, bad_folder: Path) -> None:
    for folder, rejected in ((good_folder, 0), (bad_folder, 6)):
        load_landing(conn, folder)
        before = counts(conn)
        state = conn.execute("SELECT * FROM raw.post_snapshots ORDER BY ALL").fetchall()

        second = load_landing(conn, folder)

        assert counts(conn) == before
        assert conn.execute("SELECT * FROM raw.post_snapshots ORDER BY ALL").fetchall() == state
        # rejects are still reported, but not inserted into the quarantine again
        assert second.tables["posts"].rows_quarantined == rejected


def test_snapshot_checks_see_earlier_loads(conn, tmp_path: Path) -> None:
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    write(first / "posts.csv", "channel_id,post_id,published_at\n1,10,2026-01-01T10:00:00\n")
    write_snapshots_parquet(
        first / "post_snapshots.parquet", [(1, 10, datetime(2026, 1, 1, 11), 150, 5, 0, 0)]
    )
    load_landing(conn, first)
    write_snapshots_parquet(
        later / "post_snapshots.parquet",
        [
            (1, 10, datetime(2026, 1, 1, 9), 1, 0, 0, 0),  # before the stored post
            (1, 10, datetime(2026, 1, 1, 10, 30), 200, 1, 0, 0),  # above a later stored one
            (1, 10, datetime(2026, 1, 1, 12), 100, 6, 0, 0),  # below an earlier stored one
            (1, 10, datetime(2026, 1, 1, 13), 160, 6, 0, 0),  # fine
        ],
    )
    report = load_landing(conn, later)

    assert report.tables["post_snapshots"].rows_loaded == 1
    assert reasons(conn) == [
        "counter decreased: views 100 < 150 at an earlier snapshot",
        "counter increased past a stored later snapshot: views 200 > 150",
        "snapshot before post published: observed_at 2026-01-01 09:00:00 < published_at 2026-01-01 10:00:00",
    ]


def test_partial_folder_reports_missing_tables(conn, tmp_path: Path) -> None:
    write(
        tmp_path / "posts.csv",
        """
         Channel_ID ,POST_ID,published_at,mood
        1,10,2026-01-01T10:00:00,happy
        """,
    )
    write_snapshots_parquet(
        tmp_path / "post_snapshots.parquet", [(1, 10, datetime(2026, 1, 1, 11), 7, 0, 0, 0)]
    )
    write(tmp_path / "notes.txt", "hello")
    (tmp_path / "result.json").write_text("{}")

    report = load_landing(conn, tmp_path)

    assert report.missing_tables == ["channels", "channel_daily", "interactions"]
    assert [Path(f).name for f in report.ignored_files] == ["notes.txt", "result.json"]
    assert report.tables["posts"].ignored_columns == {str(tmp_path / "posts.csv"): ["mood"]}
    assert conn.execute("SELECT text, media_type FROM raw.posts").fetchall() == [(None, "none")]
    assert counts(conn)["post_snapshots"] == 1
    meta = report.as_metadata()
    assert meta["missing_tables"] == ["channels", "channel_daily", "interactions"]
    assert meta["posts_ignored_columns"] == ["mood"]


def test_tables_argument_limits_the_load(conn, good_folder: Path) -> None:
    report = load_landing(conn, good_folder, tables=["posts"])
    assert list(report.tables) == ["posts"]
    assert counts(conn)["channels"] == 0 and counts(conn)["posts"] == 3
    assert len(report.ignored_files) == 4
    with pytest.raises(ValueError, match="unknown raw table"):
        load_landing(conn, good_folder, tables=["nope"])


def test_parquet_and_csv_give_the_same_rows(tmp_path: Path) -> None:
    csv_dir, pq_dir = tmp_path / "csv", tmp_path / "pq"
    csv_dir.mkdir()
    pq_dir.mkdir()
    write(
        csv_dir / "posts.csv",
        """
        channel_id,post_id,published_at,text,media_type
        1,10,2026-01-01T10:00:00Z,hello,photo
        1,11,2026-01-02T08:30:00Z,,
        """,
    )
    published = pa.array(
        [datetime(2026, 1, 1, 10), datetime(2026, 1, 2, 8, 30)], pa.timestamp("us", tz="UTC")
    )
    pq.write_table(
        pa.table(
            {
                "channel_id": pa.array([1, 1], pa.int64()),
                "post_id": pa.array([10.0, 11.0]),  # float ids, as pandas writes them
                "published_at": published,
                "text": ["hello", None],
                "media_type": ["photo", None],
            }
        ),
        pq_dir / "posts.parquet",
    )
    tables = []
    for folder in (csv_dir, pq_dir):
        with duckdb.connect() as conn:
            load_landing(conn, folder)
            tables.append(conn.execute("SELECT * FROM raw.posts ORDER BY post_id").fetchall())
    assert tables[0] == tables[1]
    assert len(tables[0]) == 2


def test_failure_rolls_back_the_whole_load(
    conn, good_folder: Path, bad_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_landing(conn, bad_folder)
    before = counts(conn)

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(landing, "_flush_quarantine", boom)  # runs after every table upserted
    with pytest.raises(RuntimeError, match="disk on fire"):
        load_landing(conn, good_folder)

    assert counts(conn) == before
    monkeypatch.undo()
    load_landing(conn, good_folder)  # connection is usable again
    assert counts(conn)["channels"] == 2
