"""Benchmark MarkdownStream: CPU time must grow linearly with the length of the reply.

Streams a realistic 300-line and 3000-line Markdown reply in 4-20 character chunks into a
terminal console (a StringIO forced to be a terminal, so the Live display and its
wall-clock throttling of redraws run exactly as on a real terminal) and prints
the CPU time of each, their ratio (10x is linear; the target is <= 15x) and, for
comparison, the naive ``Live.update(Markdown(whole_text))`` cost for 300 lines.

Run: .venv/bin/python bench/render_bench.py
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable, Iterator

from rich.console import Console, ConsoleOptions
from rich.live import Live
from rich.markdown import Markdown

from chatcli import mdstream
from chatcli.mdstream import MarkdownStream

WORDS = (
    "the query returns rows from each table where the index covers a column value "
    "session memory reply model stream token cursor commit schema join filter sqlite "
    "fast safe every word never lost terminal render block list code paragraph"
).split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] = f"`{rng.choice(WORDS)}()`"
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] = f"**{rng.choice(WORDS)}**"
    return " ".join(words).capitalize() + "."


def _blocks(rng: random.Random) -> Iterator[list[str]]:
    """Yield Markdown blocks (lists of lines) forever, in a plausible mix."""
    section = 0
    while True:
        kind = rng.choice(["para", "para", "para", "bullets", "ordered", "code", "table", "head"])
        if kind == "head":
            section += 1
            yield [f"## {section}. {_sentence(rng)[:40]}"]
        elif kind == "para":
            yield [" ".join(_sentence(rng) for _ in range(2)) for _ in range(rng.randint(1, 4))]
        elif kind == "bullets":
            lines = []
            for _ in range(rng.randint(2, 6)):
                lines.append(f"- {_sentence(rng)}")
                if rng.random() < 0.3:
                    lines.append(f"  - {_sentence(rng)}")
            yield lines
        elif kind == "ordered":
            # a loose list: blank lines between the items
            lines = []
            for n in range(1, rng.randint(3, 6)):
                lines += [f"{n}. {_sentence(rng)}", f"   {_sentence(rng)}", ""]
            yield lines[:-1]
        elif kind == "code":
            lines = ["```python"]
            for i in range(rng.randint(5, 25)):
                if i % 6 == 5:
                    lines.append("")
                else:
                    lines.append(
                        f"    {rng.choice(WORDS)}_{i} = compute({rng.randint(0, 99)})  # x"
                    )
            yield [*lines, "```"]
        else:
            lines = ["| id | name | value | note |", "|---:|------|------:|------|"]
            for i in range(rng.randint(3, 10)):
                lines.append(
                    f"| {i} | {rng.choice(WORDS)} | {rng.random():.3f} | {_sentence(rng)} |"
                )
            yield lines


def make_reply(n_lines: int, seed: int = 1) -> str:
    """A Markdown reply of about n_lines lines (blocks separated by blank lines)."""
    rng = random.Random(seed)
    lines: list[str] = []
    for block in _blocks(rng):
        lines += [*block, ""]
        if len(lines) >= n_lines:
            return "\n".join(lines[:n_lines]) + "\n"
    raise AssertionError("unreachable")


WORST_CASES: dict[str, Callable[[int], str]] = {
    "code block": lambda n: "```python\n" + "".join(f"x_{i} = f({i})  # c\n" for i in range(n)),
    "paragraph": lambda n: "".join(f"word {i} and some more words here\n" for i in range(n)),
    "table": lambda n: "| a | b |\n|---|---|\n" + "".join(f"| {i} | v{i} |\n" for i in range(n)),
    "loose list": lambda n: "".join(f"{i + 1}. item {i}\n\n" for i in range(n // 2)),
}


def chunks(text: str, seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(text):
        n = rng.randint(4, 20)
        out.append(text[i : i + n])
        i += n
    return out


def _console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


def bench_stream(text: str) -> tuple[float, float, int]:
    """Return (CPU seconds, wall seconds, live tail frames drawn)."""
    parts = chunks(text)
    console = _console()
    frames = 0
    draw = mdstream._TailView.__rich_console__

    def counting_draw(view: mdstream._TailView, console: Console, options: ConsoleOptions):
        nonlocal frames
        frames += 1
        return draw(view, console, options)

    mdstream._TailView.__rich_console__ = counting_draw  # type: ignore[method-assign]
    try:
        wall, start = time.perf_counter(), time.process_time()
        with MarkdownStream(console) as stream:
            for part in parts:
                stream.feed(part)
        cpu, wall = time.process_time() - start, time.perf_counter() - wall
    finally:
        mdstream._TailView.__rich_console__ = draw  # type: ignore[method-assign]
    return cpu, wall, frames


def bench_naive(text: str) -> float:
    parts = chunks(text)
    console = _console()
    start = time.process_time()
    shown = ""
    with Live(console=console, refresh_per_second=8, transient=True) as live:
        for part in parts:
            shown += part
            live.update(Markdown(shown))
    console.print(Markdown(shown))
    return time.process_time() - start


def main() -> None:
    short, long = make_reply(300), make_reply(3000)
    bench_stream(short)  # warm up imports, lexers and caches
    t_short, w_short, f_short = bench_stream(short)
    t_long, w_long, f_long = bench_stream(long)
    for name, text, cpu, wall, frames in (
        ("300", short, t_short, w_short, f_short),
        ("3000", long, t_long, w_long, f_long),
    ):
        print(
            f"MarkdownStream {name:>5} lines ({len(text):>7} chars): {cpu:7.3f} s CPU"
            f"  ({wall:.3f} s wall, {frames} tail frames)"
        )
    print(f"ratio 3000/300: {t_long / t_short:5.1f}x  (linear = 10x, target <= 15x)")
    # One block that never ends: only the live tail's screenful may be re-rendered
    for name, make in WORST_CASES.items():
        t_1 = bench_stream(make(300))[0]
        t_2 = bench_stream(make(3000))[0]
        print(f"  single {name:<10} 300: {t_1:6.3f} s  3000: {t_2:6.3f} s  ratio {t_2 / t_1:5.1f}x")
    t_naive = bench_naive(short)
    print(f"naive Live(Markdown(whole))  300 lines: {t_naive:7.3f} s CPU")


if __name__ == "__main__":
    main()
