"""Bifrost's per-provider ``proxy_config`` through a running gateway (issue 14): a real
tinyproxy (Basic auth, CONNECT only to the fake provider's port) in front of the fake provider,
clients the official openai SDK. Chat and streaming go through the proxy's CONNECT tunnel; a
wrong password and a proxy that is down end as a clear 502 in OpenAI's error shape, in bounded
time, and fall back like any upstream failure; a provider without proxy_config, or with
``{"type": "none"}``, goes direct; ``environment`` reads HTTP_PROXY at start (loopback
addresses going direct, as in Bifrost).
"""

from __future__ import annotations

import socket
import time

import openai
import pytest

from proxy_support import PASSWORD, USER, Microsocks, Tinyproxy
from support import HOST, GatewayProcess, free_port, http_json, provider_config

KEYS = {name: f"sk-{name}-0123456789"
        for name in ("wrongpass", "proxydown", "noproxy", "envdirect", "envproxied", "socksed", "sockswrong")}
ENTRA_SECRET = "entra-secret-Qx7~value-0123456789"


def provider(mock_url: str, name: str, proxy: dict | None, base_url: str | None = None) -> dict:
    out = {"keys": [{"name": "k", "value": KEYS[name], "models": ["*"], "weight": 1}],
           "network_config": {"base_url": base_url or mock_url},
           "custom_provider_config": {"base_provider_type": "openai"}}
    return out | ({"proxy_config": proxy} if proxy is not None else {})


@pytest.fixture(scope="module")
def proxy(mock, tmp_path_factory):
    port = int(mock.url.rsplit(":", 1)[1])
    tp = Tinyproxy(tmp_path_factory.mktemp("tinyproxy"), [port])
    yield tp
    tp.stop()


@pytest.fixture(scope="module")
def socks(tmp_path_factory):
    ms = Microsocks(tmp_path_factory.mktemp("microsocks"))
    yield ms
    ms.stop()


def loopback_name() -> str | None:
    """A host name that resolves to a loopback address without being ``localhost`` or an IP
    (which the environment proxy never proxies): the machine's own name, in /etc/hosts."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    except OSError:
        return None
    return name if addresses == {HOST} else None


def bifrost_config(mock_url: str, proxy_url: str, dead_port: int, socks_url: str = "socks5://127.0.0.1:1080") -> dict:
    config = provider_config(mock_url)  # openai and anthropic on the fake provider
    config["providers"]["openai"]["proxy_config"] = {
        "type": "http", "url": proxy_url, "username": USER, "password": "env.UPSTREAM_PROXY_PASSWORD"}
    config["providers"]["wrongpass"] = provider(mock_url, "wrongpass", {
        "type": "http", "url": proxy_url, "username": USER, "password": "not-the-password-77"})
    config["providers"]["proxydown"] = provider(mock_url, "proxydown", {"type": "http", "url": f"http://{HOST}:{dead_port}"})
    config["providers"]["noproxy"] = provider(mock_url, "noproxy", {"type": "none"})
    config["providers"]["envdirect"] = provider(mock_url, "envdirect", {"type": "environment"})
    config["providers"]["socksed"] = provider(mock_url, "socksed", {
        "type": "socks5", "url": socks_url, "username": USER, "password": "env.UPSTREAM_PROXY_PASSWORD"})
    config["providers"]["sockswrong"] = provider(mock_url, "sockswrong", {
        "type": "socks5", "url": socks_url, "username": USER, "password": "not-the-password-77"})
    # Azure with an Entra ID service principal: the token request goes through the proxy too.
    config["providers"]["azproxied"] = {
        "network_config": {"base_url": mock_url}, "type": "azure",
        "keys": [{"name": "sp", "value": "", "models": ["*"], "azure_key_config": {
            "endpoint": "", "client_id": "app-proxied", "client_secret": ENTRA_SECRET, "tenant_id": "tenant-1"}}],
        "proxy_config": {"type": "http", "url": proxy_url, "username": USER, "password": "env.UPSTREAM_PROXY_PASSWORD"}}
    name = loopback_name()
    if name is not None:
        port = mock_url.rsplit(":", 1)[1]
        config["providers"]["envproxied"] = provider(mock_url, "envproxied", {"type": "environment"}, f"http://{name}:{port}")
    return config


@pytest.fixture
def gw(mock, proxy, socks, tmp_path):
    """A fresh gateway per test: its first upstream request opens its first tunnel."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        dead_port = s.getsockname()[1]  # closed again: a proxy that is down
    authed_url = f"http://{USER}:{PASSWORD}@{HOST}:{proxy.port}"
    name = loopback_name()  # Entra ID at another name of the fake provider: its own tunnel
    authority = f"http://{name}:{mock_port(mock)}" if name else mock.url
    gateway = GatewayProcess(tmp_path, bifrost_config(mock.url, proxy.url, dead_port, socks.url),
                             env={"UPSTREAM_PROXY_PASSWORD": PASSWORD, "HTTP_PROXY": authed_url, "NO_PROXY": "", "no_proxy": "",
                                  "AZURE_AUTHORITY_HOST": authority})
    yield gateway
    gateway.stop()


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def chat(gw, model: str, **kw) -> str:
    reply = client(gw).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi there"}], **kw)
    return reply.choices[0].message.content


