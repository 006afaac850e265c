"""SQLite helpers: validate and copy a user's database, then query the copy read-only."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import os
import queue
import signal
import sqlite3
import stat
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatcli.errors import ChatcliError, InvalidDatabase, QueryError, StorageError

__all__ = [
    "TOOL_SPECS",
    "QueryResult",
    "ReadOnlyDatabase",
    "call_tool",
    "copy_database",
    "validate_database",
]

_HEADER = b"SQLite format 3\x00"


def _ro_uri(path: Path) -> str:
    """A `mode=ro` URI for `path`; as_uri() percent-quotes '?', '#' and '%' in the path."""
    return Path(os.path.abspath(path)).as_uri() + "?mode=ro"


def _connect_ro(path: Path, *, timeout: float) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module must never issue its own BEGIN on our behalf.
    return sqlite3.connect(
        _ro_uri(path), uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )


def validate_database(path: Path, *, timeout: float = 5.0) -> None:
    """Raise InvalidDatabase unless `path` is a readable, uncorrupted SQLite database.

    The file is only ever opened read-only. `timeout` bounds the wait for another
    program's lock.
    """
    path = Path(path)
    header = _read_header(path)
    if not header:
        raise InvalidDatabase("empty file, not a database", path=path)
    if header != _HEADER:
        # SQLCipher and similar encrypt the header too, so they land here as well.
        raise InvalidDatabase("not a SQLite database (or it is encrypted)", path=path)
    with _no_new_sidecars(path):
        problems = _check_database(path, timeout=timeout)
    if problems != ["ok"]:
        raise InvalidDatabase(f"corrupt SQLite database: {problems[0]}", path=path)


def _check_database(path: Path, *, timeout: float) -> list[str]:
    """Open `path` read-only, read its schema and return what quick_check says."""
    try:
        conn = _connect_ro(path, timeout=timeout)
    except sqlite3.Error as e:
        raise InvalidDatabase(f"cannot open the database: {e}", path=path) from None
    try:
        conn.execute("PRAGMA schema_version").fetchone()
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        # quick_check walks every page (without the slow index cross-checks), so damage in
        # table data is caught here rather than half-way through a later query.
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise InvalidDatabase(
                "the database is locked by another program; try again", path=path
            ) from None
        raise InvalidDatabase(f"cannot read the database: {e}", path=path) from None
    except sqlite3.DatabaseError as e:
        raise InvalidDatabase(f"corrupt or unreadable SQLite database: {e}", path=path) from None
    finally:
        conn.close()
    return problems


def _read_header(path: Path, size: int = len(_HEADER)) -> bytes:
    """The first `size` bytes of `path`; InvalidDatabase unless it is a readable regular file.

    Only a regular file is ever opened: open() on a FIFO blocks until some other program
    writes to it (forever), and a device or socket is no database either.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InvalidDatabase("no such file", path=path) from None
    except PermissionError:
        raise InvalidDatabase("cannot read the file: permission denied", path=path) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL character in the path
        raise InvalidDatabase(
            f"cannot read the file: {getattr(e, 'strerror', None) or e}", path=path
        ) from None
    _require_regular_file(info.st_mode, path)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening it still
        # returns at once, and the fstat below refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise InvalidDatabase("no such file", path=path) from None
    except PermissionError:
        raise InvalidDatabase("cannot read the file: permission denied", path=path) from None
    except OSError as e:
        raise InvalidDatabase(f"cannot read the file: {e.strerror or e}", path=path) from None
    try:
        _require_regular_file(os.fstat(fd).st_mode, path)
        return os.read(fd, size)
    except OSError as e:
        raise InvalidDatabase(f"cannot read the file: {e.strerror or e}", path=path) from None
    finally:
        os.close(fd)


