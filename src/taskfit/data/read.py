"""Stream raw rows out of JSONL, JSON, CSV, TSV, Parquet and Excel files, each with its position.

A reader never raises on a bad row: it yields a :class:`RawRow` whose ``error`` says what is
wrong (invalid JSON, bytes that are not UTF-8, a line too long to be sane), so the caller can
quarantine it and keep counting: a file saved as Windows-1252 with a few accented rows loses
those rows, named with line and byte, not the whole file. Only a file that cannot be opened or
has no readable header raises. A UTF-8 byte-order mark and CRLF line endings are read as usual.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from taskfit.errors import DataError, TaskfitError

BOM = b"\xef\xbb\xbf"
_ESCAPED = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8, under errors="surrogateescape"
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
            ".xlsx": "xlsx", ".xlsm": "xlsx"}


@dataclass(slots=True)  # (not frozen: a frozen dataclass takes 4x the time to make, one a row)
class RawRow:
    source: str  # "file:line" (JSONL, CSV, TSV; an Excel sheet's row number) or "file:row N" (Parquet)
    line: int
    obj: Any = None
    raw: str = ""
    error: str | None = None
    empty: bool = False  # a table row with no cell filled (",,,," from a spreadsheet): no row, counted apart


def file_kind(path: Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type '{path.suffix}'",
                        hint=("save it from Excel as an Excel Workbook (.xlsx) or as CSV UTF-8"
                              if path.suffix.lower() in (".xls", ".xlsb", ".ods") else
                              "name a tab-separated .txt (Excel's \"Unicode Text\") .tsv, a comma-separated one .csv"
                              if path.suffix.lower() == ".txt" else
                              f"use one of: {', '.join(sorted(SUFFIXES))}"))
    return kind


def read_rows(path: Path, max_line_bytes: int = 1_000_000, lines: set[int] | None = None) -> Iterator[RawRow]:
    """Yield every non-blank row of ``path`` in order (with ``lines``, those on these lines only:
    a JSONL file's other lines are not decoded); a table's row of empty cells comes as ``empty``."""
    if not path.exists():
        raise DataError(f"{path}: no such file", hint="check the data paths in taskfit.yaml")
    kind = file_kind(path)
    if _json_document(path):
        yield from _json_items(path, max_line_bytes, lines)
    elif kind == "jsonl":
        yield from _jsonl(path, max_line_bytes, lines)
    elif kind == "parquet":
        yield from _parquet(path)
    elif kind == "xlsx":
        yield from _excel(path, max_line_bytes, lines)
    else:
        yield from _delimited(path, "\t" if kind == "tsv" else ",", max_line_bytes)


def lines_in(path: Path) -> int | None:
    """How far the rows of ``path`` go in the numbers :attr:`RawRow.line` gives them, known before
    reading them (a progress bar's end): a JSONL, CSV or TSV file's lines (its newlines counted, a
    megabyte at a time), a Parquet file's rows; None for a JSON document, a workbook, a file in
    UTF-16 or UTF-32, or a file that cannot be read (its error comes when it is). Counted once for
    a file as it stands (its size and time of change): a check asks before and after its scan."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _lines_in_as(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _lines_in_as(name: str, size: int, changed: int) -> int | None:
    """:func:`lines_in` of the file ``name`` at that size and time of change."""
    path = Path(name)
    kind = SUFFIXES.get(path.suffix.lower())
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        if kind not in ("jsonl", "csv", "tsv") or _json_document(path):
            return None
        if _wide_encoding(path) is not None:
            return None
        with path.open("rb") as f:
            lines, last = 0, b"\n"
            while block := f.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        return lines + (last != b"\n")  # a last line without its newline
    except Exception:  # noqa: BLE001 (reading the file says what is wrong with it)
        return None


def row_namer(path: Path) -> Any:
    """How a row of ``path`` is named from its :attr:`RawRow.line` alone (where only that number
    was kept, as for an earlier look-alike): ``file:12``, ``file:row 12`` (Parquet), ``file:item 12``
    (a JSON array's place; its own source adds the line)."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind == "parquet":
        return lambda line: f"{path}:row {line}"
    if _json_document(path):
        return lambda line: f"{path}:item {line}"
    return lambda line: f"{path}:{line}"


# The byte-order marks of the UTF-16 and UTF-32 encodings (Excel's "Unicode Text", Notepad's
# "Unicode"), longest first: UTF-32's little-endian mark starts with UTF-16's.
_WIDE_BOMS = [(b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"),
              (b"\xfe\xff", "utf-16")]


def _wide_encoding(path: Path) -> str | None:
    """"utf-16" or "utf-32" for a file that starts with that encoding's byte-order mark, else None."""
    with path.open("rb") as f:
        start = f.read(4)
    return next((name for mark, name in _WIDE_BOMS if start.startswith(mark)), None)


def _utf8_bytes(path: Path) -> Any:
    """The file's bytes to read, opened: as they are, or, for a file written in UTF-16 or UTF-32
    with its byte-order mark (Excel's "Unicode Text", Notepad's "Unicode"), its text in UTF-8,
    held in memory (lines and rows are numbered alike)."""
    encoding = _wide_encoding(path)
    if encoding is None:
        return path.open("rb")
    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: starts as {encoding.upper()} (its byte-order mark) but byte {exc.start + 1} is "
                        f"not {encoding.upper()}", hint="save it as CSV UTF-8 (or UTF-8 text), and run the command "
                                                        "again") from None
    return io.BytesIO(text.removeprefix("\ufeff").encode("utf-8", "surrogatepass"))


def _jsonl(path: Path, max_line_bytes: int, lines: set[int] | None = None) -> Iterator[RawRow]:
    with _utf8_bytes(path) as f:
        for line_no, data in enumerate(f, start=1):
            if (lines is not None and line_no not in lines) or not data.strip():
                continue
            where = f"{path}:{line_no}"
            if len(data) > max_line_bytes:
                yield RawRow(where, line_no, raw=data[:200].decode("utf-8", "replace"),
                             error=_too_long("line", len(data), max_line_bytes))
                continue
            if data.startswith(BOM):  # an editor's byte-order mark (or one from files joined with cat)
                data = data[len(BOM):]
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(where, line_no, raw=data[:200].decode("utf-8", "replace"),
                             error=not_utf8(data[exc.start], exc.start + 1))
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                # the position within this line (the line's own newline is not part of the row):
                # a row cut short fails where the line ends
                line = text.rstrip("\r\n")
                # json's message ends in "at" where the position completes it ("Unterminated string starting at")
                at = "the end of the line" if exc.pos >= len(line) else f"column {exc.pos + 1}"
                joint = " " if exc.msg.endswith(" at") else " at "
                yield RawRow(where, line_no, raw=text, error=f"invalid JSON: {exc.msg}{joint}{at}")
                continue
            half = lone_surrogate(obj, text)
            if half is not None:
                yield RawRow(where, line_no, raw=text, error=half)
                continue
            yield RawRow(where, line_no, obj=obj, raw=text)


def _json_document(path: Path) -> bool:
    """Whether a .json file is one JSON document (an array of rows, or an object holding one)
    rather than JSON Lines: it starts with "[", or it is one object spread over several lines (a
    first line that is no whole object, in a file that is: a JSONL file whose first line is
    broken stays JSONL, its rows quarantined one by one). Any other file is not. Answered once
    for a file as it stands (its size and time of change), as a check asks it three times and an
    object's answer parses the whole file."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    stat = path.stat()
    return _json_document_as(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _json_document_as(name: str, size: int, changed: int) -> bool:
    """:func:`_json_document` of the file ``name`` at that size and time of change."""
    path = Path(name)
    with path.open("rb") as f:
        first = f.readline()
        while first and not first.strip():
            first = f.readline()
    first = first.removeprefix(BOM).strip()
    if first.startswith(b"["):
        return True
    if not first.startswith(b"{"):
        return False
    try:
        json.loads(first)
        return False
    except ValueError:
        pass
    try:
        return isinstance(json.loads(path.read_bytes().removeprefix(BOM)), dict)
    except ValueError:
        return False


def _json_items(path: Path, max_line_bytes: int, items: set[int] | None = None) -> Iterator[RawRow]:
    """The rows of a .json file that is one document: each object of its top-level array, or of
    the one array of objects its top-level object holds (``{"data": [...]}``), read in turn (the
    file's text is held whole, the objects not). A row is named by its place in the array and the
    line it starts on (``rows.json:item 3 (line 12)``); ``line`` is its place, one number a row.
    A document that is not valid JSON cannot be cut into rows: a DataError names where it breaks."""
    text = read_text(path)
    decoder = json.JSONDecoder()

    def broken(at: int, msg: str) -> DataError:
        line, column = text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1
        return DataError(f"{path}:{line}:{column}: invalid JSON: {msg}",
                         hint="the file is one JSON document, so no row after that point can be told apart: "
                              "mend it there (or write one JSON object per line, as JSONL)")

    def skip(at: int) -> int:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        return at

    at = skip(0)
    held = text.startswith("{", at)  # the rows are an array inside an object (checked whole there)
    if held:
        at = _array_in_object(path, text, at, decoder, broken, skip)
    number, line, counted = 0, 1, 0
    at = skip(at + 1)  # past "["
    if text.startswith("]", at):
        return
    while True:
        try:
            obj, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise broken(exc.pos, exc.msg) from None
        number += 1
        line += text.count("\n", counted, at)
        counted = at
        if items is None or number in items:
            where = f"{path}:item {number} (line {line})"
            raw = text[at:end]
            size = len(raw.encode("utf-8"))
            if size > max_line_bytes:
                yield RawRow(where, number, raw=raw[:200], error=_too_long("item", size, max_line_bytes))
            elif not isinstance(obj, dict):
                kind = ("array" if isinstance(obj, list) else "string" if isinstance(obj, str) else "null"
                        if obj is None else "true or false" if isinstance(obj, bool) else "number")
                yield RawRow(where, number, raw=raw[:500], error=f"a JSON {kind}, not an object: each item of the "
                             "array is one row, an object of fields")
            else:
                half = lone_surrogate(obj, raw)
                yield RawRow(where, number, obj=None if half else obj, raw=raw[:500], error=half)
        at = skip(end)
        if text.startswith("]", at):
            break
        if not text.startswith(",", at):
            raise broken(at, "expected ',' or ']' after an item of the array")
        at = skip(at + 1)
    if not held and skip(at + 1) < len(text):
        raise broken(skip(at + 1), "more after the array of rows")


def _array_in_object(path: Path, text: str, at: int, decoder: json.JSONDecoder, broken: Any, skip: Any) -> int:
    """Where the one array of objects of a top-level object starts (``{"data": [{...}, ...]}``):
    a DataError when the object holds none, or several."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as exc:
        raise broken(exc.pos, exc.msg) from None
    # an array holding objects (its other items are rows quarantined); a chat example's turns,
    # objects of a role or a "from", are no rows
    lists = [key for key, value in whole.items() if isinstance(value, list)
             and (objects := [v for v in value if isinstance(v, dict)])
             and not all("role" in v or "from" in v for v in objects)]
    if len(lists) != 1:
        found = ", ".join(repr(k) for k in lists) if lists else "none"
        raise DataError(f"{path}: one JSON object, holding {len(lists) or 'no'} array{'s' if len(lists) != 1 else ''} "
                        f"of rows ({found}): taskfit reads the rows of one",
                        hint="write the examples as a JSON array of objects ([{...}, {...}]), or one object per "
                             "line (JSONL)")
    del whole
    at = skip(at + 1)  # past "{"
    while True:  # key: value pairs, to the array's offset
        key, at = decoder.raw_decode(text, at)
        at = skip(skip(at) + 1)  # past ":"
        if key == lists[0]:
            return at
        _, at = decoder.raw_decode(text, at)
        at = skip(skip(at) + 1)  # past ","


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # a JSON escape of half a character (\ud83d)


def lone_surrogate(value: Any, text: str | None = None) -> str | None:
    """Why ``value``, decoded from JSON, cannot be read: one of its strings holds half of a
    character (a \\ud800-\\udfff escape without its other half, which no text encoding can write
    and a tokenizer refuses), named by its field; None when every string is whole. Given the JSON
    ``text``, looked for only when it holds such an escape."""
    if text is not None and not ("\\u" in text and _SURROGATE_ESCAPE.search(text)):
        return None
    return _half(value)


def _half(value: Any, field: str = "") -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            where = f"field {field!r}" if field else "the row"
            return (f"lone surrogate: {where} holds \\u{ord(value[exc.start]):04x} at character {exc.start + 1}, "
                    "half of a character written as a JSON escape without its other half; replace or remove it")
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        name = f"{field}[{key}]" if isinstance(key, int) else f"{field}.{key}" if field else key
        found = _half(key, f"{name} (its name)") if isinstance(key, str) else None
        found = found or _half(item, name)
        if found is not None:
            return found
    return None


def _too_long(what: str, size: int, limit: int) -> str:
    """The quarantine reason of a JSONL line or a CSV row over data.max_line_bytes."""
    return f"{what} is {size:,} bytes, over the limit of {limit:,} (data.max_line_bytes); is this really one example?"


def _named_twice(names: list[str]) -> list[str]:
    """The column names a header (or a Parquet schema) holds more than once: a row would keep the
    last of them only."""
    return sorted({name for name in names if names.count(name) > 1})


def not_utf8(byte: int, column: int, advice: str = "; re-save the file as UTF-8") -> str:
    """The quarantine reason of a row holding ``byte`` (not UTF-8) at ``column`` (1-based bytes
    into its line). It starts "not UTF-8:" so the card counts every such row under one reason."""
    try:
        seen = bytes([byte]).decode("cp1252")
        guess = f" ({seen!r} in Windows-1252)" if seen.isprintable() else ""
    except UnicodeDecodeError:
        guess = ""
    return f"not UTF-8: byte 0x{byte:02x}{guess} at byte {column} of the line{advice}"


def read_text(path: Path, error: type[TaskfitError] = DataError, hint: str = "re-save the file as UTF-8") -> str:
    """The whole of a small text file (taskfit.yaml, serve.yaml), a byte-order mark dropped; bytes
    that are not UTF-8 raise ``error`` naming the line and byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}:{not_utf8_at(data, exc.start)}", hint=hint) from None


def not_utf8_at(data: bytes, at: int) -> str:
    """"LINE: not UTF-8: byte ... at byte N of the line" for the byte at ``at`` of a whole file."""
    line, column = data.count(b"\n", 0, at) + 1, at - (data.rfind(b"\n", 0, at) + 1) + 1
    return f"{line}: {not_utf8(data[at], column, advice='')}"


def _first_escaped(lines: list[str]) -> tuple[int, int, int] | None:
    """(line index, 1-based byte column, byte) of the first byte that was not UTF-8, in lines
    decoded with ``surrogateescape`` (each such byte became one lone surrogate)."""
    for i, line in enumerate(lines):
        found = None if line.isascii() else _ESCAPED.search(line)
        if found:
            column = len(line[:found.start()].encode("utf-8", "surrogateescape")) + 1
            return i, column, ord(found.group()) - 0xDC00
    return None


def _fields(n: int) -> str:
    return "1 field" if n == 1 else f"{n} fields"


def sheet_delimiter(header: str, delimiter: str = ",", first: str = "") -> str:
    """The character between a CSV's columns, from its header line (and the ``first`` row's): a
    semicolon where the header has more columns by semicolons than by commas, or as many and only
    the first row agrees with semicolons only ("Frage;Antwort, kurz" over "Wie?;So"); else
    ``delimiter``. Excel writes "CSV" with the locale's list separator, a semicolon in much of
    Europe, even for "CSV UTF-8": such a file is read as it was meant."""
    if delimiter != ",":
        return delimiter

    def width(line: str, sep: str) -> int:
        return len(_cells(line, sep))

    by_comma, by_semicolon = width(header, ","), width(header, ";")
    if by_semicolon > by_comma:
        return ";"
    if by_semicolon == by_comma > 1 and first.strip() and width(first, ";") == by_semicolon != width(first, ","):
        return ";"
    return delimiter


def _cells(line: str, delimiter: str) -> list[str]:
    """One line's cells as the csv module splits them; [] for a line it cannot read alone (a stray
    carriage return inside a cell): the reader of the whole file then says where and why."""
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return []


def _title_above(rows: list[list[str]], path: Path, numbers: list[int], what: str) -> DataError | None:
    """The error for a report's title above the header (an export's "Helpdesk export 2025-03-01",
    then a blank line, then the column names): the first of ``rows`` (each a list of cells, on the
    lines or sheet rows ``numbers``) holds one filled cell, its first, and a later one of them at
    least two, each filled, short and named once; None otherwise (a header whose first column has
    no name, as pandas writes its row numbers, is no title)."""
    if not rows or not rows[0] or not rows[0][0].strip() or sum(bool(c.strip()) for c in rows[0]) != 1:
        return None
    title = next(c.strip() for c in rows[0] if c.strip())
    for cells, number in zip(rows[1:], numbers[1:]):
        names = [c.strip() for c in cells]
        while names and not names[-1]:
            names.pop()
        if len(names) < 2:
            continue
        if all(names) and max(map(len, names)) <= 60 and len(set(names)) == len(names):
            return DataError(f"{path}:{numbers[0]}: {what} {numbers[0]} names one column, {title[:60]!r}, where "
                             f"{what} {number} holds {len(names)} cells ({', '.join(repr(n[:30]) for n in names)})",
                             hint=f"if {what} {numbers[0]} is a title above the header, delete the {what}s above "
                                  f"{what} {number}; else name every column on {what} {numbers[0]}")
        return None
    return None


def _delimited(path: Path, delimiter: str, max_line_bytes: int = 1_000_000) -> Iterator[RawRow]:
    # The csv module stops the whole file at a cell over its limit (131,072 characters by
    # default); a row that long is quarantined below instead, as a JSONL line is.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with _utf8_bytes(path) as raw:
        # A BOM at the start of a spreadsheet export is common and harmless for CSV: skip it.
        if raw.read(len(BOM)) != BOM:
            raw.seek(0)
        # Bytes that are not UTF-8 become lone surrogates here, so that the one row holding them
        # is quarantined with its line and byte instead of the whole file refused.
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        at = raw.tell()
        # the first lines: the header and the first row say the delimiter; a title above the header shows
        peeked = [raw.readline().decode("utf-8", "surrogateescape") for _ in range(10)]
        raw.seek(at)
        delimiter = sheet_delimiter(peeked[0], delimiter, peeked[1])
        title = _title_above([_cells(line, delimiter) for line in peeked], path, list(range(1, 11)), "line")
        if title is not None:
            raise title
        record: list[str] = []  # the physical lines of the record being read (a quoted field may span several)

        def lines() -> Iterator[str]:
            for physical in text:
                record.append(physical)
                yield physical

        # strict: a quote left open that a later row's quote closes, swallowing the rows between, is
        # an error, not a row made of several; a quote out of place within one line ('"abc" ,def', a
        # hand-written TSV's '"Meh", said Bob') is read leniently, as the csv module always did.
        reader = csv.DictReader(lines(), delimiter=delimiter, strict=True)
        try:
            reader.fieldnames
        except csv.Error as exc:
            raise DataError(f"{path}:1: the header row cannot be read as CSV ({exc})",
                            hint="the first line must name the columns, separated by commas, a quote in a name "
                                 "doubled") from None
        if not reader.fieldnames:
            raise DataError(f"{path}: no header row", hint="the first line must name the columns")
        bad = _first_escaped(record)
        if bad is not None:
            raise DataError(f"{path}:{bad[0] + 1}: the header row is {not_utf8(bad[2], bad[1])}",
                            hint="the columns cannot be named until the file is UTF-8 (in Excel: "
                                 "Save As, CSV UTF-8)")
        # " text" for text: spaces around a column's name are a spreadsheet's, not part of the name
        header = reader.fieldnames = [name.strip() for name in reader.fieldnames]
        twice = _named_twice(header)
        if twice:
            raise DataError(f"{path}:1: the header names {', '.join(repr(n) for n in twice)} more than once "
                            f"(columns {', '.join(str(i + 1) for i, n in enumerate(header) if n in twice)})",
                            hint="rename the columns so that each name is used once")
        other = next((sep for sep in (";", "\t", ",", "|") if sep != delimiter and sep in header[0]), None)
        if len(header) == 1 and other is not None:
            shown = {";": "semicolons", "\t": "tabs", ",": "commas", "|": "bars"}[other]
            raise DataError(f"{path}:1: the header is one column, {header[0][:80]!r}: are the columns separated "
                            f"by {shown}?", hint=("name a tab-separated file .tsv" if other == "\t" else
                                                  "save it with commas between the columns (in Excel: Save As, "
                                                  "CSV UTF-8)" if delimiter == "," else
                                                  "name a comma-separated file .csv"))
        record.clear()
        start = 2
        while True:
            where = f"{path}:{start}"
            line = start
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                if len(record) == 1:  # one line ('"abc" ,def', a hand-written file): read as before, leniently
                    cells = next(csv.reader(record, delimiter=delimiter), [])
                    row = dict(zip(header, cells + [None] * (len(header) - len(cells))))  # type: ignore[arg-type]
                    if len(cells) > len(header):
                        row[None] = cells[len(header):]  # type: ignore[index]
                else:  # the lines read so far make no row: quarantined together, named
                    text = "".join(record).rstrip("\r\n")
                    last = line + len(record) - 1
                    start = last + 1
                    record.clear()
                    yield RawRow(where, line, raw=text[:500], error=(
                        f"a quote out of place ({exc}; lines {line}-{last}: a quote opened and not closed, "
                        "taking the lines after it?): close the quote, or double a quote inside a quoted cell (\"\")"))
                    continue
            # (after an error the reader's line count lags: the row's own lines say where the next begins)
            start = line + len(record) if len(record) and reader.line_num < line else reader.line_num + 1
            physical = record.copy()
            record.clear()
            cells = [v for v in row.values() if isinstance(v, str)] + row.get(None, [])  # extra cells too
            if not any(v.strip() for v in cells):
                if any(p.strip() for p in physical):  # cells, all empty: a spreadsheet's empty row
                    yield RawRow(where, line, raw="".join(physical).rstrip("\r\n"), empty=True)
                continue
            if [row.get(name) for name in header] == header and None not in row:
                yield RawRow(where, line, raw=delimiter.join(header),
                             error="the header row again (files joined one after the other?): not an example")
                continue
            size = sum(len(p.encode("utf-8", "surrogateescape")) for p in physical)
            if size > max_line_bytes:
                shown = "".join(physical)[:200].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                yield RawRow(where, line, raw=shown, error=_too_long("row", size, max_line_bytes))
                continue
            bad = _first_escaped(physical)
            if bad is not None:
                shown = "".join(physical).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                yield RawRow(f"{path}:{line + bad[0]}", line + bad[0], raw=shown[:500],
                             error=not_utf8(bad[2], bad[1]))
                continue
            if None in row or None in row.values():  # a short row's last cells would read as empty (a qa refusal)
                missing = [k for k, v in row.items() if v is None]
                text = "".join(physical).rstrip("\r\n")  # the row as the file holds it
                spans = (f" (lines {line}-{line + len(physical) - 1}: a quote opened and not closed?)"
                         if len(physical) > 1 else "")
                n = len(reader.fieldnames)
                error = (f"more fields than the {n} columns of the header{spans}" if None in row else
                         f"{_fields(n - len(missing))} where the header has {n} (no "
                         f"{', '.join(repr(k) for k in missing)}){spans}: add the missing separators, or quote "
                         "a cell that holds one")
                yield RawRow(where, line, raw=text[:500], error=error)
                continue
            yield RawRow(where, line, obj=dict(row), raw=delimiter.join(v or "" for v in row.values()))


def _parquet(path: Path) -> Iterator[RawRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow", hint="pip install pyarrow") from None
    import pyarrow

    try:
        table = pq.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})",
                        hint="a file in another format needs the name of what it holds (.csv, .tsv, .jsonl)") from None
    twice = _named_twice(table.schema_arrow.names)
    if twice:
        raise DataError(f"{path}: the columns {', '.join(repr(n) for n in twice)} are named more than once",
                        hint="rename the columns so that each name is used once")
    batches = table.iter_batches(batch_size=4096)
    n = 0
    for batch in batches:
        for row in batch.to_pylist():
            n += 1
            where, raw = f"{path}:row {n}", json.dumps(row, default=str)[:500]
            try:
                obj = {k: _plain(v, k) for k, v in row.items()}
            except ValueError as exc:
                yield RawRow(where, n, raw=raw, error=str(exc))
                continue
            yield RawRow(where, n, obj=obj, raw=raw)


def _plain(value: Any, column: str) -> Any:
    """A Parquet value as JSON would hold it: a decimal as a number, a date or time as its ISO
    text; binary data is refused (ValueError), as it is no text."""
    import datetime
    import decimal

    if isinstance(value, dict):
        return {k: _plain(v, column) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, column) for v in value]
    if isinstance(value, decimal.Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.date, datetime.time)):  # a datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        raise ValueError(f"column {column!r}: binary data ({len(value)} bytes), not text")
    return value


def _excel(path: Path, max_line_bytes: int = 1_000_000, lines: set[int] | None = None) -> Iterator[RawRow]:
    """An Excel workbook's sheet of examples, read as Excel's own "CSV UTF-8" export of it would be
    read: its first row with a filled cell names the columns, and each cell is the text it holds
    (:func:`cell_text`: a number without a trailing .0, a date in ISO form, TRUE or FALSE; a
    formula's last computed value), an empty one empty text. A row's position is its row number
    in the sheet, as Excel shows it. The examples must be on the workbook's one sheet with cells:
    a second such sheet is an error, not rows silently left out."""
    with _workbook(path) as rows:
        if rows is None:
            return
        header, _, rows = _header(path, rows)
        for number, values in rows:
            if lines is not None and number not in lines:
                continue
            row = _sheet_row(path, header, number, values, max_line_bytes)
            if row is not None:
                yield row


def workbook_header(path: Path) -> list[str]:
    """The column names of a workbook's sheet of rows (as :func:`read_rows` reads it), [] for a
    workbook without a cell."""
    with _workbook(path) as rows:
        return [] if rows is None else _header(path, rows)[0]


def is_workbook(path: Path) -> bool:
    return SUFFIXES.get(path.suffix.lower()) == "xlsx"


@contextlib.contextmanager
def _workbook(path: Path) -> Iterator[Any]:
    """The (row number, cell values) of the workbook's one sheet holding cells, None when none does."""
    import zipfile

    try:
        import openpyxl
    except ImportError:
        raise DataError(f"{path}: reading Excel workbooks needs openpyxl", hint="pip install openpyxl") from None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, openpyxl.utils.exceptions.InvalidFileException) as exc:
        raise DataError(f"{path}: not a readable Excel workbook ({exc})",
                        hint="save it again from Excel as an Excel Workbook (.xlsx), or as CSV UTF-8") from None
    try:
        filled = [sheet for sheet in book.worksheets if _has_cells(sheet)]
        if len(filled) > 1:
            raise DataError(f"{path}: {len(filled)} sheets hold cells ({', '.join(repr(s.title) for s in filled)}); "
                            "taskfit reads the rows of one",
                            hint=f"keep the rows on one sheet and move the others ({', '.join(repr(s.title) for s in filled[1:])}) "
                                 "to another workbook, or save the rows' sheet as CSV UTF-8")
        yield enumerate(filled[0].iter_rows(values_only=True), start=1) if filled else None
    finally:
        book.close()


