"""Settings, read once from the environment (and `.env`) and checked at start-up.

Every setting has one reader here, one default, and one line in `.env.example`.
A wrong value raises `ConfigError` with a single line that names the variable.
How each kind of value (a number, a URL, a JSON file) is read and checked is
`chatproxy.environment`'s.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chatproxy.environment import PROJECT_ROOT, ConfigError, Reader, is_http_url
from chatproxy.upstream_targets import ModelRoutes, UpstreamTarget, host_of, upstream_targets

SIMULATOR_KEY = "sk-sim-local"
"""The upstream key used in simulator mode when `OPENAI_API_KEY` is not set."""

DEFAULT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "gpt-4.1",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "omni-moderation-latest",
    "whisper-1",
    "gpt-4o-mini-transcribe",
    "tts-1",
    "gpt-4o-mini-tts",
    "dall-e-3",
    "gpt-image-1",
)

COMPLETION_MODELS = frozenset({"gpt-3.5-turbo-instruct", "davinci-002", "babbage-002"})
"""OpenAI's models that answer only legacy completions (`POST /v1/completions`), never chat."""

REASONING_MODELS = ("o1*", "o3*", "o4*", "gpt-5*", "deepseek-reasoner*", "gpt-oss*")
"""Models that take `reasoning_effort` unless CHATPROXY_REASONING_MODELS names others: OpenAI's
o-series and gpt-5, DeepSeek's reasoner, gpt-oss (patterns, see `takes_reasoning_effort`)."""
VISION_MODELS = (
    "gpt-4o*",
    "chatgpt-4o*",
    "gpt-4.1*",
    "gpt-4.5*",
    "gpt-4-turbo*",
    "gpt-5*",
    "o1",
    "o1-20*",
    "o3*",
    "o4*",
    "llava*",
    "gemma3*",
    "qwen*vl*",
)
"""Models that see images unless CHATPROXY_VISION_MODELS names others: OpenAI's families with
vision, and Ollama's llava, gemma3 and Qwen-VL (patterns, see `sees_images`)."""
NOT_CHAT_MODELS = COMPLETION_MODELS | {
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "tts-1",
    "tts-1-hd",
    "gpt-4o-mini-tts",
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
}
"""OpenAI's models that answer no chat: legacy completion, embedding, moderation, audio and
image models (`/v1/completions`, `/v1/embeddings`, `/v1/moderations`, `/v1/audio/...`,
`/v1/images/...`)."""

# OpenAI's largest audio upload (25 MB), and room for the multipart fields around it.
DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024 + 1024 * 1024

OPENAI_BASE_URL = "https://api.openai.com/v1"

DEFAULT_DATABASE_URL = "sqlite:///chatproxy.db"
"""A SQLite file in the instance folder (`instance/chatproxy.db`)."""


