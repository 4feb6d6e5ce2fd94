"""The operator dashboard at /ui: served as three static files with a strict CSP, and, in a
real headless Chromium (Debian's, driven by Playwright) against three real replicas on
PostgreSQL: sign-in with the admin token, members by region, a key's usage bar moving after
requests, the request log with a filter, a killed member shown as failed. Screenshots go to
``test-artifacts/dashboard/`` (or ``$RAINBRIDGE_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

import fleet_support
from fleet_support import TOKEN, VK_ID, Replica, wait_formed
from support import GatewayProcess, eventually, free_port, http_json, provider_config, stop_all

HOSTS = ["127.0.0.71", "127.0.0.72", "127.0.0.73"]
REGIONS = ["us-east-1", "eu-west-1", "us-east-1"]
TIMING = {"timeout_seconds": 3, "success_threshold": 1, "failure_threshold": 2}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("RAINBRIDGE_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")) / "dashboard"


def test_the_page_and_its_assets_are_served_without_a_token_with_a_strict_csp(mock, tmp_path):
    gw = GatewayProcess(tmp_path, {"client": {"admin_token": "t0ken"}})
    try:
        for path, kind in [("/ui", "text/html"), ("/ui/", "text/html"), ("/ui/app.js", "text/javascript"),
                           ("/ui/style.css", "text/css")]:
            status, headers, _ = _get(gw.url + path)
            assert status == 200, path
            assert headers["content-type"].startswith(kind), path
            csp = headers["content-security-policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert headers["x-content-type-options"] == "nosniff"
        assert _get(gw.url + "/ui/../config.json")[0] == 404
        assert _get(gw.url + "/ui/app.py")[0] == 404
        # The data stays behind the admin token.
        assert http_json("GET", gw.url + "/api/stats")[0] == 401
        status, _, body = http_json("GET", gw.url + "/api/stats", headers={"authorization": "Bearer t0ken"})
        assert status == 200 and set(body["traffic"]) == {"requests", "errors", "latency_ms_total", "uptime_s"}
    finally:
        gw.stop()


def _get(url: str) -> tuple[int, dict, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


@pytest.fixture
def regional_fleet(tmp_path, pg_database, mock):
    ports = [free_port(h) for h in HOSTS]
    peers = [f"{h}:{p}" for h, p in zip(HOSTS, ports, strict=True)]
    replicas: list[Replica] = []
    try:
        for i, host in enumerate(HOSTS):
            config = fleet_support.fleet_config(mock.url, pg_database, f"d{i}", peers, ports[i], 1000, TIMING)
            config["cluster_config"]["region"] = REGIONS[i]
            config["client"] = {"enable_logging": True}
            config["logs_store"] = {"enabled": True, "type": "postgres", "config": {"dsn": pg_database}}
            replicas.append(Replica(tmp_path, f"d{i}", host, config))
        wait_formed(replicas)
        yield replicas
    finally:
        stop_all(r.proc for r in replicas if r.proc is not None)


def test_dashboard_shows_members_by_region_usage_logs_and_a_failed_member(regional_fleet):
    from playwright.sync_api import sync_playwright

    replicas = regional_fleet
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(replicas[0].url + "/ui")

            # A wrong token is refused and not kept.
            page.fill("#token", "not-the-token")
            page.click("#signin-form button")
            page.wait_for_selector("#signin-error:has-text('refused')", timeout=10_000)
            assert page.evaluate("sessionStorage.length") == 0
            problems.clear()  # the refused API calls themselves log a 401 in the console

            page.fill("#token", TOKEN)
            page.click("#signin-form button")
            page.wait_for_selector("tr[data-member='d2'][data-state='alive']", timeout=15_000)
            assert TOKEN not in page.url
            assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
            assert page.evaluate(f"sessionStorage.getItem('rainbridge.admin_token') === {TOKEN!r}")

            # Members grouped by region.
            assert sorted(page.locator("table[data-region='us-east-1'] tr[data-member]").evaluate_all(
                "rows => rows.map(r => r.dataset.member)")) == ["d0", "d2"]
            assert page.locator("table[data-region='eu-west-1'] tr[data-member]").evaluate_all(
                "rows => rows.map(r => r.dataset.member)") == ["d1"]

            # The key's request bar moves after requests sent to another replica.
            bar = page.locator(f"div[data-vk='{VK_ID}'] div[data-limit='request']")
            bar.wait_for(timeout=10_000)
            before = int(bar.get_attribute("data-used"))
            for _ in range(5):
                assert replicas[1].chat()[0] == 200
            eventually(lambda: int(bar.get_attribute("data-used")) >= before + 5, 15, "the bar moved by 5")
            assert page.locator(f"div[data-vk='{VK_ID}'] div[data-limit='request'] .fill").evaluate(
                "e => parseFloat(e.style.width)") > 0

            # The request log, filtered by provider.
            page.wait_for_selector("tr[data-log]", timeout=15_000)
            page.fill("#f-provider", "no-such-provider")
            page.click("#log-filters button")
            eventually(lambda: page.locator("tr[data-log]").count() == 0, 10, "the filter emptied the log")
            page.fill("#f-provider", "openai")
            page.click("#log-filters button")
            page.wait_for_selector("tr[data-log]", timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "cluster-healthy.png"), full_page=True)

            # A killed member turns failed once the others detect it.
            replicas[2].stop(signal.SIGKILL)
            page.wait_for_selector("tr[data-member='d2'][data-state='failed']", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "member-failed.png"), full_page=True)

            # Signing out forgets the token.
            page.click("#signout")
            assert page.evaluate("sessionStorage.length") == 0
        finally:
            browser.close()
    assert problems == []


def test_api_stats_counts_requests_and_errors_of_this_node(mock, tmp_path):
    gw = GatewayProcess(tmp_path, {"client": {"admin_token": "t0ken"}, **provider_config(mock.url)})
    auth = {"authorization": "Bearer t0ken"}
    try:
        body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        assert http_json("POST", gw.url + "/v1/chat/completions", body)[0] == 200
        assert http_json("POST", gw.url + "/v1/chat/completions", {**body, "model": "nobody/x"})[0] >= 400
        traffic = http_json("GET", gw.url + "/api/stats", headers=auth)[2]["traffic"]
        assert traffic["requests"] == 2 and traffic["errors"] == 1  # settled before the answer ends
    finally:
        gw.stop()
