"""RunSender: datagrams to one destination, runs by UDP GSO, on loopback (no root)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vipcast.linux import udp
from vipcast.linux.mmsg import RunSender, SendResult

SO_NO_CHECK = 11  # asm-generic/socket.h: send UDP without checksums


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A sink and a source on 127.0.0.1."""
    sink = udp.udp_socket(socket.AF_INET, rcvbuf=8 << 20, sndbuf=0)
    sink.bind(("127.0.0.1", 0))
    source = udp.udp_socket(socket.AF_INET, rcvbuf=0, sndbuf=8 << 20)
    yield sink, source
    sink.close()
    source.close()


def received(sink: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sink.recv(65535))
        except BlockingIOError:
            return out


def numbered(sizes: list[int]) -> list[bytes]:
    """Payloads of the given sizes, each telling its place (so order shows)."""
    return [(b"%d:" % i + b"x" * size)[: max(size, 1)] for i, size in enumerate(sizes)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([1, 7, 64, 64, 64, 200, 1400]), min_size=1, max_size=150))
def test_every_datagram_arrives_once_in_order(sizes: list[int]) -> None:
    sink = udp.udp_socket(socket.AF_INET, rcvbuf=8 << 20, sndbuf=0)
    sink.bind(("127.0.0.1", 0))
    source = udp.udp_socket(socket.AF_INET, rcvbuf=0, sndbuf=8 << 20)
    try:
        payloads = numbered(sizes)
        result = RunSender(source).send(payloads, sink.getsockname())
        assert result == SendResult(sent=len(payloads))
        assert received(sink) == payloads
    finally:
        sink.close()
        source.close()


def test_a_run_of_equal_sizes_with_a_shorter_end_is_segmented(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sink, source = pair
    sender = RunSender(source, min_run=4)
    payloads = [bytes([i]) * 100 for i in range(150)] + [b"end"]  # 3 GSO sends of <= 64
    assert sender.send(payloads, sink.getsockname()).sent == 151
    assert received(sink) == payloads
    assert sender.gso


def test_without_gso_the_same_datagrams_go_by_sendmmsg(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sink, source = pair
    sender = RunSender(source)
    sender.gso = False  # what a refusal leaves behind
    payloads = [b"a" * 64] * 10 + [b"b" * 20]
    assert sender.send(payloads, sink.getsockname()).sent == 11
    assert received(sink) == payloads


def test_a_refused_segmentation_falls_back_for_good(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sink, source = pair
    source.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)  # GSO needs checksums: EINVAL
    sender = RunSender(source)
    payloads = [b"z" * 64] * 4
    assert sender.send(payloads, sink.getsockname()).sent == 4
    assert received(sink) == payloads
    assert not sender.gso
