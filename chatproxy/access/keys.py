"""Access keys of chatproxy (`cpk-...`): issued, checked on every API request, revoked.

With CHATPROXY_AUTH=keys (the default) every request to `/callChatGPT`,
`/api/...` and `/v1/...` needs a key: `Authorization: Bearer cpk-...`, or
`?key=cpk-...` for clients that can only send a URL (less safe: URLs end up
in browser histories and proxies' logs; gunicorn's and nginx's access logs
here leave query strings out). Keys are stored as SHA-256 digests, looked up
by their first characters and compared in constant time. With
CHATPROXY_AUTH=open nobody needs one and every request is the `open` caller.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from flask import g, request
from sqlalchemy import bindparam, select, update

from chatproxy.config import Settings
from chatproxy.errors import BadRequest, Unauthorized
from chatproxy.state import current_settings
from chatproxy.store.database import db
from chatproxy.store.models import AccessKey, as_utc, utcnow

KEY_PREFIX = "cpk-"
SHOWN_CHARS = 12  # `cpk-` and 8 characters: enough to find a key, far too few to guess it
OPEN = "open"  # the caller's name while CHATPROXY_AUTH=open
LAST_USED_EVERY = 60.0  # seconds between two writes of a key's last use, per process
KEY_CACHE_SECONDS = 5.0  # how long a process trusts a key it found valid
NAME_CHARS = 100
# What `issue_key` makes (`secrets.token_urlsafe`), with room to spare; anything else is unknown.
KEY_SHAPE = re.compile(r"cpk-[A-Za-z0-9_-]{8,196}")


@dataclass(frozen=True)
class Caller:
    """Who is asking: an access key's name and limits, or the `open` caller (no limits).

    Limits of None do not apply; `models` None allows all of CHATPROXY_MODELS. An
    `admin` key may also use the console (`chatproxy.access.admin`).
    """

    name: str
    rpm: int | None = None
    tpm: int | None = None
    tokens_per_day: int | None = None
    usd_per_day: float | None = None
    models: tuple[str, ...] | None = None
    admin: bool = False

    @property
    def owner(self) -> str | None:
        """Whose conversations this caller sees: the key's name, or None (everyone's) when open."""
        return None if self.name == OPEN else self.name

    def policy(self, settings: Settings) -> Settings:
        """`settings` with CHATPROXY_MODELS narrowed to the models this key may use.

        The key's list names models exactly: those offered, and those an
        upstream's pattern admits (listed after them); patterns admit no
        more for such a key. The default model becomes the first allowed chat
        model when the key may not use it.
        """
        if self.models is None:
            return settings
        models = tuple(m for m in settings.models if m in self.models)
        if settings.model_patterns:
            models += tuple(m for m in self.models if m not in models and settings.allows(m))
        if not models:
            return replace(settings, models=(), model_patterns=())
        chat_models = replace(settings, models=models).chat_models or models
        model = settings.model if settings.model in models else chat_models[0]
        return replace(settings, models=models, model=model, model_patterns=())


OPEN_CALLER = Caller(OPEN)


def digest(key: str) -> str:
    """The SHA-256 of `key`, as stored, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(
    name: str,
    *,
    rpm: int | None = None,
    tpm: int | None = None,
    tokens_per_day: int | None = None,
    usd_per_day: float | None = None,
    models: Sequence[str] | None = None,
    expires_at: datetime | None = None,
    admin: bool = False,
) -> str:
    """Make and store a new key named `name`; returns the key, which is never stored or shown again.

    An `admin` key may also open the console and call its API. Raises
    BadRequest (param `name`) when the name is empty, too long or taken.
    """
    name = name.strip()
    if not name or len(name) > NAME_CHARS or name == OPEN or not name.isprintable():
        raise BadRequest(
            f"A key's name must be 1 to {NAME_CHARS} printable characters, not {OPEN!r}.",
            param="name",
        )
    if db.session.scalar(select(AccessKey.id).where(AccessKey.name == name)) is not None:
        raise BadRequest(f"There is already a key named {name!r}.", param="name")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    db.session.add(
        AccessKey(
            name=name,
            prefix=key[:SHOWN_CHARS],
            key_hash=digest(key),
            rpm=rpm,
            tpm=tpm,
            tokens_per_day=tokens_per_day,
            usd_per_day=usd_per_day,
            models=",".join(models) if models else None,
            expires_at=expires_at,
            admin=admin,
        )
    )
    db.session.commit()
    return key


