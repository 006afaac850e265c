"""The commands about chatcli itself: config, doctor."""

# No `from __future__ import annotations` here: Typer reads these signatures on every run, and
# evaluating string annotations then cost ~5 ms of each start.

from typing import Annotated

import typer

from .. import config
from ..text import mask_userinfo
from .app import app, cli_state


@app.command("config")
def config_(ctx: typer.Context) -> None:
    """Show the effective settings and where each one came from (the API key masked)."""
    settings = config.Settings()
    # a URL setting (OPENAI_BASE_URL) may carry a token as user:token@: shown masked
    rows = [(name, mask_userinfo(str(s.value)), s.source) for name, s in settings.items()]
    rows.append(("api_key", config.mask_secret(config.api_key()), "env OPENAI_API_KEY"))
    state = cli_state(ctx)
    storage = config.storage_setting(state.storage_flag)
    rows.append(("storage", str(storage.value), storage.source))
    from ..render import print_stdout_table

    print_stdout_table(
        state.term, ["setting", "value", "from"], rows, note=f"config file: {settings.path}"
    )


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
    from ..doctor import ADVICE, ERROR, WARNING, check, relative
    from ..render import print_note, print_table

    report = check(cli_state(ctx).store, fix=fix)
    out = cli_state(ctx).term.out
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
