"""What the test files share: a private storage root, the example sessions, the loopback model
server, the CLI (installed, as a subprocess, or in process through Typer's CliRunner), tree
digests that prove nothing changed, sample databases, memory builders and console capture."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# A job started in the background (`cmd &`, nohup) ignores SIGINT, and every process it starts
# inherits that: the Ctrl-C tests' chatcli would never see its Ctrl-C. Handled signals are reset
# to their default in a started program, ignored ones are not: handle it here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
from fake_openai import FakeOpenAI
from realserver import llama_server_factory  # noqa: F401  (a fixture)
from rich.console import Console
from typer.testing import CliRunner, Result

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "storage" / "example"
DAMAGED = REPO / "storage" / "damaged"
CHATCLI = str(Path(sys.executable).with_name("chatcli"))
PLAIN = "0b7c6a52-3f0e-4a8e-9a57-1f6d2c9e4b11"  # example: 4 messages, zero-byte db, no metadata
TOOLS = "5e2d9c1a-7b44-4c0f-8d3e-2a9b6f0c7d22"  # example: system + tool calls + attached db


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
        CHATCLI_HELPER="0",  # no warm helper left behind (tests/test_ask.py starts its own)
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


def invoke(root: Path, *args: str, input: str | bytes | None = None) -> Result:
    """Run a command in process through Typer's CliRunner, on the storage folder ``root``."""
    from chatcli.cli import app  # here, not at the top: a conftest import error hides every test

    return CliRunner().invoke(app, ["--storage", str(root), *args], input=input)


def assert_clean_error(stderr: str) -> None:
    """What every refusal prints: ``chatcli: error: ...`` lines (one, as a rule), no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert lines and all(line.startswith("chatcli: error: ") for line in lines), stderr


def help_commands(help_text: str) -> list[str]:
    """The command names listed under ``Commands:`` in ``--help`` output, in order."""
    lines = help_text.split("\nCommands:\n", 1)[1].splitlines()
    return [line.split()[0] for line in lines if line.startswith("  ") and line.strip()]


# --- proving nothing changed ---------------------------------------------------------------


def digest(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(
    root: Path, folders: tuple[str, ...] = ("memory", "db"), *, dotfiles: bool = True
) -> dict[str, str]:
    """Every file directly inside a folder named in ``folders`` below ``root``, by digest: take
    it before and after, and equal snapshots prove no user file was created, changed or removed.
    ``dotfiles=False`` leaves out hidden files (locks, temporary files)."""
    return {
        str(p.relative_to(root)): digest(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parent.name in folders and (dotfiles or not p.name.startswith("."))
    }


def settle(*folders: Path) -> None:
    """Folder mtimes an hour old: nothing added there since, as far as any clock can tell."""
    when = time.time() - 3600
    for folder in folders:
        os.utime(folder, (when, when))


def run_read_only(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The installed chatcli with ``root`` mounted read-only, in a private mount namespace."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1) for a read-only mount")
    script = 'mount --bind -o ro "$0" "$0" || exit 77; exec "$@"'
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, str(root), CHATCLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode == 77 or result.stderr.startswith("unshare:"):
        pytest.skip(f"cannot mount a read-only folder here: {result.stderr.strip()}")
    return result


# --- sample databases ----------------------------------------------------------------------


def make_db(path: Path, *, big_rows: int = 0) -> Path:
    """t(id, name) with 3 rows and u(id, t_id -> t); optionally big(n) with ``big_rows`` rows."""
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
        "INSERT INTO t (name) VALUES ('ann'), ('bob'), ('cy');"
        "CREATE TABLE u (id INTEGER PRIMARY KEY, t_id INTEGER REFERENCES t(id), note TEXT);"
        "INSERT INTO u (t_id, note) VALUES (1, 'x');"
    )
    if big_rows:
        conn.execute("CREATE TABLE big (n INTEGER)")
        conn.executemany("INSERT INTO big VALUES (?)", ((i,) for i in range(big_rows)))
    conn.commit()
    conn.close()
    return path


def make_shop_db(path: Path, *, wal: bool = False) -> Path:
    """A small shop: two tables, a foreign key, an index and a view."""
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(
        """
        CREATE TABLE customers (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            email TEXT UNIQUE
        );
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            total REAL DEFAULT 0,
            note TEXT
        );
        CREATE INDEX idx_orders_customer ON orders(customer_id);
        CREATE VIEW order_totals AS
            SELECT c.name AS name, sum(o.total) AS spent
            FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id;
        INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com'), (2, 'Bob', NULL),
                                     (3, 'Cy', 'cy@example.com');
        INSERT INTO orders VALUES (1, 1, 10.5, 'first'), (2, 1, 4.5, NULL), (3, 2, 7.0, 'x');
        """
    )
    conn.commit()
    conn.close()
    return path


def sqlite_dump(path: Path) -> list[str]:
    """A database's content as SQL, read without writing (no journal, no WAL sidecar)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


# --- memory builders and readers -----------------------------------------------------------


def human(text: str) -> dict[str, Any]:
    """A user message in the memory-file format."""
    return {"type": "human", "data": {"content": text}}


def ai(text: str, finish: str | None = None) -> dict[str, Any]:
    """A model reply in the memory-file format, with its finish reason if given."""
    data: dict[str, Any] = {"content": text}
    if finish is not None:
        data["response_metadata"] = {"finish_reason": finish}
    return {"type": "ai", "data": data}


def conversation(
    pairs: int,
    *,
    question: str = "question {i}",
    answer: str = "answer {i}",
    finish: str | None = None,
) -> list[dict[str, Any]]:
    """``pairs`` question/answer turns; ``{i}`` in the templates is the turn's number."""
    turns: list[dict[str, Any]] = []
    for i in range(pairs):
        turns += [human(question.format(i=i)), ai(answer.format(i=i), finish)]
    return turns


def new_session(store: Any, messages: list[dict[str, Any]], *, title: str | None = None) -> str:
    """A session in ``store`` (a chatcli Store) holding ``messages``, written in one save."""
    sid = store.create(title=title)
    store.append(sid, messages)
    return sid


def read_memory(root: Path, sid: str) -> list[dict[str, Any]]:
    """A session's memory file as stored."""
    return json.loads((root / "memory" / f"{sid}.json").read_bytes())


def only_session(root: Path) -> str:
    """The id of the one session under ``root`` (fails if there is not exactly one)."""
    from chatcli.store import Store

    [sid] = Store(root).ids()
    return sid


# --- console capture -----------------------------------------------------------------------


def terminal_console(color_system: str | None = None, width: int = 80) -> Console:
    """The stdout Console of an in-memory terminal (StringIO streams, an empty environment as
    Rich's own tests use, so the runner's COLUMNS, NO_COLOR or TERM change nothing), made the
    way the CLI makes its own; ``color_system=None``: cursor moves but no colours."""
    from chatcli.render import Terminal

    return Terminal.in_memory(terminal=True, width=width, color_system=color_system).out


def pipe_console(width: int = 80) -> Console:
    """The stdout Console of an in-memory pipe: plain text, no escape codes."""
    from chatcli.render import Terminal

    return Terminal.in_memory(terminal=False, width=width).out


def console_output(console: Console) -> str:
    """Everything a terminal_console or pipe_console has printed so far."""
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()
