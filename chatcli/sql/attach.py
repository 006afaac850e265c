"""Attaching sources to a session: the one entry point of `attach-db`, `new --db`, `ask --db` and
`/attach`.

A source is a SQLite file (copied, as the session's database), a data file (CSV/TSV, JSON, JSON
Lines, Parquet: imported as a table into the session's database copy) or a postgresql:// URL
(attached live: nothing is copied; the URL is stored in the session's metadata as `db_url`,
without its password). A session has one database: a SQLite copy (with imported tables) or a
PostgreSQL URL; attaching one replaces the other (an old copy stays in trash/replaced/).

Passwords: libpq finds them (PGPASSWORD, ~/.pgpass, a service file). A password written in the
URL is used for this process only (kept in memory, see open_postgres) and never stored.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatcli.errors import ChatcliError, DataFileError, QueryError, TableExists
from chatcli.store.layout import URL_KEY  # the meta field of a PostgreSQL URL: the store's

from .copy import connect_ro, copy_database, validate_database

if TYPE_CHECKING:
    from chatcli.store import Store

    from .files import ImportResult, Progress
    from .postgres import PostgresDatabase

__all__ = [
    "Attached",
    "Plan",
    "attach_sources",
    "check_sources",
    "is_url",
    "open_postgres",
    "session_url",
]

PASSWORD_NOTE = (
    "the password in the URL was not saved (chatcli stores none); for later runs set "
    "PGPASSWORD, add the role to ~/.pgpass, or use a service file (PGSERVICE)"
)
SUPERUSER_HINT = (
    "connect as a role granted only SELECT, or allow it with pg_allow_superuser = true "
    "in the config file (or CHATCLI_PG_ALLOW_SUPERUSER=1)"
)

# URLs given with a password in this process, by their stored form: used to connect, never written.
_GIVEN_URLS: dict[str, str] = {}
# URLs whose notes (a role that can write) this process has said: once is enough.
_TOLD: set[str] = set()

Confirm = Callable[[str], bool]  # asks the user a yes/no question; True means yes


def is_url(source: str | Path) -> bool:
    """A postgresql:// or postgres:// URL (the rest are file paths)."""
    from .postgres import is_postgres_url  # stdlib only: psycopg is imported when connecting

    return isinstance(source, str) and is_postgres_url(source)


@dataclass(frozen=True)
class Plan:
    """The sources of one attach, sorted and checked: at most one SQLite file, data files, or one
    URL alone."""

    sqlite: Path | None = None
    files: tuple[Path, ...] = ()
    url: str | None = None


@dataclass
class Attached:
    """What an attach did, for the caller to say: `lines()` on stdout, `notes` on stderr."""

    copied: Path | None = None  # the SQLite file copied in
    imported: list[ImportResult] = field(default_factory=list)
    url: str | None = None  # the stored URL (without password)
    kept: Path | None = None  # where the replaced database copy is kept
    notes: list[str] = field(default_factory=list)  # the password note, the write warning

    def lines(self, sid: str | None = None) -> list[str]:
        """One line per source: "attached sales.csv as table sales (2 rows) to session ID"."""
        to = f" to session {sid}" if sid else ""
        out = []
        if self.copied is not None:
            out.append(f"attached {self.copied}{to}")
        for r in self.imported:
            how = ", replacing the old one" if r.replaced else ""
            out.append(f"attached {r.path} as table {r.table} ({r.rows:,} rows{how}){to}")
        if self.url is not None:
            out.append(f"attached {self.url}{to} (live and read-only: nothing is copied)")
        return out


def check_sources(sources: Sequence[str | Path]) -> Plan:
    """Sort `sources` into a Plan and refuse what cannot be attached, touching nothing: a missing
    or unreadable file, a bad SQLite file, two SQLite files, a URL among other sources."""
    from .files import detect_kind, known_extension

    if not sources:
        raise ChatcliError("nothing to attach: give a file or a postgresql:// URL")
    urls = [str(s).strip() for s in sources if is_url(s)]
    if urls:
        if len(sources) > 1:
            raise ChatcliError("a postgresql:// URL is attached on its own, not with other sources")
        return Plan(url=urls[0])
    sqlite_files: list[Path] = []
    files: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        try:
            kind = detect_kind(path)
        except DataFileError as e:  # no such file, a folder, a FIFO: one line naming it
            raise ChatcliError(e.message, path=path) from None
        if kind == "csv" and not known_extension(path):  # e.g. notes.txt: a mistake, likely
            raise ChatcliError(
                "not a SQLite database (or it is encrypted), nor a CSV/TSV, JSON, JSON Lines or "
                "Parquet file (to import it as CSV, name it .csv)",
                path=path,
            )
        (sqlite_files if kind == "sqlite" else files).append(path)
    if len(sqlite_files) > 1:
        raise ChatcliError(
            "a session holds one SQLite database: give one .db file (and data files)"
        )
    for path in sqlite_files:
        validate_database(path)
    return Plan(sqlite=sqlite_files[0] if sqlite_files else None, files=tuple(files))


def session_url(store: Store, sid: str) -> str | None:
    """The PostgreSQL URL the session is attached to, or None."""
    url = store.read_meta(sid).get(URL_KEY)
    return url if isinstance(url, str) and url else None


