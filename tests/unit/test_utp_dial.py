"""The dial order with uTP on: what is known of an address (``UtpHints``) picks uTP or TCP."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from torrent.config import Settings
from torrent.engine.peer import Peer
from torrent.engine.peer_exchange import PeerExchange
from torrent.engine.transport import Transport
from torrent.engine.utp_dial import UtpFirstConnector
from torrent.engine.utp_socket import UtpHints, UtpSocketManager
from torrent.proto import pex

ADDR = ("10.0.0.1", 6881)
F = pex.PexFlags
#: What each fake dial returns.
UTP_STREAM = cast(Transport, object())
TCP_STREAM = cast(Transport, object())


class FakeUtp:
    """Stands in for the socket manager: answers (or never answers) SYNs."""

    def __init__(self, *, answers: bool) -> None:
        self.hints = UtpHints()
        self.answers = answers
        self.dials: list[tuple[str, int]] = []

    async def connect(self, protocol: asyncio.BaseProtocol, addr: tuple[str, int]) -> Transport:
        self.dials.append(addr)
        if not self.answers:
            await asyncio.sleep(3600)
        return UTP_STREAM


class FakeTcp:
    def __init__(self, *, refuses: bool = False, silent: bool = False) -> None:
        self.refuses = refuses
        self.silent = silent  # its SYNs are dropped: the connect never ends by itself
        self.dials: list[tuple[str, int]] = []

    async def __call__(self, protocol: asyncio.BaseProtocol, addr: tuple[str, int]) -> Transport:
        self.dials.append(addr)
        if self.refuses:
            raise ConnectionRefusedError(addr)
        if self.silent:
            await asyncio.sleep(3600)
        return TCP_STREAM


def connector(utp: FakeUtp, tcp: FakeTcp) -> UtpFirstConnector:
    return UtpFirstConnector(cast(UtpSocketManager, utp), utp_timeout_s=0.05, fallback=tcp)


def test_hearsay_never_replaces_what_we_saw() -> None:
    hints = UtpHints()
    hints.learn(ADDR, speaks_utp=False)
    hints.learn(ADDR, speaks_utp=True, observed=False)
    assert hints.get(ADDR) is False
    hints.learn(ADDR, speaks_utp=True)  # it connected to us over uTP
    assert hints.get(ADDR) is True
    other = ("10.0.0.2", 1)
    hints.learn(other, speaks_utp=False, observed=False)
    hints.learn(other, speaks_utp=True, observed=False)
    assert hints.get(other) is True
    assert not hints.observed(other)
    hints.forget(other)
    assert hints.get(other) is None


def test_hints_are_bounded_least_recently_told_first() -> None:
    hints = UtpHints(max_entries=3)
    for i in range(5):
        hints.learn((f"10.0.0.{i}", 1), speaks_utp=True)
    assert len(hints) == 3
    assert hints.get(("10.0.0.0", 1)) is None
    assert hints.get(("10.0.0.4", 1)) is True


async def test_unknown_address_goes_utp_first_and_remembers_a_silent_one() -> None:
    utp, tcp = FakeUtp(answers=False), FakeTcp()
    dial = connector(utp, tcp)
    assert await dial(asyncio.Protocol(), ADDR) is TCP_STREAM
    assert utp.dials == [ADDR]
    assert dial.counters.tcp_fallbacks == 1
    # The redial goes straight to TCP: the SYN went unanswered before.
    assert await dial(asyncio.Protocol(), ADDR) is TCP_STREAM
    assert utp.dials == [ADDR]
    assert dial.counters.tcp_known == 1


async def test_a_peer_seen_speaking_utp_is_dialled_utp_again() -> None:
    utp, tcp = FakeUtp(answers=True), FakeTcp()
    utp.hints.learn(ADDR, speaks_utp=False)  # an earlier SYN was lost
    utp.hints.learn(ADDR, speaks_utp=True)  # then it dialled us over uTP
    dial = connector(utp, tcp)
    assert await dial(asyncio.Protocol(), ADDR) is UTP_STREAM
    assert tcp.dials == []
    assert dial.counters.utp == 1


async def test_pex_without_the_utp_flag_goes_tcp_at_once() -> None:
    utp, tcp = FakeUtp(answers=True), FakeTcp()
    utp.hints.learn(ADDR, speaks_utp=False, observed=False)
    dial = connector(utp, tcp)
    assert await dial(asyncio.Protocol(), ADDR) is TCP_STREAM
    assert utp.dials == []
    assert dial.counters.tcp_first == 1
    assert dial.counters.tcp_fallbacks == 0


async def test_pex_without_the_utp_flag_then_tcp_refused_tries_utp_and_forgets_the_flag() -> None:
    utp, tcp = FakeUtp(answers=True), FakeTcp(refuses=True)
    utp.hints.learn(ADDR, speaks_utp=False, observed=False)
    dial = connector(utp, tcp)
    assert await dial(asyncio.Protocol(), ADDR) is UTP_STREAM
    assert tcp.dials == [ADDR]
    assert utp.dials == [ADDR]
    assert utp.hints.get(ADDR) is None


async def test_pex_without_the_utp_flag_and_neither_answers_fails() -> None:
    utp, tcp = FakeUtp(answers=False), FakeTcp(refuses=True)
    utp.hints.learn(ADDR, speaks_utp=False, observed=False)
    with pytest.raises(TimeoutError):
        await connector(utp, tcp)(asyncio.Protocol(), ADDR)


def test_received_pex_flags_become_hearsay_hints() -> None:
    hints = UtpHints()
    hints.learn(("10.0.0.9", 1), speaks_utp=True)  # seen ourselves: PEX cannot undo it
    px = PeerExchange(Settings(), peers={}, on_peers=lambda addrs: None, utp_hints=hints)
    msg = pex.PexMessage(
        added=(
            (("10.0.0.1", 1), F.UTP),
            (("10.0.0.2", 1), F.REACHABLE | F.SEED),
            (("10.0.0.3", 1), F.NONE),  # BEP 11 flags are optional: no flags, nothing known
            (("10.0.0.9", 1), F.REACHABLE),
        )
    )
    px.on_message(cast(Peer, cast(Any, object())), pex.encode(msg))
    assert hints.get(("10.0.0.1", 1)) is True
    assert hints.get(("10.0.0.2", 1)) is False
    assert not hints.observed(("10.0.0.2", 1))
    assert hints.get(("10.0.0.3", 1)) is None
    assert hints.get(("10.0.0.9", 1)) is True


async def test_pex_without_the_utp_flag_then_tcp_silent_leaves_utp_its_share_of_the_budget() -> None:
    # The caller bounds the whole dial (Peer's connect_timeout_s): a TCP dial whose SYNs are
    # dropped must not use all of it, or uTP is never tried.
    utp, tcp = FakeUtp(answers=True), FakeTcp(silent=True)
    utp.hints.learn(ADDR, speaks_utp=False, observed=False)
    dial = UtpFirstConnector(cast(UtpSocketManager, utp), utp_timeout_s=0.2, budget_s=0.6, fallback=tcp)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(0.6):
        assert await dial(asyncio.Protocol(), ADDR) is UTP_STREAM
    assert tcp.dials == [ADDR]
    assert utp.dials == [ADDR]
    assert loop.time() - started >= 0.4  # TCP had its share (the budget less uTP's)
    assert utp.hints.get(ADDR) is None  # the hearsay is forgotten
    assert dial.counters.tcp_first == 1
    assert dial.counters.utp == 1


async def test_without_a_budget_a_silent_tcp_first_dial_is_bounded_by_the_caller_only() -> None:
    utp, tcp = FakeUtp(answers=True), FakeTcp(silent=True)
    utp.hints.learn(ADDR, speaks_utp=False, observed=False)
    dial = connector(utp, tcp)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await dial(asyncio.Protocol(), ADDR)
    assert utp.dials == []
