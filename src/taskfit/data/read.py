"""Stream raw rows out of JSONL, CSV, TSV and Parquet files, each with its position.

A reader never raises on a bad row: it yields a :class:`RawRow` whose ``error`` says what is
wrong (invalid JSON, bytes that are not UTF-8, a byte-order mark, a line too long to be sane), so
the caller can quarantine it and keep counting. Only a file that cannot be opened at all raises.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from taskfit.errors import DataError

BOM = b"\xef\xbb\xbf"
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


@dataclass(frozen=True)
class RawRow:
    source: str  # "file:line" (JSONL, CSV, TSV) or "file:row N" (Parquet)
    line: int
    obj: Any = None
    raw: str = ""
    error: str | None = None


def file_kind(path: Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type '{path.suffix}'",
                        hint=f"use one of: {', '.join(sorted(SUFFIXES))}")
    return kind


def read_rows(path: Path, max_line_bytes: int = 1_000_000) -> Iterator[RawRow]:
    """Yield every non-blank row of ``path`` in order."""
    if not path.exists():
        raise DataError(f"{path}: no such file", hint="check the data paths in taskfit.yaml")
    kind = file_kind(path)
    if kind == "jsonl":
        yield from _jsonl(path, max_line_bytes)
    elif kind == "parquet":
        yield from _parquet(path)
    else:
        yield from _delimited(path, "\t" if kind == "tsv" else ",")


def _jsonl(path: Path, max_line_bytes: int) -> Iterator[RawRow]:
    with path.open("rb") as f:
        for line_no, data in enumerate(f, start=1):
            if not data.strip():
                continue
            where = f"{path}:{line_no}"
            preview = data[:200].decode("utf-8", "replace")
            if len(data) > max_line_bytes:
                yield RawRow(where, line_no, raw=preview,
                             error=f"line is {len(data):,} bytes, over the limit of {max_line_bytes:,} "
                                   "(data.max_line_bytes); is this really one example?")
                continue
            if data.startswith(BOM):
                yield RawRow(where, line_no, raw=preview,
                             error="starts with a byte-order mark (BOM); save the file as UTF-8 "
                                   "without BOM")
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(where, line_no, raw=preview,
                             error=f"not UTF-8 (invalid byte 0x{data[exc.start]:02x} at byte {exc.start})")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawRow(where, line_no, raw=text, error=f"invalid JSON: {exc.msg} at column {exc.colno}")
                continue
            yield RawRow(where, line_no, obj=obj, raw=text)


def _delimited(path: Path, delimiter: str) -> Iterator[RawRow]:
    with path.open("rb") as raw:
        # A BOM at the start of a spreadsheet export is common and harmless for CSV: skip it.
        if raw.read(len(BOM)) != BOM:
            raw.seek(0)
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        reader = csv.DictReader(text, delimiter=delimiter)
        try:
            if not reader.fieldnames:
                raise DataError(f"{path}: no header row", hint="the first line must name the columns")
            start = 2
            for row in reader:
                where = f"{path}:{start}"
                line = start
                start = reader.line_num + 1
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue
                if None in row:
                    yield RawRow(where, line, raw=str(row),
                                 error=f"more fields than the {len(reader.fieldnames)} columns of the header")
                    continue
                yield RawRow(where, line, obj=dict(row), raw=delimiter.join(v or "" for v in row.values()))
        except UnicodeDecodeError:
            # Text is decoded ahead in blocks, so the bad byte is at or a little after this line.
            raise DataError(f"{path}:{reader.line_num + 1}: not UTF-8 at or after this line",
                            hint="re-export the file as UTF-8") from None


def _parquet(path: Path) -> Iterator[RawRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow", hint="pip install pyarrow") from None
    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            n += 1
            yield RawRow(f"{path}:row {n}", n, obj=row, raw=json.dumps(row, default=str)[:500])
