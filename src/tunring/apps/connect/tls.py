"""The TLS connection to the VPN server: trust (system store, --cafile, --servercert pins) and errors.

A pin is openconnect's ``--servercert`` syntax, checked against the server's
certificate after the handshake:

- ``pin-sha256:BASE64``: SHA-256 of the certificate's SubjectPublicKeyInfo, base64;
- ``sha256:HEX``: the same digest in hex;
- ``sha1:HEX``: SHA-1 of the SubjectPublicKeyInfo;
- bare 40 hex digits: SHA-1 of the whole certificate (openconnect's oldest form).

As openconnect does, a pin may be a prefix of at least :data:`MIN_PIN_CHARS`
characters, and hex compares case-insensitively.  With a pin the certificate
chain is not checked against any store (that is what a pin is for); without one
it is checked against ``--cafile`` or the system store, with the host name.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import logging
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import BadInput, CertificateRejected, NotAnyConnect, Unreachable

log = logging.getLogger(__name__)

MIN_PIN_CHARS = 4  # openconnect refuses shorter prefixes (checked against openconnect 9.01)
CONNECT_TIMEOUT_S = 15.0
DEFAULT_PORT = 443


@dataclass(frozen=True)
class Pin:
    """One ``--servercert`` value: the digest ``kind`` over ``what`` ("spki" or "cert")."""

    kind: str  # "pin-sha256", "sha256", "sha1", "sha1-cert"
    value: str  # the (possibly truncated) digest as the user wrote it, without the prefix

    def matches(self, cert_der: bytes) -> bool:
        if self.kind == "sha1-cert":
            return hashlib.sha1(cert_der).hexdigest().startswith(self.value.lower())
        spki = spki_der(cert_der)
        if self.kind == "pin-sha256":
            return base64.b64encode(hashlib.sha256(spki).digest()).decode().startswith(self.value)
        digest = hashlib.sha256(spki) if self.kind == "sha256" else hashlib.sha1(spki)
        return digest.hexdigest().startswith(self.value.lower())


def parse_pin(text: str) -> Pin:
    """A Pin from openconnect's ``--servercert`` syntax; BadInput names what is wrong."""
    kind, sep, value = text.partition(":")
    if not sep:
        kind, value = "sha1-cert", text
    elif kind.lower() in ("sha256", "sha1"):
        kind = kind.lower()
    elif kind.lower() != "pin-sha256":
        raise BadInput(f"--servercert {text!r}: expected pin-sha256:BASE64, sha256:HEX, sha1:HEX or 40 hex digits")
    else:
        kind = "pin-sha256"
    full = {"pin-sha256": 44, "sha256": 64, "sha1": 40, "sha1-cert": 40}[kind]
    if not MIN_PIN_CHARS <= len(value) <= full:
        raise BadInput(f"--servercert {text!r}: the digest must have {MIN_PIN_CHARS} to {full} characters")
    if kind == "pin-sha256":
        if any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=" for c in value):
            raise BadInput(f"--servercert {text!r}: not base64")
        if len(value) == full:
            try:
                if len(base64.b64decode(value, validate=True)) != 32:
                    raise ValueError
            except (binascii.Error, ValueError):
                raise BadInput(f"--servercert {text!r}: does not decode to a 32-byte SHA-256 digest") from None
    elif any(c not in "0123456789abcdefABCDEF" for c in value):
        raise BadInput(f"--servercert {text!r}: not hexadecimal")
    return Pin(kind, value)


