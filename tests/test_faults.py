"""Issue 6, "prove it survives": kill -9 mid-save, concurrent writers and readers, a full disk,
unwritable and unreadable storage, fuzzed memory files, odd input, secrets and file modes.

Most tests drive the installed ``chatcli`` as a subprocess against the loopback model server.
The figures quoted in README's Reliability section are printed (run with ``-s``); the long
variants are marked ``slow``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CHATCLI,
    DAMAGED,
    assert_clean_error,
    conversation,
    digest,
    new_session,
    run,
)
from fake_openai import FakeOpenAI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcli.doctor import check
from chatcli.errors import DamagedSession
from chatcli.store import MESSAGE_TYPES, Store

KEY = "sk-test-secret-key-1234"  # the key the conftest env hands every chatcli run
LIST_FIELDS = {"id", "title", "messages", "updated", "model", "db", "damaged"} | {
    "input_tokens",
    "output_tokens",
    "tokens_estimated",
}


def _messages(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_bytes())


def _grown_session(root: Path, pairs: int) -> str:
    """A session holding ``pairs`` question/answer turns, written in one save."""
    turns = conversation(
        pairs, question="question {i} " + "q" * 80, answer="answer {i} " + "a" * 150, finish="stop"
    )
    return new_session(Store(root), turns, title="grown")


# ---------------------------------------------------------------------------------------------
# kill -9 during saves


def _kill_run(root: Path, env: dict[str, str], sid: str, *, kills: int, seed: int) -> dict:
    """Resume ``sid`` with many piped lines and SIGKILL it at random moments, ``kills`` times.

    The next process is started while the current one is saving, so it loads LangChain
    meanwhile and the kill lands next to a second writer on the same session (under its lock).
    """
    rng = random.Random(seed)
    path = Store(root).memory_path(sid)
    lines = "".join(f"k{i}\n" for i in range(500)).encode()
    start = len(_messages(path))
    torn = lost = 0

    def spawn() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [CHATCLI, "resume", sid],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert p.stdin is not None
        p.stdin.write(lines)  # 3 kB: fits in the pipe, so this never blocks
        p.stdin.close()
        return p

    pool = [spawn()]
    try:
        for _ in range(kills):
            current = pool.pop(0)
            assert current.stdout is not None
            current.stdout.readline()  # its first reply has streamed: it is saving now
            pool.append(spawn())
            time.sleep(rng.uniform(0.0, 0.4))
            before = len(_messages(path))
            current.send_signal(signal.SIGKILL)
            current.wait()
            try:
                now = len(Store(root).load_messages(sid))
            except DamagedSession:
                torn += 1
                continue
            lost += now < before
    finally:
        for p in pool:
            p.kill()
            p.wait()
    temp_files = [n for n in os.listdir(path.parent) if n.endswith(".tmp")]
    return {
        "kills": kills,
        "torn": torn,
        "lost": lost,
        "start": start,
        "end": len(_messages(path)),
        "temp_files_left": len(temp_files),
    }


@pytest.mark.slow  # a kill loop: the full run only
@pytest.mark.parametrize("kills", [25, 200])
def test_kill_9_during_saves_never_tears_or_loses_messages(
    root: Path, env: dict[str, str], kills: int
) -> None:
    sid = _grown_session(root, 2500)
    figures = _kill_run(root, env, sid, kills=kills, seed=6)
    print(f"\nkill -9 during saves: {figures}")
    assert (figures["torn"], figures["lost"]) == (0, 0)
    assert figures["end"] > figures["start"]  # the kills really landed among saves
    path = Store(root).memory_path(sid)
    assert all(m["type"] in ("human", "ai") for m in _messages(path))
    # What the kills leave behind is temp files only, which the doctor clears a minute later.
    before = digest(path)
    report = check(Store(root), fix=True, now=time.time() + 120)
    assert report.ok, report.problems
    assert not [n for n in os.listdir(path.parent) if n.endswith(".tmp")]
    assert digest(path) == before


# ---------------------------------------------------------------------------------------------
# concurrency


def _turns(memory: list[dict[str, Any]], tag: str) -> tuple[list[str], list[str]]:
    asked = [
        m["data"]["content"]
        for m in memory
        if m["type"] == "human" and m["data"]["content"].startswith(tag)
    ]
    answered = [
        m["data"]["content"]
        for m in memory
        if m["type"] == "ai" and m["data"]["content"].startswith(f"echo: {tag}")
    ]
    return asked, answered


def test_two_chatcli_processes_on_one_session_keep_every_answered_turn(
    root: Path, env: dict[str, str]
) -> None:
    sid = Store(root).create(title="shared")
    procs = {
        tag: subprocess.Popen(
            [CHATCLI, "resume", sid],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for tag in ("A", "B")
    }
    outputs = {}
    threads = [
        threading.Thread(
            target=lambda t=tag, p=p: outputs.__setitem__(
                t, p.communicate("".join(f"{t}-{i}\n" for i in range(5)), timeout=120)
            )
        )
        for tag, p in procs.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    memory = _messages(Store(root).memory_path(sid))
    kept = 0
    for tag, p in procs.items():
        assert p.returncode == 0, outputs[tag][1]
        asked, answered = _turns(memory, tag)
        assert asked == [f"{tag}-{i}" for i in range(5)]
        assert answered == [f"echo: {tag}-{i}" for i in range(5)]
        kept += len(answered)
    print(
        f"\nconcurrency: 2 chatcli processes x 5 turns -> {kept}/10 turns kept, "
        f"{len(memory)} messages"
    )


_BUSY_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from chatcli.store import Store
    store, seconds = Store(Path(sys.argv[1])), float(sys.argv[2])
    shared = sys.argv[3:]
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        sid = shared[i % len(shared)] if i % 4 else store.create(title=f"made {i}")
        store.append(sid, [{"type": "human", "data": {"content": f"m{i} " + "x" * 300}},
                           {"type": "ai", "data": {"content": f"r{i}"}}])
        if i % 7 == 0:
            store.update_meta(sid, title=f"renamed {i}")
        i += 1
    print(i)
""")


