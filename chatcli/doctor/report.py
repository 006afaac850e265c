"""What the doctor finds (levels, advice, Finding, Report) and how a fix is recorded in it."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import ChatcliError
from ..store import Store

ERROR, WARNING, INFO = "error", "warning", "info"

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


def relative(report: Report, path: Path) -> str:
    """``path`` relative to the storage root, for display."""
    try:
        return str(path.relative_to(report.root)) or "."
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# Fixing


class Changed(Exception):
    """The file changed while being checked: the fix no longer applies."""


def repair(
    report: Report, finding: Finding | None, path: Path, action: Callable[[], object]
) -> None:
    """Run ``action`` and mark ``finding`` fixed; a failure is reported as a "could not fix"
    finding instead of raised."""
    try:
        action()
    except Changed:
        if finding is not None:
            report.mark_left_alone(finding)
        return
    except (OSError, sqlite3.Error, ChatcliError) as e:
        reason = e.message if isinstance(e, ChatcliError) else None
        report.add(WARNING, "could not fix", path, reason or getattr(e, "strerror", None) or str(e))
        return
    if finding is not None:
        report.mark_fixed(finding)


def unlink_if(store: Store, sid: str | None, path: Path, still_bad: Callable[[], bool]) -> None:
    """Delete ``path`` under the session's lock (saves, trash and restore hold it), if
    ``still_bad()``, asked again under the lock, says it should still go."""
    with store.lock(sid) if sid else contextlib.nullcontext():
        try:
            if not still_bad():
                raise Changed
            path.unlink()
        except FileNotFoundError as e:  # gone meanwhile
            raise Changed from e
