"""One ``wrk`` run of the non-streaming chat POST, parsed into a dict.

The Lua ``done`` hook prints wrk's own summary and latency histogram (the one behind
``--latency``) as one JSON line, in microseconds, so nothing is read back from rounded text.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

CHAT_BODY = {
    "model": "openai/gpt-4o-mini",
    "messages": [{"role": "user", "content": "Hello, how are you today?"}],
}

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
wrk.body = '%(body)s'

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, '
    .. '"max_us": %%d, "connect": %%d, "read": %%d, "write": %%d, "timeout": %%d, "status": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout, e.status))
end
"""


class WrkError(RuntimeError):
    pass


def write_script(directory: Path, key: str = "sk-bench", name: str = "chat.lua") -> Path:
    path = directory / name
    path.write_text(LUA % {"body": json.dumps(CHAT_BODY), "key": key})
    return path


def wrk_version() -> str:
    found = shutil.which("wrk")
    if not found:
        return "missing"
    out = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def run_wrk(url: str, script: Path, connections: int, duration_s: float) -> dict:
    """``wrk -t1 -cC -dDs --latency`` against ``url``; latencies in ms."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + 30, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {' '.join(argv)}") from exc
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise WrkError(
            f"no result from wrk (exit {out.returncode}): {out.stderr.strip() or out.stdout[-500:]}"
        )
    raw = json.loads(line[6:])
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non_2xx": raw["status"],  # wrk counts status >= 400 here
        "socket_errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
    }
