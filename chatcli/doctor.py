"""``chatcli doctor``: check a storage folder and, with ``fix``, repair what is chatcli's own.

Memory files and databases are the user's data: the doctor reads them and never writes, moves
or deletes one. What ``fix`` may touch is what chatcli can rebuild or never needed: the listing
index, metadata files without a session or that cannot be parsed, and temp files left behind
by saves that were killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import StorageError
from .store import INDEX_FILE, MEMORY_DIR, Store, parse_messages

ERROR, WARNING, INFO = "error", "warning", "info"
STALE_TEMP_SECONDS = 60.0  # younger temp files may belong to a save in progress

_SESSION_FILE_RE = re.compile(
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"\.(json|db)"
)
# atomic_write's ".<name>.<pid>.tmp" and copy_database's ".<name>.<random>.tmp" (+ journal)
_TEMP_FILE_RE = re.compile(r"\..+\.tmp(-journal|-wal|-shm)?")
_SQLITE_MAGIC = b"SQLite format 3\0"

# What the user can do about each kind of finding.
ADVICE = {
    "damaged session": "chatcli leaves it exactly as it is: it is listed as DAMAGED and resume "
    "refuses it. Repair the JSON by hand or restore it from a backup.",
    "unreadable file": "give your user read permission on it (chatcli never changes it).",
    "damaged database": "the database copy is not SQLite: attach the original again with "
    "'chatcli attach-db ID PATH', or delete the copy.",
    "database without a session": "a database copy whose session is gone; delete it if you "
    "do not need it (the doctor never deletes databases).",
    "leftover temp file": "left by a save that was killed; the session file is intact. "
    "'chatcli doctor --fix' removes it.",
    "metadata without a session": "'chatcli doctor --fix' removes it.",
    "damaged metadata": "'chatcli doctor --fix' removes it; the session then takes its title "
    "from its first message.",
    "damaged index": "'chatcli doctor --fix' rebuilds it (it is only a cache of memory/ and "
    "meta/).",
    "stale index": "'chatcli doctor --fix' rebuilds it (it is only a cache of memory/ and meta/).",
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


def check(store: Store, *, fix: bool = False, now: float | None = None) -> Report:
    """Check every file under the storage root; with ``fix``, repair index, metadata and temp
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
    sessions = _check_memory(store, report, fix=fix, now=now)
    _check_databases(store, report, sessions, fix=fix, now=now)
    _check_metadata(store, report, sessions, fix=fix, now=now)
    _check_index(store, report, sessions, fix=fix)
    report.sessions = len(sessions)
    return report


# ---------------------------------------------------------------------------------------------
# The folders


def _entries(report: Report, folder: Path) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as e:
        report.add(ERROR, "unreadable file", folder, e.strerror or str(e))
        return []


def _session_id(name: str, suffix: str) -> str | None:
    match = _SESSION_FILE_RE.fullmatch(name)
    return match.group(1) if match and match.group(2) == suffix else None


def _temp_file(report: Report, entry: os.DirEntry[str], *, fix: bool, now: float) -> bool:
    """Handle ``entry`` if it is a temp file of an unfinished save; True if it was one."""
    if not _TEMP_FILE_RE.fullmatch(entry.name):
        return False
    path = Path(entry.path)
    with contextlib.suppress(OSError):
        age = now - entry.stat().st_mtime
        if age < STALE_TEMP_SECONDS:
            report.add(INFO, "temp file of a save in progress", path, f"{age:.0f} s old")
            return True
    finding = report.add(WARNING, "leftover temp file", path)
    if fix:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        report.mark_fixed(finding)
    return True


def _check_memory(
    store: Store, report: Report, *, fix: bool, now: float
) -> dict[str, tuple[int, int, int | None]]:
    """Parse every memory file; returns id -> (mtime_ns, size, messages or None if damaged)."""
    sessions: dict[str, tuple[int, int, int | None]] = {}
    for entry in _entries(report, store.memory_dir):
        path = Path(entry.path)
        if _temp_file(report, entry, fix=fix, now=now):
            continue
        sid = _session_id(entry.name, "json")
        if sid is None:
            report.add(INFO, "not a session file (ignored)", path)
            continue
        try:
            st = entry.stat()
            raw = path.read_bytes()
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
    store: Store, report: Report, sessions: dict, *, fix: bool, now: float
) -> None:
    for entry in _entries(report, store.db_dir):
        path = Path(entry.path)
        if _temp_file(report, entry, fix=fix, now=now):
            continue
        sid = _session_id(entry.name, "db")
        if sid is None:
            report.add(INFO, "not a database file (ignored)", path)
            continue
        try:
            with open(path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as e:
            report.add(ERROR, "unreadable file", path, e.strerror or str(e))
            continue
        if not head:
            report.add(INFO, "zero-byte database file", path, "no database attached")
        elif sid not in sessions:
            report.add(WARNING, "database without a session", path)
        elif head != _SQLITE_MAGIC:
            report.add(ERROR, "damaged database", path, "not an SQLite database")


def _check_metadata(store: Store, report: Report, sessions: dict, *, fix: bool, now: float) -> None:
    for entry in _entries(report, store.meta_dir):
        path = Path(entry.path)
        if _temp_file(report, entry, fix=fix, now=now):
            continue
        sid = _session_id(entry.name, "json")
        if sid is None:
            report.add(INFO, "not a metadata file (ignored)", path)
            continue
        if sid not in sessions:
            finding = report.add(WARNING, "metadata without a session", path)
        else:
            try:
                meta = json.loads(path.read_bytes())
            except OSError as e:
                report.add(ERROR, "unreadable file", path, e.strerror or str(e))
                continue
            except (ValueError, RecursionError) as e:
                meta, detail = None, f"not valid JSON: {e}"
            else:
                detail = "not a JSON object"
            if isinstance(meta, dict):
                continue
            finding = report.add(WARNING, "damaged metadata", path, detail)
        if fix:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            report.mark_fixed(finding)


# ---------------------------------------------------------------------------------------------
# The listing index


def _check_index(store: Store, report: Report, sessions: dict, *, fix: bool) -> None:
    path = store.root / INDEX_FILE
    finding = None
    if not path.exists():
        if not fix:
            report.add(INFO, "no listing index yet", path, "the next 'chatcli list' builds it")
    elif (damage := _index_damage(path)) is not None:
        finding = report.add(WARNING, "damaged index", path, damage)
    else:
        # What `chatcli list` would show (the index refreshes itself when folders change),
        # against what the files say. A difference means the listing cannot see a change.
        stale = _index_disagreements(store, sessions)
        if stale:
            finding = report.add(
                WARNING,
                "stale index",
                path,
                f"{len(stale)} rows disagree with the files, e.g. {stale[0]}",
            )
    if not fix:
        return
    for leftover in (path, *(Path(f"{path}{s}") for s in ("-journal", "-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    if (store.root / MEMORY_DIR).is_dir():
        store.list_sessions()  # builds it afresh
        from . import search

        search.rebuild(store)  # search.sqlite is a cache of memory/ too
    if finding is not None:
        report.mark_fixed(finding)


def _index_damage(path: Path) -> str | None:
    """Why index.sqlite cannot serve as the index, or None. Opened read-only: never changed."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                return f"quick_check: {result}"
            conn.execute("SELECT id, messages, mem_mtime, mem_size FROM sessions LIMIT 1")
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
