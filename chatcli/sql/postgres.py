"""The PostgreSQL backend: a live database queried read-only, nothing copied.

Read-only is the server's doing, not a parse of the SQL: every call runs in its own
`BEGIN READ ONLY` transaction whose first statement takes a snapshot and sets
`statement_timeout` locally (so `SET TRANSACTION READ WRITE` comes too late), the model's
statement is declared as a server-side cursor through the extended protocol (which refuses
two statements in one string), at most the capped rows are fetched, and the transaction is
always rolled back. `DISCARD ALL` then drops what a rollback keeps (session advisory locks,
prepared statements). Passwords are never stored: the URL is kept without one and libpq
finds it in its usual places (PGPASSWORD, ~/.pgpass, a service file).

psycopg (3) is imported inside the functions that need it, so importing this module (e.g.
for is_postgres_url) costs nothing at start-up.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from chatcli.errors import QueryError

from . import postgres_catalog as catalog
from .result import QueryResult, RowCap, one_statement, time_limit_message

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "AuthenticationFailed",
    "ConnectionLost",
    "PostgresDatabase",
    "QueryTimeout",
    "ServerUnreachable",
    "is_postgres_url",
    "strip_password",
]

_SCHEMES = ("postgresql://", "postgres://")
# Rows fetched per round trip while filling a result.
_BATCH = 50
# A capped result is counted on to say how many rows were left out, up to so many rows and for
# so long (ms): a huge result must cost about what a small one does.
_COUNT_ROWS = 2_000
_COUNT_MS = 250
# How long past its limit a call may run before the client cancels it itself (the server's
# statement_timeout normally ends it first).
_CANCEL_GRACE = 2.0
_CURSOR = "chatcli_query"
# Types whose Python value reads well; every other column arrives as PostgreSQL's own text
# (dates, json, arrays, ranges...), so e.g. 'infinity' or a json document shows as written.
_NATIVE_TYPES = frozenset(
    "bool int2 int4 int8 oid float4 float8 numeric bytea text varchar bpchar name char".split()
)


class ServerUnreachable(QueryError):
    """No connection could be made (server down, wrong host or port, too many clients)."""


class AuthenticationFailed(ServerUnreachable):
    """The server refused the role's credentials."""


class ConnectionLost(QueryError):
    """The connection broke during a call; the next call connects again."""


class QueryTimeout(QueryError):
    """The statement ran past sql_timeout and the server cancelled it."""


def is_postgres_url(text: object) -> bool:
    """True for a postgresql:// or postgres:// URL (what attaches a live database)."""
    return isinstance(text, str) and text.strip().lower().startswith(_SCHEMES)


def strip_password(url: str) -> str:
    """`url` without its password (in the user part or a password= parameter), for storing.

    postgresql://user:pw@host/db -> postgresql://user@host/db
    """
    parts = urlsplit(url.strip())
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
    query = parts.query
    if query:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "password"]
        query = urlencode(kept)
    # Built by hand: urlunsplit would turn postgresql:///db (empty host: the socket) into :/db.
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