def _has_cells(sheet: Any) -> bool:
    return any(value is not None for row in sheet.iter_rows(values_only=True) for value in row)


def _header(path: Path, rows: Iterator[tuple[int, tuple]]) -> tuple[list[str], int, Iterator[tuple[int, tuple]]]:
    """The column names of a sheet (its first row with a filled cell), that row's number, and the
    rows after it: a column without a name, a name used twice, or a report's title above the
    header (:func:`_title_above`) is a DataError."""
    header: list[str] = []
    number = 1
    for number, values in rows:
        if any(v is not None for v in values):
            header = [cell_text(v).strip() for v in values]
            break
    if sum(bool(name) for name in header) == 1:  # a title? the rows below it say (they are not read as rows then)
        below = list(itertools.islice(rows, 9))
        title = _title_above([header] + [[cell_text(v) for v in values] for _, values in below], path,
                             [number] + [n for n, _ in below], "row")
        if title is not None:
            raise title
        rows = itertools.chain(below, rows)
    while header and not header[-1]:
        header.pop()
    unnamed = [i + 1 for i, name in enumerate(header) if not name]
    if unnamed:
        raise DataError(f"{path}:{number}: the header row leaves column{'s' if len(unnamed) > 1 else ''} "
                        f"{', '.join(_column_letter(i) for i in unnamed)} without a name",
                        hint="name every column of the header row, or delete the empty ones")
    twice = _named_twice(header)
    if twice:
        raise DataError(f"{path}:{number}: the header names {', '.join(repr(n) for n in twice)} more than once "
                        f"(columns {', '.join(_column_letter(i + 1) for i, n in enumerate(header) if n in twice)})",
                        hint="rename the columns so that each name is used once")
    return header, number, rows


