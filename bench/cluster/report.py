"""The cluster benchmark's printed table and its targets (PASS / MISS)."""

from __future__ import annotations

JOIN_ROUNDS_MAX = 10
LOSSY_JOIN_ROUNDS_MAX = 14
CRASH_S_MAX = 10.0
CRASH_TARGET_N = 10
SOAK_TARGET_S = 600.0


def _n(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "—"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def _pair(stat: dict, key: str) -> str:
    return f"{_n(stat.get(f'p50_{key}'))}/{_n(stat.get(f'p99_{key}'))}" if stat.get("n") else "—"


def _rounds(stat: dict) -> str:
    if not stat.get("n"):
        return "—"
    return f"{stat['p50_rounds']:.0f}/{stat['p99_rounds']:.0f}"


def _ratio(a: dict, b: dict, key: str) -> str:
    out = []
    for q in ("p50", "p99"):
        x, y = a.get(f"{q}_{key}"), b.get(f"{q}_{key}")
        out.append(f"{x / y:.2f}" if x is not None and y else "—")
    return "/".join(out) + "x"


def table(sizes: list[dict]) -> str:
    head = ["N", "impl", "profile", "join s p50/p99", "rounds", "crash s p50/p99", "rounds",
            "leave s p50/p99", "rounds", "CPU %", "bytes/s", "trials j/l/c", "false deaths"]
    rows = []
    by_n: dict[int, dict[str, dict]] = {}
    for r in sizes:
        by_n.setdefault(r["n"], {})[r["kind"]] = r
    for n, impls in by_n.items():
        for kind, r in impls.items():
            idle = r.get("idle", {})
            rows.append([
                str(n), kind, r["profile"], _pair(r["join"], "s"), _rounds(r["join"]),
                _pair(r["crash"], "s"), _rounds(r["crash"]), _pair(r["leave"], "s"),
                _rounds(r["leave"]), _n(idle.get("cpu_pct_per_member")),
                _n(idle.get("bytes_per_s_per_member"), 0),
                f"{r['join']['n']}/{r['leave']['n']}/{r['crash']['n']}",
                str(r.get("false_deaths_during_trials", "—")),
            ])
        if "rainbridge" in impls and "serf" in impls:
            a, b = impls["rainbridge"], impls["serf"]
            ia, ib = a.get("idle", {}), b.get("idle", {})
            rows.append([
                "", "rb ÷ serf", "", _ratio(a["join"], b["join"], "s"), "",
                _ratio(a["crash"], b["crash"], "s"), "", _ratio(a["leave"], b["leave"], "s"), "",
                _x(ia.get("cpu_pct_per_member"), ib.get("cpu_pct_per_member")),
                _x(ia.get("bytes_per_s_per_member"), ib.get("bytes_per_s_per_member")), "", "",
            ])
    return _grid(head, rows)


def _x(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "—"


def lossy_table(sizes: list[dict]) -> str:
    rows = []
    for r in sizes:
        lj = r.get("lossy_join")
        if lj:
            rows.append([str(r["n"]), r["kind"], r["profile"], f"{lj['loss_percent']} %",
                         _pair(lj, "s"), _rounds(lj), f"{lj['n']}", str(lj["join_timeouts"])])
    if not rows:
        return ""
    head = ["N", "impl", "profile", "loss", "join s p50/p99", "rounds p50/p99", "trials",
            "timeouts"]
    return _grid(head, rows)


def soak_table(soak: dict) -> str:
    if not soak:
        return ""
    head = ["impl", "N", "condition", "minutes", "false suspicions", "per member-h",
            "false deaths", "per member-h"]
    rows = [[r["kind"], str(r["n"]), r["condition"], f"{r['seconds'] / 60:.1f}",
             str(r["false_suspicions"]), _n(r["false_suspicions_per_member_hour"], 1),
             str(r["false_deaths"]), _n(r["false_deaths_per_member_hour"], 2)]
            for r in soak.values()]
    return _grid(head, rows)


def _grid(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def targets(sizes: list[dict], soak: dict) -> list[dict]:
    checks: list[dict] = []

    def check(what: str, value: str, target: str, ok: bool | None, note: str = "") -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        checks.append({"what": what, "value": value, "target": target, "result": verdict,
                       "note": note})

    by_n: dict[int, dict[str, dict]] = {}
    for r in sizes:
        by_n.setdefault(r["n"], {})[r["kind"]] = r
    for n, impls in by_n.items():
        rb, serf = impls.get("rainbridge"), impls.get("serf")
        if rb is None:
            continue
        j = rb["join"]
        check(f"N={n} {rb['profile']}: join seen by all, p99 rounds", _rounds(j),
              f"<= {JOIN_ROUNDS_MAX} rounds", j.get("n") and j["p99_rounds"] <= JOIN_ROUNDS_MAX)
        lj = rb.get("lossy_join")
        if lj:
            ok = lj.get("n") and lj["p99_rounds"] <= LOSSY_JOIN_ROUNDS_MAX and not lj["join_timeouts"]
            check(f"N={n} {rb['profile']}: join seen by all at {lj['loss_percent']} % loss, p99",
                  f"{_rounds(lj)} rounds", f"<= {LOSSY_JOIN_ROUNDS_MAX} rounds", bool(ok))
        if n == CRASH_TARGET_N:
            c = rb["crash"]
            ok = (bool(c.get("n")) and c["p99_s"] <= CRASH_S_MAX) if rb["profile"] == "lan" else None
            check(f"N={n} {rb['profile']}: crash detected everywhere, p99", f"{_n(c.get('p99_s'))} s",
                  f"<= {CRASH_S_MAX:g} s (LAN timings)", ok)
        if serf is None:
            continue
        for metric in ("join", "crash", "leave"):
            a, b = rb[metric], serf[metric]
            if not a.get("n") or not b.get("n"):
                check(f"N={n}: {metric} no slower than Serf", "—", "ratio <= 1", None)
                continue
            ok = a["p50_s"] <= b["p50_s"] and a["p99_s"] <= b["p99_s"]
            check(f"N={n} {rb['profile']}: {metric} no slower than Serf (p50/p99)",
                  f"{_pair(a, 's')} vs {_pair(b, 's')} s", "<= Serf", ok)
    for key, loss in soak.items():
        if not key.startswith("rainbridge.loss"):
            continue
        short = loss["seconds"] < SOAK_TARGET_S - 5
        check(f"soak: false deaths, {loss['condition']}, N={loss['n']}", str(loss["false_deaths"]),
              "0 in 10 min", loss["false_deaths"] == 0,
              f"ran {loss['seconds'] / 60:.1f} min" if short else "")
        serf = soak.get("serf." + key.split(".", 1)[1])
        if serf:
            a = loss["false_suspicions_per_member_hour"]
            b = serf["false_suspicions_per_member_hour"]
            check(f"soak: false suspicions per member-h, {loss['condition']}, N={loss['n']}",
                  f"{a:.1f} vs Serf {b:.1f}", "<= Serf", a <= b)
    pause = soak.get("rainbridge.pause")
    if pause:
        check(f"soak: false deaths, {pause['condition']}, N={pause['n']}",
              str(pause["false_deaths"]), "0", pause["false_deaths"] == 0)
    return checks


def targets_table(checks: list[dict]) -> str:
    rows = [[c["what"], c["value"], c["target"], c["result"] + (f" ({c['note']})" if c["note"] else "")]
            for c in checks]
    return _grid(["target", "value", "goal", "result"], rows) if rows else ""
