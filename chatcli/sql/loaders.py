"""Parse CSV/TSV, JSON (an array of objects), JSON Lines and Parquet into a new SQLite table,
streaming: memory stays bounded by a batch of rows. chatcli.sql.files is the API around it.

Column types come from the first `SAMPLE_ROWS` rows: INTEGER when every non-empty value is a
plain integer (no sign "+", no leading zero, at most 18 digits, so "007" and phone numbers stay
text), REAL when every one is such an integer or a decimal number, TEXT otherwise; an empty CSV
cell is NULL. Later rows rely on SQLite's type affinity: a value that is not a number ("N/A")
is stored in a numeric column as the TEXT it is, and a number is stored as a number. Only a value
that SQLite would silently rewrite ("007" into 7, "+44..." into 44..., " 5" into 5) makes the
column TEXT: the table is rebuilt then, and the numbers already stored become their SQLite text
form (exact for integers; 1.50 reads back as 1.5). JSON values keep their JSON types; Parquet
columns keep the file's own types.

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
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, TextIO

from ..errors import DataFileError

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

# One cell of each type, then a whole column of them joined by "\n" (one C-level match per
# column and batch instead of a Python call per cell).
_INT = r"-?(?:0|[1-9][0-9]{0,17})"
_REAL = _INT + r"|-?(?:(?:0|[1-9][0-9]*)\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_REAL += r"|-?(?:0|[1-9][0-9]*)[eE][+-]?[0-9]+"
_CELL = {"INTEGER": re.compile(_INT), "REAL": re.compile(_REAL)}
_COLUMN = {
    t: re.compile(rf"(?:(?:{p})?\n)*(?:{p})?") for t, p in (("INTEGER", _INT), ("REAL", _REAL))
}
_LEADING_ZERO = re.compile(rb"\n-?0[0-9]")  # "007": affinity would store 7
# What SQLite's numeric affinity turns into a number (leading and trailing spaces allowed).
_NUMERIC_LOOKING = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


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


# Names


def _column_names(raw: Iterable[str]) -> list[str]:
    """Header cells as column names: stripped, empty ones numbered, duplicates suffixed."""
    names: list[str] = []
    for i, cell in enumerate(raw, 1):
        names.append(_unique(str(cell).strip() or f"column_{i}", names))
    return names


def _unique(name: str, names: list[str]) -> str:
    used = {n.lower() for n in names}  # SQLite column names are case-insensitive
    candidate, n = name, 1
    while candidate.lower() in used:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# The table being written


class _Writer:
    """Creates one table and inserts batches into it, making a column TEXT when a later value
    would be rewritten by the numeric affinity chosen from the sample."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        table: str,
        columns: list[str],
        types: list[str],
        *,
        source: Literal["csv", "json", "parquet"],
    ) -> None:
        self.conn, self.table, self.source = conn, table, source
        self.columns, self.types = columns, types
        self.rows = 0
        self._create(table, types)
        self._sql = self._insert_sql()
        self._sql_for: dict[frozenset[int], str] = {}  # by the columns that skip NULLIF

    def _create(self, name: str, types: list[str]) -> None:
        defs = ", ".join(f"{quote_ident(c)} {t}" for c, t in zip(self.columns, types, strict=True))
        self.conn.execute(f"CREATE TABLE {quote_ident(name)} ({defs})")

    def _insert_sql(self, plain: frozenset[int] = frozenset()) -> str:
        # NULLIF in SQL rather than a Python test per cell: empty CSV cells become NULL in C.
        # Columns in `plain` have no empty cell in this batch and skip it (-8% insert time).
        marks = ", ".join(
            "?" if self.source != "csv" or j in plain else "NULLIF(?, '')"
            for j in range(len(self.columns))
        )
        return f"INSERT INTO {quote_ident(self.table)} VALUES ({marks})"

    def add_column(self, name: str, type_: str) -> None:
        self.conn.execute(
            f"ALTER TABLE {quote_ident(self.table)} ADD COLUMN {quote_ident(name)} {type_}"
        )
        self.columns.append(name)
        self.types.append(type_)
        self._sql = self._insert_sql()
        self._sql_for.clear()

    def insert(self, rows: list[Sequence[Any]]) -> None:
        if not rows:
            return
        sql = self._sql
        if self.source != "parquet":  # Parquet values already have their column's type
            plain = self._check(rows)
            if plain:
                sql = self._sql_for.get(plain) or self._sql_for.setdefault(
                    plain, self._insert_sql(plain)
                )
        self.conn.executemany(sql, rows)
        self.rows += len(rows)

    def _check(self, rows: list[Sequence[Any]]) -> frozenset[int]:
        """Widen what must be; return the numeric CSV columns without an empty cell."""
        plain = []
        for j, type_ in enumerate(self.types):
            if type_ == "TEXT":
                continue
            if self.source == "csv":
                joined = "\n".join(map(itemgetter(j), rows))
                if _safe_numbers(joined, type_) or _COLUMN[type_].fullmatch(joined):
                    if (
                        joined[:1] != "\n"
                        and joined[-1:] not in ("\n", "")
                        and "\n\n" not in joined
                    ):
                        plain.append(j)
                    continue
                cell = _CELL[type_]
                odd: Iterable[Any] = (v for v in joined.split("\n") if v and not cell.fullmatch(v))
            else:
                odd = (v for v in map(itemgetter(j), rows) if type(v) is str)
            if any(_NUMERIC_LOOKING.fullmatch(v) for v in odd):
                self._widen(j)
        return frozenset(plain)

    def _widen(self, j: int) -> None:
        """Rebuild the table with column j as TEXT (SQLite cannot change a column's type)."""
        types = [*self.types[:j], "TEXT", *self.types[j + 1 :]]
        staging = f"{self.table}__chatcli_widening"
        self.conn.execute(f"DROP TABLE IF EXISTS {quote_ident(staging)}")
        self._create(staging, types)
        self.conn.execute(
            f"INSERT INTO {quote_ident(staging)} SELECT * FROM {quote_ident(self.table)}"
        )
        self.conn.execute(f"DROP TABLE {quote_ident(self.table)}")
        self.conn.execute(f"ALTER TABLE {quote_ident(staging)} RENAME TO {quote_ident(self.table)}")
        self.types = types


