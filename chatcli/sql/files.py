"""Import CSV/TSV, JSON (an array of objects), JSON Lines and Parquet files as SQLite tables.

The import runs in a temporary copy of the database, which replaces the target (fsync, then
`os.replace`) only once every file is in: a bad line, a full disk or Ctrl-C leaves the previous
database byte for byte as it was. Parsing, types and encodings: chatcli.sql.loaders.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import sqlite3
import stat
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataFileError, InvalidDatabase, StorageError, TableExists
from .loaders import (
    BATCH_ROWS,
    SAMPLE_ROWS,
    Kind,
    encodings,
    head_text,
    import_parquet,
    import_text,
    quote_ident,
    read_head,
)

__all__ = ["BATCH_ROWS", "SAMPLE_ROWS", "ImportResult", "Kind", "Progress", "detect_kind",
           "import_file", "import_files", "known_extension", "table_name_for"]  # fmt: skip

Progress = Callable[[int, int], None]  # (bytes done, bytes total), over all files of one import

_EXTENSIONS: dict[str, Kind] = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl",
    ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".db": "sqlite",
    ".sqlite": "sqlite", ".sqlite3": "sqlite",
}  # fmt: skip
# unquoted, these would not parse as a table name (select.csv -> select_table)
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


def detect_kind(path: Path | str) -> Kind:
    """What a file holds: the content decides (SQLite, Parquet magic), then the extension, then
    the first character (`[` a JSON array, `{` JSON Lines), else CSV."""
    path = Path(path)
    _regular_file(path)
    head = read_head(path)
    if head.startswith(b"SQLite format 3\0"):
        return "sqlite"
    if head.startswith(b"PAR1"):
        return "parquet"
    by_extension = _EXTENSIONS.get(path.suffix.lower())
    if by_extension in ("csv", "tsv", "sqlite", "parquet"):
        return by_extension
    first = head_text(head, encodings(head)[0]).lstrip()[:1]
    if first == "[":
        return "json"
    if first == "{":  # many ".json" exports are really one object per line
        return "jsonl"
    return by_extension or "csv"


def known_extension(path: Path | str) -> bool:
    """Whether the file's extension names a kind chatcli reads (.csv, .json, .parquet, .db...);
    detect_kind takes any other text file for CSV, which a caller may want to ask about first."""
    return Path(path).suffix.lower() in _EXTENSIONS


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
                conn.execute(f"DROP TABLE {quote_ident(table)}")

            def on_bytes(n: int, offset: int = done, size: int = size) -> None:
                if progress is not None:
                    progress(offset + min(n, size), total)

            try:
                encoding = delimiter = None
                if kind == "parquet":
                    rows = import_parquet(conn, path, table, on_bytes)
                else:
                    rows, encoding, delimiter = import_text(conn, path, table, kind, on_bytes)
            except sqlite3.Error as e:
                if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    raise StorageError("not enough disk space", path=db_path) from None
                raise DataFileError(f"cannot import: {e}", path=path) from None
            done += size
            on_bytes(size)
            columns = tuple(
                (r[1], r[2]) for r in conn.execute(f"PRAGMA table_info({quote_ident(table)})")
            )
            results.append(
                ImportResult(path, kind, table, rows, columns, encoding, delimiter, replaced)
            )
    return results
