"""Collect live channel metrics from Telegram into the raw tables (DESIGN §2, ``telegram``).

Per channel username the collector reads the channel, its subscriber count
and its recent messages, then upserts ``raw.channels``, ``raw.posts`` and
today's ``raw.channel_daily`` row and appends ``raw.post_snapshots``.

Snapshots follow an age-tiered cadence, because a post's counters move fast in
its first hours and barely at all after a week (the engagement model reads the
first 3 h at 15 min resolution):

====================  ===============================
post age              new snapshot when the last is
====================  ===============================
< 3 h                 >= 5 min old
< 24 h                >= 1 h old
< 7 days              >= 24 h old
older                 never (unless it has none yet)
====================  ===============================

A due snapshot whose counters equal the post's previous snapshot is skipped:
it would add rows, not information. Except at the feature ages (1, 3, 6, 12,
24, 48 h): the feature SQL reads "no snapshot at or after age h" as "not yet
observed", so the first poll past each of those ages is stored even when
unchanged (at most six extra rows per post). Telegram counts reactions as they stand,
so a withdrawn reaction can make a counter go down; the contract's counters
are cumulative and a decrease would fail the blocking ``counters_non_decreasing``
check, so each counter is stored as the highest value seen so far and the
clamp is counted in the report.

``collect`` = ``fetch`` (Telegram only) then ``store`` (DuckDB only, one
transaction per channel), so the warehouse file is not held through network
calls and flood-wait sleeps.

The logic talks to a small *synchronous* client protocol (``ChannelClient``)
with Telethon's names and return shapes, so tests use a plain fake object and
production wraps the asyncio Telethon client in ``TelethonSyncClient``. Telethon
is imported only inside the functions that build the real client (extra
``telegram``). No Dagster here: ``resources.telegram_collector`` is the thin
resource around it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import duckdb

from warehouse import schema

ENV_API_ID = "TELEGRAM_API_ID"
ENV_API_HASH = "TELEGRAM_API_HASH"
ENV_SESSION = "TELEGRAM_SESSION"
CREDENTIAL_VARS = (ENV_API_ID, ENV_API_HASH, ENV_SESSION)
# Telethon's rate-limit errors carry ``.seconds``; matched by name so that this
# module (and fakes in tests) work without Telethon installed.
FLOOD_WAIT_ERRORS = frozenset({"FloodWaitError", "FloodPremiumWaitError"})

T = TypeVar("T")
Counters = tuple[int | None, int | None, int | None, int | None]  # views, forwards, replies, reactions


# --------------------------------------------------------------------------- credentials


class TelegramCredentialsError(RuntimeError):
    """Credentials are missing or unusable; the message names the variable to fix."""


@dataclass(frozen=True, repr=False)
class TelegramCredentials:
    """API id/hash of a Telegram app and a Telethon StringSession (never printed)."""

    api_id: int
    api_hash: str
    session: str

    def __repr__(self) -> str:
        return f"TelegramCredentials(api_id={self.api_id}, api_hash=***, session=***)"


def credentials_from_env(env: Mapping[str, str] | None = None) -> TelegramCredentials:
    """Read the three TELEGRAM_* variables; credentials never come from files in the repo."""
    env = os.environ if env is None else env
    missing = [name for name in CREDENTIAL_VARS if not (env.get(name) or "").strip()]
    if missing:
        raise TelegramCredentialsError(
            f"missing environment variable(s) {', '.join(missing)}: the Telegram collector reads "
            f"its credentials only from {', '.join(CREDENTIAL_VARS)} (api id and hash from "
            "my.telegram.org, session = a Telethon StringSession string)"
        )
    try:
        api_id = int(env[ENV_API_ID].strip())
    except ValueError:
        raise TelegramCredentialsError(f"{ENV_API_ID} must be an integer") from None
    return TelegramCredentials(api_id, env[ENV_API_HASH].strip(), env[ENV_SESSION].strip())


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Tier:
    """Posts younger than ``max_age`` get a new snapshot every ``min_interval``."""

    max_age: timedelta
    min_interval: timedelta


DEFAULT_TIERS = (
    Tier(timedelta(hours=3), timedelta(minutes=5)),
    Tier(timedelta(hours=24), timedelta(hours=1)),
    Tier(timedelta(days=7), timedelta(hours=24)),
)


# Ages at which features.post_features reads a post's counters (its as-of ages).
FEATURE_AGES = tuple(timedelta(hours=h) for h in (1, 3, 6, 12, 24, 48))


@dataclass(frozen=True)
class CollectPolicy:
    """How much to read and how often to snapshot; tiers ordered by ``max_age``."""

    max_messages: int = 200
    flood_wait_cap_seconds: float = 300.0
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    milestones: tuple[timedelta, ...] = FEATURE_AGES

    def is_due(self, age: timedelta, since_last: timedelta | None) -> bool:
        """Whether a post of this age, last snapshotted ``since_last`` ago, needs a snapshot.

        A post never snapshotted is always due (its first observation, even
        when old); one published after the collection time never is.
        """
        if age < timedelta(0):
            return False
        if since_last is None:
            return True
        for tier in self.tiers:
            if age < tier.max_age:
                return since_last >= tier.min_interval
        return False

    def keeps_unchanged(self, last_age: timedelta, age: timedelta) -> bool:
        """Whether an unchanged snapshot must still be stored: a milestone age was crossed."""
        return any(last_age < milestone <= age for milestone in self.milestones)


# --------------------------------------------------------------------------- client protocol


class ChannelClient(Protocol):
    """The synchronous subset of Telethon's client the collector uses."""

    def get_entity(self, username: str) -> Any:
        """The channel (``.id``, ``.username``, ``.title``)."""

    def get_full_channel(self, entity: Any) -> Any:
        """``GetFullChannelRequest`` result: ``.full_chat.participants_count``."""

    def iter_messages(self, entity: Any, limit: int, offset_date: datetime | None) -> Iterable[Any]:
        """Newest first, messages strictly before ``offset_date``, at most ``limit``."""


