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

PRAGMA user_version = 1;
