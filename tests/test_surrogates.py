"""Lone surrogates in memory: piped invalid UTF-8 is read with surrogateescape and kept exactly, so
every reader of a session (search, /history, the resume banner, export) must cope with it, on a
strict UTF-8 stdout too (what a normal terminal gives)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from conftest import CHATCLI, only_session, run

BAD = b"broken \xff\xfe bytes"  # invalid UTF-8: stored as "\udcff\udcfe"
STRICT = {"PYTHONIOENCODING": "utf-8:strict"}


@pytest.fixture
def sid(root: Path, env: dict[str, str]) -> Iterator[str]:
    """A session whose first message (and the model's echo of it) holds lone surrogates."""
    result = subprocess.run(
        [CHATCLI, "new"], input=BAD + b"\n", env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    sid = only_session(root)
    assert b"\\udcff" in (root / "memory" / f"{sid}.json").read_bytes()  # kept exactly
    yield sid


def test_search_finds_sessions_once_one_holds_a_lone_surrogate(
    sid: str, env: dict[str, str]
) -> None:
    assert run(["new"], env, input="plain bytes here\n").returncode == 0
    result = run(["search", "bytes"], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert sid in result.stdout and result.stdout.count("\n    ") == 2  # both sessions
    assert "broken \ufffd\ufffd bytes" in result.stdout


def test_history_prints_a_lone_surrogate_on_a_strict_utf8_stdout(
    sid: str, env: dict[str, str]
) -> None:
    result = run(["resume", sid], {**env, **STRICT}, input="/history\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "broken \ufffd\ufffd bytes" in result.stdout


def test_resume_banner_replays_a_lone_surrogate_on_a_strict_utf8_terminal(
    sid: str, env: dict[str, str]
) -> None:
    child = pexpect.spawn(
        CHATCLI,
        ["resume", sid],
        env={**env, **STRICT},
        dimensions=(40, 100),
        encoding="utf-8",
        timeout=20,
    )
    try:
        child.expect("echo: broken \ufffd\ufffd bytes")
        child.expect("›")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert "Traceback" not in (child.before or "") and "error" not in (child.before or "")
    assert child.exitstatus == 0


def test_markdown_export_replaces_a_lone_surrogate(
    sid: str, root: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    out = tmp_path / "chat.md"
    result = run(["export", sid, "-o", str(out)], env)
    assert result.returncode == 0, result.stderr
    assert "broken \ufffd\ufffd bytes" in out.read_text(encoding="utf-8")
    piped = run(["export", sid], {**env, **STRICT})
    assert piped.returncode == 0, piped.stderr
    assert "broken \ufffd\ufffd bytes" in piped.stdout


def test_json_export_stays_the_exact_file_bytes(
    sid: str, root: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    out = tmp_path / "chat.json"
    result = run(["export", sid, "-f", "json", "-o", str(out)], env)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (root / "memory" / f"{sid}.json").read_bytes()
