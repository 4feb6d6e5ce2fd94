"""The official openai (and anthropic) SDK against ``rainbridge serve`` in front of the fake
provider speaking Bedrock's Converse API (issue 14): SigV4-signed requests (the fake recomputes
each signature with botocore from the test credentials), Bedrock API keys, chat, the
event-stream framed ConverseStream with usage, tools round trip, errors, retries, key
rotation, and a governed request charged with Bedrock's usage."""

from __future__ import annotations

import uuid

import openai
import pytest

from rainbridge.mock.bedrock_api import mock_secret_key
from support import GatewayProcess, eventually, http_json

TOKEN = "bedrock-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
VK = "sk-rb-bedrock-" + "0" * 24
PRICE = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
AKID = "AKIAMOCKBEDROCK00001"
TEMP = "ASIAMOCKTEMPORARY001"
API_KEY = "bedrock-api-key-0123456789abcdef"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]


def aws_key(name: str, access_key: str, weight: float = 1, **config) -> dict:
    config = {"access_key": access_key, "secret_key": mock_secret_key(access_key), "region": "us-west-2", **config}
    return {"name": name, "value": "", "models": ["*"], "weight": weight, "bedrock_key_config": config}


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    net = {"base_url": mock.url, "max_retries": 2, "retry_backoff_initial": 20, "retry_backoff_max": 50}
    config = {
        "providers": {
            "bedrock": {"network_config": net, "keys": [aws_key("aws", AKID, deployments={"sonnet": MODEL})]},
            "bedtemp": {"type": "bedrock", "network_config": net,
                        "keys": [aws_key("temp", TEMP, session_token="mock-session-token")]},
            "bedapikey": {"type": "bedrock", "network_config": net,
                          "keys": [{"name": "k", "value": API_KEY, "bedrock_key_config": {"region": "eu-west-1"}}]},
            "bedwrong": {"type": "bedrock", "network_config": net,
                         "keys": [{**aws_key("wrong", AKID), "bedrock_key_config": {"access_key": AKID, "secret_key": "not-the-secret"}}]},
            # Weight 0: the live key is never chosen first, only rotated to (deterministic).
            "beddead": {"type": "bedrock", "network_config": net, "keys": [
                aws_key("dead", "AKIAstatus-403-DEAD"), aws_key("live", "AKIALIVE000000000001", weight=0)]},
            "bedbusy": {"type": "bedrock", "network_config": net, "keys": [
                aws_key("busy", "AKIAstatus-429-BUSY"), aws_key("spare", "AKIASPARE00000000001", weight=0)]},
        },
        "pricing_overrides": {MODEL: PRICE},
        "governance": {"virtual_keys": [{"id": "bvk", "name": "bvk", "value": VK,
                                         "budget": {"max_limit": 1000, "reset_duration": "1d"},
                                         "rate_limit": {"token_max_limit": 10**6, "token_reset_duration": "1h"}}]},
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("bedrock"), config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield c
    c.close()


def attempts(mock, mock_id: str) -> list[dict]:
    return [r for r in mock.stats()["recent"] if r["headers"].get("x-mock-id") == mock_id]


def ask(client, model: str, mid: str, **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                          extra_headers={"x-bf-eh-x-mock-id": mid, **kwargs.pop("headers", {})}, **kwargs)


def test_chat_reaches_converse_signed_with_sigv4_and_translates_back(client, mock):
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(
        model=f"bedrock/{MODEL}",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there gateway"}],
        max_tokens=50, temperature=0.2, top_p=0.9, stop=["END"], extra_headers={"x-bf-eh-x-mock-id": mid},
    )
    assert reply.choices[0].message.content == f"This is a mock response from {MODEL}: Hello there gateway"
    assert reply.choices[0].finish_reason == "stop"
    words = len(reply.choices[0].message.content.split())
    assert reply.usage.completion_tokens == words and reply.usage.total_tokens == reply.usage.prompt_tokens + words
    (seen,) = attempts(mock, mid)
    assert seen["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert seen["key"] == AKID  # the fake verified the signature of this access key
    auth = seen["headers"]["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/") and "/us-west-2/bedrock/aws4_request" in auth
    assert "x-amz-security-token" not in seen["headers"]
    assert seen["body"]["system"] == [{"text": "Be brief."}]
    assert seen["body"]["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}
    assert seen["body"]["messages"] == [{"role": "user", "content": [{"text": "Hello there gateway"}]}]


def test_a_deployment_maps_the_model_name_to_its_bedrock_model_id(client, mock):
    mid = uuid.uuid4().hex
    reply = ask(client, "bedrock/sonnet", mid)
    assert reply.choices[0].message.content.startswith(f"This is a mock response from {MODEL}:")
    assert attempts(mock, mid)[0]["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"


def test_temporary_credentials_send_their_session_token_signed(client, mock):
    mid = uuid.uuid4().hex
    assert ask(client, f"bedtemp/{MODEL}", mid).choices[0].message.content
    (seen,) = attempts(mock, mid)
    assert seen["headers"]["x-amz-security-token"] == "mock-session-token" and seen["key"] == TEMP
    assert "x-amz-security-token" in seen["headers"]["authorization"].split("SignedHeaders=")[1].split(",")[0]


def test_a_bedrock_api_key_is_sent_as_a_bearer_token(client, mock):
    mid = uuid.uuid4().hex
    assert ask(client, f"bedapikey/{MODEL}", mid).choices[0].message.content
    (seen,) = attempts(mock, mid)
    assert seen["headers"]["authorization"] == f"Bearer {API_KEY}" and "x-amz-date" not in seen["headers"]


def test_max_tokens_cut_is_finish_reason_length(client):
    reply = client.chat.completions.create(model=f"bedrock/{MODEL}", messages=[{"role": "user", "content": "long"}], max_tokens=3)
    assert reply.choices[0].message.content == "This is a" and reply.choices[0].finish_reason == "length"


def test_streaming_with_usage_decodes_the_event_stream_and_ends_with_the_usage_chunk(client, mock):
    mid = uuid.uuid4().hex
    chunks = list(client.chat.completions.create(
        model=f"bedrock/{MODEL}", messages=[{"role": "user", "content": "stream me please"}],
        stream=True, stream_options={"include_usage": True}, extra_headers={"x-bf-eh-x-mock-id": mid},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"This is a mock response from {MODEL}: stream me please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == len(text.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    (seen,) = attempts(mock, mid)
    assert seen["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tools_round_trip(client, mock, stream):
    """The call comes back as tool_calls; sent back with its result it reaches Converse as a
    toolUse block and a toolResult block answering it, and the answer uses the result."""
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = {"model": f"bedrock/{MODEL}", "tools": TOOLS, "tool_choice": "required"}
    if stream:
        chunks = list(client.chat.completions.create(messages=messages, stream=True, **kwargs))
        deltas = [d for c in chunks if c.choices and (d := c.choices[0].delta).tool_calls]
        first = deltas[0].tool_calls[0]
        call = {"id": first.id, "type": "function", "function": {
            "name": first.function.name, "arguments": "".join(d.tool_calls[0].function.arguments or "" for d in deltas)}}
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(messages=messages, **kwargs)
        call = reply.choices[0].message.tool_calls[0].model_dump(exclude_none=True)
        finish = [reply.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"mock"}'}
    assert call["id"].startswith("tooluse_")

    mid = uuid.uuid4().hex
    messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": call["id"], "content": "sunny and 21 degrees"}]
    answer = client.chat.completions.create(messages=messages, extra_headers={"x-bf-eh-x-mock-id": mid}, **kwargs)
    assert answer.choices[0].message.content == f"This is a mock response from {MODEL}: the tool returned sunny and 21 degrees"
    (seen,) = attempts(mock, mid)
    body = seen["body"]
    assert body["toolConfig"] == {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather in a city",
                                                          "inputSchema": {"json": TOOLS[0]["function"]["parameters"]}}}],
                                  "toolChoice": {"any": {}}}
    assert body["messages"][1:] == [
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": call["id"], "name": "get_weather", "input": {"city": "mock"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": call["id"], "content": [{"text": "sunny and 21 degrees"}]}}]},
    ]


