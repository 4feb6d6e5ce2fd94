"""The fleet counters' operator view: sync health (``SyncView``) with an injected clock, then
two real ``rainbridge serve`` members (one worker each, PostgreSQL, the fake provider)
whose ``/metrics`` and ``/api/cluster/status`` must show the governed requests they served:
exact refusals, grants, waits, sync bytes, keys, owners, clock offsets and sync ages."""

from __future__ import annotations

import re

from rainbridge.cli import _status_table
from rainbridge.counters.escrow_messages import Ask, FullState, Grant, UsageDelta
from rainbridge.counters.sync_view import SyncView
from support import eventually, free_port, http_json
from test_fleet_limits import HOSTS, TOKEN, Replica, chat, fleet_config, skip_window_edge


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sync_view_counts_first_hand_reports_only():
    clock = Clock()
    view = SyncView(clock)
    view.received("b", UsageDelta("L", 0, "b:1", 5), 40)
    clock.now = 101.0
    # b relays c's usage: of unknown age, it refreshes nothing of c's
    view.received("b", FullState((("L", 0, (("b:1", 6), ("c:7", 3))),), False), 60)
    view.received("c", Grant("L", 0, "a:1", 4), 20)  # a grant carries no usage of c
    clock.now = 104.0
    assert view.last_sync("b") == 3.0 and view.last_sync("c") == 3.0 and view.last_sync("d") is None
    assert view.staleness(lambda lid, ws: True) == {"b:1": 3.0}
    view.received("c", Ask("L", 60, "c:7", 1, 0, 0, 2), 30)
    assert view.staleness(lambda lid, ws: True) == {"b:1": 3.0, "c:7": 0.0}
    assert view.staleness(lambda lid, ws: ws == 60) == {"c:7": 0.0}  # window 0 closed
    assert (view.bytes_received, view.bytes_sent) == (150, 0)
    view.sent(12)
    assert view.bytes_sent == 12


def test_sync_view_oldest_report_per_member_and_tidy():
    clock = Clock()
    view = SyncView(clock)
    view.received("b", UsageDelta("L", 0, "b:1", 5), 1)
    clock.now = 102.0
    view.received("b", UsageDelta("M", 0, "b:1", 1), 1)
    clock.now = 105.0
    assert view.staleness(lambda lid, ws: True) == {"b:1": 5.0}  # the oldest: L's
    view.tidy({("M", 0)}, {"b"})  # the escrow dropped L's window
    assert view.staleness(lambda lid, ws: True) == {"b:1": 3.0}
    view.tidy({("M", 0)}, set())  # b left the roster
    assert view.last_sync("b") is None


def test_cli_status_table_shows_clock_and_sync_columns():
    row = {"name": "r1", "self": False, "state": "alive", "address": "127.0.0.62:7946", "http": "",
           "region": "", "incarnation": 3, "readiness": "ready", "seconds_since_change": 5,
           "last_change": "2026-12-04T18:00:00.000+00:00", "clock_offset_ms": 1500.4,
           "clock_error_ms": 0.3, "last_sync_s": 0.42, "view_staleness_s": None,
           "counters": {"keys": 3, "owned": 1, "allowances_outstanding": 12, "windows": 3, "state_bytes": 2140}}
    me = {**row, "name": "r0", "self": True, "clock_offset_ms": 0.0, "last_sync_s": None, "counters": None}
    body = {"enabled": True, "node": {"name": "r0"}, "health": {"status": "healthy"}, "members": [me, row]}
    lines = _status_table(body).splitlines()
    assert lines[0].split()[6:10] == ["READY", "CLOCK", "SYNC/STALE", "KEYS/OWNED/SPARE/BYTES"]
    assert lines[1].split()[7:11] == ["ready", "-", "-", "-"]  # our own row (marked *)
    assert lines[2].split()[6:10] == ["ready", "+1500ms±0", "0.4s/-", "3/1/12/2.1k"]


def test_cli_status_table_shows_discovery_and_each_backends_health():
    me = {"name": "r0", "self": True, "state": "alive", "address": "127.0.0.61:7946", "http": "", "region": "",
          "incarnation": 1, "readiness": "ready", "seconds_since_change": 5,
          "last_change": "2026-12-04T18:00:00.000+00:00", "counters": None}
    discovery = {"enabled": True, "type": "dns", "status": "degraded", "rounds": 7, "interval_seconds": 5,
                 "candidates": 2, "joins": 1, "join_failures": 0, "rejected": {"address_space": 3},
                 "allowed_address_space": ["10.0.0.0/8"],
                 "backends": [{"backend": "dns", "status": "degraded", "candidates": 2, "failures": 4,
                               "last_error": "NXDOMAIN rb.svc"}]}
    body = {"enabled": True, "node": {"name": "r0"}, "health": {"status": "healthy"}, "members": [me],
            "discovery": discovery}
    text = _status_table(body)
    assert ("discovery dns: degraded, 7 round(s) every 5s, 2 candidate(s), 1 join(s), 0 failed; "
            "rejected: address_space 3; allowed 10.0.0.0/8") in text
    assert "  dns: degraded, 2 candidate(s), 4 failure(s), last error: NXDOMAIN rb.svc" in text
    off = _status_table({**body, "discovery": {"enabled": False}})
    assert "discovery: off (static peers only)" in off


