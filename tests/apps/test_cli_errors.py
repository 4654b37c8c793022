"""Ordinary mistakes on the command line: one line on stderr naming what is wrong, exit status 2
(what was typed is wrong) or 1 (what the input holds is wrong), never a traceback.

Each case is what a new user could type; each failed (a traceback, a hang, or a silent
success) before the CLI checked it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest
from scapy.all import IP, UDP, Raw, rdpcap, wrpcap  # a test dependency: never skipped

from tunring.cli import build_parser, main

USAGE, BAD_INPUT = 2, 1


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `tunring ARGV`, in this process."""
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own way out
        status = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line(err: str, *fragments: str) -> None:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], err


def pcap_bytes(records: list[bytes]) -> bytes:
    """A LINKTYPE_RAW pcap of ``records``, built by hand (libpcap's format)."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0xFFFF, 101)
    for record in records:
        out += struct.pack("<IIII", 0, 0, len(record), len(record)) + record
    return out


def udp_packet(payload_bytes: int) -> bytes:
    return bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(b"u" * payload_bytes))


# -- decode and encode: files -------------------------------------------------------------------
@pytest.mark.parametrize("command", ["decode", "encode"])
def test_missing_input_is_named_and_no_output_is_made(tmp_path, capsys, command):
    out = tmp_path / "out"
    status, _, err = run([command, "--framing", "cstp", str(tmp_path / "nope"), "-o", str(out)], capsys)
    assert status == USAGE
    assert_one_line(err, f"tunring {command}: cannot read {tmp_path / 'nope'}: No such file or directory")
    assert not out.exists()  # decode used to create its output before it opened the input


@pytest.mark.parametrize("command", ["decode", "encode"])
def test_directory_input(tmp_path, capsys, command):
    status, _, err = run([command, "--framing", "cstp", str(tmp_path), "-o", str(tmp_path / "out")], capsys)
    assert status == USAGE
    assert_one_line(err, f"cannot read {tmp_path}: Is a directory")


@pytest.mark.parametrize("command", ["decode", "encode"])
@pytest.mark.parametrize("where", ["missing folder", "a directory"])
def test_unwritable_output(tmp_path, capsys, command, where):
    source = tmp_path / "in"
    source.write_bytes(pcap_bytes([udp_packet(10)]))
    out = tmp_path / "no" / "such" / "out" if where == "missing folder" else tmp_path
    status, _, err = run([command, "--framing", "cstp", str(source), "-o", str(out)], capsys)
    assert status == USAGE
    assert_one_line(err, f"cannot write {out}:")


@pytest.mark.parametrize("command", ["decode", "encode"])
def test_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path, capsys, command):
    source = tmp_path / "in"
    content = pcap_bytes([udp_packet(10)])
    source.write_bytes(content)
    status, _, err = run([command, "--framing", "cstp", str(source), "-o", str(tmp_path / "." / "in")], capsys)
    assert status == USAGE
    assert_one_line(err, "is the input")
    assert source.read_bytes() == content


@pytest.mark.parametrize("mtu", ["0", "-1", "67", "65536", "abc"])
def test_mtu_out_of_range(tmp_path, capsys, mtu):
    source = tmp_path / "in"
    source.write_bytes(b"")
    status, _, err = run(["decode", "--framing", "cstp", "--mtu", mtu, str(source), "-o", str(tmp_path / "o")], capsys)
    assert status == USAGE
    assert_one_line(err, "argument --mtu:", mtu)


# -- encode: what the pcap holds ------------------------------------------------------------
def test_encode_oversized_record_is_named_and_the_rest_encoded(tmp_path, capsys):
    good = [udp_packet(100), udp_packet(200)]
    huge = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0xFFFF, 0, 0, 64, 17, 0, bytes(4), bytes(4)) + bytes(70_000 - 20)
    (tmp_path / "in.pcap").write_bytes(pcap_bytes([good[0], huge, good[1]]))
    wire = tmp_path / "wire"
    status, out, err = run(["encode", "--framing", "cstp", str(tmp_path / "in.pcap"), "-o", str(wire)], capsys)
    assert status == BAD_INPUT
    offset = 24 + 16 + len(good[0])
    assert_one_line(err, f"record at offset {offset} holds 70000 bytes, more than an IP packet's 65535")
    assert "cstp: 2 IP packets" in out
    # What was written is the two good packets in CSTP records, built by hand here.
    assert wire.read_bytes() == b"".join(b"STF\x01" + len(p).to_bytes(2, "big") + b"\x00\x00" + p for p in good)


@pytest.mark.parametrize("record, why", [
    (bytes(40), "IP version 0"),
    (b"", "0 bytes"),
    (b"\x45" + bytes(10), "11 bytes, IP version 4"),
    (b"\x60" + bytes(30), "31 bytes, IP version 6"),
])
def test_encode_record_that_is_not_ip(tmp_path, capsys, record, why):
    (tmp_path / "in.pcap").write_bytes(pcap_bytes([udp_packet(1), record]))
    status, _, err = run(["encode", "--framing", "gpst", str(tmp_path / "in.pcap"), "-o", str(tmp_path / "w")],
                         capsys)
    assert status == BAD_INPUT
    assert_one_line(err, "is not an IPv4/IPv6 packet", why, "1 such records left out")


def test_encode_of_a_file_that_is_no_pcap_makes_no_output(tmp_path, capsys):
    (tmp_path / "in").write_bytes(b"just some text that is long enough\n")
    status, _, err = run(["encode", "--framing", "cstp", str(tmp_path / "in"), "-o", str(tmp_path / "w")], capsys)
    assert status == BAD_INPUT
    assert_one_line(err, "not a pcap file")
    assert not (tmp_path / "w").exists()


# -- bench: numbers ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv, fragment", [
    (["bench", "ring", "--sizes", "abc"], "'abc' is not a whole number"),
    (["bench", "ring", "--sizes", "10"], "10 is not in 28..61440"),
    (["bench", "ring", "--sizes", "70000"], "70000 is not in 28.."),
    (["bench", "ring", "--sizes", ","], "names no size"),
    (["bench", "ring", "--seconds", "0"], "more than 0 s"),
    (["bench", "ring", "--seconds", "nan"], "more than 0 s"),
    (["bench", "ring", "--rounds", "0"], "0 is not in at least 1"),
    (["bench", "esp", "--sizes", "abc"], "'abc' is not a whole number"),
    (["bench", "esp", "--sizes", "64,10"], "10 is not in 28..65000"),
    (["bench", "esp", "--sizes", "70000"], "70000 is not in 28..65000"),
    (["bench", "esp", "--packets", "0"], "0 is not in at least 1"),
    (["bench", "esp", "--repeat", "0"], "0 is not in at least 1"),
    (["bench", "codecs", "--packets", "0"], "0 is not in at least 1"),
    (["bench", "codecs", "--repeat", "0"], "0 is not in at least 1"),
    (["bench", "tun", "--packets", "0"], "0 is not in at least 64"),
    (["bench", "tun", "--sizes", "3000"], "3000 is not in 28..1500"),
    (["bench", "tun", "--sizes", "10"], "10 is not in 28..1500"),
    (["bench", "tun", "--rounds", "0"], "0 is not in at least 1"),
    (["bench", "tun", "--cases", "write,bogus"], "the cases are write, read, tcp"),
    (["bench", "tun", "--tcp-seconds", "-1"], "-1 is not in at least 0"),
    (["bench", "tun", "--tcp-seconds", "0.5"], "'0.5' is not a whole number"),  # iperf3 -t 0.5 ran for ever
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["bench"], "the following arguments are required: NAME"),
    (["adapter", "/tmp/s", "--mtu", "10"], "argument --mtu: 10 is not in 68..65535"),
])
def test_bad_option_values(capsys, argv, fragment):
    status, _, err = run(argv, capsys)
    assert status == USAGE
    assert_one_line(err, fragment)


def test_sizes_may_be_given_with_commas_or_spaces():
    parser = build_parser()
    assert parser.parse_args(["bench", "ring", "--sizes", "64", "512,1400"]).sizes == [64, 512, 1400]
    assert parser.parse_args(["bench", "esp", "--sizes", "64,512"]).sizes == [64, 512]
    assert parser.parse_args(["bench", "tun"]).sizes == [100, 1400]


def test_bench_tun_without_root_says_so(capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    status, _, err = run(["bench", "tun", "--packets", "64"], capsys)
    assert status == USAGE
    assert_one_line(err, "tunring bench: bench tun needs root")


def test_bench_ring_with_big_packets_does_not_hang():
    # Before: the one-process mp.Pipe row wrote 16 messages of 5000 bytes into a 64 KiB pipe
    # before reading any, and blocked for ever.
    out = subprocess.run([sys.executable, "-m", "tunring.cli", "bench", "ring", "--sizes", "5000", "--procs", "1",
                          "--seconds", "0.01", "--rounds", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "mp.Pipe" in out.stdout


def test_output_closed_early_is_quiet():
    # `tunring bench ... | head`: the reader goes away; no traceback about the broken pipe.
    proc = subprocess.Popen([sys.executable, "-m", "tunring.cli", "bench", "codecs", "--framing", "cstp",
                             "--packets", "50", "--repeat", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(120) == 1
    assert err == b""


# -- adapter: the socket path, checked before any interface exists (no root needed) -----------
@pytest.mark.parametrize("path, fragment", [
    ("{tmp}/no/such/folder/s", "the folder {tmp}/no/such/folder does not exist"),
    ("{tmp}/a-file/s", "{tmp}/a-file is not a folder"),
    ("{tmp}/" + "x" * 120, "a socket path holds at most 107 bytes"),
    ("", "the socket path is empty"),
])
def test_adapter_socket_path_problems(tmp_path, capsys, path, fragment):
    (tmp_path / "a-file").write_text("")
    path = path.format(tmp=tmp_path)
    status, _, err = run(["adapter", path, "--address", "10.9.0.1/24"], capsys)
    assert status == USAGE
    assert_one_line(err, "tunring adapter: ", fragment.format(tmp=tmp_path))


def test_adapter_never_replaces_a_file_that_is_not_a_socket(tmp_path, capsys):
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    status, _, err = run(["adapter", str(precious)], capsys)
    assert status == USAGE
    assert_one_line(err, "exists and is not a socket")
    assert precious.read_text() == "keep me"  # serve() used to unlink whatever was there


# -- what the tools read and write, checked against scapy ---------------------------------------
def test_decode_writes_a_pcap_scapy_reads(tmp_path, capsys):
    packets = [udp_packet(n) for n in (0, 30, 1400)]
    (tmp_path / "wire").write_bytes(b"".join(b"STF\x01" + len(p).to_bytes(2, "big") + b"\0\0" + p for p in packets))
    status, out, _ = run(["decode", "--framing", "cstp", str(tmp_path / "wire"), "-o", str(tmp_path / "o.pcap")],
                         capsys)
    assert status == 0
    assert [bytes(p) for p in rdpcap(str(tmp_path / "o.pcap"))] == packets
    assert "copies: 0 packets, 0 bytes; decompressed: 0; dropped: 0" in out


def test_encode_reads_a_pcap_scapy_wrote(tmp_path, capsys):
    packets = [IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / Raw(bytes([i]) * i) for i in range(5)]
    wrpcap(str(tmp_path / "in.pcap"), packets, linktype=101)
    status, _, _ = run(["encode", "--framing", "dtls", str(tmp_path / "in.pcap"), "-o", str(tmp_path / "w")], capsys)
    assert status == 0
    assert (tmp_path / "w").read_text().split() == [("00" + bytes(p).hex()) for p in packets]


def test_python_dash_m_reports_like_the_console_script(tmp_path):
    # `python -m tunring.cli` runs cli.py as __main__: its mistakes must still be one line.
    out = subprocess.run([sys.executable, "-m", "tunring.cli", "decode", "--framing", "cstp", str(tmp_path / "nope"),
                          "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert out.returncode == USAGE
    assert_one_line(out.stderr, "tunring decode: cannot read")
