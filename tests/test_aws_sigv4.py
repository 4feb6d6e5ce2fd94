"""The Bedrock adapter's SigV4 signing (botocore's signer behind our AwsSigner) against AWS's
published Signature Version 4 test suite (credentials AKIDEXAMPLE, 2015-08-30T12:36:00Z,
us-east-1, service "service")."""

from __future__ import annotations

import datetime

import pytest

from rainbridge.providers.aws_sigv4 import AwsSigner

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def suite_time(monkeypatch):
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: datetime.datetime(2015, 8, 30, 12, 36, 0))


async def test_post_vanilla_signature_is_the_published_one(suite_time):
    signer = AwsSigner("us-east-1", "AKIDEXAMPLE", SECRET, service="service")
    headers = await signer.sign("https://example.amazonaws.com/", b"", {})
    assert headers["X-Amz-Date"] == "20150830T123600Z"
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
    assert "X-Amz-Security-Token" not in headers


async def test_a_session_token_is_sent_and_signed(suite_time):
    signer = AwsSigner("us-east-1", "AKIDEXAMPLE", SECRET, session_token="token-value", service="service")
    headers = await signer.sign("https://example.amazonaws.com/", b"", {})
    assert headers["X-Amz-Security-Token"] == "token-value"
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in headers["Authorization"]


async def test_without_credentials_the_default_chain_finds_them_in_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    headers = await AwsSigner("eu-west-1").sign("https://bedrock-runtime.eu-west-1.amazonaws.com/model/m/converse", b"{}", {})
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFROMENV/")
    assert "/eu-west-1/bedrock/aws4_request" in headers["Authorization"]
