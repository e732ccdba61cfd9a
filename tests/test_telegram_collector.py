"""Telegram collector against a fake client with Telethon's shapes: never touches the network."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import duckdb
import pytest

from resources.telegram_collector import TelegramCollector
from resources.warehouse import DuckDBWarehouse
from warehouse import quality
from warehouse.telegram_collect import (
    CollectPolicy,
    TelegramCredentialsError,
    TelethonSyncClient,
    collect,
    credentials_from_env,
    flood_wait_seconds,
    media_type,
)

NOW = datetime(2026, 11, 1, 12, 0)  # naive UTC, the warehouse's convention
CHANNEL_ID = 1234567890


# --------------------------------------------------------------------------- Telethon-shaped fakes
# Class names matter: the collector maps media and attributes by Telethon's class names.


class MessageMediaPhoto:
    """Fake of Telethon's MessageMediaPhoto (the collector maps by class name)."""


class MessageMediaPoll:
    """Fake of Telethon's MessageMediaPoll (the collector maps by class name)."""


class MessageMediaWebPage:
    """Fake of Telethon's MessageMediaWebPage (the collector maps by class name)."""


class MessageMediaGeo:
    """Fake of Telethon's MessageMediaGeo (the collector maps by class name)."""


class DocumentAttributeVideo:
    """Fake of Telethon's DocumentAttributeVideo (the collector maps by class name)."""


class DocumentAttributeAnimated:
    """Fake of Telethon's DocumentAttributeAnimated (the collector maps by class name)."""


class DocumentAttributeAudio:
    """Fake of Telethon's DocumentAttributeAudio (the collector maps by class name)."""


class DocumentAttributeSticker:
    """Fake of Telethon's DocumentAttributeSticker (the collector maps by class name)."""


class DocumentAttributeFilename:
    """Fake of Telethon's DocumentAttributeFilename (the collector maps by class name)."""


class MessageMediaDocument:
    def __init__(self, *attributes):
        self.document = SimpleNamespace(attributes=list(attributes))


class FloodWaitError(Exception):
    """Same name and ``.seconds`` as telethon.errors.FloodWaitError."""

    def __init__(self, seconds):
        super().__init__(f"A wait of {seconds} seconds is required")
        self.seconds = seconds


def message(post_id, published, views=100, forwards=2, replies=1, reactions=(3, 4), text="hello", media=None):
    """A Telethon Message look-alike."""
    return SimpleNamespace(
        id=post_id,
        date=published.replace(tzinfo=UTC),  # Telethon gives aware UTC datetimes
        message=text,
        views=views,
        forwards=forwards,
        replies=None if replies is None else SimpleNamespace(replies=replies),
        reactions=None
        if reactions is None
        else SimpleNamespace(results=[SimpleNamespace(count=c) for c in reactions]),
        media=media,
        action=None,
    )


class FakeClient:
    """Synchronous client with Telethon's method names; scripted failures per call."""

    def __init__(self, channels: dict[str, list], subscribers: int = 5000):
        self.channels = channels
        self.subscribers = subscribers
        self.failures: dict[tuple[str, str], list[Exception]] = {}
        self.calls: list[tuple] = []

    def _maybe_fail(self, method: str, username: str) -> None:
        pending = self.failures.get((method, username))
        if pending:
            raise pending.pop(0)

    def get_entity(self, username):
        self.calls.append(("get_entity", username))
        self._maybe_fail("get_entity", username)
        if username not in self.channels:
            raise ValueError(f'No user has "{username}" as username')
        index = sorted(self.channels).index(username)
        return SimpleNamespace(
            id=CHANNEL_ID + index, username=username.lstrip("@"), title=f"Title of {username}"
        )

    def get_full_channel(self, entity):
        self.calls.append(("get_full_channel", entity.username))
        return SimpleNamespace(full_chat=SimpleNamespace(participants_count=self.subscribers))

    def iter_messages(self, entity, limit, offset_date):
        self.calls.append(("iter_messages", entity.username, limit, offset_date))
        self._maybe_fail("iter_messages", entity.username)
        msgs = [m for m in self.channels[entity.username] if m.date < offset_date]
        return iter(sorted(msgs, key=lambda m: m.date, reverse=True)[:limit])


@pytest.fixture
def conn():
    connection = duckdb.connect()
    yield connection
    connection.close()


