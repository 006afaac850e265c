"""Import CSV/TSV, JSON (an array of objects), JSON Lines and Parquet files as SQLite tables.

Everything streams: memory stays bounded by a batch of rows, whatever the file's size. The
import runs in a temporary copy of the database, which replaces the target (fsync, then
`os.replace`) only once every file is in: a bad line, a full disk or Ctrl-C leaves the previous
database byte for byte as it was.

Column types come from the first `SAMPLE_ROWS` rows: INTEGER when every non-empty value is a
plain integer (no sign "+", no leading zero, at most 18 digits, so "007" and phone numbers stay
text), REAL when every one is such an integer or a decimal number, TEXT otherwise; an empty CSV
cell is NULL. Later rows rely on SQLite's type affinity: a value that is not a number ("N/A")
is stored in a numeric column as the TEXT it is, and a number is stored as a number. Only a value
that SQLite would silently rewrite ("007" into 7, "+44..." into 44..., " 5" into 5) makes the
column TEXT: the table is rebuilt then, and the numbers already stored become their SQLite text
form (exact for integers; 1.50 reads back as 1.5). Parquet columns keep the file's own types.

Encodings: a BOM decides (UTF-8, UTF-16, UTF-32); UTF-16 without a BOM is recognised by its
zero bytes; otherwise UTF-8, and a file that is not valid UTF-8 is read as Windows-1252 (what
Excel writes on Western systems), or Latin-1 when it holds bytes cp1252 leaves undefined. The
CSV delimiter (",", ";", tab, "|") is detected with `csv.Sniffer`; ".tsv" means tab. The first
row is the header. CSV parsing is the standard library's `csv` module (C, strict quoting);
Parquet needs pyarrow, imported only when a Parquet file is read (`chatcli[parquet]`).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gc
import json
import os
import re
import sqlite3
import stat
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, TextIO

from ..errors import DataFileError, InvalidDatabase, StorageError, TableExists

Kind = Literal["csv", "tsv", "json", "jsonl", "parquet", "sqlite"]
Progress = Callable[[int, int], None]  # (bytes done, bytes total), over all files of one import

SAMPLE_ROWS = 1000  # rows read before the table is created, to choose the column types
BATCH_ROWS = 5000  # rows per executemany: big enough to amortise the call, small in memory
_HEAD_BYTES = 64 * 1024  # read to detect the encoding, the kind and the delimiter
_FIELD_LIMIT = 16 * 1024 * 1024  # one CSV cell; also bounds memory on an unclosed quote
_JSON_VALUE_LIMIT = 64 * 1024 * 1024  # one JSON array element, in characters

_EXTENSIONS: dict[str, Kind] = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl",
    ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".db": "sqlite",
    ".sqlite": "sqlite", ".sqlite3": "sqlite",
}  # fmt: skip
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

_KEYWORDS = frozenset(
    """abort action add after all alter always analyze and as asc attach autoincrement before
    begin between by cascade case cast check collate column commit conflict constraint create
    cross current current_date current_time current_timestamp database default deferrable
    deferred delete desc detach distinct do drop each else end escape except exclude exclusive
    exists explain fail filter first following for foreign from full generated glob group groups
    having if ignore immediate in index indexed initially inner insert instead intersect into is
    isnull join key last left like limit match materialized natural no not nothing notnull null
    nulls of offset on or order others outer over partition plan pragma preceding primary query
    raise range recursive references regexp reindex release rename replace restrict returning
    right rollback row rows savepoint select set table temp temporary then ties to transaction
    trigger unbounded union unique update using vacuum values view virtual when where window
    with without""".split()
)


@dataclass(frozen=True)
class ImportResult:
    """What one file became: its table, row count and final column types."""

    path: Path
    kind: Kind
    table: str
    rows: int
    columns: tuple[tuple[str, str], ...]  # (name, declared type)
    encoding: str | None = None  # text files only
    delimiter: str | None = None  # CSV/TSV only
    replaced: bool = False


# Kinds and names


def _regular_file(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataFileError("no such file", path=path) from None
    except OSError as e:
        raise DataFileError(f"cannot read the file: {e.strerror or e}", path=path) from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
        raise DataFileError("not a regular file", path=path)
    return st


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_HEAD_BYTES)
    except OSError as e:
        raise DataFileError(f"cannot read the file: {e.strerror or e}", path=path) from None


def _encodings(head: bytes) -> list[str]:
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


def _head_text(head: bytes, encoding: str) -> str:
    return codecs.getincrementaldecoder(encoding)("replace").decode(head, final=False)


def detect_kind(path: Path | str) -> Kind:
    """What a file holds: the content decides (SQLite, Parquet magic), then the extension, then
    the first character (`[` a JSON array, `{` JSON Lines), else CSV."""
    path = Path(path)
    _regular_file(path)
    head = _read_head(path)
    if head.startswith(b"SQLite format 3\0"):
        return "sqlite"
    if head.startswith(b"PAR1"):
        return "parquet"
    by_extension = _EXTENSIONS.get(path.suffix.lower())
    if by_extension in ("csv", "tsv", "sqlite", "parquet"):
        return by_extension
    first = _head_text(head, _encodings(head)[0]).lstrip()[:1]
    if first == "[":
        return "json"
    if first == "{":  # many ".json" exports are really one object per line
        return "jsonl"
    return by_extension or "csv"


def table_name_for(path: Path | str, taken: Iterable[str] = ()) -> str:
    """A table name from a file name that needs no quoting in SQL: lower case, letters, digits
    and "_", not a keyword (`select.csv` -> select_table), not starting with a digit
    (`2024 sales (final).csv` -> t_2024_sales_final), and not in `taken` (case-insensitive;
    a suffix _2, _3... is added)."""
    name = re.sub(r"\W+", "_", Path(path).stem).strip("_").lower() or "data"
    if name[0].isdigit() or name.startswith("sqlite_"):  # sqlite_* is reserved by SQLite
        name = f"t_{name}"
    if name in _KEYWORDS:
        name = f"{name}_table"
    used = {t.lower() for t in taken}
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


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


def _quote(name: str) -> str:
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

    def _create(self, name: str, types: list[str]) -> None:
        defs = ", ".join(f"{_quote(c)} {t}" for c, t in zip(self.columns, types, strict=True))
        self.conn.execute(f"CREATE TABLE {_quote(name)} ({defs})")

    def _insert_sql(self) -> str:
        # NULLIF in SQL rather than a Python test per cell: empty CSV cells become NULL for free
        mark = "NULLIF(?, '')" if self.source == "csv" else "?"
        marks = ", ".join([mark] * len(self.columns))
        return f"INSERT INTO {_quote(self.table)} VALUES ({marks})"

    def add_column(self, name: str, type_: str) -> None:
        self.conn.execute(f"ALTER TABLE {_quote(self.table)} ADD COLUMN {_quote(name)} {type_}")
        self.columns.append(name)
        self.types.append(type_)
        self._sql = self._insert_sql()

    def insert(self, rows: list[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.source != "parquet":  # Parquet values already have their column's type
            self._check(rows)
        self.conn.executemany(self._sql, rows)
        self.rows += len(rows)

    def _check(self, rows: list[Sequence[Any]]) -> None:
        for j, type_ in enumerate(self.types):
            if type_ == "TEXT":
                continue
            if self.source == "csv":
                joined = "\n".join(map(itemgetter(j), rows))
                if _safe_numbers(joined, type_) or _COLUMN[type_].fullmatch(joined):
                    continue
                cell = _CELL[type_]
                odd: Iterable[Any] = (v for v in joined.split("\n") if v and not cell.fullmatch(v))
            else:
                odd = (v for v in map(itemgetter(j), rows) if type(v) is str)
            if any(_NUMERIC_LOOKING.fullmatch(v) for v in odd):
                self._widen(j)

    def _widen(self, j: int) -> None:
        """Rebuild the table with column j as TEXT (SQLite cannot change a column's type)."""
        types = [*self.types[:j], "TEXT", *self.types[j + 1 :]]
        staging = f"{self.table}__chatcli_widening"
        self.conn.execute(f"DROP TABLE IF EXISTS {_quote(staging)}")
        self._create(staging, types)
        self.conn.execute(f"INSERT INTO {_quote(staging)} SELECT * FROM {_quote(self.table)}")
        self.conn.execute(f"DROP TABLE {_quote(self.table)}")
        self.conn.execute(f"ALTER TABLE {_quote(staging)} RENAME TO {_quote(self.table)}")
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


def _import_text(
    conn: sqlite3.Connection,
    path: Path,
    table: str,
    kind: Kind,
    on_bytes: Callable[[int], None],
) -> tuple[int, str, str | None]:
    """Import a CSV/TSV/JSON/JSONL file, trying the next fallback encoding when the file turns
    out not to be in the one tried. Returns (rows, encoding, delimiter)."""
    head = _read_head(path)
    if not head:
        raise DataFileError("the file is empty", path=path)
    chain = _encodings(head)
    for i, encoding in enumerate(chain):
        try:
            with open(path, encoding=encoding, newline="") as f:
                if kind in ("csv", "tsv"):
                    delimiter = "\t" if kind == "tsv" else _sniff(_head_text(head, encoding))
                    rows = _import_csv(conn, f, path, table, delimiter, on_bytes)
                    return rows, encoding, delimiter
                records = _json_array(f, path) if kind == "json" else _json_lines(f, path)
                return _import_records(conn, records, table, f, on_bytes), encoding, None
        except UnicodeDecodeError:
            conn.execute(f"DROP TABLE IF EXISTS {_quote(table)}")
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


def _import_parquet(
    conn: sqlite3.Connection, path: Path, table: str, on_bytes: Callable[[int], None]
) -> int:
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


# The staged database


def _ro_uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"


@contextlib.contextmanager
def _staged(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a temporary copy of `db_path` (or to a new database), inside one
    transaction; on a clean exit the copy replaces `db_path`, otherwise it is deleted."""
    mode = None
    if db_path.exists():
        if not stat.S_ISREG(db_path.stat().st_mode):
            raise InvalidDatabase("not a regular file", path=db_path)
        mode = stat.S_IMODE(db_path.stat().st_mode)
    folder = db_path.parent
    try:
        # mkstemp: an exclusive 0600 name in the same folder, so os.replace is atomic
        fd, name = tempfile.mkstemp(prefix=f".{db_path.name}.", suffix=".import.tmp", dir=folder)
    except OSError as e:
        raise StorageError(f"cannot write the database: {e.strerror or e}", path=folder) from None
    os.close(fd)
    tmp = Path(name)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        if mode is not None:
            try:
                with sqlite3.connect(_ro_uri(db_path), uri=True) as source:
                    source.backup(conn)
            except sqlite3.DatabaseError as e:
                raise InvalidDatabase(f"cannot read the database: {e}", path=db_path) from None
        # No journal and no syncs: the whole file is thrown away on failure, never repaired.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        yield conn
        try:
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode=DELETE")  # the session copy never has a -wal
            conn.close()
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, db_path)
            if os.name == "posix":  # make the rename durable; Windows cannot open a folder
                dir_fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot write the database: {e}", path=db_path) from None
    finally:
        conn.close()
        for leftover in (tmp, Path(f"{tmp}-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: every row is a new list it would otherwise keep
    scanning (-13% CPU on a large CSV); an import creates no reference cycles to collect."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# The API


def import_file(
    path: Path | str,
    db_path: Path | str,
    *,
    table: str | None = None,
    replace: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Import one data file as the table `table` (default: named after the file) of the SQLite
    database `db_path` (created if missing), atomically. Raises TableExists when the table is
    there and `replace` is false, DataFileError for a file that cannot be read."""
    return _import([(Path(path), table)], Path(db_path), replace=replace, progress=progress)[0]


def import_files(
    paths: Sequence[Path | str],
    db_path: Path | str,
    *,
    replace: bool = False,
    progress: Progress | None = None,
) -> list[ImportResult]:
    """Import several files into `db_path` in one transaction: all of them or none."""
    return _import([(Path(p), None) for p in paths], Path(db_path), replace=replace,
                   progress=progress)  # fmt: skip


def _import(
    items: list[tuple[Path, str | None]],
    db_path: Path,
    *,
    replace: bool,
    progress: Progress | None,
) -> list[ImportResult]:
    kinds = [detect_kind(path) for path, _ in items]
    for (path, _), kind in zip(items, kinds, strict=True):
        if kind == "sqlite":
            raise DataFileError("this is a SQLite database, not a data file", path=path)
    sizes = [_regular_file(path).st_size for path, _ in items]
    tables: list[str] = []
    for path, table in items:
        if table is not None and table.lower().startswith("sqlite_"):
            raise DataFileError(f"table names starting with sqlite_ are reserved: {table}")
        if table is not None and table.lower() in {t.lower() for t in tables}:
            raise TableExists(f"two files would both become the table {table}", path=path)
        tables.append(table or table_name_for(path, tables))
    total, done = sum(sizes), 0
    results = []
    with _staged(db_path) as conn, _no_gc():
        existing = {
            name.lower(): (name, type_)
            for name, type_ in conn.execute("SELECT name, type FROM sqlite_schema")
        }
        for (path, _), table in zip(items, tables, strict=True):
            name, type_ = existing.get(table.lower(), (None, None))
            if type_ not in (None, "table") or (type_ and not replace):
                raise TableExists(f"the database already has a {type_} named {name}", path=path)
        for (path, _), kind, size, table in zip(items, kinds, sizes, tables, strict=True):
            replaced = table.lower() in existing
            if replaced:
                conn.execute(f"DROP TABLE {_quote(table)}")

            def on_bytes(n: int, offset: int = done, size: int = size) -> None:
                if progress is not None:
                    progress(offset + min(n, size), total)

            try:
                encoding = delimiter = None
                if kind == "parquet":
                    rows = _import_parquet(conn, path, table, on_bytes)
                else:
                    rows, encoding, delimiter = _import_text(conn, path, table, kind, on_bytes)
            except sqlite3.Error as e:
                if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    raise StorageError("not enough disk space", path=db_path) from None
                raise DataFileError(f"cannot import: {e}", path=path) from None
            done += size
            on_bytes(size)
            columns = tuple(
                (r[1], r[2]) for r in conn.execute(f"PRAGMA table_info({_quote(table)})")
            )
            results.append(
                ImportResult(path, kind, table, rows, columns, encoding, delimiter, replaced)
            )
    return results
