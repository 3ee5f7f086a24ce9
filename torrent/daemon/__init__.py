"""The long-running service behind ``pytorrent daemon``.

* :mod:`torrent.daemon.store`: every torrent's record and the settings, in SQLite.
* :mod:`torrent.daemon.service`: the torrents, their queue and the operations on them,
  over one :class:`~torrent.engine.session.Session`.
* :mod:`torrent.daemon.alt_speed`, :mod:`torrent.daemon.add_group`,
  :mod:`torrent.daemon.announces`: the alternative speed schedule, the group commit of
  adds and the dormant seeds' announce heap, for the service.
* :mod:`torrent.daemon.rpc`: Transmission's RPC protocol (its methods and checks).
* :mod:`torrent.daemon.front`: the RPC over a hand-written HTTP/1.1 server, handing every
  other request to :mod:`torrent.daemon.webapp` (aiohttp: the web UI, the Prometheus
  ``/metrics`` page).
* :mod:`torrent.daemon.watch`: the watch directory.

The daemon only calls the engine's public API (docs/ARCHITECTURE.md, "Layers").
"""
