"""Tables: query results, search hits and the session listing; Rich on a terminal, aligned
plain text otherwise."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from .lines import print_note
from .terminal import Terminal, sanitize, shorten, write_plain

# Rich's modules are imported where they are used: `chatcli list` piped to a file must not pay
# ~40 ms for rich.markdown (and pygments, markdown-it) that it never uses, nor ~50 ms for a
# Console it never prints through.
if TYPE_CHECKING:
    from rich.console import Console

TITLE_CELLS = 60  # a title in the session listing, in terminal cells


def print_stdout_table(
    term: Terminal, columns: list[str], rows: Sequence[Sequence[object]], *, note: str | None = None
) -> None:
    """A table on stdout; when stdout is not a terminal, without loading Rich's console at all."""
    if term.stdout_isatty:
        print_table(term.out, columns, rows, note=note)
    else:
        term.stdout.write(_plain_table(columns, rows, note=note))
        term.stdout.flush()


def _cell(value: object) -> str:
    if value is None:
        return "NULL"  # distinguishable from an empty string in query results
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 32 else f"<{len(value)} bytes>"
    return sanitize(str(value))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def print_table(
    console: Console,
    columns: list[str],
    rows: Sequence[Sequence[object]],
    *,
    title: str | None = None,
    note: str | None = None,
) -> None:
    """Print rows as a table: a Rich Table on a terminal, aligned plain text otherwise.

    ``None`` is shown as ``NULL``; columns whose values are all numbers are right-aligned.
    ``note`` is printed as a dim line after the table (e.g. "42 rows, truncated").
    """
    if not console.is_terminal:
        write_plain(console, _plain_table(columns, rows, title=title, note=note))
        return
    from rich.table import Table
    from rich.text import Text

    numeric = _numeric_columns(columns, rows)
    table = Table(title=Text(sanitize(title)) if title else None, title_justify="left")
    for name, right in zip(columns, numeric, strict=True):
        # Text objects, never str: a str cell would be parsed as Rich markup
        table.add_column(Text(sanitize(name)), justify="right" if right else "left")
    for row in rows:
        table.add_row(
            *(
                Text(
                    _cell(row[i]) if i < len(row) else "",
                    style="dim" if i < len(row) and row[i] is None else "",
                )
                for i in range(len(columns))
            )
        )
    console.print(table)
    if note:
        print_note(console, note)


def _numeric_columns(columns: list[str], rows: Sequence[Sequence[object]]) -> list[bool]:
    """Columns whose values are all numbers (None aside): right-aligned."""
    return [
        any(_is_number(row[i]) for row in rows if i < len(row))
        and all(row[i] is None or _is_number(row[i]) for row in rows if i < len(row))
        for i in range(len(columns))
    ]


def _plain_table(
    columns: list[str],
    rows: Sequence[Sequence[object]],
    *,
    title: str | None = None,
    note: str | None = None,
) -> str:
    """Aligned plain text: one physical line per row, so a newline inside a value is shown as ↵."""
    from rich.cells import cell_len

    numeric = _numeric_columns(columns, rows)
    flat = [
        [
            (_cell(row[i]) if i < len(row) else "").replace("\n", "\u21b5").replace("\t", " ")
            for i in range(len(columns))
        ]
        for row in rows
    ]
    header = [sanitize(name).replace("\n", " ") for name in columns]
    widths = [
        max([cell_len(header[i]), *(cell_len(r[i]) for r in flat)]) for i in range(len(columns))
    ]

    def fmt(values: list[str]) -> str:
        parts = []
        for value, width, right in zip(values, widths, numeric, strict=True):
            pad = " " * (width - cell_len(value))
            parts.append(pad + value if right else value + pad)
        return "  ".join(parts).rstrip()

    lines = [sanitize(title)] if title else []
    lines.append(fmt(header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt(r) for r in flat)
    if note:
        lines.append(sanitize(note))
    return "\n".join(lines) + "\n"


def print_search_hits(
    term: Terminal, hits: Sequence[tuple[str, str, str, Sequence[tuple[str, bool]]]]
) -> None:
    """Search results on stdout, two lines each: id, date and title, then the snippet, given as
    (text, matched) pieces; matches highlighted on a terminal. When stdout is not a terminal no
    Rich console is even loaded."""
    if not term.stdout_isatty:
        term.stdout.write(
            "".join(
                f"{sid}  {date}  {sanitize(title)}\n"
                f"    {sanitize(''.join(piece for piece, _ in pieces))}\n"
                for sid, date, title, pieces in hits
            )
        )
        term.stdout.flush()
        return
    console = term.out
    from rich.text import Text

    for sid, date, title, pieces in hits:
        line = Text(sid, style="cyan")
        line.append(f"  {date}  ", style="dim").append(sanitize(title), style="bold")
        snippet = Text("    ")
        for piece, matched in pieces:
            snippet.append(sanitize(piece), style="bold reverse" if matched else "")
        console.print(line, soft_wrap=True)
        console.print(snippet)


class SessionRow(Protocol):
    """What a listing shows of a session (the store's SessionInfo)."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def damaged(self) -> str | None: ...
    @property
    def messages(self) -> int: ...
    @property
    def updated_ns(self) -> int: ...
    @property
    def model(self) -> str: ...
    @property
    def has_db(self) -> bool: ...


def print_sessions(
    term: Terminal,
    rows: Sequence[SessionRow],
    *,
    short: Mapping[str, str],
    note: str | None = None,
) -> None:
    """The session listing (``chatcli list`` and ``/list``): ``short`` maps ids to the shortest
    unique prefix shown instead; titles are cut to :data:`TITLE_CELLS` cells."""
    now = time.time()
    table = [
        (
            short.get(r.id, r.id),
            _damage_mark(r.damaged) if r.damaged else shorten(r.title, TITLE_CELLS),
            "?" if r.damaged else str(r.messages),
            _relative(r.updated_ns / 1e9, now),
            r.model,
            "yes" if r.has_db else "",
        )
        for r in rows
    ]
    print_stdout_table(term, ["id", "title", "msgs", "updated", "model", "db"], table, note=note)


def _damage_mark(damaged: str) -> str:
    # the store's "NOT A FILE: a named pipe (FIFO)" says what it is; anything else is damage
    return damaged if damaged.startswith("NOT A FILE") else f"DAMAGED: {damaged}"


def _relative(ts: float, now: float) -> str:
    delta = max(0, now - ts)
    if delta < 60:
        return "just now"
    if delta < 3600:
        return f"{int(delta // 60)} min ago"
    if delta < 86400:
        return f"{int(delta // 3600)} h ago"
    if delta < 7 * 86400:
        return f"{int(delta // 86400)} d ago"
    return time.strftime("%Y-%m-%d", time.localtime(ts))
