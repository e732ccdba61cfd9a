"""How the landing loader reads a time: one policy, so nothing is misread silently.

- ISO 8601 with an offset or ``Z`` is taken as given and converted to naive UTC; a
  naive ISO time is UTC.
- A trailing IANA zone name (``… Europe/Moscow`` or ``…[Europe/Moscow]``) is resolved
  with ``zoneinfo``; a local time the zone skips or repeats (DST) is rejected, and so
  are abbreviations such as ``MSK`` or ``IST``, which name different offsets in
  different places.
- Offsets must be ones in use on Earth (−12:00 … +14:00).
- A bare number is a Unix time in seconds or milliseconds (the unit follows from the
  magnitude: the two plausible ranges are 1000× apart and do not overlap). The caller
  allows numbers only in a column of numbers; ``20261101`` or a microsecond count
  falls outside both ranges and is rejected, never read as 1970 or year 58804.
- Every time must lie between Telegram's launch (August 2013) and one day after the
  source's clock.

Reasons are complete sentences for ``raw.quarantine``: ``bad type: …`` (not a time at
all), ``bad time zone: …`` and ``time out of range: …``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TELEGRAM_LAUNCH = datetime(2013, 8, 1)
CLOCK_SKEW = timedelta(days=1)
MIN_OFFSET, MAX_OFFSET = timedelta(hours=-12), timedelta(hours=14)
_EPOCH = datetime(1970, 1, 1)
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")
_ZONE_SUFFIX = re.compile(r"(?P<time>.+?)(?:\[(?P<bracket>[^\]]*)\]|\s+(?P<name>[A-Za-z][A-Za-z0-9_+\-/]*))")
_OFFSET_SUFFIX = re.compile(r"(?<=\d)\s*(?P<sign>[+-])(?P<h>\d\d)(?::?(?P<m>\d\d))?(?::?\d\d)?$")
_ABBREVIATION = re.compile(r"[A-Z]{2,6}")
_UTC_NAMES = {"UTC", "GMT", "Z", "UT"}


@dataclass(frozen=True)
class TimeRules:
    """The plausible window for one load: Telegram's launch to the clock plus a day."""

    clock: datetime  # the source's clock, naive UTC

    @property
    def earliest(self) -> datetime:
        return TELEGRAM_LAUNCH

    @property
    def latest(self) -> datetime:
        return self.clock + CLOCK_SKEW

    def out_of_range(self, value: datetime) -> str | None:
        """Why ``value`` (naive UTC) is implausible, or None."""
        if value < self.earliest:
            return f"before Telegram's launch ({self.earliest:%Y-%m-%d})"
        if value > self.latest:
            # no clock value in the text: a reason must read the same on every load
            return "more than a day after the source's clock (the time of the load)"
        return None


def is_number(text: str) -> bool:
    """A bare decimal number (what a Unix time looks like)."""
    return _NUMBER.fullmatch(text) is not None


def _show(value: datetime) -> str:
    """ISO spelling that keeps four-digit years (strftime prints year 1 as '1')."""
    return value.isoformat(sep=" ", timespec="seconds")


def _format_offset(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def parse_epoch(number: float, rules: TimeRules, column: str, raw: str) -> tuple:
    """A Unix time in seconds or milliseconds -> (naive UTC, None), else (None, reason)."""
    for scale in (1.0, 1000.0):
        try:
            value = _EPOCH + timedelta(seconds=number / scale)
        except OverflowError:
            continue
        if rules.out_of_range(value) is None:
            return value, None
    unit, scale = ("seconds", 1.0) if abs(number) < 1e11 else ("milliseconds", 1000.0)
    try:
        seen = _show(_EPOCH + timedelta(seconds=number / scale))
    except OverflowError:
        seen = "beyond any calendar"
    return None, (
        f"time out of range: {column}='{raw}' read as Unix {unit} is {seen}; a Unix time "
        f"must be seconds or milliseconds from {rules.earliest:%Y-%m-%d} (Telegram's launch) "
        "to a day after the source's clock"
    )


def _zone(token: str) -> ZoneInfo | str:
    """The zone a trailing name stands for, or why it cannot be used."""
    if token.upper() in _UTC_NAMES:
        return ZoneInfo("UTC")
    if _ABBREVIATION.fullmatch(token):
        return (
            f"'{token}' is a time zone abbreviation, and abbreviations are ambiguous "
            "(IST is India, Israel or Ireland); write an offset such as +03:00 or an "
            "IANA name such as Europe/Moscow"
        )
    try:
        return ZoneInfo(token)
    except (ZoneInfoNotFoundError, ValueError):
        return f"'{token}' is not an IANA time zone name"


def _localize(local: datetime, zone: ZoneInfo) -> datetime | str:
    """A naive wall-clock time in ``zone`` -> aware, or why it is not one instant."""
    first, second = local.replace(tzinfo=zone, fold=0), local.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset():
        roundtrip = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
        if roundtrip != local:
            return f"{_show(local)} does not exist in {zone.key} (clocks moved forward)"
        return f"{_show(local)} happens twice in {zone.key} (clocks moved back); write the offset"
    return first


def _parse_text(text: str, rules: TimeRules, column: str) -> tuple:
    """Uncached body of ``parse_instant``."""
    bad_type = f"bad type: {column}='{text}' is not a timestamp"
    zone: ZoneInfo | None = None
    match = _ZONE_SUFFIX.fullmatch(text)
    if match:
        found = _zone((match["bracket"] if match["bracket"] is not None else match["name"]).strip())
        if isinstance(found, str):
            return None, f"bad time zone: {column}='{text}': {found}"
        zone, text_time = found, match["time"].strip()
    else:
        text_time = text
    offset = _OFFSET_SUFFIX.search(text_time) if ":" in text_time else None
    if offset:
        given = timedelta(hours=int(offset["h"]), minutes=int(offset["m"] or 0))
        given = -given if offset["sign"] == "-" else given
        if not MIN_OFFSET <= given <= MAX_OFFSET:
            return None, (
                f"bad time zone: {column}='{text}': offset {_format_offset(given)} is not a UTC "
                "offset in use (-12:00 to +14:00)"
            )
    try:
        parsed = datetime.fromisoformat(text_time)
    except ValueError:
        return None, bad_type
    if zone is not None:
        if parsed.tzinfo is None:
            localized = _localize(parsed, zone)
            if isinstance(localized, str):
                return None, f"bad time zone: {column}='{text}': {localized}"
            parsed = localized
        else:
            expected = parsed.astimezone(zone).utcoffset()
            if expected != parsed.utcoffset():
                return None, (
                    f"bad time zone: {column}='{text}': offset "
                    f"{_format_offset(parsed.utcoffset())} disagrees with {zone.key} "
                    f"({_format_offset(expected)} at that time)"
                )
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    why = rules.out_of_range(parsed)
    if why:
        return None, f"time out of range: {column}='{text}' is {_show(parsed)} UTC, {why}"
    return parsed, None


@lru_cache(maxsize=1 << 16)
def parse_instant(text: str, rules: TimeRules, column: str = "value") -> tuple:
    """One non-empty, trimmed text -> (naive UTC datetime, None) or (None, reason).

    Cached: snapshot files repeat the same observation times many times.
    """
    if is_number(text):
        return parse_epoch(float(text), rules, column, text)
    return _parse_text(text, rules, column)


def as_date(value: datetime | None) -> date | None:
    """The UTC calendar day of a parsed instant (a DATE column's value)."""
    return None if value is None else value.date()


def date_reason(reason: str) -> str:
    """A timestamp reason reworded for a DATE column."""
    return reason.replace("is not a timestamp", "is not a date")