def _require_regular_file(mode: int, path: Path) -> None:
    if stat.S_ISDIR(mode):
        raise InvalidDatabase("is a folder, not a database file", path=path)
    if not stat.S_ISREG(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise InvalidDatabase(f"is {kind}, not a regular database file", path=path)


# SQLite's unix VFS: every process that has a -shm file mapped holds a read lock on this byte
# of it ("DMS"), and a new -shm user needs at least a read lock there before it goes on.
_SHM_DMS_BYTE = 128


@contextlib.contextmanager
def _no_new_sidecars(path: Path) -> Iterator[None]:
    """Remove the -wal/-shm files that a read-only open of `path` left next to it.

    Reading a WAL-mode database creates `path`-wal and `path`-shm, and a read-only
    connection cannot delete them on close (only the last writer's close does). The
    user's folder must not gain files, so the sidecars that did not exist before are
    removed afterwards, but only while provably unused: holding a write lock on the
    -shm's DMS byte (no other process has the WAL open, nor can start using it) and
    with an empty -wal (no other program wrote to it in the meantime). Otherwise they
    belong to whoever uses the database now and are left alone. Must not be used while
    this process has another connection open to `path`: POSIX locks do not tell a
    process's own connections apart.
    """
    real = os.path.realpath(path)  # SQLite puts the sidecars next to the symlink's target
    wal, shm = real + "-wal", real + "-shm"
    new = [name for name in (wal, shm) if not os.path.lexists(name)]
    try:
        yield
    finally:
        if new and os.name == "posix":
            _remove_unused_sidecars([n for n in new if os.path.lexists(n)], wal=wal, shm=shm)


def _remove_unused_sidecars(names: list[str], *, wal: str, shm: str) -> None:
    if not names:
        return
    import fcntl

    try:
        fd = os.open(shm, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return  # no -shm (nothing to coordinate with) or not ours to lock: leave them
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
        except OSError:
            return  # another program has the database open in WAL mode right now
        with contextlib.suppress(OSError):
            if wal in names and os.lstat(wal).st_size != 0:
                return  # written by someone else since: it may hold committed data
            for name in names:
                os.unlink(name)
    finally:
        os.close(fd)  # also releases the lock


class _CopyTimeout(Exception):
    """Raised from the backup progress callback to abandon a copy blocked by a lock."""


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in `folder`; not possible (nor needed) on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_database(src: Path, dest: Path, *, timeout: float = 30.0) -> None:
    """Copy the SQLite database `src` to `dest` atomically, as a private (0600) file.

    Uses the backup API, so the copy is a consistent snapshot even while another
    program writes `src`; `src` is only opened read-only. The copy is switched to
    journal_mode=DELETE so it never needs -wal/-shm files. `dest` is replaced only
    once the copy is complete: on any failure an existing `dest` is left as it was.
    Raises InvalidDatabase for a bad or locked source, StorageError if `dest` cannot
    be written.
    """
    src, dest = Path(src), Path(dest)
    validate_database(src, timeout=min(timeout, 5.0))
    if dest.exists() and os.path.samefile(src, dest):
        raise StorageError("refusing to copy a database onto itself", path=dest)
    folder = dest.parent
    try:
        # mkstemp creates the file with mode 0600; SQLite keeps that mode when it writes.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise StorageError(
            f"cannot write a copy of the database: {e.strerror or e}", path=folder
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    sidecars = [Path(f"{tmp}{suffix}") for suffix in ("-journal", "-wal", "-shm")]
    try:
        _backup(src, tmp, timeout=timeout)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        with contextlib.suppress(OSError):
            _fsync_dir(folder)
    except OSError as e:
        raise StorageError(
            f"cannot write a copy of the database: {e.strerror or e}", path=dest
        ) from None
    finally:
        for leftover in (tmp, *sidecars):
            if leftover.exists():
                _remove_quietly(leftover)


def _backup(src: Path, tmp: Path, *, timeout: float) -> None:
    """Back up `src` into the (empty) file `tmp` and leave it in journal_mode=DELETE."""
    deadline = time.monotonic() + timeout
    with _no_new_sidecars(src):
        try:
            source = _connect_ro(src, timeout=min(timeout, 1.0))
        except sqlite3.Error as e:
            raise InvalidDatabase(f"cannot open the database: {e}", path=src) from None
        _backup_from(source, src, tmp, deadline=deadline, timeout=timeout)


def _backup_from(
    source: sqlite3.Connection, src: Path, tmp: Path, *, deadline: float, timeout: float
) -> None:
    def progress(status: int, remaining: int, total: int) -> None:
        # Python's backup() retries a busy source forever; give up at the deadline.
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise _CopyTimeout

    try:
        target = sqlite3.connect(tmp, isolation_level=None)
    except sqlite3.Error as e:
        source.close()
        raise StorageError(f"cannot write a copy of the database: {e}", path=tmp) from None
    try:
        try:
            # pages=-1 (the default) copies everything in one step under one read lock,
            # which is what makes the copy a consistent snapshot.
            source.backup(target, progress=progress)
        except _CopyTimeout:
            raise InvalidDatabase(
                f"the database stayed locked by another program for {timeout:g} s; try again",
                path=src,
            ) from None
        except sqlite3.Error as e:
            if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise StorageError(
                    "not enough disk space to copy the database", path=tmp.parent
                ) from None
            raise InvalidDatabase(f"cannot copy the database: {e}", path=src) from None
        try:
            # The backup copies the source header, WAL flag included; switch the copy back
            # so it opens read-only without creating -wal/-shm files next to it.
            mode = target.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        except sqlite3.Error as e:
            raise StorageError(f"cannot finish the copy of the database: {e}", path=tmp) from None
        if str(mode).lower() != "delete":
            raise StorageError(
                f"cannot switch the copy to journal_mode=DELETE (got {mode})", path=tmp
            )
    finally:
        target.close()
        source.close()


# --- the read-only sandbox ----------------------------------------------------------------

# Functions that reach outside the database (files, extensions, raw pointers, nested SQL).
# Most are absent from a stock build; they are listed so that a build which has them, or a
# later SQLite that adds them, still cannot be used from a model's query.
_DENIED_FUNCTIONS = frozenset(
    {
        "load_extension",
        "readfile",
        "writefile",
        "edit",
        "fts3_tokenizer",
        "fts5",
        "eval",
        "lsdir",
        "lsmode",
        "zipfile",
        "zipfile_cds",
        "sqlar_compress",
        "sqlar_uncompress",
        "sha3_query",
        "icu_load_collation",
        "shell_add_schema",
        "shell_escape_crnl",
        "shell_idquote",
        "shell_int32",
        "shell_module_schema",
        "shell_putsnl",
    }
)

# Pragmas that only read. Those in _PRAGMAS_WITH_ARG take a table/index name (or a limit)
# as argument. The rest are settings: "PRAGMA user_version=5" and "PRAGMA user_version(5)"
# reach the authorizer identically, so they are allowed only without any argument.
_PRAGMAS_WITH_ARG = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)
_PRAGMAS_NO_ARG = frozenset(
    {
        "application_id",
        "auto_vacuum",
        "collation_list",
        "compile_options",
        "data_version",
        "database_list",
        "encoding",
        "foreign_keys",
        "freelist_count",
        "function_list",
        "journal_mode",
        "module_list",
        "page_count",
        "page_size",
        "pragma_list",
        "schema_version",
        "user_version",
    }
)

# Names for refused authorizer actions, used when the statement's own words do not say.
_ACTION_NAMES = {
    getattr(sqlite3, "SQLITE_" + name.replace(" ", "_")): name
    for name in (
        "ALTER TABLE",
        "ANALYZE",
        "ATTACH",
        "CREATE INDEX",
        "CREATE TABLE",
        "CREATE TEMP INDEX",
        "CREATE TEMP TABLE",
        "CREATE TEMP TRIGGER",
        "CREATE TEMP VIEW",
        "CREATE TRIGGER",
        "CREATE VIEW",
        "CREATE VTABLE",
        "DELETE",
        "DETACH",
        "DROP INDEX",
        "DROP TABLE",
        "DROP TEMP INDEX",
        "DROP TEMP TABLE",
        "DROP TEMP TRIGGER",
        "DROP TEMP VIEW",
        "DROP TRIGGER",
        "DROP VIEW",
        "DROP VTABLE",
        "INSERT",
        "REINDEX",
        "SAVEPOINT",
        "TRANSACTION",
        "UPDATE",
    )
}

# Leading words that name a statement kind ("CREATE TEMP TABLE", "INSERT OR REPLACE INTO").
_STATEMENT_WORDS = frozenset(
    "ALTER ANALYZE ATTACH BEGIN COMMIT CREATE DATABASE DEFERRED DELETE DETACH DROP END "
    "EXCLUSIVE IMMEDIATE INDEX INSERT INTO OR RELEASE REINDEX REPLACE ROLLBACK SAVEPOINT "
    "TABLE TEMP TEMPORARY TRANSACTION TRIGGER UNIQUE UPDATE VACUUM VIEW VIRTUAL".split()
)


def _statement_label(query: str) -> str | None:
    """The leading keywords of `query` ("DROP TABLE"), or None if it starts otherwise."""
    words: list[str] = []
    for word in query.split(None, 6):
        if word.upper() not in _STATEMENT_WORDS:
            break
        words.append(word.upper())
    return " ".join(words) or None


# Longest rendering of one value in results given to the model.
_CELL_CHARS = 200
# Virtual machine instructions between two checks of the time limit (a few microseconds).
_PROGRESS_STEPS = 1000
# Longest string or blob SQLite may build: stops "SELECT zeroblob(1e9)" from eating memory.
_MAX_VALUE_BYTES = 64 * 1024 * 1024
# Raw text/blob bytes one result may hold: rendering cuts long values, so the character
# cap alone would let 200 rows of 60 MB blobs through.
_MAX_RESULT_BYTES = 32 * 1024 * 1024
# A capped result is counted again in SQLite to say how many rows were left out, but only up
# to this many rows and for at most this long: a huge result must cost about what a small one
# does (bench/sql_bench.py), and an endless one must not run twice as long.
_COUNT_ROWS = 2_000
_COUNT_SECONDS = 0.25

# The worker process that runs the statements (see ReadOnlyDatabase).
# SQLite's own heap (sorts, temporary b-trees, page cache) stops growing here ("out of memory").
_WORKER_HEAP = 512 * 1024 * 1024
# The worker's whole address space: Python, SQLite's heap and the result on its way out.
_WORKER_ADDRESS_SPACE = 1024 * 1024 * 1024
# How long past its time limit a statement may run before the worker is killed. The worker
# stops ordinary statements itself at the limit; only one that the progress handler cannot
# reach (a single SQL function call doing all the work) runs into this.
_KILL_GRACE = 1.0
# How long a new worker may take to start and open the database.
_START_SECONDS = 20.0
_OUT_OF_MEMORY = (
    f"query stopped: it needs more than {_WORKER_HEAP // 2**20} MB of memory; "
    "filter or aggregate more, or add a LIMIT"
)


def _time_limit_message(limit: float) -> str:
    return f"query stopped after {limit:g} s: time limit reached; simplify the query or add a LIMIT"


def _quote_ident(name: str) -> str:
    """Quote an identifier for SQL: "a""b" (only used on names checked against the schema)."""
    return '"' + name.replace('"', '""') + '"'


def _cell(value: object) -> str:
    """One value as compact single-line text, cut to _CELL_CHARS."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<blob {len(value)} bytes>"
    text = repr(value) if isinstance(value, float) else str(value)
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if len(text) > _CELL_CHARS:
        text = f"{text[:_CELL_CHARS]}…(+{len(text) - _CELL_CHARS} chars)"
    return text


def _line(values: Sequence[object]) -> str:
    return " | ".join(_cell(v) for v in values)


@dataclass(slots=True)
class QueryResult:
    """Rows of one query; `truncated` says rows were left out and `note` says why."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    note: str | None = None

    def to_text(self, max_chars: int = 16_000) -> str:
        """Render as "a | b" lines (header first) for the model, within about max_chars.

        Rows that do not fit are left out and a closing note says how many; the result
        stays within max_chars whenever max_chars leaves room for that note (>= ~300).
        """
        if not self.columns:
            return self.note or "(no result)"
        # Room for the closing "(text cut ...; <note>)" line, so the note never breaks the cap.
        budget = max_chars - 120 - len(self.note or "")
        header = " | ".join(self.columns)
        if len(header) > budget:
            header = header[: max(budget - 1, 0)] + "…"
        lines = [header]
        budget -= len(header)
        shown = 0
        for row in self.rows:
            line = _line(row)
            if len(line) + 1 > budget:
                break
            lines.append(line)
            budget -= len(line) + 1
            shown += 1
        notes = []
        if not self.rows:
            notes.append("no rows")
        if shown < len(self.rows):
            notes.append(
                f"text cut at {max_chars} characters: {len(self.rows) - shown} of "
                f"{len(self.rows)} rows not shown; select fewer columns or rows"
            )
        if self.note:
            notes.append(self.note)
        if notes:
            lines.append(f"({'; '.join(notes)})")
        return "\n".join(lines)


class _Sandbox:
    """The read-only, time- and size-limited connection itself; lives in the worker process.

    Independent safeguards keep the file unchanged: it is opened with mode=ro, the
    connection has query_only=ON, no database may be attached (which also rules out
    VACUUM, as it attaches internally), and an authorizer allows only reads, a short
    list of read-only pragmas, and no file- or extension-touching functions. Temporary
    tables and indexes live in memory, which SQLite caps at _WORKER_HEAP bytes. The
    progress handler stops most runaway statements at the time limit; the statements it
    cannot stop (one function call doing all the work in one VM step) are ended by the
    parent killing this process.
    """

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.max_rows = 200
        self.max_chars = 16_000
        self._deadline: float | None = None
        self._denied: list[str] = []
        try:
            conn = _connect_ro(self.path, timeout=timeout)
        except sqlite3.Error as e:
            raise InvalidDatabase(f"cannot open the database: {e}", path=self.path) from None
        try:
            # Users' text is not always valid UTF-8; a bad byte must not fail the whole query.
            conn.text_factory = lambda b: b.decode("utf-8", "replace")
            conn.execute("PRAGMA query_only=ON")
            # Sorting, DISTINCT, GROUP BY and materialized subqueries use memory, never temp
            # files (the worker may not write any file), and SQLite's whole heap is capped:
            # past it a statement fails with "out of memory" instead of eating the machine.
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute(f"PRAGMA hard_heap_limit={_WORKER_HEAP}")
            if hasattr(conn, "enable_load_extension"):  # absent when built without it
                conn.enable_load_extension(False)
            conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
            conn.set_authorizer(self._authorize)
            conn.set_progress_handler(self._progress, _PROGRESS_STEPS)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as e:
            conn.close()
            raise InvalidDatabase(f"not a readable SQLite database: {e}", path=self.path) from None
        self._conn = conn

    def close(self) -> None:
        self._conn.close()

    # -- sqlite callbacks

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() in _DENIED_FUNCTIONS:
                self._denied.append(f"function {arg2}() is disabled")
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _PRAGMAS_WITH_ARG or (name in _PRAGMAS_NO_ARG and arg2 is None):
                return sqlite3.SQLITE_OK
            shown = f"PRAGMA {arg1}" + ("" if arg2 is None else f"={arg2}")
            self._denied.append(f"this database is read-only ({shown})")
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master" and db == "main":
            # SQLite 3.40 asks about an UPDATE of sqlite_master while it merely *declares* an
            # eponymous virtual table (json_each, pragma_table_info(...)); that code is never
            # run. A real UPDATE of sqlite_master still fails: the file is opened read-only,
            # query_only is on, and writable_schema cannot be set.
            return sqlite3.SQLITE_OK
        what = _ACTION_NAMES.get(action, f"operation {action}")
        if action == sqlite3.SQLITE_TRANSACTION:
            what = arg1 or what  # BEGIN, COMMIT or ROLLBACK
        elif action == sqlite3.SQLITE_SAVEPOINT:
            what = f"SAVEPOINT {arg1} {arg2}"
        self._denied.append(f"this database is read-only ({what})")
        return sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        # Non-zero makes SQLite abandon the statement with "interrupted".
        deadline = self._deadline
        return 1 if deadline is not None and time.monotonic() > deadline else 0

    # -- running statements

    @contextlib.contextmanager
    def _running(self, query: str | None = None) -> Iterator[sqlite3.Connection]:
        """Hold the time limit while statements run; turn errors into QueryError."""
        limit = self.timeout
        self._deadline = time.monotonic() + limit
        self._denied.clear()
        try:
            yield self._conn
        except sqlite3.Error as e:
            raise self._query_error(e, limit, query) from None
        except MemoryError:  # SQLITE_NOMEM: the heap cap was reached
            raise QueryError(_OUT_OF_MEMORY) from None
        except ValueError as e:  # e.g. a NUL character in the query
            raise QueryError(str(e)) from None
        finally:
            self._deadline = None

    def _query_error(self, e: sqlite3.Error, limit: float, query: str | None) -> QueryError:
        text = str(e)
        label = _statement_label(query) if query else None
        if self._denied:
            first = self._denied[0]
            if label and first.startswith("this database is read-only (") and "PRAGMA" not in first:
                first = f"this database is read-only ({label})"
            return QueryError(f"not allowed: {first}")
        if "one statement at a time" in text:
            return QueryError("only one statement per query")
        if "interrupted" in text:
            return QueryError(_time_limit_message(limit))
        if ((getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF) in (
            sqlite3.SQLITE_FULL,
            sqlite3.SQLITE_IOERR,
        ):
            # The worker may not write any file; a statement that wants temporary files
            # fails here (as would a real read error of the copy, which is not expected).
            return QueryError(
                f"query stopped: it needs more temporary space than allowed ({text}); "
                "filter or aggregate more, or add a LIMIT"
            )
        if any(
            m in text for m in ("readonly", "read-only", "not authorized", "may not be modified")
        ):
            return QueryError(f"not allowed: this database is read-only ({label or text})")
        return QueryError(text)

    def run_sql(self, query: str) -> QueryResult:
        """Run one read-only statement; fetch at most max_rows rows (+1 to detect more)."""
        if not isinstance(query, str):
            raise QueryError("the query must be a string")
        # "SELECT 1;" is how people write SQL; the trailing ";" is not a second statement.
        query = query.strip().rstrip("; \t\r\n\f\v")
        if not query:
            raise QueryError("empty query")
        with self._running(query) as conn:
            cursor = conn.execute(query)
            try:
                if cursor.description is None:
                    label = _statement_label(query)
                    if label:
                        # A write with nothing to do (REINDEX on a database without indexes)
                        # never reaches the authorizer; refuse it like any other write.
                        raise QueryError(f"not allowed: this database is read-only ({label})")
                    return QueryResult([], [], note="statement returned no result")
                columns = [d[0] for d in cursor.description]
                rows: list[tuple[Any, ...]] = []
                size = len(" | ".join(columns))
                held = 0
                note = None
                # Never fetchall(): only pull the rows we will keep, plus one to know if
                # there are more. SQLite computes rows lazily, so the rest is never read.
                for row in itertools.islice(cursor, self.max_rows + 1):
                    if len(rows) == self.max_rows:
                        note = f"showing first {self.max_rows} rows"
                        break
                    rows.append(row)
                    size += len(_line(row)) + 1
                    held += sum(len(v) for v in row if isinstance(v, str | bytes))
                    if size > self.max_chars:
                        note = (
                            f"stopped after {len(rows)} rows: the result passed "
                            f"{self.max_chars} characters"
                        )
                        break
                    if held > _MAX_RESULT_BYTES:
                        note = (
                            f"stopped after {len(rows)} rows: the values passed "
                            f"{_MAX_RESULT_BYTES // 2**20} MB; select fewer or shorter columns"
                        )
                        break
                if note is not None:
                    note += "; " + self._left_out(conn, query, len(rows))
                return QueryResult(columns, rows, truncated=note is not None, note=note)
            finally:
                cursor.close()  # resets the statement and releases the read lock

    # -- schema

    def _list_tables(self, conn: sqlite3.Connection) -> list[tuple[str, str]]:
        rows = conn.execute(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"
            " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def list_tables(self) -> list[str]:
        """Names of tables and views, without SQLite's internal sqlite_* tables."""
        with self._running() as conn:
            return [name for name, _ in self._list_tables(conn)]

    def _resolve(self, conn: sqlite3.Connection, name: str) -> tuple[str, str]:
        """The schema's own spelling and type of table/view `name`, else QueryError."""
        tables = self._list_tables(conn)
        for table, kind in tables:
            if table == name:
                return table, kind
        folded = [(t, k) for t, k in tables if t.lower() == str(name).lower()]
        if len(folded) == 1:  # SQL names are case-insensitive
            return folded[0]
        names = ", ".join(t for t, _ in tables[:50]) or "none"
        more = f" (+{len(tables) - 50} more)" if len(tables) > 50 else ""
        raise QueryError(f"no table or view named {name!r}; tables: {names}{more}")

    def _count(self, conn: sqlite3.Connection, name: str, seconds: float) -> int | None:
        """Row count, or None when counting fails or takes longer than `seconds`."""
        return self._scalar(conn, f"SELECT count(*) FROM {_quote_ident(name)}", seconds)

    def _scalar(self, conn: sqlite3.Connection, sql: str, seconds: float) -> Any:
        """The one value `sql` returns, or None when it fails or takes longer than `seconds`."""
        if seconds <= 0:
            return None
        outer = self._deadline
        self._deadline = time.monotonic() + seconds
        try:
            return conn.execute(sql).fetchone()[0]
        except (sqlite3.Error, MemoryError):
            return None
        finally:
            self._deadline = outer

    def _left_out(self, conn: sqlite3.Connection, query: str, shown: int) -> str:
        """How many rows of `query` beyond the first `shown` were left out, in words."""
        # The query is already known to be one read-only statement; the newline keeps a
        # trailing "-- comment" from swallowing the closing parenthesis. Anything that cannot
        # be wrapped this way (a PRAGMA) simply fails and gets the vaguer note.
        counted = self._scalar(
            conn,
            f"SELECT count(*) FROM (SELECT 1 FROM (\n{query}\n) LIMIT {_COUNT_ROWS + 1})",
            min(_COUNT_SECONDS, (self._deadline or 0) - time.monotonic()),
        )
        if not isinstance(counted, int) or counted <= shown:
            return "more rows were left out"
        if counted > _COUNT_ROWS:
            return f"more than {_COUNT_ROWS - shown:,} rows were left out"
        return f"{counted - shown} of {counted} rows were left out"

    def _columns(
        self, conn: sqlite3.Connection, name: str
    ) -> list[tuple[str, str, int, Any, int, int]]:
        # table-valued pragma with a bound parameter: the name is never spliced into SQL.
        return conn.execute(
            'SELECT name, type, "notnull", dflt_value, pk, hidden'
            " FROM pragma_table_xinfo(?) WHERE hidden IN (0, 2, 3) ORDER BY cid",
            (name,),
        ).fetchall()

    def _foreign_keys(
        self, conn: sqlite3.Connection, name: str
    ) -> list[tuple[str, str, str | None, str, str]]:
        return conn.execute(
            'SELECT "from", "table", "to", on_update, on_delete'
            " FROM pragma_foreign_key_list(?) ORDER BY id, seq",
            (name,),
        ).fetchall()

    def describe_table(self, name: str) -> str:
        """Columns (type, PK, NOT NULL, default), foreign keys, indexes and row count."""
        with self._running() as conn:
            if not isinstance(name, str) or not name:
                raise QueryError("describe_table needs a table name")
            table, kind = self._resolve(conn, name)
            columns = self._columns(conn, table)
            fks = self._foreign_keys(conn, table)
            indexes = conn.execute(
                'SELECT name, "unique", origin FROM pragma_index_list(?) ORDER BY name', (table,)
            ).fetchall()
            index_columns = {
                index: [
                    r[0] or "<expression>"
                    for r in conn.execute(
                        "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index,)
                    )
                ]
                for index, _, _ in indexes
            }
            sql = conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = ? AND type = ?", (table, kind)
            ).fetchone()
            count = self._count(conn, table, self.timeout)
        rows = "row count unknown" if count is None else f"{count} rows"
        out = [f"{kind} {table} — {rows}", "columns:"]
        pk_parts = sum(1 for c in columns if c[4])
        for col_name, col_type, notnull, default, pk, hidden in columns:
            parts = [col_name, col_type or "(no type)"]
            if pk:
                parts.append("PRIMARY KEY" if pk_parts == 1 else f"PRIMARY KEY part {pk}")
            if notnull:
                parts.append("NOT NULL")
            if default is not None:
                parts.append(f"DEFAULT {default}")
            if hidden in (2, 3):
                parts.append("GENERATED")
            out.append("  " + " ".join(parts))
        if fks:
            out.append("foreign keys:")
            for src_col, ref_table, ref_col, on_update, on_delete in fks:
                line = f"  {src_col} -> {ref_table}({ref_col or 'its primary key'})"
                for event, action in (("UPDATE", on_update), ("DELETE", on_delete)):
                    if action and action != "NO ACTION":
                        line += f" ON {event} {action}"
                out.append(line)
        if indexes:
            out.append("indexes:")
            for index, unique, origin in indexes:
                how = {"pk": " (primary key)", "u": " (UNIQUE constraint)"}.get(origin, "")
                kind_word = "UNIQUE " if unique else ""
                cols = ", ".join(index_columns[index])
                out.append(f"  {kind_word}{index} on ({cols}){how}")
        if kind == "view" and sql and sql[0]:
            definition = " ".join(sql[0].split())
            if len(definition) > 1000:
                definition = definition[:1000] + "…"
            out.append(f"definition: {definition}")
        return "\n".join(out)

    def schema_summary(self, max_chars: int = 2000) -> str:
        """One line per table, `name(col type, ...) — N rows`, within about max_chars."""
        with self._running() as conn:
            tables = self._list_tables(conn)
            # Reading the schema is cheap, so only the row counts are time-limited, and they
            # share one budget: a schema with many huge tables must not hold up a chat.
            self._deadline = None
            deadline = time.monotonic() + self.timeout
            lines: list[str] = []
            for table, kind in tables:
                try:
                    columns = self._columns(conn, table)
                    fks = {fk[0]: fk[1] for fk in self._foreign_keys(conn, table)}
                except sqlite3.Error:  # e.g. a virtual table whose module is not built in
                    lines.append(f"{table}(?) — {kind}")
                    continue
                cols = []
                for col_name, col_type, _, _, pk, _ in columns:
                    text = f"{col_name} {col_type}".strip()
                    if pk:
                        text += " PK"
                    if col_name in fks:
                        text += f" -> {fks[col_name]}"
                    cols.append(text)
                if kind == "view":
                    tail = "view"
                else:
                    count = self._count(conn, table, deadline - time.monotonic())
                    tail = "? rows" if count is None else f"{count} rows"
                line = f"{table}({', '.join(cols)}) — {tail}"
                if len(line) > 400:
                    line = line[:399] + "…"
                lines.append(line)
        out: list[str] = []
        used = 0
        for i, line in enumerate(lines):
            if used + len(line) + 1 > max_chars - 60:
                out.append(f"… and {len(lines) - i} more tables (use list_tables)")
                break
            out.append(line)
            used += len(line) + 1
        return "\n".join(out) if out else "(no tables)"


# --- the worker process -------------------------------------------------------------------
#
# Every statement runs in a child process, so that a statement the progress handler cannot
# stop (one SQL function call doing all its work inside one VM step, such as instr() over
# two huge strings) still ends at the time limit: the parent kills the child. The child
# speaks JSON lines: a request {"op", "arg", "timeout", "max_rows", "max_chars"} on stdin, a
# reply {"ok": result} or {"error": message} on stdout. Only capped results cross the pipe.


def _encode_bytes(value: Any) -> Any:
    """json.dumps(default=...): bytes as {"b64": ...}; int, float, str and None need nothing."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return value


def _limit_worker() -> None:
    """Limit the worker itself: it may write no file at all, nor grow without bound."""
    try:
        import resource
    except ImportError:  # Windows: no rlimits; the time limit (kill) still holds
        return
    if hasattr(signal, "SIGXFSZ"):
        # Writing past RLIMIT_FSIZE then fails with EFBIG (an SQLite I/O error) instead of
        # killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for which, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_AS, _WORKER_ADDRESS_SPACE),
    ):
        with contextlib.suppress(ValueError, OSError):  # e.g. RLIMIT_AS on macOS
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))


def _cpu_backstop(seconds: float) -> None:
    """Let the kernel end this worker should it run on with nobody left to kill it."""
    try:
        import resource
    except ImportError:
        return
    with contextlib.suppress(ValueError, OSError):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds) + 10
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _serve(sandbox: _Sandbox, request: dict[str, Any]) -> Any:
    sandbox.timeout = float(request["timeout"])
    sandbox.max_rows = int(request["max_rows"])
    sandbox.max_chars = int(request["max_chars"])
    op, arg = request["op"], request.get("arg")
    if op == "run_sql":
        result = sandbox.run_sql(arg)
        return {
            "columns": result.columns,
            "rows": result.rows,  # tuples; bytes are encoded by _encode_bytes
            "blobs": any(isinstance(v, bytes) for row in result.rows for v in row),
            "truncated": result.truncated,
            "note": result.note,
        }
    if op == "list_tables":
        return sandbox.list_tables()
    if op == "describe_table":
        return sandbox.describe_table(arg)
    if op == "schema_summary":
        return sandbox.schema_summary(arg)
    raise QueryError(f"unknown request {op!r}")


def _worker_main(path: str) -> None:
    """The worker process: open `path` in the sandbox and answer requests until stdin ends."""
    import warnings

    warnings.simplefilter("ignore")  # nothing may block on a stderr nobody reads
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() must not corrupt the replies

    def send(reply: dict[str, Any]) -> None:
        try:
            data = json.dumps(reply, separators=(",", ":"), default=_encode_bytes).encode("ascii")
        except MemoryError:
            data = json.dumps({"error": _OUT_OF_MEMORY}).encode("ascii")
        out.write(data + b"\n")
        out.flush()

    try:
        _limit_worker()
        try:
            sandbox = _Sandbox(Path(path))
        except ChatcliError as e:
            send({"error": e.message})
            return
        send({"ok": True})
        for line in sys.stdin.buffer:
            try:
                request = json.loads(line)
                _cpu_backstop(2 * float(request["timeout"]) + _KILL_GRACE)
                reply: dict[str, Any] = {"ok": _serve(sandbox, request)}
            except ChatcliError as e:
                reply = {"error": e.message}
            except MemoryError:
                reply = {"error": _OUT_OF_MEMORY}
            except Exception as e:  # a bug: say so in one line, keep serving
                reply = {"error": f"internal error in the SQL worker: {type(e).__name__}: {e}"}
            send(reply)
    except (BrokenPipeError, KeyboardInterrupt):  # the parent is gone
        pass


def _pump(stream: Any, replies: queue.SimpleQueue[bytes | None]) -> None:
    """Reader thread: hand each line the worker writes to the waiting call; None at the end."""
    try:
        for line in stream:
            replies.put(line)
    except (OSError, ValueError):
        pass
    finally:
        replies.put(None)
        with contextlib.suppress(OSError, ValueError):
            stream.close()


def _kill(proc: Any) -> None:
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stderr):  # stdout is closed by its reader thread
        with contextlib.suppress(OSError, ValueError):
            stream.close()


class _Worker:
    """One worker process and the thread that reads its replies."""

    def __init__(self, path: Path) -> None:
        import subprocess

        # -I -S: no PYTHON* variables, no user or site packages; only the standard library
        # and the folder holding this package are needed.
        package_root = str(Path(__file__).resolve().parent.parent)
        code = (
            "import sys; sys.path.append(sys.argv[1]); "
            "from chatcli.sqltools import _worker_main; _worker_main(sys.argv[2])"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code, package_root, os.path.abspath(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            # Its own session: a terminal's Ctrl-C goes to chatcli alone, which decides.
            start_new_session=os.name == "posix",
        )
        # Killed when closed, when garbage-collected, or at the latest when chatcli exits.
        self.stop = weakref.finalize(self, _kill, self.proc)
        self.replies: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        threading.Thread(
            target=_pump, args=(self.proc.stdout, self.replies), daemon=True, name="sql-worker"
        ).start()

    def alive(self) -> bool:
        return self.stop.alive and self.proc.poll() is None

    def wait(self, seconds: float) -> dict[str, Any] | None:
        """The next reply; None if the worker ended; queue.Empty after `seconds`."""
        line = self.replies.get(timeout=max(seconds, 0.001))
        if line is None:
            return None
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        return reply if isinstance(reply, dict) else None

    def request(self, message: dict[str, Any], seconds: float) -> dict[str, Any] | None:
        try:
            self.proc.stdin.write(json.dumps(message).encode("ascii") + b"\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):  # it died (BrokenPipeError) or was killed meanwhile
            return None
        return self.wait(seconds)

    def death_note(self) -> str:
        """How the worker ended, in a few words (exit status, last line it printed)."""
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=2)
        code = self.proc.returncode
        if code is None:
            return "it stopped answering"
        if code < 0:
            try:
                what = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"killed by signal {-code}"
        else:
            what = f"exit status {code}"
        last = ""
        with contextlib.suppress(OSError, ValueError):
            lines = self.proc.stderr.read(65536).decode("utf-8", "replace").strip().splitlines()
            last = lines[-1].strip()[:200] if lines else ""
        return f"{what}: {last}" if last else what


class ReadOnlyDatabase:
    """A read-only, time- and size-limited view of one SQLite file, safe to give a model.

    The statements run in a worker process, started at the first call and then reused,
    that opens the file in the sandbox (_Sandbox: mode=ro, query_only, an authorizer
    allowing only reads, no ATTACH, no extensions) and limits itself: it can write no
    file at all (RLIMIT_FSIZE 0; temporary data stays in memory), SQLite's heap is
    capped at _WORKER_HEAP and the process at _WORKER_ADDRESS_SPACE. A call waits at
    most `timeout` seconds (describe_table and schema_summary twice that) plus a short
    grace; a statement still running then, or when Ctrl-C arrives (KeyboardInterrupt is
    re-raised), is ended by killing the worker, and the next call starts a fresh one.
    At most `max_rows` rows and about `max_chars` characters come back. Safe to share
    between threads (calls are serialized).
    """

    def __init__(
        self,
        path: Path,
        *,
        timeout: float = 5.0,
        max_rows: int = 200,
        max_chars: int = 16_000,
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.max_rows = max_rows
        self.max_chars = max_chars
        self._lock = threading.RLock()
        self._worker: _Worker | None = None
        self._busy: _Worker | None = None
        self._interrupted = False
        self._closed = False
        # Refuse what is no database right away, as callers expect; the worker opens it again.
        header = _read_header(self.path, 100)
        if header[:16] == _HEADER and len(header) >= 20 and 2 in header[18:20]:
            # Reading a WAL database needs -wal/-shm files, and the worker may write none.
            raise InvalidDatabase(
                "is in WAL mode; query a copy made by copy_database instead", path=self.path
            )
        with _no_new_sidecars(self.path):
            try:
                conn = _connect_ro(self.path, timeout=timeout)
            except sqlite3.Error as e:
                raise InvalidDatabase(f"cannot open the database: {e}", path=self.path) from None
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.Error as e:
                raise InvalidDatabase(
                    f"not a readable SQLite database: {e}", path=self.path
                ) from None
            finally:
                conn.close()

    # -- lifecycle

    def close(self) -> None:
        """Stop the worker; further calls raise QueryError."""
        with self._lock:
            self._closed = True
            self._stop_worker()

    def __enter__(self) -> ReadOnlyDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def interrupt(self) -> None:
        """Stop the running query from another thread; it raises QueryError("query interrupted")."""
        worker = self._busy
        if worker is not None:
            self._interrupted = True
            worker.stop()

    # -- talking to the worker

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()

    def _ready_worker(self) -> _Worker:
        """The running worker, or a new one that has opened the database."""
        worker = self._worker
        if worker is not None and worker.alive():
            return worker
        self._stop_worker()
        try:
            worker = _Worker(self.path)
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or e
            raise QueryError(f"cannot start the SQL worker process: {reason}") from None
        self._worker = self._busy = worker
        try:
            ready = worker.wait(_START_SECONDS)
        except queue.Empty:
            raise QueryError(
                f"the SQL worker process did not start within {_START_SECONDS:g} s"
            ) from None
        if ready is None:
            raise self._worker_ended(starting=True)
        if "error" in ready:
            raise QueryError(str(ready["error"]))
        return worker

    def _worker_ended(self, *, starting: bool = False) -> QueryError:
        worker = self._worker
        note = worker.death_note() if worker is not None else "no worker"
        self._stop_worker()
        if self._interrupted:
            return QueryError("query interrupted")
        if starting:
            return QueryError(f"the SQL worker process could not start ({note})")
        return QueryError(
            f"query stopped: the SQL worker process ended ({note}), most likely out of "
            "memory; filter or aggregate more, or add a LIMIT"
        )

    def _call(self, op: str, arg: Any, *, budget: float, stopped: str) -> Any:
        """Send one request; wait up to `budget` (+ grace) seconds, else kill the worker."""
        with self._lock:
            if self._closed:
                raise QueryError("the database is closed", path=self.path)
            self._interrupted = False
            try:
                worker = self._ready_worker()
                self._busy = worker
                request = {
                    "op": op,
                    "arg": arg,
                    "timeout": self.timeout,
                    "max_rows": self.max_rows,
                    "max_chars": self.max_chars,
                }
                reply = worker.request(request, budget + _KILL_GRACE)
                if reply is None:
                    raise self._worker_ended()
            except queue.Empty:
                self._stop_worker()
                if self._interrupted:
                    raise QueryError("query interrupted") from None
                raise QueryError(stopped) from None
            except BaseException:  # Ctrl-C included: no statement outlives its call
                self._stop_worker()
                raise
            finally:
                self._busy = None
            if "error" in reply:
                raise QueryError(str(reply["error"]))
            return reply.get("ok")

    # -- the public calls

    def run_sql(self, query: str) -> QueryResult:
        """Run one read-only statement; at most max_rows rows and about max_chars characters."""
        if not isinstance(query, str):
            raise QueryError("the query must be a string")
        result = self._call(
            "run_sql", query, budget=self.timeout, stopped=_time_limit_message(self.timeout)
        )
        if result["blobs"]:
            rows = [tuple(_decode_value(v) for v in row) for row in result["rows"]]
        else:
            rows = [tuple(row) for row in result["rows"]]
        return QueryResult(
            list(result["columns"]),
            rows,
            truncated=bool(result["truncated"]),
            note=result["note"],
        )

    def list_tables(self) -> list[str]:
        """Names of tables and views, without SQLite's internal sqlite_* tables."""
        return list(
            self._call(
                "list_tables",
                None,
                budget=self.timeout,
                stopped=f"listing the tables took longer than {self.timeout:g} s",
            )
        )

    def describe_table(self, name: str) -> str:
        """Columns (type, PK, NOT NULL, default), foreign keys, indexes and row count."""
        if not isinstance(name, str) or not name:
            if self._closed:
                raise QueryError("the database is closed", path=self.path)
            raise QueryError("describe_table needs a table name")
        return str(
            self._call(
                "describe_table",
                name,
                budget=2 * self.timeout,
                stopped=f"describing {name!r} took longer than {2 * self.timeout:g} s",
            )
        )

    def schema_summary(self, max_chars: int = 2000) -> str:
        """One line per table, `name(col type, ...) — N rows`, within about max_chars."""
        return str(
            self._call(
                "schema_summary",
                int(max_chars),
                budget=2 * self.timeout,
                stopped=f"reading the schema took longer than {2 * self.timeout:g} s",
            )
        )


# --- tools for the model ------------------------------------------------------------------

TOOL_SPECS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "list_tables",
            "description": "List the tables and views of the attached SQLite database.",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "describe_table",
            "description": (
                "Describe one table or view of the attached SQLite database: columns with "
                "types, primary key, NOT NULL, foreign keys, indexes and row count."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "Table or view name."},
                },
                "required": ["name"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_sql",
            "description": (
                "Run one read-only SQLite query (SELECT, WITH ... SELECT, or a read-only "
                "PRAGMA such as table_info) on the attached database and get the rows as "
                "text. The database cannot be changed. Results are capped (about 200 rows) "
                "and queries are stopped after a few seconds, so aggregate, filter or use "
                "LIMIT on large tables. One statement per call."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "One SQLite statement."},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
        },
    },
]


