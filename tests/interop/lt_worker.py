"""One libtorrent session in its own process, driven by JSON lines on stdin/stdout.

``LibtorrentPeer`` (``peers.py``) starts this as ``python -m tests.interop.lt_worker`` and
sends one request per line: ``{"id": N, "op": NAME, "args": {...}}``; each gets one reply
line, ``{"id": N, "ok": RESULT}`` or ``{"id": N, "error": TEXT}``. EOF on stdin or the
``quit`` op ends the session (with its ``stopped`` announces, bounded by
``stop_tracker_timeout``) and the process.

Why a process per session and not the bindings in the test process: libtorrent keeps
its UDP tracker connection ids in a process-wide cache keyed by the tracker's address,
so two sessions in one process (a seed and a leecher, or sessions of consecutive tests
talking to trackers on the same address) reuse each other's ids, and a tracker that binds
ids to the client's address and port (as BEP 15 allows) rightly refuses them. One
process per session is also what a real user runs.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from typing import Any

warnings.simplefilter("ignore", DeprecationWarning)

import libtorrent as lt  # noqa: E402

from tests.libtorrent_settings import loopback_settings  # noqa: E402


class Worker:
    def __init__(self) -> None:
        self.session: Any = None
        self.handles: dict[str, Any] = {}
        self.tracker_replies: dict[str, int] = {}
        self.tracker_errors: dict[str, str] = {}
        self.finished: set[str] = set()
        self.log: list[str] = []

    # --- ops ------------------------------------------------------------------------

    def op_start(self, port: int, host: str) -> int:
        settings = {
            **loopback_settings(host, port),
            "outgoing_interfaces": host,
            "announce_to_all_trackers": True,
            "stop_tracker_timeout": 1,
            "tracker_completion_timeout": 5,
            "tracker_receive_timeout": 5,
            "min_announce_interval": 1,
            "alert_mask": lt.alert_category.error
            | lt.alert_category.status
            | lt.alert_category.tracker
            | lt.alert_category.storage,
        }
        self.session = lt.session(settings)  # type: ignore[call-overload]  # the stubs lack the dict form
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            bound = self.session.listen_port()
            if bound:
                return int(bound)
            time.sleep(0.02)
        raise RuntimeError("libtorrent did not start listening")

    def op_add(self, torrent: str, save_path: str) -> str:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(torrent)
        atp.save_path = save_path
        atp.flags &= ~lt.torrent_flags.auto_managed
        atp.flags &= ~lt.torrent_flags.paused
        # PEX is a default session plugin; off per torrent here (ut_pex stays listed in
        # the BEP 10 handshake, but no PEX message is sent). DHT and LSD are off twice.
        atp.flags |= (
            lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
        )
        handle = self.session.add_torrent(atp)
        ih = _key(handle.info_hashes())
        self.handles[ih] = handle
        return ih

    def op_add_magnet(self, uri: str, save_path: str) -> str:
        atp = lt.parse_magnet_uri(uri)
        atp.save_path = save_path
        atp.flags &= ~lt.torrent_flags.auto_managed
        atp.flags &= ~lt.torrent_flags.paused
        atp.flags |= (
            lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
        )
        handle = self.session.add_torrent(atp)
        ih = _key(handle.info_hashes())
        self.handles[ih] = handle
        return ih

    def op_state(self, info_hash: str) -> dict[str, Any]:
        self._pump()
        h = self.handles[info_hash]
        st = h.status()
        return {
            "info_hash": info_hash,
            "progress": 1.0 if st.is_seeding else float(st.progress),
            "seeding": bool(st.is_seeding),
            "finished": info_hash in self.finished or bool(st.is_finished),
            "peers": [[p.ip[0], p.ip[1]] for p in h.get_peer_info()],
            "tracker_peers": self.tracker_replies.get(info_hash),
            "tracker_ok": info_hash in self.tracker_replies and info_hash not in self.tracker_errors,
            "error": st.errc.message() if st.errc.value() else "",
            "downloaded_bytes": int(st.total_payload_download),
            "uploaded_bytes": int(st.total_payload_upload),
        }

    def op_connections(self, info_hash: str) -> list[dict[str, Any]]:
        self._pump()
        out = []
        for p in self.handles[info_hash].get_peer_info():
            out.append(
                {
                    "address": [p.ip[0], p.ip[1]],
                    "peer_id": p.pid.to_bytes().hex(),
                    "client": str(p.client),
                    "outgoing": bool(p.flags & lt.peer_info.outgoing_connection),
                    "downloaded_bytes": int(p.total_download),
                    "uploaded_bytes": int(p.total_upload),
                    "seed": bool(p.flags & lt.peer_info.seed),
                }
            )
        return out

    def op_set_upload_limit(self, info_hash: str, bps: int) -> None:
        self.handles[info_hash].set_upload_limit(bps)

    def op_connect_peer(self, info_hash: str, host: str, port: int) -> None:
        self.handles[info_hash].connect_peer((host, port))

    def op_reannounce(self, info_hash: str) -> None:
        self.handles[info_hash].force_reannounce()

    def op_log(self) -> list[str]:
        if self.session is not None:
            self._pump()
        return self.log[-40:]

    # --- alerts ---------------------------------------------------------------------

    def _pump(self) -> None:
        for a in self.session.pop_alerts():
            ih = ""
            if hasattr(a, "handle"):
                try:
                    ih = _key(a.handle.info_hashes())
                except Exception:
                    ih = ""
            if isinstance(a, lt.tracker_reply_alert):
                self.tracker_replies[ih] = int(a.num_peers)
                self.tracker_errors.pop(ih, None)
            elif isinstance(a, lt.tracker_error_alert):
                self.tracker_errors[ih] = a.message()
            elif isinstance(a, lt.torrent_finished_alert):
                self.finished.add(ih)
            if isinstance(a, lt.tracker_alert | lt.torrent_error_alert | lt.file_error_alert):
                self.log.append(a.message())
                del self.log[:-200]


def _key(hashes: Any) -> str:
    """How the tests name a torrent: the v1 info hash, or a v2-only torrent's v2 hash
    truncated to 20 bytes (what names it on the wire, as ``Metainfo.info_hash`` does)."""
    return str(hashes.v1) if hashes.has_v1() else str(hashes.v2)[:40]


def main() -> int:
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.get("op")
        if op == "quit":
            break
        try:
            result = getattr(worker, f"op_{op}")(**request.get("args", {}))
            reply = {"id": request.get("id"), "ok": result}
        except Exception as exc:
            reply = {"id": request.get("id"), "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    worker.session = None  # the destructor sends 'stopped' (bounded by stop_tracker_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
