"""Profiles for tests/fake_openai.py: the documented quirks of real OpenAI-compatible servers.

A profile is data: how a family streams reasoning and tool calls, which finish_reason it sends,
what it refuses and with which exact status and body, how it says its context size. Each value
cites where the behaviour is documented or reported. The llama.cpp bodies are pinned against a
real llama-server by tests/test_llama_server.py.

Token counting here is a stand-in for a tokenizer: one token per word or punctuation mark, plus
4 per message (``count_tokens``), so a test can work out when a context limit is crossed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]
Refusal = tuple[int, Body]

# -- exact error bodies; "{model}", "{n}", "{ctx}", "{ids}" are filled in per request ---------

# llama.cpp tools/server/server-common.cpp format_error_response + server-task.cpp
# server_task_result_error::to_json (type exceed_context_size_error carries n_prompt_tokens, n_ctx);
# message from server-context.cpp ("request (%d tokens) exceeds the available context size").
LLAMACPP_CONTEXT: Refusal = (
    400,
    {
        "error": {
            "code": 400,
            "message": "request ({n} tokens) exceeds the available context size ({ctx} tokens), "
            "try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": "{n:int}",
            "n_ctx": "{ctx:int}",
        }
    },
)
# llama.cpp server-common.cpp: throw std::runtime_error("tools param requires --jinja flag"),
# answered as ERROR_TYPE_SERVER (500) by server-context.cpp's handler.
LLAMACPP_NO_JINJA: Refusal = (
    500,
    {
        "error": {
            "code": 500,
            "message": "tools param requires --jinja flag",
            "type": "server_error",
        }
    },
)
# The Jinja raise_exception of Gemma/Mistral templates (llama.cpp models/templates/
# google-gemma-2-2b-it.jinja), as the real llama-server reports it for tests/templates/
# gemma_strict.jinja (copied from its answer; the source excerpt differs per template).
LLAMACPP_ALTERNATE: Refusal = (
    400,
    {
        "error": {
            "code": 400,
            "message": "Unable to generate parser for this template. Automatic parser generation "
            "failed: \n------------\nWhile executing CallExpression at line 14, column 27 in "
            "source:\n...% 2 == 0) -%}\u21b5        {{ raise_exception('Conversation roles must "
            "alternate user...\n                                           ^\nError: Jinja "
            "Exception: Conversation roles must alternate user/assistant/user/assistant/...",
            "type": "invalid_request_error",
        }
    },
)
# OpenAI: https://github.com/mckaywrigley/chatbot-ui/issues/102 (full body),
# https://github.com/crewAIInc/crewAI-examples/issues/121 ("your messages resulted in" wording).
OPENAI_CONTEXT: Refusal = (
    400,
    {
        "error": {
            "message": "This model's maximum context length is {ctx} tokens. However, your "
            "messages resulted in {n} tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
)
# OpenAI: https://github.com/BloomLabsInc/genkit-plugins/issues/225,
# https://github.com/MoonshotAI/kimi-cli/issues/2405 (same text from OpenAI-compatible APIs).
OPENAI_UNANSWERED: Refusal = (
    400,
    {
        "error": {
            "message": "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have response "
            "messages: {ids}",
            "type": "invalid_request_error",
            "param": "messages",
            "code": None,
        }
    },
)
# OpenAI: https://github.com/shobrook/wut/issues/14 (404, code model_not_found).
OPENAI_NO_MODEL: Refusal = (
    404,
    {
        "error": {
            "message": "The model `{model}` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    },
)
# vLLM: the ErrorResponse shape {"object": "error", ...} as in
# https://github.com/THUDM/LongBench/issues/104 (context) and
# https://github.com/vllm-project/vllm/issues/9986 (tool choice without the server flags).
VLLM_CONTEXT: Refusal = (
    400,
    {
        "object": "error",
        "message": "This model's maximum context length is {ctx} tokens. However, you requested "
        "{n} tokens. Please reduce the length of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
)
VLLM_NO_TOOLS: Refusal = (
    400,
    {
        "object": "error",
        "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
        "to be set",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
)
# Ollama /v1: https://github.com/ollama/ollama/issues/6027 (tools),
# https://github.com/netease-youdao/QAnything/issues/555 (unknown model on /v1).
OLLAMA_NO_TOOLS: Refusal = (
    400,
    {
        "error": {
            "message": "{model} does not support tools",
            "type": "api_error",
            "param": None,
            "code": None,
        }
    },
)
OLLAMA_NO_MODEL: Refusal = (
    404,
    {
        "error": {
            "message": 'model "{model}" not found, try pulling it first',
            "type": "api_error",
            "param": None,
            "code": None,
        }
    },
)
# stream_options refused. Groq: https://github.com/vercel/ai/pull/1578 (comment with the body);
# Mistral: https://github.com/avante-corp/avante.nvim/issues/2347;
# Azure OpenAI: https://github.com/agno-agi/agno/issues/1066.
GROQ_STREAM_OPTIONS: Refusal = (
    400,
    {
        "error": {
            "message": "property 'stream_options' is unsupported, did you mean 'stream'?",
            "type": "invalid_request_error",
        }
    },
)
MISTRAL_STREAM_OPTIONS: Refusal = (
    422,
    {
        "object": "error",
        "message": {
            "detail": [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", "stream_options", "include_usage"],
                    "msg": "Extra inputs are not permitted",
                    "input": True,
                }
            ]
        },
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    },
)
AZURE_STREAM_OPTIONS: Refusal = (
    400,
    {
        "error": {
            "message": "Unknown parameter: 'stream_options'.",
            "type": "invalid_request_error",
            "param": "stream_options",
            "code": "unknown_parameter",
        }
    },
)


@dataclass(frozen=True)
class Profile:
    """How one server family behaves; the defaults are OpenAI's documented wire format."""

    name: str
    # where a scripted `reasoning=` goes: "reasoning_content", "reasoning", or "think" (inline
    # <think>...</think> at the start of content)
    reasoning: str = "reasoning_content"
    tool_index: str = "seq"  # "seq" (0, 1, ...), "zero" (all 0) or "omit" (no index key)
    tool_ids: bool = True  # False: tool-call deltas carry no "id"
    # finish_reason after tool calls / after text: a string (may be ""), or None for no
    # finish chunk at all (the stream still ends with [DONE])
    tool_finish: str | None = "tool_calls"
    reply_finish: str | None = "stop"
    stream_options_error: Refusal | None = None
    tools_error: Refusal | None = None  # answer to any request carrying `tools`
    ignore_tools: bool = False  # accept `tools` and never call one
    alternation_error: Refusal | None = None  # roles after the system message must alternate
    context_error: Refusal | None = None  # prompt tokens >= n_ctx
    unanswered_error: Refusal | None = None  # a tool call with no tool result in the request
    model_error: Refusal | None = None  # a model not in the server's list
    n_ctx: int = 4096
    discovery: str | None = None  # "llamacpp" (/props), "vllm" (/v1/models), "ollama" (/api/show)
    extra: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        # OpenAI itself, strict: https://platform.openai.com/docs/api-reference/chat
        Profile(
            "openai",
            context_error=OPENAI_CONTEXT,
            unanswered_error=OPENAI_UNANSWERED,
            model_error=OPENAI_NO_MODEL,
            n_ctx=128000,
        ),
        # DeepSeek API, delta.reasoning_content: https://api-docs.deepseek.com/guides/reasoning_model
        Profile("deepseek", reasoning="reasoning_content"),
        # LM Studio streams reasoning_content too
        # (https://github.com/Center-for-AI-Innovation/uiuc-chat-frontend/pull/487 lists the fields)
        Profile("lmstudio", reasoning="reasoning_content"),
        # llama-server, tools/server/README.md: reasoning_content by default, n_ctx in GET /props,
        # context overflow 400 (pinned by tests/test_llama_server.py)
        Profile(
            "llamacpp",
            reasoning="reasoning_content",
            context_error=LLAMACPP_CONTEXT,
            discovery="llamacpp",
        ),
        # llama-server --reasoning-format none ("leaves thoughts unparsed in message.content",
        # README), as Qwen3 and DeepSeek-R1 distills emit them
        Profile(
            "llamacpp-think",
            reasoning="think",
            context_error=LLAMACPP_CONTEXT,
            discovery="llamacpp",
        ),
        # llama-server --no-jinja: every request with tools is refused
        Profile(
            "llamacpp-nojinja",
            tools_error=LLAMACPP_NO_JINJA,
            context_error=LLAMACPP_CONTEXT,
            discovery="llamacpp",
            extra={"supports_tools": False},
        ),
        # llama-server with a Gemma/Mistral template that raises on non-alternating roles
        Profile(
            "llamacpp-gemma",
            alternation_error=LLAMACPP_ALTERNATE,
            context_error=LLAMACPP_CONTEXT,
            discovery="llamacpp",
        ),
        # llama-server whose template has no tool support: tools are accepted and never used;
        # GET /props says so in chat_template_caps
        Profile(
            "llamacpp-notools",
            ignore_tools=True,
            context_error=LLAMACPP_CONTEXT,
            discovery="llamacpp",
            extra={"supports_tools": False},
        ),
        # vLLM: delta.reasoning (https://docs.vllm.ai/en/v0.11.2/features/reasoning_outputs/),
        # max_model_len in /v1/models (https://github.com/vllm-project/vllm/pull/4643)
        Profile("vllm", reasoning="reasoning", context_error=VLLM_CONTEXT, discovery="vllm"),
        # vLLM started without --enable-auto-tool-choice
        Profile(
            "vllm-notools",
            reasoning="reasoning",
            tools_error=VLLM_NO_TOOLS,
            context_error=VLLM_CONTEXT,
            discovery="vllm",
        ),
        # vLLM streams that end without a finish_reason after tool calls:
        # https://github.com/vllm-project/vllm/issues/27572
        # https://github.com/eclipse-theia/theia/issues/16055
        Profile("vllm-nofinish", reasoning="reasoning", tool_finish=None, discovery="vllm"),
        # Ollama /v1: delta.reasoning (https://github.com/dirac-run/dirac/pull/227); every
        # parallel call with index 0 (https://github.com/ollama/ollama/issues/15457); finish
        # "stop" after tool calls (https://github.com/ollama/ollama/pull/7963,
        # https://github.com/BerriAI/litellm/issues/35663); silent truncation at num_ctx, no
        # context error (https://aider.chat/docs/llms/ollama.html)
        Profile(
            "ollama",
            reasoning="reasoning",
            tool_index="zero",
            tool_finish="stop",
            model_error=OLLAMA_NO_MODEL,
            discovery="ollama",
        ),
        # Ollama before v0.4.7: no index at all (https://github.com/ollama/ollama/issues/7881), and
        # gateways in front of it that send no id either (https://github.com/vercel/ai/issues/18440)
        Profile(
            "ollama-old",
            reasoning="reasoning",
            tool_index="omit",
            tool_ids=False,
            tool_finish="stop",
            model_error=OLLAMA_NO_MODEL,
            discovery="ollama",
        ),
        # Ollama with a model whose template has no tools
        Profile(
            "ollama-notools",
            reasoning="reasoning",
            tools_error=OLLAMA_NO_TOOLS,
            model_error=OLLAMA_NO_MODEL,
            discovery="ollama",
        ),
        # LiteLLM proxies: "stop" although tool calls were streamed
        # https://github.com/BerriAI/litellm/issues/21041
        # https://github.com/BerriAI/litellm/issues/12862
        Profile("litellm", tool_finish="stop"),
        Profile("groq", stream_options_error=GROQ_STREAM_OPTIONS),
        Profile("mistral", stream_options_error=MISTRAL_STREAM_OPTIONS),
        Profile("azure", stream_options_error=AZURE_STREAM_OPTIONS),
    ]
}


