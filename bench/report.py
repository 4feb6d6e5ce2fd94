"""The printed report: medians [min..max] per target, and the targets marked PASS / MISS."""

from __future__ import annotations

LABELS = {
    "upstream": "upstream (direct)",
    "reference": "reference proxy",
    "uvicorn": "gateway uvicorn",
    "granian": "gateway granian",
    "baseline": "gateway before",
}

# (what, target text, passes(value) -> bool); the goals for the gateway.
RATIO_MIN = 0.8
RATIO_GOAL = 1.0
ADDED_P50_MAX_MS = 0.3
ADDED_P99_MAX_MS = 1.0
STREAMS_GOAL = 1000
RSS_MAX_MB = 80.0


def num(value: float) -> str:
    """Three significant digits for small numbers, whole numbers from 100 up."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def cell(stat: dict | None, runs: int, fmt=num, suffix: str = "") -> str:
    if stat is None:
        return "—"
    text = fmt(stat["median"]) + suffix
    if runs > 1:
        text += f" [{fmt(stat['min'])}..{fmt(stat['max'])}]"
    return text


def grid(title: str, columns: list[str], rows: list[tuple[str, list[str]]]) -> str:
    label_width = max(len(title), *(len(label) for label, _ in rows)) + 2
    widths = [
        max(len(LABELS.get(c, c)), *(len(cells[i]) for _, cells in rows)) + 2
        for i, c in enumerate(columns)
    ]
    lines = [
        title.ljust(label_width)
        + "".join(LABELS.get(c, c).rjust(w) for c, w in zip(columns, widths, strict=True))
    ]
    for label, cells in rows:
        lines.append(
            ("  " + label).ljust(label_width)
            + "".join(x.rjust(w) for x, w in zip(cells, widths, strict=True))
        )
    return "\n".join(lines)


def render(summary: dict, settings, names: list[str], machine: dict, checks: list[dict]) -> str:
    runs = settings.runs
    get = summary.get
    spread = "median [min..max] over runs" if runs > 1 else "one run"
    out = [
        f"rainbridge bench  {machine['date']}  {machine['cpu_count']} CPUs  Python {machine['python']}  "
        f"{runs} run(s) x {settings.duration_s:g} s  ({spread})  load avg at start {machine['load_avg_start'][0]:.2f}",
        "",
    ]
    for c in settings.concurrency:
        p = f"wrk.c{c}"
        rows = [
            ("req/s", [cell(get(f"{p}.{n}.rps"), runs) for n in names]),
            ("p50 ms", [cell(get(f"{p}.{n}.p50_ms"), runs) for n in names]),
            ("p99 ms", [cell(get(f"{p}.{n}.p99_ms"), runs) for n in names]),
            ("CPU ms / 1k req", [cell(get(f"{p}.{n}.cpu_ms_per_1k"), runs) for n in names]),
            (
                "errors non-2xx/socket",
                [_errors(get(f"{p}.{n}.non_2xx"), get(f"{p}.{n}.socket_errors")) for n in names],
            ),
        ]
        if c == 1:
            rows.append(("added p50 ms", [cell(get(f"{p}.{n}.added_p50_ms"), runs) for n in names]))
            rows.append(("added p99 ms", [cell(get(f"{p}.{n}.added_p99_ms"), runs) for n in names]))
        rows.append(
            (
                "req/s ÷ reference",
                [cell(get(f"{p}.{n}.vs_reference"), runs, suffix="x") for n in names],
            )
        )
        out += [grid(f"chat, wrk -t1 -c{c}", names, rows), ""]
    stream_names = [n for n in names if n != "reference"]
    for n_streams in settings.stream_rounds:
        p = f"streams.{n_streams}"
        rows = [
            ("ok (worst run)", [_worst_ok(get(f"{p}.{n}.ok"), n_streams) for n in stream_names]),
            ("TTFB p50 ms", [cell(get(f"{p}.{n}.ttfb_p50_ms"), runs) for n in stream_names]),
            ("TTFB p99 ms", [cell(get(f"{p}.{n}.ttfb_p99_ms"), runs) for n in stream_names]),
            ("total p50 ms", [cell(get(f"{p}.{n}.total_p50_ms"), runs) for n in stream_names]),
            ("total p99 ms", [cell(get(f"{p}.{n}.total_p99_ms"), runs) for n in stream_names]),
            ("gap p99 ms", [cell(get(f"{p}.{n}.gap_p99_ms"), runs) for n in stream_names]),
            ("peak RSS MB", [cell(get(f"{p}.{n}.rss_peak_mb"), runs) for n in stream_names]),
            (
                "upstream disconnects",
                [_max(get(f"{p}.{n}.upstream_disconnects")) for n in stream_names],
            ),
        ]
        title = f"{n_streams} streams x {settings.stream_chunks} chunks, {settings.stream_delay_ms} ms apart"
        out += [grid(title, stream_names, rows), ""]
    p = "wrk_after_streams.c32"
    after = [n for n in names if n != "upstream"]
    rows = [
        ("req/s", [cell(get(f"{p}.{n}.rps"), runs) for n in after]),
        ("CPU ms / 1k req", [cell(get(f"{p}.{n}.cpu_ms_per_1k"), runs) for n in after]),
        (
            "req/s ÷ reference",
            [cell(get(f"{p}.{n}.vs_reference"), runs, suffix="x") for n in after],
        ),
    ]
    out += [grid("chat, wrk -t1 -c32, after the stream rounds", after, rows), ""]
    out.append(render_checks(checks))
    return "\n".join(out)


def _errors(non_2xx: dict | None, socket: dict | None) -> str:
    if non_2xx is None and socket is None:
        return "—"
    return f"{_max(non_2xx)}/{_max(socket)}"


def _max(stat: dict | None) -> str:
    return "—" if stat is None else f"{stat['max']:.0f}"


def _worst_ok(stat: dict | None, streams: int) -> str:
    return "—" if stat is None else f"{stat['min']:.0f}/{streams}"


def checks(summary: dict, settings, gateways: list[str]) -> list[dict]:
    """The issue's targets for each gateway server, judged on medians (errors: worst run)."""
    runs = settings.runs
    out = []

    def add(
        server: str, what: str, stat: dict | None, target: str, ok: bool | None, shown: str
    ) -> None:
        result = "n/a" if stat is None or ok is None else ("PASS" if ok else "MISS")
        out.append(
            {
                "server": server,
                "check": what,
                "target": target,
                "value": shown,
                "result": result,
                "median": None if stat is None else stat["median"],
            }
        )

    biggest = max(settings.stream_rounds)
    for gw in gateways:
        ratio = summary.get(f"wrk.c32.{gw}.vs_reference")
        med = ratio["median"] if ratio else 0.0
        add(
            gw,
            "req/s vs reference, c=32",
            ratio,
            f">= {RATIO_MIN}x",
            med >= RATIO_MIN,
            cell(ratio, runs, suffix="x"),
        )
        add(
            gw,
            "  issue goal",
            ratio,
            f">= {RATIO_GOAL}x",
            med >= RATIO_GOAL,
            cell(ratio, runs, suffix="x"),
        )
        for pct, limit in (("p50", ADDED_P50_MAX_MS), ("p99", ADDED_P99_MAX_MS)):
            stat = summary.get(f"wrk.c1.{gw}.added_{pct}_ms")
            ok = stat is not None and stat["median"] <= limit
            add(
                gw,
                f"added {pct} latency, c=1",
                stat,
                f"<= {limit} ms",
                ok,
                cell(stat, runs, suffix=" ms"),
            )
        ok_stat = summary.get(f"streams.{biggest}.{gw}.ok")
        err_stat = summary.get(f"streams.{biggest}.{gw}.errors")
        streams_ok = None
        if ok_stat and err_stat and biggest >= STREAMS_GOAL:
            streams_ok = ok_stat["min"] == biggest and err_stat["max"] == 0
        add(
            gw,
            f"{biggest} concurrent streams, no errors",
            ok_stat,
            f">= {STREAMS_GOAL} streams, 0 errors",
            streams_ok,
            _worst_ok(ok_stat, biggest) + ("" if biggest >= STREAMS_GOAL else " (round too small)"),
        )
        idle = summary.get(f"memory.{gw}.rss_idle_mb")
        add(
            gw,
            "RSS idle",
            idle,
            f"<= {RSS_MAX_MB:.0f} MB",
            idle is not None and idle["median"] <= RSS_MAX_MB,
            cell(idle, 1, suffix=" MB"),
        )
        peak = summary.get(f"streams.{biggest}.{gw}.rss_peak_mb")
        add(
            gw,
            f"RSS peak, {biggest} streams",
            peak,
            f"<= {RSS_MAX_MB:.0f} MB",
            peak is not None and peak["median"] <= RSS_MAX_MB,
            cell(peak, runs, suffix=" MB"),
        )
    ref = [summary.get(f"wrk.c1.reference.added_{p}_ms") for p in ("p50", "p99")]
    if ref[0] and ref[1]:
        out.append(
            {
                "server": "reference",
                "check": "added p50 / p99 latency, c=1 (for comparison)",
                "target": "",
                "value": f"{num(ref[0]['median'])} / {num(ref[1]['median'])} ms",
                "result": "",
                "median": None,
            }
        )
    return out


