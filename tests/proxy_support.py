"""Real proxies for tests: Debian's tinyproxy (HTTP) on a loopback port, with Basic auth, only
CONNECT to the ports a test names, logging every request (the log is what tests count); and
Debian's microsocks (SOCKS5)."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

from support import HOST, Proc, eventually, free_port

USER = "proxyuser"
PASSWORD = "proxy-pass-0123456789"


class Tinyproxy:
    def __init__(self, tmp: Path, connect_ports: list[int], auth: bool = True):
        binary = shutil.which("tinyproxy")
        assert binary, "tinyproxy is not installed (apt-get install tinyproxy; .ci/run installs it)"
        self.port = free_port(HOST, udp=False)
        lines = [
            f"Port {self.port}", f"Listen {HOST}", "Timeout 30", "MaxClients 100", "LogLevel Connect",
            f"Allow {HOST}", "DisableViaHeader Yes",
            *(f"ConnectPort {p}" for p in connect_ports),
        ]
        if auth:
            lines.append(f"BasicAuth {USER} {PASSWORD}")
        conf = tmp / f"tinyproxy-{self.port}.conf"
        conf.write_text("\n".join(lines) + "\n")
        # -d: stay in the foreground, log to stdout (our log file).
        self.proc = Proc([binary, "-d", "-c", str(conf)], tmp / f"tinyproxy-{self.port}.log")
        self.url = f"http://{HOST}:{self.port}"
        eventually(self._accepting, 10.0, f"tinyproxy accepting on {self.port}")

    def _accepting(self) -> bool:
        assert self.proc.popen.poll() is None, f"tinyproxy exited:\n{self.proc.output()}"
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def connects(self, port: int) -> int:
        """How many CONNECT requests to ``HOST:port`` the proxy has received."""
        return len(self.connect_lines(f"{HOST}:{port}"))

    def connect_lines(self, target: str) -> list[str]:
        return re.findall(rf"Request \(file descriptor \d+\): CONNECT {re.escape(target)} .*", self.proc.output())

    def requests(self) -> int:
        return len(re.findall(r"Request \(file descriptor \d+\): ", self.proc.output()))

    def stop(self) -> None:
        self.proc.stop()


class Microsocks:
    """Debian's microsocks, a SOCKS5 server with username/password auth, on a loopback port.
    Its outgoing connections leave from ``bind`` (another loopback address), so an origin can
    tell a tunnelled connection (peer ``bind``) from a direct one (peer ``HOST``)."""

    def __init__(self, tmp: Path, bind: str = "127.0.0.2"):
        binary = shutil.which("microsocks")
        assert binary, "microsocks is not installed (apt-get install microsocks; .ci/run installs it)"
        self.port = free_port(HOST, udp=False)
        self.bind = bind
        self.url = f"socks5://{HOST}:{self.port}"
        self.proc = Proc([binary, "-i", HOST, "-p", str(self.port), "-u", USER, "-P", PASSWORD, "-b", bind],
                         tmp / f"microsocks-{self.port}.log")
        eventually(self._accepting, 10.0, f"microsocks accepting on {self.port}")

    def _accepting(self) -> bool:
        assert self.proc.popen.poll() is None, f"microsocks exited:\n{self.proc.output()}"
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.proc.stop()
