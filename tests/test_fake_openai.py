"""The fake OpenAI server must look real to the actual langchain_openai.ChatOpenAI client."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fake_profiles
import openai
import pytest
from fake_openai import FakeOpenAI
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as srv:
        yield srv


def make_llm(server: FakeOpenAI, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-fake", api_key="test", base_url=server.base_url, max_retries=0, timeout=3, **kw
    )


def collect(llm: ChatOpenAI, prompt: Any = "hi") -> tuple[list[AIMessageChunk], AIMessageChunk]:
    chunks = list(llm.stream(prompt))
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return chunks, total


def http_json(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return json.loads(resp.read())


def test_stream_text_in_several_chunks(server: FakeOpenAI) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    server.reply(text)
    chunks, total = collect(make_llm(server))
    assert sum(1 for c in chunks if c.content) >= 5
    assert total.content == text
    assert total.response_metadata["finish_reason"] == "stop"


def test_default_echo_and_recorded_request(server: FakeOpenAI) -> None:
    llm = make_llm(server)
    _, total = collect(llm, [SystemMessage("be brief"), HumanMessage("ping pong")])
    assert total.content == "echo: ping pong"
    (body,) = server.requests
    assert body["stream"] is True
    assert body["model"] == "gpt-fake"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ping pong"},
    ]


def test_chunk_size_delay_and_usage(server: FakeOpenAI) -> None:
    server.reply("abcdefgh", chunk_size=3, delay=0.02)
    chunks, total = collect(make_llm(server, stream_usage=True))
    assert [c.content for c in chunks if c.content] == ["abc", "def", "gh"]
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] == 1
    assert server.requests[0]["stream_options"] == {"include_usage": True}


def test_streamed_tool_calls(server: FakeOpenAI) -> None:
    calls = [("run_sql", {"query": "SELECT * FROM t WHERE x = 'a b'"}), ("noop", {})]
    server.tool_calls(calls, text="Let me check.")
    chunks, total = collect(make_llm(server))
    # the arguments really were split over several deltas
    assert sum(1 for c in chunks for tc in c.tool_call_chunks if tc["args"]) >= 3
    assert total.content == "Let me check."
    assert [(tc["name"], tc["args"]) for tc in total.tool_calls] == calls
    assert [tc["id"] for tc in total.tool_calls] == ["call_1", "call_2"]
    assert total.response_metadata["finish_reason"] == "tool_calls"


def test_error_status(server: FakeOpenAI) -> None:
    server.error(500, "kaboom")
    with pytest.raises(openai.InternalServerError) as exc:
        list(make_llm(server).stream("hi"))
    assert isinstance(exc.value, openai.APIStatusError)
    assert exc.value.status_code == 500 and "kaboom" in str(exc.value)
    server.error(429, "slow down")
    with pytest.raises(openai.RateLimitError):
        make_llm(server).invoke("hi")


def test_drop_raises_connection_error_after_chunks(server: FakeOpenAI) -> None:
    server.drop("one two three four five", after_chunks=2)
    got: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for c in make_llm(server).stream("hi"):
            got.append(str(c.content))
    assert "".join(got) == "one two "
    # the server stays healthy for the next request
    assert make_llm(server).invoke("again").content == "echo: again"


def test_truncate_has_no_finish_reason(server: FakeOpenAI) -> None:
    server.truncate("cut short here")
    _, total = collect(make_llm(server))
    assert total.content == "cut short here"
    assert total.response_metadata.get("finish_reason") is None


def test_hang_times_out_and_close_is_quick() -> None:
    srv = FakeOpenAI()
    srv.hang()
    llm = ChatOpenAI(model="m", api_key="test", base_url=srv.base_url, max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        list(llm.stream("hi"))
    srv.hang()  # a second one still pending on the server side while we close
    t0 = time.monotonic()
    srv.close()
    assert time.monotonic() - t0 < 1.0


def test_non_streaming(server: FakeOpenAI) -> None:
    llm = make_llm(server)
    server.reply("plain answer")
    msg = llm.invoke("hi")
    assert msg.content == "plain answer"
    assert msg.response_metadata["finish_reason"] == "stop"
    server.tool_calls([("run_sql", {"query": "SELECT 1"})])
    msg = llm.invoke("hi")
    assert msg.tool_calls[0]["name"] == "run_sql"
    assert msg.tool_calls[0]["args"] == {"query": "SELECT 1"}
    assert server.requests[-1]["stream"] is False
    server.drop("x y z")
    with pytest.raises(openai.APIConnectionError):
        llm.invoke("hi")


def test_http_control_and_models(server: FakeOpenAI) -> None:
    root = server.base_url.removesuffix("/v1")
    http_json(f"{root}/_script", {"kind": "reply", "text": "scripted", "delay": 0.01})
    http_json(f"{root}/_script", {"kind": "tool_calls", "calls": [["run_sql", {"query": "q"}]]})
    http_json(f"{root}/_script", {"kind": "error", "status": 500})
    llm = make_llm(server)
    assert collect(llm)[1].content == "scripted"
    assert collect(llm)[1].tool_calls[0]["args"] == {"query": "q"}
    with pytest.raises(openai.InternalServerError):
        llm.invoke("hi")
    assert len(http_json(f"{root}/_requests")) == 3
    models = http_json(f"{server.base_url}/models")
    assert [m["id"] for m in models["data"]] == ["gpt-fake"]
    with pytest.raises(urllib.error.HTTPError) as exc:
        http_json(f"{root}/_script", {"kind": "nope"})
    assert exc.value.code == 400


def test_standalone_process(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"kind": "reply", "text": "from file"}]))
    path = Path(__file__).with_name("fake_openai.py")
    proc = subprocess.Popen(
        [sys.executable, str(path), "--script", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        assert line.startswith("base_url=http://127.0.0.1:")
        llm = ChatOpenAI(
            model="m", api_key="test", base_url=line.split("=", 1)[1], max_retries=0, timeout=3
        )
        assert llm.invoke("hi").content == "from file"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=3)
    assert proc.returncode == 0 and "Traceback" not in err


# -- profiles: real servers' quirks, checked at the wire level ------------------------------

TOOL = {"type": "function", "function": {"name": "run_sql", "parameters": {"type": "object"}}}


def post(server: FakeOpenAI, body: dict[str, Any], path: str = "/chat/completions") -> Any:
    """(status, JSON body) for a non-streaming call, or (status, [chunk, ...] + ["[DONE]"])."""
    req = urllib.request.Request(
        server.base_url + path,
        data=json.dumps({"model": server.model, **body}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read().decode()
            status = resp.status
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    if not body.get("stream"):
        return status, json.loads(raw)
    events = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    return status, [e if e == "[DONE]" else json.loads(e) for e in events]


def deltas(events: list[Any], key: str) -> str:
    return "".join(
        str(c["delta"].get(key) or "") for e in events if e != "[DONE]" for c in e["choices"]
    )


def finishes(events: list[Any]) -> list[Any]:
    return [c["finish_reason"] for e in events if e != "[DONE]" for c in e["choices"]]


def tool_deltas(events: list[Any]) -> list[dict[str, Any]]:
    return [
        tc
        for e in events
        if e != "[DONE]"
        for c in e["choices"]
        for tc in c["delta"].get("tool_calls", [])
    ]


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ("deepseek", "reasoning_content"),
        ("lmstudio", "reasoning_content"),
        ("llamacpp", "reasoning_content"),
        ("vllm", "reasoning"),
        ("ollama", "reasoning"),
    ],
)
def test_reasoning_streams_in_the_profiles_field(
    server: FakeOpenAI, profile: str, field: str
) -> None:
    server.profile = profile
    server.reply("the answer", reasoning="let me think")
    _, events = post(server, {"messages": [{"role": "user", "content": "q"}], "stream": True})
    assert deltas(events, field) == "let me think"
    assert deltas(events, "content") == "the answer"
    other = {"reasoning", "reasoning_content"} - {field}
    assert deltas(events, other.pop()) == ""


def test_inline_think_tags_in_content(server: FakeOpenAI) -> None:
    server.profile = "llamacpp-think"
    server.reply("42", reasoning="hmm ok")
    _, events = post(server, {"messages": [{"role": "user", "content": "q"}], "stream": True})
    assert deltas(events, "content") == "<think>hmm ok</think>\n\n42"
    assert deltas(events, "reasoning_content") == ""


@pytest.mark.parametrize(
    ("profile", "status", "message"),
    [
        ("groq", 400, "property 'stream_options' is unsupported, did you mean 'stream'?"),
        ("mistral", 422, "Extra inputs are not permitted"),
        ("azure", 400, "Unknown parameter: 'stream_options'."),
    ],
)
def test_stream_options_refused_with_the_documented_body(
    server: FakeOpenAI, profile: str, status: int, message: str
) -> None:
    server.profile = profile
    body = {"messages": [{"role": "user", "content": "q"}], "stream": True}
    got_status, got = post(server, {**body, "stream_options": {"include_usage": True}})
    assert got_status == status and message in str(got)
    assert post(server, body)[0] == 200  # the same request without it is fine
    assert len(server.requests) == 2  # refused requests are recorded too


def test_ollama_tool_calls_all_index_zero_whole_and_finish_stop(server: FakeOpenAI) -> None:
    server.profile = "ollama"
    server.tool_calls([("a", {"x": 1}), ("b", {"y": 2})])
    _, events = post(server, {"messages": [{"role": "user", "content": "q"}], "stream": True})
    calls = tool_deltas(events)
    assert [c["index"] for c in calls] == [0, 0]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"x": 1}, {"y": 2}]
    assert finishes(events)[-1] == "stop" and events[-1] == "[DONE]"


def test_old_ollama_sends_neither_index_nor_id(server: FakeOpenAI) -> None:
    server.profile = "ollama-old"
    server.tool_calls([("a", {}), ("b", {})])
    _, events = post(server, {"messages": [{"role": "user", "content": "q"}], "stream": True})
    calls = tool_deltas(events)
    assert len(calls) == 2 and all("index" not in c and "id" not in c for c in calls)


@pytest.mark.parametrize(("profile", "finish"), [("litellm", ["stop"]), ("vllm-nofinish", [])])
def test_finish_reason_after_tool_calls(
    server: FakeOpenAI, profile: str, finish: list[str]
) -> None:
    server.profile = profile
    server.tool_calls([("a", {})])
    _, events = post(server, {"messages": [{"role": "user", "content": "q"}], "stream": True})
    assert [f for f in finishes(events) if f is not None] == finish
    assert events[-1] == "[DONE]"


def test_scripted_empty_finish_usage_chunk_bad_json_and_no_ids(server: FakeOpenAI) -> None:
    server.tool_calls([("run_sql", '{"query": "SELECT')], finish="", usage=True, ids=False)
    _, events = post(server, {"messages": [{"role": "user", "content": "q"}], "stream": True})
    (head, *rest) = tool_deltas(events)
    assert "id" not in head
    args = head["function"]["arguments"] + "".join(r["function"]["arguments"] for r in rest)
    assert args == '{"query": "SELECT'  # not valid JSON, sent as scripted
    assert [f for f in finishes(events) if f is not None] == [""]
    assert events[-2]["choices"] == [] and events[-2]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(
    ("profile", "status", "message"),
    [
        ("llamacpp-nojinja", 500, "tools param requires --jinja flag"),
        ("vllm-notools", 400, '"auto" tool choice requires --enable-auto-tool-choice'),
        ("ollama-notools", 400, "gpt-fake does not support tools"),
    ],
)
def test_tools_refused(server: FakeOpenAI, profile: str, status: int, message: str) -> None:
    server.profile = profile
    got_status, got = post(
        server, {"messages": [{"role": "user", "content": "q"}], "tools": [TOOL]}
    )
    assert got_status == status and message in json.dumps(got).replace('\\"', '"')
    assert post(server, {"messages": [{"role": "user", "content": "q"}]})[0] == 200


def test_template_without_tools_silently_ignores_them(server: FakeOpenAI) -> None:
    server.profile = "llamacpp-notools"
    server.tool_calls([("run_sql", {"query": "SELECT 1"})], text="plain")
    status, got = post(server, {"messages": [{"role": "user", "content": "q"}], "tools": [TOOL]})
    assert status == 200 and "tool_calls" not in got["choices"][0]["message"]
    assert got["choices"][0]["finish_reason"] == "stop"
    root = server.base_url.removesuffix("/v1")
    assert http_json(f"{root}/props")["chat_template_caps"]["supports_tools"] is False


def test_strict_alternation(server: FakeOpenAI) -> None:
    server.profile = "llamacpp-gemma"
    system, user = {"role": "system", "content": "s"}, {"role": "user", "content": "q"}
    status, got = post(server, {"messages": [system, user, user]})
    assert status == 400 and got["error"]["message"].endswith(
        "Conversation roles must alternate user/assistant/user/assistant/..."
    )
    assistant = {"role": "assistant", "content": "a"}
    assert post(server, {"messages": [system, user, assistant, user]})[0] == 200


@pytest.mark.parametrize(
    ("profile", "path", "value"),
    [
        ("llamacpp", ("error", "type"), "exceed_context_size_error"),
        ("openai", ("error", "code"), "context_length_exceeded"),
        ("vllm", ("object",), "error"),
    ],
)
def test_context_overflow(
    server: FakeOpenAI, profile: str, path: tuple[str, ...], value: str
) -> None:
    server.profile = dataclasses.replace(fake_profiles.PROFILES[profile], n_ctx=50)
    words = {"role": "user", "content": "w " * 45}  # 45 + 4 tokens: fits
    assert post(server, {"messages": [words]})[0] == 200
    status, got = post(server, {"messages": [{"role": "user", "content": "w " * 46}]})
    assert status == 400
    for key in path:
        got = got[key]
    assert got == value


def test_llamacpp_context_error_carries_the_numbers(server: FakeOpenAI) -> None:
    server.profile = dataclasses.replace(fake_profiles.PROFILES["llamacpp"], n_ctx=10)
    _, got = post(server, {"messages": [{"role": "user", "content": "a b c d e f"}]})
    assert got["error"]["n_prompt_tokens"] == 10 and got["error"]["n_ctx"] == 10
    assert got["error"]["message"] == (
        "request (10 tokens) exceeds the available context size (10 tokens), try increasing it"
    )


def test_openai_refuses_an_unanswered_tool_call(server: FakeOpenAI) -> None:
    server.profile = "openai"
    call = {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    asked = [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]}]
    with pytest.raises(openai.BadRequestError) as exc:
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0).chat.completions.create(
            model="gpt-fake", messages=[*asked, {"role": "user", "content": "again"}]
        )
    assert "tool_call_ids did not have response messages: call_9" in str(exc.value)
    answer = {"role": "tool", "tool_call_id": "call_9", "content": "ok"}
    assert post(server, {"messages": [*asked, answer]})[0] == 200


@pytest.mark.parametrize(
    ("profile", "text"),
    [("ollama", 'model "nope" not found, try pulling it first'), ("openai", "model_not_found")],
)
def test_unknown_model(server: FakeOpenAI, profile: str, text: str) -> None:
    server.profile = profile
    server.models = ["gpt-fake", "other"]
    with pytest.raises(openai.NotFoundError) as exc:
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "q"}]
        )
    assert text in str(exc.value.body)  # the SDK's view of the error body
    ids = [m.id for m in openai.OpenAI(base_url=server.base_url, api_key="k").models.list()]
    assert ids == ["gpt-fake", "other"]


def test_context_size_discovery_endpoints(server: FakeOpenAI) -> None:
    root = server.base_url.removesuffix("/v1")
    server.profile = dataclasses.replace(fake_profiles.PROFILES["llamacpp"], n_ctx=2048)
    assert http_json(f"{root}/props")["default_generation_settings"]["n_ctx"] == 2048
    assert http_json(f"{server.base_url}/models")["data"][0]["meta"]["n_ctx"] == 2048
    server.profile = dataclasses.replace(fake_profiles.PROFILES["vllm"], n_ctx=8192)
    assert http_json(f"{server.base_url}/models")["data"][0]["max_model_len"] == 8192
    server.profile = dataclasses.replace(fake_profiles.PROFILES["ollama"], n_ctx=4096)
    shown = http_json(f"{root}/api/show", {"model": "gpt-fake"})
    assert "num_ctx 4096" in shown["parameters"]
    arch = shown["model_info"]["general.architecture"]
    assert shown["model_info"][f"{arch}.context_length"] == 32768
    with pytest.raises(urllib.error.HTTPError) as exc:
        http_json(f"{root}/api/show", {"model": "nope"})
    assert exc.value.code == 404
    server.profile = None  # the default server has none of these
    with pytest.raises(urllib.error.HTTPError):
        http_json(f"{root}/props")


def test_max_tokens_cuts_with_finish_length(server: FakeOpenAI) -> None:
    server.reply("one two three four five")
    _, events = post(
        server, {"messages": [{"role": "user", "content": "q"}], "stream": True, "max_tokens": 3}
    )
    assert deltas(events, "content") == "one two three "
    assert [f for f in finishes(events) if f] == ["length"]
    server.reply("one two three four five")
    _, whole = post(server, {"messages": [{"role": "user", "content": "q"}], "max_tokens": 9})
    assert whole["choices"][0]["finish_reason"] == "stop"


def test_unknown_profile_is_refused(server: FakeOpenAI) -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        server.profile = "nonesuch"
