"""Import Telegram Desktop channel exports (``result.json``) into the raw tables.

A Desktop export ("Export chat history" → JSON) holds the channel, its messages,
their text, media and reactions, but **no view, forward or reply counts**. We
import what it has:

- ``raw.channels``: ``channel_id`` = export ``id``, ``title`` = ``name``;
  username and creation time are kept from other sources (never nulled).
- ``raw.posts``: one row per non-service message.
- ``raw.post_snapshots``: one snapshot per message at export time
  (the file's mtime, or ``exported_at``) with ``reactions`` = sum of the
  reaction counts and ``views``/``forwards``/``replies`` **NULL** ("not
  observed"). Zero would be a lie that the feature SQL would read as real
  counts (ERR, reach, percentiles); NULL is what the schema's nullable counter
  columns mean, and every non-decreasing rule compares NULL as unknown.

Records that cannot be imported go to ``raw.quarantine`` with a reason, in the
same shape as the landing loader's rejects; a file that cannot be read at all
becomes one quarantine record. A load is one transaction and idempotent: the
same file loaded twice changes nothing (the snapshot key is the export time).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from warehouse import schema
from warehouse.landing import CONFLICT_REASON, FileRejected

LIMITATIONS = (
    "Telegram Desktop exports carry no view or forward counts; views come from the collector or landing CSVs"
)
EXPORT_FILENAME = "result.json"

# Telegram Desktop ``media_type`` values -> contract media types (schema.MEDIA_TYPES).
_FILE_MEDIA = {
    "video_file": "video",
    "animation": "video",
    "video_message": "video",
    "sticker": "other",
    "voice_message": "other",
    "audio_file": "other",
}
# Keys that mark a message as carrying some non-file media (location, contact, ...).
_OTHER_MEDIA_KEYS = (
    "location_information",
    "contact_information",
    "game_information",
    "invoice_information",
    "place_name",
    "live_location_period_seconds",
    "dice",
    "todo_list",
    "giveaway_information",
)
_ARROW_TYPES = {
    "BIGINT": pa.int64(),
    "TEXT": pa.string(),
    "TIMESTAMP": pa.timestamp("us"),
    "DATE": pa.date32(),
}


@dataclass
class ExportLoad:
    """What one export load did; counts are records of this file, not net table growth.

    ``messages_read = posts_loaded + service_skipped + posts_quarantined
    + duplicates_collapsed``. ``snapshots_loaded + snapshots_quarantined =
    posts_loaded``. ``quarantined`` counts every reject of this load (also the
    ones already in raw.quarantine from an earlier load of the same file).
    """

    path: str
    channel_id: int | None = None
    title: str | None = None
    exported_at: datetime | None = None
    messages_read: int = 0
    service_skipped: int = 0
    duplicates_collapsed: int = 0
    posts_loaded: int = 0
    posts_quarantined: int = 0
    snapshots_loaded: int = 0
    snapshots_quarantined: int = 0
    file_rejected: str | None = None  # reason, when the whole file was quarantined
    limitations: str = LIMITATIONS

    @property
    def quarantined(self) -> int:
        return self.posts_quarantined + self.snapshots_quarantined + (1 if self.file_rejected else 0)

    def as_metadata(self) -> dict:
        """Flat, JSON-able summary for asset metadata."""
        return {
            "file": self.path,
            "channel_id": self.channel_id,
            "title": self.title,
            "exported_at": str(self.exported_at) if self.exported_at else None,
            "messages_read": self.messages_read,
            "service_skipped": self.service_skipped,
            "duplicates_collapsed": self.duplicates_collapsed,
            "posts_loaded": self.posts_loaded,
            "snapshots_loaded": self.snapshots_loaded,
            "quarantined": self.quarantined,
            "file_rejected": self.file_rejected,
            "limitations": self.limitations,
        }


class MessageRejected(Exception):
    """One message that cannot become a post; it goes to quarantine with this reason."""


@dataclass
class _Post:
    """A parsed message: the raw.posts row plus the reactions total for its snapshot."""

    post_id: int
    published_at: datetime
    text: str
    media_type: str
    reactions: int
    record: str  # the original message as JSON, for quarantine


@dataclass
class _Export:
    """A parsed export file: channel fields, good posts and per-message rejects."""

    channel_id: int
    title: str | None
    username: str | None
    posts: list[_Post] = field(default_factory=list)
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # (table, record, reason)
    messages_read: int = 0
    service_skipped: int = 0
    duplicates_collapsed: int = 0


# --------------------------------------------------------------------------- finding files


def find_exports(folder: str | Path) -> list[Path]:
    """Every ``result.json`` under ``folder`` (any depth, hidden folders skipped).

    Oldest file first (then by path), so that loading them in this order lets a
    newer export's text edits win the post upserts. Absolute paths, so the
    quarantine's ``source`` is stable across loads.
    """
    root = Path(folder).resolve()
    if not root.is_dir():
        return []
    found = [
        path
        for path in root.rglob("*")
        if path.name.lower() == EXPORT_FILENAME
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    ]
    return sorted(found, key=lambda p: (p.stat().st_mtime, str(p)))


# --------------------------------------------------------------------------- parsing


def _json(value: Any) -> str:
    """Compact JSON, spelled like the landing loader's quarantine records."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_part(part: Any) -> str:
    """One element of a text list: a plain string or an entity object with ``text``."""
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        value = part.get("text", "")
        if isinstance(value, str):
            return value
    raise MessageRejected(f"unreadable text part: {_json(part)[:100]}")


