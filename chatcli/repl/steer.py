"""Steering a conversation: tokens in sight after each reply, ``/compress``, ``/retry`` and
``/fork``. Each works through the chat's public API and only ever appends to a memory file (the
marks it leaves are documented in storage/README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import config, llm
from ..errors import ChatcliError
from ..llm.compress import KEEP_TURNS, cut_point, summarize
from ..render import Terminal, Waiting, print_note, print_table
from ..store import Store
from ..store.layout import URL_KEY
from ..store.messages import MARK
from ..store.usage import Usage, totals, totals_by_model

if TYPE_CHECKING:
    from .chat import Chat


# -- tokens ------------------------------------------------------------------------------------


def after_reply(chat: Chat, turn: llm.Turn) -> None:
    """The dim tokens line of a reply, and (once per session) a word when trimming left older
    messages out of the request."""
    show_usage(chat, turn.usage)
    request = turn.request
    if request is not None and request.trimmed > 0 and chat.sid not in chat.told_trimmed:
        chat.told_trimmed.add(chat.sid)
        print_note(
            chat.err,
            f"({request.trimmed} older messages no longer fit the context ({turn.budget} tokens)"
            " and were left out of the request; /compress summarises them)",
        )


def show_usage(chat: Chat, usage: Usage) -> None:
    """The dim ``412 in · 96 out`` line, on a terminal (a piped run's stderr stays for errors)."""
    if chat.settings["show_usage"] and chat.err.is_terminal and (usage.input or usage.output):
        print_note(chat.err, usage.line())


_totals_cache: dict[tuple[str, int], Usage] = {}


def session_totals(chat: Chat) -> Usage:
    """The open session's tokens (cached per length: the toolbar asks on every redraw)."""
    assert chat.session is not None
    key = (chat.sid, len(chat.session.messages))
    if key not in _totals_cache:
        _totals_cache.clear()
        _totals_cache[key] = totals(chat.session.messages)
    return _totals_cache[key]


def toolbar_text(chat: Chat) -> str:
    """``1.2k in · 340 out · ctx 3.1k/16k``: the session's totals and the last request's size
    against the budget in force ("" before there is anything to say)."""
    usage = session_totals(chat)
    parts = []
    if usage.input or usage.output:
        approx = "≈" if usage.estimated else ""
        parts.append(f"{approx}{_k(usage.input)} in · {approx}{_k(usage.output)} out")
    turn = chat.last_turn
    if turn is not None and turn.request is not None:
        parts.append(f"ctx {_k(turn.request.tokens)}/{_k(turn.budget)}")
    return " · ".join(parts)


def print_usage(chat: Chat) -> None:
    """``/usage``: the session's tokens by model."""
    assert chat.session is not None
    by_model = totals_by_model(chat.session.messages)
    if not by_model:
        print_note(chat.err, "no tokens counted in this session yet")
        return
    rows = [
        (model, _approx(u, u.input), _approx(u, u.output), _approx(u, u.total))
        for model, u in by_model.items()
    ]
    if len(rows) > 1:
        u = totals(chat.session.messages)
        rows.append(("total", _approx(u, u.input), _approx(u, u.output), _approx(u, u.total)))
    estimated = any(u.estimated for u in by_model.values())
    note = "≈: estimated by chatcli (the server reported no usage)" if estimated else None
    print_table(chat.out, ["model", "in", "out", "total"], rows, note=note)


def _approx(usage: Usage, n: int) -> str:
    return f"≈{n}" if usage.estimated else str(n)


def _k(n: int) -> str:
    """3.1k, 16k, 412."""
    if n < 1000:
        return str(n)
    value = f"{n / 1000:.1f}".removesuffix(".0")
    return f"{value}k"


# -- /compress ---------------------------------------------------------------------------------


def compress(chat: Chat, keep_turns: int = KEEP_TURNS, *, auto: bool = False) -> bool:
    """Summarise the open session's older part, keeping the newest ``keep_turns`` turns verbatim;
    False when there is nothing to summarise (an error unless ``auto``). Ctrl-C or a failure
    meanwhile leaves the files as they were: the summary is appended only once it is whole."""
    assert chat.session is not None
    history = chat.session.messages
    covers = cut_point(history, keep_turns)
    if covers is None:
        if auto:
            return False
        raise ChatcliError(
            f"nothing to compress: keeping the last {keep_turns} turns verbatim leaves no older"
            " messages that are not summarised yet"
        )
    how = "automatically " if auto else ""
    print_note(chat.err, f"summarising messages 1–{covers} {how}(the newer ones stay verbatim)…")
    waiting = Waiting(chat.out, "summarising…")
    waiting.start()
    try:
        summary = summarize(
            chat.model(tools=False),
            history,
            covers,
            budget=chat.settings["context_tokens"],
            note=lambda text: print_note(chat.err, text),
        )
    finally:
        waiting.stop()
    chat.session.messages = chat.store.append(chat.sid, [summary.message])
    words = len(str(summary.message["data"]["content"]).split())
    print_note(
        chat.err,
        f"messages 1–{covers} are summarised in {words} words; requests send the summary instead"
        f" (every message stays in the file; /history shows them)",
    )
    show_usage(chat, summary.usage)
    return True


def compress_to_fit(chat: Chat, turn: llm.Turn) -> bool:
    """``auto_compress``: summarise first when the request for ``turn`` would leave messages
    out. True when a summary was appended (the caller builds its turn again)."""
    from ..llm.request import build

    request = build(turn.history, system=turn.system, budget=turn.budget)
    return request.trimmed > 0 and compress(chat, auto=True)


def start_compress(store: Store, term: Terminal, sid: str, *, keep_turns: int) -> int:
    """``chatcli compress ID``: the same as ``/compress`` in that session, without a REPL."""
    from .chat import Chat

    chat = Chat(store, config.Settings(), config.require_api_key(), term=term)
    chat.open(sid)
    compress(chat, keep_turns)
    return 0


# -- /retry ------------------------------------------------------------------------------------


def retry_point(history: list[dict[str, Any]]) -> int | None:
    """The file index of the reply ``/retry`` replaces (the model's messages after the last human
    one); None when the last human message has no reply yet (it is just answered)."""
    from ..llm.request import role_of
    from ..store.messages import mark_of

    last_human = max((i for i, m in enumerate(history) if role_of(m) == "human"), default=None)
    if last_human is None:
        raise ChatcliError("nothing to retry: this session has no message of yours yet")
    for i in range(last_human + 1, len(history)):
        if role_of(history[i]) in ("ai", "tool") and mark_of(history[i]).get("summary") is None:
            return i
    return None


def retry(chat: Chat) -> None:
    """Ask again for the last reply; the replaced one stays in the file, marked never to be
    sent again (``retry_of`` on the new reply's first message)."""
    assert chat.session is not None
    first = retry_point(chat.session.messages)
    chat.reply(chat.session.messages, retry_of=first)


def retry_placeholder(first: int) -> dict[str, Any]:
    """What stands, in a request's history, where the new reply will be saved: an empty reply
    carrying its mark, so the request rule leaves the replaced reply out (an empty assistant
    message is never sent)."""
    return {"type": "ai", "data": {"content": "", "additional_kwargs": {MARK: {"retry_of": first}}}}


def mark_retry(message: dict[str, Any], first: int) -> None:
    """Mark the first saved message of a new reply as replacing messages ``first`` onwards."""
    data = message.setdefault("data", {})
    extra = data.get("additional_kwargs")
    if not isinstance(extra, dict):
        extra = data["additional_kwargs"] = {}
    own = extra.get(MARK)
    if not isinstance(own, dict):
        own = extra[MARK] = {}
    own["retry_of"] = first


# -- /fork -------------------------------------------------------------------------------------


@dataclass
class Forked:
    sid: str
    count: int  # messages the fork holds
    asked: int | None  # what was asked for (None: all)
    has_db: bool
    url: str | None = None  # the PostgreSQL database both sessions are attached to

    def lines(self, original: str) -> list[str]:
        """What to tell the user."""
        said = [f"forked {original} into {self.sid} ({self.count} messages)"]
        if self.asked is not None and self.asked != self.count:
            said.append(
                f"(cut after message {self.count}, not {self.asked}: a tool call stays with"
                " its results)"
            )
        if self.has_db:
            said.append("(with a copy of the attached database)")
        if self.url:
            said.append(f"(attached to the same database, {self.url})")
        return said


def fork(store: Store, sid: str, at: int | None = None) -> Forked:
    """A new session holding the first ``at`` messages of ``sid`` (default: all) and a copy of
    its database; ``sid``'s files are only read."""
    total = len(store.load_messages(sid))
    if total == 0:
        raise ChatcliError("nothing to fork: this session holds no messages yet")
    if at is not None:
        if at < 0:
            raise ChatcliError(f"--at must be 0 or more, got {at}")
        if at > total:
            raise ChatcliError(f"the session holds {total} messages; cannot fork at {at}")
    new, count = store.fork(sid, at)
    has_db = store.has_db(sid)
    url = store.read_meta(new).get(URL_KEY)
    if has_db:
        from ..sql import copy_database

        try:
            copy_database(store.db_path(sid), store.db_path(new))
        except BaseException:
            store.trash(new)  # never half a fork; the trash keeps what was made
            raise
    return Forked(new, count, at, has_db, url)


def fork_open(chat: Chat, at: int | None) -> Forked:
    """``/fork [N]``: fork the open session and switch to the fork."""
    forked = fork(chat.store, chat.sid, at)
    chat.switch(forked.sid)
    return forked
