"""Independent oracles: what iproute2 itself reports, never our own code."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from vipcast.lab.site import Host


def ip_json(host: Host, *args: str) -> Any:
    out = subprocess.run(
        ["ip", "-n", host.ns, "-json", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out or "[]")


def addresses(host: Host, ifname: str = "eth0") -> set[str]:
    """Addresses on ``ifname`` as ``ip -json addr`` reports them."""
    links = ip_json(host, "addr", "show", "dev", ifname)
    return {a["local"] for link in links for a in link.get("addr_info", [])}


def neighbour_mac(host: Host, address: str) -> str | None:
    """The MAC ``host`` has for ``address`` in its ARP/ND table (``ip -json neigh``)."""
    for entry in ip_json(host, "neigh", "show", "to", address):
        if entry.get("dst") == address and "lladdr" in entry:
            return str(entry["lladdr"])
    return None


def link_mac(host: Host, ifname: str = "eth0") -> str:
    return str(ip_json(host, "link", "show", "dev", ifname)[0]["address"])
