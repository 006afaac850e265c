"""The doctor's checks of the indexes: the listing (index.sqlite) and search.sqlite, which are
caches of the folders that ``fix`` rebuilds."""

from __future__ import annotations

import os
import sqlite3
from functools import partial
from pathlib import Path

from ..errors import StorageError
from ..store import INDEX_FILE, MEMORY_DIR, SEARCH_FILE, Store, cachedb, listing, search
from .report import INFO, WARNING, Report, repair


def check_index(store: Store, report: Report, sessions: dict, *, fix: bool) -> None:
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

    repair(report, finding, path, rebuild)


def check_search_index(store: Store, report: Report, *, fix: bool) -> None:
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
        repair(report, finding, path, partial(search.rebuild, store))


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
