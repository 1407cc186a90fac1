-- SecureChat schema. Applied by the store at start-up when the database is new;
-- later changes go into securechat/store/migrations.py and bump PRAGMA user_version.
-- The server stores only public keys, an opaque key backup encrypted in the browser,
-- an argon2id hash of a key derived from the password, and ciphertext.

CREATE TABLE IF NOT EXISTS users (
    id              INTEGER PRIMARY KEY,
    username        TEXT    NOT NULL UNIQUE,   -- NFKC, lower-case; UNIQUE settles registration races
    salt            BLOB    NOT NULL,          -- PBKDF2 salt chosen by the client (16 bytes)
    iterations      INTEGER NOT NULL,          -- PBKDF2 iterations chosen by the client
    auth_hash       TEXT    NOT NULL,          -- argon2id hash of auth_key
    enc_public_key  BLOB    NOT NULL,          -- RSA-OAEP SPKI DER
    sign_public_key BLOB    NOT NULL,          -- Ed25519 SPKI DER
    key_backup      TEXT    NOT NULL,          -- base64 AES-GCM blob only the browser can open
    created_at      INTEGER NOT NULL,          -- ms since epoch
    keys_updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    id           TEXT    PRIMARY KEY,          -- SHA-256 hex of the auth_id in the cookie
    public_id    TEXT    NOT NULL UNIQUE,      -- shown in the settings page, safe to reveal
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,             -- absolute timeout
    revoked_at   INTEGER,
    user_agent   TEXT    NOT NULL DEFAULT '',
    address      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id, revoked_at);

-- The key directory's transparency log (securechat/directory.py, docs/protocol.md "Key
-- directory"). One row per key publication; row idx is leaf idx of the Merkle tree. Rows are
-- never rewritten or removed: the triggers below refuse it, and refuse an insert that is not
-- the next index or that goes back in time, so the table can only ever grow at its end.
-- No foreign key to users: the log outlives any account, and lists users by user_hash only.
CREATE TABLE IF NOT EXISTS key_log (
    idx              INTEGER PRIMARY KEY,                              -- 0, 1, 2, ... no gaps
    timestamp_ms     INTEGER NOT NULL,                                 -- ms since epoch, never decreasing
    user_hash        BLOB    NOT NULL CHECK (length(user_hash) = 32),  -- transparency.user_hash(username)
    enc_fingerprint  BLOB    NOT NULL CHECK (length(enc_fingerprint) = 32),   -- SHA-256 of SPKI DER
    sign_fingerprint BLOB    NOT NULL CHECK (length(sign_fingerprint) = 32)   -- SHA-256 of SPKI DER
);
CREATE INDEX IF NOT EXISTS key_log_by_user ON key_log (user_hash, idx);
CREATE TRIGGER IF NOT EXISTS key_log_append_at_end BEFORE INSERT ON key_log
WHEN NEW.idx IS NOT (SELECT coalesce(max(idx) + 1, 0) FROM key_log)
  OR NEW.timestamp_ms < coalesce((SELECT timestamp_ms FROM key_log ORDER BY idx DESC LIMIT 1), 0)
BEGIN
    SELECT RAISE(ABORT, 'key_log is append-only: wrong index or timestamp');
END;
CREATE TRIGGER IF NOT EXISTS key_log_no_update BEFORE UPDATE ON key_log
BEGIN
    SELECT RAISE(ABORT, 'key_log is append-only: rows are never updated');
END;
CREATE TRIGGER IF NOT EXISTS key_log_no_delete BEFORE DELETE ON key_log
BEGIN
    SELECT RAISE(ABORT, 'key_log is append-only: rows are never deleted');
END;