def revoke_key(name: str) -> bool:
    """Revoke the key named `name` from now on; False if there is no such key still valid."""
    result = db.session.execute(
        update(AccessKey)
        .where(AccessKey.name == name, AccessKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    db.session.commit()
    forget_found_keys()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def forget_found_keys() -> None:
    """Forget the keys this process found valid: the next request reads its key again.

    After a key is revoked or its limits change; other processes see the change
    within KEY_CACHE_SECONDS.
    """
    with _finding:
        _found.clear()


def authenticate(settings: Settings) -> Caller:
    """The caller of the current request, checked; also kept in `g.caller`.

    Raises Unauthorized (401) `missing_api_key` without a key, `invalid_api_key`
    for a key that is unknown, revoked or expired. Open mode: OPEN_CALLER.
    """
    if settings.auth == OPEN:
        g.caller = OPEN_CALLER
        return OPEN_CALLER
    key = presented_key()
    if not key:
        raise Unauthorized(
            "An access key is needed: send 'Authorization: Bearer cpk-...' "
            "(or ?key=cpk-... where only a URL can be sent). The owner makes keys "
            "with 'flask keys create'.",
            code="missing_api_key",
        )
    g.caller = known_caller(key)
    return g.caller  # type: ignore[no-any-return]


def known_caller(key: str) -> Caller:
    """The caller whose key is `key`, its last use noted.

    Raises Unauthorized (401) `invalid_api_key` for a key that is unknown,
    revoked or expired.
    """
    row = _find(key)
    if row is None:
        raise Unauthorized("The access key is unknown, revoked or expired.", code="invalid_api_key")
    _note_use(row.id)
    return Caller(
        name=row.name,
        rpm=row.rpm,
        tpm=row.tpm,
        tokens_per_day=row.tokens_per_day,
        usd_per_day=row.usd_per_day,
        models=tuple(row.models.split(",")) if row.models else None,
        admin=bool(row.admin),
    )


def current_caller() -> Caller:
    """The current request's caller (set by `authenticate`); the open caller outside requests."""
    return g.get("caller", OPEN_CALLER)  # type: ignore[no-any-return]


def current_owner() -> str | None:
    """Whose conversations the current request sees and makes: its access key's name.

    None, everyone's, while CHATPROXY_AUTH is `open`.
    """
    return current_caller().owner


def current_policy() -> Settings:
    """The settings as they apply to the current caller: the models its access key may use."""
    return current_caller().policy(current_settings())


def presented_key() -> str | None:
    """The key the request carries: `Authorization: Bearer ...`, else `?key=`, else None."""
    return header_key() or request.args.get("key") or None


def header_key() -> str | None:
    """The key of the request's `Authorization: Bearer ...` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


_KEYS = AccessKey.__table__
_BY_PREFIX = select(_KEYS).where(_KEYS.c.prefix == bindparam("prefix"))  # built once
_found: dict[str, tuple[float, Any]] = {}  # digest -> (monotonic time, row)
_finding = threading.Lock()


def _find(key: str) -> Any:
    """The valid stored key `key` is (a row of access_keys), or None.

    Found by its prefix, compared by digest in constant time. A key found
    valid is remembered for KEY_CACHE_SECONDS per process, so a revoked key
    may still pass for that long in other processes (`revoke_key` forgets it
    at once in its own).
    """
    if not KEY_SHAPE.fullmatch(key):
        return None  # not one of ours; never sent to the database (PostgreSQL refuses a NUL)
    wanted = digest(key)
    now = time.monotonic()
    with _finding:
        cached = _found.get(wanted)
    if cached is not None and now - cached[0] < KEY_CACHE_SECONDS and _valid(cached[1]):
        return cached[1]
    with db.engine.connect() as connection:
        rows = connection.execute(_BY_PREFIX, {"prefix": key[:SHOWN_CHARS]}).all()
    for row in rows:
        if hmac.compare_digest(row.key_hash, wanted):
            if not _valid(row):
                return None
            with _finding:
                _found[wanted] = (now, row)
            return row
    return None


def _valid(row: Any) -> bool:
    """False for a revoked or expired key."""
    if row.revoked_at is not None:
        return False
    return row.expires_at is None or as_utc(row.expires_at) > utcnow()


_last_noted: dict[int, float] = {}
_noting = threading.Lock()


def _note_use(key_id: int) -> None:
    """Record a key's last use, at most once a minute per process (a write per request is waste)."""
    now = time.monotonic()
    with _noting:
        if now - _last_noted.get(key_id, -LAST_USED_EVERY) < LAST_USED_EVERY:
            return
        _last_noted[key_id] = now
    db.session.execute(
        update(AccessKey).where(AccessKey.id == key_id).values(last_used_at=utcnow())
    )
    db.session.commit()