def mock_port(mock) -> int:
    return int(mock.url.rsplit(":", 1)[1])


def seen(mock, key: str) -> int:
    return mock.stats()["by_key"].get(key, 0)


def test_chat_goes_through_the_proxy_with_its_credentials(gw, mock, proxy):
    tunnels, served = proxy.connects(mock_port(mock)), seen(mock, "sk-test-openai-0123456789")
    assert chat(gw, "openai/gpt-4o").startswith("This is a mock response from gpt-4o")
    assert proxy.connects(mock_port(mock)) == tunnels + 1
    assert seen(mock, "sk-test-openai-0123456789") == served + 1
    assert chat(gw, "openai/gpt-4o")  # the tunnel is kept alive and reused
    assert proxy.connects(mock_port(mock)) == tunnels + 1
    assert PASSWORD not in gw.log()


def test_streaming_goes_through_the_proxy(gw, mock, proxy):
    tunnels, served = proxy.connects(mock_port(mock)), seen(mock, "sk-test-openai-0123456789")
    stream = client(gw).chat.completions.create(model="openai/gpt-4o", stream=True,
                                                messages=[{"role": "user", "content": "one two three four"}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "This is a mock response from gpt-4o: one two three four"
    assert proxy.connects(mock_port(mock)) == tunnels + 1
    assert seen(mock, "sk-test-openai-0123456789") == served + 1


def test_a_wrong_proxy_password_is_a_clear_502_and_never_logged(gw, mock, proxy):
    served = seen(mock, KEYS["wrongpass"])
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gw, "wrongpass/gpt-4o")
    assert caught.value.status_code == 502
    error = caught.value.body
    assert error["type"] == "upstream_unreachable" and error["code"] == "upstream_proxy_error"
    assert error["message"].startswith(f"provider wrongpass is unreachable: proxy {proxy.url} refused the tunnel: 40")
    assert seen(mock, KEYS["wrongpass"]) == served
    assert "not-the-password-77" not in gw.log() and "not-the-password-77" not in error["message"]
    assert "Traceback" not in gw.log()


def test_a_proxy_that_is_down_is_a_clear_502_at_once(gw):
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gw, "proxydown/gpt-4o")
    assert time.monotonic() - started < 5
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_proxy_error"
    assert "is unreachable (connection refused)" in caught.value.body["message"]
    assert "Traceback" not in gw.log()


def test_a_proxy_failure_falls_back_like_any_upstream_failure(gw, mock):
    served = seen(mock, "sk-ant-test-0123456789")
    assert chat(gw, "proxydown/gpt-4o", extra_body={"fallbacks": ["anthropic/claude-3-5-haiku"]}).startswith(
        "This is a mock response from claude-3-5-haiku")
    assert seen(mock, "sk-ant-test-0123456789") == served + 1


@pytest.mark.parametrize(("model", "key"), [("anthropic/claude-3-5-haiku", "sk-ant-test-0123456789"),
                                            ("noproxy/gpt-4o", KEYS["noproxy"]),
                                            ("envdirect/gpt-4o", KEYS["envdirect"])],
                         ids=["no proxy_config", "type none", "environment, loopback upstream"])
def test_providers_without_a_proxy_go_direct(gw, mock, proxy, model, key):
    requests, served = proxy.requests(), seen(mock, key)
    assert chat(gw, model)
    assert seen(mock, key) == served + 1
    assert proxy.requests() == requests


def test_environment_proxy_is_read_at_start_and_used(gw, mock, proxy):
    name = loopback_name()
    if name is None:
        pytest.skip("this machine's name does not resolve to 127.0.0.1 (needed for an upstream that is not a loopback IP)")
    tunnels, served = len(proxy.connect_lines(f"{name}:{mock_port(mock)}")), seen(mock, KEYS["envproxied"])
    assert chat(gw, "envproxied/gpt-4o")
    assert seen(mock, KEYS["envproxied"]) == served + 1
    assert len(proxy.connect_lines(f"{name}:{mock_port(mock)}")) == tunnels + 1


def test_chat_and_streaming_go_through_a_socks5_proxy(gw, mock, proxy):
    served = seen(mock, KEYS["socksed"])
    assert chat(gw, "socksed/gpt-4o").startswith("This is a mock response from gpt-4o")
    stream = client(gw).chat.completions.create(model="socksed/gpt-4o", stream=True,
                                                messages=[{"role": "user", "content": "one two"}])
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices).endswith(": one two")
    assert seen(mock, KEYS["socksed"]) == served + 2
    assert PASSWORD not in gw.log()


