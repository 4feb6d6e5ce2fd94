"""State-based CRDTs of fleet-wide counters: usage and the grant ledger (integer units).

Every map here is a vector of per-writer monotone integers merged by element-wise max, so a
merge is commutative, associative and idempotent: state can be sent twice, out of order or
repaired by a later full-state exchange without ever counting anything twice. Values are
integer units (requests, tokens, micro-USD); no float ever gets subtracted.

- ``UsageMap``: per member-incarnation usage of one counter window; the fleet's usage is the
  sum (a G-Counter).
- ``WindowLedger``: the grant ledger of one counter window: ``granted[m]`` (written by the
  owner: everything ever granted to member-incarnation ``m``) and ``returned[m]`` (written by
  ``m``: everything it handed back). Outstanding allowance = Σ granted − Σ returned; an owner
  never lets it exceed the limit, which bounds Σ admitted. ``returned`` is a plain max-merged
  vector (a member's hand-back is a fact). ``granted`` is stamped with the ``Ballot`` it was
  proposed under and merges lexicographically: the higher ballot's vector wins, equal ballots
  merge by max (one owner's proposals only grow). That is still a join (commutative,
  associative, idempotent) and it is what makes take-over safe: tentative grants a deposed
  owner never got a majority for are superseded instead of being summed in (Paxos's "adopt
  the value of the highest ballot").
- ``Ballot``: ``(roster epoch, round, owner name)`` ordered as a tuple (fencing: an acceptor
  that promised a ballot rejects every older one; a ballot of a newer roster epoch beats
  every ballot of an older one, see ``epochs.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


class Ballot(NamedTuple):
    epoch: int  # the roster epoch it was proposed in (epochs.py)
    round: int
    owner: str


ZERO_BALLOT = Ballot(0, 0, "")


def merge_max(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """Element-wise max of two vectors (a missing entry is 0)."""
    out = dict(a)
    for k, v in b.items():
        if v > out.get(k, 0):
            out[k] = v
    return out


def absorb_max(into: dict[str, int], other: Mapping[str, int]) -> bool:
    """``into`` ← max(``into``, ``other``) in place; True if anything grew."""
    grew = False
    for k, v in other.items():
        if v > into.get(k, 0):
            into[k] = v
            grew = True
    return grew


class UsageMap:
    """Usage of one counter window per member-incarnation, read as the sum."""

    __slots__ = ("by_member",)

    def __init__(self, by_member: Mapping[str, int] | None = None) -> None:
        self.by_member: dict[str, int] = dict(by_member or {})

    def set_own(self, member: str, value: int) -> None:
        """A member's own (monotone) usage; a lower value than known is ignored."""
        if value > self.by_member.get(member, 0):
            self.by_member[member] = value

    def merge(self, other: UsageMap) -> bool:
        return absorb_max(self.by_member, other.by_member)

    def total(self) -> int:
        return sum(self.by_member.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UsageMap) and _norm(self.by_member) == _norm(other.by_member)

    def __repr__(self) -> str:
        return f"UsageMap({self.by_member!r})"


class WindowLedger:
    """The grant ledger of one counter window (see the module docstring)."""

    __slots__ = ("ballot", "granted", "returned")

    def __init__(
        self,
        granted: Mapping[str, int] | None = None,
        returned: Mapping[str, int] | None = None,
        ballot: Ballot = ZERO_BALLOT,
    ) -> None:
        self.granted: dict[str, int] = dict(granted or {})
        self.returned: dict[str, int] = dict(returned or {})
        self.ballot = ballot

    def merge(self, other: WindowLedger) -> bool:
        """Join ``other`` into this ledger; True if anything changed."""
        r = absorb_max(self.returned, other.returned)
        if other.ballot > self.ballot:
            changed = other.ballot != self.ballot or _norm(other.granted) != _norm(self.granted)
            self.ballot = other.ballot
            self.granted = dict(other.granted)
            return changed or r
        if other.ballot == self.ballot:
            return absorb_max(self.granted, other.granted) or r
        return r

    def copy(self) -> WindowLedger:
        return WindowLedger(self.granted, self.returned, self.ballot)

    def outstanding(self) -> int:
        """Allowance handed out and not handed back (an upper bound of what members may
        still admit plus what they admitted)."""
        return sum(self.granted.values()) - sum(self.returned.values())

    def held(self, member: str) -> int:
        return self.granted.get(member, 0) - self.returned.get(member, 0)

    def free(self, limit: int) -> int:
        """What an owner may still grant under ``limit`` (never negative)."""
        return max(0, limit - self.outstanding())

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, WindowLedger)
            and self.ballot == other.ballot
            and _norm(self.granted) == _norm(other.granted)
            and _norm(self.returned) == _norm(other.returned)
        )

    def __repr__(self) -> str:
        return f"WindowLedger({self.granted!r}, {self.returned!r}, {self.ballot!r})"


def _norm(vector: Mapping[str, int]) -> dict[str, int]:
    """A vector without its zero entries (0 and missing mean the same)."""
    return {k: v for k, v in vector.items() if v}
