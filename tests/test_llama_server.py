"""The real llama-server's behaviour, pinned; the fake's llama.cpp profiles must answer the same.

Protocol only: the model is a base model and its words are nonsense (tests/llama_server.py).
"""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import fake_profiles
import openai
import pytest
from fake_openai import FakeOpenAI
from realserver import TEMPLATES, LlamaServer

pytestmark = pytest.mark.realserver

Factory = Callable[..., LlamaServer]
USER = {"role": "user", "content": "hi"}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "run_sql", "parameters": {"type": "object", "properties": {}}},
    }
]


def fake_answer(profile: str, body: dict[str, Any], **changes: Any) -> tuple[int, Any]:
    """What the fake server says to the same request under `profile` (fields replaced)."""
    chosen = dataclasses.replace(fake_profiles.PROFILES[profile], **changes)
    with FakeOpenAI(profile=chosen) as fake:
        req = urllib.request.Request(
            fake.base_url + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


def test_server_streams_a_bounded_chat_completion(llama_server_factory: Factory) -> None:
    srv = llama_server_factory(ctx=2048, n_predict=6)
    client = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0, timeout=120)
    stream = client.chat.completions.create(
        model="any", messages=[USER], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"  # -n 6 cut it, as max_tokens does in the fake
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # usage chunk, no choices
    assert chunks[-1].usage.completion_tokens == 6


def test_strict_template_refuses_two_user_messages(llama_server_factory: Factory) -> None:
    srv = llama_server_factory(ctx=2048, n_predict=4, template=TEMPLATES / "gemma_strict.jinja")
    system = {"role": "system", "content": "be brief"}
    assert srv.post("/v1/chat/completions", {"messages": [system, USER]})[0] == 200
    body = {"messages": [system, USER, USER], "stream": True}
    real = srv.post("/v1/chat/completions", body)
    assert real[0] == 400
    assert real[1]["error"]["message"].endswith(
        "Jinja Exception: Conversation roles must alternate user/assistant/user/assistant/..."
    )
    assert fake_answer("llamacpp-gemma", body) == real


def test_context_overflow_is_a_400_with_the_sizes(llama_server_factory: Factory) -> None:
    srv = llama_server_factory(ctx=2048, n_predict=4)
    body = {"messages": [{"role": "user", "content": "word " * 3000}], "stream": True}
    status, real = srv.post("/v1/chat/completions", body)
    assert status == 400
    n = real["error"]["n_prompt_tokens"]
    assert n > 2048 and real["error"]["n_ctx"] == 2048
    # the fake counts tokens its own way; with the same numbers its body is the same
    _, template = fake_profiles.LLAMACPP_CONTEXT
    assert real == fake_profiles.fill(template, n=n, ctx=2048)
    fake_status, fake = fake_answer("llamacpp", body, n_ctx=2048)
    assert fake_status == 400 and fake["error"].keys() == real["error"].keys()
    assert fake["error"]["n_ctx"] == 2048 and fake["error"]["n_prompt_tokens"] > 2048


def test_no_jinja_refuses_tools_with_a_500(llama_server_factory: Factory) -> None:
    srv = llama_server_factory(ctx=2048, n_predict=4, jinja=False)
    body = {"messages": [USER], "tools": TOOLS, "stream": True}
    real = srv.post("/v1/chat/completions", body)
    assert real == (500, fake_profiles.LLAMACPP_NO_JINJA[1])
    assert fake_answer("llamacpp-nojinja", body) == real
    assert srv.post("/v1/chat/completions", {"messages": [USER]})[0] == 200  # tools were the issue


def test_template_without_tools_ignores_them_and_props_say_so(
    llama_server_factory: Factory,
) -> None:
    # the model has no chat template: llama-server falls back to one without tool support
    srv = llama_server_factory(ctx=2048, n_predict=4)
    status, reply = srv.post("/v1/chat/completions", {"messages": [USER], "tools": TOOLS})
    assert status == 200 and not reply["choices"][0]["message"].get("tool_calls")
    _, props = srv.get("/props")
    assert props["default_generation_settings"]["n_ctx"] == 2048
    fake = fake_profiles.llamacpp_props(fake_profiles.PROFILES["llamacpp-notools"], "m")
    assert props["chat_template_caps"] == fake["chat_template_caps"]
    assert props["chat_template_caps"]["supports_tools"] is False


def test_models_list_carries_the_context_size(llama_server_factory: Factory) -> None:
    srv = llama_server_factory(ctx=2048, n_predict=4)
    _, models = srv.get("/v1/models")
    (model,) = models["data"]
    assert model["meta"]["n_ctx"] == 2048 and model["meta"]["n_ctx_train"] == 32768
