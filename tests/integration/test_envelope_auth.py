"""Keyed envelopes in the lab: replays, forgeries and rotations change no delivery.

Both nodes run with ``[cluster.auth]`` (keys in files). An intruder on the LAN
(198.18.0.50, inside the LAN subnet, so a "member" by default) listens to the group,
keeps what the relay sends, and later re-sends it: from its own address, and spoofed
from the relay's address with a raw socket. It also sends envelopes and NACKs it
forged without the key. Every one is counted by reason at the receivers (or at the
relay for NACKs), and the apps on both nodes get exactly what the remote sent.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.lab.nemesis import INTRUDER, add_intruder, send_raw, udp_packet
from tests.lab.nodes import VipcastNode, start_node
from tests.lab.udp import UdpSink, send_numbered
from tests.lab.wait import wait_until
from vipcast import keys
from vipcast.core import envelope as env
from vipcast.lab.site import VIP, Host, Site, node_address

pytestmark = pytest.mark.root

GROUP = ("239.255.86.1", 8601)
FEEDS = [{"name": "radar", "port": 8600, "deliver": ["127.0.0.1:9600"]}]
WRONG = b"not the cluster key, 32 bytes ok"


def key_file(site: Site, name: str) -> Path:
    path = site.lab.workdir / name
    if not path.exists():
        keys.write_key_file(path, keys.new_key())
    return path


def auth_toml(site: Site, ids: list[int], active: int) -> str:
    listed = ", ".join(f'{i} = "file:{key_file(site, f"k{i}")}"' for i in ids)
    return f"[cluster.auth]\nkeys = {{ {listed} }}\nactive_key = {active}\n"


def keyed_pair(site: Site, ids: list[int], active: int) -> tuple[VipcastNode, VipcastNode]:
    cluster = {"group": f"{GROUP[0]}:{GROUP[1]}"}
    extra = auth_toml(site, ids, active)
    n1 = start_node(site, 1, election={"priority": 150}, cluster=cluster, feeds=FEEDS, extra=extra)
    n2 = start_node(site, 2, cluster=cluster, feeds=FEEDS, extra=extra)
    n1.wait_state("MASTER")
    n2.wait_state("BACKUP")
    return n1, n2


def feeds_status(node: VipcastNode) -> dict[str, Any]:
    return dict(node.status()["feeds"])


def rejected(node: VipcastNode, what: str = "rejected_envelopes") -> dict[str, int]:
    return dict(feeds_status(node).get(what, {}))


class Ear:
    """The intruder's capture of the group: every envelope with its source, as sent."""

    def __init__(self, host: Host) -> None:
        self.sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", GROUP[1]))
        mreq = socket.inet_aton(GROUP[0]) + socket.inet_aton(INTRUDER)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self.sock.settimeout(0.05)
        self.heard: list[tuple[bytes, tuple[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.heard.append((data, (src[0], src[1])))

    def data(self) -> list[tuple[bytes, tuple[str, int]]]:
        """The DATA envelopes heard (decoded without the key: a node without one can)."""
        found = []
        for wire, src in list(self.heard):
            if isinstance(env.decode_message_untrusted(wire), env.Data):
                found.append((wire, src))
        return found

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def send_from_intruder(intruder: Host, payloads: list[bytes], dst: tuple[str, int]) -> None:
    sock = intruder.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(INTRUDER))
        for payload in payloads:
            sock.sendto(payload, dst)
    finally:
        sock.close()


def forgeries(data: env.Data) -> dict[str, bytes]:
    """Envelopes that, believed, would derail the session ``data`` belongs to."""
    last = data.first_seq + len(data.datagrams) - 1
    end = env.EndOfSession(data.feed, data.node, data.session, last)
    gram = env.Datagram(("198.19.0.2", 40000), (VIP, 8600), b"forged", time.time_ns())
    more = env.Data(data.feed, data.node, data.session, last + 1, (gram,))
    now = time.time_ns()
    return {
        "no_tag": env.encode_end_of_session(end),
        "bad_tag": env.encode_data(more, auth=env.Signer(1, WRONG), now=now),
        "unknown_key": env.encode_end_of_session(end, auth=env.Signer(77, WRONG), now=now),
    }


def test_replayed_and_forged_envelopes_change_nothing_and_are_counted(site: Site) -> None:
    intruder = add_intruder(site)
    n1, n2 = keyed_pair(site, [1], 1)
    apps = [UdpSink(node, "127.0.0.1", 9600) for node in site.nodes]
    ear = Ear(intruder)
    try:
        first = send_numbered(site.remote, (VIP, 8600), 300, rate=2000)
        for app in apps:
            wait_until(lambda app=app: len(app.received) >= 300, 10, what="the first 300")
        wait_until(lambda: len(ear.data()) >= 20, 5, what="the intruder heard DATA")
        captured = ear.data()[:20]
    finally:
        ear.close()
    relay = captured[0][1]
    assert relay[0] == node_address(1)
    replays = [wire for wire, _ in captured]
    send_from_intruder(intruder, replays, GROUP)  # from 198.18.0.50, a LAN address
    spoofed = [(udp_packet(relay, GROUP, w), GROUP[0]) for w in replays]
    send_raw(intruder, spoofed)  # from the relay's own address and port
    latest = env.decode_message_untrusted(captured[-1][0])
    assert isinstance(latest, env.Data)
    forged = forgeries(latest)
    send_from_intruder(intruder, list(forged.values()), GROUP)
    send_raw(intruder, [(udp_packet(relay, GROUP, w), GROUP[0]) for w in forged.values()])
    # node2 took the originals from the LAN once: every copy is a replay there. node1 (the
    # relay) takes its own in-process, so its id from the LAN is a replay; and its kernel
    # drops the packets spoofed with its own address (a local source from outside).
    expected = [
        (n1, {"replay": len(replays), "no_tag": 1, "bad_tag": 1, "unknown_key": 1}),
        (n2, {"replay": 2 * len(replays), "no_tag": 2, "bad_tag": 2, "unknown_key": 2}),
    ]
    for node, counts in expected:
        wait_until(
            lambda node=node, counts=counts: rejected(node) == counts,
            5,
            what=f"node{node.index} counted {counts}",
        )
    second = send_numbered(site.remote, (VIP, 8600), 300, rate=2000)
    for app in apps:
        wait_until(lambda app=app: len(app.received) >= 600, 10, what="the next 300")
        time.sleep(0.3)  # anything extra the forgeries drew would arrive by now
        assert app.payloads == first + second  # each once, in order, nothing forged
    for node, counts in expected:
        assert rejected(node) == counts
        assert feeds_status(node)["radar"]["duplicates"] == 0  # refused before the sequencer


def sighup(node: VipcastNode, site: Site, ids: list[int], active: int) -> None:
    """Rewrite ``node``'s [cluster.auth] and send SIGHUP."""
    text = node.config.read_text()
    head, rest = text.split("[cluster.auth]\n", 1)
    rest = rest.split("\n", 2)[2]  # drop the keys and active_key lines
    node.config.write_text(head + auth_toml(site, ids, active) + rest)
    os.kill(node.proc.pid, signal.SIGHUP)


def uses(node: VipcastNode, ids: list[int], active: int) -> bool:
    auth = feeds_status(node).get("cluster_auth", {})
    return bool(auth.get("keys") == ids and auth.get("active_key") == active)


def test_a_key_rotation_by_sighup_during_traffic_loses_nothing(site: Site) -> None:
    n1, n2 = keyed_pair(site, [1], 1)
    assert uses(n1, [1], 1)
    apps = [UdpSink(node, "127.0.0.1", 9600) for node in site.nodes]
    count, rate = 6000, 1500  # 4 s of traffic while the keys change three times
    sent: list[bytes] = []
    sender = threading.Thread(
        target=lambda: sent.extend(send_numbered(site.remote, (VIP, 8600), count, rate=rate))
    )
    sender.start()
    try:
        wait_until(lambda: all(len(a.received) > 300 for a in apps), 5, what="traffic flowing")
        for ids, active in (([1, 2], 1), ([1, 2], 2), ([2], 2)):  # add, switch, remove
            for node in (n1, n2):
                sighup(node, site, ids, active)
            for node in (n1, n2):
                wait_until(
                    lambda node=node, ids=ids, active=active: uses(node, ids, active),
                    5,
                    what=f"node{node.index} on keys {ids}, active {active}",
                )
            time.sleep(0.5)  # traffic under each step (the step's duration, not a sync)
        assert sender.is_alive(), "the rotation should happen during the traffic"
    finally:
        sender.join(30)
    for app in apps:
        wait_until(lambda app=app: len(app.received) >= count, 10, what=f"{count} at each app")
        assert app.payloads == sent
    for node in (n1, n2):
        assert rejected(node) == {}
        assert feeds_status(node)["radar"]["lost"] == 0


def settled(read: Callable[[], int], stats_interval: float = 0.5) -> int:
    """``read()`` once two readings a stats interval apart agree (counters come in batches)."""
    seen: list[int] = []

    def same() -> bool:
        seen.append(read())
        return len(seen) >= 2 and seen[-1] == seen[-2]

    wait_until(same, 5, interval=stats_interval + 0.1, what="counters settled")
    return seen[-1]


def test_a_nack_without_a_valid_tag_is_refused(site: Site) -> None:
    intruder = add_intruder(site)
    n1, _n2 = keyed_pair(site, [1], 1)
    app2 = UdpSink(site.nodes[1], "127.0.0.1", 9600)
    ear = Ear(intruder)
    try:
        send_numbered(site.remote, (VIP, 8600), 50, rate=2000)
        wait_until(lambda: len(app2.received) >= 50, 5, what="node2 has all 50")
        relay = ear.data()[-1][1]  # where the relay sends from and hears NACKs
    finally:
        ear.close()
    resent_before = settled(lambda: feeds_status(n1)["radar"]["retransmitted"])
    radar = feeds_status(n1)["radar"]  # (what node2's own NACKs drew while joining, if any)
    nack = env.Nack(1, 12, radar["session"], 1, 50)  # as node2 would ask
    unsigned = env.encode_nack(nack)
    wrong = env.encode_nack(nack, auth=env.Signer(1, WRONG), now=time.time_ns())
    node2_receiver = (node_address(2), 8601)  # spoofed: node2's receiver is allowed to ask
    send_raw(
        intruder, [(udp_packet(node2_receiver, relay, w), relay[0]) for w in (unsigned, wrong)]
    )
    want = {"no_tag": 1, "bad_tag": 1}
    wait_until(lambda: rejected(n1, "rejected_nacks") == want, 5, what=f"NACKs refused: {want}")
    time.sleep(0.3)  # an answer, had there been one, would be out by now
    assert feeds_status(n1)["radar"]["retransmitted"] == resent_before
    assert len(app2.received) == 50
