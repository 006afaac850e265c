"""The doctor's checks of the folders: what saving needs, memory files, databases, metadata
files, and the temp files of saves that were killed."""

from __future__ import annotations

import json
import os
import re
from functools import partial
from pathlib import Path

from ..errors import StorageError
from ..sql import SQLITE_HEADER as _SQLITE_MAGIC
from ..store import Store, atomic_write, parse_messages
from ..store.files import NotRegularFile, read_regular, scandir
from ..store.layout import MEMORY_LIMIT, META_LIMIT, UUID_RE, clean_meta
from ..store.messages import dump_json
from .report import ERROR, INFO, WARNING, Changed, Report, repair, unlink_if

STALE_TEMP_SECONDS = 60.0  # younger temp files may belong to a save in progress

# atomic_write's ".<name>.<pid>.tmp" and copy_database's ".<name>.<random>.tmp" (+ journal)
_TEMP_FILE_RE = re.compile(r"\..+\.tmp(-journal|-wal|-shm)?")


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; raises OSError when that cannot be known (no permission)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _removable_meta(store: Store, sid: str, path: Path) -> bool:
    """Is this metadata file (still) one ``fix`` removes: its session gone everywhere, or the
    file unparsable?"""
    if _exists(store.memory_path(sid)):
        try:
            return _meta_problem(path) is not None
        except NotRegularFile:
            return True  # a FIFO or a device: never chatcli's metadata
    return not _exists(store.trash_dir / sid)


# ---------------------------------------------------------------------------------------------
# What saving needs


def check_saving(store: Store, report: Report) -> None:
    """memory/, meta/, db/ and locks/ are folders chatcli can write in (or missing: made when
    needed), and no lock file is a folder or a link; otherwise every save fails."""
    for folder in (store.memory_dir, store.meta_dir, store.db_dir, store.lock_dir):
        if not os.path.lexists(folder):
            continue
        if os.path.islink(folder) or not folder.is_dir():
            what = "a symbolic link" if os.path.islink(folder) else "a file"
            report.add(ERROR, "saves fail", folder, f"{folder.name} is {what}, not a folder")
        elif not os.access(folder, os.W_OK | os.X_OK):
            report.add(ERROR, "saves fail", folder, f"{folder.name} is not writable")
    if store.lock_dir.is_dir() and not os.path.islink(store.lock_dir):
        for entry in _entries(report, store.lock_dir):
            if not entry.name.endswith(".lock") or entry.is_file(follow_symlinks=False):
                continue
            sid = entry.name[: -len(".lock")]
            problem = store.lock_problem(sid) if UUID_RE.fullmatch(sid) else None
            if problem:
                report.add(ERROR, "saves fail", problem[0], problem[1])


# ---------------------------------------------------------------------------------------------
# The folders


def _entries(report: Report, folder: Path) -> list[os.DirEntry[str]]:
    try:
        return sorted(scandir(folder), key=lambda e: e.name)
    except StorageError as e:
        report.add(ERROR, "unreadable file", folder, e.message)
        return []


def trashed_ids(store: Store, report: Report) -> set[str]:
    """Ids with a folder in trash/: sessions still, being trashed, restored or kept there."""
    try:
        return set(store.trashed_ids())
    except StorageError as e:
        report.add(ERROR, "unreadable file", store.trash_dir, e.message)
        return set()


def _session_id(name: str, suffix: str) -> str | None:
    sid, dot, ext = name.rpartition(".")
    return sid if dot and ext == suffix and UUID_RE.fullmatch(sid) else None


def _age(entry: os.DirEntry[str], now: float) -> float:
    """Seconds since ``entry`` was last written (infinite if it cannot be told)."""
    try:
        return now - entry.stat().st_mtime
    except OSError:
        return float("inf")


def _temp_file(
    store: Store, report: Report, entry: os.DirEntry[str], *, fix: bool, now: float
) -> bool:
    """Handle ``entry`` if it is a temp file of an unfinished save; True if it was one."""
    if not _TEMP_FILE_RE.fullmatch(entry.name):
        return False
    path = Path(entry.path)
    age = _age(entry, now)
    if age < STALE_TEMP_SECONDS:
        report.add(INFO, "temp file of a save in progress", path, f"{age:.0f} s old")
        return True
    finding = report.add(WARNING, "leftover temp file", path)
    if fix:
        owner = entry.name[1:].split(".", 1)[0]  # ".<uuid>.json.<pid>.tmp": that session's
        sid = owner if UUID_RE.fullmatch(owner) else None
        recheck = partial(_stale, path, now)
        repair(report, finding, path, partial(unlink_if, store, sid, path, recheck))
    return True


def _stale(path: Path, now: float) -> bool:
    return now - path.stat().st_mtime >= STALE_TEMP_SECONDS


def check_memory(
    store: Store, report: Report, *, fix: bool, now: float
) -> dict[str, tuple[int, int, int | None]]:
    """Parse every memory file; returns id -> (mtime_ns, size, messages or None if damaged)."""
    sessions: dict[str, tuple[int, int, int | None]] = {}
    for entry in _entries(report, store.memory_dir):
        path = Path(entry.path)
        if _temp_file(store, report, entry, fix=fix, now=now):
            continue
        sid = _session_id(entry.name, "json")
        if sid is None:
            report.add(INFO, "not a session file (ignored)", path)
            continue
        if entry.is_symlink():
            report.add(WARNING, "linked session file", path, f"-> {os.readlink(path)}")
        try:
            st = entry.stat()
            raw = read_regular(path, limit=MEMORY_LIMIT)
        except NotRegularFile as e:
            report.add(ERROR, "not a file", path, e.kind)
            sessions[sid] = (0, 0, None)
            continue
        except OSError as e:
            report.add(ERROR, "unreadable file", path, e.strerror or str(e))
            sessions[sid] = (0, 0, None)
            continue
        try:
            count: int | None = len(parse_messages(raw))
        except ValueError as e:
            report.add(ERROR, "damaged session", path, str(e))
            count = None
        if not raw:
            report.add(INFO, "zero-byte session file", path, "an empty session")
        sessions[sid] = (st.st_mtime_ns, st.st_size, count)
    return sessions


def check_databases(
    store: Store, report: Report, sessions: dict, trashed: set[str], *, fix: bool, now: float
) -> None:
    for entry in _entries(report, store.db_dir):
        path = Path(entry.path)
        if _temp_file(store, report, entry, fix=fix, now=now):
            continue
        sid = _session_id(entry.name, "db")
        if sid is None:
            report.add(INFO, "not a database file (ignored)", path)
            continue
        try:
            head = read_regular(path, len(_SQLITE_MAGIC))  # a FIFO would block open() forever
        except NotRegularFile as e:
            report.add(ERROR, "not a file", path, e.kind)
            continue
        except OSError as e:
            report.add(ERROR, "unreadable file", path, e.strerror or str(e))
            continue
        if not head:
            report.add(INFO, "zero-byte database file", path, "no database attached")
        elif sid not in sessions and sid in trashed:
            report.add(INFO, "database of a trashed session", path, "restored with it")
        elif sid not in sessions:
            report.add(WARNING, "database without a session", path)
        elif head != _SQLITE_MAGIC:
            report.add(ERROR, "damaged database", path, "not an SQLite database")
        elif problem := _database_problem(path):
            report.add(ERROR, "damaged database", path, problem)


def _database_problem(path: Path) -> str | None:
    """Why the chat could not open this copy (WAL mode, a damaged schema), or None; the same
    check the chat makes, read-only and without its worker process."""
    from ..errors import InvalidDatabase
    from ..sql import ReadOnlyDatabase

    try:
        ReadOnlyDatabase(path).close()
    except InvalidDatabase as e:
        return e.message
    return None


def check_metadata(
    store: Store, report: Report, sessions: dict, trashed: set[str], *, fix: bool, now: float
) -> None:
    for entry in _entries(report, store.meta_dir):
        path = Path(entry.path)
        if _temp_file(store, report, entry, fix=fix, now=now):
            continue
        sid = _session_id(entry.name, "json")
        if sid is None:
            report.add(INFO, "not a metadata file (ignored)", path)
            continue
        if sid in sessions:
            try:
                problem = _meta_problem(path)
            except NotRegularFile as e:
                problem = None
                finding = report.add(WARNING, "not a file", path, e.kind)
            except OSError as e:
                report.add(ERROR, "unreadable file", path, e.strerror or str(e))
                continue
            else:
                if problem is None:
                    continue
                finding = report.add(WARNING, "damaged metadata", path, problem)
            if fix and (rebuilt := _rebuilt_meta(store, sid)) is not None:
                action = partial(_rewrite_meta, store, sid, path, rebuilt)
                repair(report, finding, path, action)
                continue
        elif sid in trashed:
            report.add(INFO, "metadata of a trashed session", path, "restored with it")
            continue
        elif (age := _age(entry, now)) < STALE_TEMP_SECONDS:
            # Store.create writes the metadata just before the memory file.
            report.add(INFO, "metadata of a session being created", path, f"{age:.0f} s old")
            continue
        else:
            finding = report.add(WARNING, "metadata without a session", path)
        if fix:
            recheck = partial(_removable_meta, store, sid, path)
            repair(report, finding, path, partial(unlink_if, store, sid, path, recheck))


def _meta_problem(path: Path) -> str | None:
    """Why a metadata file cannot be used as it is, or None; raises OSError if it cannot be
    read (NotRegularFile for a FIFO or a device)."""
    try:
        meta = json.loads(read_regular(path, limit=META_LIMIT))
    except (ValueError, RecursionError) as e:
        return f"not valid JSON: {e}"
    problems = clean_meta(meta)[1]
    return "; ".join(problems) if problems else None


def _rebuilt_meta(store: Store, sid: str) -> dict | None:
    """The metadata file as ``fix`` rewrites it: the fields that are fine (non-text ones left
    out, a title of megabytes shortened), or None if nothing is left (then it is removed)."""
    meta, _ = store.checked_meta(sid)
    return meta or None


def _rewrite_meta(store: Store, sid: str, path: Path, meta: dict) -> None:
    """Replace a metadata file with ``meta`` under the session's lock, if it still needs it.
    Only metadata is written: the memory file is never touched."""
    with store.lock(sid):
        try:
            if _meta_problem(path) is None:
                raise Changed
        except NotRegularFile:
            pass
        atomic_write(path, dump_json(meta, indent=2) + b"\n")
