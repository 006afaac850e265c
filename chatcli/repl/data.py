"""The attached database of the open session: opened on demand, reopened when another process
replaced the copy, closed on switch; a copy that cannot be used never blocks plain chat."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import config
from ..errors import ChatcliError, InvalidDatabase, QueryError
from ..render import Terminal, print_note
from ..store import Store


class AttachedData:
    """One session's attached data at a time: a live PostgreSQL database or the SQLite copy."""

    def __init__(self, store: Store, settings: config.Settings, term: Terminal) -> None:
        self.store, self.settings, self.term = store, settings, term
        self.db: Any = None  # sql.ReadOnlyDatabase (or the PostgreSQL backend), opened on demand
        self._key: Any = None  # which file (inode, mtime, size) or URL self.db has open
        self._unusable: Any = None  # the attached source last said to be unusable

    def source(self, sid: str) -> Any:
        """What the session has attached: ("postgres", url), the copy's (inode, mtime, size) —
        another process may have replaced it since — or None."""
        from ..sql.attach import session_url

        if url := session_url(self.store, sid):
            return ("postgres", url)
        with contextlib.suppress(OSError):
            st = self.store.db_path(sid).stat()
            if st.st_size > 0:
                return (st.st_ino, st.st_mtime_ns, st.st_size)
        return None

    def get(self, sid: str) -> Any:
        """The session's attached database, read-only, or None: a live PostgreSQL database
        when the session has a URL, else its SQLite copy in the sandbox (reopened when the file
        was replaced: a worker with the old file open would keep seeing the old tables)."""
        key = self.source(sid)
        if self.db is not None and key != self._key:
            self.close()
        if self.db is None and key is not None:
            if key[0] == "postgres":
                self.db = self._open_postgres(key[1])
            else:
                from ..sql import ReadOnlyDatabase

                try:
                    self.db = ReadOnlyDatabase(
                        self.store.db_path(sid), timeout=self.settings["sql_timeout"]
                    )
                except InvalidDatabase as e:  # damaged, or put in WAL mode by another program
                    raise InvalidDatabase(
                        f"the attached database copy cannot be used: {e}; attach the original "
                        "again with /attach PATH, or remove the copy with /detach"
                    ) from None
            self._key = key
        return self.db

    def for_turn(self, sid: str) -> Any:
        """get() for a turn with the model: a copy that cannot be used must not block plain
        chat. The turn goes on without it; one line (once per file) says what is wrong."""
        try:
            db = self.get(sid)
            if db is not None:
                db.schema_summary()  # kept: the turn's system prompt reads it again
            return db
        except (InvalidDatabase, QueryError) as e:
            self.close()
            key = self.source(sid)
            if key != self._unusable:
                self._unusable = key
                print_note(self.term.err, f"warning: {e}; chatting without it")
            return None

    def _open_postgres(self, url: str) -> Any:
        from ..sql.attach import open_postgres

        db, notes = open_postgres(
            url,
            timeout=self.settings["sql_timeout"],
            allow_superuser=self.settings["pg_allow_superuser"],
        )
        for note in notes:  # a role that could write: said once per process (sql.attach)
            print_note(self.term.err, note)
        return db

    def attach(
        self, sid: str, sources: Sequence[str | Path], *, replace: bool, confirm: Any
    ) -> Any:
        from ..attaching import attach

        self.close()  # its worker has the old file open
        return attach(
            self.store,
            self.term,
            sid,
            sources,
            replace=replace,
            confirm=confirm,
            settings=self.settings,
        )

    def detach(self, sid: str, *, forget_url: Callable[[], None]) -> Path | None:
        from ..sql.attach import session_url

        if self.source(sid) is None:
            raise ChatcliError("no database is attached")
        self.close()
        if session_url(self.store, sid):
            forget_url()
            return None
        return self.store.detach_db(sid)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
