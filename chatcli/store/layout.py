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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AmbiguousSession, SessionNotFound, StorageError
from .files import ensure_dir, not_regular, read_regular, scandir

MEMORY_DIR, DB_DIR, META_DIR, LOCK_DIR, TRASH_DIR = "memory", "db", "meta", "locks", "trash"
INDEX_FILE = "index.sqlite"
SEARCH_FILE = "search.sqlite"

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MEMORY_NAME_RE = re.compile(UUID_RE.pattern + r"\.json")
_PREFIX_RE = re.compile(r"[0-9a-f-]{1,36}")

# Bounds on what is read: a file named like a session's may be anything (a link to /dev/zero,
# a runaway log), and another tool may have written a title of megabytes.
MEMORY_LIMIT = 512 << 20  # bytes of a memory file (or an imported conversation)
META_LIMIT = 16 << 20  # bytes of a metadata file
TITLE_LIMIT = 1000  # characters of a title kept when read; longer ones are shortened
MODEL_LIMIT = 1000  # characters of a model name; a longer one is no model name: ignored
# The meta field holding a session's PostgreSQL URL (never a password): the session's data as
# much as a db/ file is. Named here, where the store needs it; sql.attach uses this one.
URL_KEY = "db_url"
META_TEXT = ("title", "model", "system", "created", URL_KEY)  # chatcli's fields: strings only


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
        # Where notes go (a bad metadata field ignored, a cache file moved aside): one line each,
        # once per process. The CLI sets it; without it they are dropped (shell completion).
        self.on_note: Callable[[str], None] | None = None
        self._noted: set[str] = set()

    def note(self, text: str) -> None:
        """Tell the user ``text`` once (through :attr:`on_note`)."""
        if text not in self._noted:
            self._noted.add(text)
            if self.on_note is not None:
                self.on_note(text)

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
        """chatcli's own metadata; sessions written by other tools simply have none. Fields
        that are not what chatcli writes are left out, a title of megabytes shortened."""
        return self.checked_meta(sid)[0]

    def checked_meta(self, sid: str) -> tuple[dict[str, Any], list[str]]:
        """The usable metadata and what is wrong with the file (each problem a phrase)."""
        path = self.meta_path(sid)
        try:
            raw = read_regular(path, limit=META_LIMIT)
        except FileNotFoundError:
            return {}, []
        except OSError as e:
            return {}, [e.strerror or str(e)]
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError) as e:
            return {}, [f"not valid JSON: {e}"]
        return clean_meta(meta)

    def stored_meta(self, sid: str) -> dict[str, Any]:
        """The metadata object exactly as stored (nothing left out or shortened), for a caller
        that writes it back; {} when there is no file. StorageError when the file is there but
        cannot be read or is not a JSON object: rewriting it would lose what it holds."""
        path = self.meta_path(sid)
        try:
            raw = read_regular(path, limit=META_LIMIT)
        except FileNotFoundError:
            return {}
        except OSError as e:
            problem = e.strerror or str(e)
        else:
            try:
                meta = json.loads(raw)
            except (ValueError, RecursionError) as e:
                problem = f"not valid JSON: {e}"
            else:
                if isinstance(meta, dict):
                    return meta
                problem = "not a JSON object"
        raise StorageError(
            f"cannot read the session's metadata ({problem}), not changing it"
            " ('chatcli doctor --fix' rebuilds it)",
            path=path,
        )

    def meta_notes(self, sid: str) -> dict[str, Any]:
        """:meth:`read_meta`, with a note for each problem of the file (opening a session)."""
        meta, problems = self.checked_meta(sid)
        for problem in problems:
            self.note(
                f"metadata of {sid[:8]}: {problem}; ignored ('chatcli doctor --fix' rebuilds it)"
            )
        return meta

    def lock_problem(self, sid: str | None = None) -> tuple[Path, str] | None:
        """Why saving cannot lock (the session ``sid``, or any): (the path, what it is), or None.
        filelock opens its file with O_TRUNC, so a link there would empty what it points to."""
        what = _kind(self.lock_dir)
        if what not in (None, "a folder"):
            return self.lock_dir, f"locks/ is {what}, not a folder (move it away)"
        if sid is not None and what is not None:
            path = self.lock_dir / f"{checked_id(sid)}.lock"
            if (what := _kind(path)) not in (None, "a file"):
                return path, f"the lock file is {what}, not a file (move it away)"
        return None

    def has_db(self, sid: str) -> bool:
        """Is a database attached? A zero-byte .db (older tools make one) means no."""
        try:
            return self.db_path(sid).stat().st_size > 0
        except OSError:
            return False


def clean_meta(meta: Any) -> tuple[dict[str, Any], list[str]]:
    """Parsed metadata without the fields chatcli cannot use, and what was wrong with each."""
    if not isinstance(meta, dict):
        return {}, ["not a JSON object"]
    clean, problems = dict(meta), []
    for key in META_TEXT:
        value = meta.get(key)
        if value is None:
            clean.pop(key, None)
        elif not isinstance(value, str):
            clean.pop(key)
            problems.append(f"{key!r} is not text ({type(value).__name__})")
    title = clean.get("title")
    if title is not None and len(title) > TITLE_LIMIT:
        clean["title"] = title[: TITLE_LIMIT - 1] + "…"
        problems.append(f"the title is {len(title):,} characters long (shortened)")
    model = clean.get("model")
    if model is not None and len(model) > MODEL_LIMIT:
        clean.pop("model")
        problems.append(f"'model' is {len(model):,} characters long, no model name")
    return clean, problems


def _kind(path: Path) -> str | None:
    """What ``path`` itself is ("a file", "a folder", "a symbolic link", ...); None if missing."""
    if os.path.isdir(path) and not os.path.islink(path):
        return "a folder"
    if not os.path.lexists(path):
        return None
    return not_regular(path, follow=False) or "a file"
