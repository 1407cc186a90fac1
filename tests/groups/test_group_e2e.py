"""Groups end to end (issue 13): the Python client against a real server on a real port.

Real accounts, keys verified through the real key directory, a real SQLite database; what the
server might forge is forged in that database, as a compromised server would, and the client
must refuse it. The crash and cluster versions of the exchange are in test_group_crash.py and
test_group_cluster.py.
"""

from __future__ import annotations

import asyncio
import copy
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

from securechat import e2e
from securechat.client import GroupMessageRefused, GroupRefused, Groups, NotAMember, reset_keys
from securechat.client.groups import GROUP_FRAMES, signing_key
from securechat.groups import senderkeys
from securechat.groups.membership import (
    Action,
    MembershipError,
    decode_entry,
    entry_hash,
    sign_entry,
)
from securechat.groups.senderkeys import UndecryptableGroupMessage
from tests.chatkit import PASSWORD, ServerWith
from tests.chatkit import _server_with as _server_with
from tests.groups import groupkit
from tests.groups.groupkit import FAST_SENDS, Member
from tests.livesrv import LiveServer

# The exchange of the exactly-once test: members, senders among them, messages each, and how
# many members are offline while it runs.
MEMBERS = 50
SENDERS = 10
PER_SENDER = 5
OFFLINE = 5


@pytest.fixture(name="server")
def _server(server_with: ServerWith) -> LiveServer:
    server, _accounts = server_with(
        ws_frames_per_s=FAST_SENDS["ws_frames_per_s"],
        ws_frames_burst=FAST_SENDS["ws_frames_burst"],
        sends_per_user_per_s=FAST_SENDS["sends_per_user_per_s"],
        sends_per_user_burst=FAST_SENDS["sends_per_user_burst"],
    )
    return server


@pytest.fixture(name="people")
async def _people(
    server: LiveServer, identities: list[e2e.Identity]
) -> AsyncIterator[list[Member]]:
    """Four people on the server (more are made by the tests that need them)."""
    people = await groupkit.members([server.url], identities, 4, "grp")
    yield people
    await groupkit.close_all(people)


def _database(server: LiveServer) -> sqlite3.Connection:
    """The server's own database, as its operator (or an attacker holding it) can write it."""
    return sqlite3.connect(server.database_path, timeout=10, isolation_level=None)


def _group_row(db: sqlite3.Connection, group: str) -> int:
    row = db.execute("SELECT id FROM groups WHERE group_id = ?", (bytes.fromhex(group),)).fetchone()
    assert row is not None, "the group is not in the database"
    return int(row[0])


async def _read_all_group_frames(member: Member, group: str) -> None:
    """Take every group frame the member has now, until the socket is quiet for 0.5 s."""
    while True:
        try:
            frame = await member.chat.wait_for_any(GROUP_FRAMES, wait=0.5)
        except TimeoutError:
            return
        await member.groups.handle(frame)


# --- a conversation ------------------------------------------------------------------------------


async def test_a_group_conversation(people: list[Member]) -> None:
    """Alice creates a group; every member reads the name and each other's messages; a rename
    reaches them; bob, made admin, adds dave, who reads from his join on only."""
    alice, bob, carol, dave = people
    group = await alice.groups.create("Hiking 🏔", [bob.name, carol.name])
    await alice.groups.send(group, "hello all")
    for reader in (bob, carol):
        message = await reader.groups.receive()
        assert (message.sender, message.text, message.group) == (alice.name, "hello all", group)
        assert reader.groups.name(group) == "Hiking 🏔"
    hi = await bob.groups.send(group, "hi alice")
    heard = await alice.groups.receive()
    assert heard.text == "hi alice"
    await alice.groups.mark(heard, "read")
    receipt = await bob.chat.wait_for("group_receipt", id=hi["id"], read=1)
    assert (receipt["group"], receipt["members"]) == (group, 2)
    assert (await carol.groups.receive()).text == "hi alice"

    await alice.groups.rename(group, "Hiking 2027")
    await alice.groups.make_admin(group, [bob.name])
    await bob.groups.add(group, [dave.name])
    welcome = await alice.groups.send(group, "welcome dave")
    for reader in (bob, carol, dave):
        message = await reader.groups.receive()
        assert (message.sender, message.text) == (alice.name, "welcome dave")
        assert reader.groups.name(group) == "Hiking 2027"
    await carol.groups.send(group, "hello dave")
    assert (await dave.groups.receive()).text == "hello dave"
    session = await dave.groups.ready(group)
    assert session.members == {alice.name, bob.name, carol.name, dave.name}
    assert session.admins == {alice.name, bob.name}
    history = await dave.client.call("GET", f"/api/v1/groups/{group}/messages?limit=50")
    assert [m["id"] for m in history["messages"]][-1] == welcome["id"]  # from his join on
    assert len(history["messages"]) == 2


