"""Issue 4 speed target: one streamed turn on a 10,000-message session costs about what it costs on
a 20-message one (the history is trimmed before it goes to the model; saving appends).

Each run is a whole piped turn, `echo q | chatcli resume ID`, against the loopback model server
started here; the session file is put back before every run so both stay at their size.

Run: python bench/turn_bench.py
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from common import CHATCLI, DATA, byte_compile, conversation, env_for, report, wall

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_openai import FakeOpenAI  # noqa: E402

REPLY = "Sure. " + "Here is a streamed answer with a few words in it. " * 8
RUNS = 7


def main() -> None:
    byte_compile()
    root = DATA / "turn"
    (root / "memory").mkdir(parents=True, exist_ok=True)
    pristine = {}
    for n in (20, 10_000):
        sid = str(uuid.UUID(int=n, version=4))
        pristine[n] = (root / "memory" / f"{sid}.json", json.dumps(conversation(n)).encode())

    with FakeOpenAI() as server:
        env = env_for(root, OPENAI_API_KEY="unused", OPENAI_BASE_URL=server.base_url)
        times = {}
        for n, (path, data) in pristine.items():

            def setup(path: Path = path, data: bytes = data) -> None:
                path.write_bytes(data)  # every run starts from the same n messages
                server.reply(REPLY)

            before = len(server.requests)
            times[n] = wall(
                [CHATCLI, "resume", path.stem], env=env, stdin="q\n", runs=RUNS, setup=setup
            )
            sent = server.requests[before:]
            assert len(sent) == RUNS + 1, f"{len(sent)} requests for {RUNS + 1} runs"
            saved = json.loads(path.read_bytes())
            assert len(saved) == n + 2 and saved[-1]["data"]["content"] == REPLY, "turn not saved"
            print(
                f"{f'turn on {n:,} messages':<48} {times[n] * 1000:8.1f} ms  "
                f"({len(sent[-1]['messages'])} messages sent to the model)"
            )
        path, data = pristine[10_000]
        path.write_bytes(data)
    report("turn on 10,000 messages (vs 20)", times[10_000], times[20], 1.5)


if __name__ == "__main__":
    main()
