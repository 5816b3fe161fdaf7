"""keepalived as a real VRRP peer inside a lab host: its config, and launching it.

Each instance gets its own directory under the lab's workdir (config, pid files), so
several can run at once, one per namespace. It runs in the foreground (``--dont-fork``)
and logs to its console (``--log-console --log-detail --no-syslog``), which the lab keeps
in the process log and attaches to failed test reports. ``--vrrp`` runs only the VRRP
child, no health checkers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from vipcast.lab.process import NsProcess
from vipcast.lab.site import VIP, Host, Lab

_instances = itertools.count(1)


def keepalived_config(
    *,
    interface: str = "eth0",
    vrid: int = 51,
    priority: int = 100,
    advert_int: float = 1,
    vips: Sequence[str] = (f"{VIP}/24",),
    state: str = "BACKUP",
    version: int = 3,
    unicast_src: str | None = None,
    unicast_peers: Sequence[str] = (),
    nopreempt: bool = False,
    checksum_as_v2: bool = False,
    router_id: str = "lab",
) -> str:
    """One ``vrrp_instance`` (VRRPv3 by default) holding ``vips`` on ``interface``."""
    globals_ = [f"router_id {router_id}", f"vrrp_version {version}"]
    if checksum_as_v2:
        # RFC 9568 message-only IPv4 checksum; keepalived >= 2.2.8 only (2.2.7 has no such option)
        globals_.append("v3_checksum_as_v2")
    instance = [
        f"state {state}",
        f"interface {interface}",
        f"virtual_router_id {vrid}",
        f"priority {priority}",
        f"advert_int {advert_int:g}",
        "virtual_ipaddress {",
        *(f"    {vip}" for vip in vips),
        "}",
    ]
    if nopreempt:
        instance.append("nopreempt")
    if unicast_src:
        instance.append(f"unicast_src_ip {unicast_src}")
    if unicast_peers:
        instance += ["unicast_peer {", *(f"    {peer}" for peer in unicast_peers), "}"]
    return "\n".join(
        [
            "global_defs {",
            *(f"    {line}" for line in globals_),
            "}",
            f"vrrp_instance VI_{vrid} {{",
            *(f"    {line}" for line in instance),
            "}",
            "",
        ]
    )


def start_keepalived(host: Host, lab: Lab, config: str | None = None, **options: Any) -> NsProcess:
    """Run keepalived in ``host`` with ``config`` (or ``keepalived_config(**options)``)."""
    text = config if config is not None else keepalived_config(**options)
    workdir = lab.workdir / f"keepalived-{host.name}-{next(_instances)}"
    workdir.mkdir(parents=True)
    conf = workdir / "keepalived.conf"
    conf.write_text(text)
    argv = [
        "keepalived",
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--no-syslog",
        "--vrrp",
        f"--use-file={conf}",
        f"--pid={workdir / 'keepalived.pid'}",
        f"--vrrp_pid={workdir / 'vrrp.pid'}",
        f"--checkers_pid={workdir / 'checkers.pid'}",
        f"--bfd_pid={workdir / 'bfd.pid'}",
    ]
    return host.spawn(argv, name="keepalived")
