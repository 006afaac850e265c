"""Full-text search over every session's messages, kept in ``search.sqlite`` (a rebuildable cache).

The index holds an FTS5 table of message texts plus, per session, the size and mtime its memory
file had when it was indexed. ``Store.append`` calls :func:`index_appended` so that chatcli's own
saves are searchable at once; :func:`search` first stats every memory file and re-reads those
whose stat moved (written by anything else, renamed in or rewritten in place); :func:`rebuild`
starts over (``doctor --fix``).

A message's rowid is its session's number times 2**32 plus its position in the session, so each
session is one rowid range, and "does this session match, and where last" is one seek in the
full-text index. Hits come most recently updated session first, as ``list`` orders them: sessions
are probed in that order while the matching ones are also walked by rowid, and whichever finishes
first gives the answer, so a word found in all 200,000 messages costs about what a rare one does.

Only the standard library and the rest of chatcli.store: no LangChain, so searching starts as fast
as ``list``. This module takes the store as :class:`Indexed` (paths and listing rows), so it never
imports sessions.py, which calls :func:`index_appended` after each save.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import re
import sqlite3
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..errors import ChatcliError, StorageError
from ..text import replace_surrogates
from . import cachedb
from .files import read_regular, scan_stats
from .layout import MEMORY_LIMIT, MEMORY_NAME_RE, SEARCH_FILE
from .listing import SessionInfo, iso_from_ns
from .messages import message_text, parse_messages

HIT_START, HIT_END = "\x02", "\x03"  # around matched words in Hit.snippet; removed from bodies
SNIPPET_TOKENS = 16
_VERSION = 4
_SAVE_TIMEOUT = 0.1  # a save never waits longer than this for the index; search catches up later
_NOTIFY_AT = 200  # tell the user when a catch-up has this many sessions to (re)index
_POS_BITS = 32  # rowid = session number << _POS_BITS | position of the message in the session
_TOP = (1 << 63) - 1  # above every rowid

# every table any version of search.sqlite had, FTS5's own included
_FTS5_SHADOWS = ("data", "idx", "content", "docsize", "config")
TABLES = ("files", "state", "fts", "msg") + tuple(
    f"{t}_{part}" for t in ("fts", "msg") for part in _FTS5_SHADOWS
)
_STRIP_MARKERS = str.maketrans({HIT_START: " ", HIT_END: " "})
_WORD_RE = re.compile(r"\w", re.UNICODE)


class Indexed(Protocol):
    """What search needs of a store (chatcli.store.Store is one): paths and listing rows."""

    root: Path
    memory_dir: Path

    def memory_path(self, sid: str) -> Path: ...

    def infos(self, ids: list[str]) -> dict[str, SessionInfo]: ...


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
    store: Indexed, text: str, *, limit: int = 20, notify: Callable[[int], None] | None = None
) -> list[Hit]:
    """Sessions whose messages contain every word of ``text``, most recently updated first, each
    shown with its newest matching message.

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
        return _query(conn, store, expression, limit)
    finally:
        conn.close()


def rebuild(store: Indexed) -> tuple[int, int]:
    """Delete search.sqlite and index every session again; returns (sessions, messages).

    Raises StorageError if the old index cannot be removed."""
    _remove(store)
    conn = _connect(store)
    try:
        _catch_up(conn, store, None)
        sessions, messages = conn.execute("SELECT count(*), sum(count) FROM files").fetchone()
        return sessions, messages or 0
    finally:
        conn.close()


def index_appended(
    store: Indexed, sid: str, *, old_size: int, old_count: int, new: list[dict[str, Any]]
) -> bool:
    """Index messages just appended to a session (called by ``Store.append`` under its lock).

    Only when the index holds exactly the file as it was before the append (its size and message
    count match); otherwise, or when the index is busy or absent, nothing is done and the next
    search re-reads the file. Returns whether the messages were indexed.
    """
    path = store.root / SEARCH_FILE
    if not path.exists():  # nobody has searched yet: the first search builds it all
        return False
    if cachedb.foreign(path, TABLES) is not None:  # not ours: the next search sets it aside
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
    # SQLite takes only valid UTF-8: a lone surrogate (piped invalid UTF-8, kept exactly in memory)
    # would fail every search, not just this session's
    return replace_surrogates("\n".join(p for p in parts if p).translate(_STRIP_MARKERS))


# ---------------------------------------------------------------------------------------------
# The index file


