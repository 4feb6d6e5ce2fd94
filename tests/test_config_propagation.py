"""Configuration announcements, in-process: the cluster's channel dispatch, the coalescing
of reloads, and the poll interval setting (the fleet-wide behaviour, with real processes,
is in test_governance_propagation.py)."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest

from rainbridge.cluster.appmessages import APP_MARKER, KIND_DIRECT, KIND_GOSSIP, ClusterHandler
from rainbridge.cluster.service import ClusterEnv, ClusterService
from rainbridge.config.schema import ClusterConfig
from rainbridge.gateway.propagation import (
    CHANNEL,
    POLL_DEFAULT_S,
    POLL_ENV,
    Coalescer,
    ConfigPropagation,
    poll_interval,
)
from rainbridge.store import StoreUnavailable


class Recorder(ClusterHandler):
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def notify_msg(self, payload: bytes) -> None:
        self.messages.append(payload)


def service() -> ClusterService:
    """A member that is not started: enough to deliver frames through its bridge."""
    cfg = msgspec.convert({"enabled": True, "node_name": "n0"}, ClusterConfig)
    return ClusterService(cfg, ClusterEnv(), environ={})


def direct(payload: bytes) -> bytes:
    return APP_MARKER + KIND_DIRECT + payload


def gossip(message_id: bytes, payload: bytes) -> bytes:
    return APP_MARKER + KIND_GOSSIP + message_id + payload


# --------------------------------------------------------------------------- channels


def test_channel_payloads_go_to_their_callback_and_the_rest_to_the_handler():
    svc = service()
    handler = Recorder()
    svc.set_handler(handler)
    heard: dict[bytes, list[bytes]] = {b"c": [], b"x": []}
    svc.on_message(b"c", heard[b"c"].append)
    svc.on_message(b"x", heard[b"x"].append)
    bridge = svc.messages

    bridge.notify_msg(direct(b"cv1"))
    bridge.notify_msg(gossip(b"\x01" * 8, b"cv2"))
    bridge.notify_msg(gossip(b"\x01" * 8, b"cv2"))  # the same gossip id: delivered once
    bridge.notify_msg(direct(b"xdelta"))
    bridge.notify_msg(direct(b"hello"))  # no channel "h": the handler's
    bridge.notify_msg(direct(b""))

    assert heard == {b"c": [b"v1", b"v2"], b"x": [b"delta"]}
    assert handler.messages == [b"hello", b""]

    svc.on_message(b"x", None)
    bridge.notify_msg(direct(b"xlater"))
    assert handler.messages[-1] == b"xlater" and heard[b"x"] == [b"delta"]


def test_a_channel_has_one_callback():
    svc = service()
    first: list[bytes] = []
    svc.on_message(b"c", first.append)
    svc.on_message(b"c", first.append)  # the same callback again: fine
    with pytest.raises(ValueError, match="taken"):
        svc.on_message(b"c", [].append)
    with pytest.raises(ValueError, match="one byte"):
        svc.on_message(b"cc", first.append)


# --------------------------------------------------------------------------- coalescing


class BlockingAction:
    """An action that waits for ``release`` on every run, counting the runs."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self) -> None:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        self.release.clear()
        if self.fail is not None:
            raise self.fail


async def finish(coalescer: Coalescer, action: BlockingAction) -> None:
    """Release runs until the coalescer is idle (bounded)."""
    async with asyncio.timeout(5):
        while coalescer.busy:
            action.release.set()
            await asyncio.sleep(0)


async def test_a_burst_of_triggers_makes_one_run_and_at_most_one_after_it():
    action = BlockingAction()
    coalescer = Coalescer(action, "test")
    coalescer.trigger()
    await asyncio.wait_for(action.started.wait(), 5)
    for _ in range(50):  # while the first run is in flight
        coalescer.trigger()
    await finish(coalescer, action)
    assert action.runs == 2

    coalescer.trigger()  # idle again: a new trigger runs again
    await finish(coalescer, action)
    assert action.runs == 3