async def test_leave_and_non_admin_changes(people: list[Member]) -> None:
    """A member who leaves is no member any more; a non-admin's change is refused by the
    client's own replay before anything is posted."""
    alice, bob, carol, _dave = people
    group = await alice.groups.create("Book club", [bob.name, carol.name])
    with pytest.raises(MembershipError, match="not_admin"):
        await carol.groups.remove(group, [bob.name])
    await carol.groups.leave(group)
    with pytest.raises(NotAMember):
        await carol.groups.send(group, "still here?")
    session = await alice.groups.ready(group)
    assert session.members == {alice.name, bob.name}


async def test_one_user_sending_from_two_devices_is_read_from_both(
    server: LiveServer, people: list[Member]
) -> None:
    """Alice is logged in twice (a laptop and a phone), each device with its own sender chain
    under the same head; the two send in turn, and bob and carol open every message of both,
    and each of alice's devices reads the other's (from its own copy of the distribution)."""
    alice, bob, carol, _dave = people
    phone = await groupkit.join(await groupkit.log_in(server.url, alice.name))
    try:
        group = await alice.groups.create("Two devices", [bob.name, carol.name])
        await phone.groups.ready(group)
        sent: dict[str, str] = {}
        for n in range(3):
            for device, where in ((alice, "laptop"), (phone, "phone")):
                text = f"from alice's {where} {n}"
                sent[(await device.groups.send(group, text))["id"]] = text
        for reader in (bob, carol):
            await reader.read(len(sent))
            assert {m.id: m.text for m in reader.got} == sent
            assert {m.sender for m in reader.got} == {alice.name}
        for device, other in ((alice, "phone"), (phone, "laptop")):
            await device.read(len(sent) // 2)
            assert [m.text for m in device.got] == [
                text for text in sent.values() if f"alice's {other}" in text
            ]
        chains = bob.groups.sessions[group].held[alice.name]
        assert len(chains) == 2  # one per device
    finally:
        await phone.client.close()


# --- what a compromised server cannot do ---------------------------------------------------------


async def test_ghost_member_inserted_in_the_database_is_refused(
    server: LiveServer, people: list[Member]
) -> None:
    """Mallory put straight into group_members (no signed entry): every client refuses the
    group with the warning naming mallory and the group, sends nothing and accepts nothing."""
    alice, bob, carol, mallory = people
    group = await alice.groups.create("Family", [bob.name, carol.name])
    await alice.groups.send(group, "before")
    assert (await bob.groups.receive()).text == "before"
    assert (await carol.groups.receive()).text == "before"
    await alice.groups.send(group, "sent before the ghost, read after")
    with _database(server) as db:
        user = db.execute("SELECT id FROM users WHERE username = ?", (mallory.name,)).fetchone()
        db.execute(
            "INSERT INTO group_members (group_row, user_id, admin) VALUES (?, ?, 0)",
            (_group_row(db, group), user[0]),
        )
    for member in (alice, bob, carol):
        with pytest.raises(GroupRefused) as refused:
            await member.groups.refresh(group)
        assert refused.value.code == "ghost_member"
        warning = str(refused.value)
        assert f"The server lists {mallory.name} as a member of group 'Family' ({group})" in warning
        assert "no admin added them" in warning
    with pytest.raises(GroupRefused):
        await alice.groups.send(group, "must not go out")
    with pytest.raises(GroupRefused):
        await bob.groups.receive()  # the message sent before is not accepted either


async def test_member_hidden_by_the_database_is_refused(
    server: LiveServer, people: list[Member]
) -> None:
    """Carol taken out of group_members without a signed removal: the member list hides a
    member the chain has, and the client refuses the group, naming her."""
    alice, bob, carol, _dave = people
    group = await alice.groups.create("Hidden", [bob.name, carol.name])
    with _database(server) as db:
        db.execute(
            "DELETE FROM group_members WHERE group_row = ? AND user_id ="
            " (SELECT id FROM users WHERE username = ?)",
            (_group_row(db, group), carol.name),
        )
    with pytest.raises(GroupRefused) as refused:
        await bob.groups.refresh(group)
    assert refused.value.code == "hidden_member"
    assert carol.name in str(refused.value) and group in str(refused.value)
    with pytest.raises(GroupRefused):
        await alice.groups.send(group, "must not go out")


def _tampered(kind: str, entries: list[bytes], carol: Member) -> list[bytes]:
    """The chain with one entry altered as a server could alter it."""
    if kind == "flipped_bit":
        flipped = bytearray(entries[1])
        flipped[len(b"securechat/v1/group-entry") + 16 + 8 + 32 + 1 + 7] ^= 1  # the timestamp
        return [entries[0], bytes(flipped), entries[2]]
    if kind == "reordered":
        return [entries[0], entries[2], entries[1]]
    # non_admin_signer: carol (a member, not an admin) signs the last change in her own name.
    last = decode_entry(entries[2])
    assert carol.client.account is not None
    forged = sign_entry(
        group_id=last.group_id,
        seq=last.seq,
        prev_hash=entry_hash(entries[1]),
        action=Action.MAKE_ADMIN,
        written_ms=last.written_ms,
        actor=carol.name,
        subjects=list(last.subjects),
        sign_key=signing_key(carol.client.account.identity),
    )
    return [entries[0], entries[1], forged]


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("flipped_bit", "bad_signature"),
        ("reordered", "reordered"),
        ("non_admin_signer", "not_admin"),
    ],
)
async def test_tampered_chain_is_refused(
    server: LiveServer, people: list[Member], kind: str, code: str
) -> None:
    """An entry with a flipped bit, a reordered chain, or a change signed by a non-admin,
    written into the server's database: a client reading the group refuses it, naming it."""
    alice, bob, carol, dave = people
    group = await alice.groups.create("Tampered", [bob.name, carol.name])
    await alice.groups.add(group, [dave.name])
    await alice.groups.make_admin(group, [bob.name])
    with _database(server) as db:
        row = _group_row(db, group)
        entries = [
            bytes(e)
            for (e,) in db.execute(
                "SELECT entry FROM group_entries WHERE group_row = ? ORDER BY idx", (row,)
            )
        ]
        for index, entry in enumerate(_tampered(kind, entries, carol)):
            db.execute(
                "UPDATE group_entries SET entry = ? WHERE group_row = ? AND idx = ?",
                (entry, row, index),
            )
    newcomer = Groups(dave.chat)  # a client that has not seen the honest chain
    with pytest.raises(GroupRefused) as refused:
        await newcomer.refresh(group)
    assert refused.value.code == code and group in str(refused.value)
    with pytest.raises(GroupRefused):
        await newcomer.send(group, "must not go out")
    with pytest.raises(GroupRefused):
        await bob.groups.refresh(group)  # one who saw the honest chain refuses the rewrite


# --- a removed member ---------------------------------------------------------------------------


async def test_removed_member_reads_nothing_sent_after(people: list[Member]) -> None:
    """Carol, removed, keeps every chain and key she had: nothing sent after her removal
    reaches her, and fed those messages directly she decrypts none of them."""
    alice, bob, carol, _dave = people
    group = await alice.groups.create("Team", [bob.name, carol.name])
    await alice.groups.send(group, "alice before")
    await bob.groups.send(group, "bob before")
    before = [await carol.groups.receive() for _ in range(2)]
    assert {m.text for m in before} == {"alice before", "bob before"}
    assert (await bob.groups.receive()).text == "alice before"
    assert (await alice.groups.receive()).text == "bob before"

    await alice.groups.remove(group, [carol.name])
    await alice.groups.send(group, "alice after")
    await bob.groups.send(group, "bob after")
    assert (await bob.groups.receive()).text == "alice after"
    assert (await alice.groups.receive()).text == "bob after"

    await _read_all_group_frames(carol, group)  # the entry removing her, and nothing else
    session = carol.groups.sessions[group]
    assert not session.is_member
    with pytest.raises(TimeoutError):
        await carol.groups.receive(wait=1.0)
    with pytest.raises(NotAMember):
        await carol.groups.send(group, "am I still here?")

    history = await bob.client.call("GET", f"/api/v1/groups/{group}/messages?limit=50")
    after = [m for m in history["messages"] if m["id"] not in {x.id for x in before}]
    assert len(after) == 2  # alice after, bob after
    chains: dict[str, Any] = copy.deepcopy(session.held)
    for item in after:
        with pytest.raises(GroupMessageRefused) as refused:
            await carol.groups.handle(groupkit.frame_of(item, group))
        assert refused.value.code == "not_member"
        sender_key = (await carol.chat.keys(item["from"])).sign_public_key
        for held in chains[item["from"]].values():
            with pytest.raises(UndecryptableGroupMessage):
                senderkeys.open_group_message(
                    item["envelope"],
                    chain=copy.deepcopy(held.chain),
                    group_id=bytes.fromhex(group),
                    head=e2e.b64decode(item["head"]),
                    sender=item["from"],
                    message_id=item["id"],
                    sender_sign_spki=sender_key,
                )


# --- a member who deleted their account ------------------------------------------------------


async def test_a_member_who_deleted_their_account_is_gone_not_refused(
    people: list[Member],
) -> None:
    """Carol deletes her account: she stays a member by the chain, gone and handed nothing,
    and the others keep talking (a client from scratch too); an admin can still remove her."""
    alice, bob, carol, dave = people
    group = await alice.groups.create("Reunion", [bob.name, carol.name])
    await alice.groups.send(group, "before")
    for reader in (bob, carol):
        assert (await reader.groups.receive()).text == "before"
    await carol.client.delete_account(PASSWORD)

    await bob.groups.send(group, "carol is gone")  # bob's chain goes to alice alone
    assert (await alice.groups.receive()).text == "carol is gone"
    for session in (await bob.groups.ready(group), await Groups(bob.chat).ready(group)):
        assert carol.name in session.members and session.gone == {carol.name}
        assert session.reachable == {alice.name}
    await alice.groups.add(group, [dave.name])
    await alice.groups.send(group, "welcome dave")
    for reader in (bob, dave):
        assert (await reader.groups.receive()).text == "welcome dave"
    await alice.groups.remove(group, [carol.name])
    session = await bob.groups.ready(group)
    assert session.members == {alice.name, bob.name, dave.name} and session.gone == set()
    await bob.groups.send(group, "one more")
    for reader in (alice, dave):
        assert (await reader.groups.receive()).text == "one more"


async def test_a_gone_member_the_directory_does_not_prove_is_refused(
    server: LiveServer, people: list[Member]
) -> None:
    """The database takes carol out of group_members and names her gone, though her account
    is there: her keys are in the directory, no tombstone, so every client refuses the group
    rather than cut her off."""
    alice, bob, carol, _dave = people
    group = await alice.groups.create("Cut off", [bob.name, carol.name])
    with _database(server) as db:
        row = _group_row(db, group)
        db.execute(
            "DELETE FROM group_members WHERE group_row = ? AND user_id ="
            " (SELECT id FROM users WHERE username = ?)",
            (row, carol.name),
        )
        db.execute(
            "INSERT INTO group_gone (group_row, username, admin) VALUES (?, ?, 0)",
            (row, carol.name),
        )
    shown = await bob.client.call("GET", f"/api/v1/groups/{group}")
    assert shown["gone"] == [carol.name] and carol.name in shown["members"]
    for member in (alice, bob):
        with pytest.raises(GroupRefused) as refused:
            await member.groups.refresh(group)
        assert refused.value.code == "hidden_member"
        assert carol.name in str(refused.value) and "does not prove it" in str(refused.value)
    with pytest.raises(GroupRefused):
        await bob.groups.send(group, "must not go out")


