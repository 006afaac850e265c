"""`chatcli ask` through the installed chatcli against the loopback server: what is sent, what
is printed, the exit status; and the warm helper's rules (chatcli/helper/)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CHATCLI, assert_clean_error, only_session, read_memory
from fake_openai import FakeOpenAI

from chatcli import helper
from chatcli.repl.compose import MAX_FILE_BYTES, Attachment, compose, fenced


@pytest.fixture
def ask(chatcli):
    """`chatcli ask ARGS` with the helper off (the helper tests turn it on)."""

    def _ask(*args: str, input: str | None = None, **kw: str):
        return chatcli("ask", *args, input=input, **{"CHATCLI_HELPER": "0", **kw})

    return _ask


def sent(server: FakeOpenAI, n: int = -1) -> list[dict]:
    """The messages of request ``n``."""
    return server.requests[n]["messages"]


def user_text(server: FakeOpenAI) -> str:
    return sent(server)[-1]["content"]


# --- composing a message (the pure function) ---------------------------------------------


def test_compose_orders_stdin_files_prompt():
    files = [Attachment("a.py", "x = 1\n")]
    assert compose("why?", stdin="log\n", files=files) == (
        "log\n\na.py:\n```python\nx = 1\n```\n\nwhy?"
    )


def test_compose_keeps_lone_stdin_exactly():
    assert compose(None, stdin="  a\n\n") == "  a\n\n"


def test_compose_with_nothing_is_empty():
    assert compose(None, stdin="  \n") == ""


def test_fence_is_longer_than_backticks_inside():
    block = fenced(Attachment("README", "````\ncode\n````"))
    assert block.startswith("README:\n`````\n") and block.endswith("\n`````")


# --- what is sent ------------------------------------------------------------------------


def test_prompt_only_is_the_user_message(ask, server):
    result = ask("why", "is the sky", "blue")
    assert result.returncode == 0, result.stderr
    assert [m["role"] for m in sent(server)] == ["system", "user"]
    assert user_text(server) == "why is the sky blue"


def test_stdin_only_is_the_whole_message(ask, server):
    assert ask(input="line one\nline two\n").returncode == 0
    assert user_text(server) == "line one\nline two\n"


def test_stdin_then_blank_line_then_prompt(ask, server):
    assert ask("explain", input="Error: boom\n").returncode == 0
    assert user_text(server) == "Error: boom\n\nexplain"


def test_files_are_fenced_blocks_headed_by_their_names(ask, server, tmp_path):
    (tmp_path / "app.py").write_text("print(1)\n")
    (tmp_path / "notes.md").write_text("# hi")
    result = ask("-f", "app.py", "-f", "notes.md", "review", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert user_text(server) == (
        "app.py:\n```python\nprint(1)\n```\n\nnotes.md:\n```markdown\n# hi\n```\n\nreview"
    )


@pytest.mark.parametrize("kind", ["binary", "folder", "too big", "missing"])
def test_refused_file_sends_nothing_and_makes_no_session(ask, server, tmp_path, root, kind):
    path = tmp_path / "f"
    if kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    elif kind == "folder":
        path.mkdir()
    elif kind == "too big":
        path.write_text("x" * (MAX_FILE_BYTES + 1))
    result = ask("-f", str(path), "what is it")
    assert result.returncode == 1
    assert_clean_error(result.stderr)
    assert str(path) in result.stderr
    assert server.requests == [] and result.stdout == ""
    assert not list((root / "memory").glob("*.json")) if (root / "memory").exists() else True


def test_endless_binary_stdin_is_refused_at_once(env, server, root):
    """`ask < /dev/zero`: refused after its first bytes, not read until memory runs out (the
    address space is capped, so a read without a bound fails instead of filling the machine)."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    with open("/dev/zero", "rb") as zero:
        result = subprocess.run(
            [CHATCLI, "ask", "explain"],
            stdin=zero,
            env={**env, "CHATCLI_HELPER": "0"},
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=cap,
        )
    assert result.returncode == 1, result.stderr
    assert_clean_error(result.stderr)
    assert "the piped input is binary" in result.stderr
    assert server.requests == [] and not list((root / "memory").glob("*.json"))


