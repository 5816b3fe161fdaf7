"""Batched UDP I/O and socket setup, on loopback: no root, no namespaces."""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vipcast.linux import mmsg, udp
from vipcast.linux.mmsg import MmsgReceiver, MmsgSender, RecvfromReceiver, SendtoSender

IP_RECVERR = 11
LOOPBACK: dict[int, str] = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
FAMILIES = pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
RECEIVERS = pytest.mark.parametrize("receiver", [MmsgReceiver, RecvfromReceiver])
SENDERS = pytest.mark.parametrize("sender", [MmsgSender, SendtoSender])


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets made by a test, all closed after it."""
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def bound(made: list[socket.socket], family: int, *, rcvbuf: int = 4 << 20) -> socket.socket:
    sock = udp.udp_socket(socket.AddressFamily(family), rcvbuf=rcvbuf, sndbuf=4 << 20)
    sock.bind((LOOPBACK[family], 0))
    made.append(sock)
    return sock


def endpoint(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port


def drain(receiver: mmsg.Receiver, rounds: int = 50) -> list[mmsg.Received]:
    """Everything queued now, copied out of the receiver's buffers."""
    out: list[mmsg.Received] = []
    for _ in range(rounds):
        got = receiver.receive()
        if not got:
            break
        out.extend(r._replace(payload=memoryview(bytes(r.payload))) for r in got)
    return out


# ---------------------------------------------------------------- receiving


@RECEIVERS
@FAMILIES
def test_receive_returns_nothing_when_nothing_is_queued(
    sockets: list[socket.socket], family: int, receiver: type[mmsg.Receiver]
) -> None:
    rx = receiver(bound(sockets, family))  # type: ignore[call-arg]
    assert rx.receive() == []


@RECEIVERS
@FAMILIES
def test_receive_returns_the_datagrams_sent_in_order_with_sources_and_destinations(
    sockets: list[socket.socket], family: int, receiver: type[mmsg.Receiver]
) -> None:
    sink = bound(sockets, family)
    udp.enable_pktinfo(sink)
    rx = receiver(sink, batch=4, pktinfo=True)  # type: ignore[call-arg]
    a, b = bound(sockets, family), bound(sockets, family)
    sent = [(a if i % 3 else b, b"datagram %d " % i + bytes(i * 7)) for i in range(10)]
    for sock, payload in sent:
        sock.sendto(payload, endpoint(sink))

    batches = [
        [r._replace(payload=memoryview(bytes(r.payload))) for r in rx.receive()] for _ in range(4)
    ]

    assert [len(batch) for batch in batches] == [4, 4, 2, 0]
    got = [r for batch in batches for r in batch]
    assert [bytes(r.payload) for r in got] == [p for _, p in sent]
    assert [r.source for r in got] == [endpoint(s) for s, _ in sent]
    assert {r.destination for r in got} == {endpoint(sink)}


@RECEIVERS
def test_a_dual_stack_socket_reports_ipv4_senders_and_destinations_mapped(
    sockets: list[socket.socket], receiver: type[mmsg.Receiver]
) -> None:
    sink = udp.udp_socket(socket.AF_INET6, rcvbuf=0, sndbuf=0)
    sockets.append(sink)
    sink.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sink.bind(("::", 0))
    udp.enable_pktinfo(sink)
    sender = bound(sockets, socket.AF_INET)
    sender.sendto(b"mapped", ("127.0.0.1", endpoint(sink)[1]))

    (got,) = drain(receiver(sink, pktinfo=True))  # type: ignore[call-arg]

    assert got.source == ("::ffff:127.0.0.1", endpoint(sender)[1])
    assert got.destination == ("::ffff:127.0.0.1", endpoint(sink)[1])


@RECEIVERS
def test_a_datagram_longer_than_the_buffer_is_dropped_and_counted(
    sockets: list[socket.socket], receiver: type[mmsg.Receiver]
) -> None:
    sink, sender = bound(sockets, socket.AF_INET), bound(sockets, socket.AF_INET)
    rx = receiver(sink, bufsize=16)  # type: ignore[call-arg]
    for payload in (b"short", b"x" * 17, b"fits exactly 16!"):
        sender.sendto(payload, endpoint(sink))

    assert [bytes(r.payload) for r in drain(rx)] == [b"short", b"fits exactly 16!"]
    assert rx.truncated == 1


