"""Tests for chatcli.render: streamed Markdown, helpers and terminal safety."""

from __future__ import annotations

import random
import re

import pytest
from conftest import console_output, pipe_console, terminal_console
from rich.console import Console
from rich.markdown import Markdown

from chatcli import mdstream
from chatcli.mdstream import MarkdownStream
from chatcli.render import (
    Terminal,
    print_error,
    print_markdown,
    print_note,
    print_table,
    sanitize,
    shorten,
)

DOC = """\
# Release notes

Intro paragraph with **bold**, `inline code` and a [link](https://example.com).
It continues on a second line.

1. first item

2. second item
   with a continuation line

3. third item

- apple
- banana
  - nested cherry

```python
def answer():

    return 42
```

| name  | value |
|-------|------:|
| alpha |     1 |
| beta  |    22 |

---

> a quote
> spanning lines

    indented code

    more indented code
Closing words.
## Second heading
~~~
tilde fence with ``` inside

still code
~~~
The end.
"""

_TOKEN = re.compile(
    r"\x1b\[([0-9;?]*)([A-Za-z])"  # CSI: styles, cursor movement, erase
    r"|\x1b\]8;[^\x1b\x07]*(?:\x1b\\|\x07)"  # OSC 8 hyperlink
    r"|\n|\r|[^\x1b\n\r]+"
)


def screen(raw: str) -> str:
    """What a terminal shows after `raw`: interprets the codes Live uses to erase frames."""
    lines, row, col = [""], 0, 0
    end = 0
    for match in _TOKEN.finditer(raw):
        assert match.start() == end, f"unexpected escape sequence: {raw[end : end + 20]!r}"
        end = match.end()
        token = match.group(0)
        if token == "\n":
            row, col = row + 1, 0
            while len(lines) <= row:
                lines.append("")
        elif token == "\r":
            col = 0
        elif token.startswith("\x1b["):
            arg, command = match.group(1), match.group(2)
            if command == "A":
                row = max(0, row - int(arg or 1))
            elif command == "K":
                lines[row] = ""
            else:
                assert command in "mhl", token  # styles and cursor show/hide
        elif not token.startswith("\x1b]"):
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    assert end == len(raw), f"unexpected escape sequence: {raw[end : end + 20]!r}"
    return "\n".join(line.rstrip() for line in lines).rstrip("\n")


def rendered_whole(text: str, width: int = 80) -> str:
    console = terminal_console(width=width)
    console.print(Markdown(text))
    return screen(console_output(console))


def stream(console: Console, parts: list[str]) -> str:
    with MarkdownStream(console) as md:
        for part in parts:
            md.feed(part)
    return md.text


def split_every(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def split_random(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    parts, i = [], 0
    while i < len(text):
        n = rng.randint(1, 20)
        parts.append(text[i : i + n])
        i += n
    return parts


# --------------------------------------------------------------------------- sanitize


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("\x1b[31mred\x1b[0m", "\u241b[31mred\u241b[0m"),
        ("bell\x07", "bell\u2407"),
        ("back\bspace", "back\u2408space"),
        ("carriage\rreturn", "carriage\u240dreturn"),
        ("nul\x00", "nul\u2400"),
        ("del\x7f", "del\u2421"),
        ("csi\x9b31m", "csi\\x9b31m"),
        ("c1\x80\x9f", "c1\\x80\\x9f"),
        ("\x1b]8;;http://evil\x1b\\", "\u241b]8;;http://evil\u241b\\"),
    ],
)
def test_sanitize_replaces_controls(raw: str, safe: str) -> None:
    assert sanitize(raw) == safe


@pytest.mark.parametrize(
    "text",
    [
        "plain ascii, tabs\tand\nnewlines\n",
        "emoji 🎉👍🏽 and ZWJ 👩‍💻",
        "CJK 漢字かなカナ 한국어",
        "RTL עברית العربية",
        "latin-1 é ß ÿ \u00a0 and \u00ad",
        "",
    ],
)
def test_sanitize_keeps_safe_text(text: str) -> None:
    assert sanitize(text) == text


