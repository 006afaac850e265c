"""Issue 13 speed targets: `chatcli ask "hi"` against `llm -m <model> "hi"`, side by side in one
run against the loopback server (tests/fake_openai.py): wall time to the first reply byte and to
the exit, for a first run (no chatcli helper running, and when this runs as root the page cache
dropped before each tool's run: what the first run after a reboot gets) and a second run within a
minute of the first (the warm helper started by the first one answers).

Targets: first run <= 1.5x llm's, second run <= 0.8x llm's (medians of the rounds).

Run: python bench/ask_bench.py [--rounds N]   (llm from `python bench/peers.py --setup`)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CHATCLI, byte_compile, env_for, stop_helper, wait_for_helper
from peers import find

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_openai import FakeOpenAI  # noqa: E402

TARGETS = {"first": 1.5, "second": 0.8}


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first byte on stdout, seconds to the exit) of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    first_at = time.perf_counter() - start
    rest = proc.stdout.read()
    code = proc.wait()
    took = time.perf_counter() - start
    if code != 0 or not (first + rest).startswith(b"echo: hi"):
        raise SystemExit(f"{cmd[0]} failed (exit {code}): {(first + rest)[:200]!r}")
    return first_at, took


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_caches() -> bool:
    """Empty the kernel's page cache (root only), so the next run reads its files from disk."""
    try:
        os.sync()
        DROP_CACHES.write_text("3\n")
        return True
    except OSError:
        return False


def main() -> None:
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 5
    byte_compile()
    exe = find("llm")
    if exe is None:
        raise SystemExit("llm is not installed: run python bench/peers.py --setup")
    with FakeOpenAI() as server, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "chatcli"
        user = Path(tmp) / "llm"
        user.mkdir()
        (user / "extra-openai-models.yaml").write_text(
            f'- model_id: fake\n  model_name: gpt-4o-mini\n  api_base: "{server.base_url}"\n'
        )
        base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        os.environ.clear()
        os.environ.update(base)  # users' Pythons cache bytecode (shared/FACTS.md)
        ours = env_for(
            root,
            OPENAI_API_KEY="sk-bench",
            OPENAI_BASE_URL=server.base_url,
            CHATCLI_MODEL="gpt-4o-mini",
        )
        theirs = {**base, "LLM_USER_PATH": str(user), "OPENAI_API_KEY": "sk-bench"}
        tools = {
            "chatcli": ([CHATCLI, "ask", "hi"], ours),
            "llm": ([str(exe), "-m", "fake", "hi"], theirs),
        }
        timed(*tools["llm"])  # llm makes its logs.db once; chatcli its storage folder
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        warm_misses = 0
        dropped = drop_caches()
        for r in range(rounds):
            stop_helper(root)
            # llm first: the helper that chatcli's first run starts must not slow llm's run
            for name in ("llm", "chatcli"):
                if dropped:
                    drop_caches()
                results.setdefault(("first", name), []).append(timed(*tools[name]))
            if not wait_for_helper(root):
                warm_misses += 1
            for name in list(tools) if r % 2 == 0 else reversed(tools):
                results.setdefault(("second", name), []).append(timed(*tools[name]))
        stop_helper(root)

    cold = "page cache dropped before each first run" if dropped else "page cache kept (not root)"
    print(f"{rounds} rounds; medians (first byte / exit); {cold}\n")
    print(f"{'':<34} {'chatcli':>17} {'llm':>17} {'ratio (exit)':>13}")
    for run, target in TARGETS.items():
        mine = [statistics.median(x) for x in zip(*results[(run, "chatcli")], strict=True)]
        peer = [statistics.median(x) for x in zip(*results[(run, "llm")], strict=True)]
        ratio = mine[1] / peer[1]
        verdict = "ok" if ratio <= target else "OVER TARGET"
        label = "first run (no helper)" if run == "first" else "second run (warm helper)"
        print(
            f"{label:<34} {mine[0] * 1000:6.0f} / {mine[1] * 1000:5.0f} ms"
            f" {peer[0] * 1000:6.0f} / {peer[1] * 1000:5.0f} ms"
            f" {ratio:6.2f}x (first byte {mine[0] / peer[0]:.2f}x; target <= {target}x) {verdict}"
        )
    if warm_misses:
        print(f"note: the helper was not ready within 30 s in {warm_misses} rounds")


if __name__ == "__main__":
    main()
