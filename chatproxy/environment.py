"""How a setting's value is read and checked: the typed reader of an environment mapping,
URLs' hosts and ports, JSON files; `ConfigError` for a value that is wrong.

Apart from `chatproxy.config`, which says which settings there are: this says
what a number, a URL or a file given in one must look like.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The project's folder: `.env` and the default `personas/` live here; relative paths start here."""


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable."""


def read_json_file(
    path: Path,
    max_bytes: int,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """The JSON value in the file `path`: UTF-8 text (a BOM is allowed), at most `max_bytes`.

    Raises ConfigError whose message is a phrase without the file's name
    ("is not valid JSON: ... (line 3, column 5)"), for the caller to prefix
    with the file or the setting that names it.
    """
    try:
        with path.open("rb") as file:
            raw = file.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot be read ({exc.strerror})") from None
    if len(raw) > max_bytes:
        raise ConfigError(f"is larger than {max_bytes} bytes")
    try:
        return json.loads(raw.decode("utf-8-sig"), object_pairs_hook=object_pairs_hook)
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not address_fault(value)


def address_fault(url: str) -> str | None:
    """What is wrong with the host and port of `url` (a phrase), or None when nothing is."""
    parts = urlsplit(url)
    try:
        port = parts.port  # ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    if port == 0:
        return "has a port that is not a number from 1 to 65535"
    if not parts.hostname:
        return "has no host name"
    return None


class Reader:
    """Typed look-ups in an environment mapping; empty values count as unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def optional(self, name: str) -> str | None:
        value = self.environ.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.text(name, default).lower()
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def items(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.optional(name)
        if value is None:
            return default
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def number(
        self,
        name: str,
        kind: Callable[[str], T],
        default: T,
        low: float | None = None,
        high: float | None = None,
    ) -> T:
        raw = self.optional(name)
        if raw is None:
            return default
        unit = "an integer" if kind is int else "a number"
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {unit}, got {raw!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):  # type: ignore[operator]
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(f"{name} must be {bounds}, got {raw!r}")
        return value

    def folder(self, name: str, default: Path) -> Path:
        """A folder path; a relative one is taken from the project's folder, not the cwd."""
        return self.path(name) or default

    def path(self, name: str) -> Path | None:
        """A file or folder path, or None; a relative one is taken from the project's folder."""
        value = self.optional(name)
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        value = self.optional(name)
        if value is None:
            return None
        parts = urlsplit(value)
        shown = value if name not in ("OPENAI_PROXY", "REDIS_URL") else f"{parts.scheme}://..."
        if parts.scheme not in schemes or not parts.netloc:
            raise ConfigError(
                f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, "
                f"got {shown!r}"
            )
        if fault := address_fault(value):
            raise ConfigError(f"{name} {fault}, got {shown!r}")
        return value
