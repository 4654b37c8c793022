"""`tunring serve`'s sans-I/O parts without root: the users file (ocpasswd format), the address
pool, the HTTP reader and the F5/Fortinet portals, driven with requests as openconnect sends them."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET

import pytest

from tunring.apps.serve.addresses import AddressPool, PoolExhausted, interface_id
from tunring.apps.serve.http import HttpError, RequestReader
from tunring.apps.serve.portal import LOGIN_TTL_S, F5Portal, FortinetPortal, PortalSettings, TunnelStart
from tunring.apps.serve.users import UsersFileError, check_password, load_users

# The SHA-crypt specification's own test vector (Drepper, "Unix crypt using SHA-256 and SHA-512").
SPEC_HASH = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
SPEC_PASSWORD = "Hello world!"


@pytest.fixture
def users(tmp_path):
    path = tmp_path / "users"
    path.write_text(f"# ocpasswd file\nalice:*:{SPEC_HASH}\nbob:staff:!{SPEC_HASH}\n\n")
    return load_users(str(path))


def test_users_file_in_ocpasswd_format(users):
    assert check_password(users, "alice", SPEC_PASSWORD)
    assert not check_password(users, "alice", "hello world!")
    assert not check_password(users, "bob", SPEC_PASSWORD)  # locked (ocpasswd -l puts a "!")
    assert not check_password(users, "mallory", SPEC_PASSWORD)


def test_bad_users_files(tmp_path):
    with pytest.raises(UsersFileError, match="cannot read"):
        load_users(str(tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.write_text("alice:onlytwo\n")
    with pytest.raises(UsersFileError, match="bad:1"):
        load_users(str(bad))


def test_pool_hands_out_hosts_and_reuses_freed_ones():
    pool = AddressPool(ipaddress.ip_network("10.9.0.0/29"))
    assert pool.gateway == ipaddress.ip_address("10.9.0.1")
    got = [pool.allocate() for _ in range(5)]
    assert [str(a) for a in got] == [f"10.9.0.{i}" for i in range(2, 7)]
    with pytest.raises(PoolExhausted):
        pool.allocate()  # .7 is the broadcast address
    pool.free(got[3])
    pool.free(got[1])
    assert pool.allocate() == got[1] and pool.allocate() == got[3]
    with pytest.raises(ValueError):
        AddressPool(ipaddress.ip_network("10.9.0.0/31"))
    six = AddressPool(ipaddress.ip_network("fd00:9::/64"))
    assert interface_id(six.allocate()) == bytes(7) + b"\x02"


def test_http_reader_splits_pipelined_requests_and_keeps_the_rest():
    reader = RequestReader()
    assert reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\n") == []
    got = reader.feed(b"\r\nPOST /my.policy HTTP/1.1\r\nContent-Length: 7\r\nCookie: a=1; b=2\r\n\r\nx=1&y=2"
                      b"GET /myvpn?sess=s HTTP/1.1\r\n\r\n\xf5\x00\x00\x08")
    assert [(r.method, r.path) for r in got] == [("GET", "/"), ("POST", "/my.policy"), ("GET", "/myvpn")]
    assert got[1].form == {"x": "1", "y": "2"} and got[1].cookies == {"a": "1", "b": "2"}
    assert got[2].query == {"sess": "s"} and reader.rest == b"\xf5\x00\x00\x08"


@pytest.mark.parametrize("bad", [b"HELLO\r\n\r\n", b"GET / SPDY/3\r\n\r\n", b"GET / HTTP/1.1\r\nbad line\r\n\r\n",
                                 b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                                 b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"G" * 20000])
def test_http_reader_refuses_what_it_does_not_read(bad):
    with pytest.raises(HttpError):
        RequestReader().feed(bad)


def _portal(cls, users, hdlc=False, pool4="10.9.0.0/24", pool6="fd00:9::/64"):
    settings = PortalSettings(hdlc=hdlc, dns=(ipaddress.ip_address("10.9.0.53"), ipaddress.ip_address("fd00::53")),
                              routes=(ipaddress.ip_network("192.0.2.0/24"),))
    return cls(settings, users, AddressPool(ipaddress.ip_network(pool4)),
               AddressPool(ipaddress.ip_network(pool6)) if pool6 else None)


def _request(portal, text: str, body: bytes = b"", now: float = 0.0):
    head = text.replace("\n", "\r\n") + (f"\r\nContent-Length: {len(body)}" if body else "") + "\r\n\r\n"
    (request,) = RequestReader().feed(head.encode() + body)
    return portal.handle(request, now)


def test_f5_flow_as_openconnect_walks_it(users):
    portal = _portal(F5Portal, users, hdlc=True)
    assert _request(portal, "GET / HTTP/1.1").headers == [("Location", "/my.policy")]
    form = _request(portal, "GET /my.policy HTTP/1.1").body
    assert b'<form id="auth_form"' in form and b'name="username"' in form and b'type="password"' in form
    assert _request(portal, "POST /my.policy HTTP/1.1", b"username=alice&password=nope").status == 200
    ok = _request(portal, "POST /my.policy HTTP/1.1", b"username=alice&password=Hello+world%21")
    cookies = "; ".join(v.split(";")[0] for k, v in ok.headers if k == "Set-Cookie")
    assert ok.status == 302 and "MRHSession=" in cookies and "F5_ST=" in cookies
    fav = ET.fromstring(_request(portal, f"GET /vdesk/vpn/index.php3?outform=xml&client_version=2.0 HTTP/1.1\n"
                                         f"Cookie: {cookies}").body)
    params = fav.find("favorite/params").text
    options = ET.fromstring(_request(portal, f"GET /vdesk/vpn/connect.php3?{params}&outform=xml&client_version=2.0"
                                             f" HTTP/1.1\nCookie: {cookies}").body)
    obj = options.find("object")
    assert obj.findtext("IPV4_0") == "1" and obj.findtext("IPV6_0") == "1" and obj.findtext("hdlc_framing") == "yes"
    assert obj.findtext("DNS0") == "10.9.0.53" and obj.findtext("DNS6_0") == "fd00::53"
    assert obj.findtext("LAN0") == "10.9.0.0/24 192.0.2.0/24" and obj.findtext("LAN6_0") == "fd00:9::/64"
    sess, z = obj.findtext("Session_ID"), obj.findtext("ur_Z")
    assert _request(portal, f"GET /myvpn?sess={sess}&Z=wrong HTTP/1.1").status == 504
    start = _request(portal, f"GET /myvpn?sess={sess}&hdlc_framing=yes&ipv4=yes&ipv6=yes&Z={z}&hostname=dm0= HTTP/1.1")
    assert isinstance(start, TunnelStart) and start.framing == "f5-hdlc" and start.ipv6
    assert start.head.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-VPN-client-IP: 10.9.0.2\r\n" in start.head
    assert start.head.endswith(b"\r\n\r\n") and b"Content-Length" not in start.head
    portal.tunnel_opened(start.login)
    portal.tunnel_closed(start.login)
    assert not portal.pool4.in_use and not portal.logins


def test_f5_without_cookie_is_sent_to_the_login(users):
    portal = _portal(F5Portal, users)
    assert _request(portal, "GET /vdesk/vpn/connect.php3 HTTP/1.1").status == 302


def test_fortinet_flow_as_openconnect_walks_it(users):
    portal = _portal(FortinetPortal, users)
    assert _request(portal, "GET / HTTP/1.1").status == 302
    assert _request(portal, "POST /remote/logincheck HTTP/1.1",
                    b"username=alice&credential=x&realm=&ajax=1&just_logged_in=1").status == 405
    ok = _request(portal, "POST /remote/logincheck HTTP/1.1",
                  b"username=alice&credential=Hello%20world%21&realm=&ajax=1&just_logged_in=1")
    cookie = next(v for k, v in ok.headers if k == "Set-Cookie").split(";")[0]
    assert ok.status == 200 and cookie.startswith("SVPNCOOKIE=")
    assert _request(portal, "GET /remote/sslvpn-tunnel HTTP/1.1").status == 403
    doc = ET.fromstring(_request(portal, f"GET /remote/fortisslvpn_xml HTTP/1.1\nCookie: {cookie}").body)
    assert doc.tag == "sslvpn-tunnel" and doc.get("dtls") == "0"
    assert doc.find("ipv4/assigned-addr").get("ipv4") == "10.9.0.2"
    assert doc.find("ipv4/dns").get("ip") == "10.9.0.53"
    assert [(a.get("ip"), a.get("mask")) for a in doc.findall("ipv4/split-tunnel-info/addr")] == [
        ("10.9.0.0", "255.255.255.0"), ("192.0.2.0", "255.255.255.0")]
    assert doc.find("ipv6/assigned-addr").get("ipv6") == "fd00:9::2"
    start = _request(portal, f"GET /remote/sslvpn-tunnel HTTP/1.1\nCookie: {cookie}")
    assert isinstance(start, TunnelStart) and start.framing == "fortinet" and start.head == b""


def test_logins_without_a_tunnel_expire_and_free_their_addresses(users):
    portal = _portal(FortinetPortal, users, pool6=None)
    ok = _request(portal, "POST /remote/logincheck HTTP/1.1", b"username=alice&credential=Hello%20world%21")
    cookie = next(v for k, v in ok.headers if k == "Set-Cookie").split(";")[0]
    _request(portal, f"GET /remote/fortisslvpn_xml HTTP/1.1\nCookie: {cookie}")
    assert portal.pool4.in_use
    portal.expire(LOGIN_TTL_S + 1)
    assert not portal.pool4.in_use and not portal.logins


def test_an_exhausted_pool_is_refused(users):
    portal = _portal(FortinetPortal, users, pool4="10.9.0.0/30", pool6=None)
    for expected in (200, 503):
        ok = _request(portal, "POST /remote/logincheck HTTP/1.1", b"username=alice&credential=Hello%20world%21")
        cookie = next(v for k, v in ok.headers if k == "Set-Cookie").split(";")[0]
        assert _request(portal, f"GET /remote/fortisslvpn_xml HTTP/1.1\nCookie: {cookie}").status == expected
