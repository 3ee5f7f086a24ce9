"""``pytorrent tracker-admin``: users, passkeys and torrents of a private tracker.

Writes the database ``pytorrent tracker --private-users`` reads; running trackers see
the change within their poll interval (or at once on SIGHUP). Prints a rich table on
a terminal and JSON otherwise (or with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.main import UsageError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tracker-admin",
        help="manage a private tracker's users, passkeys and torrents",
        description="Manage the users, passkeys and torrents of a private tracker "
        "(pytorrent tracker --private-users).",
    )
    p.add_argument("--private-users", required=True, metavar="sqlite:///PATH", help="the tracker's database")
    p.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    what = p.add_subparsers(dest="what", metavar="{user,torrent,stats}", required=True)
    user = what.add_parser("user", help="add, list, revoke or rekey users")
    uact = user.add_subparsers(dest="action", required=True)
    uact.add_parser("list", help="every user with passkey and totals")
    for name, text in (
        ("add", "create a user and print the passkey"),
        ("revoke", "refuse the user's passkey from now on"),
        ("rekey", "give the user a new passkey (the old one stops working)"),
    ):
        uact.add_parser(name, help=text).add_argument("name")
    torrent = what.add_parser("torrent", help="register a torrent")
    tact = torrent.add_subparsers(dest="action", required=True)
    add = tact.add_parser("add", help="register an info hash (or change its flags)")
    add.add_argument("info_hash", metavar="HASH", help="40 hex digits")
    add.add_argument("--freeleech", action="store_true", help="downloads of it are not counted")
    add.add_argument("--deny", action="store_true", help="deny-list it: announces are refused")
    what.add_parser("stats", help="per-user totals")


def _print(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json or not sys.stdout.isatty():
        print(json.dumps(rows, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for r in rows:
        table.add_row(*(str(r[c]) for c in columns))
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    from tracker.users import UserDb

    try:
        db = UserDb(args.private_users)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        if args.what == "user":
            if args.action == "list":
                rows = [
                    {
                        "name": u.name,
                        "passkey": u.passkey,
                        "revoked": u.revoked,
                        "uploaded": u.uploaded,
                        "downloaded": u.downloaded,
                    }
                    for u in db.users()
                ]
                _print(rows, ["name", "passkey", "revoked", "uploaded", "downloaded"], args.json)
                return 0
            try:
                if args.action == "revoke":
                    db.revoke(args.name)
                    _print([{"name": args.name, "revoked": True}], ["name", "revoked"], args.json)
                    return 0
                key = db.add_user(args.name) if args.action == "add" else db.rekey(args.name)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            _print([{"name": args.name, "passkey": key}], ["name", "passkey"], args.json)
            return 0
        if args.what == "torrent":
            try:
                ih = bytes.fromhex(args.info_hash)
            except ValueError:
                ih = b""
            if len(ih) != 20:
                raise UsageError("HASH must be 40 hex digits")
            db.add_torrent(ih, freeleech=args.freeleech, denied=args.deny)
            row = {"info_hash": ih.hex(), "freeleech": args.freeleech, "denied": args.deny}
            _print([row], ["info_hash", "freeleech", "denied"], args.json)
            return 0
        stats = db.stats()
        for r in stats:
            r["revoked"] = bool(r["revoked"])
            r["ratio"] = round(r["uploaded"] / r["downloaded"], 3) if r["downloaded"] else None
        cols = ["name", "revoked", "uploaded", "downloaded", "ratio", "completed", "seed_time_s", "torrents"]
        _print(stats, [*cols, "flagged"], args.json)
        return 0
    finally:
        db.close()
