"""OAuth2 access tokens for Vertex AI, through google-auth (``pip install rainbridge[vertex]``).

A service-account key (or, without one, Application Default Credentials) is exchanged for a
bearer token by google-auth (a signed JWT sent to the key's ``token_uri``). The token is cached
until shortly before it expires: inside the last ``REFRESH_EARLY_S`` a request still uses it
and starts one refresh in the background, so requests wait for a token only when there is
none yet or it has expired. google-auth is synchronous: its refresh runs in a thread.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time

from ..errors import UpstreamUnreachable

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
REFRESH_EARLY_S = 300.0  # refresh this long before expiry, off the request path
EXPIRY_MARGIN_S = 30.0  # a token this close to expiry is not sent any more

log = logging.getLogger("rainbridge.providers")


MAX_KEY_FILE_BYTES = 64 * 1024  # a service-account key file is ~2.3 KB


def service_account_info(credentials: object) -> object:
    """What ``auth_credentials`` holds: the key as JSON text or object, or (as
    ``GOOGLE_APPLICATION_CREDENTIALS`` conventionally does, so ``"env.GOOGLE_APPLICATION_CREDENTIALS"``
    works) the path of the key file; ``""``/None stays empty (Application Default
    Credentials). Raises ``ValueError`` with a message that never quotes the credentials."""
    if not isinstance(credentials, str) or not credentials:
        return credentials
    text = credentials.strip()
    if not text.startswith("{"):
        try:
            with open(text, "rb") as f:
                raw = f.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise ValueError(f"neither JSON nor a readable key file ({exc.strerror or type(exc).__name__})") from None
        if len(raw) > MAX_KEY_FILE_BYTES:
            raise ValueError(f"the key file is larger than {MAX_KEY_FILE_BYTES // 1024} KiB")
        text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError("not JSON: give the service account key file's contents or its path") from None


def google_auth_available() -> bool:
    try:
        import google.auth.transport.requests
        import google.oauth2.service_account  # noqa: F401
    except ImportError:
        return False
    return True


class TokenSource:
    """One key's access token: cached, refreshed early in the background, single-flight."""

    __slots__ = ("_credentials", "_expires", "_info", "_refreshing", "_token", "provider")

    def __init__(self, provider: str, auth_credentials: object) -> None:
        if not google_auth_available():
            raise RuntimeError("the vertex provider gets tokens with google-auth: pip install 'rainbridge[vertex]'")
        self.provider = provider
        auth_credentials = service_account_info(auth_credentials)  # checked at start-up
        self._info = auth_credentials or None  # None: Application Default Credentials
        self._credentials = None
        self._token: str | None = None
        self._expires = 0.0  # monotonic seconds
        self._refreshing: asyncio.Task | None = None

    async def token(self) -> str:
        now = time.monotonic()
        left = self._expires - now
        if self._token is not None and left > EXPIRY_MARGIN_S:
            if left < REFRESH_EARLY_S and self._refreshing is None:
                self._refreshing = asyncio.ensure_future(self._refresh())
                self._refreshing.add_done_callback(_log_failure)
            return self._token
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh())
        task = self._refreshing
        await asyncio.shield(task)
        assert self._token is not None
        return self._token

    async def _refresh(self) -> None:
        from google.auth.exceptions import GoogleAuthError

        try:
            token, expiry = await asyncio.to_thread(self._fetch)
        except (GoogleAuthError, ValueError, OSError) as exc:  # refused grant, unreachable endpoint, unreadable key
            raise UpstreamUnreachable(
                f"provider {self.provider}: could not get a Google access token ({type(exc).__name__})",
                provider=self.provider, code="token_refresh_failed") from None
        finally:
            self._refreshing = None
        self._token = token
        self._expires = time.monotonic() + expiry

    def _fetch(self) -> tuple[str, float]:
        """(token, seconds it stays valid); blocking (google-auth's HTTP transport)."""
        import google.auth
        import google.auth.transport.requests
        from google.oauth2 import service_account

        if self._credentials is None:
            if self._info is not None:
                self._credentials = service_account.Credentials.from_service_account_info(self._info, scopes=[SCOPE])
            else:
                self._credentials, _ = google.auth.default(scopes=[SCOPE])
        credentials = self._credentials
        credentials.refresh(google.auth.transport.requests.Request())
        expiry = credentials.expiry  # naive UTC
        if expiry is None:
            return credentials.token, 3600.0
        left = (expiry - datetime.datetime.now(datetime.UTC).replace(tzinfo=None)).total_seconds()
        return credentials.token, max(left, 0.0)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("background token refresh failed: %s", task.exception())
