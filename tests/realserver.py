"""Run the real llama-server built by tests/llama_server.py, for tests against a real server.

    with LlamaServer(ctx=2048, n_predict=8, template=TEMPLATES / "gemma_strict.jinja") as srv:
        srv.base_url  # http://127.0.0.1:<port>/v1

The ``llama_server`` fixture is a factory of these, stopped after the test; it skips the test when
the binary or model is not built yet (``python tests/llama_server.py`` builds both, ~12 min once).
Replies are bounded with ``-n``: the model is a base model whose replies rarely stop.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import llama_server
import pytest

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """One llama-server process on a random loopback port; a context manager."""

    def __init__(
        self,
        *,
        ctx: int = 4096,
        n_predict: int = 16,
        jinja: bool = True,
        template: Path | str | None = None,
        extra: list[str] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.port = _free_port()
        self.args = [
            str(llama_server.server_binary()),
            "-m", str(llama_server.model_path()),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "-c", str(ctx),
            "-n", str(n_predict),
            # one slot, so the slot's context is the whole -c (with several, it is divided)
            "-np", "1",
            "-t", "2",  # these machines have 2 cores
            "--no-webui",
            "--jinja" if jinja else "--no-jinja",
        ]  # fmt: skip
        if template is not None:
            self.args += ["--chat-template-file", str(template)]
        self.args += extra or []
        self.start_timeout = start_timeout
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def log(self) -> str:
        """What the server printed so far (for failure messages)."""
        return Path(self._log.name).read_text(errors="replace")

    def start(self) -> LlamaServer:
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited {self.proc.returncode}:\n{self.log()}")
            try:
                # /health answers 503 while the model loads, 200 once it serves
                if self.get("/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama-server not healthy after {self.start_timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One HTTP call; (status, parsed JSON body or raw text), also for error statuses."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.root + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        os.unlink(self._log.name)


@pytest.fixture
def llama_server_factory() -> Iterator[Callable[..., LlamaServer]]:
    """Start real llama-servers with LlamaServer's arguments; all are stopped after the test."""
    if not llama_server.is_ready():
        # .ci/run builds it and sets this: there, a missing server is a failure, not a skip
        missing = pytest.fail if os.environ.get("CHATCLI_TESTS_NEED_LLAMA") else pytest.skip
        missing("llama-server not built: run `python tests/llama_server.py` (~12 min once)")
    started: list[LlamaServer] = []

    def start(**kw: Any) -> LlamaServer:
        srv = LlamaServer(**kw).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.__exit__(None, None, None)
