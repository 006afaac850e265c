"""What real OpenAI-compatible servers stream, made into what langchain-openai understands.

langchain-openai reads each streamed chunk as OpenAI sends it. Real servers differ, and
langchain-openai then loses data (shared/FACTS.md, "Verified 2026-12"):
- tool-call deltas are merged by ``index``: calls without one are dropped, and several calls all
  sent with index 0 (Ollama: https://github.com/ollama/ollama/issues/7881) become one garbled call;
  a call without ``id`` fails validation when the reply is saved;
- thinking sent as ``delta.reasoning_content`` (DeepSeek, LM Studio:
  https://api-docs.deepseek.com/guides/reasoning_model) or ``delta.reasoning`` (vLLM:
  https://docs.vllm.ai/en/latest/features/reasoning_outputs.html, Ollama's /v1) is dropped;
- whether the body ended with ``data: [DONE]`` is not visible, so a reply without a
  ``finish_reason`` (Ollama, LiteLLM, vllm-mlx send none or "") cannot be told from a cut one.

``ChatModel`` fixes the chunks before langchain-openai reads them; ``Transport`` watches the
bytes for ``[DONE]`` and counts the HTTP tries of a request. Imported only when a model is
needed (httpx comes with openai).
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from typing import Any

import httpx

from .request import REASONING

_DONE = b"data: [DONE]"


class _Progress(threading.local):
    """What the transport saw of this thread's latest request."""

    done = False
    tries = 0


progress = _Progress()


def reset_progress() -> None:
    progress.done = False
    progress.tries = 0


class ToolCallDeltas:
    """Gives every streamed tool call its own index and an id, whatever the server sent."""

    def __init__(self) -> None:
        self._by_id: dict[str, int] = {}
        self._by_raw_index: dict[Any, int] = {}
        self._named: list[bool] = []
        self._current: int | None = None

    def fix(self, delta: dict[str, Any]) -> dict[str, Any]:
        fn = delta.get("function") if isinstance(delta.get("function"), dict) else {}
        call_id, name, raw = delta.get("id") or None, fn.get("name") or None, delta.get("index")
        number = self._number(call_id, name, raw)
        first = number == len(self._named)
        if first:
            self._named.append(bool(name))
            call_id = call_id or f"call_{uuid.uuid4().hex[:24]}"
            self._by_id[call_id] = number
        elif name and not self._named[number]:
            self._named[number] = first = True  # the name came after the id: send it once
        if raw is not None:
            self._by_raw_index[raw] = number
        self._current = number
        return {
            "index": number,
            "id": call_id if first else None,
            "type": "function",
            "function": {"name": name if first else None, "arguments": fn.get("arguments") or ""},
        }

    def _number(self, call_id: str | None, name: str | None, raw: Any) -> int:
        if call_id is not None:
            return self._by_id.get(call_id, len(self._named))
        known = self._by_raw_index.get(raw, self._current) if raw is not None else self._current
        if known is None or (name and self._named[known]):
            return len(self._named)  # a name where one was already given starts a new call
        return known


def fix_chunk(chunk: dict[str, Any], calls: ToolCallDeltas) -> str | None:
    """Rewrite ``chunk``'s tool-call deltas in place; return its thinking text, if any."""
    thinking = None
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for key in ("reasoning_content", "reasoning"):
            if isinstance(delta.get(key), str) and delta[key]:
                thinking = delta[key]
                break
        if isinstance(delta.get("tool_calls"), list):
            delta["tool_calls"] = [calls.fix(d) for d in delta["tool_calls"] if isinstance(d, dict)]
    return thinking


