"""Everything chatcli prints: the terminal context, sanitize, notes, errors, tables, shortening.

Everything printed here passes through :func:`sanitize` first, so text from the model or
from files can never emit raw terminal escape sequences.  When a console is not a terminal
(piped output, tests) nothing is rendered: text is written through as-is, so scripts see
exactly what the model said, with no escape codes.  Streamed replies: :mod:`chatcli.mdstream`.
"""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO

# Rich's modules are imported where they are used: `chatcli list` piped to a file must not pay
# ~40 ms for rich.markdown (and pygments, markdown-it) that it never uses, nor ~50 ms for a
# Console it never prints through.
if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "ImportProgress",
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
    "write_plain",
]

TITLE_CELLS = 60  # a title in the session listing, in terminal cells

# --------------------------------------------------------------------------- sanitize


def _build_control_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in range(0x20):
        if code not in (0x09, 0x0A):  # tab and newline are layout, not control
            table[code] = chr(0x2400 + code)  # Unicode "control pictures": ESC -> ␛
    table[0x7F] = "\u2421"  # ␡
    for code in range(0x80, 0xA0):
        # C1 controls have no control pictures; CSI (0x9b) alone can start a sequence
        table[code] = f"\\x{code:02x}"
    return table


_CONTROL_TABLE = _build_control_table()


def sanitize(text: str) -> str:
    """Replace terminal control characters (except newline and tab) with visible placeholders.

    C0 controls become their Unicode control picture (ESC -> "␛", BEL -> "␇", CR -> "␍"),
    DEL becomes "␡" and C1 controls become ``\\xNN``.  Everything else, including emoji,
    CJK and right-to-left text, is returned unchanged.
    """
    return text.translate(_CONTROL_TABLE)


_SURROGATE = re.compile("[\ud800-\udfff]")


def shorten(text: str, cells: int) -> str:
    """``text`` on one line, cut to at most ``cells`` terminal cells with "…" when it is longer.

    Cells, not characters: a CJK character or an emoji takes two columns, so a title cut by
    character count would take up to twice the room.  Lone surrogates (from a broken terminal or
    another tool) cannot be printed and become U+FFFD.
    """
    from rich.cells import cell_len, set_cell_size

    text = " ".join(_SURROGATE.sub("\ufffd", text).split())
    if cell_len(text) <= cells:
        return text
    # set_cell_size pads with a space where a wide character would straddle the edge
    return set_cell_size(text, max(0, cells - 1)).rstrip() + "…"


# --------------------------------------------------------------------------- the terminal


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


@dataclass
class Terminal:
    """The terminal context: built once (in cli) and passed down, as httpie's ``Environment``.

    The three streams, whether each is a terminal, and the two consoles made from them on first
    use: ``out`` (stdout) for replies and results, ``err`` (stderr) for status and errors.
    Tests use :meth:`in_memory` instead of the process's streams.
    """

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    stdin_isatty: bool
    stdout_isatty: bool
    stderr_isatty: bool
    # None: Rich decides from the stream (and honours FORCE_COLOR, TTY_COMPATIBLE)
    force_terminal: bool | None = None
    color_system: str | None = "auto"  # Rich's names; None: no colour at all
    width: int | None = None  # None: the terminal's own (80 when not a terminal)
    environ: Mapping[str, str] | None = None  # what Rich reads NO_COLOR etc. from; None: os
    _consoles: dict[str, Console] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_sys(cls) -> Terminal:
        """The process's own streams."""
        return cls(
            sys.stdin,
            sys.stdout,
            sys.stderr,
            stdin_isatty=_isatty(sys.stdin),
            stdout_isatty=_isatty(sys.stdout),
            stderr_isatty=_isatty(sys.stderr),
        )

    @classmethod
    def in_memory(
        cls,
        stdin: str = "",
        *,
        terminal: bool = False,
        color_system: str | None = None,
        width: int = 80,
    ) -> Terminal:
        """StringIO streams that all are (or all are not) a terminal; an empty environment, so
        the outcome does not depend on the NO_COLOR or COLUMNS of whoever runs the tests."""
        return cls(
            io.StringIO(stdin),
            io.StringIO(),
            io.StringIO(),
            stdin_isatty=terminal,
            stdout_isatty=terminal,
            stderr_isatty=terminal,
            force_terminal=terminal,
            color_system=color_system,
            width=width,
            environ={},
        )

    @property
    def out(self) -> Console:
        """Replies, tables, listings: stdout."""
        return self._console("out")

    @property
    def err(self) -> Console:
        """Notes, status, errors: stderr."""
        return self._console("err")

    @property
    def color(self) -> bool:
        """Whether replies on stdout get colours."""
        return self.out.color_system is not None

    def _console(self, which: str) -> Console:
        console = self._consoles.get(which)
        if console is None:
            from rich.console import Console

            console = Console(
                file=self.stderr if which == "err" else self.stdout,
                stderr=which == "err",
                force_terminal=self.force_terminal,
                color_system=self.color_system,  # type: ignore[arg-type]
                width=self.width,
                # Rich's repr highlighter would colour ids and numbers in sentences at random
                highlight=False,
                _environ=self.environ,
            )
            self._consoles[which] = console
        return console


