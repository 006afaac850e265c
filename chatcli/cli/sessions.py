"""The session commands: list, new, resume, ask, helper, fork, compress, rename, rm."""

# No `from __future__ import annotations` here: Typer reads these signatures on every run, and
# evaluating string annotations then cost ~5 ms of each start.

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ExitCode
from ..render import error_line, write_json
from .app import ModelOption, SessionId, app, cli_state, complete_session, echo


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: Annotated[
        int | None,
        typer.Option(
            "-n", "--limit", min=1, max=10**9, help="Show the N newest sessions (default 50)."
        ),
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", "-a", help="Show every session.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every session (or -n of them) as a JSON array.")
    ] = False,
) -> None:
    """List sessions, newest first."""
    store = cli_state(ctx).store
    if as_json:
        write_json(cli_state(ctx).term, store.list_json(limit=limit))
        return
    shown = None if show_all else (limit or 50)
    rows = store.list_sessions(limit=shown)
    total = store.count()
    if not rows:
        echo("No sessions yet. Start one with: chatcli new")
        return
    note = f"{len(rows)} of {total} sessions" + (
        " (use -n N or --all for more)" if len(rows) < total else ""
    )
    from ..render import print_sessions

    print_sessions(
        cli_state(ctx).term, rows, short=store.short_ids([r.id for r in rows]), note=note
    )


@app.command()
def new(
    ctx: typer.Context,
    title: Annotated[str | None, typer.Option("--title", "-t", help="Session title.")] = None,
    model: ModelOption = None,
    system: Annotated[
        str | None, typer.Option("--system", "-s", help="System prompt for this session.")
    ] = None,
    db: Annotated[
        list[str] | None,
        typer.Option(
            "--db",
            metavar="SOURCE",
            help="Attach a SQLite file (a copy), a CSV/TSV/JSON/JSONL/Parquet file (imported as a "
            "table) or a postgresql:// URL (live, read-only); repeat for several files.",
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="With --db: replace tables that exist.")
    ] = False,
) -> None:
    """Start a new session and chat (piped input: one message per line; to pipe in a file's
    content as one message, use `chatcli ask`)."""
    from ..repl import start_new

    state = cli_state(ctx)
    raise typer.Exit(
        start_new(
            state.store,
            state.term,
            title=title,
            model=model,
            system=system,
            db=db or [],
            replace=replace,
        )
    )


@app.command()
def resume(
    ctx: typer.Context,
    session_id: Annotated[
        str | None,
        typer.Argument(
            metavar="ID",
            help="Session id: the full uuid or any unique prefix.",
            autocompletion=complete_session,
        ),
    ] = None,
    last: Annotated[
        bool, typer.Option("--last", "-l", help="Resume the most recent session.")
    ] = False,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Switch this session to another model.")
    ] = None,
) -> None:
    """Reopen a session and go on chatting (piped input: one message per line; `chatcli ask -s
    ID` sends piped content as one message)."""
    store = cli_state(ctx).store
    if last == (session_id is not None):
        raise typer.BadParameter("give a session ID or --last (not both)")
    sid = store.latest() if last else store.resolve(session_id or "")
    from ..repl import start_resume

    raise typer.Exit(start_resume(store, cli_state(ctx).term, sid, model=model))


@app.command()
def ask(
    ctx: typer.Context,
    words: Annotated[
        list[str] | None,
        typer.Argument(metavar="[PROMPT]...", help="The question (its words joined by spaces)."),
    ] = None,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            "-f",
            metavar="PATH",
            help="Put a text file into the message (repeatable; at most 512 KiB each).",
        ),
    ] = None,
    cont: Annotated[
        bool, typer.Option("--continue", "-c", help="Add this turn to the most recent session.")
    ] = False,
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            "-s",
            metavar="ID",
            help="Add this turn to this session (id or unique prefix).",
            autocompletion=complete_session,
        ),
    ] = None,
    model: ModelOption = None,
    system: Annotated[
        str | None, typer.Option("--system", help="System prompt for this session.")
    ] = None,
    db: Annotated[
        list[str] | None,
        typer.Option("--db", metavar="SOURCE", help="Attach a database or data file, as in new."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="With --db: replace tables that exist.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one JSON object: session, reply, model, finish_reason, usage."
        ),
    ] = False,
) -> None:
    """Ask one question and exit; piped input is content (`cat log | chatcli ask explain`).

    The reply streams as Markdown on a terminal; in a pipe it is the model's exact text. Exit
    status: 0 a complete reply, 1 an error or a reply that broke off (what arrived is saved),
    2 nothing to ask, 130 Ctrl-C."""
    from .. import helper

    state = cli_state(ctx)
    # the warm helper runs this very command, forked from a process with LangChain imported
    code = helper.run_remote(state.store.root, sys.argv[1:], real=helper.real_process(state.term))
    if code is not None:
        helper.leave(code)
    from ..repl import oneshot

    raise typer.Exit(
        oneshot.run(
            state.store,
            state.term,
            sys.argv[1:],
            words=words or [],
            files=files or [],
            cont=cont,
            session=session,
            model=model,
            system=system,
            db=db or [],
            replace=replace,
            as_json=as_json,
        )
    )


