"""Parse CSV/TSV, JSON (an array of objects), JSON Lines and Parquet into a new SQLite table,
streaming: memory stays bounded by a batch of rows. chatcli.sql.files is the API around it;
column names and types, and the writing of the table: chatcli.sql.table_writer.

Encodings: a BOM decides (UTF-8, UTF-16, UTF-32); UTF-16 without a BOM is recognised by its
zero bytes; otherwise UTF-8, and a file that is not valid UTF-8 is read as Windows-1252 (what
Excel writes on Western systems), or Latin-1 when it holds bytes cp1252 leaves undefined (no
guessing library: a fixed chain gives the same answer every time). The CSV delimiter (",",
";", tab, "|") is detected with `csv.Sniffer`; ".tsv" means tab. The first row is the header.
CSV parsing is the standard library's `csv` module (C, strict quoting); Parquet needs pyarrow,
imported only when a Parquet file is read (`chatcli[parquet]`).
"""

from __future__ import annotations

import codecs
import csv
import json
import sqlite3
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TextIO

from ..errors import DataFileError
from .table_writer import (
    TableWriter,
    column_names,
    quote_ident,
    sql_value,
    text_types,
    unique_name,
    value_type,
)

Kind = Literal["csv", "tsv", "json", "jsonl", "parquet", "sqlite"]

SAMPLE_ROWS = 1000  # rows read before the table is created, to choose the column types
BATCH_ROWS = 5000  # rows per executemany: big enough to amortise the call, small in memory
HEAD_BYTES = 64 * 1024  # read to detect the encoding, the kind and the delimiter
_FIELD_LIMIT = 16 * 1024 * 1024  # one CSV cell; also bounds memory on an unclosed quote
_JSON_VALUE_LIMIT = 64 * 1024 * 1024  # one JSON array element, in characters

_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)  # fmt: skip
_FALLBACKS = ("utf-8", "cp1252", "latin-1")  # latin-1 decodes any byte: the chain always ends


# Encodings


def read_head(path: Path) -> bytes:
    """The first HEAD_BYTES of a file: enough to tell its kind, encoding and delimiter."""
    try:
        with open(path, "rb") as f:
            return f.read(HEAD_BYTES)
    except OSError as e:
        raise DataFileError(f"cannot read the file: {e.strerror or e}", path=path) from None


def encodings(head: bytes) -> list[str]:
    """The encodings to try, in order: one when a BOM or zero bytes decide, else the fallbacks."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return [encoding]
    if b"\0" in head:  # text has no NULs; UTF-16 of mostly-ASCII text is half zeros
        odd = head[1::2].count(0)
        even = head[0::2].count(0)
        if max(odd, even) * 4 >= len(head):
            return ["utf-16-le" if odd > even else "utf-16-be"]
    chain = list(_FALLBACKS)
    while len(chain) > 1 and not _decodes(head, chain[0]):
        chain.pop(0)
    return chain


def _decodes(head: bytes, encoding: str) -> bool:
    try:
        codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def head_text(head: bytes, encoding: str) -> str:
    """The head as text for sniffing; a character cut at the end is dropped, not an error."""
    return codecs.getincrementaldecoder(encoding)("replace").decode(head, final=False)


# CSV and TSV


def import_text(
    conn: sqlite3.Connection,
    path: Path,
    table: str,
    kind: Kind,
    on_bytes: Callable[[int], None],
) -> tuple[int, str, str | None]:
    """Import a CSV/TSV/JSON/JSONL file, trying the next fallback encoding when the file turns
    out not to be in the one tried. Returns (rows, encoding, delimiter)."""
    head = read_head(path)
    if not head:
        raise DataFileError("the file is empty", path=path)
    chain = encodings(head)
    for i, encoding in enumerate(chain):
        try:
            with open(path, encoding=encoding, newline="") as f:
                if kind in ("csv", "tsv"):
                    delimiter = "\t" if kind == "tsv" else _sniff(head_text(head, encoding))
                    rows = _import_csv(conn, f, path, table, delimiter, on_bytes)
                    return rows, encoding, delimiter
                records = _json_array(f, path) if kind == "json" else _json_lines(f, path)
                return _import_records(conn, records, table, f, on_bytes), encoding, None
        except UnicodeDecodeError:
            conn.execute(f"DROP TABLE IF EXISTS {quote_ident(table)}")
            if i == len(chain) - 1:
                line = _line_of_decode_error(path, encoding)
                raise DataFileError(f"line {line}: not valid {encoding} text", path=path) from None
        except OSError as e:
            raise DataFileError(f"cannot read the file: {e.strerror or e}", path=path) from None
    raise AssertionError("unreachable: the last encoding either imports or raises")


def _sniff(text: str) -> str:
    # whole lines from the first 8 KB: the Sniffer's regexes cost ~10 ms per KB
    text = text[:8192]
    sample = text[: text.rfind("\n") + 1] or text
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:  # one column, or too irregular to tell
        return ","


def _line_of_decode_error(path: Path, encoding: str) -> int:
    """The line holding the first undecodable byte (an error path: reads the file again)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open(path, "rb") as f:
        for piece in f:  # pieces end at b"\n": in every encoding here, a line ends in one
            state = decoder.getstate()
            try:
                line += decoder.decode(piece).count("\n")
            except UnicodeDecodeError:
                # again byte by byte: the piece may first finish the last line's newline
                decoder.setstate(state)
                for i in range(len(piece)):
                    try:
                        line += decoder.decode(piece[i : i + 1]).count("\n")
                    except UnicodeDecodeError:
                        return line
    return line


