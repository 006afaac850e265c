"""Sessions on disk: ids, lazy loading, atomic append-only saves, locking, and the listing index.

Layout under the storage root (storage/README.md is the full contract):

    memory/<uuid>.json   JSON array of LangChain ``message_to_dict`` dicts: the user's data
    db/<uuid>.db         the session's attached SQLite database (zero bytes: none attached)
    meta/<uuid>.json     title, model, system prompt, created: chatcli's own, rebuildable
    index.sqlite         the listing index: a cache of memory/ + meta/, rebuilt when stale
    search.sqlite        the full-text search index (chatcli/search.py): a cache too
    locks/<uuid>.lock    per-session locks around read-modify-write
    trash/<uuid>/        a removed session's memory, meta and db files, until restored

Messages stay plain dicts here; turning them into LangChain objects is the model layer's job, which
keeps ``chatcli list`` free of LangChain imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .errors import AmbiguousSession, DamagedSession, SessionNotFound, StorageError

MEMORY_DIR, DB_DIR, META_DIR, LOCK_DIR, TRASH_DIR = "memory", "db", "meta", "locks", "trash"
INDEX_FILE = "index.sqlite"
LOCK_TIMEOUT = 30.0
TITLE_WIDTH = 60
_RESTAT_LIMIT = 200  # listings up to this many rows stat each row's file

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PREFIX_RE = re.compile(r"[0-9a-f-]{1,36}")
_MEMORY_NAME_RE = re.compile(_UUID_RE.pattern + r"\.json")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_BOM = "\ufeff".encode()

# Every "type" that langchain_core.messages.messages_from_dict can load.
MESSAGE_TYPES = frozenset(
    {"human", "ai", "system", "chat", "function", "tool", "remove"}
    | {f"{k}MessageChunk" for k in ("AI", "Human", "System", "Chat", "Function", "Tool")}
)

# Text fields LangChain refuses to load a message without, beyond "content".
_REQUIRED_TEXT = {
    "tool": ("tool_call_id",),
    "chat": ("role",),
    "function": ("name",),
    "remove": ("id",),
}


# ---------------------------------------------------------------------------------------------
# Message dicts


def validate_messages(data: Any) -> list[dict[str, Any]]:
    """Check that parsed JSON is a list of loadable message dicts; raise ValueError saying why."""
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON array of messages, found {type(data).__name__}")
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise ValueError(f"message {i} is not a {{'type', 'data'}} object")
        kind = item.get("type")
        if kind not in MESSAGE_TYPES:
            raise ValueError(f"message {i} has unknown type {kind!r}")
        fields = item["data"]
        if not isinstance(fields.get("content"), str | list):
            raise ValueError(f"message {i} has no content (text or a list)")
        for name in _REQUIRED_TEXT.get(kind.removesuffix("MessageChunk").lower(), ()):
            if not isinstance(fields.get(name), str):
                raise ValueError(f"message {i} ({kind}) has no {name!r}")
        for name in ("additional_kwargs", "response_metadata"):
            if not isinstance(fields.get(name, {}), dict):
                raise ValueError(f"message {i} has a {name!r} that is not an object")
        calls = fields.get("tool_calls", [])
        if not isinstance(calls, list) or not all(
            isinstance(c, dict)
            and isinstance(c.get("name"), str)
            and isinstance(c.get("args", {}), dict)
            for c in calls
        ):
            raise ValueError(f"message {i} has tool_calls that are not a list of named calls")
    return data


def parse_messages(raw: bytes) -> list[dict[str, Any]]:
    """Parse a memory file's bytes; an empty file is an empty session. Raises ValueError."""
    if not raw.strip():
        return []
    try:
        # UTF-8 only (a BOM is fine): json.loads(bytes) also takes UTF-16 and UTF-32, and an
        # append of UTF-8 bytes to such a file would turn it into garbage.
        data = json.loads(raw.decode("utf-8-sig", "surrogatepass"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not valid JSON: {e}") from e
    except RecursionError as e:
        raise ValueError("not valid JSON: nested too deeply") from e
    return validate_messages(data)


def message_text(message: dict[str, Any]) -> str:
    """The text of a message dict (list contents keep their text parts)."""
    content = message.get("data", {}).get("content", "")
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") if isinstance(p, dict) else p for p in content]
    return " ".join(str(p) for p in parts if p)


def shorten(text: str, width: int = TITLE_WIDTH) -> str:
    text = " ".join(displayable(text).split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def displayable(value: Any) -> str:
    """A string from a file, fit for the listing and the terminal: lone surrogates (from a broken
    terminal or another tool) become U+FFFD, anything that is not a string becomes ""."""
    return _SURROGATE_RE.sub("\ufffd", value) if isinstance(value, str) else ""


def _dump_json(obj: Any, *, indent: int | None = None) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a broken terminal: keep them, escaped
        return json.dumps(obj, indent=indent).encode("ascii")


def appended_bytes(existing: bytes, new: list[dict[str, Any]]) -> bytes:
    """The file with ``new`` appended; every byte before the closing ``]`` is kept as it was."""
    body = existing.rstrip()
    if not body:
        head = b"["
    else:
        if not body.endswith(b"]"):
            raise ValueError("memory file does not end with ']'")
        head = body[:-1].rstrip()
        if head.removeprefix(_BOM).strip() != b"[":  # "[]", " [ ]", BOM "[]": nothing to follow
            head += b","
    items = b",\n".join(_dump_json(m) for m in new)
    return head + b"\n" + items + b"\n]\n"


# ---------------------------------------------------------------------------------------------
# Files


def _ensure_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create folder: {e.strerror}", path=path) from e


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``; a crash at any instant leaves the old or the new file."""
    import tempfile

    try:
        # a fresh, exclusive, 0600 name: never follows a link planted in a shared folder
        fd, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
        )
        tmp = Path(name)
    except OSError as e:
        raise StorageError(f"cannot save: {e.strerror}", path=path) from e
    try:
        try:
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(data)
                f.flush()
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # make the rename itself durable
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"cannot save: {e.strerror}", path=path) from e


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder; its renames need no folder sync
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def iso_from_ns(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ns / 1e9))


# ---------------------------------------------------------------------------------------------
# Sessions


class SessionInfo(NamedTuple):
    """One row of the listing."""

    id: str
    title: str
    messages: int
    updated_ns: int
    model: str
    has_db: bool
    damaged: str | None = None

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
        }


class Session:
    """An opened session: its metadata and its whole history as message dicts."""

    def __init__(self, sid: str, meta: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        self.id = sid
        self.meta = meta
        self.messages = messages

    @property
    def title(self) -> str:
        if self.meta.get("title"):
            return self.meta["title"]
        return _first_human_title(self.messages) or "(untitled)"


def _first_human_title(messages: list[dict[str, Any]]) -> str:
    for m in messages:
        if m.get("type") in ("human", "HumanMessageChunk"):
            return shorten(message_text(m))
    return ""


def _last_model(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        meta = m.get("data", {}).get("response_metadata") or {}
        if isinstance(meta, dict) and isinstance(meta.get("model_name"), str):
            return meta["model_name"]
    return ""


class Store:
    """The storage root. Cheap to create: nothing is read until asked."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()  # paths in messages and --json work from any folder
        self.memory_dir = self.root / MEMORY_DIR
        self.db_dir = self.root / DB_DIR
        self.meta_dir = self.root / META_DIR
        self.lock_dir = self.root / LOCK_DIR
        self.trash_dir = self.root / TRASH_DIR
        self._listing: _Index | None = None

    # -- paths and ids -------------------------------------------------------------------------

    def memory_path(self, sid: str) -> Path:
        return self.memory_dir / f"{_checked(sid)}.json"

    def db_path(self, sid: str) -> Path:
        return self.db_dir / f"{_checked(sid)}.db"

    def meta_path(self, sid: str) -> Path:
        return self.meta_dir / f"{_checked(sid)}.json"

    def ensure(self) -> None:
        """Create the folders (0700) on first use."""
        for d in (self.root, self.memory_dir, self.db_dir, self.meta_dir, self.lock_dir):
            _ensure_dir(d)

    def ids(self) -> list[str]:
        """Every session id: the bootstrap reads only the names in memory/."""
        try:
            names = os.listdir(self.memory_dir)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(f"cannot read sessions: {e.strerror}", path=self.memory_dir) from e
        return [n[:-5] for n in names if _MEMORY_NAME_RE.fullmatch(n)]

    def trashed_ids(self) -> list[str]:
        """The ids of the sessions in the trash."""
        return [e.name for e in _scandir(self.trash_dir) if _UUID_RE.fullmatch(e.name)]

    def resolve(self, ref: str, *, trashed: bool = False) -> str:
        """A full id from a full uuid or a unique prefix; refuses anything that is not one.

        With ``trashed``, among the sessions in the trash instead.
        """
        key = ref.strip().lower()
        if not _PREFIX_RE.fullmatch(key):
            raise SessionNotFound(f"not a session id: {ref!r}")
        ids = self.trashed_ids() if trashed else self.ids()
        matches = [sid for sid in ids if sid.startswith(key)]
        if not matches:
            raise SessionNotFound(f"no {'trashed ' if trashed else ''}session matches {ref!r}")
        if len(matches) > 1 and key not in matches:
            raise AmbiguousSession(
                f"{ref!r} matches {len(matches)} sessions; give more of the id",
                candidates=sorted(matches),
            )
        return key if key in matches else matches[0]

    def latest(self) -> str:
        """The most recently updated session."""
        rows = self.list_sessions(limit=1)
        if not rows:
            raise SessionNotFound("there are no sessions yet; start one with 'chatcli new'")
        return rows[0].id

    # -- lifecycle -------------------------------------------------------------------------------

    def create(
        self, *, title: str | None = None, model: str | None = None, system: str | None = None
    ) -> str:
        """A new empty session on disk; returns its id."""
        import uuid

        self.ensure()
        sid = str(uuid.uuid4())
        meta = {k: v for k, v in (("title", title), ("model", model), ("system", system)) if v}
        meta["created"] = _now_iso()
        with self.lock(sid):  # doctor --fix must not see the metadata as an orphan meanwhile
            atomic_write(self.meta_path(sid), _dump_meta(meta))
            atomic_write(self.memory_path(sid), b"[]\n")
        return sid

    def open(self, sid: str) -> Session:
        """Load a session's history (lazily: only when a session is opened)."""
        return Session(sid, self.read_meta(sid), self.load_messages(sid))

    def load_messages(self, sid: str) -> list[dict[str, Any]]:
        path = self.memory_path(sid)
        try:
            raw = path.read_bytes()
        except FileNotFoundError as e:
            raise SessionNotFound(f"no session {sid}", path=path) from e
        except OSError as e:
            raise StorageError(f"cannot read session: {e.strerror}", path=path) from e
        try:
            return parse_messages(raw)
        except ValueError as e:
            raise DamagedSession(f"session file is damaged, left untouched: {e}", path=path) from e

    def append(self, sid: str, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append messages atomically and return the full history now on disk.

        Under the session lock the file is re-read, so turns another process saved meanwhile are
        kept (merged, append-only) rather than overwritten.
        """
        if not new:
            return self.load_messages(sid)
        path = self.memory_path(sid)
        with self.lock(sid):
            try:
                raw = path.read_bytes()
            except FileNotFoundError as e:
                # Moved to the trash (or away) while open: starting a new file would split the
                # session in two and block its restore.
                raise SessionNotFound(
                    "this session was removed while open (chatcli rm --restore brings it back);"
                    " not saving",
                    path=path,
                ) from e
            except OSError as e:
                raise StorageError(f"cannot read session: {e.strerror}", path=path) from e
            try:
                current = parse_messages(raw)
                data = appended_bytes(raw, new)
            except ValueError as e:
                raise DamagedSession(
                    f"session file is damaged, not saving into it: {e}", path=path
                ) from e
            atomic_write(path, data)
            _index_for_search(self, sid, old_size=len(raw), old_count=len(current), new=new)
        return current + new

    def discard_if_empty(self, sid: str) -> bool:
        """Remove a session that holds no message and no database (one just made and not used)."""
        with self.lock(sid):
            try:
                if parse_messages(self.memory_path(sid).read_bytes()) or self.has_db(sid):
                    return False
            except (OSError, ValueError):
                return False
            for path in (self.memory_path(sid), self.meta_path(sid), self.db_path(sid)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return True

    def trash(self, sid: str) -> Path:
        """Move a session's files to trash/<uuid>/{memory,meta,db}/; returns that folder."""
        dest = self.trash_dir / _checked(sid)
        with self.lock(sid):
            if not self.memory_path(sid).exists():
                raise SessionNotFound(f"no session {sid}", path=self.memory_path(sid))
            if dest.exists():  # trashed before and brought back by hand: keep that copy too
                _move(dest, self.trash_dir / f"{sid}.{time.time_ns()}")
            # memory/ first: once it is gone the session is gone from every listing, and a
            # crash before meta/ and db/ follow leaves only files that restore() puts back.
            for path in self._files(sid):
                _move(path, dest / path.parent.name / path.name)
        return dest

    def restore(self, sid: str) -> None:
        """Bring a trashed session's files back; refused if a session with its id exists again."""
        src = self.trash_dir / _checked(sid)
        with self.lock(sid):
            if self.memory_path(sid).exists():
                raise StorageError(
                    f"a session {sid} exists again; not restoring over it",
                    path=self.memory_path(sid),
                )
            if not (src / MEMORY_DIR / f"{sid}.json").exists():
                raise SessionNotFound(f"no trashed session {sid}", path=src)
            self.ensure()
            for path in reversed(self._files(sid)):  # memory/ last, as in trash()
                _move(src / path.parent.name / path.name, path)
            for folder in (MEMORY_DIR, META_DIR, DB_DIR, ""):
                with contextlib.suppress(OSError):
                    (src / folder).rmdir()

    def _files(self, sid: str) -> list[Path]:
        """Everything that belongs to one session, its memory file first."""
        return [self.memory_path(sid), self.meta_path(sid), self.db_path(sid)]

    def detach_db(self, sid: str) -> Path | None:
        """Remove the session's database copy; returns where the old copy is kept."""
        with self.replacing_db(sid) as kept:
            with contextlib.suppress(FileNotFoundError):
                self.db_path(sid).unlink()
        return kept

    @contextlib.contextmanager
    def replacing_db(self, sid: str) -> Iterator[Path | None]:
        """Around replacing or removing a session's database: the old copy stays in
        trash/replaced/ (a hard link, so nothing is copied), and goes again if the change fails.
        The database may be the only copy of the user's data."""
        kept = None
        if self.has_db(sid):
            kept = self.trash_dir / "replaced" / f"{sid}.{time.time_ns()}.db"
            _ensure_dir(kept.parent)
            try:
                os.link(self.db_path(sid), kept)
            except OSError:  # no hard links here (another file system): copy instead
                import shutil

                try:
                    shutil.copy2(self.db_path(sid), kept)
                except OSError as e:
                    raise StorageError(
                        f"cannot keep the old database: {e.strerror}", path=kept
                    ) from e
        try:
            yield kept
        except BaseException:
            if kept is not None:
                kept.unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def lock(self, sid: str) -> Iterator[None]:
        """Hold the session's cross-process lock (released by the OS if the process dies)."""
        from filelock import FileLock, Timeout

        _ensure_dir(self.lock_dir)
        lock = FileLock(self.lock_dir / f"{_checked(sid)}.lock", timeout=LOCK_TIMEOUT, mode=0o600)
        try:
            lock.acquire()
        except Timeout as e:
            raise StorageError(
                "session is locked by another chatcli process", path=lock.lock_file
            ) from e
        except OSError as e:  # a read-only storage folder, another user's lock file
            raise StorageError(f"cannot lock session: {e.strerror}", path=lock.lock_file) from e
        try:
            yield
        finally:
            lock.release()

    # -- metadata --------------------------------------------------------------------------------

    def read_meta(self, sid: str) -> dict[str, Any]:
        """chatcli's own metadata; sessions written by other tools simply have none."""
        try:
            meta = json.loads(self.meta_path(sid).read_bytes())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def update_meta(self, sid: str, **fields: Any) -> dict[str, Any]:
        """Set (or, with None, remove) metadata fields."""
        self.ensure()
        with self.lock(sid):
            meta = self.read_meta(sid)
            for key, value in fields.items():
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
            atomic_write(self.meta_path(sid), _dump_meta(meta))
        return meta

    def has_db(self, sid: str) -> bool:
        """Is a database attached? A zero-byte .db (older tools make one) means no."""
        try:
            return self.db_path(sid).stat().st_size > 0
        except OSError:
            return False

    # -- listing ---------------------------------------------------------------------------------

    def list_sessions(self, *, limit: int | None = None) -> list[SessionInfo]:
        """Sessions, newest first, from the index (refreshed first if the folders changed)."""
        return self._index().rows(limit)

    def infos(self, ids: list[str]) -> dict[str, SessionInfo]:
        """Listing rows of these sessions, by id (ids no longer in memory/ are left out)."""
        return {info.id: info for info in self._index().rows_for(ids)} if ids else {}

    def count(self) -> int:
        return self._index().count()

    def short_ids(self, ids: list[str], minimum: int = 8) -> dict[str, str]:
        """For each id, the shortest prefix (at least ``minimum`` chars) that names it uniquely."""
        return self._index().short_ids(ids, minimum)

    def list_json(self, *, limit: int | None = None) -> bytes:
        """The listing as a UTF-8 JSON array; the full one stays cached in the index until a
        folder changes, so a warm ``list --json`` of 10,000 sessions is one read."""
        index = self._index()
        if limit is None and isinstance(cached := index.state("json"), bytes):
            return cached
        rows = [r.as_json(str(self.db_dir)) for r in index.rows(limit)]
        data = json.dumps(rows, ensure_ascii=False).encode("utf-8", "replace")
        if limit is None:
            index.set_state("json", data)
        return data

    def _index(self) -> _Index:
        """The listing index, refreshed: one connection per Store, checked on every use."""
        if self._listing is not None:
            try:
                self._listing.refresh()
                return self._listing
            except sqlite3.DatabaseError:  # deleted or damaged underneath us: start again
                self._listing = None
        self._listing = _Index(self)
        return self._listing


def _checked(sid: str) -> str:
    # Every path is built from a validated uuid, so no id can name a file outside the root.
    if not _UUID_RE.fullmatch(sid):
        raise SessionNotFound(f"not a session id: {sid!r}")
    return sid


def _move(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest`` (a missing ``src`` is fine: sessions may lack meta or db)."""
    if not os.path.lexists(src):
        return
    _ensure_dir(dest.parent)
    try:
        os.replace(src, dest)
        _fsync_dir(dest.parent)
    except OSError as e:
        raise StorageError(f"cannot move session file: {e.strerror}", path=src) from e


def _index_for_search(store: Store, sid: str, **appended: Any) -> None:
    """Keep search.sqlite current after a save, best effort: a save must never fail or wait for
    it; when this does nothing, the next search sees the file's new size and re-reads it."""
    try:
        from . import search  # here, not at the top: search builds on this module

        search.index_appended(store, sid, **appended)
    except Exception:  # sqlite3.Error (busy, damaged), OSError, or a bug: never worth a save
        import logging

        logging.getLogger("chatcli").debug("search index not updated for %s", sid, exc_info=True)


def _dump_meta(meta: dict[str, Any]) -> bytes:
    return _dump_json(meta, indent=2) + b"\n"


def _build_info(store: Store, sid: str, stat: os.stat_result | None = None) -> SessionInfo:
    path = store.memory_path(sid)
    st = stat or path.stat()
    meta = store.read_meta(sid)
    damaged = None
    try:
        messages = parse_messages(path.read_bytes())
    except (OSError, ValueError) as e:
        messages, damaged = [], str(e)
    return SessionInfo(
        id=sid,
        # metadata from other tools (or damaged) may hold anything: only text reaches the index
        title=displayable(meta.get("title")) or _first_human_title(messages) or "(empty)",
        messages=len(messages),
        updated_ns=st.st_mtime_ns,
        model=displayable(meta.get("model")) or displayable(_last_model(messages)),
        has_db=store.has_db(sid),
        damaged=damaged,
    )


# ---------------------------------------------------------------------------------------------
# The listing index: a cache, safe to delete; memory/ stays the source of truth.


class _Index:
    """index.sqlite: one row per session, validated by folder mtimes and per-file stats."""

    VERSION = 2
    _COLUMNS = "id, title, messages, updated_ns, model, has_db, damaged"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = store.root / INDEX_FILE
        self.conn = self._connect()
        self._inode = _inode(self.path)

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self.store.memory_dir.is_dir():
                return _memory_index()
        except OSError as e:  # e.g. another user's storage folder
            raise StorageError(
                f"cannot read sessions: {e.strerror}", path=self.store.memory_dir
            ) from e
        try:
            if not self.path.exists():  # sqlite3 would create it with the umask's mode
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            if conn.execute("PRAGMA user_version").fetchone()[0] != self.VERSION:
                _create_schema(conn, self.VERSION)
            self._refresh(conn)
            return conn
        except (sqlite3.DatabaseError, OSError):
            # Damaged or unwritable index: it is only a cache, so rebuild it, or work without it.
            with contextlib.suppress(OSError):
                self.path.unlink()
            conn = _memory_index()
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
        store = self.store
        # Our saves and attaches all rename files into these folders, which changes their mtimes;
        # so settled, unchanged mtimes mean nothing was added, removed or replaced since the last
        # scan. (rows() stats the rows on screen again: that catches rewrites in place.)
        row = conn.execute("SELECT value FROM state WHERE key = 'dirs'").fetchone()
        unchanged, dir_state = _folders_unchanged(
            row[0] if row else None, (store.memory_dir, store.meta_dir, store.db_dir)
        )
        if unchanged:
            return
        known = {
            r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, mem_mtime, mem_size FROM sessions")
        }
        meta_mtimes = _scan_mtimes(store.meta_dir, ".json")
        known_meta = dict(conn.execute("SELECT id, meta_mtime FROM sessions"))
        fresh: list[tuple[Any, ...]] = []
        seen: set[str] = set()
        for sid, st in _scan_stats(store.memory_dir, ".json"):
            if not _UUID_RE.fullmatch(sid):
                continue
            seen.add(sid)
            if known.get(sid) == (st.st_mtime_ns, st.st_size) and known_meta.get(
                sid
            ) == meta_mtimes.get(sid):
                continue
            fresh.append(_index_row(store, sid, st, meta_mtimes.get(sid)))
        gone = [(sid,) for sid in known if sid not in seen]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("DELETE FROM sessions WHERE id = ?", gone)
            conn.executemany(
                f"INSERT OR REPLACE INTO sessions"
                f" ({self._COLUMNS}, mem_mtime, mem_size, meta_mtime)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                fresh,
            )
            _refresh_db_flags(conn, store)
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
        rows = [SessionInfo(*r[:5], bool(r[5]), r[6]) for r in self.conn.execute(sql)]
        if limit is not None and limit <= _RESTAT_LIMIT:
            self._restat(rows)
        return rows

    def rows_for(self, ids: list[str]) -> list[SessionInfo]:
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT {self._COLUMNS} FROM sessions WHERE id IN ({marks})"
        rows = [SessionInfo(*r[:5], bool(r[5]), r[6]) for r in self.conn.execute(sql, ids)]
        self._restat(rows)
        return rows

    def _restat(self, rows: list[SessionInfo]) -> None:
        # Another tool may rewrite a file in place, which leaves the folder's mtime alone;
        # a stat of each row on screen catches that (too slow for 10,000 rows of --json).
        moved = False
        for i, info in enumerate(rows):
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(self.store.memory_dir, info.id + ".json"))
                if st.st_mtime_ns != info.updated_ns:
                    rows[i] = _build_info(self.store, info.id, st)
                    moved = True
        if moved:  # a rewritten session is newer now; same order as the index's ORDER BY
            rows.sort(key=lambda info: (-info.updated_ns, info.id))

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM sessions").fetchone()[0]

    def state(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with contextlib.suppress(sqlite3.Error):  # a read-only index just stays uncached
            self.conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))


def _memory_index() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    _create_schema(conn, _Index.VERSION)
    return conn


def _create_schema(conn: sqlite3.Connection, version: int) -> None:
    conn.executescript(f"""
        DROP TABLE IF EXISTS sessions; DROP TABLE IF EXISTS state;
        CREATE TABLE sessions (id TEXT PRIMARY KEY, title TEXT, messages INTEGER,
            updated_ns INTEGER, model TEXT, has_db INTEGER, damaged TEXT,
            mem_mtime INTEGER, mem_size INTEGER, meta_mtime INTEGER);
        CREATE INDEX sessions_updated ON sessions (updated_ns DESC, id);
        CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT);
        PRAGMA user_version = {version};
    """)


def _index_row(store: Store, sid: str, st: os.stat_result, meta_mtime: int | None) -> tuple:
    info = _build_info(store, sid, st)
    return (
        info.id,
        info.title,
        info.messages,
        info.updated_ns,
        info.model,
        int(info.has_db),
        info.damaged,
        st.st_mtime_ns,
        st.st_size,
        meta_mtime,
    )


def _refresh_db_flags(conn: sqlite3.Connection, store: Store) -> None:
    attached = [
        (e.name[:-3],) for e in _scandir(store.db_dir) if e.name.endswith(".db") and _size(e) > 0
    ]
    conn.execute("UPDATE sessions SET has_db = 0")
    conn.executemany("UPDATE sessions SET has_db = 1 WHERE id = ?", attached)


def _scandir(path: Path | int) -> list[os.DirEntry[str]]:
    """The entries of a folder (given as a path or an open descriptor); none if it is missing."""
    try:
        return list(os.scandir(path))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StorageError(f"cannot read folder: {e.strerror}", path=path) from e


def _scan_stats(path: Path, suffix: str) -> list[tuple[str, os.stat_result]]:
    """(name less ``suffix``, stat) of each file in ``path`` named ``*suffix``; files removed
    meanwhile are left out. Each stat is relative to the open folder, which skips the walk down
    the full path: a quarter faster over 10,000 files."""
    by_fd = os.scandir in os.supports_fd  # not on Windows
    try:
        fd = os.open(path, os.O_RDONLY) if by_fd else None
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StorageError(f"cannot read folder: {e.strerror}", path=path) from e
    try:
        result = []
        cut = -len(suffix)
        for entry in _scandir(path if fd is None else fd):
            if (name := entry.name).endswith(suffix):
                try:
                    result.append((name[:cut], entry.stat()))
                except OSError:
                    continue
        return result
    finally:
        if fd is not None:
            os.close(fd)


def _scan_mtimes(path: Path, suffix: str) -> dict[str, int]:
    return {name: st.st_mtime_ns for name, st in _scan_stats(path, suffix)}


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


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


_SETTLED_NS = 2_000_000_000  # folder mtimes at least this old can be trusted (coarse clocks)


def _folders_unchanged(recorded: str | None, folders: tuple[Path, ...]) -> tuple[bool, str | None]:
    """Whether a scan of ``folders`` can be skipped, and the stamp to record after scanning them.

    Adding, removing or renaming a file into a folder moves the folder's mtime, so unchanged
    mtimes mean the same names as at the last scan. But file system clocks are coarse (1-2 s on
    HFS+ and FAT, a few ms elsewhere): a file added within the tick of the last scan leaves the
    mtime as recorded. So only mtimes already older than _SETTLED_NS are ever recorded (the stamp
    is None until then), and until they are, every call scans.
    """
    now = time.time_ns()
    mtimes = [_mtime_ns(folder) for folder in folders]
    if any(m is not None and now - m < _SETTLED_NS for m in mtimes):
        return False, None
    stamp = json.dumps(mtimes)
    return stamp == recorded, stamp
