"""Streamed Markdown at linear cost: finished blocks are printed once, only the unfinished tail
stays live (re-rendering the whole reply on every chunk, as ``Live(Markdown(text))`` does, is
quadratic in the reply's length).

On a console that is not a terminal the chunks are written through as they come (sanitized), so
scripts see exactly what the model said.
"""

from __future__ import annotations

import copy
import functools
import re
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .render import sanitize, write_plain

# Rich's modules are imported where they are used, as in render.py.
if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live
    from rich.markdown import Markdown
    from rich.segment import Segment

__all__ = ["MarkdownStream"]

# Block-structure probes, applied to complete lines only.  They are deliberately loose:
# a false "list" or "continuation" only delays a commit, it never changes the rendering.
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_LIST_ITEM = re.compile(r"^ {0,3}(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*\S")  # [label]: url
_TABLE_DELIMITER = re.compile(r"^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")

# CommonMark HTML blocks (as markdown-it parses them): inside one nothing is Markdown, so
# a fence or heading there must not be acted on.  (start, end or None when a blank line
# ends it, whether it may interrupt a paragraph).
_HTML_BLOCK_NAMES = (
    "address|article|aside|base|basefont|blockquote|body|caption|center|col|colgroup|dd|"
    "details|dialog|dir|div|dl|dt|fieldset|figcaption|figure|footer|form|frame|frameset|"
    "h[1-6]|head|header|hr|html|iframe|legend|li|link|main|menu|menuitem|nav|noframes|ol|"
    "optgroup|option|p|param|search|section|summary|table|tbody|td|tfoot|th|thead|title|tr|"
    "track|ul"
)
_HTML_ATTRIBUTE = (
    r"""(?:\s+[a-zA-Z_:][a-zA-Z0-9:._-]*(?:\s*=\s*(?:[^"'=<>`\x00-\x20]+|'[^']*'|"[^"]*"))?)"""
)
_HTML_BLOCKS: list[tuple[re.Pattern[str], re.Pattern[str] | None, bool]] = [
    (
        re.compile(r"<(?:script|pre|style|textarea)(?:\s|>|$)", re.IGNORECASE),
        re.compile(r"</(?:script|pre|style|textarea)>", re.IGNORECASE),
        True,
    ),
    (re.compile(r"<!--"), re.compile(r"-->"), True),
    (re.compile(r"<\?"), re.compile(r"\?>"), True),
    (re.compile(r"<![A-Za-z]"), re.compile(r">"), True),
    (re.compile(r"<!\[CDATA\["), re.compile(r"\]\]>"), True),
    (re.compile(rf"</?(?:{_HTML_BLOCK_NAMES})(?:\s|/?>|$)", re.IGNORECASE), None, True),
    (
        re.compile(
            rf"(?:<[A-Za-z][A-Za-z0-9-]*{_HTML_ATTRIBUTE}*\s*/?>|</[A-Za-z][A-Za-z0-9-]*\s*>)\s*$"
        ),
        None,
        False,
    ),
]


def _indent(line: str) -> int:
    stripped = line.lstrip(" \t")
    return len(line[: len(line) - len(stripped)].expandtabs(4))


# Rich decides the blank line before a top-level element from the element closed just
# before it, nested ones included, and starts every document with "no blank line".  An
# HTML comment renders nothing but leaves that state at "blank line", so prefixing it to a
# block makes the block render exactly as it would in the middle of the whole message.
_SPACER = "<!-- -->\n\n"


@functools.cache
def _parser() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt().enable("strikethrough").enable("table")  # as Rich configures its own


@functools.cache
def _template(code_theme: str) -> Markdown:
    from rich.markdown import Markdown

    return Markdown("", code_theme=code_theme)


