"""The README's nginx configuration in front of a two-node cluster, over TLS.

The ``nginx`` block of README's "Several machines behind nginx" is taken as it is written, with
only what a deployment fills in replaced: the two upstream addresses (two Hypercorn nodes over
a fresh PostgreSQL database and a Redis of this module's own, started as `make cluster` starts
them), the listening address (127.0.0.1 and a free port instead of 443) and the certificate, a
throwaway self-signed one for 127.0.0.1 made here with ``cryptography``. Debian's nginx is
installed when missing (tools/ensure-engines nginx, as root); the test fails, never skips,
without it. Through the proxy: sign-up and login over HTTPS, the session's answers carry HSTS
(the nodes believe the proxy's X-Forwarded-Proto), and two users chat over WebSockets that
nginx upgrades, whichever node each request and socket reaches.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from securechat import e2e
from securechat.client import SecureChatClient
from securechat.config import PROJECT_ROOT
from tests.chatkit import PASSWORD, unique
from tests.conftest import FAST_ITERATIONS
from tests.engines import PostgresEngine, RedisEngine, find_engines
from tests.test_cluster import SETTINGS
from tools.cluster import Cluster, Node, free_port

pytestmark = pytest.mark.slow

ENSURE = PROJECT_ROOT / "tools" / "ensure-engines"
START_TIMEOUT = 30.0


def nginx_binary() -> Path:
    """Debian's nginx, installed by tools/ensure-engines when missing (root only)."""

    def found() -> str | None:
        return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")

    if found() is None:
        done = subprocess.run(
            [ENSURE, "nginx"], capture_output=True, text=True, timeout=900, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"{ENSURE} nginx failed:\n{done.stdout}{done.stderr}")
    binary = found()
    if binary is None:
        pytest.fail(f"no nginx after {ENSURE} nginx")
    return Path(binary)


def readme_nginx_block() -> str:
    """The ```nginx block of README.md, as an operator would copy it."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```nginx\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1, "README.md should hold one nginx configuration"
    return str(blocks[0])


def deployed(block: str, upstreams: list[str], port: int, cert: Path, key: Path) -> str:
    """The README's block with a deployment's values filled in, each exactly where the README
    leaves it to the operator (a README that moves one fails here, not silently)."""
    servers = re.findall(r"server \d+\.\d+\.\d+\.\d+:\d+;", block)
    assert len(servers) == len(upstreams), servers
    for server, upstream in zip(servers, upstreams, strict=True):
        block = block.replace(server, f"server {upstream};", 1)
    for old, new in (
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        (
            "# ssl_certificate ..., ssl_certificate_key ...",
            f"ssl_certificate {cert}; ssl_certificate_key {key};",
        ),
    ):
        assert block.count(old) == 1, old
        block = block.replace(old, new)
    return block


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A P-256 certificate for 127.0.0.1, valid for a day, and its key (mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def main_config(root: Path, site: Path) -> str:
    """An nginx.conf of the test's own: everything under ``root``, the site included in http."""
    temp = {name: root / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    # As root, the workers would switch to nobody and could not write under root's tmp.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\ndaemon off;\npid {root / 'nginx.pid'};\n"
        f"error_log {root / 'error.log'};\nevents {{ worker_connections 256; }}\n"
        f"http {{\n  access_log {root / 'access.log'};\n"
        f"  client_body_temp_path {temp['body']};\n  proxy_temp_path {temp['proxy']};\n"
        f"  fastcgi_temp_path {temp['fastcgi']};\n  uwsgi_temp_path {temp['uwsgi']};\n"
        f"  scgi_temp_path {temp['scgi']};\n  include {site};\n}}\n"
    )


