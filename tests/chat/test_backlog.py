"""What a sender may leave waiting for recipients, on a real server (SQLite).

Past ``undelivered_per_pair_max`` messages to one recipient, or
``undelivered_bytes_per_sender_max`` envelope bytes to all, a send is refused with
``queue_full``; it goes through once the recipient has received earlier messages, and the
counts survive a restart. The store counts inside each commit (securechat/store/batch.py);
tests/store/test_store_backlog.py checks the same on both engines, and across two nodes.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import pytest

from securechat import e2e
from securechat.client import ChatConnection, ChatError, SecureChatClient
from tests.chatkit import FAKE_ENVELOPE, Accounts, ServerWith, send_text

# The fixtures these tests use.
from tests.chatkit import _server_with as _server_with
from tests.conftest import fast_config
from tests.livesrv import LiveServer
from tests.web.test_metrics import TOKEN, scrape

ENVELOPE_BYTES = len(json.dumps(FAKE_ENVELOPE, separators=(",", ":"), sort_keys=True))


def name_of(client: SecureChatClient) -> str:
    assert client.account is not None
    return client.account.username


async def send(conn: ChatConnection, to: str, frame_id: str | None = None) -> dict[str, object]:
    """Send the fake envelope under ``frame_id`` (or a new id); the ack, or ChatError."""
    frame_id = frame_id or str(uuid.uuid4())
    await conn.send_raw(send_text(to, frame_id=frame_id))
    return await conn.wait_ack(frame_id)


async def refused(conn: ChatConnection, to: str, frame_id: str | None = None) -> str:
    """Send, expect an error frame naming the send; return its code."""
    frame_id = frame_id or str(uuid.uuid4())
    with pytest.raises(ChatError) as error:
        await send(conn, to, frame_id)
    assert error.value.frame["id"] == frame_id
    return error.value.code


def stored(database: Path, frame_id: str | None = None) -> int:
    """Messages in the database (with this client id, if given)."""
    with sqlite3.connect(database) as db:
        if frame_id is None:
            return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
        query = "SELECT count(*) FROM messages WHERE client_id = ?"
        return int(db.execute(query, (frame_id,)).fetchone()[0])


def last_seq(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT last FROM chat_sequence").fetchone()[0])


async def committed(conn: ChatConnection, to: str) -> None:
    """Return once everything ``conn`` sent before is committed (its frames commit in order)."""
    await send(conn, to)


async def test_past_the_pair_bound_a_send_is_refused_until_the_recipient_catches_up(
    server_with: ServerWith,
) -> None:
    """The 4th message to an offline bob is refused and stored nowhere, without a seq; others
    still get messages; once bob has received (read, delivered) two, the same id goes."""
    server, accounts = server_with(undelivered_per_pair_max=3)
    alice, bob, carol = [await accounts.sign_up(p) for p in ("alice", "bob", "carol")]
    a = await alice.connect()
    for _ in range(3):
        await send(a, name_of(bob))
    before = last_seq(server.database_path)
    waiting = str(uuid.uuid4())
    assert await refused(a, name_of(bob), waiting) == "queue_full"
    assert stored(server.database_path) == 3
    assert last_seq(server.database_path) == before
    await send(a, name_of(carol))
    assert await a.ping() == {"type": "pong"}
    b = await bob.connect(after=0)
    assert len(b.replayed) == 3
    await b.mark(b.replayed[0]["seq"], "read")
    await b.mark(b.replayed[1]["seq"], "delivered")
    await committed(b, name_of(alice))
    ack = await send(a, name_of(bob), waiting)
    assert stored(server.database_path, waiting) == 1
    assert (await b.wait_for("message", id=waiting))["seq"] == ack["seq"]
    await send(a, name_of(bob))
    assert await refused(a, name_of(bob)) == "queue_full"


async def test_the_byte_bound_counts_every_recipient_together(server_with: ServerWith) -> None:
    """Room for three envelopes in all: two to bob and one to carol fill it for everyone."""
    server, accounts = server_with(
        undelivered_bytes_per_sender_max=3 * ENVELOPE_BYTES + 10, admin_token=TOKEN
    )
    alice, bob, carol, dave = [await accounts.sign_up(p) for p in ("alice", "bob", "carol", "dave")]
    a = await alice.connect()
    await send(a, name_of(bob))
    await send(a, name_of(bob))
    await send(a, name_of(carol))
    assert await refused(a, name_of(carol)) == "queue_full"
    assert await refused(a, name_of(dave)) == "queue_full"
    assert stored(server.database_path) == 3
    await send(await bob.connect(), name_of(alice))  # bob's own backlog is his own
    samples = await scrape(server.url)
    assert samples["securechat_rejected_frames_total{reason=queue_full}"] == 2


async def test_a_resend_of_a_stored_id_is_acknowledged_and_counted_once(
    server_with: ServerWith,
) -> None:
    """A resend is acknowledged with its first ack whether or not the queue is full, and takes
    no room: three ids fill a bound of three however often one is sent."""
    server, accounts = server_with(undelivered_per_pair_max=3)
    alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
    a = await alice.connect()
    first_id = str(uuid.uuid4())
    first = await send(a, name_of(bob), first_id)
    assert await send(a, name_of(bob), first_id) == first
    await send(a, name_of(bob))
    await send(a, name_of(bob))
    assert await refused(a, name_of(bob)) == "queue_full"
    assert await send(a, name_of(bob), first_id) == first
    assert stored(server.database_path) == 3


async def test_the_counts_are_loaded_again_after_a_restart(
    tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """Two messages wait for bob; a new server on the same data, with room for three, takes
    exactly one more."""
    config = fast_config(tmp_path / "data", undelivered_per_pair_max=2)
    with LiveServer(config).start() as server:
        accounts = Accounts(server.url, identities)
        try:
            alice, bob = await accounts.sign_up("alice"), await accounts.sign_up("bob")
            a = await alice.connect()
            await send(a, name_of(bob))
            await send(a, name_of(bob))
        finally:
            await accounts.close()
    with LiveServer(config.replace(undelivered_per_pair_max=3)).start() as server:
        accounts = Accounts(server.url, identities)
        try:
            a = await (await accounts.login_again(name_of(alice))).connect()
            await send(a, name_of(bob))
            assert await refused(a, name_of(bob)) == "queue_full"
            assert stored(server.database_path) == 3
        finally:
            await accounts.close()