def test_sanitize_leaves_no_control_characters() -> None:
    every = "".join(chr(c) for c in range(0x200))
    safe = sanitize(every)
    controls = {chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]} - {"\n", "\t"}
    assert not controls & set(safe)


# --------------------------------------------------------------------------- plain stream


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_plain_stream_is_the_input_exactly(size: int) -> None:
    console = pipe_console()
    text = stream(console, split_every(DOC, size))
    assert text == DOC
    assert console_output(console) == DOC


def test_plain_stream_adds_final_newline_only_when_missing() -> None:
    console = pipe_console()
    assert stream(console, ["no newline", " at end"]) == "no newline at end"
    assert console_output(console) == "no newline at end\n"

    console = pipe_console()
    stream(console, [])
    assert console_output(console) == ""


def test_plain_stream_writes_each_chunk_through_immediately() -> None:
    console = pipe_console()
    md = MarkdownStream(console)
    md.feed("# Hea")
    assert console_output(console) == "# Hea"
    md.feed("ding\n")
    assert console_output(console) == "# Heading\n"
    assert md.close() == "# Heading\n"


def test_plain_stream_neutralises_escapes_but_text_is_raw() -> None:
    console = pipe_console()
    raw = "say \x1b[31mINJECTED\x1b[0m\x07 done\n"
    assert stream(console, split_every(raw, 2)) == raw
    assert "\x1b" not in console_output(console)
    assert "\x07" not in console_output(console)
    assert console_output(console) == "say \u241b[31mINJECTED\u241b[0m\u2407 done\n"


# --------------------------------------------------------------------------- terminal stream


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([DOC], id="whole"),
        pytest.param(split_every(DOC, 1), id="one-char"),
        pytest.param(split_every(DOC, 2), id="two-chars"),
        pytest.param(split_every(DOC, 7), id="seven-chars"),
        pytest.param(split_random(DOC, 1), id="random-1"),
        pytest.param(split_random(DOC, 2), id="random-2"),
        pytest.param(DOC.splitlines(keepends=True), id="lines"),
    ],
)
def test_terminal_stream_looks_like_the_whole_message(parts: list[str]) -> None:
    console = terminal_console()
    assert stream(console, parts) == DOC
    assert screen(console_output(console)) == rendered_whole(DOC)


def test_terminal_stream_renders_the_markdown() -> None:
    console = terminal_console()
    stream(console, split_random(DOC, 3))
    shown = screen(console_output(console))
    assert "Release notes" in shown and "# Release" not in shown  # heading, not source
    assert "Second heading" in shown and "## Second" not in shown
    assert "def answer():" in shown and "return 42" in shown
    assert "```python" not in shown  # the fence became a code block
    assert "• apple" in shown and "• nested cherry" in shown
    assert "tilde fence with ``` inside" in shown
    # the pipe table is a table: no pipes left, header rule drawn
    assert "|" not in shown
    assert re.search(r"name\s+value", shown)
    assert "─" in shown
    assert re.search(r"alpha\s+1", shown) and re.search(r"beta\s+22", shown)


def test_loose_ordered_list_keeps_its_numbering() -> None:
    text = "Steps:\n\n1. one\n\n2. two\n\n3. three\n\nDone.\n"
    for parts in (split_every(text, 1), split_every(text, 5), [text]):
        console = terminal_console()
        stream(console, parts)
        shown = screen(console_output(console))
        numbers = re.findall(r"^\s*(\d+)\s+(one|two|three)", shown, re.MULTILINE)
        assert numbers == [("1", "one"), ("2", "two"), ("3", "three")]
        assert shown == rendered_whole(text)


