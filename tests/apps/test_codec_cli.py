"""`tunring decode` / `tunring encode`: round trips, summaries, exit status 1 with the offset.

The references are independent of tunring: scapy builds the IP packets and reads our pcaps,
and the records on the wire are built (for decode) and checked (for encode) by the plain byte
concatenations of tests/proto/framing_ref.py, written from the formats, not from tunring.
"""

from __future__ import annotations

import pytest
from scapy.all import IP, TCP, UDP, IPv6, Raw, rdpcap, wrpcap  # a test dependency: never skipped

from proto import framing_ref as ref
from tunring.cli import main
from tunring.proto import FRAMINGS

STREAM = sorted(n for n, c in FRAMINGS.items() if c.stream_ok)
# (framing, its datagram form?) for every form each framing has
FORMS = sorted({(n, c.default_datagram) for n, c in FRAMINGS.items()}
               | {(n, True) for n, c in FRAMINGS.items() if c.datagram_ok})


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


def reference_records(name: str, packets: list[bytes]) -> list[bytes]:
    """Each packet as one data record of ``name``, built by hand (Pulse numbers its records)."""
    if name == "pulse":
        return [ref.pulse(p, seq=i) for i, p in enumerate(packets)]
    return [ref.REFERENCE[name](p) for p in packets]


def form_flags(name: str, datagram: bool) -> list[str]:
    return ["--datagram"] if datagram and not FRAMINGS[name].default_datagram else []


@pytest.mark.parametrize("name, datagram", FORMS)
def test_encode_writes_the_records_built_by_hand(tmp_path, capsys, name, datagram):
    packets = sample_packets()
    write_input_pcap(tmp_path / "in.pcap", packets)
    wire = tmp_path / "wire"
    argv = ["encode", "--framing", name, *form_flags(name, datagram), str(tmp_path / "in.pcap"), "-o", str(wire)]
    assert main(argv) == 0
    records = reference_records(name, packets)
    if datagram:
        assert wire.read_text().split() == [r.hex() for r in records]
    else:
        assert wire.read_bytes() == b"".join(records)


@pytest.mark.parametrize("name, datagram", FORMS)
def test_decode_reads_the_records_built_by_hand(tmp_path, capsys, name, datagram):
    packets = sample_packets()
    records = reference_records(name, packets)
    wire = tmp_path / "wire"
    if datagram:
        wire.write_text("# built by hand\n" + "\n".join(r.hex() for r in records) + "\n")
    else:
        wire.write_bytes(b"".join(records))
    argv = ["decode", "--framing", name, *form_flags(name, datagram), str(wire), "-o", str(tmp_path / "o.pcap")]
    assert main(argv) == 0
    assert f"{name}: {len(packets)} IP packets ({sum(map(len, packets)):,} bytes)" in capsys.readouterr().out
    assert [bytes(p) for p in rdpcap(str(tmp_path / "o.pcap"))] == packets


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
    files = [str(tmp_path / "x"), "-o", str(tmp_path / "o")]
    status = main(["decode", "--framing", "gpst", "--compression", "lz4", *files])
    assert status == 2 and "cannot carry" in capsys.readouterr().err
    status = main(["decode", "--framing", "cstp", "--datagram", *files])
    assert status == 2 and "no datagram form" in capsys.readouterr().err


def test_decode_prints_what_the_codec_counted(tmp_path, capsys, monkeypatch):
    # An oNCP KMP 300 message carrying two IPv4 packets: the first is read in place, the second
    # (220 bytes) has to be copied into a packet of its own: staged out of the record, then
    # written into its packet, 2 x 220 bytes memcpy'd.
    from tunring.apps import codec_cli, decode

    codecs = []

    def keep(args):
        made = codec_cli.make_codec(args)
        codecs.append(made[0])
        return made

    monkeypatch.setattr(decode, "make_codec", keep)
    first, second = ref.ipv4(b"a" * 100), ref.ipv4(b"b" * 200)
    (tmp_path / "wire").write_bytes(ref.oncp(first + second) + ref.oncp(first))
    assert main(["decode", "--framing", "oncp", str(tmp_path / "wire"), "-o", str(tmp_path / "o.pcap")]) == 0
    out = capsys.readouterr().out
    stats = codecs[0].stats
    assert (f"copies: {stats.rx_copies} packets, {stats.rx_copy_bytes:,} bytes; "
            f"decompressed: {stats.rx_decompressed}; dropped: {stats.rx_drops}") in out
    assert "copies: 1 packets, 440 bytes" in out
    assert [bytes(p) for p in rdpcap(str(tmp_path / "o.pcap"))] == [first, second, first]