def _join_text(value: Any) -> str:
    """A ``text`` / ``text_entities`` value as one string (entities lose only their markup)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text_part(part) for part in value)
    raise MessageRejected(f"unreadable text: expected a string or a list, got {type(value).__name__}")


def message_text(message: dict) -> str:
    """The message text; ``text_entities`` when ``text`` is missing; '' when there is none."""
    if message.get("text") is not None:
        return _join_text(message["text"])
    if message.get("text_entities") is not None:
        return _join_text(message["text_entities"])
    return ""


def media_type(message: dict) -> str:
    """Map the export's media fields onto schema.MEDIA_TYPES.

    Photos, videos (incl. GIF animations and round video messages) and polls
    have their own type; stickers, voice and music are ``other``; any other
    attached file is a ``document``.
    """
    if message.get("photo") is not None:
        return "photo"
    if message.get("poll") is not None:
        return "poll"
    kind = message.get("media_type")
    if kind is not None:
        return _FILE_MEDIA.get(kind, "other")
    if message.get("file") is not None:
        return "document"
    if any(message.get(key) is not None for key in _OTHER_MEDIA_KEYS):
        return "other"
    return "none"


def reaction_total(message: dict) -> int:
    """Sum of ``reactions[].count``; 0 when the field is absent (no reactions)."""
    reactions = message.get("reactions")
    if reactions is None:
        return 0
    if not isinstance(reactions, list):
        raise MessageRejected("bad reactions: expected a list")
    total = 0
    for item in reactions:
        count = item.get("count") if isinstance(item, dict) else None
        if not _is_int(count) or count < 0:
            raise MessageRejected(f"bad reactions: count {_json(count)} is not a count >= 0")
        total += count
    return total


def published_at(message: dict) -> datetime:
    """Publication time (naive UTC) from ``date_unixtime``.

    ``date`` is the exporting computer's local time without an offset, so it
    is never used as a fallback: a guessed time zone would shift every
    trajectory feature.
    """
    raw = message.get("date_unixtime")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise MessageRejected("missing date_unixtime (date is local time without an offset)")
    try:
        seconds = int(raw.strip()) if isinstance(raw, str) else raw
        if not _is_int(seconds):
            raise ValueError
        return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        raise MessageRejected(f"bad type: date_unixtime={_json(raw)} is not unix seconds") from None


def parse_message(message: dict) -> _Post:
    """A non-service message as a post; raises MessageRejected with the reason."""
    post_id = message.get("id")
    if post_id is None:
        raise MessageRejected("missing key: id")
    if not _is_int(post_id):
        raise MessageRejected(f"bad type: id={_json(post_id)} is not an integer")
    return _Post(
        post_id=post_id,
        published_at=published_at(message),
        text=message_text(message),
        media_type=media_type(message),
        reactions=reaction_total(message),
        record=_json(message),
    )


def _read_json(path: Path) -> dict:
    """The file's top-level object; anything unreadable is a whole-file reject."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise FileRejected(f"not UTF-8 encoded: invalid byte at offset {err.start}") from None
    except json.JSONDecodeError as err:
        raise FileRejected(f"unreadable json file: {err}") from None
    if not isinstance(data, dict):
        raise FileRejected("not a Telegram Desktop export: top level is not an object")
    return data


def _check_channel(data: dict) -> int:
    """The channel id; rejects account-wide exports, chats and groups."""
    if not isinstance(data.get("messages"), list):
        raise FileRejected("not a single-chat Telegram Desktop export: no top-level messages list")
    kind = data.get("type")
    if kind is not None and not str(kind).endswith("_channel"):
        raise FileRejected(f"not a channel export: type={_json(kind)}")
    channel_id = data.get("id")
    if not _is_int(channel_id):
        raise FileRejected(f"missing or bad channel id: {_json(channel_id)}")
    return channel_id


def _collapse_duplicates(export: _Export, posts: list[_Post]) -> None:
    """Keep one post per id; an id with differing messages is quarantined whole (as landing)."""
    by_id: dict[int, list[_Post]] = {}
    for post in posts:
        by_id.setdefault(post.post_id, []).append(post)
    for group in by_id.values():
        if all(p.record == group[0].record for p in group):
            export.posts.append(group[0])
            export.duplicates_collapsed += len(group) - 1
        else:
            export.rejects.extend(("posts", p.record, CONFLICT_REASON) for p in group)