@dataclass
class Nginx:
    """nginx in the foreground, in a process group of its own."""

    process: subprocess.Popen[bytes]
    root: Path

    @classmethod
    def start(cls, binary: Path, root: Path, port: int) -> Nginx:
        config = root / "nginx.conf"
        command = [str(binary), "-p", str(root), "-e", str(root / "error.log"), "-c", str(config)]
        checked = subprocess.run(
            [*command, "-t"], capture_output=True, text=True, timeout=30, check=False
        )
        assert checked.returncode == 0, checked.stderr
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, start_new_session=True, cwd=root
        )
        nginx = cls(process, root)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited: {nginx.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return nginx
            except OSError:
                if time.monotonic() > deadline:
                    nginx.stop()
                    raise RuntimeError(f"nginx did not listen: {nginx.error_log()}") from None
                time.sleep(0.05)  # polling a process that is starting: nothing to await

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL the group if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGQUIT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class Proxied:
    """The cluster's two nodes behind nginx at ``url``, and the clients a test made."""

    url: str
    nodes: list[Node]
    cert: Path
    identities: list[e2e.Identity]
    clients: list[SecureChatClient] = field(default_factory=list)

    def client(self) -> SecureChatClient:
        """A client of the proxy's address that trusts the throwaway certificate."""
        client = SecureChatClient(self.url, min_iterations=FAST_ITERATIONS)
        trusted = ssl.create_default_context(cafile=str(self.cert))
        client.http = httpx.AsyncClient(base_url=self.url, timeout=30.0, verify=trusted)
        self.clients.append(client)
        return client


@pytest.fixture(name="trust_cert")
def _trust_cert(proxied: Proxied, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The chat socket's TLS (websockets' default context) trusts the certificate too."""
    monkeypatch.setenv("SSL_CERT_FILE", str(proxied.cert))
    yield


@pytest.fixture(name="proxied", scope="module")
async def _proxied(
    postgres_engine: PostgresEngine,
    identities: list[e2e.Identity],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Proxied]:
    binary = await asyncio.to_thread(nginx_binary)
    root = tmp_path_factory.mktemp("nginx")
    cert, key = self_signed(root)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    redis = RedisEngine.start(find_engines()[1])
    try:
        async with postgres_engine.fresh_database() as database:
            settings = SETTINGS | {"SECURECHAT_TRUSTED_PROXY_HOPS": "1"}
            ports = [free_port(), free_port()]
            # The nodes' own addresses too: start_node asks each for /healthz directly, as a
            # load balancer's health check would (README).
            origins = [url, *(f"http://127.0.0.1:{p}" for p in ports)]
            cluster = await asyncio.to_thread(
                Cluster.prepare, postgres_engine.url(database), redis.url, origins, settings
            )
            try:
                nodes = [await asyncio.to_thread(cluster.start_node, p) for p in ports]
                site = root / "securechat.conf"
                upstreams = [f"127.0.0.1:{p}" for p in ports]
                site.write_text(deployed(readme_nginx_block(), upstreams, port, cert, key))
                (root / "nginx.conf").write_text(main_config(root, site))
                nginx = await asyncio.to_thread(Nginx.start, binary, root, port)
                try:
                    proxied = Proxied(url, nodes, cert, identities)
                    yield proxied
                    for client in proxied.clients:
                        await client.close()
                finally:
                    await asyncio.to_thread(nginx.stop)
            finally:
                await asyncio.to_thread(cluster.stop)
    finally:
        redis.stop()


async def sign_up(proxied: Proxied, prefix: str) -> tuple[SecureChatClient, str]:
    client = proxied.client()
    name = unique(prefix)
    identity = proxied.identities[len(proxied.clients) % len(proxied.identities)]
    await client.register(name, PASSWORD, iterations=FAST_ITERATIONS, identity=identity)
    await client.login(name, PASSWORD)
    return client, name


@pytest.mark.usefixtures("trust_cert")
async def test_login_and_chat_through_nginx(proxied: Proxied) -> None:
    """Alice and bob sign up and log in through nginx over HTTPS (the answers carry HSTS: the
    nodes took the proxy's X-Forwarded-Proto), open chat sockets through it and exchange
    messages, the two directions reaching whichever node nginx chose."""
    alice, alice_name = await sign_up(proxied, "alice")
    bob, bob_name = await sign_up(proxied, "bob")
    me = await alice.request("GET", "/api/v1/me")
    assert me.status_code == 200 and me.json()["username"] == alice_name
    assert "max-age=" in me.headers.get("strict-transport-security", "")
    on_alice, on_bob = await alice.connect(), await bob.connect()
    for number in range(5):
        ack = await on_alice.send_message(bob_name, f"through nginx {number}")
        frame = await on_bob.wait_for("message", id=ack["id"])
        assert (await on_bob.open(frame)).text == f"through nginx {number}"
        reply = await on_bob.send_message(alice_name, f"reply {number}")
        back = await on_alice.wait_for("message", id=reply["id"])
        assert (await on_alice.open(back)).text == f"reply {number}"
    assert await on_alice.ping() == {"type": "pong"}
