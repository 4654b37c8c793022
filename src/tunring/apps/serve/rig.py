"""A test rig for the gateway: stock openconnect clients in network namespaces of their own.

Used by ``tests/net/test_serve.py`` and ``tunring bench ppp`` (root only).  :func:`credentials`
makes a self-signed certificate, its key, the ``pin-sha256:`` openconnect pins it with, and a users
file in ocpasswd's format.  :class:`ClientNamespace` is a namespace joined to the caller's by a
veth pair (198.18.N.0/24, RFC 2544's benchmarking range); :meth:`ClientNamespace.connect` runs
``openconnect`` in it with a small vpnc-script of ours (the tun configured with ``ip``, resolv.conf
untouched) and waits until the tunnel is configured.  Everything made is removed on close.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import os
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator

VPNC_SCRIPT = r"""#!/bin/sh
# vpnc-script of tunring's rig: configures the tun with ip; never touches resolv.conf.
[ "$reason" = connect ] || exit 0
ip link set dev "$TUNDEV" up mtu "${INTERNAL_IP4_MTU:-1400}"
[ -n "$INTERNAL_IP4_ADDRESS" ] && ip addr add "$INTERNAL_IP4_ADDRESS/32" dev "$TUNDEV"
if [ -n "$INTERNAL_IP6_NETMASK" ]; then ip -6 addr add "$INTERNAL_IP6_NETMASK" dev "$TUNDEV" nodad
elif [ -n "$INTERNAL_IP6_ADDRESS" ]; then ip -6 addr add "$INTERNAL_IP6_ADDRESS/128" dev "$TUNDEV" nodad; fi
i=0
while [ "$i" -lt "${CISCO_SPLIT_INC:-0}" ]; do
    eval "a=\$CISCO_SPLIT_INC_${i}_ADDR m=\$CISCO_SPLIT_INC_${i}_MASKLEN"
    ip route replace "$a/$m" dev "$TUNDEV"; i=$((i + 1))
done
i=0
while [ "$i" -lt "${CISCO_IPV6_SPLIT_INC:-0}" ]; do
    eval "a=\$CISCO_IPV6_SPLIT_INC_${i}_ADDR m=\$CISCO_IPV6_SPLIT_INC_${i}_MASKLEN"
    ip -6 route replace "$a/$m" dev "$TUNDEV"; i=$((i + 1))
done
env | grep -E '^(INTERNAL_|CISCO_|TUNDEV=|VPNGATEWAY=)' > "$TUNRING_RIG_ENV.tmp"
mv "$TUNRING_RIG_ENV.tmp" "$TUNRING_RIG_ENV"
"""

CONNECT_TIMEOUT_S = 30.0


def credentials(directory: str, users: dict[str, str], host: str) -> tuple[str, str, str, str]:
    """Write cert.pem, key.pem and users (ocpasswd format) in ``directory``; returns
    (cert path, key path, users path, openconnect's ``pin-sha256:...``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tunring gateway")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False)
            .sign(key, hashes.SHA256()))
    paths = [os.path.join(directory, n) for n in ("cert.pem", "key.pem", "users")]
    with open(paths[0], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    with open(paths[2], "w") as f:
        for user, password in users.items():
            f.write(f"{user}:*:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))}\n")
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = "pin-sha256:" + base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return paths[0], paths[1], paths[2], pin


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = (["ip", "-n", netns] if netns else ["ip"]) + list(args)
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


class OpenConnect:
    """One openconnect process in a client namespace; ``env`` is what its vpnc-script saw."""

    def __init__(self, proc: subprocess.Popen, env: dict[str, str], log_path: str) -> None:
        self.proc = proc
        self.env = env
        self.log_path = log_path

    @property
    def address(self) -> str:
        return self.env["INTERNAL_IP4_ADDRESS"]

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
        """Signal it (SIGTERM: a clean bye; SIGKILL: it dies) and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class ClientNamespace:
    """Namespace ``tr-oc-<pid>-<n>`` with veth 198.18.<n>.2/24 to the caller's 198.18.<n>.1/24."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"tr-oc-{os.getpid()}-{index}"
        self.gateway_ip = f"198.18.{index}.1"
        self.ip = f"198.18.{index}.2"
        self._outer = f"trv{os.getpid() % 100000}g{index}"
        self._dir = tempfile.mkdtemp(prefix="tunring-oc-")
        self.clients: list[OpenConnect] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, timeout=10)
        try:
            _ip("link", "add", self._outer, "type", "veth", "peer", "name", "veth0", "netns", self.name)
            _ip("addr", "add", f"{self.gateway_ip}/24", "dev", self._outer)
            _ip("link", "set", self._outer, "up")
            _ip("addr", "add", f"{self.ip}/24", "dev", "veth0", netns=self.name)
            _ip("link", "set", "veth0", "up", netns=self.name)
            _ip("link", "set", "lo", "up", netns=self.name)
        except BaseException:
            self.close()
            raise

    def connect(self, protocol: str, user: str, password: str, pin: str, port: int,
                extra: tuple[str, ...] = ()) -> OpenConnect:
        """Start openconnect and wait until its vpnc-script configured the tun."""
        n = len(self.clients)
        script = os.path.join(self._dir, "vpnc-script")
        with open(script, "w") as f:
            f.write(VPNC_SCRIPT)
        os.chmod(script, 0o755)
        env_path = os.path.join(self._dir, f"env{n}")
        log_path = os.path.join(self._dir, f"openconnect{n}.log")
        cmd = ["ip", "netns", "exec", self.name, "openconnect", f"--protocol={protocol}", f"--user={user}",
               "--passwd-on-stdin", "--non-inter", f"--servercert={pin}", "-s", script,
               f"--interface=oc{n}", *extra, f"https://{self.gateway_ip}:{port}/"]
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT,
                                    env={**os.environ, "TUNRING_RIG_ENV": env_path})
        proc.stdin.write(password.encode() + b"\n")  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        client = OpenConnect(proc, {}, log_path)
        self.clients.append(client)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not os.path.exists(env_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                client.stop(signal.SIGKILL)
                raise RuntimeError(f"openconnect did not connect (exit {proc.returncode}):\n{client.log()}")
            time.sleep(0.05)
        with open(env_path) as f:
            client.env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        return client

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block inside this namespace (sockets made there stay there)."""
        from pyroute2 import netns

        netns.pushns(self.name)
        try:
            yield
        finally:
            netns.popns()

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        with self.entered():
            return socket.socket(family, kind)

    def run(self, *cmd: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True,
                              timeout=timeout_s)

    def close(self) -> None:
        for client in self.clients:
            client.stop()
        subprocess.run(["ip", "link", "del", self._outer], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
        for name in os.listdir(self._dir):
            os.unlink(os.path.join(self._dir, name))
        os.rmdir(self._dir)
