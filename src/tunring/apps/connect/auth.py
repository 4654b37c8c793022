"""AnyConnect "aggregate auth": the XML exchange that turns a user name and password into a cookie.

The client POSTs ``<config-auth type="init">``; the server answers with
``<config-auth type="auth-request">`` holding a form (text, password, hidden
inputs and perhaps a ``group_list`` select), which the client answers with
``type="auth-reply"``, until ``type="complete"`` with ``<auth id="success">``
and the ``webvpn`` cookie (in Set-Cookie, or a ``<session-token>``).  ocserv
asks for the user name and the password in two forms, keeps its state per TLS
connection and, on a wrong password, asks again with "Login failed." in the
message.  Parsing is pure (:func:`parse_reply`, :func:`init_body`,
:func:`reply_body`); :func:`authenticate` drives it over an HttpConnection.
"""

from __future__ import annotations

import getpass
import logging
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from .errors import AuthFailed, NotAnyConnect
from .http import BASE_HEADERS, HttpConnection, Reply

log = logging.getLogger(__name__)

CLIENT_VERSION = "v9.12"
DEVICE_ID = "linux-64"
GROUP_SELECT = "group_list"
MAX_FORMS = 10  # forms answered before giving up (a server that asks forever)
MAX_PROMPTED_TRIES = 3  # password attempts when a person types it
XML_HEADERS = (("Content-Type", "application/xml; charset=utf-8"),)
# ocserv answers XML POSTs only on these paths (APPS.md section 1); a URL path selects a group elsewhere.
OCSERV_PATHS = ("/", "/auth", "/VPN")


@dataclass
class Input:
    kind: str  # text, password, hidden, select
    name: str
    label: str = ""
    value: str = ""
    options: list[tuple[str, str]] = field(default_factory=list)  # select: (value, label)


@dataclass
class Form:
    """One ``<auth>`` of an auth-request: what to show and what to fill."""

    auth_id: str
    action: str = ""
    message: str = ""
    error: str = ""
    banner: str = ""
    inputs: list[Input] = field(default_factory=list)

    def input(self, name: str) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)


@dataclass
class AuthReply:
    """A parsed ``<config-auth>`` from the server."""

    kind: str  # "auth-request" or "complete"
    form: Form | None
    opaque: str | None = None  # the <opaque> element, echoed back verbatim
    session_token: str | None = None
    success: bool = False


