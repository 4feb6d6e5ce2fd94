"""rainbridge: a fast OpenAI- and Anthropic-compatible LLM gateway."""

__version__ = "0.1.0"