def snapshots(conn, post_id=None) -> list[tuple]:
    return conn.execute(
        "SELECT post_id, observed_at, views, forwards, replies, reactions FROM raw.post_snapshots "
        "WHERE $p IS NULL OR post_id = $p ORDER BY post_id, observed_at",
        {"p": post_id},
    ).fetchall()


def run(conn, client, now, channels=("news",), **policy):
    return collect(conn, client, list(channels), now, CollectPolicy(**policy), sleep=lambda s: None)


# --------------------------------------------------------------------------- what gets written


def test_first_collection_writes_channel_posts_subscribers_and_counters(conn):
    client = FakeClient(
        {
            "news": [
                message(1, NOW - timedelta(hours=1), views=120, forwards=3, replies=2, reactions=(5, 1)),
                message(
                    2,
                    NOW - timedelta(days=2),
                    views=900,
                    forwards=None,
                    replies=None,
                    reactions=None,
                    text="",
                    media=MessageMediaPhoto(),
                ),
            ]
        },
        subscribers=4321,
    )
    report = run(conn, client, NOW)

    news = report.channels["news"]
    assert (news.posts_seen, news.snapshots_written, news.error) == (2, 2, None)
    assert conn.execute("SELECT * FROM raw.channels").fetchall() == [
        (CHANNEL_ID, "news", "Title of news", None)
    ]
    assert conn.execute("SELECT * FROM raw.channel_daily").fetchall() == [
        (CHANNEL_ID, date(2026, 11, 1), 4321)
    ]
    assert conn.execute(
        "SELECT post_id, published_at, text, media_type FROM raw.posts ORDER BY post_id"
    ).fetchall() == [
        (1, NOW - timedelta(hours=1), "hello", "none"),
        (2, NOW - timedelta(days=2), "", "photo"),
    ]
    # no discussion group / no reactions are zero; unreported forwards stay unknown
    assert snapshots(conn) == [(1, NOW, 120, 3, 2, 6), (2, NOW, 900, None, 0, 0)]
    assert client.calls[-1] == ("iter_messages", "news", 200, NOW.replace(tzinfo=UTC))


@pytest.mark.parametrize(
    ("media", "expected"),
    [
        (None, "none"),
        (MessageMediaPhoto(), "photo"),
        (MessageMediaPoll(), "poll"),
        (MessageMediaWebPage(), "none"),
        (MessageMediaGeo(), "other"),
        (MessageMediaDocument(DocumentAttributeVideo(), DocumentAttributeFilename()), "video"),
        (MessageMediaDocument(DocumentAttributeAnimated(), DocumentAttributeVideo()), "video"),
        (MessageMediaDocument(DocumentAttributeAudio()), "other"),
        (MessageMediaDocument(DocumentAttributeSticker()), "other"),
        (MessageMediaDocument(DocumentAttributeFilename()), "document"),
    ],
)
def test_media_mapping(media, expected):
    assert media_type(media) == expected


def test_service_messages_are_not_posts(conn):
    pinned = message(2, NOW - timedelta(minutes=30))
    pinned.action = SimpleNamespace(kind="pin")
    report = run(conn, FakeClient({"news": [message(1, NOW - timedelta(hours=1)), pinned]}), NOW)
    assert report.channels["news"].posts_seen == 1
    assert [r[0] for r in snapshots(conn)] == [1]


# --------------------------------------------------------------------------- cadence


def test_young_post_is_polled_again_after_five_minutes(conn):
    post = message(1, NOW - timedelta(minutes=30), views=100)
    client = FakeClient({"news": [post]})
    run(conn, client, NOW)
    post.views = 150
    soon = run(conn, client, NOW + timedelta(minutes=4))
    assert soon.channels["news"].not_due == 1
    later = run(conn, client, NOW + timedelta(minutes=5))
    assert later.channels["news"].snapshots_written == 1
    assert [r[2] for r in snapshots(conn)] == [100, 150]


