"""The key directory on a real server: its key, its append-only log, and its API; the service
over each backend's store (tests/store/conftest.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securechat import __main__ as cli
from securechat import e2e
from securechat.client import SecureChatClient, reset_keys
from securechat.config import Config
from securechat.directory import service as directory
from securechat.directory.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from securechat.directory.transparency import (
    SignedTreeHead,
    entry_leaf_bytes,
    entry_leaf_hash,
    user_hash,
    verify_tree_head,
)
from securechat.store import Store
from tests.chatkit import PASSWORD
from tests.conftest import (
    FAST_ITERATIONS,
    MakeClient,
    SignUp,
    fast_config,
    identity_of,
)
from tests.livesrv import LiveServer
from tests.store.conftest import MakeStore, new_user

TOKEN = "directory-admin-token-for-tests"


def get(server: LiveServer, path: str, **params: Any) -> httpx.Response:
    """A GET without any account (plain HTTP: no TLS context, which costs ~35 ms to build)."""
    return httpx.get(server.url + path, params=params, timeout=10, verify=False)


def directory_spki(server: LiveServer) -> bytes:
    return e2e.b64decode(get(server, "/api/v1/directory").json()["public_key"])


def served_head(server: LiveServer) -> SignedTreeHead:
    return SignedTreeHead.from_json(get(server, "/api/v1/directory/head").json())


def entry_leaf(entry: dict[str, Any]) -> bytes:
    """The leaf hash of an entry as served."""
    return leaf_hash(
        entry_leaf_bytes(
            entry["index"],
            entry["timestamp"],
            e2e.b64decode(entry["user_hash"]),
            bytes.fromhex(entry["enc_fingerprint"]),
            bytes.fromhex(entry["sign_fingerprint"]),
        )
    )


def fork_server(server: LiveServer, data_dir: Path) -> LiveServer:
    """A second server on a copy of ``server``'s data (same directory key), started."""
    data_dir.mkdir(mode=0o700)
    for name in ("server.secret", directory.KEY_FILE):
        shutil.copy2(server.config.data_dir / name, data_dir / name)
    with (
        sqlite3.connect(server.database_path) as source,
        sqlite3.connect(data_dir / "securechat.db") as copy,
    ):
        source.backup(copy)
    return LiveServer(fast_config(data_dir)).start()


def swap_keys_in_database(server: LiveServer, username: str, identity: e2e.Identity) -> None:
    """What a malicious operator does: replace a user's keys, bypassing the log."""
    with sqlite3.connect(server.database_path) as db:
        db.execute(
            "UPDATE users SET enc_public_key = ?, sign_public_key = ? WHERE username = ?",
            (identity.enc_public_spki, identity.sign_public_spki, username),
        )


def forge_log_entry(server: LiveServer, username: str, identity: e2e.Identity) -> None:
    """A malicious operator who also logs the swapped keys, as an honest key change would."""
    swap_keys_in_database(server, username, identity)
    with sqlite3.connect(server.database_path) as db:
        last, when = db.execute(
            "SELECT idx, timestamp_ms FROM key_log ORDER BY idx DESC LIMIT 1"
        ).fetchone()
        db.execute(
            "INSERT INTO key_log VALUES (?, ?, ?, ?, ?)",
            (
                last + 1,
                when + 1,
                user_hash(username),
                hashlib.sha256(identity.enc_public_spki).digest(),
                hashlib.sha256(identity.sign_public_spki).digest(),
            ),
        )


def change_keys(server: LiveServer, username: str, identity: e2e.Identity) -> None:
    """A legitimate key change through the store: users and the log in one transaction."""
    store = server.app.extensions["securechat"].store
    server.run_in_server_loop(
        store.directory.replace_keys(
            username, identity.enc_public_spki, identity.sign_public_spki, "AAAA", 2**40
        )
    )


# --- the signing key ---------------------------------------------------------------------------


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    """The first start writes an Ed25519 key readable only by the owner; later starts reuse it."""
    first = directory.load_or_create_key(tmp_path)
    path = tmp_path / directory.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in path.read_bytes()
    again = directory.load_or_create_key(tmp_path)
    assert directory.public_spki(again) == directory.public_spki(first)
    assert [p.name for p in tmp_path.iterdir()] == [directory.KEY_FILE]


