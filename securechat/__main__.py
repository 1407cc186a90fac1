"""Command line: ``python -m securechat init`` prepares the data directory and database;
``init --cluster`` also says which secret files every other node of a cluster must hold;
``serve`` runs the app as ``make run`` does (securechat/serve.py); ``users ...`` and
``sessions end`` are the operator's (securechat/operator.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from securechat import datadir, operator
from securechat.config import Config
from securechat.directory.identity import IdentityMismatch, check_identity
from securechat.directory.service import directory_key, key_fingerprint_for, public_spki
from securechat.directory.transparency import key_fingerprint
from securechat.errors import NotFound
from securechat.store import ClusterIdentity, create_store
from securechat.web.gate import PROXY_WITHOUT_ORIGIN
from securechat.web.origins import public_origins


async def _init(config: Config) -> ClusterIdentity:
    """Create what is missing and record (or check) the secrets' fingerprints in the database."""
    secrets = datadir.prepare(config.data_dir, config.server_secret_path)
    mine = ClusterIdentity(key_fingerprint(public_spki(directory_key(config))), secrets.fingerprint)
    store = create_store(config)
    await store.open()
    try:
        await check_identity(store.identity, mine, config, int(time.time() * 1000))
    finally:
        await store.close()
    return mine


# Hosts whose plain-HTTP origins browsers treat as secure contexts (Secure cookies kept).
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def init(config: Config, *, cluster: bool = False) -> None:
    """Create the data directory, the server secret and the database; say how to reach the
    admin API and, for a cluster, which files to copy to the other nodes."""
    identity = asyncio.run(_init(config))
    print(f"SecureChat data directory: {config.data_dir.resolve()}")
    for line in _startup_notes(config):
        print(line)
    if cluster:
        for line in _cluster_notes(config, identity):
            print(line)


def _cluster_notes(config: Config, identity: ClusterIdentity) -> list[str]:
    """Which files every other node must hold, and where; never their content."""
    secret, key = config.server_secret_path.resolve(), config.directory_key_path.resolve()
    notes = [
        "Cluster secrets: every node must hold these two files, byte for byte. Copy them over"
        " a secure channel (e.g. scp -p), keep them mode 0600, never in version control:",
        f"  {secret}  (server secret, fingerprint {identity.secret_fingerprint})",
        f"  {key}  (directory key, fingerprint {identity.directory_fingerprint})",
        "On each node put them at the same paths, or set SECURECHAT_SERVER_SECRET_FILE and"
        " SECURECHAT_DIRECTORY_KEY_FILE to where they are. The database records these"
        " fingerprints: a node holding other files refuses to start.",
    ]
    if config.directory_key_passphrase:
        notes.append(
            "The directory key is encrypted: set the same SECURECHAT_DIRECTORY_KEY_PASSPHRASE"
            " on every node."
        )
    if not config.database_url:
        notes.append(
            "SECURECHAT_DATABASE_URL is not set: the nodes of a cluster share one PostgreSQL"
            " database (this init used the SQLite file of this data directory)."
        )
    return notes


def _startup_notes(config: Config) -> list[str]:
    """What ``make run`` prints before serving: the hosts answered, admin access and the
    directory's fingerprint."""
    notes = [_origin_note(config)]
    notes += _insecure_origin_notes(config)
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


def _insecure_origin_notes(config: Config) -> list[str]:
    """A warning for each public origin a browser would not keep the Secure session cookie at:
    plain HTTP on a host other than loopback (W3C Secure Contexts)."""
    notes = []
    for origin in sorted(public_origins(config.public_origin).origins):
        parts = urlsplit(origin)
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            notes.append(
                f"WARNING: {origin} is plain HTTP on a host other than this machine: browsers"
                " drop the Secure session cookie there, so nobody can stay logged in. Serve it"
                " over HTTPS (README, Deployment with TLS)."
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
    init_parser = commands.add_parser("init", help="create the data directory and the database")
    init_parser.add_argument(
        "--cluster",
        action="store_true",
        help="also say which secret files to copy to the other nodes of a cluster",
    )
    serve_parser = commands.add_parser(
        "serve", help="serve the app with hypercorn.toml's settings; Ctrl-C stops it quietly"
    )
    serve_parser.add_argument("--bind", default="127.0.0.1:8000", help="host:port to listen on")
    serve_parser.add_argument(
        "--config", type=Path, default=Path("hypercorn.toml"), help="Hypercorn's settings file"
    )
    operator.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.bind, args.config)
    if args.command in ("users", "sessions"):
        return _operate(args)
    if args.command == "init":
        try:
            init(Config.from_env(), cluster=args.cluster)
        except ValueError as mistake:  # a malformed setting: said plainly, before serving
            print(f"securechat: {mistake}", file=sys.stderr)
            return 2
        except IdentityMismatch as mismatch:
            print(f"securechat: {mismatch}", file=sys.stderr)
            return 1
    return 0


def _serve(bind: str, hypercorn_toml: Path) -> int:
    """Serve until SIGINT or SIGTERM (securechat/serve.py); 2 for a malformed setting."""
    from securechat.app import create_app  # the web framework loads only for this command
    from securechat.serve import serve

    try:
        app = create_app(Config.from_env())
    except ValueError as mistake:
        print(f"securechat: {mistake}", file=sys.stderr)
        return 2
    serve(app, hypercorn_toml, bind)
    return 0


def _operate(args: argparse.Namespace) -> int:
    """The operator's commands (securechat/operator.py): 0 done, 1 no such account, 2 a mistake."""
    operator.configure_logging()
    try:
        lines = operator.run(args, Config.from_env())
    except (ValueError, operator.UsageError) as mistake:
        print(f"securechat: {mistake}", file=sys.stderr)
        return 2
    except NotFound:
        print(f"securechat: no account named {args.username!r}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
