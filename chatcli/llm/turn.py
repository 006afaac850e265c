"""The model: the only module that imports LangChain. Streaming, trimming and the tool loop.

``import langchain_openai`` costs about two seconds, so nothing here is imported at module level:
``preload()`` starts the import in the background once the prompt is on screen, and the first
turn simply waits for it if the user was quicker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import DamagedSession, ModelError
from .store.messages import replace_surrogates

MAX_TOOL_ROUNDS = 8
MAX_RETRIES = 1
CONNECT_TIMEOUT = 5.0
# Characters per token, a cheap first cut before LangChain's own approximate count.
_CHARS_PER_TOKEN = 3

_preload_thread: threading.Thread | None = None


def preload() -> None:
    """Import LangChain in a background thread so the first turn need not wait for it."""
    global _preload_thread
    if _preload_thread is None:
        _preload_thread = threading.Thread(target=_import_langchain, daemon=True, name="preload")
        _preload_thread.start()


def _import_langchain() -> None:
    try:
        import langchain_core.messages  # noqa: F401
        import langchain_openai  # noqa: F401
    except Exception:  # the foreground import will report it properly
        pass


# ---------------------------------------------------------------------------------------------
# Message dicts <-> LangChain


def human_dict(text: str) -> dict[str, Any]:
    """A human message in the memory-file format (``message_to_dict``)."""
    from langchain_core.messages import HumanMessage, message_to_dict

    return message_to_dict(HumanMessage(content=text))


def normalize_messages(dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Load message dicts through LangChain and dump them again: exactly what a save writes.

    Raises ValueError naming the first message LangChain cannot load (used to check imports).
    """
    from langchain_core.messages import message_to_dict, messages_from_dict

    result = []
    for i, d in enumerate(dicts):
        try:
            (message,) = messages_from_dict([d])
        except Exception as e:  # pydantic's ValidationError, KeyError for a missing field, ...
            raise ValueError(f"message {i} cannot be loaded: {_load_error(e)}") from e
        result.append(message_to_dict(message))
    return result