def render_checks(items: list[dict]) -> str:
    rows = [
        (
            LABELS.get(i["server"], i["server"]) + ": " + i["check"]
            if not i["check"].startswith(" ")
            else i["check"],
            i["value"],
            i["target"],
            i["result"],
        )
        for i in items
    ]
    widths = [
        max(len(r[k]) for r in [("targets", "value", "target", ""), *rows]) + 2 for k in range(4)
    ]
    lines = [
        "targets".ljust(widths[0])
        + "value".rjust(widths[1])
        + "  "
        + "target".ljust(widths[2])
        + "result"
    ]
    for what, value, target, result in rows:
        lines.append(
            ("  " + what).ljust(widths[0])
            + value.rjust(widths[1])
            + "  "
            + target.ljust(widths[2])
            + result
        )
    return "\n".join(lines)


def notes(gateway_logs: dict[str, str], mock_before: dict | None, mock_after: dict | None) -> str:
    """Anything the gateway logged at warning level or above, and upstream disconnects."""
    out = []
    for server, text in gateway_logs.items():
        # granian's embedded server logs its start-up at INFO whatever --log-level says
        lines = [x for x in text.splitlines() if x.strip() and "INFO" not in x]
        if lines:
            out.append(f"gateway {server} logged:\n" + "\n".join("  " + x for x in lines))
    if mock_before and mock_after:
        lost = mock_after["disconnects"] - mock_before["disconnects"]
        if lost:
            out.append(
                f"the upstream saw {lost} responses abandoned by its client (disconnects) during the runs"
            )
    return "\n".join(out)