def _connect(store: Indexed) -> sqlite3.Connection:
    path = store.root / SEARCH_FILE
    if not store.memory_dir.is_dir():
        return _in_memory()
    for attempt in range(2):
        try:
            return cachedb.connect(
                path,
                version=_VERSION,
                create_schema=_create_schema,
                timeout=30,
                # WAL: a search reading never blocks a save's hook; a commit lost in a crash is
                # harmless, since the stats recorded with it are lost too and the file is re-read.
                pragmas=("journal_mode = WAL", "synchronous = NORMAL"),
                probe="SELECT count(*) FROM files",
                tables=TABLES,
                note=getattr(store, "note", None),
            )
        except (sqlite3.DatabaseError, OSError):
            # Damaged or unwritable: it is only a cache, so start it again, or work in memory.
            if attempt == 0:
                try:
                    _remove(store)
                except StorageError:  # read-only storage: `list` works there, and so do we
                    break
    return _in_memory()


def _in_memory() -> sqlite3.Connection:
    return cachedb.in_memory(_create_schema)


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(f"""
        DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS fts; DROP TABLE IF EXISTS state;
        DROP TABLE IF EXISTS msg;  -- version 2's
        CREATE TABLE files (num INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
            mtime INTEGER, size INTEGER, count INTEGER);
        CREATE TABLE state (key TEXT PRIMARY KEY, value);
        CREATE INDEX files_mtime ON files (mtime DESC, id);
        -- remove_diacritics: "cafe" finds "café"
        CREATE VIRTUAL TABLE fts USING fts5(body, role UNINDEXED,
            tokenize = 'unicode61 remove_diacritics 2');
        PRAGMA user_version = {_VERSION};
    """)


def _remove(store: Indexed) -> None:
    try:
        cachedb.remove(store.root / SEARCH_FILE, TABLES, getattr(store, "note", None))
    except OSError as e:
        raise StorageError(
            f"cannot remove the search index: {e.strerror}", path=store.root / SEARCH_FILE
        ) from e


# ---------------------------------------------------------------------------------------------
# Catching up and querying


def _catch_up(
    conn: sqlite3.Connection, store: Indexed, notify: Callable[[int], None] | None
) -> None:
    """Re-index the sessions whose memory file changed since it was indexed; drop vanished ones.

    Only files whose size or mtime moved are read.
    """
    # Warm searches of 10,000 sessions must stay within 2x a bare start, and 10,000 stats alone
    # cost ~20 ms: while the folder's (settled) mtime is unchanged, nothing was added, removed or
    # replaced by a save. A file another tool rewrote in place is caught up when a hit shows it,
    # at the folder's next change, or by `chatcli doctor --fix`.
    recorded = conn.execute("SELECT value FROM state WHERE key = 'folders'").fetchone()
    unchanged, stamp = cachedb.folders_unchanged(
        recorded[0] if recorded else None, (store.memory_dir,)
    )
    if unchanged:
        return
    _sync(conn, store, notify)
    if stamp is not None:
        with contextlib.suppress(sqlite3.Error):  # busy or read-only: scan again next time
            conn.execute("INSERT OR REPLACE INTO state VALUES ('folders', ?)", (stamp,))


