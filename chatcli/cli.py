"""The command line: parse, call the core, turn core errors into one-line messages + exit codes."""

# No `from __future__ import annotations` here: Typer reads these signatures on every run, and
# evaluating string annotations then cost ~5 ms of each start (of a 1.5x budget).

import json
import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from . import __version__, config
from .errors import AmbiguousSession, ChatcliError, ExitCode
from .render import Terminal, error_line, say
from .store import Store


class _Group(TyperGroup):
    """Runs every command behind one error boundary: a line on stderr, never a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatcliError as e:
            _fail(e)
            if isinstance(e, AmbiguousSession):
                for sid in e.candidates:
                    _say(f"  {sid}", err=True)
            raise typer.Exit(int(e.exit_code)) from None
        except KeyboardInterrupt:
            _say("", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors: Typer shows them
            raise
        except Exception as e:  # a bug: one line for the user, the traceback in the log
            if ctx.obj is not None and ctx.obj.debug:
                raise
            where = _log_exception(ctx)
            _say(error_line(f"unexpected {type(e).__name__}: {e}{where}"), err=True)
            raise typer.Exit(int(ExitCode.ERROR)) from None


app = typer.Typer(
    cls=_Group,
    help="A terminal chat client: streamed Markdown replies, sessions that are never lost, "
    "and read-only questions about your own SQLite data.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _State:
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
            self._store.on_note = lambda text: _say(f"chatcli: note: {text}", err=True)
        return self._store


def _version(value: bool) -> None:
    if value:
        _say(f"chatcli {__version__}")
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
    ctx.obj = _State(storage, debug)


def _state(ctx: typer.Context) -> _State:
    return ctx.obj


_COMPLETIONS = 200  # more candidates than this help no one at a shell prompt


def _complete_session(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
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
_SessionId = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="Session id: the full uuid or any unique prefix.",
        autocompletion=_complete_session,
    ),
]


def _say(text: str, *, err: bool = False) -> None:
    """Every line of chatcli's own goes out here, sanitized (render.say): a title or a file name
    cannot put a raw ESC or C1 control on the terminal. Data (JSON, exports) has its own paths."""
    say(sys.stderr if err else sys.stdout, text)


def _fail(error: ChatcliError) -> None:
    _say(error_line(str(error)), err=True)  # sanitized: a path given may hold escapes


def _write_json(term: Terminal, data: bytes) -> None:
    """JSON on stdout: exact to a pipe or file; on a terminal with C1 controls escaped too."""
    if term.stdout_isatty:
        from .render import terminal_json

        data = terminal_json(data)
    sys.stdout.flush()
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.buffer.flush()


def _log_exception(ctx: typer.Context) -> str:
    """Write the traceback of an unexpected error to the log file; say where it went."""
    try:
        return config.log_exception(
            _state(ctx).store.root, f"unexpected error in {' '.join(sys.argv)}"
        )
    except Exception:
        return ""


# ---------------------------------------------------------------------------------------------
# list


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
    store = _state(ctx).store
    if as_json:
        _write_json(_state(ctx).term, store.list_json(limit=limit))
        return
    shown = None if show_all else (limit or 50)
    rows = store.list_sessions(limit=shown)
    total = store.count()
    if not rows:
        _say("No sessions yet. Start one with: chatcli new")
        return
    note = f"{len(rows)} of {total} sessions" + (
        " (use -n N or --all for more)" if len(rows) < total else ""
    )
    from .render import print_sessions

    print_sessions(_state(ctx).term, rows, short=store.short_ids([r.id for r in rows]), note=note)


# ---------------------------------------------------------------------------------------------
# new / resume


@app.command()
def new(
    ctx: typer.Context,
    title: Annotated[str | None, typer.Option("--title", "-t", help="Session title.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model name (default: $CHATCLI_MODEL, config, gpt-4o-mini)."
        ),
    ] = None,
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
    from .repl import start_new

    state = _state(ctx)
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
            autocompletion=_complete_session,
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
    store = _state(ctx).store
    if last == (session_id is not None):
        raise typer.BadParameter("give a session ID or --last (not both)")
    sid = store.latest() if last else store.resolve(session_id or "")
    from .repl import start_resume

    raise typer.Exit(start_resume(store, _state(ctx).term, sid, model=model))


# ---------------------------------------------------------------------------------------------
# ask


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
            autocompletion=_complete_session,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model name (default: $CHATCLI_MODEL, config, gpt-4o-mini)."
        ),
    ] = None,
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
    from . import helper

    state = _state(ctx)
    # the warm helper runs this very command, forked from a process with LangChain imported
    code = helper.run_remote(state.store.root, sys.argv[1:], real=helper.real_process(state.term))
    if code is not None:
        helper.leave(code)
    from .repl import oneshot

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
    from . import helper

    root = _state(ctx).store.root
    answer = helper.ask_helper(root, "stop" if stop else "status")
    if answer is None:
        typer.echo("no helper is running")
    elif stop:
        typer.echo(f"helper stopped (pid {answer.get('stopped')})")
    else:
        typer.echo(f"helper running (pid {answer.get('pid')}), socket in {helper.run_dir(root)}")


# ---------------------------------------------------------------------------------------------
# attach-db


@app.command("attach-db")
def attach_db(
    ctx: typer.Context,
    session_id: _SessionId,
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="SOURCE...",
            help="A SQLite file (copied), CSV/TSV/JSON/JSONL/Parquet files (imported as tables "
            "into the session's copy), or one postgresql:// URL (attached live, read-only).",
        ),
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace tables that exist (else: ask, or refuse).")
    ] = False,
) -> None:
    """Attach data to a session: your files are only read, never modified; a PostgreSQL
    database is queried read-only and its password never stored."""
    state = _state(ctx)
    store = state.store
    sid = store.resolve(session_id)
    from .attaching import attach, report

    done = attach(store, state.term, sid, sources, replace=replace, confirm=_confirm(state.term))
    lines, notes = report(done, sid)
    for line in lines:
        _say(line)
    for note in notes:
        _say(note, err=True)


def _confirm(term: Terminal) -> Any:
    """A yes/no question on the terminal (default no), or None when input is not a terminal."""
    if not term.stdin_isatty:
        return None
    return lambda question: typer.confirm(question, default=False, err=True)


# ---------------------------------------------------------------------------------------------
# config


@app.command("config")
def config_(ctx: typer.Context) -> None:
    """Show the effective settings and where each one came from (the API key masked)."""
    settings = config.Settings()
    rows = [(name, str(s.value), s.source) for name, s in settings.items()]
    rows.append(("api_key", config.mask_secret(config.api_key()), "env OPENAI_API_KEY"))
    state = _state(ctx)
    storage = config.storage_setting(state.storage_flag)
    rows.append(("storage", str(storage.value), storage.source))
    from .render import print_stdout_table

    print_stdout_table(
        state.term, ["setting", "value", "from"], rows, note=f"config file: {settings.path}"
    )


# ---------------------------------------------------------------------------------------------
# search


@app.command("search")
def search_(
    ctx: typer.Context,
    words: Annotated[
        list[str],
        typer.Argument(
            metavar="TEXT...", help="Words to find, all of them (word* also finds longer words)."
        ),
    ],
    limit: Annotated[
        int,
        typer.Option(
            "-n", "--limit", min=1, max=10**9, help="Show at most N sessions (default 20)."
        ),
    ] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the matches as a JSON array.")
    ] = False,
) -> None:
    """Find sessions by what was said in them, newest match first (exit status 1: no match)."""
    from .store import search

    text = " ".join(words)
    store = _state(ctx).store
    hits = search.search(
        store,
        text,
        limit=limit,
        notify=lambda n: _say(
            f"indexing {n} sessions for search (only this once)…", err=True
        ),
    )
    if as_json:  # no Rich at all on this path: scripts get their answer sooner
        data = json.dumps([h.as_json() for h in hits], ensure_ascii=False)
        _write_json(_state(ctx).term, data.encode("utf-8", "replace"))
    elif not hits:
        _say(f"no session mentions {text!r}", err=True)
    else:
        from .render import print_search_hits

        # full ids when piped (scripts pass them on), short unique ones on a terminal
        term = _state(ctx).term
        short = store.short_ids([h.id for h in hits]) if term.stdout_isatty else {}
        print_search_hits(term, _hit_rows(hits, short))
    if not hits:
        raise typer.Exit(int(ExitCode.ERROR))


def _hit_rows(hits: list[Any], short: dict[str, str]) -> list[tuple[Any, ...]]:
    """(id, date, title, snippet pieces) for render.print_search_hits."""
    return [
        (
            short.get(h.id, h.id),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(h.updated_ns / 1e9)),
            h.title,
            h.segments(),
        )
        for h in hits
    ]


# ---------------------------------------------------------------------------------------------
# export / import / rename / rm


class _Format(StrEnum):
    md = "md"
    json = "json"


@app.command()
def export(
    ctx: typer.Context,
    session_id: _SessionId,
    fmt: Annotated[
        _Format,
        typer.Option(
            "--format",
            "-f",
            help="md: a Markdown transcript; json: the messages, in the memory-file format.",
        ),
    ] = _Format.md,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="PATH", help="Write to this file instead of stdout."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the --output file if it exists.")
    ] = False,
) -> None:
    """Write a session out as Markdown or as JSON."""
    from .transfer import export_session, write_export

    state = _state(ctx)
    sid = state.store.resolve(session_id)
    data = export_session(state.store, sid, fmt=fmt.value)
    if output is None:
        if state.term.stdout_isatty:  # the data stays exact in files and pipes, never raw on screen
            from .render import sanitize

            data = sanitize(data.decode("utf-8", "replace")).encode("utf-8")
        stdout = state.term.stdout
        stdout.flush()
        stdout.buffer.write(data)
        stdout.buffer.flush()
        return
    output = output.expanduser()
    write_export(output, data, replace=force, refusal="file exists (add --force to replace it)")
    _say(f"exported session {sid} to {output}", err=True)


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(
            metavar="PATH",
            help="A JSON array of LangChain message dicts, or of OpenAI-style "
            "{role, content} messages ('-' reads stdin).",
        ),
    ],
    title: Annotated[str | None, typer.Option("--title", "-t", help="Session title.")] = None,
) -> None:
    """Make a new session from a JSON conversation; a bad file creates nothing."""
    from .transfer import import_bytes, import_file, read_stdin

    store = _state(ctx).store
    if str(path) == "-":
        sid, count = import_bytes(store, read_stdin(sys.stdin.buffer), title=title, source="stdin")
    else:
        sid, count = import_file(store, path.expanduser(), title=title)
    _say(f"imported {count} messages as session {sid}")


@app.command()
def fork(
    ctx: typer.Context,
    session_id: _SessionId,
    at: Annotated[
        int | None,
        typer.Option(
            "--at", metavar="N", min=0, help="Copy only the first N messages (default: all)."
        ),
    ] = None,
) -> None:
    """Make a new session from the start of another one (its files stay as they are)."""
    from .repl.steer import fork as fork_session

    store = _state(ctx).store
    sid = store.resolve(session_id)
    forked = fork_session(store, sid, at)
    first, *notes = forked.lines(sid)
    typer.echo(first)
    for note in notes:
        typer.echo(note, err=True)


@app.command()
def compress(
    ctx: typer.Context,
    session_id: _SessionId,
    keep: Annotated[
        int,
        typer.Option("--keep", metavar="N", min=0, help="Turns kept verbatim (default 2)."),
    ] = 2,
) -> None:
    """Summarise a session's older turns with its model, as /compress does."""
    from .repl.steer import start_compress

    state = _state(ctx)
    sid = state.store.resolve(session_id)
    raise typer.Exit(start_compress(state.store, state.term, sid, keep_turns=keep))


