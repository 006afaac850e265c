"""Issue 7 speed target: `chatcli search WORD` over 10,000 sessions / 200,000 messages.

Warm searches (search.sqlite built and current) against a bare `python -c "import typer, rich"`,
target <= 2x; plus the first search, which builds the index from nothing.

Run: python bench/search_bench.py   (shares bench/.data/list-10k with list_bench.py)
"""

from __future__ import annotations

import os
import time

from common import CHATCLI, bare_start, build_root, byte_compile, env_for, report, wall

RARE = "4242"  # in the 20 messages of one conversation only
COMMON = "lorem"  # in all 200,000 messages


def main() -> None:
    root = build_root("list-10k", sessions=10_000, per_session=20)
    env = env_for(root)
    index = root / "search.sqlite"
    byte_compile()

    def forget() -> None:
        for suffix in ("", "-wal", "-shm"):
            index.with_name(index.name + suffix).unlink(missing_ok=True)

    base = bare_start("typer, rich")
    print(f"{'bare start: python -c import typer, rich':<48} {base * 1000:8.1f} ms")

    cold = wall([CHATCLI, "search", RARE], env=env, runs=1, setup=forget)
    print(
        f"{'first `chatcli search` (builds search.sqlite)':<48} {cold * 1000:8.1f} ms"
        f"  ({index.stat().st_size / 1e6:.0f} MB index)"
    )
    report(
        f"warm `chatcli search {RARE}` (1 session)",
        wall([CHATCLI, "search", RARE], env=env),
        base,
        2,
    )
    report(
        f"warm `chatcli search {COMMON}` (every message)",
        wall([CHATCLI, "search", COMMON], env=env),
        base,
        2,
    )
    report(
        f"warm `chatcli search --json {COMMON}`",
        wall([CHATCLI, "search", "--json", COMMON], env=env),
        base,
        2,
    )
    # After any save memory/'s mtime moves, and the next search stats all 10,000 files once.
    touched = wall(
        [CHATCLI, "search", RARE],
        env=env,
        setup=lambda: os.utime(root / "memory", ns=(time.time_ns() - 10**10,) * 2),
    )
    # Not a warm search: the first one after a save re-checks every file (no target; shown so a
    # regression there is visible).
    label = f"`chatcli search {RARE}` after memory/ changed"
    print(f"{label:<48} {touched * 1000:8.1f} ms  {touched / base:5.2f}x  (first after a save)")


if __name__ == "__main__":
    main()
