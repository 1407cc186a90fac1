"""Configuration: every default and every bound in one place.

Each field can be overridden from the environment as ``SECURECHAT_<FIELD NAME IN CAPITALS>``.
The defaults are the safe ones; loosening one is the operator's deliberate choice.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securechat.datadir import DIRECTORY_KEY_FILE, SERVER_SECRET_FILE

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# schema.sql, templates/ and static/: at the top of a checkout, or inside an installed wheel's
# package (setup.py copies them to securechat/resources/ when it builds one).
_PACKAGED = Path(__file__).resolve().parent / "resources"
RESOURCES = _PACKAGED if (_PACKAGED / "schema.sql").is_file() else PROJECT_ROOT
ENV_PREFIX = "SECURECHAT_"


@dataclass(frozen=True)
class Config:
    """The server's settings. Times are in seconds, sizes in bytes unless named otherwise."""

    # Where the database and the server's secrets live (created with mode 0700/0600).
    data_dir: Path = Path("var")
    # Token for /admin/health and /metrics; with none, those endpoints answer 404.
    admin_token: str | None = field(default=None, repr=False)  # may hold a password
    # Origins allowed besides the server's own (comma-separated in the environment).
    allowed_origins: tuple[str, ...] = ()
    # Reverse proxies in front of the server, each appending the address it got the request
    # from to X-Forwarded-For, the one next to the server setting X-Forwarded-Proto: with N,
    # the N-th address from the end is the client's (per-address throttles, sessions list)
    # and the scheme is that proxy's (securechat/web/proxy.py). 0 (the default) believes no such
    # header: a client could write anything into them.
    trusted_proxy_hops: int = 0
    # The origins the server is reached at, as a browser writes them ("https://chat.example.org";
    # comma-separated in the environment). A request whose Host is not one of theirs is refused
    # with 421 before the app sees it (DNS rebinding: docs/security.md), and they are the
    # server's own origins in the Origin checks (securechat/web/origins.py). Unset, only
    # loopback hosts are answered (127.0.0.1, localhost, [::1], any port): a server reachable
    # from elsewhere must name its origin.
    public_origin: tuple[str, ...] = ()
    # Passphrase that encrypts the directory signing key at rest (optional).
    directory_key_passphrase: str | None = field(default=None, repr=False)  # may hold a password
    # The server secret and the directory signing key, if not the data directory's own
    # server.secret and directory.key: every node of a cluster must hold the same two files
    # (`python -m securechat init --cluster` says which; the database records their
    # fingerprints and a node holding others refuses to start: securechat/directory/identity.py).
    server_secret_file: Path | None = None
    directory_key_file: Path | None = None
    # Redis shared by the nodes of a cluster (redis://, rediss:// or unix:// URL). Unset (the
    # default), every limit is this process's own and nothing needs Redis; set, the login and
    # registration throttles, the send rate and the connections-per-user cap are counted
    # there, falling back to this process's own while Redis does not answer
    # (securechat/cluster/limits.py).
    redis_url: str | None = field(default=None, repr=False)  # may hold a password

    # SQLite: FULL makes every acknowledged commit survive power loss (see docs/security.md).
    # A cluster's database: unset, the embedded SQLite file in data_dir (make run); a
    # postgresql:// URL makes this process a node over that database (store/postgres/).
    database_url: str | None = field(default=None, repr=False)  # may hold a password
    # Connections each node's PostgreSQL pool keeps open at least and at most.
    db_pool_min: int = 2
    db_pool_max: int = 10
    # Seconds a starting node waits for the lock under which another node is bringing the
    # PostgreSQL schema up to date; past it the node does not start, saying so
    # (store/postgres/database.py). A node that finds the schema current takes no lock. Also
    # the longest a node's own migration may run (if longer than db_command_timeout).
    db_schema_lock_timeout: float = 60.0

    db_synchronous: str = "FULL"
    db_busy_timeout_ms: int = 5000
    # Seconds between checkpoints of the write-ahead log, made off the commit path
    # (store/sqlite/database.py Checkpointer); the log holds about this long's worth of writes. Each
    # checkpoint ends with an fsync of the database file, which commits' own fsyncs wait
    # behind: short intervals keep it small (docs/performance.md).
    db_checkpoint_interval: float = 0.25

    # Sessions.
    session_idle_timeout: int = 7 * 24 * 3600
    session_absolute_timeout: int = 30 * 24 * 3600
    sessions_per_user_max: int = 20
    # Sessions revoked or expired longer ago than this are deleted (at start-up, then every
    # session_purge_interval seconds).
    session_retention_days: int = 30
    session_purge_interval: int = 3600
    # Cookies are Secure with the __Host- prefix; browsers accept that on http://localhost too.
    cookie_name: str = "__Host-securechat"

    # Key derivation parameters a client may register with.
    kdf_min_iterations: int = 600_000
    kdf_max_iterations: int = 10_000_000
    # argon2id parameters for the stored hash of auth_key (above OWASP's minimum m=19 MiB, t=2).
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    # argon2 computations running at once (each holds argon2_memory_kib of memory).
    argon2_max_concurrent: int = 4
    # Requests waiting for an argon2 slot at most; beyond it, 503 with Retry-After.
    argon2_max_waiting: int = 32
    # Public keys and the opaque key backup.
    rsa_min_bits: int = 2048
    rsa_max_bits: int = 8192
    public_key_max_bytes: int = 2048
    key_backup_max_bytes: int = 16384
    # Largest JSON request body accepted by the HTTP API.
    request_max_bytes: int = 65536
    # An oversized body is read and discarded up to this much, so the client can read the 400
    # instead of a reset connection; beyond it the connection is simply closed.
    request_drain_max_bytes: int = 4 * 1024 * 1024
    # Seconds a whole request body may take to arrive, oversized ones drained included;
    # past it, 408 and the connection is closed. (hypercorn.toml's read_timeout bounds only the
    # silence between two reads: a body trickled a byte at a time would hold a connection.)
    request_body_timeout: float = 10.0

    # Throttling: failed logins per username and per address within the window. A browser
    # presenting a valid device cookie for the name is counted on a budget of its own instead
    # of the name's (OWASP device cookies, accounts/devices.py): device_failures_max within
    # the window, after which that device alone is locked out for the window.
    login_failures_max: int = 10
    login_failure_window: int = 15 * 60
    device_failures_max: int = 10
    # A browser's device cookie lasts this long after its last successful login.
    device_cookie_max_age: int = 180 * 24 * 3600
    device_cookie_name: str = "__Host-securechat-device"
    # Registration attempts per client address within the window. The sign-up page spends two
    # on each sign-up (POST /register/check before key generation, then /register), so the
    # default lets one address create ten accounts an hour.
    registrations_per_address: int = 20
    registration_window: int = 3600
    # Tracked throttle keys at most (oldest forgotten first), so memory stays bounded; each
    # table on its own (per username, address, device, and the locked-out devices).
    throttle_table_max: int = 100_000

    # Real-time chat bounds.
    envelope_max_bytes: int = 56 * 1024
    ws_queue_frames: int = 512
    ws_connections_per_user: int = 8
    ws_frames_per_s: float = 50.0
    ws_frames_burst: int = 100
    # Messages one account may send, all its connections together (a token bucket); past it,
    # a send is refused with a ``rate_limited`` error and nothing is stored.
    sends_per_user_per_s: float = 10.0
    sends_per_user_burst: int = 100
    # Accounts whose send bucket is remembered at most; only full (idle) buckets are forgotten.
    send_limiter_table_max: int = 100_000
    # The rate bounds how fast, these how much one account leaves stored for recipients who
    # have not received it yet (no device of theirs marked it delivered or read): messages to
    # one recipient (the queue length of a conversation) and envelope bytes to all recipients
    # together (its share of the disk). Past either, a send is refused with ``queue_full`` and
    # nothing is stored; the client sends it again later (counted in each commit:
    # securechat/store/batch.py).
    undelivered_per_pair_max: int = 2000
    undelivered_bytes_per_sender_max: int = 256 * 1024 * 1024
    ws_connections_max: int = 20_000
    sync_batch: int = 500
    history_page_max: int = 100
    user_search_max: int = 20
    # The recipient picker's searches one account may make, all its sessions together (a token
    # bucket, counted over the cluster with redis_url: cluster/limits.SharedSearchRate); past
    # it 429 ``search_limited``. Typing a name makes a few a second; a scraper gets no faster.
    user_search_per_s: float = 3.0
    user_search_burst: int = 30
    # Contact decisions and lists (POST/GET /api/v1/contacts, GET /api/v1/requests) one
    # account may make, all its sessions together, per node (a token bucket); past it 429
    # ``contacts_limited``. Each is a database read or write; a person clicks a few a second.
    contacts_per_user_per_s: float = 5.0
    contacts_per_user_burst: int = 50
    # Contacts, blocked users and message requests listed at most per page (chat/contacts.py).
    contacts_page_max: int = 200
    commit_batch_max: int = 512
    # Seconds between the end of one chat commit and the start of the next, when sends keep
    # coming: they gather into larger, cheaper transactions (securechat/chat/delivery.py). The
    # latency it adds under load is at most this; an idle server commits at once.
    commit_gather_interval: float = 0.002
    # Incoming frames buffered between Hypercorn and the chat handler (Quart's own queue is
    # unbounded); with hypercorn.toml's max_app_queue_size this bounds what a flood can cost.
    ws_receive_queue_frames: int = 4
    # Typing notifications relayed per connection (the excess is dropped, not an error).
    ws_typing_per_s: float = 1.0
    ws_typing_burst: int = 5
    # Sends and read/delivered marks waiting for the committer, all connections together;
    # past it, connections wait to be read (backpressure) rather than memory growing.
    commit_pending_max: int = 8192
    # A sync batch also stops at about this many envelope bytes (bounds memory per sync).
    sync_batch_bytes: int = 1 << 20
    # Conversation partners told about presence changes, most recent conversations first.
    presence_peers_max: int = 200
    conversations_page_max: int = 100
    # Seconds a closing handshake may take before the handler gives up on a stuck peer.
    ws_close_timeout: float = 5.0
    # Seconds one frame's write to the socket may take; a peer that stops reading for longer
    # is closed with 1013 (slow reader), even when no live traffic overflows its queue.
    # One sweep a second checks the writes (chat.session.StallSweep), so the close comes up to
    # one more second later (or up to twice this, if this is under a second).
    ws_send_timeout: float = 10.0
    # Seconds a socket may stay silent (the page pings every third of this: chat.html tells it)
    # before it is taken for gone and closed with 1013, so contacts stop seeing its user online
    # long before TCP would notice a peer that vanished (a closed laptop, a lost network).
    ws_idle_timeout: float = 90.0
    # Seconds after a message is stored during which its sender may delete it for everyone
    # (the ``delete`` frame; docs/protocol.md): long enough to notice a message sent to the
    # wrong person or with a mistake, short enough that a conversation's past stays settled.
    delete_window: float = 3600.0

    # A cluster's broker (with redis_url set; securechat/chat/redisbroker.py). Pub/sub loses
    # frames by design, so every resync_interval seconds up to resync_users_max users with a
    # socket here have their sockets compared with the database, and caught up if behind
    # (securechat/chat/resync.py). A node's lease: its users count as online while it is
    # refreshed (every third of it); a node gone for longer takes them offline
    # (securechat/cluster/nodes.py). Frames waiting for Redis at most (past it, dropped: the
    # resync makes up for them); seconds /admin/health waits for the broker's round trip.
    broker_resync_interval: float = 5.0
    broker_resync_users_max: int = 256
    node_lease: float = 15.0
    broker_outbox_max: int = 65536
    broker_canary_timeout: float = 1.0
    # The cluster's seams, each bounded (securechat/cluster/, chat/redisbroker.py, chat/cluster.py).
    # Bytes of frames waiting for Redis at most (with broker_outbox_max: whichever comes first),
    # and per pipeline: one pipeline must stay well inside redis_call_timeout on a healthy Redis
    # (docs/performance.md, "The Redis outbox").
    broker_outbox_max_bytes: int = 64 << 20
    broker_pipeline_max: int = 512
    broker_pipeline_max_bytes: int = 1 << 20
    # Seconds between PINGs on a quiet pub/sub connection (silent three times that long, it is
    # taken for lost), and before connecting it again after a failure.
    broker_keepalive: float = 5.0
    broker_reconnect_delay: float = 0.5
    # Control orders (logout anywhere, account removal) that Redis did not take, kept to be sent
    # again when it answers; past it, the oldest are dropped (the session check still holds).
    broker_control_retry_max: int = 1024
    # Every this many seconds each node reads the sessions of its sockets from the database,
    # session_check_batch at a time, and closes those revoked: a logout whose control order was
    # lost closes its sockets everywhere within this bound (securechat/chat/cluster.py).
    session_check_interval: float = 30.0
    session_check_batch: int = 500
    # Seconds one Redis call may take (connecting included) before the caller goes without it;
    # seconds after a failure during which calls go without Redis at once (cluster/redis.py).
    redis_call_timeout: float = 0.25
    redis_retry_interval: float = 1.0
    # Seconds a node's sockets count against the per-user cap after its last renewal (a
    # SIGKILLed node's, at most this; cluster/limits.py).
    socket_lease: float = 20.0
    # Seconds one PostgreSQL statement may take before it fails (asyncpg's command_timeout).
    db_command_timeout: float = 10.0

    # Groups (issue 13; securechat/groups/service.py): members of one group (2 to 256, the
    # bound clients verify chains with), groups one account is a member of, entries of one chain.
    group_members_max: int = 256
    groups_per_user_max: int = 500
    group_entries_max: int = 10_000
    # Bytes of one chain's entries together (what GET group answers; at least 64 KiB).
    group_chain_bytes_max: int = 8 * 1024 * 1024

    # Key directory. A user's key history (GET /api/v1/keys/<name>/history) answers at most
    # this many of their entries, the newest first: what a group member's client needs to check
    # entries signed before a key reset (docs/CONTRACTS.md "Groups").
    directory_entries_page_max: int = 1000
    key_history_max: int = 64

    # Account lifecycle (securechat/accounts/lifecycle.py). A deleted account's name cannot be
    # registered again for this many seconds, so nobody can pose as its owner at once (the
    # registration answers 409, as for a taken name). Every this many seconds each server
    # process reads the operator's new actions (python -m securechat users ...) and closes the
    # sockets of the accounts they ended: the bound on how long a disabled account's socket
    # stays open on a running server.
    username_quarantine: int = 30 * 24 * 3600
    operator_poll_interval: float = 2.0

    # Garbage collection (securechat/gcpolicy.py): what survives a full collection is frozen,
    # so later ones skip it, until the frozen objects have grown by this factor; then the next
    # full collection examines everything again. 0 leaves CPython's collector as it is.
    gc_freeze_growth: float = 1.0

    @property
    def database_path(self) -> Path:
        """The SQLite file inside the data directory."""
        return self.data_dir / "securechat.db"

    @property
    def server_secret_path(self) -> Path:
        """The server secret's file: ``server_secret_file``, else the data directory's."""
        return self.server_secret_file or self.data_dir / SERVER_SECRET_FILE

    @property
    def directory_key_path(self) -> Path:
        """The directory signing key's file: ``directory_key_file``, else the data directory's."""
        return self.directory_key_file or self.data_dir / DIRECTORY_KEY_FILE

    @property
    def schema_path(self) -> Path:
        """The SQL schema the store applies to a new database."""
        return RESOURCES / "schema.sql"

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Defaults, then ``SECURECHAT_*`` variables, then explicit overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is not None and raw != "":
                values[item.name] = _parse(item, raw)
        values.update(overrides)
        return cls(**values)


def _parse(item: dataclasses.Field[Any], raw: str) -> Any:
    """Turn one environment string into the field's type."""
    kind = str(item.type)
    if "tuple" in kind:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if "Path" in kind:
        return Path(raw)
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw


__all__ = ["PROJECT_ROOT", "Config"]
