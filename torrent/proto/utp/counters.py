"""What uTP dropped and why: one set of counters per socket, shared by its connections."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["UtpCounters", "UtpStats"]


@dataclass(frozen=True, slots=True)
class UtpStats:
    """A snapshot of :class:`UtpCounters` (see there for each field)."""

    malformed: int
    bad_version: int
    bad_type: int
    bad_connection: int
    ack_unsent: int
    out_of_window: int
    over_window: int
    duplicate_data: int
    duplicate_syn: int
    syn_refused: int
    unexpected: int
    resets_received: int
    resets_sent: int
    timeouts: int
    fast_retransmits: int
    connections_timed_out: int
    zero_window_timeouts: int
    mtu_probes_lost: int
    mtu_too_big: int


@dataclass(slots=True)
class UtpCounters:
    """Counts of dropped or hostile packets and of recoveries. Nothing here raises.

    Attributes:
        malformed: shorter than a header, or a broken extension chain.
        bad_version: a version other than 1 in the low nibble.
        bad_type: a type above ``SYN`` (4).
        bad_connection: for no connection we know (answered with a RESET when it was data).
        ack_unsent: acknowledges sequence numbers we never sent.
        out_of_window: data too far ahead of what we acknowledged, or too far behind.
        over_window: data that would overflow the receive window we advertised.
        duplicate_data: data we had already received (re-acknowledged).
        duplicate_syn: a repeated SYN for a connection we already accepted (re-acknowledged).
        syn_refused: SYNs not accepted (closing, or too many connections awaiting data).
        unexpected: a packet that makes no sense in the connection's state (a SYN to the
            side that dialled, data before the SYN was acknowledged...).
        resets_received, resets_sent: ST_RESET packets.
        timeouts: retransmission timeouts fired.
        fast_retransmits: packets resent on duplicate ACKs or SACKs.
        connections_timed_out: connections given up after too many timeouts.
        zero_window_timeouts: connections given up because the peer's window stayed at zero.
        mtu_probes_lost: packet-size probes that did not arrive (the ceiling came down).
        mtu_too_big: datagrams the socket refused as larger than the path allows (sent
            again with fragmentation allowed; the connection's packets got smaller).
    """

    malformed: int = 0
    bad_version: int = 0
    bad_type: int = 0
    bad_connection: int = 0
    ack_unsent: int = 0
    out_of_window: int = 0
    over_window: int = 0
    duplicate_data: int = 0
    duplicate_syn: int = 0
    syn_refused: int = 0
    unexpected: int = 0
    resets_received: int = 0
    resets_sent: int = 0
    timeouts: int = 0
    fast_retransmits: int = 0
    connections_timed_out: int = 0
    zero_window_timeouts: int = 0
    mtu_probes_lost: int = 0
    mtu_too_big: int = 0

    def statistics(self) -> UtpStats:
        return UtpStats(**dataclasses.asdict(self))

    @property
    def dropped(self) -> int:
        """Packets dropped as malformed or hostile."""
        return (
            self.malformed
            + self.bad_version
            + self.bad_type
            + self.bad_connection
            + self.ack_unsent
            + self.out_of_window
            + self.over_window
            + self.syn_refused
            + self.unexpected
        )
