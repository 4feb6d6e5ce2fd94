"""--workers N: a supervisor that dies without stopping its workers (SIGKILL, the OOM killer)
leaves no worker serving the port with nobody to stop it: each worker drains and exits."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from support import GatewayProcess, eventually, provider_config


def children(pid: int) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    found = set()
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with open(f"/proc/{child}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                found.add(int(child))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_workers_of_a_sigkilled_supervisor_drain_and_exit(tmp_path, mock):
    gw = GatewayProcess(tmp_path, provider_config(mock.url), workers=2)
    workers: set[int] = set()
    try:
        eventually(lambda: len(children(gw.proc.pid)) == 2 or children(gw.proc.pid), 20, "two workers")
        workers = children(gw.proc.pid)
        # both serving (a worker orphaned while still starting up has nothing to drain)
        eventually(lambda: gw.log().count("serving on http") == 2 or gw.log()[-2000:], 20, "both workers serving")
        assert gw.stop(signal.SIGKILL) == -signal.SIGKILL
        eventually(lambda: not any(running(w) for w in workers) or {w for w in workers if running(w)},
                   20, "every orphaned worker exited")
        assert gw.log().count("draining: finishing in-flight requests") == 2, gw.log()[-2000:]
    finally:
        for w in workers:
            if running(w):
                os.kill(w, signal.SIGKILL)  # never leak a worker past the test
