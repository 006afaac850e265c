"""Issue 3 speed targets: listing 10,000 sessions and opening a 10,000-message session.

Run: python bench/list_bench.py   (builds its data under bench/.data once)
"""

from __future__ import annotations

import json
import uuid

from common import (
    CHATCLI,
    bare_start,
    build_root,
    byte_compile,
    conversation,
    env_for,
    report,
    wall,
)


def main() -> None:
    root = build_root("list-10k", sessions=10_000, per_session=20)
    env = env_for(root)
    index = root / "index.sqlite"
    byte_compile()

    base = bare_start("typer, rich")
    label = 'bare start: python -c "import typer, rich"'
    print(f"{label:<48} {base * 1000:8.1f} ms")

    wall([CHATCLI, "list"], env=env, runs=1)  # make sure the index exists
    report(
        "warm `chatcli list --json` (10,000 sessions)",
        wall([CHATCLI, "list", "--json"], env=env),
        base,
        1.5,
    )
    report("warm `chatcli list` (10,000 sessions)", wall([CHATCLI, "list"], env=env), base, 1.5)
    cold = wall([CHATCLI, "list"], env=env, runs=3, setup=lambda: index.unlink(missing_ok=True))
    report("first `chatcli list` (no index yet)", cold, base, 25)

    big = root.parent / "resume"
    (big / "memory").mkdir(parents=True, exist_ok=True)
    ids = {}
    for n in (20, 10_000):
        sid = ids[n] = str(uuid.UUID(int=n, version=4))
        path = big / "memory" / f"{sid}.json"
        if not path.exists():
            path.write_text(json.dumps(conversation(n)))
    renv = env_for(big, OPENAI_API_KEY="unused")
    small = wall([CHATCLI, "resume", ids[20]], env=renv)
    large = wall([CHATCLI, "resume", ids[10_000]], env=renv)
    print(f"{'resume + exit, 20 messages':<48} {small * 1000:8.1f} ms")
    report("resume + exit, 10,000 messages (vs 20)", large, small, 1.5)


if __name__ == "__main__":
    main()
