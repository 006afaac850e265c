"""``chatcli doctor``: check a storage folder and, with ``fix``, repair what is chatcli's own.

Memory files and databases are the user's data: the doctor reads them and never writes, moves
or deletes one. What ``fix`` may touch is what chatcli can rebuild or never needed: the listing
and search indexes, metadata files without a session or that cannot be parsed, and temp files
left behind by saves that were killed. A session may be created, trashed or restored while the
doctor runs, so each file is removed under its session's lock, and only if it is still what was
found. A fix that fails (a read-only folder) is reported as a finding, never raised.

The modules: :mod:`.report` (levels, ADVICE, Finding, Report, recording a fix), :mod:`.folders`
(memory/, meta/, db/, locks/ and temp files), :mod:`.indexes` (the listing and search indexes).
"""

from __future__ import annotations

import os
import time

from ..errors import StorageError
from ..store import Store
from .folders import (
    STALE_TEMP_SECONDS,
    check_databases,
    check_memory,
    check_metadata,
    check_saving,
    trashed_ids,
)
from .indexes import check_index, check_search_index
from .report import ADVICE, ERROR, INFO, WARNING, Finding, Report, relative

__all__ = [
    "ADVICE",
    "ERROR",
    "INFO",
    "STALE_TEMP_SECONDS",
    "WARNING",
    "Finding",
    "Report",
    "check",
    "relative",
]


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
    check_saving(store, report)
    sessions = check_memory(store, report, fix=fix, now=now)
    trashed = trashed_ids(store, report)
    check_databases(store, report, sessions, trashed, fix=fix, now=now)
    check_metadata(store, report, sessions, trashed, fix=fix, now=now)
    check_index(store, report, sessions, fix=fix)
    check_search_index(store, report, fix=fix)
    report.sessions = len(sessions)
    return report
