"""Google's OAuth2 token endpoint for service accounts, and the bearer tokens it issues.

As Google's "Using OAuth 2.0 for Server to Server Applications" documents it:
`POST /token` with `application/x-www-form-urlencoded` `grant_type=urn:ietf:params:oauth:
grant-type:jwt-bearer&assertion=<JWT>`. The JWT is RS256-signed by the service account's
private key; its claims are `iss` (the account's email), `scope`, `aud` (Google's token endpoint
URL, or this endpoint's own), `iat` and `exp` (at most an hour after `iat`). The answer is `{"access_token",
"expires_in", "token_type": "Bearer"}`; a refusal is 400 `{"error": "invalid_grant" |
"unsupported_grant_type" | "invalid_request", "error_description"}`.

Google knows each account's public keys; here a test registers them first with
`POST /mock/google/service-accounts {"client_email", "public_key_pem", "expires_in"?}` and the
signature is verified with that public half. Issued tokens are checked on Vertex requests
(`Authorization: Bearer`): unknown or expired tokens get 401 UNAUTHENTICATED.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import parse_qs

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .reply import Reply, Request

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # the aud Google's documentation names
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_LIFETIME_S = 3600  # Google: a JWT may be valid for at most one hour
CLOCK_SKEW_S = 300
MAX_TOKENS = 10_000  # issued tokens remembered (oldest forgotten first)
MAX_ACCOUNTS = 1_000


@dataclass(slots=True)
class Account:
    public_key: rsa.RSAPublicKey
    expires_in: int  # lifetime of the tokens issued to it, seconds


class GoogleOAuth:
    """Registered service accounts and the tokens issued to them."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.tokens: OrderedDict[str, tuple[str, float]] = OrderedDict()  # token → (email, expiry)
        self.grants: dict[str, int] = {}  # tokens issued per account, for tests

    def register(self, request: Request) -> Reply:
        if request.method != "POST":
            return Reply(405, b'{"error":"use POST"}', headers=[("allow", "POST")])
        try:
            doc = orjson.loads(request.body)
            email = doc["client_email"]
            key = serialization.load_pem_public_key(doc["public_key_pem"].encode())
            expires_in = int(doc.get("expires_in", 3599))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return Reply(400, b'{"error":"give client_email, public_key_pem (RSA) and optionally expires_in"}')
        if not isinstance(key, rsa.RSAPublicKey) or not isinstance(email, str) or len(self.accounts) >= MAX_ACCOUNTS:
            return Reply(400, b'{"error":"an RSA public key and an email are required"}')
        self.accounts[email] = Account(key, expires_in)
        return Reply(body=b'{"ok":true}')

    def token(self, request: Request) -> Reply:
        """The token endpoint."""
        if request.method != "POST":
            return _refuse("invalid_request", "Use POST.", 405)
        form = parse_qs(request.body.decode("latin-1"))
        grant = (form.get("grant_type") or [""])[0]
        if grant != JWT_BEARER:
            return _refuse("unsupported_grant_type", f"Invalid grant_type: {grant}")
        assertion = (form.get("assertion") or [""])[0]
        audience = f"http://{request.headers.get('host', '')}{request.path}"
        try:
            email = self._verify(assertion, audience)
        except _Refused as exc:
            return _refuse("invalid_grant", str(exc))
        account = self.accounts[email]
        token = "ya29.mock-" + secrets.token_urlsafe(24)
        self.tokens[token] = (email, time.time() + account.expires_in)
        while len(self.tokens) > MAX_TOKENS:
            self.tokens.popitem(last=False)
        self.grants[email] = self.grants.get(email, 0) + 1
        return Reply(body=orjson.dumps({"access_token": token, "expires_in": account.expires_in, "token_type": "Bearer"}))

    def holder(self, authorization: str | None) -> str | None:
        """The service account a live bearer token was issued to, else None."""
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        found = self.tokens.get(authorization[7:].strip())
        if found is None or found[1] <= time.time():
            return None
        return found[0]

    def _verify(self, assertion: str, audience: str) -> str:
        parts = assertion.split(".")
        if len(parts) != 3:
            raise _Refused("Invalid JWT: the assertion is not a JWT.")
        try:
            header, claims = orjson.loads(_b64(parts[0])), orjson.loads(_b64(parts[1]))
            signature = _b64(parts[2])
        except (ValueError, orjson.JSONDecodeError):
            raise _Refused("Invalid JWT: the assertion is not a JWT.") from None
        if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(claims, dict):
            raise _Refused("Invalid JWT: the assertion must be signed with RS256.")
        account = self.accounts.get(claims.get("iss"))  # type: ignore[arg-type]
        if account is None:
            raise _Refused("Invalid JWT Signature.")  # Google: an unknown account's key cannot verify
        try:
            account.public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise _Refused("Invalid JWT Signature.") from None
        if claims.get("aud") not in (GOOGLE_TOKEN_URI, audience):
            raise _Refused(f"Invalid JWT: the audience must be {GOOGLE_TOKEN_URI}.")
        if not claims.get("scope"):
            raise _Refused("Invalid JWT: no scope.")
        iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
        if (not isinstance(iat, int | float) or not isinstance(exp, int | float) or exp - iat > MAX_LIFETIME_S
                or iat > now + CLOCK_SKEW_S or exp < now - CLOCK_SKEW_S):
            raise _Refused("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                           "Check your iat and exp values in the JWT claim.")
        return claims["iss"]


class _Refused(Exception):
    pass


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _refuse(error: str, description: str, status: int = 400) -> Reply:
    return Reply(status, orjson.dumps({"error": error, "error_description": description}))