@app.command("helper")
def helper_(
    ctx: typer.Context,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the helper now.")] = False,
) -> None:
    """Whether the warm helper of `chatcli ask` runs (it quits by itself after 10 idle minutes;
    setting helper = false turns it off)."""
    from .. import helper

    root = cli_state(ctx).store.root
    answer = helper.ask_helper(root, "stop" if stop else "status")
    if answer is None:
        echo("no helper is running")
    elif stop:
        echo(f"helper stopped (pid {answer.get('stopped')})")
    else:
        echo(f"helper running (pid {answer.get('pid')}), socket in {helper.run_dir(root)}")


@app.command()
def fork(
    ctx: typer.Context,
    session_id: SessionId,
    at: Annotated[
        int | None,
        typer.Option(
            "--at", metavar="N", min=0, help="Copy only the first N messages (default: all)."
        ),
    ] = None,
) -> None:
    """Make a new session from the start of another one (its files stay as they are)."""
    from ..repl.steer import fork as fork_session

    store = cli_state(ctx).store
    sid = store.resolve(session_id)
    forked = fork_session(store, sid, at)
    first, *notes = forked.lines(sid)
    echo(first)
    for note in notes:
        echo(note, err=True)


@app.command()
def compress(
    ctx: typer.Context,
    session_id: SessionId,
    keep: Annotated[
        int,
        typer.Option("--keep", metavar="N", min=0, help="Turns kept verbatim (default 2)."),
    ] = 2,
) -> None:
    """Summarise a session's older turns with its model, as /compress does."""
    from ..repl.steer import start_compress

    state = cli_state(ctx)
    sid = state.store.resolve(session_id)
    raise typer.Exit(start_compress(state.store, state.term, sid, keep_turns=keep))


@app.command()
def rename(
    ctx: typer.Context,
    session_id: SessionId,
    title: Annotated[str, typer.Argument(help="The new title.")],
) -> None:
    """Give a session a new title."""
    title = " ".join(title.split())
    if not title:
        raise typer.BadParameter("the title is empty", param_hint="TITLE")
    store = cli_state(ctx).store
    sid = store.resolve(session_id)
    store.update_meta(sid, title=title)
    echo(f"renamed {sid}: {title}")


@app.command()
def rm(
    ctx: typer.Context,
    session_ids: Annotated[
        list[str],
        typer.Argument(
            metavar="ID...",
            help="Session ids or unique prefixes.",
            autocompletion=complete_session,
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    restore: Annotated[
        bool, typer.Option("--restore", help="Bring these sessions back from the trash instead.")
    ] = False,
) -> None:
    """Move sessions to the trash (<storage>/trash/); --restore brings them back."""
    store = cli_state(ctx).store
    if restore:
        for sid in dict.fromkeys(store.resolve(ref, trashed=True) for ref in session_ids):
            store.restore(sid)
            echo(f"restored {sid}")
        return
    sids = list(dict.fromkeys(store.resolve(ref) for ref in session_ids))  # all, before any move
    titles = {sid: info.title for sid, info in store.infos(sids).items()}
    if not yes:
        if not cli_state(ctx).term.stdin_isatty:
            echo(
                error_line(
                    "not removing anything without confirmation: input is not a terminal "
                    "(add --yes)"
                ),
                err=True,
            )
            raise typer.Exit(int(ExitCode.USAGE))
        for sid in sids:
            echo(f"  {sid}  {titles.get(sid, '')}", err=True)
        if not typer.confirm(f"Move {len(sids)} session(s) to the trash?", default=False, err=True):
            echo("nothing removed", err=True)
            raise typer.Exit(int(ExitCode.ERROR))
    for sid in sids:
        store.trash(sid)
        echo(f"moved to the trash: {sid}  {titles.get(sid, '')}")
    echo(f"(bring back with: chatcli rm --restore {' '.join(s[:8] for s in sids)})", err=True)
