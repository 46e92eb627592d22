"""The console's API (`/api/admin/...`): admin keys only; keys listed, made, changed, revoked;
spending per day by model or key, the top of today and the CSV, equal to the ledger's sums.

A real server needing keys, the real openai SDK for questions, on the session's store.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx2
import openai
import pytest
from flask import Flask
from sqlalchemy import func, select

from chatproxy.access.keys import issue_key
from chatproxy.store.database import db
from chatproxy.store.models import UsageDay
from tests.conftest import LiveServer, serve

MODELS = "gpt-4o-mini,gpt-4o,gpt-4.1-mini"
QUESTION = [{"role": "user", "content": "谁赢了2022年世界杯?"}]


@pytest.fixture(scope="module")
def server(make_app: Callable[..., Flask]) -> Iterator[LiveServer]:
    """A server that needs access keys, for the whole module."""
    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_MODELS=MODELS)) as live:
        yield live


def make_key(server: LiveServer, admin: bool = False, **limits: Any) -> tuple[str, str]:
    """A new key on `server`'s store, as `flask keys create [--admin]` makes them: (name, key)."""
    name = f"{'admin' if admin else 'plain'}-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name, admin=admin, **limits)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def admin_routes(app: Flask) -> list[tuple[str, str]]:
    """Every (method, path) under /api/admin, a sample id in place of a path's."""
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/admin"):
            path = re.sub(r"<int:\w+>", "1", rule.rule)
            routes += [
                (m, path) for m in sorted(rule.methods or ()) if m not in ("HEAD", "OPTIONS")
            ]
    return routes


def ask(server: LiveServer, key: str, model: str, stream: bool = False) -> None:
    client = openai.OpenAI(api_key=key, base_url=f"{server.url}/v1", max_retries=0)
    if stream:
        list(client.chat.completions.create(model=model, messages=QUESTION, stream=True))
    else:
        client.chat.completions.create(model=model, messages=QUESTION)


@pytest.mark.parametrize("mode", ["keys", "open"])
def test_every_admin_route_refuses_no_key_and_ordinary_keys(
    make_app: Callable[..., Flask], mode: str
) -> None:
    app = make_app(CHATPROXY_AUTH=mode, CHATPROXY_MODELS=MODELS)
    with serve(app) as live:
        _, plain = make_key(live)
        _, admin = make_key(live, admin=True)
        routes = admin_routes(app)
        assert len(routes) >= 7
        with httpx2.Client(base_url=live.url) as http:
            for method, path in routes:
                for headers, params, status, code in [
                    ({}, {}, 401, "missing_api_key"),
                    (bearer("cpk-" + "x" * 43), {}, 401, "invalid_api_key"),
                    (bearer(plain), {}, 403, "admin_key_required"),
                    # The console's key travels in a header only, never in a URL.
                    ({}, {"key": admin}, 401, "missing_api_key"),
                ]:
                    answer = http.request(method, path, headers=headers, params=params, json={})
                    assert answer.status_code == status, (method, path, answer.text)
                    assert answer.json()["error"]["code"] == code
            # The page itself holds no data: it is served to anyone, and asks the API.
            page = http.get("/admin")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert http.get("/api/admin/keys", headers=bearer(admin)).status_code == 200


