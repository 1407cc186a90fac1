"""Command line: ``python -m securechat init`` prepares the data directory and database."""

from __future__ import annotations

import argparse
import asyncio
import sys

from securechat import datadir
from securechat.config import PROJECT_ROOT, Config
from securechat.store import Store


async def _init(config: Config) -> None:
    datadir.prepare(config.data_dir)
    store = Store.for_file(config.database_path, PROJECT_ROOT / "schema.sql")
    await store.open()
    await store.close()


def init(config: Config) -> None:
    """Create the data directory, the server secret and the database; say how to reach the admin API."""
    asyncio.run(_init(config))
    print(f"SecureChat data directory: {config.data_dir.resolve()}")
    for line in _startup_notes(config):
        print(line)


def _startup_notes(config: Config) -> list[str]:
    from securechat import startup_notes

    return startup_notes.lines(config)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``securechat`` command."""
    parser = argparse.ArgumentParser(prog="securechat")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="create the data directory and the database")
    args = parser.parse_args(argv)
    if args.command == "init":
        init(Config.from_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
