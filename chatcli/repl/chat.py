"""A chat: one open session, its lifecycle (open, switch, forget if unused) and one turn with the
model; a prompt-toolkit loop on a terminal, one message per line when input is piped."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import config, llm
from ..errors import ChatcliError, ExitCode, unexpected
from ..render import (
    Terminal,
    print_error,
    print_markdown,
    print_note,
    print_styled,
    print_table,
    shorten,
)
from ..store import Session, Store, message_text
from ..transcript import FINISH_MARKS, steer_notes
from . import commands, prompt, steer
from .compose import Attachment, compose
from .data import AttachedData
from .reply import ReplyView

REPLAY_TURNS = 3  # turns shown again on resume or /switch


def start_new(
    store: Store,
    term: Terminal,
    *,
    title: str | None,
    model: str | None,
    system: str | None,
    db: Sequence[str | Path] = (),
    replace: bool = False,
) -> int:
    """``chatcli new``: check everything that can fail, then create the session and chat."""
    settings = config.Settings({"model": model})
    api_key = config.require_api_key()  # set, and usable in a header
    if db:
        from ..sql.attach import check_sources

        check_sources(db)  # refuse a bad file before any session file exists
    sid = store.create(title=title, model=settings["model"], system=system)
    if db:
        from ..attaching import attach, report

        ask = prompt.confirm if term.stdin_isatty else None
        try:
            done = attach(store, term, sid, db, replace=replace, confirm=ask, settings=settings)
        except BaseException:
            store.discard_if_empty(sid)  # the session was only made to hold this database
            raise
        lines, notes = report(done)
        for line in (lines if term.stdin_isatty else []) + notes:
            print_note(term.err, line)
    return Chat(store, settings, api_key, term=term).run(sid, created=True)


def start_resume(store: Store, term: Terminal, sid: str, *, model: str | None) -> int:
    """``chatcli resume``: open the session (refusing a damaged one) and chat."""
    settings = config.Settings()
    api_key = config.require_api_key()  # set, and usable in a header
    session = store.open(sid)
    if model:
        store.update_meta(sid, model=model)
        session.meta["model"] = model
    return Chat(store, settings, api_key, term=term).run(sid, session=session)


class Terminated(KeyboardInterrupt):
    """SIGTERM, or SIGHUP when the terminal closes: handled like Ctrl-C (what arrived of a reply
    is saved), then chatcli leaves."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def terminate_like_ctrl_c() -> Iterator[None]:
    import signal

    wanted = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]

    def _raise(signum: int, frame: Any) -> None:
        # One is enough: a second must not cut the save of what arrived. (A no-op, not SIG_IGN:
        # one already pending would then raise "ignored due to race condition".)
        for name in wanted:
            signal.signal(getattr(signal, name), lambda *_: None)
        raise Terminated(signum)

    previous = {name: signal.signal(getattr(signal, name), _raise) for name in wanted}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


