"""The read-only, time- and size-limited SQLite connection, and the rows it returns.

Sandbox runs inside the worker process (worker.py); QueryResult is what every backend's
run_sql returns.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chatcli.errors import InvalidDatabase, QueryError

from .copy import connect_ro
from .result import QueryResult, RowCap, one_statement, time_limit_message

__all__ = [
    "HEAP_LIMIT",
    "MAX_VALUE_BYTES",
    "OUT_OF_MEMORY",
    "VALUE_TOO_BIG",
    "QueryResult",
    "Sandbox",
    "time_limit_message",
]

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


# Virtual machine instructions between two checks of the time limit (a few microseconds).
_PROGRESS_STEPS = 1000
# Longest string or blob SQLite may build or read: stops "SELECT zeroblob(1e9)" from eating
# memory. chatcli's own limit, not SQLite's (1 GB): the message past it says so and names this.
MAX_VALUE_BYTES = 64 * 1024 * 1024
VALUE_TOO_BIG = (
    f"query stopped: a value would pass chatcli's limit of {MAX_VALUE_BYTES // 2**20} MB per "
    "string or blob (MAX_VALUE_BYTES in chatcli/sql/sandbox.py), whether the query builds it "
    "or the file holds it; length(column) still works"
)
# A capped result is counted again in SQLite to say how many rows were left out, but only up
# to this many rows and for at most this long: a huge result must cost about what a small one
# does (bench/sql_bench.py), and an endless one must not run twice as long.
_COUNT_ROWS = 2_000
_COUNT_SECONDS = 0.25

# SQLite's own heap (sorts, temporary b-trees, page cache) stops growing here ("out of memory").
HEAP_LIMIT = 512 * 1024 * 1024
OUT_OF_MEMORY = (
    f"query stopped: it needs more than {HEAP_LIMIT // 2**20} MB of memory; "
    "filter or aggregate more, or add a LIMIT"
)


def _connect_virtual_tables(conn: sqlite3.Connection) -> None:
    """Connect every virtual table of the file now, before the authorizer is installed.

    R*Tree (which GeoPackage and SpatiaLite use) prepares INSERT and DELETE statements on its
    shadow tables when it connects, so with the authorizer in place such a table could not even
    be read. The connection keeps its virtual tables connected; those statements are prepared,
    never run, and a write would still fail: the file is opened mode=ro and query_only is on,
    while the authorizer goes on refusing every INSERT, UPDATE or DELETE a query names.
    """
    names = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'"
    ).fetchall()
    for (name,) in names:
        quoted = '"' + name.replace('"', '""') + '"'
        # A module this build lacks (or a broken table) only fails when that table is used.
        with contextlib.suppress(sqlite3.Error):
            conn.execute(f"SELECT 1 FROM {quoted} LIMIT 0").fetchall()


class Sandbox:
    """The read-only, time- and size-limited connection itself; lives in the worker process.

    Independent safeguards keep the file unchanged: it is opened with mode=ro, the
    connection has query_only=ON, no database may be attached (which also rules out
    VACUUM, as it attaches internally), and an authorizer allows only reads, a short
    list of read-only pragmas, and no file- or extension-touching functions. Temporary
    tables and indexes live in memory, which SQLite caps at HEAP_LIMIT bytes. The
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
            conn = connect_ro(self.path, timeout=timeout)
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
            conn.execute(f"PRAGMA hard_heap_limit={HEAP_LIMIT}")
            if hasattr(conn, "enable_load_extension"):  # absent when built without it
                conn.enable_load_extension(False)
            conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
            _connect_virtual_tables(conn)
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
    def running(
        self, query: str | None = None, *, timed: bool = True
    ) -> Iterator[sqlite3.Connection]:
        """Hold the time limit (unless not `timed`) while statements run; errors -> QueryError.

        Untimed is for reading the schema, which is cheap; what may be slow in it (row
        counts) goes through scalar() with its own limit.
        """
        limit = self.timeout
        self._deadline = time.monotonic() + limit if timed else None
        self._denied.clear()
        try:
            yield self._conn
        except sqlite3.Error as e:
            raise self._query_error(e, limit, query) from None
        except MemoryError:  # SQLITE_NOMEM: the heap cap was reached
            raise QueryError(OUT_OF_MEMORY) from None
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
            return QueryError(time_limit_message(limit))
        if ((getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF) == sqlite3.SQLITE_TOOBIG:
            return QueryError(VALUE_TOO_BIG)  # "string or blob too big" says not whose limit
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
        query = one_statement(query)
        with self.running(query) as conn:
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
                cap = RowCap(columns, max_rows=self.max_rows, max_chars=self.max_chars)
                # Never fetchall(): only pull the rows we will keep, plus one to know if
                # there are more. SQLite computes rows lazily, so the rest is never read.
                for row in itertools.islice(cursor, self.max_rows + 1):
                    if not cap.add(row):
                        break
                rows, note = cap.rows, cap.note
                if note is not None:
                    note += "; " + self._left_out(conn, query, len(rows))
                return QueryResult(columns, rows, truncated=note is not None, note=note)
            finally:
                cursor.close()  # resets the statement and releases the read lock

    def scalar(self, conn: sqlite3.Connection, sql: str, seconds: float) -> Any:
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
        counted = self.scalar(
            conn,
            f"SELECT count(*) FROM (SELECT 1 FROM (\n{query}\n) LIMIT {_COUNT_ROWS + 1})",
            min(_COUNT_SECONDS, (self._deadline or 0) - time.monotonic()),
        )
        if not isinstance(counted, int) or counted <= shown:
            return "more rows were left out"
        if counted > _COUNT_ROWS:
            return f"more than {_COUNT_ROWS - shown:,} rows were left out"
        return f"{counted - shown} of {counted} rows were left out"
