"""`flask requests`: the request log table, newest first, filtered; old rows pruned on demand."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime

import click
from flask.cli import with_appcontext

from chatproxy.cli.store import upgrade_store
from chatproxy.logsafe import escape_controls
from chatproxy.state import current_settings
from chatproxy.store.database import db
from chatproxy.store.request_log import Filters, recent, request_log, row_object

TIMES = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
HEADER = [
    "at",
    "request_id",
    "key",
    "route",
    "model",
    "upstream",
    "status",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cost",
    "ttft_ms",
    "total_ms",
]


@click.command("requests")
@with_appcontext
@click.option("--key", help="Only this key's (`open` for open access).")
@click.option("--model", help="Only requests for this model.")
@click.option("--status", type=click.IntRange(100, 599), help="Only this HTTP status.")
@click.option("--since", type=click.DateTime(TIMES), help="From this time (UTC).")
@click.option("--until", type=click.DateTime(TIMES), help="Before this time (UTC).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a table.")
@click.option("--prune", is_flag=True, help="First delete rows older than the retention.")
def requests_command(
    key: str | None,
    model: str | None,
    status: int | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    as_csv: bool,
    prune: bool,
) -> None:
    """The request log, newest first: one row per request that reached the upstream or was
    refused by a limit (never a question, an answer or a key). Times in UTC; cost in USD;
    ttft_ms is the time to a streamed answer's first piece, total_ms to its end."""
    upgrade_store()
    settings = current_settings()
    if prune:
        days = settings.request_log_days
        pruned = request_log(db.engine, days).prune(datetime.now(UTC)) if days else 0
        click.echo(f"{pruned} rows older than {days} days deleted.", err=True)
    filters = Filters(
        key=key,
        model=model,
        status=status,
        since=since.replace(tzinfo=UTC) if since else None,
        until=until.replace(tzinfo=UTC) if until else None,
    )
    rows = [row_object(row) for row in recent(db.session, filters, limit)]
    lines = [[row[name] for name in HEADER] for row in rows]
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(lines)
        return
    click.echo("\t".join(HEADER))
    for line in lines:
        # A model's name is a client's text: none of its control characters reach the terminal.
        click.echo(
            "\t".join("-" if field is None else escape_controls(str(field)) for field in line)
        )