class Chat:
    """One chat loop; holds exactly one open session (switching evicts the previous one)."""

    def __init__(
        self, store: Store, settings: config.Settings, api_key: str, *, term: Terminal
    ) -> None:
        self.store = store
        self.settings = settings
        self.api_key = api_key
        self.term = term
        self.out, self.err = term.out, term.err  # replies and results; notes and errors
        self.interactive = term.stdin_isatty and self.out.is_terminal
        self.session: Session | None = None
        self.data = AttachedData(store, settings, term)  # the open session's database
        self._created: str | None = None  # made by this run: forgotten if left without a message
        self.failed = False  # did any line fail? piped runs exit 1 then, for scripts
        self._facts: dict[tuple[str | None, str], llm.ServerFacts] = {}
        self._facts_lock = threading.Lock()
        self._warmed = False
        self._told_no_tools: set[tuple[str | None, str]] = set()
        self.replies = 0  # replies shown by this run
        self.attachments: list[Attachment] = []  # /file: put into the next message sent
        self.last_turn: llm.Turn | None = None  # the latest reply's turn (its request, usage)
        self.told_trimmed: set[str] = set()  # sessions told their requests leave messages out

    # -- session state ---------------------------------------------------------------------------

    @property
    def sid(self) -> str:
        assert self.session is not None
        return self.session.id

    @property
    def title(self) -> str:
        assert self.session is not None
        return self.session.title

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
        self.data.close()
        self.session = new

    def new_session(self, title: str | None) -> str:
        """Create a session with this chat's model and open it (the previous one is forgotten
        if this run created it and nothing was said in it)."""
        sid = self.store.create(title=title, model=self.model_name)
        self.forget_if_unused()  # only now: if creating failed, the open session stays usable
        self.open(sid)
        self._created = sid
        return sid

    def switch(self, sid: str) -> None:
        """Open another session; switching to the open one changes nothing."""
        if sid != self.sid:  # switching to the open session must not forget it as unused
            # Read it first: a damaged session fails here, and the one still open (maybe new and
            # empty) must not have been forgotten by then.
            session = self.store.open(sid)
            self.forget_if_unused()
            self.open(sid, session)

    def update_meta(self, **fields: str) -> None:
        """Change the open session's title, model or system prompt, on disk and here."""
        assert self.session is not None
        self.session.meta = self.store.update_meta(self.sid, **fields)

    def has_db(self) -> bool:
        return self.session is not None and self.data.source(self.sid) is not None

    def database(self) -> Any:
        """The open session's attached database, read-only, or None (see AttachedData.get)."""
        return self.data.get(self.sid)

    def attach(
        self, sources: Sequence[str | Path], *, replace: bool = False, confirm: Any = None
    ) -> Any:
        """Attach files or a postgresql:// URL (sql.attach.attach_sources); returns what was
        done (sql.attach.Attached)."""
        return self.data.attach(self.sid, sources, replace=replace, confirm=confirm)

    def detach(self) -> Path | None:
        """Remove the attached copy (returns where it is kept) or PostgreSQL URL (None)."""
        from ..sql.attach import URL_KEY

        return self.data.detach(self.sid, forget_url=lambda: self.update_meta(**{URL_KEY: None}))

    def forget_if_unused(self) -> None:
        """A session created by this run and left without a message is not worth keeping."""
        if self._created:
            self.store.discard_if_empty(self._created)
            self._created = None

    # -- the loop --------------------------------------------------------------------------------

    def run(self, sid: str, *, session: Session | None = None, created: bool = False) -> int:
        self.open(sid, session)
        self._created = sid if created else None
        try:
            with terminate_like_ctrl_c():
                return self._interactive() if self.interactive else self._piped()
        except Terminated as e:
            return 128 + e.signum
        finally:
            self.data.close()
            self.forget_if_unused()

    def _piped(self) -> int:
        stdin = self.term.stdin
        if reconfigure := getattr(stdin, "reconfigure", None):
            # Invalid UTF-8 (a binary paste, a wrong locale) must not end the chat: it arrives as
            # lone surrogates, kept exactly in memory and replaced only in what the model gets.
            reconfigure(errors="surrogateescape")
        separated = 0
        for line in stdin:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if self.replies > separated and not commands.is_command(line):
                self.out.print()  # a blank line where one reply ends and the next begins
                separated = self.replies
            try:
                self.handle(line)
            except commands.Exit:
                break
            except Terminated:
                raise
            except KeyboardInterrupt:
                return int(ExitCode.INTERRUPTED)
        return int(ExitCode.ERROR) if self.failed else 0

    def _interactive(self) -> int:
        session = prompt.build_prompt(self)
        self._banner()
        armed = False  # a first Ctrl-C at an empty prompt arms, a second one leaves
        while True:
            try:
                line = session.prompt(pre_run=prompt.after_first_draw(self.warm_up))
            except Terminated:
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
                with prompt.keys_not_echoed(self.term.stdin):
                    self.handle(line)
            except commands.Exit:
                return 0
            except Terminated:
                raise
            except KeyboardInterrupt:
                print_note(self.err, "(interrupted)")
            self.out.print()  # a blank line between one exchange and the next prompt

    def handle(self, line: str) -> None:
        """One input line: a slash command or a message to the model. Errors end the turn only."""
        try:
            if commands.is_command(line):
                commands.dispatch(self, line)
            else:
                # "//text" sends "/text": the way to start a message with a slash
                self.send(line[1:] if line.startswith("//") else line)
        except ChatcliError as e:
            self.failed = True
            print_error(self.err, str(e))
        except (commands.Exit, KeyboardInterrupt):
            raise
        except Exception as e:  # a bug must not take the session down with it
            self.failed = True
            where = config.log_exception(self.store.root, "turn failed")  # not the terminal
            print_error(self.err, unexpected(e) + where)

    # -- a turn ----------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        """Save the user's message, stream the reply, run tools, save every message as it ends."""
        assert self.session is not None
        if self.attachments:  # /file: the files go into this message, before its words
            text = compose(text, files=self.attachments)
        self.session.messages = self.store.append(self.sid, [llm.human_dict(text)])
        self.attachments = []
        self.reply(self.session.messages)

    def reply(self, history: list[dict[str, Any]], *, retry_of: int | None = None) -> llm.Turn:
        """Stream the model's answer to ``history`` and save what it sends as it ends.
        ``retry_of``: the answer replaces the reply saved from that file index on (/retry)."""
        assert self.session is not None
        db = self.data.for_turn(self.sid)
        view = self.reply_view()

        def execute(name: str, args: dict[str, Any]) -> str:
            view.before_tool()
            return self._run_tool(name, args)

        model = self.model(tools=db is not None, dialect=db.dialect if db else "SQLite")
        if db is not None and model.facts.tools is False:
            self._tell_no_tools()

        def make_turn(history: list[dict[str, Any]]) -> llm.Turn:
            if retry_of is not None:
                history = [*history, steer.retry_placeholder(retry_of)]
            return model.turn(
                history,
                system=self._system_with_schema(db),
                budget=self.settings["context_tokens"],
                execute=execute if db else None,
            )

        turn = make_turn(history)
        if self.settings["auto_compress"] and steer.compress_to_fit(self, turn):
            turn = make_turn(self.session.messages)  # the summary is appended to the history
        unmarked = retry_of  # the first message saved carries the retry mark
        with view:
            try:
                for event in turn.events():
                    if isinstance(event, llm.Saved):
                        if unmarked is not None:
                            steer.mark_retry(event.messages[0], unmarked)
                            unmarked = None
                        self.session.messages = self.store.append(self.sid, event.messages)
                    view.show(event)
            except KeyboardInterrupt:
                partial = turn.interrupted()
                if partial is not None:
                    if unmarked is not None:
                        steer.mark_retry(partial, unmarked)
                    self.session.messages = self.store.append(self.sid, [partial])
                raise
        if model.facts.tools is False:  # refused during the turn: the turn has said so
            self._told_no_tools.add((self.settings["base_url"], self.model_name))
        self.failed = self.failed or view.broke
        self.replies += 1
        self.last_turn = turn
        steer.after_reply(self, turn)
        return turn

    def reply_view(self) -> ReplyView:
        """How a reply is shown while it streams (``chatcli ask`` shows it its own way)."""
        return ReplyView(
            self.term,
            theme=self.settings["theme"],
            show_thinking=self.settings["show_thinking"],
            max_tokens=self.settings["max_tokens"],
        )

    def model(self, *, tools: bool, dialect: str = "SQLite") -> llm.Model:
        """The session's model on the configured server, with what that server said of itself;
        the SQL tools (when `tools`) name `dialect`, the attached database's."""
        from ..sql import tool_specs

        return llm.Model(
            self.model_name,
            self.api_key,
            base_url=self.settings["base_url"],
            timeout=self.settings["timeout"],
            max_tokens=self.settings["max_tokens"],
            tools=tool_specs(dialect) if tools else [],
            facts=self.server_facts(),
        )

    def server_facts(self) -> llm.ServerFacts:
        """What the server says of itself (context size, tools, models), asked once per model
        and kept for this run, with what it refused since (see llm.turn)."""
        key = (self.settings["base_url"], self.model_name)
        with self._facts_lock:  # the warm-up thread may be asking right now: ask only once
            if key not in self._facts:
                base = self.settings["base_url"]
                # Only a server named by OPENAI_BASE_URL is asked: the OpenAI API says no more.
                self._facts[key] = (
                    llm.probe(base, self.model_name, self.api_key) if base else llm.ServerFacts()
                )
            return self._facts[key]

    def _tell_no_tools(self) -> None:
        """Once per server and model: the database tools cannot reach this model."""
        key = (self.settings["base_url"], self.model_name)
        if key not in self._told_no_tools:
            self._told_no_tools.add(key)
            print_note(
                self.err,
                "the model server says its chat template cannot take tools (llama.cpp: start "
                "it with --jinja and a tool-capable --chat-template-file): the model cannot "
                "query the database; /sql and /schema still work",
            )

    def known_models(self) -> list[str]:
        """The models the server listed, as far as it has been asked (for completion)."""
        return sorted({m for facts in self._facts.values() for m in facts.models})

    def available_models(self) -> list[str]:
        """The models the server offers (``GET /v1/models``), asked now."""
        models = llm.list_models(self.settings["base_url"], self.api_key)
        self.server_facts().models = models or self.server_facts().models
        return models

    def warm_up(self) -> None:
        """Once the prompt is on screen: import LangChain and ask the server about itself, in
        the background, so the first turn need not wait for either."""
        if not self._warmed:
            self._warmed = True
            llm.preload()
            threading.Thread(target=self._ask_server, daemon=True, name="probe").start()

    def _ask_server(self) -> None:
        try:
            self.server_facts()
        except Exception:  # the first turn asks again and reports what is wrong
            pass

    def _system_with_schema(self, db: Any) -> str | None:
        system = self.system_prompt
        if db is None:
            return system
        summary = db.schema_summary()
        return (
            f"{system or ''}\n\nThe user attached a {db.dialect} database (read-only). Use the "
            f"tools to answer questions about it. Schema:\n{summary}"
        ).strip()

    def _run_tool(self, name: str, args: dict[str, Any]) -> str:
        """Run a model's tool call through the sql package, show it, return the model's reply."""
        from ..sql import parse_call

        call = parse_call(name, args)
        print_note(self.err, call.shown)  # before it runs: a long query shows what it waits for
        outcome = call.run(self.database())
        if outcome.result is not None:
            result = outcome.result
            print_table(self.out, result.columns, result.rows, note=result.note)
        elif outcome.error is not None:
            print_note(self.err, f"error: {outcome.error}")
        return outcome.text

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

    def replay(self, count: int = REPLAY_TURNS, *, turns: bool = False) -> None:
        """Show the last ``count`` messages (or turns) of the open session."""
        assert self.session is not None
        messages = self.session.messages
        if turns:
            starts = [i for i, m in enumerate(messages) if m.get("type") == "human"]
            start = starts[-count] if len(starts) >= count else 0
        else:
            start = max(0, len(messages) - count)
        notes = steer_notes(messages)  # replaced by /retry, a /compress summary
        for i in range(start, len(messages)):
            self._show_message(messages[i], note=notes.get(i))

    def _show_message(self, m: dict[str, Any], *, note: str | None = None) -> None:
        kind = m.get("type")
        text = message_text(m)
        if note:
            print_note(self.out, f"({note})")
        if kind == "system" and note:  # a summary: shown apart, dimmed
            print_note(self.out, text)
        elif kind in ("human", "HumanMessageChunk"):
            print_styled(self.out, ("› ", "bold cyan"), (text, ""))
        elif kind in ("ai", "AIMessageChunk"):
            data = m.get("data", {})
            thinking = (data.get("additional_kwargs") or {}).get(llm.REASONING)
            if thinking and isinstance(thinking, str) and self.settings["show_thinking"]:
                print_note(self.out, "thinking: " + shorten(" ".join(thinking.split()), 200))
            if text:
                print_markdown(self.out, text)
            for call in data.get("tool_calls") or []:
                print_note(self.out, _describe_call(str(call.get("name")), call.get("args") or {}))
            finish = (data.get("response_metadata") or {}).get("finish_reason")
            if finish in FINISH_MARKS:
                print_note(self.out, f"({FINISH_MARKS[finish]})")
        elif kind == "tool":
            print_note(self.out, shorten(text, 200))


def _describe_call(name: str, args: dict[str, Any]) -> str:
    from ..sql import describe_call

    return describe_call(name, args)
