"""One turn with the model: stream the reply, run tool calls, recover from what servers refuse.

A server that refuses part of a request is asked once more without it, and the turn says so in
one line: ``stream_options`` (Groq, Mistral, Azure), tools (llama.cpp without ``--jinja``, vLLM
without auto tool choice, Ollama models without tool support), or a request over its context
(sent again trimmed to the size the server named).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import DamagedSession, ModelError
from ..store.messages import MARK
from ..store.usage import Usage
from ..text import mask_userinfo
from . import server as srv
from .request import REASONING, Request, build, invalid_arguments
from .server import ServerFacts

MAX_TOOL_ROUNDS = 8
MAX_RETRIES = 1
CONNECT_TIMEOUT = 5.0
_REPLY_RESERVE = 1024  # tokens kept free for the reply when the server's context is known


@dataclass
class TextDelta:
    text: str


@dataclass
class ThinkingDelta:
    """Thinking streamed before (or beside) the answer: shown dimmed, stored, never sent back."""

    text: str


@dataclass
class Saved:
    """Messages to append to memory now: an AI message, or an AI tool call with its results."""

    messages: list[dict[str, Any]]
    finish_reason: str | None = None
    final: bool = True  # False: tool results, the model's next round follows


@dataclass
class ToolRun:
    """The model called a tool and got ``result``."""

    name: str
    args: dict[str, Any]
    result: str


@dataclass
class Note:
    text: str


Event = TextDelta | ThinkingDelta | Saved | ToolRun | Note
ToolExecutor = Callable[[str, dict[str, Any]], str]


@dataclass
class Model:
    """A chat model on an OpenAI-compatible server, and what is known about that server."""

    name: str
    api_key: str
    base_url: str | None = None
    timeout: float = 60.0
    max_tokens: int | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    facts: ServerFacts = field(default_factory=ServerFacts)

    def client(self, *, tools: bool) -> Any:
        import openai

        from .compat import chat_model_class, http_client, unused_async_client

        llm = chat_model_class()(
            model=self.name,
            api_key=self.api_key,
            base_url=self.base_url,
            streaming=True,
            # custom servers only report usage when asked; some refuse the question
            stream_usage=self.facts.stream_usage,
            max_retries=MAX_RETRIES,  # an unreachable server must fail in seconds, not minutes
            timeout=openai.Timeout(self.timeout, connect=CONNECT_TIMEOUT),
            max_tokens=self.max_tokens,
            http_client=http_client(tls=not (self.base_url or "").startswith("http://")),
            http_async_client=unused_async_client(),
        )
        return llm.bind_tools(self.tools) if tools and self.tools else llm

    def budget(self, setting: int) -> int:
        """Tokens of history per request: the setting, within what the server says it holds."""
        if self.facts.context is None:
            return setting
        reserve = self.max_tokens or min(_REPLY_RESERVE, self.facts.context // 4)
        return max(min(setting, self.facts.context - reserve), 1)

    def turn(
        self,
        history: list[dict[str, Any]],
        *,
        system: str | None,
        budget: int,
        execute: ToolExecutor | None = None,
    ) -> Turn:
        return Turn(self, history, system=system, budget=budget, execute=execute)


class _Refused(Exception):
    def __init__(self, kind: str, message: str, status: int) -> None:
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status


class Turn:
    """One user turn: stream the reply, run tool calls, repeat until a final answer.

    Iterate ``events()``. If it is abandoned (Ctrl-C), ``interrupted()`` gives what arrived.
    ``request`` is the latest request sent (what it left out, its size); ``usage`` the tokens
    of every round so far (estimated where the server reported none).
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
        self.budget = model.budget(budget)
        self.execute = execute
        self.request: Request | None = None
        self.usage = Usage()
        self._tools = bool(model.tools) and model.facts.tools is not False
        self._parts: list[Any] = []  # the AIMessageChunks of the reply being streamed
        self._think: Any = None  # the inline <think> splitter of the reply being streamed

    @property
    def _acc(self) -> Any:
        """The reply streamed so far as one AIMessageChunk (None: nothing arrived)."""
        if not self._parts:
            return None
        if len(self._parts) > 1:  # one merge of all chunks, not one per chunk
            self._parts = [self._parts[0] + self._parts[1:]]
        return self._parts[0]

    @_acc.setter
    def _acc(self, value: Any) -> None:
        self._parts = [] if value is None else [value]

    def events(self) -> Iterator[Event]:
        for round_ in range(MAX_TOOL_ROUNDS + 1):
            finish = yield from self._ask()
            message = self._finished(finish)
            data = message["data"]
            calls = data.get("tool_calls") or []
            invalid = data.get("invalid_tool_calls") or []
            if not (calls or invalid) or finish == "incomplete" or self.execute is None:
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
            for call in invalid:  # answered, so the model can learn from it and try again
                name = str(call.get("name") or "a tool")
                yield Note(f"the model called {name} with arguments that are not valid JSON")
                results.append(_tool_dict(invalid_arguments(call), call["id"], name))
            # Until the results are saved, Ctrl-C keeps the words of this message (not its calls)
            self._acc = None
            self.history += [message, *results]
            yield Saved([message, *results], finish, final=False)

    def _ask(self) -> Iterator[Event]:
        """Send the request; on a refusal, once per kind, change it and send it again."""
        budget = self.budget
        tried: set[str] = set()
        while True:
            try:
                self.request = build(self.history, system=self.system, budget=budget)
            except Exception as e:  # pydantic's ValidationError, a validator's AttributeError
                raise DamagedSession(
                    f"this session holds a message LangChain cannot load: {load_error(e)}"
                ) from e
            try:
                return (yield from self._stream(self.model.client(tools=self._tools)))
            except _Refused as refused:
                if refused.kind == "context" and refused.kind in tried:
                    raise ModelError(self._still_too_long()) from None
                if refused.kind in tried:
                    raise ModelError(_status_line(refused.status, refused.message)) from None
                tried.add(refused.kind)
                budget = yield from self._adapt(refused, budget)

    def _adapt(self, refused: _Refused, budget: int) -> Iterator[Event]:
        facts = self.model.facts
        if refused.kind == "stream_options":
            facts.stream_usage = False  # remembered for this server (the caller keeps facts)
        elif refused.kind == "tools":
            facts.tools = self._tools = False
            yield Note(srv.tools_advice(refused.message, self.model.name))
        elif refused.kind == "context":
            named = srv.context_from_error(refused.message)
            if named:
                facts.context = named
            smaller = min(self.model.budget(budget), budget // 2)
            sent = self.request.tokens if self.request else 0
            if self.request is None or self.request.trimmed_to_newest or smaller < 1:
                raise ModelError(srv.too_long_advice(sent, facts.context)) from None
            yield Note(
                f"the request (≈{sent} tokens) was over the server's context"
                f"{f' ({facts.context} tokens)' if facts.context else ''}: "
                "sent again with only the newest messages that fit"
            )
            return smaller
        return budget

    def _still_too_long(self) -> str:
        context = self.model.facts.context
        if self.request is None or self.request.trimmed_to_newest:
            return srv.too_long_advice(self.request.tokens if self.request else 0, context)
        size = f" ({context} tokens)" if context else ""
        return (
            f"the server refused even the trimmed request (≈{self.request.tokens} tokens) as over "
            f"its context{size}: lower context_tokens, or give the server a larger context"
        )

    def _stream(self, client: Any) -> Iterator[Event]:
        import openai

        from .compat import ThinkSplitter, progress, stream_chunks

        assert self.request is not None
        self._acc = None
        self._think = ThinkSplitter()
        try:
            for chunk in stream_chunks(client, self.request.messages):
                self._parts.append(chunk)  # summed once, at the end (_acc)
                thinking = chunk.additional_kwargs.get(REASONING)
                if isinstance(thinking, str) and thinking:
                    yield ThinkingDelta(thinking)
                if isinstance(chunk.content, str) and chunk.content:
                    for is_thinking, text in self._think.feed(chunk.content):
                        yield ThinkingDelta(text) if is_thinking else TextDelta(text)
            for is_thinking, text in self._think.flush():  # what could have begun a tag
                yield ThinkingDelta(text) if is_thinking else TextDelta(text)
        except openai.APIStatusError as e:
            if self._acc is None:
                kind = srv.refusal_kind(e.status_code, _detail(e), tools=self._tools)
                if kind:
                    raise _Refused(kind, _detail(e), e.status_code) from e
            raise ModelError(self._status_message(e)) from e
        except openai.APIConnectionError as e:  # APITimeoutError is a subclass
            if self._acc is None:
                raise ModelError(self._connection_message(e, progress.tries)) from e
            return "incomplete"  # the connection broke mid-reply: keep what arrived
        except openai.APIError as e:  # an error event in the stream, a chunk that is not JSON
            if self._acc is None:
                raise ModelError(f"the model server sent an error: {e}") from e
            return "incomplete"
        if self._acc is None:
            raise ModelError("the model server sent an empty reply")
        finish = self._acc.response_metadata.get("finish_reason") or None
        if finish is None:
            # Ollama, LiteLLM and vllm-mlx may send no finish reason (or ""): a body that
            # ended with [DONE] is complete, one that just stopped is not.
            finish = "stop" if progress.done else "incomplete"
        return finish

    def _finished(self, finish: str) -> dict[str, Any]:
        from langchain_core.messages import message_to_dict
        from langchain_core.messages.utils import message_chunk_to_message

        message = self._with_thinking(message_chunk_to_message(self._acc))
        message.response_metadata["finish_reason"] = finish
        if finish == "incomplete":
            message = _plain_ai(message)
        self._count(message)
        return message_to_dict(message)

    def _with_thinking(self, message: Any) -> Any:
        """Inline ``<think>`` moved out of the answer, next to any streamed thinking."""
        if self._think is not None and self._think.thinking:
            field_thinking = message.additional_kwargs.get(REASONING) or ""
            message.additional_kwargs[REASONING] = field_thinking + self._think.thinking
            message.content = self._think.answer
        return message

    def interrupted(self) -> dict[str, Any] | None:
        """The partial reply after Ctrl-C, with ``finish_reason: interrupted`` (None if nothing)."""
        if self._acc is None:
            return None
        from langchain_core.messages import message_to_dict
        from langchain_core.messages.utils import message_chunk_to_message

        message = _plain_ai(self._with_thinking(message_chunk_to_message(self._acc)))
        self._acc = None
        if not message.content and not message.additional_kwargs.get(REASONING):
            return None  # only unfinished tool calls arrived: nothing worth keeping
        message.response_metadata["finish_reason"] = "interrupted"
        self._count(message)
        return message_to_dict(message)

    def _count(self, message: Any) -> None:
        """Add the message's tokens to ``usage``; when the server reported none, estimate them
        and note the estimate in chatcli's mark (``usage_metadata`` stays the server's word)."""
        reported = message.usage_metadata
        if reported:
            self.usage += Usage(reported["input_tokens"], reported["output_tokens"])
            return
        from langchain_core.messages.utils import count_tokens_approximately

        sent = self.request.tokens if self.request else 0
        usage = Usage(sent, count_tokens_approximately([message]), estimated=True)
        own = message.additional_kwargs.setdefault(MARK, {})
        own["usage"] = {
            "input_tokens": usage.input,
            "output_tokens": usage.output,
            "estimated": True,
            "model": self.model.name,
        }
        self.usage += usage

    def _status_message(self, e: Any) -> str:
        detail = _detail(e)
        if e.status_code == 401:
            return "the model server rejected the API key (HTTP 401); check OPENAI_API_KEY"
        if e.status_code == 404 and "model" in detail.lower():
            offered = self.model.facts.models or srv.list_models(
                self.model.base_url, self.model.api_key
            )
            if offered:
                shown = ", ".join(offered[:8]) + (", …" if len(offered) > 8 else "")
                return f"{_status_line(404, detail)}; the server offers: {shown} (see /models)"
        return _status_line(e.status_code, detail)

    def _connection_message(self, e: Any, tries: int) -> str:
        import openai

        # a base URL may carry a token as user:token@: never shown
        where = mask_userinfo(self.model.base_url) if self.model.base_url else "the OpenAI API"
        if isinstance(e, openai.APITimeoutError):
            tried = f" ({tries} tries)" if tries > 1 else ""
            return (
                f"the model server at {where} did not answer within {self.model.timeout:g} s{tried}"
            )
        return f"cannot reach the model server at {where} (is it running? check OPENAI_BASE_URL)"


def _detail(e: Any) -> str:
    body = getattr(e, "body", None)
    detail = ""
    if isinstance(body, dict):
        inner = body.get("error")
        detail = str(
            body.get("message")
            or (inner.get("message") if isinstance(inner, dict) else inner)
            or ""
        )
    return detail or getattr(e, "message", "") or ""


def _status_line(status: int, detail: str) -> str:
    return f"the model server answered HTTP {status}: {detail}".rstrip(": ")


def _plain_ai(message: Any) -> Any:
    """The message without tool calls: half-streamed calls must never be replayed."""
    from langchain_core.messages import AIMessage

    return AIMessage(
        content=message.content,
        additional_kwargs={
            k: v for k, v in message.additional_kwargs.items() if k in (REASONING, MARK)
        },
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


def load_error(e: Exception) -> str:
    """One line saying why LangChain could not load a message."""
    if isinstance(e, KeyError):
        return f"missing field {e}"
    if callable(errors := getattr(e, "errors", None)):  # pydantic: say which field and why
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__
