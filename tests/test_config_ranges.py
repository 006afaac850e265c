"""Every numeric setting has a documented range, checked where settings are read: a value outside
it (from the environment or the config file) is one line naming the setting and the range, before
anything runs; the edges themselves work, in a real turn too."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_clean_error, make_db

from chatcli.config import RANGES, show_number
from chatcli.errors import ConfigError

ENV = {
    "context_tokens": "CHATCLI_CONTEXT_TOKENS",
    "max_tokens": "CHATCLI_MAX_TOKENS",
    "timeout": "CHATCLI_TIMEOUT",
    "sql_timeout": "CHATCLI_SQL_TIMEOUT",
}
# (text in the environment, the same in TOML) outside every range
BAD = [
    ("0", "0"),
    ("-1", "-1"),
    ("1e10", "1e10"),  # a timeout this long overflowed the clock in every turn
    ("nan", "nan"),
    ("inf", "inf"),
    ("ten", '"ten"'),
]


def _edges(name: str) -> list[str]:
    low, high, _ = RANGES[name]
    return [show_number(low), show_number(high)]


def _beyond(name: str) -> list[str]:
    low, high, _ = RANGES[name]
    if isinstance(low, int) and isinstance(high, int):
        return [str(low - 1), str(high + 1)]
    return [f"{low / 2:g}", show_number(high + 1)]


def _assert_range_error(result, name: str) -> None:
    assert result.returncode == int(ConfigError.exit_code), result.stderr
    assert_clean_error(result.stderr)
    low, high, _ = RANGES[name]
    assert len(result.stderr.strip().splitlines()) == 1
    wanted = f"from {show_number(low)} to {show_number(high)}"
    assert f"setting {name!r}" in result.stderr and wanted in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("name", sorted(RANGES))
@pytest.mark.parametrize("value", [v for v, _ in BAD] + ["beyond-low", "beyond-high"])
def test_a_value_outside_the_range_in_the_environment_is_refused(
    chatcli, name: str, value: str
) -> None:
    if value.startswith("beyond"):
        value = _beyond(name)[value.endswith("high")]
    result = chatcli("config", **{ENV[name]: value})
    _assert_range_error(result, name)
    assert ENV[name] in result.stderr  # where the bad value came from


@pytest.mark.parametrize("name", sorted(RANGES))
@pytest.mark.parametrize("toml", [t for _, t in BAD] + ["beyond-low", "beyond-high"])
def test_a_value_outside_the_range_in_the_config_file_is_refused(
    chatcli, env: dict[str, str], name: str, toml: str
) -> None:
    if toml.startswith("beyond"):
        toml = _beyond(name)[toml.endswith("high")]
    config_file = Path(env["CHATCLI_CONFIG"])
    config_file.write_text(f"{name} = {toml}\n")
    result = chatcli("config", **{ENV[name]: ""})  # the file's value, not the test's env
    _assert_range_error(result, name)
    assert str(config_file) in result.stderr


def test_a_fractional_token_count_in_the_config_file_is_refused(
    chatcli, env: dict[str, str]
) -> None:
    Path(env["CHATCLI_CONFIG"]).write_text("context_tokens = 900.5\n")
    _assert_range_error(chatcli("config"), "context_tokens")


@pytest.mark.parametrize("name", sorted(RANGES))
def test_the_edges_of_each_range_are_accepted(chatcli, env: dict[str, str], name: str) -> None:
    for value in _edges(name):
        result = chatcli("config", **{ENV[name]: value})
        assert result.returncode == 0, result.stderr
        Path(env["CHATCLI_CONFIG"]).write_text(f"{name} = {value}\n")
        result = chatcli("config", **{ENV[name]: ""})
        assert result.returncode == 0, result.stderr


def test_a_turn_with_the_longest_time_limits_works(chatcli, tmp_path: Path) -> None:
    db = make_db(tmp_path / "data.db")
    result = chatcli(
        "new",
        "--db",
        str(db),
        input="hello\n",
        CHATCLI_TIMEOUT=show_number(RANGES["timeout"][1]),
        CHATCLI_SQL_TIMEOUT=show_number(RANGES["sql_timeout"][1]),
        CHATCLI_MAX_TOKENS=show_number(RANGES["max_tokens"][1]),
        CHATCLI_CONTEXT_TOKENS=show_number(RANGES["context_tokens"][1]),
    )
    assert result.returncode == 0, result.stderr
    assert "echo: hello" in result.stdout
