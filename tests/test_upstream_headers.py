"""What the gateway forwards upstream from the client's x-bf-eh-* headers.

Hop-by-hop and framing headers change how the upstream frames its answer on a pooled
connection (``expect: 100-continue`` made it send an interim response), so they are never
forwarded: the request is answered 400 naming the header, and the upstream sees nothing.
"""

import aiohttp
import pytest

from rainbridge.errors import InvalidRequest
from rainbridge.providers.http import extra_block
from support import provider_config

FORBIDDEN = [
    "expect", "Expect", "connection", "keep-alive", "te", "trailer", "upgrade", "transfer-encoding",
    "content-length", "host", "proxy-authorization", "proxy-connection", "Proxy-Foo",
    "authorization", "api-key", "x-api-key", "accept-encoding",
]


@pytest.mark.parametrize("name", FORBIDDEN)
def test_hop_by_hop_framing_and_credential_headers_are_refused_by_name(name):
    with pytest.raises(InvalidRequest) as info:
        extra_block({"x-ok": "1", name: "100-continue"})
    assert info.value.param == "x-bf-eh-" + name
    assert info.value.code == "invalid_extra_header"


@pytest.mark.parametrize("name", ["", "a b", "a:b", "a\r\nb", "(x)", "é", "a\x00"])
def test_names_that_are_not_http_tokens_are_refused(name):
    with pytest.raises(InvalidRequest, match="not a valid header name"):
        extra_block({name: "v"})


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\rb", "a\x00b", "a\x01b", "a\x7fb"])
def test_values_with_control_characters_are_refused(value):
    with pytest.raises(InvalidRequest, match="control character") as info:
        extra_block({"x-trace": value})
    assert info.value.param == "x-bf-eh-x-trace"


def test_ordinary_extra_headers_become_head_lines():
    assert extra_block({"x-trace": "a\tb c", "OpenAI-Beta": "assistants=v2"}) == b"x-trace: a\tb c\r\nOpenAI-Beta: assistants=v2\r\n"
    assert extra_block(None) == b"" and extra_block({}) == b""


BODY = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("stream", [False, True])
async def test_gateway_answers_400_naming_the_header_and_the_upstream_sees_nothing(mock, start_gateway, stream):
    gw = start_gateway(provider_config(mock.url))
    mock.reset()
    headers = {"x-bf-eh-expect": "100-continue", "x-bf-eh-x-trace": "t1"}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/chat/completions", json={**BODY, "stream": stream}, headers=headers) as resp:
            status, data = resp.status, await resp.json()
        assert status == 400
        assert data["error"]["param"] == "x-bf-eh-expect"
        assert data["error"]["type"] == "invalid_request_error"
        assert "x-bf-eh-expect" in data["error"]["message"]
        async with s.post(gw.url + "/v1/chat/completions", json={**BODY, "stream": stream}, headers={"x-bf-eh-x-trace": "t2"}) as resp:
            assert resp.status == 200
            await resp.read()
    seen = [r["headers"] for r in mock.stats()["recent"]]
    assert [h.get("x-trace") for h in seen] == ["t2"]
    assert "expect" not in seen[0]
