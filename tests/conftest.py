"""Shared fixtures: a private storage root, the example sessions, the loopback model server, and a
runner for the installed ``chatcli`` as a real subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "storage" / "example"
DAMAGED = REPO / "storage" / "damaged"
CHATCLI = str(Path(sys.executable).with_name("chatcli"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty storage root."""
    return tmp_path / "store"


@pytest.fixture
def example_root(tmp_path: Path) -> Path:
    """A storage root holding the example sessions from storage/example (seed layout)."""
    dest = tmp_path / "store"
    shutil.copytree(EXAMPLES, dest)
    return dest


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as s:
        yield s


@pytest.fixture
def env(root: Path, tmp_path: Path, server: FakeOpenAI) -> dict[str, str]:
    """Environment for a chatcli subprocess: private storage and config, the loopback server."""
    e = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "CHATCLI_")) and k != "NO_COLOR"
    }
    e.update(
        CHATCLI_STORAGE=str(root),
        CHATCLI_CONFIG=str(tmp_path / "config.toml"),
        OPENAI_API_KEY="sk-test-secret-key-1234",
        OPENAI_BASE_URL=server.base_url,
        CHATCLI_TIMEOUT="10",
        HOME=str(tmp_path / "home"),
        TERM="xterm-256color",
    )
    return e


def run(
    args: list[str],
    env: dict[str, str],
    input: str | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed chatcli as a user would, with stdin/stdout as pipes."""
    return subprocess.run(
        [CHATCLI, *args],
        input=input if input is not None else "",
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture
def chatcli(env: dict[str, str]):
    def _run(
        *args: str, input: str | None = None, cwd: Path | None = None, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return run(list(args), {**env, **extra}, input=input, cwd=cwd)

    return _run