@functools.cache
def chat_model_class() -> type:
    """ChatOpenAI with the chunk fixes (made on first use: importing langchain_openai is slow)."""
    ChatOpenAI = chat_openai_class()
    from pydantic import PrivateAttr

    class ChatModel(ChatOpenAI):
        _calls: Any = PrivateAttr(default=None)

        def _stream(self, *args: Any, **kwargs: Any) -> Any:
            self._calls = ToolCallDeltas()
            reset_progress()
            yield from super()._stream(*args, **kwargs)

        def _convert_chunk_to_generation_chunk(
            self, chunk: dict, default_chunk_class: type, base_generation_info: dict | None
        ) -> Any:
            thinking = fix_chunk(chunk, self._calls or ToolCallDeltas())
            generation = super()._convert_chunk_to_generation_chunk(
                chunk, default_chunk_class, base_generation_info
            )
            if thinking and generation is not None:
                generation.message.additional_kwargs[REASONING] = thinking
            return generation

        def chunks(self, messages: list[Any], **kwargs: Any) -> Any:
            """The reply's AIMessageChunks as ``stream()`` yields them, for less CPU a token.

            The request is langchain-openai's own (``_get_request_payload``) and so is every
            chunk's conversion (``_convert_chunk_to_generation_chunk``); what is left out is
            the openai SDK building a pydantic object of each chunk that langchain-openai then
            dumps back to a dict, and ``stream()``'s per-chunk callbacks and tracing, which
            chatcli uses none of. On a real server, where each token is its own read, those
            were most of chatcli's CPU per token (bench/token_bench.py).
            """
            kwargs["stream"] = True
            if self._should_stream_usage(None, **kwargs):
                kwargs["stream_options"] = {"include_usage": True}
            payload = self._get_request_payload(messages, **kwargs)
            run_id = f"lc_run--{uuid.uuid4()}"
            self._calls = ToolCallDeltas()
            reset_progress()
            with self.client.with_streaming_response.create(**payload) as response:
                yield from self._read(response, run_id)

        def _read(self, response: Any, run_id: str) -> Any:
            import openai
            from langchain_core.messages import AIMessageChunk

            chunk_class: type = AIMessageChunk
            lines = _mid_stream_errors(response.iter_lines(), response.http_request)
            for data in _sse_data(lines):
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise openai.APIError(
                        f"the server sent a chunk that is not JSON: {data[:80]!r}",
                        response.http_request,
                        body=None,
                    ) from None
                if isinstance(chunk, dict) and chunk.get("error"):  # as the SDK raises it
                    error = chunk["error"]
                    text = error.get("message") if isinstance(error, dict) else str(error)
                    raise openai.APIError(
                        str(text or "error in the stream"), response.http_request, body=chunk
                    )
                generation = self._convert_chunk_to_generation_chunk(chunk, chunk_class, {})
                if generation is None:
                    continue
                message = generation.message
                chunk_class = message.__class__
                if message.id is None:
                    message.id = run_id
                info = generation.generation_info or {}
                message.response_metadata = {**info, **message.response_metadata}
                yield message

        def _get_request_payload(self, *args: Any, **kwargs: Any) -> dict:
            payload = super()._get_request_payload(*args, **kwargs)
            # langchain-openai sends only max_completion_tokens, which older Ollama and other
            # local servers ignore; they know max_tokens. OpenAI itself refuses both together.
            if self.openai_api_base and "max_completion_tokens" in payload:
                payload.setdefault("max_tokens", payload["max_completion_tokens"])
            return payload

    return ChatModel


def _mid_stream_errors(lines: Any, request: Any) -> Any:
    """``lines``, with a connection that breaks or times out mid-reply raised as the openai
    SDK raises it (APITimeoutError, APIConnectionError), after the lines that did arrive."""
    import openai

    try:
        yield from lines
    except httpx.TimeoutException as e:
        raise openai.APITimeoutError(request=request) from e
    except httpx.TransportError as e:
        raise openai.APIConnectionError(request=request) from e


