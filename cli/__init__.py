"""The ``pytorrent`` command. Only calls the library; see :mod:`cli.main`."""