def test_piped_text_over_the_limit_is_refused(monkeypatch):
    """The bound `ask` reads stdin with (transfer.read_stdin, shared with `import -`)."""
    import io

    from chatcli import transfer
    from chatcli.errors import ChatcliError

    monkeypatch.setattr(transfer, "MEMORY_LIMIT", 10_000)
    assert transfer.read_stdin(io.BytesIO(b"x" * 10_000), text=True) == b"x" * 10_000
    with pytest.raises(ChatcliError, match="cannot send: stdin holds over"):
        transfer.read_stdin(io.BytesIO(b"x" * 10_001), text=True)


def test_nothing_to_ask_exits_2(ask, server):
    result = ask(input="")
    assert result.returncode == 2
    assert_clean_error(result.stderr)
    assert server.requests == []


def test_continue_sends_the_previous_turns(ask, server):
    assert ask("first").returncode == 0
    assert ask("-c", "second").returncode == 0
    assert [(m["role"], m["content"]) for m in sent(server)[1:]] == [
        ("user", "first"),
        ("assistant", "echo: first"),
        ("user", "second"),
    ]


def test_session_prefix_adds_to_that_session(ask, server, root):
    assert ask("one").returncode == 0
    first = only_session(root)
    assert ask("two").returncode == 0
    result = ask("-s", first[:6], "more")
    assert result.returncode == 0, result.stderr
    assert [m["content"] for m in sent(server)[1:]] == ["one", "echo: one", "more"]
    assert [m["data"]["content"] for m in read_memory(root, first)][-2:] == ["more", "echo: more"]


def test_model_on_a_continued_session_keeps_its_system_prompt(ask, server, root):
    assert ask("--system", "be brief", "one").returncode == 0
    sid = only_session(root)
    assert ask("-s", sid, "--model", "other-model", "two").returncode == 0
    meta = json.loads((root / "meta" / f"{sid}.json").read_text())
    assert (meta["system"], meta["model"]) == ("be brief", "other-model")


def test_system_on_a_continued_session_keeps_its_model(ask, server, root):
    assert ask("--model", "first-model", "one").returncode == 0
    assert ask("-c", "--system", "be brief", "two").returncode == 0
    meta = json.loads((root / "meta" / f"{only_session(root)}.json").read_text())
    assert (meta["system"], meta["model"]) == ("be brief", "first-model")


def test_title_comes_from_the_prompt(ask, chatcli, server, root):
    assert ask("what   is a monad", input="some context").returncode == 0
    listing = json.loads(chatcli("list", "--json").stdout)
    assert listing[0]["title"] == "what is a monad"


