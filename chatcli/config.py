"""Settings: flag > environment > config file > default; each value knows its source."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ConfigError

APP_NAME = "chatcli"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a terminal chat. Answer in Markdown; keep answers concise."
)

# name -> (environment variable, default, type). The API key is deliberately not here: it is read
# from the environment only, so chatcli never has a reason to write it anywhere.
_SETTINGS: dict[str, tuple[str, Any, type]] = {
    "model": ("CHATCLI_MODEL", DEFAULT_MODEL, str),
    "base_url": ("OPENAI_BASE_URL", None, str),
    "system_prompt": ("CHATCLI_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT, str),
    "context_tokens": ("CHATCLI_CONTEXT_TOKENS", 16_000, int),
    "theme": ("CHATCLI_THEME", "monokai", str),
    "timeout": ("CHATCLI_TIMEOUT", 60.0, float),
    "sql_timeout": ("CHATCLI_SQL_TIMEOUT", 5.0, float),
    # the longest reply asked for, in tokens; unset: the server's own default
    "max_tokens": ("CHATCLI_MAX_TOKENS", None, int),
    "show_thinking": ("CHATCLI_SHOW_THINKING", True, bool),
    "show_usage": ("CHATCLI_SHOW_USAGE", True, bool),  # the dim tokens line after each reply
    # summarise the older part (as /compress) when a request would leave messages out
    "auto_compress": ("CHATCLI_AUTO_COMPRESS", False, bool),
    # attach a PostgreSQL role that can run programs or write files on the server (a superuser):
    # READ ONLY does not stop COPY ... TO PROGRAM, so such roles are refused unless this is on
    "pg_allow_superuser": ("CHATCLI_PG_ALLOW_SUPERUSER", False, bool),
    # `chatcli ask` keeps a warm helper process (chatcli/helper/) that has LangChain imported
    "helper": ("CHATCLI_HELPER", True, bool),
}


# name -> (lowest, highest, unit): the allowed range of each numeric setting, checked where the
# settings are read, so that no value can fail later in every turn (a timeout of 1e10 s overflows
# the clock). 0 is outside every range: no setting switches a limit off.
RANGES: dict[str, tuple[float, float, str]] = {
    "context_tokens": (1, 10_000_000, "tokens"),
    "max_tokens": (1, 1_000_000, "tokens"),
    "timeout": (0.01, 86_400, "seconds, at most 1 day"),
    "sql_timeout": (0.01, 86_400, "seconds, at most 1 day"),
}


def storage_root(flag: Path | None = None) -> Path:
    """Where sessions live: --storage, else $CHATCLI_STORAGE, else the per-user data folder."""
    return storage_setting(flag).value


def storage_setting(flag: Path | None = None) -> Setting:
    """:func:`storage_root` and where it came from ("flag --storage", "env CHATCLI_STORAGE" or
    "default"), for ``chatcli config``."""
    if flag is not None:
        return Setting(flag.expanduser(), "flag --storage")
    if env := os.environ.get("CHATCLI_STORAGE"):
        return Setting(Path(env).expanduser(), "env CHATCLI_STORAGE")
    import platformdirs  # only needed when nothing was given, so not paid on every start

    return Setting(platformdirs.user_data_path(APP_NAME), "default")


def config_path() -> Path:
    """The optional TOML config: $CHATCLI_CONFIG, else config.toml in the user config folder."""
    if env := os.environ.get("CHATCLI_CONFIG"):
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def log_path(root: Path) -> Path:
    """The debug log: tracebacks of unexpected errors go here, never to the terminal."""
    return root / "chatcli.log"


def log_exception(root: Path, what: str) -> str:
    """Append ``what`` and the traceback being handled to the log file (private, 0600).

    Returns " (details in PATH)" to end the one-line message with, or "" if it cannot be written.
    """
    import logging
    import traceback

    from .text import strip_passwords

    path = log_path(root)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # whatever umask
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return ""
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.getLogger("chatcli")
    log.addHandler(handler)
    try:
        # the command line (attach-db, --db postgresql://u:pw@...) and exception texts may carry
        # a password: none reaches the file
        log.error(strip_passwords(f"{what}\n{traceback.format_exc().rstrip()}"))
    finally:
        log.removeHandler(handler)
        handler.close()
    return f" (details in {path})"


def api_key() -> str | None:
    """The API key, from OPENAI_API_KEY only (never from or to a file)."""
    return os.environ.get("OPENAI_API_KEY") or None


def api_key_problem(key: str) -> str | None:
    """What makes ``key`` unusable in an HTTP header, in words that never quote the key; None if
    nothing. Caught here: such a key otherwise fails as "cannot reach the model server" or as an
    encoding error deep in the HTTP client."""
    if not key.strip():
        return "is blank (only spaces)"
    if "\n" in key or "\r" in key:
        return "contains a line break; set it to the key alone, on one line"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return "contains a control character; set it to the key alone"
    if not key.isascii():
        where = next(i for i, c in enumerate(key) if not c.isascii()) + 1
        return (
            f"contains non-ASCII characters (the first at position {where}); API keys are "
            "plain ASCII: was it pasted with a typographic quote or dash?"
        )
    if key != key.strip():
        return "begins or ends with a space; remove it"
    return None


def require_api_key() -> str:
    """The API key, checked; a ConfigError saying what is wrong with it (never the key)."""
    key = api_key()
    if not key:
        raise ConfigError(
            "OPENAI_API_KEY is not set: export OPENAI_API_KEY=<your key> "
            "(any non-empty value works for a local server)"
        )
    if problem := api_key_problem(key):
        raise ConfigError(f"OPENAI_API_KEY {problem}")
    return key


def mask_secret(secret: str | None) -> str:
    if not secret:
        return "(not set)"
    return secret[:3] + "…" + secret[-4:] if len(secret) > 12 else "***"


class Setting(NamedTuple):
    value: Any
    source: str  # "flag", "env NAME", "config PATH" or "default"


class Settings:
    """The effective settings; per name: flag > environment > config file > default."""

    def __init__(self, flags: dict[str, Any] | None = None, *, path: Path | None = None) -> None:
        self.path = path or config_path()
        file_values = _read_config(self.path)
        self._values: dict[str, Setting] = {}
        for name, (env_name, default, kind) in _SETTINGS.items():
            # 1. an explicit command-line flag wins
            if flags and flags.get(name) is not None:
                self._values[name] = Setting(flags[name], "flag")
            # 2. then the environment
            elif os.environ.get(env_name):
                value = _coerce(name, os.environ[env_name], kind, env=env_name)
                self._values[name] = Setting(value, f"env {env_name}")
            # 3. then the config file
            elif name in file_values:
                value = _coerce(name, file_values[name], kind, where=self.path)
                self._values[name] = Setting(value, f"config {self.path}")
            # 4. then the built-in default
            else:
                self._values[name] = Setting(default, "default")

    def __getitem__(self, name: str) -> Any:
        return self._values[name].value

    def source(self, name: str) -> str:
        return self._values[name].source

    def items(self) -> list[tuple[str, Setting]]:
        return list(self._values.items())


_CONFIG_LIMIT = 1 << 20  # bytes: a settings file is a few hundred


def _read_config(path: Path) -> dict[str, Any]:
    from .store.files import read_regular

    try:
        data = read_regular(path, limit=_CONFIG_LIMIT)  # a FIFO or /dev/zero: refused at once
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", path=path) from e
    import tomllib

    try:
        values = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file is not valid TOML: {e}", path=path) from e
    unknown = sorted(set(values) - set(_SETTINGS))
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]!r} in config file (known: {', '.join(_SETTINGS)})",
            path=path,
        )
    return values


_BOOLS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def show_number(value: float) -> str:
    """A range's bound as written in messages and docs: 10000000, 86400, 0.01."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _coerce(
    name: str, value: Any, kind: type, *, where: Path | None = None, env: str | None = None
) -> Any:
    """``value`` as a ``kind``, within its range; else a ConfigError naming the setting (and
    the variable it came from) and what is allowed."""
    label = f"setting {name!r}" + (f" ({env})" if env else "")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        raise ConfigError(f"{label} must be true or false, got {value!r}", path=where)
    if kind is str:
        if where is not None and not isinstance(value, str):
            # TOML has types: model = 5 is a mistake, not "5"
            raise ConfigError(f"{label} must be text, got {value!r}", path=where)
        return str(value)
    low, high, unit = RANGES[name]
    what = "a whole number" if kind is int else "a number"
    wanted = f"{label} must be {what} from {show_number(low)} to {show_number(high)} ({unit})"
    try:
        if isinstance(value, bool):
            raise ValueError  # TOML's true is no number
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError  # context_tokens = 5.5 would silently become 5
        result = kind(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConfigError(f"{wanted}, got {value!r}", path=where) from e
    # not (low <= x <= high) is also true of nan; inf and huge values fail the upper bound
    if not (low <= result <= high and math.isfinite(result)):
        raise ConfigError(f"{wanted}, got {value!r}", path=where)
    return result
