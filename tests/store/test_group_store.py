"""The group store on both backends (issue 13): chains and member lists, posts and key
distributions entering the members' streams at positions of the one sequence, receipts, and
history; and on PostgreSQL, a cursor follower that never skips a group position while several
nodes post and commit at once."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from securechat.store import Change, NewMessage, Store, Stored
from securechat.store.postgres import Database, PostgresStore, Unavailable
from securechat.store.records import (
    GroupPostKind,
    GroupReceipt,
    GroupStored,
    NewEntry,
    NewGroupPost,
)
from tests.engines import PostgresEngine
from tests.store.conftest import new_user

NOW = 1_700_000_000_000
GROUP = bytes(range(16))
OTHER = bytes(range(16, 32))
NAMES = ("alice", "bob", "carol", "dave")
MESSAGE = '{"ct":"AAAA","it":0,"iv":"BBBB","sig":"CC","v":1}'
PAIR = '{"ct":"AAAA","iv":"BBBB","rk":"CC","sig":"DD","sk":"EE","v":1}'


def head(n: int) -> bytes:
    """The made-up hash of entry ``n`` of a chain (the store keeps heads as given)."""
    return bytes([n + 1]) * 32


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(name="store")
async def _store(any_store: Store) -> Store:
    """The store on each backend in turn, with alice, bob, carol and dave."""
    for name in NAMES:
        await any_store.accounts.add_user(new_user(name), 1)
    return any_store


async def uid(store: Store, name: str) -> int:
    user = await store.accounts.user_by_name(name)
    assert user is not None
    return user.id


async def append(
    store: Store,
    index: int,
    members: Sequence[str],
    *,
    actor: str = "alice",
    removed: Sequence[str] = (),
    group: bytes = GROUP,
    prev: bytes | None = None,
    per_user_max: int = 500,
) -> GroupStored | str:
    """Append entry ``index`` (linking to the head of entry ``index - 1``) to ``group``."""
    return await store.groups.append_entry(
        NewEntry(
            group_id=group,
            index=index,
            prev_head=prev if prev is not None else (head(index - 1) if index else bytes(32)),
            entry=f"entry-{index}".encode(),
            head=head(index),
            actor_id=await uid(store, actor),
            members=sorted(members),
            admins=[actor],
            removed=removed,
            groups_per_user_max=per_user_max,
        ),
        NOW + index,
    )


async def created(store: Store, members: Sequence[str] = ("alice", "bob", "carol")) -> GroupStored:
    stored = await append(store, 0, members)
    assert isinstance(stored, GroupStored)
    return stored


async def post(
    store: Store,
    sender: str,
    client_id: str,
    *,
    at: int = 0,
    keys: dict[str, str] | None = None,
    group: bytes = GROUP,
) -> GroupStored | str:
    """Post a message (or, with ``keys``, a distribution) under the head of entry ``at``."""
    kind: GroupPostKind = "keys" if keys is not None else "message"
    envelope = MESSAGE if keys is None else repr(sorted(keys.items()))
    return await store.groups.post(
        NewGroupPost(await uid(store, sender), client_id, group, head(at), kind, envelope, keys),
        NOW + 100,
    )


async def stream(store: Store, name: str, after: int = 0) -> list[Change]:
    changes, more = await store.messages.changes_after(await uid(store, name), after, 1000, 1 << 30)
    assert not more
    return changes


async def test_creation_stores_the_chain_and_members(store: Store) -> None:
    """The creation entry makes the group: its head, chain and member list, sorted."""
    stored = await created(store, ["carol", "alice", "bob"])
    assert stored.created and stored.seq == 1 and stored.ts == NOW
    assert stored.prevs == {"alice": 0, "bob": 0, "carol": 0}
    view = await store.groups.group(GROUP)
    assert view is not None
    assert (view.head, view.entries) == (head(0), [b"entry-0"])
    assert (view.members, view.admins) == (["alice", "bob", "carol"], ["alice"])
    assert await store.groups.group(OTHER) is None


async def test_append_replaces_the_member_list(store: Store) -> None:
    """The next entry moves the head, extends the chain and replaces members and admins."""
    await created(store)
    stored = await append(store, 1, ["alice", "bob", "carol", "dave"])
    assert isinstance(stored, GroupStored) and stored.seq == 2
    assert stored.prevs == {"alice": 1, "bob": 1, "carol": 1, "dave": 0}
    view = await store.groups.group(GROUP)
    assert view is not None
    assert view.head == head(1) and view.entries == [b"entry-0", b"entry-1"]
    assert view.members == ["alice", "bob", "carol", "dave"]


async def test_an_entry_on_a_stale_head_is_refused(store: Store) -> None:
    """An entry linking to an older head, or at an index already taken, changes nothing."""
    await created(store)
    assert isinstance(await append(store, 1, ["alice", "bob"]), GroupStored)
    assert await append(store, 2, ["alice"], prev=head(0)) == "stale_head"
    assert await append(store, 1, ["alice"], prev=head(1)) == "stale_head"
    view = await store.groups.group(GROUP)
    assert view is not None and view.head == head(1) and view.members == ["alice", "bob"]
    assert await store.messages.last_seq() == 2


async def test_a_taken_group_id_is_refused(store: Store) -> None:
    """A second creation of the same id: group_exists, and the first stays."""
    await created(store)
    assert await append(store, 0, ["bob", "dave"], actor="bob") == "group_exists"
    view = await store.groups.group(GROUP)
    assert view is not None and view.members == ["alice", "bob", "carol"]


async def test_a_change_to_an_unknown_group_is_refused(store: Store) -> None:
    """An entry past 0 for an id that names no group: unknown_group."""
    assert await append(store, 1, ["alice"], group=OTHER) == "unknown_group"


async def test_too_many_groups_counts_only_those_added(store: Store) -> None:
    """Someone added who is in groups_per_user_max groups already is refused; members who
    stay are not counted again."""
    await created(store, ["alice", "bob"])
    assert await append(store, 0, ["alice", "dave"], group=OTHER, per_user_max=1) == (
        "too_many_groups"
    )
    assert await store.groups.group(OTHER) is None
    # alice is in one group already, but she stays a member: nothing to count.
    assert isinstance(
        await append(store, 1, ["alice", "bob", "carol"], per_user_max=1), GroupStored
    )
    assert await append(store, 2, ["alice", "bob", "carol"], per_user_max=1) != "too_many_groups"


async def test_a_message_enters_every_members_stream(store: Store) -> None:
    """A group message takes one position, in the streams of every member (the sender's too),
    each with the head it moved from."""
    await created(store)
    await store.messages.commit(
        [NewMessage(await uid(store, "bob"), "pair", "dave", PAIR)], [], NOW
    )
    stored = await post(store, "alice", "m1")
    assert isinstance(stored, GroupStored) and stored.created and stored.seq == 3
    assert stored.prevs == {"alice": 1, "bob": 2, "carol": 1}
    for name in ("alice", "bob", "carol"):
        (change,) = await stream(store, name, 2)
        assert change == Change(
            3, "group_message", 3, "m1", "alice", "", NOW + 100, MESSAGE, GROUP.hex(), b64(head(0))
        )
    assert await stream(store, "dave", 2) == []
    assert await store.messages.head(await uid(store, "carol")) == 3
    assert await store.messages.head(await uid(store, "dave")) == 2


async def test_a_key_distribution_enters_its_recipients_and_sender(store: Store) -> None:
    """Each recipient gets its own envelope; the sender's other devices get the first
    recipient's, naming them (as the live frame does); other members see nothing."""
    await created(store, NAMES)
    keys = {"bob": '{"for":"bob"}', "carol": '{"for":"carol"}'}
    stored = await post(store, "alice", "k1", keys=keys)
    assert isinstance(stored, GroupStored)
    assert stored.prevs == {"alice": 1, "bob": 1, "carol": 1}
    (bobs,) = await stream(store, "bob", 1)
    assert (bobs.kind, bobs.sender, bobs.recipient, bobs.envelope) == (
        "group_keys",
        "alice",
        "bob",
        '{"for":"bob"}',
    )
    (carols,) = await stream(store, "carol", 1)
    assert carols.envelope == '{"for":"carol"}'
    (own,) = await stream(store, "alice", 1)
    assert (own.kind, own.sender, own.recipient, own.envelope) == (
        "group_keys",
        "alice",
        "bob",
        '{"for":"bob"}',
    )
    assert await stream(store, "dave", 1) == []


async def test_a_resend_answers_the_first_copy(store: Store) -> None:
    """The same (sender, client id) again: the first position and time, nothing new, even
    once the head has moved."""
    await created(store)
    first = await post(store, "alice", "m1")
    assert isinstance(first, GroupStored)
    await append(store, 1, ["alice", "bob"])
    again = await post(store, "alice", "m1")
    assert again == GroupStored(first.seq, first.ts, False, {})
    assert await store.messages.last_seq() == 3


async def test_a_non_member_cannot_post(store: Store) -> None:
    """Not a member, or no such group: unknown_group, the same answer."""
    await created(store)
    assert await post(store, "dave", "d1") == "unknown_group"
    assert await post(store, "alice", "a1", group=OTHER) == "unknown_group"


async def test_a_post_on_a_stale_head_is_refused(store: Store) -> None:
    """A post sent under a head that is no longer the group's: stale_head, no position."""
    await created(store)
    await append(store, 1, ["alice", "bob", "carol"])
    assert await post(store, "bob", "b1", at=0) == "stale_head"
    assert await store.messages.last_seq() == 2
    assert isinstance(await post(store, "bob", "b1", at=1), GroupStored)


async def test_a_distribution_to_a_non_member_or_myself_is_refused(store: Store) -> None:
    """Recipients must be other current members."""
    await created(store)
    assert await post(store, "alice", "k1", keys={"dave": "{}"}) == "not_a_member"
    assert await post(store, "alice", "k2", keys={"alice": "{}"}) == "not_a_member"
    assert await post(store, "alice", "k3", keys={"nobody": "{}"}) == "not_a_member"
    assert await store.messages.last_seq() == 1


async def test_marks_move_the_counts_forward_only(store: Store) -> None:
    """Each member's mark moves the counts over the others; a mark that changes nothing
    answers None; read implies delivered."""
    await created(store)
    stored = await post(store, "alice", "m1")
    assert isinstance(stored, GroupStored)
    bob, carol = await uid(store, "bob"), await uid(store, "carol")
    receipt = await store.groups.mark(bob, stored.seq, "delivered", NOW)
    assert receipt == GroupReceipt(GROUP, "m1", "alice", 1, 0, 2)
    assert await store.groups.mark(bob, stored.seq, "delivered", NOW) is None
    assert await store.groups.mark(carol, stored.seq, "read", NOW) == GroupReceipt(
        GROUP, "m1", "alice", 2, 1, 2
    )
    assert await store.groups.mark(carol, stored.seq, "delivered", NOW) is None
    assert await store.groups.mark(carol, stored.seq, "read", NOW) is None
    # Receipts are no positions: nothing entered anyone's stream.
    assert await store.messages.last_seq() == stored.seq


async def test_only_a_recipient_may_mark(store: Store) -> None:
    """The sender, a non-member, a key distribution, an entry or nothing: unknown_message."""
    await created(store)
    message = await post(store, "alice", "m1")
    keys = await post(store, "alice", "k1", keys={"bob": "{}"})
    assert isinstance(message, GroupStored) and isinstance(keys, GroupStored)
    alice, bob, dave = [await uid(store, name) for name in ("alice", "bob", "dave")]
    assert await store.groups.mark(alice, message.seq, "read", NOW) == "unknown_message"
    assert await store.groups.mark(dave, message.seq, "read", NOW) == "unknown_message"
    assert await store.groups.mark(bob, keys.seq, "read", NOW) == "unknown_message"
    assert await store.groups.mark(bob, 1, "read", NOW) == "unknown_message"
    assert await store.groups.mark(bob, 99, "read", NOW) == "unknown_message"


async def test_history_starts_at_the_join(store: Store) -> None:
    """A member added later reads from the entry that added them on; history is newest
    first, messages only, with the counts."""
    await created(store, ["alice", "bob"])
    await post(store, "alice", "before")
    await append(store, 1, ["alice", "bob", "carol"])
    await post(store, "bob", "after", at=1)
    await post(store, "alice", "keys", at=1, keys={"carol": "{}"})
    await post(store, "carol", "mine", at=1)
    carol = await uid(store, "carol")
    items = await store.groups.history(carol, GROUP, 1 << 62, 10)
    assert [(i.client_id, i.sender, i.members) for i in items] == [
        ("mine", "carol", 2),
        ("after", "bob", 2),
    ]
    await store.groups.mark(carol, items[1].seq, "read", NOW)
    alice = await uid(store, "alice")
    everything = await store.groups.history(alice, GROUP, 1 << 62, 10)
    assert [i.client_id for i in everything] == ["mine", "after", "before"]
    after = everything[1]
    assert (after.delivered, after.read, after.members, after.head) == (1, 1, 2, head(1))
    assert [i.client_id for i in await store.groups.history(alice, GROUP, after.seq, 1)] == [
        "before"
    ]
    assert await store.groups.history(await uid(store, "dave"), GROUP, 1 << 62, 10) == []


async def test_a_removed_member_gets_the_removal_and_nothing_after(store: Store) -> None:
    """The entry that removes carol enters her stream; the next post does not."""
    await created(store)
    removal = await append(store, 1, ["alice", "bob"], removed=["carol"])
    assert isinstance(removal, GroupStored) and "carol" in removal.prevs
    later = await post(store, "alice", "m1", at=1)
    assert isinstance(later, GroupStored) and "carol" not in later.prevs
    changes = await stream(store, "carol")
    assert [(c.kind, c.pos, c.index) for c in changes] == [
        ("group_entry", 1, 0),
        ("group_entry", 2, 1),
    ]
    assert changes[1].envelope == b64(b"entry-1") and changes[1].group == GROUP.hex()
    assert await store.groups.groups_of(await uid(store, "carol"), 10) == []
    assert await post(store, "carol", "c1", at=1) == "unknown_group"


async def test_changes_after_mixes_pairs_and_groups_in_order(store: Store) -> None:
    """One cursor syncs pairwise messages, receipts and group items, in position order, and
    limit cuts them alike."""
    await created(store, ["alice", "bob"])
    alice, bob = await uid(store, "alice"), await uid(store, "bob")
    await store.messages.commit([NewMessage(bob, "p1", "alice", PAIR)], [], NOW)
    await post(store, "bob", "g1")
    await post(store, "bob", "k1", keys={"alice": "{}"})
    await store.messages.commit([NewMessage(alice, "p2", "bob", PAIR)], [], NOW)
    kinds = [(c.pos, c.kind) for c in await stream(store, "alice")]
    assert kinds == [
        (1, "group_entry"),
        (2, "message"),
        (3, "group_message"),
        (4, "group_keys"),
        (5, "message"),
    ]
    page, more = await store.messages.changes_after(alice, 1, 2, 1 << 30)
    assert [c.pos for c in page] == [2, 3] and more
    assert await store.messages.head(alice) == 5


async def test_groups_of_lists_the_latest_first_with_unread(store: Store) -> None:
    """My groups by my latest position in each, with the member count and my unread
    messages (mine are never unread)."""
    await created(store, ["alice", "bob"])
    await append(store, 0, ["bob", "carol", "alice"], actor="bob", group=OTHER)
    await post(store, "bob", "b1")
    await post(store, "alice", "a1")
    bob = await uid(store, "bob")
    summaries = await store.groups.groups_of(bob, 10)
    assert [(s.group_id, s.members, s.last_seq, s.unread) for s in summaries] == [
        (GROUP, 2, 4, 1),
        (OTHER, 3, 2, 0),
    ]
    await store.groups.mark(bob, 4, "read", NOW)
    assert (await store.groups.groups_of(bob, 1))[0].unread == 0


async def test_deleting_a_member_takes_their_posts_out_of_the_streams(store: Store) -> None:
    """An account with group memberships and posts can be deleted; the others' streams and
    heads lose its posts, not the rest."""
    await created(store)
    await post(store, "bob", "b1")
    await post(store, "alice", "a1")
    await post(store, "bob", "b2")
    await store.lifecycle.delete_user("bob", NOW + 10_000, NOW)
    carol = await uid(store, "carol")
    assert [(c.pos, c.kind) for c in await stream(store, "carol")] == [
        (1, "group_entry"),
        (3, "group_message"),
    ]
    assert await store.messages.head(carol) == 3
    view = await store.groups.group(GROUP)
    assert view is not None and view.members == ["alice", "bob", "carol"]
    assert view.gone == ["bob"]


async def test_a_deleted_member_stays_listed_as_gone_until_removed(store: Store) -> None:
    """The chain still names a member whose account was deleted: the member list keeps the
    name (and admin flag), ``gone`` names it, the counts include it; an entry that keeps them
    keeps them gone, and one that removes them takes them off."""
    await append(store, 0, ("alice", "bob", "carol"), actor="bob")
    await store.lifecycle.delete_user("bob", NOW + 10_000, NOW)
    view = await store.groups.group(GROUP)
    assert view is not None
    assert (view.members, view.admins, view.gone) == (["alice", "bob", "carol"], ["bob"], ["bob"])
    found = await store.groups.membership(GROUP, await uid(store, "alice"))
    assert found is not None and (found.head, found.entries, found.members) == (head(0), 1, 3)
    (summary,) = await store.groups.groups_of(await uid(store, "carol"), 10)
    assert summary.members == 3
    assert isinstance(await append(store, 1, ("alice", "bob", "carol")), GroupStored)
    view = await store.groups.group(GROUP)
    assert view is not None and (view.members, view.gone) == (["alice", "bob", "carol"], ["bob"])
    assert isinstance(await append(store, 2, ("alice", "carol"), removed=["bob"]), GroupStored)
    view = await store.groups.group(GROUP)
    assert view is not None and (view.members, view.gone) == (["alice", "carol"], [])


async def test_a_new_account_with_a_gone_members_name_is_no_member(store: Store) -> None:
    """Bob's account is deleted and a new one takes his name: the entries that keep (and then
    remove) the old bob do not reach the new one, who is in no member list and cannot post;
    only an entry that adds bob again makes the new account a member."""
    await created(store)
    await store.lifecycle.delete_user("bob", NOW, NOW)  # no quarantine: the name is free
    await store.accounts.add_user(new_user("bob"), NOW)
    new_bob = await uid(store, "bob")
    assert isinstance(await append(store, 1, ("alice", "bob", "carol")), GroupStored)
    assert await store.groups.membership(GROUP, new_bob) is None
    assert await store.groups.group(GROUP, new_bob) is None
    assert await store.groups.groups_of(new_bob, 10) == []
    assert await post(store, "bob", "b1", at=1) == "unknown_group"
    assert await post(store, "alice", "k1", at=1, keys={"bob": "{}"}) == "not_a_member"
    assert isinstance(await append(store, 2, ("alice", "carol"), removed=["bob"]), GroupStored)
    assert await stream(store, "bob") == []
    stored = await append(store, 3, ("alice", "bob", "carol"))
    assert isinstance(stored, GroupStored) and "bob" in stored.prevs
    assert await store.groups.membership(GROUP, new_bob) is not None
    view = await store.groups.group(GROUP, new_bob)
    assert view is not None and (view.members, view.gone) == (["alice", "bob", "carol"], [])


async def test_a_group_is_read_in_one_snapshot(store: Store) -> None:
    """Entries that add and remove dave, in turn, while others read the group: every view's
    member list is the one its chain's length says, and its head is its last entry's."""
    await created(store, ("alice", "bob"))
    torn: list[tuple[int, list[str]]] = []
    done = asyncio.Event()

    async def reader() -> int:
        reads = 0
        while not done.is_set():
            view = await store.groups.group(GROUP)
            assert view is not None
            reads += 1
            odd = len(view.entries) % 2 == 0  # entry 1 (odd) adds dave: 2 entries
            expected = ["alice", "bob", "dave"] if odd else ["alice", "bob"]
            if view.members != expected or view.head != head(len(view.entries) - 1):
                torn.append((len(view.entries), view.members))
            await asyncio.sleep(0)
        return reads

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    for index in range(1, 61):
        members = ("alice", "bob", "dave") if index % 2 else ("alice", "bob")
        removed = () if index % 2 else ("dave",)
        assert isinstance(await append(store, index, members, removed=removed), GroupStored)
    done.set()
    reads = await asyncio.gather(*readers)
    assert sum(reads) > 60
    assert torn == []


async def test_a_post_is_withheld_from_members_who_blocked_its_sender(store: Store) -> None:
    """Carol blocked alice: alice's message and distribution are stored (and acked) but do
    not enter carol's stream, nor count her as a reader; entries still do."""
    await created(store)
    carol = await uid(store, "carol")
    await store.contacts.set_state(carol, await uid(store, "alice"), "blocked", NOW)
    message = await post(store, "alice", "m1")
    assert isinstance(message, GroupStored) and set(message.prevs) == {"alice", "bob"}
    keys = await post(store, "alice", "k1", keys={"bob": "{}", "carol": "{}"})
    assert isinstance(keys, GroupStored) and set(keys.prevs) == {"alice", "bob"}
    assert isinstance(await post(store, "bob", "b1"), GroupStored)
    assert isinstance(await append(store, 1, ("alice", "bob", "carol")), GroupStored)
    assert [c.kind for c in await stream(store, "carol")] == [
        "group_entry",
        "group_message",
        "group_entry",
    ]
    history = await store.groups.history(await uid(store, "alice"), GROUP, 1 << 40, 10)
    assert [(item.client_id, item.members) for item in history] == [("b1", 2), ("m1", 1)]


async def test_group_messages_count_in_the_senders_undelivered_bytes(store: Store) -> None:
    """A group message's bytes count in its sender's backlog from its commit until another
    member first marks it delivered; one past the bound is refused queue_full."""
    await created(store)
    alice, bob, carol = [await uid(store, name) for name in ("alice", "bob", "carol")]
    bound = 2 * len(MESSAGE)

    async def send(client_id: str) -> GroupStored | str:
        return await store.groups.post(
            NewGroupPost(alice, client_id, GROUP, head(0), "message", MESSAGE, None, bound),
            NOW + 100,
        )

    first, second = await send("m1"), await send("m2")
    assert isinstance(first, GroupStored) and isinstance(second, GroupStored)
    assert await send("m3") == "queue_full"
    assert await sender_bytes(store, alice) == bound
    await store.groups.mark(bob, first.seq, "read", NOW)
    await store.groups.mark(carol, first.seq, "delivered", NOW)  # not the first: nothing back
    assert await sender_bytes(store, alice) == len(MESSAGE)
    assert isinstance(await send("m3"), GroupStored)
    assert await send("m4") == "queue_full"
    # A resend is answered with its first copy, bound or not.
    assert await send("m1") == GroupStored(first.seq, first.ts, False, {})


async def test_the_sender_bytes_are_the_pairs_recount_plus_the_waiting_group_messages(
    store: Store,
) -> None:
    """Alice's undelivered bytes hold her message to dave (as ``undelivered`` recounts it) and
    her group message until bob receives it; deleting dave gives his back, not the group's."""
    await created(store)
    alice, bob = await uid(store, "alice"), await uid(store, "bob")
    pair = NewMessage(alice, "p1", "dave", PAIR)
    assert isinstance((await store.messages.commit([pair], [], NOW)).sends[0], Stored)
    message = await post(store, "alice", "m1")
    assert isinstance(message, GroupStored)
    assert await store.messages.undelivered() == [(alice, "dave", 1, len(PAIR))]
    assert await sender_bytes(store, alice) == len(PAIR) + len(MESSAGE)
    await store.lifecycle.delete_user("dave", NOW, NOW)
    assert await store.messages.undelivered() == []
    assert await sender_bytes(store, alice) == len(MESSAGE)
    await store.groups.mark(bob, message.seq, "delivered", NOW)
    assert await sender_bytes(store, alice) == 0


async def sender_bytes(store: Store, sender_id: int) -> int:
    db: Any = store.db  # type: ignore[attr-defined]
    sql = f"SELECT bytes FROM undelivered_senders WHERE sender_id = {sender_id:d}"
    rows = await db.fetch_all(sql)
    return int(rows[0][0]) if rows else 0


async def test_the_senders_copy_names_the_first_recipient_by_id(store: Store) -> None:
    """Two recipients get the same envelope text: the sender's own copy names the first by
    name (aaron, whose account is newer than bob's), as the live frame does."""
    await store.accounts.add_user(new_user("aaron"), 1)
    await created(store, ("alice", "aaron", "bob"))
    same = '{"same":1}'
    assert isinstance(
        await post(store, "alice", "k1", keys={"bob": same, "aaron": same}), GroupStored
    )
    (own,) = await stream(store, "alice", 1)
    assert (own.kind, own.recipient, own.envelope) == ("group_keys", "aaron", same)


# --- PostgreSQL: several nodes at once ----------------------------------------------------------

NODES = 4
ROUNDS = 25
# As tests/store/test_postgres_positions.py: every insert lingers a few milliseconds between a
# write's drawing of its position and its COMMIT, so the nodes' transactions overlap.
_SLOW_INSERTS = """
CREATE FUNCTION linger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(random() * 0.004);
    RETURN NULL;
END;
$$;
CREATE TRIGGER linger AFTER INSERT ON messages FOR EACH STATEMENT EXECUTE FUNCTION linger();
CREATE TRIGGER linger AFTER INSERT ON group_posts FOR EACH STATEMENT EXECUTE FUNCTION linger();
"""


@dataclass
class Cluster:
    nodes: list[PostgresStore]
    users: dict[str, int]
    acked: dict[str, set[int]] = field(default_factory=dict)
    failed: int = 0


@pytest.fixture(name="cluster")
async def _cluster(
    postgres_engine: PostgresEngine, postgres_database: str
) -> AsyncIterator[Cluster]:
    url = postgres_engine.url(postgres_database)
    stores = [PostgresStore(Database(url, pool_min=1, pool_max=3)) for _ in range(NODES + 1)]
    await stores[0].open()
    try:
        await asyncio.gather(*(store.open() for store in stores[1:]))
        users = {name: await stores[0].accounts.add_user(new_user(name), 1) for name in NAMES}
        await append(stores[0], 0, NAMES)
        async with stores[0].db.pool.acquire() as connection:
            await connection.execute(_SLOW_INSERTS)
        yield Cluster(stores, users, {name: set() for name in NAMES})
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def writer(cluster: Cluster, node: PostgresStore, seed: int) -> None:
    """One node: group messages from random members interleaved with pairwise commits; each
    acknowledged position noted for the streams it entered."""
    rng = random.Random(seed)
    ids = (f"n{seed}-{n}" for n in itertools.count())
    for _ in range(ROUNDS):
        sender = rng.choice(NAMES)
        try:
            if rng.random() < 0.5:
                stored = await node.groups.post(
                    NewGroupPost(
                        cluster.users[sender], next(ids), GROUP, head(0), "message", MESSAGE
                    ),
                    NOW,
                )
                assert isinstance(stored, GroupStored) and set(stored.prevs) == set(NAMES)
                for name in NAMES:
                    cluster.acked[name].add(stored.seq)
            else:
                recipient = rng.choice([name for name in NAMES if name != sender])
                send = NewMessage(cluster.users[sender], next(ids), recipient, PAIR)
                (outcome,) = (await node.messages.commit([send], [], NOW)).sends
                assert isinstance(outcome, Stored)
                cluster.acked[sender].add(outcome.seq)
                cluster.acked[recipient].add(outcome.seq)
        except Unavailable:
            cluster.failed += 1


async def follow(node: PostgresStore, user_id: int, writers: asyncio.Future[Any]) -> list[int]:
    """The positions a cursor follower of ``user_id`` sees, until the writers are done."""
    seen: list[int] = []
    after = 0
    while True:
        done = writers.done()
        changes, more = await node.messages.changes_after(user_id, after, 7, 1 << 20)
        seen += [change.pos for change in changes]
        after = changes[-1].pos if changes else after
        if done and not more:
            return seen
        if not changes:
            await asyncio.sleep(0.001)


async def test_followers_skip_no_group_position_while_nodes_write(cluster: Cluster) -> None:
    """Four nodes post to one group and commit pair messages at once; a cursor follower of
    each member sees every position of their stream once, in order."""
    writers = asyncio.gather(
        *(writer(cluster, node, seed) for seed, node in enumerate(cluster.nodes[1:]))
    )
    followers = [follow(cluster.nodes[0], cluster.users[name], writers) for name in NAMES]
    seen = await asyncio.gather(*followers)
    await writers
    for name, positions in zip(NAMES, seen, strict=True):
        everything = await stream(cluster.nodes[0], name)
        assert positions == sorted(set(positions)), name
        assert positions == [change.pos for change in everything], name
        assert cluster.acked[name] <= set(positions), name
        assert await cluster.nodes[0].messages.head(cluster.users[name]) == positions[-1]
    assert cluster.failed == 0


async def test_a_deletion_locks_its_posts_before_their_stream_rows(
    postgres_engine: PostgresEngine, postgres_database: str
) -> None:
    """A mark locks a post's row, then its reader's stream row; an account's deletion takes
    them in the same order, so while a mark holds bob's post, the deletion waits before
    touching any stream row of it (the reader's row stays free: no deadlock to come)."""
    store = PostgresStore(Database(postgres_engine.url(postgres_database), pool_min=1, pool_max=3))
    await store.open()
    try:
        for name in NAMES:
            await store.accounts.add_user(new_user(name), 1)
        await created(store)
        message = await post(store, "bob", "b1")
        assert isinstance(message, GroupStored)
        carol = await uid(store, "carol")
        async with store.db.pool.acquire() as mark, mark.transaction():
            await mark.execute(
                "SELECT 1 FROM group_posts WHERE position = $1 FOR UPDATE", message.seq
            )
            deletion = asyncio.create_task(store.lifecycle.delete_user("bob", NOW, NOW))
            await asyncio.sleep(0.5)  # the deletion runs up to the lock it waits for
            assert not deletion.done()
            row = await mark.fetchrow(
                "SELECT delivered_at FROM group_inbox WHERE user_id = $1 AND position = $2"
                " FOR UPDATE NOWAIT",
                carol,
                message.seq,
            )
            assert row is not None
        await deletion
        assert await store.accounts.user_by_name("bob") is None
    finally:
        await store.close()
