"""Issue 4 speed target: time until `chatcli new` shows a usable prompt in a terminal.

The prompt must not wait for langchain_openai (~2 s), which is imported in the background once
the prompt is up. Measured in a real pty (pexpect), from spawn until prompt_toolkit has drawn
"› " and reads keys, against the bare `python -c "import typer, rich, prompt_toolkit"`.

Run: python bench/prompt_bench.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pexpect
from common import CHATCLI, bare_start, byte_compile, env_for, report

# prompt_toolkit switches bracketed paste on when it starts reading a line, then draws the prompt.
PROMPT = r"\x1b\[\?2004h[^›]*›"
RUNS = 7


def _spawn(env: dict[str, str]) -> pexpect.spawn:
    return pexpect.spawn(
        CHATCLI, ["new"], env=env, dimensions=(40, 100), encoding="utf-8", timeout=30
    )


def _leave(child: pexpect.spawn) -> None:
    """Ctrl-D, and wait until the process is gone so it cannot slow down the next run."""
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()


def time_to_prompt(env: dict[str, str]) -> float:
    start = time.perf_counter()
    child = _spawn(env)
    child.expect(PROMPT)
    elapsed = time.perf_counter() - start
    _leave(child)
    return elapsed


def imports_around_prompt(env: dict[str, str]) -> tuple[list[str], bool]:
    """Top-level packages imported before the prompt was drawn (-X importtime), and whether
    langchain_openai was imported afterwards, in the background, as it should be."""
    child = _spawn({**env, "PYTHONPROFILEIMPORTTIME": "1"})
    child.expect(PROMPT)
    before = child.before
    # the model class's module (its packages' own initialisers wait: chatcli/llm/deferred.py)
    model = r"\| +langchain_openai\.chat_models\.base\r?\n"
    later = child.expect([model, pexpect.TIMEOUT], timeout=20) == 0
    _leave(child)
    names = set()
    for line in before.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and not name.startswith("["):
                names.add(name.split(".")[0])
    return sorted(names), later


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # A server that is never called: leaving at the prompt sends nothing.
        env = env_for(
            Path(tmp),
            OPENAI_API_KEY="unused",
            OPENAI_BASE_URL="http://127.0.0.1:9/v1",
            TERM="xterm-256color",
        )
        byte_compile()
        modules, later = imports_around_prompt(env)
        heavy = [m for m in modules if m.startswith(("langchain", "openai", "pydantic", "httpx"))]
        print(
            f"imported before the prompt: langchain/openai/pydantic/httpx: {heavy or 'none'}; "
            f"langchain_openai imported in the background afterwards: {'yes' if later else 'NO'}"
        )

        base = bare_start("typer, rich, prompt_toolkit")
        print(f"{'bare start: import typer, rich, prompt_toolkit':<48} {base * 1000:8.1f} ms")
        time_to_prompt(env)  # warm-up
        times = [time_to_prompt(env) for _ in range(RUNS)]
        print(f"{'':<48} runs: {', '.join(f'{t * 1000:.0f}' for t in times)} ms")
        report("`chatcli new` until the prompt (pty)", statistics.median(times), base, 2.0)


if __name__ == "__main__":
    main()
