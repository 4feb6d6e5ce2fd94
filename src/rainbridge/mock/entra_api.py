"""Microsoft Entra ID's token endpoint, client-credentials grant only, as Microsoft documents
it (learn.microsoft.com: "OAuth 2.0 client credentials flow").

| request | answer |
|---|---|
| `POST /{tenant}/oauth2/v2.0/token` (form: `client_id`, `client_secret` or `client_assertion` with `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` (workload identity federation), `grant_type=client_credentials`, `scope`) | `{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}` |

Errors: `{"error", "error_description": "AADSTS…: …\\r\\nTrace ID: …\\r\\nCorrelation ID: …\\r\\nTimestamp: …",
"error_codes", "timestamp", "trace_id", "correlation_id"}`: a missing parameter is 400
`invalid_request` (AADSTS900144), another grant 400 `unsupported_grant_type` (AADSTS70003), a
scope without `/.default` 400 `invalid_scope` (AADSTS1002012), a secret with `status-401` in it
401 `invalid_client` (AADSTS7000215).

Tokens are `mock-entra-token-<n>`, valid `expires_in` seconds (3599, or N for a client id
with `expires-N` in it); the fake Azure OpenAI endpoints accept such a bearer token only while
it is valid (`MockApp`).
"""

from __future__ import annotations

import re

import orjson

from .errors import ApiError
from .reply import Reply

DEFAULT_LIFETIME = 3599
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_EXPIRES = re.compile(r"expires-(\d+)")
# As Microsoft's documented examples: the description, then CRLF-separated trace lines.
_TRAILER = ("\r\nTrace ID: 00000000-0000-0000-0000-000000000000\r\nCorrelation ID: 00000000-0000-0000-0000-000000000000"
            "\r\nTimestamp: 2026-01-01 00:00:00Z")


def token(form: dict[str, str], seq: int) -> tuple[Reply, str, int]:
    """The token answer, the token and its lifetime in seconds; ApiError if refused."""
    proof = "client_assertion" if "client_assertion" in form else "client_secret"
    for name in ("grant_type", "client_id", proof, "scope"):
        if not form.get(name):
            raise _error(400, "invalid_request", 900144,
                         f"The request body must contain the following parameter: '{name}'.")
    if form["grant_type"] != "client_credentials":
        raise _error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type "
                     f"'{form['grant_type']}'.")
    if not all(scope.endswith("/.default") for scope in form["scope"].split()):
        raise _error(400, "invalid_scope", 1002012, f"The provided value for scope {form['scope']} is not valid. "
                     "Client credential flows must have a scope value with /.default suffixed to the resource identifier "
                     "(application ID URI).")
    if proof == "client_assertion" and form.get("client_assertion_type") != ASSERTION_TYPE:
        raise _error(400, "invalid_request", 90002, "The request body must contain client_assertion_type "
                     f"'{ASSERTION_TYPE}' with a client_assertion.")
    if "status-401" in form[proof]:
        raise _error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in "
                     "the request is the client secret value, not the client secret ID, for a secret added to app "
                     f"'{form['client_id']}'.")
    found = _EXPIRES.search(form["client_id"])
    lifetime = int(found.group(1)) if found else DEFAULT_LIFETIME
    access = f"mock-entra-token-{seq:08d}"
    doc = {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access}
    return Reply(body=orjson.dumps(doc)), access, lifetime


def _error(status: int, error: str, code: int, description: str) -> ApiError:
    return ApiError(status, f"AADSTS{code}: {description}{_TRAILER}", code=error, details=[{"error_code": code}])