def read_export(path: Path) -> _Export:
    """Parse a whole export in memory; raises FileRejected when it is not usable at all."""
    data = _read_json(path)
    channel_id = _check_channel(data)
    username = data.get("username") if isinstance(data.get("username"), str) else None
    name = data.get("name") if isinstance(data.get("name"), str) else None
    export = _Export(channel_id=channel_id, title=name, username=username)
    posts: list[_Post] = []
    for message in data["messages"]:
        export.messages_read += 1
        if not isinstance(message, dict):
            export.rejects.append(("posts", _json(message), "message is not a JSON object"))
            continue
        if message.get("type") == "service":
            export.service_skipped += 1
            continue
        try:
            posts.append(parse_message(message))
        except MessageRejected as rej:
            export.rejects.append(("posts", _json(message), str(rej)))
    _collapse_duplicates(export, posts)
    return export


# --------------------------------------------------------------------------- warehouse


def _register(conn: duckdb.DuckDBPyConnection, name: str, table: str, rows: list[tuple]) -> None:
    """Register ``rows`` as an Arrow view shaped like ``raw.<table>`` (typed, even when empty)."""
    columns = schema.RAW_TABLES[table][0]
    arrow_schema = pa.schema([(col, _ARROW_TYPES[typ]) for col, typ in columns.items()])
    data = {col: [row[i] for row in rows] for i, col in enumerate(columns)}
    conn.register(name, pa.table(data, schema=arrow_schema))


def _upsert_channel(conn: duckdb.DuckDBPyConnection, export: _Export) -> None:
    """Insert or update the channel, never overwriting known values with NULL."""
    conn.execute(
        """INSERT INTO raw.channels (channel_id, username, title, created_at)
        VALUES ($id, $username, $title, NULL)
        ON CONFLICT (channel_id) DO UPDATE SET
            username = coalesce(excluded.username, username),
            title = coalesce(excluded.title, title)""",
        {"id": export.channel_id, "username": export.username, "title": export.title},
    )


def _upsert_posts(conn: duckdb.DuckDBPyConnection, export: _Export) -> None:
    rows = [(export.channel_id, p.post_id, p.published_at, p.text, p.media_type) for p in export.posts]
    _register(conn, "_export_posts", "posts", rows)
    try:
        conn.execute(
            """INSERT INTO raw.posts BY NAME SELECT * FROM _export_posts
            ON CONFLICT (channel_id, post_id) DO UPDATE SET
                published_at = excluded.published_at, text = excluded.text,
                media_type = excluded.media_type"""
        )
    finally:
        conn.unregister("_export_posts")


def _snapshot_verdicts(conn: duckdb.DuckDBPyConnection) -> dict[int, str]:
    """post_id -> reason for export snapshots that would break the snapshot rules.

    Same rules as the landing loader: not before the post's publication, and
    no counter below an earlier stored snapshot or above a later one (stored
    rows are trusted). A stored row with the same key is the same snapshot
    loaded before, so it is left out of the comparison (idempotence). NULL
    counters compare as unknown, never as a violation.
    """
    bounds = ", ".join(
        f"max(s.{c}) FILTER (WHERE s.observed_at < n.observed_at) AS earlier_{c}, "
        f"min(s.{c}) FILTER (WHERE s.observed_at > n.observed_at) AS later_{c}"
        for c in schema.COUNTER_COLUMNS
    )
    checks = ", ".join(
        f"CASE WHEN {c} < earlier_{c} THEN 'counter decreased: {c} ' || {c} || ' < ' "
        f"|| earlier_{c} || ' at an earlier snapshot' END, "
        f"CASE WHEN {c} > later_{c} THEN 'counter increased past a stored later snapshot: "
        f"{c} ' || {c} || ' > ' || later_{c} END"
        for c in schema.COUNTER_COLUMNS
    )
    counters = ", ".join(f"n.{c}" for c in schema.COUNTER_COLUMNS)
    rows = conn.execute(
        f"""
        WITH history AS (
            SELECT n.post_id, n.observed_at, p.published_at, {counters}, {bounds}
            FROM _export_snapshots n
            JOIN raw.posts p USING (channel_id, post_id)
            LEFT JOIN raw.post_snapshots s
                ON s.channel_id = n.channel_id AND s.post_id = n.post_id
                AND s.observed_at <> n.observed_at
            GROUP BY n.post_id, n.observed_at, p.published_at, {counters}
        )
        SELECT post_id, concat_ws('; ',
            CASE WHEN observed_at < published_at THEN 'snapshot before post published: '
                 || 'observed_at ' || observed_at || ' < published_at ' || published_at END,
            {checks}) AS reason
        FROM history
        """
    ).fetchall()
    return {post_id: reason for post_id, reason in rows if reason}


