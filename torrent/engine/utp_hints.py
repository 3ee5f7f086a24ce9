"""Which addresses speak uTP, as far as the session knows: what steers the order of a dial
(see :mod:`torrent.engine.utp_dial`). The socket manager (:mod:`torrent.engine.utp_socket`)
tells it about every uTP connection made either way, the dialler about SYNs that went
unanswered, and peer exchange (:mod:`torrent.engine.peer_exchange`) about PEX flags.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_HINTS", "UtpHints"]

#: Addresses :class:`UtpHints` remembers at most (the least recently told go first).
MAX_HINTS = 4096


class UtpHints:
    """Whether addresses speak uTP, as far as the session knows; bounded, the least recently
    told forgotten first. It steers the order of a dial (see :mod:`torrent.engine.utp_dial`).

    What we saw ourselves (a uTP connection from or to the address, a SYN that went
    unanswered) is *observed*; what a peer's PEX message said is hearsay, and never replaces
    an observation.
    """

    def __init__(self, max_entries: int = MAX_HINTS) -> None:
        self._max = max_entries
        #: address -> (speaks uTP, observed)
        self._known: OrderedDict[tuple[str, int], tuple[bool, bool]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def learn(self, addr: tuple[str, int], *, speaks_utp: bool, observed: bool = True) -> None:
        known = self._known
        old = known.get(addr)
        if old is not None and old[1] and not observed:
            return
        known[addr] = (speaks_utp, observed)
        known.move_to_end(addr)
        if len(known) > self._max:
            known.popitem(last=False)

    def get(self, addr: tuple[str, int]) -> bool | None:
        """True: it speaks uTP; False: it does not; None: nothing known."""
        entry = self._known.get(addr)
        return None if entry is None else entry[0]

    def observed(self, addr: tuple[str, int]) -> bool:
        """What :meth:`get` says was seen by us, not told by a peer."""
        entry = self._known.get(addr)
        return entry is not None and entry[1]

    def forget(self, addr: tuple[str, int]) -> None:
        self._known.pop(addr, None)
