"""The SQLite caches beside memory/ (index.sqlite, search.sqlite): opening one, starting it again
when its schema version moved, and telling when the folders it caches have not changed.

Both are safe to delete: memory/ stays the source of truth, and each is rebuilt from it. But
only a file chatcli made is ever changed or deleted: one that is a link, not SQLite, or another
program's database (a folder used as --storage may hold an index.sqlite of its own) is moved
aside to ``<name>.not-chatcli-<time>``, with its journal, and a note says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from .files import create_private_file, fsync_dir, mtime_ns, not_regular, read_regular

Schema = Callable[[sqlite3.Connection], None]
Note = Callable[[str], None]

APPLICATION_ID = 0x63686174  # "chat", in the header of every cache chatcli makes
SIDECARS = ("-journal", "-wal", "-shm")
_HEADER = b"SQLite format 3\x00"
_SETTLED_NS = 2_000_000_000  # folder mtimes at least this old can be trusted (coarse clocks)


def foreign(path: Path, tables: Collection[str]) -> str | None:
    """Why the file at ``path`` is no cache chatcli made ("is a symbolic link", ...), or None:
    missing, empty (just created), or ours. ``tables``: every table name a version of this cache
    ever had, which tells caches made before the application id was set. Never opens a link."""
    if (kind := not_regular(path, follow=False)) is not None:
        return f"is {kind}"
    try:
        head = read_regular(path, 100)
    except FileNotFoundError:
        return None
    if not head:
        return None
    if len(head) < 100 or not head.startswith(_HEADER):
        return "is not an SQLite file"
    app_id = int.from_bytes(head[68:72], "big")
    if app_id == APPLICATION_ID:
        return None
    if app_id == 0 and (found := _tables(path)) is not None and found <= set(tables):
        return None  # made by chatcli before it marked its caches
    return "is an SQLite database chatcli did not create"


def set_aside(path: Path, tables: Collection[str], note: Note | None) -> bool:
    """Move the file at ``path`` aside if it is not chatcli's (with its journal files), and any
    journal file that is a link or not a file; True if the main file went. Raises OSError."""
    why = foreign(path, tables)
    moved: list[str] = []
    base: Path | None = None
    for suffix in ("", *SIDECARS):
        side = Path(f"{path}{suffix}")
        if why is not None or not_regular(side, follow=False) is not None:
            if os.path.lexists(side):
                base = base or _aside_name(path)
                aside = Path(f"{base}{suffix}")
                os.rename(side, aside)  # renames a link itself: what it names is never touched
                moved.append(aside.name)
    if moved:
        fsync_dir(path.parent)
        if note is not None:
            what = f"{path.name} {why}" if why else f"a journal of {path.name} is not a file"
            note(
                f"{what}; chatcli never changes a file it did not make, so it moved it aside to"
                f" {moved[0]} and starts its own"
            )
    return why is not None


def _aside_name(path: Path) -> Path:
    """``<name>.not-chatcli-<time>[-n]``: a name that no file (nor journal) has yet, so
    nothing set aside earlier is ever overwritten."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        name = path.with_name(f"{path.name}.not-chatcli-{stamp}{f'-{n}' if n else ''}")
        if not any(os.path.lexists(f"{name}{s}") for s in ("", *SIDECARS)):
            return name
    raise FileExistsError(f"no free name beside {path}")


def remove(path: Path, tables: Collection[str], note: Note | None) -> None:
    """Delete the cache at ``path`` and its journals (missing is fine); a file that is not
    chatcli's is moved aside instead. Raises OSError."""
    set_aside(path, tables, note)
    for suffix in ("", *SIDECARS):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def _tables(path: Path) -> set[str] | None:
    """The table names of the SQLite file at ``path``, opened read-only; None if unreadable."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {row[0] for row in rows if not row[0].startswith("sqlite_")}
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def connect(
    path: Path,
    *,
    version: int,
    create_schema: Schema,
    timeout: float,
    pragmas: Sequence[str] = (),
    probe: str | None = None,
    tables: Collection[str] = (),
    note: Note | None = None,
) -> sqlite3.Connection:
    """A connection to the cache at ``path`` (made 0600 if new), in autocommit mode, after
    ``pragmas``; ``create_schema`` (re)creates the tables when ``PRAGMA user_version`` is not
    ``version``, and ``probe`` is a query that must then succeed.

    A file that is not chatcli's (see :func:`foreign`; ``tables`` are the names of the tables
    any version made) is moved aside first, and ``note`` told. Raises sqlite3.DatabaseError
    (damaged, busy) or OSError (unwritable): the caller decides whether to :func:`remove` the
    file and start again, or to work in memory.
    """
    set_aside(path, tables, note)
    if not os.path.lexists(path):
        create_private_file(path)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
        if conn.execute("PRAGMA user_version").fetchone()[0] != version:
            create_schema(conn)
        if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            with contextlib.suppress(sqlite3.OperationalError):  # read-only: marked next time
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
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
