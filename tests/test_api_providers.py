"""The providers management API (/api/providers, /api/providers/{name}/keys) on SQLite and
PostgreSQL: changes serve traffic at once, key values are write-only (and encrypted at rest
when a key is set), validation names the field and writes nothing."""

import asyncio
import contextlib
import http.client
import json
import sqlite3
import uuid

import openai
import pytest

from support import GatewayProcess, http_json, provider_config

TOKEN = "admin-token-for-providers-api-tests"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
FILE_SECRETS = ("sk-test-openai-0123456789", "sk-ant-test-0123456789")  # from provider_config


class Api:
    """Admin calls that remember every response body, to prove no secret ever comes back."""

    def __init__(self, gw):
        self.gw = gw
        self.seen: list[str] = []

    def __call__(self, method, path, body=None, expect=200):
        status, headers, reply = http_json(method, self.gw.url + path, body, headers=ADMIN)
        self.seen.append(json.dumps(reply) + json.dumps(headers))
        assert status == expect, (method, path, status, reply)
        return reply

    def raw(self, method, path, body: bytes):
        host, port = self.gw.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request(method, path, body=body, headers={"content-type": "application/json", **ADMIN})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.seen.append(data.decode(errors="replace"))
        return resp.status, json.loads(data)

    def assert_never_shown(self, *secrets):
        for secret in secrets:
            assert not [text for text in self.seen if secret in text], secret
            assert secret not in self.gw.log()


