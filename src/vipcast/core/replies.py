"""Who answers: the rule that makes each reply leave the cluster once (pure).

Every node's apps compute the same answers to the same delivered datagrams; only one
node may send each answer on. The one that does is the node whose own relay's session
its receiver is delivering, provided it holds the VIPs: at a planned handover both
nodes switch at the same record (the old session's end), so the old master answers its
session to the end and the new one from its first record; a master whose election is
frozen while another took over answers only what its own relay received. Before
anything has been delivered, the election's view decides.

A reply can also name the session of the request it answers (``vipcast.Sender``): then
only the node whose relay relayed that request sends it, whatever is being delivered
when the reply reaches the data plane. That closes the one window the rule above
leaves: an app that answers the old session's last requests late, after the switch.
"""

from __future__ import annotations

from typing import Final

UNNAMED: Final = 1  # the session a reply names when it answers no request in particular


def answers(*, holds_vips: bool, delivering: int | None, own_session: int, leads: bool) -> bool:
    """Whether this node sends its apps' replies on now.

    ``delivering``: the session the receiver is delivering on the feed (None: none yet);
    ``own_session``: this node's relay's session on it; ``leads``: the election sees
    this node as master.
    """
    if not holds_vips:
        return False
    if delivering is None:
        return leads
    return delivering == own_session


def answers_request(*, holds_vips: bool, request_session: int, own_session: int) -> bool:
    """Whether this node sends a reply naming ``request_session``: only its relay's own."""
    return holds_vips and request_session == own_session