TRICKY = {
    "fence-in-list-item": "1. a\n   ```py\n   x = 1\n\n   y = 2\n   ```\n2. b\n\nafter\n",
    "list-item-paragraphs": "- x\n\n  para in x\n\n- y\n\n      code in y\n\nout\n",
    "nested-loose-ordered": "10. ten\n11. eleven\n    1. one\n\n    2. two\n\n12. twelve\n",
    "lists-joined-by-blanks": "- a\n\n\n- b\n\n+ other bullet\n",
    "longer-fence": "````md\n```\ninner\n```\n\n````\ntext\n",
    "tilde-fence": "~~~\n```\n\n~~~\n",
    "unclosed-fence": "intro\n```python\nx = 1\n\ny = 2\n",
    "indented-code": "para\n\n    code 1\n\n\n    code 2\nafter\n",
    "html-comment": "<!--\nhidden\n\n# not a heading\n-->\n\nshown\n",
    "html-details": "<details>\n<summary>More</summary>\n```\nx\n\ny\n```\n</details>\n\nz\n",
    "setext": "Title\n=====\nSub\n---\ntext\n",
    "hr-spacing": "a\n\n---\n\nb\n\n***\n- c\n",
    "reference-link": "[docs]: https://example.com\n\nSee [docs] and [the docs][docs].\n",
    "table-no-outer-pipes": "a | b\n--|--:\n1 | 2\n\nafter\n",
    "quote-with-list": "> - a\n>\n> - b\n\n> again\n",
    "heading-run": "# A\n## B\ntext\n### C\n",
}


@pytest.mark.parametrize("text", TRICKY.values(), ids=TRICKY.keys())
def test_tricky_markdown_streams_like_the_whole(text: str) -> None:
    for parts in (split_every(text, 1), split_random(text, 5), [text]):
        console = terminal_console()
        stream(console, parts)
        assert screen(console_output(console)) == rendered_whole(text)


def test_table_stays_one_block_when_streamed_row_by_row() -> None:
    rows = "".join(f"| r{i} | {i * i} |\n" for i in range(30))
    text = f"Table:\n\n| key | square |\n|-----|-------:|\n{rows}\nAfter.\n"
    console = terminal_console()
    stream(console, text.splitlines(keepends=True))
    shown = screen(console_output(console))
    assert shown == rendered_whole(text)
    assert shown.count("key") == 1  # one header: the table was not split


def test_terminal_output_never_carries_escapes_from_the_text() -> None:
    text = (
        "# Title \x1b[2J\n\nbody \x1b[31mINJECTED\x1b[0m\x07\n\n```\ncode \x1b]0;pwned\x07\n```\n"
    )
    console = terminal_console("truecolor")
    stream(console, split_every(text, 3))
    raw = console_output(console)
    assert "\x1b[31mINJECTED" not in raw
    assert "\x1b[2J" not in raw and "\x1b]0;" not in raw and "\x07" not in raw
    assert "\u241b[31mINJECTED" in screen(raw)
    assert "\u241b]0;pwned\u2407" in screen(raw)


def test_close_after_partial_feed_prints_what_arrived() -> None:
    console = terminal_console()
    md = MarkdownStream(console)
    md.feed("# Head\n\nsome par")
    md.feed("tial text and ```unfinished")
    assert md.close() == "# Head\n\nsome partial text and ```unfinished"
    shown = screen(console_output(console))
    assert "Head" in shown and "some partial text" in shown
    assert md.close() == md.text  # idempotent, prints nothing more
    assert screen(console_output(console)) == shown
    with pytest.raises(RuntimeError):
        md.feed("more")


def test_keyboard_interrupt_mid_stream_loses_nothing() -> None:
    console = terminal_console()
    text = "Para one.\n\nPara two\n\n- item\n"
    with pytest.raises(KeyboardInterrupt), MarkdownStream(console) as md:
        md.feed(text)
        md.feed("and half a")
        raise KeyboardInterrupt
    shown = screen(console_output(console))
    assert shown == rendered_whole(text + "and half a")
    assert console._live_stack == []  # the Live display was stopped


def test_interrupt_inside_feed_is_repaired_by_close(monkeypatch: pytest.MonkeyPatch) -> None:
    console = terminal_console()
    md = MarkdownStream(console)
    original = MarkdownStream._print_block

    def interrupted(self: MarkdownStream, block: str) -> None:
        monkeypatch.setattr(MarkdownStream, "_print_block", original)
        raise KeyboardInterrupt

    monkeypatch.setattr(MarkdownStream, "_print_block", interrupted)
    with pytest.raises(KeyboardInterrupt):
        md.feed(DOC)
    md.close()
    assert screen(console_output(console)) == rendered_whole(DOC)