class TelethonSyncClient:
    """``ChannelClient`` over an asyncio Telethon ``TelegramClient``.

    Each call runs to completion on the client's own event loop, so the
    collector stays plain synchronous code (as Dagster runs it) without
    ``telethon.sync``'s global monkey-patching.
    """

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def _run(self, awaitable: Any) -> Any:
        return self._loop.run_until_complete(awaitable)

    def get_entity(self, username: str) -> Any:
        return self._run(self._client.get_entity(username))

    def get_full_channel(self, entity: Any) -> Any:
        from telethon.tl.functions.channels import GetFullChannelRequest

        return self._run(self._client(GetFullChannelRequest(entity)))

    def iter_messages(self, entity: Any, limit: int, offset_date: datetime | None) -> list[Any]:
        async def gather() -> list[Any]:
            messages = self._client.iter_messages(entity, limit=limit, offset_date=offset_date)
            return [message async for message in messages]

        return self._run(gather())


def _string_session(session: str) -> Any:
    from telethon.sessions import StringSession

    try:
        return StringSession(session)
    except ValueError:
        raise TelegramCredentialsError(
            f"{ENV_SESSION} is not a valid Telethon StringSession string"
        ) from None


@contextmanager
def telethon_client(credentials: TelegramCredentials) -> Iterator[TelethonSyncClient]:
    """A connected, authorised Telethon client on a private event loop (extra ``telegram``).

    ``flood_sleep_threshold=0`` makes Telethon raise every FloodWaitError instead
    of sleeping inside the call, so the collector's capped, reported handling
    is the only one.
    """
    from telethon import TelegramClient

    session = _string_session(credentials.session)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = TelegramClient(session, credentials.api_id, credentials.api_hash, flood_sleep_threshold=0)
    try:
        loop.run_until_complete(client.connect())
        if not loop.run_until_complete(client.is_user_authorized()):
            raise TelegramCredentialsError(
                f"{ENV_SESSION} is not an authorised session: log in once with Telethon and "
                "export StringSession.save(client.session)"
            )
        yield TelethonSyncClient(client, loop)
    finally:
        with suppress(Exception):
            loop.run_until_complete(client.disconnect())
        asyncio.set_event_loop(None)
        loop.close()


# --------------------------------------------------------------------------- report


