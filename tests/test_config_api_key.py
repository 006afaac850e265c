"""An API key that cannot go into an HTTP header is refused before any request, saying what is
wrong with it and never printing it: not "cannot reach the model server", not an encoding error."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_clean_error

from chatcli.errors import ConfigError

SECRET = "sk-live-abcdef123456"


@pytest.mark.parametrize(
    "key, problem",
    [
        (SECRET + "\n", "contains a line break"),
        (SECRET + "\nsecond-line", "contains a line break"),
        (SECRET + "\r", "contains a line break"),
        (SECRET[:6] + "\u2013" + SECRET[6:], "contains non-ASCII characters"),  # an en dash
        ("\u201c" + SECRET + "\u201d", "contains non-ASCII characters"),  # typographic quotes
        ("   ", "is blank"),
        ("\t", "is blank"),
        (SECRET + " ", "begins or ends with a space"),
        (SECRET + "\x01", "contains a control character"),
    ],
)
def test_an_unusable_api_key_is_named_without_printing_it(
    chatcli, root: Path, key: str, problem: str
) -> None:
    result = chatcli("new", input="hi\n", OPENAI_API_KEY=key)
    assert result.returncode == int(ConfigError.exit_code)
    assert_clean_error(result.stderr)
    assert f"OPENAI_API_KEY {problem}" in result.stderr
    assert SECRET not in result.stderr and "abcdef" not in result.stderr
    assert not (root / "memory").exists() or not any((root / "memory").iterdir())


def test_resume_refuses_an_unusable_key_too(chatcli, root: Path) -> None:
    assert chatcli("new", input="hi\n").returncode == 0
    result = chatcli("resume", "--last", input="again\n", OPENAI_API_KEY="sk-\u00e9")
    assert result.returncode == int(ConfigError.exit_code)
    assert "OPENAI_API_KEY contains non-ASCII characters" in result.stderr


def test_a_key_with_inner_characters_a_header_allows_still_works(chatcli) -> None:
    result = chatcli("new", input="hi\n", OPENAI_API_KEY="sk-proj_AZaz09-._~+/=")
    assert result.returncode == 0, result.stderr
    assert "echo: hi" in result.stdout
