"""The schema: bring a database to the newest revision of `migrations/` (Alembic).

Runs when gunicorn starts (gunicorn.conf.py), before the test suite, and by
`flask --app app db upgrade`.
"""

from __future__ import annotations

from collections.abc import Mapping

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
        _alembic_upgrade(directory=str(MIGRATIONS_DIR))
        db.engine.dispose()