def get(profile: str | Profile | None) -> Profile | None:
    if profile is None or isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}") from None


def fill(template: Any, **values: Any) -> Any:
    """Copy an error body with its placeholders filled ("{n:int}" becomes the int itself)."""
    if isinstance(template, dict):
        return {k: fill(v, **values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, **values) for v in template]
    if isinstance(template, str):
        m = re.fullmatch(r"\{(\w+):int\}", template)
        if m:
            return int(values[m.group(1)])
        # only the known placeholders: real messages quote template source, braces included
        return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m[1], m[0])), template)
    return template


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def count_tokens(body: Body) -> int:
    """The fake's tokenizer: words and punctuation marks, plus 4 per message."""
    total = 0
    for msg in body.get("messages") or []:
        text = _text(msg.get("content"))
        for call in msg.get("tool_calls") or []:
            text += " " + str((call.get("function") or {}).get("arguments", ""))
        total += 4 + len(re.findall(r"\w+|[^\w\s]", text))
    return total


def unanswered_ids(messages: list[Body]) -> list[str]:
    """Ids of assistant tool calls that no following tool message answers."""
    missing: list[str] = []
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant" or not msg.get("tool_calls"):
            continue
        answered = set()
        for later in messages[i + 1 :]:
            if later.get("role") != "tool":
                break
            answered.add(later.get("tool_call_id"))
        missing += [c.get("id") for c in msg["tool_calls"] if c.get("id") not in answered]
    return [str(x) for x in missing]