def test_a_wrong_socks5_password_is_a_clear_502(gw, mock, socks):
    served = seen(mock, KEYS["sockswrong"])
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gw, "sockswrong/gpt-4o")
    assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_proxy_error"
    assert caught.value.body["message"].startswith(f"provider sockswrong is unreachable: proxy {socks.url} refused the tunnel")
    assert seen(mock, KEYS["sockswrong"]) == served
    assert "not-the-password-77" not in gw.log() + caught.value.body["message"]


def test_an_entra_id_token_request_goes_through_the_providers_proxy(gw, mock, proxy):
    name = loopback_name()
    if name is None:
        pytest.skip("this machine's name does not resolve to 127.0.0.1 (the token endpoint needs a name of its own)")
    token_tunnels, tunnels = len(proxy.connect_lines(f"{name}:{mock_port(mock)}")), proxy.connects(mock_port(mock))
    assert chat(gw, "azproxied/gpt-4o").startswith("This is a mock response from gpt-4o")
    assert len(proxy.connect_lines(f"{name}:{mock_port(mock)}")) == token_tunnels + 1  # the token request
    assert proxy.connects(mock_port(mock)) == tunnels + 1  # the chat request
    (asked,) = [r for r in mock.stats()["recent"] if r["path"].endswith("/oauth2/v2.0/token")
                and r["body"]["client_id"] == "app-proxied"][-1:]
    assert asked["path"] == "/tenant-1/oauth2/v2.0/token"


def test_config_check_says_the_proxy_is_used(tmp_path, mock):
    import json
    import subprocess
    import sys

    f = tmp_path / "config.json"
    f.write_text(json.dumps(bifrost_config(mock.url, "http://proxy.internal:3128", free_port(HOST, udp=False))))
    out = subprocess.run([sys.executable, "-m", "rainbridge", "config", "check", str(f)], capture_output=True, text=True,
                         timeout=60, env={"UPSTREAM_PROXY_PASSWORD": "x", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "$.providers.openai.proxy_config: enforced: this provider's upstream requests go through its proxy" in out.stdout
    assert "$.providers.socksed.proxy_config: enforced: this provider's upstream requests go through its proxy (SOCKS5)" in out.stdout
    assert "$.providers.noproxy.proxy_config" not in out.stdout  # type none: nothing to say
    assert ("$.providers.envdirect.proxy_config.type: neither HTTPS_PROXY nor HTTP_PROXY is set here: "
            "this provider's requests go direct (as in Bifrost)") in out.stdout
    with_env = subprocess.run([sys.executable, "-m", "rainbridge", "config", "check", str(f)], capture_output=True, text=True,
                              timeout=60, env={"UPSTREAM_PROXY_PASSWORD": "x", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path),
                                               "https_proxy": "http://u:secret-9@corp.proxy:3128", "NO_PROXY": ".corp,10.0.0.0/8"})
    assert ("$.providers.envdirect.proxy_config: enforced: this provider's upstream requests go through the environment's "
            "proxy (https http://corp.proxy:3128, http direct; 2 NO_PROXY entries; loopback direct)") in with_env.stdout
    assert "secret-9" not in with_env.stdout


def test_a_proxy_set_through_the_management_api_is_used_at_once_and_shown_masked(mock, proxy, tmp_path):
    token = "admin-token-for-proxy-tests"
    admin = {"authorization": f"Bearer {token}"}
    gateway = GatewayProcess(tmp_path, provider_config(mock.url), env={"RAINBRIDGE_ADMIN_TOKEN": token}, name="api")
    try:
        status, _, reply = http_json("POST", gateway.url + "/api/providers", {
            "name": "viaapi", "type": "openai", "network_config": {"base_url": mock.url},
            "proxy_config": {"type": "http", "url": proxy.url, "username": USER, "password": PASSWORD}}, headers=admin)
        assert status == 201, reply
        assert reply["provider"]["proxy_config"] == {"type": "http", "url": "…", "username": USER, "password": "…"}
        status, _, _ = http_json("POST", gateway.url + "/api/providers/viaapi/keys", {"name": "k", "value": "sk-viaapi-0123456789"},
                                 headers=admin)
        assert status == 201
        tunnels = proxy.connects(mock_port(mock))
        assert chat(gateway, "viaapi/gpt-4o")
        assert proxy.connects(mock_port(mock)) == tunnels + 1
        status, _, reply = http_json("PATCH", gateway.url + "/api/providers/viaapi", {"proxy_config": {"type": "http", "url": None}},
                                     headers=admin)
        assert status == 400 and reply["error"]["param"] == "proxy_config.url", reply
        assert PASSWORD not in gateway.log()
    finally:
        gateway.stop()
