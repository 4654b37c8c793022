"""Just enough HTTP/1.1 for the VPN logins, sans-I/O: requests parsed from bytes, responses to bytes.

:class:`RequestReader` takes what the TLS connection read and returns complete
:class:`Request` objects (request line, headers, a ``Content-Length`` body); bounded sizes, a
malformed request raises :class:`HttpError` (answer 400 and close).  The bytes after a request
that switches the connection to a tunnel stay in :attr:`RequestReader.rest`.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from ...errors import TunringError

MAX_HEADER_BYTES = 16384
MAX_BODY_BYTES = 65536
REASONS = {200: "OK", 201: "Created", 302: "Found", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 504: "Gateway Timeout"}


class HttpError(TunringError, ValueError):
    """A request that is not HTTP/1.x as this server reads it."""


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes = b""

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query, keep_blank_values=True))

    @property
    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))

    @property
    def cookies(self) -> dict[str, str]:
        out = {}
        for part in self.headers.get("cookie", "").split(";"):
            name, eq, value = part.strip().partition("=")
            if eq:
                out[name] = value
        return out


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/html; charset=utf-8"

    def to_bytes(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines += [f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}", "", ""]
        return "\r\n".join(lines).encode("latin-1") + self.body


def tunnel_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """A response head with no body that hands the connection over to the tunnel (F5's /myvpn)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class RequestReader:
    """Accumulates bytes and splits them into requests."""

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, data: bytes) -> list[Request]:
        self.rest += data
        out: list[Request] = []
        while True:
            request = self._one()
            if request is None:
                return out
            out.append(request)

    def _one(self) -> Request | None:
        end = self.rest.find(b"\r\n\r\n")
        if end < 0:
            if len(self.rest) > MAX_HEADER_BYTES:
                raise HttpError(f"request head longer than {MAX_HEADER_BYTES} bytes")
            return None
        lines = self.rest[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
            raise HttpError(f"not an HTTP/1.x request line: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                raise HttpError(f"malformed header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError("Content-Length is not a number") from None
        if not 0 <= length <= MAX_BODY_BYTES or "transfer-encoding" in headers:
            raise HttpError(f"request body of {length} bytes (or chunked) is not accepted")
        start = end + 4
        if len(self.rest) < start + length:
            return None
        body, self.rest = self.rest[start : start + length], self.rest[start + length :]
        return Request(parts[0], parts[1], headers, body)
