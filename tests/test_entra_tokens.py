"""Entra ID token handling as pure functions and a cache on a virtual clock (issue 14)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from rainbridge.providers.entra import (
    DEFAULT_AUTHORITY,
    DEFAULT_SCOPE,
    ServicePrincipal,
    TokenCache,
    TokenRefused,
    authority,
    parse_token_response,
    refresh_margin,
    token_request,
)

SP = ServicePrincipal("tenant/1", "app", "s3cret&=", (DEFAULT_SCOPE,))


def test_token_request_is_the_documented_form_post():
    path, body = token_request(SP)
    assert path == "/tenant%2F1/oauth2/v2.0/token"
    assert body == (b"client_id=app&client_secret=s3cret%26%3D&grant_type=client_credentials"
                    b"&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default")


@pytest.mark.parametrize(("status", "doc", "expected"), [
    (200, {"token_type": "Bearer", "expires_in": 3599, "access_token": "eyJ0.eyJ1.c2ln"}, ("eyJ0.eyJ1.c2ln", 3599.0)),
    (200, {"expires_in": "3600", "access_token": "abc-_~+/="}, ("abc-_~+/=", 3600.0)),  # v1 endpoints: a string
])
def test_a_token_answer_gives_the_token_and_its_lifetime(status, doc, expected):
    assert parse_token_response(status, orjson.dumps(doc)) == expected


@pytest.mark.parametrize(("status", "body", "message"), [
    (401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret.\r\nTrace ID: x\r\nTimestamp: y"},
     "invalid_client: AADSTS7000215: Invalid client secret."),
    (400, {"error": "invalid_scope"}, "invalid_scope"),
    (503, b"<html>busy</html>", "HTTP 503 without a JSON document"),
    (200, {"access_token": "t"}, "no access_token and expires_in"),
    (200, {"access_token": "", "expires_in": 10}, "no access_token and expires_in"),
    (200, {"access_token": "t", "expires_in": 0}, "no access_token and expires_in"),
    (200, {"access_token": "t\r\nX-Injected: 1", "expires_in": 10}, "not a bearer token"),
    (200, [1, 2], "without a JSON document"),
])
def test_anything_else_is_refused_with_a_short_reason(status, body, message):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(TokenRefused) as caught:
        parse_token_response(status, data)
    assert message in caught.value.message and caught.value.status == status


@pytest.mark.parametrize(("lifetime", "margin"), [(3599, 300), (600, 300), (400, 200), (2, 1)])
def test_refresh_margin(lifetime, margin):
    assert refresh_margin(lifetime) == margin


@pytest.mark.parametrize(("env", "expected"), [
    ({}, DEFAULT_AUTHORITY),
    ({"AZURE_AUTHORITY_HOST": "login.microsoftonline.us"}, "https://login.microsoftonline.us"),
    ({"AZURE_AUTHORITY_HOST": "http://127.0.0.1:8080/"}, "http://127.0.0.1:8080"),
])
def test_authority_follows_azure_authority_host(env, expected):
    assert authority(env) == expected


async def test_the_cache_fetches_once_for_many_waiters_and_again_near_expiry():
    now = [1000.0]
    calls = []

    async def fetch(sp):
        calls.append(sp)
        await asyncio.sleep(0)  # let every waiter queue up on the lock
        return f"token-{len(calls)}", 600.0

    cache = TokenCache(fetch, clock=lambda: now[0])
    assert set(await asyncio.gather(*(cache.get(SP) for _ in range(20)))) == {"token-1"}
    now[0] += 600 - 300 - 1  # just before the refresh time (expiry less the 300 s margin)
    assert await cache.get(SP) == "token-1"
    now[0] += 1
    assert await cache.get(SP) == "token-2" and len(calls) == 2


async def test_a_failed_fetch_is_not_cached():
    attempts = []

    async def fetch(sp):
        attempts.append(sp)
        if len(attempts) == 1:
            raise TokenRefused(503, "busy")
        return "token", 60.0

    cache = TokenCache(fetch, clock=lambda: 0.0)
    with pytest.raises(TokenRefused):
        await cache.get(SP)
    assert await cache.get(SP) == "token"


def test_a_service_principal_never_shows_its_secret():
    assert "s3cret" not in repr(SP) and "s3cret" not in str(SP)