@dataclass(frozen=True)
class Settings:
    """What the application needs to know, validated (see `.env.example`)."""

    upstream: str = "openai"
    # Where gunicorn, `flask run` and `flask chat` start the built-in simulator:
    # set in simulator mode when no OPENAI_BASE_URL names a server.
    simulator_port: int | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_org_id: str | None = None
    openai_project_id: str | None = None
    openai_proxy: str | None = field(default=None, repr=False)
    model: str = DEFAULT_MODELS[0]
    models: tuple[str, ...] = DEFAULT_MODELS
    reasoning_models: tuple[str, ...] = REASONING_MODELS
    max_tokens: int = 4096
    max_n: int = 4
    reservation_seconds: float = 600.0
    context_window: int = 8192
    prices_file: Path | None = None
    max_input_chars: int = 16000
    max_body_bytes: int = 1024 * 1024
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    vision_models: tuple[str, ...] = VISION_MODELS
    max_image_bytes: int = 10 * 1024 * 1024
    max_images: int = 10
    max_file_bytes: int = 10 * 1024 * 1024
    max_files: int = 5
    upload_memory_bytes: int = 64 * 1024 * 1024
    timeout: float = 120.0
    connect_timeout: float = 10.0
    max_retries: int = 2
    retry_deadline: float = 10.0
    max_connections: int = 1000
    keepalive_interval: float = 15.0
    checkpoint_seconds: float = 5.0
    cors_origins: tuple[str, ...] = ()
    auth: str = "keys"
    personas_dir: Path = PROJECT_ROOT / "personas"
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    database_pool_size: int = 10
    redis_url: str | None = field(default=None, repr=False)
    ip_rpm: int | None = None
    trusted_proxies: int = 0
    log_format: str = "plain"
    log_content: bool = False
    request_log_days: int = 30
    metrics_token: str | None = field(default=None, repr=False)
    upstreams: tuple[UpstreamTarget, ...] = ()
    upstream_order: str = "order"
    upstream_failures: int = 3
    upstream_cooldown: float = 30.0
    # Patterns of CHATPROXY_UPSTREAMS entries that admit a model not in `models`
    # (only while CHATPROXY_MODELS is unset, see `allows`).
    model_patterns: tuple[str, ...] = ()
    # Which upstreams serve which model; None when no entry names models or aliases.
    routes: ModelRoutes | None = field(default=None, repr=False, compare=False)

    @property
    def chat_models(self) -> tuple[str, ...]:
        """The models that answer chat: `models` but OpenAI's legacy completion, embedding and
        moderation ones (NOT_CHAT_MODELS).

        The page, `/callChatGPT` and `/api/models` offer only these; `/v1` all.
        """
        return tuple(model for model in self.models if model not in NOT_CHAT_MODELS)

    def allows(self, model: str) -> bool:
        """True when clients may ask for `model`: one of `models`, or a name an upstream's
        pattern matches while CHATPROXY_MODELS is unset (`model_patterns`)."""
        return model in self.models or any(
            fnmatch.fnmatchcase(model, pattern) for pattern in self.model_patterns
        )

    def served(self, model: str) -> bool:
        """True when some upstream serves `model` (always, when no entry names models)."""
        return self.routes is None or self.routes.serves(model)

    def upstream_model(self, model: str) -> str:
        """The name the upstream knows `model` by (an alias's target; prices are by it)."""
        return model if self.routes is None else self.routes.upstream_model(model)

    def takes_reasoning_effort(self, model: str) -> bool:
        """True when `model` takes `reasoning_effort`: its name, after any `provider/` prefix,
        matches one of `reasoning_models` (shell patterns: `*` matches anything)."""
        name = model.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.reasoning_models)

    def sees_images(self, model: str) -> bool:
        """True when `model` takes images: its name, after any `provider/` prefix, matches
        one of `vision_models` (shell patterns)."""
        name = model.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.vision_models)

    @property
    def simulator_in_use(self) -> bool:
        """True when answers come from the built-in simulator, not a real upstream."""
        return self.upstream == "simulator"

    @property
    def upstream_key(self) -> str | None:
        """The key sent upstream: the configured one, or the simulator's own."""
        if self.openai_api_key:
            return self.openai_api_key
        return SIMULATOR_KEY if self.simulator_in_use else None

    @property
    def upstream_targets(self) -> tuple[UpstreamTarget, ...]:
        """The servers to ask, in the order given: CHATPROXY_UPSTREAMS, else the one of
        OPENAI_BASE_URL and OPENAI_API_KEY; none when there is no key."""
        if self.upstreams:
            return self.upstreams
        key = self.upstream_key
        if key is None:
            return ()
        base_url = self.openai_base_url or OPENAI_BASE_URL
        return (UpstreamTarget(host_of(base_url), base_url, key),)


