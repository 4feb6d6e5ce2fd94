"""Fleet-wide counters: governance's ``Slot``\\ s, admitted against escrow allowances.

``LocalCounters`` (persistence, load, flush) plus one ``EscrowNode`` driven on the event
loop, with the cluster service as its transport. How the request path uses it:

- Each request limit, token limit and budget a plan checks is **bound** to a slot
  (``bind``): its limit id ``lid`` is ``scope/id/metric/duration``, so a changed duration
  starts new windows, while a changed value applies to the window's usage so far. Budgets
  count micro-USD in the escrow (integers), USD in the slot.
- The slot carries ``low``: the value of ``committed`` (the fleet's usage as this process
  sees it) up to which this process may admit on its own, without asking anyone:
  ``others + granted − returned`` minus a low-water margin (half of the last top-up). Far
  from a limit the hot path pays one compare per check for it.
- Past ``low`` admission calls ``reach`` (synchronous): the escrow admits from what is left
  of the allowance and asks the limit's owner for a top-up, or answers that the fleet
  refused, or that the admission must wait (``AwaitGrant``, awaited by the route handler,
  at most ``EscrowConfig.wait_ms``, then admission runs again).
- ``others`` is the rest of the fleet's usage: per other member-incarnation, the larger of
  what the store held at start and what gossip (the escrow's usage CRDT) reports.

The escrow's view of a slot is copied in before every escrow step, so nothing is counted
twice: the allowance taken is the slot's own usage (``committed − others``) plus, for
tokens, what requests in flight reserved; the usage reported to the fleet is the own usage
alone (monotone: a reservation settled lower never shows); the owner also hears the
allowance taken (own usage plus reservations) in asks and hand-backs, to reclaim only from
members that may have some unused. Until the member has synced with the cluster (``ready``), governed
admissions are refused with 503 ``cluster_syncing`` and readiness says so.

Rosters: the store numbers the roster epochs (``fleet_epochs.py``); a background task
proposes this member's view and hands new epochs to the escrow, on every membership change
and every ``EPOCH_POLL_S``. Without a store the member is a fleet of one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from random import Random
from typing import TYPE_CHECKING, Any

import orjson

from ..cluster.codec import WireError as TagError
from ..cluster.codec import decode_tags
from ..cluster.messages import NodeState
from ..errors import Unavailable
from .base import Key, Slot
from .escrow import EscrowConfig, EscrowNode, Limit
from .escrow_messages import FullState, SyncReply, SyncRequest, UsageDelta
from .escrow_wire import WireError, decode, encode
from .fleet_epochs import RosterView
from .fleet_epochs import sync as sync_epochs
from .local import UPSERT_SQL, LocalCounters, row_key
from .sync_view import SyncView

if TYPE_CHECKING:
    from ..cluster.service import ClusterService
    from ..store.db import Database

log = logging.getLogger("rainbridge.counters")

CHANNEL = b"E"  # first byte of every escrow payload on the cluster's direct messages
SUMMARY_KIND = "fleet.summary"  # request kind: another member asks for our summary()
EPOCH_POLL_S = 2.0  # the roster master is read this often (and at every membership change)
NEVER = math.inf
# Real processes on a busy machine answer slower than the simulator's network: a reclaim
# round waits longer before refusing (a late hand-back would otherwise be lost to the
# burst), and groups of up to fifteen acceptors keep a fleet of up to fifteen members'
# group the whole roster (see epochs.py).
FLEET_CONFIG = EscrowConfig(reclaim_ms=250, acceptors=15, wake_only=True)
ACCEPTORS_ENV = "RAINBRIDGE_FLEET_ACCEPTORS"
ACCEPTORS_RANGE = (1, 255)


def fleet_config(environ: Mapping[str, str]) -> EscrowConfig:
    """``FLEET_CONFIG`` with the acceptor group size from ``ACCEPTORS_ENV``: a fleet of at
    most that many members (pods × workers) keeps every group the whole roster, so a bulk
    scale-up stays exact (``bench/escrow_scaleup.py``); each grant commit then costs a round
    trip to a majority of the group. Every member must use the same value."""
    raw = environ.get(ACCEPTORS_ENV, "").strip()
    if not raw:
        return FLEET_CONFIG
    lo, hi = ACCEPTORS_RANGE
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        log.warning("%s=%r is not a whole number from %d to %d; using %d", ACCEPTORS_ENV, raw, lo, hi,
                    FLEET_CONFIG.acceptors)
        return FLEET_CONFIG
    return dataclasses.replace(FLEET_CONFIG, acceptors=int(raw))
# Counted as sync bytes in ``stats`` (usage gossip, push-pull, restart sync); every other
# escrow message is grant traffic (asks, grants, commits, reclaims, elections).
SYNC_MESSAGES = (UsageDelta, FullState, SyncRequest, SyncReply)


class AwaitGrant(Exception):
    """An admission is short of allowance: await ``future`` (True: granted, False:
    refused), then admit again."""

    def __init__(self, future: asyncio.Future[bool]) -> None:
        self.future = future
        self.retry: Callable[[], Any] = lambda: None  # set by whoever can admit again


class Binding:
    """A slot bound to a fleet limit. The escrow counts integer units: ``scale`` of them
    per unit of the slot (1 for requests and tokens; spend, in USD, counts micro-USD)."""

    __slots__ = ("cost_reserved", "lid", "scale", "slot", "window")

    def __init__(self, lid: str, slot: Slot, window: int, cost_reserved: bool, scale: int) -> None:
        self.lid = lid
        self.slot = slot
        self.window = window
        self.cost_reserved = cost_reserved  # tokens and spend: reservations count as taken
        self.scale = scale


def node_to_member(node_id: str) -> str:
    """A store row's ``node_id`` (``name-boot``) as an escrow member id (``name:boot``)."""
    name, _, boot = node_id.rpartition("-")
    return f"{name}:{boot}" if name else node_id