# --------------------------------------------------------------------------- real processes

LIMIT = 6
SENT = 14


def scrape(url: str) -> dict[str, float]:
    """``/metrics`` as {series: value} (series with labels, as exposed)."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def status(url: str) -> dict:
    code, _, body = http_json("GET", url + "/api/cluster/status",
                              headers={"authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert code == 200, body
    return body


def test_status_keeps_only_known_integer_fields_of_a_members_summary():
    from rainbridge.counters.sync_view import _summary_of

    hostile = b'{"state": "<script>", "keys": "9", "owned": -1, "windows": true, "state_bytes": 12, "x": 1}'
    assert _summary_of(hostile) == {"state": None, "keys": None, "owned": None,
                                    "allowances_outstanding": None, "windows": None, "state_bytes": 12}
    assert _summary_of(b"[1]") is None and _summary_of(b"\xff") is None


def test_metrics_and_status_of_two_members_after_governed_requests(tmp_path, pg_database, mock):
    hosts = HOSTS[:2]
    ports = [free_port(h) for h in hosts]
    replicas: list[Replica] = []
    try:
        for i in range(len(hosts)):
            config = fleet_config(mock.url, pg_database, i, ports, limit=LIMIT)
            replicas.append(Replica(tmp_path, i, config, workers=1))
        eventually(lambda: all(r.members_seen() == 2 for r in replicas), 30, "both see both")
        eventually(lambda: all(r.ready_everywhere() for r in replicas), 30, "both ready")
        skip_window_edge()
        answers = [chat(replicas[i % 2].url) for i in range(SENT)]
        assert answers.count(200) == LIMIT and answers.count(429) == SENT - LIMIT, answers

        metrics = [scrape(r.url) for r in replicas]

        def total(name: str) -> float:
            return sum(v for m in metrics for k, v in m.items() if k.startswith(name + "{"))

        # every 429: on the owner's word, or on a member's own view of the fleet's usage
        assert total("rainbridge_fleet_refusals_total") == SENT - LIMIT
        assert total("rainbridge_fleet_grants_total") >= 1
        assert total("rainbridge_fleet_reclaims_total") >= 1  # the owner reclaimed before refusing
        assert total("rainbridge_fleet_owned_keys") == 1  # one limit, one owner
        for r, m in zip(replicas, metrics, strict=True):
            node = f'node="{r.name}"'
            assert m[f"rainbridge_fleet_keys{{{node}}}"] == 1
            assert m[f'rainbridge_fleet_sync_bytes_total{{direction="sent",{node}}}'] > 0
            assert m[f'rainbridge_fleet_sync_bytes_total{{direction="received",{node}}}'] > 0
            assert m[f"rainbridge_fleet_allowance_outstanding{{{node}}}"] >= 0
            assert f"rainbridge_fleet_allowance_waits_total{{{node}}}" in m
            assert f"rainbridge_fleet_view_staleness_seconds{{{node}}}" in m
        owner = next(i for i, m in enumerate(metrics)
                     if m[f'rainbridge_fleet_owned_keys{{node="{replicas[i].name}"}}'] == 1)
        other = replicas[1 - owner]
        # the member that does not own the limit asked for allowance: it waited for grants
        assert metrics[1 - owner][f'rainbridge_fleet_allowance_waits_total{{node="{other.name}"}}'] >= 1

        def measured() -> bool | list:
            rows = [m for r in replicas for m in status(r.url)["members"] if not m["self"]]
            ok = all(row["clock_offset_ms"] is not None and row["last_sync_s"] is not None
                     and row["view_staleness_s"] is not None for row in rows)
            return ok or rows

        eventually(measured, 20, "clock offsets, last sync and view staleness of the other member")
        for r in replicas:
            body = status(r.url)
            row = next(m for m in body["members"] if not m["self"])
            me = next(m for m in body["members"] if m["self"])
            assert abs(row["clock_offset_ms"]) <= max(50.0, row["clock_error_ms"])  # one host
            assert 0 <= row["last_sync_s"] < 10 and 0 <= row["view_staleness_s"] < 10
            assert me["clock_offset_ms"] == 0.0 and me["last_sync_s"] is None
            # every member's own counters, asked of it: one limit bound each, one owner in all
            assert me["counters"]["keys"] == 1 and row["counters"]["keys"] == 1, (me, row)
            assert me["counters"]["owned"] + row["counters"]["owned"] == 1
            for c in (me["counters"], row["counters"]):
                assert c["state"] == "synced" and c["windows"] >= 1 and c["state_bytes"] > 0
                assert c["allowances_outstanding"] >= 0
            fc = body["fleet_counters"]
            assert fc["stats"]["refusals"] == scrape(r.url)[f'rainbridge_fleet_refusals_total{{node="{r.name}"}}']
        text = "\n".join(scrape(replicas[0].url))
        assert re.search(r'rainbridge_cluster_clock_offset_seconds\{member="r1",node="r0"\}', text)
    finally:
        for r in replicas:
            r.proc.stop()
