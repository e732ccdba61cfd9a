"""One landing file -> Arrow chunks of its records, with every time already read.

CSV goes through ``landing_csv`` (records, broken lines), Parquet through pyarrow
record batches; either way a chunk holds about half a megabyte of text, so reading
costs memory in proportion to the chunk, not the file. Times are read by
``landing_timestamps``; everything else is checked later in SQL (``landing``).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from warehouse.landing_csv import BrokenLine, CsvHeaderError, read_records, sniff_header
from warehouse.landing_timestamps import TimeRules, date_reason, is_number, parse_epoch, parse_instant
from warehouse.schema import RAW_TABLES

CHUNK_CHARS = 512 * 1024  # text per chunk: bounds the Python side of a read
CHUNK_ROWS = 16_384
TIME_TYPES = ("TIMESTAMP", "DATE")
# Chunks are short-lived: the system allocator reuses their memory, where Arrow's
# default mimalloc pool kept about twice the file size resident after a big load.
_POOL = pa.system_memory_pool()
_MIXED_REASON = (
    "bad type: {col}='{raw}' is a number in a column of date strings "
    "(Unix times are read only from a column of numbers)"
)


class FileRejected(Exception):
    """A file that cannot be imported at all; it goes to quarantine as one record."""

    def __init__(self, reason: str, **details: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


def normalize_header(column: str) -> str:
    """Header name as matched against the contract: no BOM, trimmed, lower, '_' for spaces."""
    return "_".join(column.replace("\ufeff", "").strip().lower().split())


def column_positions(header: list[str], table: str) -> tuple[dict[str, int], list[str]]:
    """Contract column -> 0-based position in the file, and the extra columns.

    Raises FileRejected when a key column is missing.
    """
    columns, key = RAW_TABLES[table]
    positions: dict[str, int] = {}
    extra: list[str] = []
    for index, name in enumerate(header):
        norm = normalize_header(name)
        if norm in columns and norm not in positions:
            positions[norm] = index
        else:
            extra.append(name)
    missing = [col for col in key if col not in positions]
    if missing:
        raise FileRejected(f"missing key column(s): {', '.join(missing)}", columns=header)
    return positions, extra


def check_utf8(path: Path) -> None:
    """Reject non-UTF-8 files whole: a wrong encoding garbles every line, not a few."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise FileRejected(
                    f"not UTF-8 encoded: invalid byte at offset {offset + err.start}"
                ) from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise FileRejected("not UTF-8 encoded: truncated character at end of file") from None


class ChunkBuilder:
    """Raw values of one table's rows -> Arrow chunks with the times already read.

    Each chunk holds ``_file``, ``_source``, every contract column as VARCHAR (the
    value as written) and, per time column, ``_t_<col>`` (naive UTC) and
    ``_terr_<col>`` (why it is not a usable time).
    """

    def __init__(self, table: str, rules: TimeRules) -> None:
        self.table = table
        self.rules = rules
        self.columns = list(RAW_TABLES[table][0])
        self.types = RAW_TABLES[table][0]
        self.times = [c for c in self.columns if self.types[c] in TIME_TYPES]

    def _times_from_text(self, col: str, raw: list, numbers_ok: bool) -> tuple[list, list]:
        values, reasons = [], []
        is_date = self.types[col] == "DATE"
        for value in raw:
            text = value.strip() if value is not None else ""
            if not text:
                values.append(None)
                reasons.append(None)
                continue
            if not numbers_ok and is_number(text):
                parsed, why = None, _MIXED_REASON.format(col=col, raw=text)
            else:
                parsed, why = parse_instant(text, self.rules, col)
            if is_date:
                parsed = parsed.date() if parsed is not None else None
                why = date_reason(why) if why else None
            values.append(parsed)
            reasons.append(why)
        return values, reasons

    def _times_from_numbers(self, col: str, array: pa.Array) -> tuple[list, list, pa.Array]:
        values, reasons = [], []
        for number in array.to_pylist():
            if number is None:
                values.append(None)
                reasons.append(None)
                continue
            parsed, why = parse_epoch(float(number), self.rules, col, str(number))
            values.append(parsed.date() if parsed and self.types[col] == "DATE" else parsed)
            reasons.append(why)
        return values, reasons, pc.cast(array, pa.string(), memory_pool=_POOL)

    def _times_from_arrow(self, col: str, array: pa.Array) -> tuple[pa.Array, list, pa.Array]:
        """A Parquet timestamp/date column: taken as given (aware -> UTC, naive = UTC)."""
        naive = pc.cast(array, pa.timestamp("us"), safe=False, memory_pool=_POOL)
        raw = pc.replace_substring_regex(
            pc.cast(naive, pa.string(), memory_pool=_POOL), r"\.0+$", "", memory_pool=_POOL
        )
        reasons: list = [None] * len(naive)
        early = pc.less(naive, pa.scalar(self.rules.earliest, pa.timestamp("us")))
        late = pc.greater(naive, pa.scalar(self.rules.latest, pa.timestamp("us")))
        bad = pc.or_(early, late)
        if pc.any(bad).as_py():
            for i in pc.indices_nonzero(bad).to_pylist():
                text = raw[i].as_py()
                _, reasons[i] = parse_instant(text, self.rules, col)
                if self.types[col] == "DATE":
                    reasons[i] = date_reason(reasons[i])
        if self.types[col] == "DATE":
            return pc.cast(naive, pa.date32(), memory_pool=_POOL), reasons, raw
        return naive, reasons, raw

    def build(
        self,
        file_id: int,
        source: str,
        raw: dict[str, object],
        n: int,
        numbers_ok: dict[str, bool] | None = None,
    ) -> pa.Table:
        """``raw``: contract column -> list of strings or an Arrow array (absent = NULL)."""
        numbers_ok = numbers_ok or {}
        data: dict[str, object] = {
            "_file": pa.array([file_id] * n, pa.int32(), memory_pool=_POOL),
            "_source": pa.array([source] * n, pa.string(), memory_pool=_POOL),
        }
        times: dict[str, object] = {}
        for col in self.columns:
            value = raw.get(col)
            kind = pa.date32() if self.types[col] == "DATE" else pa.timestamp("us")
            if value is None:
                data[col] = pa.nulls(n, pa.string(), memory_pool=_POOL)
                if col in self.times:
                    times[f"_t_{col}"] = pa.nulls(n, kind, memory_pool=_POOL)
                    times[f"_terr_{col}"] = pa.nulls(n, pa.string(), memory_pool=_POOL)
                continue
            if col in self.times and isinstance(value, pa.Array) and (pa.types.is_temporal(value.type)):
                parsed, reasons, text = self._times_from_arrow(col, value)
            elif (
                col in self.times
                and isinstance(value, pa.Array)
                and (pa.types.is_integer(value.type) or pa.types.is_floating(value.type))
            ):
                parsed, reasons, text = self._times_from_numbers(col, value)
            else:
                text = (
                    value
                    if not isinstance(value, pa.Array)
                    else (
                        value
                        if pa.types.is_string(value.type)
                        else pc.cast(value, pa.string(), memory_pool=_POOL)
                    )
                )
                if col in self.times:
                    strings = text.to_pylist() if isinstance(text, pa.Array) else text
                    parsed, reasons = self._times_from_text(col, strings, numbers_ok.get(col, True))
            data[col] = text if isinstance(text, pa.Array) else pa.array(text, pa.string(), memory_pool=_POOL)
            if col in self.times:
                times[f"_t_{col}"] = (
                    parsed if isinstance(parsed, pa.Array) else pa.array(parsed, kind, memory_pool=_POOL)
                )
                times[f"_terr_{col}"] = pa.array(reasons, pa.string(), memory_pool=_POOL)
        return pa.table({**data, **times})