def markdown(source: str, code_theme: str) -> Markdown:
    """``rich.markdown.Markdown(source, code_theme=...)`` with one shared parser: Rich builds a
    new MarkdownIt for every instance (its rule chains and an HTML renderer that inspects
    itself), a third of what a live redraw costs. The object is a copy of one Rich made, so it
    has whatever attributes this Rich version gives it; only the text and its tokens differ. The
    parser is configured as Rich 15 configures its own (tests/test_render.py compares the
    tokens); rendering keeps its state per call, so copies share nothing that changes."""
    made = copy.copy(_template(code_theme))
    made.markup = source
    made.parsed = _parser().parse(source)
    return made


def _trailing_new_line(markdown: Markdown, spacer: bool) -> bool | None:
    """Rich's blank-line state after the block (None: the block renders nothing at all)."""
    last = None
    for index, token in enumerate(markdown.parsed):
        if token.level == 0 and token.nesting <= 0 and not (spacer and index == 0):
            last = token
    if last is None:
        return None
    kind = last.type[: -len("_close")] + "_open" if last.nesting == -1 else last.type
    from rich.markdown import Markdown, UnknownElement

    return bool(getattr(Markdown.elements.get(kind, UnknownElement), "new_line", True))


class _TailView:
    """The Live renderable: the unfinished tail, rendered lazily and cached per version."""

    def __init__(self, stream: MarkdownStream) -> None:
        self._stream = stream
        self._cache: tuple[tuple[int, int, int], list[list[Segment]]] | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        version, source = self._stream._tail_snapshot()
        height = max(1, options.size.height - 1)  # keep a row for the cursor
        key = (version, options.max_width, height)
        cache = self._cache
        if cache is None or cache[0] != key:  # e.g. a commit re-renders an unchanged tail
            lines: list[list[Segment]] = []
            if source.strip():
                rendered = markdown(source, self._stream.code_theme)
                lines = console.render_lines(rendered, options.update(height=None), pad=False)
                # Never taller than the screen: a Live taller than the terminal cannot be
                # erased, and the newest lines are the ones worth seeing.
                lines = lines[-height:]
            cache = (key, lines)
            self._cache = cache
        from rich.segment import Segment

        newline = Segment.line()
        for line in cache[1]:
            yield from line
            yield newline


