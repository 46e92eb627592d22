"""Migration 0011 (attachments): up on a store with questions in it, an attachment's bytes
kept; down again, the table gone and the questions kept.

Runs on the suite's store: SQLite, or PostgreSQL with TEST_DATABASE_URL (in a schema of
its own, made afresh).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy
from flask_migrate import downgrade, upgrade

from tests.conftest import TEST_DATABASE_URL, _fresh_postgresql_schema
from tests.sample_files import png
from tests.test_reasoning_migration import AT, migrate

BEFORE = "0010"


@pytest.fixture
def store_url(tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if TEST_DATABASE_URL:
        yield _fresh_postgresql_schema(TEST_DATABASE_URL, "chatproxy_attachments_migration_test")
    else:
        yield f"sqlite:///{tmp_path / 'store.db'}"


def tables(engine: sqlalchemy.Engine) -> set[str]:
    return set(sqlalchemy.inspect(engine).get_table_names())


def test_attachments_table_up_and_down(store_url: str) -> None:
    migrate(store_url, upgrade, BEFORE)
    engine = sqlalchemy.create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO conversations (id, title, model, created_at, updated_at) "
                "VALUES (:id, 'Old one', 'gpt-4o', :at, :at)"
            ),
            {"id": "a" * 32, "at": AT},
        )
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO messages (conversation_id, role, content, status, created_at) "
                "VALUES (:id, 'user', 'What is it?', 'ok', :at)"
            ),
            {"id": "a" * 32, "at": AT},
        )
    assert "attachments" not in tables(engine)

    migrate(store_url, upgrade, "0011")
    image = png(4, 4)
    with engine.begin() as connection:
        message_id = connection.exec_driver_sql("SELECT id FROM messages").scalar_one()
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO attachments (message_id, position, kind, media_type, size, data) "
                "VALUES (:m, 0, 'image', 'image/png', :size, :data)"
            ),
            {"m": message_id, "size": len(image), "data": image},
        )
        kept = connection.exec_driver_sql("SELECT data FROM attachments").scalar_one()
    assert bytes(kept) == image

    migrate(store_url, downgrade, BEFORE)
    assert "attachments" not in tables(engine)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT content FROM messages").scalar_one() == (
            "What is it?"
        )
    engine.dispose()
