"""One reply on screen while it streams: thinking dimmed and apart, the answer as Markdown, the
model's tool calls between them, and a mark on a reply that did not end normally."""

from __future__ import annotations

from typing import Any

from .. import llm
from ..mdstream import MarkdownStream
from ..render import Terminal, Waiting, print_error, print_note, print_styled, sanitize
from ..store import message_text

# finish reasons that end a reply early, and what the user is told (stderr when piped)
CUT_REPLY = "the reply was cut at the token limit{limit}: /retry, or raise max_tokens"
BROKEN_REPLY = "the reply broke off before it finished; what arrived is saved"


class ReplyView:
    """Shows the events of one ``llm.Turn``; ``broke`` says whether the reply broke off."""

    def __init__(self, term: Terminal, *, theme: str, show_thinking: bool, max_tokens: Any) -> None:
        self.out, self.err = term.out, term.err
        self._theme = theme
        self._show_thinking = show_thinking and self.out.is_terminal
        self._max_tokens = max_tokens
        self._stream = MarkdownStream(self.out, code_theme=theme)
        self._waiting = Waiting(self.out)
        self._thinking = False  # thinking is on screen and the answer has not begun
        self.broke = False

    def __enter__(self) -> ReplyView:
        self._waiting.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._waiting.stop()
        self._end_thinking()
        self._stream.close()

    def before_tool(self) -> None:
        """The model's words before its tool call belong above the query and its table."""
        self._waiting.stop()
        self._end_thinking()
        self._stream.close()

    def show(self, event: llm.Event) -> None:
        self._waiting.stop()
        if isinstance(event, llm.ThinkingDelta):
            if self._show_thinking:
                if not self._thinking:
                    print_styled(self.out, ("thinking…", "dim bold"))
                    self._thinking = True
                self.out.print(
                    sanitize(event.text), style="dim italic", end="", markup=False, highlight=False
                )
        elif isinstance(event, llm.TextDelta):
            self._end_thinking()
            self._stream.feed(event.text)
        elif isinstance(event, llm.Saved):
            self._saved(event)
        elif isinstance(event, llm.Note):
            print_note(self.err, event.text)

    def _saved(self, event: llm.Saved) -> None:
        self._end_thinking()
        self._stream.close()
        self._stream = MarkdownStream(self.out, code_theme=self._theme)
        if not event.final:
            self._waiting.start()  # the model's next round
            return
        error, note = final_words(event, self._max_tokens)
        self.broke = self.broke or error is not None
        if error:
            print_error(self.err, error)
        if note:
            print_note(self.err, note)

    def _end_thinking(self) -> None:
        if self._thinking:
            self.out.print()
            self.out.print()
            self._thinking = False


def final_words(event: llm.Saved, max_tokens: Any) -> tuple[str | None, str | None]:
    """(error, note) for the end of a reply: an error when it broke off, a note when it was cut
    at the token limit or came back empty (the same words on a terminal and in a pipe)."""
    last = event.messages[-1]
    if event.finish_reason == "incomplete":
        return BROKEN_REPLY, None
    if event.finish_reason == "length":
        return None, cut_note(max_tokens)
    if not message_text(last) and not has_thinking(last):
        return None, "(the model sent an empty reply)"
    return None, None


def cut_note(max_tokens: Any) -> str:
    return "(" + CUT_REPLY.format(limit=f" (max_tokens {max_tokens})" if max_tokens else "") + ")"


def has_thinking(message: dict[str, Any]) -> bool:
    extra = message.get("data", {}).get("additional_kwargs")
    return isinstance(extra, dict) and bool(extra.get(llm.REASONING))
