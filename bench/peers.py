"""Issue 7: chatcli side by side with what users would pick instead, simonw/llm and shell-gpt.

All three run in one go against the loopback OpenAI-compatible server (tests/fake_openai.py):
start-up, listing 10,000 conversations (each tool in its own store, filled with the same 10,000
conversations of 20 messages), searching them, and one streamed turn. Ratios are tool / chatcli:
above 1 means chatcli is faster.

Run: python bench/peers.py [--setup]

The peers are found in chatcli's venv (the optional ``peers`` extra), else in their own venvs under
bench/.data/peers-<name> (``--setup`` makes those: shell-gpt pins rich<14, which would downgrade
chatcli's own rich if installed alongside), else on PATH. A tool that is missing or does not start
is skipped with a note.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    CHATCLI,
    DATA,
    bare_start,
    build_root,
    conversation,
    env_for,
    stop_helper,
    wait_for_helper,
    wall,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_openai import FakeOpenAI  # noqa: E402

SESSIONS, PER_SESSION = 10_000, 20
PEERS = {"llm": ("llm", "llm"), "shell-gpt": ("shell-gpt", "sgpt")}  # name: (package, command)
WORD = "4242"  # in one conversation only


def find(name: str) -> Path | None:
    package, command = PEERS[name]
    for candidate in (
        Path(sys.executable).with_name(command),
        DATA / f"peers-{package}" / "bin" / command,
    ):
        if candidate.exists():
            return candidate
    found = shutil.which(command)
    return Path(found) if found else None


def setup() -> None:
    for package, _ in PEERS.values():
        venv = DATA / f"peers-{package}"
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        extra = ["click"] if package == "shell-gpt" else []  # 1.5.1 imports it undeclared
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", package, *extra], check=True)


def starts(exe: Path, env: dict[str, str]) -> str | None:
    """None if ``exe --version`` works, else the reason it does not."""
    result = subprocess.run(
        [str(exe), "--version"], env=env, capture_output=True, text=True, input=""
    )
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


# ---------------------------------------------------------------------------------------------
# The same 10,000 conversations in each tool's own store


def llm_logs(user_dir: Path, exe: Path, base_url: str) -> None:
    """llm's logs.db holding the conversations: llm 0.36 keeps threads of turns, each turn a
    user message and an assistant message (hash-chained), their text parts and a search row."""
    db = user_dir / "logs.db"
    done = user_dir / ".complete"
    if done.exists():
        return
    user_dir.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)
    _llm_model_file(user_dir, base_url)
    # One real prompt creates and migrates logs.db and gives rows to copy the shape of.
    subprocess.run(
        [str(exe), "-m", "fake", "hello"],
        env=_llm_env(user_dir),
        check=True,
        capture_output=True,
        input="",
    )
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    tables = ("threads", "turns", "messages", "parts", "turn_search")
    shape = {t: dict(conn.execute(f"SELECT * FROM {t} LIMIT 1").fetchone()) for t in tables}
    rows: dict[str, list[dict]] = {t: [] for t in tables}
    for i in range(SESSIONS):
        texts = [m["data"]["content"] for m in conversation(PER_SESSION, i)]
        thread = f"thread{i:020d}"
        parent = None
        for j in range(0, PER_SESSION, 2):
            when = f"2025-01-01T00:00:00.{i:06d}+00:00"
            turn = f"turn{i:014d}{j:08d}"
            hashes = [f"b2:{i:016x}{k:016x}" for k in (j, j + 1)]
            for k, (h, role) in enumerate(zip(hashes, ("user", "assistant"), strict=True)):
                rows["messages"].append(
                    {**shape["messages"], "hash": h, "role": role, "parent_hash": parent}
                )
                rows["parts"].append(
                    {**shape["parts"], "id": None, "message_hash": h, "text": texts[j + k]}
                )
                parent = h
            rows["turns"].append(
                {
                    **shape["turns"],
                    "id": turn,
                    "thread_id": thread,
                    "parent_message_hash": hashes[0],
                    "tip_message_hash": hashes[1],
                    "datetime_utc": when,
                }
            )
            rows["turn_search"].append(
                {
                    **shape["turn_search"],
                    "id": None,
                    "turn_id": turn,
                    "prompt": texts[j],
                    "response": texts[j + 1],
                }
            )
        rows["threads"].append(
            {
                **shape["threads"],
                "id": thread,
                "name": texts[0][:40],
                "tip_message_hash": parent,
                "datetime_utc": when,
            }
        )
    for table in tables:
        conn.execute(f"DELETE FROM {table}")
        cols = list(rows[table][0])
        conn.executemany(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [tuple(r.values()) for r in rows[table]],
        )
    conn.commit()
    conn.close()
    done.write_text("ok")


def _llm_model_file(user_dir: Path, base_url: str) -> None:
    (user_dir / "extra-openai-models.yaml").write_text(
        f'- model_id: fake\n  model_name: gpt-4o-mini\n  api_base: "{base_url}"\n'
    )


def _llm_env(user_dir: Path) -> dict[str, str]:
    return {**os.environ, "LLM_USER_PATH": str(user_dir)}


def sgpt_chats(folder: Path) -> None:
    """shell-gpt's chat cache: one JSON file of OpenAI messages per conversation."""
    done = folder / ".complete"
    if done.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(SESSIONS):
        chat = [
            {
                "role": "user" if m["type"] == "human" else "assistant",
                "content": m["data"]["content"],
            }
            for m in conversation(PER_SESSION, i)
        ]
        (folder / f"chat{i:05d}").write_text(json.dumps(chat))
    done.write_text("ok")