def _load_error(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"missing field {e}"
    if callable(errors := getattr(e, "errors", None)):  # pydantic: say which field and why
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def prepare_messages(
    history: list[dict[str, Any]], *, system: str | None, budget: int
) -> list[Any]:
    """What goes to the model: the system prompt and the newest history that fits ``budget``.

    Only a tail slightly larger than the budget is turned into LangChain objects, so a
    10,000-message session costs about what a short one does.
    """
    from langchain_core.messages import SystemMessage, messages_from_dict, trim_messages
    from langchain_core.messages.utils import count_tokens_approximately

    tail = _rough_tail(history, budget * _CHARS_PER_TOKEN * 2)
    try:
        loaded = messages_from_dict(_valid_unicode(tail))
    except Exception as e:  # pydantic's ValidationError, or a validator's own AttributeError
        raise DamagedSession(
            f"this session holds a message LangChain cannot load: {_load_error(e)}"
        ) from e
    messages = _pair_tool_calls(loaded)
    trimmed = trim_messages(
        messages,
        max_tokens=budget,
        token_counter=count_tokens_approximately,
        strategy="last",
        start_on="human",
        include_system=True,
    )
    if not any(m.type == "human" for m in trimmed):
        # The newest turn alone is over budget: send it anyway rather than send nothing.
        last_human = max((i for i, m in enumerate(messages) if m.type == "human"), default=0)
        trimmed = messages[last_human:]
    prefix = [SystemMessage(content=_valid_unicode(system))] if system else []
    return prefix + [m for m in trimmed if not (system and m.type == "system")]


def _valid_unicode(value: Any) -> Any:
    """``value`` with lone surrogates replaced by U+FFFD. Invalid UTF-8 typed at a broken terminal
    arrives as lone surrogates; memory keeps them exactly, but a request must be valid UTF-8."""
    if isinstance(value, str):
        return replace_surrogates(value)
    if isinstance(value, list):
        return [_valid_unicode(v) for v in value]
    if isinstance(value, dict):
        return {k: _valid_unicode(v) for k, v in value.items()}
    return value


def _rough_tail(history: list[dict[str, Any]], max_chars: int) -> list[dict[str, Any]]:
    total = 0
    for i in range(len(history) - 1, -1, -1):
        total += len(json.dumps(history[i].get("data", {}).get("content", "")))
        if total > max_chars:
            return history[i:]
    return history


def _pair_tool_calls(messages: list[Any]) -> list[Any]:
    """Drop what the API would reject: tool results without their call, calls without results."""
    from langchain_core.messages import AIMessage, ToolMessage

    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    called: set[str] = set()
    result = []
    for m in messages:
        if isinstance(m, AIMessage) and m.tool_calls:
            if all(c["id"] in answered for c in m.tool_calls):
                called.update(c["id"] for c in m.tool_calls)
            else:  # interrupted before its tools ran: keep the words, not the dangling calls
                m = AIMessage(content=m.content, response_metadata=m.response_metadata, id=m.id)
                if not m.content:
                    continue
        elif isinstance(m, ToolMessage) and m.tool_call_id not in called:
            continue
        result.append(m)
    return result


# ---------------------------------------------------------------------------------------------
# Streaming a turn


@dataclass
class TextDelta:
    text: str


@dataclass
class Saved:
    """Messages to append to memory now: an AI message, or an AI tool call with its results."""

    messages: list[dict[str, Any]]
    finish_reason: str | None = None


@dataclass
class ToolRun:
    """The model called a tool; ``display`` is shown to the user."""

    name: str
    args: dict[str, Any]
    result: str


@dataclass
class Note:
    text: str


Event = TextDelta | Saved | ToolRun | Note
ToolExecutor = Callable[[str, dict[str, Any]], str]


@dataclass
class Model:
    """A chat model on an OpenAI-compatible server."""

    name: str
    api_key: str
    base_url: str | None = None
    timeout: float = 60.0
    tools: list[dict[str, Any]] = field(default_factory=list)

    def _client(self) -> Any:
        import openai
        from langchain_openai import ChatOpenAI

        llm = ChatOpenAI(
            model=self.name,
            api_key=self.api_key,
            base_url=self.base_url,
            streaming=True,
            stream_usage=True,  # custom servers only report usage when asked
            max_retries=MAX_RETRIES,  # an unreachable server must fail in seconds, not minutes
            timeout=openai.Timeout(self.timeout, connect=CONNECT_TIMEOUT),
        )
        return llm.bind_tools(self.tools) if self.tools else llm

    def turn(
        self,
        history: list[dict[str, Any]],
        *,
        system: str | None,
        budget: int,
        execute: ToolExecutor | None = None,
    ) -> Turn:
        return Turn(self, history, system=system, budget=budget, execute=execute)


class Turn:
    """One user turn: stream the reply, run tool calls, repeat until a final answer.

    Iterate ``events()``. If it is abandoned (Ctrl-C), ``interrupted()`` gives what arrived.
    """

    def __init__(
        self,
        model: Model,
        history: list[dict[str, Any]],
        *,
        system: str | None,
        budget: int,
        execute: ToolExecutor | None,
    ) -> None:
        self.model = model
        self.history = list(history)
        self.system = system
        self.budget = budget
        self.execute = execute
        self._acc: Any = None  # the AIMessageChunk being streamed

    def events(self) -> Iterator[Event]:
        client = self.model._client()
        for round_ in range(MAX_TOOL_ROUNDS + 1):
            messages = prepare_messages(self.history, system=self.system, budget=self.budget)
            self._acc = None
            finish = yield from self._stream(client, messages)
            message = self._finished(finish)
            calls = message["data"].get("tool_calls") or []
            if not calls or finish in ("incomplete",) or self.execute is None:
                self._acc = None
                yield Saved([message], finish)
                return
            if round_ == MAX_TOOL_ROUNDS:
                self._acc = None
                note = f"stopped after {MAX_TOOL_ROUNDS} rounds of tool calls"
                yield Saved([_without_tool_calls(message, note)], "tool_limit")
                yield Note(note)
                return
            results = []
            for call in calls:
                text = self.execute(call["name"], call.get("args") or {})
                yield ToolRun(call["name"], call.get("args") or {}, text)
                results.append(_tool_dict(text, call["id"], call["name"]))
            # Until the results are saved, Ctrl-C keeps the words of this message (not its calls)
            self._acc = None
            self.history += [message, *results]
            yield Saved([message, *results], finish)

    def _stream(self, client: Any, messages: list[Any]) -> Iterator[Event]:
        import openai

        try:
            for chunk in client.stream(messages):
                self._acc = chunk if self._acc is None else self._acc + chunk
                if isinstance(chunk.content, str) and chunk.content:
                    yield TextDelta(chunk.content)
        except openai.APIStatusError as e:
            raise ModelError(_status_message(e)) from e
        except openai.APIConnectionError as e:  # APITimeoutError is a subclass
            if self._acc is None:
                raise ModelError(_connection_message(e, self.model)) from e
            return "incomplete"  # the connection broke mid-reply: keep what arrived
        if self._acc is None:
            raise ModelError("the model server sent an empty reply")
        finish = self._acc.response_metadata.get("finish_reason")
        return finish or "incomplete"  # the body ended before any finish reason

    def _finished(self, finish: str) -> dict[str, Any]:
        from langchain_core.messages import message_to_dict
        from langchain_core.messages.utils import message_chunk_to_message

        message = message_chunk_to_message(self._acc)
        message.response_metadata["finish_reason"] = finish
        if finish == "incomplete":
            message = _plain_ai(message)
        return message_to_dict(message)

    def interrupted(self) -> dict[str, Any] | None:
        """The partial reply after Ctrl-C, with ``finish_reason: interrupted`` (None if nothing)."""
        if self._acc is None:
            return None
        from langchain_core.messages import message_to_dict
        from langchain_core.messages.utils import message_chunk_to_message

        message = _plain_ai(message_chunk_to_message(self._acc))
        self._acc = None
        if not message.content:  # only unfinished tool calls arrived: nothing worth keeping
            return None
        message.response_metadata["finish_reason"] = "interrupted"
        return message_to_dict(message)


def _plain_ai(message: Any) -> Any:
    """The message without tool calls: half-streamed calls must never be replayed."""
    from langchain_core.messages import AIMessage

    return AIMessage(
        content=message.content,
        response_metadata=dict(message.response_metadata),
        usage_metadata=message.usage_metadata,
        id=message.id,
    )


def _without_tool_calls(message: dict[str, Any], note: str) -> dict[str, Any]:
    """The last AI message of a turn cut at the round limit, its unanswered calls dropped."""
    from langchain_core.messages import message_to_dict, messages_from_dict

    plain = _plain_ai(messages_from_dict([message])[0])
    plain.response_metadata["finish_reason"] = "tool_limit"
    if not plain.content:
        # An empty assistant message tells the model nothing on the next turn, and some
        # OpenAI-compatible servers refuse one.
        plain.content = f"({note} without a final answer)"
    return message_to_dict(plain)


def _tool_dict(text: str, call_id: str, name: str) -> dict[str, Any]:
    from langchain_core.messages import ToolMessage, message_to_dict

    return message_to_dict(ToolMessage(content=text, tool_call_id=call_id, name=name))


def _status_message(e: Any) -> str:
    detail = ""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        detail = str(body.get("message") or body.get("error", {}).get("message", "") or "")
    detail = detail or getattr(e, "message", "") or ""
    if e.status_code == 401:
        return "the model server rejected the API key (HTTP 401); check OPENAI_API_KEY"
    return f"the model server answered HTTP {e.status_code}: {detail}".rstrip(": ")


def _connection_message(e: Any, model: Model) -> str:
    where = model.base_url or "the OpenAI API"
    import openai

    if isinstance(e, openai.APITimeoutError):
        tries = MAX_RETRIES + 1
        return (
            f"the model server at {where} did not answer within {model.timeout:g} s ({tries} tries)"
        )
    return f"cannot reach the model server at {where} (is it running? check OPENAI_BASE_URL)"