def alternates(messages: list[Body]) -> bool:
    """The Gemma template's rule: after a leading system message, user at even positions only."""
    loop = messages[1:] if messages and messages[0].get("role") == "system" else messages
    return all((m.get("role") == "user") == (i % 2 == 0) for i, m in enumerate(loop))


def refusal(profile: Profile, body: Body, models: list[str]) -> Refusal | None:
    """The error this server answers `body` with, or None if it would accept it."""
    model = str(body.get("model") or "")
    messages = body.get("messages") or []
    checks: list[tuple[Refusal | None, bool]] = [
        (profile.model_error, bool(models) and model not in models),
        (profile.stream_options_error, "stream_options" in body),
        (profile.tools_error, bool(body.get("tools"))),
        (profile.unanswered_error, bool(unanswered_ids(messages))),
        (profile.alternation_error, not alternates(messages)),
        (profile.context_error, count_tokens(body) >= profile.n_ctx),
    ]
    for refused, applies in checks:
        if refused is not None and applies:
            status, template = refused
            values = {
                "model": model,
                "n": count_tokens(body),
                "ctx": profile.n_ctx,
                "ids": ", ".join(unanswered_ids(messages)),
            }
            return status, fill(template, **values)
    return None


# -- context-size discovery endpoints ----------------------------------------------------------


