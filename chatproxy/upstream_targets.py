"""CHATPROXY_UPSTREAMS: the upstream servers, the models each serves, and the routes by model.

Each entry names a server (`base_url`, `api_key`, `weight`, `name`) and may
say which models it serves (`models`: exact names and shell patterns such as
`deepseek-*`, matched with `fnmatch.fnmatchcase`), the names clients use for
its models (`aliases`: `{"fast": "deepseek-chat"}`, the client's name to the
upstream's) and whether it takes `stream_options` (`"stream_options": false`
for servers that refuse it). An entry without `models` serves every model.

`ModelRoutes` answers, once per model name and then from a cache, which
entries serve a model; the upstream client (`chatproxy.upstream.client`)
fails over among those. It lives in the foundation because the settings
(`chatproxy.config`) check and offer the models it names.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from chatproxy.environment import ConfigError, address_fault, is_http_url

TARGET_FIELDS = ("base_url", "api_key", "weight", "name", "models", "aliases", "stream_options")
MAX_WEIGHT = 1e6  # weights are ratios: a larger one (or 1e309, infinity) means nothing more
MAX_MODEL_CHARS = 200  # as `model=` on /callChatGPT
PATTERN_CHARS = frozenset("*?[")
CACHED_MODELS = 4096  # model names whose routes are kept; patterns admit unbounded names


@dataclass(frozen=True)
class UpstreamTarget:
    """One OpenAI-compatible server to ask: its base URL, its key, its share of the requests,
    and the models it serves.

    `name` (the URL's host and port unless given) is what logs and metrics
    call it: never the key, never the URL's path or query. `models` are exact
    names and patterns, None for every model; `aliases` map a client's name to
    the upstream's, as `(alias, name)` pairs; `stream_options` False when the
    server refuses that field (its streams' usage is then counted).
    """

    name: str
    base_url: str
    api_key: str = field(repr=False)
    weight: float = 1.0
    models: tuple[str, ...] | None = None
    aliases: tuple[tuple[str, str], ...] = ()
    stream_options: bool = True

    @property
    def exact_models(self) -> tuple[str, ...]:
        """The names in `models` that are no pattern."""
        return tuple(m for m in self.models or () if not PATTERN_CHARS & set(m))

    @property
    def patterns(self) -> tuple[str, ...]:
        """The patterns in `models` (`*`, `?`, `[...]`)."""
        return tuple(m for m in self.models or () if PATTERN_CHARS & set(m))

    def serves(self, model: str) -> bool:
        """True when `model` (a client's name) is one of this server's: an alias, an exact
        name, a match of a pattern, or any name when it names no models."""
        if self.models is None or any(model == alias for alias, _ in self.aliases):
            return True
        return model in self.models or any(
            fnmatch.fnmatchcase(model, pattern) for pattern in self.patterns
        )

    def upstream_model(self, model: str) -> str:
        """The name this server knows `model` by: the alias's target, else `model` itself."""
        for alias, name in self.aliases:
            if alias == model:
                return name
        return model


class ModelRoutes:
    """Which upstreams serve each model: `targets_for(model)` gives their indexes, in order.

    When no entry names models or aliases every upstream serves every model,
    and `names_models` is False: callers then skip the lookup altogether (the
    hot path of one upstream pays nothing). Answers are cached per model name.
    """

    def __init__(self, targets: Sequence[UpstreamTarget]) -> None:
        self.targets = tuple(targets)
        self.names_models = any(t.models is not None or t.aliases for t in self.targets)
        self._every = tuple(range(len(self.targets)))
        self._cache: dict[str, tuple[int, ...]] = {}

    def targets_for(self, model: str | None) -> tuple[int, ...]:
        """Indexes (into `targets`) of the upstreams that serve `model`; all of them for
        None (a request that names no model) or when no entry names models; () for none."""
        if not self.names_models or model is None:
            return self._every
        found = self._cache.get(model)
        if found is None:
            found = tuple(i for i, t in enumerate(self.targets) if t.serves(model))
            if len(self._cache) >= CACHED_MODELS:
                self._cache.clear()
            self._cache[model] = found
        return found

    def serves(self, model: str) -> bool:
        """True when some upstream serves `model`."""
        return bool(self.targets_for(model))

    def offered(self, every_model: Sequence[str]) -> tuple[str, ...]:
        """The models to offer when CHATPROXY_MODELS is unset: the exact names and aliases
        the entries give, in order, then `every_model` (the default list) when some entry
        names no models (it serves anything). Patterns cannot be listed."""
        names: dict[str, None] = {}
        for target in self.targets:
            names.update(dict.fromkeys(alias for alias, _ in target.aliases))
            names.update(dict.fromkeys(target.exact_models))
        if any(target.models is None for target in self.targets):
            names.update(dict.fromkeys(every_model))
        return tuple(names)

    def patterns(self) -> tuple[str, ...]:
        """Every entry's patterns: they admit a model asked for by a name not offered."""
        found: dict[str, None] = {}
        for target in self.targets:
            found.update(dict.fromkeys(target.patterns))
        return tuple(found)

    def upstream_model(self, model: str) -> str:
        """The name the first upstream serving `model` knows it by (prices are by that name)."""
        for index in self.targets_for(model)[:1]:
            return self.targets[index].upstream_model(model)
        return model


def upstream_targets(value: str | None, default_key: str | None) -> tuple[UpstreamTarget, ...]:
    """The servers CHATPROXY_UPSTREAMS lists: a JSON array of objects, at least one.

    Each object: `base_url` (http or https, required), `api_key` (default:
    OPENAI_API_KEY), `weight` (a positive number, default 1), `name` (default:
    the URL's host and port), `models` (a non-empty list of names and
    patterns; default: every model), `aliases` (an object of names to
    names), `stream_options` (true or false, default true). Raises
    ConfigError naming the entry that is wrong, never showing a key.
    """
    if value is None:
        return ()
    try:
        entries = json.loads(value)
    except ValueError as exc:
        raise ConfigError(f"CHATPROXY_UPSTREAMS is not valid JSON: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            'CHATPROXY_UPSTREAMS must be a JSON array like [{"base_url": "https://...", '
            '"api_key": "sk-..."}, ...]'
        )
    return tuple(
        _target(entry, f"CHATPROXY_UPSTREAMS entry {number}", default_key)
        for number, entry in enumerate(entries, 1)
    )


def _target(entry: object, where: str, default_key: str | None) -> UpstreamTarget:
    """One entry of CHATPROXY_UPSTREAMS checked; ConfigError starting with `where`."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object with base_url and api_key")
    if unknown := set(entry) - set(TARGET_FIELDS):
        raise ConfigError(
            f"{where} has unknown fields {sorted(unknown)} (known: {', '.join(TARGET_FIELDS)})"
        )
    base_url = entry.get("base_url")
    if not isinstance(base_url, str) or not is_http_url(base_url):
        raise ConfigError(f"{where} needs a base_url starting with http:// or https://")
    if fault := address_fault(base_url):
        raise ConfigError(f"{where}: base_url {fault}")
    api_key = entry.get("api_key", default_key)
    if not isinstance(api_key, str) or not api_key.strip():
        raise ConfigError(f"{where} needs an api_key (or set OPENAI_API_KEY for all)")
    weight = entry.get("weight", 1)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not 0 < weight <= MAX_WEIGHT
    ):
        raise ConfigError(f"{where}: weight must be a positive number up to {MAX_WEIGHT:g}")
    name = entry.get("name", host_of(base_url))
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name must be a non-empty string")
    stream_options = entry.get("stream_options", True)
    if not isinstance(stream_options, bool):
        raise ConfigError(f"{where}: stream_options must be true or false")
    return UpstreamTarget(
        name.strip(),
        base_url,
        api_key.strip(),
        float(weight),
        _models(entry.get("models"), where),
        _aliases(entry.get("aliases"), where),
        stream_options,
    )


def _model_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_MODEL_CHARS and value == value.strip()


def _models(value: object, where: str) -> tuple[str, ...] | None:
    """An entry's `models`: None when left out, else a non-empty list of names and patterns."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(_model_name(m) for m in value):
        raise ConfigError(
            f"{where}: models must be a non-empty list of model names or patterns like "
            f'["gpt-4o", "deepseek-*"] (each 1 to {MAX_MODEL_CHARS} characters)'
        )
    return tuple(dict.fromkeys(value))


def _aliases(value: object, where: str) -> tuple[tuple[str, str], ...]:
    """An entry's `aliases`: `{"name clients use": "name the upstream knows"}`."""
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not all(
        _model_name(alias) and _model_name(name) for alias, name in value.items()
    ):
        raise ConfigError(
            f'{where}: aliases must be an object like {{"fast": "deepseek-chat"}} '
            "(the name clients use: the name the upstream knows)"
        )
    if patterns := [alias for alias in value if PATTERN_CHARS & set(alias)]:
        raise ConfigError(f"{where}: an alias is a name, not a pattern: {patterns[0]!r}")
    return tuple(value.items())


def host_of(url: str) -> str:
    """`host[:port]` of `url`, without any user name or password in it."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
