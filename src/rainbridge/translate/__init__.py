"""Translation between the wire formats the gateway speaks (pure code on parsed JSON)."""

from .anthropic_openai import (
    TranslationError,
    UpstreamStreamError,
    chat_response_to_message,
    error_to_anthropic,
    error_to_openai,
    message_response_to_chat,
)
from .anthropic_openai_request import chat_request_to_messages, messages_request_to_chat
from .anthropic_openai_stream import ChatStreamToMessages, MessagesStreamToChat
from .cohere_openai import chat_request_to_cohere, cohere_response_to_chat
from .cohere_openai_stream import CohereStreamToChat
from .gemini_openai import chat_request_to_gemini, gemini_response_to_chat
from .gemini_openai_stream import GeminiStreamToChat

__all__ = [
    "ChatStreamToMessages",
    "CohereStreamToChat",
    "GeminiStreamToChat",
    "MessagesStreamToChat",
    "TranslationError",
    "UpstreamStreamError",
    "chat_request_to_cohere",
    "chat_request_to_gemini",
    "chat_request_to_messages",
    "chat_response_to_message",
    "cohere_response_to_chat",
    "error_to_anthropic",
    "error_to_openai",
    "gemini_response_to_chat",
    "message_response_to_chat",
    "messages_request_to_chat",
]
