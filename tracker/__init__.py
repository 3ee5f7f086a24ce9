"""The pytorrent tracker server: HTTP and UDP announce/scrape (BEP 3, 15, 23, 48)."""
