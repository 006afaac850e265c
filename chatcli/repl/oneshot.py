"""``chatcli ask``: one turn, then exit. The message is put together from the prompt, piped text
and attached files (compose.py); the turn is the REPL's own (``Chat.send``: the same request,
streaming and saving); only how the reply is shown differs: Markdown on a terminal, the exact
text in a pipe, or one JSON object.

Speed: when the warm helper (chatcli/helper/) answers, the CLI hands it the whole command and
this module runs in a process forked from it, LangChain already imported; otherwise here, and a
helper is started for next time. Either way the process leaves with ``os._exit`` once everything
is saved (each save is fsynced) and flushed: tearing LangChain's modules down costs ~0.2 s.
"""

from __future__ import annotations

import gc
import io
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import config, llm
from ..errors import ChatcliError, ExitCode
from ..render import Terminal, print_error, print_note, write_json
from ..store import Store, message_text
from ..store.layout import MEMORY_LIMIT
from ..store.messages import shorten
from ..store.usage import usage_of
from .chat import Chat, Terminated, terminate_like_ctrl_c
from .compose import compose, read_attachment
from .reply import final_words


class NothingToAsk(ChatcliError):
    exit_code = ExitCode.USAGE


def _import_model_layer() -> None:
    try:
        from ..llm import compat

        compat.chat_model_class()
    except Exception:  # the turn imports it again and says what is wrong
        pass
    finally:
        gc.enable()


def run(store: Store, term: Terminal, argv: Sequence[str], **options: Any) -> int:
    """The ``ask`` command in this process (the CLI has tried the warm helper first); then a
    helper is started for the next one. Returns the exit status only when it cannot leave."""
    from .. import helper

    # LangChain imports in the background while the message and session are made. The
    # collector stays off until it is in: an import allocates millions of objects and frees
    # few, and collecting during it costs ~15% of it (0.1-0.15 s).
    gc.disable()
    threading.Thread(target=_import_model_layer, daemon=True, name="import").start()
    settings = config.Settings({"model": options.get("model")})
    code = ask(store, term, settings=settings, **options)
    if helper.real_process(term) and not helper.IN_CHILD:
        if settings["helper"]:
            helper.flush()  # the reply is out before the helper's start costs anything
            helper.spawn(store.root)
        helper.leave(code)
    return code


def ask(
    store: Store,
    term: Terminal,
    *,
    settings: config.Settings,
    words: Sequence[str] = (),
    files: Sequence[Path] = (),
    cont: bool = False,
    session: str | None = None,
    model: str | None = None,
    system: str | None = None,
    db: Sequence[str | Path] = (),
    replace: bool = False,
    as_json: bool = False,
) -> int:
    """One turn: check everything that can fail, save the message, stream and save the reply.
    Exit status: 0 a complete reply, 1 an error or a reply that broke off, 130 Ctrl-C."""
    api_key = config.require_api_key()
    if cont and session:
        raise NothingToAsk("give -c/--continue or -s/--session, not both")
    prompt = " ".join(words).strip() or None
    piped = None if term.stdin_isatty else _read_stdin(term)
    attached = [read_attachment(Path(f)) for f in files]  # every file refused before a word
    text = compose(prompt, stdin=piped, files=attached)
    if not text.strip():
        raise NothingToAsk(
            "nothing to ask: give a PROMPT, pipe some text in, or attach a file with -f"
        )
    if db:
        from ..sql.attach import check_sources

        check_sources(db)  # a bad file refused before any session file exists
    created = not (cont or session)
    if cont:
        sid = store.latest()
    elif session:
        sid = store.resolve(session)
    else:
        title = shorten(" ".join(prompt.split())) if prompt else None
        sid = store.create(title=title, model=settings["model"], system=system)
    chat = OneShot(store, settings, api_key, term=term, as_json=as_json)
    try:
        # only the fields given: update_meta takes None as "remove"
        given = {k: v for k, v in (("model", model), ("system", system)) if v}
        if not created and given:
            store.update_meta(sid, **given)
        if db:
            from ..attaching import attach, report

            lines, notes = report(attach(store, term, sid, db, replace=replace, settings=settings))
            for line in notes:
                print_note(term.err, line)
        chat.open(sid)
        chat.warm_up()  # the server is asked about itself while LangChain finishes importing
        return chat.turn(text)
    finally:
        chat.close()
        if created and store.discard_if_empty(sid):
            pass  # refused before the message was saved: no empty session is left behind
        elif term.stderr_isatty:
            print_note(term.err, f"session {sid}")