def test_day_old_post_waits_an_hour_and_week_old_post_is_not_repolled(conn):
    day_old = message(1, NOW - timedelta(hours=10), views=500)
    week_old = message(2, NOW - timedelta(days=8), views=900)
    client = FakeClient({"news": [day_old, week_old]})
    run(conn, client, NOW)  # first observation of both, even the old one
    day_old.views, week_old.views = 600, 950
    early = run(conn, client, NOW + timedelta(minutes=59)).channels["news"]
    assert (early.snapshots_written, early.not_due) == (0, 2)
    hourly = run(conn, client, NOW + timedelta(hours=1)).channels["news"]
    assert (hourly.snapshots_written, hourly.not_due) == (1, 1)
    assert [r[2] for r in snapshots(conn, 1)] == [500, 600]
    assert [r[2] for r in snapshots(conn, 2)] == [900]


def test_three_day_old_post_is_polled_daily(conn):
    post = message(1, NOW - timedelta(days=3), views=500)
    client = FakeClient({"news": [post]})
    run(conn, client, NOW)
    post.views = 510
    assert run(conn, client, NOW + timedelta(hours=23)).channels["news"].not_due == 1
    assert run(conn, client, NOW + timedelta(hours=24)).channels["news"].snapshots_written == 1


def test_cadence_tiers_boundaries():
    policy = CollectPolicy()
    minutes, hours, days = (timedelta(minutes=1), timedelta(hours=1), timedelta(days=1))
    assert policy.is_due(10 * days, None)  # never snapshotted: always due
    assert not policy.is_due(-minutes, None)  # published after the collection clock
    assert policy.is_due(2 * hours, 5 * minutes) and not policy.is_due(2 * hours, 4 * minutes)
    assert not policy.is_due(3 * hours, 59 * minutes) and policy.is_due(3 * hours, hours)
    assert not policy.is_due(6 * days, 23 * hours) and policy.is_due(6 * days, days)
    assert not policy.is_due(7 * days, 30 * days)


def test_unchanged_counters_are_not_stored_again(conn):
    post = message(1, NOW - timedelta(minutes=20))
    client = FakeClient({"news": [post]})
    run(conn, client, NOW)
    same = run(conn, client, NOW + timedelta(minutes=10)).channels["news"]
    assert (same.unchanged_skipped, same.snapshots_written) == (1, 0)
    post.forwards += 1
    changed = run(conn, client, NOW + timedelta(minutes=15)).channels["news"]
    assert changed.snapshots_written == 1
    assert len(snapshots(conn)) == 2


def test_unchanged_post_is_still_stored_once_past_each_feature_age(conn):
    post = message(1, NOW - timedelta(minutes=50))
    client = FakeClient({"news": [post]})
    run(conn, client, NOW)
    before_1h = run(conn, client, NOW + timedelta(minutes=9)).channels["news"]
    past_1h = run(conn, client, NOW + timedelta(minutes=11)).channels["news"]
    again = run(conn, client, NOW + timedelta(minutes=20)).channels["news"]
    assert (before_1h.unchanged_skipped, past_1h.snapshots_written, again.unchanged_skipped) == (1, 1, 1)
    policy = CollectPolicy()
    assert policy.keeps_unchanged(timedelta(hours=47), timedelta(hours=71))
    assert not policy.keeps_unchanged(timedelta(hours=49), timedelta(hours=73))


def test_withdrawn_reactions_never_make_counters_decrease(conn):
    post = message(1, NOW - timedelta(minutes=20), views=100, reactions=(5,))
    client = FakeClient({"news": [post]})
    run(conn, client, NOW)
    post.views, post.reactions.results[0].count = 130, 3
    result = run(conn, client, NOW + timedelta(minutes=5)).channels["news"]
    assert result.counters_clamped == 1
    assert snapshots(conn)[-1][2:] == (130, 2, 1, 5)
    assert quality.decreasing_counters(conn).passed
    assert quality.snapshots_before_post(conn).passed


def test_same_clock_twice_changes_nothing(conn):
    client = FakeClient({"news": [message(1, NOW - timedelta(hours=1))]})
    run(conn, client, NOW)
    before = conn.execute("SELECT count(*) FROM raw.post_snapshots").fetchall()
    again = run(conn, client, NOW).channels["news"]
    assert again.not_due == 1
    assert conn.execute("SELECT count(*) FROM raw.post_snapshots").fetchall() == before


# --------------------------------------------------------------------------- failures


