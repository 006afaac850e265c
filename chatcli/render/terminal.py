"""The terminal context, and the text primitives every printer uses: sanitize, shorten, say.

:class:`Terminal` holds the streams and makes the two Rich consoles on first use;
:func:`write_plain` is how anything reaches a console that is not a terminal.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from ..text import replace_surrogates

# Rich's modules are imported where they are used: `chatcli list` piped to a file must not pay
# ~40 ms for rich.markdown (and pygments, markdown-it) that it never uses, nor ~50 ms for a
# Console it never prints through.
if TYPE_CHECKING:
    from rich.console import Console

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
    DEL becomes "␡" and C1 controls become ``\\xNN``.  Lone surrogates (invalid UTF-8 that
    chatcli read with surrogateescape and keeps exactly in memory) become U+FFFD: a strict UTF-8
    stream could not print them.  Everything else, including emoji, CJK and right-to-left text,
    is returned unchanged.
    """
    return replace_surrogates(text).translate(_CONTROL_TABLE)


def shorten(text: str, cells: int) -> str:
    """``text`` on one line, cut to at most ``cells`` terminal cells with "…" when it is longer.

    Cells, not characters: a CJK character or an emoji takes two columns, so a title cut by
    character count would take up to twice the room.  Lone surrogates (from a broken terminal or
    another tool) cannot be printed and become U+FFFD.
    """
    from rich.cells import cell_len, set_cell_size

    text = " ".join(replace_surrogates(text).split())
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
    stream.write(sanitize(text) + "\n")
    stream.flush()


# A C1 control (U+0080..U+009F) in UTF-8 is C2 80..C2 9F; DEL is 7F. json.dumps escapes only C0.
_RAW_IN_JSON = re.compile(b"\xc2[\x80-\x9f]|\x7f")


def terminal_json(data: bytes) -> bytes:
    """UTF-8 JSON made safe for a terminal: C1 controls and DEL, which ``json.dumps`` leaves raw,
    become ``\\u009b``-style escapes (the same value once parsed). JSON is ASCII outside its
    strings, so they can only occur inside one. Pipes and files get the exact bytes instead."""
    return _RAW_IN_JSON.sub(lambda m: b"\\u%04x" % ord(m[0].decode("utf-8")), data)


def write_json(term: Terminal, data: bytes) -> None:
    """JSON (UTF-8 bytes, no newline) as one line on stdout: exact to a pipe or file; on a
    terminal with C1 controls and DEL escaped too (:func:`terminal_json`). Every JSON output
    (``list --json``, ``search --json``, ``ask --json``) goes out here."""
    if term.stdout_isatty:
        data = terminal_json(data)
    stream = term.stdout
    stream.flush()  # whatever text went before stays before
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text stream without bytes underneath (Terminal.in_memory)
        stream.write(data.decode("utf-8", "replace") + "\n")
        stream.flush()
        return
    buffer.write(data + b"\n")
    buffer.flush()
