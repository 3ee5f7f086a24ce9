"""Draws ``Session.statistics()`` snapshots for a person or a script.

Three front ends share one small interface (``update(stats)``, ``event(ev)``,
``close()``):

* :class:`RichView`: on a terminal, one live row per torrent (bar, %, done/total, down
  and up rate, ETA, peers connected/known, seeds, DHT nodes/peers found, state).
* :class:`PlainView`: not a terminal, one log line per torrent every few seconds.
* :class:`JsonView`: ``--json``, one JSON object per line (progress, peers, events).

Torrent names and event messages (tracker replies, peer close reasons) come from
strangers: the rich and plain views show them through ``printable`` (control characters
escaped) and the rich view also escapes rich markup; the JSON view keeps them exact.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import IO, Any, Protocol

from torrent.engine.status import TorrentEvent, TorrentEventKind, TorrentState, TorrentStats
from torrent.proto.text import printable

K = TorrentEventKind
#: Events the plain view prints (one line each).
_PLAIN_KINDS = {
    K.COMPLETED,
    K.ERROR,
    K.TRACKER_WARNING,
    K.TRACKER_ERROR,
    K.STOPPED,
    K.CHECKED,
    K.METADATA,
    K.PEER_BANNED,
    K.WEB_SEED_WARNING,
}
#: Events the live view prints above its table.
_RICH_KINDS = {
    K.COMPLETED,
    K.ERROR,
    K.TRACKER_WARNING,
    K.TRACKER_ERROR,
    K.PEER_BANNED,
    K.METADATA,
    K.WEB_SEED_WARNING,
}


def web_seeds_label(s: TorrentStats) -> str:
    """`` web seeds 1/2`` (usable/all), or nothing for a torrent without web seeds."""
    return f" web seeds {s.web_seeds_active}/{s.web_seeds_total}" if s.web_seeds_total else ""


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_rate(bps: float) -> str:
    return f"{human_bytes(bps)}/s"


def human_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class View(Protocol):
    def update(self, stats: Sequence[TorrentStats], *, force: bool = False) -> None: ...
    def event(self, ev: TorrentEvent) -> None: ...
    def close(self) -> None: ...


class QuietView:
    """``--quiet``: nothing but errors (which the CLI prints itself)."""

    def update(self, stats: Sequence[TorrentStats], *, force: bool = False) -> None:
        pass

    def event(self, ev: TorrentEvent) -> None:
        pass

    def close(self) -> None:
        pass


def _dht_label(s: TorrentStats) -> str:
    """``"dht 112n 3p"``: nodes in the DHT table, peers it found; "" without the DHT.
    Followed by ``"ext 81.2.3.4"`` once our external address is known (port mapping)."""
    dht = f"dht {s.dht_nodes}n {s.dht_peers}p" if s.dht_nodes or s.dht_peers else ""
    ext = f"ext {s.external_ip}" if s.external_ip else ""
    return " ".join(x for x in (dht, ext) if x)


def _state_label(s: TorrentStats) -> str:
    if s.state == TorrentState.CHECKING:
        return f"checking {s.checked_fraction * 100:.0f}%"
    return str(s.state)


class PlainView:
    """One line per torrent every ``every_s`` seconds, and one line per event."""

    def __init__(self, out: IO[str] | None = None, every_s: float = 5.0) -> None:
        self._out = out or sys.stderr
        self._every_s = every_s
        self._last = 0.0

    def update(self, stats: Sequence[TorrentStats], *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._every_s:
            return
        self._last = now
        for s in stats:
            print(
                f"{printable(s.name)}: {_state_label(s)} {s.progress * 100:5.1f}% "
                f"{human_bytes(s.done_bytes)}/{human_bytes(s.wanted_bytes)} "
                f"down {human_rate(s.download_rate_bps)} up {human_rate(s.upload_rate_bps)} "
                f"peers {s.peers_connected}/{s.peers_known} seeds {s.seeds_connected}"
                f"{web_seeds_label(s)} eta {human_eta(s.eta_s)}"
                + (f" {dht}" if (dht := _dht_label(s)) else ""),
                file=self._out,
                flush=True,
            )

    def event(self, ev: TorrentEvent) -> None:
        if ev.kind in _PLAIN_KINDS:
            print(f"{printable(ev.name)}: {printable(ev.message)}", file=self._out, flush=True)

    def close(self) -> None:
        pass


class JsonView:
    """One JSON object per line on stdout: ``{"event": "progress", ...}`` and friends."""

    def __init__(self, out: IO[str] | None = None, every_s: float = 1.0) -> None:
        self._out = out or sys.stdout
        self._every_s = every_s
        self._last = 0.0

    def _emit(self, obj: dict[str, Any]) -> None:
        obj["time"] = round(time.time(), 3)  # Unix time, so scripts can time phases
        self._out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._out.flush()

    def update(self, stats: Sequence[TorrentStats], *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._every_s:
            return
        self._last = now
        for s in stats:
            self._emit(
                {
                    "event": "progress",
                    "info_hash": s.info_hash.hex(),
                    "name": s.name,
                    "state": str(s.state),
                    "progress": round(s.progress, 4),
                    "done_bytes": s.done_bytes,
                    "wanted_bytes": s.wanted_bytes,
                    "downloaded_bytes": s.downloaded_bytes,
                    "uploaded_bytes": s.uploaded_bytes,
                    "download_rate_bps": round(s.download_rate_bps),
                    "upload_rate_bps": round(s.upload_rate_bps),
                    "peers_connected": s.peers_connected,
                    "peers_known": s.peers_known,
                    "seeds_connected": s.seeds_connected,
                    "dht_nodes": s.dht_nodes,
                    "dht_peers": s.dht_peers,
                    "web_seeds_active": s.web_seeds_active,
                    "web_seeds_total": s.web_seeds_total,
                    "eta_s": None if s.eta_s is None else round(s.eta_s, 1),
                    **({"external_ip": s.external_ip} if s.external_ip else {}),
                }
            )

    def event(self, ev: TorrentEvent) -> None:
        self._emit(
            {"event": str(ev.kind), "info_hash": ev.info_hash.hex(), "name": ev.name, "message": ev.message}
        )

    def close(self) -> None:
        pass


def _rich_safe(text: str) -> str:
    """Untrusted ``text`` for rich: control characters and markup escaped."""
    from rich.markup import escape

    return escape(printable(text))


def short_bytes(n: float) -> str:
    """``1536`` → ``"1.5K"``: compact, for the live view's narrow columns."""
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1000 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" or n >= 100 else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


