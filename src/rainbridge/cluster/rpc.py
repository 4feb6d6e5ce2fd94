"""Awaited request/reply between two members, on the cluster service's user messages.

``await service.request(member, kind, payload, timeout=, retries=)`` returns the reply
payload of the handler registered on ``member`` with ``service.on_request(kind, handler)``.

Why UDP with retries, and TCP only for what does not fit a packet: the first user is the
escrow's near-limit path (an ask for allowance while an admission waits ≈ 50 ms), where a
request is a few dozen bytes. memberlist's reliable path opens a fresh TCP connection per
message (no pooling), so a request and its reply would cost two handshakes and leave two
sockets in TIME_WAIT per exchange at grant rates; one datagram each way is one round trip.
Loss is repaired by resending the same request (same correlation id) after ``timeout``,
up to ``retries`` times. A frame larger than one packet (``max_packet_frame``) goes over
TCP, on the first attempt and every retry alike, so payload size is never the caller's
problem.

At most once: the server remembers the last ``REPLY_CACHE`` (requester, id) pairs with
their reply (``REPLY_CACHE_BYTES`` of replies at most: a retry later than that runs again) and answers a repeated request from that cache instead of running the handler
again (a grant asked twice is granted once); a repeat that arrives while an async handler
is still running is dropped (the reply is on its way).

Bounded: at most ``max_pending`` requests of this process wait for replies; one more fails
at once with ``RequestError("busy")``. Every waiting future leaves the table when its
request returns, fails, times out or is cancelled; a reply that comes after that is counted
(``late_replies``) and dropped.

Frames (after the service's ``APP_MARKER``)::

    request  [0x02][id 8][requester len u16][requester][kind len u8][kind][payload]
    reply    [0x03][id 8][status u8][payload]      status: 0 ok, 1 no handler, 2 failed
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import struct
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable

from .events import UnknownMemberError

log = logging.getLogger("rainbridge.cluster")

KIND_REQUEST = b"\x02"
KIND_REPLY = b"\x03"
ID_SIZE = 8
REPLY_CACHE = 4096  # (requester, id) pairs answered, for at-most-once handling of retries
REPLY_CACHE_BYTES = 4 * 1024 * 1024  # and at most this many bytes of cached replies
MAX_PENDING = 1024  # requests of this process awaiting a reply
OK, NO_HANDLER, FAILED = 0, 1, 2
_U16 = struct.Struct(">H")
_STATUS_TEXT = {NO_HANDLER: "no_handler", FAILED: "handler_failed"}

# handler(requester member name, request payload) -> reply payload (or an awaitable of it)
Handler = Callable[[str, bytes], "bytes | Awaitable[bytes]"]
# send(member, frame, reliable): the service's user-message send; raises UnknownMemberError
Sender = Callable[[str, bytes, bool], None]


class RequestError(Exception):
    """A request that got no usable reply. ``type`` (stable): ``timeout`` (no reply after
    every attempt), ``unknown_member`` (not a live member here), ``busy`` (too many
    requests waiting), ``no_handler`` / ``handler_failed`` (the member answered so)."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.type = type


