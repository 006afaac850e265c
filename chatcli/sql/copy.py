"""The user's SQLite file: validate it, copy it, open it read-only, leave no sidecar files.

Only this module touches the user's original; everything else works on the private copy
that copy_database makes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from chatcli.errors import InvalidDatabase, StorageError

__all__ = [
    "SQLITE_HEADER",
    "connect_ro",
    "copy_database",
    "no_new_sidecars",
    "read_header",
    "validate_database",
]

# The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def _ro_uri(path: Path) -> str:
    """A `mode=ro` URI for `path`; as_uri() percent-quotes '?', '#' and '%' in the path."""
    return Path(os.path.abspath(path)).as_uri() + "?mode=ro"


def connect_ro(path: Path, *, timeout: float) -> sqlite3.Connection:
    """A read-only (mode=ro) connection to `path` that never begins a transaction itself."""
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
    header = read_header(path)
    if not header:
        raise InvalidDatabase("empty file, not a database", path=path)
    if header != SQLITE_HEADER:
        # SQLCipher and similar encrypt the header too, so they land here as well.
        raise InvalidDatabase("not a SQLite database (or it is encrypted)", path=path)
    with no_new_sidecars(path):
        problems = _check_database(path, timeout=timeout)
    if problems != ["ok"]:
        raise InvalidDatabase(f"corrupt SQLite database: {problems[0]}", path=path)


def _check_database(path: Path, *, timeout: float) -> list[str]:
    """Open `path` read-only, read its schema and return what quick_check says."""
    try:
        conn = connect_ro(path, timeout=timeout)
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
    return problems


def read_header(path: Path, size: int = len(SQLITE_HEADER)) -> bytes:
    """The first `size` bytes of `path`; InvalidDatabase unless it is a readable regular file.

    Only a regular file is ever opened (store.files.read_regular): open() on a FIFO blocks
    until some other program writes to it (forever), and a device or socket is no database.
    """
    # Imported here, not at the top: the worker process imports this module and needs none of it.
    from chatcli.store.files import NotRegularFile, read_regular

    try:
        return read_regular(path, size)
    except NotRegularFile as e:
        if e.kind == "a folder":
            raise InvalidDatabase("is a folder, not a database file", path=path) from None
        raise InvalidDatabase(f"is {e.kind}, not a regular database file", path=path) from None
    except FileNotFoundError:
        raise InvalidDatabase("no such file", path=path) from None
    except PermissionError:
        raise InvalidDatabase("cannot read the file: permission denied", path=path) from None
    except (OSError, ValueError) as e:  # ValueError: a NUL character in the path
        raise InvalidDatabase(
            f"cannot read the file: {getattr(e, 'strerror', None) or e}", path=path
        ) from None


# SQLite's unix VFS: every process that has a -shm file mapped holds a read lock on this byte
# of it ("DMS"), and a new -shm user needs at least a read lock there before it goes on.
_SHM_DMS_BYTE = 128


@contextlib.contextmanager
def no_new_sidecars(path: Path) -> Iterator[None]:
    """Remove the -wal/-shm files that a read-only open of `path` left next to it.

    Reading a WAL-mode database creates `path`-wal and `path`-shm, and a read-only
    connection cannot delete them on close (only the last writer's close does). The
    user's folder must not gain files, so the sidecars that did not exist before are
    removed afterwards, but only while provably unused: holding a write lock on the
    -shm's DMS byte (no other process has the WAL open, nor can start using it) and
    with an empty -wal (no other program wrote to it in the meantime). Otherwise they
    belong to whoever uses the database now and are left alone. Must not be used while
    this process has another connection open to `path`: POSIX locks do not tell a
    process's own connections apart.
    """
    real = os.path.realpath(path)  # SQLite puts the sidecars next to the symlink's target
    wal, shm = real + "-wal", real + "-shm"
    new = [name for name in (wal, shm) if not os.path.lexists(name)]
    try:
        yield
    finally:
        if new and os.name == "posix":
            _remove_unused_sidecars([n for n in new if os.path.lexists(n)], wal=wal, shm=shm)


def _remove_unused_sidecars(names: list[str], *, wal: str, shm: str) -> None:
    if not names:
        return
    import fcntl

    try:
        fd = os.open(shm, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return  # no -shm (nothing to coordinate with) or not ours to lock: leave them
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
        except OSError:
            return  # another program has the database open in WAL mode right now
        with contextlib.suppress(OSError):
            if wal in names and os.lstat(wal).st_size != 0:
                return  # written by someone else since: it may hold committed data
            for name in names:
                os.unlink(name)
    finally:
        os.close(fd)  # also releases the lock


class _CopyTimeout(Exception):
    """Raised from the backup progress callback to abandon a copy blocked by a lock."""


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def copy_database(src: Path, dest: Path, *, timeout: float = 30.0) -> None:
    """Copy the SQLite database `src` to `dest` atomically, as a private (0600) file.

    Uses the backup API, so the copy is a consistent snapshot even while another
    program writes `src`; `src` is only opened read-only. The copy is switched to
    journal_mode=DELETE so it never needs -wal/-shm files. `dest` is replaced only
    once the copy is complete: on any failure an existing `dest` is left as it was.
    Raises InvalidDatabase for a bad or locked source, StorageError if `dest` cannot
    be written.
    """
    from chatcli.store.files import fsync_dir  # not at the top: see read_header

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
            fsync_dir(folder)
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
    with no_new_sidecars(src):
        try:
            source = connect_ro(src, timeout=min(timeout, 1.0))
        except sqlite3.Error as e:
            raise InvalidDatabase(f"cannot open the database: {e}", path=src) from None
        _backup_from(source, src, tmp, deadline=deadline, timeout=timeout)


def _backup_from(
    source: sqlite3.Connection, src: Path, tmp: Path, *, deadline: float, timeout: float
) -> None:
    def progress(status: int, remaining: int, total: int) -> None:
        # Python's backup() retries a busy source forever; give up at the deadline.
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise _CopyTimeout

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