def test_key_is_encrypted_with_the_passphrase(tmp_path: Path) -> None:
    """With a passphrase the file is encrypted PKCS#8 and loads only with that passphrase."""
    key = directory.load_or_create_key(tmp_path, "a long passphrase")
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in (tmp_path / directory.KEY_FILE).read_bytes()
    again = directory.load_or_create_key(tmp_path, "a long passphrase")
    assert directory.public_spki(again) == directory.public_spki(key)
    with pytest.raises(directory.DirectoryKeyError, match="wrong passphrase"):
        directory.load_or_create_key(tmp_path, "another long passphrase")
    with pytest.raises(directory.DirectoryKeyError, match="PASSPHRASE"):
        directory.load_or_create_key(tmp_path)


def test_unencrypted_key_with_a_passphrase_is_refused(tmp_path: Path) -> None:
    """A passphrase set for a key stored in the clear is an operator mistake worth stopping on."""
    directory.load_or_create_key(tmp_path)
    with pytest.raises(directory.DirectoryKeyError, match="not encrypted"):
        directory.load_or_create_key(tmp_path, "a long enough passphrase")


def test_short_passphrase_is_refused(tmp_path: Path) -> None:
    """The PEM's own KDF is light, so a passphrase shorter than 16 characters is refused."""
    with pytest.raises(directory.DirectoryKeyError, match="at least 16"):
        directory.load_or_create_key(tmp_path, "too short")
    assert not (tmp_path / directory.KEY_FILE).exists()


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    """Like OpenSSH, the server refuses a private key file that others can read."""
    directory.load_or_create_key(tmp_path)
    os.chmod(tmp_path / directory.KEY_FILE, 0o644)
    with pytest.raises(directory.DirectoryKeyError, match="chmod 600"):
        directory.load_or_create_key(tmp_path)