def test_flood_wait_is_slept_out_then_retried(conn):
    client = FakeClient({"news": [message(1, NOW - timedelta(hours=1))]})
    client.failures[("iter_messages", "news")] = [FloodWaitError(42)]
    slept: list[float] = []
    report = collect(conn, client, ["news"], NOW, CollectPolicy(), sleep=slept.append)
    assert slept == [42]
    news = report.channels["news"]
    assert (news.error, news.snapshots_written, news.flood_wait_seconds) == (None, 1, 42)


def test_flood_wait_above_cap_or_twice_fails_only_that_channel(conn):
    client = FakeClient(
        {"news": [message(1, NOW - timedelta(hours=1))], "tech": [message(7, NOW - timedelta(hours=2))]}
    )
    client.failures[("iter_messages", "news")] = [FloodWaitError(3600)]
    slept: list[float] = []
    report = collect(
        conn, client, ["news", "tech"], NOW, CollectPolicy(flood_wait_cap_seconds=60), sleep=slept.append
    )
    assert slept == []
    assert report.errors["news"].startswith("FloodWaitTooLong: flood wait of 3600 s")
    assert report.channels["tech"].snapshots_written == 1

    client.failures[("get_entity", "news")] = [FloodWaitError(5), FloodWaitError(5)]
    again = collect(conn, client, ["news"], NOW, CollectPolicy(), sleep=slept.append)
    assert slept == [5] and "FloodWaitError" in again.errors["news"]  # retried once only


def test_one_failing_channel_does_not_stop_the_others(conn):
    client = FakeClient(
        {"news": [message(1, NOW - timedelta(hours=1))], "tech": [message(7, NOW - timedelta(hours=2))]}
    )
    report = run(conn, client, NOW, channels=("news", "@gone", "tech"))
    assert set(report.errors) == {"@gone"}
    assert report.errors["@gone"].startswith("ValueError: No user has")
    assert report.total("snapshots_written") == 2
    assert report.as_metadata()["errors"] == report.errors


def test_failure_while_writing_leaves_nothing_partial(conn, monkeypatch):
    def broken_plan(*args, **kwargs):  # fails after channel, posts and daily rows were written
        raise RuntimeError("disk full")

    monkeypatch.setattr("warehouse.telegram_collect._plan_snapshots", broken_plan)
    report = run(conn, FakeClient({"news": [message(1, NOW - timedelta(hours=1))]}), NOW)
    assert report.errors == {"news": "RuntimeError: disk full"}
    for table in ("channels", "posts", "channel_daily", "post_snapshots"):
        assert conn.execute(f"SELECT count(*) FROM raw.{table}").fetchall() == [(0,)]


def test_flood_wait_detection_matches_telethon():
    errors = pytest.importorskip("telethon.errors")
    assert flood_wait_seconds(errors.FloodWaitError(request=None, capture=17)) == 17
    assert flood_wait_seconds(errors.FloodPremiumWaitError(request=None, capture=3)) == 3
    assert flood_wait_seconds(FloodWaitError(9)) == 9
    assert flood_wait_seconds(ValueError("x")) is None


def test_real_telethon_flood_wait_is_retried(conn):
    errors = pytest.importorskip("telethon.errors")
    client = FakeClient({"news": [message(1, NOW - timedelta(hours=1))]})
    client.failures[("get_entity", "news")] = [errors.FloodWaitError(request=None, capture=2)]
    slept: list[float] = []
    report = collect(conn, client, ["news"], NOW, CollectPolicy(), sleep=slept.append)
    assert slept == [2] and not report.errors


# --------------------------------------------------------------------------- credentials and adapter


FULL_ENV = {"TELEGRAM_API_ID": "12345", "TELEGRAM_API_HASH": "abcdef", "TELEGRAM_SESSION": "1Aabc"}


@pytest.mark.parametrize("missing", ["TELEGRAM_API_ID", "TELEGRAM_API_HASH", "TELEGRAM_SESSION"])
def test_missing_credential_is_named(missing):
    env = {k: v for k, v in FULL_ENV.items() if k != missing}
    with pytest.raises(TelegramCredentialsError, match=f"missing environment variable.*{missing}"):
        credentials_from_env(env)


def test_credentials_are_read_and_not_printed():
    creds = credentials_from_env(FULL_ENV)
    assert (creds.api_id, creds.api_hash, creds.session) == (12345, "abcdef", "1Aabc")
    assert "abcdef" not in repr(creds) and "1Aabc" not in repr(creds)
    with pytest.raises(TelegramCredentialsError, match="TELEGRAM_API_ID must be an integer"):
        credentials_from_env({**FULL_ENV, "TELEGRAM_API_ID": "abc"})


