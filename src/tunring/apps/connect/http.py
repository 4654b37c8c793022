"""Just enough HTTP/1.1 over the TLS socket for AnyConnect: requests, replies, cookies.

AnyConnect's authentication is a few POSTs and the tunnel is one CONNECT whose
reply headers are followed by the CSTP stream, so this is a tiny client that
owns its read buffer: after the CONNECT reply, :meth:`HttpConnection.leftover`
hands back any stream bytes that came in the same read.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field

from .errors import NotAnyConnect, Unreachable
from .tls import ServerUrl

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 65536
MAX_BODY_BYTES = 1 << 20
READ_BYTES = 16384
USER_AGENT = "Open AnyConnect VPN Agent v9.12"  # ocserv keys features on this prefix (APPS.md, Pitfalls)
BASE_HEADERS = (
    ("Accept", "*/*"),
    ("Accept-Encoding", "identity"),
    ("X-Transcend-Version", "1"),
    ("X-Aggregate-Auth", "1"),
    ("X-Support-HTTP-Auth", "true"),
)


@dataclass
class Reply:
    """An HTTP reply: status, reason, headers in order (names as sent), body."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def set_cookies(self) -> dict[str, str]:
        """Cookies set by the reply (an empty value with an expiry in the past: deleted)."""
        out = {}
        for k, v in self.headers:
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                out[name.strip()] = rest.split(";", 1)[0].strip()
        return out


def parse_head(head: bytes, peer: str) -> Reply:
    """Status line and headers of a reply; NotAnyConnect if it is not HTTP."""
    try:
        text = head.decode("iso-8859-1")
    except UnicodeDecodeError:  # pragma: no cover - iso-8859-1 decodes every byte
        raise NotAnyConnect(f"{peer} sent a reply that is not HTTP") from None
    lines = text.split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise NotAnyConnect(f"{peer} does not answer HTTP: {lines[0][:80]!r}")
    reply = Reply(int(code), reason.strip())
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise NotAnyConnect(f"{peer} sent a malformed HTTP header: {line[:80]!r}")
        reply.headers.append((name.strip(), value.strip()))
    return reply


class HttpConnection:
    """Requests over one TLS connection; the cookie jar is shared with the caller."""

    def __init__(self, tls: ssl.SSLSocket, server: ServerUrl, cookies: dict[str, str] | None = None) -> None:
        self.tls = tls
        self.server = server
        self.cookies = cookies if cookies is not None else {}
        self._buf = bytearray()

    def request(self, method: str, path: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = (),
                read_body: bool = True) -> Reply:
        """Send one request and read the reply (with its body unless ``read_body`` is False)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.server.host_header}", f"User-Agent: {USER_AGENT}"]
        lines += [f"{k}: {v}" for k, v in headers]
        jar = "; ".join(f"{k}={v}" for k, v in self.cookies.items() if v)
        if jar:
            lines.append(f"Cookie: {jar}")
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        try:
            self.tls.sendall(wire)
            reply = self._read_head()
            if read_body:
                reply.body = self._read_body(reply)
        except (OSError, ssl.SSLError) as e:
            if isinstance(e, NotAnyConnect | Unreachable):
                raise
            raise Unreachable(f"the connection to {self.server.host} failed during {method} {path}: {e}") from None
        for name, value in reply.set_cookies().items():
            if value:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        log.debug("%s %s -> %d %s", method, path, reply.status, reply.reason)
        return reply

    def leftover(self) -> bytes:
        """Bytes read past the last reply (after CONNECT: the start of the CSTP stream)."""
        data, self._buf = bytes(self._buf), bytearray()
        return data

    def _fill(self) -> None:
        chunk = self.tls.recv(READ_BYTES)
        if not chunk:
            raise Unreachable(f"{self.server.host} closed the connection")
        self._buf += chunk

    def _read_head(self) -> Reply:
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self._buf[:end])
                del self._buf[: end + 4]
                return parse_head(head, self.server.host)
            if len(self._buf) > MAX_HEADER_BYTES:
                raise NotAnyConnect(f"{self.server.host} sent more than {MAX_HEADER_BYTES} bytes of HTTP headers")
            self._fill()

    def _read_body(self, reply: Reply) -> bytes:
        length = reply.header("Content-Length")
        if reply.header("Transfer-Encoding") == "chunked":
            return self._read_chunked()
        if length is None:
            return b""
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            raise NotAnyConnect(f"{self.server.host} sent a Content-Length of {length!r}")
        n = int(length)
        while len(self._buf) < n:
            self._fill()
        body = bytes(self._buf[:n])
        del self._buf[:n]
        return body

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            while b"\r\n" not in self._buf:
                self._fill()
            line, _, _ = bytes(self._buf).partition(b"\r\n")
            del self._buf[: len(line) + 2]
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                raise NotAnyConnect(f"{self.server.host} sent a bad chunk size {line[:20]!r}") from None
            while len(self._buf) < size + 2:
                self._fill()
            body += self._buf[:size]
            del self._buf[: size + 2]
            if size == 0 or len(body) > MAX_BODY_BYTES:
                return bytes(body)