class RichView:
    """A live rich view: one row per torrent, redrawn from snapshots.

    Row: name, bar, percent, done/total, down and up rates, ETA, peers connected/known
    and seeds, state. Compact units keep a row within a 100-column terminal.
    """

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description:<14}"),
            BarColumn(bar_width=24),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[sizes]:>13}"),
            TextColumn("[green]↓{task.fields[down]:>7}"),
            TextColumn("[cyan]↑{task.fields[up]:>7}"),
            TextColumn("eta {task.fields[eta]:>5}"),
            TextColumn("{task.fields[peers]:<19}"),
            TextColumn("[blue]{task.fields[dht]}"),
            TextColumn("[magenta]{task.fields[state]}"),
            console=self._console,
            refresh_per_second=4,
        )
        self._tasks: dict[bytes, Any] = {}
        self._progress.start()

    def update(self, stats: Sequence[TorrentStats], *, force: bool = False) -> None:
        for s in stats:
            fields = {
                "sizes": f"{short_bytes(s.done_bytes)}/{short_bytes(s.wanted_bytes)}",
                "down": short_bytes(s.download_rate_bps) + "/s",
                "up": short_bytes(s.upload_rate_bps) + "/s",
                "eta": human_eta(s.eta_s),
                "peers": f"{s.peers_connected}/{s.peers_known} peers"
                + (
                    f", {s.seeds_connected} seed{'s' if s.seeds_connected > 1 else ''}"
                    if s.seeds_connected
                    else ""
                )
                + web_seeds_label(s),
                "dht": _dht_label(s),
                "state": _state_label(s),
            }
            total = max(s.wanted_bytes, 1)
            completed = int(s.checked_fraction * total) if s.state == TorrentState.CHECKING else s.done_bytes
            task = self._tasks.get(s.info_hash)
            if task is None:
                self._tasks[s.info_hash] = self._progress.add_task(
                    _rich_safe(s.name[:14]),
                    total=total,
                    completed=completed,
                    **fields,  # type: ignore[arg-type]
                )
            else:
                self._progress.update(task, total=total, completed=completed, **fields)  # type: ignore[arg-type]
        if force:
            self._progress.refresh()

    def event(self, ev: TorrentEvent) -> None:
        if ev.kind in _RICH_KINDS:
            name, message = _rich_safe(ev.name), _rich_safe(ev.message)
            self._progress.console.print(f"[bold]{name}[/]: {message}")

    def close(self) -> None:
        self._progress.stop()


def make_view(*, json_mode: bool = False, quiet: bool = False, tty: bool | None = None) -> View:
    """Pick the view for the flags and for whether stderr is a terminal."""
    if json_mode:
        return JsonView()
    if quiet:
        return QuietView()
    if tty is None:
        tty = sys.stderr.isatty()
    return RichView() if tty else PlainView()
