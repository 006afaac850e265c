"""One-line output on a console: errors, notes, styled lines, and a whole Markdown message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .terminal import sanitize, write_plain

# Rich's modules are imported where they are used: `chatcli list` piped to a file must not pay
# ~40 ms for rich.markdown (and pygments, markdown-it) that it never uses, nor ~50 ms for a
# Console it never prints through.
if TYPE_CHECKING:
    from rich.console import Console


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
