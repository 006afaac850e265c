"""The fake OpenAI server must look real to the actual langchain_openai.ChatOpenAI client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
