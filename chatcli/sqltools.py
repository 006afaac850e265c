"""SQLite helpers: validate and copy a user's database, then query the copy read-only."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import tempfile
import threading
import time
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
    try:
        with open(path, "rb") as f:
            header = f.read(len(_HEADER))
    except FileNotFoundError:
        raise InvalidDatabase("no such file", path=path) from None
    except IsADirectoryError:
        raise InvalidDatabase("is a folder, not a database file", path=path) from None
    except PermissionError:
        raise InvalidDatabase("cannot read the file: permission denied", path=path) from None
    except OSError as e:
        raise InvalidDatabase(f"cannot read the file: {e.strerror or e}", path=path) from None
    if path.is_dir():  # some platforms open() a directory without complaint
        raise InvalidDatabase("is a folder, not a database file", path=path)
    if not header:
        raise InvalidDatabase("empty file, not a database", path=path)
    if header != _HEADER:
        # SQLCipher and similar encrypt the header too, so they land here as well.
        raise InvalidDatabase("not a SQLite database (or it is encrypted)", path=path)
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
    if problems != ["ok"]:
        raise InvalidDatabase(f"corrupt SQLite database: {problems[0]}", path=path)


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

    def progress(status: int, remaining: int, total: int) -> None:
        # Python's backup() retries a busy source forever; give up at the deadline.
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise _CopyTimeout

    try:
        source = _connect_ro(src, timeout=min(timeout, 1.0))
    except sqlite3.Error as e:
        raise InvalidDatabase(f"cannot open the database: {e}", path=src) from None
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


class ReadOnlyDatabase:
    """A read-only, time- and size-limited view of one SQLite file, safe to give a model.

    Independent safeguards keep the file unchanged: it is opened with mode=ro, the
    connection has query_only=ON, no database may be attached (which also rules out
    VACUUM, as it attaches internally), and an authorizer allows only reads, a short
    list of read-only pragmas, and no file- or extension-touching functions. Every
    query is stopped after `timeout` seconds and returns at most `max_rows` rows and
    about `max_chars` characters. Safe to share between threads (calls are serialized).
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
        self._deadline: float | None = None
        self._interrupted = False
        self._denied: list[str] = []
        try:
            conn = sqlite3.connect(
                _ro_uri(self.path),
                uri=True,
                timeout=timeout,
                isolation_level=None,  # never let the sqlite3 module issue its own BEGIN
                check_same_thread=False,
            )
        except sqlite3.Error as e:
            raise InvalidDatabase(f"cannot open the database: {e}", path=self.path) from None
        try:
            # Users' text is not always valid UTF-8; a bad byte must not fail the whole query.
            conn.text_factory = lambda b: b.decode("utf-8", "replace")
            conn.execute("PRAGMA query_only=ON")
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
        self._conn: sqlite3.Connection | None = conn

    # -- lifecycle

    def close(self) -> None:
        """Close the connection; further calls raise QueryError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ReadOnlyDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def interrupt(self) -> None:
        """Stop the running query from another thread (e.g. on Ctrl-C)."""
        conn = self._conn
        if conn is not None:
            self._interrupted = True
            conn.interrupt()

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
        """Hold the lock and the time limit while statements run; turn errors into QueryError."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise QueryError("the database is closed", path=self.path)
            limit = self.timeout
            self._deadline = time.monotonic() + limit
            self._interrupted = False
            self._denied.clear()
            try:
                yield conn
            except sqlite3.Error as e:
                self._reraise_ctrl_c(e)
                raise self._query_error(e, limit, query) from None
            except ValueError as e:  # e.g. a NUL character in the query
                raise QueryError(str(e)) from None
            finally:
                self._deadline = None

    def _reraise_ctrl_c(self, e: sqlite3.Error) -> None:
        """Raise KeyboardInterrupt if Ctrl-C is what stopped the statement.

        Ctrl-C lands in the progress handler, the only Python code running during a query,
        and the sqlite3 module swallows exceptions raised there: all that is left is an
        "interrupted" error before the deadline that neither interrupt() nor the time limit
        explains.
        """
        deadline = self._deadline
        if (
            "interrupted" in str(e)
            and not self._interrupted
            and (deadline is None or time.monotonic() < deadline)
        ):
            raise KeyboardInterrupt from None

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
            if self._interrupted:
                return QueryError("query interrupted")
            return QueryError(
                f"query stopped after {limit:g} s: time limit reached; "
                "simplify the query or add a LIMIT"
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
        except sqlite3.Error as e:
            self._reraise_ctrl_c(e)
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