def test_make_receiver_and_sender_use_the_batched_calls_when_libc_has_them(
    sockets: list[socket.socket],
) -> None:
    assert mmsg.batched_io_available()
    sock = bound(sockets, socket.AF_INET)
    assert isinstance(mmsg.make_receiver(sock), MmsgReceiver)
    assert isinstance(mmsg.make_sender(sock), MmsgSender)


def test_without_the_batched_calls_the_factories_fall_back_to_one_call_per_datagram(
    sockets: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mmsg, "_CALLS", None)
    sock = bound(sockets, socket.AF_INET)
    assert not mmsg.batched_io_available()
    assert isinstance(mmsg.make_receiver(sock), RecvfromReceiver)
    assert isinstance(mmsg.make_sender(sock), SendtoSender)


# ---------------------------------------------------------------- sending


@SENDERS
@FAMILIES
def test_send_delivers_each_message_to_its_destination_in_order(
    sockets: list[socket.socket], family: int, sender: type[mmsg.Sender]
) -> None:
    sinks = [bound(sockets, family) for _ in range(3)]
    tx = sender(bound(sockets, family), capacity=4)  # type: ignore[call-arg]
    messages = [(b"m%d" % i, endpoint(sinks[i % 3])) for i in range(20)]

    assert tx.send(messages) == mmsg.SendResult(sent=20)

    for sink in sinks:
        got = [bytes(r.payload) for r in drain(MmsgReceiver(sink))]
        assert got == [p for p, d in messages if d == endpoint(sink)]


@SENDERS
def test_send_to_all_reaches_every_destination(
    sockets: list[socket.socket], sender: type[mmsg.Sender]
) -> None:
    sinks = [bound(sockets, socket.AF_INET6) for _ in range(5)]
    tx = sender(bound(sockets, socket.AF_INET6), capacity=2)  # type: ignore[call-arg]

    assert tx.send_to_all(memoryview(b"to everyone"), [endpoint(s) for s in sinks]).sent == 5
    for sink in sinks:
        assert [bytes(r.payload) for r in drain(MmsgReceiver(sink))] == [b"to everyone"]


def test_messages_beyond_the_arena_go_in_further_calls(sockets: list[socket.socket]) -> None:
    sink = bound(sockets, socket.AF_INET, rcvbuf=8 << 20)
    tx = MmsgSender(bound(sockets, socket.AF_INET), arena=mmsg.MAX_DATAGRAM)
    payloads = [bytes([i]) * 30000 for i in range(5)]

    assert tx.send((p, endpoint(sink)) for p in payloads).sent == 5
    assert [bytes(r.payload) for r in drain(MmsgReceiver(sink))] == payloads


@SENDERS
def test_a_message_that_fails_is_counted_and_the_ones_after_it_are_still_sent(
    sockets: list[socket.socket], sender: type[mmsg.Sender]
) -> None:
    sink = bound(sockets, socket.AF_INET)
    tx = sender(bound(sockets, socket.AF_INET))  # type: ignore[call-arg]
    too_big = bytes(mmsg.MAX_DATAGRAM)  # over 65507: EMSGSIZE for this message only
    messages = [(b"before", endpoint(sink)), (too_big, endpoint(sink)), (b"after", endpoint(sink))]

    assert tx.send(messages) == mmsg.SendResult(sent=2, failed=1)
    assert tx.errors == {errno.EMSGSIZE: 1}
    assert [bytes(r.payload) for r in drain(MmsgReceiver(sink))] == [b"before", b"after"]


@SENDERS
def test_a_payload_larger_than_any_datagram_fails_alone(
    sockets: list[socket.socket], sender: type[mmsg.Sender]
) -> None:
    sink = bound(sockets, socket.AF_INET)
    tx = sender(bound(sockets, socket.AF_INET), arena=mmsg.MAX_DATAGRAM)  # type: ignore[call-arg]
    huge = bytes(mmsg.MAX_DATAGRAM + 1)

    assert tx.send([(huge, endpoint(sink)), (b"fine", endpoint(sink))]) == (1, 1, 0)
    assert tx.send_to_all(huge, [endpoint(sink)] * 2) == (0, 2, 0)
    assert tx.errors == {errno.EMSGSIZE: 3}
    assert [bytes(r.payload) for r in drain(MmsgReceiver(sink))] == [b"fine"]


