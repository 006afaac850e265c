"""Loopback HTTP server speaking the OpenAI chat-completions API, for end-to-end tests.

Responses are scripted through a FIFO queue (``reply``, ``tool_calls``, ``error``, ``drop``,
``truncate``, ``hang``) either in-process or over HTTP (``POST /_script``), so a server running
in another process (``python tests/fake_openai.py``) can be driven too.

``server.profile = "ollama"`` (see tests/fake_profiles.py) makes it behave like a real server
family: where reasoning arrives, how tool calls are indexed and finished, what it refuses and
with which body, where it tells its context size. A ``max_tokens`` in the request cuts a reply
with finish_reason "length", as every real server does.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

import fake_profiles
from fake_profiles import Profile

_DEFAULT = Profile("default")  # the OpenAI wire format, accepting everything
KINDS = {"reply", "tool_calls", "error", "drop", "truncate", "hang"}
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def split_text(text: str, chunk_size: int | None = None) -> list[str]:
    """Split text into stream pieces: fixed-size if chunk_size, else words with trailing space."""
    if chunk_size:
        return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)]
    return re.findall(r"\s*\S+\s*|\s+", text)


def _last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):  # multi-part content: keep only the text parts
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _arguments(args: dict[str, Any] | str) -> str:
    """Tool arguments as sent: a dict as JSON, a string as it is (so invalid JSON can be sent)."""
    return args if isinstance(args, str) else json.dumps(args)


class _Shape(NamedTuple):
    parts: list[tuple[str, str]]  # (delta field, piece): content or a reasoning field
    calls: list[tuple[str, tuple[str, dict[str, Any] | str]]]  # (id, (name, arguments))
    finish: str | None  # None: no finish chunk
    ids: bool  # tool-call deltas carry their id


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung or slow stream must never keep the process alive
    block_on_close = False
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-stream (Ctrl-C) is expected: stay quiet about it.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive + chunked SSE, like the real API
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.verbose:
            super().log_message(format, *args)

    # -- plumbing ------------------------------------------------------------------------

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw or b"null")

    def _send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _event(self, obj: Any) -> None:
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        self._chunk(f"data: {payload}\n\n".encode())

    def _abort(self) -> None:
        """Close the socket mid-body so the client sees an incomplete response."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- routes --------------------------------------------------------------------------

    def do_GET(self) -> None:
        fake, profile = self.server.fake, self.server.fake.profile
        discovery = profile.discovery
        if self.path.rstrip("/") == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in fake.models
            ]
            for d in data:
                if discovery == "vllm":  # vllm-project/vllm#4643
                    d["max_model_len"] = profile.n_ctx
                elif discovery == "llamacpp":  # as a real llama-server answers
                    d["meta"] = {"n_ctx": profile.n_ctx, "n_ctx_train": 32768}
            self._send_json(200, {"object": "list", "data": data})
        elif self.path == "/health" and discovery == "llamacpp":
            self._send_json(200, {"status": "ok"})
        elif self.path.split("?")[0] == "/props" and discovery == "llamacpp":
            self._send_json(200, fake_profiles.llamacpp_props(profile, fake.model))
        elif self.path == "/_requests":
            self._send_json(200, fake.requests)
        else:
            self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})

    def do_POST(self) -> None:
        fake = self.server.fake
        try:
            body = self._read_json()
            if self.path == "/_script":
                for item in body if isinstance(body, list) else [body]:
                    fake.enqueue(item)
                self._send_json(200, {"ok": True, "pending": fake.pending})
            elif self.path.rstrip("/") == "/v1/chat/completions":
                fake._record(body)
                refused = fake_profiles.refusal(fake.profile, body, fake.models)
                if refused:
                    self._send_json(*refused)
                else:
                    self._complete(body, fake._next_script(body))
            elif self.path == "/api/show" and fake.profile.discovery == "ollama":
                name = str((body or {}).get("model") or (body or {}).get("name") or "")
                if name in fake.models:
                    self._send_json(200, fake_profiles.ollama_show(fake.profile, name))
                else:  # Ollama's native API error shape
                    self._send_json(404, {"error": f"model '{name}' not found"})
            else:
                self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})
        except (ValueError, KeyError, TypeError) as exc:  # bad JSON / bad script
            self._send_json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # client went away; nothing to report

    def _complete(self, body: dict[str, Any], script: dict[str, Any]) -> None:
        fake, kind = self.server.fake, script["kind"]
        if kind == "error":
            status = int(script.get("status", 500))
            etype, code = _ERROR_TYPES.get(status, ("server_error", None))
            err = {"message": script.get("message", "boom"), "type": etype, "code": code}
            self._send_json(status, {"error": err})
            return
        if kind == "hang":
            fake._stop.wait(float(script.get("seconds", 60.0)))
            self._abort()
            return
        if body.get("stream"):
            self._stream(body, script)
        else:
            self._whole(body, script)

    def _shape(self, body: dict[str, Any], script: dict[str, Any]) -> _Shape:
        """What this script streams under the server's profile."""
        profile = self.server.fake.profile
        calls = list(zip(script.get("_ids", []), script.get("calls", []), strict=True))
        if profile.ignore_tools:
            calls = []  # the template never showed the model its tools
        parts: list[tuple[str, str]] = []
        if script.get("reasoning"):
            thought = split_text(script["reasoning"])
            if profile.reasoning == "think":  # inline, as llama.cpp --reasoning-format none
                parts += [("content", p) for p in ["<think>", *thought, "</think>\n\n"]]
            else:
                parts += [(profile.reasoning, p) for p in thought]
        parts += [
            ("content", p) for p in split_text(script.get("text", ""), script.get("chunk_size"))
        ]
        finish = profile.tool_finish if calls else profile.reply_finish
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit and not calls and len(parts) > int(limit):  # one piece ~ one token
            parts, finish = parts[: int(limit)], "length"
        if "finish" in script:  # a per-request override; None: no finish chunk at all
            finish = script["finish"]
        return _Shape(parts, calls, finish, bool(script.get("ids", profile.tool_ids)))

    def _whole(self, body: dict[str, Any], script: dict[str, Any]) -> None:
        """Non-streaming chat.completion for the same scripts."""
        kind, shape = script["kind"], self._shape(body, script)
        text = "".join(p for f, p in shape.parts if f == "content")
        content = (text or None) if shape.calls else text
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        thought = "".join(p for f, p in shape.parts if f != "content")
        if thought:
            message[self.server.fake.profile.reasoning] = thought
        if shape.calls:
            message["tool_calls"] = [
                {
                    **({"id": cid} if shape.ids else {}),
                    "type": "function",
                    "function": {"name": n, "arguments": _arguments(a)},
                }
                for cid, (n, a) in shape.calls
            ]
        obj = self.server.fake._envelope(body, "chat.completion")
        obj["choices"] = [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": shape.finish}
        ]
        obj["usage"] = self.server.fake._usage(body, text)
        if kind != "drop":
            self._send_json(200, obj)
            return
        data = json.dumps(obj).encode()  # promise the whole body, deliver half of it
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self._abort()

    def _stream(self, body: dict[str, Any], script: dict[str, Any]) -> None:
        fake, kind = self.server.fake, script["kind"]
        delay = float(script.get("delay", 0.0))
        shape = self._shape(body, script)
        base = fake._envelope(body, "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
        parts = shape.parts
        if kind == "drop":
            parts = parts[: int(script.get("after_chunks", 2))]
        events += [chunk({name: p}) for name, p in parts]
        index_style = fake.profile.tool_index
        for i, (cid, (name, args)) in enumerate(shape.calls):
            head: dict[str, Any] = {}
            if index_style != "omit":
                head["index"] = i if index_style == "seq" else 0
            if shape.ids:
                head["id"] = cid
            head["type"] = "function"
            head["function"] = {"name": name, "arguments": ""}
            text = _arguments(args)
            if index_style != "seq":  # Ollama sends each call whole, in one delta
                head["function"]["arguments"] = text
                events.append(chunk({"tool_calls": [head]}))
                continue
            events.append(chunk({"tool_calls": [head]}))
            # Several argument pieces per call, so clients must concatenate by index.
            events += [
                chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
                for p in split_text(text, max(1, len(text) // 3))
            ]

        for n, ev in enumerate(events):
            if n and delay and fake._stop.wait(delay):
                self._abort()  # server shutting down: don't finish slow streams
                return
            self._event(ev)
        if kind == "drop":
            self._abort()  # no finish chunk, no [DONE], no terminating 0-chunk
            return
        if kind != "truncate":
            if shape.finish is not None:
                self._event(chunk({}, shape.finish))
            if script.get("usage") or (body.get("stream_options") or {}).get("include_usage"):
                text = "".join(p for _, p in shape.parts)
                self._event({**base, "choices": [], "usage": fake._usage(body, text)})
            self._event("[DONE]")
        self._chunk(b"")  # clean end of the chunked body


class FakeOpenAI:
    """Scriptable OpenAI-compatible server on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        port: int = 0,
        *,
        model: str = "gpt-fake",
        verbose: bool = False,
        profile: str | Profile | None = None,
    ) -> None:
        self.model = model
        self.models: list[str] = [model]  # GET /v1/models; profiles with model_error check it
        self._profile = _DEFAULT
        self.profile = profile
        self.verbose = verbose
        self._lock = threading.Condition()
        self._queue: deque[dict[str, Any]] = deque()
        self._requests: list[Any] = []
        self._conns: set[socket.socket] = set()
        self._call_ids = self._resp_ids = 0
        self._stop = threading.Event()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.fake = self
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def profile(self) -> Profile:
        """The server family imitated (tests/fake_profiles.py); set a name, a Profile or None."""
        return self._profile

    @profile.setter
    def profile(self, value: str | Profile | None) -> None:
        self._profile = fake_profiles.get(value) or _DEFAULT

    @property
    def requests(self) -> list[Any]:
        """Snapshot of the JSON bodies received on POST /v1/chat/completions."""
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least n chat requests arrived (e.g. before killing a hung client)."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._requests) >= n, timeout)

    # -- scripting -----------------------------------------------------------------------

    def enqueue(self, script: dict[str, Any]) -> None:
        """Queue a raw script dict (the POST /_script format) for the next request."""
        if script.get("kind") not in KINDS:
            raise ValueError(f"unknown script kind: {script.get('kind')!r}")
        script = dict(script)
        if script["kind"] == "tool_calls":
            script["calls"] = [
                (str(n), a if isinstance(a, str) else dict(a)) for n, a in script.get("calls", [])
            ]
        with self._lock:
            self._queue.append(script)

    def reply(
        self,
        text: str,
        *,
        chunk_size: int | None = None,
        delay: float = 0.0,
        reasoning: str = "",
        **extra: Any,
    ) -> None:
        """Stream `reasoning` (in the profile's field) then `text` (word-ish or chunk_size
        pieces), then the profile's finish_reason. `extra`: finish= (None: no finish chunk),
        usage=True (a usage chunk with empty choices even unasked)."""
        self.enqueue(
            {
                "kind": "reply",
                "text": text,
                "chunk_size": chunk_size,
                "delay": delay,
                "reasoning": reasoning,
                **extra,
            }
        )

    def tool_calls(
        self, calls: list[tuple[str, dict[str, Any] | str]], *, text: str = "", **extra: Any
    ) -> None:
        """Stream assistant tool calls (optionally after some text); finish_reason tool_calls.
        Arguments given as a string are sent as they are (invalid JSON included). `extra`:
        reasoning=, finish=, usage= as for reply; ids=False sends no call ids."""
        self.enqueue({"kind": "tool_calls", "calls": list(calls), "text": text, **extra})

    def error(self, status: int = 500, message: str = "boom") -> None:
        """Answer with an HTTP error and an OpenAI-style JSON error body."""
        self.enqueue({"kind": "error", "status": status, "message": message})

    def drop(self, text: str, *, after_chunks: int = 2) -> None:
        """Stream `after_chunks` content pieces, then cut the connection mid-body."""
        self.enqueue({"kind": "drop", "text": text, "after_chunks": after_chunks})

    def truncate(self, text: str) -> None:
        """Stream the content and end the body cleanly, but never send a finish_reason."""
        self.enqueue({"kind": "truncate", "text": text})

    def hang(self, seconds: float = 60.0) -> None:
        """Accept the request and send nothing (until `seconds` pass or the server closes)."""
        self.enqueue({"kind": "hang", "seconds": seconds})

    # -- internals used by the handler ---------------------------------------------------

    def _record(self, body: Any) -> None:
        with self._lock:
            self._requests.append(body)
            self._lock.notify_all()

    def _next_script(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            script = self._queue.popleft() if self._queue else None
            if script is None:
                script = {"kind": "reply", "text": "echo: " + _last_user_text(body)}
            ids = []
            for _ in script.get("calls", []):
                self._call_ids += 1
                ids.append(f"call_{self._call_ids}")
            return {**script, "_ids": ids}

    def _envelope(self, body: dict[str, Any], obj: str) -> dict[str, Any]:
        with self._lock:
            self._resp_ids += 1
            n = self._resp_ids
        return {
            "id": f"chatcmpl-fake{n}",
            "object": obj,
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "system_fingerprint": "fp_fake",
        }

    @staticmethod
    def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
        prompt = sum(len(str(m.get("content") or "").split()) for m in body.get("messages", []))
        completion = len(text.split())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving; slow/hung streams are cut so this returns promptly."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # wake handler threads blocked on idle keep-alive reads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", help="JSON file: one script dict or a list of them")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    parser.add_argument("--profile", choices=sorted(fake_profiles.PROFILES))
    args = parser.parse_args(argv)
    server = FakeOpenAI(args.port, verbose=args.verbose, profile=args.profile)
    if args.script:
        with open(args.script, encoding="utf-8") as fh:
            data = json.load(fh)
        for item in data if isinstance(data, list) else [data]:
            server.enqueue(item)
    # `kill` (SIGTERM) from tmux/test harness: exit cleanly through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"base_url={server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