@dataclass(frozen=True)
class ServerSettings:
    """Gunicorn's settings (read by `gunicorn.conf.py`)."""

    bind: str = "127.0.0.1:8000"
    workers: int = 2
    worker_class: str = "gevent"
    worker_connections: int = 1000
    timeout: int = 120
    graceful_timeout: int = 60
    keepalive: int = 5
    log_level: str = "info"
    access_log: str | None = None
    error_log: str = "-"


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read and check the application's settings from `environ`.

    Raises ConfigError naming the first variable with a wrong value.
    """
    env = Reader(environ)
    upstream = env.choice("CHATPROXY_UPSTREAM", ("openai", "simulator"), "openai")
    openai_api_key = env.optional("OPENAI_API_KEY")
    # The key of upstreams that name none: as Settings.upstream_key has it.
    default_key = openai_api_key or (SIMULATOR_KEY if upstream == "simulator" else None)
    upstreams = upstream_targets(env.optional("CHATPROXY_UPSTREAMS"), default_key)
    routes = ModelRoutes(upstreams)
    models, patterns = _offered_models(env, routes)
    offered = routes.names_models and env.optional("CHATPROXY_MODELS") is None
    model = _default_model(env, models, offered)
    origins = env.items("CHATPROXY_CORS_ORIGINS", ())
    for origin in origins:
        if origin == "*" or not is_http_url(origin):
            raise ConfigError(
                f"CHATPROXY_CORS_ORIGINS must list origins like https://example.com, got {origin!r}"
            )
    base_url = env.url("OPENAI_BASE_URL", ("http", "https"))
    simulator_port = None
    if upstream == "simulator" and base_url is None:
        # The simulator gunicorn.conf.py starts (or `make simulator`) listens there.
        simulator_port = env.number("SIMULATOR_PORT", int, 8001, low=1, high=65535)
        base_url = f"http://127.0.0.1:{simulator_port}/v1"
    return Settings(
        upstream=upstream,
        simulator_port=simulator_port,
        openai_api_key=openai_api_key,
        openai_base_url=base_url,
        openai_org_id=env.optional("OPENAI_ORG_ID"),
        openai_project_id=env.optional("OPENAI_PROJECT_ID"),
        openai_proxy=env.url("OPENAI_PROXY", ("http", "https", "socks5", "socks5h")),
        model=model,
        models=models,
        reasoning_models=env.items("CHATPROXY_REASONING_MODELS", REASONING_MODELS),
        max_tokens=env.number("CHATPROXY_MAX_TOKENS", int, 4096, low=1),
        max_n=env.number("CHATPROXY_MAX_N", int, 4, low=1, high=128),
        reservation_seconds=env.number("CHATPROXY_RESERVATION_SECONDS", float, 600.0, low=1),
        context_window=env.number("CHATPROXY_CONTEXT_WINDOW", int, 8192, low=256),
        prices_file=env.path("CHATPROXY_PRICES_FILE"),
        max_input_chars=env.number("CHATPROXY_MAX_INPUT_CHARS", int, 16000, low=1),
        max_body_bytes=env.number("CHATPROXY_MAX_BODY_BYTES", int, 1024 * 1024, low=1024),
        max_upload_bytes=env.number(
            "CHATPROXY_MAX_UPLOAD_BYTES", int, DEFAULT_MAX_UPLOAD_BYTES, low=1024
        ),
        vision_models=env.items("CHATPROXY_VISION_MODELS", VISION_MODELS),
        max_image_bytes=env.number("CHATPROXY_MAX_IMAGE_BYTES", int, 10 * 1024 * 1024, low=1024),
        max_images=env.number("CHATPROXY_MAX_IMAGES", int, 10, low=0, high=100),
        max_file_bytes=env.number("CHATPROXY_MAX_FILE_BYTES", int, 10 * 1024 * 1024, low=1024),
        max_files=env.number("CHATPROXY_MAX_FILES", int, 5, low=0, high=100),
        upload_memory_bytes=env.number(
            "CHATPROXY_UPLOAD_MEMORY_BYTES", int, 64 * 1024 * 1024, low=1024 * 1024
        ),
        timeout=env.number("CHATPROXY_TIMEOUT", float, 120.0, low=0.1),
        connect_timeout=env.number("CHATPROXY_CONNECT_TIMEOUT", float, 10.0, low=0.1),
        max_retries=env.number("CHATPROXY_MAX_RETRIES", int, 2, low=0, high=10),
        retry_deadline=env.number("CHATPROXY_RETRY_DEADLINE", float, 10.0, low=0),
        max_connections=env.number("CHATPROXY_MAX_CONNECTIONS", int, 1000, low=1),
        keepalive_interval=env.number("CHATPROXY_KEEPALIVE", float, 15.0, low=0.1),
        checkpoint_seconds=env.number("CHATPROXY_CHECKPOINT_SECONDS", float, 5.0, low=0),
        cors_origins=origins,
        auth=env.choice("CHATPROXY_AUTH", ("keys", "open"), "keys"),
        personas_dir=env.folder("CHATPROXY_PERSONAS_DIR", PROJECT_ROOT / "personas"),
        database_url=database_url(env.text("DATABASE_URL", DEFAULT_DATABASE_URL)),
        database_pool_size=env.number("DATABASE_POOL_SIZE", int, 10, low=1),
        redis_url=env.url("REDIS_URL", ("redis", "rediss")),
        ip_rpm=env.number("CHATPROXY_IP_RPM", int, 0, low=0) or None,
        trusted_proxies=env.number("CHATPROXY_TRUSTED_PROXIES", int, 0, low=0, high=5),
        log_format=env.choice("CHATPROXY_LOG_FORMAT", ("plain", "json"), "plain"),
        log_content=env.choice("CHATPROXY_LOG_CONTENT", ("0", "1"), "0") == "1",
        request_log_days=env.number("CHATPROXY_REQUEST_LOG_DAYS", int, 30, low=0, high=3650),
        metrics_token=metrics_token(env.optional("CHATPROXY_METRICS_TOKEN")),
        upstreams=upstreams,
        upstream_order=env.choice("CHATPROXY_UPSTREAM_ORDER", ("order", "weight"), "order"),
        upstream_failures=env.number("CHATPROXY_UPSTREAM_FAILURES", int, 3, low=1),
        upstream_cooldown=env.number("CHATPROXY_UPSTREAM_COOLDOWN", float, 30.0, low=0),
        model_patterns=patterns,
        routes=routes if routes.names_models else None,
    )


def _offered_models(env: Reader, routes: ModelRoutes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The models clients may name, and the patterns that admit others (docs/upstreams.md).

    CHATPROXY_MODELS when set: then every one must be served by some upstream
    (ConfigError). Unset, when CHATPROXY_UPSTREAMS entries name models or
    aliases: those names (and DEFAULT_MODELS if an entry serves every model),
    with the entries' patterns admitting more. Otherwise DEFAULT_MODELS.
    """
    if not routes.names_models:
        return env.items("CHATPROXY_MODELS", DEFAULT_MODELS), ()
    if env.optional("CHATPROXY_MODELS") is None:
        return routes.offered(DEFAULT_MODELS), routes.patterns()
    models = env.items("CHATPROXY_MODELS", ())
    for model in models:
        if not routes.serves(model):
            raise ConfigError(
                f"CHATPROXY_MODELS names {model!r}, which no entry of CHATPROXY_UPSTREAMS "
                "serves (add it to an entry's models or aliases)"
            )
    return models, ()


