"""Seeded fuzzing of the landing import (CSV, Parquet and Telegram Desktop exports).

Each seed writes a landing folder that mixes good records with every kind of bad
input we know of: wrong types, missing and extra columns, renamed headers,
negative and decreasing counters, snapshots before their post, exact and
conflicting duplicates, broken CSV lines (too many/few fields, an unterminated
quote, a 3 MB line), non-UTF-8 bytes, 1 MB text fields, truncated and garbage
Parquet, empty and header-only files, and malformed ``result.json`` exports.

While writing it, the generator keeps an *oracle*: a plain-Python model of the
loader's rules (row checks → exact duplicates collapse, conflicting keys are
quarantined whole → snapshot-before-post → counters non-decreasing). The test
then loads the folder through ``ChannelDataSource(source="landing")`` (landing
files and Desktop exports) and demands:

* no exception escapes;
* every raw table holds exactly the oracle's rows, values included (rows lost: 0,
  rows invented: 0);
* every rejected record is in ``raw.quarantine`` with a non-empty reason, and the
  counts add up per table: records in = loaded + quarantined + duplicates
  collapsed, each term equal to the oracle's;
* loading the same folder a second time changes no table at all.

No hypothesis in the venv: a seeded ``numpy`` generator makes every run identical.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resources.data_source import ChannelDataSource
from warehouse.schema import MEDIA_TYPES, RAW_TABLES

SEEDS = (3, 2024)
BASE = datetime(2026, 3, 2, 6, 0, 0)
EXPORT_TIME = datetime(2026, 4, 20, 12, 0, 0)  # mtime of every result.json (naive UTC)
COLS = {t: list(spec[0]) for t, spec in RAW_TABLES.items()}
KEYS = {t: spec[1] for t, spec in RAW_TABLES.items()}
TYPES = {t: spec[0] for t, spec in RAW_TABLES.items()}
COUNTERS = ("views", "forwards", "replies", "reactions")
TEXT_POOL = [*"abcdefxyz ,;|\t\"'", "\n", "é", "ß", "привет", "🚀", "中文", "\\", "NULL", "#", "=1+1", "  "]
HUGE = 1_000_000  # a 1 MB text field must load intact
WHOLE_FILE_KINDS = (
    "empty",
    "blank",
    "header_only",
    "latin1",
    "no_key",
    "truncated_pq",
    "garbage_pq",
    "empty_pq",
)


# --------------------------------------------------------------------------- model


@dataclass(eq=False)
class Rec:
    """One record as written. ``values`` are contract-typed for good columns; a corrupted
    column holds whatever was written (a string, a negative number, None for a key)."""

    table: str
    values: dict
    valid: bool = True
    reason: str = ""  # expected reason fragment for a record that fails row checks
    native: bool = True  # representable in a typed Parquet file

    def typed(self, dropped: str | None) -> tuple:
        out = []
        for col in COLS[self.table]:
            v = None if col == dropped else self.values.get(col)
            if col == "media_type" and v is None:
                v = "none"
            out.append(v)
        return tuple(out)


@dataclass(eq=False)
class FileSpec:
    name: str
    table: str
    fmt: str  # csv | pq_native | pq_str
    recs: list[Rec] = field(default_factory=list)
    drop: str | None = None  # non-key contract column left out of the file
    extra: bool = False  # an extra column that must be ignored
    broken: list[str] = field(default_factory=list)  # unparseable CSV lines (exact text)
    whole: str | None = None  # whole-file reject kind (WHOLE_FILE_KINDS)
    invalid: dict[int, str] = field(default_factory=dict)  # id(rec) -> reason, this file only
    mixed_eol: bool = False  # "\n" and "\r\n" line endings mixed line by line

    @property
    def rejected(self) -> bool:
        return self.whole is not None


class World:
    """Everything written for one seed, plus what the loader must make of it."""

    def __init__(self, seed: int, folder: Path) -> None:
        self.rng = np.random.default_rng(seed)
        self.folder = folder
        self.uid = 0
        self.files: list[FileSpec] = []
        self.exports: list[dict] = []  # expectations per result.json
        self.export_channels: set[tuple] = set()
        self.export_posts: set[tuple] = set()
        self.export_snapshots: set[tuple] = set()
        self.orphans: dict[tuple, list[Rec]] = {}  # snapshots whose post is not in the folder
        self.cover: Counter = Counter()  # spellings and cases written, for the coverage report

    # ------------------------------------------------------------------ helpers
    def next_uid(self) -> int:
        self.uid += 1
        return self.uid

    def randint(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, seq):
        return seq[int(self.rng.integers(0, len(seq)))]

    def text(self, max_parts: int = 12) -> str:
        parts = [self.pick(TEXT_POOL) for _ in range(self.randint(0, max_parts))]
        return "t" + "".join(parts) + f"#{self.next_uid()}"  # never empty, always unique

    def when(self, minutes_lo: int, minutes_hi: int) -> datetime:
        return BASE + timedelta(minutes=self.randint(minutes_lo, minutes_hi), seconds=self.randint(0, 59))


# --------------------------------------------------------------------------- good records


def make_good(w: World) -> dict[str, list[Rec]]:
    good: dict[str, list[Rec]] = defaultdict(list)
    n_channels = w.randint(3, 5)
    channel_ids = [1000 + 7 * i + w.randint(0, 6) for i in range(n_channels)]
    for cid in channel_ids:
        good["channels"].append(
            Rec(
                "channels",
                {
                    "channel_id": cid,
                    "username": f"user_{cid}",
                    "title": w.text(),
                    "created_at": w.when(-90 * 1440, -1440),
                },
            )
        )
        for d in range(w.randint(3, 8)):
            good["channel_daily"].append(
                Rec(
                    "channel_daily",
                    {
                        "channel_id": cid,
                        "day": BASE.date() + timedelta(days=d),
                        "subscribers": w.randint(0, 50_000),
                    },
                )
            )
        for post_id in range(1, w.randint(5, 9) + 1):
            published = w.when(0, 20 * 1440)
            text = w.text(30)
            if w.chance(0.04):
                text = "H" * HUGE + text  # a 1 MB field
            good["posts"].append(
                Rec(
                    "posts",
                    {
                        "channel_id": cid,
                        "post_id": post_id,
                        "published_at": published,
                        "text": text,
                        "media_type": w.pick(MEDIA_TYPES),
                    },
                )
            )
            observed, counters = published, dict.fromkeys(COUNTERS, 0)
            for _ in range(w.randint(2, 6)):
                observed = observed + timedelta(minutes=w.randint(5, 600))
                counters = {c: v + w.randint(0 if c != "views" else 1, 40) for c, v in counters.items()}
                good["post_snapshots"].append(
                    Rec(
                        "post_snapshots",
                        {"channel_id": cid, "post_id": post_id, "observed_at": observed, **counters},
                    )
                )
            for _ in range(w.randint(0, 4)):
                good["interactions"].append(
                    Rec(
                        "interactions",
                        {
                            "channel_id": cid,
                            "post_id": post_id,
                            "user_id": w.randint(1, 10**9),
                            "action": w.pick(("reaction", "reply", "forward")),
                            "occurred_at": published + timedelta(minutes=w.randint(1, 3000)),
                        },
                    )
                )
    return good


# --------------------------------------------------------------------------- bad records


def corrupt(w: World, table: str, option: int | None = None) -> Rec:
    """A record that must fail the row checks, with the expected reason fragment.

    ``option`` picks the corruption (an index into the table's list, wrapped);
    None picks one at random.
    """
    cid, uid = 9000 + w.randint(0, 99), w.next_uid()
    base = {
        "channels": {
            "channel_id": 50_000 + uid,
            "username": f"bad{uid}",
            "title": w.text(),
            "created_at": w.when(-100, -10),
        },
        "posts": {
            "channel_id": cid,
            "post_id": 50_000 + uid,
            "published_at": w.when(0, 100),
            "text": w.text(),
            "media_type": "photo",
        },
        "post_snapshots": {
            "channel_id": cid,
            "post_id": 50_000 + uid,
            "observed_at": w.when(0, 100),
            "views": 5,
            "forwards": 1,
            "replies": 0,
            "reactions": 2,
        },
        "channel_daily": {"channel_id": 50_000 + uid, "day": date(2026, 1, 1), "subscribers": 10},
        "interactions": {
            "channel_id": cid,
            "post_id": 50_000 + uid,
            "user_id": uid,
            "action": "reply",
            "occurred_at": w.when(0, 100),
        },
    }[table]
    options = corruption_options(w, table)
    col, value, reason, native = w.pick(options) if option is None else options[option % len(options)]
    return Rec(table, {**base, col: value}, valid=False, reason=reason, native=native)


def corruption_options(w: World, table: str) -> list[tuple[str, object, str, bool]]:
    """(column, written value, reason fragment, fits a typed Parquet column) per corruption."""
    columns = TYPES[table]
    options: list[tuple[str, object, str, bool]] = []
    for col, typ in columns.items():
        if col in KEYS[table]:
            options.append((col, None, f"missing key: {col}", True))
        if typ == "BIGINT":
            options += [
                (col, "abc", "bad type", False),
                (col, "1.5", "bad type", False),
                (col, "99999999999999999999999", "bad type", False),
                (col, "12abc", "bad type", False),
            ]
        if typ == "TIMESTAMP":
            options += [
                (col, "yesterday", "bad type", False),
                (col, "2026-02-30 10:00:00", "bad type", False),
                (col, "2026-01-01T25:61:00", "bad type", False),
                (col, "294247-01-01", "bad type", False),
                # a number among date strings is not read as a Unix time
                (col, "20261101", "bad type", False),
                (col, "2026-03-02T10:00:00 MSK", "bad time zone", False),
                (col, "2026-03-02T10:00:00 Mars/Olympus", "bad time zone", False),
                (col, "2026-03-02T10:00:00+25:00", "bad time zone", False),
                (col, "0001-01-01 00:00:00", "time out of range", False),
                (col, "2013-07-31T23:59:59Z", "time out of range", False),
                (col, "2099-01-01T00:00:00", "time out of range", False),
            ]
        if typ == "DATE":
            options += [
                (col, "tomorrow", "bad type", False),
                (col, "2026-13-01", "bad type", False),
                (col, "0001-01-01", "time out of range", False),
                (col, "2099-01-01", "time out of range", False),
            ]
        if col in (*COUNTERS, "subscribers"):
            options.append((col, -w.randint(1, 500), "negative counter", True))
        if col == "media_type":
            options.append((col, "gif", "bad media_type", True))
        if col == "action":
            options.append((col, "like", "bad action", True))
    return options


def rule_breakers(w: World, good: dict[str, list[Rec]]) -> list[Rec]:
    """Valid-looking snapshots that break a cross-row rule."""
    out = []
    posts = {(r.values["channel_id"], r.values["post_id"]): r for r in good["posts"]}
    chains: dict[tuple, list[Rec]] = defaultdict(list)
    for r in good["post_snapshots"]:
        chains[(r.values["channel_id"], r.values["post_id"])].append(r)
    keys = sorted(chains)
    for key in [keys[int(i)] for i in w.rng.choice(len(keys), size=min(4, len(keys)), replace=False)]:
        chain = chains[key]
        a, b = chain[0], chain[1]
        counter = w.pick(COUNTERS)
        if a.values[counter] == 0:
            counter = "views"  # views start at >= 1
        gap = (b.values["observed_at"] - a.values["observed_at"]) / 2
        out.append(
            Rec(
                "post_snapshots",
                {  # decreasing: lower than the snapshot before it
                    **a.values,
                    "observed_at": a.values["observed_at"] + gap,
                    counter: a.values[counter] - 1,
                },
                reason="counter decreased",
            )
        )
    for key in [keys[int(i)] for i in w.rng.choice(len(keys), size=min(3, len(keys)), replace=False)]:
        published = posts[key].values["published_at"]
        out.append(
            Rec(
                "post_snapshots",
                {  # observed an hour before the post existed
                    "channel_id": key[0],
                    "post_id": key[1],
                    "observed_at": published - timedelta(hours=1, seconds=w.randint(0, 59)),
                    "views": 0,
                    "forwards": 0,
                    "replies": 0,
                    "reactions": 0,
                },
                reason="snapshot before post published",
            )
        )
    return out


def conflicting(w: World, rec: Rec) -> Rec:
    """Same key, one non-key column different (still a valid record on its own)."""
    others = [c for c in COLS[rec.table] if c not in KEYS[rec.table]]
    col = w.pick(others)
    old = rec.values[col]
    if isinstance(old, str):
        new = ("video" if old != "video" else "poll") if col == "media_type" else old + "!"
    elif isinstance(old, datetime):
        new = old + timedelta(seconds=1)
    else:
        new = old + 1
    return Rec(rec.table, {**rec.values, col: new})


# --------------------------------------------------------------------------- rendering


ZONES = ("Europe/Moscow", "Asia/Tokyo", "America/New_York", "Asia/Kolkata")


def unix(value: datetime, millis: bool, w: World | None = None) -> str:
    if w is not None:
        w.cover["unix milliseconds" if millis else "unix seconds"] += 1
    seconds = value.replace(tzinfo=UTC).timestamp()
    return str(int(seconds * 1000)) if millis else str(int(seconds))


def render(w: World, value, typ: str, epoch: bool | None = None) -> str | None:
    """A valid value spelled one of the ways the loader accepts; invalid ones as written.

    ``epoch``: in a time column of numbers only, True = Unix seconds, False =
    milliseconds; None = a column of date strings.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if typ == "TEXT" and value in MEDIA_TYPES + ("reaction", "reply", "forward"):
            return w.pick([value, value.upper(), value.title(), f" {value} "])
        return value
    if isinstance(value, datetime):
        if epoch is not None:
            return unix(value, millis=not epoch, w=w)
        style = w.randint(0, 5)
        if style == 0:
            return value.isoformat(sep=" ")
        if style == 1:
            return value.isoformat()
        if style == 2:
            return value.isoformat() + "Z"
        if style == 3:  # an IANA zone name, trailing or bracketed (RFC 9557)
            zone = w.pick(ZONES)
            w.cover["IANA zone name"] += 1
            local = value.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
            return w.pick([f"{local.isoformat()} {zone}", f"{local.isoformat()}[{zone}]"])
        offset = timedelta(hours=w.pick([2, -5, 9]), minutes=w.pick([0, 30]))
        local = value + offset
        sign = "+" if offset >= timedelta(0) else "-"
        total = abs(int(offset.total_seconds()) // 60)
        return local.isoformat() + f"{sign}{total // 60:02d}:{total % 60:02d}"
    if isinstance(value, date):
        if w.chance(0.7):
            return value.isoformat()
        # a time of that UTC day with an offset: the loader takes the UTC date
        w.cover["DATE given as an offset timestamp"] += 1
        hours = w.pick([-5, 3, 9])
        at = datetime.combine(value, datetime.min.time()) + timedelta(
            hours=w.randint(0, 23), minutes=w.randint(0, 59)
        )
        return (at + timedelta(hours=hours)).isoformat() + f"{'+' if hours >= 0 else '-'}{abs(hours):02d}:00"
    if isinstance(value, int):
        if value < 0:
            return str(value)
        return w.pick([str(value), f" {value} ", f"{value}.0", f"+{value}"])
    raise TypeError(value)


def time_modes(w: World, spec: FileSpec) -> dict[str, bool | None]:
    """Per TIMESTAMP column of a text file: None (date strings), True/False (Unix s/ms).

    A column is written as numbers only when every value in it is a valid time (a
    corrupted value would make it a mixed column). In a column of date strings, one
    good record may be written as a number: that record is rejected (``invalid``).
    """
    modes: dict[str, bool | None] = {}
    for col, typ in TYPES[spec.table].items():
        if typ != "TIMESTAMP" or col == spec.drop:
            continue
        values = [r.values.get(col) for r in spec.recs]
        if values and all(isinstance(v, datetime) for v in values) and w.chance(0.6):
            modes[col] = w.chance(0.5)
            continue
        modes[col] = None
        good = [r for r in spec.recs if r.valid and isinstance(r.values.get(col), datetime)]
        if good and w.chance(0.3):
            spec.invalid[id(w.pick(good))] = "bad type"
    return modes


def render_row(w: World, spec: FileSpec, rec: Rec, order: list[str], modes: dict[str, bool | None]) -> list:
    row = []
    for c in order:
        value, typ = rec.values.get(c), TYPES[spec.table][c]
        if id(rec) in spec.invalid and modes.get(c, 0) is None and isinstance(value, datetime):
            row.append(unix(value, millis=w.chance(0.5)))  # the lone number: rejected
            w.cover["number among date strings"] += 1
        else:
            row.append(render(w, value, typ, modes.get(c)))
    return row


def header_name(w: World, col: str) -> str:
    return w.pick([col, col.upper(), col.replace("_", " ").title(), f" {col} "])


def write_csv(w: World, spec: FileSpec) -> None:
    cols = [c for c in COLS[spec.table] if c != spec.drop]
    order = [cols[int(i)] for i in w.rng.permutation(len(cols))]
    if spec.whole == "no_key":
        order = [c for c in order if c != KEYS[spec.table][0]]
    header = [header_name(w, c) for c in order] + (["notes"] if spec.extra else [])
    delim = w.pick([",", ";", "\t", "|"])
    buf = io.StringIO()
    quoting = w.pick([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])
    main_eol = w.pick(["\n", "\r\n"])
    spec.mixed_eol = w.chance(0.4)
    w.cover["CSV with mixed line endings"] += spec.mixed_eol and spec.whole is None
    writers = {
        eol: csv.writer(
            buf, delimiter=delim, quotechar='"', doublequote=True, quoting=quoting, lineterminator=eol
        )
        for eol in ("\n", "\r\n")
    }

    def eol() -> str:  # one line in another ending (or several) when mixed
        return w.pick(["\n", "\r\n"]) if spec.mixed_eol else main_eol

    writers[main_eol].writerow(header)
    modes = time_modes(w, spec) if spec.whole is None else {}
    if spec.whole not in ("header_only", "blank"):
        lines = []
        for rec in spec.recs:
            row = render_row(w, spec, rec, order, modes)
            if spec.extra:
                row.append(w.pick(["x", "y, z", 'q"uote', ""]))
            lines.append(row)
        broken_at = sorted(int(w.rng.integers(0, len(lines) + 1)) for _ in spec.broken)
        out_rows: list = list(lines)
        for offset, (pos, text) in enumerate(zip(broken_at, spec.broken, strict=True)):
            out_rows.insert(pos + offset, text)
        for row in out_rows:
            if isinstance(row, str):  # a broken line, written verbatim
                buf.write(row.replace(",", delim) + eol())
            else:
                writers[eol()].writerow(row)
    data = buf.getvalue().encode("utf-8")
    if spec.whole == "blank":
        data = b"   \n\n"
    elif spec.whole == "empty":
        data = b""
    elif spec.whole == "latin1":
        cut = data.index(b"\n") + 1
        data = data[:cut] + "caf\u00e9,".encode("latin-1") + data[cut:]
    elif w.chance(0.3):
        data = b"\xef\xbb\xbf" + data  # a BOM is fine
    (w.folder / spec.name).write_bytes(data)


def arrow_type(typ: str, tz: str | None):
    return {
        "BIGINT": pa.int64(),
        "TIMESTAMP": pa.timestamp("us", tz=tz),
        "DATE": pa.date32(),
        "TEXT": pa.string(),
    }[typ]


def write_parquet(w: World, spec: FileSpec) -> None:
    cols = [c for c in COLS[spec.table] if c != spec.drop]
    if spec.whole == "no_key":
        cols = [c for c in cols if c != KEYS[spec.table][0]]
    tz = w.pick([None, "UTC", "Europe/Moscow"])
    modes = time_modes(w, spec) if spec.fmt == "pq_str" and spec.whole is None else {}
    rows = [render_row(w, spec, rec, cols, modes) for rec in spec.recs] if spec.fmt == "pq_str" else []
    data, fields = {}, []
    for i, col in enumerate(cols):
        typ = TYPES[spec.table][col]
        if spec.fmt == "pq_native" and typ == "TIMESTAMP" and w.chance(0.3):
            millis = w.chance(0.5)  # a numeric column: Unix seconds or milliseconds
            w.cover["Parquet integer column of Unix times"] += 1
            values = [
                int(unix(rec.values[col], millis, w)) if rec.values.get(col) else None for rec in spec.recs
            ]
            atype = pa.int64()
        elif spec.fmt == "pq_native":
            values = [rec.values.get(col) for rec in spec.recs]
            if typ == "TIMESTAMP" and tz:
                values = [v.replace(tzinfo=UTC) if v is not None else None for v in values]
            atype = arrow_type(typ, tz)
        else:
            values = [row[i] for row in rows]
            atype = pa.string()
        name = header_name(w, col)
        data[name] = pa.array(values, type=atype)
        fields.append(name)
    if spec.extra:
        data["notes"] = pa.array([w.text(3) for _ in spec.recs], type=pa.string())
    path = w.folder / spec.name
    pq.write_table(pa.table(data), path)
    if spec.whole == "truncated_pq":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif spec.whole == "garbage_pq":
        path.write_bytes(w.rng.bytes(w.randint(1, 4000)))
    elif spec.whole == "empty":
        path.write_bytes(b"")


# --------------------------------------------------------------------------- folder


def place(w: World, mains: list[FileSpec], rec: Rec, exclude: FileSpec | None = None) -> FileSpec:
    """Put ``rec`` in a random main file (a typed Parquet file only takes typed values)."""
    choices = [f for f in mains if f is not exclude and (rec.native or f.fmt != "pq_native")]
    target = w.pick(choices)
    target.recs.append(rec)
    return target


def add_orphans(w: World, good: dict[str, list[Rec]]) -> None:
    """Snapshot chains of posts not in the folder: they wait in quarantine for the post."""
    channels = sorted({r.values["channel_id"] for r in good["channels"]})
    for k in range(w.randint(2, 3)):
        key = (w.pick(channels), 90_000 + k)
        observed, views, chain = w.when(0, 20 * 1440), 0, []
        for _ in range(3):
            observed += timedelta(minutes=w.randint(5, 300))
            views += w.randint(1, 40)
            chain.append(
                Rec(
                    "post_snapshots",
                    {
                        "channel_id": key[0],
                        "post_id": key[1],
                        "observed_at": observed,
                        "views": views,
                        "forwards": 0,
                        "replies": 0,
                        "reactions": 0,
                    },
                )
            )
        good["post_snapshots"] += chain
        w.orphans[key] = chain


def build_landing(w: World) -> None:
    good = make_good(w)
    breakers = rule_breakers(w, good)
    add_orphans(w, good)
    for table in RAW_TABLES:
        n_main = w.randint(2, 4)
        mains = [FileSpec(f"{table}_part{i}.csv", table, "csv") for i in range(n_main)]
        for i, spec in enumerate(mains[1:], start=1):
            spec.fmt = w.pick(["csv", "pq_native", "pq_str"])
            if spec.fmt != "csv":
                spec.name = f"{table}_part{i}.parquet"
        for spec in mains:
            spec.extra = w.chance(0.4)
        non_key = [c for c in COLS[table] if c not in KEYS[table]]
        partial = None
        if non_key:
            partial = FileSpec(
                f"{table}_partial.{w.pick(['csv', 'parquet'])}",
                table,
                "csv",
                drop=w.pick(non_key),
                extra=w.chance(0.5),
            )
            if partial.name.endswith(".parquet"):
                partial.fmt = w.pick(["pq_native", "pq_str"])

        home: dict[int, FileSpec] = {}
        for rec in good[table]:
            if partial is not None and w.chance(0.15):
                partial.recs.append(rec)
                home[id(rec)] = partial
            else:
                home[id(rec)] = place(w, mains, rec)
        for rec in [r for r in breakers if r.table == table]:
            place(w, mains, rec)
        for option in range(len(corruption_options(w, table))):  # every kind of corruption once...
            place(w, mains, corrupt(w, table, option))
        for _ in range(w.randint(0, 4)):  # ...and a few more at random
            place(w, mains, corrupt(w, table))
        # exact duplicates, always in another file (the same record twice in one file would
        # collapse in raw.quarantine if it were ever rejected: same source, same record)
        for i in w.rng.choice(len(good[table]), size=min(4, len(good[table])), replace=False):
            rec = good[table][int(i)]
            place(w, mains, rec, exclude=home[id(rec)])
        if non_key:
            for i in w.rng.choice(len(good[table]), size=min(2, len(good[table])), replace=False):
                place(w, mains, conflicting(w, good[table][int(i)]))
        # unparseable lines in the CSV files: too many fields, too few, an unterminated quote
        n_cols = len(COLS[table])
        for spec in mains:
            if spec.fmt != "csv":
                continue
            for _ in range(w.randint(0, 2)):
                uid = w.next_uid()
                width = n_cols + (1 if spec.extra else 0)
                n = w.pick([width + 1, width + 3, max(1, width - 1)])
                spec.broken.append(",".join(f"brk{uid}_{j}" for j in range(n)))
            if w.chance(0.5):  # a stray opening quote mid-file: only its line is lost
                uid = w.next_uid()
                width = n_cols + (1 if spec.extra else 0)
                spec.broken.append(",".join([f'"stray{uid}'] + [f"s{uid}_{j}" for j in range(width - 1)]))
                w.cover["stray quote mid-file"] += 1
        if mains[0].fmt == "csv" and w.chance(0.5):
            uid = w.next_uid()  # a line over DuckDB's 2 MB line limit
            mains[0].broken.append(f'"{"L" * 2_100_000}{uid}"')
        # whole-file rejects carry copies of good records: they are lost to quarantine
        kinds = [WHOLE_FILE_KINDS[int(i)] for i in w.rng.choice(len(WHOLE_FILE_KINDS), 3, replace=False)]
        for kind in kinds:
            suffix = "parquet" if kind.endswith("_pq") or (kind == "empty" and w.chance(0.5)) else "csv"
            spec = FileSpec(
                f"{table}_bad_{kind}.{suffix}",
                table,
                "pq_native" if suffix == "parquet" else "csv",
                whole=kind,
            )
            if kind in ("latin1", "no_key", "truncated_pq", "garbage_pq"):
                spec.recs = [
                    good[table][int(i)]
                    for i in w.rng.choice(len(good[table]), size=min(3, len(good[table])), replace=False)
                ]
            w.files.append(spec)
        w.files += mains + ([partial] if partial is not None and partial.recs else [])

    for spec in w.files:
        # order within a file is random; the last CSV line may be an unterminated quote
        spec.recs = [spec.recs[int(i)] for i in w.rng.permutation(len(spec.recs))]
        if spec.name.endswith(".parquet"):
            write_parquet(w, spec)
        else:
            write_csv(w, spec)
    # files that match no table are reported as ignored, never loaded
    (w.folder / "notes.txt").write_text("not data")
    (w.folder / "unknown_table.csv").write_text("a,b\n1,2\n")


def add_unterminated_quote(w: World) -> None:
    """Append an unterminated quoted field as the very last line of one CSV file."""
    candidates = [f for f in w.files if f.fmt == "csv" and not f.rejected and f.table != "channels"]
    spec = w.pick(candidates)
    path = w.folder / spec.name
    line = f'"unterminated{w.next_uid()},x'
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        data += b"\n"
    path.write_bytes(data + line.encode())
    spec.broken.append(line)


# --------------------------------------------------------------------------- exports


def _msg(w: World, post_id, when: datetime, **extra) -> dict:
    unix = int(when.replace(tzinfo=UTC).timestamp())
    return {
        "id": post_id,
        "type": "message",
        "date": when.isoformat(),
        "date_unixtime": str(unix),
        "from": "Chan",
        "text": w.text(),
        **extra,
    }


def build_exports(w: World) -> None:
    mtime = EXPORT_TIME.replace(tzinfo=UTC).timestamp()
    for n in range(w.randint(1, 2)):
        cid = 7_000_000 + 1000 * n + w.randint(0, 999)
        messages, exp_posts, exp_snaps = [], {}, {}
        bad = service = dups = conflicts = snaps_bad = 0
        for post_id in range(1, w.randint(6, 14) + 1):
            when = BASE + timedelta(days=w.randint(0, 40), seconds=w.randint(0, 86_399))
            kind = w.pick(
                [
                    "plain",
                    "plain",
                    "parts",
                    "photo",
                    "poll",
                    "reactions",
                    "huge",
                    "service",
                    "bad",
                    "dup",
                    "conflict",
                    "future",
                ]
            )
            m = _msg(w, post_id, when)
            media, reactions = "none", 0
            if kind == "parts":
                m["text"] = [w.text(), {"type": "bold", "text": w.text()}, w.text()]
            elif kind == "photo":
                m["photo"] = "photos/p.jpg"
                media = "photo"
            elif kind == "poll":
                m["poll"] = {"question": "q?", "answers": []}
                media = "poll"
            elif kind == "reactions":
                m["reactions"] = [
                    {"type": "emoji", "count": w.randint(0, 50), "emoji": "👍"}
                    for _ in range(w.randint(1, 3))
                ]
                reactions = sum(r["count"] for r in m["reactions"])
            elif kind == "huge":
                m["text"] = "J" * HUGE
            elif kind == "service":
                m = {
                    "id": post_id,
                    "type": "service",
                    "action": "pin_message",
                    "date_unixtime": m["date_unixtime"],
                }
                service += 1
                messages.append(m)
                continue
            elif kind == "bad":
                m = w.pick(
                    [
                        {**m, "date_unixtime": "soon"},
                        {k: v for k, v in m.items() if k != "date_unixtime"},
                        {**m, "id": str(post_id)},
                        {**m, "text": 12345},
                        {**m, "reactions": [{"type": "emoji", "count": -3}]},
                        {**m, "text": ["ok", 7]},
                    ]
                )
                bad += 1
                messages.append(m)
                continue
            elif kind == "conflict":
                messages += [m, {**m, "text": m["text"] + " (edited)"}]
                conflicts += 2
                continue
            text = (
                m["text"]
                if isinstance(m["text"], str)
                else "".join(p if isinstance(p, str) else p["text"] for p in m["text"])
            )
            messages.append(m)
            if kind == "dup":
                messages.append(dict(m))
                dups += 1
            published = when
            if kind == "future":  # published after the export's time: snapshot rejected
                published = EXPORT_TIME + timedelta(hours=w.randint(1, 48))
                m["date_unixtime"] = str(int(published.replace(tzinfo=UTC).timestamp()))
                snaps_bad += 1
            exp_posts[post_id] = (cid, post_id, published, text, media)
            if kind != "future":
                exp_snaps[post_id] = (cid, post_id, EXPORT_TIME, None, None, None, reactions)
        for j in range(w.randint(1, 3)):  # messages that are not objects at all
            messages.insert(
                w.randint(0, len(messages)), w.pick([f"oops{w.next_uid()}", w.next_uid(), [j, "x"]])
            )
            bad += 1
        doc = {
            "name": f"Channel {cid}",
            "type": w.pick(["public_channel", "private_channel"]),
            "id": cid,
            "messages": messages,
        }
        folder = w.folder if n == 0 else w.folder / f"ChatExport_{n}"
        folder.mkdir(exist_ok=True)
        path = folder / "result.json"
        path.write_text(json.dumps(doc, ensure_ascii=w.chance(0.5)), encoding="utf-8")
        os.utime(path, (mtime, mtime))
        w.export_channels.add((cid, None, doc["name"], None))
        w.export_posts |= set(exp_posts.values())
        w.export_snapshots |= set(exp_snaps.values())
        w.exports.append(
            {
                "file": str(path.resolve()),
                "messages_read": len(messages),
                "service_skipped": service,
                "duplicates_collapsed": dups,
                "posts_loaded": len(exp_posts),
                "snapshots_loaded": len(exp_snaps),
                "quarantined": bad + conflicts + snaps_bad,
                "posts_quarantined": bad + conflicts,
                "file_rejected": None,
            }
        )
    # malformed exports: each is exactly one quarantine record
    good_bytes = (w.folder / "result.json").read_bytes()
    malformed = {
        "truncated": good_bytes[: len(good_bytes) // 2],
        "not_utf8": b'{"name": "\xff\xfe bad", "type": "public_channel", "id": 5, "messages": []}',
        "top_level_list": b"[1, 2, 3]",
        "no_messages": b'{"name": "x", "type": "public_channel", "id": 6}',
        "not_a_channel": b'{"name": "x", "type": "personal_chat", "id": 7, "messages": []}',
        "bad_id": b'{"name": "x", "type": "public_channel", "id": "seven", "messages": []}',
        "empty": b"",
        "garbage": w.rng.bytes(300),
    }
    for name in [sorted(malformed)[int(i)] for i in w.rng.choice(len(malformed), 5, replace=False)]:
        path = w.folder / f"broken_{name}" / "result.json"
        path.parent.mkdir()
        path.write_bytes(malformed[name])
        os.utime(path, (mtime, mtime))
        w.exports.append({"file": str(path.resolve()), "quarantined": 1, "file_rejected": True})


# --------------------------------------------------------------------------- oracle


@dataclass
class Expected:
    rows: dict[str, set]
    read: dict[str, int]
    loaded: dict[str, int]
    quarantined: dict[str, int]
    duplicate: dict[str, int]
    per_file_quarantine: dict[str, int]
    rejected_files: set[str]
    row_reasons: Counter = field(default_factory=Counter)  # reason fragment -> records
    waiting: dict[tuple, tuple] = field(default_factory=dict)  # snapshots waiting for a post


def _monotonic_rejects(rows: dict[tuple, tuple]) -> set[tuple]:
    """Keys of snapshots with a counter below an earlier snapshot of the same post."""
    cols = COLS["post_snapshots"]
    idx = {c: cols.index(c) for c in COUNTERS}
    by_post: dict[tuple, list[tuple]] = defaultdict(list)
    for key, row in rows.items():
        by_post[key[:2]].append(row)
    rejected = set()
    for history in by_post.values():
        history.sort(key=lambda r: r[2])
        highest: dict[str, int | None] = dict.fromkeys(COUNTERS)
        for row in history:
            for c in COUNTERS:
                v, top = row[idx[c]], highest[c]
                if v is not None and top is not None and v < top:
                    rejected.add(row[:3])
            for c in COUNTERS:  # the SQL window's max covers every earlier row
                v = row[idx[c]]
                if v is not None and (highest[c] is None or v > highest[c]):
                    highest[c] = v
    return rejected


def oracle(w: World) -> Expected:
    exp = Expected({}, {}, {}, {}, {}, Counter(), set())
    posts_published: dict[tuple, datetime | None] = {}
    for table in RAW_TABLES:  # load order: posts before post_snapshots
        files = [f for f in w.files if f.table == table]
        exp.rejected_files |= {str((w.folder / f.name).resolve()) for f in files if f.rejected}
        live = [f for f in files if not f.rejected]
        read = sum(len(f.recs) + len(f.broken) for f in live)
        quarantined = 0
        groups: dict[tuple, list[tuple[tuple, FileSpec]]] = defaultdict(list)
        key_idx = [COLS[table].index(k) for k in KEYS[table]]
        for f in live:
            exp.per_file_quarantine[f.name] += len(f.broken)
            quarantined += len(f.broken)
            for rec in f.recs:
                if not rec.valid or id(rec) in f.invalid:
                    quarantined += 1
                    exp.row_reasons[rec.reason if not rec.valid else f.invalid[id(rec)]] += 1
                    exp.per_file_quarantine[f.name] += 1
                    continue
                typed = rec.typed(f.drop)
                groups[tuple(typed[i] for i in key_idx)].append((typed, f))
        survivors: dict[tuple, tuple] = {}
        counts: dict[tuple, list[FileSpec]] = {}
        for key, members in groups.items():
            if len({typed for typed, _ in members}) > 1:  # conflicting duplicates
                quarantined += len(members)
                for _, f in members:
                    exp.per_file_quarantine[f.name] += 1
            else:
                survivors[key] = members[0][0]
                counts[key] = [f for _, f in members]
        if table == "post_snapshots":
            unknown = {k for k in survivors if k[:2] not in posts_published}
            exp.waiting = {k: survivors[k] for k in unknown}
            early = {
                k
                for k, row in survivors.items()
                if k not in unknown
                and posts_published.get(k[:2]) is not None
                and row[2] < posts_published[k[:2]]
            }
            for k in early | unknown:
                del survivors[k]
            late = _monotonic_rejects(survivors)
            for k in early | late | unknown:
                survivors.pop(k, None)
                quarantined += len(counts[k])
                for f in counts[k]:
                    exp.per_file_quarantine[f.name] += 1
        if table == "posts":
            posts_published = {k: row[2] for k, row in survivors.items()}
        exp.rows[table] = set(survivors.values())
        exp.read[table] = read
        exp.loaded[table] = len(survivors)
        exp.quarantined[table] = quarantined
        exp.duplicate[table] = read - quarantined - len(survivors)
        assert exp.duplicate[table] == sum(len(v) - 1 for k, v in counts.items() if k in survivors)
    exp.rows["channels"] |= w.export_channels
    exp.rows["posts"] |= w.export_posts
    exp.rows["post_snapshots"] |= w.export_snapshots
    return exp


# --------------------------------------------------------------------------- the test


def _dump(conn: duckdb.DuckDBPyConnection) -> dict[str, list]:
    out = {}
    for table in (*RAW_TABLES, "quarantine"):
        rows = conn.execute(f"SELECT * FROM raw.{table}").fetchall()
        out[table] = sorted(rows, key=repr)
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzzed_landing_folder_loses_nothing_and_quarantines_every_bad_record(tmp_path, seed):
    folder = tmp_path / "landing"
    folder.mkdir()
    world = World(seed, folder)
    build_landing(world)
    add_unterminated_quote(world)
    build_exports(world)
    exp = oracle(world)
    n_files = len(list(folder.rglob("*")))
    assert n_files >= 35 and len(exp.rejected_files) == 15  # many files, 3 whole rejects/table

    conn = duckdb.connect()
    source = ChannelDataSource(source="landing", landing_dir=str(folder))
    load = source.load(conn)  # no exception escapes

    # ---- rows lost: 0, rows invented: 0 (keys and values)
    for table in RAW_TABLES:
        got = set(conn.execute(f"SELECT * FROM raw.{table}").fetchall())
        missing, extra = exp.rows[table] - got, got - exp.rows[table]
        assert not missing and not extra, (
            f"{table}: {len(missing)} rows lost, {len(extra)} unexpected; "
            f"lost e.g. {sorted(missing, key=repr)[:2]!r:.600}; extra e.g. "
            f"{sorted(extra, key=repr)[:2]!r:.600}"
        )

    # ---- accounting per table: in = loaded + quarantined + duplicates collapsed
    details = load.details
    assert {str(Path(p)) for p in details["rejected_files"]} == {Path(p).name for p in exp.rejected_files}
    for table in RAW_TABLES:
        read, loaded = details[f"{table}_rows_read"], details[f"{table}_rows_loaded"]
        quarantined, dups = (details[f"{table}_rows_quarantined"], details[f"{table}_rows_duplicate"])
        assert (read, loaded, quarantined, dups) == (
            exp.read[table],
            exp.loaded[table],
            exp.quarantined[table],
            exp.duplicate[table],
        ), table
        assert read + details[f"{table}_rows_retried"] == loaded + quarantined + dups
        assert details[f"{table}_rows_retried"] == 0  # a fresh warehouse: nothing waited
    assert {"notes.txt", "unknown_table.csv", "result.json"} <= set(details["ignored_files"])

    # ---- every rejected record is in raw.quarantine with a reason
    q = conn.execute("SELECT source, target_table, record, reason FROM raw.quarantine").fetchall()
    assert all(reason and reason.strip() for *_, reason in q)
    assert all(record for _, _, record, _ in q)
    assert all(target in RAW_TABLES for _, target, _, _ in q)
    by_source = Counter(Path(source).name for source, *_ in q)
    for name, n in exp.per_file_quarantine.items():
        assert by_source.get(name, 0) == n, name
    for path in exp.rejected_files:  # a whole-file reject is one record
        assert by_source[Path(path).name] == 1, path
    landing_q = sum(exp.quarantined.values()) + len(exp.rejected_files)
    export_q = sum(e["quarantined"] for e in world.exports)
    assert len(q) == landing_q + export_q
    assert (
        sum(details[f"{t}_rows_quarantined"] for t in RAW_TABLES) + len(details["rejected_files"])
        == landing_q
    )
    # the reasons of row-level rejects name the right problem
    reasons = " | ".join(r for *_, r in q)
    for fragment in (
        "bad type",
        "missing key",
        "negative counter",
        "counter decreased",
        "snapshot before post published",
        "duplicate key with conflicting values",
        "unparseable CSV line",
        "empty file",
        "not UTF-8 encoded",
        "bad time zone",
        "time out of range",
        "post not yet known",
        "a number in a column of date strings",
        "ambiguous",
        "not an IANA time zone name",
        "Telegram's launch",
        "after the source's clock",
        "not a UTC offset in use",
    ):
        assert fragment in reasons, fragment
    assert sum(r.startswith("post not yet known") for *_, r in q) == sum(
        len(f) for f in _waiting_copies(world, exp).values()
    )
    landing_reasons = [r for s, _, _, r in q if not s.endswith("result.json")]
    for fragment, n in exp.row_reasons.items():
        assert sum(fragment in r for r in landing_reasons) == n, fragment

    # ---- Desktop exports: their own accounting, file by file
    reports = {e["file"]: e for e in details["desktop_exports"]}
    assert set(reports) == {e["file"] for e in world.exports}
    for e in world.exports:
        got = reports[e["file"]]
        assert got["quarantined"] == e["quarantined"], e["file"]
        if e["file_rejected"]:
            assert got["file_rejected"], e["file"]
        else:
            for key in (
                "messages_read",
                "service_skipped",
                "duplicates_collapsed",
                "posts_loaded",
                "snapshots_loaded",
            ):
                assert got[key] == e[key], (e["file"], key)
            # messages in = posts loaded + service + collapsed + messages quarantined
            assert got["messages_read"] == (
                got["posts_loaded"]
                + got["service_skipped"]
                + got["duplicates_collapsed"]
                + e["posts_quarantined"]
            )
    export_sources = Counter(s for s, *_ in q if s.endswith("result.json"))
    for e in world.exports:
        assert export_sources[e["file"]] == e["quarantined"], e["file"]

    # ---- a second load changes nothing (the waiting snapshots are retried, still wait)
    before = _dump(conn)
    again = source.load(conn)
    after = _dump(conn)
    for table in before:
        gone, new = set(before[table]) - set(after[table]), set(after[table]) - set(before[table])
        assert not gone and not new, (table, sorted(gone, key=repr)[:3], sorted(new, key=repr)[:3])
    assert again.rows_loaded == load.rows_loaded
    assert again.details["post_snapshots_rows_retried"] == sum(
        1 for *_, r in q if r.startswith("post not yet known")
    )

    # ---- the posts arrive: waiting snapshots load, or are rejected if before the post
    arrived = arrive_posts(world, exp, tmp_path / "later")
    waiting_rows = again.details["post_snapshots_rows_retried"]
    third = ChannelDataSource(source="landing", landing_dir=str(tmp_path / "later")).load(conn)
    assert third.details["post_snapshots_rows_retried"] == waiting_rows
    got = set(conn.execute("SELECT * FROM raw.post_snapshots").fetchall())
    lost, extra = (
        (exp.rows["post_snapshots"] | arrived["loaded"]) - got,
        got - (exp.rows["post_snapshots"] | arrived["loaded"]),
    )
    assert not lost and not extra, (len(lost), len(extra))
    still = {
        (c, p)
        for c, p in conn.execute(
            "SELECT DISTINCT json_extract_string(record, '$.channel_id')::BIGINT, "
            "json_extract_string(record, '$.post_id')::BIGINT FROM raw.quarantine "
            "WHERE reason LIKE 'post not yet known%'"
        ).fetchall()
    }
    assert still == {k[:2] for k in exp.waiting} - set(arrived["posts"])
    early = set(
        conn.execute(
            "SELECT DISTINCT channel_id, post_id, observed_at FROM (SELECT "
            "json_extract_string(record, '$.channel_id')::BIGINT AS channel_id, "
            "json_extract_string(record, '$.post_id')::BIGINT AS post_id, "
            "json_extract_string(record, '$.observed_at')::TIMESTAMP AS observed_at, reason "
            "FROM raw.quarantine) WHERE reason LIKE 'snapshot before post published%' "
            "AND post_id >= 90000"
        ).fetchall()
    )
    assert early == arrived["early"]
    settled = _dump(conn)
    ChannelDataSource(source="landing", landing_dir=str(tmp_path / "later")).load(conn)
    assert _dump(conn) == settled
    conn.close()

    # ---- what this seed covered
    world.cover["whole-file rejects"] = len(exp.rejected_files)
    world.cover["snapshots waiting for their post"] = len(exp.waiting)
    world.cover["waiting snapshots loaded when the post arrived"] = len(arrived["loaded"])
    world.cover["waiting snapshots before the late post, rejected"] = len(arrived["early"])
    for fragment, n in exp.row_reasons.items():
        world.cover[f"rejected: {fragment}"] += n
    for case in (
        "unix seconds",
        "unix milliseconds",
        "IANA zone name",
        "DATE given as an offset timestamp",
        "number among date strings",
        "CSV with mixed line endings",
        "stray quote mid-file",
        "rejected: bad time zone",
        "rejected: time out of range",
        "snapshots waiting for their post",
        "waiting snapshots loaded when the post arrived",
        "waiting snapshots before the late post, rejected",
    ):
        assert world.cover[case] > 0, case
    total_rows = sum(len(r) for r in exp.rows.values())
    print(
        f"\nlanding fuzz seed {seed}: {n_files} files (+1 later posts file), "
        f"{sum(exp.read.values())} CSV/Parquet records read, {len(q)} quarantine rows, "
        f"{total_rows} raw rows expected and found: 0 lost, 0 invented; "
        f"covered: {dict(sorted(world.cover.items()))}"
    )


def _waiting_copies(world: World, exp: Expected) -> dict[tuple, list]:
    """Per waiting snapshot key, the file copies that hold it (one quarantine row each)."""
    copies: dict[tuple, list] = defaultdict(list)
    for f in world.files:
        if f.rejected or f.table != "post_snapshots":
            continue
        for rec in f.recs:
            if rec.valid and id(rec) not in f.invalid:
                key = tuple(rec.typed(f.drop)[:3])
                if key in exp.waiting:
                    copies[key].append(f.name)
    return copies


def arrive_posts(world: World, exp: Expected, folder: Path) -> dict:
    """A later folder with the orphans' posts, each published between its first two
    snapshots: the first waits in vain (rejected), the rest load."""
    folder.mkdir()
    lines, early, loaded, posts = [], set(), set(), []
    for key, chain in world.orphans.items():
        waiting = sorted((k, row) for k, row in exp.waiting.items() if k[:2] == key)
        if not waiting:
            continue  # e.g. a conflicting copy rejected the orphan's snapshots outright
        published = chain[1].values["observed_at"] - timedelta(minutes=1)
        posts.append(key)
        lines.append(f"{key[0]},{key[1]},{published.isoformat()}Z,late post,photo\n")
        for k, row in waiting:
            (early if k[2] < published else loaded).add(k if k[2] < published else row)
    (folder / "posts_late.csv").write_text(
        "channel_id,post_id,published_at,text,media_type\n" + "".join(lines)
    )
    return {"early": early, "loaded": loaded, "posts": posts}