class MarkdownStream:
    """Render a streamed reply as Markdown at linear cost.

    Finished blocks (text up to a blank line outside fenced code, a closed fence, a
    heading) are rendered and printed once; only the unfinished tail lives in a transient
    ``Live`` that is redrawn at most 8 times a second (from feed(), so a chunk that lands
    just after a redraw shows with the next chunk), and at most one screenful of it is
    rendered however long it grows.  Loose lists are committed only when a non-list block
    follows, so numbering and nesting survive.  On a non-terminal console the chunks are
    written through unchanged (sanitized) and flushed.
    """

    refresh_per_second = 8

    def __init__(self, console: Console, *, code_theme: str = "monokai") -> None:
        self.console = console
        self.code_theme = code_theme
        self._terminal = console.is_terminal
        self._raw: list[str] = []  # exactly what was fed, for .text / close()
        self._raw_cache: str | None = None
        self._shown: list[str] = []  # sanitized; offsets below count in this text
        self._committed = 0  # chars of the sanitized text printed for good
        self._closed = False
        self._live: Live | None = None
        self._last_refresh = float("-inf")  # monotonic() time of the last tail redraw
        self._after_newline = False  # Rich's blank-line state after the last printed block
        self._version = 0  # bumped on every change of the tail
        self._partial: list[str] = []  # the current incomplete line, in pieces
        self._region: list[str] = []  # complete lines of the uncommitted block(s)
        self._region_list = False  # the region contains a top-level list item
        self._last_indented = False  # the region's last line may be indented code
        self._only_references = True  # every line of the region is a "[label]: url"
        self._pending_blank = False  # region (list / indented code) + blank lines
        self._fence: tuple[str, int] | None = None  # open fence: (char, length)
        self._fence_line = ""
        self._in_html = False  # inside an HTML block
        self._html_end: re.Pattern[str] | None = None  # its end marker; None: a blank line
        self._html_line = ""
        self._table_header: int | None = None  # region index of a pipe-table header
        self._references: list[str] = []  # "[label]: url" lines, for blocks printed later

    # ----------------------------------------------------------------- public API

    def __enter__(self) -> MarkdownStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def text(self) -> str:
        """The full text fed so far, unsanitized (what the model actually said)."""
        if self._raw_cache is None:
            self._raw_cache = "".join(self._raw)
            self._raw = [self._raw_cache] if self._raw_cache else []
        return self._raw_cache

    def feed(self, chunk: str) -> None:
        """Add a chunk of the reply and print whatever blocks it completes."""
        if self._closed:
            raise RuntimeError("MarkdownStream.feed() after close()")
        if not chunk:
            return
        self._raw.append(chunk)
        self._raw_cache = None
        safe = sanitize(chunk)
        self._shown.append(safe)
        if not self._terminal:
            write_plain(self.console, safe)
            self._committed += len(safe)
            return
        blocks = self._split(safe)
        self._version += 1
        if self._live is None:
            from rich.live import Live

            self._live = Live(
                _TailView(self),
                console=self.console,
                # No refresh thread: Rich's races with console.print from the main thread
                # (each erases the frame height it last saw, wiping lines of printed text).
                # Everything happens here, in feed(), throttled by the wall clock.
                auto_refresh=False,
                transient=True,  # the tail frame vanishes when its text is printed for real
            )
            self._live.start()
        for block in blocks:
            # Printing above a Live redraws its frame too, from the state after this chunk
            self._print_block(block)
        now = monotonic()
        if blocks:
            self._last_refresh = now
        elif now - self._last_refresh >= 1 / self.refresh_per_second:
            self._live.refresh()
            self._last_refresh = now

    def close(self) -> str:
        """Print everything not yet printed, stop the live display and return the full text.

        Safe after a KeyboardInterrupt in the middle of feed(): the authoritative record is
        the text fed so far, so whatever arrived is printed.
        """
        if self._closed:
            return self.text
        self._closed = True
        shown = "".join(self._shown)
        if not self._terminal:
            if shown and not shown.endswith("\n"):
                write_plain(self.console, "\n")
            return self.text
        self._partial.clear()
        self._region.clear()
        self._fence = None
        self._version += 1
        try:
            rest = shown[self._committed :]
            if rest:
                self._print_block(rest)
        finally:
            if self._live is not None:
                self._live.stop()  # the tail is empty now: the transient frame just goes
                self._live = None
        return self.text

    # ----------------------------------------------------------------- printing

    def _print_block(self, block: str) -> None:
        """Print a finished block for good."""
        if block.strip():
            spacer = bool(self._after_newline)
            # Link reference definitions render nothing but resolve [label] in any block
            refs = "".join(self._references) + "\n" if self._references else ""
            source = refs + _SPACER + block if spacer else refs + block
            rendered = markdown(source, self.code_theme)
            after = _trailing_new_line(rendered, spacer)
            if after is not None:
                self.console.print(rendered)
                self._after_newline = after
        # Advanced only after printing: an interrupted print is repeated by close(), not lost
        self._committed += len(block)

    def _tail_snapshot(self) -> tuple[int, str]:
        """The Markdown source of the live tail, bounded to about one screen."""
        height = max(8, self.console.size.height)
        region = self._region
        if len(region) <= height:
            lines = region
        else:
            start = len(region) - height
            head: list[str] = []
            if self._fence is not None:
                head = [self._fence_line]  # keep rendering the lines as code
            elif self._in_html:
                head = [self._html_line]  # keep them hidden, as the HTML block they are
            elif self._table_header is not None and self._table_header < start:
                head = region[self._table_header : self._table_header + 2]
            elif self._region_list:
                # start at an item, not inside one, so indentation is not read as code
                for i in range(start, len(region)):
                    if _LIST_ITEM.match(region[i]):
                        start = i
                        break
            lines = head + region[start:]
        partial = "".join(self._partial)[-(height * self.console.width) :]
        return self._version, "".join(lines) + partial

    # ----------------------------------------------------------------- block splitting

    def _split(self, chunk: str) -> list[str]:
        """Consume a sanitized chunk; return the blocks it completes, in order."""
        blocks: list[str] = []
        start = 0
        while True:
            end = chunk.find("\n", start)
            if end < 0:
                if start < len(chunk):
                    self._partial.append(chunk[start:])
                return blocks
            piece = chunk[start : end + 1]
            if self._partial:
                self._partial.append(piece)
                piece = "".join(self._partial)
                self._partial.clear()
            self._line(piece, blocks)
            start = end + 1

    def _commit(self, blocks: list[str]) -> None:
        if self._region:
            blocks.append("".join(self._region))
        self._region = []
        self._region_list = self._last_indented = self._pending_blank = False
        self._only_references = True
        self._table_header = None

    def _line(self, line: str, blocks: list[str]) -> None:
        """Feed one complete line (with its newline) to the block state machine."""
        if self._fence is not None:
            self._region.append(line)
            char, length = self._fence
            closing = line.strip()
            if _indent(line) < 4 and len(closing) >= length and closing == char * len(closing):
                self._fence = None
                if not self._region_list:  # a fence inside a list item belongs to the list
                    self._commit(blocks)
            return

        if self._in_html:
            if self._html_end is not None:
                self._region.append(line)
                self._in_html = self._html_end.search(line) is None
                return
            if line.strip():
                self._region.append(line)
                return
            self._in_html = False  # ended by this blank line, handled below

        if not line.strip():
            if not self._region:
                blocks.append(line)  # stray blank line: nothing to render, just consumed
            elif self._region_list or self._last_indented:
                # Only the next line can tell whether the list / code block goes on
                self._region.append(line)
                self._pending_blank = True
            else:
                # A blank line ends paragraphs, tables, quotes and headings for good
                self._region.append(line)
                self._commit(blocks)
            return

        indent = _indent(line)
        is_item = indent < 4 and _LIST_ITEM.match(line) is not None
        if self._pending_blank:
            self._pending_blank = False
            continues = (self._region_list and (indent > 0 or is_item)) or (
                self._last_indented and indent >= 4
            )
            if not continues:
                self._commit(blocks)

        if indent < 4 and line.lstrip(" ").startswith("<") and self._html_block(line):
            return

        fence = _FENCE_OPEN.match(line)
        if fence and fence.group(1)[0] == "`" and "`" in fence.group(2):
            fence = None  # a backtick fence's info string cannot contain backticks
        if not self._region_list:
            if fence:
                self._commit(blocks)  # a fence interrupts a paragraph: that block is done
            elif _HEADING.match(line):
                # A heading is a whole block in one line
                self._commit(blocks)
                blocks.append(line)
                return

        self._region.append(line)
        # Over-approximated (a lazy paragraph line may be indented too): harmless
        self._last_indented = indent >= 4
        if is_item:
            self._region_list = True
        if self._only_references and _REFERENCE.match(line):
            # only where a definition can stand: it cannot interrupt a paragraph
            self._references.append(line)
        else:
            self._only_references = False
        if fence:
            self._fence = (fence.group(1)[0], len(fence.group(1)))
            self._fence_line = line
        elif (
            "|" in line
            and len(self._region) >= 2
            and "|" in self._region[-2]
            and _TABLE_DELIMITER.match(line)
        ):
            self._table_header = len(self._region) - 2

    def _html_block(self, line: str) -> bool:
        """Start an HTML block at this line if it opens one; True when it did."""
        text = line.lstrip(" ").rstrip("\n")
        for start, end, interrupts in _HTML_BLOCKS:
            if start.match(text):
                if not (interrupts or not self._region):
                    return False  # this kind cannot interrupt a paragraph
                self._region.append(line)
                self._last_indented = self._only_references = False
                self._in_html = end is None or end.search(text) is None
                self._html_end = end
                self._html_line = line
                return True
        return False