def test_validation_exception_is_a_400_in_the_openai_shape_and_not_retried(client, mock):
    mid = uuid.uuid4().hex
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, f"bedrock/{MODEL}", mid, headers={"x-bf-eh-x-mock-fail-status": "400"})
    body = caught.value.body
    assert body["type"] == "invalid_request_error" and body["code"] == "ValidationException"
    assert body["message"] == "bedrock: Mock failure (fail-status): status 400"
    assert len(attempts(mock, mid)) == 1


def test_a_wrong_secret_is_bedrocks_403_invalid_signature(client, mock):
    mid = uuid.uuid4().hex
    with pytest.raises(openai.PermissionDeniedError) as caught:
        ask(client, f"bedwrong/{MODEL}", mid)
    assert caught.value.body["code"] == "InvalidSignatureException"
    assert "signature we calculated does not match" in caught.value.body["message"]
    assert "not-the-secret" not in str(caught.value.body)


def test_throttling_is_retried_then_answered_429(client, mock):
    mid = uuid.uuid4().hex
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, f"bedrock/{MODEL}", mid, headers={"x-bf-eh-x-mock-fail-status": "429"})
    assert caught.value.body["code"] == "ThrottlingException" and caught.value.body["type"] == "rate_limit_error"
    assert len(attempts(mock, mid)) == 3  # the first attempt and max_retries (2) retries