def parse_reply(body: bytes, peer: str = "the server") -> AuthReply:
    """Parse a ``<config-auth>`` reply; NotAnyConnect if the body is not one."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise NotAnyConnect(f"{peer} answered with something that is not AnyConnect XML ({e})") from None
    if root.tag != "config-auth":
        raise NotAnyConnect(f"{peer} answered with <{root.tag}>, not AnyConnect's <config-auth>")
    reply = AuthReply(root.get("type", ""), None)
    opaque = root.find("opaque")
    if opaque is not None:
        reply.opaque = ET.tostring(opaque, encoding="unicode")
    token = root.findtext("session-token")
    reply.session_token = token.strip() if token else None
    auth = root.find("auth")
    if auth is not None:
        reply.success = auth.get("id") == "success"
        reply.form = _parse_form(auth)
    return reply


def _parse_form(auth: ET.Element) -> Form:
    form = Form(auth.get("id", ""), message=(auth.findtext("message") or "").strip(),
                error=(auth.findtext("error") or "").strip(), banner=(auth.findtext("banner") or "").strip())
    element = auth.find("form")
    if element is None:
        return form
    form.action = element.get("action", "")
    for child in element:
        if child.tag == "input":
            form.inputs.append(Input(child.get("type", "text"), child.get("name", ""), child.get("label", ""),
                                     child.get("value", "")))
        elif child.tag == "select":
            options = [(o.get("value") or (o.text or "").strip(), (o.text or "").strip()) for o in child.iter("option")]
            selected = next((o.get("value") or (o.text or "").strip() for o in child.iter("option")
                             if o.get("selected") == "true"), options[0][0] if options else "")
            form.inputs.append(Input("select", child.get("name", ""), child.get("label", ""), selected, options))
    return form


def _head(kind: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<config-auth client="vpn" type="{kind}" '
            f'aggregate-auth-version="2"><version who="vpn">{CLIENT_VERSION}</version>'
            f"<device-id>{DEVICE_ID}</device-id>")


def init_body(group_access: str, group: str | None = None) -> bytes:
    """The first POST: who we are, where we connect, and the group if one was asked for."""
    xml = _head("init") + f"<group-access>{escape(group_access)}</group-access>"
    if group:
        xml += f"<group-select>{escape(group)}</group-select>"
    return (xml + "</config-auth>").encode()


def reply_body(values: dict[str, str], opaque: str | None = None, group: str | None = None) -> bytes:
    """An auth-reply carrying the filled form ``values`` (name -> value)."""
    xml = _head("auth-reply") + (opaque or "") + "<auth>"
    xml += "".join(f"<{name}>{escape(value)}</{name}>" for name, value in values.items() if name != GROUP_SELECT)
    xml += "</auth>"
    if group:
        xml += f"<group-select>{escape(group)}</group-select>"
    return (xml + "</config-auth>").encode()


def pad_headers(body: bytes) -> tuple[tuple[str, str], ...]:
    """X-Pad makes body + pad a multiple of 64 bytes, as AnyConnect clients hide lengths."""
    pad = -len(body) % 64 or 64
    return XML_HEADERS + (("X-Pad", "0" * pad),)


class Credentials:
    """Where the answers come from: options first, then a prompt when a person is at a terminal.

    ``password`` is the one given (``--passwd-on-stdin``, or ``--password``); it is used
    once, since a server that asks again has refused it.  ``prompt`` (a getpass-like
    callable) is None when nobody can be asked.
    """

    def __init__(self, user: str | None = None, password: str | None = None, authgroup: str | None = None,
                 prompt: Callable[[str], str] | None = None) -> None:
        self.user = user
        self.authgroup = authgroup
        self._password = password
        self._prompt = prompt
        self.password_tries = 0

    @classmethod
    def from_terminal(cls, user: str | None, password: str | None, authgroup: str | None) -> Credentials:
        interactive = sys.stdin.isatty() and password is None
        return cls(user, password, authgroup, getpass.getpass if interactive else None)

    def answer(self, item: Input, form: Form) -> str:
        """The value for one input of ``form``; AuthFailed if there is none to give."""
        if item.kind == "hidden":
            return item.value
        if item.kind == "select":
            return self.group(item)
        if item.kind == "password":
            return self.password(item, form)
        if self.user is None:
            if self._prompt is None:
                raise AuthFailed(f"the server asks for {item.label or item.name!r}: give it with -u/--user")
            self.user = input(item.label or f"{item.name}: ")
        return self.user

    def password(self, item: Input, form: Form) -> str:
        self.password_tries += 1
        refused = self.password_tries > 1
        if self._password is not None and not refused:
            return self._password
        if self._prompt is None or self.password_tries > MAX_PROMPTED_TRIES:
            said = form.error or form.message.split("\n")[0]
            if refused:
                raise AuthFailed(f"authentication failed: the server refused the password ({said})")
            raise AuthFailed("the server asks for a password: give it with --passwd-on-stdin "
                             "(or run on a terminal to be asked)")
        if form.message:
            print(form.message, file=sys.stderr)
        return self._prompt(item.label or "Password: ")

    def group(self, item: Input) -> str:
        values = [v for v, _ in item.options]
        if self.authgroup is None:
            log.info("server offers groups %s; using %r (choose with --authgroup)", values, item.value)
            return item.value
        for value, label in item.options:
            if self.authgroup in (value, label):
                return value
        raise AuthFailed(f"--authgroup {self.authgroup!r} is not offered by the server; it offers: "
                         f"{', '.join(values) or 'none'}")


def fill(form: Form, creds: Credentials) -> dict[str, str]:
    """The answers to every input of ``form``, in its order."""
    return {item.name: creds.answer(item, form) for item in form.inputs if item.name}


def cookie_of(http: HttpConnection, reply: AuthReply) -> str:
    cookie = http.cookies.get("webvpn") or reply.session_token
    if not cookie:
        raise NotAnyConnect(f"{http.server.host} reported success but sent no webvpn cookie")
    return cookie


def _post(http: HttpConnection, path: str, body: bytes) -> Reply:
    return http.request("POST", path, body, BASE_HEADERS + pad_headers(body))


def _check_status(reply: Reply, http: HttpConnection, path: str) -> None:
    if reply.status == 401:
        raise AuthFailed(f"authentication failed: {http.server.host} answered 401 {reply.reason}")
    if reply.status != 200:
        raise NotAnyConnect(f"{http.server.host} answered {reply.status} {reply.reason} to the "
                            f"AnyConnect login at {path}: not an AnyConnect server (or a wrong URL path)")


def start(http: HttpConnection, creds: Credentials) -> tuple[AuthReply, str]:
    """The init POST (to the URL's path, else to "/" for ocserv); the parsed reply and the path used."""
    group_access = http.server.url
    paths = [http.server.path] + (["/"] if http.server.path not in OCSERV_PATHS else [])
    body = init_body(group_access, creds.authgroup)
    for path in paths:
        reply = _post(http, path, body)
        if reply.status == 404 and path != paths[-1]:
            log.info("%s has no AnyConnect login at %s; trying /", http.server.host, path)
            continue
        _check_status(reply, http, path)
        return parse_reply(reply.body, http.server.host), path
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def authenticate(http: HttpConnection, creds: Credentials) -> str:
    """Run the exchange to its end and return the ``webvpn`` cookie.

    AuthFailed: refused credentials or group; NotAnyConnect: the peer does not
    speak aggregate auth; Unreachable: the connection broke.
    """
    reply, path = start(http, creds)
    for _ in range(MAX_FORMS):
        if reply.kind == "complete" or reply.success:
            return cookie_of(http, reply)
        form = reply.form
        if reply.kind != "auth-request" or form is None:
            raise NotAnyConnect(f"{http.server.host} sent config-auth type {reply.kind!r} without a form")
        if form.banner:
            log.warning("server banner: %s", form.banner)
        values = fill(form, creds)
        chosen = values.get(GROUP_SELECT)
        if chosen is not None and chosen != creds.authgroup and creds.authgroup is None:
            creds.authgroup = chosen
        target = form.action or path
        answer = _post(http, target, reply_body(values, reply.opaque, creds.authgroup))
        _check_status(answer, http, target)
        reply = parse_reply(answer.body, http.server.host)
    raise AuthFailed(f"{http.server.host} kept asking after {MAX_FORMS} forms; giving up")