def spki_der(cert_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER certificate (what pin-sha256 hashes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_der_x509_certificate(cert_der).public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pin_of(cert_der: bytes) -> str:
    """The certificate's ``pin-sha256:`` string, as openconnect prints it."""
    return "pin-sha256:" + base64.b64encode(hashlib.sha256(spki_der(cert_der)).digest()).decode()


@dataclass(frozen=True)
class ServerUrl:
    """``https://host[:port][/path]``: ``path`` selects the group (sent as group-access)."""

    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == DEFAULT_PORT else f":{self.port}"
        return f"https://{host}{port}{self.path}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORT else f"{host}:{self.port}"


def parse_url(text: str) -> ServerUrl:
    """The server from a URL or a bare ``host[:port]`` (https is implied, as in openconnect)."""
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port or DEFAULT_PORT
    except ValueError as e:
        raise BadInput(f"server URL {text!r}: {e}") from None
    if parts.scheme != "https":
        raise BadInput(f"server URL {text!r}: only https:// is supported")
    if not parts.hostname:
        raise BadInput(f"server URL {text!r} has no host")
    return ServerUrl(parts.hostname, port, parts.path or "/")


class Trust:
    """How the server's certificate is checked: pins, or a CA file / the system store."""

    def __init__(self, cafile: str | None = None, pins: tuple[Pin, ...] = ()) -> None:
        self.pins = pins
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        if pins:
            # The pin is the whole check: no chain, no name (openconnect does the same).
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
        else:
            try:
                if cafile:
                    self.context.load_verify_locations(cafile=cafile)
                else:
                    self.context.load_default_certs()
            except (OSError, ssl.SSLError) as e:
                raise BadInput(f"--cafile {cafile}: cannot load certificates: {e}") from None
        self.context.set_alpn_protocols(["http/1.1"])

    def check_pins(self, cert_der: bytes | None, server: ServerUrl) -> None:
        if not self.pins:
            return
        if cert_der is None:
            raise CertificateRejected(f"{server.host} sent no certificate")
        if not any(pin.matches(cert_der) for pin in self.pins):
            raise CertificateRejected(f"the certificate of {server.host} does not match --servercert: "
                                      f"its pin is {pin_of(cert_der)}")


def open_tls(server: ServerUrl, trust: Trust, timeout_s: float = CONNECT_TIMEOUT_S) -> ssl.SSLSocket:
    """A TLS connection to ``server``, certificate checked; Unreachable or CertificateRejected if not."""
    try:
        raw = socket.create_connection((server.host, server.port), timeout=timeout_s)
    except socket.gaierror as e:
        raise Unreachable(f"cannot resolve {server.host}: {e.strerror}") from None
    except TimeoutError:
        raise Unreachable(f"{server.host}:{server.port} did not answer within {timeout_s:g} s") from None
    except OSError as e:
        raise Unreachable(f"cannot connect to {server.host}:{server.port}: {e.strerror or e}") from None
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        tls = trust.context.wrap_socket(raw, server_hostname=server.host)
    except ssl.SSLCertVerificationError as e:
        raw.close()
        raise CertificateRejected(f"the certificate of {server.host} is not trusted: {e.verify_message} "
                                  "(give the CA with --cafile, or pin it with --servercert)") from None
    except (ssl.SSLError, OSError) as e:
        raw.close()
        if isinstance(e, OSError) and e.errno in (errno.ECONNRESET, errno.EPIPE) or isinstance(e, ssl.SSLEOFError):
            raise Unreachable(f"{server.host}:{server.port} closed the connection during the TLS handshake") from None
        if isinstance(e, TimeoutError):
            raise Unreachable(f"{server.host}:{server.port}: the TLS handshake timed out") from None
        if isinstance(e, ssl.SSLError):
            raise NotAnyConnect(f"{server.host}:{server.port} does not speak TLS as a VPN server does: "
                                f"{e.reason or e}") from None
        raise Unreachable(f"TLS handshake with {server.host}:{server.port} failed: {e}") from None
    try:
        trust.check_pins(tls.getpeercert(binary_form=True), server)
    except CertificateRejected:
        tls.close()
        raise
    log.info("TLS to %s:%d: %s %s", server.host, server.port, tls.version(), (tls.cipher() or ("?",))[0])
    return tls
