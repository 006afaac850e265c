"""The input side of the REPL: the PromptSession, its key bindings, toolbar and completer, and the
terminal settings around a turn. The only module that imports prompt_toolkit (on first use: a
piped chat never loads it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from ..render import print_note, sanitize, shorten
from .commands import COMMANDS

if TYPE_CHECKING:
    from .chat import Chat

TOOLBAR_TITLE_CELLS = 40


def build_prompt(chat: Chat) -> Any:
    """The PromptSession: history file, slash-command and id completion, toolbar, key bindings."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, History, InMemoryHistory

    from ..store.files import not_regular

    chat.store.ensure()
    path = chat.store.root / "input_history"
    history: History = _passwordless_history(FileHistory)(str(path))
    if (kind := not_regular(path, follow=False)) is not None:  # a FIFO would hang the REPL
        print_note(chat.err, f"input history kept for this run only: {path} is {kind}, not a file")
        history = InMemoryHistory()
    return PromptSession(
        message=[("class:prompt", "› ")],
        prompt_continuation="  ",  # lines after Esc Enter line up under the first one
        # input survives restarts and failed turns: Up brings back a message the server refused
        history=history,
        completer=completer(chat),
        # typing "/" lists the commands (the completer offers nothing for ordinary text)
        complete_while_typing=True,
        key_bindings=key_bindings(),
        bottom_toolbar=lambda: toolbar(chat),
        # Enter sends; Esc Enter / Alt+Enter inserts a newline (bound in key_bindings)
        multiline=False,
        # prefix search on Up would silently switch complete_while_typing off (prompt_toolkit
        # allows only one); Up still walks the history and Ctrl-R searches it
        enable_history_search=False,
    )


def _passwordless_history(file_history: type) -> type:
    """``FileHistory`` that writes each line with every URL's password removed: ``/attach
    postgresql://u:pw@host/db`` must not leave the password in input_history. Up brings back
    the line as typed during this run (it is kept in memory); later runs get it without."""
    from ..text import strip_passwords

    class PasswordlessFileHistory(file_history):  # type: ignore[misc, valid-type]
        def store_string(self, string: str) -> None:
            super().store_string(strip_passwords(string))

    return PasswordlessFileHistory


def key_bindings() -> Any:
    """Esc Enter inserts a newline; Ctrl-C clears a line, or on an empty one tells the loop."""
    from prompt_toolkit.key_binding import KeyBindings

    kb = KeyBindings()

    @kb.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    @kb.add("c-c")
    def _interrupt(event: Any) -> None:
        # Ctrl-C on a line with text clears it; on an empty line it tells the loop (to leave).
        buffer = event.current_buffer
        if buffer.text:
            buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt)

    return kb


def toolbar(chat: Chat) -> str:
    """The bottom line: title, model, short id, whether a database is attached, tokens."""
    if chat.session is None:
        return ""
    from .steer import toolbar_text

    db = " · db attached" if chat.has_db() else ""
    # /file: what goes with the next message, until it is sent
    db += "".join(f" · +{shorten(a.name, TOOLBAR_TITLE_CELLS)}" for a in chat.attachments)
    title = shorten(chat.title, TOOLBAR_TITLE_CELLS)
    tokens = toolbar_text(chat)  # the session's tokens, how full the context is
    text = f" {title} · {chat.model_name} · {chat.sid[:8]}{db}{' · ' + tokens if tokens else ''} "
    return sanitize(text)  # a title is the user's data: shown, never acted on


def completer(chat: Chat) -> Any:
    """Slash commands (and their aliases), and session ids after /switch."""
    from prompt_toolkit.completion import Completer, Completion

    class _SlashCompleter(Completer):
        def get_completions(self, document: Any, complete_event: Any) -> Any:
            text = document.text_before_cursor
            if not text.startswith("/"):
                return
            if " " not in text:
                for name, command in COMMANDS.items():
                    if name.startswith(text):
                        yield Completion(name, -len(text), display_meta=command.help)
            elif text.startswith("/model "):
                prefix = text[len("/model ") :].lstrip()
                for name in chat.known_models():  # what the server listed; never asks it here
                    if name.startswith(prefix):
                        yield Completion(name, -len(prefix))
            elif text.startswith("/switch "):
                prefix = text[len("/switch ") :].strip().lower()
                for info in chat.store.list_sessions(limit=200):
                    if info.id.startswith(prefix):
                        yield Completion(
                            info.id, -len(prefix), display=info.id[:8], display_meta=info.title
                        )

    return _SlashCompleter()


def confirm(question: str) -> bool:
    """Ask a yes/no question at the prompt."""
    from prompt_toolkit.shortcuts import confirm as ask

    return bool(ask(question))


def after_first_draw(fn: Callable[[], None]) -> Callable[[], None]:
    """A ``pre_run`` hook that runs ``fn`` once the prompt is on screen.

    prompt_toolkit calls ``pre_run`` before its first (synchronous) draw; a background import
    started there competes with the draw for the GIL. ``call_soon`` runs after it.
    """
    import asyncio

    return lambda: asyncio.get_running_loop().call_soon(fn)


@contextlib.contextmanager
def keys_not_echoed(stdin: TextIO) -> Iterator[None]:
    """Keep the terminal from echoing keys while a turn runs (prompt_toolkit is not reading then).

    The tty's "^C" echo (or echoed type-ahead) moves the cursor under Rich's live display, which
    then erases the wrong lines and leaves a stale copy of the reply on screen. Type-ahead is still
    buffered and shows up at the next prompt.
    """
    try:
        import termios
    except ImportError:  # Windows: no tty echo to worry about
        yield
        return
    try:
        fd = stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError):  # stdin is no terminal after all
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | getattr(termios, "ECHOCTL", 0))  # [3]: the local modes
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
