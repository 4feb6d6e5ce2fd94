"""A fake upstream LLM provider: OpenAI, Azure OpenAI, Anthropic, Gemini, Cohere, Vertex AI
and Bedrock over real HTTP.

The gateway's tests, demo and benchmarks run against it, because no real
provider is reachable. Answers are deterministic; the official `openai`,
`anthropic` and `google-genai` SDKs work against it with only `base_url` changed.

Endpoints
---------
| path | API |
|---|---|
| `POST /v1/chat/completions` | OpenAI chat (stream, `stream_options.include_usage`, tools, `n`, `max_tokens`/`max_completion_tokens`); `POST /chat/completions` too, Perplexity's path |
| `POST /v1/completions` | OpenAI legacy completions (stream too) |
| `POST /v1/embeddings` | OpenAI embeddings (`dimensions`, `encoding_format` float/base64) |
| `GET /v1/models`, `GET /v1/models/{id}` | model list (Anthropic shape when `anthropic-version` is sent) |
| `POST /openai/deployments/{name}/chat/completions`, `/completions`, `/embeddings` | Azure OpenAI (`api-key`, `?api-version=` required) |
| `POST /v1/messages`, `POST /v1/messages/count_tokens` | Anthropic Messages (`x-api-key`, `anthropic-version` required) |
| `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (`?alt=sse`), `:embedContent`, `:batchEmbedContents`; `GET /v1beta/models[/{model}]` | Gemini API (`x-goog-api-key` or `?key=`; `/v1/models/{model}:…` too); see `gemini_api` |
| `POST /v2/chat`, `POST /v2/embed`, `GET /v1/models?endpoint=chat` | Cohere v2 (`Authorization: Bearer`); see `cohere_api` |
| `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`, `:streamGenerateContent`; `publishers/anthropic/models/{model}:rawPredict`, `:streamRawPredict` | Vertex AI (`Authorization: Bearer` token from `/token`; the key in the stats is the token's service account) |
| `POST /token`, `POST /mock/google/service-accounts`, `GET /mock/google/grants` | Google's OAuth2 token endpoint (JWT bearer grant, signature checked against the registered public key); see `google_oauth` |
| `POST /model/{modelId}/converse`, `/converse-stream` | Bedrock Converse (SigV4 recomputed with botocore, or a Bedrock API key as Bearer; the key in the stats is the access key id); see `bedrock_api` |
| `GET /mock/stats`, `POST /mock/reset` | introspection (not counted in the stats) |

The answer is `"This is a mock response from <model>: "` followed by the first
8 words of the last user message (after a tool result: `"... <model>: the
tool returned <first 8 words of the result>"`). A token is a
whitespace-separated word: a stream sends one word per chunk and `usage`
counts words (prompt: words + 3 per message + 3). Tool calls fill the tool
schema's required properties with `"mock"`, `1`, `true`, the first `enum`
value, or `null`; the arguments stream in 4-character fragments, one
completion token each. Ids are sequential per provider (`chatcmpl-mock00000001`,
`msg_mock…`, `call_mock…`, `toolu_mock…`; `reset()` restarts them).
`stop`/`stop_sequences`, `temperature` and the like are accepted and ignored.

Controls
--------
Give each as a request header `x-mock-<name>`, or in the JSON body as
`"mock": {"<name_with_underscores>": value}` (the body wins). An unknown
control name or a bad value is a 400 naming it.

| control | value | effect |
|---|---|---|
| `latency-ms` | ms | wait this long before sending the response headers (any response) |
| `stream-chunks` | count | the answer has exactly this many tokens (words repeated or cut); sets the stream's content chunks and the non-stream answer length |
| `chunk-delay-ms` | ms | delay between consecutive content chunks of a stream |
| `fail-status` | 4xx/5xx | answer every request with this status and an error body in the API's shape |
| `fail-first` | count | fail the first K requests carrying the same `mock-id` (status `fail-status`, default 500), then succeed; without a `mock-id` all such requests share one counter |
| `mock-id` | string | groups requests for `fail-first` and `by_mock_id` (header `x-mock-mock-id` or `x-mock-id`) |
| `cut-after` | count | stream: after K content chunks drop the connection with no terminal chunk (at the end of the content if it is shorter); non-stream: drop the connection unanswered |
| `error-after` | count | stream: after K content chunks (or at the end of a shorter content) send an error event in the API's format (OpenAI `data: {"error": ...}` server_error, Anthropic `event: error` overloaded_error, Gemini `data: {"error": ...}` 503 UNAVAILABLE) and end the stream cleanly; ignored without `stream` |
| `hang` | bool | never answer; when the client gives up it counts as a disconnect |
| `retry-after` | string | `retry-after` header on error responses (default `1` on 429); Gemini sends no header but a RetryInfo `retryDelay` of this many seconds in a 429's body |

An API key containing `status-NNN` (e.g. `sk-status-401-x`; in `Authorization:
Bearer`, `x-api-key`, `api-key` or `x-goog-api-key` alike) makes every request with it fail
with status NNN (4xx/5xx; Gemini answers 401 as Google answers a bad key: 400
INVALID_ARGUMENT, reason API_KEY_INVALID). Order of checks: route (404/405), key present
(401), `anthropic-version` / `api-version` (400), controls valid (400),
key status, fail-first / fail-status, then body validation (400).

Stats
-----
`GET /mock/stats` and `MockProvider.stats.snapshot()` return `requests`,
`by_path`, `by_key`, `by_mock_id`, `disconnects`, `streams_started`,
`streams_completed`, `streams_errored`, `streams_cut`, `active` and `recent`
(last 50: `method`, `path`, `query` dict, `headers` lower-case dict, `body`
parsed JSON or null, `key`).
"""

from .provider import MockProvider, run, serve
from .stats import MockStats

__all__ = ["MockProvider", "MockStats", "run", "serve"]