-- Real-time chat (securechat/store/messages.py, docs/protocol.md "Real-time chat").
-- One sequence numbers both messages and receipts, so a client's single cursor ("everything
-- after seq N") covers both. The committer (securechat/delivery.py) is the only writer of
-- these tables: it hands out seq values from this row in the same transaction as the rows
-- that use them, so a number is never reused even if rows are later deleted.
CREATE TABLE IF NOT EXISTS chat_sequence (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT OR IGNORE INTO chat_sequence (id, last) VALUES (1, 0);

CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY,              -- from chat_sequence: unique, increasing
    sender_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    recipient_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id     TEXT    NOT NULL,                 -- the sender's UUID for the message
    ts            INTEGER NOT NULL,                 -- ms since epoch, when stored
    envelope      TEXT    NOT NULL,                 -- canonical JSON text, ciphertext only
    delivered_seq INTEGER,                          -- position of the "delivered" receipt
    delivered_at  INTEGER,
    read_seq      INTEGER,                          -- position of the "read" receipt
    read_at       INTEGER,
    UNIQUE (sender_id, client_id)                   -- idempotent resend: this index decides
);
CREATE INDEX IF NOT EXISTS messages_to ON messages (recipient_id, seq);
CREATE INDEX IF NOT EXISTS messages_from ON messages (sender_id, seq);
-- One conversation's history, whichever way each message went.
CREATE INDEX IF NOT EXISTS messages_pair
    ON messages (min(sender_id, recipient_id), max(sender_id, recipient_id), seq);
-- Receipts to replay to a sender on sync.
CREATE INDEX IF NOT EXISTS messages_delivered
    ON messages (sender_id, delivered_seq) WHERE delivered_seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_read
    ON messages (sender_id, read_seq) WHERE read_seq IS NOT NULL;
-- Messages no device of their recipient has received yet (MessageStore.undelivered, and the
-- upgrade that fills undelivered_pairs below). delivered_at, not delivered_seq: a read mark that
-- comes first fills in the time but makes no delivered receipt.
CREATE INDEX IF NOT EXISTS messages_undelivered
    ON messages (sender_id, recipient_id) WHERE delivered_at IS NULL;

