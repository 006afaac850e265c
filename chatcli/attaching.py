"""Attaching sources from the command line or the REPL: sql.attach.attach_sources with the
terminal's part (a progress bar for a long import, the settings, what to say afterwards).

`attach-db`, `new --db`, `ask --db` and `/attach` all come through :func:`attach`; the caller
brings its own yes/no question (typer's in cli, prompt_toolkit's in the REPL) or None when input
is not a terminal, and prints :func:`report`'s lines its own way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import config

if TYPE_CHECKING:
    from .render import Terminal
    from .sql.attach import Attached
    from .store import Store

__all__ = ["attach", "report"]


def attach(
    store: Store,
    term: Terminal,
    sid: str,
    sources: Sequence[str | Path],
    *,
    replace: bool = False,
    confirm: Callable[[str], bool] | None = None,
    settings: config.Settings | None = None,
) -> Attached:
    """Attach `sources` to session `sid` (see sql.attach.attach_sources), with a progress bar on
    stderr when an import takes more than a second on a terminal."""
    from .render import ImportProgress
    from .sql.attach import attach_sources

    settings = settings or config.Settings()
    label = "importing " + ", ".join(Path(str(s)).name for s in sources)
    with ImportProgress(term.err, label) as bar:
        return attach_sources(
            store,
            sid,
            sources,
            replace=replace,
            confirm=confirm,
            progress=bar,
            timeout=settings["sql_timeout"],
            allow_superuser=settings["pg_allow_superuser"],
        )


def report(done: Attached, sid: str | None = None) -> tuple[list[str], list[str]]:
    """What to say after an attach: (what was attached, notes for stderr)."""
    notes = list(done.notes)
    if done.kept is not None:
        notes.append(f"(the previous copy is kept in {done.kept})")
    return done.lines(sid), notes
