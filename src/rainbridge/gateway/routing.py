"""Which provider and upstream model a request's ``model`` (and ``fallbacks``) name.

``provider/model`` picks the provider by prefix (model ids may contain more slashes:
``openrouter/meta-llama/llama-3``). A model whose exact name a provider's keys list goes
to that provider. Otherwise a bare model goes to the route's default provider (``openai``
for OpenAI routes, ``anthropic`` for the Anthropic route), else to the only configured
provider; an unknown ``x/`` prefix is an error naming the configured providers.
"""

from __future__ import annotations

from typing import NamedTuple

from ..bounded import BoundedCache
from ..config.families import UNSUPPORTED_PROVIDERS
from ..errors import InvalidRequest, NotFound
from .provider import Provider

_CACHE_LIMIT = 4096
MAX_MODEL_CHARS = 256  # model names we route; longer ones are a client mistake (or an attack)


class Target(NamedTuple):
    provider: Provider
    model: str  # the model name as the provider knows it

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.model}"


class Routes:
    def __init__(self, providers: dict[str, Provider]):
        self.providers = providers
        self._cache: BoundedCache[tuple[str, str], Target] = BoundedCache(_CACHE_LIMIT)

    def resolve(self, model: str, default: str, param: str = "model") -> Target:
        hit = self._cache.get((model, default))
        if hit is not None:
            return hit
        return self._cache.put((model, default), self._resolve(model, default, param))

    def _resolve(self, model: str, default: str, param: str) -> Target:
        if not model:
            raise InvalidRequest("model must not be empty; use 'provider/model'", param=param, code="invalid_model")
        prefix, sep, rest = model.partition("/")
        if sep and rest and prefix in self.providers:
            return Target(self.providers[prefix], rest)
        for provider in self.providers.values():
            models = [k.models for k in provider.keys.keys]
            if any(m is not None and model in m for m in models):
                return Target(provider, model)
        if not sep:  # a bare model; "x/y" with an unknown x is a mistake, as in Bifrost
            if default in self.providers:
                return Target(self.providers[default], model)
            if len(self.providers) == 1:
                return Target(next(iter(self.providers.values())), model)
        names = ", ".join(sorted(self.providers)) or "none configured"
        if sep and prefix in UNSUPPORTED_PROVIDERS:
            raise NotFound(f"provider {prefix!r} is not supported by rainbridge yet (skipped at start-up); "
                           f"configured providers: {names}", param=param, code="provider_not_supported")
        if sep:
            message = f"unknown provider {prefix!r} in model {model!r}; configured providers: {names}"
        else:
            message = f"model {model!r} has no provider; use 'provider/model' with one of: {names}"
        raise NotFound(message, param=param, code="model_not_found")

    def targets(self, model: object, fallbacks: object, default: str) -> list[Target]:
        targets = [self.resolve(model_field(model), default)]
        for i, fb in enumerate(fallback_list(fallbacks)):
            targets.append(self.resolve(fb, default, f"fallbacks[{i}]"))
        return targets


def model_field(model: object) -> str:
    if isinstance(model, str):
        if len(model) <= MAX_MODEL_CHARS and model.isprintable():
            return model
        return checked_name(model, "model")
    if model is None:
        raise InvalidRequest("missing required field 'model'", param="model", code="missing_field")
    raise InvalidRequest("'model' must be a string", param="model", code="invalid_type")


def fallback_list(fallbacks: object) -> list[str]:
    if fallbacks is None:
        return []
    if not isinstance(fallbacks, list):
        raise InvalidRequest("'fallbacks' must be a list of 'provider/model' strings", param="fallbacks", code="invalid_type")
    for i, fb in enumerate(fallbacks):
        if not isinstance(fb, str):
            raise InvalidRequest(f"fallbacks[{i}] must be a string", param=f"fallbacks[{i}]", code="invalid_type")
        checked_name(fb, f"fallbacks[{i}]")
    return fallbacks


def checked_name(model: str, param: str) -> str:
    """A model name fit to route, log and cache: bounded, no control characters (a newline
    in a name would forge a log line; a 400 KB name would sit in every per-model cache)."""
    if len(model) > MAX_MODEL_CHARS:
        raise InvalidRequest(f"'{param}' is longer than {MAX_MODEL_CHARS} characters", param=param, code="invalid_model")
    if not model.isprintable():
        raise InvalidRequest(f"'{param}' must not contain control characters", param=param, code="invalid_model")
    return model


# Bifrost's request type names (allowed_requests) of the routes rainbridge serves. The
# Anthropic route counts as "responses", as Bifrost's Anthropic integration turns /v1/messages
# into a Responses request.
REQUEST_TYPES = {"chat": "chat_completion", "completions": "text_completion", "embeddings": "embedding",
                 "messages": "responses"}


def request_type(endpoint: str, stream: bool) -> str:
    base = REQUEST_TYPES[endpoint]
    return base + "_stream" if stream and endpoint != "embeddings" else base


def serving(targets: list[Target], kind: str) -> list[Target]:
    """The targets whose provider serves this request type (``allowed_requests``): the first
    must, else 400 ``request_type_not_allowed``; fallbacks that do not are skipped."""
    first = targets[0].provider
    if not first.allows(kind):
        raise InvalidRequest(f"provider {first.name!r} does not allow {kind} requests "
                             "(its custom_provider_config.allowed_requests)", param="model", code="request_type_not_allowed")
    if all(t.provider.allowed_requests is None for t in targets):
        return targets
    return [t for t in targets if t.provider.allows(kind)]
