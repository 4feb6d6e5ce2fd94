"""The roster master of fleet-wide counters: PostgreSQL numbers the roster epochs.

``epochs.py`` needs one agreed sequence of rosters (member incarnations ``name:boot``). Every
member proposes what it knows, the store serialises the proposals:

- a member *adds* the incarnations it sees alive and not draining, and *removes* the ones it
  knows are gone (left, draining, replaced by a newer boot of the same name — one it saw
  replaced, or one whose boot id is surely older than the boot it sees, ``cluster/boot.py`` —,
  dead for ``ROSTER_FORGET_S``); it never removes one it has not heard of, so a member with a partial
  view cannot shrink the roster;
- a removed incarnation goes into ``fleet_gone`` and is never added back (a member that has
  not seen the drain yet would otherwise flip the roster back and forth);
- a proposal that changes nothing writes nothing: the common path is one indexed read.

A read that finds the roster as this member would make it costs no lock; a change takes the
store's advisory lock, re-reads and appends epoch ``latest + 1``. Old rows are pruned past
``KEEP_ROWS`` epochs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from rainbridge.cluster.boot import newer_boot
from rainbridge.counters.epochs import KEEP

if TYPE_CHECKING:
    from rainbridge.store.db import Database, Executor

LOCK_ID = 7_351_004  # next to the migration and encryption locks (store/migrate.py, secrets.py)
KEEP_ROWS = 1000  # epochs kept in the table
GONE_KEEP_MS = 86_400_000  # a gone incarnation is remembered a day (it never comes back)

Rosters = list[tuple[int, tuple[str, ...]]]


def proposal(latest: Iterable[str], alive: Iterable[str], gone: Iterable[str]) -> tuple[str, ...]:
    """The roster this member would make of ``latest``."""
    out = (set(latest) | set(alive)) - set(gone)
    return tuple(sorted(out))


async def _latest(ex: Executor) -> tuple[int, tuple[str, ...]]:
    row = await ex.fetchrow("SELECT epoch, members FROM fleet_epochs ORDER BY epoch DESC LIMIT 1")
    if row is None:
        return 0, ()
    return int(row["epoch"]), tuple(json.loads(row["members"]))


async def sync(db: Database, since: int, alive: set[str], gone: set[str], now_ms: int) -> Rosters:
    """Propose this member's view and return the epochs newer than ``since`` (at most the
    newest ``epochs.KEEP``), oldest first."""
    _, members = await _latest(db)
    if proposal(members, alive, gone) != members:
        async with db.exclusive(LOCK_ID) as tx:
            await _propose(tx, alive, gone, now_ms)
    rows = await db.fetch(
        "SELECT epoch, members FROM fleet_epochs WHERE epoch > $1 ORDER BY epoch DESC LIMIT $2",
        since, KEEP,
    )
    return [(int(r["epoch"]), tuple(json.loads(r["members"]))) for r in reversed(rows)]


async def _propose(tx: Executor, alive: set[str], gone: set[str], now_ms: int) -> None:
    known_gone = {r["member"] for r in await tx.fetch("SELECT member FROM fleet_gone")}
    for member in sorted(gone - known_gone):
        await tx.execute("INSERT INTO fleet_gone (member, gone_ms) VALUES ($1, $2)", member, now_ms)
    epoch, members = await _latest(tx)
    want = proposal(members, alive - known_gone, gone)
    if want == members:
        return
    await tx.execute(
        "INSERT INTO fleet_epochs (epoch, members, created_ms) VALUES ($1, $2, $3)",
        epoch + 1, json.dumps(want), now_ms,
    )
    await tx.execute("DELETE FROM fleet_epochs WHERE epoch <= $1", epoch + 1 - KEEP_ROWS)
    await tx.execute("DELETE FROM fleet_gone WHERE gone_ms < $1", now_ms - GONE_KEEP_MS)


ROSTER_FORGET_S = 600.0  # an incarnation dead (or unheard of) this long leaves the roster


class RosterView:
    """What this member knows of the fleet's incarnations, from its membership list: the ones
    to add (``alive``) and to remove (``gone``) when it proposes a roster."""

    __slots__ = ("alive", "gone", "me", "seen", "started")

    def __init__(self, me: str, started_s: float) -> None:
        self.me = me
        self.started = started_s
        self.seen: dict[str, float] = {}  # member id → when last seen not dead
        self.alive: set[str] = set()
        self.gone: set[str] = set()

    def update(self, alive: set[str], dead: set[str], leaving: set[str], latest: Iterable[str],
               now_s: float) -> None:
        """The incarnations the membership list holds, as ``FleetCounters.on_membership``
        sorted them walking it (this member included): ``alive`` (alive or suspect, not
        draining), ``dead``, ``leaving`` (left or draining); ``latest``: the newest roster."""
        seen = self.seen
        gone = set(leaving)
        for mid in leaving:
            seen.pop(mid, None)
        for mid in dead:
            seen.setdefault(mid, now_s)
        for mid in alive:
            seen[mid] = now_s
        present = alive | dead | leaving
        boots: dict[str, list[str]] = {}  # name -> the boots our list shows of it
        for mid in present:
            name, _, boot = mid.rpartition(":")
            boots.setdefault(name, []).append(boot)
        for mid, at in list(seen.items()):
            # Our list showed it and now shows another boot of its name: replaced (the list
            # only moves forward).
            replaced = mid not in present and mid.rpartition(":")[0] in boots
            if replaced or now_s - at > ROSTER_FORGET_S:
                gone.add(mid)
                del seen[mid]
        for mid in latest:
            if mid in present or mid in seen:
                continue
            # Never heard of here: gone only if our list shows a surely newer boot of its name
            # (a restart we saw and it predates), or nobody here heard of it for long. An
            # unordered or older boot in our list means our view may lag: a member that has
            # not yet seen a restart must not remove the new incarnation (fleet_gone is for
            # good: it would never be added back).
            name, _, boot = mid.rpartition(":")
            if any(newer_boot(b, boot) for b in boots.get(name, ())) or now_s - self.started > ROSTER_FORGET_S:
                gone.add(mid)
        self.alive = alive - gone
        self.gone = gone