@pytest.mark.slow  # a stress loop of saves and listings: the full run only
def test_listing_while_writers_write_never_crashes_or_shows_a_partial_row(
    root: Path, env: dict[str, str]
) -> None:
    store = Store(root)
    shared = [_grown_session(root, 200) for _ in range(3)]
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _BUSY_WRITER, str(root), "4", *shared],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    failures: list[str] = []
    runs = {"list": 0, "json": 0}

    def loop(args: list[str], key: str) -> None:
        while any(w.poll() is None for w in writers):
            result = run(args, env, timeout=60)
            runs[key] += 1
            if result.returncode != 0 or result.stderr:
                failures.append(f"{args}: {result.returncode} {result.stderr}")
                continue
            if key == "list":
                if "DAMAGED" in result.stdout or "of" not in result.stdout:
                    failures.append(result.stdout)
                continue
            try:
                rows = json.loads(result.stdout)
            except ValueError as e:
                failures.append(f"unparsable JSON: {e}")
                continue
            for row in rows:
                if (
                    set(row) != LIST_FIELDS
                    or row["damaged"] is not None
                    or not isinstance(row["messages"], int)
                    or not row["title"]
                ):
                    failures.append(f"partial row {row}")

    threads = [
        threading.Thread(target=loop, args=(["list"], "list")),
        threading.Thread(target=loop, args=(["list", "--json"], "json")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    appended = sum(int(w.communicate()[0]) for w in writers)
    assert all(w.returncode == 0 for w in writers)
    assert failures == []
    assert runs["list"] >= 3 and runs["json"] >= 3
    assert all(len(store.open(sid).messages) >= 400 for sid in shared)
    print(
        f"\nlisting under writers: {runs['list']} list + {runs['json']} list --json runs "
        f"during {appended} saves, 0 failures"
    )


# ---------------------------------------------------------------------------------------------
# full disk


def _file_size_limit(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def _assert_chat_went_on_unsaved(
    result: subprocess.CompletedProcess[str], path: Path, before: bytes, reason: str
) -> None:
    assert result.returncode == 1  # the REPL went on to the next line; exit 1: a turn failed
    assert_clean_error(result.stderr)
    assert reason in result.stderr and str(path) in result.stderr
    assert path.read_bytes() == before
    assert not [n for n in os.listdir(path.parent) if n.endswith(".tmp")]


def test_a_full_disk_fails_the_turn_in_one_line_and_keeps_the_file(
    root: Path, env: dict[str, str]
) -> None:
    sid = _grown_session(root, 10)
    path = Store(root).memory_path(sid)
    before = path.read_bytes()
    result = subprocess.run(
        [CHATCLI, "resume", sid],
        input="one more\nand another\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_file_size_limit(len(before) + 10),
    )
    _assert_chat_went_on_unsaved(result, path, before, "File too large")
    assert result.stderr.count("\n") == 2  # one line per failed turn


def test_new_on_a_full_disk_exits_non_zero_and_leaves_nothing(
    root: Path, env: dict[str, str]
) -> None:
    Store(root).ensure()
    result = subprocess.run(
        [CHATCLI, "new"],
        input="hello\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_file_size_limit(0),
    )
    assert result.returncode == 1
    assert_clean_error(result.stderr)
    assert Store(root).ids() == []
    assert not list((root / "meta").iterdir())


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 kB tmpfs: a real ENOSPC (skipped where mounting is not allowed)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)],
            capture_output=True,
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_really_full_disk_fails_the_turn_in_one_line_and_keeps_the_file(
    tiny_tmpfs: Path, env: dict[str, str]
) -> None:
    root = tiny_tmpfs / "store"
    sid = _grown_session(root, 150)  # ~100 kB: the next save needs more than is left
    Store(root).list_sessions()
    with contextlib.suppress(OSError), open(tiny_tmpfs / "filler", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    path = Store(root).memory_path(sid)
    before = path.read_bytes()
    result = run(
        ["resume", sid], {**env, "CHATCLI_STORAGE": str(root)}, input="one more\nand another\n"
    )
    _assert_chat_went_on_unsaved(result, path, before, "No space left on device")
    listing = run(["list", "--json"], {**env, "CHATCLI_STORAGE": str(root)})
    assert listing.returncode == 0 and json.loads(listing.stdout)[0]["messages"] == 300


# ---------------------------------------------------------------------------------------------
# read-only and unreadable storage

_libc = ctypes.CDLL(None, use_errno=True)
_PR_CAPBSET_DROP = 24
_DAC_CAPS = (1, 2, 3, 4)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID
NOBODY = 65534


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _without_dac_caps() -> None:
    # Still uid 0, but without the capabilities that let root ignore file modes: the kernel
    # then checks permissions for it like for any other user (owner bits for root's files).
    for cap in _DAC_CAPS:
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


class _Unprivileged:
    """How to run chatcli subject to file permissions while the tests run as root."""

    def __init__(self, preexec: Callable[[], None], uid: int) -> None:
        self.preexec, self.uid = preexec, uid

    @property
    def other_uid(self) -> int:
        return 0 if self.uid == NOBODY else NOBODY


@pytest.fixture(scope="module")
def unprivileged() -> _Unprivileged:
    if os.geteuid() != 0:
        pytest.skip("needs root to own files the child cannot touch")
    # uid 65534 is the natural choice, but only works when it can reach the interpreter
    # (here the venv's python lives under root's 0700 home); otherwise drop the capabilities.
    for preexec, uid in ((_as_nobody, NOBODY), (_without_dac_caps, 0)):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if (
                subprocess.run(
                    [CHATCLI, "--version"], preexec_fn=preexec, capture_output=True, timeout=30
                ).returncode
                == 0
            ):
                return _Unprivileged(preexec, uid)
    pytest.skip("cannot run chatcli without privileges here")


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A folder every user can traverse (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="chatcli-perm-"))
    base.chmod(0o755)
    yield base
    for p in [base, *base.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chown(p, 0, 0, follow_symlinks=False)
            p.chmod(0o700)
    shutil.rmtree(base)


def _perm_env(env: dict[str, str], base: Path) -> dict[str, str]:
    home = base / "home"
    home.mkdir(exist_ok=True)
    return {
        **env,
        "CHATCLI_STORAGE": str(base / "store"),
        "HOME": str(home),
        "CHATCLI_CONFIG": str(home / "config.toml"),
    }


def _own(tree: Path, uid: int, *, dir_mode: int, file_mode: int) -> None:
    for p in [tree, *tree.rglob("*")]:
        os.chown(p, uid, uid)
        p.chmod(dir_mode if p.is_dir() else file_mode)


def test_read_only_storage_lists_and_the_chat_goes_on_without_saving(
    unprivileged: _Unprivileged, shared_base: Path, env: dict[str, str]
) -> None:
    e = _perm_env(env, shared_base)
    root = Path(e["CHATCLI_STORAGE"])
    sid = _grown_session(root, 3)
    Store(root).list_sessions()
    _own(root, unprivileged.uid, dir_mode=0o500, file_mode=0o400)
    path = Store(root).memory_path(sid)
    before = path.read_bytes()
    listing = subprocess.run(
        [CHATCLI, "list", "--json"],
        env=e,
        capture_output=True,
        text=True,
        preexec_fn=unprivileged.preexec,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)[0]["messages"] == 6
    result = subprocess.run(
        [CHATCLI, "resume", sid],
        input="hello\nagain\n",
        env=e,
        capture_output=True,
        text=True,
        preexec_fn=unprivileged.preexec,
        timeout=60,
    )
    assert result.returncode == 1  # the REPL goes on; each turn says why it was not saved
    assert_clean_error(result.stderr)
    assert "Permission denied" in result.stderr and "unexpected" not in result.stderr
    assert path.read_bytes() == before
    new = subprocess.run(
        [CHATCLI, "new"],
        input="hi\n",
        env=e,
        capture_output=True,
        text=True,
        preexec_fn=unprivileged.preexec,
        timeout=60,
    )
    assert new.returncode == 1
    assert_clean_error(new.stderr)
    assert "Permission denied" in new.stderr


@pytest.mark.parametrize("mode", [0o700, 0o500])
@pytest.mark.parametrize(
    "command", [["list"], ["list", "--json"], ["resume", "--last"], ["new"], ["doctor"]]
)
def test_storage_of_another_user_is_one_clear_error(
    unprivileged: _Unprivileged,
    shared_base: Path,
    env: dict[str, str],
    mode: int,
    command: list[str],
) -> None:
    e = _perm_env(env, shared_base)
    root = Path(e["CHATCLI_STORAGE"])
    sid = _grown_session(root, 3)
    _own(root, unprivileged.other_uid, dir_mode=mode, file_mode=0o600)
    before = digest(Store(root).memory_path(sid))
    result = subprocess.run(
        [CHATCLI, *command],
        input="hello\n",
        env=e,
        capture_output=True,
        text=True,
        preexec_fn=unprivileged.preexec,
        timeout=60,
    )
    assert result.returncode == 1
    assert_clean_error(result.stderr)
    assert len(result.stderr.splitlines()) == 1
    assert "Permission denied" in result.stderr and "unexpected" not in result.stderr
    assert digest(Store(root).memory_path(sid)) == before


# ---------------------------------------------------------------------------------------------
# fuzzing the loader

SID = "f0f0f0f0-0000-4000-8000-000000000000"
_fuzz_counter = iter(range(10**9))
FUZZ_CASES = {"cases": 0}

_any_text = st.text(st.characters(codec=None), max_size=20)  # lone surrogates included
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_any_text, inner, max_size=4),
    max_leaves=20,
)
_message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(MESSAGE_TYPES)) | _any_text},
    optional={
        "data": st.dictionaries(
            st.sampled_from(
                [
                    "content",
                    "id",
                    "name",
                    "tool_calls",
                    "response_metadata",
                    "additional_kwargs",
                    "tool_call_id",
                    "role",
                ]
            )
            | _any_text,
            _json_values,
            max_size=4,
        )
    },
)