def print_stdout_table(
    term: Terminal, columns: list[str], rows: Sequence[Sequence[object]], *, note: str | None = None
) -> None:
    """A table on stdout; when stdout is not a terminal, without loading Rich's console at all."""
    if term.stdout_isatty:
        print_table(term.out, columns, rows, note=note)
    else:
        term.stdout.write(_plain_table(columns, rows, note=note))
        term.stdout.flush()


def write_plain(console: Console, text: str) -> None:
    """Write ``text`` (already sanitized) to the console's file as it is."""
    # Straight to the file, not console.print: Rich would expand tabs and wrap long lines,
    # and an explicitly forced colour system would add style codes even to a pipe.
    file = console.file
    file.write(text)
    file.flush()


def say(stream: TextIO, text: str) -> None:
    """One plain line of chatcli's own (a success line, a hint) on ``stream``, sanitized as error
    lines are: a title or a file name in it cannot emit a raw ESC or C1 control. Lone surrogates
    (a file name that is not UTF-8) become U+FFFD instead of failing to encode."""
    stream.write(_SURROGATE.sub("\ufffd", sanitize(text)) + "\n")
    stream.flush()


# A C1 control (U+0080..U+009F) in UTF-8 is C2 80..C2 9F; DEL is 7F. json.dumps escapes only C0.
_RAW_IN_JSON = re.compile(b"\xc2[\x80-\x9f]|\x7f")


def terminal_json(data: bytes) -> bytes:
    """UTF-8 JSON made safe for a terminal: C1 controls and DEL, which ``json.dumps`` leaves raw,
    become ``\\u009b``-style escapes (the same value once parsed). JSON is ASCII outside its
    strings, so they can only occur inside one. Pipes and files get the exact bytes instead."""
    return _RAW_IN_JSON.sub(lambda m: b"\\u%04x" % ord(m[0].decode("utf-8")), data)


def error_line(message: str) -> str:
    """``chatcli: error: <message>``, sanitized and on one line: the one form of every error."""
    return f"chatcli: error: {' '.join(sanitize(message).strip().splitlines())}"


def print_error(console: Console, message: str) -> None:
    """Print one red :func:`error_line` (the caller passes a stderr console)."""
    line = error_line(message)
    if console.is_terminal:
        from rich.text import Text

        # soft_wrap: one logical line; let the terminal wrap it rather than Rich
        console.print(Text(line, style="red"), soft_wrap=True)
    else:
        write_plain(console, line + "\n")


def print_note(console: Console, message: str) -> None:
    """Print a dim informational line."""
    text = sanitize(message)
    if console.is_terminal:
        from rich.text import Text

        console.print(Text(text, style="dim"))
    else:
        write_plain(console, text if text.endswith("\n") else text + "\n")


def print_styled(console: Console, *parts: tuple[str, str]) -> None:
    """One line from (text, style) parts; the text is never read as Rich markup, so a title
    with [brackets] prints as it is. Plain text when not a terminal."""
    if not console.is_terminal:
        write_plain(console, sanitize("".join(text for text, _ in parts)) + "\n")
        return
    from rich.text import Text

    console.print(Text.assemble(*((sanitize(text), style) for text, style in parts)))


def print_markdown(console: Console, text: str, *, code_theme: str = "monokai") -> None:
    """Print a whole message (e.g. when replaying history): Markdown on a terminal, else plain."""
    safe = sanitize(text)
    if console.is_terminal:
        from rich.markdown import Markdown

        console.print(Markdown(safe, code_theme=code_theme))
    elif safe:
        write_plain(console, safe if safe.endswith("\n") else safe + "\n")


# --------------------------------------------------------------------------- tables


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


class Waiting:
    """A transient spinner line while nothing has arrived yet (a terminal only): a slow server
    or the first LangChain import must not look like a hang."""

    def __init__(self, console: Console, text: str = "waiting for the model…") -> None:
        self.console = console
        self.text = text
        self._status: Any = None

    def start(self) -> None:
        if self.console.is_terminal and self._status is None:
            from rich.text import Text

            self._status = self.console.status(Text(self.text, style="dim"))
            self._status.start()

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


class ImportProgress:
    """A progress bar on a console for an import that has taken more than `delay` seconds (a
    terminal only: nothing at all otherwise). Use it as a context manager and give it as the
    import's progress callback: ``bar(bytes_done, bytes_total)``."""

    def __init__(self, console: Console, label: str = "importing", *, delay: float = 1.0) -> None:
        self.console = console
        self.label = label
        self.delay = delay
        self._start = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ImportProgress:
        self._start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()  # transient: the bar goes, what is printed next takes its line
            self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if not self.console.is_terminal or time.monotonic() - self._start < self.delay:
                return
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}", style="dim"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(sanitize(self.label), total=max(total, 1))
        self._bar.update(self._task, completed=done, total=max(total, 1))