@pytest.mark.parametrize(("provider", "first", "second"), [("beddead", "AKIAstatus-403-DEAD", "AKIALIVE000000000001"),
                                                            ("bedbusy", "AKIAstatus-429-BUSY", "AKIASPARE00000000001")])
def test_a_denied_or_throttled_key_rotates_to_the_other_key(client, mock, provider, first, second):
    mid = uuid.uuid4().hex
    assert ask(client, f"{provider}/{MODEL}", mid).choices[0].message.content
    assert [a["key"] for a in attempts(mock, mid)] == [first, second]


@pytest.mark.parametrize(("control", "message"), [
    ("x-bf-eh-x-mock-error-after", "bedrock: The model stream failed. Try your request again."),
    ("x-bf-eh-x-mock-cut-after", "provider bedrock broke the stream"),
])
def test_a_stream_that_breaks_after_its_start_ends_with_an_error_event(client, control, message):
    stream = client.chat.completions.create(model=f"bedrock/{MODEL}", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, extra_headers={control: "3"})
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert "".join(filter(None, received)) == "This is a"
    assert message in caught.value.message


def test_a_governed_request_is_charged_with_bedrocks_usage(gateway):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=VK, max_retries=0, timeout=20) as sdk:
        messages = [{"role": "user", "content": "count my tokens"}]
        whole = sdk.chat.completions.create(model=f"bedrock/{MODEL}", messages=messages)
        chunks = list(sdk.chat.completions.create(model=f"bedrock/{MODEL}", messages=messages, stream=True))
    assert all(c.usage is None for c in chunks)
    usage = whole.usage
    tokens = 2 * usage.total_tokens
    spend = 2 * (usage.prompt_tokens * PRICE["input_cost_per_token"] + usage.completion_tokens * PRICE["output_cost_per_token"])

    def charged():
        _, _, report = http_json("GET", f"{gateway.url}/api/governance/virtual-keys/bvk/usage", None, ADMIN)
        level = report["levels"][0]
        seen = (level["rate_limit"]["token"]["current_usage"], round(level["budgets"][0]["current_usage"], 9))
        return seen == (tokens, round(spend, 9)) or seen

    eventually(charged, 10, "the virtual key charged with Bedrock's usage")


def test_anthropic_sdk_messages_reach_bedrock(gateway):
    import anthropic

    with anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="unused", max_retries=0, timeout=20) as claude:
        reply = claude.messages.create(model=f"bedrock/{MODEL}", max_tokens=100,
                                       messages=[{"role": "user", "content": "Hello from claude land"}])
    assert reply.content[0].text == f"This is a mock response from {MODEL}: Hello from claude land"
    assert reply.stop_reason == "end_turn"


def test_the_management_api_never_shows_the_secret_key(gateway):
    _, _, body = http_json("GET", f"{gateway.url}/api/providers/bedtemp/keys", None, ADMIN)
    config = body["keys"][0]["bedrock_key_config"]
    assert config["secret_key"] == "…" and config["session_token"] == "…" and config["access_key"] == TEMP


def test_extra_headers_ride_along_a_signed_request_but_not_its_content_type(client, mock):
    mid = uuid.uuid4().hex
    assert ask(client, f"bedrock/{MODEL}", mid, headers={"x-bf-eh-accept": "application/json, */*"}).choices[0].message.content
    (seen,) = attempts(mock, mid)
    assert seen["headers"]["accept"] == "application/json, */*" and seen["key"] == AKID
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, f"bedrock/{MODEL}", uuid.uuid4().hex, headers={"x-bf-eh-content-type": "text/plain"})
    assert caught.value.body["param"] == "x-bf-eh-content-type"
