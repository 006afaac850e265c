"""The slash commands: one registry of names, aliases and help text (as litecli's
``special_command``). A command uses the chat's public methods only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ChatcliError, QueryError
from ..render import print_note, print_sessions, print_table, sanitize

if TYPE_CHECKING:
    from .chat import Chat

Handler = Callable[["Chat", str], None]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    usage: str
    help: str
    aliases: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {}  # by name and by each alias, in the order /help shows them


class Exit(Exception):
    """Raised by /exit: the loop ends."""


def command(
    name: str, usage: str, help: str, *, aliases: tuple[str, ...] = ()
) -> Callable[[Handler], Handler]:
    """Register a handler as ``name`` (and its aliases)."""

    def register(fn: Handler) -> Handler:
        entry = Command(name, fn, usage, help, aliases)
        for key in (name, *aliases):
            COMMANDS[key] = entry
        return fn

    return register


def registered() -> list[Command]:
    """Each command once, in the order they were registered."""
    return list({id(c): c for c in COMMANDS.values()}.values())


def is_command(line: str) -> bool:
    """A slash command: "/word ...". A path such as "/etc/hosts: what is it?" is a message."""
    name = line.partition(" ")[0]
    return name.startswith("/") and not name.startswith("//") and "/" not in name[1:]


def dispatch(chat: Chat, line: str) -> None:
    """Run the command ``line`` names; an unknown one is an error."""
    name, _, arg = line.partition(" ")
    entry = COMMANDS.get(name.lower())
    if entry is None:
        raise ChatcliError(
            f"unknown command {sanitize(name)}; /help lists them (start with // to send a /)"
        )
    entry.handler(chat, arg.strip())


def _count(arg: str, default: int) -> int:
    try:
        return max(0, int(arg)) if arg else default
    except ValueError as e:
        raise ChatcliError(f"not a number: {arg!r}") from e


@command("/help", "/help", "this list")
def _help(chat: Chat, arg: str) -> None:
    print_table(chat.out, ["command", "what it does"], [(c.usage, c.help) for c in registered()])


@command("/exit", "/exit", "leave (also /quit, Ctrl-D)", aliases=("/quit",))
def _exit(chat: Chat, arg: str) -> None:
    raise Exit


@command("/new", "/new [TITLE]", "start a new session")
def _new(chat: Chat, arg: str) -> None:
    sid = chat.new_session(arg or None)
    print_note(chat.err, f"new session {sid}")


@command("/list", "/list [N]", "the newest sessions")
def _list(chat: Chat, arg: str) -> None:
    rows = chat.store.list_sessions(limit=_count(arg, 20))
    print_sessions(chat.term, rows, short=chat.store.short_ids([r.id for r in rows]))


@command("/switch", "/switch ID", "open another session (id or unique prefix)")
def _switch(chat: Chat, arg: str) -> None:
    if not arg:
        raise ChatcliError("usage: /switch ID")
    sid = chat.store.resolve(arg)
    chat.switch(sid)
    print_note(chat.err, f"switched to {sid} · {chat.title}")
    if chat.interactive:
        chat.replay(turns=True)


@command("/title", "/title TEXT", "rename this session")
def _title(chat: Chat, arg: str) -> None:
    if not arg:
        raise ChatcliError("usage: /title TEXT")
    chat.update_meta(title=arg)
    print_note(chat.err, f"title: {arg}")


@command("/model", "/model [NAME]", "show or change the model of this session")
def _model(chat: Chat, arg: str) -> None:
    if arg:
        chat.update_meta(model=arg)
    print_note(chat.err, f"model: {chat.model_name}")


@command("/models", "/models", "the models the server offers")
def _models(chat: Chat, arg: str) -> None:
    models = chat.available_models()
    if not models:
        raise ChatcliError("the model server did not list its models (GET /v1/models)")
    for name in models:
        mark = " (this session)" if name == chat.model_name else ""
        chat.out.print(sanitize(name + mark), highlight=False, markup=False)


@command("/system", "/system [TEXT]", "show or set the system prompt of this session")
def _system(chat: Chat, arg: str) -> None:
    if arg:
        chat.update_meta(system=arg)
    print_note(chat.err, f"system prompt: {chat.system_prompt}")


@command("/history", "/history [N]", "show the last N messages (default 10)")
def _history(chat: Chat, arg: str) -> None:
    chat.replay(_count(arg, 10))


@command("/export", "/export [PATH]", "write this session as Markdown")
def _export(chat: Chat, arg: str) -> None:
    from ..transfer import export_session, write_export

    path = Path(arg or f"chatcli-{chat.sid[:8]}.md").expanduser()
    data = export_session(chat.store, chat.sid, fmt="md")
    write_export(path, data, refusal="file exists; give /export another path")  # never over it
    assert chat.session is not None
    print_note(chat.err, f"exported {len(chat.session.messages)} messages to {path}")


@command("/usage", "/usage", "tokens this session has used, by model")
def _usage(chat: Chat, arg: str) -> None:
    from .steer import print_usage

    print_usage(chat)


@command("/compress", "/compress [KEEP]", "summarise older turns, keep the last KEEP (2) verbatim")
def _compress(chat: Chat, arg: str) -> None:
    from .steer import KEEP_TURNS, compress

    compress(chat, _count(arg, KEEP_TURNS))


@command("/retry", "/retry", "ask again for the last reply (the old one stays in the file)")
def _retry(chat: Chat, arg: str) -> None:
    from .steer import retry

    retry(chat)


@command("/fork", "/fork [N]", "a new session with the first N messages (default all)")
def _fork(chat: Chat, arg: str) -> None:
    from .steer import fork_open

    original = chat.sid
    forked = fork_open(chat, _count(arg, 0) if arg else None)
    for line in forked.lines(original):
        print_note(chat.err, line)
    print_note(chat.err, f"switched to {forked.sid} · {chat.title}")


@command("/file", "/file PATH", "put a text file into the next message (as -f in chatcli ask)")
def _file(chat: Chat, arg: str) -> None:
    if not arg:
        raise ChatcliError("usage: /file PATH")
    from .compose import read_attachment

    attachment = read_attachment(Path(arg))  # refused now, not when the message is sent
    chat.attachments.append(attachment)
    print_note(chat.err, f"{attachment.name} goes with your next message")


@command("/clear", "/clear", "clear the screen")
def _clear(chat: Chat, arg: str) -> None:
    chat.out.clear()


@command(
    "/attach",
    "/attach [--replace] SOURCE...",
    "attach a SQLite file (copied), CSV/JSON/Parquet files (imported) or a postgresql:// URL",
)
def _attach(chat: Chat, arg: str) -> None:
    from ..attaching import report
    from ..sql.attach import is_url

    replace = arg == "--replace" or arg.startswith("--replace ")
    if replace:
        arg = arg[len("--replace") :].strip()
    if not arg:
        raise ChatcliError("usage: /attach [--replace] SOURCE...")
    if is_url(arg) or Path(arg).expanduser().exists():
        sources = [arg]  # one path, spaces and all
    else:
        import shlex

        try:
            sources = shlex.split(arg)
        except ValueError as e:
            raise ChatcliError(f"cannot read the file names: {e}") from None
    from .prompt import confirm

    done = chat.attach(sources, replace=replace, confirm=confirm if chat.interactive else None)
    lines, notes = report(done)
    for line in lines + notes:
        print_note(chat.err, line)


@command("/detach", "/detach", "remove the attached database (a copy is kept in the trash)")
def _detach(chat: Chat, arg: str) -> None:
    if not chat.has_db():
        raise ChatcliError("no database is attached")
    if chat.interactive:
        from .prompt import confirm

        if not confirm("Remove the attached database copy?"):
            return
    kept = chat.detach()
    print_note(chat.err, "database detached" + (f" (the copy is kept in {kept})" if kept else ""))


@command("/sql", "/sql QUERY", "run a read-only query on the attached database")
def _sql(chat: Chat, arg: str) -> None:
    db = chat.database()
    if db is None:
        raise QueryError("no database is attached (use /attach PATH)")
    if not arg:
        raise ChatcliError("usage: /sql QUERY")
    result = db.run_sql(arg)
    print_table(chat.out, result.columns, result.rows, note=result.note)


@command("/schema", "/schema", "tables, columns and row counts of the attached database")
def _schema(chat: Chat, arg: str) -> None:
    db = chat.database()
    if db is None:
        raise QueryError("no database is attached (use /attach PATH)")
    for table in db.list_tables():
        try:
            text = db.describe_table(table)
        except QueryError as e:  # one table that cannot be read must not hide the others
            text = f"table {table} — cannot be read: {e}"
        chat.out.print(sanitize(text), highlight=False, markup=False)
