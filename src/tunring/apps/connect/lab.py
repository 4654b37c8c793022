"""A throwaway ocserv in network namespaces: the real peer of `tunring connect` (root only).

:class:`Lab` makes two namespaces joined by a veth pair, a CA and a server
certificate (with the ``cryptography`` package), a password file (``ocpasswd``)
and an ocserv configuration, and starts ``ocserv -f`` in the server namespace.
The client namespace sees the server at :data:`SERVER_IP`; behind the server its
loopback holds :data:`INSIDE_IP4`/:data:`INSIDE_IP6` (reached only
through a split-include route) and :data:`OUTSIDE_IP4` (in no route: never
through the tunnel).  ``stop()`` removes the processes, namespaces and files,
also after a failure; the demo, the net tests and ``tunring bench connect``
all use it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import itertools
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

SERVER_IP = "198.18.0.1"  # RFC 2544 benchmarking range: never routed anywhere
CLIENT_IP = "198.18.0.2"
POOL4 = "198.19.0.0/24"  # addresses ocserv leases inside the tunnel
POOL6 = "fd00:7475:6e72::/48"
INSIDE_NET4 = "198.19.7.0/24"  # split-include routes, served by a dummy interface behind the server
INSIDE_NET6 = "fd00:7475:6e72:7::/64"
INSIDE_IP4 = "198.19.7.1"
INSIDE_IP6 = "fd00:7475:6e72:7::1"
EXCLUDE_NET4 = "198.19.7.128/25"  # a split-exclude inside the include
OUTSIDE_IP4 = "198.19.9.1"  # on the server's dummy too, but in no route the server pushes
DNS4 = "198.19.0.53"
DOMAIN = "tunring.test"
PORT = 4443
USER = "alice"
PASSWORD = "correct horse"
START_TIMEOUT_S = 15.0
CLIENT_UP_TIMEOUT_S = 20.0
_counter = itertools.count()


@dataclass
class Pki:
    """Paths of a throwaway CA and server certificate, and the server key's pins."""

    ca: str
    cert: str
    key: str
    pin_sha256: str  # openconnect's pin-sha256:BASE64 of the server's SubjectPublicKeyInfo
    cert_sha256: str  # sha256:HEX of the server certificate


def make_pki(directory: str, host: str = SERVER_IP) -> Pki:
    """A CA and a server certificate for ``host`` (an IP address), written under ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tunring lab CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pki = Pki(os.path.join(directory, "ca.pem"), os.path.join(directory, "server.pem"),
              os.path.join(directory, "server.key"), "", "")
    pem = serialization.Encoding.PEM
    with open(pki.ca, "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(pki.cert, "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(pki.key, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(pki.key, 0o600)
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    pki.pin_sha256 = "pin-sha256:" + base64.b64encode(hashlib.sha256(spki).digest()).decode()
    pki.cert_sha256 = "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return pki


def ocserv_config(directory: str, pki: Pki, *, dtls: bool, compression: bool, dpd_s: int,
                  keepalive_s: int, mtu: int = 0, groups: tuple[str, ...] = ()) -> str:
    """ocserv.conf for the lab: plain passwords, no bans or rate limits, our routes and pools."""
    lines = [
        f'auth = "plain[passwd={directory}/passwd]"',
        f"tcp-port = {PORT}",
        *([f"udp-port = {PORT}"] if dtls else []),
        f"listen-host = {SERVER_IP}",
        f"socket-file = {directory}/ocserv.sock",
        f"pid-file = {directory}/ocserv.pid",
        f"server-cert = {pki.cert}",
        f"server-key = {pki.key}",
        "isolate-workers = false",
        "max-clients = 16", "max-same-clients = 0",
        "rate-limit-ms = 0", "max-ban-score = 0",
        f"keepalive = {keepalive_s}", f"dpd = {dpd_s}", f"mobile-dpd = {dpd_s}",
        "switch-to-tcp-timeout = 25", "try-mtu-discovery = false",
        'tls-priorities = "NORMAL:%SERVER_PRECEDENCE:%COMPAT:-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1"',
        "auth-timeout = 240", "cookie-timeout = 120", "deny-roaming = false",
        "rekey-time = 172800", "rekey-method = ssl", "use-occtl = false",
        "device = vpns", "predictable-ips = true",
        f"default-domain = {DOMAIN}",
        f"ipv4-network = {POOL4}",
        f"ipv6-network = {POOL6}", "ipv6-subnet-prefix = 64",
        f"dns = {DNS4}",
        f"route = {INSIDE_NET4}", f"route = {INSIDE_NET6}", f"no-route = {EXCLUDE_NET4}",
        f"compression = {'true' if compression else 'false'}", "no-compress-limit = 0",
        "cisco-client-compat = true", "dtls-legacy = true",
        *([f"mtu = {mtu}"] if mtu else []),
        *[f"select-group = {g}" for g in groups],
    ]
    path = os.path.join(directory, "ocserv.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def payload(size: int, seed: int) -> bytes:
    """Text-like data (words from a small vocabulary, a random one now and then) that a
    per-packet compressor shrinks about twofold, and that no two runs repeat."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 5)).hex().encode() for _ in range(48)]
    out = bytearray()
    while len(out) < size:
        line = [rng.choice(words) for _ in range(16)]
        line[rng.randrange(16)] = rng.randbytes(4).hex().encode()
        out += b" ".join(line) + b"\n"
    return bytes(out[:size])


