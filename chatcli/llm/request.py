"""The request rule: whatever the memory file holds, the messages sent to the server are valid.

The memory file is the record and keeps everything; this module builds a request from it without
ever changing it. A request always has this shape, which every OpenAI-compatible server accepts,
strict chat templates (Gemma, Mistral: "Conversation roles must alternate") included:

    [system] human (ai [tool...]* )* ... human

- A human message that got no answer (the server was down, an HTTP error, Ctrl-C while waiting)
  is left out once a newer human message follows it: two user messages in a row are refused by
  strict templates, and a message too long for the context would otherwise fail every later turn.
- Every tool call is answered: calls whose arguments were not valid JSON get an error result the
  model can learn from, calls without an id get one, calls that never ran (an interrupted turn)
  are dropped with their words kept, results without their call are dropped.
- Empty assistant messages are dropped (some servers refuse them); thinking is never sent back.
- chatcli's own marks (``additional_kwargs["chatcli"]``, see storage/README.md): a reply marked
  ``retry_of: i`` replaces messages ``i`` up to itself; a ``summary`` message stands in for the
  messages it ``covers``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..store.messages import mark_of, replace_surrogates

REASONING = "reasoning_content"  # where thinking is kept in a stored AI message (never sent)

_CHARS_PER_TOKEN = 3  # a cheap first cut before LangChain's own approximate count

_ROLES = {
    "human": "human",
    "HumanMessageChunk": "human",
    "ai": "ai",
    "AIMessageChunk": "ai",
    "tool": "tool",
    "ToolMessageChunk": "tool",
    "system": "system",
    "SystemMessageChunk": "system",
}
_CHAT_ROLES = {"user": "human", "assistant": "ai", "system": "system", "tool": "tool"}


def role_of(message: dict[str, Any]) -> str | None:
    """``human``, ``ai``, ``tool`` or ``system``; None for what no request can carry."""
    kind = message.get("type")
    if kind in ("chat", "ChatMessageChunk"):
        return _CHAT_ROLES.get(str(message.get("data", {}).get("role")))
    return _ROLES.get(str(kind))


@dataclass
class Plan:
    """What a request will carry, before any LangChain object is made."""

    messages: list[dict[str, Any]]  # normalized message dicts, oldest first, all valid together
    summary: str | None  # the text of the summary standing in for older messages, if any
    left_out: int  # messages of the record not carried (trimmed turns are counted later)


def plan(history: list[dict[str, Any]]) -> Plan:
    """Normalize the record into messages that are valid together (no trimming yet)."""
    start, summary = summary_start(history)
    replaced = replaced_by_retry(history)
    kept: list[dict[str, Any]] = []
    for i in range(start, len(history)):
        message = history[i]
        if i in replaced or mark_of(message).get("summary") is not None:
            continue
        role = role_of(message)
        if role in ("human", "ai", "tool"):
            kept.append(_as_role(message, role))
    body = _alternate(_answer_tool_calls(kept))
    return Plan(body, summary, len(history) - len(body))


def summary_start(history: list[dict[str, Any]]) -> tuple[int, str | None]:
    """Where the carried part of the record begins: after what the newest summary covers."""
    for i in range(len(history) - 1, -1, -1):
        summary = mark_of(history[i]).get("summary")
        if isinstance(summary, dict):
            covers = summary.get("covers")
            text = history[i].get("data", {}).get("content")
            if isinstance(covers, int) and 0 < covers <= i and isinstance(text, str):
                return covers, text
    return 0, None


def replaced_by_retry(history: list[dict[str, Any]]) -> set[int]:
    """Indexes of replies a later ``/retry`` replaced (they stay in the file, never sent)."""
    replaced: set[int] = set()
    for i, message in enumerate(history):
        first = mark_of(message).get("retry_of")
        if isinstance(first, int) and 0 <= first < i:
            replaced.update(range(first, i))
    return replaced


def _as_role(message: dict[str, Any], role: str) -> dict[str, Any]:
    """The message as the plain LangChain type of its role, with what servers reject removed."""
    data = message.get("data", {})
    content = data.get("content", "")
    if not isinstance(content, (str, list)):
        content = str(content)
    out: dict[str, Any] = {"content": content}
    if role == "ai":
        out["tool_calls"] = [c for c in data.get("tool_calls") or [] if isinstance(c, dict)]
        out["invalid_tool_calls"] = [
            c for c in data.get("invalid_tool_calls") or [] if isinstance(c, dict)
        ]
    elif role == "tool":
        out["tool_call_id"] = str(data.get("tool_call_id") or "")
        if isinstance(data.get("name"), str):
            out["name"] = data["name"]
    return {"type": role, "data": out}


def _answer_tool_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every call id'd and answered, every result attached to its call."""
    result: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        i += 1
        if message["type"] == "tool":
            continue  # a result whose call is not right before it
        if message["type"] != "ai":
            result.append(message)
            continue
        results: dict[str, dict[str, Any]] = {}
        while i < len(messages) and messages[i]["type"] == "tool":
            results.setdefault(messages[i]["data"]["tool_call_id"], messages[i])
            i += 1
        result.extend(_answered(message, results, position=len(result)))
    return result