def llamacpp_props(profile: Profile, model_path: str) -> Body:
    """GET /props, trimmed to the fields clients read (llama.cpp tools/server/README.md)."""
    tools = bool(profile.extra.get("supports_tools", True))
    return {
        "default_generation_settings": {"n_ctx": profile.n_ctx, "params": {"n_predict": -1}},
        "total_slots": 1,
        "model_path": model_path,
        "chat_template": "{{ messages }}",
        # the keys a real llama-server sends (tests/test_llama_server.py)
        "chat_template_caps": {
            "supports_object_arguments": False,
            "supports_parallel_tool_calls": tools,
            "supports_preserve_reasoning": False,
            "supports_reasoning_effort": False,
            "supports_string_content": True,
            "supports_system_role": True,
            "supports_tool_calls": tools,
            "supports_tools": tools,
            "supports_typed_content": False,
        },
        "modalities": {"vision": False, "audio": False},
        "build_info": "fake",
    }


def ollama_show(profile: Profile, model: str) -> Body:
    """POST /api/show (https://docs.ollama.com/api-reference/show-model-details): the trained
    context in model_info["<arch>.context_length"], the configured one as num_ctx in parameters."""
    return {
        "parameters": f'num_ctx {profile.n_ctx}\nstop "<end_of_turn>"',
        "details": {"format": "gguf", "family": "gemma3", "parameter_size": "268M"},
        "model_info": {"general.architecture": "gemma3", "gemma3.context_length": 32768},
        "capabilities": ["completion"] if profile.tools_error else ["completion", "tools"],
    }
