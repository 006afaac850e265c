"""The SQLite caches beside memory/ (index.sqlite, search.sqlite): opening one, starting it again
when its schema version moved, and telling when the folders it caches have not changed.

Both are safe to delete: memory/ stays the source of truth, and each is rebuilt from it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .files import create_private_file, mtime_ns

Schema = Callable[[sqlite3.Connection], None]

_SETTLED_NS = 2_000_000_000  # folder mtimes at least this old can be trusted (coarse clocks)


def connect(
    path: Path,
    *,
    version: int,
    create_schema: Schema,
    timeout: float,
    pragmas: Sequence[str] = (),
    probe: str | None = None,
) -> sqlite3.Connection:
    """A connection to the cache at ``path`` (made 0600 if new), in autocommit mode, after
    ``pragmas``; ``create_schema`` (re)creates the tables when ``PRAGMA user_version`` is not
    ``version``, and ``probe`` is a query that must then succeed.

    Raises sqlite3.DatabaseError (damaged, busy) or OSError (unwritable): the caller decides
    whether to remove the file and start again, or to work in memory.
    """
    if not path.exists():
        create_private_file(path)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
        if conn.execute("PRAGMA user_version").fetchone()[0] != version:
            create_schema(conn)
        if probe is not None:
            conn.execute(probe).fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def in_memory(create_schema: Schema) -> sqlite3.Connection:
    """An empty cache in memory, for storage where the file cannot be used."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    create_schema(conn)
    return conn


def folders_unchanged(recorded: str | None, folders: tuple[Path, ...]) -> tuple[bool, str | None]:
    """Whether a scan of ``folders`` can be skipped, and the stamp to record after scanning them.

    Adding, removing or renaming a file into a folder moves the folder's mtime, so unchanged
    mtimes mean the same names as at the last scan. But file system clocks are coarse (1-2 s on
    HFS+ and FAT, a few ms elsewhere): a file added within the tick of the last scan leaves the
    mtime as recorded. So only mtimes already older than _SETTLED_NS are ever recorded (the stamp
    is None until then), and until they are, every call scans.
    """
    now = time.time_ns()
    mtimes = [mtime_ns(folder) for folder in folders]
    if any(m is not None and now - m < _SETTLED_NS for m in mtimes):
        return False, None
    stamp = json.dumps(mtimes)
    return stamp == recorded, stamp
