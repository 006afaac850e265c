"""The command line: parse, call the core, turn core errors into one-line messages and exit codes."""

from __future__ import annotations

import json
import os
import sys
import time
from bisect import bisect_left
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from . import __version__, config
from .errors import AmbiguousSession, ChatcliError, ExitCode
from .store import SessionInfo, Store

class _Group(TyperGroup):
    """Runs every command behind one error boundary: a line on stderr, never a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatcliError as e:
            _fail(e)
            if isinstance(e, AmbiguousSession):
                for sid in e.candidates:
                    typer.echo(f"  {sid}", err=True)
            raise typer.Exit(int(e.exit_code)) from None
        except KeyboardInterrupt:
            typer.echo("", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors: Typer shows them
            raise
        except Exception as e:  # a bug: one line for the user, the traceback in the log
            if ctx.obj is not None and ctx.obj.debug:
                raise
            where = _log_exception(ctx)
            typer.echo(f"chatcli: error: unexpected {type(e).__name__}: {e}{where}", err=True)
            raise typer.Exit(int(ExitCode.ERROR)) from None


app = typer.Typer(
    cls=_Group,
    help="A terminal chat client: streamed Markdown replies, sessions that are never lost, "
    "and read-only questions about your own SQLite data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _State:
    def __init__(self, storage: Path | None, debug: bool) -> None:
        self.storage_flag = storage
        self.debug = debug
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(config.storage_root(self.storage_flag))
        return self._store


def _version(value: bool) -> None:
    if value:
        typer.echo(f"chatcli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    storage: Annotated[Path | None, typer.Option(
        "--storage", metavar="DIR",
        help="Storage folder (default: $CHATCLI_STORAGE, else your user data folder).")] = None,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    ctx.obj = _State(storage, debug)


def _state(ctx: typer.Context) -> _State:
    return ctx.obj


def _fail(error: ChatcliError) -> None:
    typer.echo(f"chatcli: error: {error}", err=True)


def _log_exception(ctx: typer.Context) -> str:
    """Write the traceback of an unexpected error to the log file; say where it went."""
    import logging

    log = logging.getLogger("chatcli")
    try:
        path = config.log_path(_state(ctx).store.root)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.exception("unexpected error in %s", " ".join(sys.argv))
        handler.close()
        return f" (details in {path})"
    except Exception:
        return ""


# ---------------------------------------------------------------------------------------------
# list


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option(
        "-n", "--limit", min=1, help="Show the N newest sessions (default 50).")] = None,
    show_all: Annotated[bool, typer.Option("--all", "-a", help="Show every session.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print every session (or -n of them) as a JSON array.")] = False,
) -> None:
    """List sessions, newest first."""
    store = _state(ctx).store
    if as_json:
        sys.stdout.write(store.list_json(limit=limit) + "\n")
        return
    shown = None if show_all else (limit or 50)
    rows = store.list_sessions(limit=shown)
    total = store.count()
    from .render import make_consoles, print_table

    out, _ = make_consoles()
    if not rows:
        out.print("No sessions yet. Start one with: chatcli new")
        return
    short = _short_ids(store.ids())
    now = time.time()
    table = [
        (short.get(r.id, r.id),
         f"DAMAGED: {r.damaged}" if r.damaged else r.title,
         "?" if r.damaged else str(r.messages),
         _relative(r.updated_ns / 1e9, now),
         r.model,
         "yes" if r.has_db else "")
        for r in rows
    ]
    note = f"{len(rows)} of {total} sessions" + (
        " (use -n N or --all for more)" if len(rows) < total else "")
    print_table(out, ["id", "title", "msgs", "updated", "model", "db"], table, note=note)


def _short_ids(ids: list[str], minimum: int = 8) -> dict[str, str]:
    """The shortest prefix (at least ``minimum`` chars) that names each id uniquely."""
    ids = sorted(ids)
    short = {}
    for i, sid in enumerate(ids):
        need = minimum
        for j in (i - 1, i + 1):
            if 0 <= j < len(ids):
                other = ids[j]
                common = next((k for k, (a, b) in enumerate(zip(sid, other)) if a != b), len(sid))
                need = max(need, common + 1)
        short[sid] = sid[:need]
    return short


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


# ---------------------------------------------------------------------------------------------
# new / resume


@app.command()
def new(
    ctx: typer.Context,
    title: Annotated[str | None, typer.Option("--title", "-t", help="Session title.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model name (default: $CHATCLI_MODEL, config, gpt-4o-mini).")] = None,
    system: Annotated[str | None, typer.Option(
        "--system", "-s", help="System prompt for this session.")] = None,
    db: Annotated[Path | None, typer.Option(
        "--db", metavar="PATH", help="Attach a copy of this SQLite database.")] = None,
) -> None:
    """Start a new session and chat (one message per line when input is piped)."""
    from .repl import start_new

    raise typer.Exit(start_new(_state(ctx).store, title=title, model=model, system=system, db=db))


@app.command()
def resume(
    ctx: typer.Context,
    session_id: Annotated[str | None, typer.Argument(
        metavar="ID", help="Session id: the full uuid or any unique prefix.")] = None,
    last: Annotated[bool, typer.Option("--last", "-l", help="Resume the most recent session.")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Switch this session to another model.")] = None,
) -> None:
    """Reopen a session and go on chatting."""
    store = _state(ctx).store
    if last == (session_id is not None):
        raise typer.BadParameter("give a session ID or --last (not both)")
    sid = store.latest() if last else store.resolve(session_id or "")
    from .repl import start_resume

    raise typer.Exit(start_resume(store, sid, model=model))


# ---------------------------------------------------------------------------------------------
# attach-db


@app.command("attach-db")
def attach_db(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(metavar="ID", help="Session id or unique prefix.")],
    path: Annotated[Path, typer.Argument(help="SQLite database to copy into the session.")],
) -> None:
    """Attach a copy of a SQLite database to a session (your original is never modified)."""
    store = _state(ctx).store
    sid = store.resolve(session_id)
    from .sqltools import copy_database

    store.ensure()
    copy_database(path, store.db_path(sid))
    typer.echo(f"attached {path} to session {sid}")


# ---------------------------------------------------------------------------------------------
# config


@app.command("config")
def config_(ctx: typer.Context) -> None:
    """Show the effective settings and where each one came from (the API key masked)."""
    settings = config.Settings()
    rows = [(name, str(s.value), s.source) for name, s in settings.items()]
    rows.append(("api_key", config.mask_secret(config.api_key()), "env OPENAI_API_KEY"))
    state = _state(ctx)
    where = ("flag --storage" if state.storage_flag else
             "env CHATCLI_STORAGE" if os.environ.get("CHATCLI_STORAGE") else "default")
    rows.append(("storage", str(state.store.root), where))
    from .render import make_consoles, print_table

    out, _ = make_consoles()
    print_table(out, ["setting", "value", "from"], rows, note=f"config file: {settings.path}")


def main() -> None:
    """Console-script entry point."""
    # Everything chatcli creates (sessions, index, locks, logs) is private to the user.
    os.umask(0o077)
    app(prog_name="chatcli")
