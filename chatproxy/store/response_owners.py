"""Who created each response of the Responses API: a response id belongs to one caller.

A response created through `/v1/responses` is recorded with its caller's
name (`ResponseOwner`) in the transaction that charges it (a `spool.Write`
of kind `response_owner`, so it waits in the spool with the charge while the
database is away). Retrieving, deleting, cancelling or continuing it
(`previous_response_id`) is allowed to that caller only; to anyone else the
id does not exist, as with conversations.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, select

from chatproxy.store import spool
from chatproxy.store.database import upserting_insert
from chatproxy.store.models import ResponseOwner, utcnow

OWNERS = ResponseOwner.__table__
KIND = "response_owner"
_OWNER_OF = select(OWNERS.c.owner).where(OWNERS.c.response_id == bindparam("response_id"))
_FORGET = delete(OWNERS).where(
    OWNERS.c.response_id == bindparam("response_id"), OWNERS.c.owner == bindparam("owner")
)


def owner_write(response_id: str, owner: str) -> spool.Write:
    """The write that records `response_id` as `owner`'s, for the transaction that charges it."""
    return spool.Write(KIND, {"response_id": response_id[:200], "owner": owner})


def owns(engine: Engine, response_id: str, owner: str) -> bool:
    """True when `response_id` was recorded as `owner`'s."""
    with engine.connect() as connection:
        found = connection.execute(_OWNER_OF, {"response_id": response_id}).scalar()
    return found == owner


def forget(engine: Engine, response_id: str, owner: str) -> None:
    """Forget `response_id` (deleted upstream), if it is `owner`'s."""
    with engine.begin() as connection:
        connection.execute(_FORGET, {"response_id": response_id, "owner": owner})


def write_owner(connection: Connection, payload: dict[str, Any]) -> None:
    """Record a response's owner (a payload of `owner_write`); a replayed write changes nothing."""
    values = {**payload, "created_at": utcnow()}
    connection.execute(_owner_insert(connection.dialect.name), values)


@functools.cache
def _owner_insert(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` into response_owners, built once per dialect."""
    return upserting_insert(dialect)(OWNERS).on_conflict_do_nothing(index_elements=["response_id"])


spool.register(KIND, write_owner)
