"""What one message says when it is put together from pieces: piped text, attached files and the
prompt (``chatcli ask``, and ``/file`` in the REPL). Reading a file refuses anything that is not
a small text file before a word is sent."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ChatcliError
from ..store.files import FileTooBig, NotRegularFile, read_regular

MAX_FILE_BYTES = 512 * 1024  # per attached file: more is rarely a question, and fills a context
_SNIFF = 8192  # bytes looked at for a NUL: how git and grep tell binary files from text

# the fence's language, by extension (or whole name): what Markdown renderers highlight
LANGUAGES = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
    ".ts": "typescript", ".tsx": "tsx", ".jsx": "jsx", ".rs": "rust", ".go": "go",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".java": "java",
    ".kt": "kotlin", ".swift": "swift", ".rb": "ruby", ".php": "php", ".cs": "csharp",
    ".sh": "bash", ".bash": "bash", ".zsh": "zsh", ".fish": "fish", ".ps1": "powershell",
    ".md": "markdown", ".rst": "rst", ".json": "json", ".jsonl": "json", ".yaml": "yaml",
    ".yml": "yaml", ".toml": "toml", ".ini": "ini", ".cfg": "ini", ".sql": "sql",
    ".html": "html", ".htm": "html", ".css": "css", ".xml": "xml", ".csv": "csv",
    ".tex": "latex", ".lua": "lua", ".r": "r", ".diff": "diff", ".patch": "diff",
    "Dockerfile": "dockerfile", "Makefile": "makefile",
}  # fmt: skip


@dataclass(frozen=True)
class Attachment:
    """A text file to put into a message: the name it was given by and its text."""

    name: str
    text: str

    @property
    def language(self) -> str:
        path = Path(self.name)
        return LANGUAGES.get(path.name) or LANGUAGES.get(path.suffix.lower(), "")


def read_attachment(path: Path, *, limit: int = MAX_FILE_BYTES) -> Attachment:
    """The file at ``path`` as an Attachment; a folder, a binary file, a file that is not UTF-8
    or one over ``limit`` bytes raises ChatcliError (one line, naming the file)."""
    shown = str(path)
    try:
        data = read_regular(path.expanduser(), limit=limit)
    except FileTooBig:
        size = _size(path)
        raise ChatcliError(
            f"cannot attach {shown}: it is {size} KiB, over the {limit // 1024} KiB limit "
            "for an attached file"
        ) from None
    except NotRegularFile as e:
        raise ChatcliError(f"cannot attach {shown}: it {e.strerror}") from None
    except OSError as e:
        raise ChatcliError(f"cannot attach {shown}: {e.strerror or e}") from None
    if b"\0" in data[:_SNIFF]:
        raise ChatcliError(f"cannot attach {shown}: it is a binary file, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ChatcliError(f"cannot attach {shown}: it is not UTF-8 text") from None
    return Attachment(shown, text.removeprefix("\ufeff"))


def _size(path: Path) -> int:
    try:
        return os.stat(path.expanduser()).st_size // 1024
    except OSError:
        return 0


def fenced(attachment: Attachment) -> str:
    """The file as a Markdown block headed by its name; the fence is longer than any run of
    backticks inside, so the file cannot close it early."""
    text = attachment.text
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") or not text else text + "\n"
    return f"{attachment.name}:\n{fence}{attachment.language}\n{body}{fence}"


def compose(
    prompt: str | None, *, stdin: str | None = None, files: Sequence[Attachment] = ()
) -> str:
    """One message from its pieces, each apart from the next by a blank line: the piped text,
    the attached files, then the prompt (llm's order). Piped text alone is the message as it is.
    Returns "" when there is nothing to ask."""
    if stdin and not stdin.strip():
        stdin = None
    if stdin and not files and not prompt:
        return stdin
    pieces = [stdin.rstrip("\n")] if stdin else []
    pieces += [fenced(a) for a in files]
    if prompt and prompt.strip():
        pieces.append(prompt)
    return "\n\n".join(pieces)
