"""Settings precedence: flag > env > config file > default; bad files are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli import config
from chatcli.errors import ConfigError


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CHATCLI_MODEL", "OPENAI_BASE_URL", "CHATCLI_CONTEXT_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.toml"
    monkeypatch.setenv("CHATCLI_CONFIG", str(path))
    return path


def test_flag_beats_env_beats_file_beats_default(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg.write_text('model = "from-file"\ncontext_tokens = 900\n')
    assert config.Settings()["model"] == "from-file"
    assert config.Settings().source("context_tokens") == f"config {cfg}"
    monkeypatch.setenv("CHATCLI_MODEL", "from-env")
    assert config.Settings()["model"] == "from-env"
    assert config.Settings({"model": "from-flag"}).source("model") == "flag"
    assert config.Settings().source("theme") == "default"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("model = ", "not valid TOML"),
        ("colour = 'red'", "unknown setting 'colour'"),
        ("context_tokens = 'many'", "must be a whole number from 1 to"),
        ("context_tokens = -5", "must be a whole number from 1 to"),
    ],
)
def test_bad_config_files_are_named_errors(cfg: Path, text: str, problem: str) -> None:
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.Settings()
    assert problem in str(e.value) and str(cfg) in str(e.value)


def test_storage_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHATCLI_STORAGE", str(tmp_path / "env"))
    assert config.storage_root(tmp_path / "flag") == tmp_path / "flag"
    assert config.storage_root() == tmp_path / "env"
    monkeypatch.delenv("CHATCLI_STORAGE")
    assert config.storage_root().name == "chatcli"


def test_the_api_key_is_masked() -> None:
    assert config.mask_secret("sk-1234567890abcdef") == "sk-…cdef"
    assert config.mask_secret(None) == "(not set)"


def test_config_command_shows_sources_and_never_the_key(chatcli) -> None:
    result = chatcli("config", CHATCLI_MODEL="m-env")
    assert result.returncode == 0
    assert "m-env" in result.stdout and "env CHATCLI_MODEL" in result.stdout
    assert "sk-test-secret-key-1234" not in result.stdout


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_a_time_limit_must_be_finite_and_positive(
    cfg: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CHATCLI_SQL_TIMEOUT", value)
    with pytest.raises(ConfigError, match="sql_timeout"):
        config.Settings()


def test_toml_types_are_kept(cfg: Path) -> None:
    cfg.write_text("model = 5\n")
    with pytest.raises(ConfigError, match="must be text"):
        config.Settings()
