"""The asyncio driver of one member: ``Membership`` on real UDP/TCP sockets and the loop clock.

One port serves UDP (probes, gossip) and TCP (push-pull, TCP pings, reliable user
messages), as in memberlist. The driver only moves bytes; every protocol decision is the
state machine's. After every input it drains ``take_outgoing()`` / ``take_events()`` and
re-arms a single timer at ``next_deadline()``; ``now`` is always ``loop.time()``.

What the driver adds:

- the allowed address space on every inbound packet and connection (by source IP); the
  state machine applies it to advertised addresses and join targets;
- outbound connections leave from the bind address when it is specific, so a peer sees
  our address as the source (on loopback the kernel would otherwise pick 127.0.0.1);
- undecodable packets are dropped silently and counted by reason
  (``stats["dropped:<reason>"]``); a bad stream gets memberlist's ``Err`` reply and is
  closed (``stats["stream_errors:<reason>"]``);
- a log line (INFO) for every member state change, with name, address and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from functools import partial
from random import Random
from typing import Any

from .addresses import AddressSpace, format_address
from .config import MembershipConfig
from .events import (
    Delegate,
    EventKind,
    Member,
    MemberEvent,
    Outgoing,
    SendPacket,
    SendReliable,
    StartPushPull,
    StartTcpPing,
)
from .merge import Vsn
from .messages import DEFAULT_VSN, Ack, Address, Dead, Err, NodeState, Ping, PushPull, User
from .state import Membership
from .wire import (
    StreamDecoder,
    StreamMessage,
    WireConfig,
    WireError,
    decode_packet,
    encode_packet,
    encode_stream,
    packet_overhead,
)

log = logging.getLogger("rainbridge.cluster")

UDP_RECV_BUFFER = 2 * 1024 * 1024  # memberlist's udpRecvBufSize
_PORT_ATTEMPTS = 10  # picking a free port for both UDP and TCP (port 0)
_NETWORK_ERRORS = (OSError, TimeoutError, EOFError, WireError)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.node._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.node.stats["udp_errors"] += 1  # e.g. ICMP port unreachable from a dead peer


def describe(event: MemberEvent) -> str:
    """``member NAME (ADDRESS) VERB[: reason]`` for logs."""
    m = event.member
    if event.kind == EventKind.LEAVE:
        verb = "left" if m.state == NodeState.LEFT else "is dead"
    else:
        verb = {
            EventKind.JOIN: "joined",
            EventKind.SUSPECT: "is suspect",
            EventKind.RECOVER: "is alive again",
            EventKind.HEALTHY: "is healthy",
            EventKind.UPDATE: "updated its metadata",
        }[event.kind]
    reason = f": {event.reason}" if event.reason and event.reason != verb else ""
    return f"member {m.name} ({format_address(m.address)}) {verb}{reason}"


class ClusterNode:
    """One cluster member on this event loop. ``start()`` binds and boots the protocol."""

    def __init__(
        self,
        name: str,
        bind: Address,
        *,
        config: MembershipConfig,
        wire: WireConfig | None = None,
        advertise: str | None = None,
        meta: bytes = b"",
        delegate: Delegate | None = None,
        address_space: AddressSpace | None = None,
        on_event: Callable[[MemberEvent], None] | None = None,
        vsn: Vsn = DEFAULT_VSN,
        rng: Random | None = None,
    ) -> None:
        """``bind``: (ip, port); port 0 picks a free port for UDP and TCP alike.
        ``advertise``: the IP other members reach us at (default: the bind IP)."""
        self.name = name
        self.config = config
        self.wire = wire or WireConfig()
        self.bind = bind
        self._advertise_ip = advertise or bind[0]
        self._meta = meta
        self._delegate = delegate
        self.address_space = address_space or AddressSpace()
        self._on_event_cb = on_event
        self._vsn = vsn
        self._rng = rng or Random()
        self.stats: Counter[str] = Counter()
        self.address: Address = (self._advertise_ip, bind[1])
        self.membership: Membership | None = None
        self.last_push_pull_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self._joins: dict[Address, asyncio.Task[bool]] = {}
        self._closed = False
        self._wall_offset = 0.0  # wall clock - loop clock

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        ip, port = self.bind
        attempts = _PORT_ATTEMPTS if port == 0 else 1
        for attempt in range(attempts):
            udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(ip, port))
            actual = udp.get_extra_info("sockname")[1]
            try:
                self._server = await asyncio.start_server(
                    self._serve_stream, host=ip, port=actual, reuse_address=True, backlog=128
                )
            except OSError:
                udp.close()
                if attempt == attempts - 1:
                    raise
                continue
            self._udp = udp
            break
        assert self._udp is not None
        sock = self._udp.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECV_BUFFER)
        self.bind = (ip, actual)
        self.address = (self._advertise_ip, actual)
        self._wall_offset = time.time() - loop.time()
        self.membership = Membership(
            self.config,
            self.name,
            self.address,
            self._meta,
            self._rng,
            loop.time(),
            self._delegate,
            vsn=self._vsn,
            packet_overhead=packet_overhead(self.wire, crc=True),
            address_allowed=self.address_space if self.address_space else None,
        )
        self._pump()

    @property
    def running(self) -> bool:
        return self.membership is not None and not self._closed

    async def join(self, addresses: Iterable[Address]) -> int:
        """Push-pull with each address (not ourselves, not outside the address space);
        returns how many answered with their state."""
        m = self._machine()
        targets = list(dict.fromkeys(addresses))
        m.join(targets, self._now())
        self._pump()
        tasks = [self._joins[a] for a in targets if a in self._joins]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return sum(1 for r in results if r is True)

    async def leave(self, timeout: float) -> bool:
        """Announce a graceful leave and drive the protocol until it has been sent its full
        retransmit count (or ``timeout``). The sockets stay open: call ``close()`` after.

        Besides the gossip, the announcement goes once straight to every member we know
        alive: gossip sends it only retransmit_mult·log10(N+1) times (twice with the local
        profile), so in a small cluster a member could miss it, probe us once we are gone
        and report a failure instead of a leave."""
        m = self._machine()
        m.leave(self._now())
        self._pump()
        me = m.member(self.name)
        if me is not None and me.state == NodeState.LEFT:
            dead = Dead(incarnation=me.incarnation, node=self.name, sender=self.name)
            for member in m.members():
                if member.name != self.name and member.state in (NodeState.ALIVE, NodeState.SUSPECT):
                    self._send_packet(SendPacket(member.address, (dead,)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not m.leave_propagated:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(min(self.config.gossip_interval / 2, 0.05))
        return True

    async def close(self) -> None:
        """Stop at once (no leave): to the others this looks like a crash."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ application
    def members(self) -> list[Member]:
        return self._machine().members()

    def queue_broadcast(self, payload: bytes, name: str | None = None) -> None:
        self._machine().queue_broadcast(payload, name)
        self._pump()

    def send_user(self, to_name: str, payload: bytes, reliable: bool) -> None:
        self._machine().send_user(to_name, payload, reliable)
        self._pump()

    async def send_reliable(self, to_name: str, payload: bytes) -> bool:
        """A user message over TCP to one member, awaited (False: not delivered)."""
        member = self._machine().member(to_name)
        if member is None or member.state in (NodeState.DEAD, NodeState.LEFT):
            return False
        return await self._send_reliable(member.address, User(payload=payload))

    def update_meta(self, meta: bytes) -> None:
        self._meta = meta
        self._machine().update_meta(meta, self._now())
        self._pump()

    def wall_time(self, loop_time: float) -> float:
        """A ``Member.state_change`` (loop clock) as a Unix timestamp."""
        return loop_time + self._wall_offset

    # ------------------------------------------------------------------ driving
    def _machine(self) -> Membership:
        if self.membership is None:
            raise RuntimeError("the cluster node is not started")
        return self.membership

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _pump(self) -> None:
        """Act on everything the state machine asked for, then re-arm its timer."""
        m = self.membership
        if m is None or self._closed:
            return
        while True:
            outgoing, events = m.take_outgoing(), m.take_events()
            if not outgoing and not events:
                break
            for out in outgoing:
                self._dispatch(out)
            for event in events:
                self._on_event(event)
        deadline = m.next_deadline()
        if self._timer is not None:
            if deadline == self._timer_at:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            assert self._loop is not None
            # (uvloop returns a plain Handle, without when(), for a time already past)
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        if self.membership is None or self._closed:
            return
        self.membership.tick(self._now())
        self._pump()

    def _on_event(self, event: MemberEvent) -> None:
        self.stats[f"events:{event.kind.value}"] += 1
        level = logging.DEBUG if event.kind == EventKind.UPDATE else logging.INFO
        suffix = " (this node)" if event.member.name == self.name else ""
        log.log(level, "cluster: %s%s", describe(event), suffix)
        if self._on_event_cb is not None:
            self._on_event_cb(event)

    def _dispatch(self, out: Outgoing) -> None:
        if isinstance(out, SendPacket):
            self._send_packet(out)
        elif isinstance(out, StartPushPull):
            task = self._spawn(self._push_pull(out))
            if out.join:
                self._joins[out.to] = task
                task.add_done_callback(partial(self._forget_join, out.to))
        elif isinstance(out, StartTcpPing):
            self._spawn(self._tcp_ping(out))
        elif isinstance(out, SendReliable):
            self._spawn(self._send_reliable(out.to, out.message))

    def _forget_join(self, to: Address, task: asyncio.Task) -> None:
        if self._joins.get(to) is task:
            del self._joins[to]

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _drop(self, reason: str) -> None:
        self.stats[f"dropped:{reason}"] += 1

    # ------------------------------------------------------------------ UDP
    def _on_datagram(self, data: bytes, sender: Address) -> None:
        if self.membership is None or self._closed:
            return
        self.stats["udp_packets_in"] += 1
        self.stats["udp_bytes_in"] += len(data)
        if not self.address_space.allows_ip(sender[0]):
            self._drop("address_space")
            return
        skipped: list = []
        try:
            messages = decode_packet(data, self.wire, skipped)
        except WireError as exc:
            self._drop(exc.reason)
            return
        for part in skipped:
            self.stats[f"skipped:{part.reason}"] += 1
        self.stats["messages_in"] += len(messages)
        now = self._now()
        for message in messages:
            self.membership.handle_packet(message, sender, now)
        self._pump()

    def _send_packet(self, out: SendPacket) -> None:
        assert self._udp is not None and self.membership is not None
        member = self.membership.member_at(out.to)
        crc = member is not None and member.vsn[1] >= 5
        try:
            packets = encode_packet(
                list(out.messages), self.wire, self.config.udp_buffer_size, crc=crc
            )
        except WireError as exc:  # bad local data; a bug, not the network
            log.error("cluster: cannot encode a packet for %s: %s", format_address(out.to), exc)
            return
        self.stats["messages_out"] += len(out.messages)
        for packet in packets:
            self._udp.sendto(packet, out.to)
            self.stats["udp_packets_out"] += 1
            self.stats["udp_bytes_out"] += len(packet)

    # ------------------------------------------------------------------ TCP, outbound
    async def _connect(self, to: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ip = self.bind[0]
        specific = ip not in ("0.0.0.0", "::") and ((":" in ip) == (":" in to[0]))
        local = (ip, 0) if specific else None
        self.stats["tcp_streams_out"] += 1
        return await asyncio.open_connection(to[0], to[1], local_addr=local)

    async def _exchange(
        self, to: Address, message: StreamMessage, *, want_reply: bool
    ) -> StreamMessage | None:
        reader, writer = await self._connect(to)
        try:
            data = encode_stream(message, self.wire)
            writer.write(data)
            self.stats["tcp_bytes_out"] += len(data)
            await writer.drain()
            if not want_reply:
                return None
            return await self._read_message(reader, StreamDecoder(self.wire, dialer=True))
        finally:
            writer.close()

    async def _push_pull(self, out: StartPushPull) -> bool:
        reply: PushPull | None = None
        try:
            async with asyncio.timeout(self.config.tcp_timeout):
                message = await self._exchange(out.to, out.state, want_reply=True)
            if isinstance(message, PushPull):
                reply = message
            else:
                error = message.error if isinstance(message, Err) else type(message).__name__
                self.last_push_pull_error = f"{format_address(out.to)} answered: {error}"
        except _NETWORK_ERRORS as exc:
            self.last_push_pull_error = f"{format_address(out.to)}: {_why(exc)}"
        if self._closed or self.membership is None:
            return False
        self.stats["push_pulls_ok" if reply is not None else "push_pulls_failed"] += 1
        if reply is None:
            log.debug("cluster: push-pull failed: %s", self.last_push_pull_error)
        self.membership.push_pull_result(reply, out.to, self._now())
        self._pump()
        return reply is not None

    async def _tcp_ping(self, out: StartTcpPing) -> None:
        ok = False
        remaining = out.deadline - self._now()
        if remaining > 0:
            try:
                async with asyncio.timeout(remaining):
                    ack = await self._exchange(out.to, out.ping, want_reply=True)
                ok = isinstance(ack, Ack) and ack.seq_no == out.seq_no
            except _NETWORK_ERRORS:
                ok = False
        if self._closed or self.membership is None:
            return
        self.membership.tcp_ping_result(out.seq_no, ok, self._now())
        self._pump()

    async def _send_reliable(self, to: Address, message: User) -> bool:
        try:
            async with asyncio.timeout(self.config.tcp_timeout):
                await self._exchange(to, message, want_reply=False)
        except _NETWORK_ERRORS as exc:
            self.stats["reliable_failed"] += 1
            log.debug("cluster: reliable message to %s failed: %s", format_address(to), _why(exc))
            return False
        return True

    async def _read_message(
        self, reader: asyncio.StreamReader, decoder: StreamDecoder
    ) -> StreamMessage:
        while True:
            message = decoder.message()
            if message is not None:
                return message
            data = await reader.read(65536)
            if not data:
                raise EOFError("connection closed before a whole message arrived")
            self.stats["tcp_bytes_in"] += len(data)
            decoder.feed(data)

    # ------------------------------------------------------------------ TCP, inbound
    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        sender: Address = (peer[0], peer[1])
        self.stats["tcp_streams_in"] += 1
        try:
            if not self.address_space.allows_ip(sender[0]) or self._closed:
                self._drop("address_space" if not self._closed else "closed")
                return
            try:
                async with asyncio.timeout(self.config.tcp_timeout):
                    message = await self._read_message(reader, StreamDecoder(self.wire))
            except WireError as exc:
                self.stats[f"stream_errors:{exc.reason}"] += 1
                log.debug("cluster: bad stream from %s: %s", format_address(sender), exc)
                reply: StreamMessage | None = Err(error=str(exc))
            else:
                reply = self._on_stream_message(message, sender)
            if reply is not None:
                data = encode_stream(reply, self.wire, dialer=False)
                writer.write(data)
                self.stats["tcp_bytes_out"] += len(data)
                async with asyncio.timeout(self.config.tcp_timeout):
                    await writer.drain()
        except (OSError, TimeoutError, EOFError) as exc:
            self.stats["stream_errors:network"] += 1
            log.debug("cluster: stream from %s: %s", format_address(sender), _why(exc))
        finally:
            writer.close()

    def _on_stream_message(self, message: StreamMessage, sender: Address) -> StreamMessage | None:
        m = self.membership
        if m is None or self._closed:
            return None
        now = self._now()
        reply: StreamMessage | None = None
        if isinstance(message, PushPull):
            reply = m.handle_push_pull(message, sender, now)
        elif isinstance(message, Ping):
            reply = m.handle_stream_ping(message, sender, now)
        elif isinstance(message, User):
            m.handle_stream_user(message, sender, now)
        self._pump()
        return reply


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