@dataclass
class ChannelCollect:
    """What one collection did for one channel.

    ``posts_seen = snapshots_written + unchanged_skipped + not_due`` when
    ``error`` is None; a channel with an error wrote nothing.
    """

    channel: str
    channel_id: int | None = None
    subscribers: int | None = None
    posts_seen: int = 0
    snapshots_written: int = 0
    unchanged_skipped: int = 0
    not_due: int = 0
    counters_clamped: int = 0  # snapshots stored with a counter raised to its earlier maximum
    flood_wait_seconds: float = 0.0  # slept on rate limits
    error: str | None = None


@dataclass
class CollectReport:
    """Outcome of one collection run; a channel with ``error`` wrote nothing."""

    observed_at: datetime
    channels: dict[str, ChannelCollect] = field(default_factory=dict)

    @property
    def errors(self) -> dict[str, str]:
        return {name: c.error for name, c in self.channels.items() if c.error}

    def total(self, counter: str) -> int:
        return sum(getattr(c, counter) for c in self.channels.values())

    def as_metadata(self) -> dict:
        """Flat, JSON-able summary for asset metadata."""
        meta: dict = {"observed_at": str(self.observed_at), "errors": self.errors}
        for counter in (
            "posts_seen",
            "snapshots_written",
            "unchanged_skipped",
            "not_due",
            "counters_clamped",
        ):
            meta[counter] = self.total(counter)
        meta["channels"] = {
            name: {k: v for k, v in vars(c).items() if k != "channel"} for name, c in self.channels.items()
        }
        return meta


# --------------------------------------------------------------------------- rate limits


class FloodWaitTooLong(RuntimeError):
    """Telegram asked for a longer wait than the policy allows; the channel is skipped."""


def flood_wait_seconds(error: BaseException) -> int | None:
    """Seconds Telegram asks us to wait, when ``error`` is a flood wait; else None."""
    names = {cls.__name__ for cls in type(error).__mro__}
    seconds = getattr(error, "seconds", None)
    if names & FLOOD_WAIT_ERRORS and isinstance(seconds, int | float):
        return int(seconds)
    return None


def _with_flood_retry(
    call: Callable[[], T],
    policy: CollectPolicy,
    sleep: Callable[[float], None],
    result: ChannelCollect,
) -> T:
    """Run ``call``; on a flood wait within the cap, sleep it out and retry once."""
    try:
        return call()
    except Exception as err:
        wait = flood_wait_seconds(err)
        if wait is None:
            raise
        if wait > policy.flood_wait_cap_seconds:
            raise FloodWaitTooLong(
                f"flood wait of {wait} s exceeds the cap of {policy.flood_wait_cap_seconds:g} s"
            ) from err
        sleep(wait)
        result.flood_wait_seconds += wait
        return call()


# --------------------------------------------------------------------------- message shape


def _naive_utc(moment: datetime) -> datetime:
    """Naive UTC, as the warehouse stores timestamps (naive input is taken as UTC)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _document_media_type(document: Any) -> str:
    """Files by their attributes, matching the Desktop export's mapping."""
    names = {type(attr).__name__ for attr in getattr(document, "attributes", None) or ()}
    if "DocumentAttributeSticker" in names:
        return "other"
    if names & {"DocumentAttributeVideo", "DocumentAttributeAnimated"}:
        return "video"  # videos, GIF animations, round video messages
    if "DocumentAttributeAudio" in names:
        return "other"  # music and voice messages
    return "document"


def media_type(media: Any) -> str:
    """Telethon ``message.media`` (by class name) -> one of schema.MEDIA_TYPES.

    A web page preview is ``none``: the post is text with a link, as the
    Desktop export sees it.
    """
    if media is None:
        return "none"
    name = type(media).__name__
    if name == "MessageMediaPhoto":
        return "photo"
    if name == "MessageMediaPoll":
        return "poll"
    if name == "MessageMediaWebPage":
        return "none"
    if name == "MessageMediaDocument":
        return _document_media_type(getattr(media, "document", None))
    return "other"


def message_counters(message: Any) -> Counters:
    """(views, forwards, replies, reactions) of a message.

    ``replies`` is None when the channel has no discussion group and
    ``reactions`` is None when nobody reacted: both mean zero, not unknown.
    Views and forwards stay None when Telegram does not report them.
    """
    replies = getattr(message, "replies", None)
    reactions = getattr(message, "reactions", None)
    results = getattr(reactions, "results", None) or ()
    return (
        getattr(message, "views", None),
        getattr(message, "forwards", None),
        getattr(replies, "replies", 0) or 0,
        sum(getattr(item, "count", 0) or 0 for item in results),
    )


