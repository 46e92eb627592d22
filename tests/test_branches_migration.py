"""Migration 0009 (conversations branch) on a store with conversations in it: each becomes one
branch, and the service goes on with it; the downgrade keeps the current branch.

Runs on the suite's store: SQLite, or PostgreSQL with TEST_DATABASE_URL (in a schema of
its own, made afresh), so `make test` tries both.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
import sqlalchemy
from flask_migrate import downgrade, upgrade

from tests.conftest import TEST_DATABASE_URL, _fresh_postgresql_schema, serve
from tests.test_reasoning_migration import AT, migrate

BEFORE = "0008"
OLD = {
    "a" * 32: [
        ("system", "Be brief.", "ok"),
        ("user", "谁赢了2022年世界杯?", "ok"),
        ("assistant", "阿根廷队。", "ok"),
        ("user", "在哪里举办的?", "ok"),
        ("assistant", "卡塔", "interrupted"),
    ],
    "b" * 32: [("user", "Failed once", "error")],
    "c" * 32: [],
}


@pytest.fixture
def old_store(tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A store of its own at the schema before branches, with conversations in it."""
    if TEST_DATABASE_URL:
        url = _fresh_postgresql_schema(TEST_DATABASE_URL, "chatproxy_branches_migration_test")
    else:
        url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate(url, upgrade, BEFORE)
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        for conversation_id in OLD:
            connection.execute(
                sqlalchemy.text(
                    "INSERT INTO conversations (id, title, model, created_at, updated_at) "
                    "VALUES (:id, 'Old one', 'gpt-4o-mini', :at, :at)"
                ),
                {"id": conversation_id, "at": AT},
            )
        # Interleaved, as conversations asked at the same time are.
        for turn in range(5):
            for conversation_id, messages in OLD.items():
                if turn < len(messages):
                    role, content, status = messages[turn]
                    connection.execute(
                        sqlalchemy.text(
                            "INSERT INTO messages (conversation_id, role, content, status, "
                            "created_at) VALUES (:c, :role, :content, :status, :at)"
                        ),
                        {
                            "c": conversation_id,
                            "role": role,
                            "content": content,
                            "status": status,
                            "at": AT,
                        },
                    )
    engine.dispose()
    yield url


def links(engine: sqlalchemy.Engine) -> dict[str, list[tuple[int, int | None, str]]]:
    """Per conversation: (id, parent_id, content) of each message, in order of id."""
    found: dict[str, list[tuple[int, int | None, str]]] = {c: [] for c in OLD}
    with engine.connect() as connection:
        for message_id, parent_id, conversation_id, content in connection.exec_driver_sql(
            "SELECT id, parent_id, conversation_id, content FROM messages ORDER BY id"
        ):
            found[conversation_id].append((message_id, parent_id, content))
    return found


def test_upgrade_makes_each_conversation_one_branch(old_store, make_app):
    migrate(old_store, upgrade, "head")

    engine = sqlalchemy.create_engine(old_store)
    linked = links(engine)
    for conversation_id, messages in OLD.items():
        rows = linked[conversation_id]
        assert [content for _, _, content in rows] == [content for _, content, _ in messages]
        # Each message follows the one before it in its own conversation.
        ids = [message_id for message_id, _, _ in rows]
        assert [parent for _, parent, _ in rows] == [None, *ids[:-1]][: len(rows)]
    with engine.connect() as connection:
        current = dict(
            connection.exec_driver_sql("SELECT id, current_message_id FROM conversations").all()
        )
    assert current == {c: (rows[-1][0] if rows else None) for c, rows in linked.items()}
    engine.dispose()

    with serve(make_app(DATABASE_URL=old_store)) as server:
        http = httpx2.Client(base_url=server.url, timeout=20)
        old = http.get(f"/api/conversations/{'a' * 32}").json()
        assert [m["content"] for m in old["messages"]] == [c for _, c, _ in OLD["a" * 32]]
        assert all(len(m["siblings"]) == 1 for m in old["messages"])
        # It goes on from its last answer, interrupted as it is, with its system message.
        asked = http.post(
            "/callChatGPT",
            json={"input": "Why?", "conversation_id": "a" * 32, "format": "json"},
        )
        assert asked.status_code == 200, asked.text
        # An old question edited, and the old answer regenerated: both versions kept.
        edited = http.post(
            "/callChatGPT",
            json={
                "input": "何时举办的?",
                "conversation_id": "a" * 32,
                "edit_of": old["messages"][3]["id"],
                "format": "json",
            },
        )
        assert edited.status_code == 200, edited.text
        now = http.get(f"/api/conversations/{'a' * 32}").json()["messages"]
        first_turn = [content for _, content, _ in OLD["a" * 32]][:3]
        assert [m["content"] for m in now][:4] == [*first_turn, "何时举办的?"]
        assert now[3]["siblings"] == [old["messages"][3]["id"], now[3]["id"]]
        retried = http.post(f"/api/conversations/{'b' * 32}/regenerate", json={"format": "json"})
        assert retried.status_code == 200, retried.text
        failed = http.get(f"/api/conversations/{'b' * 32}").json()["messages"]
        assert [(m["role"], m["status"]) for m in failed] == [("user", "ok"), ("assistant", "ok")]
        empty = http.get(f"/api/conversations/{'c' * 32}").json()
        assert empty["messages"] == [] and empty["current_message_id"] is None
        http.close()


def test_downgrade_keeps_the_current_branch(old_store, make_app):
    migrate(old_store, upgrade, "head")
    with serve(make_app(DATABASE_URL=old_store)) as server:
        http = httpx2.Client(base_url=server.url, timeout=20)
        old = http.get(f"/api/conversations/{'a' * 32}").json()["messages"]
        http.post(
            "/callChatGPT",
            json={"input": "Edited", "conversation_id": "a" * 32, "edit_of": old[1]["id"]},
        )
        http.post(f"/api/conversations/{'a' * 32}/current", json={"message_id": old[1]["id"]})
        http.close()

    migrate(old_store, downgrade, BEFORE)

    engine = sqlalchemy.create_engine(old_store)
    with engine.connect() as connection:
        kept = connection.execute(
            sqlalchemy.text("SELECT content FROM messages WHERE conversation_id = :c ORDER BY id"),
            {"c": "a" * 32},
        )
        assert [row[0] for row in kept] == [c for _, c, _ in OLD["a" * 32]]
    columns = {c["name"] for c in sqlalchemy.inspect(engine).get_columns("messages")}
    assert "parent_id" not in columns
    engine.dispose()
