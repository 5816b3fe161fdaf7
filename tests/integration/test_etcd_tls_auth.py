"""The etcd backend against a real 3-member etcd with TLS, client certificates and users.

The CA and every certificate are made for the test (tests/lab/tlsca.py). etcd requires a
client certificate its CA signed (``--client-cert-auth``) and, with authentication
enabled, a user: the nodes' certificate names nobody (etcd's JSON gateway refuses a
client certificate with a CommonName under ``--client-cert-auth``), so only their
``user``/``password_file`` (the gateway's /v3/auth/authenticate token, sent by
vipcast.quorum.etcd on each client's session) gets them the election key.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab.nodes import VipcastNode, start_node
from tests.lab.tlsca import CA
from tests.lab.wait import wait_until
from vipcast.lab import etcd
from vipcast.lab.site import WITNESS, Site, node_address

pytestmark = pytest.mark.root
TTL = 2
KEY = "vipcast/leader"
ROOT_PW = "root-secret"
NODE_PW = "node-secret"


@pytest.fixture
def secure(site: Site) -> tuple[etcd.EtcdCluster, dict[str, Any]]:
    """TLS cluster with client-certificate auth and users; the nodes' [etcd] settings."""
    d = site.lab.workdir
    ca = CA(d)
    server = ca.issue("server", "etcd-lab", ips=[node_address(1), node_address(2), WITNESS])
    client = ca.issue("client", "", client=True)  # the gateway refuses a CommonName
    tls = etcd.ServerTls(str(ca.file), str(server.cert), str(server.key), client_cert_auth=True)
    cluster = etcd.build_etcd_cluster(site, tls=tls)
    enable_auth(cluster)
    password = d / "etcd-password"
    fd = os.open(password, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(NODE_PW + "\n")
    settings = {
        "lease_ttl": TTL,
        "renew_interval": 0.25,
        "request_timeout": 0.5,  # etcd checks a password with bcrypt: ~0.1 s, more under load
        "ca_file": str(ca.file),
        "cert_file": str(client.cert),
        "key_file": str(client.key),
        "user": "vipcast",
        "password_file": str(password),
    }
    return cluster, settings


def enable_auth(cluster: etcd.EtcdCluster) -> None:
    """root (for etcdctl) and vipcast, allowed read-write on vipcast/ only; auth on."""
    steps = [
        ("user", "add", "root", f"--new-user-password={ROOT_PW}"),
        ("role", "add", "root"),
        ("user", "grant-role", "root", "root"),
        ("user", "add", "vipcast", f"--new-user-password={NODE_PW}"),
        ("role", "add", "vipcast"),
        ("role", "grant-permission", "vipcast", "--prefix=true", "readwrite", "vipcast/"),
        ("user", "grant-role", "vipcast", "vipcast"),
        ("auth", "enable"),
    ]
    for step in steps:
        cluster.etcdctl("witness", *step)
    cluster.admin = dataclasses.replace(cluster.admin, user=f"root:{ROOT_PW}")


def node(site: Site, cluster: etcd.EtcdCluster, settings: dict[str, Any], i: int) -> VipcastNode:
    endpoints = cluster.endpoints(first=f"node{i}")
    return start_node(
        site, i, election={"backend": "etcd"}, etcd={**settings, "endpoints": endpoints}
    )


def leader_of(nodes: list[VipcastNode]) -> tuple[VipcastNode, VipcastNode]:
    def find() -> tuple[VipcastNode, VipcastNode] | None:
        states = [n.status() for n in nodes]
        masters = [n for n, s in zip(nodes, states, strict=True) if s["state"] == "MASTER"]
        if len(masters) == 1 and all(s["master"] for s in states):
            return masters[0], next(n for n in nodes if n is not masters[0])
        return None

    return wait_until(find, 15, what="one etcd leader, known to both")


def test_leadership_over_tls_with_client_certificates_and_a_user(
    site: Site, secure: tuple[etcd.EtcdCluster, dict[str, Any]]
) -> None:
    cluster, settings = secure
    nodes = [node(site, cluster, settings, 1), node(site, cluster, settings, 2)]
    leader, follower = leader_of(nodes)
    status = leader.status()
    assert status["endpoint"].startswith("https://"), status["endpoint"]
    assert status["term"] > 0
    assert status["watch"]["streams"] >= 1, status["watch"]  # the watch, over TLS, as the user
    got = cluster.etcdctl("witness", "get", KEY, "--print-value-only").stdout.strip()
    assert got == node_address(leader.index)

    # the key is not readable without a user: the certificate alone gets nothing
    anonymous = dataclasses.replace(cluster, admin=dataclasses.replace(cluster.admin, user=None))
    refused = anonymous.etcdctl("witness", "get", KEY, check=False)
    assert refused.returncode != 0, refused.stdout

    # etcd forgets every token (auth disabled and enabled again): the nodes authenticate
    # anew and the leader keeps its term throughout
    transitions = {n.index: n.status()["transitions"] for n in nodes}
    before = sum(sum(n.status()["etcd_errors"].values()) for n in nodes)
    cluster.etcdctl("witness", "auth", "disable")
    cluster.etcdctl("witness", "auth", "enable")
    wait_until(
        lambda: sum(sum(n.status()["etcd_errors"].values()) for n in nodes) > before,
        5,
        what="a request refused with the forgotten token",
    )
    requests = follower.status()["stats"]["requests"]
    wait_until(
        lambda: follower.status()["stats"]["requests"] > requests + 4,
        10,
        what=f"the follower's requests answered again (a new token): {follower.status()}",
    )
    for n in nodes:
        s = n.status()
        assert s["transitions"] == transitions[n.index], s
        assert s["quorum"] is True
    assert leader.status()["term"] == status["term"]
    assert follower.status()["leader_term"] == status["term"]

    # check-config on the very file the node runs: accepted, and a key file others can
    # read is named
    check = [sys.executable, "-m", "vipcast", "check-config", "--offline", str(leader.config)]
    done = subprocess.run(check, capture_output=True, text=True, check=True)
    assert "TLS with a client certificate, user vipcast" in done.stdout, done.stdout
    assert "WARNING" not in done.stdout, done.stdout
    Path(settings["key_file"]).chmod(0o644)
    done = subprocess.run(check, capture_output=True, text=True, check=True)
    assert f"{settings['key_file']} is readable by others" in done.stdout, done.stdout