def _is_post(message: Any) -> bool:
    """Channel posts only: service messages (pins, title changes) and empty ones are not."""
    return (
        getattr(message, "action", None) is None
        and getattr(message, "date", None) is not None
        and type(message).__name__ not in {"MessageService", "MessageEmpty"}
    )


@dataclass
class _Seen:
    """One message as read: its raw.posts row and its counters."""

    post_id: int
    published_at: datetime
    text: str
    media_type: str
    counters: Counters


def _seen(message: Any) -> _Seen:
    return _Seen(
        post_id=int(message.id),
        published_at=_naive_utc(message.date),
        text=getattr(message, "message", None) or "",
        media_type=media_type(getattr(message, "media", None)),
        counters=message_counters(message),
    )


@dataclass
class ChannelRead:
    """What Telegram returned for one channel, as plain values (or the error in ``result``)."""

    result: ChannelCollect
    username: str | None = None
    title: str | None = None
    posts: list[_Seen] = field(default_factory=list)


# --------------------------------------------------------------------------- network phase


def _read_channel(
    client: ChannelClient,
    username: str,
    now: datetime,
    policy: CollectPolicy,
    sleep: Callable[[float], None],
    read: ChannelRead,
) -> None:
    """Read one channel; every client call is retried once after a flood wait."""

    def call(fn: Callable[[], T]) -> T:
        return _with_flood_retry(fn, policy, sleep, read.result)

    entity = call(lambda: client.get_entity(username))
    full = call(lambda: client.get_full_channel(entity))
    messages = call(
        lambda: list(
            client.iter_messages(entity, limit=policy.max_messages, offset_date=now.replace(tzinfo=UTC))
        )
    )
    read.result.channel_id = int(entity.id)
    read.result.subscribers = getattr(getattr(full, "full_chat", None), "participants_count", None)
    read.username = getattr(entity, "username", None)
    read.title = getattr(entity, "title", None)
    read.posts = [_seen(m) for m in messages if _is_post(m)]
    read.result.posts_seen = len(read.posts)


def fetch(
    client: ChannelClient,
    channels: Iterable[str],
    now: datetime,
    policy: CollectPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ChannelRead]:
    """Read every channel from Telegram without touching the warehouse.

    Kept apart from ``store`` so the DuckDB file (one writer at a time) is not
    held open through network calls and flood-wait sleeps.
    """
    policy = policy or CollectPolicy()
    now = _naive_utc(now)
    reads = []
    for username in channels:
        read = ChannelRead(result=ChannelCollect(channel=username))
        try:
            _read_channel(client, username, now, policy, sleep, read)
        except Exception as err:  # recorded per channel: the others still get read
            read.result.error = f"{type(err).__name__}: {err}"
            read.posts = []
        reads.append(read)
    return reads


# --------------------------------------------------------------------------- warehouse phase


@dataclass
class _History:
    """A post's stored snapshots, summarised: when last, what last, highest so far."""

    last_at: datetime
    last: Counters
    highest: Counters


def _history(conn: duckdb.DuckDBPyConnection, channel_id: int, post_ids: list[int]) -> dict[int, _History]:
    """Snapshot history of the given posts (any source: collector, landing, export)."""
    counters = ", ".join(schema.COUNTER_COLUMNS)
    highest = ", ".join(f"max({c})" for c in schema.COUNTER_COLUMNS)
    rows = conn.execute(
        f"""SELECT post_id, max(observed_at), arg_max([{counters}], observed_at), {highest}
        FROM raw.post_snapshots
        WHERE channel_id = $channel AND list_contains($posts, post_id)
        GROUP BY post_id""",
        {"channel": channel_id, "posts": post_ids},
    ).fetchall()
    return {row[0]: _History(row[1], tuple(row[2]), tuple(row[3:])) for row in rows}


def _clamp(counters: Counters, highest: Counters) -> Counters:
    """Each counter raised to the highest stored value (cumulative contract)."""
    return tuple(
        max(value, top) if value is not None and top is not None else value
        for value, top in zip(counters, highest, strict=True)
    )


