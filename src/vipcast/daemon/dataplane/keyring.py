"""The data plane's cluster keys: one signer, a verifier per socket, and reloads.

The relays and the receiver's NACKs sign with one :class:`~vipcast.core.envelope.Signer`
(one counter per process); the receiver socket and the NACK socket each check with
their own :class:`~vipcast.core.envelope.Verifier` (each sees its own part of the
senders' counters). A reload swaps keys in place: every framer holds the signer, so
the next envelope is signed with the new active key, and the replay state is kept.
"""

from __future__ import annotations

import logging
from typing import Any

from vipcast.config import ClusterAuth
from vipcast.core import envelope as env

log = logging.getLogger("vipcast.dataplane")


class Keyring:
    """What the data plane signs and verifies with; all None without cluster keys."""

    def __init__(self, auth: ClusterAuth | None, node_id: int | None = None) -> None:
        self.auth = auth
        self.signer: env.Signer | None = None
        self.envelopes: env.Verifier | None = None  # the receiver socket's
        self.nacks: env.Verifier | None = None  # the relay's NACK socket's
        if auth is not None:
            self.signer = env.Signer(auth.active_key, auth.active_secret, window_ns=auth.window_ns)
            # our own envelopes reach our receiver in-process, never over the LAN
            self.envelopes = env.Verifier(auth.secrets(), window_ns=auth.window_ns, own=node_id)
            self.nacks = env.Verifier(auth.secrets(), window_ns=auth.window_ns)

    def reload(self, new: ClusterAuth | None) -> str | None:
        """Apply ``new`` keys; a reason if they cannot be applied without a restart."""
        if (new is None) != (self.auth is None):
            return "turning cluster keys on or off needs a restart"
        if new is None or new == self.auth:
            return None
        assert self.signer is not None
        assert self.envelopes is not None
        assert self.nacks is not None
        self.signer.rotate(new.active_key, new.active_secret, window_ns=new.window_ns)
        for verifier in (self.envelopes, self.nacks):
            verifier.set_keys(new.secrets(), window_ns=new.window_ns)
        self.auth = new
        log.info("cluster keys reloaded: %s", describe(new))
        return None

    def status(self) -> dict[str, Any] | None:
        return None if self.auth is None else status(self.auth)


def status(auth: ClusterAuth) -> dict[str, Any]:
    """What ``status`` shows of the keys: ids and modes, never a secret."""
    return {
        "active_key": auth.active_key,
        "keys": [k.id for k in auth.keys],
        "anti_replay": auth.anti_replay,
        "time_window": auth.time_window,
    }


def describe(auth: ClusterAuth) -> str:
    ids = ", ".join(str(k.id) for k in auth.keys)
    return f"signing with key {auth.active_key}, accepting {ids} ({auth.anti_replay} anti-replay)"