def _fresh_store(base: Path) -> Store:
    # A new root per example: the index notices changes through folder mtimes, which a
    # rewrite within the same clock tick would not move.
    store = Store(base / str(next(_fuzz_counter)))
    store.ensure()
    return store


def _check_loader(base: Path, raw: bytes) -> None:
    """Whatever the memory file holds: listing never crashes, opening either loads the
    messages or refuses with DamagedSession, a refused file is never written, and a loaded
    one takes an append that keeps every message."""
    FUZZ_CASES["cases"] += 1
    store = _fresh_store(base)
    path = store.memory_path(SID)
    path.write_bytes(raw)
    before = digest(path)
    [row] = store.list_sessions()
    assert set(json.loads(store.list_json())[0]) == LIST_FIELDS
    try:
        loaded = store.open(SID).messages
    except DamagedSession as e:
        assert str(path) in str(e)
        assert row.damaged
        with pytest.raises(DamagedSession):
            store.append(SID, [{"type": "human", "data": {"content": "x"}}])
        assert digest(path) == before
        return
    assert row.damaged is None and row.messages == len(loaded)
    assert digest(path) == before
    store.append(SID, [{"type": "human", "data": {"content": "x"}}])
    assert store.load_messages(SID) == loaded + [{"type": "human", "data": {"content": "x"}}]


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
_fuzz_settings = settings(max_examples=100, deadline=None, suppress_health_check=_HEALTH)


