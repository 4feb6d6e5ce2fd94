"""Helpers shared by the test servers of APIs that cannot run here (Kubernetes, Consul):
a private CA with a server certificate for loopback, and an aiohttp application served
from its own thread so sync tests and gateway subprocesses can use it alike, and so it can
be taken down and brought back on the same port."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support import free_port


def make_tls(folder: Path, host: str) -> tuple[Path, Path, Path]:
    """A fresh CA and a server certificate for IP ``host`` signed by it; returns the paths
    of (ca.crt, server.crt, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rainbridge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.crt", folder / "server.crt", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class ThreadedApp:
    """An aiohttp application on ``host:port`` in a thread of its own. ``stop`` closes the
    listener and every open connection (the API "goes down"); ``start`` brings it back on
    the same port. ``call`` runs a function on the server's loop (state changes that wake
    streaming handlers must happen there)."""

    def __init__(self, app_factory: Callable[[], web.Application], host: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.app_factory = app_factory
        self.host = host
        self.port = free_port(host, udp=False)
        self.ssl_context = ssl_context
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self.on_stop: list[Callable[[], None]] = []

    def call(self, fn, *args):
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def start(self) -> None:
        async def up():
            runner = web.AppRunner(self.app_factory(), shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context,
                               reuse_address=True)
            await site.start()
            self._runner = runner
        asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)

    def stop(self) -> None:
        async def down():
            for hook in self.on_stop:
                hook()
            runner, self._runner = self._runner, None
            if runner is not None:
                await runner.cleanup()
        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class NetnsLan:
    """``count`` network namespaces on one private link, made for a test and removed after:
    a bridge in a namespace of its own (the host's network is never touched) and one veth
    pair per member namespace, addresses ``10.<net>.0.<i+1>/<prefix_len>`` (or ``ips``),
    multicast routed on the link. Needs root and iproute2 (Debian ``iproute2``)."""

    def __init__(self, tag: str, count: int, net: int = 77, prefix_len: int = 24,
                 ips: list[str] | None = None) -> None:
        self.prefix = f"rb{tag}{os.getpid() % 100000}"
        self.bridge_ns = f"{self.prefix}-br"
        self.namespaces = [f"{self.prefix}-{i}" for i in range(count)]
        self.ips = ips or [f"10.{net}.0.{i + 1}" for i in range(count)]
        self.prefix_len = prefix_len

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def up(self) -> NetnsLan:
        self._ip("netns", "add", self.bridge_ns)
        self._ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        self._ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, (ns, ip) in enumerate(zip(self.namespaces, self.ips, strict=True)):
            self._ip("netns", "add", ns)
            self._ip("-n", ns, "link", "set", "lo", "up")
            self._ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
                     "netns", self.bridge_ns)
            self._ip("-n", self.bridge_ns, "link", "set", f"p{i}", "master", "br0")
            self._ip("-n", self.bridge_ns, "link", "set", f"p{i}", "up")
            self._ip("-n", ns, "addr", "add", f"{ip}/{self.prefix_len}", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "eth0", "up", "multicast", "on")
            self._ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        return self

    def down(self) -> None:
        for ns in [*self.namespaces, self.bridge_ns]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def command(self, index: int, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[index], *argv]


def netns_available() -> str | None:
    """None when this process may make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "ip (Debian iproute2) is not installed"
    probe = f"rbprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None if made.returncode == 0 else f"ip netns add failed: {made.stderr.decode()[:200]}"


class UnixForwarder:
    """A Unix socket at ``folder/.s.PGSQL.<port>`` relaying to TCP ``host:port``: gives
    processes in a test's network namespaces the host's PostgreSQL (a Unix socket is a
    file, not part of any network namespace), with no change to the host's network."""

    def __init__(self, folder: Path, host: str, port: int) -> None:
        self.folder, self.host, self.port = folder, host, port
        self.path = folder / f".s.PGSQL.{port}"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    async def _relay(self, reader, writer) -> None:
        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def start(self) -> UnixForwarder:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_unix_server(self._relay, path=str(self.path)), self.loop).result(10)
        return self

    def close(self) -> None:
        async def down():
            if self._server is not None:
                self._server.close()
        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class MdnsMember:
    """``mdns_member.py`` in a namespace of ``lan``; ``seen`` is its latest report."""

    def __init__(self, lan: NetnsLan, index: int, node: str, service: str,
                 port: int = 7946) -> None:
        member = str(Path(__file__).with_name("mdns_member.py"))
        self.node = node
        self.ip = lan.ips[index]
        self.proc = subprocess.Popen(
            lan.command(index, sys.executable, member, self.ip, str(port), node, service),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.seen: dict = {}
        self.stopped = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            report = json.loads(line)
            if report.get("stopped"):
                self.stopped = True
            else:
                self.seen = report

    def candidates(self) -> set[str]:
        return {f"{ip}:{port}" for ip, port in self.seen.get("candidates", [])}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
