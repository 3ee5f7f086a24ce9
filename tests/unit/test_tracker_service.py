"""TrackerService: the transports' fast path is chosen by what the store can do."""

from __future__ import annotations

from collections.abc import Sequence

from torrent.proto.tracker_codec import AnnounceEvent, ScrapeStats
from tracker.service import TrackerService
from tracker.settings import TrackerSettings
from tracker.store import AnnounceResult, MemoryStore, PeerAnnounce, StoreStats

SETTINGS = TrackerSettings(host="127.0.0.1", port=0)


class AsyncOnly:
    """A store that must await (like Redis): it has no synchronous view."""

    def __init__(self) -> None:
        self.inner = MemoryStore(60)

    async def announce(self, a: PeerAnnounce) -> AnnounceResult:
        return await self.inner.announce(a)

    async def scrape(self, info_hashes: Sequence[bytes]) -> list[ScrapeStats]:
        return await self.inner.scrape(info_hashes)

    async def full_scrape(self, limit: int) -> dict[bytes, ScrapeStats]:
        return await self.inner.full_scrape(limit)

    async def statistics(self) -> StoreStats:
        return await self.inner.statistics()

    async def collect(self) -> int:
        return await self.inner.collect()

    async def aclose(self) -> None:
        await self.inner.aclose()


class OwnSync(AsyncOnly):
    """Not a MemoryStore, but it answers without awaiting."""

    def announce_nowait(self, a: PeerAnnounce) -> AnnounceResult:
        return self.inner.announce_nowait(a)

    def scrape_nowait(self, info_hashes: Sequence[bytes]) -> list[ScrapeStats]:
        return self.inner.scrape_nowait(info_hashes)


def test_sync_view_follows_the_store_capability_not_its_class() -> None:
    memory = MemoryStore(60)
    assert TrackerService(memory, SETTINGS).sync_store is memory
    assert TrackerService(AsyncOnly(), SETTINGS).sync_store is None
    own = OwnSync()
    service = TrackerService(own, SETTINGS)
    assert service.sync_store is own
    pa = PeerAnnounce(b"i" * 20, b"p" * 20, bytes(6), None, False, AnnounceEvent.STARTED, 10)
    assert service.sync_store.announce_nowait(pa).incomplete == 1