@app.command()
def rename(
    ctx: typer.Context,
    session_id: _SessionId,
    title: Annotated[str, typer.Argument(help="The new title.")],
) -> None:
    """Give a session a new title."""
    title = " ".join(title.split())
    if not title:
        raise typer.BadParameter("the title is empty", param_hint="TITLE")
    store = _state(ctx).store
    sid = store.resolve(session_id)
    store.update_meta(sid, title=title)
    _say(f"renamed {sid}: {title}")


@app.command()
def rm(
    ctx: typer.Context,
    session_ids: Annotated[
        list[str],
        typer.Argument(
            metavar="ID...",
            help="Session ids or unique prefixes.",
            autocompletion=_complete_session,
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    restore: Annotated[
        bool, typer.Option("--restore", help="Bring these sessions back from the trash instead.")
    ] = False,
) -> None:
    """Move sessions to the trash (<storage>/trash/); --restore brings them back."""
    store = _state(ctx).store
    if restore:
        for sid in dict.fromkeys(store.resolve(ref, trashed=True) for ref in session_ids):
            store.restore(sid)
            _say(f"restored {sid}")
        return
    sids = list(dict.fromkeys(store.resolve(ref) for ref in session_ids))  # all, before any move
    titles = {sid: info.title for sid, info in store.infos(sids).items()}
    if not yes:
        if not _state(ctx).term.stdin_isatty:
            _say(
                error_line(
                    "not removing anything without confirmation: input is not a terminal "
                    "(add --yes)"
                ),
                err=True,
            )
            raise typer.Exit(int(ExitCode.USAGE))
        for sid in sids:
            _say(f"  {sid}  {titles.get(sid, '')}", err=True)
        if not typer.confirm(f"Move {len(sids)} session(s) to the trash?", default=False, err=True):
            _say("nothing removed", err=True)
            raise typer.Exit(int(ExitCode.ERROR))
    for sid in sids:
        store.trash(sid)
        _say(f"moved to the trash: {sid}  {titles.get(sid, '')}")
    _say(f"(bring back with: chatcli rm --restore {' '.join(s[:8] for s in sids)})", err=True)


# ---------------------------------------------------------------------------------------------
# doctor


@app.command()
def doctor(
    ctx: typer.Context,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Rebuild the index, remove leftover temp files and orphaned metadata "
            "(never touches a session file or a database).",
        ),
    ] = False,
) -> None:
    """Check the storage folder: damaged sessions, leftovers of killed saves, a stale index."""
    from .doctor import ADVICE, ERROR, WARNING, check, relative
    from .render import print_note, print_table

    report = check(_state(ctx).store, fix=fix)
    out = _state(ctx).term.out
    order = {ERROR: 0, WARNING: 1}  # what needs the user first, the merely informative last
    rows = [
        (f.level, f.problem, relative(report, f.path), f.detail, "fixed" if f.fixed else "")
        for f in sorted(report.findings, key=lambda f: order.get(f.level, 2))
    ]
    if rows:
        print_table(out, ["level", "finding", "file", "detail", "fix"], rows)
    problems = report.problems
    for problem in dict.fromkeys(f.problem for f in problems):
        print_note(out, f"{problem}: {ADVICE.get(problem, '')}".rstrip(": "))
    fixed = sum(f.fixed for f in report.findings)
    summary = f"{report.sessions} sessions checked in {report.root}"
    if fixed:
        summary += f"; {fixed} fixed"
    if problems:
        summary += f"; {len(problems)} problems remain"
        if not fix and any("--fix" in ADVICE.get(f.problem, "") for f in problems):
            summary += " (run 'chatcli doctor --fix' for those it can repair)"
    else:
        summary += "; all well"
    print_note(out, summary)
    raise typer.Exit(1 if problems else 0)


def main() -> None:
    """Console-script entry point."""
    # Everything chatcli creates (sessions, index, locks, logs) is private to the user.
    os.umask(0o077)
    app(prog_name="chatcli")
