"""The owner's commands: `flask conversations list|export`, `flask keys ...`, `flask usage`."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime

import click
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from chatproxy.access.keys import issue_key, revoke_key
from chatproxy.cli.store import upgrade_store
from chatproxy.errors import APIError
from chatproxy.state import current_settings
from chatproxy.store.database import db
from chatproxy.store.exports import iso, to_json, to_markdown
from chatproxy.store.models import AccessKey, Conversation, UsageDay

BIGGEST = 2**63 - 1  # a limit the store keeps (64-bit integer columns)

# Each group's callback runs before any of its commands.
conversations_cli = AppGroup(
    "conversations",
    help="List and export stored conversations.",
    callback=with_appcontext(upgrade_store),
)
keys_cli = AppGroup(
    "keys",
    help="Access keys of chatproxy: create, list, revoke.",
    callback=with_appcontext(upgrade_store),
)


@conversations_cli.command("list")
@click.option("--search", help="Only titles containing this text.")
@click.option("--key", "owner", help="Only those of the access key of this name.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def list_command(search: str | None, owner: str | None, limit: int) -> None:
    """The stored conversations, newest first: id, last update (UTC), messages, key, title.

    Everyone's, unless --key names one key's.
    """
    query = select(Conversation).order_by(Conversation.updated_at.desc()).limit(limit)
    if owner is not None:
        query = query.where(Conversation.owner == owner)
    if search:
        query = query.where(Conversation.title.contains(search, autoescape=True))
    for conversation in db.session.scalars(query):
        click.echo(
            f"{conversation.id}  {iso(conversation.updated_at)}  "
            f"{len(conversation.messages):>4}  {conversation.owner or '-'}  {conversation.title}"
        )


@conversations_cli.command("export")
@click.argument("conversation_id")
@click.option(
    "--format", "kind", type=click.Choice(["md", "json"]), default="md", show_default=True
)
def export_command(conversation_id: str, kind: str) -> None:
    """Print a conversation (anyone's) as Markdown or JSON, the shapes of the page's downloads."""
    conversation = db.session.get(Conversation, conversation_id.strip().lower())
    if conversation is None:
        raise click.BadParameter("no such conversation", param_hint="CONVERSATION_ID")
    if kind == "json":
        click.echo(json.dumps(to_json(conversation), ensure_ascii=False, indent=2))
    else:
        click.echo(to_markdown(conversation))


@keys_cli.command("create")
@click.option("--name", required=True, help="Who or what the key is for (unique).")
@click.option("--rpm", type=click.IntRange(1, BIGGEST), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(1, BIGGEST), help="Tokens per minute.")
@click.option("--tokens-per-day", type=click.IntRange(1, BIGGEST), help="Tokens per UTC day.")
@click.option("--usd-per-day", type=click.FloatRange(0, min_open=True), help="USD per UTC day.")
@click.option("--models", help="Comma-separated models the key may use (default: all).")
@click.option("--expires", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M"]), help="UTC.")
@click.option("--admin", is_flag=True, help="May also open the console (/admin) and its API.")
def keys_create(
    name: str,
    rpm: int | None,
    tpm: int | None,
    tokens_per_day: int | None,
    usd_per_day: float | None,
    models: str | None,
    expires: datetime | None,
    admin: bool,
) -> None:
    """Make an access key and print it, once: it is stored only as a hash.

    With --admin the key may also open the console (/admin) and call its API.
    """
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
    unknown = [m for m in allowed or () if not current_settings().allows(m)]
    if unknown:
        raise click.BadParameter(
            f"not in CHATPROXY_MODELS: {', '.join(unknown)}", param_hint="--models"
        )
    try:
        key = issue_key(
            name,
            rpm=rpm,
            tpm=tpm,
            tokens_per_day=tokens_per_day,
            usd_per_day=usd_per_day,
            models=allowed,
            expires_at=expires.replace(tzinfo=UTC) if expires else None,
            admin=admin,
        )
    except APIError as error:
        raise click.BadParameter(error.message, param_hint="--name") from None
    click.echo(key)
    kind = "Admin key" if admin else "Key"
    click.echo(f"{kind} {name!r} made. Keep it now: it cannot be shown again.", err=True)


@keys_cli.command("list")
def keys_list() -> None:
    """Every key: name, prefix, limits, models, expiry, last use, whether revoked, whether admin."""
    header = "name\tprefix\trpm\ttpm\ttokens/day\tUSD/day\tmodels\texpires\tlast used\tstate\tadmin"
    click.echo(header)
    for key in db.session.scalars(select(AccessKey).order_by(AccessKey.name)):
        fields = [
            key.name,
            key.prefix + "...",
            key.rpm,
            key.tpm,
            key.tokens_per_day,
            key.usd_per_day,
            key.models or "all",
            iso(key.expires_at) if key.expires_at else "never",
            iso(key.last_used_at) if key.last_used_at else "never",
            "revoked" if key.revoked_at else "active",
            "admin" if key.admin else "-",
        ]
        click.echo("\t".join("-" if f is None else str(f) for f in fields))


@keys_cli.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke the key NAME: it is refused (401) from now on."""
    if not revoke_key(name):
        raise click.ClickException(f"no active key named {name!r}")
    click.echo(f"Key {name!r} revoked.")


@click.command("usage")
@with_appcontext
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="First UTC day (default: all).")
@click.option("--key", "key_name", help="Only this key (`open` for open access).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a table.")
def usage_command(since: datetime | None, key_name: str | None, as_csv: bool) -> None:
    """The usage ledger: per UTC day, key and model, requests, tokens and USD.

    `counted` is how many of the requests had no usage from the upstream (cut
    short, or a server that sends none) and were counted by chatproxy.
    """
    upgrade_store()
    query = select(UsageDay).order_by(UsageDay.day, UsageDay.key_name, UsageDay.model)
    if since is not None:
        query = query.where(UsageDay.day >= since.date())
    if key_name is not None:
        query = query.where(UsageDay.key_name == key_name)
    header = ["day", "key", "model", "requests", "prompt_tokens", "completion_tokens", "cost_usd"]
    header.append("counted")
    rows = [
        [
            row.day.isoformat(),
            row.key_name,
            row.model,
            row.requests,
            row.prompt_tokens,
            row.completion_tokens,
            f"{row.cost:.6f}",
            row.counted_requests,
        ]
        for row in db.session.scalars(query)
    ]
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return
    click.echo("\t".join(header))
    for row in rows:
        click.echo("\t".join(str(field) for field in row))