def attach_sources(
    store: Store,
    sid: str,
    sources: Sequence[str | Path],
    *,
    replace: bool = False,
    confirm: Confirm | None = None,
    progress: Progress | None = None,
    timeout: float = 5.0,
    allow_superuser: bool = False,
) -> Attached:
    """Attach `sources` to session `sid`, atomically: on any failure (a bad line, a clash, Ctrl-C)
    the session's database is as it was. A table that exists is replaced when `replace`, or when
    `confirm` (asked on a terminal) says yes; otherwise TableExists. Close the session's open
    database (its worker has the old file open) before calling this."""
    plan = check_sources(sources)
    store.ensure()
    if plan.url is not None:
        return _attach_url(store, sid, plan.url, timeout, allow_superuser)
    if plan.sqlite is None and session_url(store, sid):
        raise ChatcliError(
            "this session is attached to a PostgreSQL database; files cannot be imported into it"
            " (detach it first, or start a new session)"
        )
    done = Attached(copied=plan.sqlite)
    db_path = store.db_path(sid)
    if plan.sqlite is not None:
        tmp = _temp_beside(db_path)
        try:
            copy_database(plan.sqlite, tmp)
            if plan.files:
                replace = _clashes_ok(tmp, plan.files, replace, confirm)
                done.imported = _import(plan.files, tmp, replace, progress)
            with store.replacing_db(sid) as done.kept:
                os.replace(tmp, db_path)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        existing = db_path if store.has_db(sid) else None
        replace = _clashes_ok(existing, plan.files, replace, confirm)
        # keep the old copy only when tables in it are about to go
        keeping = store.replacing_db(sid) if replace else contextlib.nullcontext(None)
        with keeping as done.kept:
            done.imported = _import(plan.files, db_path, replace, progress)
    if session_url(store, sid):  # a SQLite copy replaces a PostgreSQL attachment
        store.update_meta(sid, **{URL_KEY: None})
    return done


def _temp_beside(db_path: Path) -> Path:
    fd, name = tempfile.mkstemp(
        prefix=f".{db_path.name}.", suffix=".attach.tmp", dir=db_path.parent
    )
    os.close(fd)
    return Path(name)


def _import(
    files: Sequence[Path], db_path: Path, replace: bool, progress: Progress | None
) -> list[ImportResult]:
    from .files import import_files

    return import_files(files, db_path, replace=replace, progress=progress)


def _tables(db_path: Path | None) -> set[str]:
    if db_path is None:
        return set()
    conn = connect_ro(db_path, timeout=5.0)
    try:
        return {row[0].lower() for row in conn.execute("SELECT name FROM sqlite_schema")}
    except sqlite3.Error:
        return set()  # the import itself says what is wrong with the database
    finally:
        conn.close()


def _clashes_ok(
    db_path: Path | None, files: Sequence[Path], replace: bool, confirm: Confirm | None
) -> bool:
    """Whether to replace tables: the names the files will get (as files.import_files names
    them) that the database has already are asked about once, or refused."""
    from .files import table_name_for

    if replace or not files:
        return replace
    names: list[str] = []
    for path in files:
        names.append(table_name_for(path, names))
    existing = _tables(db_path)
    clashes = [(path, name) for path, name in zip(files, names, strict=True) if name in existing]
    if not clashes:
        return False
    listed = ", ".join(name for _, name in clashes)
    plural = "tables" if len(clashes) > 1 else "a table"
    question = f"The session's database already has {plural} {listed}. Replace?"
    if confirm is not None and confirm(question):
        return True
    raise TableExists(
        f"the session's database already has {plural} {listed}; nothing imported "
        "(add --replace to replace it)",
        path=clashes[0][0],
    )


# PostgreSQL


def _attach_url(
    store: Store, sid: str, url: str, timeout: float, allow_superuser: bool
) -> Attached:
    from .postgres import strip_password

    stored = strip_password(url)
    db, notes = open_postgres(url, timeout=timeout, allow_superuser=allow_superuser)
    db.close()
    if stored != url:
        notes.insert(0, PASSWORD_NOTE)
    done = Attached(url=stored, notes=notes)
    store.update_meta(sid, **{URL_KEY: stored})  # first: the copy goes only once this holds
    if store.has_db(sid):
        done.kept = store.detach_db(sid)
    return done


def open_postgres(
    url: str, *, timeout: float = 5.0, allow_superuser: bool = False
) -> tuple[PostgresDatabase, list[str]]:
    """Connect to `url` read-only; returns the backend and the notes to show (a role that can
    write), the first time in this process only. Refuses (QueryError) a role that can run programs
    or write files on the server unless `allow_superuser`. A stored URL connects with the password
    given in this process, if one was; else libpq finds it."""
    from .postgres import PostgresDatabase, strip_password

    stored = strip_password(url)
    if stored != url.strip():
        _GIVEN_URLS[stored] = url.strip()
    db = PostgresDatabase(_GIVEN_URLS.get(stored, url), timeout=timeout)
    try:
        powers = db.server_powers()
        if powers and not allow_superuser:
            raise QueryError(
                f"refusing to attach: {'; '.join(powers)}, and read-only transactions do not "
                f"stop COPY ... TO PROGRAM; {SUPERUSER_HINT}",
                path=db.url,
            )
        warning = db.write_warning()
    except BaseException:
        db.close()
        raise
    notes = [warning] if warning else []
    if powers:
        notes.append(f"allowed by pg_allow_superuser: {'; '.join(powers)}")
    if stored in _TOLD:
        return db, []
    _TOLD.add(stored)
    return db, notes