-- Each user's conversations, kept by the committer: the peer, the latest seq, unread count.
CREATE TABLE IF NOT EXISTS conversations (
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    peer_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_seq INTEGER NOT NULL,
    unread   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, peer_id)
) WITHOUT ROWID;
-- No index on (user_id, last_seq): a user's conversations are read along the primary key and
-- sorted (one row per person they talk with), while such an index would be rewritten twice
-- for every message stored (it was a fifth of the committer's time: docs/performance.md).

-- What each sender has stored that no device of its recipient has received yet: messages per
-- (sender, recipient) and envelope bytes per sender, kept by every commit under its lock on
-- chat_sequence (securechat/store/batch.py). A send over undelivered_per_pair_max or
-- undelivered_bytes_per_sender_max is refused there; a message counts from the commit that
-- stores it to its first delivering mark. Rows at zero stay: one per pair that ever talked.
CREATE TABLE IF NOT EXISTS undelivered_pairs (
    sender_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    recipient_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    messages     INTEGER NOT NULL,
    PRIMARY KEY (sender_id, recipient_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS undelivered_senders (
    sender_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    bytes     INTEGER NOT NULL
);

-- Each user's stream head: the highest position among the messages to or from them and the
-- receipts for their messages (what MessageStore.changes_after and head show them), moved by
-- every commit under its lock on chat_sequence (securechat/store/batch.py link_streams). A
-- new position's frame carries the head it replaced as its "prev", so a socket that gets a
-- frame whose prev it has not reached knows one is missing and catches up from here (issue
-- 11, item 3). No row: no position yet.
CREATE TABLE IF NOT EXISTS stream_heads (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    head    INTEGER NOT NULL
);

-- Who the nodes sharing this database are (securechat/directory/identity.py): the fingerprints
-- of the directory signing key and of the server secret (an HMAC under it, never the secret),
-- recorded by the first node to start. A node holding other files refuses to start. One row.
CREATE TABLE IF NOT EXISTS cluster_identity (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    directory_fingerprint TEXT    NOT NULL,
    secret_fingerprint    TEXT    NOT NULL,
    recorded_at           INTEGER NOT NULL     -- ms since epoch
);

-- The Merkle root of each key_log size a tree head was signed for, as the first node to sign
-- it computed it (securechat/directory/service.py). Heads are deterministic, so a node that
-- computes another root for a recorded size has found equivocation (or a rewritten log).
CREATE TABLE IF NOT EXISTS tree_heads (
    tree_size INTEGER PRIMARY KEY,
    root      BLOB    NOT NULL CHECK (length(root) = 32),
    signed_at INTEGER NOT NULL                 -- ms since epoch
);

-- An account's end and the operator's hold on it (securechat/accounts/lifecycle.py). A deleted
-- account's name, kept from registration until until_ms (SECURECHAT_USERNAME_QUARANTINE), so
-- nobody can take it over at once; registration checks it in its own transaction.
CREATE TABLE IF NOT EXISTS username_quarantine (
    username   TEXT    PRIMARY KEY,
    deleted_at INTEGER NOT NULL,               -- ms since epoch
    until_ms   INTEGER NOT NULL                -- ms since epoch
);
-- Accounts an operator disabled (python -m securechat users disable): they cannot log in.
CREATE TABLE IF NOT EXISTS disabled_users (
    user_id     INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    disabled_at INTEGER NOT NULL               -- ms since epoch
);
-- The operator's audit trail, one row per action of the command line; running servers read
-- the new rows to close the sockets of the accounts an action ended (lifecycle.OperatorWatch).
CREATE TABLE IF NOT EXISTS operator_actions (
    id       INTEGER PRIMARY KEY,
    at_ms    INTEGER NOT NULL,                 -- ms since epoch
    action   TEXT    NOT NULL,                 -- disable, enable, delete, reset-keys, sessions-end
    username TEXT    NOT NULL,
    detail   TEXT    NOT NULL DEFAULT ''
);

-- Who may message whom (issue 12, item 5; securechat/chat/contacts.py): each owner's decision
-- about a peer. "accepted": the owner wrote to the peer (kept by every commit that stores a
-- message, store/batch.accepted_by_sending) or accepted their request; "blocked": the peer's
-- messages to the owner are withheld by the commit (acknowledged, stored for no one). No row:
-- a stranger, whose conversation is a request. Presence and typing pass only between two
-- users who each accepted the other. Upgraded databases start from every pair that wrote.
CREATE TABLE IF NOT EXISTS contacts (
    owner_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    peer_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state      TEXT    NOT NULL CHECK (state IN ('accepted', 'blocked')),
    changed_at INTEGER NOT NULL,               -- ms since epoch
    PRIMARY KEY (owner_id, peer_id)
) WITHOUT ROWID;
-- Who decided about me: for the cascade when a user is deleted.
CREATE INDEX IF NOT EXISTS contacts_by_peer ON contacts (peer_id, owner_id);

-- An account's recovery key (issue 12, item 2; securechat/accounts/service.py): a second copy
-- of the key backup, wrapped in the browser under a key derived from a random recovery key the
-- server never sees, and the argon2id hash of the recovery_auth derived from it.
CREATE TABLE IF NOT EXISTS recovery_keys (
    user_id       INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    auth_hash     TEXT    NOT NULL,            -- argon2id hash of recovery_auth
    previous_hash TEXT,                        -- the used or replaced key's: a replay is told apart
    key_backup    TEXT    NOT NULL,            -- base64 AES-GCM blob the recovery key opens
    created_at    INTEGER NOT NULL             -- ms since epoch
);

-- Groups (issue 13; securechat/groups/, docs/protocol.md "Groups"). A group is a hash chain of
-- membership entries signed by its members, which the server stores as posted, and the member
-- list the service derived from it; its messages and key distributions are ciphertext. Every
-- write of these tables (store/*/groups.py) draws its position from chat_sequence under the
-- commits' lock, as MessageStore.commit does, and moves the stream_heads of the users it enters.
-- No foreign key from a group to a user: the chain outlives any account.
CREATE TABLE IF NOT EXISTS groups (
    id         INTEGER PRIMARY KEY,
    group_id   BLOB    NOT NULL UNIQUE CHECK (length(group_id) = 16),  -- random, chosen by its creator
    head       BLOB    NOT NULL CHECK (length(head) = 32),             -- hash of the chain's last entry
    entries    INTEGER NOT NULL,                 -- entries in the chain: the next one's index
    bytes      INTEGER NOT NULL,                 -- of those entries together
    created_at INTEGER NOT NULL                  -- ms since epoch
);
-- The chain, entry by entry, each at the position that entered it into its readers' streams.
CREATE TABLE IF NOT EXISTS group_entries (
    group_row INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    idx       INTEGER NOT NULL,                  -- 0 (the creation), 1, 2, ... no gaps
    position  INTEGER NOT NULL UNIQUE,           -- from chat_sequence
    entry     BLOB    NOT NULL,                  -- the signed entry, as posted
    ts        INTEGER NOT NULL,                  -- ms since epoch, when stored
    PRIMARY KEY (group_row, idx)
);
-- The current members, as the last entry left them (replaced whole by each entry).
CREATE TABLE IF NOT EXISTS group_members (
    group_row INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    admin     INTEGER NOT NULL CHECK (admin IN (0, 1)),
    PRIMARY KEY (group_row, user_id)
) WITHOUT ROWID;
-- A user's groups (GroupStore.groups_of, the groups_per_user_max count).
CREATE INDEX IF NOT EXISTS group_members_by_user ON group_members (user_id, group_row);
-- The members whose accounts were deleted (store/*/lifecycle.py), by name: the chain still
-- names them until an entry removes them, so the member list does too ("gone"). A name here
-- never resolves to a later account that takes it.
CREATE TABLE IF NOT EXISTS group_gone (
    group_row INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    username  TEXT    NOT NULL,
    admin     INTEGER NOT NULL CHECK (admin IN (0, 1)),
    PRIMARY KEY (group_row, username)
) WITHOUT ROWID;
-- Group messages ("message": the group wire object) and sender-key distributions ("keys": the
-- map of pairwise envelopes as sent; each recipient's own is in its group_inbox row).
CREATE TABLE IF NOT EXISTS group_posts (
    position  INTEGER PRIMARY KEY,               -- from chat_sequence
    group_row INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    sender_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id TEXT    NOT NULL,                  -- the sender's UUID for the post
    kind      TEXT    NOT NULL CHECK (kind IN ('message', 'keys')),
    head      BLOB    NOT NULL CHECK (length(head) = 32),   -- the group's head it was sent under
    ts        INTEGER NOT NULL,                  -- ms since epoch, when stored
    envelope  TEXT    NOT NULL,                  -- canonical JSON text, ciphertext only
    to_id     INTEGER REFERENCES users (id) ON DELETE SET NULL,  -- a distribution's first recipient
    readers   INTEGER NOT NULL,                  -- the streams it entered, the sender's left out
    delivered INTEGER NOT NULL DEFAULT 0,        -- of those, how many marked it delivered (or read)
    seen      INTEGER NOT NULL DEFAULT 0,        -- and how many read
    UNIQUE (sender_id, client_id)                -- idempotent resend: this index decides
);
-- The distributions naming a user (its to_id set NULL when the account goes).
CREATE INDEX IF NOT EXISTS group_posts_to ON group_posts (to_id) WHERE to_id IS NOT NULL;
-- Each group position in each stream it entered: what changes_after shows the user, and, for
-- a message, whether it reached them. The sender's own row of a message is marked at once.
-- Deleting an account takes its posts' rows here too (store/*/lifecycle.py).
CREATE TABLE IF NOT EXISTS group_inbox (
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,               -- a group_posts or group_entries position
    group_row    INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    kind         TEXT    NOT NULL CHECK (kind IN ('message', 'keys', 'entry')),
    envelope     TEXT,                           -- a key distribution's envelope for this user
                                                 -- (for its sender: the first recipient's)
    delivered_at INTEGER,                        -- ms since epoch
    read_at      INTEGER,
    PRIMARY KEY (user_id, position)
) WITHOUT ROWID;
-- A user's history of one group, and their latest position in it.
CREATE INDEX IF NOT EXISTS group_inbox_history ON group_inbox (user_id, group_row, position);
-- A post's receipt counts, over the rows of its readers.
CREATE INDEX IF NOT EXISTS group_inbox_by_position ON group_inbox (position);
-- A user's unread messages per group.
CREATE INDEX IF NOT EXISTS group_inbox_unread
    ON group_inbox (user_id, group_row) WHERE read_at IS NULL AND kind = 'message';

PRAGMA user_version = 10;
