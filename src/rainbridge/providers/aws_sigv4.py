"""AWS credentials and Signature Version 4, through botocore (``pip install rainbridge[bedrock]``).

No signing code of our own: botocore's ``SigV4Auth`` signs, botocore's credential resolvers
find credentials when the key gives none (environment, shared files, web identity / IAM
role, container and instance metadata). A key with ``role_arn`` signs with the role's
temporary credentials, got by STS AssumeRole (botocore's fetcher; ``external_id`` and
``session_name`` passed on) from the key's own or the default chain's credentials, and
refreshed by botocore before they expire. Resolving and refreshing may touch the network, so
they run in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import NamedTuple

from ..errors import UpstreamUnreachable

SERVICE = "bedrock"


def _botocore():
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError:  # the optional extra is not installed
        return None
    return SigV4Auth, AWSRequest, Credentials


def botocore_available() -> bool:
    return _botocore() is not None


class AwsSigner:
    """Signs requests for one key: static credentials, or the default chain when none are given."""

    __slots__ = ("_chain", "_lock", "region", "role", "service", "static")

    def __init__(self, region: str, access_key: str = "", secret_key: str = "", session_token: str | None = None,
                 service: str = SERVICE, role: AssumedRole | None = None):
        found = _botocore()
        if found is None:
            raise RuntimeError("the bedrock provider signs with botocore: pip install 'rainbridge[bedrock]'")
        self.region = region
        self.service = service
        self.static = found[2](access_key, secret_key, session_token or None) if access_key else None
        self.role = role
        if role is not None:  # the source credentials only sign the AssumeRole call
            self.static, source = None, self.static
            self._chain = _assume_role(role, region, source)
        else:
            self._chain = None  # botocore credentials from the default chain, resolved on first use
        self._lock = asyncio.Lock()

    async def credentials(self):
        """Frozen credentials to sign one request with."""
        if self.static is not None:
            return self.static
        if self._chain is None:
            async with self._lock:
                if self._chain is None:
                    self._chain = await asyncio.to_thread(_default_chain)
        chain = self._chain
        if chain is None:
            raise UpstreamUnreachable("provider bedrock: no AWS credentials found (key config, environment, "
                                      "shared files, IAM role)", provider="bedrock", code="missing_credentials")
        refresh = getattr(chain, "refresh_needed", None)
        if refresh is not None and refresh():
            try:
                return await asyncio.to_thread(chain.get_frozen_credentials)
            except UpstreamUnreachable:
                raise
            except Exception as exc:  # botocore's STS or metadata errors: the reason, never a secret
                raise UpstreamUnreachable(f"provider bedrock: AWS credentials could not be had "
                                          f"({type(exc).__name__}: {str(exc)[:200]})", provider="bedrock",
                                          code="missing_credentials") from None
        return chain.get_frozen_credentials()

    async def sign(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """The headers to add to a POST of ``body`` to ``url``: X-Amz-Date, Authorization and,
        for temporary credentials, X-Amz-Security-Token. ``headers`` are signed with them."""
        sigv4, request_type, _ = _botocore()  # type: ignore[misc]
        request = request_type(method="POST", url=url, data=body, headers=dict(headers))
        sigv4(await self.credentials(), self.service, self.region).add_auth(request)
        return {name: value for name, value in request.headers.items() if name not in headers}


class AssumedRole(NamedTuple):
    """STS AssumeRole settings of a key (Bifrost's bedrock_key_config role fields)."""

    arn: str
    external_id: str | None = None
    session_name: str = "rainbridge"


def _assume_role(role: AssumedRole, region: str, source):
    """Refreshable credentials of ``role``: fetched on first use and before expiry, in a thread
    (``credentials`` above), by an STS client signed with ``source`` or the default chain."""
    from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
    from botocore.session import get_session

    session = get_session()
    extra = {"RoleSessionName": role.session_name} | ({"ExternalId": role.external_id} if role.external_id else {})

    def fetch():
        creds = source if source is not None else session.get_credentials()
        if creds is None:
            raise UpstreamUnreachable("provider bedrock: no AWS credentials to assume the role with (key config, "
                                      "environment, shared files, IAM role)", provider="bedrock",
                                      code="missing_credentials")
        fetcher = AssumeRoleCredentialFetcher(partial(session.create_client, region_name=region), creds, role.arn,
                                              extra_args=extra)
        return fetcher.fetch_credentials()

    return DeferredRefreshableCredentials(fetch, "assume-role")


def _default_chain():
    from botocore.session import get_session

    return get_session().get_credentials()