def _default_model(env: Reader, models: tuple[str, ...], offered: bool) -> str:
    """CHATPROXY_MODEL, checked: one of `models`, and a chat model (ConfigError otherwise).

    Unset, it is DEFAULT_MODELS[0]; or, when the upstreams' entries `offered`
    the models and that one is not among them, the first chat model they name.
    """
    model = env.optional("CHATPROXY_MODEL")
    if model is None:
        chat = [name for name in models if name not in NOT_CHAT_MODELS]
        model = (
            chat[0] if offered and chat and DEFAULT_MODELS[0] not in models else DEFAULT_MODELS[0]
        )
    if model not in models:
        raise ConfigError(
            f"CHATPROXY_MODEL={model!r} is not one of "
            f"{'the models CHATPROXY_UPSTREAMS names' if offered else 'CHATPROXY_MODELS'} "
            f"({', '.join(models) or 'none: name one exactly in an entry'})"
        )
    if model in NOT_CHAT_MODELS:
        what = "legacy completions" if model in COMPLETION_MODELS else "no chat"
        raise ConfigError(f"CHATPROXY_MODEL={model!r} answers only {what}: choose a chat model")
    return model


_TOKEN = re.compile(r"[\x21-\x7e]{16,200}")


def metrics_token(value: str | None) -> str | None:
    """CHATPROXY_METRICS_TOKEN checked: 16 to 200 visible ASCII characters (it goes in a header).

    Raises ConfigError, which never shows the token.
    """
    if value is not None and not _TOKEN.fullmatch(value):
        raise ConfigError(
            "CHATPROXY_METRICS_TOKEN must be 16 to 200 visible ASCII characters, e.g. from "
            'python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return value


def database_url(value: str) -> str:
    """DATABASE_URL as SQLAlchemy takes it: SQLite, or PostgreSQL through psycopg 3.

    `postgres://` and `postgresql://` (as hosting services write them) become
    `postgresql+psycopg://`; a relative SQLite path is taken from the instance
    folder. Raises ConfigError for other databases (the error hides the password).
    """
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ConfigError(
            "DATABASE_URL must look like sqlite:///chatproxy.db or postgresql://user@host/db"
        )
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        return "postgresql+psycopg://" + rest
    if scheme == "sqlite":
        return value
    raise ConfigError(
        f"DATABASE_URL must start with sqlite:// or postgresql://, got {scheme + '://'!r}"
    )


def require_upstream(settings: Settings) -> None:
    """Raise ConfigError unless there is an upstream to ask: a key, or the simulator chosen.

    Serving and `flask chat` need one; the commands that never ask (keys,
    usage, conversations) do not.
    """
    if not settings.upstream_targets:
        raise ConfigError(
            "OPENAI_API_KEY is not set: set it (in .env), or set CHATPROXY_UPSTREAM=simulator "
            "to answer from the built-in simulator"
        )


def load_server_settings(environ: Mapping[str, str]) -> ServerSettings:
    """Read and check gunicorn's settings from `environ`; raises ConfigError."""
    env = Reader(environ)
    return ServerSettings(
        bind=env.text("BIND", "127.0.0.1:8000"),
        workers=env.number("WORKERS", int, os.cpu_count() or 2, low=1),
        worker_class=env.text("WORKER_CLASS", "gevent"),
        worker_connections=env.number("WORKER_CONNECTIONS", int, 1000, low=1),
        timeout=env.number("TIMEOUT", int, 120, low=0),
        graceful_timeout=env.number("GRACEFUL_TIMEOUT", int, 60, low=0),
        keepalive=env.number("KEEPALIVE", int, 5, low=0),
        log_level=env.choice(
            "LOG_LEVEL", ("debug", "info", "warning", "error", "critical"), "info"
        ),
        access_log=env.optional("ACCESS_LOG"),
        error_log=env.text("ERROR_LOG", "-"),
    )
