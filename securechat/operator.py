"""The operator's command line: ``python -m securechat users ...`` and ``sessions end``.

    users list [--after NAME] [--limit N]   the accounts, by name: status, sessions, dates
    users show NAME                         one account
    users disable NAME                      it cannot log in; its sessions end, its sockets close
    users enable NAME                       it may log in again
    users delete NAME --yes                 as if its owner deleted it (tombstone, quarantine)
    users reset-keys NAME                   withdraw its keys (a tombstone in the key directory)
                                            and end its sessions: its owner publishes new keys
    sessions end NAME                       end every session of the account, close its sockets

It reads the same settings as the server (``SECURECHAT_DATA_DIR``, ``SECURECHAT_DATABASE_URL``)
and works on the database directly, while the server runs or not. Every action is logged twice:
an audit line on stderr (the ``securechat.accounts.audit`` logger) and a row in the
``operator_actions`` table, which every running server process follows to close the sockets
of the accounts an action ended within ``SECURECHAT_OPERATOR_POLL_INTERVAL`` seconds
(securechat/accounts/lifecycle.py). Their sessions are revoked in the database at once, so every
HTTP request of theirs is refused from then on.

Exit status: 0 done; 1 no such account; 2 a usage or settings mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
from typing import Any

from securechat.accounts.lifecycle import AccountLifecycle
from securechat.chat.protocol import normalize_username
from securechat.config import Config
from securechat.errors import NotFound
from securechat.runtime import WALL_CLOCK
from securechat.store import Store, UserSummary, create_store

LIST_LIMIT_MAX = 10_000
_USER_ACTIONS = ("list", "show", "disable", "enable", "delete", "reset-keys")


class UsageError(Exception):
    """A mistake in the command line: said on stderr, exit 2."""


def add_commands(commands: Any) -> None:
    """Add ``users`` and ``sessions`` to the ``securechat`` command's subparsers."""
    users = commands.add_parser("users", help="list, show, disable, enable, delete accounts")
    actions = users.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the accounts, by name")
    listing.add_argument("--after", default="", help="start after this name")
    listing.add_argument("--limit", type=int, default=100, help="at most this many")
    for action, what in (
        ("show", "one account"),
        ("disable", "refuse its logins, end its sessions and close its sockets"),
        ("enable", "let a disabled account log in again"),
        ("delete", "delete it for good: keys, messages, sessions; the name is quarantined"),
        ("reset-keys", "withdraw its keys; its owner publishes new ones at the next login"),
    ):
        parser = actions.add_parser(action, help=what)
        parser.add_argument("username")
        if action == "delete":
            parser.add_argument("--yes", action="store_true", help="yes, delete it")
    sessions = commands.add_parser("sessions", help="end an account's sessions")
    session_actions = sessions.add_subparsers(dest="action", required=True)
    end = session_actions.add_parser("end", help="end every session of the account")
    end.add_argument("username")


def run(args: argparse.Namespace, config: Config) -> list[str]:
    """Carry out the parsed command; the lines to print. NotFound, UsageError, ValueError."""
    if args.command == "users" and args.action == "delete" and not args.yes:
        raise UsageError("deleting an account cannot be undone: add --yes to go ahead")
    listing = args.command == "users" and args.action == "list"
    if listing and not 1 <= args.limit <= LIST_LIMIT_MAX:
        raise UsageError(f"--limit must be between 1 and {LIST_LIMIT_MAX}")
    return asyncio.run(_run(args, config))


async def _run(args: argparse.Namespace, config: Config) -> list[str]:
    store = create_store(config)
    await store.open()
    try:
        return await _act(args, store, AccountLifecycle(config, store, WALL_CLOCK))
    finally:
        await store.close()


async def _act(args: argparse.Namespace, store: Store, lifecycle: AccountLifecycle) -> list[str]:
    now = WALL_CLOCK.now_ms()
    if args.command == "users" and args.action == "list":
        users = await store.lifecycle.users(args.after, args.limit, now)
        return [_HEADER] + [_row(u) for u in users]
    name = _username(args.username)
    if args.command == "sessions":
        ended = await lifecycle.end_sessions(name)
        await lifecycle.record("sessions-end", name, f"{len(ended)} session(s) ended")
        return [f"{name}: {len(ended)} session(s) ended"]
    if args.action == "show":
        user = await store.lifecycle.user_summary(name, now)
        if user is None:
            raise NotFound("No such user.")
        return [_HEADER, _row(user)]
    return await _change(args.action, name, lifecycle)


async def _change(action: str, name: str, lifecycle: AccountLifecycle) -> list[str]:
    """disable, enable, delete, reset-keys: done, recorded, said."""
    if action == "disable":
        ended = await lifecycle.disable(name)
        detail = f"{len(ended)} session(s) ended"
        said = f"{name} is disabled: it cannot log in; {detail}"
    elif action == "enable":
        await lifecycle.enable(name)
        detail, said = "", f"{name} may log in again"
    elif action == "delete":
        deletion = await lifecycle.delete(name, by="the operator")
        detail = f"{len(deletion.sessions)} session(s) ended"
        said = (
            f"{name} is deleted; {detail}; the name can be registered again from"
            f" {_when(deletion.reusable_at_ms)}"
        )
    else:
        ended = await lifecycle.withdraw_keys(name)
        detail = f"{len(ended)} session(s) ended"
        said = f"{name}'s keys are withdrawn (a tombstone in the key directory); {detail}"
    await lifecycle.record(action, name, detail)
    return [said]


def _username(raw: str) -> str:
    try:
        return normalize_username(raw)
    except ValueError as error:
        raise UsageError(f"not a username: {raw!r} ({error})") from None


_HEADER = f"{'username':<32}  {'status':<8}  {'sessions':>8}  {'created':<20}  keys updated"


def _row(user: UserSummary) -> str:
    status = "active" if user.disabled_at is None else "disabled"
    return (
        f"{user.username:<32}  {status:<8}  {user.live_sessions:>8}  {_when(user.created_at):<20}"
        f"  {_when(user.keys_updated_at)}"
    )


def _when(ms: int) -> str:
    return f"{datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC):%Y-%m-%d %H:%M:%S}"


def configure_logging() -> None:
    """The audit lines on stderr, with their time, as the operator runs the command."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


__all__ = ["LIST_LIMIT_MAX", "UsageError", "add_commands", "configure_logging", "run"]
