"""``rainbridge demo`` answers a chat completion within seconds, with no network or keys;
``rainbridge demo --cluster 3`` shows one rate limit held across three replicas."""

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest

from support import Proc, eventually, http_json, skip_window_edge, wait_http


def test_demo_answers_quickly_and_stops_cleanly(tmp_path):
    started = time.monotonic()
    demo = Proc([sys.executable, "-m", "rainbridge", "demo", "--port", "0"], tmp_path / "demo.log")
    try:
        url = demo.wait_for(r"a gateway at (http://\S+) in front", timeout=20).group(1)
        mock_url = demo.wait_for(r"in front of a fake provider at (http://\S+?)\.\n").group(1)
        wait_http(url + "/health", proc=demo)
        client = openai.OpenAI(base_url=url + "/v1", api_key="demo", max_retries=0)
        reply = client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}])
        assert reply.choices[0].message.content == "This is a mock response from gpt-4o-mini: Hello!"
        assert time.monotonic() - started < 15
        out = demo.output()
        assert "curl " + url + "/v1/chat/completions" in out
        assert 'OpenAI(base_url="' + url + '/v1"' in out
    finally:
        code = demo.stop(signal.SIGINT)
    assert code == 0, demo.output()
    # The fake provider went away with the demo.
    try:
        wait_http(mock_url + "/mock/stats", timeout=1)
        raise AssertionError("the fake provider is still running")
    except (TimeoutError, RuntimeError):
        pass


# --------------------------------------------------------------------------- demo --cluster 3

LIMIT = 10  # the demo key's default: requests per minute, fleet-wide
REPLICA = r"  (r\d)  (http://\S+)  \(pid (\d+), log "


def start_cluster_demo(tmp_path, *args: str) -> tuple[Proc, list[tuple[str, str, int]]]:
    """``rainbridge demo --cluster 3`` once it printed its instructions: (process, replicas
    as (name, url, pid))."""
    demo = Proc([sys.executable, "-m", "rainbridge", "demo", "--cluster", "3", "--port", "0", *args],
                tmp_path / "demo.log")
    demo.wait_for(r"Press Ctrl-C to stop\.", timeout=120)
    replicas = [(name, url, int(pid)) for name, url, pid in re.findall(REPLICA, demo.output())]
    assert [name for name, _, _ in replicas] == ["r1", "r2", "r3"], demo.output()
    assert len({urlsplit(url).hostname for _, url, _ in replicas}) == 3  # three loopback addresses
    return demo, replicas


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_all_stopped(demo: Proc, replicas: list[tuple[str, str, int]]) -> None:
    """SIGINT (Ctrl-C) to the demo alone: it exits 0, no replica is left running or listening,
    its temporary directory is gone."""
    tmp_dir = re.search(r"and deletes (/\S+)\n", demo.output()).group(1)
    assert demo.stop(signal.SIGINT, timeout=60) == 0, demo.output()
    assert "rainbridge demo: stopped" in demo.output()
    for name, url, pid in replicas:
        assert not running(pid), f"replica {name} (pid {pid}) still running"
        with pytest.raises(OSError):
            http_json("GET", url + "/health", timeout=2)
    assert not Path(tmp_dir).exists()


def test_cluster_demo_on_postgres_admits_exactly_the_limit_across_three_replicas_and_ctrl_c_stops_all(
        tmp_path, pg_database):
    demo, replicas = start_cluster_demo(tmp_path, "--postgres", pg_database)
    try:
        out = demo.output()
        loop = re.search(r"\n(  for i in .*?uniq -c)\n", out, re.S).group(1)
        status_cmd = re.search(r"\n  RAINBRIDGE_ADMIN_TOKEN=(\S+) \S*rainbridge cluster status --url (\S+)\n", out)
        # The loop (a few seconds) and the status check below stay inside one minute's window
        # (a window's usage is forgotten a few seconds after it ended).
        skip_window_edge(60, 25)
        ran = subprocess.run(["bash", "-c", loop], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        counts = Counter()
        for line in ran.stdout.splitlines():
            n, url, status = line.split()
            counts[(url, status)] += int(n)
        urls = [url for _, url, _ in replicas]
        assert {url for url, _ in counts} == set(urls), ran.stdout  # spread over all three
        assert sum(n for (_, status), n in counts.items() if status == "200") == LIMIT, ran.stdout
        assert sum(n for (_, status), n in counts.items() if status == "429") == 2 * LIMIT, ran.stdout

        # The printed `rainbridge cluster status`: three alive members and the fleet's usage.
        token, url = status_cmd.groups()
        assert url == urls[0]

        def status_shows_the_fleet():
            shown = subprocess.run([sys.executable, "-m", "rainbridge", "cluster", "status", "--url", url],
                                   capture_output=True, text=True, timeout=30,
                                   env={**os.environ, "RAINBRIDGE_ADMIN_TOKEN": token}).stdout
            alive = len(re.findall(r"^\*?\s+r\d\s+alive\s", shown, re.M))
            usage = re.search(r"vk/vk-demo/requests/1m\s+\S+ \S+\s+(\d+)\s+\d\s", shown)
            return (alive == 3 and usage is not None and int(usage.group(1)) == LIMIT) or shown

        eventually(status_shows_the_fleet, 15, "cluster status shows 3 alive members and the fleet usage")
    finally:
        assert_all_stopped(demo, replicas)


def test_cluster_demo_with_embedded_postgres_watches_the_limit_hold_and_ctrl_c_stops_postgres(tmp_path):
    demo, replicas = start_cluster_demo(tmp_path, "--watch", str(3 * LIMIT))
    try:
        tally = demo.wait_for(r"the limit (held|EXCEEDED)", timeout=60)
        out = demo.output()
        assert "an embedded one in " in out
        rows = {name: (int(a), int(r)) for name, a, r in re.findall(r"^  (r\d)\s+http://\S+\s+(\d+)\s+(\d+)\s+0$", out, re.M)}
        assert sorted(rows) == ["r1", "r2", "r3"], out
        assert all(a + r == LIMIT for a, r in rows.values()), out  # 10 requests to each replica
        assert sum(a for a, _ in rows.values()) == LIMIT, out
        assert tally.group(1) == "held"
        assert f"admitted {LIMIT} of {3 * LIMIT} requests against a limit of {LIMIT} per minute" in out
        pgdata = re.search(r"an embedded one in (/\S+)\)", out).group(1)
    finally:
        assert_all_stopped(demo, replicas)
    # The embedded PostgreSQL went with it.
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert pgdata.encode() not in cmdline.read_bytes(), "the embedded PostgreSQL still runs"
        except (FileNotFoundError, ProcessLookupError):
            pass


def test_cluster_demo_with_an_unreachable_postgres_says_so_and_starts_nothing(tmp_path):
    dsn = "postgresql://demo:hunter2-secret@127.0.0.1:1/nothing"
    demo = Proc([sys.executable, "-m", "rainbridge", "demo", "--cluster", "3", "--postgres", dsn], tmp_path / "demo.log")
    assert demo.popen.wait(30) == 2
    out = demo.output()
    assert "rainbridge: cannot connect to PostgreSQL at postgresql://demo:***@127.0.0.1:1/nothing" in out
    assert "hunter2-secret" not in out
    assert "replicas of one gateway" not in out
