"""The listing: one row per session, kept in index.sqlite, a cache of memory/ and meta/ that is
safe to delete (memory/ stays the source of truth) and is brought up to date on every use."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import StorageError
from . import cachedb
from .files import NotRegularFile, read_regular, scan_stats, scandir
from .layout import INDEX_FILE, MEMORY_LIMIT, UUID_RE, Layout
from .messages import displayable, first_human_title, last_model, parse_messages
from .usage import totals

NOT_A_FILE = "NOT A FILE"  # how `damaged` starts for a memory file that is a FIFO or a device
TABLES = ("sessions", "state")  # every table any version of index.sqlite had
_RESTAT_LIMIT = 200  # listings up to this many rows stat each row's file


def iso_from_ns(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ns / 1e9))


class SessionInfo(NamedTuple):
    """One row of the listing."""

    id: str
    title: str
    messages: int
    updated_ns: int
    model: str
    has_db: bool
    damaged: str | None = None
    input_tokens: int = 0  # summed at index time (usage.totals), so `list` never re-reads files
    output_tokens: int = 0
    tokens_estimated: bool = False  # some of them counted by chatcli, the server reported none

    @property
    def updated(self) -> str:
        return iso_from_ns(self.updated_ns)

    def as_json(self, db_dir: str) -> dict[str, Any]:
        """The row as ``chatcli list --json`` prints it."""
        return {
            "id": self.id,
            "title": self.title,
            "messages": self.messages,
            "updated": self.updated,
            "model": self.model or None,
            "db": f"{db_dir}{os.sep}{self.id}.db" if self.has_db else None,
            "damaged": self.damaged,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens_estimated": self.tokens_estimated,
        }


def build_info(layout: Layout, sid: str, stat: os.stat_result | None = None) -> SessionInfo:
    """A session's listing row, read from its files (``stat``: its memory file's, if known)."""
    path = layout.memory_path(sid)
    st = stat or path.stat()
    meta = layout.read_meta(sid)
    damaged = None
    try:
        messages = parse_messages(read_regular(path, limit=MEMORY_LIMIT))
    except NotRegularFile as e:  # a FIFO or a device: never opened, marked for what it is
        messages, damaged = [], f"{NOT_A_FILE}: {e.kind}"
    except (OSError, ValueError) as e:
        messages, damaged = [], str(e)
    tokens = totals(messages)
    return SessionInfo(
        id=sid,
        # metadata from other tools (or damaged) may hold anything: only text reaches the index
        title=displayable(meta.get("title")) or first_human_title(messages) or "(empty)",
        messages=len(messages),
        updated_ns=st.st_mtime_ns,
        model=displayable(meta.get("model")) or displayable(last_model(messages)),
        has_db=layout.has_db(sid),
        damaged=damaged,
        input_tokens=tokens.input,
        output_tokens=tokens.output,
        tokens_estimated=tokens.estimated,
    )


class Listing:
    """index.sqlite: one row per session, validated by folder mtimes and per-file stats."""

    VERSION = 3
    _COLUMNS = (
        "id, title, messages, updated_ns, model, has_db, damaged,"
        " input_tokens, output_tokens, tokens_estimated"
    )

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.path = layout.root / INDEX_FILE
        self.conn = self._connect()
        self._inode = _inode(self.path)

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self.layout.memory_dir.is_dir():
                return cachedb.in_memory(_create_schema)
        except OSError as e:  # e.g. another user's storage folder
            raise StorageError(
                f"cannot read sessions: {e.strerror}", path=self.layout.memory_dir
            ) from e
        try:
            conn = cachedb.connect(
                self.path,
                version=self.VERSION,
                create_schema=_create_schema,
                timeout=10,
                tables=TABLES,
                note=self.layout.note,
            )
            try:
                self._refresh(conn)
            except BaseException:
                conn.close()
                raise
            return conn
        except (sqlite3.DatabaseError, OSError):
            # Damaged or unwritable index: it is only a cache, so rebuild it, or work without it.
            with contextlib.suppress(OSError):
                cachedb.remove(self.path, TABLES, self.layout.note)  # only ever a file of ours
            conn = cachedb.in_memory(_create_schema)
            self._refresh(conn)
            return conn

    def refresh(self) -> None:
        """Bring the rows up to date; raises sqlite3.DatabaseError if the file was replaced
        (``doctor --fix`` rebuilds it) so the caller connects again."""
        if self._inode != _inode(self.path):
            raise sqlite3.DatabaseError("index file replaced")
        self._refresh(self.conn)

    def short_ids(self, ids: list[str], minimum: int) -> dict[str, str]:
        # Only an id's neighbours in sorted order can share a longer prefix with it.
        short = {}
        for sid in ids:
            neighbours = [
                row[0]
                for sql in (
                    "SELECT max(id) FROM sessions WHERE id < ?",
                    "SELECT min(id) FROM sessions WHERE id > ?",
                )
                for row in self.conn.execute(sql, (sid,))
                if row[0]
            ]
            need = max([minimum, *(len(os.path.commonprefix([sid, n])) + 1 for n in neighbours)])
            short[sid] = sid[:need]
        return short

    def _refresh(self, conn: sqlite3.Connection) -> None:
        layout = self.layout
        # Our saves and attaches all rename files into these folders, which changes their mtimes;
        # so settled, unchanged mtimes mean nothing was added, removed or replaced since the last
        # scan. (rows() stats the rows on screen again: that catches rewrites in place.)
        row = conn.execute("SELECT value FROM state WHERE key = 'dirs'").fetchone()
        unchanged, dir_state = cachedb.folders_unchanged(
            row[0] if row else None, (layout.memory_dir, layout.meta_dir, layout.db_dir)
        )
        if unchanged:
            return
        known = {
            r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, mem_mtime, mem_size FROM sessions")
        }
        meta_mtimes = {name: st.st_mtime_ns for name, st in scan_stats(layout.meta_dir, ".json")}
        known_meta = dict(conn.execute("SELECT id, meta_mtime FROM sessions"))
        fresh: list[tuple[Any, ...]] = []
        seen: set[str] = set()
        for sid, st in scan_stats(layout.memory_dir, ".json"):
            if not UUID_RE.fullmatch(sid):
                continue
            seen.add(sid)
            if known.get(sid) == (st.st_mtime_ns, st.st_size) and known_meta.get(
                sid
            ) == meta_mtimes.get(sid):
                continue
            fresh.append(_index_row(layout, sid, st, meta_mtimes.get(sid)))
        gone = [(sid,) for sid in known if sid not in seen]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("DELETE FROM sessions WHERE id = ?", gone)
            conn.executemany(
                f"INSERT OR REPLACE INTO sessions"
                f" ({self._COLUMNS}, mem_mtime, mem_size, meta_mtime)"
                f" VALUES ({', '.join('?' * 13)})",
                fresh,
            )
            _refresh_db_flags(conn, layout)
            conn.execute("DELETE FROM state WHERE key = 'json'")
            conn.execute("INSERT OR REPLACE INTO state VALUES ('dirs', ?)", (dir_state,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def rows(self, limit: int | None) -> list[SessionInfo]:
        sql = f"SELECT {self._COLUMNS} FROM sessions ORDER BY updated_ns DESC, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = [_info(r) for r in self.conn.execute(sql)]
        if limit is not None and limit <= _RESTAT_LIMIT:
            self._restat(rows)
        return rows

    def rows_for(self, ids: list[str]) -> list[SessionInfo]:
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT {self._COLUMNS} FROM sessions WHERE id IN ({marks})"
        rows = [_info(r) for r in self.conn.execute(sql, ids)]
        self._restat(rows)
        return rows

    def _restat(self, rows: list[SessionInfo]) -> None:
        # Another tool may rewrite a file in place, which leaves the folder's mtime alone;
        # a stat of each row on screen catches that (too slow for 10,000 rows of --json).
        moved = False
        for i, info in enumerate(rows):
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(self.layout.memory_dir, info.id + ".json"))
                if st.st_mtime_ns != info.updated_ns:
                    rows[i] = build_info(self.layout, info.id, st)
                    moved = True
        if moved:  # a rewritten session is newer now; same order as the index's ORDER BY
            rows.sort(key=lambda info: (-info.updated_ns, info.id))

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM sessions").fetchone()[0]

    def state(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str | bytes) -> None:
        with contextlib.suppress(sqlite3.Error):  # a read-only index just stays uncached
            self.conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(f"""
        DROP TABLE IF EXISTS sessions; DROP TABLE IF EXISTS state;
        CREATE TABLE sessions (id TEXT PRIMARY KEY, title TEXT, messages INTEGER,
            updated_ns INTEGER, model TEXT, has_db INTEGER, damaged TEXT,
            input_tokens INTEGER, output_tokens INTEGER, tokens_estimated INTEGER,
            mem_mtime INTEGER, mem_size INTEGER, meta_mtime INTEGER);
        CREATE INDEX sessions_updated ON sessions (updated_ns DESC, id);
        CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT);
        PRAGMA user_version = {Listing.VERSION};
    """)


def _index_row(layout: Layout, sid: str, st: os.stat_result, meta_mtime: int | None) -> tuple:
    info = build_info(layout, sid, st)
    return (
        info.id,
        info.title,
        info.messages,
        info.updated_ns,
        info.model,
        int(info.has_db),
        info.damaged,
        info.input_tokens,
        info.output_tokens,
        int(info.tokens_estimated),
        st.st_mtime_ns,
        st.st_size,
        meta_mtime,
    )


def _info(row: tuple[Any, ...]) -> SessionInfo:
    return SessionInfo(*row[:5], bool(row[5]), row[6], row[7], row[8], bool(row[9]))


def _refresh_db_flags(conn: sqlite3.Connection, layout: Layout) -> None:
    attached = [
        (e.name[:-3],) for e in scandir(layout.db_dir) if e.name.endswith(".db") and _size(e) > 0
    ]
    conn.execute("UPDATE sessions SET has_db = 0")
    conn.executemany("UPDATE sessions SET has_db = 1 WHERE id = ?", attached)


def _size(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat().st_size
    except OSError:
        return 0


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
