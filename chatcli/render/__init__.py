"""Everything chatcli prints: the terminal context, sanitize, notes, errors, tables, shortening.

Everything printed here passes through :func:`sanitize` first, so text from the model or
from files can never emit raw terminal escape sequences.  When a console is not a terminal
(piped output, tests) nothing is rendered: text is written through as-is, so scripts see
exactly what the model said, with no escape codes.  Streamed replies: :mod:`chatcli.mdstream`.

The modules: :mod:`.terminal` (Terminal, sanitize, shorten, say, terminal_json,
write_json, write_plain),
:mod:`.lines` (errors, notes, styled lines, Markdown), :mod:`.tables` (tables, search hits, the
session listing), :mod:`.progress` (Waiting, ImportProgress).  None imports Rich at load time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .lines import error_line, print_error, print_markdown, print_note, print_styled
from .terminal import (
    Terminal,
    sanitize,
    say,
    shorten,
    terminal_json,
    write_json,
    write_plain,
)

if TYPE_CHECKING:
    from .progress import ImportProgress, Waiting
    from .tables import (
        TITLE_CELLS,
        SessionRow,
        print_search_hits,
        print_sessions,
        print_stdout_table,
        print_table,
    )

# Tables and progress bars load on first use (PEP 562): every command imports this package for
# its Terminal and error line, and each module file loaded costs start-up time.
_LAZY = {
    "ImportProgress": "progress",
    "Waiting": "progress",
    "TITLE_CELLS": "tables",
    "SessionRow": "tables",
    "print_search_hits": "tables",
    "print_sessions": "tables",
    "print_stdout_table": "tables",
    "print_table": "tables",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "TITLE_CELLS",
    "ImportProgress",
    "SessionRow",
    "Terminal",
    "Waiting",
    "error_line",
    "print_error",
    "print_markdown",
    "print_note",
    "print_search_hits",
    "print_sessions",
    "print_stdout_table",
    "print_styled",
    "print_table",
    "sanitize",
    "say",
    "shorten",
    "terminal_json",
    "write_json",
    "write_plain",
]
