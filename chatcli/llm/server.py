"""What a model server says about itself: its context size, its models, whether it takes tools.

Plain ``urllib`` on purpose: it is asked in the background while LangChain is still importing.
Every question is optional: a server that does not answer one simply leaves that fact unknown.
- llama.cpp ``GET /props``: ``default_generation_settings.n_ctx`` and ``chat_template_caps``
  (https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md, "GET /props").
- vLLM ``GET /v1/models``: ``max_model_len`` on each model
  (https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html).
- Ollama ``POST /api/show``: ``parameters`` holds ``num_ctx`` when set; Ollama's default context
  is 4096 tokens otherwise (https://github.com/ollama/ollama/blob/main/docs/api.md#show-model-information,
  https://github.com/ollama/ollama/blob/main/docs/faq.md).
"""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass, field
from typing import Any

PROBE_SECONDS = 2.0
OLLAMA_DEFAULT_CONTEXT = 4096
_MAX_BODY = 4 * 1024 * 1024  # /props carries the whole chat template: bounded, never unbounded


@dataclass
class ServerFacts:
    """What is known about one server (and model); None means "not said"."""

    context: int | None = None  # tokens
    tools: bool | None = None  # False: the server said it cannot take tools
    stream_usage: bool = True  # False: the server refused ``stream_options``
    models: list[str] = field(default_factory=list)


def root_of(base_url: str) -> str:
    """``http://host:port`` for ``http://host:port/v1``: llama.cpp and Ollama answer at the root."""
    return re.sub(r"/v1/?$", "", base_url.rstrip("/"))


def probe(
    base_url: str, model: str, api_key: str, *, timeout: float = PROBE_SECONDS
) -> ServerFacts:
    """Ask the server what it says about itself. Never raises; unknowns stay None."""
    facts = ServerFacts()
    models = _get(f"{base_url.rstrip('/')}/models", api_key, timeout)
    if isinstance(models, dict) and isinstance(models.get("data"), list):
        for entry in models["data"]:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                facts.models.append(entry["id"])
                length = entry.get("max_model_len")  # vLLM
                if entry["id"] == model and isinstance(length, int) and length > 0:
                    facts.context = length
    root = root_of(base_url)
    props = _get(f"{root}/props", api_key, timeout)
    if isinstance(props, dict):  # llama.cpp
        settings = props.get("default_generation_settings")
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        n_ctx = n_ctx if isinstance(n_ctx, int) else props.get("n_ctx")
        if isinstance(n_ctx, int) and n_ctx > 0:
            facts.context = n_ctx
        caps = props.get("chat_template_caps")
        if isinstance(caps, dict) and isinstance(caps.get("supports_tools"), bool):
            facts.tools = caps["supports_tools"]
    elif facts.context is None:
        show = _post(f"{root}/api/show", {"model": model}, api_key, timeout)
        if isinstance(show, dict) and ("model_info" in show or "parameters" in show):  # Ollama
            found = re.search(r"num_ctx\s+(\d+)", str(show.get("parameters") or ""))
            facts.context = int(found.group(1)) if found else OLLAMA_DEFAULT_CONTEXT
            capabilities = show.get("capabilities")
            if isinstance(capabilities, list):
                facts.tools = "tools" in capabilities
    return facts


def context_from_error(message: str) -> int | None:
    """The context size a context-length error names, if it names one.

    llama.cpp: "request (5000 tokens) exceeds the available context size (4096 tokens), try
    increasing it"; OpenAI and vLLM: "This model's maximum context length is 8192 tokens...".
    """
    for pattern in (r"context size \((\d+) tokens\)", r"maximum context length is (\d+)"):
        found = re.search(pattern, message)
        if found:
            return int(found.group(1))
    return None


def is_context_error(message: str) -> bool:
    lowered = message.lower()
    return any(
        words in lowered
        for words in (
            "exceeds the available context size",  # llama.cpp
            "maximum context length",  # OpenAI, vLLM
            "context_length_exceeded",  # OpenAI's code
            "context length",  # LM Studio, LiteLLM
            "prompt is too long",
        )
    )


