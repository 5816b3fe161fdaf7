"""packaging/wireshark/vipcast.lua on a real lab capture, read by tshark.

Two nodes tee a CAT048 feed (keyed envelopes, multicast); tcpdump in node2's namespace
captures the LAN while the remote centre sends numbered CAT048 reports to the VIP.
tshark with the dissector must show the session and sequence numbers node2's
application got, the original sender, the payloads byte for byte, and hand each
payload to Wireshark's own ASTERIX dissector (category 48, the track numbers sent).
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.lab.nodes import start_node
from tests.lab.wait import wait_until
from tests.unit.external_tools import require
from tests.unit.test_wireshark_dissector import DISSECTOR, report
from vipcast import keys
from vipcast.api import Message, Receiver
from vipcast.demo import cat048
from vipcast.lab.site import REMOTE, VIP, Site

pytestmark = pytest.mark.root

REPORTS = 30
SENDER_PORT = 40123
FEEDS = [{"name": "radar", "port": 8600, "deliver": ["127.0.0.1:9600"], "mode": "envelope"}]
# the counters behind the rejection alerts of packaging/prometheus/vipcast-rules.yml
REJECTED = (
    "vipcast_adverts_rejected_total", "vipcast_envelopes_rejected_total",
    "vipcast_nacks_rejected_total",
)  # fmt: skip
FIELDS = (
    "vipcast.session", "vipcast.record.seq", "vipcast.record.src", "vipcast.record.srcport",
    "vipcast.record.dst", "vipcast.record.dstport", "vipcast.record.payload",
    "vipcast.auth.key_id", "asterix.category", "asterix.048_161_TRN",
)  # fmt: skip


def keyed(tmp_path: Path) -> str:
    key = tmp_path / "cluster.key"
    keys.write_key_file(key, keys.new_key())
    return f'[cluster.auth]\nkeys = {{ 1 = "file:{key}" }}\nactive_key = 1\n'


def send_reports(site: Site) -> list[bytes]:
    """REPORTS datagrams from REMOTE:SENDER_PORT to the VIP, track numbers 1..REPORTS."""
    payloads = [cat048.encode([report(track)]) for track in range(1, REPORTS + 1)]
    sock = site.remote.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((REMOTE, SENDER_PORT))
        for payload in payloads:
            sock.sendto(payload, (VIP, 8600))
            time.sleep(0.005)  # paced: a few envelopes, not one batch
    finally:
        sock.close()
    return payloads


def samples(site: Site, i: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Node ``i``'s exposition: (name, labels) -> value."""
    url = "http://127.0.0.1:9586/metrics"
    with site.nodes[i - 1].entered(), urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in values.items() if n == name)


def records(pcap: Path) -> tuple[dict[int, tuple[str, ...]], set[str], list[str]]:
    """Per sequence number its record's fields; the sessions; ASTERIX categories seen."""
    tshark = require("tshark", "tshark")
    args = [tshark, "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap), "-Y", "vipcast.type == 1"]
    args += ["-T", "fields", *(a for f in FIELDS for a in ("-e", f))]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Lua" not in done.stderr, done.stderr
    by_seq: dict[int, tuple[str, ...]] = {}
    sessions: set[str] = set()
    categories: list[str] = []
    for line in done.stdout.splitlines():
        row = dict(zip(FIELDS, line.split("\t"), strict=True))
        sessions.add(row["vipcast.session"])
        assert row["vipcast.auth.key_id"] == "1", row
        categories += row["asterix.category"].split(",")
        columns = [row[f].split(",") for f in FIELDS[1:7]] + [row["asterix.048_161_TRN"].split(",")]
        for seq, *rest in zip(*columns, strict=True):
            by_seq[int(seq)] = tuple(rest)
    return by_seq, sessions, categories


def test_tshark_decodes_a_lab_capture_with_the_dissector(site: Site, tmp_path: Path) -> None:
    require("tcpdump", "tcpdump")
    pcap = tmp_path / "lan.pcap"
    capture = site.nodes[1].spawn(
        ["tcpdump", "-i", "eth0", "-n", "-U", "--immediate-mode", "-Z", "root",
         "-w", str(pcap), "udp", "port", "8601"],
        name="tcpdump",
    )  # fmt: skip
    wait_until(lambda: "listening on" in capture.log.read_text(), 10, what="tcpdump listening")
    with site.nodes[1].entered():
        app = Receiver("127.0.0.1", 9600)
    try:
        both = {"cluster": {"group": "239.255.86.1:8601"}, "metrics": {"listen": "127.0.0.1:9586"}}
        extra = keyed(tmp_path)
        n1 = start_node(site, 1, election={"priority": 150}, feeds=FEEDS, extra=extra, **both)
        n2 = start_node(site, 2, feeds=FEEDS, extra=extra, **both)
        n1.wait_state("MASTER")
        n2.wait_state("BACKUP")
        payloads = send_reports(site)
        got: list[Message | None] = [app.receive(timeout=5) for _ in payloads]
    finally:
        app.close()
    delivered = [m for m in got if m is not None]
    assert [m.payload for m in delivered] == payloads
    wait_until(lambda: payloads[-1] in pcap.read_bytes(), 5, what="the last report captured")
    capture.stop()

    by_seq, sessions, categories = records(pcap)
    assert sessions == {f"{delivered[0].session:#018x}"}
    assert sorted(by_seq) == [m.sequence for m in delivered] == list(range(1, REPORTS + 1))
    for m in delivered:
        src, sport, dst, dport, payload, track = by_seq[m.sequence]
        assert (src, int(sport)) == (REMOTE, SENDER_PORT) == m.source
        assert (dst, int(dport)) == (VIP, 8600) == m.destination
        assert bytes.fromhex(payload) == m.payload
        assert int(track) == m.sequence  # report n carries track number n
    assert set(categories) == {"48"}

    # a healthy keyed cluster: what the alerts count is what happened, and nothing rejected
    delivered_metric = "vipcast_datagrams_delivered_total"
    wait_until(lambda: total(samples(site, 2), delivered_metric) == REPORTS, 5, what="metrics")
    master, backup = samples(site, 1), samples(site, 2)
    assert total(master, "vipcast_datagrams_relayed_total") == REPORTS
    for node in (master, backup):
        assert {name: total(node, name) for name in REJECTED} == dict.fromkeys(REJECTED, 0.0)
        assert total(node, "vipcast_datagrams_lost_total") == 0