class PostgresDatabase:
    """A read-only, time- and size-limited view of a live PostgreSQL database (tools.Database).

    Connects at once (so a bad URL or password fails at attach) and again on the next call
    after a lost connection. `timeout` is sql_timeout in seconds; at most `max_rows` rows and
    about `max_chars` characters come back. Safe to share between threads (calls serialize).
    """

    dialect = "PostgreSQL"  # named in the tool descriptions and the system prompt

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        max_rows: int = 200,
        max_chars: int = 16_000,
        connect_timeout: float = 10.0,
    ) -> None:
        if not is_postgres_url(url):
            raise QueryError("not a postgresql:// URL")
        self._url = url.strip()  # may hold a password: used to connect, never shown or stored
        self.url = strip_password(self._url)
        self.path = self.url  # what error messages and the UI show, as for a SQLite file
        self.timeout = timeout
        self.max_rows = max_rows
        self.max_chars = max_chars
        self.connect_timeout = connect_timeout
        self._secret = _password_of(self._url)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._interrupted = False
        self._warned = False
        self._cursors: list[Any] = []  # server-side cursors of the running call
        with self._lock:
            self._connection()

    # -- lifecycle

    def close(self) -> None:
        """Close the connection; later calls raise QueryError."""
        with self._lock:
            self._closed = True
            self._drop()

    def __enter__(self) -> PostgresDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def interrupt(self) -> None:
        """Cancel the running statement from another thread: QueryError("query interrupted")."""
        conn = self._conn
        if conn is not None:
            self._interrupted = True
            _cancel(conn)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken socket may fail to close: gone anyway
                conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop()
        import psycopg

        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,  # the transactions are ours: BEGIN READ ONLY ... ROLLBACK
                prepare_threshold=None,  # DISCARD ALL would pull prepared statements away
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name="chatcli",
                # A server that vanishes without closing the socket is noticed in ~15 s.
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=5,
            )
        except psycopg.Error as e:
            raise self._connect_error(e) from None
        self._conn = conn
        return conn

    # -- running one call

    def _call(self, work: Any, *, budget: float) -> Any:
        """Run `work(cursor)` in a fresh read-only transaction, then roll back and clean up."""
        import psycopg

        with self._lock:
            if self._closed:
                raise QueryError("the database is closed", path=self.url)
            self._interrupted = False
            conn = self._connection()
            watchdog = threading.Timer(budget + _CANCEL_GRACE, _cancel, (conn,))
            watchdog.daemon = True
            try:
                watchdog.start()
                with conn.cursor() as cur:
                    # One simple-protocol message: our own SQL, no parameters. The SELECT takes
                    # the transaction's snapshot: SET TRANSACTION READ WRITE is too late after.
                    ms = max(1, round(self.timeout * 1000))
                    cur.execute(
                        f"BEGIN READ ONLY; SELECT set_config('statement_timeout', '{ms}', true)"
                    )
                    return work(conn, cur)
            except psycopg.Error as e:
                raise self._query_error(e, conn) from None
            except QueryError:  # ours (e.g. no such table): the connection is fine
                raise
            except BaseException:  # Ctrl-C included: no statement outlives its call
                self._drop()
                raise
            finally:
                watchdog.cancel()
                self._end(conn)
                # After the ROLLBACK, closing a server cursor costs no round trip.
                while self._cursors:
                    with contextlib.suppress(Exception):
                        self._cursors.pop().close()

    def _end(self, conn: psycopg.Connection[Any]) -> None:
        """Roll back and drop what outlives a rollback; a connection that cannot is dropped."""
        import psycopg

        if conn is not self._conn or conn.closed or conn.broken:
            return
        try:
            conn.execute("ROLLBACK")
            conn.execute("DISCARD ALL")  # advisory locks, PREPAREd statements, LISTEN
        except psycopg.Error:
            self._drop()

    def _query_error(self, e: Exception, conn: psycopg.Connection[Any]) -> QueryError:
        from psycopg import errors as pe

        text = self._scrub(_first_line(e))
        if conn.closed or conn.broken:
            self._drop()
            return ConnectionLost(
                f"lost the connection to the PostgreSQL server ({text}); "
                "the next query connects again",
                path=self.url,
            )
        if isinstance(e, pe.QueryCanceled):
            if self._interrupted:
                return QueryError("query interrupted")
            return QueryTimeout(time_limit_message(self.timeout))
        if isinstance(e, pe.ReadOnlySqlTransaction):
            return QueryError(f"not allowed: the database is read-only here ({text})")
        if isinstance(e, pe.InsufficientPrivilege):
            return QueryError(f"not allowed: {text}")
        if "multiple commands" in text:
            return QueryError("only one statement per query")
        return QueryError(text)

    def _connect_error(self, e: Exception) -> QueryError:
        text = self._scrub(_first_line(e))
        lowered = text.lower()
        if "password" in lowered or "authentication" in lowered:
            return AuthenticationFailed(
                f"cannot log in to PostgreSQL: {text}; chatcli stores no password: set "
                "PGPASSWORD or add the role to ~/.pgpass",
                path=self.url,
            )
        return ServerUnreachable(f"cannot connect to PostgreSQL: {text}", path=self.url)

    def _scrub(self, text: str) -> str:
        """The message, without the password should the server or libpq ever repeat it."""
        return text.replace(self._secret, "***") if self._secret else text

    # -- the public calls

    def run_sql(self, query: str) -> QueryResult:
        """Run one read-only statement; at most max_rows rows and about max_chars characters."""
        query = one_statement(query)
        if "\x00" in query:
            raise QueryError("the query contains a NUL character")
        return self._call(lambda conn, cur: self._run(conn, cur, query), budget=self.timeout)

    def _run(self, conn: psycopg.Connection[Any], cur: Any, query: str) -> QueryResult:
        from psycopg import errors as pe

        try:
            with conn.transaction():  # a savepoint: a non-SELECT is retried below
                server = conn.cursor(name=_CURSOR)
                self._cursors.append(server)
                _text_loaders(server)
                # DECLARE ... CURSOR goes through the extended protocol: one statement only.
                server.execute(query)
        except pe.SyntaxError as e:
            if "multiple commands" in str(e):
                raise
            # Not a query a cursor can hold (SHOW, EXPLAIN, or a real syntax error whose
            # position should refer to the user's text): run it directly, still one statement
            # (binary results force the extended protocol), still read-only. Such results
            # are short text (plans, settings); a type without a binary loader comes as bytes.
            cur.execute(query, binary=True)
            if cur.description is None:
                return QueryResult([], [], note="statement returned no result")
            columns = [d.name for d in cur.description]
            return self._fill(columns, lambda n: cur.fetchmany(n), None)
        columns = [d.name for d in server.description or []]
        if not columns:
            return QueryResult([], [], note="statement returned no result")
        return self._fill(columns, lambda n: server.fetchmany(n), cur)

    def _fill(self, columns: list[str], fetch: Any, counter: Any) -> QueryResult:
        cap = RowCap(columns, max_rows=self.max_rows, max_chars=self.max_chars)
        fetched = 0  # where the cursor stands: rows of the last batch may go unused
        while cap.note is None:
            batch = fetch(min(_BATCH, self.max_rows + 1 - len(cap.rows)))
            if not batch:
                break
            fetched += len(batch)
            for row in batch:
                if not cap.add(row):
                    break
        note = cap.note
        if note is not None:
            note += "; " + self._left_out(counter, fetched=fetched, shown=len(cap.rows))
        return QueryResult(columns, cap.rows, truncated=note is not None, note=note)

    def _left_out(self, cur: Any, *, fetched: int, shown: int) -> str:
        """How many rows beyond the `shown` ones were left out, within a short time budget."""
        import psycopg

        if cur is None:
            return "more rows were left out"
        try:
            with cur.connection.transaction():
                cur.execute(f"SET LOCAL statement_timeout = {_COUNT_MS}")
                cur.execute(f"MOVE FORWARD {_COUNT_ROWS} FROM {_CURSOR}")
                moved = max(cur.rowcount, 0)
        except psycopg.Error:  # e.g. counting took longer than _COUNT_MS
            return "more rows were left out"
        total = fetched + moved
        if moved >= _COUNT_ROWS:
            return f"at least {total - shown:,} rows were left out"
        return f"{total - shown:,} of {total:,} rows were left out"

    def list_tables(self) -> list[str]:
        """Tables, views and materialized views the role can read (schema-qualified off public)."""
        return self._call(lambda conn, cur: catalog.list_tables(cur), budget=self.timeout)

    def describe_table(self, name: str) -> str:
        """Columns (type, PK, NOT NULL, default), foreign keys, indexes and row estimate."""
        if not isinstance(name, str) or not name.strip():
            raise QueryError("describe_table needs a table name")
        return self._call(
            lambda conn, cur: catalog.describe_table(cur, name.strip()), budget=2 * self.timeout
        )

    def schema_summary(self, max_chars: int = 2000) -> str:
        """One line per table, `name(col type, ...) — ~N rows`, within about max_chars."""
        return self._call(
            lambda conn, cur: catalog.schema_summary(cur, int(max_chars), budget_s=self.timeout),
            budget=2 * self.timeout,
        )

    def write_access(self) -> str | None:
        """What the role could change if it were not for READ ONLY, in words; None if nothing."""
        return self._call(lambda conn, cur: catalog.write_access(cur), budget=self.timeout)

    def server_powers(self) -> list[str]:
        """What lets the role act outside the database despite READ ONLY (superuser, COPY TO
        PROGRAM or to a file), in words; [] when nothing does (postgres_catalog.server_powers)."""
        return self._call(lambda conn, cur: catalog.server_powers(cur), budget=self.timeout)

    def write_warning(self) -> str | None:
        """The first call: a note when the role can write anywhere; later calls: None."""
        if self._warned:
            return None
        what = self.write_access()
        self._warned = True
        if what is None:
            return None
        return f"the role {what}; queries run read-only, but a role granted only SELECT is safer"


def _password_of(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.password:
        return parts.password
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "password" and value:
            return value
    return None


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _cancel(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(Exception):  # the server or connection is gone: nothing to cancel
        conn.cancel_safe(timeout=5)


def _text_loaders(cur: Any) -> None:
    """Make `cur` (a cursor for the model's query, not the catalog's) load every column type
    outside _NATIVE_TYPES, and every array, as PostgreSQL's own text."""
    from psycopg.types.string import TextLoader

    adapters = cur.adapters  # the cursor's own copy: the catalog queries keep real arrays
    for info in cur.connection.adapters.types:
        if info.name not in _NATIVE_TYPES:
            adapters.register_loader(info.oid, TextLoader)
        if info.array_oid:  # arrays as PostgreSQL writes them: {1,2,3}
            adapters.register_loader(info.array_oid, TextLoader)