def test_empty_stream_prints_nothing() -> None:
    console = terminal_console()
    assert stream(console, ["", ""]) == ""
    assert screen(console_output(console)) == ""


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("```python\n" + "".join(f"x_{i} = {i}\n" for i in range(400)), id="code"),
        pytest.param("".join(f"word {i} and more\n" for i in range(400)), id="paragraph"),
        pytest.param(
            "| a | b |\n|---|---|\n" + "".join(f"| {i} | v{i} |\n" for i in range(400)),
            id="table",
        ),
        pytest.param("".join(f"{i + 1}. item {i}\n\n" for i in range(400)), id="loose-list"),
    ],
)
def test_live_tail_is_bounded_to_one_screen(text: str) -> None:
    console = terminal_console()
    height = console.size.height
    md = MarkdownStream(console)
    md.feed(text)
    _, source = md._tail_snapshot()
    assert len(source.splitlines()) <= max(8, height) + 2
    lines = console.render_lines(mdstream._TailView(md), console.options)
    assert 0 < len(lines) < height
    if text.startswith("```"):
        assert source.startswith("```python\n")  # still rendered as code
        assert "x_399 = 399" in "".join(seg.text for line in lines for seg in line)
    if text.startswith("| a"):
        assert source.startswith("| a | b |\n|---|---|\n")  # header kept
    md.close()
    assert screen(console_output(console)) == rendered_whole(text)


def test_live_redraws_are_throttled_by_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    redraws: list[float] = []
    from rich.live import Live

    real_refresh = Live.refresh

    def counting_refresh(live: Live) -> None:
        redraws.append(clock[0])
        real_refresh(live)

    monkeypatch.setattr(mdstream, "monotonic", lambda: clock[0])
    monkeypatch.setattr(Live, "refresh", counting_refresh)
    console = terminal_console()
    md = MarkdownStream(console)
    for _ in range(50):  # 50 chunks in 0.5 s of one unfinished line
        md.feed("word ")
        clock[0] += 0.01
    assert 4 <= len(redraws) <= 6  # 8 a second at most
    assert all(b - a >= 1 / 8 for a, b in zip(redraws, redraws[1:], strict=False))
    clock[0] += 1
    md.feed("late")  # after a pause the next chunk shows at once
    assert redraws[-1] == clock[0]
    md.close()
    assert screen(console_output(console)) == rendered_whole("word " * 50 + "late")


# --------------------------------------------------------------------------- helpers


def test_print_markdown_terminal_and_plain() -> None:
    console = terminal_console()
    print_markdown(console, DOC)
    assert screen(console_output(console)) == rendered_whole(DOC)

    console = pipe_console()
    print_markdown(console, "# Title\nno newline")
    assert console_output(console) == "# Title\nno newline\n"


def test_print_markdown_neutralises_escapes() -> None:
    for console in (terminal_console("truecolor"), pipe_console()):
        print_markdown(console, "hi \x1b[31mINJECTED\x1b[0m")
        assert "\x1b[31mINJECTED" not in console_output(console)
        assert "\u241b[31mINJECTED" in console_output(console)


def test_print_table_plain_is_aligned_text() -> None:
    console = pipe_console()
    print_table(
        console,
        ["id", "name", "score"],
        [(1, "alpha", 3.5), (22, None, 10), (333, "漢字", None)],
        title="Results",
        note="3 rows",
    )
    assert console_output(console) == (
        "Results\n"
        " id  name   score\n"
        "---  -----  -----\n"
        "  1  alpha    3.5\n"
        " 22  NULL      10\n"
        "333  漢字    NULL\n"
        "3 rows\n"
    )


def test_print_table_plain_keeps_rows_on_one_line_and_is_safe() -> None:
    console = pipe_console()
    print_table(console, ["k", "v"], [("a\x1b[31m", "line1\nline2"), ("[red]b[/red]", "\tx")])
    out = console_output(console)
    assert "\x1b" not in out
    assert "\u241b[31m" in out
    assert "line1\u21b5line2" in out
    assert "[red]b[/red]" in out
    assert len(out.splitlines()) == 4