def _load_snapshots(
    conn: duckdb.DuckDBPyConnection, export: _Export, observed_at: datetime, load: ExportLoad
) -> None:
    """One reactions-only snapshot per post at export time; rule breakers go to quarantine."""
    rows = [(export.channel_id, p.post_id, observed_at, None, None, None, p.reactions) for p in export.posts]
    _register(conn, "_export_snapshots", "post_snapshots", rows)
    try:
        verdicts = _snapshot_verdicts(conn)
        conn.execute(
            """INSERT INTO raw.post_snapshots BY NAME
            SELECT * FROM _export_snapshots WHERE NOT list_contains($rejected, post_id)
            ON CONFLICT (channel_id, post_id, observed_at) DO UPDATE SET
                views = excluded.views, forwards = excluded.forwards,
                replies = excluded.replies, reactions = excluded.reactions""",
            {"rejected": list(verdicts)},
        )
    finally:
        conn.unregister("_export_snapshots")
    columns = list(schema.RAW_TABLES["post_snapshots"][0])
    for row in rows:
        if row[1] in verdicts:
            record = _json(
                {col: str(v) if isinstance(v, datetime) else v for col, v in zip(columns, row, strict=True)}
            )
            export.rejects.append(("post_snapshots", record, verdicts[row[1]]))
    load.snapshots_quarantined = len(verdicts)
    load.snapshots_loaded = len(rows) - len(verdicts)


def _quarantine(
    conn: duckdb.DuckDBPyConnection, source: str, rejects: Iterable[tuple[str, str, str]]
) -> None:
    """Append rejects to raw.quarantine, skipping ones it already holds (idempotent)."""
    rows = [(source, table, record, reason) for table, record, reason in rejects]
    if not rows:
        return
    batch = pa.table(
        {name: [r[i] for r in rows] for i, name in enumerate(("source", "target_table", "record", "reason"))}
    )
    conn.register("_export_rejects", batch)
    try:
        conn.execute(
            """INSERT INTO raw.quarantine (source, target_table, record, reason, loaded_at)
            SELECT DISTINCT source, target_table, record, reason, $loaded_at
            FROM _export_rejects r
            WHERE NOT EXISTS (
                SELECT 1 FROM raw.quarantine q
                WHERE q.source IS NOT DISTINCT FROM r.source
                  AND q.target_table IS NOT DISTINCT FROM r.target_table
                  AND q.record IS NOT DISTINCT FROM r.record
                  AND q.reason IS NOT DISTINCT FROM r.reason
            )""",
            {"loaded_at": datetime.now(UTC).replace(tzinfo=None)},
        )
    finally:
        conn.unregister("_export_rejects")


def _export_time(path: Path, exported_at: datetime | None) -> datetime:
    """Naive UTC export time: the argument (naive = UTC) or the file's mtime."""
    if exported_at is None:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None)
    if exported_at.tzinfo is not None:
        return exported_at.astimezone(UTC).replace(tzinfo=None)
    return exported_at


def _write(conn: duckdb.DuckDBPyConnection, export: _Export, load: ExportLoad) -> None:
    """All warehouse writes of a parsed export (inside the caller's transaction)."""
    _upsert_channel(conn, export)
    _upsert_posts(conn, export)
    _load_snapshots(conn, export, load.exported_at, load)
    load.posts_loaded = len(export.posts)
    load.posts_quarantined = sum(1 for table, _, _ in export.rejects if table == "posts")
    _quarantine(conn, load.path, export.rejects)


def load_desktop_export(
    conn: duckdb.DuckDBPyConnection, path: str | Path, exported_at: datetime | None = None
) -> ExportLoad:
    """Load one ``result.json`` in one transaction; returns what happened.

    ``exported_at`` (naive = UTC) is when the export was taken; by default the
    file's modification time. It is the ``observed_at`` of the reactions
    snapshots, so loading the same file again changes nothing.
    """
    path = Path(path).resolve()
    load = ExportLoad(path=str(path), exported_at=_export_time(path, exported_at))
    try:
        export: _Export | None = read_export(path)
    except FileRejected as rej:
        export, load.file_rejected = None, rej.reason
    conn.execute("BEGIN TRANSACTION")
    try:
        schema.ensure_schema(conn)
        if export is None:
            record = _json({"file": path.name, "size_bytes": path.stat().st_size})
            _quarantine(conn, load.path, [("posts", record, load.file_rejected)])
        else:
            load.channel_id, load.title = export.channel_id, export.title
            load.messages_read = export.messages_read
            load.service_skipped = export.service_skipped
            load.duplicates_collapsed = export.duplicates_collapsed
            _write(conn, export, load)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return load
