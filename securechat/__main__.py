"""Command line: ``python -m securechat init`` prepares the data directory and database."""

from __future__ import annotations

import argparse
import asyncio
import sys

from securechat import datadir
from securechat.config import Config
from securechat.directory.service import key_fingerprint_for
from securechat.store import create_store
from securechat.web.gate import PROXY_WITHOUT_ORIGIN
from securechat.web.origins import public_origins


async def _init(config: Config) -> None:
    datadir.prepare(config.data_dir)
    store = create_store(config)
    await store.open()
    await store.close()


def init(config: Config) -> None:
    """Create the data directory, the server secret and the database; say how to reach the admin API."""
    asyncio.run(_init(config))
    print(f"SecureChat data directory: {config.data_dir.resolve()}")
    for line in _startup_notes(config):
        print(line)


def _startup_notes(config: Config) -> list[str]:
    """What ``make run`` prints before serving: the hosts answered, admin access and the
    directory's fingerprint."""
    notes = [_origin_note(config)]
    if config.admin_token:
        notes.append("Admin endpoints /admin/health and /metrics: on (bearer token set).")
    else:
        notes.append(
            "Admin endpoints /admin/health and /metrics: off."
            " Set SECURECHAT_ADMIN_TOKEN=<long random string> to turn them on."
        )
    notes.append(
        f"Key directory fingerprint: {key_fingerprint_for(config)}"
        " (publish it, so users and auditors can check the key they pin)."
    )
    return notes


def _origin_note(config: Config) -> str:
    """Which hosts the server answers for (securechat/web/origins.py); ValueError if malformed."""
    origins = sorted(public_origins(config.public_origin).origins)
    if origins:
        return f"Public origin: {', '.join(origins)} (requests for any other host answer 421)."
    if config.trusted_proxy_hops:
        return "Public origin: " + PROXY_WITHOUT_ORIGIN
    return (
        "Public origin: not set, so only 127.0.0.1, localhost and [::1] are answered."
        " To serve other machines, set SECURECHAT_PUBLIC_ORIGIN=https://<the name users type>."
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``securechat`` command."""
    parser = argparse.ArgumentParser(prog="securechat")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="create the data directory and the database")
    args = parser.parse_args(argv)
    if args.command == "init":
        try:
            init(Config.from_env())
        except ValueError as mistake:  # a malformed setting: said plainly, before serving
            print(f"securechat: {mistake}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
