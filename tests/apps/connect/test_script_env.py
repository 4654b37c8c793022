"""The vpnc-script environment, variable by variable, for ocserv's recorded CONNECT reply.

The expected values are written out by hand from openconnect's contract
(APPS.md section 5, openconnect's script.c), not derived from our code.
"""

from __future__ import annotations

from pathlib import Path

from tunring.apps.connect import script, tunnel
from tunring.apps.connect.http import parse_head

DATA = Path(__file__).parent.parent / "data" / "ocserv"


def cfg():
    head = (DATA / "connect.head").read_bytes().rstrip(b"\r\n")
    return tunnel.parse_tunnel(parse_head(head, "ocserv"))


def test_connect_environment():
    ctx = script.ScriptContext(gateway="198.18.0.1", tundev="vpn0", pid=4242, log_level=1)
    env = script.script_env("connect", cfg(), ctx, base={"PATH": "/bin", "CISCO_SPLIT_INC_9_ADDR": "stale",
                                                         "INTERNAL_IP4_DNS": "stale", "reason": "stale"})
    expected = {
        "PATH": "/bin",
        "reason": "connect",
        "VPNGATEWAY": "198.18.0.1",
        "VPNPID": "4242",
        "TUNDEV": "vpn0",
        "LOG_LEVEL": "1",
        "INTERNAL_IP4_MTU": "1472",
        "INTERNAL_IP4_ADDRESS": "198.19.0.50",
        "INTERNAL_IP4_NETMASK": "255.255.255.0",
        "INTERNAL_IP4_NETMASKLEN": "24",
        "INTERNAL_IP4_NETADDR": "198.19.0.0",
        "INTERNAL_IP6_ADDRESS": "fd00:7475:6e72:8e4f:9a7c:c09f:b76e:58ef",
        "INTERNAL_IP6_NETMASK": "fd00:7475:6e72:8e4f:9a7c:c09f:b76e:58ef/64",
        "INTERNAL_IP4_DNS": "198.19.0.53",
        "CISCO_DEF_DOMAIN": "tunring.test",
        "CISCO_SPLIT_INC": "1",
        "CISCO_SPLIT_INC_0_ADDR": "198.19.7.0",
        "CISCO_SPLIT_INC_0_MASK": "255.255.255.0",
        "CISCO_SPLIT_INC_0_MASKLEN": "24",
        "CISCO_SPLIT_EXC": "1",
        "CISCO_SPLIT_EXC_0_ADDR": "198.19.7.128",
        "CISCO_SPLIT_EXC_0_MASK": "255.255.255.128",
        "CISCO_SPLIT_EXC_0_MASKLEN": "25",
        "CISCO_IPV6_SPLIT_INC": "1",
        "CISCO_IPV6_SPLIT_INC_0_ADDR": "fd00:7475:6e72:7::",
        "CISCO_IPV6_SPLIT_INC_0_MASKLEN": "64",
    }
    options = env.pop("CISCO_CSTP_OPTIONS")
    assert env == expected
    assert "DPD=10\n" in options and "Server-Name=ocserv 1.1.6\n" in options and options.endswith("\n")


def test_pre_init_has_no_tunnel_variables():
    env = script.script_env("pre-init", None, script.ScriptContext(gateway="192.0.2.1"), base={})
    assert env == {"reason": "pre-init", "VPNGATEWAY": "192.0.2.1", "VPNPID": env["VPNPID"], "LOG_LEVEL": "1"}
    env = script.script_env("pre-init", None, script.ScriptContext(gateway="192.0.2.1", tundev="vpn7"), base={})
    assert env["TUNDEV"] == "vpn7"


def test_host_bits_are_cleared_and_banner_decoded():
    c = tunnel.parse_tunnel(parse_head(
        b"HTTP/1.1 200 OK\r\nX-CSTP-MTU: 1400\r\nX-CSTP-Address: 10.0.0.9\r\nX-CSTP-Split-Include: 10.1.2.3/255.255.0.0"
        b"\r\nX-CSTP-Banner: Welcome%20to%0Athe%20VPN\r\nX-CSTP-Split-DNS: a.example\r\nX-CSTP-Split-DNS: b.example"
        b"\r\nX-CSTP-Idle-Timeout: 600\r\nX-CSTP-DNS: fd00::53", "s"))
    env = script.script_env("connect", c, script.ScriptContext(gateway="g"), base={})
    assert env["CISCO_SPLIT_INC_0_ADDR"] == "10.1.0.0" and env["CISCO_SPLIT_INC_0_MASKLEN"] == "16"
    assert env["CISCO_BANNER"] == "Welcome to\nthe VPN"
    assert env["CISCO_SPLIT_DNS"] == "a.example,b.example"
    assert env["IDLE_TIMEOUT"] == "600"
    assert env["INTERNAL_IP4_DNS"] == "fd00::53"  # openconnect lists IPv6 servers here too
    assert "INTERNAL_IP4_NETMASK" not in env  # no netmask from the server: none passed on


def test_run_script_failure_is_local_setup_failed(tmp_path):
    import pytest

    from tunring.apps.connect.errors import LocalSetupFailed

    out = tmp_path / "env"
    ok = f"env > {out}"
    assert script.run_script(ok, "connect", cfg(), script.ScriptContext(gateway="g", tundev="t0")) == 0
    assert "reason=connect" in out.read_text() and "TUNDEV=t0" in out.read_text()
    with pytest.raises(LocalSetupFailed, match="status 3"):
        script.run_script("exit 3", "connect", cfg(), script.ScriptContext(gateway="g"))
    assert script.run_script("exit 3", "disconnect", cfg(), script.ScriptContext(gateway="g"), check=False) == 3
