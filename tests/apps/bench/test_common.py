"""bench/common.py: the packets every benchmark sends, skipped rows, best-of rounds."""

from __future__ import annotations

import json

import pytest
from scapy.all import IP, UDP  # a test dependency: never skipped

from tunring.apps.bench import render_table
from tunring.apps.bench.common import Impl, best_of, ipv4_udp, measure_table, result


@pytest.mark.parametrize("size", [28, 64, 1400, 65535])
def test_ipv4_udp_is_what_scapy_says_it_is(size):
    packet = ipv4_udp(size, src="10.0.0.1", dst="10.1.10.2", ident=7, fill=0xAB, sport=5000, dport=9,
                      dont_fragment=True)
    parsed = IP(packet)
    assert len(packet) == size and parsed.len == size and parsed.id == 7 and parsed.flags == "DF"
    assert (parsed.src, parsed.dst, parsed[UDP].sport, parsed[UDP].dport) == ("10.0.0.1", "10.1.10.2", 5000, 9)
    assert parsed[UDP].len == size - 20 and bytes(parsed[UDP].payload) == b"\xab" * (size - 28)
    recomputed = IP(bytes(packet[:10]) + b"\0\0" + bytes(packet[12:]))
    del recomputed.chksum
    assert parsed.chksum == IP(bytes(recomputed)).chksum  # the header checksum is scapy's


def test_ipv4_udp_refuses_what_is_no_udp_packet():
    for size in (27, 65536):
        with pytest.raises(ValueError, match="28..65535"):
            ipv4_udp(size)


def test_missing_module_or_program_is_a_skipped_row_with_its_reason():
    ran = []
    table = [
        Impl("tunring", lambda: ran.append("tunring")),
        Impl("peer", lambda: ran.append("peer"), modules=("tunring_no_such_module",)),
        Impl("tool", lambda: ran.append("tool"), programs=("tunring-no-such-program",)),
    ]
    def run(entry: Impl):
        entry.measure()
        return entry.result("write", 100, 10, 1.0)

    rows = measure_table(table, "write", 100, run)
    assert ran == ["tunring"]
    by_impl = {r.impl: r for r in rows}
    assert by_impl["tunring"].pps == 10.0
    assert "tunring_no_such_module" in by_impl["peer"].extra["skipped"]
    assert "tunring-no-such-program" in by_impl["tool"].extra["skipped"]
    assert by_impl["peer"].pps == 0.0
    doc = json.loads(json.dumps([r.to_json() for r in rows]))
    assert {"case", "impl", "packet_size", "pps", "gbps", "skipped"} <= doc[1].keys()
    text = render_table("x", rows)
    assert "peer" in text and "skipped: needs the Python module tunring_no_such_module" in text


def test_variant_and_extra_go_into_the_row():
    entry = Impl("tunring", print, variant="batch", extra={"offload": True})
    row = entry.result("1proc", 64, 1000, 0.5, mbps=1.0)
    assert (row.case, row.impl, row.pps) == ("1proc-batch", "tunring", 2000.0)
    assert row.extra == {"offload": True, "mbps": 1.0}


def test_best_of_keeps_the_fastest_round_of_each_row_and_skips_warmup():
    rounds = iter([
        [result("a", "tunring", 64, 1000, 0.1), result("a", "peer", 64, 1000, 0.1)],  # warm-up: not counted
        [result("a", "tunring", 64, 1000, 2.0), result("a", "peer", 64, 1000, 1.0)],
        [result("a", "tunring", 64, 1000, 1.0), result("a", "peer", 64, 1000, 4.0)],
    ])
    rows = best_of(2, lambda: next(rounds), warmup=1)
    assert [(r.impl, r.pps) for r in rows] == [("tunring", 1000.0), ("peer", 1000.0)]
