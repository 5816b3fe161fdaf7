"""Relay side of gap recovery: the bounded buffer that answers NACKs, and a NACK limiter.

Pure: ``now`` is a monotonic clock in nanoseconds. The buffer keeps the record
bytes of the last datagrams sent on one session of a feed (see
``envelope.RecordEncoder``), so a retransmission is only a new DATA header
around stored bytes (``envelope.DataFramer.frame(..., retransmission=True)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

from vipcast.core.envelope import UnavailableReason


@dataclass(frozen=True, slots=True)
class Served:
    """The answer to a NACK: records to resend and the ranges that cannot be.

    ``records[i]`` is sequence number ``first + i``. ``unavailable`` holds
    ``(first, count, reason)`` triples, each one UNAVAILABLE message.
    """

    first: int
    records: tuple[bytes, ...]
    unavailable: tuple[tuple[int, int, UnavailableReason], ...]


class RetransmitBuffer:
    """The most recent records of one session, bounded by count, bytes and age.

    Records are appended with consecutive sequence numbers; the oldest are
    evicted first. A new session starts with a new buffer (or ``clear()``).
    """

    def __init__(
        self, *, max_count: int = 65536, max_bytes: int = 64 << 20, max_age_ns: int = 5_000_000_000
    ) -> None:
        if max_count < 1 or max_bytes < 1 or max_age_ns < 0:
            raise ValueError("max_count and max_bytes must be >= 1, max_age_ns >= 0")
        self.max_count, self.max_bytes, self.max_age_ns = max_count, max_bytes, max_age_ns
        self.clear()

    def clear(self) -> None:
        """Forget everything (a new session)."""
        self._records: list[bytes] = []
        self._times: list[int] = []
        self._head = 0  # index of the oldest record still held
        self._base = 0  # its sequence number
        self._next = 0  # the sequence number the next append must carry (0: any)
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._records) - self._head

    @property
    def first_seq(self) -> int | None:
        """The oldest sequence number held."""
        return self._base if len(self) else None

    @property
    def last_seq(self) -> int | None:
        """The newest sequence number appended (held or not)."""
        return self._next - 1 if self._next else None

    def append(self, seq: int, record: bytes, now: int) -> None:
        """Keep ``record``, sent as ``seq`` at ``now``; raises ValueError if not consecutive."""
        self.extend(seq, (record,), now)

    def extend(self, first: int, records: Sequence[bytes], now: int) -> None:
        """Keep ``records``, sent as ``first``, ``first + 1``, ... at ``now`` (a relay's batch).

        Raises ValueError if ``first`` does not follow the last sequence number kept.
        """
        if not records:
            return
        if self._next and first != self._next:
            raise ValueError(f"sequence {first} appended after {self._next - 1}")
        if not len(self):
            self._base = first
        self._records.extend(records)
        self._times.extend(repeat(now, len(records)))
        self.nbytes += sum(map(len, records))
        self._next = first + len(records)
        self.evict(now)

    def evict(self, now: int) -> None:
        """Drop records beyond the count or byte bound, or older than the age bound."""
        records, times, head = self._records, self._times, self._head
        end = len(records)
        cut = head + max(0, end - head - self.max_count)  # the count bound, at once
        nbytes = self.nbytes - sum(map(len, records[head:cut]))
        oldest, max_bytes = now - self.max_age_ns, self.max_bytes
        while cut < end and (nbytes > max_bytes or times[cut] < oldest):
            nbytes -= len(records[cut])
            cut += 1
        if cut > head:
            records[head:cut] = repeat(b"", cut - head)  # free the bytes, keep the indexes
            self._base += cut - head
            self._head = head = cut
        self.nbytes = nbytes
        if head > 1024 and head * 2 > end:
            del records[:head], times[:head]
            self._head = 0

    def get_range(self, first: int, count: int, now: int) -> Served:
        """What can be resent of ``first``..``first+count-1``, and what cannot."""
        self.evict(now)
        last = first + count - 1
        held_lo = self._base if len(self) else self._next
        lo, hi = max(first, held_lo), min(last, self._next - 1 if self._next else 0)
        missing: list[tuple[int, int, UnavailableReason]] = []
        if first < min(lo, last + 1):
            missing.append((first, min(lo, last + 1) - first, UnavailableReason.EVICTED))
        records: tuple[bytes, ...] = ()
        if lo <= hi:
            start = self._head + lo - self._base
            records = tuple(self._records[start : start + hi - lo + 1])
        not_sent = max(hi + 1, lo, first)
        if not_sent <= last:
            missing.append((not_sent, last - not_sent + 1, UnavailableReason.NOT_SENT))
        return Served(lo, records, tuple(missing))


class NackLimiter:
    """Token buckets, one per receiver: how many datagrams a relay may resend to each.

    ``rate`` datagrams per second, up to ``burst`` at once; at most ``max_peers``
    receivers are tracked (the least recently seen is forgotten).
    """

    def __init__(self, rate: float = 20_000.0, burst: int = 4096, max_peers: int = 1024) -> None:
        if rate <= 0 or burst < 1 or max_peers < 1:
            raise ValueError("rate, burst and max_peers must be positive")
        self.rate, self.burst, self.max_peers = rate, burst, max_peers
        self._buckets: dict[object, tuple[float, int]] = {}  # peer -> (tokens, last update)

    def grant(self, peer: object, wanted: int, now: int) -> int:
        """How many of ``wanted`` datagrams ``peer`` may have resent now (0..wanted)."""
        tokens, then = self._buckets.pop(peer, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0, now - then) * self.rate / 1e9)
        granted = min(wanted, int(tokens))
        self._buckets[peer] = (tokens - granted, now)
        if len(self._buckets) > self.max_peers:
            del self._buckets[next(iter(self._buckets))]
        return granted


class ByteBudget:
    """Token buckets in bytes, one per requester: what NACKs may draw from a relay.

    ``rate`` bytes per second, up to ``burst`` at once, at most ``max_peers``
    requesters tracked. With the datagram bound of :class:`NackLimiter` it caps
    what any one receiver (or anyone spoofing its address) can make a relay send.
    """

    def __init__(
        self, rate: float = 8 * 2**20, burst: int = 1 << 20, max_peers: int = 1024
    ) -> None:
        if rate <= 0 or burst < 1 or max_peers < 1:
            raise ValueError("rate, burst and max_peers must be positive")
        self.rate, self.burst, self.max_peers = rate, burst, max_peers
        self._buckets: dict[object, tuple[float, int]] = {}

    def take(self, peer: object, sizes: Sequence[int], now: int) -> int:
        """How many of the records of ``sizes`` bytes, from the first, ``peer`` may have."""
        tokens, then = self._buckets.pop(peer, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0, now - then) * self.rate / 1e9)
        taken = 0
        for size in sizes:
            if size > tokens:
                break
            tokens -= size
            taken += 1
        self._buckets[peer] = (tokens, now)
        if len(self._buckets) > self.max_peers:
            del self._buckets[next(iter(self._buckets))]
        return taken