def _import_csv(
    conn: sqlite3.Connection,
    f: TextIO,
    path: Path,
    table: str,
    delimiter: str,
    on_bytes: Callable[[int], None],
) -> int:
    old_limit = csv.field_size_limit(_FIELD_LIMIT)
    reader = csv.reader(f, delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise DataFileError("the file is empty", path=path)
        columns = column_names(header)
        width, read = len(columns), 1
        batch = list(islice(reader, SAMPLE_ROWS))
        rows = _fit(batch, width, read, path, f.encoding, delimiter)
        writer = TableWriter(conn, table, columns, text_types(rows, width), source="csv")
        while batch:
            writer.insert(rows)
            read += len(batch)
            on_bytes(f.buffer.tell())
            batch = list(islice(reader, BATCH_ROWS))
            rows = _fit(batch, width, read, path, f.encoding, delimiter)
        return writer.rows
    except csv.Error as e:
        raise DataFileError(f"line {reader.line_num}: {e}", path=path) from None
    finally:
        csv.field_size_limit(old_limit)


def _fit(
    batch: list[list[str]], width: int, read: int, path: Path, encoding: str, delimiter: str
) -> list[list[str]]:
    """Rows of exactly `width` cells: blank lines dropped, short rows padded with empty cells,
    trailing empty cells cut; a row with more values than the header is an error."""
    if set(map(len, batch)) <= {width}:
        return batch
    rows = []
    for i, row in enumerate(batch):
        if len(row) > width and any(row[width:]):
            line = _csv_line_of_record(path, encoding, delimiter, read + i)
            raise DataFileError(
                f"line {line}: {len(row)} values, but the header has {width} columns", path=path
            )
        if row:
            rows.append(row[:width] + [""] * (width - len(row)))
    return rows


def _csv_line_of_record(path: Path, encoding: str, delimiter: str, index: int) -> int:
    """The line on which record `index` (0 = the header) ends: an error path, so it reads the
    file again rather than tracking every record's line while importing."""
    with open(path, encoding=encoding, newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        for _ in islice(reader, index + 1):
            pass
        return reader.line_num


# JSON and JSON Lines


def _json_lines(f: TextIO, path: Path) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFileError(f"line {n}: not JSON ({e.msg})", path=path) from None
        if not isinstance(obj, dict):
            raise DataFileError(f"line {n}: not a JSON object", path=path)
        yield obj


def _json_array(f: TextIO, path: Path, chunk: int = 1 << 16) -> Iterator[dict[str, Any]]:
    """The objects of a top-level JSON array, decoded one at a time from a bounded buffer
    (`raw_decode` over chunks; no whole-file `json.load`)."""
    decoder = json.JSONDecoder()
    buf, pos, line, eof, size = "", 0, 1, False, chunk  # `line`: the line buf[0] is on
    state = "start"  # then "first" (a value or "]"), "value", "sep" ("," or "]"), "end"
    need_more = False  # the value at `pos` may go on past the end of `buf`

    def fail(message: str, at: int) -> DataFileError:
        return DataFileError(f"line {line + buf.count(chr(10), 0, at)}: {message}", path=path)

    while True:
        while pos < len(buf) and buf[pos] in " \t\r\n":
            pos += 1
        if pos == len(buf) or need_more:
            if eof:
                if state == "end":
                    return
                raise fail("the JSON array is not closed" if state != "start" else "empty", pos)
            line += buf.count("\n", 0, pos)
            buf, pos = buf[pos:], 0
            data = f.read(size)
            eof, need_more, size = not data, False, chunk
            buf += data
            continue
        c = buf[pos]
        if state == "start":
            if c != "[":
                raise fail("not a JSON array of objects", pos)
            pos, state = pos + 1, "first"
        elif state in ("first", "value"):
            if state == "first" and c == "]":
                pos, state = pos + 1, "end"
                continue
            try:
                obj, end = decoder.raw_decode(buf, pos)
                incomplete = end == len(buf) and not eof  # a number may go on in the next chunk
            except json.JSONDecodeError as e:
                if eof:
                    raise fail(f"not JSON ({e.msg})", e.pos) from None
                incomplete = True
            if incomplete:
                if len(buf) - pos > _JSON_VALUE_LIMIT:
                    raise fail("a value larger than 64 MB, or broken JSON", pos) from None
                # read as much again as is pending: linear, not quadratic, in a long value
                size, need_more = max(chunk, len(buf) - pos), True
                continue
            if not isinstance(obj, dict):
                raise fail("not a JSON object", pos)
            yield obj
            pos, state = end, "sep"
        elif state == "sep":
            if c not in ",]":
                raise fail("expected ',' or ']' after a value", pos)
            pos, state = pos + 1, ("value" if c == "," else "end")
        else:
            raise fail("more data after the JSON array", pos)


def _import_records(
    conn: sqlite3.Connection,
    records: Iterator[dict[str, Any]],
    table: str,
    f: TextIO,
    on_bytes: Callable[[int], None],
) -> int:
    """Objects as rows: the columns are the keys, in order of first appearance; a key first
    seen after the sample adds a column."""
    batch = list(islice(records, SAMPLE_ROWS))
    keys = list(dict.fromkeys(k for obj in batch for k in obj))
    if not keys:
        raise DataFileError("no objects with keys to import", path=Path(f.name))
    columns = column_names(keys)
    types = [value_type(obj.get(k) for obj in batch) for k in keys]
    writer = TableWriter(conn, table, columns, types, source="json")
    known = set(keys)
    while batch:
        for obj in batch:
            if not known.issuperset(obj):
                for k in obj.keys() - known:
                    keys.append(k)
                    known.add(k)
                    name = unique_name(k.strip() or f"column_{len(keys)}", writer.columns)
                    writer.add_column(name, value_type([obj[k]]))
        writer.insert([[sql_value(obj.get(k)) for k in keys] for obj in batch])
        on_bytes(f.buffer.tell())
        batch = list(islice(records, BATCH_ROWS))
    return writer.rows


# Parquet


def import_parquet(
    conn: sqlite3.Connection, path: Path, table: str, on_bytes: Callable[[int], None]
) -> int:
    """Import a Parquet file batch by batch (`iter_batches`); returns the row count."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFileError(
            "reading Parquet needs pyarrow: pip install 'chatcli[parquet]'", path=path
        ) from None
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        size, total = path.stat().st_size, max(pf.metadata.num_rows, 1)
        types: list[str] = []
        plain: list[bool] = []  # to_pylist() values sqlite3 binds as they are
        for field in schema:
            t = field.type
            if pa.types.is_integer(t) or pa.types.is_boolean(t):
                types.append("INTEGER")
                plain.append(t != pa.uint64())
            elif pa.types.is_floating(t) or pa.types.is_decimal(t):
                types.append("REAL")
                plain.append(pa.types.is_floating(t))
            elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
                types.append("BLOB")
                plain.append(True)
            else:
                types.append("TEXT")
                plain.append(pa.types.is_string(t) or pa.types.is_large_string(t))
        writer = TableWriter(conn, table, column_names(schema.names), types, source="parquet")
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            columns = []
            for values, is_plain, type_ in zip(batch.columns, plain, types, strict=True):
                cells = values.to_pylist()
                if not is_plain:
                    convert = float if type_ == "REAL" else sql_value
                    cells = [None if v is None else convert(v) for v in cells]
                columns.append(cells)
            writer.insert(list(zip(*columns, strict=True)))
            on_bytes(size * writer.rows // total)
        return writer.rows
    except (pa.ArrowException, OSError) as e:
        raise DataFileError(f"cannot read the Parquet file: {e}", path=path) from None