def test_init_prints_the_directory_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m securechat init` prints the fingerprint the server then serves."""
    monkeypatch.setenv("SECURECHAT_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["init"]) == 0
    spki = directory.public_spki(directory.load_or_create_key(tmp_path / "data"))
    assert f"Key directory fingerprint: {e2e.fingerprint(spki)}" in capsys.readouterr().out


def test_directory_endpoint_serves_the_key(live_server: LiveServer) -> None:
    """GET /api/v1/directory: the SPKI of the key in the data directory, and its fingerprint."""
    body = get(live_server, "/api/v1/directory").json()
    spki = directory.public_spki(directory.load_or_create_key(live_server.config.data_dir))
    assert body == {
        "algorithm": "Ed25519",
        "public_key": e2e.b64encode(spki),
        "fingerprint": e2e.fingerprint(spki),
    }


def test_health_reports_fingerprint_and_tree_size(tmp_path: Path) -> None:
    """/admin/health carries the directory fingerprint and the log's size."""
    with LiveServer(fast_config(tmp_path / "data", admin_token=TOKEN)).start() as server:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        body = httpx.get(server.url + "/admin/health", headers=headers, timeout=10).json()
        fingerprint = e2e.fingerprint(directory_spki(server))
        assert body["directory"] == {"status": "ok", "fingerprint": fingerprint, "tree_size": 0}


# --- the log -----------------------------------------------------------------------------------


async def test_registration_appends_an_entry(live_server: LiveServer, signed_up: SignUp) -> None:
    """Each registration logs the user's hash and key fingerprints; the head covers them."""
    alice = await signed_up("alice")
    await signed_up("bob")
    body = get(live_server, "/api/v1/directory/entries", start=0).json()
    assert body["start"] == 0 and body["end"] == 2 and body["tree_size"] == 2
    first = body["entries"][0]
    assert first["index"] == 0
    assert e2e.b64decode(first["user_hash"]) == user_hash("alice")
    assert first["enc_fingerprint"] == e2e.fingerprint(identity_of(alice).enc_public_spki)
    assert first["sign_fingerprint"] == e2e.fingerprint(identity_of(alice).sign_public_spki)
    head = served_head(live_server)
    assert head.tree_size == 2
    assert MerkleTree(entry_leaf(e) for e in body["entries"]).root() == head.root_hash
    assert verify_tree_head(directory_spki(live_server), head)


async def test_failed_registration_appends_nothing(
    live_server: LiveServer,
    signed_up: SignUp,
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """A taken name rolls back the whole job: no user, no entry."""
    await signed_up("alice")
    with pytest.raises(Exception, match="409"):
        await make_client().register(
            "alice", "another password", iterations=1000, identity=identities[2]
        )
    assert served_head(live_server).tree_size == 1


async def test_log_rows_cannot_be_changed(live_server: LiveServer, signed_up: SignUp) -> None:
    """The database refuses UPDATE, DELETE and any insert but the next index."""
    await signed_up("alice")
    with sqlite3.connect(live_server.database_path) as db:
        for sql in (
            "UPDATE key_log SET timestamp_ms = 0",
            "DELETE FROM key_log",
            "INSERT INTO key_log SELECT idx + 5, timestamp_ms, user_hash, enc_fingerprint,"
            " sign_fingerprint FROM key_log",
            "INSERT INTO key_log SELECT idx + 1, timestamp_ms - 1, user_hash, enc_fingerprint,"
            " sign_fingerprint FROM key_log",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)
        assert db.execute("SELECT count(*) FROM key_log").fetchone()[0] == 1


async def test_key_change_appends_an_entry(
    live_server: LiveServer, signed_up: SignUp, identities: list[e2e.Identity]
) -> None:
    """A key change through the store logs the new keys after the old ones."""
    alice = await signed_up("alice")
    await signed_up("bob")
    change_keys(live_server, "bob", identities[3])
    body = await alice.call("GET", "/api/v1/keys/bob")
    assert body["entry"]["index"] == 2
    assert body["enc_public_key"] == e2e.b64encode(identities[3].enc_public_spki)
    assert body["entry"]["timestamp"] >= 2**40
    assert served_head(live_server).tree_size == 3


async def test_heads_are_one_per_size(tmp_path: Path, identities: list[e2e.Identity]) -> None:
    """The same size always gives the same signed head, also after a restart."""
    config = fast_config(tmp_path / "data")
    with LiveServer(config).start() as server:
        async with SecureChatClient(server.url, min_iterations=1000) as client:
            await client.register("alice", "a password", iterations=1000, identity=identities[0])
        first = get(server, "/api/v1/directory/head").json()
        assert get(server, "/api/v1/directory/head").json() == first
    with LiveServer(config).start() as server:
        assert get(server, "/api/v1/directory/head").json() == first


def test_empty_log_has_a_signed_head(live_server: LiveServer) -> None:
    """Before any registration the head is size 0, time 0, root SHA-256("")."""
    head = served_head(live_server)
    assert (head.tree_size, head.timestamp_ms) == (0, 0)
    assert head.root_hash == hashlib.sha256(b"").digest()
    assert verify_tree_head(directory_spki(live_server), head)


async def test_every_signature_bit_flip_of_a_served_head_is_rejected(
    live_server: LiveServer, signed_up: SignUp
) -> None:
    """A server-served head with any one signature bit flipped does not verify."""
    await signed_up("alice")
    spki = directory_spki(live_server)
    head = served_head(live_server)
    assert verify_tree_head(spki, head)
    for bit in range(len(head.signature) * 8):
        flipped = bytearray(head.signature)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        forged = SignedTreeHead(head.tree_size, head.timestamp_ms, head.root_hash, bytes(flipped))
        assert not verify_tree_head(spki, forged), bit


async def test_consistency_proofs_between_all_sizes(
    live_server: LiveServer, make_client: MakeClient, identities: list[e2e.Identity]
) -> None:
    """Every (from, to) pair of a 5-entry log proves consistent with the heads' roots."""
    for number in range(5):
        await make_client().register(
            f"user{number}", "a password", iterations=1000, identity=identities[number % 4]
        )
    entries = get(live_server, "/api/v1/directory/entries").json()["entries"]
    tree = MerkleTree(entry_leaf(e) for e in entries)
    for old in range(6):
        for new in range(old, 6):
            body = get(live_server, "/api/v1/directory/consistency", **{"from": old, "to": new})
            proof = [e2e.b64decode(p) for p in body.json()["proof"]]
            assert verify_consistency(old, new, tree.root(old), tree.root(new), proof)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"from": 0},
        {"to": 0},
        {"from": 1, "to": 0},
        {"from": 0, "to": 9},
        {"from": "x", "to": 0},
    ],
)
def test_bad_consistency_requests_are_400(live_server: LiveServer, params: dict[str, Any]) -> None:
    """Missing, reversed, non-numeric or too-large sizes answer 400 invalid."""
    response = get(live_server, "/api/v1/directory/consistency", **params)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


async def test_entries_are_paged(tmp_path: Path, identities: list[e2e.Identity]) -> None:
    """A page holds at most directory_entries_page_max entries; start past the end is 400."""
    with LiveServer(fast_config(tmp_path / "data", directory_entries_page_max=2)).start() as server:
        async with SecureChatClient(server.url, min_iterations=1000) as client:
            for number in range(3):
                await client.register(
                    f"user{number}", "a password", iterations=1000, identity=identities[number]
                )
        body = get(server, "/api/v1/directory/entries", start=0, end=3).json()
        assert (body["start"], body["end"], len(body["entries"])) == (0, 2, 2)
        body = get(server, "/api/v1/directory/entries", start=2, end=100).json()
        assert [e["index"] for e in body["entries"]] == [2]
        assert get(server, "/api/v1/directory/entries", start=3).json()["entries"] == []
        assert get(server, "/api/v1/directory/entries", start=4).status_code == 400


def test_log_endpoints_need_no_account(live_server: LiveServer) -> None:
    """Anyone can audit: head, consistency and entries answer without a session."""
    for path in ("/api/v1/directory", "/api/v1/directory/head", "/api/v1/directory/entries"):
        assert get(live_server, path).status_code == 200


# --- the service over each backend's log -----------------------------------------------------


async def test_the_head_covers_every_registration_and_proves_the_latest_keys(
    any_store: Store,
) -> None:
    """KeyDirectory over the store: a signed head over all entries, an inclusion proof of a
    user's newest keys against it."""
    key = Ed25519PrivateKey.generate()
    keys = directory.KeyDirectory(key, any_store.directory)
    for name in ("alice", "bob", "carol"):
        await any_store.accounts.add_user(new_user(name), 10)
    await any_store.directory.replace_keys("bob", b"new enc", b"new sign", "backup", 20)
    head = await keys.refresh()
    entries = await any_store.directory.entries(0, 10)
    assert (head.tree_size, head.timestamp_ms) == (4, 20)
    assert MerkleTree(entry_leaf_hash(e) for e in entries).root() == head.root_hash
    assert verify_tree_head(directory.public_spki(key), head)
    proved = await keys.prove_latest("bob")
    assert proved is not None and proved.entry == entries[3]
    leaf = entry_leaf_hash(proved.entry)
    assert verify_inclusion(leaf, 3, 4, proved.proof, head.root_hash)
    assert await keys.prove_latest("dave") is None


async def test_two_nodes_sign_the_same_head_for_a_size(make_any_store: MakeStore) -> None:
    """Two stores over one database (two nodes), each with a KeyDirectory and the shared key,
    serve byte-identical heads for each size: heads are deterministic."""
    key = Ed25519PrivateKey.generate()
    stores = [make_any_store(), make_any_store()]
    for store in stores:
        await store.open()
    try:
        nodes = [directory.KeyDirectory(key, store.directory) for store in stores]
        for number in range(3):
            await stores[number % 2].accounts.add_user(new_user(f"user{number}"), number)
            heads = [await node.refresh() for node in nodes]
            assert heads[0] == heads[1] and heads[0].tree_size == number + 1
    finally:
        for store in stores:
            await store.close()


# --- GET /api/v1/keys/<username> --------------------------------------------------------------


async def test_keys_need_a_session(live_server: LiveServer, signed_up: SignUp) -> None:
    """Without a session, /api/v1/keys answers 401."""
    await signed_up("bob")
    response = get(live_server, "/api/v1/keys/bob")
    assert response.status_code == 401


async def test_keys_of_unknown_user_are_404(signed_up: SignUp) -> None:
    """An unknown or impossible username answers 404."""
    alice = await signed_up("alice")
    for name in ("nobody", "x", "%2e%2e"):
        response = await alice.request("GET", f"/api/v1/keys/{name}")
        assert response.status_code == 404


async def test_keys_come_with_entry_proof_and_head(
    live_server: LiveServer, signed_up: SignUp
) -> None:
    """The answer proves bob's keys are in the log under the head it carries."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    await signed_up("carol")
    body = await alice.call("GET", "/api/v1/keys/ＢＯＢ")
    identity = identity_of(bob)
    assert body["username"] == "bob"
    assert body["enc_public_key"] == e2e.b64encode(identity.enc_public_spki)
    assert body["sign_public_key"] == e2e.b64encode(identity.sign_public_spki)
    assert body["enc_fingerprint"] == e2e.fingerprint(identity.enc_public_spki)
    assert body["sign_fingerprint"] == e2e.fingerprint(identity.sign_public_spki)
    assert body["entry"]["index"] == 1
    head = SignedTreeHead.from_json(body["tree_head"])
    assert head.tree_size == 3
    assert verify_tree_head(directory_spki(live_server), head)
    proof = [e2e.b64decode(p) for p in body["inclusion_proof"]]
    assert verify_inclusion(entry_leaf(body["entry"]), 1, 3, proof, head.root_hash)


async def test_key_history_proves_every_publication_newest_first(
    live_server: LiveServer, signed_up: SignUp
) -> None:
    """After bob resets his keys, his history holds both publications, newest first, each
    proved in the one head served; a reader learns both sign keys a chain entry of his may
    carry. Without a session 401, an unknown name 404, and the bound caps the answer."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    first = identity_of(bob)
    second = await reset_keys(bob, PASSWORD, rsa_bits=2048)
    body = await alice.call("GET", "/api/v1/keys/bob/history")
    head = SignedTreeHead.from_json(body["tree_head"])
    assert verify_tree_head(directory_spki(live_server), head)
    entries = [item["entry"] for item in body["entries"]]
    assert [e["sign_fingerprint"] for e in entries] == [
        e2e.fingerprint(second.sign_public_spki),
        e2e.fingerprint(first.sign_public_spki),
    ]
    assert entries[0]["index"] > entries[1]["index"]
    for item in body["entries"]:
        proof = [e2e.b64decode(p) for p in item["inclusion_proof"]]
        index = item["entry"]["index"]
        assert verify_inclusion(
            entry_leaf(item["entry"]), index, head.tree_size, proof, head.root_hash
        )
    assert get(live_server, "/api/v1/keys/bob/history").status_code == 401
    assert (await alice.request("GET", "/api/v1/keys/nobody/history")).status_code == 404


async def test_key_history_is_bounded(tmp_path: Path) -> None:
    """``key_history_max`` caps the entries answered: the newest ones."""
    with LiveServer(fast_config(tmp_path / "data", key_history_max=1)).start() as server:
        async with SecureChatClient(server.url, min_iterations=FAST_ITERATIONS) as alice:
            await alice.register("alice", PASSWORD, iterations=FAST_ITERATIONS)
            await alice.login("alice", PASSWORD)
            await reset_keys(alice, PASSWORD, rsa_bits=2048)
            body = await alice.call("GET", "/api/v1/keys/alice/history")
    assert len(body["entries"]) == 1
    assert body["entries"][0]["entry"]["sign_fingerprint"] == e2e.fingerprint(
        alice.account.identity.sign_public_spki  # type: ignore[union-attr]
    )


def test_config_has_the_directory_bounds() -> None:
    """The page bound and the passphrase come from the environment like every setting."""
    config = Config.from_env(
        {
            "SECURECHAT_DIRECTORY_ENTRIES_PAGE_MAX": "50",
            "SECURECHAT_DIRECTORY_KEY_PASSPHRASE": "pass",
        }
    )
    assert config.directory_entries_page_max == 50
    assert config.directory_key_passphrase == "pass"


async def test_server_runs_with_an_encrypted_key(tmp_path: Path) -> None:
    """With a passphrase the server creates an encrypted key and serves from it."""
    config = fast_config(tmp_path / "data", directory_key_passphrase="a long passphrase here")
    with LiveServer(config).start() as server:
        key = directory.load_or_create_key(config.data_dir, "a long passphrase here")
        assert directory_spki(server) == directory.public_spki(key)
        assert verify_tree_head(directory.public_spki(key), served_head(server))
    assert b"ENCRYPTED" in (config.data_dir / directory.KEY_FILE).read_bytes()
