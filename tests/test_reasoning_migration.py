"""Migration 0007 (reasoning kept apart from the answer) on a store with conversations in it.

Runs on the suite's store: SQLite, or PostgreSQL with TEST_DATABASE_URL (in a schema of
its own, made afresh), so `make test` tries both.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx2
import pytest
import sqlalchemy
from flask import Flask
from flask_migrate import downgrade, upgrade

from chatproxy.store.database import INSTANCE_DIR, MIGRATIONS_DIR, init_store
from tests.conftest import TEST_DATABASE_URL, _fresh_postgresql_schema, serve

BEFORE = "0006"
AT = datetime(2026, 11, 21, 2, 30, tzinfo=UTC)


@pytest.fixture
def old_store(tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty store of its own, brought to the schema before reasoning was kept."""
    if TEST_DATABASE_URL:
        url = _fresh_postgresql_schema(TEST_DATABASE_URL, "chatproxy_migration_test")
    else:
        url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate(url, upgrade, BEFORE)
    yield url


def migrate(url: str, step, revision: str) -> None:  # type: ignore[no-untyped-def]
    """Run Alembic's `step` (upgrade or downgrade) on `url` to `revision`."""
    app = Flask("migration-test", instance_path=str(INSTANCE_DIR))
    init_store(app, url)
    with app.app_context():
        step(directory=str(MIGRATIONS_DIR), revision=revision)
        app.extensions["sqlalchemy"].engine.dispose()


def rows(engine: sqlalchemy.Engine) -> list[tuple]:  # type: ignore[type-arg]
    with engine.connect() as connection:
        return list(
            connection.exec_driver_sql(
                "SELECT id, conversation_id, role, content, status, completion_tokens "
                "FROM messages ORDER BY id"
            )
        )


def test_upgrade_keeps_every_message_and_adds_reasoning(old_store, make_app):
    engine = sqlalchemy.create_engine(old_store)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO conversations (id, title, model, created_at, updated_at) "
                "VALUES (:id, 'Old one', 'gpt-4o-mini', :at, :at)"
            ),
            {"id": "a" * 32, "at": AT},
        )
        for role, content, status, tokens in [
            ("system", "Be brief.", "ok", None),
            ("user", "谁赢了2022年世界杯?", "ok", None),
            ("assistant", "阿根廷队。", "ok", 7),
            ("user", "And then?", "ok", None),
            ("assistant", "Cut sh", "interrupted", None),
        ]:
            connection.execute(
                sqlalchemy.text(
                    "INSERT INTO messages (conversation_id, role, content, status, "
                    "completion_tokens, created_at) VALUES (:c, :role, :content, :status, "
                    ":tokens, :at)"
                ),
                {
                    "c": "a" * 32,
                    "role": role,
                    "content": content,
                    "status": status,
                    "tokens": tokens,
                    "at": AT,
                },
            )
    before = rows(engine)

    migrate(old_store, upgrade, "head")

    assert rows(engine) == before
    with engine.connect() as connection:
        added = connection.exec_driver_sql(
            "SELECT reasoning, reasoning_tokens, reasoning_seconds FROM messages"
        ).all()
    assert added == [(None, None, None)] * len(before)
    # The service reads the old conversation, and keeps reasoning in the new columns.
    with serve(make_app(DATABASE_URL=old_store)) as server:
        old = httpx2.get(f"{server.url}/api/conversations/{'a' * 32}").json()
        asked = httpx2.get(
            f"{server.url}/callChatGPT",
            params={"input": "Why? [[sim: reasoning=reasoning]]", "conversation_id": "a" * 32},
        )
        new = httpx2.get(f"{server.url}/api/conversations/{'a' * 32}").json()
    assert [(m["content"], m["reasoning"]) for m in old["messages"]] == [
        (row[3], None) for row in before
    ]
    assert asked.status_code == 200
    assert new["messages"][-1]["reasoning"].startswith("The user asks: *Why?*")
    engine.dispose()


def test_downgrade_drops_only_the_reasoning(old_store):
    migrate(old_store, upgrade, "head")
    engine = sqlalchemy.create_engine(old_store)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO conversations (id, title, model, created_at, updated_at) "
                "VALUES (:id, 'Thought', 'deepseek-reasoner', :at, :at)"
            ),
            {"id": "b" * 32, "at": AT},
        )
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO messages (conversation_id, role, content, status, reasoning, "
                "created_at) VALUES (:c, 'assistant', '4', 'ok', 'Two and two.', :at)"
            ),
            {"c": "b" * 32, "at": AT},
        )
    before = rows(engine)

    migrate(old_store, downgrade, BEFORE)

    assert rows(engine) == before
    columns = {c["name"] for c in sqlalchemy.inspect(engine).get_columns("messages")}
    assert not columns & {"reasoning", "reasoning_tokens", "reasoning_seconds"}
    engine.dispose()