def closed_port(family: int) -> tuple[str, int]:
    """A loopback port nobody listens on (ICMP port unreachable comes back)."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK[family], 0))
        return endpoint(probe)


@SENDERS
@FAMILIES
def test_a_dead_receiver_never_costs_the_live_one_a_datagram(
    sockets: list[socket.socket], family: int, sender: type[mmsg.Sender]
) -> None:
    live, dead = bound(sockets, family), closed_port(family)
    out = bound(sockets, family)
    level = socket.IPPROTO_IP if family == socket.AF_INET else socket.IPPROTO_IPV6
    out.setsockopt(level, IP_RECVERR if family == socket.AF_INET else 25, 1)  # keep ICMP errors
    tx = sender(out)  # type: ignore[call-arg]
    total = mmsg.SendResult()
    for k in range(50):
        total += tx.send([(b"%d" % k, dead)])
        # the dead port's ICMP error is pending: it fails the first message of this call
        total += tx.send([(b"a%d" % k, endpoint(live)), (b"b%d" % k, endpoint(live))])

    got = [bytes(r.payload) for r in drain(MmsgReceiver(live), rounds=200)]
    assert got == [p for k in range(50) for p in (b"a%d" % k, b"b%d" % k)]
    assert total == mmsg.SendResult(sent=150)
    assert tx.errors == {errno.ECONNREFUSED: 50}


def test_a_pending_error_in_mid_batch_stops_the_call_short_and_is_counted_as_a_stop(
    sockets: list[socket.socket],
) -> None:
    live, dead = bound(sockets, socket.AF_INET), closed_port(socket.AF_INET)
    out = bound(sockets, socket.AF_INET)
    out.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    tx = MmsgSender(out)

    result = tx.send([(b"a", dead), (b"b", endpoint(live)), (b"c", dead), (b"d", endpoint(live))])

    assert result.sent == 4
    assert tx.stops >= 1
    assert [bytes(r.payload) for r in drain(MmsgReceiver(live))] == [b"b", b"d"]


@FAMILIES
def test_segments_sent_with_gso_arrive_as_separate_datagrams_in_order(
    sockets: list[socket.socket], family: int
) -> None:
    sink = bound(sockets, family, rcvbuf=8 << 20)
    segments = [bytes([i % 256]) * 100 for i in range(150)] + [b"short tail"]

    result = mmsg.send_segments(bound(sockets, family), segments, endpoint(sink))

    assert result == mmsg.SendResult(sent=151)
    assert [bytes(r.payload) for r in drain(MmsgReceiver(sink, batch=64))] == segments


def test_gso_refuses_segments_of_different_sizes(sockets: list[socket.socket]) -> None:
    with pytest.raises(ValueError, match="one size"):
        mmsg.send_segments(bound(sockets, socket.AF_INET), [b"ab", b"abc"], ("127.0.0.1", 9))


# ---------------------------------------------------------------- addresses


@given(st.ip_addresses(), st.integers(0, 65535))
def test_socket_addresses_survive_encoding_and_decoding(address: object, port: int) -> None:
    host = str(address)
    family = udp.family_of(host)
    decoded, decoded_port = mmsg.decode_sockaddr(mmsg.encode_sockaddr(family, (host, port)))
    assert (ipaddress.ip_address(decoded), decoded_port) == (address, port)


def test_an_ipv6_socket_sends_to_ipv4_as_a_mapped_address() -> None:
    raw = mmsg.encode_sockaddr(socket.AF_INET6, ("198.18.0.1", 9))
    assert mmsg.decode_sockaddr(raw) == ("::ffff:198.18.0.1", 9)


def test_a_scoped_ipv6_address_keeps_its_interface_both_ways() -> None:
    """A link-local relay is answered at fe80::x%eth0: the scope must survive decoding."""
    raw = mmsg.encode_sockaddr(socket.AF_INET6, ("fe80::1%lo", 9))
    assert mmsg.decode_sockaddr(raw) == ("fe80::1%lo", 9)
    assert mmsg.decode_sockaddr(mmsg.encode_sockaddr(socket.AF_INET6, ("fe80::1", 9))) == (
        "fe80::1",
        9,
    )


def test_a_link_local_sockaddr_takes_the_interface_as_its_scope() -> None:
    lo = socket.if_nametoindex("lo")
    assert udp.sockaddr("fe80::1", 5, "lo") == ("fe80::1", 5, 0, lo)
    assert udp.sockaddr("fe80::1%lo", 5) == ("fe80::1", 5, 0, lo)
    assert udp.sockaddr("fd00:198:18::b", 5, "lo") == ("fd00:198:18::b", 5, 0, 0)
    assert udp.sockaddr("198.18.0.11", 5, "lo") == ("198.18.0.11", 5)
    with pytest.raises(udp.UdpSetupError, match="fe80::1 is link-local: it needs an interface"):
        udp.sockaddr("fe80::1", 5)


# ---------------------------------------------------------------- setup


def test_a_link_local_address_is_bound_on_its_interface(sockets: list[socket.socket]) -> None:
    sock = udp.udp_socket(socket.AF_INET6, rcvbuf=0, sndbuf=0)
    sockets.append(sock)

    udp.bind_freebind(sock, "fe80::1", 0, "lo")  # lo has no fe80::1: FREEBIND, as in DAD

    assert sock.getsockname()[3] == socket.if_nametoindex("lo")
    assert mmsg.endpoint(sock.getsockname())[0] == "fe80::1%lo"


@FAMILIES
def test_freebind_binds_an_address_no_interface_has(
    sockets: list[socket.socket], family: int
) -> None:
    host = {int(socket.AF_INET): "198.18.0.77", int(socket.AF_INET6): "fd00:198:18::77"}[family]
    plain = socket.socket(family, socket.SOCK_DGRAM)
    sockets.append(plain)
    with pytest.raises(OSError, match="assign"):
        plain.bind((host, 0))
    sock = udp.udp_socket(socket.AddressFamily(family), rcvbuf=0, sndbuf=0)
    sockets.append(sock)

    udp.bind_freebind(sock, host, 0)

    assert sock.getsockname()[0] == host


def test_binding_a_taken_port_says_who_holds_it(sockets: list[socket.socket]) -> None:
    taken = bound(sockets, socket.AF_INET)
    sock = udp.udp_socket(socket.AF_INET, rcvbuf=0, sndbuf=0)
    sockets.append(sock)
    with pytest.raises(udp.UdpSetupError, match="another program already receives"):
        udp.bind_freebind(sock, *endpoint(taken))


def test_udp_socket_is_non_blocking_with_the_buffers_asked(sockets: list[socket.socket]) -> None:
    sock = udp.udp_socket(socket.AF_INET, rcvbuf=1 << 20, sndbuf=1 << 20)
    sockets.append(sock)
    assert not sock.getblocking()
    assert udp.set_buffers(sock) == (1 << 20, 1 << 20)  # at most rmem_max without root


def test_joining_a_unicast_address_is_explained(sockets: list[socket.socket]) -> None:
    with pytest.raises(udp.UdpSetupError, match="not a multicast address"):
        udp.join_group(bound(sockets, socket.AF_INET), "198.18.0.1", "lo")


def test_an_unknown_interface_is_named() -> None:
    with pytest.raises(udp.UdpSetupError, match="no network interface named 'nosuch0'"):
        udp.interface_index("nosuch0")


_NO_CAPS_PROBE = """
import socket, sys
from vipcast.linux import udp
try:
    udp.transparent_socket(socket.AF_INET6)
except udp.UdpSetupError as exc:
    sys.exit(str(exc))
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_transparent_socket_without_the_capability_says_which_one_it_needs() -> None:
    argv = [sys.executable, "-c", _NO_CAPS_PROBE]
    if os.geteuid() == 0:  # drop every capability; as another user there are none
        argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert "needs CAP_NET_RAW or CAP_NET_ADMIN" in done.stderr
