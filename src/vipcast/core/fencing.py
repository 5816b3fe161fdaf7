"""Fencing: a receiver drops what a deposed leader's relay sends.

Pure, one :class:`Fence` per feed, consulted by the sequencer before a message is
routed. Every envelope (protocol 1.2) carries its relay's **term**: with the etcd
backend, the creation revision of the election key the relay's node held when its
session began (strictly increasing, issued by the quorum); 0 with VRRP (no fencing).

The fence keeps the **floor**, the highest term this receiver believes, and drops a
message of a lower term (counted as ``fenced``), except:

* a resend (DATA flagged RETRANSMISSION) or an UNAVAILABLE: answers to this
  receiver's own NACKs, for numbers it learned while that term was the floor;
* a session that announced a planned handover (a CLOSING HEARTBEAT heard while its
  term was the floor), for ``grace_ns`` after the floor rose above it: the old leader
  resigned on purpose and keeps relaying until traffic has moved (make-before-break).

**What raises the floor.** A term is believed when this node's election names it (the
``leader`` op carries the leader's term, which the election read from the quorum), or,
with cluster keys (``trusted``), when an authentic envelope carries it: key holders
are members and stamp the term their quorum issued. Without keys a higher term in an
envelope is *not* believed, whoever seems to send it, and however often: a forged
envelope claiming term 2**63 would otherwise fence the real leader for ever (unlike a
far sequence jump, which the sequencer lets repetition confirm, the damage of a false
term has no bound). Such a message is passed on unfenced and moves nothing here; the
sequencer treats it as it treats any message.
"""

from __future__ import annotations

from typing import Final

from vipcast.core.envelope import Data, Heartbeat, Message, Unavailable

MAX_CLOSING: Final = 64  # sessions remembered as closing (bounded: hostile input)


class Fence:
    """The term floor of one feed; ``admit`` says whether a message may go on."""

    __slots__ = ("_closing", "floor", "grace_ns", "trusted")

    def __init__(self, *, grace_ns: int, trusted: bool = False, floor: int = 0) -> None:
        self.grace_ns, self.trusted, self.floor = grace_ns, trusted, floor
        # (relay, session) -> (its term, until when it may finish; 0: the floor is its term)
        self._closing: dict[tuple[str, int], tuple[int, int]] = {}

    def believe(self, term: int, now: int) -> None:
        """The quorum's word (the election's ``leader`` op) or an authentic envelope's."""
        if term <= self.floor:
            return
        self.floor = term
        for key, (old, until) in self._closing.items():
            if old < term and not until:
                self._closing[key] = (old, now + self.grace_ns)

    def admit(self, msg: Message, relay: str, now: int) -> bool:
        """Whether ``msg``, from host ``relay``, may reach the sequencer (False: fenced)."""
        term = msg.term
        if term > self.floor and self.trusted:
            self.believe(term, now)
        if term >= self.floor:
            if term == self.floor and isinstance(msg, Heartbeat) and msg.closing:
                self._note_closing(relay, msg.session, term)
            return True
        if isinstance(msg, Unavailable) or (isinstance(msg, Data) and msg.retransmission):
            return True
        old, until = self._closing.get((relay, msg.session), (-1, 0))
        return old == term and now < until

    def _note_closing(self, relay: str, session: int, term: int) -> None:
        if (relay, session) not in self._closing and len(self._closing) >= MAX_CLOSING:
            del self._closing[next(iter(self._closing))]
        self._closing[(relay, session)] = (term, 0)
