"""Shared pieces of the `tunring serve` tests: the gateway process, client namespaces, TCP checks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

from tunring.apps.serve import rig

POOL, POOL6, DNS = "10.9.0.0/24", "fd00:9::/64", "10.9.0.53"
GATEWAY4, GATEWAY6 = "10.9.0.1", "fd00:9::1"
PORT = 4443
USERS = {"alice": "correct horse", "bob": "battery staple", "carol": "s3cret"}
PROTOCOLS = {"f5": ("f5", []), "f5-hdlc": ("f5", ["--hdlc"]), "fortinet": ("fortinet", [])}


@contextlib.contextmanager
def serve_process(tmp_path, protocol: str, extra: list[str], clients: int = 2):
    """`tunring serve` in the test's namespace and ``clients`` client namespaces; yields
    (process, [ClientNamespace], pin, stderr path)."""
    namespaces = [rig.ClientNamespace(i + 1) for i in range(clients)]
    log_path = tmp_path / "serve.log"
    try:
        cert, key, users, pin = rig.credentials(str(tmp_path), USERS, namespaces[0].gateway_ip)
        args = [sys.executable, "-m", "tunring.cli", "-v", "serve", "--protocol", protocol,
                "--listen", f"0.0.0.0:{PORT}", "--cert", cert, "--key", key, "--users", users,
                "--pool", POOL, "--pool6", POOL6, "--dns", DNS, *extra]
        with open(log_path, "w") as log:
            proc = subprocess.Popen(args, stderr=log)
        try:
            wait_for(lambda: "listening on" in log_path.read_text() or proc.poll() is not None, 20)
            assert proc.poll() is None, log_path.read_text()
            yield proc, namespaces, pin, log_path
        finally:
            for ns in namespaces:
                for client in ns.clients:
                    client.stop()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        for ns in namespaces:
            ns.close()


def wait_for(condition, timeout_s: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ping(ns: rig.ClientNamespace, address: str, count: int = 3) -> None:
    out = ns.run("ping", "-n", "-c", str(count), "-i", "0.2", "-W", "3", address, timeout_s=30)
    assert out.returncode == 0 and f"{count} received" in out.stdout, out.stdout + out.stderr


def _pattern(nbytes: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(nbytes)


def tcp_both_ways(ns: rig.ClientNamespace, server_ip: str, nbytes: int, family: int = socket.AF_INET) -> None:
    """``nbytes`` from the client namespace to a server at ``server_ip`` (in this namespace) and
    ``nbytes`` back, each checked byte for byte."""
    up, down = _pattern(nbytes, 1), _pattern(nbytes, 2)
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((server_ip, 0))
        listener.listen(1)
        listener.settimeout(10)
        received = {}

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(60)
                received["up"] = _recv_exactly(conn, nbytes)
                conn.sendall(down)
                conn.shutdown(socket.SHUT_WR)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        with ns.socket(family) as client:
            client.settimeout(60)
            client.connect((server_ip, listener.getsockname()[1]))
            client.sendall(up)
            got_down = _recv_exactly(client, nbytes)
        server.join(60)
    assert received.get("up") == up, "upload corrupted or incomplete"
    assert got_down == down, "download corrupted or incomplete"


def _recv_exactly(sock: socket.socket, nbytes: int) -> bytes:
    buf = bytearray(nbytes)
    view = memoryview(buf)
    have = 0
    while have < nbytes:
        n = sock.recv_into(view[have:])
        assert n, f"connection closed after {have} of {nbytes} bytes"
        have += n
    return bytes(buf)


def pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


# -- the gateway in this process (to look inside it), and a PPP client written in Python -------
@contextlib.contextmanager
def gateway_thread(tmp_path, protocol: str = "f5", hdlc: bool = False, **settings):
    """A Gateway serving from a thread of this process (in the test's namespace) on 127.0.0.1;
    yields (gateway, cert-pin).  Extra keyword arguments go to ServeSettings (short PPP timers)."""
    import ipaddress

    from tunring.apps.serve.gateway import Gateway, ServeSettings
    from tunring.apps.serve.users import load_users

    cert, key, users, pin = rig.credentials(str(tmp_path), USERS, "127.0.0.1")
    config = ServeSettings(protocol=protocol, listen=(settings.pop("host", "127.0.0.1"), PORT), cert=cert,
                           key=key, users=load_users(users), pool=ipaddress.IPv4Network(POOL),
                           pool6=ipaddress.IPv6Network(POOL6), hdlc=hdlc, dns=(ipaddress.ip_address(DNS),),
                           **settings)
    gateway = Gateway(config)
    stop = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            gateway.run(stop.is_set)
        except BaseException as e:  # surfaced by the test, not lost in the thread
            failure.append(e)
            raise

    thread = threading.Thread(target=main, name="gateway", daemon=True)
    thread.start()
    try:
        yield gateway, pin
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "the gateway did not stop"
        if failure:
            raise failure[0]


class PppClient:
    """A PPP client of our own over one TLS connection to the gateway: the engine in its client
    role, a tunring codec on a loopback device.  Hostile tests drive ``sock`` by hand."""

    def __init__(self, framing: str, sock, head_rest: bytes = b"", **config) -> None:
        from tunring.loopback import LoopbackDevice
        from tunring.proto import FRAMINGS
        from tunring.proto.ppp_engine import PppConfig, PppEngine

        self.sock = sock
        self.device = LoopbackDevice(mtu=40000, packets=64)
        self.codec = FRAMINGS[framing](self.device, max_payload=1500)
        self.engine = PppEngine(PppConfig(**config))
        self.received: list[bytes] = []
        self.controls: list = []
        self.closed = False
        self.answering = True  # the engine answers what arrives (False: the test answers by hand)
        self.start = time.monotonic()
        self._send(self.engine.start(0.0))
        if head_rest:
            self._feed(head_rest)

    def now(self) -> float:
        return time.monotonic() - self.start

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_ip(self, packet: bytes) -> None:
        self.sock.sendall(self.codec.encode_bytes(packet))

    def _send(self, frames) -> None:
        hdlc = hasattr(self.codec, "rx_accm")
        for frame in frames:
            if hdlc:  # RFC 1662 7.1: LCP fully escaped, the rest with the peer's ACCM
                self.codec.tx_accm = 0xFFFFFFFF if frame.kind == 0xC021 else self.engine.tx_accm
            self.sock.sendall(self.codec.encode_control(frame))
        if hdlc:
            self.codec.rx_accm = self.engine.rx_accm
            self.codec.tx_accm = self.engine.tx_accm

    def _feed(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            room = self.codec.want()
            n = min(len(room), len(view))
            room[:n] = view[:n]
            view = view[n:]
            self._events(self.codec.received(n))

    def _events(self, events) -> None:
        from tunring.proto.base import Control

        for event in events:
            if isinstance(event, Control):
                self.controls.append(event)
                if self.answering:
                    self._send(self.engine.receive(event.kind, event.payload, self.now()))
        while (p := self.device.receive()) is not None:
            self.received.append(bytes(p.data))
            self.device.release(p)

    def pump(self, until, timeout_s: float = 10.0) -> bool:
        """Read and answer until ``until()`` or the timeout; False on timeout, or when the gateway closes."""
        import select
        import ssl

        deadline = time.monotonic() + timeout_s
        while not until():
            if self.closed or time.monotonic() > deadline:
                return until()
            if self.sock.pending() == 0:
                select.select([self.sock], [], [], 0.05)
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError, TimeoutError):
                data = None
            except OSError:
                self.closed = True
                continue
            if data == b"":
                self.closed = True
            elif data:
                self._feed(data)
            if self.answering:
                self._send(self.engine.tick(self.now()))
        return True


def f5_login(host: str, port: int, user: str, password: str) -> tuple[str, str]:
    """F5's login and configuration requests with http.client; returns (Session_ID, ur_Z)."""
    import http.client
    import ssl
    import urllib.parse
    import xml.etree.ElementTree as ET

    conn = http.client.HTTPSConnection(host, port, context=ssl._create_unverified_context(), timeout=10)
    body = urllib.parse.urlencode({"username": user, "password": password})
    conn.request("POST", "/my.policy", body, {"Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    response.read()
    cookie = "; ".join(c.split(";")[0] for c in response.headers.get_all("Set-Cookie") or [])
    conn.request("GET", "/vdesk/vpn/connect.php3?resourcename=/Common/tunring&outform=xml&client_version=2.0",
                 headers={"Cookie": cookie})
    obj = ET.fromstring(conn.getresponse().read()).find("object")
    conn.close()
    assert obj is not None, "no F5 options document"
    return obj.findtext("Session_ID") or "", obj.findtext("ur_Z") or ""


def f5_tunnel(host: str, port: int, user: str = "alice", hdlc: bool = False):
    """Log in and open the F5 tunnel: returns (TLS socket, bytes read after the response head, head)."""
    import ssl

    sess, z = f5_login(host, port, user, USERS[user])
    sock = ssl._create_unverified_context().wrap_socket(socket.create_connection((host, port), timeout=10))
    sock.sendall(f"GET /myvpn?sess={sess}&hdlc_framing={'yes' if hdlc else 'no'}&ipv4=yes&ipv6=no&Z={z}"
                 f"&hostname=dGVzdA== HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"the gateway closed the tunnel request: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    sock.settimeout(0.05)
    return sock, rest, head.decode()


def icmp_echo(source: str, destination: str, ident: int, seq: int, payload: bytes = b"x" * 56) -> bytes:
    """An IPv4 ICMP Echo Request with correct checksums (built field by field, RFC 791/792)."""
    import struct

    def checksum(data: bytes) -> int:
        if len(data) % 2:
            data += b"\0"
        s = sum(struct.unpack(f"!{len(data) // 2}H", data))
        s = (s & 0xFFFF) + (s >> 16)
        return ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF

    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0,
                         socket.inet_aton(source), socket.inet_aton(destination))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp
