"""tunring connect's pure pieces, against ocserv 1.1.6 replies recorded from a real server
(tests/apps/data/ocserv/, captured with the lab in tunring.apps.connect.lab)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tunring.apps.connect import auth, netconf, tunnel
from tunring.apps.connect.errors import AuthFailed, BadInput, NotAnyConnect, TunnelLost
from tunring.apps.connect.http import parse_head
from tunring.apps.connect.tls import Pin, parse_pin, parse_url

DATA = Path(__file__).parent.parent / "data" / "ocserv"


def recorded(name: str) -> bytes:
    return (DATA / name).read_bytes()


def connect_reply():
    head = recorded("connect.head").rstrip(b"\r\n")
    return parse_head(head, "ocserv")


# -- aggregate auth ------------------------------------------------------------------
def test_init_reply_asks_for_the_user_name():
    reply = auth.parse_reply(recorded("init-reply.xml"))
    assert reply.kind == "auth-request" and not reply.success
    form = reply.form
    assert form.auth_id == "main" and form.action == "/auth"
    assert form.message == "Please enter your username."
    assert [(i.kind, i.name, i.label) for i in form.inputs] == [("text", "username", "Username:")]


def test_password_form_then_success():
    form = auth.parse_reply(recorded("password-form.xml")).form
    assert [(i.kind, i.name) for i in form.inputs] == [("password", "password")]
    done = auth.parse_reply(recorded("success.xml"))
    assert done.kind == "complete" and done.success and done.form.inputs == []


def test_login_failed_is_the_password_form_again_with_the_message():
    reply = auth.parse_reply(recorded("login-failed.xml"))
    assert reply.form.message.startswith("Login failed.")
    creds = auth.Credentials("alice", "wrong")
    item = reply.form.input("password")
    assert creds.answer(item, reply.form) == "wrong"  # the first time: the given password
    with pytest.raises(AuthFailed, match="refused the password.*Login failed"):
        creds.answer(item, reply.form)  # asked again: refused, never re-sent


def test_group_list_is_parsed_and_chosen():
    form = auth.parse_reply(recorded("groups-init-reply.xml")).form
    select = form.input("group_list")
    assert select.kind == "select" and select.options == [("staff", "staff"), ("guests", "guests")]
    assert auth.fill(form, auth.Credentials("alice", authgroup="guests")) == {"username": "alice",
                                                                               "group_list": "guests"}
    assert auth.fill(form, auth.Credentials("alice"))["group_list"] == "staff"  # the first, as offered
    with pytest.raises(AuthFailed, match="offers: staff, guests"):
        auth.fill(form, auth.Credentials("alice", authgroup="admins"))


def test_no_user_and_nobody_to_ask_is_a_clear_failure():
    form = auth.parse_reply(recorded("init-reply.xml")).form
    with pytest.raises(AuthFailed, match="-u/--user"):
        auth.fill(form, auth.Credentials(None))
    pw = auth.parse_reply(recorded("password-form.xml")).form
    with pytest.raises(AuthFailed, match="--passwd-on-stdin"):
        auth.fill(pw, auth.Credentials("alice"))


def test_prompted_password_is_asked_again_up_to_three_times():
    asked = []
    creds = auth.Credentials("alice", prompt=lambda label: asked.append(label) or f"try{len(asked)}")
    form = auth.parse_reply(recorded("login-failed.xml")).form
    item = form.input("password")
    assert [creds.answer(item, form) for _ in range(3)] == ["try1", "try2", "try3"]
    with pytest.raises(AuthFailed):
        creds.answer(item, form)


def test_request_bodies_are_the_xml_ocserv_looks_for():
    init = ET.fromstring(auth.init_body("https://vpn.example/", group="staff"))
    assert init.get("type") == "init" and init.get("aggregate-auth-version") == "2"
    assert init.findtext("group-access") == "https://vpn.example/"
    assert init.findtext("group-select") == "staff"
    body = auth.reply_body({"username": "a<b&c", "group_list": "staff"}, group="staff")
    reply = ET.fromstring(body)
    assert reply.get("type") == "auth-reply"
    assert reply.find("auth").findtext("username") == "a<b&c"  # escaped on the wire, intact parsed
    assert reply.find("auth").find("group_list") is None and reply.findtext("group-select") == "staff"
    for n in (0, 1, 63, 64, 100):
        pad = dict(auth.pad_headers(b"x" * n))["X-Pad"]
        assert (n + len(pad)) % 64 == 0 and pad and set(pad) == {"0"}


@pytest.mark.parametrize("body", [b"<html><body>hello</body></html>", b"not xml at all", b""])
def test_a_server_that_is_not_anyconnect(body):
    with pytest.raises(NotAnyConnect):
        auth.parse_reply(body)


def test_opaque_is_echoed_verbatim():
    reply = auth.parse_reply(b'<config-auth client="vpn" type="auth-request"><opaque is-for="sg">'
                             b"<tunnel-group>g</tunnel-group></opaque><auth id=\"main\"><form>"
                             b'<input type="hidden" name="h" value="v"/></form></auth></config-auth>')
    assert auth.fill(reply.form, auth.Credentials()) == {"h": "v"}
    body = auth.reply_body({"h": "v"}, reply.opaque)
    assert ET.fromstring(body).find("opaque").findtext("tunnel-group") == "g"


# -- the CONNECT reply ---------------------------------------------------------------
def test_connect_reply_of_ocserv():
    cfg = tunnel.parse_tunnel(connect_reply())
    assert cfg.address4 == ipaddress.ip_interface("198.19.0.50/24")
    assert cfg.address6 == ipaddress.ip_interface("fd00:7475:6e72:8e4f:9a7c:c09f:b76e:58ef/64")
    assert cfg.dns == ["198.19.0.53"] and cfg.domains == ["tunring.test"]
    assert cfg.split_include == [ipaddress.ip_network("198.19.7.0/24"), ipaddress.ip_network("fd00:7475:6e72:7::/64")]
    assert cfg.split_exclude == [ipaddress.ip_network("198.19.7.128/25")]
    assert (cfg.mtu, cfg.base_mtu, cfg.dpd_s, cfg.keepalive_s, cfg.idle_timeout_s) == (1472, 1500, 10, 20, 0)
    assert cfg.compression == "lz4" and cfg.rekey_method == "ssl" and cfg.dtls is None
    assert ("X-CSTP-Server-Name", "ocserv 1.1.6") in cfg.options


def _reply(status: int, *headers: tuple[str, str]):
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return parse_head(head.encode().rstrip(b"\r\n"), "srv")


def test_connect_refusals():
    with pytest.raises(AuthFailed, match="cookie"):
        tunnel.parse_tunnel(_reply(401))
    with pytest.raises(TunnelLost, match="full"):
        tunnel.parse_tunnel(_reply(503, ("X-Reason", "server is full")))
    with pytest.raises(NotAnyConnect):
        tunnel.parse_tunnel(_reply(404))
    with pytest.raises(NotAnyConnect, match="MTU"):
        tunnel.parse_tunnel(_reply(200, ("X-CSTP-Address", "10.0.0.2")))
    with pytest.raises(NotAnyConnect, match="Address"):
        tunnel.parse_tunnel(_reply(200, ("X-CSTP-MTU", "1400")))
    with pytest.raises(NotAnyConnect, match="Content-Encoding"):
        tunnel.parse_tunnel(_reply(200, ("X-CSTP-MTU", "1400"), ("X-CSTP-Address", "10.0.0.2"),
                                   ("X-CSTP-Content-Encoding", "zstd")))
    with pytest.raises(NotAnyConnect, match="Split-Include"):
        tunnel.parse_tunnel(_reply(200, ("X-CSTP-MTU", "1400"), ("X-CSTP-Address", "10.0.0.2"),
                                   ("X-CSTP-Split-Include", "not-a-net")))


def test_dtls_offer_and_cidr_forms():
    cfg = tunnel.parse_tunnel(_reply(
        200, ("X-CSTP-MTU", "1400"), ("X-CSTP-Address", "10.1.2.3"), ("X-CSTP-Netmask", "255.255.0.0"),
        ("X-CSTP-Split-Include", "10.9.0.0/16"), ("X-CSTP-Split-Include", "10.8.1.7/255.255.255.0"),
        ("X-DTLS-Port", "443"), ("X-DTLS-App-ID", "ab" * 32), ("X-DTLS-CipherSuite", "PSK-NEGOTIATE"),
        ("X-DTLS-DPD", "30"), ("X-DTLS-Content-Encoding", "lzs")))
    assert cfg.address4 == ipaddress.ip_interface("10.1.2.3/16")
    assert cfg.split_include == [ipaddress.ip_network("10.9.0.0/16"), ipaddress.ip_network("10.8.1.0/24")]
    assert cfg.dtls == tunnel.DtlsOffer(443, "ab" * 32, "", "PSK-NEGOTIATE", False, 30, 0, 0, "lzs")


def test_connect_request_headers():
    prev = tunnel.parse_tunnel(connect_reply())
    h = tunnel.connect_headers("srv", "COOKIE", hostname="me", mtu=1400, base_mtu=1500,
                               compressions=("oc-lz4", "lzs"), previous=prev)
    d = dict(h)
    assert d["Cookie"] == "webvpn=COOKIE" and d["X-CSTP-Version"] == "1" and d["X-CSTP-Hostname"] == "me"
    assert d["X-CSTP-Accept-Encoding"] == "oc-lz4,lzs" and d["X-CSTP-MTU"] == "1400"
    assert d["X-CSTP-Full-IPv6-Capability"] == "true"
    assert [v for k, v in h if k == "X-CSTP-Address"] == ["198.19.0.50", "fd00:7475:6e72:8e4f:9a7c:c09f:b76e:58ef"]
    assert "X-CSTP-Accept-Encoding" not in dict(tunnel.connect_headers("s", "c", hostname="m", mtu=1, base_mtu=1,
                                                                       compressions=()))
    assert tunnel.base_mtu_for(65536) == 9000 and tunnel.base_mtu_for(1500) == 1500
    assert tunnel.base_mtu_for(None) == 1406
    assert tunnel.tunnel_mtu_for(1500) == 1500 - 90 - 20


# -- netlink plan ------------------------------------------------------------------------
def test_route_plan_split_include_and_full_tunnel():
    cfg = tunnel.parse_tunnel(connect_reply())
    p = netconf.plan(cfg, "198.18.0.1")
    assert [str(n) for n in p.tunnel_routes] == ["198.19.7.0/24", "fd00:7475:6e72:7::/64"]
    assert [str(n) for n in p.bypass] == ["198.19.7.128/25"]
    cfg.split_include = []
    cfg.split_exclude = []
    p = netconf.plan(cfg, "198.18.0.1")
    assert [str(n) for n in p.tunnel_routes] == ["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"]
    assert [str(n) for n in p.bypass] == ["198.18.0.1/32"]  # the server stays reachable outside


# -- pins and URLs --------------------------------------------------------------------------
def _cert():
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_bytes(serialization.Encoding.DER), spki


def test_pins_in_every_openconnect_form():
    der, spki = _cert()
    b64 = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    hex256 = hashlib.sha256(spki).hexdigest()
    for text in (f"pin-sha256:{b64}", f"sha256:{hex256}", f"sha256:{hex256.upper()}", f"SHA256:{hex256[:4]}",
                 f"sha1:{hashlib.sha1(spki).hexdigest()}", hashlib.sha1(der).hexdigest(), f"pin-sha256:{b64[:6]}"):
        assert parse_pin(text).matches(der), text
    other, _ = _cert()
    assert not parse_pin(f"pin-sha256:{b64}").matches(other)
    assert not parse_pin(f"pin-sha256:{b64[:6].swapcase()}").matches(der)  # base64 is case-sensitive


@pytest.mark.parametrize("text", ["md5:abcd", "sha256:abc", "sha256:xyz0", "pin-sha256:!!!!", "pin-sha256:" + "A" * 45,
                                  "pin-sha256:" + "A" * 42 + "==", "12"])
def test_bad_pins(text):
    with pytest.raises(BadInput):
        parse_pin(text)


def test_full_length_pin_must_decode_to_32_bytes():
    digest = base64.b64encode(b"\1" * 32).decode()
    assert parse_pin("pin-sha256:" + digest) == Pin("pin-sha256", digest)


def test_urls():
    u = parse_url("https://vpn.example:8443/staff")
    assert (u.host, u.port, u.path, u.url, u.host_header) == ("vpn.example", 8443, "/staff",
                                                              "https://vpn.example:8443/staff", "vpn.example:8443")
    assert parse_url("vpn.example").url == "https://vpn.example/"
    assert parse_url("https://[fd00::1]/").host_header == "[fd00::1]"
    for bad in ("http://vpn.example/", "https://", "https://h:99999/"):
        with pytest.raises(BadInput):
            parse_url(bad)
