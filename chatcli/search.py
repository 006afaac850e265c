"""Full-text search over every session's messages, kept in ``search.sqlite`` (a rebuildable cache).

The index holds an FTS5 table of message texts plus, per session, the size and mtime its memory
file had when it was indexed. ``Store.append`` calls :func:`index_appended` so that chatcli's own
saves are searchable at once; :func:`search` first catches up with files that anything else
wrote (their stat differs from the recorded one); :func:`rebuild` starts over (``doctor --fix``).

Rowids grow as messages are indexed (a cold build goes through sessions oldest first), so walking
matches by descending rowid yields the newest matching messages first without sorting every match:
a word found in all 200,000 messages costs about what a rare one does.

Only the standard library and chatcli.store: no LangChain, so searching starts as fast as ``list``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ChatcliError, StorageError
from .store import Store, message_text

SEARCH_FILE = "search.sqlite"
HIT_START, HIT_END = "\x02", "\x03"  # around matched words in Hit.snippet; removed from bodies
SNIPPET_TOKENS = 16
_VERSION = 2
_SAVE_TIMEOUT = 0.1  # a save never waits longer than this for the index; search catches up later
_NOTIFY_AT = 200  # tell the user when a catch-up has this many sessions to (re)index
_SETTLED_NS = 2_000_000_000  # folder mtimes younger than this are not trusted (coarse clocks)

_MEMORY_NAME_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.json")
_STRIP_MARKERS = str.maketrans({HIT_START: " ", HIT_END: " "})
_WORD_RE = re.compile(r"\w", re.UNICODE)


class Hit(NamedTuple):
    """One session that matched, shown with its newest matching message."""

    id: str
    title: str
    updated_ns: int
    role: str  # the matching message's type: human, ai, tool, system
    position: int  # the matching message's index in the session
    snippet: str  # a one-line excerpt, HIT_START/HIT_END around each matched word

    def segments(self) -> list[tuple[str, bool]]:
        """The snippet as (text, matched) pieces, for highlighting."""
        pieces: list[tuple[str, bool]] = []
        for i, part in enumerate(self.snippet.split(HIT_START)):
            inside, _, after = part.partition(HIT_END) if i else ("", "", part)
            pieces += [(t, m) for t, m in ((inside, True), (after, False)) if t]
        return pieces

    @property
    def plain_snippet(self) -> str:
        return self.snippet.replace(HIT_START, "").replace(HIT_END, "")

    def as_json(self) -> dict[str, Any]:
        """The hit as ``chatcli search --json`` prints it."""
        from .store import iso_from_ns

        return {
            "id": self.id,
            "title": self.title,
            "updated": iso_from_ns(self.updated_ns),
            "role": self.role,
            "message": self.position,
            "snippet": self.plain_snippet,
        }


# ---------------------------------------------------------------------------------------------
# Public entry points


def search(
    store: Store, text: str, *, limit: int = 20, notify: Callable[[int], None] | None = None
) -> list[Hit]:
    """Sessions whose messages contain every word of ``text``, newest matching message first.

    ``notify(n)`` is called before a long catch-up (n sessions to index, e.g. the first search).
    """
    expression = match_expression(text)
    if not expression:
        raise ChatcliError("give at least one word to search for")
    conn = _connect(store)
    try:
        try:
            _catch_up(conn, store, notify)
        except sqlite3.DatabaseError:  # damaged meanwhile, read-only, or busy for 30 s
            conn.close()
            conn = _in_memory()
            _catch_up(conn, store, notify)
        hits = _query(conn, store, expression, limit)
        if hits and _recheck(conn, store, [h.id for h in hits]):
            hits = _query(conn, store, expression, limit)
        return hits
    finally:
        conn.close()


def rebuild(store: Store) -> tuple[int, int]:
    """Delete search.sqlite and index every session again; returns (sessions, messages)."""
    _remove(store)
    conn = _connect(store)
    try:
        _catch_up(conn, store, None)
        return (
            conn.execute("SELECT count(*) FROM files").fetchone()[0],
            conn.execute("SELECT count(*) FROM msg").fetchone()[0],
        )
    finally:
        conn.close()


def index_appended(
    store: Store, sid: str, *, old_size: int, old_count: int, new: list[dict[str, Any]]
) -> bool:
    """Index messages just appended to a session (called by ``Store.append`` under its lock).

    Only when the index holds exactly the file as it was before the append (its size and message
    count match); otherwise, or when the index is busy or absent, nothing is done and the next
    search re-reads the file. Returns whether the messages were indexed.
    """
    path = store.root / SEARCH_FILE
    if not path.exists():  # nobody has searched yet: the first search builds it all
        return False
    conn = sqlite3.connect(path, timeout=_SAVE_TIMEOUT, isolation_level=None)
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
            return False
        conn.execute("PRAGMA synchronous = NORMAL")  # no fsync per save: see _connect
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT num, size, count FROM files WHERE id = ?", (sid,)).fetchone()
            if row is None and old_count == 0:  # a new session
                num = conn.execute("INSERT INTO files (id) VALUES (?)", (sid,)).lastrowid
            elif row is not None and row[1:] == (old_size, old_count):
                num = row[0]
            else:
                conn.execute("ROLLBACK")
                return False
            st = store.memory_path(sid).stat()
            _insert(conn, num, old_count, new)
            conn.execute(
                "UPDATE files SET mtime = ?, size = ?, count = ? WHERE num = ?",
                (st.st_mtime_ns, st.st_size, old_count + len(new), num),
            )
            conn.execute("COMMIT")
            return True
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def match_expression(text: str) -> str:
    """An FTS5 query matching every word of ``text``; FTS5 syntax in it is taken literally.

    A word ending in ``*`` matches as a prefix (``data*`` finds "database").
    """
    terms = []
    for word in text.split():
        prefix = word.endswith("*")
        word = word.rstrip("*")
        if _WORD_RE.search(word):
            terms.append('"' + word.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(terms)


def searchable_text(message: dict[str, Any]) -> str:
    """What is indexed of a message: its text, and the names and arguments of its tool calls."""
    parts = [message_text(message)]
    data = message.get("data")
    calls = data.get("tool_calls") if isinstance(data, dict) else None
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict):
            args = call.get("args")
            parts.append(str(call.get("name") or ""))
            parts += [str(v) for v in args.values()] if isinstance(args, dict) else [str(args)]
    return "\n".join(p for p in parts if p).translate(_STRIP_MARKERS)


# ---------------------------------------------------------------------------------------------
# The index file


def _connect(store: Store) -> sqlite3.Connection:
    path = store.root / SEARCH_FILE
    if not store.memory_dir.is_dir():
        return _in_memory()
    for attempt in range(2):
        try:
            if not path.exists():  # sqlite3 would create it with the umask's mode
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            # WAL: a search reading never blocks a save's hook; a commit lost in a crash is
            # harmless, since the stats recorded with it are lost too and the file is re-read.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
                _create_schema(conn)
            conn.execute("SELECT count(*) FROM files").fetchone()
            return conn
        except (sqlite3.DatabaseError, OSError):
            # Damaged or unwritable: it is only a cache, so start it again, or work in memory.
            with contextlib.suppress(UnboundLocalError, sqlite3.Error):
                conn.close()
            if attempt == 0:
                _remove(store)
    return _in_memory()


def _in_memory() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    _create_schema(conn)
    return conn


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(f"""
        DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS msg; DROP TABLE IF EXISTS fts;
        DROP TABLE IF EXISTS state;
        CREATE TABLE files (num INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
            mtime INTEGER, size INTEGER, count INTEGER);
        CREATE TABLE msg (rowid INTEGER PRIMARY KEY, num INTEGER NOT NULL, pos INTEGER NOT NULL,
            role TEXT);
        CREATE INDEX msg_num ON msg (num);
        -- remove_diacritics: "cafe" finds "café"
        CREATE VIRTUAL TABLE fts USING fts5(body, tokenize = 'unicode61 remove_diacritics 2');
        CREATE TABLE state (key TEXT PRIMARY KEY, value);
        PRAGMA user_version = {_VERSION};
    """)


def _remove(store: Store) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            (store.root / (SEARCH_FILE + suffix)).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(
                f"cannot remove the search index: {e.strerror}", path=store.root / SEARCH_FILE
            ) from e


# ---------------------------------------------------------------------------------------------
# Catching up and querying


def _catch_up(conn: sqlite3.Connection, store: Store, notify: Callable[[int], None] | None) -> None:
    """Re-index the sessions whose memory file changed since it was indexed; drop vanished ones.

    As the listing index does: while memory/'s mtime is the one seen at the last scan, nothing
    was added, removed or replaced there, and the scan is skipped. Otherwise one stat per file;
    only files whose size or mtime moved are read. (Files rewritten in place by other tools
    leave the folder's mtime alone: :func:`search` re-checks the sessions it is about to show.)
    """
    folder = _mtime_ns(store.memory_dir)
    row = conn.execute("SELECT value FROM state WHERE key = 'folder'").fetchone()
    if folder is not None and row is not None and row[0] == folder:
        return
    known = {
        r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT id, num, mtime, size FROM files")
    }
    changed: list[tuple[int, str, int, int]] = []
    seen: set[str] = set()
    for entry in _entries(store):
        if not _MEMORY_NAME_RE.fullmatch(entry.name):
            continue
        sid = entry.name[:-5]
        try:
            st = entry.stat()
        except OSError:
            continue
        seen.add(sid)
        old = known.get(sid)
        if old is None or old[1:] != (st.st_mtime_ns, st.st_size):
            changed.append((st.st_mtime_ns, sid, st.st_size, old[0] if old else 0))
    gone = [num for sid, (num, _, _) in known.items() if sid not in seen]
    if notify and len(changed) >= _NOTIFY_AT:
        notify(len(changed))
    # A folder touched within the timestamp granularity may change again without its mtime
    # moving: trust only an older one.
    settled = folder is not None and time.time_ns() - folder > _SETTLED_NS
    _reindex(conn, store, changed, gone, folder=folder if settled else None)


def _recheck(conn: sqlite3.Connection, store: Store, ids: list[str]) -> bool:
    """Re-index those of ``ids`` whose file changed (in place) since; returns whether any did."""
    marks = ", ".join("?" * len(ids))
    changed, gone = [], []
    for sid, num, mtime, size in conn.execute(
        f"SELECT id, num, mtime, size FROM files WHERE id IN ({marks})", ids
    ):
        try:
            st = store.memory_path(sid).stat()
        except OSError:
            gone.append(num)
            continue
        if (st.st_mtime_ns, st.st_size) != (mtime, size):
            changed.append((st.st_mtime_ns, sid, st.st_size, num))
    if changed or gone:
        _reindex(conn, store, changed, gone)
    return bool(changed or gone)


def _reindex(
    conn: sqlite3.Connection,
    store: Store,
    changed: list[tuple[int, str, int, int]],
    gone: list[int],
    *,
    folder: int | None = None,
) -> None:
    """Drop the sessions numbered ``gone``; index each changed (mtime, id, size, num or 0)."""
    changed.sort()  # oldest first, so that newer sessions get the higher rowids
    conn.execute("BEGIN IMMEDIATE")
    try:
        for num in gone:
            _delete_rows(conn, num)
            conn.execute("DELETE FROM files WHERE num = ?", (num,))
        for mtime, sid, size, num in changed:
            if num:
                _delete_rows(conn, num)
            else:
                num = conn.execute("INSERT INTO files (id) VALUES (?)", (sid,)).lastrowid
            messages = _read_messages(store, sid)
            _insert(conn, num, 0, messages)
            # The stat taken before reading: if the file moved on meanwhile, the next search
            # sees a different stat and reads it again.
            conn.execute(
                "UPDATE files SET mtime = ?, size = ?, count = ? WHERE num = ?",
                (mtime, size, len(messages), num),
            )
        conn.execute("INSERT OR REPLACE INTO state VALUES ('folder', ?)", (folder,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _entries(store: Store) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(store.memory_dir))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StorageError(f"cannot read sessions: {e.strerror}", path=store.memory_dir) from e


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _read_messages(store: Store, sid: str) -> list[dict[str, Any]]:
    from .store import parse_messages

    try:
        return parse_messages(store.memory_path(sid).read_bytes())
    except (OSError, ValueError):  # damaged or vanished: nothing to find in it until it changes
        return []


def _delete_rows(conn: sqlite3.Connection, num: int) -> None:
    conn.execute("DELETE FROM fts WHERE rowid IN (SELECT rowid FROM msg WHERE num = ?)", (num,))
    conn.execute("DELETE FROM msg WHERE num = ?", (num,))


def _insert(conn: sqlite3.Connection, num: int, start: int, messages: list[dict[str, Any]]) -> None:
    first = conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM msg").fetchone()[0]
    rows = [
        (
            first + i,
            start + i,
            str(m.get("type", "")).removesuffix("MessageChunk").lower(),
            searchable_text(m),
        )
        for i, m in enumerate(messages)
    ]
    conn.executemany(
        "INSERT INTO msg (rowid, num, pos, role) VALUES (?, ?, ?, ?)",
        [(r, num, pos, role) for r, pos, role, _ in rows],
    )
    conn.executemany(
        "INSERT INTO fts (rowid, body) VALUES (?, ?)", [(r, body) for r, _, _, body in rows]
    )


def _query(conn: sqlite3.Connection, store: Store, expression: str, limit: int) -> list[Hit]:
    best: dict[str, tuple[int, int, str]] = {}  # session -> newest matching (rowid, pos, role)
    try:
        cursor = conn.execute(
            "SELECT fts.rowid, files.id, msg.pos, msg.role FROM fts"
            " JOIN msg ON msg.rowid = fts.rowid JOIN files ON files.num = msg.num"
            " WHERE fts MATCH ? ORDER BY fts.rowid DESC",
            (expression,),
        )
        for rowid, sid, pos, role in cursor:
            if sid not in best:
                best[sid] = (rowid, pos, role)
                if len(best) >= limit:
                    break
        cursor.close()
    except sqlite3.OperationalError as e:
        raise ChatcliError(f"cannot search for {expression!r}: {e}") from e
    # Titles and dates come from the listing index, the one place that decides them; a session
    # moved to the trash since the catch-up is simply not there any more.
    sessions = store.infos(list(best))
    hits = []
    for sid, (rowid, pos, role) in best.items():
        if (info := sessions.get(sid)) is None:
            continue
        snippet = conn.execute(
            "SELECT snippet(fts, 0, ?, ?, '…', ?) FROM fts WHERE fts MATCH ? AND rowid = ?",
            (HIT_START, HIT_END, SNIPPET_TOKENS, expression, rowid),
        ).fetchone()[0]
        hits.append(Hit(info.id, info.title, info.updated_ns, role, pos, " ".join(snippet.split())))
    return hits
