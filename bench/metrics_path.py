"""Instructions the request metrics cost per answered request, in telemetry/requests.py alone.

    .venv/bin/python bench/metrics_path.py [--requests 20000] [--out bench/results/metrics-path.json]

``bench/instructions.py`` counts a whole gateway, whose background timers and event-loop
wake-ups move its per-request figure by a few thousand instructions from run to run: more
than a metrics change is worth. Here one process builds ``--requests`` finished request
records (the fake provider's chat answer as the body, no virtual key, no governance: the
``metrics`` variant's path) and, in the second of two runs under callgrind, passes each to
``RequestMetrics.observe`` and folds the rest; the difference of the two totals divided by
the count is the metrics' cost per request (slot lookup, the pending tuple, the bulk
folding with its token search, amortized).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# The fake provider's answer to wrkload.CHAT_BODY (623 bytes), with a per-request id.
BODY = (b'{"id":"chatcmpl-mock%08d","object":"chat.completion","created":1796475039,"model":"gpt-4o-mini",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"This is a mock response from gpt-4o-mini: '
        b'Hello, how are you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":11,"completion_tokens":12,"total_tokens":23,"prompt_tokens_details":'
        b'{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
        b'"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default",'
        b'"system_fingerprint":"fp_mock"}')


def child(count: int, observe: bool) -> None:
    import time

    from rainbridge.gateway.record import RequestRecord
    from rainbridge.gateway.router import Job
    from rainbridge.gateway.routing import Target
    from rainbridge.governance.pricing import Pricing
    from rainbridge.telemetry.requests import RequestMetrics

    class Provider:  # hashed by identity, as the gateway's are
        name = "openai"

    class Key:
        id, name = "k1", "bench"

    target, key = Target(Provider(), "gpt-4o-mini"), Key()
    metrics = RequestMetrics((), Pricing())
    records = []
    for i in range(count):
        record = RequestRecord("chat", False, "/v1/chat/completions", ())
        job = Job("chat", {}, False)
        job.target, job.key = target, key
        record.job, record.status, record.request_bytes = job, 200, 90
        record.response_body = BODY % i
        record.response_bytes = len(record.response_body)
        records.append(record)
    if observe:
        now = time.perf_counter()
        for record in records:
            metrics.observe(record, now, None)
        metrics.fold_all()
        [series] = metrics.upstream.series.values()
        assert (series.requests, series.input_tokens, series.output_tokens) == (count, 11 * count, 12 * count)


def instructions(count: int, observe: bool, work: Path) -> int:
    log = work / f"valgrind-{observe}.log"
    subprocess.run(["valgrind", "--tool=callgrind", f"--log-file={log}", f"--callgrind-out-file={work}/cg-{observe}.out",
                    sys.executable, __file__, "--child", str(count), "on" if observe else "off"], check=True, timeout=1800)
    return int(re.search(r"Collected : (\d+)", log.read_text()).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "metrics-path.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1] == "on")
        return 0
    if not shutil.which("valgrind"):
        parser.error("needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="rainbridge-metrics-path-") as tmp:
        off = instructions(args.requests, False, Path(tmp))
        on = instructions(args.requests, True, Path(tmp))
    per_request = (on - off) / args.requests
    print(f"metrics path: {per_request:,.0f} instructions per answered request ({args.requests} requests)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.datetime.now(datetime.UTC).isoformat(), "requests": args.requests,
                                    "instructions_off": off, "instructions_on": on, "per_request": per_request}, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