def test_an_admin_key_makes_changes_and_revokes_keys(server: LiveServer) -> None:
    _, admin = make_key(server, admin=True)
    name = f"made-{uuid.uuid4().hex[:8]}"
    http = httpx2.Client(base_url=server.url, headers=bearer(admin))
    made = http.post("/api/admin/keys", json={"name": name, "rpm": 50, "models": ["gpt-4o"]})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert key.startswith(made.json()["prefix"]) and made.json()["state"] == "active"
    assert made.json()["admin"] is False and made.json()["models"] == ["gpt-4o"]
    client = openai.OpenAI(api_key=key, base_url=f"{server.url}/v1", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["gpt-4o"]

    # Listed, never with the key itself.
    listing = http.get("/api/admin/keys")
    assert key not in listing.text
    listed = next(k for k in listing.json()["data"] if k["name"] == name)
    assert listed["rpm"] == 50 and listed["today"]["requests"] == 0

    changed = http.patch(
        f"/api/admin/keys/{listed['id']}",
        json={"models": ["gpt-4o-mini", "gpt-4.1-mini"], "rpm": None, "tokens_per_day": 9000},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["rpm"] is None and changed.json()["tokens_per_day"] == 9000
    assert [m.id for m in client.models.list().data] == ["gpt-4o-mini", "gpt-4.1-mini"]
    ask(server, key, "gpt-4o-mini")
    listed = next(k for k in http.get("/api/admin/keys").json()["data"] if k["name"] == name)
    assert listed["today"]["requests"] == 1 and listed["today"]["total_tokens"] > 0
    assert listed["last_used_at"] is not None

    revoked = http.delete(f"/api/admin/keys/{listed['id']}")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert http.delete("/api/admin/keys/999999999").status_code == 404
    taken = http.post("/api/admin/keys", json={"name": name})
    assert taken.status_code == 400 and taken.json()["error"]["param"] == "name"


def test_an_admin_key_made_in_the_console_opens_it_and_still_has_its_limits(
    server: LiveServer,
) -> None:
    _, admin = make_key(server, admin=True)
    made = httpx2.post(
        f"{server.url}/api/admin/keys",
        headers=bearer(admin),
        json={"name": f"second-admin-{uuid.uuid4().hex[:8]}", "admin": True, "rpm": 1},
    ).json()
    assert made["admin"] is True
    assert httpx2.get(f"{server.url}/api/admin/keys", headers=bearer(made["key"])).is_success
    ask(server, made["key"], "gpt-4o-mini")
    with pytest.raises(openai.RateLimitError):  # an admin key is still a key: rpm 1
        ask(server, made["key"], "gpt-4o-mini")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "line\nbreak"}, "name"),
        ({"name": "ok", "rpm": 0}, "rpm"),
        ({"name": "ok", "rpm": "5"}, "rpm"),
        ({"name": "ok", "tpm": True}, "tpm"),
        ({"name": "ok", "tokens_per_day": 2**63}, "tokens_per_day"),
        ({"name": "ok", "usd_per_day": -1}, "usd_per_day"),
        ({"name": "ok", "usd_per_day": 1e300}, "usd_per_day"),
        ({"name": "ok", "models": []}, "models"),
        ({"name": "ok", "models": ["gpt-5-imaginary"]}, "models"),
        ({"name": "ok", "models": "gpt-4o"}, "models"),
        ({"name": "ok", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "ok", "admin": "yes"}, "admin"),
        ({"name": "ok", "colour": "red"}, "colour"),
    ],
)
def test_bad_fields_get_400_naming_them(server: LiveServer, body: dict, param: str) -> None:
    _, admin = make_key(server, admin=True)
    answer = httpx2.post(f"{server.url}/api/admin/keys", headers=bearer(admin), json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_bad_queries_and_bodies_get_400(server: LiveServer) -> None:
    _, admin = make_key(server, admin=True)
    with httpx2.Client(base_url=server.url, headers=bearer(admin)) as http:
        for path, param in [
            ("/api/admin/spending?days=0", "days"),
            ("/api/admin/spending?days=367", "days"),
            ("/api/admin/spending?by=colour", "by"),
            ("/api/admin/spending/top?limit=x", "limit"),
            ("/api/admin/spending.csv?days=-1", "days"),
        ]:
            answer = http.get(path)
            assert answer.status_code == 400 and answer.json()["error"]["param"] == param, path
        not_json = http.post("/api/admin/keys", content=b"{nope", headers={"Content-Type": "x"})
        assert not_json.status_code == 400
        listed = http.post("/api/admin/keys", json=["a list"])
        assert listed.status_code == 400


def ledger_sums(first: date, last: date, column: Any) -> dict[str, tuple[int, int, float]]:
    """(requests, tokens, cost) per `column` value from the ledger's rows, summed here."""
    sums: dict[str, tuple[int, int, float]] = {}
    rows = db.session.execute(
        select(
            column,
            func.sum(UsageDay.requests),
            func.sum(UsageDay.prompt_tokens + UsageDay.completion_tokens),
            func.sum(UsageDay.cost),
        )
        .where(UsageDay.day >= first, UsageDay.day <= last)
        .group_by(column)
    )
    for name, requests, tokens, cost in rows:
        sums[name] = (int(requests), int(tokens), float(cost))
    return sums


def test_the_spending_numbers_equal_the_ledgers_sums(server: LiveServer) -> None:
    _, admin = make_key(server, admin=True)
    alice, alice_key = make_key(server)
    bob, bob_key = make_key(server)
    ask(server, alice_key, "gpt-4o-mini")
    ask(server, alice_key, "gpt-4o", stream=True)
    ask(server, bob_key, "gpt-4.1-mini")
    today = datetime.now(UTC).date()
    with server.app.app_context():  # earlier days, as the ledger keeps them
        for back, model, tokens in [(3, "gpt-4o", 1200), (40, "gpt-4o-mini", 700)]:
            db.session.add(
                UsageDay(
                    key_name=alice,
                    day=today - timedelta(days=back),
                    model=model,
                    requests=2,
                    prompt_tokens=tokens,
                    completion_tokens=tokens // 2,
                    cost=tokens / 1e5,
                    counted_requests=0,
                )
            )
        db.session.commit()

    http = httpx2.Client(base_url=server.url, headers=bearer(admin))
    for days in (30, 90):
        first = today - timedelta(days=days - 1)
        for by, column in (("key", UsageDay.key_name), ("model", UsageDay.model)):
            shown = http.get("/api/admin/spending", params={"days": days, "by": by}).json()
            assert shown["dates"][0] == first.isoformat() and shown["dates"][-1] == str(today)
            assert len(shown["dates"]) == days
            with server.app.app_context():
                expected = ledger_sums(first, today, column)
            charted = {
                s["name"]: (sum(s["requests"]), sum(s["total_tokens"]), sum(s["cost"]))
                for s in shown["series"]
            }
            assert charted.keys() == expected.keys()
            for name, (requests, tokens, cost) in expected.items():
                assert charted[name][:2] == (requests, tokens), (by, name)
                assert charted[name][2] == pytest.approx(cost, rel=1e-9, abs=1e-9)
            assert shown["totals"]["requests"] == sum(r for r, _, _ in expected.values())
        alices = next(
            s
            for s in http.get(f"/api/admin/spending?days={days}&by=key").json()["series"]
            if s["name"] == alice
        )
        assert sum(alices["requests"]) == (4 if days == 30 else 6)

    top = http.get("/api/admin/spending/top?limit=100").json()
    assert top["date"] == today.isoformat()
    with server.app.app_context():
        todays = ledger_sums(today, today, UsageDay.key_name)
    for entry in top["keys"]:
        assert (entry["requests"], entry["total_tokens"]) == todays[entry["name"]][:2]
    assert {alice, bob} <= {entry["name"] for entry in top["keys"]}
    assert [e["cost"] for e in top["keys"]] == sorted(
        (e["cost"] for e in top["keys"]), reverse=True
    )

    download = http.get("/api/admin/spending.csv?days=90")
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    mine = [r for r in rows if r["key"] == alice]
    assert sum(int(r["requests"]) for r in mine) == 6
    with server.app.app_context():
        everyone = ledger_sums(today - timedelta(days=89), today, UsageDay.key_name)
    assert sum(int(r["total_tokens"]) for r in rows) == sum(t for _, t, _ in everyone.values())


def test_keys_create_admin_on_the_command_line(server: LiveServer) -> None:
    name = f"cli-admin-{uuid.uuid4().hex[:8]}"
    made = server.app.test_cli_runner().invoke(args=["keys", "create", "--name", name, "--admin"])
    assert made.exit_code == 0, made.stderr
    assert "Admin key" in made.stderr
    key = made.stdout.strip()
    assert httpx2.get(f"{server.url}/api/admin/keys", headers=bearer(key)).status_code == 200
    listing = server.app.test_cli_runner().invoke(args=["keys", "list"]).output
    assert next(line for line in listing.splitlines() if line.startswith(name)).endswith("admin")


def test_no_other_site_may_call_the_console_api(make_app: Callable[..., Flask]) -> None:
    app = make_app(CHATPROXY_AUTH="keys", CHATPROXY_CORS_ORIGINS="https://pages.example")
    client = app.test_client()
    preflight = {
        "Origin": "https://pages.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = client.options("/api/usage", headers=preflight)
    assert allowed.headers.get("Access-Control-Allow-Origin") == "https://pages.example"
    for path in ("/api/admin/keys", "/api/admin/spending"):
        refused = client.options(path, headers=preflight)
        assert "Access-Control-Allow-Origin" not in refused.headers, path
