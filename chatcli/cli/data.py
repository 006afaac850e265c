"""The data commands: attach-db, search, export, import."""

# No `from __future__ import annotations` here: Typer reads these signatures on every run, and
# evaluating string annotations then cost ~5 ms of each start.

import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ExitCode
from ..render import write_json
from .app import SessionId, app, cli_state, confirm, echo


@app.command("attach-db")
def attach_db(
    ctx: typer.Context,
    session_id: SessionId,
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
    state = cli_state(ctx)
    store = state.store
    sid = store.resolve(session_id)
    from ..attaching import attach, report

    done = attach(store, state.term, sid, sources, replace=replace, confirm=confirm(state.term))
    lines, notes = report(done, sid)
    for line in lines:
        echo(line)
    for note in notes:
        echo(note, err=True)


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
    from ..store import search

    text = " ".join(words)
    store = cli_state(ctx).store
    hits = search.search(
        store,
        text,
        limit=limit,
        notify=lambda n: echo(f"indexing {n} sessions for search (only this once)…", err=True),
    )
    if as_json:  # no Rich at all on this path: scripts get their answer sooner
        data = json.dumps([h.as_json() for h in hits], ensure_ascii=False)
        write_json(cli_state(ctx).term, data.encode("utf-8", "replace"))
    elif not hits:
        echo(f"no session mentions {text!r}", err=True)
    else:
        from ..render import print_search_hits

        # full ids when piped (scripts pass them on), short unique ones on a terminal
        term = cli_state(ctx).term
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


class _Format(StrEnum):
    md = "md"
    json = "json"


@app.command()
def export(
    ctx: typer.Context,
    session_id: SessionId,
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
    from ..transfer import export_session, write_export

    state = cli_state(ctx)
    sid = state.store.resolve(session_id)
    data = export_session(state.store, sid, fmt=fmt.value)
    if output is None:
        if state.term.stdout_isatty:  # the data stays exact in files and pipes, never raw on screen
            from ..render import sanitize

            data = sanitize(data.decode("utf-8", "replace")).encode("utf-8")
        stdout = state.term.stdout
        stdout.flush()
        stdout.buffer.write(data)
        stdout.buffer.flush()
        return
    output = output.expanduser()
    write_export(output, data, replace=force, refusal="file exists (add --force to replace it)")
    echo(f"exported session {sid} to {output}", err=True)


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
    from ..transfer import import_bytes, import_file, read_stdin

    store = cli_state(ctx).store
    if str(path) == "-":
        sid, count = import_bytes(store, read_stdin(sys.stdin.buffer), title=title, source="stdin")
    else:
        sid, count = import_file(store, path.expanduser(), title=title)
    echo(f"imported {count} messages as session {sid}")