def _plan_snapshots(
    seen: list[_Seen],
    history: dict[int, _History],
    now: datetime,
    policy: CollectPolicy,
    result: ChannelCollect,
) -> list[tuple]:
    """raw.post_snapshots rows to write now; counts not-due, unchanged and clamped posts."""
    rows = []
    for post in seen:
        past = history.get(post.post_id)
        since_last = now - past.last_at if past else None
        if not policy.is_due(now - post.published_at, since_last):
            result.not_due += 1
            continue
        counters = _clamp(post.counters, past.highest) if past else post.counters
        if counters != post.counters:
            result.counters_clamped += 1
        unchanged = past is not None and counters == past.last
        if unchanged and not policy.keeps_unchanged(
            past.last_at - post.published_at, now - post.published_at
        ):
            result.unchanged_skipped += 1
            continue
        rows.append((post.post_id, now, *counters))
    return rows


def _upsert_channel(conn: duckdb.DuckDBPyConnection, read: ChannelRead, now: datetime) -> None:
    """raw.channels (known values never nulled) and today's raw.channel_daily row."""
    conn.execute(
        """INSERT INTO raw.channels (channel_id, username, title, created_at)
        VALUES ($id, $username, $title, NULL)
        ON CONFLICT (channel_id) DO UPDATE SET
            username = coalesce(excluded.username, username),
            title = coalesce(excluded.title, title)""",
        {"id": read.result.channel_id, "username": read.username, "title": read.title},
    )
    if read.result.subscribers is not None:
        conn.execute(
            """INSERT INTO raw.channel_daily VALUES ($id, $day, $subs)
            ON CONFLICT (channel_id, day) DO UPDATE SET subscribers = excluded.subscribers""",
            {"id": read.result.channel_id, "day": now.date(), "subs": read.result.subscribers},
        )


def _write_channel(
    conn: duckdb.DuckDBPyConnection, read: ChannelRead, now: datetime, policy: CollectPolicy
) -> None:
    """All writes of one channel, in one transaction (nothing partial on failure)."""
    channel_id = read.result.channel_id
    conn.execute("BEGIN TRANSACTION")
    try:
        _upsert_channel(conn, read, now)
        if read.posts:
            conn.executemany(
                """INSERT INTO raw.posts VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (channel_id, post_id) DO UPDATE SET
                    published_at = excluded.published_at, text = excluded.text,
                    media_type = excluded.media_type""",
                [(channel_id, p.post_id, p.published_at, p.text, p.media_type) for p in read.posts],
            )
        history = _history(conn, channel_id, [p.post_id for p in read.posts])
        rows = _plan_snapshots(read.posts, history, now, policy, read.result)
        if rows:
            conn.executemany(
                "INSERT INTO raw.post_snapshots VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(channel_id, *row) for row in rows],
            )
        read.result.snapshots_written = len(rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def store(
    conn: duckdb.DuckDBPyConnection,
    reads: Iterable[ChannelRead],
    now: datetime,
    policy: CollectPolicy | None = None,
) -> CollectReport:
    """Write fetched channels, one transaction each; a failed channel writes nothing."""
    policy = policy or CollectPolicy()
    now = _naive_utc(now)
    schema.ensure_schema(conn)
    report = CollectReport(observed_at=now)
    for read in reads:
        report.channels[read.result.channel] = read.result
        if read.result.error:
            continue
        try:
            _write_channel(conn, read, now, policy)
        except Exception as err:  # counts describe what was written: nothing
            result = read.result
            result.snapshots_written = result.unchanged_skipped = 0
            result.not_due = result.counters_clamped = 0
            result.error = f"{type(err).__name__}: {err}"
    return report


def collect(
    conn: duckdb.DuckDBPyConnection,
    client: ChannelClient,
    channels: Iterable[str],
    now: datetime,
    policy: CollectPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CollectReport:
    """Fetch every channel, then store them; one channel's failure never stops the others.

    ``now`` (naive = UTC) is the ``observed_at`` of every snapshot written and
    the clock the cadence is judged by. ``sleep`` is injectable for tests.
    """
    return store(conn, fetch(client, channels, now, policy, sleep), now, policy)