def member_to_node(member: str) -> str:
    name, _, boot = member.rpartition(":")
    return f"{name}-{boot}" if name else member


class FleetCounters(LocalCounters):
    shared = True  # limits are the fleet's: budgets reserve their cost up front

    def __init__(self, node_id: str, config: EscrowConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(node_id)
        self.config = config or FLEET_CONFIG
        self._clock = clock
        self.escrow: EscrowNode | None = None
        self.service: ClusterService | None = None
        self.bindings: dict[Key, Binding] = {}
        self.limits: dict[str, Limit] = {}
        self.resolve: Callable[[str], Limit | None] = lambda lid: None
        # This member's traffic totals (gateway/traffic.py) for the status page, or None.
        self.traffic: Callable[[], dict[str, int]] | None = None
        self.roster_view: RosterView | None = None
        self._db: Database | None = None
        self._epoch_task: asyncio.Task[None] | None = None
        self._epoch_wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = NEVER
        self._tickets = 0
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self.stats: dict[str, int] = {
            "waits": 0, "refusals": 0, "bad_frames": 0, "send_errors": 0,
            "bytes_in": 0, "grant_bytes_out": 0, "sync_bytes_out": 0,
        }
        self.sync = SyncView()  # operator view: last message per member, report ages, bytes
        self._running: set[str] = set()  # member ids (name:boot) alive or suspect in the view
        self._orphans_written: dict[tuple[Key, str], float] = {}

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- wiring -------------------------------------------------------------------------------

    def attach(self, service: ClusterService, db: Database | None = None) -> None:
        """Start the escrow once the cluster service has synced (joined, or alone); ``db``:
        the store that numbers roster epochs (without one this member is a fleet of one)."""
        self.service = service
        name, boot = service.name, service.boot
        now = self.now_ms()
        me = f"{name}:{boot}"
        self.roster_view = RosterView(me, now / 1000)
        self._db = db
        self.escrow = EscrowNode(
            name, boot, self.limits.values(), {} if db is not None else {1: (me,)},  # type: ignore[arg-type]
            Random(), now, self.config, resolve=self._resolve,
        )
        self._seed_usage()
        self._after()
        service.on_request(SUMMARY_KIND, self._answer_summary)
        if db is not None:
            self._epoch_task = asyncio.get_running_loop().create_task(self._epoch_loop(db))

    async def _epoch_loop(self, db: Database) -> None:
        """Propose this member's roster to the store and hand newer epochs to the escrow."""
        failures = 0
        while True:
            escrow, view = self.escrow, self.roster_view
            assert escrow is not None and view is not None
            try:
                alive = view.alive | ({escrow.me} if not escrow.draining else set())
                rosters = await sync_epochs(db, escrow.epoch, alive, view.gone, self.now_ms())
                if failures:
                    log.warning("escrow: the roster master is reachable again")
                failures = 0
            except Exception as exc:  # the store is down: keep the epoch we have, retry
                failures += 1
                self.stats["epoch_errors"] = self.stats.get("epoch_errors", 0) + 1
                if failures == 1:
                    log.warning("escrow: could not read or propose the roster epoch: %s", type(exc).__name__)
                rosters = []
            if rosters:
                escrow.set_epochs(dict(rosters), self.now_ms())
                self._after()
            self._epoch_wake.clear()
            wait = EPOCH_POLL_S if not failures else min(10.0, EPOCH_POLL_S * failures)
            try:
                async with asyncio.timeout(wait):
                    await self._epoch_wake.wait()
            except TimeoutError:
                pass

    def _answer_summary(self, requester: str, payload: bytes) -> bytes:
        return orjson.dumps(self.summary())

    @property
    def ready(self) -> bool:
        return self.escrow is not None and self.escrow.synced

    def on_message(self, payload: bytes) -> None:
        """A direct cluster message on our channel (inside the protocol: no I/O here)."""
        escrow = self.escrow
        if escrow is None:
            return
        self.stats["bytes_in"] += len(payload)
        try:
            sender, message = decode(payload)
        except WireError:
            self.stats["bad_frames"] += 1
            return
        self.sync.received(sender, message, len(payload))
        self._sync_used()
        escrow.handle(message, sender, self.now_ms())
        self._after()

    def on_membership(self) -> None:
        """Members joined, failed, left or changed state: new view, and a new roster
        proposal to the store."""
        escrow = self.escrow
        if escrow is None or self.service is None or self.service.node is None:
            return
        now = self.now_ms()
        me = escrow.me
        live = set()
        running = {me}
        # Incarnations for the roster view, sorted on the way: alive (or suspect), dead,
        # leaving (left or draining).
        alive, dead, leaving = set(), set(), set()
        (leaving if escrow.draining else alive).add(me)
        for m in self.service.node.members():
            tags = _tags(m.meta)
            if tags.get("role") != "rainbridge":
                continue
            mid = f"{m.name}:{tags.get('boot', '')}"
            draining = tags.get("state") == "draining"
            up = m.state in (NodeState.ALIVE, NodeState.SUSPECT)
            if up:
                running.add(mid)
                if not draining:
                    live.add(m.name)
            if mid == me:
                continue
            if draining or m.state == NodeState.LEFT:
                leaving.add(mid)
            elif up:
                alive.add(mid)
            else:
                dead.add(mid)
        self._running = running
        if self.roster_view is not None:
            self.roster_view.update(alive, dead, leaving, escrow.roster, now / 1000)
        escrow.set_view(live, now)
        self._epoch_wake.set()
        self._after()

    def drain(self) -> None:
        """SIGTERM: stop owning, hand unused allowance back, and propose a roster without
        this member while it still answers the others' sync requests."""
        if self.escrow is not None:
            self._sync_used()
            self.escrow.drain(self.now_ms())
            if self.roster_view is not None:
                self.roster_view.gone.add(self.escrow.me)
                self.roster_view.alive.discard(self.escrow.me)
            self._epoch_wake.set()
            self._after()

    def close(self) -> None:
        if self._epoch_task is not None:
            self._epoch_task.cancel()
            self._epoch_task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_result(False)
        self._waiting.clear()

    # -- binding slots to limits ---------------------------------------------------------------

    def bind(self, slot: Slot, lid: str, limit: float, duration: str, cost_reserved: bool,
             scale: int = 1, aligned: bool = True, anchor: int = 0) -> None:
        """Plan.refresh: this slot counts against fleet limit ``lid``; a changed value or
        window anchor replaces the escrow's definition (its windows must be the slot's)."""
        lim = Limit(lid, int(limit * scale), duration, aligned, anchor)
        if self.limits.get(lid) != lim:
            self.limits[lid] = lim
            if self.escrow is not None:
                self.escrow.add_limit(lim, self.now_ms())
        b = self.bindings.get(slot.key)
        if b is None:
            self.bindings[slot.key] = b = Binding(lid, slot, slot.key[3], cost_reserved, scale)
            if self.escrow is not None:
                self._seed_usage(b)
        self._refresh_slot(b)

    def _resolve(self, lid: str) -> Limit | None:
        return self.limits.get(lid) or self.resolve(lid)

    def _seed_usage(self, only: Binding | None = None) -> None:
        """What the store held at start (other nodes, earlier incarnations) into the
        escrow's usage CRDT, so an owner never grants it again."""
        escrow = self.escrow
        assert escrow is not None
        for key, b in ([(only.slot.key, only)] if only else list(self.bindings.items())):
            loaded = self.loaded.get(key)
            if loaded:
                usage = escrow._usage_of((b.lid, b.window))
                for nid, value in loaded.items():
                    usage.set_own(node_to_member(nid), math.ceil(value * b.scale))

    # -- admission past ``low`` ------------------------------------------------------------------

    def reach(self, slot: Slot, cost: float) -> bool:
        """Admission past ``slot.low``: True to admit (the allowance covers it), False when
        the fleet refused; raises ``AwaitGrant`` when a grant is on its way."""
        b = self.bindings.get(slot.key)
        escrow = self.escrow
        if b is None:
            return True  # not a fleet limit
        if escrow is None:
            raise Unavailable(
                "this gateway is still joining its cluster; retry in a second",
                code="cluster_syncing", headers=[(b"retry-after", b"1")],
            )
        self._sync_used()
        self._tickets += 1
        ticket = self._tickets
        verdict = escrow.admit(b.lid, self.now_ms(), ticket, math.ceil(cost * b.scale))
        if verdict is None:
            fut = asyncio.get_running_loop().create_future()
            self._waiting[ticket] = fut
            self.stats["waits"] += 1
            self._after()
            raise AwaitGrant(fut)
        self._after()
        if not verdict:
            self.stats["refusals"] += 1  # the fleet refused: a 429 / 402
        return verdict

    def refused(self) -> None:
        """Governance refused a request on this member's view of the fleet's usage (the
        limit already reached there: no escrow step was needed)."""
        self.stats["refusals"] += 1

    # -- the escrow's steps ------------------------------------------------------------------------

    def _sync_used(self) -> None:
        """Each bound slot's own usage (plus reservations, for tokens) into its allowance."""
        escrow = self.escrow
        if escrow is None:
            return
        allow = escrow.member.allow
        for b in self.bindings.values():
            a = allow.get((b.lid, b.window))
            if a is not None:
                s = b.slot
                own = s.committed - s.others
                a.usage = round(own * b.scale)
                a.used = math.ceil((own + s.reserved) * b.scale) if b.cost_reserved else a.usage

    def _after(self) -> None:
        """Send what the escrow wants sent, resolve waiting admissions, refresh slots and
        re-arm the timer."""
        escrow = self.escrow
        if escrow is None:
            return
        service = self.service
        for out in escrow.take_outgoing():
            if service is None:
                break
            try:
                frame = encode(escrow.name, out.message)
                payload = CHANNEL + frame
                service.send(out.to, payload, reliable=len(payload) > service.rpc.max_packet_frame - 8)
                self.sync.sent(len(frame))
                kind = "sync_bytes_out" if isinstance(out.message, SYNC_MESSAGES) else "grant_bytes_out"
                self.stats[kind] += len(payload)
            except Exception as exc:  # an unknown or gone member: the escrow retries
                self.stats["send_errors"] += 1
                log.debug("escrow: could not send to %s: %s", out.to, exc)
        for ticket, ok, _, _ in escrow.take_results():
            fut = self._waiting.pop(ticket, None)  # type: ignore[call-overload]
            if fut is not None and not fut.done():
                fut.set_result(ok)
        for b in self.bindings.values():
            self._refresh_slot(b)
        self._arm()

    def _refresh_slot(self, b: Binding) -> None:
        """``others`` from the store and the usage CRDT; ``low`` from the allowance."""
        s = b.slot
        escrow = self.escrow
        if escrow is None:
            s.low = -NEVER  # not synced: every governed admission takes the slow path
            return
        combined = dict(self.loaded.get(s.key, ()))
        usage = escrow._usage.get((b.lid, b.window))
        if usage is not None:
            scale = b.scale
            for member, used in usage.by_member.items():
                nid = member_to_node(member)
                value = used if scale == 1 else used / scale
                if value > combined.get(nid, 0):
                    combined[nid] = value
        combined.pop(self.node_id, None)
        others = sum(combined.values())
        if others > s.others:  # usage only grows: a stale report never lowers it
            s.committed += others - s.others
            s.others = others
        a = escrow.member.allow.get((b.lid, b.window))
        if a is None:
            s.low = -NEVER
            return
        margin = (a.last_grant + 1) // 2 if a.last_grant > 1 else 0
        room = a.granted - a.returned - margin
        s.low = s.others + (room if b.scale == 1 else room / b.scale)

    def _arm(self) -> None:
        escrow = self.escrow
        if escrow is None:
            return
        deadline = escrow.next_deadline()
        if self._timer is not None and deadline >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        delay = max(0.0, (deadline - self.now_ms()) / 1000)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = NEVER
        escrow = self.escrow
        if escrow is None:
            return
        self._sync_used()
        escrow.tick(self.now_ms())
        self._after()

    def value(self, key: Key) -> float:
        """The fleet's usage of a counter, also one this worker never used (the usage API
        answers from any replica): from the usage CRDT then."""
        s = self.slots.get(key)
        if s is not None:
            return s.committed
        escrow = self.escrow
        if escrow is None:
            return 0.0
        prefix = f"{key[0]}/{key[1]}/{key[2]}/"
        for (lid, ws), usage in escrow._usage.items():
            if ws == key[3] and lid.startswith(prefix):
                total = usage.total()
                return total / 1_000_000 if key[2] == "spend" else total
        return 0.0

    async def flush(self, db: Database) -> int:
        """This process's rows, then the usage of members that died before they flushed it
        (known from gossip: written under their own node ids with the same ``GREATEST``
        upserts, so a row they wrote themselves is never lowered and a replay changes
        nothing)."""
        written = await super().flush(db)
        rows = self._orphan_rows()
        if rows:
            await db.executemany(UPSERT_SQL[db.dialect], [row for row, _ in rows])
            for row, mark in rows:
                self._orphans_written[mark] = row[5]
        return written + len(rows)

    def _orphan_rows(self) -> list[tuple[tuple, tuple[Key, str]]]:
        escrow = self.escrow
        if escrow is None or not self._running:
            return []
        now = self.now_ms()
        rows = []
        for key, b in self.bindings.items():
            usage = escrow._usage.get((b.lid, b.window))
            if usage is None:
                continue
            for member, used in usage.by_member.items():
                if member in self._running:
                    continue
                nid = member_to_node(member)
                value = used if b.scale == 1 else used / b.scale
                mark = (key, nid)
                stored = max(self._orphans_written.get(mark, 0), self.loaded.get(key, {}).get(nid, 0))
                if nid == self.node_id or stored >= value:
                    continue  # ours, or the store has it already
                rows.append(((key[0], row_key(key), key[3], b.slot.end_ms, nid, float(value), now), mark))
        return rows

    def prune(self, now_ms: int) -> None:
        super().prune(now_ms)
        for key in [k for k in self.bindings if k not in self.slots]:
            del self.bindings[key]
        for mark in [m for m in self._orphans_written if m[0] not in self.slots]:
            del self._orphans_written[mark]
        if self.escrow is not None:
            self.sync.tidy(self.escrow._usage, {m.rpartition(":")[0] for m in self.escrow.roster})

    # -- operator view ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """This member's counters in a few numbers, for every member's status page (asked
        on demand with ``SUMMARY_KIND``; see ``sync_view.add_summaries``): limits bound
        (``keys``), limits this member owns, allowance held unused, windows of usage held,
        and the encoded size of that usage state (what one push-pull carries)."""
        escrow = self.escrow
        traffic = {"traffic": self.traffic()} if self.traffic is not None else {}
        if escrow is None:
            return {"state": "syncing", "keys": len(self.bindings), **traffic}
        return {
            "state": "synced" if escrow.synced else "syncing",
            "keys": len(self.bindings),
            "owned": sum(1 for lid in escrow.limits if escrow.owns(lid)),
            "allowances_outstanding": sum(max(0, a.spare()) for _, a in escrow.allowances()),
            "windows": len(escrow._usage),
            "state_bytes": len(encode(escrow.me, escrow.full_state())),
            **traffic,
        }

    def status(self) -> dict[str, Any]:
        escrow = self.escrow
        if escrow is None:
            return {"state": "syncing", "keys": len(self.bindings)}
        allowances = escrow.allowances()
        return {
            "state": "synced" if escrow.synced else "syncing",
            "member": escrow.me,
            "keys": len(self.bindings),
            "owned": sorted(lid for lid in escrow.limits if escrow.owns(lid)),
            "allowances_outstanding": sum(max(0, a.spare()) for _, a in allowances),
            "allowances": [
                {"limit": lid, "window": ws, "granted": a.granted, "returned": a.returned, "used": a.used}
                for (lid, ws), a in allowances
            ],
            "usage": [
                {"limit": lid, "window": ws, "fleet": u.total(), "members": len(u.by_member)}
                for (lid, ws), u in escrow._usage.items()
            ],
            "epoch": escrow.epoch,
            "roster": list(escrow.roster),
            "live": sorted(escrow.live),
            "stats": dict(escrow.stats) | self.stats,
        }


def _tags(meta: bytes) -> dict[str, str]:
    try:
        return decode_tags(meta)
    except (TagError, ValueError):
        return {}