async def test_triggers_before_the_run_starts_make_one_run():
    action = BlockingAction()
    coalescer = Coalescer(action, "test")
    for _ in range(20):
        coalescer.trigger()
    await finish(coalescer, action)
    assert action.runs == 1


@pytest.mark.parametrize("fail", [StoreUnavailable("connection refused"), RuntimeError("a bug")])
async def test_a_failing_run_is_logged_and_later_triggers_still_run(caplog, fail):
    action = BlockingAction(fail)
    coalescer = Coalescer(action, "reload after a change")
    with caplog.at_level(logging.WARNING, logger="rainbridge.gateway"):
        coalescer.trigger()
        await asyncio.wait_for(action.started.wait(), 5)
        coalescer.trigger()
        await finish(coalescer, action)
    assert action.runs == 2
    assert "reload after a change" in caplog.text and "the poll retries" in caplog.text
    action.fail = None
    coalescer.trigger()
    await finish(coalescer, action)
    assert action.runs == 3


async def test_close_cancels_a_run_in_flight():
    action = BlockingAction()
    coalescer = Coalescer(action, "test")
    coalescer.trigger()
    await asyncio.wait_for(action.started.wait(), 5)
    await coalescer.close()
    assert not coalescer.busy


# --------------------------------------------------------------------------- announcements


class Store:
    """Stands for the gateway: a store version, this worker's version, a blockable reload."""

    def __init__(self) -> None:
        self.store_version = "v1"
        self.version = "v1"
        self.action = BlockingAction()

    async def reload_if_changed(self) -> bool:
        seen = self.store_version  # read first, as Gateway.reload does
        if seen == self.version:
            return False
        await self.action()
        self.version = seen
        return True


async def test_a_burst_of_announcements_makes_at_most_two_reloads():
    svc = service()
    store = Store()
    propagation = ConfigPropagation(svc, store.reload_if_changed, lambda: store.version)
    bridge = svc.messages

    bridge.notify_msg(direct(CHANNEL + b"v1"))  # the version we hold: nothing to do
    assert not propagation.reloads.busy and propagation.stats["already_current"] == 1

    store.store_version = "v2"
    bridge.notify_msg(direct(CHANNEL + b"v2"))
    await asyncio.wait_for(store.action.started.wait(), 5)
    for i in range(3, 40):  # more changes announced while that reload runs
        store.store_version = f"v{i}"
        bridge.notify_msg(gossip(i.to_bytes(8, "big"), CHANNEL + f"v{i}".encode()))
    await finish(propagation.reloads, store.action)
    assert store.action.runs == 2 and store.version == "v39"
    assert propagation.stats["reloaded"] == 2 and propagation.stats["received"] == 39

    bridge.notify_msg(direct(CHANNEL + b"x" * 500))  # not a version of ours: check the store
    await finish(propagation.reloads, store.action)
    assert store.action.runs == 2  # the store had not changed

    await propagation.close()
    assert CHANNEL not in svc.messages.channels


async def test_announcing_never_fails_the_write(caplog):
    svc = service()  # not started: broadcast raises RuntimeError
    store = Store()
    propagation = ConfigPropagation(svc, store.reload_if_changed, lambda: store.version)
    with caplog.at_level(logging.WARNING, logger="rainbridge.gateway"):
        propagation.announce("v2")
    assert "could not announce" in caplog.text and propagation.stats["announced"] == 0


# --------------------------------------------------------------------------- poll interval


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(None, POLL_DEFAULT_S), ("", POLL_DEFAULT_S), ("30", 30.0), ("0.25", 0.25), ("0", POLL_DEFAULT_S),
     ("-1", POLL_DEFAULT_S), ("nan", POLL_DEFAULT_S), ("inf", POLL_DEFAULT_S), ("soon", POLL_DEFAULT_S)],
)
def test_poll_interval_from_the_environment(raw, seconds):
    environ = {} if raw is None else {POLL_ENV: raw}
    assert poll_interval(environ) == seconds
