"""Passwords and tokens in URLs never reach disk or the screen: the log of an unexpected error,
the REPL's input history, ``chatcli config`` and the model-server connection errors."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pexpect
from conftest import CHATCLI, only_session, run

PW = "Hunter2-pg-secret"
TOKEN = "tok-9f8e7d6c5b4a"
URL = f"postgresql://alice:{PW}@127.0.0.1:9/shop"  # port 9: nothing listens, refused at once


def _leaks(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_an_unexpected_error_logs_the_command_line_without_the_password(
    root: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    assert run(["new"], env, input="hello\n").returncode == 0
    sid = only_session(root)
    # A bug inside attach-db, whose message also carries the URL (as an exception text may).
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import chatcli.attaching

            def attach(store, term, sid, sources, **kwargs):
                raise RuntimeError(f"a bug with {sources[0]}\\nand a second line")

            chatcli.attaching.attach = attach
            """
        )
    )
    result = run(["attach-db", sid, URL], {**env, "PYTHONPATH": str(hook)})
    assert result.returncode == 1
    # one line on the screen too, the URL in it without its password
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        "chatcli: error: unexpected RuntimeError: a bug with postgresql://alice@"
    )
    assert "second line" not in line and "chatcli.log" in line
    log = (root / "chatcli.log").read_text()
    assert "Traceback" in log and "a bug with postgresql://alice@127.0.0.1:9/shop" in log
    assert f"attach-db {sid} postgresql://alice@127.0.0.1:9/shop" in log
    assert _leaks(root, PW) == []


def test_the_input_history_keeps_an_attach_line_without_the_password(
    root: Path, env: dict[str, str]
) -> None:
    child = pexpect.spawn(
        CHATCLI, ["new"], env=env, dimensions=(40, 120), encoding="utf-8", timeout=30
    )
    try:
        child.expect("›")
        child.sendline(f"/attach {URL}")
        child.expect("127.0.0.1")  # the connection error
        child.expect("›")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    history = (root / "input_history").read_text()
    assert "/attach postgresql://alice@127.0.0.1:9/shop" in history
    assert _leaks(root, PW) == []


def test_config_masks_a_token_in_the_base_url(env: dict[str, str]) -> None:
    result = run(["config"], {**env, "OPENAI_BASE_URL": f"http://alice:{TOKEN}@127.0.0.1:9/v1"})
    assert result.returncode == 0, result.stderr
    assert "http://***@127.0.0.1:9/v1" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_a_connection_error_masks_a_token_in_the_base_url(root: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [CHATCLI, "ask", "hello"],
        env={**env, "OPENAI_BASE_URL": f"http://alice:{TOKEN}@127.0.0.1:9/v1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "cannot reach the model server at http://***@127.0.0.1:9/v1" in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert _leaks(root, TOKEN) == []
