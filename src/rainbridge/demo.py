"""``rainbridge demo``: the fake provider plus a gateway in front of it, no network or keys needed."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from .server.run import ServeOptions, serve

log = logging.getLogger("rainbridge.demo")

SNIPPET = """
rainbridge demo is up: a gateway at {url} in front of a fake provider at {mock}.

  curl {url}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "openai/gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python - <<'EOF'
  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="demo")
  reply = client.chat.completions.create(
      model="openai/gpt-4o-mini", messages=[{{"role": "user", "content": "Hello!"}}])
  print(reply.choices[0].message.content)
  EOF

Anthropic SDK: Anthropic(base_url="{url}/anthropic", api_key="demo"), model "anthropic/claude-3-5-sonnet-latest".
Press Ctrl-C to stop.
"""


def start_mock(host: str, new_session: bool = False) -> tuple[subprocess.Popen, str]:
    """The fake provider; in a session of its own (out of reach of a terminal's Ctrl-C) when
    its starter stops it itself."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rainbridge.mock", "--host", host, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "listening on " in line:
            return proc, line.rsplit("listening on ", 1)[1].strip()
    proc.kill()
    raise RuntimeError("the fake provider did not start")


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def demo_config(mock_url: str) -> dict:
    return {
        "client": {"enable_logging": False},
        "providers": {
            "openai": {
                "keys": [{"name": "demo", "value": "sk-demo-openai", "models": ["*"], "weight": 1.0}],
                "network_config": {"base_url": mock_url},
            },
            "anthropic": {
                "keys": [{"name": "demo", "value": "sk-demo-anthropic", "models": ["*"], "weight": 1.0}],
                "network_config": {"base_url": mock_url},
            },
        },
    }


def run_demo(host: str, port: int) -> int:
    mock, mock_url = start_mock(host)
    try:
        with tempfile.TemporaryDirectory(prefix="rainbridge-demo-") as app_dir:
            Path(app_dir, "config.json").write_bytes(orjson.dumps(demo_config(mock_url), option=orjson.OPT_INDENT_2))
            if port and not port_free(host, port):
                log.warning("port %d is busy; using a free port instead", port)
                port = 0
            if port == 0:
                with socket.socket() as sock:
                    sock.bind((host, 0))
                    port = sock.getsockname()[1]
            url = f"http://{host}:{port}"
            print(SNIPPET.format(url=url, mock=mock_url), flush=True)
            return serve(ServeOptions(app_dir=app_dir, host=host, port=port))
    finally:
        mock.terminate()
        try:
            mock.wait(5)
        except subprocess.TimeoutExpired:
            mock.kill()
