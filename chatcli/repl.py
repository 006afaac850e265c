"""The chat loop: a prompt-toolkit REPL on a terminal, one message per line when input is piped."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config, llm
from .errors import ChatcliError, ConfigError, ExitCode, QueryError
from .render import (
    MarkdownStream,
    Waiting,
    make_consoles,
    print_error,
    print_markdown,
    print_note,
    print_styled,
    print_table,
    sanitize,
)
from .store import Session, Store, message_text, shorten

REPLAY_TURNS = 3  # turns shown again on resume


def start_new(
    store: Store, *, title: str | None, model: str | None, system: str | None, db: Path | None
) -> int:
    """``chatcli new``: check everything that can fail, then create the session and chat."""
    settings = config.Settings({"model": model})
    api_key = _require_api_key()
    if db is not None:
        from .sqltools import validate_database

        validate_database(db)  # refuse a bad file before any session file exists
    sid = store.create(title=title, model=settings["model"], system=system)
    if db is not None:
        from .sqltools import copy_database

        try:
            copy_database(db, store.db_path(sid))
        except BaseException:
            store.discard_if_empty(sid)  # the session was only made to hold this copy
            raise
    return Chat(store, settings, api_key).run(sid, created=True)


def start_resume(store: Store, sid: str, *, model: str | None) -> int:
    """``chatcli resume``: open the session (refusing a damaged one) and chat."""
    settings = config.Settings()
    api_key = _require_api_key()
    session = store.open(sid)
    if model:
        store.update_meta(sid, model=model)
        session.meta["model"] = model
    return Chat(store, settings, api_key).run(sid, session=session)


def _require_api_key() -> str:
    key = config.api_key()
    if not key:
        raise ConfigError(
            "OPENAI_API_KEY is not set: export OPENAI_API_KEY=<your key> "
            "(any non-empty value works for a local server)"
        )
    return key


@dataclass
class _Command:
    handler: Callable[[Chat, str], None]
    usage: str
    help: str


_COMMANDS: dict[str, _Command] = {}


def _command(name: str, usage: str, help: str) -> Callable[[Callable[[Chat, str], None]], Any]:
    def register(fn: Callable[[Chat, str], None]) -> Callable[[Chat, str], None]:
        _COMMANDS[name] = _Command(fn, usage, help)
        return fn

    return register


class _Exit(Exception):
    """Raised by /exit."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, or SIGHUP when the terminal closes: handled like Ctrl-C (what arrived of a reply
    is saved), then chatcli leaves."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _terminate_like_ctrl_c() -> Iterator[None]:
    import signal

    def _raise(signum: int, frame: Any) -> None:
        raise _Terminated(signum)

    wanted = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    previous = {name: signal.signal(getattr(signal, name), _raise) for name in wanted}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


