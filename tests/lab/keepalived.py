"""keepalived as a real VRRP peer inside a lab host: its config, and launching it.

Each instance gets its own directory under the lab's workdir (config, pid files), so
several can run at once, one per namespace. It runs in the foreground (``--dont-fork``)
and logs to its console (``--log-console --log-detail --no-syslog``), which the lab keeps
in the process log and attaches to failed test reports. ``--vrrp`` runs only the VRRP
child, no health checkers.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
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
    auth_hmac: Mapping[str, Any] | None = None,
) -> str:
    """One ``vrrp_instance`` (VRRPv3 by default) holding ``vips`` on ``interface``.

    ``auth_hmac`` (keepalived >= 2.4 only): ``{"keys": {1: "hex:..."}, "active_key": 1,
    "mode": "enforce", ...}``, each other item written as one ``name value`` line.
    """
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
    if auth_hmac is not None:
        instance += _auth_hmac_block(auth_hmac)
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


def _auth_hmac_block(auth: Mapping[str, Any]) -> list[str]:
    lines = ["auth_hmac {"]
    lines += [f"    key {key_id} {value}" for key_id, value in auth["keys"].items()]
    lines += [f"    {name} {value}" for name, value in auth.items() if name != "keys"]
    return [*lines, "}"]


def start_keepalived(
    host: Host,
    lab: Lab,
    config: str | None = None,
    *,
    binary: str = "keepalived",
    **options: Any,
) -> NsProcess:
    """Run keepalived (``binary``) in ``host`` with ``config`` (or ``keepalived_config``).

    Its directory is its TMPDIR too, where SIGUSR2 makes it write ``keepalived.stats``.
    """
    text = config if config is not None else keepalived_config(**options)
    workdir = lab.workdir / f"keepalived-{host.name}-{next(_instances)}"
    workdir.mkdir(parents=True)
    conf = workdir / "keepalived.conf"
    conf.write_text(text)
    argv = [
        binary,
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--no-syslog",
        f"--use-file={conf}",
        f"--pid={workdir / 'keepalived.pid'}",
        f"--vrrp_pid={workdir / 'vrrp.pid'}",
    ]
    if binary == "keepalived":  # Debian's has checkers and BFD; the anchor build neither
        # (there ``--vrrp`` does not exist and would abbreviate ``--vrrp_pid``)
        argv += [
            "--vrrp",
            f"--checkers_pid={workdir / 'checkers.pid'}",
            f"--bfd_pid={workdir / 'bfd.pid'}",
        ]
    return host.spawn(argv, name="keepalived", env={"TMPDIR": str(workdir)})


def config_path(proc: NsProcess) -> Path:
    """The configuration file a keepalived of ``start_keepalived`` reads."""
    for arg in proc.args:
        if arg.startswith("--use-file="):
            return Path(arg.partition("=")[2])
    raise ValueError("not started by start_keepalived")