@pytest.fixture
def gw(mock, start_gateway, store_config):
    return start_gateway({**provider_config(mock.url), "config_store": store_config}, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def read_gw(mock, module_store_config, tmp_path_factory):
    """One gateway per engine for the tests that change nothing (reads, refused calls)."""
    gw = GatewayProcess(tmp_path_factory.mktemp("providers"), {**provider_config(mock.url), "config_store": module_store_config},
                        env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gw
    gw.stop()


def secret(label):
    return f"sk-{label}-{uuid.uuid4().hex}"


def chat(gw, model, api_key="x"):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=api_key, max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def db_fetch(store_config, sql):
    """Rows straight from the database, behind the gateway's back."""
    if store_config["type"] == "sqlite":
        with contextlib.closing(sqlite3.connect(store_config["config"]["path"])) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]

    async def fetch():
        import asyncpg

        conn = await asyncpg.connect(store_config["config"]["dsn"])
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def counts(store_config):
    return db_fetch(store_config, "SELECT (SELECT count(*) FROM providers), (SELECT count(*) FROM provider_keys)")[0]


def test_config_file_providers_are_listed_with_masked_keys(read_gw):
    api = Api(read_gw)
    providers = {p["name"]: p for p in api("GET", "/api/providers")["providers"]}
    assert set(providers) == {"openai", "anthropic"}
    key = providers["openai"]["keys"][0]
    assert key["id"] == "openai:main" and key["name"] == "main" and key["value"] == "…" and key["models"] == ["*"]
    assert providers["openai"]["network_config"]["base_url"].startswith("http://127.0.0.1:")
    assert api("GET", "/api/providers/openai")["provider"]["keys"] == providers["openai"]["keys"]
    assert api("GET", "/api/providers/anthropic/keys")["count"] == 1
    assert api("GET", "/api/providers/ghost", expect=404)["error"]["param"] == "name"
    assert api("GET", "/api/providers/openai/keys/ghost", expect=405)["error"]["type"] == "method_not_allowed"
    api.assert_never_shown(*FILE_SECRETS)


def test_a_new_provider_and_key_serve_at_once(gw, mock, store_config):
    api = Api(gw)
    value, value2 = secret("new"), secret("new2")
    created = api("POST", "/api/providers", {"name": "newprovider", "type": "openai", "network_config": {"base_url": mock.url}}, expect=201)
    assert created["provider"]["name"] == "newprovider" and created["provider"]["keys"] == []

    key = api("POST", "/api/providers/newprovider/keys", {"name": "k1", "value": value}, expect=201)["key"]
    assert key == {"id": "newprovider:k1", "name": "k1", "models": None, "weight": 1.0, "value": "…"}
    reply = chat(gw, "newprovider/gpt-4o")
    assert reply.model == "gpt-4o" and reply.usage.total_tokens > 0
    assert mock.stats()["by_key"].get(value) == 1  # the new key went upstream

    # Update a key: weight and models change, the value stays (and stays hidden).
    key = api("PUT", "/api/providers/newprovider/keys/newprovider:k1", {"weight": 3, "models": ["gpt-4o"]})["key"]
    assert key["weight"] == 3 and key["models"] == ["gpt-4o"] and key["value"] == "…"
    listed = api("GET", "/api/providers/newprovider/keys")["keys"]
    assert [(k["name"], k["weight"], k["models"]) for k in listed] == [("k1", 3, ["gpt-4o"])]
    chat(gw, "newprovider/gpt-4o")
    assert mock.stats()["by_key"].get(value) == 2
    with pytest.raises(openai.NotFoundError) as info:
        chat(gw, "newprovider/gpt-4o-mini")  # k1 now serves gpt-4o only
    assert "no key that serves model" in info.value.body["message"]

    # A second key (by name in the URL), then rotate its value: the new value is used at once.
    api("POST", "/api/providers/newprovider/keys", {"name": "k2", "value": value2, "models": ["gpt-4o-mini"]}, expect=201)
    chat(gw, "newprovider/gpt-4o-mini")
    assert mock.stats()["by_key"].get(value2) == 1
    value3 = secret("rotated")
    assert api("PATCH", "/api/providers/newprovider/keys/k2", {"value": value3})["key"]["value"] == "…"
    chat(gw, "newprovider/gpt-4o-mini")
    assert mock.stats()["by_key"].get(value3) == 1 and mock.stats()["by_key"].get(value2) == 1

    # A partial provider update keeps what it does not name (nested objects merge).
    updated = api("PUT", "/api/providers/newprovider", {"network_config": {"max_retries": 1}})["provider"]
    assert updated["network_config"] == {"base_url": mock.url, "max_retries": 1} and updated["type"] == "openai"
    assert [k["name"] for k in updated["keys"]] == ["k1", "k2"]
    chat(gw, "newprovider/gpt-4o")

    assert api("DELETE", "/api/providers/newprovider/keys/k2")["id"] == "newprovider:k2"
    assert [k["id"] for k in api("GET", "/api/providers/newprovider/keys")["keys"]] == ["newprovider:k1"]
    assert api("DELETE", "/api/providers/newprovider/keys/k2", expect=404)["error"]["param"] == "key_id"
    with pytest.raises(openai.NotFoundError):
        chat(gw, "newprovider/gpt-4o-mini")

    api("DELETE", "/api/providers/newprovider")
    assert counts(store_config) == (2, 2)  # its keys went with it
    with pytest.raises(openai.NotFoundError) as info:
        chat(gw, "newprovider/gpt-4o")
    assert "unknown provider 'newprovider'" in info.value.body["message"]
    assert api("GET", "/api/providers/newprovider", expect=404)["error"]["code"] == "not_found"
    assert api("DELETE", "/api/providers/newprovider", expect=404)["error"]["param"] == "name"
    assert sorted(p["name"] for p in api("GET", "/api/providers")["providers"]) == ["anthropic", "openai"]
    chat(gw, "openai/gpt-4o")  # the others are untouched
    api.assert_never_shown(value, value2, value3, *FILE_SECRETS)


BIG = b'{"name": "big", "type": "openai", "network_config": {"base_url": "http://x.test"}, "pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'


def test_bad_input_names_the_field_and_writes_nothing(gw, mock, store_config):
    api = Api(gw)
    value = secret("valid")
    api("POST", "/api/providers", {"name": "custom", "type": "openai", "network_config": {"base_url": mock.url},
                                   "keys": [{"name": "a", "value": value}]}, expect=201)
    before = api("GET", "/api/providers")
    rows = counts(store_config)
    net = {"base_url": mock.url}
    cases = [
        # (method, path, body, status, param)
        ("POST", "/api/providers", {"type": "openai", "network_config": net}, 400, "name"),
        ("POST", "/api/providers", {"name": "", "type": "openai", "network_config": net}, 400, "name"),
        ("POST", "/api/providers", {"name": 7, "type": "openai", "network_config": net}, 400, "name"),
        ("POST", "/api/providers", {"name": "a/b", "type": "openai", "network_config": net}, 400, "name"),
        ("POST", "/api/providers", {"name": "custom", "type": "openai", "network_config": net}, 409, "name"),
        ("POST", "/api/providers", {"name": "openai"}, 409, "name"),
        ("POST", "/api/providers", {"name": "x", "type": "nosuch", "network_config": net}, 400, "type"),
        ("POST", "/api/providers", {"name": "x", "network_config": net}, 400, "type"),
        ("POST", "/api/providers", {"name": "x", "type": "openai", "network_config": {"base_url": "ftp://host"}}, 400, "network_config.base_url"),
        ("POST", "/api/providers", {"name": "x", "type": "openai", "network_config": {"base_url": "not a url"}}, 400, "network_config.base_url"),
        ("POST", "/api/providers", {"name": "x", "type": "openai"}, 400, "network_config.base_url"),
        ("POST", "/api/providers", {"name": "x", "type": "openai", "network_config": {**net, "max_retries": -1}}, 400, "network_config.max_retries"),
        ("POST", "/api/providers", {"name": "x", "type": "openai", "network_config": net, "keys": {"value": "v"}}, 400, "keys"),
        ("POST", "/api/providers", {"name": "x", "type": "openai", "network_config": net, "keys": [{"name": "k", "value": ""}]}, 400, "keys[0].value"),
        ("POST", "/api/providers", {"name": "x", "type": "openai", "network_config": net,
                                    "keys": [{"name": "k", "value": "v1"}, {"name": "k", "value": "v2"}]}, 400, "keys[1].name"),
        ("PUT", "/api/providers/custom", {"network_config": {"base_url": "nope"}}, 400, "network_config.base_url"),
        ("PUT", "/api/providers/custom", {"type": "nosuch"}, 400, "type"),
        ("PUT", "/api/providers/custom", {"keys": []}, 400, "keys"),
        ("PUT", "/api/providers/custom", {"network_config": {"default_request_timeout_in_seconds": "soon"}}, 400, "network_config.default_request_timeout_in_seconds"),
        ("PUT", "/api/providers/ghost", {"type": "openai"}, 404, "name"),
        ("POST", "/api/providers/custom/keys", {"name": "b", "value": ""}, 400, "value"),
        ("POST", "/api/providers/custom/keys", {"name": "b"}, 400, "value"),
        ("POST", "/api/providers/custom/keys", {"value": "v"}, 400, "name"),
        ("POST", "/api/providers/custom/keys", {"name": "b", "value": "v", "weight": -1}, 400, "weight"),
        ("POST", "/api/providers/custom/keys", {"name": "b", "value": 12345}, 400, "value"),
        ("POST", "/api/providers/custom/keys", {"name": "b", "value": "v", "models": "gpt-4o"}, 400, "models"),
        ("POST", "/api/providers/custom/keys", {"name": "a", "value": "v"}, 409, "name"),
        ("POST", "/api/providers/custom/keys", {"name": "b", "value": "v", "id": "openai:main"}, 409, "id"),
        ("POST", "/api/providers/ghost/keys", {"name": "b", "value": "v"}, 404, "name"),
        ("PUT", "/api/providers/custom/keys/a", {"value": ""}, 400, "value"),
        ("PUT", "/api/providers/custom/keys/a", {"name": ""}, 400, "name"),
        ("PUT", "/api/providers/custom/keys/a", {"weight": "heavy"}, 400, "weight"),
        ("PUT", "/api/providers/custom/keys/ghost", {"weight": 2}, 404, "key_id"),
        ("DELETE", "/api/providers/custom/keys/ghost", None, 404, "key_id"),
    ]
    failures = []
    for method, path, body, status, param in cases:
        got, _, reply = http_json(method, gw.url + path, body, headers=ADMIN)
        api.seen.append(json.dumps(reply))
        if (got, reply.get("error", {}).get("param")) != (status, param) or "Traceback" in json.dumps(reply):
            failures.append((method, path, body, got, reply))
    assert not failures, "\n".join(map(repr, failures))

    # A second key named like the first, by renaming: 409, not a 500 from the database.
    api("POST", "/api/providers/custom/keys", {"name": "b", "value": secret("b")}, expect=201)
    assert api("PUT", "/api/providers/custom/keys/b", {"name": "a"}, expect=409)["error"]["param"] == "name"
    api("DELETE", "/api/providers/custom/keys/b")

    for body, status, code in ((b"{not json", 400, "invalid_json"), (b"[]", 400, "invalid_json"), (BIG, 413, "request_too_large")):
        for method, path in (("POST", "/api/providers"), ("PUT", "/api/providers/custom"),
                             ("POST", "/api/providers/custom/keys"), ("PUT", "/api/providers/custom/keys/a")):
            got, reply = api.raw(method, path, body)
            assert (got, reply["error"]["code"]) == (status, code), (method, path, body[:20], reply)

    # Nothing half-written: the API and the database show what was there before.
    assert api("GET", "/api/providers") == before
    assert counts(store_config) == rows
    chat(gw, "custom/gpt-4o")  # the key still works with its original value
    assert mock.stats()["by_key"].get(value) == 1
    api.assert_never_shown(value, *FILE_SECRETS)


def test_key_values_are_encrypted_at_rest(mock, start_gateway, store_config):
    env = {"RAINBRIDGE_ADMIN_TOKEN": TOKEN, "RAINBRIDGE_ENCRYPTION_KEY": "passphrase-for-provider-api-tests"}
    gw = start_gateway({**provider_config(mock.url), "config_store": store_config}, env=env)
    api = Api(gw)
    value = secret("sealed")
    api("POST", "/api/providers", {"name": "vault", "type": "openai", "network_config": {"base_url": mock.url}}, expect=201)
    api("POST", "/api/providers/vault/keys", {"name": "k", "value": value}, expect=201)
    stored = dict(db_fetch(store_config, "SELECT id, value FROM provider_keys"))
    assert set(stored) == {"openai:main", "anthropic:main", "vault:k"}
    assert all(v.startswith("rbenc:") for v in stored.values()), stored
    assert value not in json.dumps(stored) and not any(s in json.dumps(stored) for s in FILE_SECRETS)
    chat(gw, "vault/gpt-4o")  # decrypted for the upstream call
    assert mock.stats()["by_key"].get(value) == 1
    # Rotating the value through the API stores the new one sealed too.
    value2 = secret("sealed2")
    api("PUT", "/api/providers/vault/keys/k", {"value": value2})
    sealed = db_fetch(store_config, "SELECT value FROM provider_keys WHERE id = 'vault:k'")[0][0]
    assert sealed.startswith("rbenc:") and sealed != stored["vault:k"] and value2 not in sealed
    chat(gw, "vault/gpt-4o")
    assert mock.stats()["by_key"].get(value2) == 1
    api.assert_never_shown(value, value2)


def test_every_route_needs_the_admin_token_and_reveals_nothing(read_gw):
    routes = [("GET", "/api/providers", None), ("POST", "/api/providers", {"name": "evil", "type": "openai"})]
    for name in ("openai", "ghost"):
        routes += [("GET", f"/api/providers/{name}", None), ("PUT", f"/api/providers/{name}", {"type": "openai"}),
                   ("DELETE", f"/api/providers/{name}", None), ("GET", f"/api/providers/{name}/keys", None),
                   ("POST", f"/api/providers/{name}/keys", {"name": "evil", "value": "v"})]
        for kid in ("main", "ghost"):
            routes += [("PUT", f"/api/providers/{name}/keys/{kid}", {"weight": 0}), ("DELETE", f"/api/providers/{name}/keys/{kid}", None)]
    bodies = set()
    for method, path, body in routes:
        for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": f"bearer  {TOKEN}x"}):
            status, _, reply = http_json(method, read_gw.url + path, body, headers=headers)
            assert status == 401, (method, path, reply)
            bodies.add(json.dumps(reply, sort_keys=True))
    assert len(bodies) == 1
    api = Api(read_gw)
    assert sorted(p["name"] for p in api("GET", "/api/providers")["providers"]) == ["anthropic", "openai"]
    assert api("GET", "/api/providers/openai/keys")["keys"][0]["weight"] == 1


def test_a_provider_created_through_the_api_enforces_allowed_requests_and_path_overrides(gw, mock):
    """Bifrost's custom_provider_config through the API: a type it does not allow answers 400
    request_type_not_allowed; an allowed one goes to its overridden path."""
    api = Api(gw)
    api("POST", "/api/providers", {"name": "chatonly", "network_config": {"base_url": mock.url},
                                   "custom_provider_config": {"base_provider_type": "openai",
                                                              "allowed_requests": {"chat_completion": True},
                                                              "request_path_overrides": {"chat_completion": "/chat/completions"}}},
        expect=201)
    api("POST", "/api/providers/chatonly/keys", {"name": "k", "value": secret("chatonly")}, expect=201)
    before = mock.stats()["by_path"].get("/chat/completions", 0)
    assert chat(gw, "chatonly/gpt-4o").choices
    assert mock.stats()["by_path"].get("/chat/completions", 0) == before + 1
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="chatonly/text-embedding-3-small", input="hi")
    assert caught.value.body["code"] == "request_type_not_allowed"
    reply = api("POST", "/api/providers", {"name": "anthro", "network_config": {"base_url": mock.url},
                                           "custom_provider_config": {"base_provider_type": "anthropic",
                                                                      "request_path_overrides": {"chat_completion": "/x"}}},
                expect=400)
    assert reply["error"]["param"] == "custom_provider_config.request_path_overrides"