class Chat:
    """One chat loop; holds exactly one open session (switching evicts the previous one)."""

    def __init__(self, store: Store, settings: config.Settings, api_key: str) -> None:
        self.store = store
        self.settings = settings
        self.api_key = api_key
        self.out, self.err = make_consoles()
        self.interactive = sys.stdin.isatty() and self.out.is_terminal
        self.session: Session | None = None
        self.db: Any = None  # sqltools.ReadOnlyDatabase of the open session, opened on demand
        self._created: str | None = None
        self.failed = False  # did any line fail? piped runs exit 1 then, for scripts

    # -- session state ---------------------------------------------------------------------------

    @property
    def sid(self) -> str:
        assert self.session is not None
        return self.session.id

    @property
    def model_name(self) -> str:
        assert self.session is not None
        return self.session.meta.get("model") or self.settings["model"]

    @property
    def system_prompt(self) -> str | None:
        """The session's own (set with --system or /system), else the one a history written by
        another tool starts with, else the configured one."""
        assert self.session is not None
        if own := self.session.meta.get("system"):
            return own
        messages = self.session.messages
        if messages and messages[0].get("type") == "system":
            return message_text(messages[0])
        return self.settings["system_prompt"]

    def open(self, sid: str, session: Session | None = None) -> None:
        """Make ``sid`` the open session; the previous history is dropped from memory."""
        new = session or self.store.open(sid)
        self._close_db()
        self.session = new

    def database(self) -> Any:
        """The open session's attached database in the read-only sandbox, or None."""
        if self.db is None and self.store.has_db(self.sid):
            from .sqltools import ReadOnlyDatabase

            self.db = ReadOnlyDatabase(
                self.store.db_path(self.sid), timeout=self.settings["sql_timeout"]
            )
        return self.db

    def _close_db(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    # -- the loop --------------------------------------------------------------------------------

    def run(self, sid: str, *, session: Session | None = None, created: bool = False) -> int:
        self.open(sid, session)
        self._created = sid if created else None
        try:
            with _terminate_like_ctrl_c():
                return self._interactive() if self.interactive else self._piped()
        except _Terminated as e:
            return 128 + e.signum
        finally:
            self._close_db()
            self._forget_if_unused()

    def _piped(self) -> int:
        if reconfigure := getattr(sys.stdin, "reconfigure", None):
            # Invalid UTF-8 (a binary paste, a wrong locale) must not end the chat: it arrives as
            # lone surrogates, kept exactly in memory and replaced only in what the model gets.
            reconfigure(errors="surrogateescape")
        for line in sys.stdin:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                self.handle(line)
            except _Exit:
                break
            except _Terminated:
                raise
            except KeyboardInterrupt:
                return int(ExitCode.INTERRUPTED)
        return int(ExitCode.ERROR) if self.failed else 0

    def _interactive(self) -> int:
        prompt = _build_prompt(self)
        self._banner()
        armed = False  # a first Ctrl-C at an empty prompt arms, a second one leaves
        while True:
            try:
                line = prompt.prompt(pre_run=_after_first_draw(llm.preload))
            except _Terminated:
                raise
            except KeyboardInterrupt:
                if armed:
                    return 0
                armed = True
                print_note(self.err, "(Ctrl-C again or Ctrl-D to leave)")
                continue
            except EOFError:
                return 0
            armed = False
            if not line.strip():
                continue
            try:
                with _keys_not_echoed():
                    self.handle(line)
            except _Exit:
                return 0
            except _Terminated:
                raise
            except KeyboardInterrupt:
                print_note(self.err, "(interrupted)")
            self.out.print()  # a blank line between one exchange and the next prompt

    def handle(self, line: str) -> None:
        """One input line: a slash command or a message to the model. Errors end the turn only."""
        try:
            if _is_command(line):
                self._dispatch(line)
            else:
                # "//text" sends "/text": the way to start a message with a slash
                self.send(line[1:] if line.startswith("//") else line)
        except ChatcliError as e:
            self.failed = True
            print_error(self.err, str(e))
        except (_Exit, KeyboardInterrupt):
            raise
        except Exception as e:  # a bug must not take the session down with it
            self.failed = True
            where = config.log_exception(self.store.root, "turn failed")  # not the terminal
            print_error(self.err, f"unexpected {type(e).__name__}: {e}{where}")

    def _dispatch(self, line: str) -> None:
        name, _, arg = line.partition(" ")
        command = _COMMANDS.get(name.lower())
        if command is None:
            self.failed = True
            print_error(
                self.err,
                f"unknown command {sanitize(name)}; /help lists them (start with // to send a /)",
            )
            return
        command.handler(self, arg.strip())

    # -- a turn ----------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        """Save the user's message, stream the reply, run tools, save every message as it ends."""
        assert self.session is not None
        self.session.messages = self.store.append(self.sid, [llm.human_dict(text)])
        db = self.database()
        model = llm.Model(
            self.model_name,
            self.api_key,
            base_url=self.settings["base_url"],
            timeout=self.settings["timeout"],
            tools=_tool_specs() if db else [],
        )

        def execute(name: str, args: dict[str, Any]) -> str:
            # The model's words before its tool call belong above the query and its table.
            waiting.stop()
            stream.close()
            return self._run_tool(name, args)

        turn = model.turn(
            self.session.messages,
            system=self._system_with_schema(db),
            budget=self.settings["context_tokens"],
            execute=execute if db else None,
        )
        stream = MarkdownStream(self.out, code_theme=self.settings["theme"])
        waiting = Waiting(self.out)
        waiting.start()
        try:
            for event in turn.events():
                waiting.stop()
                if isinstance(event, llm.TextDelta):
                    stream.feed(event.text)
                elif isinstance(event, llm.Saved):
                    stream.close()
                    stream = MarkdownStream(self.out, code_theme=self.settings["theme"])
                    self.session.messages = self.store.append(self.sid, event.messages)
                    if event.finish_reason == "tool_calls":
                        waiting.start()  # the model's next round
                    elif event.finish_reason == "incomplete":
                        print_error(
                            self.err,
                            "the reply broke off before it finished; what arrived is saved",
                        )
                    elif not message_text(event.messages[-1]):
                        print_note(self.err, "(the model sent an empty reply)")
                elif isinstance(event, llm.Note):
                    print_note(self.err, event.text)
        except KeyboardInterrupt:
            waiting.stop()
            stream.close()
            partial = turn.interrupted()
            if partial is not None:
                self.session.messages = self.store.append(self.sid, [partial])
            raise
        finally:
            waiting.stop()
            stream.close()

    def _system_with_schema(self, db: Any) -> str | None:
        system = self.system_prompt
        if db is None:
            return system
        summary = db.schema_summary()
        return (
            f"{system or ''}\n\nThe user attached a SQLite database (read-only). Use the tools "
            f"to answer questions about it. Schema:\n{summary}"
        ).strip()

    def _run_tool(self, name: str, args: dict[str, Any]) -> str:
        from .sqltools import call_tool

        db = self.database()
        print_note(self.err, _describe_call(name, args))
        if name == "run_sql":
            try:
                result = db.run_sql(str(args.get("query", "")))
            except QueryError as e:  # .message: the model needs no file path
                print_note(self.err, f"error: {e.message}")
                return f"error: {e.message}"
            print_table(self.out, result.columns, result.rows, note=result.note)
            return result.to_text(db.max_chars)
        return call_tool(db, name, args)

    # -- screen ----------------------------------------------------------------------------------

    def _banner(self) -> None:
        assert self.session is not None
        print_styled(
            self.out,
            (self.session.title, "bold"),
            (f" · {self.sid[:8]} · {self.model_name}", "dim"),
        )
        print_note(self.out, "Enter sends · Esc Enter for a new line · /help · Ctrl-D leaves")
        self.replay(REPLAY_TURNS, turns=True)

    def replay(self, count: int, *, turns: bool = False) -> None:
        """Show the last ``count`` messages (or turns) of the open session."""
        assert self.session is not None
        messages = self.session.messages
        if turns:
            starts = [i for i, m in enumerate(messages) if m.get("type") == "human"]
            start = starts[-count] if len(starts) >= count else 0
        else:
            start = max(0, len(messages) - count)
        for m in messages[start:]:
            self._show_message(m)

    def _show_message(self, m: dict[str, Any]) -> None:
        kind = m.get("type")
        text = message_text(m)
        if kind in ("human", "HumanMessageChunk"):
            print_styled(self.out, ("› ", "bold cyan"), (text, ""))
        elif kind in ("ai", "AIMessageChunk"):
            if text:
                print_markdown(self.out, text)
            for call in m.get("data", {}).get("tool_calls") or []:
                print_note(self.out, _describe_call(str(call.get("name")), call.get("args") or {}))
        elif kind == "tool":
            print_note(self.out, shorten(text, 200))

    def _forget_if_unused(self) -> None:
        """A session created by this run and left without a message is not worth keeping."""
        if self._created:
            self.store.discard_if_empty(self._created)
            self._created = None


def _is_command(line: str) -> bool:
    """A slash command: "/word ...". A path such as "/etc/hosts: what is it?" is a message."""
    name = line.partition(" ")[0]
    return name.startswith("/") and not name.startswith("//") and "/" not in name[1:]


def _describe_call(name: str, args: dict[str, Any]) -> str:
    """How a tool call is shown: the SQL itself for run_sql."""
    if name == "run_sql":
        return f"sql> {args.get('query', '')}"
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def _tool_specs() -> list[dict[str, Any]]:
    from .sqltools import TOOL_SPECS

    return TOOL_SPECS


# ---------------------------------------------------------------------------------------------
# Slash commands


@_command("/help", "/help", "this list")
def _help(chat: Chat, arg: str) -> None:
    rows = [(c.usage, c.help) for c in _COMMANDS.values()]
    print_table(chat.out, ["command", "what it does"], rows)


@_command("/exit", "/exit", "leave (also /quit, Ctrl-D)")
def _exit(chat: Chat, arg: str) -> None:
    raise _Exit


_COMMANDS["/quit"] = _Command(_exit, "/quit", "leave")


@_command("/new", "/new [TITLE]", "start a new session")
def _new(chat: Chat, arg: str) -> None:
    chat._forget_if_unused()
    sid = chat.store.create(title=arg or None, model=chat.model_name)
    chat.open(sid)
    chat._created = sid
    print_note(chat.err, f"new session {sid}")


@_command("/list", "/list [N]", "the newest sessions")
def _list(chat: Chat, arg: str) -> None:
    rows = chat.store.list_sessions(limit=_count(arg, 20))
    print_table(
        chat.out,
        ["id", "title", "msgs", "model", "db"],
        [
            (
                r.id[:8],
                r.title if not r.damaged else f"DAMAGED: {r.damaged}",
                r.messages,
                r.model,
                "yes" if r.has_db else "",
            )
            for r in rows
        ],
    )


@_command("/switch", "/switch ID", "open another session (id or unique prefix)")
def _switch(chat: Chat, arg: str) -> None:
    if not arg:
        raise ChatcliError("usage: /switch ID")
    sid = chat.store.resolve(arg)
    if sid != chat.sid:  # switching to the open session must not forget it as unused
        chat._forget_if_unused()
        chat.open(sid)
    print_note(chat.err, f"switched to {sid} · {chat.session.title if chat.session else ''}")
    if chat.interactive:
        chat.replay(REPLAY_TURNS, turns=True)


@_command("/title", "/title TEXT", "rename this session")
def _title(chat: Chat, arg: str) -> None:
    assert chat.session is not None
    if not arg:
        raise ChatcliError("usage: /title TEXT")
    chat.session.meta = chat.store.update_meta(chat.sid, title=arg)
    print_note(chat.err, f"title: {arg}")


@_command("/model", "/model [NAME]", "show or change the model of this session")
def _model(chat: Chat, arg: str) -> None:
    assert chat.session is not None
    if arg:
        chat.session.meta = chat.store.update_meta(chat.sid, model=arg)
    print_note(chat.err, f"model: {chat.model_name}")


@_command("/system", "/system [TEXT]", "show or set the system prompt of this session")
def _system(chat: Chat, arg: str) -> None:
    assert chat.session is not None
    if arg:
        chat.session.meta = chat.store.update_meta(chat.sid, system=arg)
    print_note(chat.err, f"system prompt: {chat.system_prompt}")


@_command("/history", "/history [N]", "show the last N messages (default 10)")
def _history(chat: Chat, arg: str) -> None:
    chat.replay(_count(arg, 10))


@_command("/export", "/export [PATH]", "write this session as Markdown")
def _export(chat: Chat, arg: str) -> None:
    from .transcript import to_markdown

    assert chat.session is not None
    path = Path(arg or f"chatcli-{chat.sid[:8]}.md").expanduser()
    data = to_markdown(chat.session.title, chat.session.messages).encode("utf-8")
    try:
        with open(path, "xb") as f:  # never over a file that is already there
            f.write(data)
    except FileExistsError as e:
        raise ChatcliError("file exists; give /export another path", path=path) from e
    except OSError as e:
        raise ChatcliError(f"cannot write export: {e.strerror}", path=path) from e
    print_note(chat.err, f"exported {len(chat.session.messages)} messages to {path}")


@_command("/clear", "/clear", "clear the screen")
def _clear(chat: Chat, arg: str) -> None:
    chat.out.clear()


@_command("/attach", "/attach PATH", "attach a copy of a SQLite database")
def _attach(chat: Chat, arg: str) -> None:
    from .sqltools import copy_database

    if not arg:
        raise ChatcliError("usage: /attach PATH")
    chat._close_db()
    with chat.store.replacing_db(chat.sid) as kept:
        copy_database(Path(arg).expanduser(), chat.store.db_path(chat.sid))
    print_note(
        chat.err, f"attached {arg}" + (f" (the previous copy is kept in {kept})" if kept else "")
    )


@_command("/detach", "/detach", "remove the attached database copy")
def _detach(chat: Chat, arg: str) -> None:
    if not chat.store.has_db(chat.sid):
        raise ChatcliError("no database is attached")
    if chat.interactive:
        from prompt_toolkit.shortcuts import confirm

        if not confirm("Remove the attached database copy?"):
            return
    chat._close_db()
    kept = chat.store.detach_db(chat.sid)
    print_note(chat.err, f"database detached (the copy is kept in {kept})")


@_command("/sql", "/sql QUERY", "run a read-only query on the attached database")
def _sql(chat: Chat, arg: str) -> None:
    db = chat.database()
    if db is None:
        raise QueryError("no database is attached (use /attach PATH)")
    if not arg:
        raise ChatcliError("usage: /sql QUERY")
    result = db.run_sql(arg)
    print_table(chat.out, result.columns, result.rows, note=result.note)


@_command("/schema", "/schema", "tables, columns and row counts of the attached database")
def _schema(chat: Chat, arg: str) -> None:
    db = chat.database()
    if db is None:
        raise QueryError("no database is attached (use /attach PATH)")
    for table in db.list_tables():
        chat.out.print(sanitize(db.describe_table(table)), highlight=False, markup=False)


def _count(arg: str, default: int) -> int:
    try:
        return max(0, int(arg)) if arg else default
    except ValueError as e:
        raise ChatcliError(f"not a number: {arg!r}") from e


# ---------------------------------------------------------------------------------------------
# The prompt


def _build_prompt(chat: Chat) -> Any:
    """The PromptSession: history file, slash-command and id completion, toolbar, key bindings."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    chat.store.ensure()
    return PromptSession(
        message=[("class:prompt", "› ")],
        prompt_continuation="  ",  # lines after Esc Enter line up under the first one
        # input survives restarts and failed turns: Up brings back a message the server refused
        history=FileHistory(str(chat.store.root / "input_history")),
        completer=_completer(chat),
        # typing "/" lists the commands (the completer offers nothing for ordinary text)
        complete_while_typing=True,
        key_bindings=_key_bindings(),
        bottom_toolbar=lambda: _toolbar(chat),
        # Enter sends; Esc Enter / Alt+Enter inserts a newline (bound below)
        multiline=False,
        # prefix search on Up would silently switch complete_while_typing off (prompt_toolkit
        # allows only one); Up still walks the history and Ctrl-R searches it
        enable_history_search=False,
    )


def _after_first_draw(fn: Callable[[], None]) -> Callable[[], None]:
    """A ``pre_run`` hook that runs ``fn`` once the prompt is on screen.

    prompt_toolkit calls ``pre_run`` before its first (synchronous) draw; a background import
    started there competes with the draw for the GIL. ``call_soon`` runs after it.
    """
    import asyncio

    return lambda: asyncio.get_running_loop().call_soon(fn)


@contextlib.contextmanager
def _keys_not_echoed() -> Iterator[None]:
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
        fd = sys.stdin.fileno()
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


def _key_bindings() -> Any:
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


def _toolbar(chat: Chat) -> Any:
    if chat.session is None:
        return ""
    db = " · db attached" if chat.store.has_db(chat.sid) else ""
    text = f" {shorten(chat.session.title, 40)} · {chat.model_name} · {chat.sid[:8]}{db} "
    return sanitize(text)  # a title is the user's data: shown, never acted on


def _completer(chat: Chat) -> Any:
    """Slash commands, and session ids after /switch."""
    from prompt_toolkit.completion import Completer, Completion

    class _SlashCompleter(Completer):
        def get_completions(self, document: Any, complete_event: Any) -> Any:
            text = document.text_before_cursor
            if not text.startswith("/"):
                return
            if " " not in text:
                for name, command in _COMMANDS.items():
                    if name.startswith(text):
                        yield Completion(name, -len(text), display_meta=command.help)
            elif text.startswith("/switch "):
                prefix = text[len("/switch ") :].strip().lower()
                for info in chat.store.list_sessions(limit=200):
                    if info.id.startswith(prefix):
                        yield Completion(
                            info.id, -len(prefix), display=info.id[:8], display_meta=info.title
                        )

    return _SlashCompleter()
