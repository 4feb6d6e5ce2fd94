"""Hugging Face's router (``router.huggingface.co``): OpenAI chat completions, with the
inference provider named in the model.

The router takes ``org/model`` (it picks a provider) or ``org/model:provider``. Bifrost's
users write ``provider/org/model``; as Bifrost does, a name with two slashes is turned into
the router's form, so the same model strings work here.
"""

from __future__ import annotations

from .openai import OpenAIAdapter


def router_model(model: str) -> str:
    """``nebius/Qwen/Qwen3-32B`` → ``Qwen/Qwen3-32B:nebius``; other names as they are."""
    if model.count("/") < 2:
        return model
    provider, _, rest = model.partition("/")
    return f"{rest}:{provider}"


class HuggingFaceAdapter(OpenAIAdapter):
    def upstream_body(self, body: dict) -> dict:
        model = body.get("model")
        if not isinstance(model, str) or model.count("/") < 2:
            return body
        return {**body, "model": router_model(model)}