class RequestReply:
    """The correlation table and the reply cache of one member (see the module docstring)."""

    def __init__(
        self, name: str, send: Sender, max_packet_frame: int, *, max_pending: int = MAX_PENDING
    ) -> None:
        """``max_packet_frame``: the largest frame (marker included) one UDP user message
        carries; larger frames go over TCP."""
        self.name = name
        self._send = send
        self.max_packet_frame = max_packet_frame
        self.max_pending = max_pending
        self.handlers: dict[str, Handler] = {}
        self.stats: Counter[str] = Counter()
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._served: OrderedDict[tuple[str, bytes], bytes | None] = OrderedDict()
        self._served_bytes = 0

    @property
    def pending(self) -> int:
        """Requests of this process waiting for a reply now."""
        return len(self._pending)

    # ------------------------------------------------------------------ client side
    async def request(
        self, marker: bytes, member: str, kind: str, payload: bytes, timeout: float, retries: int
    ) -> bytes:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        if len(self._pending) >= self.max_pending:
            self.stats["requests_busy"] += 1
            raise RequestError("busy", f"{self.max_pending} requests already wait for replies")
        request_id = secrets.token_bytes(ID_SIZE)
        frame = marker + encode_request(request_id, self.name, kind, payload)
        reliable = len(frame) > self.max_packet_frame
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            for _ in range(retries + 1):
                try:
                    self._send(member, frame, reliable)
                except UnknownMemberError:
                    raise RequestError("unknown_member", f"no live member named {member!r}") from None
                self.stats["requests_sent"] += 1
                try:
                    return await asyncio.wait_for(asyncio.shield(future), timeout)
                except TimeoutError:
                    self.stats["request_attempts_timed_out"] += 1
            self.stats["requests_timed_out"] += 1
            raise RequestError(
                "timeout", f"no reply from {member!r} to {kind!r} in {retries + 1} attempt(s) of {timeout}s"
            )
        finally:
            del self._pending[request_id]
            if not future.done():
                future.cancel()

    def on_reply(self, body: bytes) -> None:
        """A reply frame (after the kind byte) arrived."""
        if len(body) < ID_SIZE + 1:
            self.stats["malformed"] += 1
            return
        future = self._pending.get(body[:ID_SIZE])
        if future is None or future.done():
            self.stats["late_replies"] += 1
            return
        status, payload = body[ID_SIZE], body[ID_SIZE + 1 :]
        if status == OK:
            future.set_result(payload)
        else:
            text = _STATUS_TEXT.get(status, "handler_failed")
            future.set_exception(RequestError(text, f"the member answered {text}"))

    # ------------------------------------------------------------------ server side
    def on_request(self, marker: bytes, body: bytes) -> None:
        """A request frame (after the kind byte) arrived: answer it from the cache, or run
        its handler once the protocol has finished with the packet (no re-entry)."""
        try:
            request_id, requester, kind, payload = decode_request(body)
        except ValueError:
            self.stats["malformed"] += 1
            return
        key = (requester, request_id)
        if key in self._served:
            cached = self._served[key]
            self.stats["repeated_requests"] += 1
            if cached is not None:
                self._reply(requester, cached)
            return
        self._served[key] = None
        self._trim()
        asyncio.get_running_loop().call_soon(self._serve, marker, key, kind, payload)

    def _serve(self, marker: bytes, key: tuple[str, bytes], kind: str, payload: bytes) -> None:
        requester = key[0]
        handler = self.handlers.get(kind)
        if handler is None:
            self._answer(marker, key, NO_HANDLER, b"")
            return
        try:
            result = handler(requester, payload)
        except Exception:  # the requester learns it failed; the log has the traceback
            log.exception("cluster: request handler %r failed", kind)
            self._answer(marker, key, FAILED, b"")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(lambda t: self._finish(marker, key, kind, t))
            return
        self._answer(marker, key, OK, bytes(result))

    def _finish(self, marker: bytes, key: tuple[str, bytes], kind: str, task: asyncio.Future) -> None:
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("cluster: request handler %r failed", kind, exc_info=task.exception())
            self._answer(marker, key, FAILED, b"")
            return
        self._answer(marker, key, OK, bytes(task.result()))

    def _answer(self, marker: bytes, key: tuple[str, bytes], status: int, payload: bytes) -> None:
        frame = marker + KIND_REPLY + key[1] + bytes((status,)) + payload
        if key in self._served:
            self._served[key] = frame
            self._served_bytes += len(frame)
            self._trim()
        self.stats["requests_served"] += 1
        self._reply(key[0], frame)

    def _trim(self) -> None:
        served = self._served
        while len(served) > REPLY_CACHE or (self._served_bytes > REPLY_CACHE_BYTES and len(served) > 1):
            _, old = served.popitem(last=False)
            self._served_bytes -= len(old) if old is not None else 0

    def _reply(self, requester: str, frame: bytes) -> None:
        try:
            self._send(requester, frame, len(frame) > self.max_packet_frame)
        except UnknownMemberError:  # not (yet) in our view: its retry will find us ready
            self.stats["replies_to_unknown"] += 1
        except RuntimeError:  # the service stopped meanwhile
            self.stats["replies_after_stop"] += 1


def encode_request(request_id: bytes, requester: str, kind: str, payload: bytes) -> bytes:
    name, kind_raw = requester.encode(), kind.encode()
    if len(kind_raw) > 255:
        raise ValueError("request kind longer than 255 bytes")
    return (
        KIND_REQUEST + request_id + _U16.pack(len(name)) + name
        + bytes((len(kind_raw),)) + kind_raw + payload
    )


def decode_request(body: bytes) -> tuple[bytes, str, str, bytes]:
    """(id, requester, kind, payload); ValueError when truncated or not UTF-8."""
    at = ID_SIZE + 2
    if len(body) < at:
        raise ValueError("truncated")
    (name_len,) = _U16.unpack_from(body, ID_SIZE)
    if len(body) < at + name_len + 1:
        raise ValueError("truncated")
    requester = body[at : at + name_len].decode()
    at += name_len
    kind_len = body[at]
    at += 1
    if len(body) < at + kind_len:
        raise ValueError("truncated")
    kind = body[at : at + kind_len].decode()
    return body[:ID_SIZE], requester, kind, body[at + kind_len :]
