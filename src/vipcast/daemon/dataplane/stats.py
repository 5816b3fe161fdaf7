"""Per-feed counters the data plane reports to the main process."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class FeedStats:
    relayed: int = 0  # datagrams received on VIP:port and sent to the cluster
    envelopes: int = 0  # DATA envelopes sent (first transmissions)
    oversized: int = 0  # too big for one unfragmented envelope (sent fragmented)
    dropped_too_big: int = 0  # too big for any envelope
    not_master: int = 0  # received while not master (drained during handover)
    fanout_errors: int = 0  # sends to receivers that failed (others unaffected)
    retransmitted: int = 0  # datagrams resent in answer to NACKs
    unavailable: int = 0  # datagrams asked for that were no longer buffered
    delivered: int = 0
    lost: int = 0
    recovered: int = 0
    duplicates: int = 0
    delivery_errors: int = 0
    replies_sent: int = 0
    replies_dropped: int = 0
    split_brains: int = 0  # sessions of another relay found after a split (reported lost)
    not_leader: int = 0  # envelopes of relays other than the elected master's (ignored)
    implausible: int = 0  # claims not believed (far jumps, ends before held data, ...)
    withdrawn: int = 0  # claims taken back (data after a claimed end, "not sent" tails)
    wrong_relay: int = 0  # a session's envelopes from another address than its relay's
    fenced: int = 0  # envelopes of a term below the highest believed (a deposed leader's)
    nacks_refused: int = 0  # NACKs not answered (not a member, over the byte budget)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