@dataclass
class FileRead:
    """What reading one file produced, before it is staged."""

    rows: int = 0
    broken: list[BrokenLine] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    number_columns: dict[str, list[int]] = field(default_factory=dict)  # col -> [numbers, texts]
    numbers_ok: dict[str, bool] = field(default_factory=dict)  # False: numbers refused in col


def csv_chunks(path: Path, builder: ChunkBuilder, file_id: int, read: FileRead) -> Iterator[pa.Table]:
    """A CSV file as staged chunks; broken lines and time-column shapes go to ``read``."""
    check_utf8(path)
    try:
        header, delim = sniff_header(path)
    except CsvHeaderError as err:
        raise FileRejected(str(err)) from None
    positions, read.extra = column_positions(header, builder.table)
    text_columns = {c for c, t in builder.types.items() if t == "TEXT"}
    multiline = frozenset(
        i
        for i in range(len(header))
        if i not in positions.values() or any(positions.get(c) == i for c in text_columns)
    )
    wanted = [(col, positions[col]) for col in builder.columns if col in positions]
    read.number_columns = {c: [0, 0] for c in builder.times if c in positions}
    rows: list[list[str]] = []
    chars = 0

    def flush() -> pa.Table:
        raw = {col: [r[i] for r in rows] for col, i in wanted}
        for col, counts in read.number_columns.items():
            numbers = sum(1 for v in raw[col] if is_number(v.strip()))
            blanks = sum(1 for v in raw[col] if not v.strip())
            counts[0] += numbers
            counts[1] += len(rows) - numbers - blanks
        return builder.build(file_id, str(path), raw, len(rows), read.numbers_ok)

    keys = frozenset(positions[c] for c in RAW_TABLES[builder.table][1] if builder.types[c] == "BIGINT")
    for item in read_records(path, delim, len(header), multiline, keys):
        if isinstance(item, BrokenLine):
            read.broken.append(item)
            continue
        rows.append(item.fields)
        chars += sum(map(len, item.fields))
        if len(rows) >= CHUNK_ROWS or chars >= CHUNK_CHARS:
            yield flush()
            read.rows += len(rows)
            rows, chars = [], 0
    if rows:
        yield flush()
        read.rows += len(rows)


def parquet_chunks(path: Path, builder: ChunkBuilder, file_id: int, read: FileRead) -> Iterator[pa.Table]:
    """A Parquet file in record batches, every contract column as written."""
    handle = pq.ParquetFile(path, memory_map=False)
    names = handle.schema_arrow.names
    positions, read.extra = column_positions(names, builder.table)
    wanted = [(col, names[i]) for col, i in positions.items()]
    read.number_columns = {}
    for batch in handle.iter_batches(batch_size=CHUNK_ROWS, columns=[n for _, n in wanted]):
        raw = {col: batch.column(name) for col, name in wanted}
        for col in builder.times:
            value = raw.get(col)
            if value is not None and pa.types.is_string(value.type):
                texts = [v.strip() for v in value.to_pylist() if v is not None and v.strip()]
                counts = read.number_columns.setdefault(col, [0, 0])
                numbers = sum(1 for v in texts if is_number(v))
                counts[0] += numbers
                counts[1] += len(texts) - numbers
        yield builder.build(file_id, str(path), raw, batch.num_rows, read.numbers_ok)
        read.rows += batch.num_rows
