"""packaging/wireshark/vipcast.lua in tshark, on envelopes of every type and version.

The messages are made by the product's codec (1.2), the frozen 1.0 codec, and 1.1
(a 1.2 message without its term); tshark reads them from a pcap and prints the
dissector's fields. A lab capture is dissected by tests/integration/test_wireshark_dissector.py.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from tests.unit.external_tools import require
from tests.unit.legacy import envelope_1_0 as v10
from tests.unit.promql_names import ROOT
from vipcast.core import envelope as env
from vipcast.demo import cat048

DISSECTOR = ROOT / "packaging" / "wireshark" / "vipcast.lua"
SESSION = 0x018BCFE568000007
KEY = bytes(range(32))
NOW = 1_796_000_000_000_000_000
SENDER = ("198.19.0.2", 40123)
VIP = ("198.18.0.100", 8600)
SIX = (("fd00:198:19::2", 5000), ("fd00:198:18::64", 8600))
FIELDS = (
    "vipcast.version", "vipcast.type", "vipcast.hlen", "vipcast.flags", "vipcast.feed",
    "vipcast.node", "vipcast.session", "vipcast.first_seq", "vipcast.last_seq",
    "vipcast.next_session", "vipcast.count", "vipcast.reason", "vipcast.auth.key_id",
    "vipcast.auth.counter", "vipcast.term", "vipcast.record.seq", "vipcast.record.src",
    "vipcast.record.srcport", "vipcast.record.dst", "vipcast.record.dstport",
    "vipcast.record.src6", "vipcast.record.length", "asterix.category", "_ws.expert",
)  # fmt: skip


def report(track: int) -> cat048.Report:
    return cat048.Report(
        sac=1, sic=2, tod_raw=1000, rho_nm=10.0, theta_deg=45.0, mode3a="4521",
        flight_level=350.0, address=0xABCDEF, callsign="TEST1", track_number=track,
        speed_nm_s=0.1, heading_deg=90.0,
    )  # fmt: skip


def datagram(track: int, src: tuple[str, int] = SENDER, dst: tuple[str, int] = VIP) -> env.Datagram:
    return env.Datagram(src, dst, cat048.encode([report(track)]), NOW + track)


def as_1_1(message: bytes) -> bytes:
    """A 1.2 message as a 1.1 sender wrote it: no term at the end of the header."""
    hlen = message[4]
    head = bytearray(message[: hlen - 8])
    head[2], head[4] = 0x11, hlen - 8
    return bytes(head) + message[hlen:]


def messages() -> list[bytes]:
    signer = env.Signer(3, KEY)
    data = env.Data(1, 7, SESSION, 5, (datagram(1), datagram(2)))
    return [
        as_1_1(env.encode_data(data)),  # 1: 1.1 DATA, two records
        as_1_1(  # 2: 1.1 DATA, keyed, a retransmission
            env.encode_data(
                env.Data(1, 7, SESSION, 9, (datagram(3),), retransmission=True),
                auth=signer,
                now=NOW,
            )
        ),
        env.encode_heartbeat(env.Heartbeat(1, 7, SESSION, 10, closing=True)),  # 3
        env.encode_end_of_session(env.EndOfSession(1, 7, SESSION, 10, SESSION + 1)),  # 4
        env.encode_nack(env.Nack(1, 12, SESSION, 6, 3), auth=signer, now=NOW + 1),  # 5
        env.encode_unavailable(  # 6
            env.Unavailable(1, 7, SESSION, 6, 3, env.UnavailableReason.EVICTED)
        ),
        v10.encode_data(  # 7: 1.0 DATA with a 1.0 tag (no auth block)
            v10.Data(1, 7, SESSION, 11, (v10.Datagram(SENDER, VIP, b"\x30\x00\x03", NOW),)),
            key=KEY,
        ),
        env.encode_data(replace(data, term=42), auth=signer, now=NOW + 2),  # 8: 1.2 keyed
        env.encode_heartbeat(env.Heartbeat(1, 7, SESSION, 10, term=43)),  # 9: 1.2
        env.encode_data(env.Data(1, 7, SESSION, 12, (datagram(4, *SIX),))),  # 10: IPv6
    ]


def dissect(tmp_path: Path) -> list[dict[str, str]]:
    tshark = require("tshark", "tshark")
    pcap = tmp_path / "envelopes.pcap"
    lan4 = Ether() / IP(src="198.18.0.11", dst="239.255.86.1")
    lan6 = Ether() / IPv6(src="fd00:198:18::11", dst="ff12::8601")
    *four, six = messages()
    frames = [lan4 / UDP(sport=8601, dport=8601) / m for m in four]
    frames.append(lan6 / UDP(sport=8601, dport=8601) / six)
    wrpcap(str(pcap), frames)
    args = [tshark, "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap), "-T", "fields"]
    for field in FIELDS:
        args += ["-e", field]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Lua" not in done.stderr, done.stderr  # a script error is only a warning
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert len(rows) == len(frames), done.stdout
    return [dict(zip(FIELDS, row, strict=True)) for row in rows]


def test_every_type_and_version_is_decoded(tmp_path: Path) -> None:
    rows = dissect(tmp_path)
    for row in rows:
        assert row["vipcast.session"] == "0x018bcfe568000007", row
        assert row["_ws.expert"] == "", row  # nothing malformed
    data, keyed, heartbeat, end, nack, unavailable, old, term, term_hb, six = rows
    assert data["vipcast.version"] == "0x11"
    assert data["vipcast.first_seq"] == "5"
    assert data["vipcast.record.seq"] == "5,6"
    assert data["vipcast.record.src"] == "198.19.0.2,198.19.0.2"
    assert data["vipcast.record.srcport"] == "40123,40123"
    assert data["vipcast.record.dst"] == "198.18.0.100,198.18.0.100"
    assert data["vipcast.record.dstport"] == "8600,8600"
    assert data["asterix.category"] == "48,48"  # each payload handed on by its port
    assert (keyed["vipcast.flags"], keyed["vipcast.auth.key_id"]) == ("0x03", "3")
    assert keyed["vipcast.record.seq"] == "9"
    assert keyed["vipcast.auth.counter"] == f"{NOW:#018x}"
    assert heartbeat["vipcast.flags"] == "0x04"
    assert heartbeat["vipcast.last_seq"] == "10"
    assert end["vipcast.next_session"] == "0x018bcfe568000008"
    assert (nack["vipcast.type"], nack["vipcast.node"], nack["vipcast.count"]) == ("4", "12", "3")
    assert unavailable["vipcast.reason"] == "1"
    assert (old["vipcast.version"], old["vipcast.hlen"], old["vipcast.auth.key_id"]) == (
        "0x10",
        "32",
        "",
    )
    assert old["vipcast.record.seq"] == "11"
    assert old["vipcast.record.length"] == "3"
    assert (term["vipcast.version"], term["vipcast.hlen"], term["vipcast.term"]) == (
        "0x12",
        "52",
        "42",
    )
    assert term["vipcast.auth.key_id"] == "3"
    assert term["vipcast.record.seq"] == "5,6"
    assert term["asterix.category"] == "48,48"
    assert (term_hb["vipcast.hlen"], term_hb["vipcast.term"]) == ("36", "43")
    assert data["vipcast.term"] == keyed["vipcast.term"] == ""  # 1.1: no term
    assert six["vipcast.record.src6"] == "fd00:198:19::2"
    assert six["asterix.category"] == "48"


def test_a_truncated_envelope_is_flagged_not_a_crash(tmp_path: Path) -> None:
    tshark = require("tshark", "tshark")
    whole = env.encode_data(env.Data(1, 7, SESSION, 5, (datagram(1),)))
    pcap = tmp_path / "cut.pcap"
    udp = Ether() / IP(src="198.18.0.11", dst="239.255.86.1") / UDP(sport=8601, dport=8601)
    wrpcap(str(pcap), [udp / whole[:-10], udp / whole[:25]])
    done = subprocess.run(
        [tshark, "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap), "-T", "fields",
         "-e", "vipcast.session", "-e", "_ws.expert.message"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "0x018bcfe568000007\ttruncated payload"
    assert lines[1].startswith("0x018bcfe568000007\theader length outside"), lines
