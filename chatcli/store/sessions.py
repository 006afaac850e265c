"""Sessions on disk: creating, opening, atomic append-only saves, locking, the trash, and the
listing (listing.py) and search (search.py) kept beside them; layout.py says where files live."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DamagedSession, SessionNotFound, StorageError
from .files import (
    atomic_write,
    ensure_dir,
    fsync_dir,
    not_regular,
    read_regular,
)
from .layout import (
    DB_DIR,
    MEMORY_DIR,
    MEMORY_LIMIT,
    META_DIR,
    URL_KEY,
    Layout,
    checked_id,
    clean_meta,
)
from .listing import Listing, SessionInfo
from .messages import appended_bytes, dump_json, first_human_title, parse_messages
from .usage import safe_cut

LOCK_TIMEOUT = 30.0


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
        return first_human_title(self.messages) or "(untitled)"


class Store(Layout):
    """The storage root. Cheap to create: nothing is read until asked."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._listing: Listing | None = None

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
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with self.lock(sid):  # doctor --fix must not see the metadata as an orphan meanwhile
            atomic_write(self.meta_path(sid), _dump_meta(meta))
            atomic_write(self.memory_path(sid), b"[]\n")
        return sid

    def open(self, sid: str, *, read_only: bool = False) -> Session:
        """Load a session's history (lazily: only when a session is opened), noting what is
        wrong with its metadata. Unless ``read_only``, refuses a session that cannot be saved
        into (its memory file a symbolic link) now rather than at the first turn."""
        if not read_only:
            self.refuse_link(sid)
        messages = self.load_messages(sid)
        return Session(sid, self.meta_notes(sid), messages)

    def refuse_link(self, sid: str) -> None:
        """StorageError if the memory file is a symbolic link: a save replaces the file, which
        would cut the link, and writing through it would write outside the storage folder."""
        path = self.memory_path(sid)
        if not_regular(path, follow=False) == "a symbolic link":
            raise StorageError(
                "session file is a symbolic link, and chatcli never writes through one; it can"
                " be listed, searched and exported (replace the link with a copy of its target"
                " to continue the session)",
                path=path,
            )

    def read_memory(self, sid: str) -> bytes:
        """A memory file's bytes, as they are (only a regular file, at most MEMORY_LIMIT)."""
        path = self.memory_path(sid)
        try:
            return _read_memory(path)
        except FileNotFoundError as e:
            raise SessionNotFound(f"no session {sid}", path=path) from e
        except OSError as e:
            raise StorageError(f"cannot read session: {e.strerror or e}", path=path) from e

    def load_messages(self, sid: str) -> list[dict[str, Any]]:
        path = self.memory_path(sid)
        raw = self.read_memory(sid)
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
            self.refuse_link(sid)
            try:
                raw = _read_memory(path)
            except FileNotFoundError as e:
                # Moved to the trash (or away) while open: starting a new file would split the
                # session in two and block its restore.
                raise SessionNotFound(
                    "this session was removed while open (chatcli rm --restore brings it back);"
                    " not saving",
                    path=path,
                ) from e
            except OSError as e:
                raise StorageError(f"cannot read session: {e.strerror or e}", path=path) from e
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

    def fork(self, sid: str, count: int | None = None) -> tuple[str, int]:
        """A new session holding the first ``count`` messages of ``sid`` (default: all), cut
        where no tool call is split from its results, titled "<title> (fork)", with the same
        model, system prompt and PostgreSQL URL (the same live database); returns its id and how
        many messages it holds. ``sid``'s files are only read (its db/ file, if any, is the
        caller's to copy)."""
        session = self.open(sid, read_only=True)
        at = safe_cut(session.messages, len(session.messages) if count is None else count)
        meta = session.meta
        new = self.create(
            title=f"{session.title} (fork)", model=meta.get("model"), system=meta.get("system")
        )
        try:
            if at:
                self.append(new, session.messages[:at])
            if isinstance(meta.get(URL_KEY), str) and meta[URL_KEY]:
                self.update_meta(new, **{URL_KEY: meta[URL_KEY]})
        except BaseException:
            if not self.discard_if_empty(new):
                self.trash(new)  # never half a fork; the trash keeps what was made
            raise
        return new, at

    def discard_if_empty(self, sid: str) -> bool:
        """Remove a session that holds no message and no database, neither a db/ file nor a
        PostgreSQL URL (one just made and not used)."""
        with self.lock(sid):
            try:
                if not_regular(self.memory_path(sid), follow=False):
                    return False  # not the file create() made
                if parse_messages(_read_memory(self.memory_path(sid))) or self.has_db(sid):
                    return False
                if self.stored_meta(sid).get(URL_KEY):
                    return False
            except (OSError, ValueError, StorageError):  # unreadable: not ours to delete
                return False
            for path in (self.memory_path(sid), self.meta_path(sid), self.db_path(sid)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return True

    def trash(self, sid: str) -> Path:
        """Move a session's files to trash/<uuid>/{memory,meta,db}/; returns that folder."""
        dest = self.trash_dir / checked_id(sid)
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
        src = self.trash_dir / checked_id(sid)
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
            ensure_dir(kept.parent)
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

        if problem := self.lock_problem(sid):  # one clear line, and no link ever followed
            raise StorageError(f"cannot lock session: {problem[1]}", path=problem[0])
        ensure_dir(self.lock_dir)
        lock = FileLock(self.lock_dir / f"{checked_id(sid)}.lock", timeout=LOCK_TIMEOUT, mode=0o600)
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

    def update_meta(self, sid: str, **fields: Any) -> dict[str, Any]:
        """Set (or, with None, remove) metadata fields; returns the metadata as read_meta would.

        Every other field is written back as it is stored (a long title is shortened only when
        read); a file that cannot be read or parsed is refused (StorageError), never replaced."""
        self.ensure()
        with self.lock(sid):
            meta = self.stored_meta(sid)
            for key, value in fields.items():
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
            atomic_write(self.meta_path(sid), _dump_meta(meta))
        return clean_meta(meta)[0]

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

    def _index(self) -> Listing:
        """The listing index, refreshed: one connection per Store, checked on every use."""
        if self._listing is not None:
            try:
                self._listing.refresh()
                return self._listing
            except sqlite3.DatabaseError:  # deleted or damaged underneath us: start again
                self._listing = None
        self._listing = Listing(self)
        return self._listing


def _move(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest`` (a missing ``src`` is fine: sessions may lack meta or db)."""
    if not os.path.lexists(src):
        return
    ensure_dir(dest.parent)
    try:
        os.replace(src, dest)
        fsync_dir(dest.parent)
    except OSError as e:
        raise StorageError(f"cannot move session file: {e.strerror}", path=src) from e


def _index_for_search(store: Store, sid: str, **appended: Any) -> None:
    """Keep search.sqlite current after a save, best effort: a save must never fail or wait for
    it; when this does nothing, the next search sees the file's new size and re-reads it."""
    try:
        from . import search  # only saves need it: `chatcli list` starts without it

        search.index_appended(store, sid, **appended)
    except Exception:  # sqlite3.Error (busy, damaged), OSError, or a bug: never worth a save
        import logging

        logging.getLogger("chatcli").debug("search index not updated for %s", sid, exc_info=True)


def _read_memory(path: Path) -> bytes:
    """A memory file's bytes: only a regular file, and at most MEMORY_LIMIT of them."""
    return read_regular(path, limit=MEMORY_LIMIT)


def _dump_meta(meta: dict[str, Any]) -> bytes:
    return dump_json(meta, indent=2) + b"\n"