# --- entries signed before a key reset -------------------------------------------------------


async def test_entries_signed_before_a_key_reset_still_verify(
    server: LiveServer, people: list[Member]
) -> None:
    """Alice creates the group, then resets her keys and adds dave: bob, carol from scratch
    and dave (who verifies the whole chain) accept it, her old entries proved by the
    directory's history and vouched for by her new one; an entry appended under her old key
    (written into the database) is refused by all of them."""
    alice, bob, carol, dave = people
    group = await alice.groups.create("Reset", [bob.name, carol.name])
    await alice.groups.send(group, "before my reset")
    for reader in (bob, carol):
        assert (await reader.groups.receive()).text == "before my reset"
    assert alice.client.account is not None
    old_key = signing_key(alice.client.account.identity)
    await reset_keys(alice.client, PASSWORD, rsa_bits=2048)

    (await bob.groups.ready(group)).check()  # what bob verified before stands
    with pytest.raises(GroupRefused) as refused:
        await Groups(carol.chat).refresh(group)  # from scratch: nothing under alice's new key
    assert refused.value.code == "old_key"
    await alice.groups.add(group, [dave.name])
    await bob.groups.send(group, "hello dave")
    assert (await dave.groups.receive()).text == "hello dave"
    assert (await carol.groups.receive()).text == "hello dave"
    everyone = {alice.name, bob.name, carol.name, dave.name}
    for groups in (bob.groups, dave.groups, Groups(carol.chat)):
        assert (await groups.ready(group)).members == everyone

    with _database(server) as db:
        row = _group_row(db, group)
        entries = [
            bytes(e)
            for (e,) in db.execute(
                "SELECT entry FROM group_entries WHERE group_row = ? ORDER BY idx", (row,)
            )
        ]
        forged = sign_entry(
            group_id=bytes.fromhex(group),
            seq=len(entries),
            prev_hash=entry_hash(entries[-1]),
            action=Action.REMOVE,
            written_ms=decode_entry(entries[-1]).written_ms + 1,
            actor=alice.name,
            subjects=[s for s in decode_entry(entries[0]).subjects if s.username == carol.name],
            sign_key=old_key,
        )
        db.execute(
            "INSERT INTO group_entries (group_row, idx, position, entry, ts) VALUES"
            " (?, ?, (SELECT max(position) + 1000 FROM group_entries), ?, 0)",
            (row, len(entries), forged),
        )
        db.execute(
            "UPDATE groups SET head = ?, entries = entries + 1 WHERE id = ?",
            (entry_hash(forged), row),
        )
        db.execute(
            "DELETE FROM group_members WHERE group_row = ? AND user_id ="
            " (SELECT id FROM users WHERE username = ?)",
            (row, carol.name),
        )
    for groups in (bob.groups, dave.groups, Groups(dave.chat)):
        with pytest.raises(GroupRefused) as refused:
            await groups.refresh(group)
        assert refused.value.code == "old_key" and alice.name in str(refused.value)


# --- exactly once, in order, with offline members -------------------------------------------------


@pytest.mark.slow
async def test_fifty_members_exactly_once_in_order(
    server: LiveServer, identities: list[e2e.Identity]
) -> None:
    """A 50-member group, ten of them sending at once, five offline meanwhile: every member
    gets every other's message once, at its acked position, all in the same order; the
    offline ones catch up from their cursor."""
    people = await groupkit.members([server.url], identities, MEMBERS, "fifty")
    try:
        creator, others = people[0], people[1:]
        group = await creator.groups.create("Fifty", [m.name for m in others])
        senders = people[:SENDERS]
        offline = people[-OFFLINE:]
        async with asyncio.timeout(300):
            sent = await groupkit.exchange(
                people, group, senders=senders, per_sender=PER_SENDER, offline=offline
            )
        assert len(sent.acks) == SENDERS * PER_SENDER
        groupkit.check_exactly_once_in_order(people, sent)
    finally:
        await groupkit.close_all(people)
