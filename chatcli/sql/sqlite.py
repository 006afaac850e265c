"""ReadOnlyDatabase: the SQLite backend the chat uses, one attached copy at a time."""

from __future__ import annotations

import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any

from chatcli.errors import InvalidDatabase, QueryError

from .copy import SQLITE_HEADER, connect_ro, no_new_sidecars, read_header
from .result import QueryResult, time_limit_message
from .worker import KILL_GRACE, START_SECONDS, WorkerProcess, decode_result

__all__ = ["ReadOnlyDatabase"]


class ReadOnlyDatabase:
    """A read-only, time- and size-limited view of one SQLite file, safe to give a model.

    The statements run in a worker process (worker.py), started at the first call and
    then reused, that opens the file in the sandbox (sandbox.Sandbox: mode=ro,
    query_only, an authorizer allowing only reads, no ATTACH, no extensions) and limits
    itself: it can write no file at all (RLIMIT_FSIZE 0; temporary data stays in
    memory), SQLite's heap is capped at sandbox.HEAP_LIMIT and the process's address
    space too. A call waits at most `timeout` seconds (describe_table and schema_summary
    twice that) plus a short grace; a statement still running then, or when Ctrl-C
    arrives (KeyboardInterrupt is re-raised), is ended by killing the worker, and the
    next call starts a fresh one. At most `max_rows` rows and about `max_chars`
    characters come back. The schema summary is read once and kept: the file is a
    private copy that nothing changes while it is open (attaching another closes this
    object). Safe to share between threads (calls are serialized).
    """

    dialect = "SQLite"  # named in the tool descriptions and the system prompt

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
        self._worker: WorkerProcess | None = None
        self._busy: WorkerProcess | None = None
        self._interrupted = False
        self._closed = False
        self._summaries: dict[int, str] = {}  # max_chars -> schema_summary
        # Refuse what is no database right away, as callers expect; the worker opens it again.
        header = read_header(self.path, 100)
        if header[:16] == SQLITE_HEADER and len(header) >= 20 and 2 in header[18:20]:
            # Reading a WAL database needs -wal/-shm files, and the worker may write none.
            raise InvalidDatabase(
                "is in WAL mode (another program changed it), which cannot be read without "
                "writing files beside it",
                path=self.path,
            )
        with no_new_sidecars(self.path):
            try:
                conn = connect_ro(self.path, timeout=timeout)
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

    def _ready_worker(self) -> WorkerProcess:
        """The running worker, or a new one that has opened the database."""
        worker = self._worker
        if worker is not None and worker.alive():
            return worker
        self._stop_worker()
        try:
            worker = WorkerProcess(self.path)
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or e
            raise QueryError(f"cannot start the SQL worker process: {reason}") from None
        self._worker = self._busy = worker
        try:
            ready = worker.wait(START_SECONDS)
        except queue.Empty:
            raise QueryError(
                f"the SQL worker process did not start within {START_SECONDS:g} s"
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
                reply = worker.request(request, budget + KILL_GRACE)
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
            "run_sql", query, budget=self.timeout, stopped=time_limit_message(self.timeout)
        )
        return decode_result(result)

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
        """One line per table, `name(col type, ...) — N rows`, within about max_chars.

        Counted once, then kept: the system prompt of every turn carries it.
        """
        with self._lock:
            summary = None if self._closed else self._summaries.get(int(max_chars))
            if summary is None:
                summary = str(
                    self._call(
                        "schema_summary",
                        int(max_chars),
                        budget=2 * self.timeout,
                        stopped=f"reading the schema took longer than {2 * self.timeout:g} s",
                    )
                )
                self._summaries[int(max_chars)] = summary
            return summary