class OneShot(Chat):
    """A Chat for one turn, showing its reply as ``ask`` does."""

    def __init__(
        self,
        store: Store,
        settings: config.Settings,
        api_key: str,
        *,
        term: Terminal,
        as_json: bool,
    ) -> None:
        super().__init__(store, settings, api_key, term=term)
        self.as_json = as_json
        self.plain = as_json or not term.stdout_isatty
        if self.plain:
            self.out = self.err  # query tables go to stderr: stdout holds the reply alone

    def reply_view(self) -> Any:
        if self.plain:
            return PlainView(
                self.term, max_tokens=self.settings["max_tokens"], write=not self.as_json
            )
        return super().reply_view()

    def turn(self, text: str) -> int:
        assert self.session is not None
        before = len(self.session.messages)
        code = 0
        try:
            with terminate_like_ctrl_c():  # SIGTERM, SIGHUP: what arrived is saved too
                self.send(text)
            code = int(ExitCode.ERROR) if self.failed else 0
        except Terminated as e:
            code = 128 + e.signum
        except KeyboardInterrupt:  # what arrived is saved (Chat.reply)
            code = int(ExitCode.INTERRUPTED)
            print_note(self.err if self.plain else self.term.err, "(interrupted)")
        except ChatcliError as e:
            print_error(self.term.err, str(e))
            code = int(ExitCode.ERROR)
        if self.as_json:
            self._print_json(self.session.messages[before + 1 :])
        return code

    def close(self) -> None:
        """The database (if one was opened) closed; nothing else is left open."""
        self.data.close()

    def _print_json(self, added: list[dict[str, Any]]) -> None:
        last = next((m for m in reversed(added) if m.get("type") == "ai"), None)
        if last is None:
            return  # nothing came back (an error before the reply): the error says why
        meta = last.get("data", {}).get("response_metadata") or {}
        usage = usage_of(last)
        obj = {
            "session": self.sid,
            "reply": message_text(last),
            "model": meta.get("model_name") or self.model_name,
            "finish_reason": meta.get("finish_reason"),
            "usage": None
            if usage is None
            else {
                "input_tokens": usage.input,
                "output_tokens": usage.output,
                "total_tokens": usage.total,
                "estimated": usage.estimated,
            },
        }
        write_json(self.term, json.dumps(obj, ensure_ascii=False).encode("utf-8", "replace"))


class PlainView:
    """A reply in a pipe or a file: its text exactly as the model sent it, ending with a
    newline (``write=False``: nothing at all, for --json); notes and errors on stderr only."""

    def __init__(self, term: Terminal, *, max_tokens: Any, write: bool) -> None:
        self.term = term
        self.broke = False
        self._max_tokens = max_tokens
        self._write = write
        self._last = ""  # the end of what was written: does it need a newline?

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_line()

    def before_tool(self) -> None:
        self._end_line()

    def show(self, event: llm.Event) -> None:
        if isinstance(event, llm.TextDelta) and self._write and event.text:
            _write(self.term, event.text)
            self._last = event.text[-1]
        elif isinstance(event, llm.Saved) and event.final:
            error, note = final_words(event, self._max_tokens)
            self.broke = self.broke or error is not None
            self._end_line()
            if error:
                print_error(self.term.err, error)
            if note:
                print_note(self.term.err, note)
        elif isinstance(event, llm.Note):
            print_note(self.term.err, event.text)

    def _end_line(self) -> None:
        if self._last and self._last != "\n":
            _write(self.term, "\n")
        self._last = ""


def _write(term: Terminal, text: str) -> None:
    """Straight to stdout's bytes: lone surrogates a model may send become U+FFFD, never an
    encoding error half-way through a reply."""
    stream = term.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(text)
    else:
        stream.flush()
        buffer.write(text.encode("utf-8", "replace"))
        buffer.flush()


def _read_stdin(term: Terminal) -> str | None:
    """Piped content as text (invalid UTF-8 replaced), read with transfer's bound; binary input
    refused."""
    from ..transfer import read_stdin

    stream = term.stdin
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text stream without bytes underneath (a test's StringIO)
        buffer = io.BytesIO(stream.read(MEMORY_LIMIT + 1).encode("utf-8", "replace"))
    data = read_stdin(buffer, text=True)
    return data.decode("utf-8", "replace").removeprefix("\ufeff") or None
