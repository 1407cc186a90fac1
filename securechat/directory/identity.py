"""One directory, one secret: every node over one database holds the same two secret files.

The server secret (cookies, device tokens, decoy salts: securechat/datadir.py) and the
directory signing key (securechat/directory/service.py) must be the same on every node of a
cluster, or a session cookie made on one node is refused by the next and two nodes sign
different tree heads for one log. The first node to start records their fingerprints in the
database (never the secrets themselves); every later start compares its own with them and a
node holding other files refuses to start, saying which file differs and what to copy
(issue 11, item 5). ``make run`` records them too: its database then refuses a data directory
whose secrets were replaced or lost.
"""

from __future__ import annotations

from securechat.config import Config
from securechat.store import ClusterIdentity, IdentityStore


class IdentityMismatch(RuntimeError):
    """This node's secret files are not the ones the database's first node recorded."""


async def check_identity(
    store: IdentityStore, mine: ClusterIdentity, config: Config, now_ms: int
) -> None:
    """Record ``mine`` as the cluster's identity if none is; raise IdentityMismatch, naming
    each file that differs, if the recorded one is not ``mine``.

    Only a cluster's nodes are checked: one process over its own SQLite file (``make run``)
    has no other node to disagree with, and an operator who replaces its secret files on
    purpose (logging everyone out, or changing the key clients pin, which they flag) must not
    find the server refusing to start.
    """
    if not config.database_url:
        return
    recorded = await store.claim_identity(mine, now_ms)
    problems = []
    if recorded.directory_fingerprint != mine.directory_fingerprint:
        problems.append(
            _differs(
                "directory signing key",
                config.directory_key_path,
                "SECURECHAT_DIRECTORY_KEY_FILE",
                mine.directory_fingerprint,
                recorded.directory_fingerprint,
            )
        )
    if recorded.secret_fingerprint != mine.secret_fingerprint:
        problems.append(
            _differs(
                "server secret",
                config.server_secret_path,
                "SECURECHAT_SERVER_SECRET_FILE",
                mine.secret_fingerprint,
                recorded.secret_fingerprint,
            )
        )
    if problems:
        raise IdentityMismatch(
            "this node does not hold the secrets of the cluster its database belongs to;"
            " refusing to start. " + " ".join(problems)
        )


def _differs(what: str, path: object, setting: str, mine: str, recorded: str) -> str:
    return (
        f"The {what} {path} has fingerprint {mine}, the database's is {recorded}:"
        f" copy that file (mode 0600) from a node of the cluster to {path},"
        f" or point {setting} at it."
    )
