"""Where everything lives under the storage root, and which names are session ids.

    memory/<uuid>.json   JSON array of LangChain ``message_to_dict`` dicts: the user's data
    db/<uuid>.db         the session's attached SQLite database (zero bytes: none attached)
    meta/<uuid>.json     title, model, system prompt, created: chatcli's own, rebuildable
    index.sqlite         the listing index (listing.py): a cache of memory/ + meta/
    search.sqlite        the full-text search index (search.py): a cache too
    locks/<uuid>.lock    per-session locks around read-modify-write
    trash/<uuid>/        a removed session's memory, meta and db files, until restored

storage/README.md is the full contract.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import AmbiguousSession, SessionNotFound, StorageError
from .files import ensure_dir, scandir

MEMORY_DIR, DB_DIR, META_DIR, LOCK_DIR, TRASH_DIR = "memory", "db", "meta", "locks", "trash"
INDEX_FILE = "index.sqlite"
SEARCH_FILE = "search.sqlite"

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MEMORY_NAME_RE = re.compile(UUID_RE.pattern + r"\.json")
_PREFIX_RE = re.compile(r"[0-9a-f-]{1,36}")


def checked_id(sid: str) -> str:
    """``sid`` if it is a session id (a lower-case uuid); SessionNotFound otherwise."""
    # Every path is built from a validated uuid, so no id can name a file outside the root.
    if not UUID_RE.fullmatch(sid):
        raise SessionNotFound(f"not a session id: {sid!r}")
    return sid


class Layout:
    """The storage root's folders and each session's paths, and what a look at names tells."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()  # paths in messages and --json work from any folder
        self.memory_dir = self.root / MEMORY_DIR
        self.db_dir = self.root / DB_DIR
        self.meta_dir = self.root / META_DIR
        self.lock_dir = self.root / LOCK_DIR
        self.trash_dir = self.root / TRASH_DIR

    def memory_path(self, sid: str) -> Path:
        return self.memory_dir / f"{checked_id(sid)}.json"

    def db_path(self, sid: str) -> Path:
        return self.db_dir / f"{checked_id(sid)}.db"

    def meta_path(self, sid: str) -> Path:
        return self.meta_dir / f"{checked_id(sid)}.json"

    def ensure(self) -> None:
        """Create the folders (0700) on first use."""
        for d in (self.root, self.memory_dir, self.db_dir, self.meta_dir, self.lock_dir):
            ensure_dir(d)

    def ids(self) -> list[str]:
        """Every session id: the bootstrap reads only the names in memory/."""
        try:
            names = os.listdir(self.memory_dir)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(f"cannot read sessions: {e.strerror}", path=self.memory_dir) from e
        return [n[:-5] for n in names if MEMORY_NAME_RE.fullmatch(n)]

    def trashed_ids(self) -> list[str]:
        """The ids of the sessions in the trash."""
        return [e.name for e in scandir(self.trash_dir) if UUID_RE.fullmatch(e.name)]

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

    def read_meta(self, sid: str) -> dict[str, Any]:
        """chatcli's own metadata; sessions written by other tools simply have none."""
        try:
            meta = json.loads(self.meta_path(sid).read_bytes())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def has_db(self, sid: str) -> bool:
        """Is a database attached? A zero-byte .db (older tools make one) means no."""
        try:
            return self.db_path(sid).stat().st_size > 0
        except OSError:
            return False