def _safe_numbers(joined: str, type_: str) -> bool:
    """A fast test (a few C-level passes over bytes) that SQLite's affinity rewrites none of
    these "\n"-joined cells: true for nearly every batch of a numeric column. Cells such as
    "1-2" or "1.2.3" pass, but SQLite keeps those as text anyway. False means: look closer."""
    data = joined.encode()
    rest = data.translate(None, b"\n-." if type_ == "REAL" else b"\n-")
    if rest and not rest.isdigit():  # bytes.isdigit is ASCII-only, unlike str.isdigit
        return False
    if _LEADING_ZERO.search(b"\n" + data):
        return False
    return type_ == "REAL" or max(map(len, data.split(b"\n"))) <= 18  # longer: not an int64


def _text_types(sample: list[list[str]], width: int) -> list[str]:
    columns = list(zip(*sample, strict=True)) if sample else [()] * width
    types = []
    for values in columns:
        joined = "\n".join(values)
        if not any(values):
            types.append("TEXT")
        elif _COLUMN["INTEGER"].fullmatch(joined):
            types.append("INTEGER")
        elif _COLUMN["REAL"].fullmatch(joined):
            types.append("REAL")
        else:
            types.append("TEXT")
    return types


def _value_type(values: Iterable[Any]) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds and kinds <= {int, bool}:
        return "INTEGER"
    if kinds and kinds <= {int, bool, float}:
        return "REAL"
    return "TEXT"


def _sql_value(v: Any) -> Any:
    """A decoded JSON or Parquet value as something sqlite3 can bind."""
    t = type(v)
    if v is None or t is str or t is float or t is bytes:
        return v
    if t is int or t is bool:
        return int(v) if -(2**63) <= v < 2**63 else str(v)  # past int64 sqlite3 overflows
    if t is dict or t is list:
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)  # datetime, date, Decimal...: their str() is the ISO / exact text


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
        columns = _column_names(header)
        width, read = len(columns), 1
        batch = list(islice(reader, SAMPLE_ROWS))
        rows = _fit(batch, width, read, path, f.encoding, delimiter)
        writer = _Writer(conn, table, columns, _text_types(rows, width), source="csv")
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
    columns = _column_names(keys)
    types = [_value_type(obj.get(k) for obj in batch) for k in keys]
    writer = _Writer(conn, table, columns, types, source="json")
    known = set(keys)
    while batch:
        for obj in batch:
            if not known.issuperset(obj):
                for k in obj.keys() - known:
                    keys.append(k)
                    known.add(k)
                    writer.add_column(_unique(k.strip() or f"column_{len(keys)}", writer.columns),
                                      _value_type([obj[k]]))  # fmt: skip
        writer.insert([[_sql_value(obj.get(k)) for k in keys] for obj in batch])
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
        writer = _Writer(conn, table, _column_names(schema.names), types, source="parquet")
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            columns = []
            for values, is_plain, type_ in zip(batch.columns, plain, types, strict=True):
                cells = values.to_pylist()
                if not is_plain:
                    convert = float if type_ == "REAL" else _sql_value
                    cells = [None if v is None else convert(v) for v in cells]
                columns.append(cells)
            writer.insert(list(zip(*columns, strict=True)))
            on_bytes(size * writer.rows // total)
        return writer.rows
    except (pa.ArrowException, OSError) as e:
        raise DataFileError(f"cannot read the Parquet file: {e}", path=path) from None
