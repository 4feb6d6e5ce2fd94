"""``rainbridge demo --cluster N --watch M``: M chat requests spread round-robin over the
replicas, then admitted and refused per replica and the total against the fleet's limit."""

from __future__ import annotations

import http.client
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import orjson

MODEL = "openai/gpt-4o-mini"
WINDOW_MARGIN_S = 10.0  # fewer seconds than this left in the minute: wait for the next one


def chat_status(url: str, key: str, timeout: float = 20.0) -> int:
    """One chat completion through the gateway at ``url``; its HTTP status (0: no answer)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello!"}]})
    try:
        conn.request("POST", "/v1/chat/completions", body,
                     {"content-type": "application/json", "authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


def seconds_left_in_minute(now: float) -> float:
    return 60.0 - now % 60.0


def watch(urls: list[str], key: str, requests: int, limit: int, echo=print) -> Counter:
    """Send ``requests`` requests round-robin over ``urls`` (a few at a time on each), print
    the tally; returns it as Counter{(url, status): n}."""
    left = seconds_left_in_minute(time.time())
    if left < WINDOW_MARGIN_S:  # keep the burst inside one minute window
        echo(f"the minute's window ends in {left:.0f} s: waiting for the next one")
        time.sleep(left + 0.2)
    echo(f"sending {requests} requests round-robin over {len(urls)} replicas "
         f"(limit: {limit} per minute for the whole fleet) ...")
    targets = [urls[i % len(urls)] for i in range(requests)]
    with ThreadPoolExecutor(max_workers=2 * len(urls)) as pool:
        statuses = list(pool.map(lambda url: chat_status(url, key), targets))
    tally = Counter(zip(targets, statuses, strict=True))
    echo(render(urls, tally, limit))
    return tally


def render(urls: list[str], tally: Counter, limit: int) -> str:
    rows = [("replica", "url", "admitted", "refused (429)", "other")]
    totals = [0, 0, 0]
    for i, url in enumerate(urls):
        admitted, refused = tally[(url, 200)], tally[(url, 429)]
        other = sum(n for (u, status), n in tally.items() if u == url and status not in (200, 429))
        for j, n in enumerate((admitted, refused, other)):
            totals[j] += n
        rows.append((f"r{i + 1}", url, str(admitted), str(refused), str(other)))
    rows.append(("total", "", *map(str, totals)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    verdict = "held" if totals[0] <= limit else "EXCEEDED"
    lines.append(f"admitted {totals[0]} of {sum(totals)} requests against a limit of {limit} per minute "
                 f"across {len(urls)} replicas: the limit {verdict}")
    return "\n".join(lines)
