"""The store as the terminal commands find it: brought to the newest schema first."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from chatproxy.store.schema import upgrade_current_database


def upgrade_store() -> None:
    """Bring the database to the newest schema, as gunicorn does when it starts.

    So a command works on a fresh checkout before the server ever ran. Exits
    with one line (never the password) when the database cannot be reached.
    """
    try:
        upgrade_current_database()
    except SQLAlchemyError as error:
        # The driver's message names the host and database, never the password.
        reason = getattr(error, "orig", None) or error
        raise SystemExit(
            f"chatproxy: the database (DATABASE_URL) cannot be used: {reason}"
        ) from None
