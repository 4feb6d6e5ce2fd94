"""Which provider names rainbridge knows, the API family each speaks, and its public endpoint.

Bifrost's convention: ``base_url`` is scheme, host and port (plus a fixed prefix some vendors
need), without the API version path; the adapter appends ``/v1/chat/completions`` etc.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("openai", "azure", "anthropic", "gemini", "cohere", "bedrock", "vertex")


@dataclass(frozen=True, slots=True)
class KnownProvider:
    family: str
    base_url: str | None  # None: there is no public endpoint, base_url is required
    needs_key: bool = True


KNOWN_PROVIDERS: dict[str, KnownProvider] = {
    "openai": KnownProvider("openai", "https://api.openai.com"),
    "azure": KnownProvider("azure", None),
    "anthropic": KnownProvider("anthropic", "https://api.anthropic.com"),
    "gemini": KnownProvider("gemini", "https://generativelanguage.googleapis.com"),
    # Regional endpoints, built per key from its region (bedrock-runtime.{region}.amazonaws.com,
    # {region}-aiplatform.googleapis.com); credentials come from the key's *_key_config.
    "bedrock": KnownProvider("bedrock", "", needs_key=False),
    "vertex": KnownProvider("vertex", "", needs_key=False),
    "groq": KnownProvider("openai", "https://api.groq.com/openai"),
    "mistral": KnownProvider("openai", "https://api.mistral.ai"),
    "openrouter": KnownProvider("openai", "https://openrouter.ai/api"),
    "together": KnownProvider("openai", "https://api.together.xyz"),
    "fireworks": KnownProvider("openai", "https://api.fireworks.ai/inference"),
    "deepseek": KnownProvider("openai", "https://api.deepseek.com"),
    "xai": KnownProvider("openai", "https://api.x.ai"),
    "cerebras": KnownProvider("openai", "https://api.cerebras.ai"),
    "ollama": KnownProvider("openai", None, needs_key=False),
    "vllm": KnownProvider("openai", None, needs_key=False),
    "sgl": KnownProvider("openai", None, needs_key=False),
    "lmstudio": KnownProvider("openai", "http://localhost:1234", needs_key=False),
}
# Bifrost's providers added for issue 14 (native Cohere, and OpenAI-compatible presets).
KNOWN_PROVIDERS |= {
    "cohere": KnownProvider("cohere", "https://api.cohere.com"),
    # OpenAI wire format at their own endpoints (paths that differ: OPENAI_ROUTES).
    "perplexity": KnownProvider("openai", "https://api.perplexity.ai"),
    "nebius": KnownProvider("openai", "https://api.tokenfactory.nebius.com"),
    "huggingface": KnownProvider("openai", "https://router.huggingface.co"),
    "parasail": KnownProvider("openai", "https://api.parasail.io"),
    "opencode-zen": KnownProvider("openai", "https://opencode.ai/zen"),
    "opencode-go": KnownProvider("openai", "https://opencode.ai/zen/go"),
}

# OpenAI-compatible presets whose operations are not all at ``/v1/{op}``: the path under
# base_url of each operation that differs, None where the vendor has no such endpoint
# (the request is then a 400 naming it, not a call to a path that does not exist).
OPENAI_ROUTES: dict[str, dict[str, str | None]] = {
    # Perplexity serves chat at /chat/completions (its docs, and Bifrost's adapter);
    # it has no text completions or embeddings endpoint.
    "perplexity": {"chat/completions": "/chat/completions", "completions": None, "embeddings": None},
    # The router's OpenAI-compatible surface is chat only; embeddings go through per-task
    # pipelines in another format.
    "huggingface": {"completions": None, "embeddings": None},
}


def preset_of(name: str, explicit_type: str | None, custom_base: str | None) -> str | None:
    """The known provider whose endpoint conventions a configured provider follows: its
    ``type`` when that names one, else a custom provider's base, else its own name."""
    for candidate in (explicit_type, custom_base, name):
        if candidate:
            return candidate if candidate in KNOWN_PROVIDERS else None
    return None


def provider_family(name: str, explicit_type: str | None, custom_base: str | None) -> str | None:
    """The API family of a configured provider, or None when it cannot be told."""
    if explicit_type:
        known = KNOWN_PROVIDERS.get(explicit_type)
        return known.family if known else None
    if custom_base:
        known = KNOWN_PROVIDERS.get(custom_base)
        return known.family if known else None
    known = KNOWN_PROVIDERS.get(name)
    return known.family if known else None


# Bifrost providers rainbridge has no adapter for yet (Bifrost's core/schemas ModelProvider list,
# less the ones above). A config naming one starts without it, with a warning naming it; its
# models answer 404 ``provider_not_supported``.
UNSUPPORTED_PROVIDERS = frozenset({
    # Not chat APIs: speech (elevenlabs), predictions (replicate), images and video (runway,
    # runware). bedrock_mantle speaks OpenAI's format but signs with SigV4 from an AWS key pair.
    "elevenlabs", "replicate", "runway", "runware", "bedrock_mantle",
})


def unsupported_type(name: str, explicit_type: object, custom: object) -> str | None:
    """The Bifrost provider type rainbridge cannot serve that a provider entry asks for, if any."""
    if isinstance(explicit_type, str) and explicit_type:
        return explicit_type if explicit_type in UNSUPPORTED_PROVIDERS else None
    base = custom.get("base_provider_type") if isinstance(custom, dict) else None
    if isinstance(base, str) and base:
        return base if base in UNSUPPORTED_PROVIDERS else None
    return name if name in UNSUPPORTED_PROVIDERS else None