def _echo_one(listener: socket.socket, digest: list[str]) -> None:
    conn, _ = listener.accept()
    h = hashlib.sha256()
    with conn:
        while chunk := conn.recv(1 << 16):
            h.update(chunk)
            conn.sendall(chunk)
    digest.append(h.hexdigest())


def _send_all(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Lab:
    """ocserv in namespace ``server_ns``, a client namespace ``client_ns``, a veth pair between.

    Use as a context manager (or ``start()``/``stop()``).  ``url`` is what
    `tunring connect` and openconnect are pointed at; ``pki`` has the CA file and
    the pins; ``client(argv)`` runs a command in the client namespace.
    """

    def __init__(self, *, dtls: bool = False, compression: bool = True, dpd_s: int = 10,
                 keepalive_s: int = 20, mtu: int = 0, user: str = USER, password: str = PASSWORD,
                 groups: tuple[str, ...] = (), link_mtu: int = 1500) -> None:
        tag = f"{os.getpid()}-{next(_counter)}"
        self.server_ns = f"tr-ocs-{tag}"
        self.client_ns = f"tr-occ-{tag}"
        self.dtls, self.compression, self.dpd_s, self.keepalive_s, self.mtu = dtls, compression, dpd_s, keepalive_s, mtu
        self.user, self.password, self.groups = user, password, groups
        self.link_mtu = link_mtu
        self.url = f"https://{SERVER_IP}:{PORT}/"
        self.dir = ""
        self.pki: Pki | None = None
        self.ocserv: subprocess.Popen | None = None
        self._made: list[str] = []

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- bringing it up -----------------------------------------------------------
    def start(self) -> None:
        """Namespaces, addresses, certificates, passwords; then ocserv, listening."""
        for tool in ("ocserv", "ocpasswd", "ip"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed (Debian: apt-get install "
                                   f"{'iproute2' if tool == 'ip' else 'ocserv'})")
        try:
            self.dir = tempfile.mkdtemp(prefix="tunring-lab-")
            self._namespaces()
            self.pki = make_pki(self.dir)
            subprocess.run(["ocpasswd", "-c", os.path.join(self.dir, "passwd"),
                            *(["-g", ",".join(self.groups)] if self.groups else []), self.user],
                           input=f"{self.password}\n{self.password}\n", text=True, check=True, capture_output=True)
            self.start_ocserv()
        except BaseException:
            self.stop()
            raise

    def _namespaces(self) -> None:
        s, c = self.server_ns, self.client_ns
        for ns in (s, c):
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("link", "set", "lo", "up", ns=ns)
            # `ip netns exec` bind-mounts this over /etc/resolv.conf: a vpnc-script run in the
            # namespace edits the lab's copy, never the machine's.
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/resolv.conf", "w") as f:
                f.write("# tunring lab\n")
        veth_s, veth_c = f"trs{os.getpid() % 100000}", f"trc{os.getpid() % 100000}"
        _ip("link", "add", veth_s, "netns", s, "type", "veth", "peer", "name", veth_c, "netns", c)
        _ip("addr", "add", f"{SERVER_IP}/24", "dev", veth_s, ns=s)
        _ip("addr", "add", f"{CLIENT_IP}/24", "dev", veth_c, ns=c)
        _ip("link", "set", veth_s, "up", "mtu", str(self.link_mtu), ns=s)
        _ip("link", "set", veth_c, "up", "mtu", str(self.link_mtu), ns=c)
        self.client_link = veth_c
        # The hosts "behind" the server live on its loopback (containers often lack the dummy driver).
        _ip("addr", "add", f"{INSIDE_IP4}/32", "dev", "lo", ns=s)
        _ip("addr", "add", f"{OUTSIDE_IP4}/32", "dev", "lo", ns=s)
        _ip("addr", "add", f"{INSIDE_IP6}/128", "dev", "lo", ns=s)
        subprocess.run(["ip", "netns", "exec", s, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
                       check=False, capture_output=True)

    def start_ocserv(self) -> None:
        """(Re)start ocserv with the lab's configuration and wait until it accepts connections."""
        assert self.pki is not None
        conf = ocserv_config(self.dir, self.pki, dtls=self.dtls, compression=self.compression,
                             dpd_s=self.dpd_s, keepalive_s=self.keepalive_s, mtu=self.mtu, groups=self.groups)
        logf = open(os.path.join(self.dir, "ocserv.log"), "ab")
        self.ocserv = subprocess.Popen(["ip", "netns", "exec", self.server_ns, "ocserv", "-f", "-d", "2", "-c", conf],
                                       stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.ocserv.poll() is not None:
                raise RuntimeError(f"ocserv exited with {self.ocserv.returncode}:\n{self.ocserv_log()[-2000:]}")
            if self.listening():
                return
            time.sleep(0.1)
        raise RuntimeError(f"ocserv did not listen within {START_TIMEOUT_S} s:\n{self.ocserv_log()[-2000:]}")

    def listening(self) -> bool:
        out = subprocess.run(["ip", "netns", "exec", self.server_ns, "ss", "-Htln", f"sport = :{PORT}"],
                             capture_output=True, text=True).stdout
        return bool(out.strip())

    def ocserv_log(self) -> str:
        try:
            with open(os.path.join(self.dir, "ocserv.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill_ocserv(self, sig: int = signal.SIGTERM) -> None:
        """Stop ocserv and every process it forked (workers, sec-mod): its whole process group.

        SIGTERM lets the workers send their clients a CSTP disconnect; SIGKILL is a crash.
        """
        p, self.ocserv = self.ocserv, None
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        # Workers outlive their parent for a moment: the group is gone once none answers.
        for _ in range(50):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        """ocserv's worker processes that hold an established client connection now."""
        out = self.run_server(["ss", "-Htnp", "state", "established", f"sport = :{PORT}"]).stdout
        return sorted({int(m) for m in re.findall(r"pid=(\d+)", out)})

    # -- using it -----------------------------------------------------------------
    def client(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start ``argv`` in the client namespace."""
        return subprocess.Popen(["ip", "netns", "exec", self.client_ns, *argv], **kw)

    def run_client(self, argv: list[str], timeout_s: float = 60, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.client_ns, *argv], timeout=timeout_s, **kw)

    def run_server(self, argv: list[str], timeout_s: float = 60, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.server_ns, *argv], timeout=timeout_s, **kw)

    def tunring_argv(self, *extra: str, iface: str = "vpn0") -> list[str]:
        """`tunring connect` to this lab's server, trusting its CA, password on stdin."""
        assert self.pki is not None
        return [sys.executable, "-m", "tunring.cli", "connect", "-u", self.user, "--passwd-on-stdin",
                "--cafile", self.pki.ca, "-i", iface, *extra, self.url]

    def openconnect_argv(self, *extra: str, iface: str = "vpn0") -> list[str]:
        assert self.pki is not None
        return ["openconnect", "-u", self.user, "--passwd-on-stdin", "--cafile", self.pki.ca, "-i", iface,
                *extra, self.url]

    def start_client(self, argv: list[str], iface: str, password: str | None = None, wait: bool = True,
                     **kw) -> subprocess.Popen:
        """Start a VPN client (``argv``) in the client namespace, give it the password on stdin
        and, with ``wait``, return once ``iface`` carries traffic to :data:`INSIDE_IP4`."""
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = self.client(argv, stdin=subprocess.PIPE, text=True, **kw)
        assert proc.stdin is not None
        proc.stdin.write((self.password if password is None else password) + "\n")
        proc.stdin.close()
        proc.stdin = None  # communicate() must not touch it again
        deadline = time.monotonic() + CLIENT_UP_TIMEOUT_S
        while wait and time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {err[-800:]}")
            if self.route_dev(INSIDE_IP4) == iface and self.ping(INSIDE_IP4, count=1).returncode == 0:
                return proc
            time.sleep(0.2)
        if wait:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{argv[0]} did not bring {iface} up within {CLIENT_UP_TIMEOUT_S:g} s")
        return proc

    def route_dev(self, address: str) -> str:
        """The device the client namespace routes ``address`` through ('' if it has no route)."""
        out = self.run_client(["ip", "-o", "route", "get", address])
        words = out.stdout.split()
        return words[words.index("dev") + 1] if out.returncode == 0 and "dev" in words else ""

    def ping(self, address: str, count: int = 3, interval_s: float = 0.2) -> subprocess.CompletedProcess:
        return self.run_client(["ping", "-c", str(count), "-i", str(interval_s), "-W", "2", address],
                               timeout_s=30 + count * interval_s)

    def echo(self, address: str, size: int, port: int = 5999, timeout_s: float = 120) -> float:
        """Send ``size`` bytes from the client namespace to an echo server behind ocserv and
        check what comes back byte for byte (both directions through the tunnel at once);
        returns the seconds it took.  AssertionError if a byte differs."""
        data = payload(size, seed=size ^ port)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with self.in_server():
            listener = socket.socket(family, socket.SOCK_STREAM)
        with self.in_client():
            client = socket.socket(family, socket.SOCK_STREAM)
        started = time.monotonic()
        with listener, client:
            listener.bind((address, port))
            listener.listen(1)
            listener.settimeout(timeout_s)
            client.settimeout(timeout_s)
            server_digest: list[str] = []
            server = threading.Thread(target=_echo_one, args=(listener, server_digest), daemon=True)
            server.start()
            client.connect((address, port))
            sender = threading.Thread(target=_send_all, args=(client, data), daemon=True)
            sender.start()
            received = bytearray()
            while chunk := client.recv(1 << 16):
                received += chunk
            sender.join(timeout_s)
            server.join(timeout_s)
        if server_digest != [hashlib.sha256(data).hexdigest()]:
            raise AssertionError("the server received other bytes than were sent")
        if received != data:
            raise AssertionError("the echo differs from what was sent")
        return time.monotonic() - started

    @contextlib.contextmanager
    def in_client(self) -> Iterator[None]:
        """Run the block with this thread in the client namespace (sockets made there stay there)."""
        from ...linux import netlink

        with netlink.netns(self.client_ns):
            yield

    @contextlib.contextmanager
    def in_server(self) -> Iterator[None]:
        from ...linux import netlink

        with netlink.netns(self.server_ns):
            yield

    # -- tearing it down ---------------------------------------------------------
    def stop(self) -> None:
        """Kill ocserv, delete the namespaces (their interfaces go with them) and the files."""
        self.kill_ocserv()
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        self._made.clear()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

