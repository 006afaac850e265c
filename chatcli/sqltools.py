"""SQLite helpers: validate and copy a user's database, then query the copy read-only."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from chatcli.errors import InvalidDatabase, StorageError

__all__ = ["copy_database", "validate_database"]

_HEADER = b"SQLite format 3\x00"


def _ro_uri(path: Path) -> str:
    """A `mode=ro` URI for `path`; as_uri() percent-quotes '?', '#' and '%' in the path."""
    return Path(os.path.abspath(path)).as_uri() + "?mode=ro"


def _connect_ro(path: Path, *, timeout: float) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module must never issue its own BEGIN on our behalf.
    return sqlite3.connect(
        _ro_uri(path), uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )


def validate_database(path: Path, *, timeout: float = 5.0) -> None:
    """Raise InvalidDatabase unless `path` is a readable, uncorrupted SQLite database.

    The file is only ever opened read-only. `timeout` bounds the wait for another
    program's lock.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header = f.read(len(_HEADER))
    except FileNotFoundError:
        raise InvalidDatabase("no such file", path=path) from None
    except IsADirectoryError:
        raise InvalidDatabase("is a folder, not a database file", path=path) from None
    except PermissionError:
        raise InvalidDatabase("cannot read the file: permission denied", path=path) from None
    except OSError as e:
        raise InvalidDatabase(f"cannot read the file: {e.strerror or e}", path=path) from None
    if path.is_dir():  # some platforms open() a directory without complaint
        raise InvalidDatabase("is a folder, not a database file", path=path)
    if not header:
        raise InvalidDatabase("empty file, not a database", path=path)
    if header != _HEADER:
        # SQLCipher and similar encrypt the header too, so they land here as well.
        raise InvalidDatabase("not a SQLite database (or it is encrypted)", path=path)
    try:
        conn = _connect_ro(path, timeout=timeout)
    except sqlite3.Error as e:
        raise InvalidDatabase(f"cannot open the database: {e}", path=path) from None
    try:
        conn.execute("PRAGMA schema_version").fetchone()
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        # quick_check walks every page (without the slow index cross-checks), so damage in
        # table data is caught here rather than half-way through a later query.
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise InvalidDatabase(
                "the database is locked by another program; try again", path=path
            ) from None
        raise InvalidDatabase(f"cannot read the database: {e}", path=path) from None
    except sqlite3.DatabaseError as e:
        raise InvalidDatabase(f"corrupt or unreadable SQLite database: {e}", path=path) from None
    finally:
        conn.close()
    if problems != ["ok"]:
        raise InvalidDatabase(f"corrupt SQLite database: {problems[0]}", path=path)


class _CopyTimeout(Exception):
    """Raised from the backup progress callback to abandon a copy blocked by a lock."""


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in `folder`; not possible (nor needed) on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_database(src: Path, dest: Path, *, timeout: float = 30.0) -> None:
    """Copy the SQLite database `src` to `dest` atomically, as a private (0600) file.

    Uses the backup API, so the copy is a consistent snapshot even while another
    program writes `src`; `src` is only opened read-only. The copy is switched to
    journal_mode=DELETE so it never needs -wal/-shm files. `dest` is replaced only
    once the copy is complete: on any failure an existing `dest` is left as it was.
    Raises InvalidDatabase for a bad or locked source, StorageError if `dest` cannot
    be written.
    """
    src, dest = Path(src), Path(dest)
    validate_database(src, timeout=min(timeout, 5.0))
    if dest.exists() and os.path.samefile(src, dest):
        raise StorageError("refusing to copy a database onto itself", path=dest)
    folder = dest.parent
    try:
        # mkstemp creates the file with mode 0600; SQLite keeps that mode when it writes.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise StorageError(
            f"cannot write a copy of the database: {e.strerror or e}", path=folder
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    sidecars = [Path(f"{tmp}{suffix}") for suffix in ("-journal", "-wal", "-shm")]
    try:
        _backup(src, tmp, timeout=timeout)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        with contextlib.suppress(OSError):
            _fsync_dir(folder)
    except OSError as e:
        raise StorageError(
            f"cannot write a copy of the database: {e.strerror or e}", path=dest
        ) from None
    finally:
        for leftover in (tmp, *sidecars):
            if leftover.exists():
                _remove_quietly(leftover)


def _backup(src: Path, tmp: Path, *, timeout: float) -> None:
    """Back up `src` into the (empty) file `tmp` and leave it in journal_mode=DELETE."""
    deadline = time.monotonic() + timeout

    def progress(status: int, remaining: int, total: int) -> None:
        # Python's backup() retries a busy source forever; give up at the deadline.
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise _CopyTimeout

    try:
        source = _connect_ro(src, timeout=min(timeout, 1.0))
    except sqlite3.Error as e:
        raise InvalidDatabase(f"cannot open the database: {e}", path=src) from None
    try:
        target = sqlite3.connect(tmp, isolation_level=None)
    except sqlite3.Error as e:
        source.close()
        raise StorageError(f"cannot write a copy of the database: {e}", path=tmp) from None
    try:
        try:
            # pages=-1 (the default) copies everything in one step under one read lock,
            # which is what makes the copy a consistent snapshot.
            source.backup(target, progress=progress)
        except _CopyTimeout:
            raise InvalidDatabase(
                f"the database stayed locked by another program for {timeout:g} s; try again",
                path=src,
            ) from None
        except sqlite3.Error as e:
            if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise StorageError(
                    "not enough disk space to copy the database", path=tmp.parent
                ) from None
            raise InvalidDatabase(f"cannot copy the database: {e}", path=src) from None
        try:
            # The backup copies the source header, WAL flag included; switch the copy back
            # so it opens read-only without creating -wal/-shm files next to it.
            mode = target.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        except sqlite3.Error as e:
            raise StorageError(f"cannot finish the copy of the database: {e}", path=tmp) from None
        if str(mode).lower() != "delete":
            raise StorageError(
                f"cannot switch the copy to journal_mode=DELETE (got {mode})", path=tmp
            )
    finally:
        target.close()
        source.close()
