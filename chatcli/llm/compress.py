"""``/compress``: the older part of a conversation summarised by the model, so a long chat goes on
without losing its start. The summary is one more message appended to the memory file (a system
message marked ``summary: {covers: N}``, see storage/README.md); the request rule then sends it
instead of messages ``[0, N)``, which stay in the file untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ModelError
from ..store.messages import MARK, mark_of
from ..store.usage import Usage
from .request import plan, role_of, summary_start
from .turn import Model, Note, Saved, Turn

KEEP_TURNS = 2  # the newest turns kept verbatim
_CHARS_PER_TOKEN = 3  # a rough cut of an over-long transcript (the server has the last word)

SYSTEM = (
    "You summarise conversations. Write a concise summary of the conversation you are given so "
    "that it can stand in for it from now on: keep facts, names, numbers, decisions, the user's "
    "goals and preferences, open questions, and what tool calls (such as SQL queries) found. "
    "Write in the language of the conversation. Reply with the summary only."
)


@dataclass
class Summary:
    """A summary ready to append: the message dict, what it covers, what it cost."""

    message: dict[str, Any]
    covers: int
    usage: Usage


def cut_point(history: list[dict[str, Any]], keep_turns: int = KEEP_TURNS) -> int | None:
    """Where the verbatim part would begin: at the ``keep_turns``-th newest human message (a
    turn's start, so a tool call is never split from its results); None if no turn is older
    than those and not summarised yet."""
    start, _ = summary_start(history)
    humans = [i for i in range(start, len(history)) if role_of(history[i]) == "human"]
    if keep_turns <= 0:
        return len(history) if humans else None
    if len(humans) <= keep_turns:
        return None
    return humans[-keep_turns]


def summarize(
    model: Model,
    history: list[dict[str, Any]],
    covers: int,
    *,
    budget: int,
    note: Callable[[str], None] = lambda text: None,
) -> Summary:
    """Ask the model for a summary of ``history[:covers]`` (with any earlier summary). Nothing is
    saved here: the caller appends ``Summary.message``, so Ctrl-C meanwhile changes nothing."""
    covered = history[:covers]
    newest = _newest_summary(history)
    if newest is not None and newest >= covers:
        covered.append(history[newest])  # where plan() finds it, standing in for [0, start)
    body = plan(covered)
    text = _transcript(body.summary, body.messages, max_chars=budget * _CHARS_PER_TOKEN)
    turn = Turn(model, [_human(text)], system=SYSTEM, budget=budget, execute=None)
    saved: Saved | None = None
    for event in turn.events():
        if isinstance(event, Saved):
            saved = event
        elif isinstance(event, Note):
            note(event.text)
    assert saved is not None  # events() always ends with the final Saved (or raises)
    answer = saved.messages[-1]["data"].get("content")
    if saved.finish_reason == "length":
        raise ModelError("the summary was cut at the token limit (max_tokens); nothing changed")
    if saved.finish_reason == "incomplete":
        raise ModelError("the summary broke off before it finished; nothing changed")
    if not isinstance(answer, str) or not answer.strip():
        raise ModelError("the model sent an empty summary; nothing changed")
    own = {
        "summary": {"covers": covers},
        "usage": {
            "input_tokens": turn.usage.input,
            "output_tokens": turn.usage.output,
            "estimated": turn.usage.estimated,
            "model": model.name,
        },
    }
    return Summary(_system(answer.strip(), own), covers, turn.usage)


def _newest_summary(history: list[dict[str, Any]]) -> int | None:
    for i in range(len(history) - 1, -1, -1):
        if isinstance(mark_of(history[i]).get("summary"), dict):
            return i
    return None


_SPEAKERS = {"human": "User", "ai": "Assistant", "tool": "Tool result"}


def _transcript(previous: str | None, messages: list[dict[str, Any]], *, max_chars: int) -> str:
    """The conversation as plain text; if it is over the budget, its newest part that fits."""
    lines = []
    for message in messages:
        data = message["data"]
        content = data.get("content")
        text = content if isinstance(content, str) else str(content)
        for call in data.get("tool_calls") or []:
            text += f"\n(called {call.get('name')} with {call.get('args')})"
        lines.append(f"{_SPEAKERS.get(message['type'], message['type'])}: {text.strip()}")
    conversation = "\n\n".join(lines)
    if len(conversation) > max_chars:
        conversation = "(the start is left out)\n…" + conversation[-max_chars:]
    head = f"A summary of what came before:\n{previous}\n\n" if previous else ""
    return f"{head}The conversation to summarise:\n\n{conversation}"


def _human(text: str) -> dict[str, Any]:
    return {"type": "human", "data": {"content": text}}


def _system(text: str, own: dict[str, Any]) -> dict[str, Any]:
    from langchain_core.messages import SystemMessage, message_to_dict

    return message_to_dict(SystemMessage(content=text, additional_kwargs={MARK: own}))
