"""`flask chat`: a conversation in the terminal, stored like the page's.

It uses the same store, personas and upstream as the service, with the
settings of `.env` and the environment (`flask --app app chat`). `/edit`
changes the last question and sends it again, `/retry` answers it again; both
keep the old version, a branch of the conversation as on the page. `/attach
PATH` adds an image or a file to the next question (checked as `/callChatGPT`
checks them: `chatproxy.attachments`). In simulator
mode without OPENAI_BASE_URL it starts the built-in simulator for itself, as
gunicorn does; with no upstream at all it says in one line what to set.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import click
from flask.cli import with_appcontext
from werkzeug.datastructures import FileStorage

from chatproxy.cli.store import upgrade_store
from chatproxy.config import ConfigError, Settings, require_upstream
from chatproxy.errors import APIError
from chatproxy.images import NotAnImage, sniff_image
from chatproxy.questions import parse_question
from chatproxy.simulator_process import start_simulator
from chatproxy.state import current_settings
from chatproxy.store.answers import Outcome, fail_turn, finish_turn
from chatproxy.store.conversations import (
    Turn,
    defaults_from,
    find_conversation,
    last_question,
    parse_conversation_id,
    start_regenerate,
    start_turn,
)
from chatproxy.store.database import db
from chatproxy.store.models import Conversation
from chatproxy.store.personas import all_personas
from chatproxy.upstream.client import Upstream, current_upstream
from chatproxy.upstream.reasoning import Reasoning
from chatproxy.upstream.streams import StreamClosed

EXIT_WORDS = ("exit", "quit", "结束")
THINKING, THOUGHT = "[thinking] ", " [/thinking]\n"  # around the model's reasoning
BLOCK = '"""'
EDIT, RETRY = "/edit", "/retry"  # commands typed alone on a line
ATTACH = "/attach "  # followed by a path


@click.command("chat")
@with_appcontext
@click.option("--persona", help="A persona's id (see personas/).")
@click.option("--model", help="A model of CHATPROXY_MODELS.")
@click.option("--conversation", "conversation_id", help="Go on with this conversation's id.")
@click.option("--key", "owner", help="As the access key of this name (its conversations).")
def chat(
    persona: str | None, model: str | None, conversation_id: str | None, owner: str | None
) -> None:
    """Chat in the terminal; the conversation is stored like those of the page.

    Enter sends. A line ending in a backslash goes on on the next line; a
    line of three double quotes starts and ends a block of several lines.
    `/edit` changes the last question and sends it again, `/retry` answers
    it again (the old versions are kept, as branches). `/attach PATH` adds an
    image (PNG, JPEG, WebP, GIF) or a file (text, code, PDF, .docx) to the
    next question.
    `exit`, `quit` or `结束` (or Ctrl-D) leaves; Ctrl-C stops an answer.
    """
    settings = current_settings()
    with _upstream_for(settings) as upstream:
        upgrade_store()
        conversation = _conversation(conversation_id, owner)
        _chat(settings, upstream, conversation, {"persona": persona, "model": model}, owner)


@contextmanager
def _upstream_for(settings: Settings) -> Iterator[Upstream]:
    """The app's upstream; in simulator mode without OPENAI_BASE_URL, a simulator of our own.

    Exits with one line when there is no upstream at all. The simulator takes
    a free port (a `make run` may hold SIMULATOR_PORT) and stops with the chat.
    """
    try:
        require_upstream(settings)
        simulator = None
        if settings.simulator_port is not None:
            simulator = start_simulator(0, settings.upstream_key or "")
    except ConfigError as error:
        raise SystemExit(f"chatproxy: {error}") from None
    if simulator is None:
        yield current_upstream()
        return
    try:
        yield Upstream(replace(settings, openai_base_url=simulator.url, simulator_port=None))
    finally:
        simulator.stop()


def _chat(
    settings: Settings,
    upstream: Upstream,
    conversation: Conversation | None,
    options: dict[str, str | None],
    owner: str | None,
) -> None:
    """Read questions and print the answers until an exit word or the end of input."""
    personas = all_personas()
    defaults = defaults_from(conversation, settings, personas)
    shown = {**defaults, **{k: v for k, v in options.items() if v}}
    click.echo(
        f"chatproxy chat · model {shown.get('model') or settings.model}"
        + (f" · persona {shown['persona']}" if shown.get("persona") else "")
        + f' · "{EXIT_WORDS[0]}", "{EXIT_WORDS[1]}" or "{EXIT_WORDS[2]}" leaves'
    )
    click.echo(
        f"{EDIT} changes your last question, {RETRY} answers it again, "
        f"{ATTACH.strip()} PATH adds an image or file to the next."
    )
    attached: dict[str, list[FileStorage]] = {"image": [], "file": []}
    if settings.simulator_in_use:
        click.echo("Demo mode: answers come from the built-in simulator, not OpenAI.")
    if conversation is not None:
        click.echo(f"Going on with: {conversation.title}")
    while True:
        text = _read_question()
        if text is None:
            break
        command = text.strip()
        if not command:
            continue
        if command.startswith(ATTACH):
            _attach(Path(command[len(ATTACH) :].strip()).expanduser(), attached, settings)
            continue
        edit_of = None
        if command in (EDIT, RETRY):
            if conversation is None:
                click.echo("Nothing asked yet in this conversation.")
                continue
            try:
                asked = last_question(conversation)
            except APIError as error:
                click.echo(click.style(f"Error: {error.message}", fg="red"), err=True)
                continue
            if command == EDIT:
                text = _edited(asked.content)
                if text is None or not text.strip() or text == asked.content:
                    click.echo("Not changed.")
                    continue
                edit_of = asked.id
            else:
                text = asked.content
        values = {**defaults_from(conversation, settings, personas), **options, "input": text}
        values = {k: v for k, v in values.items() if v}
        try:
            uploads = {} if command == RETRY else attached
            question = parse_question(
                values, settings, wants="text", personas=personas, uploads=uploads
            )
            if command == RETRY and conversation is not None:
                turn = start_regenerate(db.session, conversation, question, settings)
            else:
                turn = start_turn(db.engine, question, settings, conversation, owner, edit_of)
        except APIError as error:
            click.echo(click.style(f"Error: {error.message}", fg="red"), err=True)
            attached = {"image": [], "file": []}  # /attach them again, or others
            continue
        attached = {"image": [], "file": []}
        _answer(turn, upstream)
        db.session.expire_all()
        conversation = db.session.get(Conversation, turn.conversation_id)
    if conversation is not None:
        click.echo(
            f"Saved as conversation {conversation.id}; "
            f"go on with: flask chat --conversation {conversation.id}"
        )