def test_db_tools_work_and_tables_stay_off_stdout(ask, server, tmp_path):
    from conftest import make_db

    db = make_db(tmp_path / "people.db")
    server.tool_calls([("run_sql", {"query": "SELECT count(*) AS n FROM t"})])
    server.reply("There are 3.")
    result = ask("--db", str(db), "how many people?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "There are 3.\n"
    assert sent(server)[-1]["role"] == "tool" and "3" in sent(server)[-1]["content"]


# --- what is printed ---------------------------------------------------------------------


def test_piped_stdout_is_the_exact_reply_and_a_newline(ask, server):
    server.reply("# Title\n\n**bold** \x1b[31mred\x1b[0m  ")
    result = ask("hi")
    assert result.returncode == 0
    assert result.stdout == "# Title\n\n**bold** \x1b[31mred\x1b[0m  \n"


def test_session_id_not_printed_when_stderr_is_not_a_terminal(ask, server, root):
    result = ask("hi")
    assert only_session(root) not in result.stderr + result.stdout


def test_json_is_one_object(ask, server, root):
    result = ask("--json", "hi")
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["session"] == only_session(root)
    assert obj["reply"] == "echo: hi"
    assert obj["finish_reason"] == "stop"
    assert obj["model"] and obj["usage"]["output_tokens"] == 2
    assert result.stdout.count("\n") == 1


def test_json_on_a_terminal_escapes_c1_controls(env, server, root):
    """json.dumps leaves C1 controls raw; on a terminal a CSI (U+009B) must be \\u009b."""
    pexpect = pytest.importorskip("pexpect")
    server.reply("red \x9b31m text \x7f")
    child = pexpect.spawn(
        CHATCLI, ["ask", "--json", "hi"], env={**env, "CHATCLI_HELPER": "0"}, timeout=30
    )
    child.expect(pexpect.EOF)
    child.close()
    out: bytes = child.before
    assert child.exitstatus == 0, out
    assert b"\xc2\x9b" not in out and b"\x7f" not in out
    line = next(x for x in out.splitlines() if x.startswith(b"{"))
    assert json.loads(line)["reply"] == "red \x9b31m text \x7f"


# --- exit status -------------------------------------------------------------------------


def test_server_error_exits_1_with_one_line(ask, server):
    server.error(500, "overloaded")
    server.error(500, "overloaded")  # the SDK's one retry
    result = ask("hi")
    assert result.returncode == 1
    assert result.stdout == ""
    assert_clean_error(result.stderr)
    assert "500" in result.stderr


def test_dropped_stream_exits_1_and_keeps_what_arrived(ask, server, root):
    server.drop("half of an answer that never ends", after_chunks=3)
    result = ask("hi")
    assert result.returncode == 1
    assert result.stdout == "half of an \n"
    saved = read_memory(root, only_session(root))[-1]["data"]
    assert saved["content"] == "half of an "
    assert saved["response_metadata"]["finish_reason"] == "incomplete"


def _interrupt_mid_reply(env: dict[str, str], root: Path, server: FakeOpenAI, how: str) -> None:
    """``ask`` streaming a long reply is stopped by Ctrl-C in a pty or by SIGTERM: the right
    exit status, no traceback, and what arrived saved in its new session, marked."""
    before = set((root / "memory").glob("*.json")) if (root / "memory").exists() else set()
    server.reply("word " * 200, delay=0.05)
    if how == "ctrl-c":
        pexpect = pytest.importorskip("pexpect")
        child = pexpect.spawn(CHATCLI, ["ask", "hi"], env=env, timeout=30, dimensions=(24, 80))
        child.expect("word")
        time.sleep(0.3)
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        code, err, expected = child.exitstatus, child.before.decode(), 130
    else:
        proc = subprocess.Popen(
            [CHATCLI, "ask", "hi"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stdout.read(10)  # the reply is streaming
        proc.send_signal(signal.SIGTERM)
        if how == "sigterm, sighup":  # a second signal while what arrived is being saved
            proc.send_signal(signal.SIGHUP)
        _, raw = proc.communicate(timeout=30)
        code, err, expected = proc.returncode, raw.decode(), 128 + signal.SIGTERM
        if how == "sigterm, sighup" and code == 128 + signal.SIGHUP:
            expected = code  # both were pending at once: Python handles the lower number first
    assert code == expected, err
    assert "Traceback" not in err
    [path] = set((root / "memory").glob("*.json")) - before
    saved = read_memory(root, path.stem)[-1]["data"]
    assert saved["content"].startswith("word word")
    assert saved["response_metadata"]["finish_reason"] == "interrupted"


def test_ctrl_c_in_a_terminal_exits_130_and_keeps_what_arrived(env, root, server):
    _interrupt_mid_reply({**env, "CHATCLI_HELPER": "0"}, root, server, "ctrl-c")


@pytest.mark.parametrize("how", ["sigterm", "sigterm, sighup"])
def test_sigterm_mid_reply_exits_143_and_keeps_what_arrived(env, root, server, how):
    _interrupt_mid_reply({**env, "CHATCLI_HELPER": "0"}, root, server, how)


def test_new_still_sends_one_message_per_line(chatcli, server):
    assert chatcli("new", input="one\ntwo\n").returncode == 0
    assert [m["messages"][-1]["content"] for m in server.requests] == ["one", "two"]


def test_new_help_points_to_ask(chatcli):
    assert "chatcli ask" in chatcli("new", "--help").stdout


# --- the warm helper ---------------------------------------------------------------------


def _newest(root: Path) -> str:
    from chatcli.store import Store

    return Store(root).latest()


def _status(root: Path) -> dict | None:
    return helper.ask_helper(root, "status")


def _wait(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


@pytest.fixture
def warm(chatcli, env, root):
    """A running helper for ``root`` (started the way users get one: by a first ask)."""
    on = {**env, "CHATCLI_HELPER": "1"}
    assert chatcli("ask", "start it", CHATCLI_HELPER="1").returncode == 0
    assert _wait(lambda: _status(root) is not None), "the helper did not start"
    yield on
    status = _status(root)
    helper.ask_helper(root, "stop")
    if status:
        _wait(lambda: not _alive(status["pid"]), 10)


def test_helper_serves_the_next_ask(warm, root, server):
    before = _status(root)["served"]
    result = subprocess.run(
        [CHATCLI, "ask", "hi"], env=warm, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout == "echo: hi\n"
    assert _status(root)["served"] == before + 2  # the ask, and the status question before
    assert user_text(server) == "hi"


def test_helper_socket_is_private(warm, root):
    folder = helper.run_dir(root)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / helper.SOCKET).stat().st_mode) == 0o600


def test_helper_never_holds_the_api_key(warm, root, env):
    pid = _status(root)["pid"]
    key = env["OPENAI_API_KEY"].encode()
    assert key not in Path(f"/proc/{pid}/environ").read_bytes()
    for path in root.rglob("*"):
        if path.is_file():
            assert key not in path.read_bytes(), path


def test_helper_setting_off_is_not_used(warm, root, chatcli):
    before = _status(root)["served"]
    assert chatcli("ask", "hi", CHATCLI_HELPER="0").returncode == 0
    assert _status(root)["served"] == before + 1  # only the status question


def test_helper_off_starts_no_helper(ask, root):
    assert ask("hi").returncode == 0
    assert not (helper.run_dir(root) / helper.SOCKET).exists()


def test_helper_of_another_version_gives_way(env, root, server, chatcli):
    folder = helper.run_dir(root)
    folder.mkdir(parents=True, mode=0o700)
    code = (
        "import sys; import chatcli.helper.server as s; s.fingerprint = lambda: 'older';"
        "s.main(sys.argv[1:])"
    )
    old = subprocess.Popen([sys.executable, "-c", code, str(folder)], env=env)
    try:
        assert _wait(lambda: _status(root) is not None), "the old helper did not start"
        result = chatcli("ask", "hi", CHATCLI_HELPER="1")
        assert result.returncode == 0 and result.stdout == "echo: hi\n", result.stderr
        assert old.wait(timeout=30) == 0  # it stopped when it met a newer chatcli
    finally:
        old.kill()
        old.wait()
        _wait(lambda: _status(root) is not None, 30)  # the fresh one the ask started
        helper.ask_helper(root, "stop")


def test_helper_killed_mid_reply_loses_nothing(warm, root, server):
    server.reply("slow " * 20, delay=0.1)
    pid = _status(root)["pid"]
    proc = subprocess.Popen(
        [CHATCLI, "ask", "hi"], env=warm, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert server.wait_for_requests(2, timeout=30)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == "slow " * 20 + "\n"
    messages = read_memory(root, _newest(root))
    assert messages[-1]["data"]["content"] == "slow " * 20


def test_killed_turn_process_is_a_clear_error(warm, root, server):
    server.reply("slow " * 50, delay=0.1)
    helper_pid = _status(root)["pid"]
    proc = subprocess.Popen(
        [CHATCLI, "ask", "hi"], env=warm, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert server.wait_for_requests(2, timeout=30)
    children = Path(f"/proc/{helper_pid}/task/{helper_pid}/children").read_text().split()
    assert children, "the turn did not run in the helper"
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert_clean_error(err)
    assert "helper" in err
    assert read_memory(root, _newest(root))[-1]["data"]["content"] == "hi"  # kept


def test_helper_passes_ctrl_c_on(warm, root, server):
    _interrupt_mid_reply(warm, root, server, "ctrl-c")


def test_helper_passes_sigterm_on(warm, root, server):
    _interrupt_mid_reply(warm, root, server, "sigterm")


@pytest.mark.slow  # seconds of waiting: the full run (CI) has it
def test_helper_quits_when_idle(chatcli, root):
    assert chatcli("ask", "hi", CHATCLI_HELPER="1", CHATCLI_HELPER_IDLE="1").returncode == 0
    assert _wait(lambda: _status(root) is not None), "the helper did not start"
    pid = _status(root)["pid"]
    assert _wait(lambda: not _alive(pid), 30)
    assert not (helper.run_dir(root) / helper.SOCKET).exists()


def test_repl_file_goes_with_the_next_message_only(chatcli, server, tmp_path):
    (tmp_path / "q.sql").write_text("SELECT 1;\n")
    result = chatcli("new", input="/file q.sql\nwhat does it do\nand then\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = (r["messages"][-1]["content"] for r in server.requests)
    assert first == "q.sql:\n```sql\nSELECT 1;\n```\n\nwhat does it do"
    assert second == "and then"


def test_repl_file_refuses_a_binary_file_at_once(chatcli, server, tmp_path):
    (tmp_path / "b.bin").write_bytes(b"\0\1\2")
    result = chatcli("new", input="/file b.bin\n", cwd=tmp_path)
    assert result.returncode == 1
    assert "binary" in result.stderr and server.requests == []