def call_tool(db: ReadOnlyDatabase, name: str, args: dict[str, Any] | str | None) -> str:
    """Run tool `name` for the model; failures come back as "error: ..." text, never raised."""
    try:
        if isinstance(args, str):  # raw OpenAI tool calls carry arguments as a JSON string
            args = json.loads(args) if args.strip() else {}
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return "error: tool arguments must be a JSON object"
        if name == "list_tables":
            tables = db.list_tables()
            return "\n".join(tables) if tables else "(no tables)"
        if name == "describe_table":
            table = args.get("name", args.get("table"))
            if not isinstance(table, str) or not table.strip():
                return "error: describe_table needs a 'name' string argument"
            return db.describe_table(table.strip())
        if name == "run_sql":
            query = args.get("query", args.get("sql"))
            if not isinstance(query, str) or not query.strip():
                return "error: run_sql needs a 'query' string argument"
            return db.run_sql(query).to_text(db.max_chars)
        known = ", ".join(spec["function"]["name"] for spec in TOOL_SPECS)
        return f"error: unknown tool {name!r}; available tools: {known}"
    except json.JSONDecodeError as e:
        return f"error: tool arguments are not valid JSON: {e}"
    except ChatcliError as e:
        return f"error: {e.message}"
    except sqlite3.Error as e:
        return f"error: {e}"
