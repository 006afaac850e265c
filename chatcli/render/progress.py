"""Transient status on a terminal: the spinner while waiting, the bar of a long import."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .terminal import sanitize

# Rich's modules are imported where they are used: `chatcli list` piped to a file must not pay
# ~40 ms for rich.markdown (and pygments, markdown-it) that it never uses, nor ~50 ms for a
# Console it never prints through.
if TYPE_CHECKING:
    from rich.console import Console


class Waiting:
    """A transient spinner line while nothing has arrived yet (a terminal only): a slow server
    or the first LangChain import must not look like a hang."""

    def __init__(self, console: Console, text: str = "waiting for the model…") -> None:
        self.console = console
        self.text = text
        self._status: Any = None

    def start(self) -> None:
        if self.console.is_terminal and self._status is None:
            from rich.text import Text

            self._status = self.console.status(Text(self.text, style="dim"))
            self._status.start()

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


class ImportProgress:
    """A progress bar on a console for an import that has taken more than `delay` seconds (a
    terminal only: nothing at all otherwise). Use it as a context manager and give it as the
    import's progress callback: ``bar(bytes_done, bytes_total)``."""

    def __init__(self, console: Console, label: str = "importing", *, delay: float = 1.0) -> None:
        self.console = console
        self.label = label
        self.delay = delay
        self._start = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ImportProgress:
        self._start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()  # transient: the bar goes, what is printed next takes its line
            self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if not self.console.is_terminal or time.monotonic() - self._start < self.delay:
                return
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                # a file name, not markup: "sales[/x].csv" would raise, "[bold]" style
                TextColumn("{task.description}", style="dim", markup=False),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(sanitize(self.label), total=max(total, 1))
        self._bar.update(self._task, completed=done, total=max(total, 1))