def _answered(
    message: dict[str, Any], results: dict[str, dict[str, Any]], *, position: int
) -> list[dict[str, Any]]:
    data = message["data"]
    calls, answers = [], []
    every = [(c, False) for c in data["tool_calls"]] + [
        (c, True) for c in data["invalid_tool_calls"]
    ]
    for k, (call, invalid) in enumerate(every):
        call_id = str(call.get("id") or f"call_chatcli_{position}_{k}")
        name = str(call.get("name") or "unknown")
        answer = results.get(call_id)
        if invalid:
            answer = answer or _tool(call_id, name, invalid_arguments(call))
            call = {"name": name, "args": {}, "id": call_id, "type": "tool_call"}
        elif answer is None:
            continue  # never ran (the turn was interrupted): keep the words, not the call
        else:
            args = call.get("args")
            call = {
                "name": name,
                "args": args if isinstance(args, dict) else {},
                "id": call_id,
                "type": "tool_call",
            }
        calls.append(call)
        answers.append(answer)
    content = data["content"]
    if not calls and not _has_text(content):
        return []  # an empty assistant message tells the model nothing and some servers refuse it
    ai = {"type": "ai", "data": {"content": content, "tool_calls": calls}}
    return [ai, *answers]


def invalid_arguments(call: dict[str, Any]) -> str:
    """The tool result for a call whose arguments were not valid JSON: enough to try again."""
    error = call.get("error") or "not valid JSON"
    return f"error: the arguments were not valid JSON: {error} (got {call.get('args')!r:.200})"


def _tool(call_id: str, name: str, text: str) -> dict[str, Any]:
    return {"type": "tool", "data": {"content": text, "tool_call_id": call_id, "name": name}}


def _has_text(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    return bool(content)


def _alternate(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start on a human message; never two humans or two assistant replies in a row."""
    result: list[dict[str, Any]] = []
    for message in messages:
        kind = message["type"]
        previous = result[-1] if result else None
        if previous is None:
            if kind == "human":  # what comes before the first one (tool results too) is left out
                result.append(message)
            continue
        if kind == "human" and previous["type"] == "human":
            result[-1] = message  # the older one got no answer: leave it out
        elif kind == "ai" and previous["type"] == "ai":
            result[-1] = _joined(previous, message)  # (a call is always followed by its results)
        else:
            result.append(message)
    return result


def _joined(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    a, b = first["data"]["content"], second["data"]["content"]
    both_text = isinstance(a, str) and isinstance(b, str)
    content = "\n\n".join(t for t in (a, b) if t.strip()) if both_text else b
    return {"type": "ai", "data": {"content": content, "tool_calls": second["data"]["tool_calls"]}}


def rough_tail(messages: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The newest messages that could fit ``budget`` tokens, with a margin (cheap: no pydantic)."""
    max_chars = budget * _CHARS_PER_TOKEN * 2
    total = 0
    for i in range(len(messages) - 1, -1, -1):
        total += len(json.dumps(messages[i]["data"].get("content", "")))
        if total > max_chars:
            return messages[i:]
    return messages


@dataclass
class Request:
    """The LangChain messages to send, and what the user may want to know about them."""

    messages: list[Any]
    trimmed: int  # carried messages left out to fit the budget
    tokens: int  # the approximate size of the request
    trimmed_to_newest: bool = False  # only the newest turn was sent, and it is over the budget


def build(history: list[dict[str, Any]], *, system: str | None, budget: int) -> Request:
    """The request for ``history``: normalized (``plan``), then the newest part that fits.

    Only a tail slightly larger than the budget is turned into LangChain objects, so a
    10,000-message session costs about what a short one does. If the newest turn alone is over
    the budget it is sent anyway (the server says whether it fits; a failed turn's message is
    left out of the next request by the rule above).
    """
    from langchain_core.messages import SystemMessage, messages_from_dict, trim_messages
    from langchain_core.messages.utils import count_tokens_approximately

    body = plan(history)
    tail = rough_tail(body.messages, budget)
    messages = messages_from_dict(valid_unicode(tail))
    prompt = "\n\n".join(p for p in (system, _summary_text(body.summary)) if p)
    prefix = [SystemMessage(content=valid_unicode(prompt))] if prompt else []
    budget_left = max(budget - count_tokens_approximately(prefix), 1)
    trimmed = trim_messages(
        messages,
        max_tokens=budget_left,
        token_counter=count_tokens_approximately,
        strategy="last",
        start_on="human",
    )
    over = not trimmed and bool(messages)
    if over:
        last_human = max((i for i, m in enumerate(messages) if m.type == "human"), default=0)
        trimmed = messages[last_human:]
    result = prefix + trimmed
    left = len(body.messages) - len(trimmed)
    return Request(result, left, count_tokens_approximately(result), over)


def _summary_text(summary: str | None) -> str | None:
    if not summary:
        return None
    return f"A summary of the earlier part of this conversation:\n{summary}"


def valid_unicode(value: Any) -> Any:
    """``value`` with lone surrogates replaced by U+FFFD. Invalid UTF-8 typed at a broken terminal
    arrives as lone surrogates; memory keeps them exactly, but a request must be valid UTF-8."""
    if isinstance(value, str):
        return replace_surrogates(value)
    if isinstance(value, list):
        return [valid_unicode(v) for v in value]
    if isinstance(value, dict):
        return {k: valid_unicode(v) for k, v in value.items()}
    return value
