"""A Bedrock key with ``role_arn`` (Bifrost's Helm values-examples/providers-and-virtual-keys,
key "bedrock-assumerole") signs with the role's temporary credentials, got from STS
AssumeRole on a real socket (a fake STS speaking AWS's documented query/XML form) and
refreshed before they expire."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

pytest.importorskip("botocore")

from rainbridge.config.load import load_data
from rainbridge.providers.aws_sigv4 import AssumedRole, AwsSigner

ROLE = "arn:aws:iam::123456789012:role/bifrost-bedrock"


class FakeSts(ThreadingHTTPServer):
    """AssumeRole answers (AWS STS API reference, AssumeRole response elements); each call
    issues ASIA<n> credentials expiring ``lifetime`` seconds later."""

    def __init__(self, lifetime: int):
        self.calls: list[tuple[dict[str, str], str]] = []
        self.lifetime = lifetime
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        server: FakeSts = self.server  # type: ignore[assignment]
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["content-length"])).decode()).items()}
        server.calls.append((form, self.headers.get("authorization", "")))
        n = len(server.calls)
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=server.lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = (f'<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
                f"<Credentials><AccessKeyId>ASIA{n}</AccessKeyId><SecretAccessKey>assumed-secret-{n}</SecretAccessKey>"
                f"<SessionToken>assumed-token-{n}</SessionToken><Expiration>{expires}</Expiration></Credentials>"
                f"<AssumedRoleUser><AssumedRoleId>AROA1:{form.get('RoleSessionName')}</AssumedRoleId>"
                f"<Arn>arn:aws:sts::123456789012:assumed-role/bifrost-bedrock/s</Arn></AssumedRoleUser>"
                f"</AssumeRoleResult><ResponseMetadata><RequestId>r-{n}</RequestId></ResponseMetadata>"
                f"</AssumeRoleResponse>").encode()
        self.send_response(200)
        self.send_header("content-type", "text/xml")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def sts(request, monkeypatch):
    server = FakeSts(getattr(request, "param", 3600))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", server.url)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def sign(signer: AwsSigner) -> dict[str, str]:
    return asyncio.run(signer.sign("https://bedrock-runtime.eu-west-1.amazonaws.com/model/m/converse", b"{}",
                                   {"content-type": "application/json"}))


def test_a_role_arn_key_signs_with_the_assumed_roles_credentials(sts):
    signer = AwsSigner("eu-west-1", "AKIASOURCE", "source-secret",
                       role=AssumedRole(ROLE, "ext-42", "bifrost-session"))
    first, second = sign(signer), sign(signer)
    assert "Credential=ASIA1/" in first["Authorization"] and first["X-Amz-Security-Token"] == "assumed-token-1"
    assert second["X-Amz-Security-Token"] == "assumed-token-1"  # cached: one AssumeRole call
    ((form, authorization),) = sts.calls
    assert form["Action"] == "AssumeRole" and form["RoleArn"] == ROLE
    assert form["ExternalId"] == "ext-42" and form["RoleSessionName"] == "bifrost-session"
    assert "Credential=AKIASOURCE/" in authorization and "/eu-west-1/sts/aws4_request" in authorization


@pytest.mark.parametrize("sts", [300], indirect=True)
def test_assumed_credentials_are_refreshed_before_they_expire(sts):
    """Credentials 5 minutes from expiry are inside botocore's mandatory refresh window, so
    the next request assumes the role again and signs with the new credentials."""
    signer = AwsSigner("eu-west-1", "AKIASOURCE", "source-secret", role=AssumedRole(ROLE))
    assert sign(signer)["X-Amz-Security-Token"] == "assumed-token-1"
    assert sign(signer)["X-Amz-Security-Token"] == "assumed-token-2"
    assert [form["RoleSessionName"] for form, _ in sts.calls] == ["rainbridge", "rainbridge"]


def test_a_role_arn_key_in_bifrosts_helm_form_starts():
    key = {"name": "bedrock-assumerole", "value": "", "weight": 1, "models": ["*"],
           "bedrock_key_config": {"region": "us-west-2", "role_arn": ROLE, "external_id": "ext",
                                  "session_name": "bifrost-session"}}
    config = load_data({"providers": {"bedrock": {"keys": [key]}}}, {}).config
    assert config.providers["bedrock"].keys[0].bedrock_key_config.role_arn == ROLE
