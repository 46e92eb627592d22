"""Personas made in the console, kept in the database beside the files' (read at start-up).

Every worker on every host reads them again when its copy is older than
CACHE_SECONDS, so one made (or changed, or deleted) in the console is offered
everywhere within that time without a restart; the worker that made it at
once. A stored persona is checked by the rules of files when it is saved and
again when it is read (the allowed models may have changed since): one that
no longer passes is left out, with a warning.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from flask import current_app
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import SQLAlchemyError

from chatproxy.personas import Persona, PersonaFault, persona_from
from chatproxy.state import current_personas, current_settings
from chatproxy.store.database import db
from chatproxy.store.models import StoredPersona, utcnow

CACHE_SECONDS = 5.0
TABLE = StoredPersona.__table__
EXTENSION = "chatproxy.stored_personas"
log = logging.getLogger(__name__)


class _Copy:
    """This process's copy of the stored personas, and when it was read."""

    def __init__(self) -> None:
        self.personas: dict[str, Persona] = {}
        self.read_at = -CACHE_SECONDS
        self.lock = threading.Lock()


def all_personas() -> dict[str, Persona]:
    """The personas offered now: the files' then those made in the console, each sorted by id."""
    files = current_personas()
    stored = stored_personas()
    if not stored:
        return files
    return {**files, **{key: p for key, p in stored.items() if key not in files}}


def stored_personas() -> dict[str, Persona]:
    """The personas made in the console, `{id: Persona}` by id, read again when stale.

    The database being away keeps the copy this process had.
    """
    copy = current_app.extensions.setdefault(EXTENSION, _Copy())
    if time.monotonic() - copy.read_at < CACHE_SECONDS:
        return copy.personas  # type: ignore[no-any-return]
    with copy.lock:
        if time.monotonic() - copy.read_at >= CACHE_SECONDS:
            try:
                copy.personas = _read(db.engine, current_settings().models)
            except SQLAlchemyError as error:
                log.warning("the stored personas stay as they were: %s", type(error).__name__)
            copy.read_at = time.monotonic()
    return copy.personas  # type: ignore[no-any-return]


def save_persona(persona_id: str, data: dict[str, Any], *, replace: bool) -> Persona:
    """Check `data` by the rules of persona files and store it as the persona `persona_id`.

    Raises PersonaFault when `data` is wrong, KeyError when `replace` and
    there is no such stored persona, FileExistsError when not `replace` and
    the id is taken (by a file's or a stored persona).
    """
    persona = persona_from(persona_id, data, current_settings().models)
    row = db.session.get(StoredPersona, persona_id)
    if replace and row is None:
        raise KeyError(persona_id)
    if not replace and (row is not None or persona_id in current_personas()):
        raise FileExistsError(persona_id)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if row is None:
        db.session.add(StoredPersona(id=persona_id, data=text))
    else:
        row.data, row.updated_at = text, utcnow()
    db.session.commit()
    _forget()
    return persona


def delete_persona(persona_id: str) -> bool:
    """Delete the stored persona `persona_id`; False if there is none (a file's cannot be)."""
    result = db.session.execute(delete(TABLE).where(TABLE.c.id == persona_id))
    db.session.commit()
    _forget()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _forget() -> None:
    copy = current_app.extensions.get(EXTENSION)
    if copy is not None:
        copy.read_at = -CACHE_SECONDS


def _read(engine: Engine, models: tuple[str, ...]) -> dict[str, Persona]:
    personas = {}
    with engine.connect() as connection:
        rows = connection.execute(select(TABLE.c.id, TABLE.c.data).order_by(TABLE.c.id)).all()
    for persona_id, text in rows:
        try:
            personas[persona_id] = persona_from(persona_id, json.loads(text), models)
        except (PersonaFault, ValueError) as fault:
            log.warning("the stored persona %r is left out: %s", persona_id, fault)
    return personas