def _sgpt_env(home: Path, chats: Path, base_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "HOME": str(home),
        "OPENAI_API_KEY": "sk-bench",
        "API_BASE_URL": base_url,
        "DEFAULT_MODEL": "gpt-4o-mini",
        "CHAT_CACHE_PATH": str(chats),
    }


# ---------------------------------------------------------------------------------------------


def main() -> None:
    if "--setup" in sys.argv:
        setup()
    found = {name: find(name) for name in PEERS}
    root = build_root("list-10k", sessions=SESSIONS, per_session=PER_SESSION)
    rows: list[tuple[str, float, dict[str, float | None]]] = []
    notes: list[str] = []
    with FakeOpenAI() as server, tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        chat_env = env_for(
            tmpdir / "chatcli",
            OPENAI_API_KEY="sk-bench",
            OPENAI_BASE_URL=server.base_url,
            CHATCLI_MODEL="gpt-4o-mini",
        )
        no_helper = {**chat_env, "CHATCLI_HELPER": "0"}
        list_env = env_for(root)
        peers: dict[str, dict[str, list[str] | dict[str, str]]] = {}

        if (exe := found["llm"]) is None:
            notes.append("llm: not installed (pip install llm, or run with --setup); skipped")
        elif (why := starts(exe, _llm_env(tmpdir / "llm"))) is not None:
            notes.append(f"llm: installed but does not start ({why}); skipped")
        else:
            logs = DATA / "peers-llm-logs"
            llm_logs(logs, exe, server.base_url)
            _llm_model_file(logs, server.base_url)  # the server's port changes every run
            peers["llm"] = {
                "env": _llm_env(logs),
                "start": [str(exe), "--version"],
                "help": [str(exe), "--help"],
                "list": [str(exe), "logs", "list", "-n", "50"],
                "search": [str(exe), "logs", "list", "-q", WORD, "-n", "20"],
                "turn": [str(exe), "-m", "fake", "hello"],
            }

        if (exe := found["shell-gpt"]) is None:
            notes.append(
                "shell-gpt: not installed (pip install shell-gpt, or run with --setup); skipped"
            )
        else:
            chats = DATA / "peers-sgpt-chats"
            env = _sgpt_env(tmpdir / "sgpt-home", chats, server.base_url)
            if (why := starts(exe, env)) is not None:
                notes.append(
                    f"shell-gpt: installed but does not start ({why}); skipped "
                    "(1.5.1 imports click without depending on it: pip install click)"
                )
            else:
                sgpt_chats(chats)
                peers["shell-gpt"] = {
                    "env": env,
                    "start": [str(exe), "--version"],
                    "help": [str(exe), "--help"],
                    "list": [str(exe), "--list-chats"],
                    "turn": [str(exe), "hello"],
                }
                notes.append(
                    "shell-gpt: no search; --list-chats prints every chat id, no titles; "
                    "1.5.1 needs `pip install click` after a fresh install"
                )

        ours = {
            "start": ([CHATCLI, "--version"], chat_env, "start-up: --version"),
            "help": ([CHATCLI, "--help"], chat_env, "start-up: --help"),
            "list": ([CHATCLI, "list"], list_env, "list 10,000 conversations (50 shown)"),
            "search": ([CHATCLI, "search", WORD], list_env, f"search 10,000 for {WORD!r}"),
            "turn": ([CHATCLI, "ask", "hello"], no_helper, "one turn: ask, no helper"),
            "turn-warm": ([CHATCLI, "ask", "hello"], chat_env, "one turn: ask, warm helper"),
        }
        helper_root = Path(chat_env["CHATCLI_STORAGE"])
        wall(ours["search"][0], env=list_env, runs=1)  # the index is built once, not timed here
        for key, (cmd, env, label) in ours.items():
            warm = key == "turn-warm"
            key = "turn" if warm else key
            runs = 5 if key == "turn" else 7
            ready = (lambda: wait_for_helper(helper_root)) if warm else None
            mine = wall(cmd, env=env, runs=runs, setup=ready)
            theirs = {}
            for name in PEERS:
                spec = peers.get(name)
                if spec and key in spec:
                    theirs[name] = wall(spec[key], env=spec["env"], runs=runs)  # type: ignore[arg-type]
                else:
                    theirs[name] = None
            rows.append((label, mine, theirs))
        stop_helper(helper_root)

    base = bare_start("typer, rich")
    print(f"bare `python -c 'import typer, rich'`: {base * 1000:.0f} ms\n")
    head = f"{'':<40} {'chatcli':>9}" + "".join(f" {n:>10} {'ratio':>6}" for n in PEERS)
    print(head)
    print("-" * len(head))
    for label, mine, theirs in rows:
        line = f"{label:<40} {mine * 1000:7.0f}ms"
        for name in PEERS:
            t = theirs[name]
            line += f" {t * 1000:8.0f}ms {t / mine:5.1f}x" if t else f" {'-':>10} {'':>6}"
        print(line)
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
