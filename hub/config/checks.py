"""What every table of ``hub.toml`` is checked with: ``ConfigError`` (one line naming the file and the setting)
and ``FileChecks``, the typed readers of one file's settings."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem; ``str(err)`` is one line naming the file and the setting."""


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class FileChecks:
    """Checks the settings of one file; every error names it."""

    def __init__(self, display: str) -> None:
        self.display = display

    def fail(self, setting: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.display}: {setting}: {problem}")

    def unknown(self, table: Mapping[str, Any], known: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in known:
                raise self.fail(f"{prefix}{key}", f"unknown setting (known: {', '.join(known)})")

    def integer(self, setting: str, value: object, lo: int, hi: int, what: str = "a whole number") -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise self.fail(setting, f"must be {what} {lo}..{hi}, not {type_name(value)}")
        return value

    def seconds(self, setting: str, value: object) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 366 * 86400:
            raise self.fail(setting, f"must be a number of seconds > 0, not {type_name(value)}")
        return float(value)

    def text(self, setting: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.fail(setting, f"must be a string, not {type_name(value)}")
        if not value.strip():
            raise self.fail(setting, "must not be empty")
        if "\x00" in value:
            raise self.fail(setting, "must not contain a NUL character")
        return value


def read_toml(path: Path, display: str) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{display}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{display}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{display}: invalid TOML: {exc}") from None


def under(base: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else base / p
