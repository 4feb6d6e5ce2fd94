"""Microseconds per ``extract_usage`` call (the once-per-request usage read of a non-streamed
answer, governance or request logging on), per answer shape, and the floor under it.

    PYTHONPATH=src .venv/bin/python bench/usage_extract.py
    PYTHONPATH=/tmp/before/src .venv/bin/python bench/usage_extract.py   # another checkout

The floor lines time the steps no version can skip on the OpenAI shape: finding the last
``"usage":`` and two int() conversions. Best of 7 repeats; the interpreter's build matters
(pyenv without PGO runs these about 2x slower than Debian's or the python:3.11-slim image's).
"""

from __future__ import annotations

import sys
import timeit

import orjson

from rainbridge.gateway.record import extract_usage

ANSWER = {"id": "chatcmpl-abc123", "object": "chat.completion", "created": 1796475039, "model": "gpt-4o-mini",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                       "logprobs": None, "finish_reason": "stop"}]}
OPENAI = orjson.dumps({**ANSWER, "usage": {"prompt_tokens": 13, "completion_tokens": 9, "total_tokens": 22}})
SHAPES = {
    "openai compact": OPENAI,
    "openai + details": orjson.dumps({**ANSWER, "usage": {
        "prompt_tokens": 1300, "completion_tokens": 90, "total_tokens": 1390,
        "prompt_tokens_details": {"cached_tokens": 0}}, "system_fingerprint": "fp_x"}),
    "anthropic": orjson.dumps({"id": "msg_1", "type": "message", "content": [{"type": "text", "text": "Hello!"}],
                               "usage": {"input_tokens": 13, "cache_creation_input_tokens": 0,
                                         "cache_read_input_tokens": 0, "output_tokens": 9}}),
    "indented (spaces)": orjson.dumps({**ANSWER, "usage": {"prompt_tokens": 13, "completion_tokens": 9}},
                                      option=orjson.OPT_INDENT_2),
    "usage first, 5 kB": orjson.dumps({"usage": {"prompt_tokens": 13, "completion_tokens": 9},
                                       "choices": [{"message": {"content": "x" * 5000}}]}),
}


def per_call(fn, number: int = 200_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def main() -> None:
    print(f"python {sys.version.split()[0]}  µs per call")
    for name, body in SHAPES.items():
        print(f"  {name:20} {len(body):5d} B  {per_call(lambda b=body: extract_usage(b)):.3f}  {extract_usage(body)}")
    empty = per_call(lambda: None)
    rfind = per_call(lambda: OPENAI.rfind(b'"usage":')) - empty
    to_int = per_call(lambda: int(b"13")) - empty
    print(f"  floor: call {empty:.3f}, rfind {rfind:.3f}, int() {to_int:.3f} (x2)")


if __name__ == "__main__":
    main()
