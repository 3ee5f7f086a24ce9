"""The choker: which peers we upload to (BEP 3 "Choking and optimistic unchoking").

Pure: the caller runs :meth:`Choker.rank` every 10 s with a snapshot of each peer and its own
clock, then sends ``choke``/``unchoke`` to match the decision (libtorrent
``session_impl::recalculate_unchoke_slots``; the ranking follows ``src/choker.cpp``
``unchoke_sort``).

Rules:

1. Only peers interested in us are unchoked (an uninterested peer would not request anything).
2. As a *leecher*, the ``slots`` regular slots go to the interested, non-snubbed peers that
   uploaded to us fastest over the last ~20 s (tit-for-tat). Ties prefer peers that are already
   unchoked, so equal peers are not flapped. A snubbed peer (it sent us nothing for a long time
   although we asked) loses its regular slot: *anti-snubbing*. It can still win the optimistic
   slot.
3. As a *seed*, nobody uploads to us, so we rotate: **round-robin**, libtorrent's default
   ``seed_choking_algorithm``. An unchoked peer keeps its slot until it has received
   ``seed_quota_bytes`` or held it ``seed_slot_s``; then the peers unchoked least recently
   (never first) come next, the one we sent least to first on a tie. Ranking by our upload
   rate instead ("fastest upload") would keep feeding the same fast peers; round-robin gives
   every leecher pieces it can trade onwards, which spreads the torrent through the swarm.
4. One *optimistic* slot on top, rotated every ``optimistic_interval_s`` (30 s): a random
   choked, interested peer, one connected less than ``new_peer_s`` ago being
   ``new_peer_weight`` (3) times as likely, so newcomers soon have something to trade.

State: only the current optimistic peer and when it was chosen.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

#: An opaque, hashable key that identifies one peer connection to the caller.
PeerKey = Hashable

#: BEP 3: "each peer has a constant number of peers unchoked ... (4 by default)".
DEFAULT_SLOTS = 4
#: BEP 3: "every 30 seconds" for the optimistic unchoke.
OPTIMISTIC_INTERVAL_S = 30.0

#: The default source of randomness, shared: a ``random.Random`` holds 2.5 KiB of state,
#: and a session may run thousands of chokers.
_SHARED_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class PeerSnapshot:
    """What the choker needs to know about one peer (the caller measures the rates).

    Attributes:
        key: the caller's key for the peer.
        interested: the peer is interested in us.
        choked: we are currently choking it.
        download_rate_bps: what it sent us, bytes per second over the last ~20 s.
        upload_rate_bps: what we sent it, bytes per second over the last ~20 s (as a seed,
            breaks ties in favour of the peer we served least).
        snubbed: it sent us no block for a long time although we had requests out.
        connected_at: when the connection was made (the caller's clock).
        unchoked_at: when we last unchoked it; ``None`` if never.
        uploaded_since_unchoke: bytes we sent it since ``unchoked_at`` (seed round-robin).
    """

    key: PeerKey
    interested: bool
    choked: bool = True
    download_rate_bps: float = 0.0
    upload_rate_bps: float = 0.0
    snubbed: bool = False
    connected_at: float = 0.0
    unchoked_at: float | None = None
    uploaded_since_unchoke: int = 0


@dataclass(frozen=True, slots=True)
class ChokeDecision:
    """The peers to unchoke (``regular`` plus ``optimistic``) and those to choke.

    Attributes:
        regular: the peers holding regular slots, best first.
        optimistic: the optimistic unchoke, or ``None``.
        unchoke: ``regular`` and ``optimistic`` together: every other peer is choked.
        choke: peers currently unchoked that must now be choked.
    """

    regular: tuple[PeerKey, ...]
    optimistic: PeerKey | None
    unchoke: frozenset[PeerKey]
    choke: frozenset[PeerKey]


class Choker:
    """Ranks peers into unchoke slots; see the module docstring for the rules.

    Args:
        slots: regular unchoke slots (the optimistic one comes on top).
        optimistic_interval_s: how long an optimistic unchoke lasts.
        new_peer_s: a peer connected for less than this is *new*.
        new_peer_weight: how much likelier a new peer is to get the optimistic slot.
        seed_quota_bytes: as a seed, a peer keeps its slot until it received this much...
        seed_slot_s: ...or held the slot this long.
        rng: the source of randomness (seed it in tests).
    """

    def __init__(
        self,
        *,
        slots: int = DEFAULT_SLOTS,
        optimistic_interval_s: float = OPTIMISTIC_INTERVAL_S,
        new_peer_s: float = 60.0,
        new_peer_weight: float = 3.0,
        seed_quota_bytes: int = 4 << 20,
        seed_slot_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if slots < 0:
            raise ValueError("slots must not be negative")
        self.slots = slots
        self.optimistic_interval_s = optimistic_interval_s
        self.new_peer_s = new_peer_s
        self.new_peer_weight = new_peer_weight
        self.seed_quota_bytes = seed_quota_bytes
        self.seed_slot_s = seed_slot_s
        self._rng = rng if rng is not None else _SHARED_RNG
        self._optimistic: PeerKey | None = None
        self._optimistic_at = 0.0

    @property
    def optimistic(self) -> PeerKey | None:
        """The current optimistic unchoke."""
        return self._optimistic

    def rank(
        self,
        peers: Sequence[PeerSnapshot],
        *,
        now: float,
        seeding: bool,
        slots: int | None = None,
    ) -> ChokeDecision:
        """Decide who is unchoked until the next call.

        Args:
            peers: every connected peer of the torrent.
            now: the caller's clock, in seconds.
            seeding: we have every wanted piece (nobody can upload anything useful to us).
            slots: overrides the regular slot count for this call.

        Returns:
            The decision; the caller applies it.
        """
        n = self.slots if slots is None else slots
        interested = [p for p in peers if p.interested]
        if seeding:
            regular = self._rank_seeding(interested, now)[:n]
        else:
            # Tit-for-tat: best uploaders to us first; on equal rates keep who is unchoked.
            # Shuffled first so that remaining ties (all rates zero at the start) do not
            # depend on the order the caller lists its peers in.
            cands = [p for p in interested if not p.snubbed]
            self._rng.shuffle(cands)
            cands.sort(key=lambda p: (-p.download_rate_bps, p.choked))
            regular = cands[:n]
        regular_keys = tuple(p.key for p in regular)
        optimistic = self._optimistic_pick(interested, set(regular_keys), now)
        unchoke = frozenset(regular_keys) | ({optimistic} if optimistic is not None else set())
        choke = frozenset(p.key for p in peers if not p.choked and p.key not in unchoke)
        return ChokeDecision(regular_keys, optimistic, unchoke, choke)

    def _rank_seeding(self, interested: list[PeerSnapshot], now: float) -> list[PeerSnapshot]:
        def within_turn(p: PeerSnapshot) -> bool:
            return (
                not p.choked
                and p.unchoked_at is not None
                and now - p.unchoked_at < self.seed_slot_s
                and p.uploaded_since_unchoke < self.seed_quota_bytes
            )

        # Peers whose turn is running keep it; then the least recently unchoked (never first).
        return sorted(
            interested,
            key=lambda p: (
                not within_turn(p),
                float("-inf") if p.unchoked_at is None else p.unchoked_at,
                p.upload_rate_bps,  # then whoever we served least lately
            ),
        )

    def _optimistic_pick(
        self, interested: list[PeerSnapshot], regular: set[PeerKey], now: float
    ) -> PeerKey | None:
        current = self._optimistic
        by_key = {p.key: p for p in interested}
        if (
            current is not None
            and current in by_key
            and current not in regular
            and now - self._optimistic_at < self.optimistic_interval_s
        ):
            return current
        cands = [p for p in interested if p.key not in regular]
        if len(cands) > 1 and current is not None:
            # Rotate: someone else's turn, if there is someone else.
            cands = [p for p in cands if p.key != current]
        if not cands:
            self._optimistic = None
            return None
        weights = [self.new_peer_weight if now - p.connected_at < self.new_peer_s else 1.0 for p in cands]
        chosen = self._rng.choices(cands, weights=weights)[0].key
        self._optimistic = chosen
        self._optimistic_at = now
        return chosen
