"""`tunring decode` / `tunring encode`: round trips, summaries, exit status 1 with the offset.

scapy is the independent reference here: it builds the IP packets and reads our pcaps.
"""

from __future__ import annotations

import pytest
from scapy.all import IP, IPv6, UDP, TCP, Raw, rdpcap, wrpcap  # a test dependency: never skipped

from tunring.cli import main
from tunring.proto import FRAMINGS

STREAM = sorted(n for n, c in FRAMINGS.items() if c.stream_ok)


def sample_packets() -> list[bytes]:
    pkts = [
        IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=53, dport=5353) / Raw(b"x" * 100),
        IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=443, dport=40000, flags="A") / Raw(b"y" * 1400),
        IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2) / Raw(b"six"),
        IP(src="10.0.0.1", dst="10.0.0.3") / UDP() / Raw(b""),
    ]
    return [bytes(p) for p in pkts]


def write_input_pcap(path, packets):
    wrpcap(str(path), [IP(p) if p[0] >> 4 == 4 else IPv6(p) for p in packets], linktype=101)


@pytest.mark.parametrize("name", sorted(FRAMINGS))
def test_encode_then_decode_round_trip(tmp_path, capsys, name):
    packets = sample_packets()
    write_input_pcap(tmp_path / "in.pcap", packets)
    wire = tmp_path / "wire"
    assert main(["encode", "--framing", name, str(tmp_path / "in.pcap"), "-o", str(wire)]) == 0
    assert main(["decode", "--framing", name, str(wire), "-o", str(tmp_path / "out.pcap")]) == 0
    out = capsys.readouterr().out
    assert f"{name}: 4 IP packets" in out
    got = [bytes(p) for p in rdpcap(str(tmp_path / "out.pcap"))]
    assert got == packets
    if FRAMINGS[name].datagram_ok and not FRAMINGS[name].stream_ok:
        assert all(len(line) % 2 == 0 for line in wire.read_text().split())


def test_decode_reports_controls_and_exit_status_1_with_offset(tmp_path, capsys):
    packets = sample_packets()
    write_input_pcap(tmp_path / "in.pcap", packets)
    wire = tmp_path / "wire"
    assert main(["encode", "--framing", "cstp", str(tmp_path / "in.pcap"), "-o", str(wire)]) == 0
    good = wire.read_bytes()
    dpd = b"STF\x01\x00\x00\x03\x00"
    (tmp_path / "ok").write_bytes(dpd + good)
    assert main(["decode", "--framing", "cstp", str(tmp_path / "ok"), "-o", str(tmp_path / "a.pcap")]) == 0
    assert "DpdRequest x1" in capsys.readouterr().out
    # Garbage after the good records: offset of its first byte is named.
    (tmp_path / "bad").write_bytes(good + b"GARBAGE!" + good)
    assert main(["decode", "--framing", "cstp", str(tmp_path / "bad"), "-o", str(tmp_path / "b.pcap")]) == 1
    err = capsys.readouterr().err
    assert f"offset {len(good)}:" in err and "magic" in err
    assert [bytes(p) for p in rdpcap(str(tmp_path / "b.pcap"))] == packets  # the good ones are kept
    # A truncated stream.
    (tmp_path / "cut").write_bytes(good[:-3])
    assert main(["decode", "--framing", "cstp", str(tmp_path / "cut"), "-o", str(tmp_path / "c.pcap")]) == 1
    record_starts = len(good) - (8 + len(packets[-1]))
    assert f"offset {record_starts}:" in capsys.readouterr().err


def test_decode_datagram_lines_names_the_bad_line(tmp_path, capsys):
    packets = sample_packets()
    lines = ["# a capture", "00" + packets[0].hex(), "", "55abcd", "00" + packets[1].hex()]
    (tmp_path / "in.hex").write_text("\n".join(lines) + "\n")
    assert main(["decode", "--framing", "dtls", str(tmp_path / "in.hex"), "-o", str(tmp_path / "o.pcap")]) == 1
    assert "datagram 1 (line 4)" in capsys.readouterr().err
    assert [bytes(p) for p in rdpcap(str(tmp_path / "o.pcap"))] == packets[:2]
    (tmp_path / "nothex").write_text("zz\n")
    assert main(["decode", "--framing", "dtls", str(tmp_path / "nothex"), "-o", str(tmp_path / "o.pcap")]) == 1
    assert "line 1" in capsys.readouterr().err


def test_decode_unknown_record_is_counted_and_fails(tmp_path, capsys):
    (tmp_path / "s").write_bytes(b"STF\x01\x00\x01\x42\x00Z")
    assert main(["decode", "--framing", "cstp", str(tmp_path / "s"), "-o", str(tmp_path / "o.pcap")]) == 1
    captured = capsys.readouterr()
    assert "dropped: 1" in captured.out and "offset 0: unknown record type 66" in captured.err


@pytest.mark.parametrize("name", ["f5", "fortinet", "array"])
def test_datagram_form_of_a_stream_framing(tmp_path, capsys, name):
    packets = sample_packets()
    write_input_pcap(tmp_path / "in.pcap", packets)
    wire = tmp_path / "wire.hex"
    assert main(["encode", "--framing", name, "--datagram", str(tmp_path / "in.pcap"), "-o", str(wire)]) == 0
    assert len(wire.read_text().split()) == len(packets)
    assert main(["decode", "--framing", name, "--datagram", str(wire), "-o", str(tmp_path / "o.pcap")]) == 0
    assert [bytes(p) for p in rdpcap(str(tmp_path / "o.pcap"))] == packets


def test_pcap_reader_accepts_ethernet_and_rejects_junk(tmp_path):
    import struct

    from scapy.all import ARP, Ether

    from tunring.apps.pcap import PcapWriter, read_packets
    from tunring.errors import FramingError

    packets = sample_packets()
    frames = [Ether() / (IP(p) if p[0] >> 4 == 4 else IPv6(p)) for p in packets] + [Ether() / ARP()]
    wrpcap(str(tmp_path / "eth.pcap"), frames)
    assert list(read_packets((tmp_path / "eth.pcap").read_bytes())) == packets  # ARP skipped
    # Our writer's output reads back, and scapy agrees on it.
    with open(tmp_path / "raw.pcap", "wb") as f:
        w = PcapWriter(f)
        for p in packets:
            w.write(p)
    assert list(read_packets((tmp_path / "raw.pcap").read_bytes())) == packets
    assert [bytes(p) for p in rdpcap(str(tmp_path / "raw.pcap"))] == packets
    # Big-endian files too.
    be = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    be += struct.pack(">IIII", 0, 0, len(packets[0]), len(packets[0])) + packets[0]
    assert list(read_packets(be)) == [packets[0]]
    for junk in (b"", b"\x00" * 24, be[:-1]):
        with pytest.raises(FramingError):
            list(read_packets(junk))


def test_impossible_combinations_exit_2(tmp_path, capsys):
    (tmp_path / "x").write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        main(["decode", "--framing", "gpst", "--compression", "lz4", str(tmp_path / "x"), "-o", str(tmp_path / "o")])
    assert info.value.code == 2 and "cannot carry" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["decode", "--framing", "cstp", "--datagram", str(tmp_path / "x"), "-o", str(tmp_path / "o")])
    assert info.value.code == 2 and "no datagram form" in capsys.readouterr().err
