"""The Typer app, its error boundary, the terminal context and the pieces every command uses."""

# No `from __future__ import annotations` here: Typer reads these signatures on every run, and
# evaluating string annotations then cost ~5 ms of each start (of a 1.5x budget).

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__, config
from ..errors import AmbiguousSession, ChatcliError, ExitCode, unexpected
from ..render import Terminal, error_line, say
from ..store import Store


class _Group(TyperGroup):
    """Runs every command behind one error boundary: a line on stderr, never a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatcliError as e:
            fail(e)
            if isinstance(e, AmbiguousSession):
                for sid in e.candidates:
                    echo(f"  {sid}", err=True)
            raise typer.Exit(int(e.exit_code)) from None
        except KeyboardInterrupt:
            echo("", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors: Typer shows them
            raise
        except Exception as e:  # a bug: one line for the user, the traceback in the log
            if ctx.obj is not None and ctx.obj.debug:
                raise
            where = log_exception(ctx)
            echo(error_line(unexpected(e) + where), err=True)
            raise typer.Exit(int(ExitCode.ERROR)) from None


app = typer.Typer(
    cls=_Group,
    help="A terminal chat client: streamed Markdown replies, sessions that are never lost, "
    "and read-only questions about your own data (SQLite, CSV, JSON, Parquet, PostgreSQL).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class State:
    def __init__(self, storage: Path | None, debug: bool) -> None:
        self.storage_flag = storage
        self.debug = debug
        self.term = Terminal.from_sys()  # the one terminal context, passed down from here
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(config.storage_root(self.storage_flag))
            # the store's notes (metadata ignored, a cache file moved aside): one line each
            self._store.on_note = lambda text: echo(f"chatcli: note: {text}", err=True)
        return self._store


def _version(value: bool) -> None:
    if value:
        echo(f"chatcli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    storage: Annotated[
        Path | None,
        typer.Option(
            "--storage",
            metavar="DIR",
            help="Storage folder (default: $CHATCLI_STORAGE, else your user data folder).",
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = State(storage, debug)


def cli_state(ctx: typer.Context) -> State:
    return ctx.obj


_COMPLETIONS = 200  # more candidates than this help no one at a shell prompt


def complete_session(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Shell completion for ID arguments: the ids starting with what was typed, each with its
    title (zsh, fish and PowerShell show it); trashed sessions after ``rm --restore``."""
    try:
        store = Store(config.storage_root(ctx.find_root().params.get("storage")))
        if ctx.params.get("restore"):
            rows = [(sid, "(in the trash)") for sid in sorted(store.trashed_ids())]
        else:
            rows = [(info.id, info.title) for info in store.list_sessions()]
    except Exception:  # whatever happens, never a traceback in the middle of the user's line
        return []
    # Typer keeps only values that start with ``incomplete``, so titles cannot be matched.
    return [row for row in rows if row[0].startswith(incomplete.lower())][:_COMPLETIONS]


# The ID argument of every command that takes one session (shell completion offers ids + titles).
SessionId = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="Session id: the full uuid or any unique prefix.",
        autocompletion=complete_session,
    ),
]


def echo(text: str, *, err: bool = False) -> None:
    """Every line of chatcli's own goes out here, sanitized (render.say): a title or a file name
    cannot put a raw ESC or C1 control on the terminal. Data (JSON, exports) has its own paths."""
    say(sys.stderr if err else sys.stdout, text)


def fail(error: ChatcliError) -> None:
    echo(error_line(str(error)), err=True)  # sanitized: a path given may hold escapes


def log_exception(ctx: typer.Context) -> str:
    """Write the traceback of an unexpected error to the log file; say where it went."""
    try:
        return config.log_exception(
            cli_state(ctx).store.root, f"unexpected error in {' '.join(sys.argv)}"
        )
    except Exception:
        return ""


def confirm(term: Terminal) -> Any:
    """A yes/no question on the terminal (default no), or None when input is not a terminal."""
    if not term.stdin_isatty:
        return None
    return lambda question: typer.confirm(question, default=False, err=True)


# Options several commands share, defined once.
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Model name (default: $CHATCLI_MODEL, config, gpt-4o-mini)."
    ),
]


def main() -> None:
    """Console-script entry point."""
    # Everything chatcli creates (sessions, index, locks, logs) is private to the user.
    os.umask(0o077)
    app(prog_name="chatcli")