def test_resource_fails_clearly_without_credentials(tmp_path, monkeypatch):
    for name in FULL_ENV:
        monkeypatch.delenv(name, raising=False)
    resource = TelegramCollector(channels=["news"], max_messages=50)
    with pytest.raises(TelegramCredentialsError, match="TELEGRAM_API_ID, TELEGRAM_API_HASH"):
        resource.collect(DuckDBWarehouse(path=str(tmp_path / "w.duckdb")))
    assert resource.policy() == CollectPolicy(max_messages=50)


def test_resource_rejects_a_malformed_session_before_connecting(tmp_path, monkeypatch):
    pytest.importorskip("telethon")
    for name, value in FULL_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TELEGRAM_SESSION", "not a session")
    with pytest.raises(TelegramCredentialsError, match="not a valid Telethon StringSession"):
        TelegramCollector(channels=["news"]).collect(DuckDBWarehouse(path=str(tmp_path / "w.duckdb")))


def test_resource_reads_then_writes_the_warehouse(tmp_path, monkeypatch):
    for name, value in FULL_ENV.items():
        monkeypatch.setenv(name, value)
    fake = FakeClient({"news": [message(1, NOW - timedelta(hours=1), views=321)]})

    @contextmanager
    def fake_telethon_client(credentials):
        assert credentials.api_id == 12345
        yield fake

    monkeypatch.setattr("resources.telegram_collector.telethon_client", fake_telethon_client)
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    report = TelegramCollector(channels=["news"]).collect(warehouse, now=NOW)
    assert report.channels["news"].snapshots_written == 1 and not report.errors
    with warehouse.connect(read_only=True) as conn:
        assert conn.execute("SELECT views FROM raw.post_snapshots").fetchall() == [(321,)]


def test_sync_adapter_drives_an_async_telethon_shaped_client(conn):
    pytest.importorskip("telethon")
    from telethon.tl.functions.channels import GetFullChannelRequest

    class AsyncClient:
        async def get_entity(self, username):
            return SimpleNamespace(id=CHANNEL_ID, username=username, title="Async")

        async def __call__(self, request):
            assert isinstance(request, GetFullChannelRequest)
            return SimpleNamespace(full_chat=SimpleNamespace(participants_count=77))

        def iter_messages(self, entity, limit, offset_date):  # async iterator, as Telethon
            return self._messages(limit)

        async def _messages(self, limit):
            for post_id in range(1, limit + 1):
                yield message(post_id, NOW - timedelta(minutes=post_id))

    loop = asyncio.new_event_loop()
    try:
        adapter = TelethonSyncClient(AsyncClient(), loop)
        report = collect(conn, adapter, ["news"], NOW, CollectPolicy(max_messages=3))
    finally:
        loop.close()
    news = report.channels["news"]
    assert (news.error, news.subscribers, news.snapshots_written) == (None, 77, 3)


def test_real_telethon_message_objects(conn):
    """The collector reads Telethon's own TL objects, not only look-alikes."""
    pytest.importorskip("telethon")
    from telethon.tl import types

    peer = types.PeerChannel(CHANNEL_ID)
    published = (NOW - timedelta(hours=1)).replace(tzinfo=UTC)
    post = types.Message(
        id=1,
        peer_id=peer,
        date=published,
        message="real",
        views=10,
        forwards=1,
        replies=types.MessageReplies(replies=4, replies_pts=0),
        reactions=types.MessageReactions(
            results=[
                types.ReactionCount(reaction=types.ReactionEmoji("👍"), count=3),
                types.ReactionCount(reaction=types.ReactionCustomEmoji(document_id=1), count=2),
            ]
        ),
        media=types.MessageMediaPhoto(),
    )
    pin = types.MessageService(id=2, peer_id=peer, date=published, action=types.MessageActionPinMessage())
    client = FakeClient({"news": []})
    client.iter_messages = lambda entity, limit, offset_date: [post, pin]
    report = run(conn, client, NOW)
    assert report.channels["news"].posts_seen == 1
    assert snapshots(conn) == [(1, NOW, 10, 1, 4, 5)]
    assert conn.execute("SELECT media_type FROM raw.posts").fetchall() == [("photo",)]