def _sse_data(lines: Any) -> Any:
    """The data of each server-sent event, up to ``[DONE]`` (comments and keep-alives skipped)."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            joined, data = "\n".join(data), []
            if joined.startswith("[DONE]"):
                return
            yield joined
    if data and not data[0].startswith("[DONE]"):
        yield "\n".join(data)


def stream_chunks(client: Any, messages: list[Any]) -> Any:
    """``ChatModel.chunks`` of ``client``, which may be bound to tools (``bind_tools``)."""
    bound = getattr(client, "bound", client)
    return bound.chunks(messages, **getattr(client, "kwargs", {}))


def chat_openai_class() -> type:
    """langchain-openai's ChatOpenAI, with the package initialisers that only gather names
    (``langchain_openai``, ``openai.types``, ``langsmith.types``) left until used (deferred.py,
    installed by ``chatcli.llm``)."""
    from langchain_openai.chat_models.base import ChatOpenAI

    return ChatOpenAI


@functools.cache
def http_client(*, tls: bool = True) -> httpx.Client:
    """One HTTP client per process: TLS set-up is paid once, not on every turn (the openai SDK
    passes each request's own timeout). ``tls=False`` (a plain http:// server, a local one as a
    rule): no certificate store is loaded (30-90 ms); https through it fails verification."""
    import ssl

    verify: Any = True if tls else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    transport = Transport(httpx.HTTPTransport(verify=verify))
    return httpx.Client(transport=transport, follow_redirects=False)


class _NoAsync(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("chatcli streams synchronously; the async client is never used")


@functools.cache
def unused_async_client() -> httpx.AsyncClient:
    """For langchain-openai, which builds an async client too: chatcli never uses it, and one
    that cannot connect loads no certificate store (its default does, on every start)."""
    return httpx.AsyncClient(transport=_NoAsync())


class _WatchedStream(httpx.SyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Any:
        tail = b""
        for part in self._stream:
            if not progress.done and _DONE in tail + part:
                progress.done = True
            tail = part[-len(_DONE) :]
            yield part

    def close(self) -> None:
        self._stream.close()


class Transport(httpx.BaseTransport):
    """An httpx transport that counts tries and notices the end-of-stream marker."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        progress.tries += 1
        response = self._inner.handle_request(request)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_WatchedStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._inner.close()


class ThinkSplitter:
    """Splits inline thinking from the answer: ``<think>…</think>`` at the start of a reply
    (llama.cpp with ``--reasoning-format none``, Qwen3, DeepSeek-R1 distills:
    https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md, reasoning_format).
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.thinking = ""
        self.answer = ""
        self._state = "start"  # start -> thinking -> answer (or start -> answer)
        self._held = ""  # text that may be the beginning of a tag

    def feed(self, text: str) -> list[tuple[bool, str]]:
        """(is_thinking, text) pieces of ``text``, in order."""
        out: list[tuple[bool, str]] = []
        text = self._held + text
        self._held = ""
        if self._state == "start":
            stripped = text.lstrip()
            if self.OPEN.startswith(stripped) and len(stripped) < len(self.OPEN):
                self._held = text  # too early to tell
                return out
            if stripped.startswith(self.OPEN):
                self._state = "thinking"
                text = stripped[len(self.OPEN) :]
            else:
                self._state = "answer"
        if self._state == "thinking":
            end = text.find(self.CLOSE)
            if end < 0:
                keep = _partial_suffix(text, self.CLOSE)
                text, self._held = text[: len(text) - keep], text[len(text) - keep :]
                if text:
                    self.thinking += text
                    out.append((True, text))
                return out
            if end:
                self.thinking += text[:end]
                out.append((True, text[:end]))
            self._state = "answer"
            text = text[end + len(self.CLOSE) :].lstrip("\n")
        if text:
            self.answer += text
            out.append((False, text))
        return out

    def flush(self) -> list[tuple[bool, str]]:
        """What was held back at the end of the reply."""
        held, self._held = self._held, ""
        if not held:
            return []
        thinking = self._state == "thinking"
        if thinking:
            self.thinking += held
        else:
            self.answer += held
        return [(thinking, held)]


def _partial_suffix(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could begin ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