def _fuzz(test: Callable[..., None]) -> Callable[..., None]:
    """100 examples, in the full run only: the quick run leaves the fuzzers out."""
    return pytest.mark.slow(_fuzz_settings(test))


_fuzz_long = settings(max_examples=2000, deadline=None, suppress_health_check=_HEALTH)


@pytest.fixture(scope="module", autouse=True)
def _print_fuzz_count() -> Iterator[None]:
    yield
    if FUZZ_CASES["cases"]:
        print(f"\nfuzzed memory and metadata files: {FUZZ_CASES['cases']} cases, 0 crashes")


@_fuzz
@given(raw=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(fuzz_base: Path, raw: bytes) -> None:
    _check_loader(fuzz_base, raw)


@pytest.mark.slow
@_fuzz_long
@given(raw=st.binary(max_size=3000))
def test_fuzz_arbitrary_bytes_at_length(fuzz_base: Path, raw: bytes) -> None:
    _check_loader(fuzz_base, raw)


_json_files = dict(
    value=_json_values | st.lists(_message_like, max_size=4),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-32"]),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
)


def _check_json_file(
    base: Path, value: Any, encoding: str, indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    _check_loader(base, text.encode(encoding, "surrogatepass"))


@_fuzz
@given(**_json_files)
def test_fuzz_arbitrary_json(
    fuzz_base: Path, value: Any, encoding: str, indent: int | None, ascii_only: bool
) -> None:
    _check_json_file(fuzz_base, value, encoding, indent, ascii_only)


@pytest.mark.slow
@_fuzz_long
@given(**_json_files)
def test_fuzz_arbitrary_json_at_length(
    fuzz_base: Path, value: Any, encoding: str, indent: int | None, ascii_only: bool
) -> None:
    _check_json_file(fuzz_base, value, encoding, indent, ascii_only)


def _messages_strategy() -> st.SearchStrategy[list[dict[str, Any]]]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    text = st.text(st.characters(codec="utf-8"), max_size=40)
    one = st.one_of(
        text.map(lambda t: HumanMessage(content=t)),
        text.map(lambda t: SystemMessage(content=t)),
        st.builds(
            lambda t, n: AIMessage(
                content=t, response_metadata={"finish_reason": "stop", "model_name": n}
            ),
            text,
            text,
        ),
        st.builds(lambda t, c: ToolMessage(content=t, tool_call_id=c or "call"), text, text),
    )
    from langchain_core.messages import message_to_dict

    return st.lists(one.map(message_to_dict), max_size=6)


@_fuzz
@given(messages=_messages_strategy(), indent=st.sampled_from([None, 1]), ascii_only=st.booleans())
def test_fuzz_valid_message_arrays_load_exactly(
    fuzz_base: Path, messages: list[dict[str, Any]], indent: int | None, ascii_only: bool
) -> None:
    from langchain_core.messages import messages_from_dict

    raw = json.dumps(messages, indent=indent, ensure_ascii=ascii_only).encode()
    store = _fresh_store(fuzz_base)
    store.memory_path(SID).write_bytes(raw)
    assert store.open(SID).messages == messages
    assert store.list_sessions()[0].messages == len(messages)
    messages_from_dict(store.open(SID).messages)  # and the model layer can load them
    _check_loader(fuzz_base, raw)


@_fuzz
@given(
    meta=_json_values
    | st.dictionaries(st.sampled_from(["title", "model", "system"]), _json_values, max_size=3)
)
def test_fuzz_arbitrary_metadata_never_breaks_the_listing(fuzz_base: Path, meta: Any) -> None:
    FUZZ_CASES["cases"] += 1
    store = _fresh_store(fuzz_base)
    store.memory_path(SID).write_bytes(b'[{"type": "human", "data": {"content": "hi"}}]')
    store.meta_path(SID).write_text(json.dumps(meta), encoding="utf-8")
    [row] = store.list_sessions()
    assert isinstance(row.title, str) and isinstance(row.model, str)
    json.loads(store.list_json())


# Hand-picked files that are hard for a generator to hit.
_NASTY = {
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep object": b'[{"type": "human", "data": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001 + b"]",
    "huge integer": b'[{"type": "human", "data": {"content": "x", "n": ' + b"9" * 5000 + b"}}]",
    "lone surrogate title": b'[{"type": "human", "data": {"content": "bad \\udcff title"}}]',
    "nul bytes": b"[\0]",
    "bom, spaced empty array": b"\xef\xbb\xbf \n[ ]\n",
    "utf-16": json.dumps([{"type": "human", "data": {"content": "hi"}}]).encode("utf-16-be"),
    "truncated": b'[{"type": "human", "data": {"content": "hel',
    "not an array": b'{"type": "human", "data": {"content": "x"}}',
    "trailing garbage": b"[]\n\x00\x00\x00",
    "unknown type": b'[{"type": "alien", "data": {"content": "x"}}]',
    "content is a number": b'[{"type": "human", "data": {"content": 5}}]',
    "content parts that are not text": b'[{"type": "human", "data": {"content": '
    b'[{"text": 5}, {"text": {"a": 1}}, 7, null]}}]',
}


@pytest.mark.parametrize("name", sorted(_NASTY))
def test_hand_picked_memory_files(fuzz_base: Path, name: str) -> None:
    _check_loader(fuzz_base, _NASTY[name])


def test_cli_lists_and_refuses_fuzzed_files_without_touching_them(
    tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "fuzzed"
    shutil.copytree(DAMAGED, root)
    rng = random.Random(7)
    picked = {
        uuid.UUID(int=rng.getrandbits(128), version=4): raw
        for raw in [*_NASTY.values(), bytes(rng.getrandbits(8) for _ in range(500))]
    }
    for sid, raw in picked.items():
        (root / "memory" / f"{sid}.json").write_bytes(raw)
    digests = {p: digest(p) for p in (root / "memory").iterdir()}
    e = {**env, "CHATCLI_STORAGE": str(root)}
    listing = run(["list", "--all"], e)
    assert listing.returncode == 0 and listing.stderr == ""
    rows = json.loads(run(["list", "--json"], e).stdout)
    damaged = {r["id"] for r in rows if r["damaged"]}
    assert len(rows) == len(digests)
    for sid in sorted(damaged)[:4]:
        result = run(["resume", sid], e, input="hello\n")
        assert result.returncode == 1
        assert_clean_error(result.stderr)
        assert "damaged" in result.stderr
    assert {p: digest(p) for p in digests} == digests


# ---------------------------------------------------------------------------------------------
# odd input

ODD_LINES = [
    "emoji 😀 👩‍👩‍👧 🏳️‍🌈 ✨",
    "CJK 你好，世界 日本語のテキスト 한국어",
    "RTL مرحبا بالعالم שלום עולם \u202eoverride\u202c \u200fmark",
    "controls \x00 \x01 \x07 \x08 \x0b \x0c \x7f \x85 \x9b tab\there cr\rin the middle",
    "escapes \x1b[31mred\x1b[0m \x1b]0;pwned\x07 \x1b[2J \x1b[?1049h \x1bP+q\x1b\\",
    "invisible \u200b\u200d\ufeff\u2028\u2029 combining e\u0301 a\u0308",
    'json-ish "quotes" \\backslash\\ [brackets] {braces} </script>',
]
# Invalid UTF-8 from a broken terminal arrives as lone surrogates (surrogateescape).
BAD_BYTES = b"broken \xff\xfe utf-8 \xed\xa0\x80 and \xc3"


def test_odd_input_is_stored_exactly_and_never_emitted_raw(
    root: Path, env: dict[str, str], server: FakeOpenAI
) -> None:
    data = ("\n".join(ODD_LINES) + "\n").encode() + BAD_BYTES + b"\n"
    # strict decoding of stdin would make invalid UTF-8 crash the loop: chatcli must not care
    result = subprocess.run(
        [CHATCLI, "new"],
        input=data,
        env={**env, "PYTHONIOENCODING": "utf-8:strict"},
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    shown = result.stdout.decode()
    assert not set(shown) & {"\x1b", "\x07", "\x9b", "\x00", "\x08"}  # incl. 8-bit CSI
    [sid] = Store(root).ids()
    memory = _messages(Store(root).memory_path(sid))
    asked = [m["data"]["content"] for m in memory if m["type"] == "human"]
    expected = [*ODD_LINES, BAD_BYTES.decode("utf-8", "surrogateescape")]
    assert asked == expected
    assert asked[-1].encode("utf-8", "surrogateescape") == BAD_BYTES  # byte for byte
    sent = [r["messages"][-1]["content"] for r in server.requests]
    assert sent[:-1] == ODD_LINES
    assert "\ufffd" in sent[-1]  # the model gets valid UTF-8; memory keeps the original
    answers = [m["data"]["content"] for m in memory if m["type"] == "ai"]
    assert answers[:-1] == [f"echo: {line}" for line in ODD_LINES]
    print(f"\nodd input: {len(expected)} lines round-tripped, 0 raw escapes on stdout")


def test_a_one_megabyte_pasted_message_round_trips(
    root: Path, env: dict[str, str], server: FakeOpenAI
) -> None:
    rng = random.Random(1)
    alphabet = "abc xyz 😀 你好 مرحبا \t\x1b"
    big = "".join(rng.choice(alphabet) for _ in range(1_000_000))
    server.reply("got it")
    result = run(["new"], env, input=big + "\n", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "got it\n"
    [sid] = Store(root).ids()
    memory = _messages(Store(root).memory_path(sid))
    assert memory[0]["data"]["content"] == big
    assert server.requests[0]["messages"][-1]["content"] == big
    listing = json.loads(run(["list", "--json"], env).stdout)
    assert len(listing[0]["title"]) <= 60 and "\x1b" not in run(["list"], env).stdout


# ---------------------------------------------------------------------------------------------
# secrets and file modes


def _unexpected_error_in_a_turn(root: Path) -> None:
    """A bug inside a turn (a slash command that raises): one line on stderr, the traceback in
    chatcli.log. In-process, because every error a user can cause is now a handled one."""
    from chatcli import config
    from chatcli.render import Terminal
    from chatcli.repl import Chat, commands

    def _bug(chat: Chat, arg: str) -> None:
        raise RuntimeError("a bug")

    commands.command("/bug", "/bug", "")(_bug)
    try:
        Chat(Store(root), config.Settings(), KEY, term=Terminal.in_memory()).handle("/bug")
    finally:
        del commands.COMMANDS["/bug"]
    assert "Traceback" in (root / "chatcli.log").read_text()


def test_a_history_langchain_cannot_load_is_refused_in_one_line(
    root: Path, env: dict[str, str]
) -> None:
    sid = "bbbbbbbb-0000-4000-8000-000000000000"
    Store(root).ensure()
    Store(root).memory_path(sid).write_text(
        '[{"type": "ai", "data": {"content": "x", "tool_calls": "bogus"}}]'
    )
    result = run(["resume", sid], env, input="one\n")
    assert result.returncode == 1
    assert_clean_error(result.stderr)
    assert "tool_calls" in result.stderr  # refused when the file is read, before any turn


def _files(*roots: Path) -> list[Path]:
    return [p for r in roots for p in [r, *r.rglob("*")] if p.exists()]


def test_the_api_key_is_in_no_file_after_a_chat_an_export_and_errors(
    root: Path, tmp_path: Path, env: dict[str, str], server: FakeOpenAI
) -> None:
    export = tmp_path / "exports" / "chat.md"
    export.parent.mkdir()
    server.reply("first answer")
    server.error(401, f"Incorrect API key provided: {KEY}")  # a server that echoes the key
    server.error(500, "down")
    server.error(500, "down")
    result = run(
        ["new", "--title", "secret test"],
        env,
        input=f"hello\nagain\nthird\n/export {export}\n/title {'x' * 10}\n",
    )
    assert result.returncode == 1  # piped: some turns failed
    assert "API key" in result.stderr and "HTTP 500" in result.stderr
    assert KEY not in result.stderr and KEY not in result.stdout
    [sid] = Store(root).ids()
    (root / "memory" / f"{sid}.json").write_bytes(b"[{broken")  # and a damaged session
    assert run(["resume", sid], env, input="hi\n").returncode == 1
    _unexpected_error_in_a_turn(root)
    run(["list"], env)
    run(["config"], env)
    assert export.exists() and (root / "chatcli.log").exists()
    files = [p for p in _files(tmp_path) if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files)
    leaks = [p for p in files if KEY.encode() in p.read_bytes()]
    assert leaks == []


def test_storage_is_private_even_under_umask_000(
    root: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    import sqlite3

    import pexpect

    src = tmp_path / "data.db"
    con = sqlite3.connect(src)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    old = os.umask(0)
    try:
        child = pexpect.spawn(
            CHATCLI,
            ["new", "--db", str(src)],
            env=env,
            encoding="utf-8",
            timeout=30,
            dimensions=(40, 120),
        )
        child.expect("›")
        child.sendline("hello")
        child.expect("echo: hello")
        child.expect("›")
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before
        for args in (["list"], ["list", "--json"]):
            assert run(args, env).returncode == 0
        [sid] = Store(root).ids()
        _unexpected_error_in_a_turn(root)
    finally:
        os.umask(old)
    expected = {
        f"memory/{sid}.json",
        f"meta/{sid}.json",
        f"db/{sid}.db",
        "index.sqlite",
        f"locks/{sid}.lock",
        "input_history",
        "chatcli.log",
    }
    found = {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in _files(root)}
    assert expected <= set(found)
    wrong = {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }
    assert wrong == {}
