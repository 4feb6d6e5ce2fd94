"""The fake provider's Bedrock and Vertex wire formats, checked with the reference libraries:
requests signed by botocore pass its SigV4 check and tampered ones do not; ConverseStream
answers in AWS event-stream framing that botocore's own parser reads; its Google token
endpoint issues tokens only for JWT assertions signed with a registered key (signed here by
google-auth, as the gateway signs them)."""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.request
import uuid

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rainbridge.mock.bedrock_api import mock_secret_key
from support import http_json

BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "hello"}]}]}).encode()


def send(url: str, body: bytes, headers: dict) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def signed(url: str, body: bytes, access_key: str = "AKIAMOCKTEST0000001", token: str | None = None,
           secret: str | None = None, when: datetime.datetime | None = None) -> dict:
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    auth = SigV4Auth(Credentials(access_key, secret or mock_secret_key(access_key), token), "bedrock", "us-east-1")
    if when is None:
        auth.add_auth(request)
    else:
        import botocore.auth

        original = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: when
        try:
            auth.add_auth(request)
        finally:
            botocore.auth.get_current_datetime = original
    return dict(request.headers.items())


def converse_url(mock, action: str = "converse") -> str:
    return f"{mock.url}/model/amazon.nova-lite-v1%3A0/{action}"


def test_a_botocore_signed_converse_request_is_answered(mock):
    url = converse_url(mock)
    status, _, raw = send(url, BODY, signed(url, BODY))
    assert status == 200
    answer = json.loads(raw)
    assert answer["stopReason"] == "end_turn" and answer["output"]["message"]["role"] == "assistant"
    assert answer["usage"]["totalTokens"] == answer["usage"]["inputTokens"] + answer["usage"]["outputTokens"]


@pytest.mark.parametrize(("case", "exception"), [
    ("tampered body", "InvalidSignatureException"),
    ("wrong secret", "InvalidSignatureException"),
    ("stale date", "InvalidSignatureException"),
    ("temporary key without token", "UnrecognizedClientException"),
    ("unsigned", "MissingAuthenticationTokenException"),
])
def test_a_request_that_does_not_verify_is_bedrocks_403(mock, case, exception):
    url = converse_url(mock)
    body = BODY
    if case == "tampered body":
        headers = signed(url, BODY)
        body = BODY.replace(b"hello", b"HELLO")
    elif case == "wrong secret":
        headers = signed(url, BODY, secret="not-the-secret")
    elif case == "stale date":
        headers = signed(url, BODY, when=datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(minutes=20))
    elif case == "temporary key without token":
        headers = signed(url, BODY, access_key="ASIAMOCKTEMP0000001")
    else:
        headers = {"Content-Type": "application/json"}
    status, response_headers, raw = send(url, body, headers)
    assert status == 403
    assert {k.lower(): v for k, v in response_headers.items()}["x-amzn-errortype"].startswith(exception + ":")
    assert set(json.loads(raw)) == {"message"}


def test_converse_stream_is_aws_event_stream_framing_that_botocore_reads(mock):
    url = converse_url(mock, "converse-stream")
    status, headers, raw = send(url, BODY, signed(url, BODY))
    assert status == 200 and {k.lower(): v for k, v in headers.items()}["content-type"] == "application/vnd.amazon.eventstream"
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    events = [(m.headers[":event-type"], json.loads(m.payload)) for m in buffer]
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "messageStart" and kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    text = "".join(e["delta"]["text"] for kind, e in events if kind == "contentBlockDelta")
    assert text == "This is a mock response from amazon.nova-lite-v1:0: hello"


def test_a_conversation_must_start_with_the_user(mock):
    url = converse_url(mock)
    body = json.dumps({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}).encode()
    status, _, raw = send(url, body, signed(url, body))
    assert status == 400 and "must start with a user message" in json.loads(raw)["message"]


# --- Google's token endpoint and Vertex ------------------------------------------------------------


def account(mock, register_other_key: bool = False) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    registered = rsa.generate_private_key(public_exponent=65537, key_size=2048) if register_other_key else key
    email = f"t-{uuid.uuid4().hex[:8]}@p.iam.gserviceaccount.com"
    public = registered.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert http_json("POST", mock.url + "/mock/google/service-accounts", {"client_email": email, "public_key_pem": public.decode()})[0] == 200
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {"type": "service_account", "client_email": email, "private_key": pem.decode(), "private_key_id": "k",
            "token_uri": mock.url + "/token", "project_id": "p"}


def token_for(info: dict) -> str:
    import google.auth.transport.requests
    from google.oauth2 import service_account

    credentials = service_account.Credentials.from_service_account_info(info, scopes=["https://www.googleapis.com/auth/cloud-platform"])
    credentials.refresh(google.auth.transport.requests.Request())
    return credentials.token


def vertex_generate(mock, token: str) -> tuple[int, dict, dict]:
    url = f"{mock.url}/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    return http_json("POST", url, {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, {"authorization": f"Bearer {token}"})


def test_a_token_for_a_jwt_signed_with_the_registered_key_opens_vertex(mock):
    status, _, body = vertex_generate(mock, token_for(account(mock)))
    assert status == 200 and body["candidates"][0]["content"]["parts"][0]["text"].startswith("This is a mock response")


def test_a_jwt_signed_with_another_key_is_refused_as_google_refuses_it(mock):
    from google.auth.exceptions import RefreshError

    with pytest.raises(RefreshError, match="Invalid JWT Signature"):
        token_for(account(mock, register_other_key=True))


def test_the_token_endpoint_takes_only_the_jwt_bearer_grant(mock):
    status, _, raw = send(mock.url + "/token", b"grant_type=client_credentials", {"content-type": "application/x-www-form-urlencoded"})
    assert status == 400 and json.loads(raw)["error"] == "unsupported_grant_type"


def test_a_token_the_endpoint_did_not_issue_is_unauthenticated(mock):
    status, _, body = vertex_generate(mock, "ya29.forged")
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