def _sync(conn: sqlite3.Connection, store: Indexed, notify: Callable[[int], None] | None) -> None:
    """Bring the index in line with every memory file's stat."""
    # (the full name check comes below, only for the files that changed)
    listing = [
        (sid, st.st_mtime_ns, st.st_size) for sid, st in scan_stats(store.memory_dir, ".json")
    ]
    # The usual case, nothing changed, costs one checksum instead of comparing 10,000 rows: the
    # checksum of the listing the index was last brought in line with is kept with it. (A
    # collision, 1 in 4 billion, would hide the changes until the next change.)
    digest = zlib.crc32(marshal.dumps(listing, 2))
    row = conn.execute("SELECT value FROM state WHERE key = 'listing'").fetchone()
    if row is not None and row[0] == digest:
        return
    current = set(listing)
    indexed = set(conn.execute("SELECT id, mtime, size FROM files"))
    changed = {c for c in current - indexed if MEMORY_NAME_RE.fullmatch(c[0] + ".json")}
    gone = {sid for sid, _, _ in indexed - current} - {sid for sid, _, _ in changed}
    if not changed and not gone:  # saves indexed themselves: only the digest is behind
        with contextlib.suppress(sqlite3.Error):  # busy or read-only: compare again next time
            conn.execute("INSERT OR REPLACE INTO state VALUES ('listing', ?)", (digest,))
        return
    if notify and len(changed) >= _NOTIFY_AT:
        notify(len(changed))
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sid in gone:
            for (num,) in conn.execute("SELECT num FROM files WHERE id = ?", (sid,)).fetchall():
                _delete_rows(conn, num)
                conn.execute("DELETE FROM files WHERE num = ?", (num,))
        for sid, mtime, size in changed:
            row = conn.execute("SELECT num FROM files WHERE id = ?", (sid,)).fetchone()
            if row:
                num = row[0]
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
        conn.execute("INSERT OR REPLACE INTO state VALUES ('listing', ?)", (digest,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _read_messages(store: Indexed, sid: str) -> list[dict[str, Any]]:
    try:
        return parse_messages(read_regular(store.memory_path(sid), limit=MEMORY_LIMIT))
    except (OSError, ValueError):  # damaged, vanished, a FIFO: nothing to find in it for now
        return []


def _span(num: int) -> tuple[int, int]:
    """The rowids of session ``num``'s messages: lo <= rowid < hi."""
    return num << _POS_BITS, (num + 1) << _POS_BITS


def _delete_rows(conn: sqlite3.Connection, num: int) -> None:
    conn.execute("DELETE FROM fts WHERE rowid >= ? AND rowid < ?", _span(num))


def _insert(conn: sqlite3.Connection, num: int, start: int, messages: list[dict[str, Any]]) -> None:
    first = _span(num)[0] + start
    conn.executemany(
        "INSERT INTO fts (rowid, body, role) VALUES (?, ?, ?)",
        [
            (
                first + i,
                searchable_text(m),
                str(m.get("type", "")).removesuffix("MessageChunk").lower(),
            )
            for i, m in enumerate(messages)
        ],
    )


def _ranked(conn: sqlite3.Connection, expression: str, limit: int) -> list[tuple[str, int]]:
    """(id, rowid of its newest matching message) of the ``limit`` most recently updated
    sessions that match.

    Sessions are taken newest first and each is probed (one seek); alongside, a walk down the
    rowids finds the matching sessions one seek each, and sessions it has passed need no probe.
    For a common word the probes find ``limit`` hits at once; for a rare one the walk soon runs
    out, and then ``found`` holds every matching session.
    """

    def newest(lo: int, hi: int) -> int | None:
        row = conn.execute(
            "SELECT rowid FROM fts WHERE fts MATCH ? AND rowid >= ? AND rowid < ?"
            " ORDER BY rowid DESC LIMIT 1",
            (expression, lo, hi),
        ).fetchone()
        return row[0] if row else None

    found: dict[int, int] = {}  # session number -> its newest matching rowid
    walked = _TOP  # every matching session with rowids at or above this one is in found
    hits: list[tuple[str, int]] = []
    for num, sid in conn.execute("SELECT num, id FROM files ORDER BY mtime DESC, id"):
        if len(hits) >= limit:
            return hits
        if not walked:
            break
        lo, hi = _span(num)
        if num not in found and lo < walked:  # not known yet whether it matches
            if (rowid := newest(lo, hi)) is not None:
                found[num] = rowid
            rowid = newest(0, walked)  # one step of the walk
            if rowid is None:
                walked = 0
            else:
                found.setdefault(rowid >> _POS_BITS, rowid)
                walked = _span(rowid >> _POS_BITS)[0]
        if num in found:
            hits.append((sid, found[num]))
    else:
        return hits
    # The walk ran out first: found holds every matching session, however old.
    rows = conn.execute(
        "SELECT num, id FROM files WHERE num IN (SELECT value FROM json_each(?))"
        " ORDER BY mtime DESC, id LIMIT ?",
        (json.dumps(list(found)), limit),
    )
    return [(sid, found[num]) for num, sid in rows]


def _query(conn: sqlite3.Connection, store: Indexed, expression: str, limit: int) -> list[Hit]:
    try:
        ranked = _ranked(conn, expression, limit)
    except sqlite3.OperationalError as e:
        raise ChatcliError(f"cannot search for {expression!r}: {e}") from e
    # Titles and dates come from the listing index, the one place that decides them; a session
    # moved to the trash since the catch-up is simply not there any more.
    sessions = store.infos([sid for sid, _ in ranked])
    hits = []
    for sid, rowid in ranked:
        if (info := sessions.get(sid)) is None:
            continue
        role, snippet = conn.execute(
            "SELECT role, snippet(fts, 0, ?, ?, '…', ?) FROM fts WHERE fts MATCH ? AND rowid = ?",
            (HIT_START, HIT_END, SNIPPET_TOKENS, expression, rowid),
        ).fetchone()
        position = rowid - _span(rowid >> _POS_BITS)[0]
        hits.append(
            Hit(info.id, info.title, info.updated_ns, role, position, " ".join(snippet.split()))
        )
    return hits