def _sheet_row(path: Path, header: list[str], number: int, values: tuple, max_line_bytes: int) -> RawRow | None:
    """One row of a sheet under ``header``, as :func:`_excel` reads it; None for a row without a
    cell (a blank line of a CSV), ``empty`` for one whose cells hold only spaces."""
    cells = [cell_text(v) for v in values]
    where, raw = f"{path}:{number}", ",".join(cells).rstrip(",")
    if not any(c.strip() for c in cells):
        return RawRow(where, number, raw=raw, empty=True) if any(v is not None for v in values) else None
    extra = [i + 1 for i, c in enumerate(cells[len(header):], start=len(header)) if c.strip()]
    if extra:
        return RawRow(where, number, raw=raw[:500], error=(
            f"a cell beyond the {len(header)} named columns (column {_column_letter(extra[0])}): name its "
            "column in the header row, or clear it"))
    if [c.strip() for c in cells[:len(header)]] == header:
        return RawRow(where, number, raw=raw[:500],
                      error="the header row again (sheets pasted one after the other?): not an example")
    size = sum(len(c.encode("utf-8", "surrogatepass")) for c in cells)
    if size > max_line_bytes:
        return RawRow(where, number, raw=raw[:200], error=_too_long("row", size, max_line_bytes))
    cells += [""] * (len(header) - len(cells))
    return RawRow(where, number, obj=dict(zip(header, cells)), raw=raw[:500])


def cell_text(value: Any) -> str:
    """A spreadsheet cell's value as the text Excel's CSV export writes for it in the General
    format: a whole number without ".0", other numbers in their shortest form, TRUE or FALSE, a
    date (at midnight) or date and time in ISO form; an empty cell as ""."""
    import datetime

    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def _column_letter(number: int) -> str:
    """A column's name as Excel shows it: 1 is A, 27 is AA."""
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters
