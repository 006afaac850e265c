"""``chatcli doctor``: check a storage folder and, with ``fix``, repair what is chatcli's own.

Memory files and databases are the user's data: the doctor reads them and never writes, moves
or deletes one. What ``fix`` may touch is what chatcli can rebuild or never needed: the listing
and search indexes, metadata files without a session or that cannot be parsed, and temp files
left behind by saves that were killed. A session may be created, trashed or restored while the
doctor runs, so each file is removed under its session's lock, and only if it is still what was
found. A fix that fails (a read-only folder) is reported as a finding, never raised.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from .errors import ChatcliError, StorageError
from .sql import SQLITE_HEADER as _SQLITE_MAGIC
from .store import (
    INDEX_FILE,
    MEMORY_DIR,
    SEARCH_FILE,
    Store,
    atomic_write,
    cachedb,
    listing,
    parse_messages,
    search,
)
from .store.files import NotRegularFile, read_regular, scandir
from .store.layout import MEMORY_LIMIT, META_LIMIT, UUID_RE, clean_meta
from .store.messages import dump_json

ERROR, WARNING, INFO = "error", "warning", "info"
STALE_TEMP_SECONDS = 60.0  # younger temp files may belong to a save in progress

# atomic_write's ".<name>.<pid>.tmp" and copy_database's ".<name>.<random>.tmp" (+ journal)
_TEMP_FILE_RE = re.compile(r"\..+\.tmp(-journal|-wal|-shm)?")

# What the user can do about each kind of finding.
ADVICE = {
    "damaged session": "chatcli leaves it exactly as it is: it is listed as DAMAGED and resume "
    "refuses it. Repair the JSON by hand or restore it from a backup.",
    "unreadable file": "give your user read permission on it (chatcli never changes it).",
    "damaged database": "the session's database copy cannot be read (not SQLite, damaged, or "
    "put in WAL mode by another program); the chat goes on without it. Attach the original "
    "again with 'chatcli attach-db ID PATH' (or /attach PATH), which replaces the copy, or "
    "remove it with /detach.",
    "database without a session": "a database copy whose session file is missing (and not in "
    "the trash). The doctor never touches databases; if the session file was lost, restore it "
    "from a backup.",
    "leftover temp file": "left by a save that was killed; the session file is intact. "
    "'chatcli doctor --fix' removes it.",
    "metadata without a session": "'chatcli doctor --fix' removes it.",
    "not a file": "a FIFO, device or socket named like chatcli's file: chatcli never opens it "
    "(a session file is listed as NOT A FILE and cannot be resumed). Move it away; metadata of "
    "that kind 'chatcli doctor --fix' removes.",
    "linked session file": "the session file is a symbolic link: chatcli lists, searches and "
    "exports it but never writes through a link, so resume refuses it. Replace the link with a "
    "copy of its target to continue the session.",
    "saves fail": "chatcli cannot save here until this is put right: move the file away (chatcli "
    "makes its folders and lock files again) or make the folder writable.",
    "not chatcli's file": "a file chatcli did not make has the name of one of its caches; "
    "chatcli never changes it: it moves it aside (to <name>.not-chatcli-<time>, as "
    "'chatcli doctor --fix' does now) and builds its own.",
    "damaged metadata": "'chatcli doctor --fix' removes it, or rebuilds it from the fields that "
    "are fine; the session then takes its title from its first message.",
    "damaged index": "'chatcli doctor --fix' rebuilds it (it is only a cache of memory/ and "
    "meta/).",
    "stale index": "'chatcli doctor --fix' rebuilds it (it is only a cache of memory/ and meta/).",
    "damaged search index": "'chatcli doctor --fix' rebuilds it (it is only a cache of memory/).",
    "could not fix": "the storage folder could not be changed (read-only, full, or not yours); "
    "make it writable and run 'chatcli doctor --fix' again.",
    "storage open to others": "run 'chmod 700' on the storage folder: sessions are private.",
}


@dataclass(frozen=True)
class Finding:
    """One observation. ERROR: user data needs the user; WARNING: ``fix`` repairs it, or the
    user should decide; INFO: fine as it is."""

    level: str
    problem: str
    path: Path
    detail: str = ""
    fixed: bool = False


@dataclass
class Report:
    """What ``check`` found in one storage folder."""

    root: Path
    sessions: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        """Errors and warnings that are still there (not fixed)."""
        return [f for f in self.findings if f.level != INFO and not f.fixed]

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, level: str, problem: str, path: Path, detail: str = "") -> Finding:
        finding = Finding(level, problem, path, detail)
        self.findings.append(finding)
        return finding

    def mark_fixed(self, finding: Finding) -> None:
        self.findings[self.findings.index(finding)] = replace(finding, fixed=True)

    def mark_left_alone(self, finding: Finding) -> None:
        """The file changed while being checked (a session appeared, say): not a problem now."""
        self.findings[self.findings.index(finding)] = replace(
            finding, level=INFO, detail="changed meanwhile; left as it is"
        )


def check(store: Store, *, fix: bool = False, now: float | None = None) -> Report:
    """Check every file under the storage root; with ``fix``, repair indexes, metadata and temp
    files (never a memory file or a database). Raises StorageError if the root is unreadable."""
    now = time.time() if now is None else now
    report = Report(store.root)
    if not store.root.exists():
        report.add(INFO, "no storage folder yet", store.root, "created by the first session")
        return report
    try:
        mode = store.root.stat().st_mode
        os.listdir(store.root)  # every check below reads in it
    except OSError as e:
        raise StorageError(f"cannot read storage folder: {e.strerror}", path=store.root) from e
    if mode & 0o077:
        report.add(WARNING, "storage open to others", store.root, f"mode {mode & 0o777:o}")
    _check_saving(store, report)
    sessions = _check_memory(store, report, fix=fix, now=now)
    trashed = _trashed(store, report)
    _check_databases(store, report, sessions, trashed, fix=fix, now=now)
    _check_metadata(store, report, sessions, trashed, fix=fix, now=now)
    _check_index(store, report, sessions, fix=fix)
    _check_search_index(store, report, fix=fix)
    report.sessions = len(sessions)
    return report


# ---------------------------------------------------------------------------------------------
# Fixing


class _Changed(Exception):
    """The file changed while being checked: the fix no longer applies."""


def _repair(
    report: Report, finding: Finding | None, path: Path, action: Callable[[], object]
) -> None:
    """Run ``action`` and mark ``finding`` fixed; a failure is reported as a "could not fix"
    finding instead of raised."""
    try:
        action()
    except _Changed:
        if finding is not None:
            report.mark_left_alone(finding)
        return
    except (OSError, sqlite3.Error, ChatcliError) as e:
        reason = e.message if isinstance(e, ChatcliError) else None
        report.add(WARNING, "could not fix", path, reason or getattr(e, "strerror", None) or str(e))
        return
    if finding is not None:
        report.mark_fixed(finding)


def _unlink_if(store: Store, sid: str | None, path: Path, still_bad: Callable[[], bool]) -> None:
    """Delete ``path`` under the session's lock (saves, trash and restore hold it), if
    ``still_bad()``, asked again under the lock, says it should still go."""
    with store.lock(sid) if sid else contextlib.nullcontext():
        try:
            if not still_bad():
                raise _Changed
            path.unlink()
        except FileNotFoundError as e:  # gone meanwhile
            raise _Changed from e


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


def _check_saving(store: Store, report: Report) -> None:
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


def _trashed(store: Store, report: Report) -> set[str]:
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
        _repair(report, finding, path, partial(_unlink_if, store, sid, path, recheck))
    return True


def _stale(path: Path, now: float) -> bool:
    return now - path.stat().st_mtime >= STALE_TEMP_SECONDS


def _check_memory(
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


def _check_databases(
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
    from .errors import InvalidDatabase
    from .sql import ReadOnlyDatabase

    try:
        ReadOnlyDatabase(path).close()
    except InvalidDatabase as e:
        return e.message
    return None


def _check_metadata(
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
                _repair(report, finding, path, action)
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
            _repair(report, finding, path, partial(_unlink_if, store, sid, path, recheck))


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
                raise _Changed
        except NotRegularFile:
            pass
        atomic_write(path, dump_json(meta, indent=2) + b"\n")


# ---------------------------------------------------------------------------------------------
# The indexes


def _check_index(store: Store, report: Report, sessions: dict, *, fix: bool) -> None:
    path = store.root / INDEX_FILE
    finding = None
    if not os.path.lexists(path):
        if not fix:
            report.add(INFO, "no listing index yet", path, "the next 'chatcli list' builds it")
    elif why := _foreign(path, listing.TABLES):
        finding = report.add(WARNING, "not chatcli's file", path, why)
    elif damage := _sqlite_damage(path, "SELECT id, messages, mem_mtime, mem_size FROM sessions"):
        finding = report.add(WARNING, "damaged index", path, damage)
    else:
        # What `chatcli list` would show (the index refreshes itself when folders change),
        # against what the files say. A difference means the listing cannot see a change.
        stale = _index_disagreements(store, sessions)
        if not stale:
            return
        finding = report.add(
            WARNING,
            "stale index",
            path,
            f"{len(stale)} rows disagree with the files, e.g. {stale[0]}",
        )
    if not fix:
        return

    def rebuild() -> None:
        cachedb.remove(path, listing.TABLES, None)  # a file not chatcli's is moved aside
        if (store.root / MEMORY_DIR).is_dir():
            store.list_sessions()  # builds it afresh

    _repair(report, finding, path, rebuild)


def _check_search_index(store: Store, report: Report, *, fix: bool) -> None:
    path = store.root / SEARCH_FILE
    if not os.path.lexists(path):  # the first search builds it
        return
    if why := _foreign(path, search.TABLES):
        finding = report.add(WARNING, "not chatcli's file", path, why)
    elif damage := _sqlite_damage(path, "SELECT id, mtime, size, count FROM files"):
        finding = report.add(WARNING, "damaged search index", path, damage)
    else:
        return
    if fix:
        _repair(report, finding, path, partial(search.rebuild, store))


def _foreign(path: Path, tables: tuple[str, ...]) -> str | None:
    """Why a cache file (or one of its journals) is not chatcli's, or None."""
    if why := cachedb.foreign(path, tables):
        return why
    for suffix in cachedb.SIDECARS:
        side = Path(f"{path}{suffix}")
        if os.path.lexists(side) and (kind := cachedb.foreign(side, ())) == "is a symbolic link":
            return f"its journal {side.name} {kind}"
    return None


def _sqlite_damage(path: Path, probe: str) -> str | None:
    """Why an index file cannot serve, or None. Opened read-only: its content never changes."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                return f"quick_check: {result}"
            conn.execute(f"{probe} LIMIT 1").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        return str(e)
    return None


def _index_disagreements(store: Store, sessions: dict) -> list[str]:
    try:
        listed = {row.id: row for row in store.list_sessions()}
    except (StorageError, sqlite3.Error) as e:
        return [f"listing failed: {e}"]
    stale = [f"{sid} missing" for sid in sessions if sid not in listed]
    stale += [f"{sid} gone" for sid in listed if sid not in sessions]
    for sid, (_, _, count) in sessions.items():
        row = listed.get(sid)
        if row is None:
            continue
        if (row.damaged is None) != (count is not None):
            stale.append(f"{sid} damaged={row.damaged is not None}")
        elif count is not None and row.messages != count:
            stale.append(f"{sid} shows {row.messages} messages, has {count}")
    return stale


def relative(report: Report, path: Path) -> str:
    """``path`` relative to the storage root, for display."""
    try:
        return str(path.relative_to(report.root)) or "."
    except ValueError:
        return str(path)
