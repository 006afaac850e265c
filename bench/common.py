"""Shared by the bench scripts: timing whole commands and building seed-layout storage roots."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"
PYTHON = sys.executable
CHATCLI = str(Path(sys.executable).with_name("chatcli"))

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chatcli import helper  # noqa: E402  (the standard library only)


def wall(
    cmd: list[str], *, env: dict[str, str] | None = None, runs: int = 7, stdin: str = "", setup=None
) -> float:
    """Median wall time of a command (output discarded), after one warm-up run."""
    times = []
    for i in range(runs + 1):
        if setup:
            setup()
        start = time.perf_counter()
        subprocess.run(
            cmd,
            env=env,
            input=stdin,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_start(modules: str = "typer, rich") -> float:
    return wall([PYTHON, "-c", f"import {modules}"], runs=11)


def message(kind: str, text: str) -> dict:
    """A message dict exactly as ``message_to_dict`` writes it."""
    data = {
        "content": text,
        "additional_kwargs": {},
        "response_metadata": {},
        "type": kind,
        "name": None,
        "id": None,
    }
    if kind == "ai":
        data.update(
            tool_calls=[],
            invalid_tool_calls=[],
            usage_metadata=None,
            response_metadata={"finish_reason": "stop", "model_name": "gpt-4o-mini"},
        )
    return {"type": kind, "data": data}


def conversation(n: int, seed: int = 0) -> list[dict]:
    return [
        message(
            "human" if i % 2 == 0 else "ai",
            f"message {i} of conversation {seed}: " + "lorem ipsum dolor sit amet " * 6,
        )
        for i in range(n)
    ]


def build_root(name: str, sessions: int, per_session: int) -> Path:
    """A storage root in the seed layout (no metadata, as older tools wrote it), built once."""
    root = DATA / name
    done = root / ".complete"
    if done.exists():
        return root
    (root / "memory").mkdir(parents=True, exist_ok=True)
    (root / "db").mkdir(exist_ok=True)
    for i in range(sessions):
        sid = str(uuid.UUID(int=i + 1, version=4))
        (root / "memory" / f"{sid}.json").write_text(json.dumps(conversation(per_session, i)))
        if i % 10 == 0:
            (root / "db" / f"{sid}.db").write_bytes(b"")  # older tools made empty ones
    done.write_text("ok")
    return root


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATCLI_", "OPENAI_"))}
    env.update(CHATCLI_STORAGE=str(root), CHATCLI_CONFIG=str(DATA / "no-config.toml"), **extra)
    return env


def report(label: str, value: float, base: float, target: float) -> None:
    ratio = value / base
    verdict = "ok" if ratio <= target else "OVER TARGET"
    print(f"{label:<48} {value * 1000:8.1f} ms  {ratio:5.2f}x  (target <= {target}x) {verdict}")


def byte_compile() -> None:
    """Compile chatcli as `pip install` would: with PYTHONDONTWRITEBYTECODE set (as on some
    machines) every start would otherwise compile each module from source again."""
    package = Path(__file__).resolve().parent.parent / "chatcli"
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(package)], check=True)


def stop_helper(root: Path) -> None:
    """The warm helper of this storage root stopped and its socket gone."""
    helper.ask_helper(root, "stop")
    for _ in range(100):
        if not (helper.run_dir(root) / helper.SOCKET).exists():
            return
        time.sleep(0.05)


def wait_for_helper(root: Path, timeout: float = 30.0) -> bool:
    """Until the warm helper (chatcli/helper/) answers; False if it did not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if helper.ask_helper(root, "status"):
            return True
        time.sleep(0.1)
    return False