def test_print_table_terminal_is_a_rich_table() -> None:
    console = terminal_console("truecolor")
    print_table(
        console,
        ["id", "name"],
        [(1, "alpha\x1b[31mINJECTED"), (2, "[bold]not markup[/bold]")],
        title="Sessions",
        note="2 sessions",
    )
    raw = console_output(console)
    assert "\x1b[31mINJECTED" not in raw
    shown = screen(raw)
    assert "Sessions" in shown and "2 sessions" in shown
    assert "alpha\u241b[31mINJECTED" in shown
    assert "[bold]not markup[/bold]" in shown
    assert "┃" in shown or "│" in shown  # box drawing: a real table


def test_print_error_is_one_red_line() -> None:
    console = pipe_console()
    print_error(console, "no such session\nabc \x1b[2J")
    assert console_output(console) == "chatcli: error: no such session abc \u241b[2J\n"

    console = terminal_console("standard")
    print_error(console, "boom " + "x" * 100)
    raw = console_output(console)
    assert "\x1b[31m" in raw  # red
    assert screen(raw).count("\n") == 0
    assert screen(raw).startswith("chatcli: error: boom x")


def test_print_note() -> None:
    console = pipe_console()
    print_note(console, "saved \x1b[1m")
    assert console_output(console) == "saved \u241b[1m\n"

    console = terminal_console("standard")
    print_note(console, "dim note")
    assert "\x1b[2m" in console_output(console)
    assert screen(console_output(console)) == "dim note"


def test_the_terminal_context_makes_the_two_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    term = Terminal.from_sys()
    out, err = term.out, term.err
    assert not out.stderr and err.stderr
    assert out.no_color and err.no_color
    for console in (out, err):
        with console.capture() as capture:
            console.print("session 42 at 0x1f")
        assert capture.get() == "session 42 at 0x1f\n"
        assert console._highlight is False


def test_the_in_memory_terminal_keeps_replies_and_errors_apart() -> None:
    term = Terminal.in_memory(terminal=False)
    print_note(term.out, "a reply")
    print_error(term.err, "a failure")
    assert term.stdout.getvalue() == "a reply\n"
    assert term.stderr.getvalue() == "chatcli: error: a failure\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("x" * 100, id="ascii"),
        pytest.param("東京の天気" * 20, id="cjk"),
        pytest.param("a" + "東京" * 50, id="cjk-straddling-the-edge"),
        pytest.param("🎉 party " * 20, id="emoji"),
    ],
)
def test_shorten_counts_terminal_cells_not_characters(text: str) -> None:
    from rich.cells import cell_len

    short = shorten(text, 40)
    assert short.endswith("…")
    assert 39 <= cell_len(short) <= 40  # a wide character that would not fit is left out whole
    assert text.startswith(short[:-1].rstrip())


def test_shorten_leaves_what_fits_and_puts_it_on_one_line() -> None:
    assert shorten("東京\n  の天気", 12) == "東京 の天気"  # 11 cells


# --- the import progress bar -------------------------------------------------------------


@pytest.mark.parametrize("label", ["sales[/x].csv", "[bold]plain[/bold].csv", "a\x1b[31mb.csv"])
def test_import_progress_shows_the_file_name_as_it_is(label):
    """The label is a file name, not Rich markup: brackets neither raise nor style."""
    from chatcli.render import ImportProgress, sanitize

    console = terminal_console(color_system="truecolor", width=120)
    with ImportProgress(console, label, delay=0) as bar:
        bar(5, 10)
    out = console_output(console)
    assert sanitize(label) in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)


def test_shared_parser_markdown_is_richs_own() -> None:
    text = "# T\n\n| a | b |\n|---|---|\n| 1 | ~~2~~ |\n\n- x\n- **y**\n\n```py\nz = 1\n```\n"
    ours = mdstream.markdown(text, "monokai")
    theirs = Markdown(text, code_theme="monokai")
    assert [t.as_dict() for t in ours.parsed] == [t.as_dict() for t in theirs.parsed]
    assert vars(ours).keys() == vars(theirs).keys()
    a, b = terminal_console(width=60), terminal_console(width=60)
    a.print(ours)
    b.print(theirs)
    assert console_output(a) == console_output(b)
    assert mdstream.markdown("other", "monokai").markup == "other"  # copies, not one object
    assert ours.markup == text
