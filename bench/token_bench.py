"""Issue 11: what chatcli costs per streamed token against a real llama-server, next to llm.

On a machine where the model shares the CPU, every millisecond the client burns per token slows
the model. Side by side in one run, against one real llama-server (tests/llama_server.py builds
it) that always generates exactly N tokens (``--ignore-eos``):
- client CPU per streamed token, piped and rendering in a terminal (a pty): the CPU of a
  256-token turn minus that of a 1-token turn, over 255 — start-up cancels out;
- a 256-token turn's wall time next to ``curl -N`` streaming the same request.

Run: python bench/token_bench.py [--runs N]   (llm from ``python bench/peers.py --setup``)
"""

from __future__ import annotations

import json
import os
import pty
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CHATCLI, DATA

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import llama_server  # noqa: E402
from realserver import LlamaServer  # noqa: E402

TOKENS = 256
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 3
PROMPT = "Write a long story about a lighthouse keeper."


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], env: dict[str, str], *, stdin: str, tty: bool) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run; stdout/stderr a pty when ``tty``."""
    before, start = _child_cpu(), time.perf_counter()
    if not tty:
        subprocess.run(cmd, env=env, input=stdin, text=True, capture_output=True, check=False)
        return _child_cpu() - before, time.perf_counter() - start
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cmd, env={**env, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40"},
        stdin=subprocess.PIPE, stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    assert proc.stdin is not None
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    while True:  # drain the terminal, as a terminal would
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                if not os.read(master, 65536):
                    break
            except OSError:
                break
        elif proc.poll() is not None:
            break
    proc.wait()
    os.close(master)
    return _child_cpu() - before, time.perf_counter() - start


def per_token(cmd_for: dict[int, list[str]], env: dict[str, str], stdin: str, tty: bool) -> float:
    """Median CPU ms per token: (CPU at TOKENS - CPU at 1) / (TOKENS - 1)."""
    cpu = {n: [] for n in cmd_for}
    for _ in range(RUNS):
        for n, cmd in cmd_for.items():
            cpu[n].append(run(cmd, env, stdin=stdin, tty=tty)[0])
    return (statistics.median(cpu[TOKENS]) - statistics.median(cpu[1])) / (TOKENS - 1) * 1000


def main() -> None:
    llama_server.ensure()
    llm = DATA / "peers-llm" / "bin" / "llm"
    with LlamaServer(ctx=2048, n_predict=TOKENS, extra=["--ignore-eos"]) as srv, \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHATCLI_"))}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # users' Pythons cache bytecode
        env.update(OPENAI_API_KEY="sk-local", OPENAI_BASE_URL=srv.base_url,
                   CHATCLI_STORAGE=f"{tmp}/store", CHATCLI_CONFIG=f"{tmp}/none.toml",
                   CHATCLI_TIMEOUT="300", LLM_USER_PATH=f"{tmp}/llm",
                   # this process's own CPU is measured: no warm helper doing the work for it
                   CHATCLI_HELPER="0")  # fmt: skip
        Path(f"{tmp}/llm").mkdir()
        Path(f"{tmp}/llm/extra-openai-models.yaml").write_text(
            f'- model_id: local\n  model_name: local\n  api_base: "{srv.base_url}"\n'
        )
        chat = {n: [CHATCLI, "new"] for n in (1, TOKENS)}
        chat_env = {n: {**env, "CHATCLI_MAX_TOKENS": str(n)} for n in (1, TOKENS)}
        results: dict[str, float] = {}
        for tty in (False, True):
            label = "terminal" if tty else "piped"
            # chatcli: max_tokens from the environment, so one env per size
            cpu = {n: [] for n in (1, TOKENS)}
            for _ in range(RUNS):
                for n in (1, TOKENS):
                    cpu[n].append(run(chat[n], chat_env[n], stdin=PROMPT + "\n", tty=tty)[0])
            results[f"chatcli {label}"] = (
                (statistics.median(cpu[TOKENS]) - statistics.median(cpu[1])) / (TOKENS - 1) * 1000
            )
            if llm.exists():
                cmds = {n: [str(llm), "-m", "local", "-o", "max_tokens", str(n), PROMPT]
                        for n in (1, TOKENS)}  # fmt: skip
                results[f"llm {label}"] = per_token(cmds, env, "", tty)
        body = json.dumps({"messages": [{"role": "user", "content": PROMPT}], "stream": True,
                           "max_tokens": TOKENS})  # fmt: skip
        curl = ["curl", "-sN", f"{srv.base_url}/chat/completions", "-d", body]
        walls = {"curl -N": [], "chatcli piped": []}
        for _ in range(RUNS):
            walls["curl -N"].append(run(curl, env, stdin="", tty=False)[1])
            walls["chatcli piped"].append(
                run(chat[TOKENS], chat_env[TOKENS], stdin=PROMPT + "\n", tty=False)[1]
            )
    print(f"client CPU per streamed token ({TOKENS} vs 1 token, median of {RUNS}):")
    for label, ms in results.items():
        print(f"  {label:18} {ms:6.3f} ms/token")
    for label in ("piped", "terminal"):
        if f"llm {label}" in results:
            ratio = results[f"chatcli {label}"] / results[f"llm {label}"]
            print(f"  chatcli / llm, {label}: {ratio:.2f}x  (goal <= 1)")
    if not llm.exists():
        print("  (llm not found: python bench/peers.py --setup)")
    c, k = statistics.median(walls["chatcli piped"]), statistics.median(walls["curl -N"])
    print(f"{TOKENS}-token turn wall time: chatcli {c:.2f} s, curl -N {k:.2f} s: {c / k:.2f}x")
    if not shutil.which("curl"):
        print("  (curl not found)")


if __name__ == "__main__":
    main()
