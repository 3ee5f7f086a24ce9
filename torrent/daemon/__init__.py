"""The long-running service behind ``pytorrent daemon``.

* :mod:`torrent.daemon.store`: every torrent's record and the settings, in SQLite.
* :mod:`torrent.daemon.service`: the torrents, their queue and the operations on them,
  over one :class:`~torrent.engine.session.Session`.
* :mod:`torrent.daemon.rpc`: Transmission's RPC protocol (HTTP JSON, aiohttp) and the
  Prometheus ``/metrics`` page.
* :mod:`torrent.daemon.watch`: the watch directory.

The daemon only calls the engine's public API (docs/ARCHITECTURE.md, "Layers").
"""
