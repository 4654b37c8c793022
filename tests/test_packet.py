import pytest

from tunring.errors import PacketError
from tunring.packet import ALLOCATED, Packet


def make() -> Packet:
    buf = memoryview(bytearray(range(64)))
    return Packet(buf, 16, 40, 8, 48, None, ALLOCATED)


def test_rooms_and_views_are_windows_not_copies():
    p = make()
    assert (len(p), p.headroom, p.tailroom) == (24, 8, 8)
    assert p.data.obj is p.buf.obj
    p.data[0] = 0xEE
    assert p.buf[16] == 0xEE


def test_push_pull_put_trim():
    p = make()
    header = p.push(6)
    assert len(header) == 6 and p.start == 10 and p.headroom == 2
    header[:] = b"HEADER"
    assert bytes(p.data[:6]) == b"HEADER"
    dropped = p.pull(6)
    assert bytes(dropped) == b"HEADER" and p.start == 16
    tail = p.put(8)
    assert len(tail) == 8 and p.tailroom == 0 and len(p) == 32
    p.trim(8)
    assert len(p) == 24 and p.end == 40


@pytest.mark.parametrize("verb,n", [("push", 9), ("pull", 25), ("put", 9), ("trim", 25), ("push", -1)])
def test_out_of_room_is_an_error_and_changes_nothing(verb, n):
    p = make()
    before = (p.start, p.end)
    with pytest.raises(PacketError):
        getattr(p, verb)(n)
    assert (p.start, p.end) == before