def _get(url: str, api_key: str, timeout: float) -> Any:
    return _fetch(urllib.request.Request(url, headers=_headers(api_key)), timeout)


def _post(url: str, body: dict[str, Any], api_key: str, timeout: float) -> Any:
    data = json.dumps(body).encode()
    headers = {**_headers(api_key), "Content-Type": "application/json"}
    return _fetch(urllib.request.Request(url, data=data, headers=headers), timeout)


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key.isascii() else {}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the API key must never follow a redirect to another host


_opener = urllib.request.build_opener(_NoRedirect)


def _fetch(request: urllib.request.Request, timeout: float) -> Any:
    try:
        with _opener.open(request, timeout=timeout) as response:
            return json.loads(response.read(_MAX_BODY))
    except Exception:  # not this kind of server, not reachable, not JSON: the fact stays unknown
        return None


def list_models(base_url: str | None, api_key: str, *, timeout: float = PROBE_SECONDS) -> list[str]:
    """The model names ``GET /v1/models`` lists (empty if the server does not say)."""
    url = f"{(base_url or 'https://api.openai.com/v1').rstrip('/')}/models"
    body = _get(url, api_key, timeout)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return []
    return [e["id"] for e in data if isinstance(e, dict) and isinstance(e.get("id"), str)]


def refusal_kind(status: int, message: str, *, tools: bool) -> str | None:
    """Which part of a request a server refused, if the refusal says so.

    - ``stream_options``: Groq, Mistral and Azure answer 400/422 to ``stream_options``
      (https://github.com/langchain-ai/langchain/issues/26387, https://github.com/BerriAI/litellm/issues/6181).
    - ``tools``: llama.cpp ``tools param requires --jinja flag`` (500,
      tools/server/utils.hpp), vLLM ``"auto" tool choice requires --enable-auto-tool-choice and
      --tool-call-parser to be set`` (400, vllm/entrypoints/openai/serving_chat.py), Ollama
      ``<model> does not support tools`` (400, https://github.com/ollama/ollama/issues/6155).
    - ``context``: llama.cpp's ``exceeds the available context size``, OpenAI's and vLLM's
      ``maximum context length``.
    """
    lowered = message.lower()
    if status in (400, 422) and ("stream_options" in lowered or "include_usage" in lowered):
        return "stream_options"
    if (
        tools
        and status in (400, 500)
        and any(
            words in lowered
            for words in (
                "requires --jinja",
                'auto" tool choice',
                "does not support tools",
                "enable-auto-tool-choice",
                "tools are not supported",
                "tool use is not",
            )
        )
    ):
        return "tools"
    if status in (400, 413) and is_context_error(message):
        return "context"
    return None


def tools_advice(message: str, model: str) -> str:
    """One line: why the server refused tools, what to change there, and that the chat goes on."""
    lowered = message.lower()
    if "jinja" in lowered:
        fix = "restart llama-server with --jinja (and a tool-capable --chat-template-file)"
    elif "auto-tool-choice" in lowered or 'auto" tool choice' in lowered:
        fix = "start vLLM with --enable-auto-tool-choice --tool-call-parser <parser>"
    elif "does not support tools" in lowered:
        fix = f"pick a model with tool support (`ollama show {model}` lists its capabilities)"
    else:
        fix = "use a server or model that supports tool calling"
    return (
        f"the model server cannot take tools ({message.strip()[:120]}): {fix}; "
        "going on without database tools (/sql and /schema still work)"
    )


def too_long_advice(tokens: int, context: int | None) -> str:
    size = f" ({context} tokens)" if context else ""
    return (
        f"the newest message (≈{tokens} tokens) is too long for the server's context{size}: "
        "shorten it, or give the server a larger context (llama-server -c, Ollama num_ctx); "
        "it stays in the history and is not sent again"
    )