def _attach(path: Path, attached: dict[str, list[FileStorage]], settings: Settings) -> None:
    """Add the file at `path` to `attached` for the next question: an image if its bytes are
    one, else a file; says what it did, or why not (missing, unreadable, too large)."""
    limit = max(settings.max_image_bytes, settings.max_file_bytes)
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        click.echo(click.style(f"Cannot attach {path}: {error.strerror}", fg="red"), err=True)
        return
    try:
        sniff_image(data)
        kind = "image"
    except NotAnImage:
        kind = "file"
    if len(data) > (settings.max_image_bytes if kind == "image" else settings.max_file_bytes):
        click.echo(click.style(f"Cannot attach {path}: it is too large.", fg="red"), err=True)
        return
    attached[kind].append(FileStorage(io.BytesIO(data), filename=path.name))
    count = len(attached["image"]) + len(attached["file"])
    click.echo(f"Attached {kind} {path.name} ({len(data):,} bytes); {count} for the next question.")


def _conversation(conversation_id: str | None, owner: str | None = None) -> Conversation | None:
    try:
        checked = parse_conversation_id(conversation_id)
        return find_conversation(db.session, checked, owner) if checked else None
    except APIError as error:
        raise click.BadParameter(error.message, param_hint="--conversation") from None


def _edited(question: str) -> str | None:
    """The last question as the user edits it: shown, then typed again (prefilled where the
    terminal has readline); None at the end of input."""
    click.echo(f"Editing: {question}")
    try:
        import readline
    except ImportError:  # Windows without pyreadline: typed again from scratch
        return _read_question("Edit: ", exits=False)

    def prefill() -> None:  # the first line only, not a continuation's
        readline.insert_text(question)
        readline.set_startup_hook(None)

    if "\n" not in question:  # readline edits one line; a block is typed again
        readline.set_startup_hook(prefill)
    try:
        return _read_question("Edit: ", exits=False)
    finally:
        readline.set_startup_hook(None)


def _read_question(first_prompt: str = "\nYou: ", exits: bool = True) -> str | None:
    """One question from the terminal, or None to leave (an exit word when `exits`, or the
    end of input)."""
    lines: list[str] = []
    in_block = False
    prompt = first_prompt
    while True:
        try:
            line = input(prompt)
        except EOFError:
            return None
        prompt = "... "
        if line.strip() == BLOCK:
            if in_block:
                return "\n".join(lines)
            in_block = True
            continue
        if in_block:
            lines.append(line)
        elif line.endswith("\\"):
            lines.append(line[:-1])
        else:
            lines.append(line)
            text = "\n".join(lines)
            if exits and text.strip().lower() in EXIT_WORDS:
                return None
            return text


def _answer(turn: Turn, upstream: Upstream) -> None:
    """Stream the answer of `turn` to the terminal and store it; Ctrl-C stops it.

    The model's reasoning comes first, dimmed between `[thinking]` and
    `[/thinking]` (the marks stay where the terminal shows no styles).
    """
    engine = db.engine
    try:
        stream = upstream.open_chat_stream(turn.params)
    except APIError as error:
        fail_turn(engine, turn, error)
        click.echo(click.style(f"Error: {error.message}", fg="red"), err=True)
        return
    pieces: list[str] = []
    thoughts: list[str] = []
    thinking_since: float | None = None
    outcome = Outcome(content="")
    click.echo("AI: ", nl=False)
    try:
        for piece in stream:
            if isinstance(piece, Reasoning):
                if thinking_since is None:
                    thinking_since = time.monotonic()
                    click.echo(click.style(THINKING, dim=True), nl=False)
                thoughts.append(piece)
                click.echo(click.style(piece, dim=True), nl=False)
            else:
                if thoughts and not pieces and thinking_since is not None:
                    outcome.reasoning_seconds = time.monotonic() - thinking_since
                    click.echo(click.style(THOUGHT, dim=True))
                pieces.append(piece)
                click.echo(piece, nl=False)
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.close()
        outcome.closed = True
        click.echo(click.style(" [stopped]", fg="yellow"), nl=False)
    except StreamClosed:
        outcome.closed = True
    except APIError as error:
        outcome.error = error
        click.echo(click.style(f"\nError: {error.message}", fg="red"), err=True)
    finally:
        stream.close()
    click.echo()
    outcome.content = "".join(pieces)
    outcome.reasoning = "".join(thoughts)
    outcome.model, outcome.finish_reason, outcome.usage = (
        stream.model,
        stream.finish_reason,
        stream.usage,
    )
    finish_turn(engine, turn, outcome)
