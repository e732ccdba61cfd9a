"""Read a landing CSV record by record, recovering at the next line after a broken one.

Python's ``csv`` module does the RFC 4180 parsing (quotes, doubled quotes, line breaks
inside quoted fields, ``\\n``, ``\\r\\n`` and ``\\r`` line endings mixed freely). What
it cannot do is recover: a stray opening quote makes every following line part of one
field. So the lines the parser pulls are tracked, and a record that is malformed
(wrong number of fields, bad quoting, a line break inside a field that cannot hold
one, a field over 2 MiB, end of file inside quotes) costs only its first physical
line: that line is reported broken and parsing restarts at the line after it. A real
multi-line text field still loads, because its record is well formed.

The file is streamed; memory does not grow with its size.
"""

from __future__ import annotations

import csv
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

DELIMITERS = (",", ";", "\t", "|")
_INTEGER = re.compile(r"[+-]?\d+(\.0*)?")  # as the loader reads integer keys
MAX_FIELD_CHARS = 2 * 1024 * 1024  # DuckDB's default line limit, kept as the rule
_CSV_ERRORS = {
    "unexpected end of data": "end of file inside a quoted field (an unclosed quote)",
    "field larger than field limit": "a field longer than 2 MiB",
}


class CsvHeaderError(ValueError):
    """The first line is not a usable header (empty or unparseable)."""


@dataclass
class Row:
    """A well-formed record: its first physical line and its fields."""

    line: int
    fields: list[str]


@dataclass
class BrokenLine:
    """A physical line that starts no well-formed record, and why."""

    line: int
    text: str
    problem: str


def sniff_header(path: Path) -> tuple[list[str], str]:
    """Header fields and delimiter, taken from the first line (the most frequent candidate)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        first = handle.readline().rstrip("\r\n")
    if not first.strip():
        raise CsvHeaderError("empty file: no records")
    delim = max(DELIMITERS, key=first.count) if any(d in first for d in DELIMITERS) else ","
    try:
        return next(csv.reader([first], delimiter=delim, strict=True)), delim
    except csv.Error as err:
        raise CsvHeaderError(f"unreadable csv header: {err}") from None


class _Lines:
    """Physical lines of a text file with their numbers, and a push-back queue."""

    def __init__(self, handle: TextIO) -> None:
        self._lines = iter(handle)
        self._number = 0
        self.pending: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pending:
            item = self.pending.popleft()
        else:
            text = next(self._lines)  # StopIteration ends the csv reader
            self._number += 1
            item = (self._number, text)
        self.taken.append(item)
        return item[1]


@contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    """csv's field limit is process-wide: set ours for the read, then put it back."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _problem(fields: list[str], width: int, multiline: frozenset[int]) -> str | None:
    if len(fields) != width:
        return f"expected {width} fields, found {len(fields)}"
    for index, value in enumerate(fields):
        if index not in multiline and ("\n" in value or "\r" in value):
            return f"line break inside field {index + 1} (a stray quote?)"
    return None


def _swallowed(taken: list[tuple[int, str]], delimiter: str, width: int, keys: frozenset[int]) -> int | None:
    """A line inside a multi-line record that is a complete record of its own.

    Two stray quotes pair up across the lines between them into one record of the
    right width; the giveaway is an inner line that parses alone to ``width`` fields
    with integers at the key positions (prose almost never does). The last line is
    not evidence: it holds the closing quote and the rest of the record, so after a
    quoted first column it parses alone to ``width`` fields in good files too. Two
    stray quotes on adjacent lines therefore still make one (wrong) record.
    """
    for number, text in taken[1:-1]:
        try:
            fields = next(csv.reader([text.rstrip("\r\n")], delimiter=delimiter, strict=True))
        except (csv.Error, StopIteration):
            continue
        if len(fields) == width and all(_INTEGER.fullmatch(fields[i].strip()) for i in keys):
            return number
    return None


def _explain(err: csv.Error) -> str:
    message = str(err)
    for start, text in _CSV_ERRORS.items():
        if message.startswith(start):
            return text
    return f"bad quoting ({message})"


def read_records(
    path: Path,
    delimiter: str,
    width: int,
    multiline: frozenset[int],
    keys: frozenset[int] = frozenset(),
) -> Iterator[Row | BrokenLine]:
    """Every record after the header line, in file order; broken lines in between.

    ``width`` is the header's field count; ``multiline`` the 0-based fields that may
    hold line breaks (text columns), elsewhere a line break means a stray quote;
    ``keys`` the integer key fields, used to spot lines swallowed by stray quotes.
    """
    with _field_limit(MAX_FIELD_CHARS), path.open(encoding="utf-8-sig", newline="") as handle:
        lines = _Lines(handle)
        next(lines, None)  # the header (sniff_header read it)
        reader = csv.reader(lines, delimiter=delimiter, quotechar='"', strict=True)
        while True:
            lines.taken.clear()
            try:
                fields = next(reader)
                problem = _problem(fields, width, multiline) if fields else None
            except StopIteration:
                return
            except csv.Error as err:
                fields, problem = [], _explain(err)
            taken = list(lines.taken)
            if problem is None and len(taken) > 1 and keys:
                swallowed = _swallowed(taken, delimiter, width, keys)
                if swallowed is not None:
                    problem = f"a quote opened here runs over line {swallowed}, a record of its own"
            if problem is None:
                if fields:  # [] is a blank line
                    yield Row(taken[0][0], fields)
                continue
            yield BrokenLine(taken[0][0], taken[0][1].rstrip("\r\n"), problem)
            lines.pending.extendleft(reversed(taken[1:]))
            reader = csv.reader(lines, delimiter=delimiter, quotechar='"', strict=True)
