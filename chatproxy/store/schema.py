"""The schema: bring a database to the newest revision of `migrations/` (Alembic).

Runs when gunicorn or `flask run` starts, before each of chatproxy's `flask`
commands that use the store, before the test suite, and by
`flask --app app db upgrade`.
"""

from __future__ import annotations

from collections.abc import Mapping

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import upgrade as _alembic_upgrade

from chatproxy.config import load_settings
from chatproxy.store import models  # noqa: F401  (the tables Alembic compares against)
from chatproxy.store.database import INSTANCE_DIR, MIGRATIONS_DIR, db, init_store


def upgrade_database(environ: Mapping[str, str]) -> None:
    """Bring the database of DATABASE_URL in `environ` to the newest schema (Alembic upgrade).

    Needs only DATABASE_URL, not a configured upstream. Raises ConfigError for a
    wrong setting; a database that cannot be reached raises SQLAlchemy's
    OperationalError.
    """
    settings = load_settings(environ)
    app = Flask("chatproxy", instance_path=str(INSTANCE_DIR))
    init_store(app, settings.database_url)
    with app.app_context():
        upgrade_current_database()
        db.engine.dispose()


def upgrade_current_database() -> None:
    """Bring the current app's database to the newest schema; nothing when it is there.

    Alembic runs (and logs each migration) only for a database that is behind,
    an empty one included. Raises SQLAlchemyError when the database cannot be
    reached.
    """
    newest = set(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())
    with db.engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current != newest:
        _alembic_upgrade(directory=str(MIGRATIONS_DIR))
