"""Personas: system-prompt presets kept as JSON files, one per file, checked at start-up.

A file `personas/ID.json` holds the format people already keep for their chat
scripts, plus an optional `name` and `description`:

    {"name": "...", "description": "...", "model": "gpt-4o-mini",
     "messages": [{"role": "system", "content": "You are ..."}]}

`messages` (required) is a non-empty list of `{"role", "content"}` objects,
role `system`, `user` or `assistant` (examples of a dialogue are allowed);
they are sent before the question. `model` (optional) must be one of
CHATPROXY_MODELS and becomes the default model when the persona is chosen.
The persona's id is the file's name without `.json`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatproxy.environment import ConfigError, read_json_file

ROLES = ("system", "user", "assistant")
KEYS = ("name", "description", "model", "messages")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_FILE_BYTES = 256 * 1024
MAX_MESSAGES = 64
MAX_CONTENT_CHARS = 32_000
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 500


@dataclass(frozen=True)
class Persona:
    """One persona: `messages` are `{"role", "content"}` dicts; `model` None means the default."""

    id: str
    name: str
    description: str
    model: str | None
    messages: tuple[dict[str, str], ...]


class PersonaFault(Exception):
    """What is wrong with one persona (a phrase, without the file's name)."""


_Fault = PersonaFault


def load_personas(folder: Path, models: Sequence[str] | None = None) -> dict[str, Persona]:
    """Read and check every `*.json` file in `folder`: `{id: Persona}`, sorted by id.

    `models` are the allowed models (CHATPROXY_MODELS); a persona naming another
    one is refused. Files whose name starts with a dot are skipped (editors'
    temporary files). Raises ConfigError with one line, `personas/ID.json:
    <fault>`, for the first malformed file, or naming CHATPROXY_PERSONAS_DIR
    when `folder` is not a folder.
    """
    if not folder.is_dir():
        raise ConfigError(f"CHATPROXY_PERSONAS_DIR={str(folder)!r} is not a folder")
    personas: dict[str, Persona] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(".") or path.is_dir():
            continue
        try:
            persona = _read(path, models)
        except _Fault as fault:
            raise ConfigError(f"{_shown(path)}: {fault}") from None
        personas[persona.id] = persona
    return personas


def _read(path: Path, models: Sequence[str] | None) -> Persona:
    persona_id = path.stem
    if not ID_PATTERN.fullmatch(persona_id):
        raise _Fault(
            "the file name must be 1 to 64 letters, digits, '-' or '_' (it is the persona's id)"
        )
    try:
        data = read_json_file(path, MAX_FILE_BYTES, object_pairs_hook=_no_duplicate_keys)
    except ConfigError as fault:
        raise _Fault(str(fault)) from None
    return persona_from(persona_id, data, models)


def persona_from(persona_id: str, data: Any, models: Sequence[str] | None) -> Persona:
    """The persona `persona_id` whose file would hold `data`, checked by the rules of files
    (those made in the console are). Raises PersonaFault saying what is wrong."""
    if not ID_PATTERN.fullmatch(persona_id):
        raise _Fault("the id must be 1 to 64 letters, digits, '-' or '_', a letter or digit first")
    if not isinstance(data, dict):
        raise _Fault(f"must be a JSON object, not {_json_type(data)}")
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        raise _Fault(f"unknown key {unknown[0]!r} (allowed: {', '.join(KEYS)})")
    model = _string(data, "model", 200)
    if model is not None and models is not None and model not in models:
        raise _Fault(f"model {model!r} is not one of CHATPROXY_MODELS ({', '.join(models)})")
    return Persona(
        id=persona_id,
        name=_string(data, "name", MAX_NAME_CHARS) or persona_id,
        description=_string(data, "description", MAX_DESCRIPTION_CHARS) or "",
        model=model,
        messages=_messages(data.get("messages")),
    )


def _messages(value: Any) -> tuple[dict[str, str], ...]:
    if value is None:
        raise _Fault('"messages" is missing: give a list like [{"role": "system", "content": ...}]')
    if not isinstance(value, list):
        raise _Fault(f'"messages" must be a list, not {_json_type(value)}')
    if not 1 <= len(value) <= MAX_MESSAGES:
        raise _Fault(f'"messages" must hold 1 to {MAX_MESSAGES} messages, not {len(value)}')
    messages = []
    for number, message in enumerate(value, start=1):
        where = f"message {number}"
        if not isinstance(message, dict):
            raise _Fault(f"{where} must be an object with role and content")
        extra = [key for key in message if key not in ("role", "content")]
        if extra:
            raise _Fault(f"{where}: unknown key {extra[0]!r} (allowed: role, content)")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise _Fault(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise _Fault(f"{where}: content must be a non-empty string")
        if len(content) > MAX_CONTENT_CHARS:
            raise _Fault(
                f"{where}: content is {len(content)} characters; the limit is {MAX_CONTENT_CHARS}"
            )
        messages.append({"role": role, "content": content})
    return tuple(messages)


def _string(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Fault(f"{key!r} must be a non-empty string")
    if len(value) > limit:
        raise _Fault(f"{key!r} is {len(value)} characters; the limit is {limit}")
    return value.strip()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; in a hand-edited file that
    # hides a mistake.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Fault(f"key {key!r} appears twice")
        result[key] = value
    return result


def _json_type(value: Any) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), "an object")


def _shown(path: Path) -> str:
    """The file as the owner knows it: `personas/ID.json` (its folder and name)."""
    return f"{path.parent.name}/{path.name}"
