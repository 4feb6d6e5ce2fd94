"""Retries, key rotation, dead keys and fallbacks, driven by the fake provider's fault controls."""

import time
import uuid

import openai
import pytest

from support import GatewayProcess


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: connections are refused


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    net = {"base_url": mock.url}
    config = {
        "providers": {
            "openai": {
                "keys": [{"name": "good", "value": "sk-good-a", "weight": 1}, {"name": "dead", "value": "sk-status-401-dead", "weight": 1}],
                "network_config": {**net, "max_retries": 2, "retry_backoff_initial": 50, "retry_backoff_max": 200},
            },
            "single": {
                "type": "openai",
                "keys": [{"name": "only", "value": "sk-only"}],
                "network_config": {**net, "max_retries": 2, "retry_backoff_initial": 50, "retry_backoff_max": 200},
            },
            # Weight 0: the second key is never chosen first, only rotated to (deterministic).
            "rotating": {
                "type": "openai",
                "keys": [{"name": "busy", "value": "sk-status-429-busy", "weight": 1}, {"name": "spare", "value": "sk-good-b", "weight": 0}],
                "network_config": {**net, "max_retries": 1, "retry_backoff_initial": 300, "retry_backoff_max": 300},
            },
            # No retries and a long backoff: a 401 that spent a retry would fail the request,
            # one that backed off would take 4 s or more.
            "deadfirst": {
                "type": "openai",
                "keys": [{"name": "dead", "value": "sk-status-401-dead", "weight": 1}, {"name": "good", "value": "sk-good-a", "weight": 0}],
                "network_config": {**net, "max_retries": 0, "retry_backoff_initial": 5000, "retry_backoff_max": 5000},
            },
            "deadprov": {"type": "openai", "keys": [{"value": "sk-x"}], "network_config": {"base_url": f"http://127.0.0.1:{closed_port()}"}},
            "badkeys": {"type": "openai", "keys": [{"name": "a", "value": "sk-status-401-a"}, {"name": "b", "value": "sk-status-403-b"}], "network_config": net},
            "slow": {"type": "openai", "keys": [{"value": "sk-slow"}], "network_config": {**net, "default_request_timeout_in_seconds": 1}},
        }
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), config)
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield c
    c.close()


def chat(client, model, headers=None, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=headers or {}, **kw)


def attempts_of(mock, mock_id):
    return [r for r in mock.stats()["recent"] if r["headers"].get("x-mock-id") == mock_id]


def test_dead_key_rotates_immediately_and_every_request_succeeds(client, mock):
    for _ in range(3):
        mid = uuid.uuid4().hex
        started = time.monotonic()
        assert chat(client, "deadfirst/gpt-4o", {"x-bf-eh-x-mock-id": mid}).choices[0].message.content
        elapsed = time.monotonic() - started
        assert [t["key"] for t in attempts_of(mock, mid)] == ["sk-status-401-dead", "sk-good-a"]
        assert elapsed < 5.0 * 0.8  # no backoff (it would be 5 s -20 %), and no retry spent (max_retries 0)


def test_5xx_retries_the_same_key_with_backoff(client, mock):
    mock.reset()
    mid = uuid.uuid4().hex
    started = time.monotonic()
    reply = chat(client, "single/gpt-4o", {"x-bf-eh-x-mock-fail-first": "2", "x-bf-eh-x-mock-id": mid})
    elapsed = time.monotonic() - started
    assert reply.choices[0].message.content
    tries = attempts_of(mock, mid)
    assert [t["key"] for t in tries] == ["sk-only"] * 3
    assert elapsed >= (0.050 + 0.100) * 0.8  # two backoffs: 50 ms and 100 ms, -20 %


def test_retries_are_bounded_and_the_upstream_status_is_returned(client, mock):
    mock.reset()
    mid = uuid.uuid4().hex
    with pytest.raises(openai.InternalServerError) as info:
        chat(client, "single/gpt-4o", {"x-bf-eh-x-mock-fail-status": "503", "x-bf-eh-x-mock-id": mid})
    assert info.value.status_code == 503
    assert len(attempts_of(mock, mid)) == 3  # first try + max_retries (2)


def test_400_is_not_retried(client, mock):
    mock.reset()
    mid = uuid.uuid4().hex
    with pytest.raises(openai.BadRequestError):
        chat(client, "single/gpt-4o", {"x-bf-eh-x-mock-fail-status": "400", "x-bf-eh-x-mock-id": mid})
    assert len(attempts_of(mock, mid)) == 1


def test_429_rotates_to_another_key_after_backoff(client, mock):
    for _ in range(3):
        mid = uuid.uuid4().hex
        started = time.monotonic()
        assert chat(client, "rotating/gpt-4o", {"x-bf-eh-x-mock-id": mid}).choices[0].message.content
        elapsed = time.monotonic() - started
        assert [t["key"] for t in attempts_of(mock, mid)] == ["sk-status-429-busy", "sk-good-b"]
        assert elapsed >= 0.3 * 0.8  # backed off (300 ms, -20 %) before the other key


def test_all_keys_dead_gives_the_providers_auth_error(client, mock):
    mock.reset()
    with pytest.raises(openai.APIStatusError) as info:
        chat(client, "badkeys/gpt-4o")
    assert info.value.status_code in (401, 403)
    assert "sk-status" not in str(info.value)  # the key never appears in an error
    assert sum(mock.stats()["by_key"].values()) == 2  # each key tried once, no retries


def test_unreachable_provider_is_502_naming_it(client):
    with pytest.raises(openai.InternalServerError) as info:
        chat(client, "deadprov/gpt-4o")
    assert info.value.status_code == 502
    assert "deadprov" in str(info.value)
    assert info.value.body["type"] == "upstream_unreachable"


def test_fallback_answers_when_the_primary_fails(client, mock):
    mock.reset()
    mid = uuid.uuid4().hex
    reply = chat(client, "deadprov/gpt-4o", {"x-bf-eh-x-mock-id": mid}, extra_body={"fallbacks": ["badkeys/gpt-4o", "openai/gpt-4o-mini"]})
    assert reply.choices[0].message.content.startswith("This is a mock response from gpt-4o-mini")
    keys = [t["key"] for t in attempts_of(mock, mid)]  # deadprov never reached the fake provider
    assert sorted(keys[:2]) == ["sk-status-401-a", "sk-status-403-b"] and keys[2:] in (["sk-good-a"], ["sk-status-401-dead", "sk-good-a"])


def test_when_everything_fails_the_primarys_error_is_returned(client):
    with pytest.raises(openai.InternalServerError) as info:
        chat(client, "deadprov/gpt-4o", extra_body={"fallbacks": ["badkeys/gpt-4o"]})
    assert info.value.status_code == 502 and "deadprov" in str(info.value)


def test_unknown_fallback_is_a_404_naming_it(client):
    with pytest.raises(openai.NotFoundError) as info:
        chat(client, "openai/gpt-4o", extra_body={"fallbacks": ["ghost/model"]})
    assert info.value.body["param"] == "fallbacks[0]"


def test_upstream_timeout_is_504(client):
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        chat(client, "slow/gpt-4o", {"x-bf-eh-x-mock-hang": "true"})
    assert info.value.status_code == 504 and info.value.body["type"] == "upstream_timeout"
    assert "slow" in info.value.body["message"]
    assert 0.9 < time.monotonic() - started < 5
