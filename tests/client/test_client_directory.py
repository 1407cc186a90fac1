"""The Python client's key directory checks, against honest and malicious servers."""

from __future__ import annotations

import copy
import dataclasses
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from securechat import e2e
from securechat.client import (
    Account,
    DirectoryEntry,
    KeyDirectoryError,
    KeyDirectoryView,
    SecureChatClient,
    verify_key_response,
)
from securechat.directory.transparency import SignedTreeHead
from tests.conftest import FAST_ITERATIONS, SignUp, fast_config, identity_of
from tests.directory.test_directory import (
    change_keys,
    directory_spki,
    forge_log_entry,
    fork_server,
    swap_keys_in_database,
)
from tests.livesrv import LiveServer


@pytest.fixture(name="mallory")
def _mallory(identities: list[e2e.Identity]) -> e2e.Identity:
    """The keys a malicious server would hand out for bob (not bob's: he holds identities[1])."""
    return identities[3]


async def _key_response(client: SecureChatClient, username: str) -> dict[str, Any]:
    body: dict[str, Any] = await client.call("GET", f"/api/v1/keys/{username}")
    return body


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


# --- honest server -----------------------------------------------------------------------------


async def test_first_fetch_pins_then_same(signed_up: SignUp) -> None:
    """A contact's keys are 'new' on first sight, then 'same'; the directory key is pinned."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    keys = await alice.fetch_verified_keys("bob")
    assert (keys.state, keys.verified, keys.is_self) == ("new", False, False)
    assert keys.enc_public_key == identity_of(bob).enc_public_spki
    assert keys.sign_public_key == identity_of(bob).sign_public_spki
    assert alice.directory.directory_key is not None
    again = await alice.fetch_verified_keys("Bob")
    assert again.state == "same" and again.may_send


async def test_my_own_keys_are_marked_as_mine(signed_up: SignUp) -> None:
    """Fetching my own keys says so, so a change of mine never blames someone else."""
    alice = await signed_up("alice")
    keys = await alice.fetch_verified_keys("alice")
    assert keys.is_self
    assert keys.enc_public_key == identity_of(alice).enc_public_spki


async def test_view_is_kept_in_a_private_file(
    live_server: LiveServer, signed_up: SignUp, tmp_path: Path
) -> None:
    """With a path the view survives a restart of the client: pins, head and verified flags."""
    path = tmp_path / "view.json"
    alice = await signed_up("alice")
    await signed_up("bob")
    alice.directory = KeyDirectoryView(path)
    await alice.fetch_verified_keys("bob")
    alice.directory.mark_verified("bob")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reloaded = KeyDirectoryView(path)
    assert reloaded.directory_key == directory_spki(live_server)
    assert reloaded.last_head == alice.directory.last_head
    assert reloaded.contacts["bob"].verified
    alice.directory = reloaded
    keys = await alice.fetch_verified_keys("bob")
    assert (keys.state, keys.verified) == ("same", True)


async def test_legitimate_key_change_is_reported(
    live_server: LiveServer, signed_up: SignUp, mallory: e2e.Identity
) -> None:
    """A logged key change verifies, but the pin reports 'changed' until accepted."""
    alice = await signed_up("alice")
    await signed_up("bob")
    first = await alice.fetch_verified_keys("bob")
    change_keys(live_server, "bob", mallory)
    keys = await alice.fetch_verified_keys("bob")
    assert keys.state == "changed"
    assert keys.previous is not None
    assert keys.previous.enc_fingerprint == first.proved.enc_fingerprint
    assert keys.proved.entry.index == 2
    assert keys.may_send  # not verified before: warn, but do not block
    alice.directory.accept_change("bob")
    assert (await alice.fetch_verified_keys("bob")).state == "same"


async def test_verified_contact_whose_key_changed_blocks_sending(
    live_server: LiveServer, signed_up: SignUp, mallory: e2e.Identity
) -> None:
    """A change of a verified contact's key blocks sending until accepted (and re-verified)."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await alice.fetch_verified_keys("bob")
    alice.directory.mark_verified("bob")
    change_keys(live_server, "bob", mallory)
    keys = await alice.fetch_verified_keys("bob")
    assert (keys.state, keys.verified, keys.may_send) == ("changed", True, False)
    alice.directory.accept_change("bob")
    keys = await alice.fetch_verified_keys("bob")
    assert (keys.state, keys.verified, keys.may_send) == ("same", False, True)


async def test_head_consistency_is_checked_as_the_log_grows(
    live_server: LiveServer, signed_up: SignUp
) -> None:
    """Each newer head is proved consistent with the last one kept."""
    alice = await signed_up("alice")
    first = await alice.check_head()
    await signed_up("bob")
    await signed_up("carol")
    later = await alice.check_head()
    assert (first.tree_size, later.tree_size) == (1, 3)
    assert alice.directory.last_head == later
    # A key proved against an older head than the last one kept is still checked.
    alice.directory.last_head = None
    await alice.check_head(later)
    await alice.check_head(first)
    assert alice.directory.last_head == later


# --- malicious server --------------------------------------------------------------------------


async def test_key_swapped_in_the_database_is_refused(
    live_server: LiveServer, signed_up: SignUp, mallory: e2e.Identity
) -> None:
    """Bob's keys replaced behind the log's back: the inclusion proof fails."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await alice.fetch_verified_keys("bob")
    swap_keys_in_database(live_server, "bob", mallory)
    with pytest.raises(KeyDirectoryError) as caught:
        await alice.fetch_verified_keys("bob")
    assert caught.value.code == "not_in_log"


async def test_key_swapped_and_logged_warns_of_the_change(
    live_server: LiveServer, signed_up: SignUp, mallory: e2e.Identity
) -> None:
    """Bob's keys replaced and logged: the proof holds, but the pin says 'changed' and blocks."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await alice.fetch_verified_keys("bob")
    alice.directory.mark_verified("bob")
    forge_log_entry(live_server, "bob", mallory)
    keys = await alice.fetch_verified_keys("bob")
    assert keys.state == "changed"
    assert keys.enc_public_key == mallory.enc_public_spki
    assert not keys.may_send


async def test_forked_log_is_detected(
    live_server: LiveServer, signed_up: SignUp, tmp_path: Path, mallory: e2e.Identity
) -> None:
    """A second server with the same key and another history: its heads are not consistent."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await signed_up("carol")
    with fork_server(live_server, tmp_path / "fork") as fork:
        await signed_up("dave")
        await alice.fetch_verified_keys("bob")  # alice has seen the real log at size 4
        forge_log_entry(fork, "bob", mallory)  # the fork: size 4 too, but another entry 3
        async with SecureChatClient(
            fork.url, min_iterations=FAST_ITERATIONS, directory=alice.directory
        ) as victim:
            await victim.login("alice", "correct horse battery")
            with pytest.raises(KeyDirectoryError) as caught:
                await victim.fetch_verified_keys("bob")
            assert caught.value.code == "log_forked"
            forge_log_entry(fork, "carol", mallory)  # a larger fork: not an extension either
            with pytest.raises(KeyDirectoryError) as caught:
                await victim.fetch_verified_keys("bob")
            assert caught.value.code == "log_forked"


async def test_another_directory_key_is_refused(
    signed_up: SignUp, tmp_path: Path, identities: list[e2e.Identity]
) -> None:
    """A server that shows a different directory key is refused until the user accepts it."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await alice.fetch_verified_keys("bob")
    with LiveServer(fast_config(tmp_path / "other")).start() as other:
        async with SecureChatClient(
            other.url, min_iterations=FAST_ITERATIONS, directory=alice.directory
        ) as client:
            await client.register("bob", "a password", iterations=1000, identity=identities[1])
            await client.register("alice", "a password", iterations=1000, identity=identities[0])
            await client.login("alice", "a password")
            with pytest.raises(KeyDirectoryError) as caught:
                await client.fetch_verified_keys("bob")
            assert caught.value.code == "directory_key_changed"


async def test_every_signature_bit_flip_in_a_key_response_is_refused(
    live_server: LiveServer, signed_up: SignUp
) -> None:
    """Any one bit flipped in the served head's signature fails the check."""
    alice = await signed_up("alice")
    await signed_up("bob")
    body = await _key_response(alice, "bob")
    spki = directory_spki(live_server)
    verify_key_response(body, "bob", spki)
    signature = e2e.b64decode(body["tree_head"]["signature"])
    for bit in range(len(signature) * 8):
        forged = copy.deepcopy(body)
        forged["tree_head"]["signature"] = e2e.b64encode(_flip(signature, bit))
        with pytest.raises(KeyDirectoryError) as caught:
            verify_key_response(forged, "bob", spki)
        assert caught.value.code == "bad_signature"


@pytest.mark.parametrize(
    ("forge", "code"),
    [
        (lambda b: b["inclusion_proof"].__setitem__(0, e2e.b64encode(bytes(32))), "not_in_log"),
        (lambda b: b["inclusion_proof"].pop(), "not_in_log"),
        (lambda b: b["inclusion_proof"].append(b["inclusion_proof"][0]), "not_in_log"),
        (lambda b: b["entry"].__setitem__("index", 0), "not_in_log"),
        (lambda b: b["entry"].__setitem__("timestamp", b["entry"]["timestamp"] + 1), "not_in_log"),
        (lambda b: b.__setitem__("username", "carol"), "wrong_user"),
        (lambda b: b["entry"].__setitem__("user_hash", e2e.b64encode(bytes(32))), "wrong_user"),
        (lambda b: b["tree_head"].__setitem__("tree_size", 2), "bad_signature"),
        (lambda b: b["entry"].pop("index"), "bad_response"),
        (lambda b: b.__setitem__("enc_public_key", "not base64"), "bad_response"),
    ],
)
async def test_forged_key_responses_are_refused(
    live_server: LiveServer, signed_up: SignUp, forge: Callable[[dict[str, Any]], object], code: str
) -> None:
    """A forged proof, entry, user or head is refused with the matching code."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await signed_up("carol")
    body = await _key_response(alice, "bob")
    forge(body)
    with pytest.raises(KeyDirectoryError) as caught:
        verify_key_response(body, "bob", directory_spki(live_server))
    assert caught.value.code == code


def test_two_heads_of_one_size_are_a_fork(tmp_path: Path) -> None:
    """The view refuses a second, different head for a size it has seen."""
    view = KeyDirectoryView()
    head = SignedTreeHead(3, 1, bytes(32), bytes(64))
    view.keep_head(view.check_head(head, None))
    with pytest.raises(KeyDirectoryError) as caught:
        view.check_head(SignedTreeHead(3, 1, b"\x01" * 32, bytes(64)), None)
    assert caught.value.code == "log_forked"


# --- safety numbers ----------------------------------------------------------------------------


async def test_safety_numbers_agree_and_change_with_either_key(
    live_server: LiveServer,
    signed_up: SignUp,
    mallory: e2e.Identity,
    identities: list[e2e.Identity],
) -> None:
    """Alice and bob compute the same 60 digits; a change of either key changes them."""
    alice = await signed_up("alice")
    bob = await signed_up("bob")
    number = alice.safety_number(await alice.fetch_verified_keys("bob"))
    assert number == bob.safety_number(await bob.fetch_verified_keys("alice"))
    assert len(number) == 60 and number.isdigit()
    change_keys(live_server, "bob", mallory)
    changed = alice.safety_number(await alice.fetch_verified_keys("bob"))
    assert changed != number
    change_keys(live_server, "alice", identities[2])
    bob_view = await bob.fetch_verified_keys("alice")
    assert bob_view.state == "changed"
    assert bob.safety_number(bob_view) not in (number, changed)


def test_view_file_holds_no_private_data(tmp_path: Path) -> None:
    """The view's file has only the directory key, a head and contacts' fingerprints."""
    view = KeyDirectoryView(tmp_path / "view.json")
    view.pin_directory_key(b"\x30" * 44)
    data = json.loads((tmp_path / "view.json").read_text())
    assert set(data) == {"v", "directory_key", "last_head", "contacts"}


# --- self-monitoring: check_my_entries --------------------------------------------------------


async def test_my_own_registration_raises_no_alarm(signed_up: SignUp) -> None:
    """Alice's check accepts her registration entry; a second check has nothing new."""
    alice = await signed_up("alice")
    await signed_up("bob")
    assert [e.index for e in await alice.check_my_entries()] == [0]
    assert await alice.check_my_entries() == []
    assert alice.directory.scanned_size("alice") == 2


async def test_forged_entry_for_me_is_detected(
    live_server: LiveServer, signed_up: SignUp, mallory: e2e.Identity
) -> None:
    """Another key appended to the log under alice's name fails alice's own check."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await alice.check_my_entries()
    forge_log_entry(live_server, "alice", mallory)
    with pytest.raises(KeyDirectoryError) as caught:
        await alice.check_my_entries()
    assert caught.value.code == "foreign_key_for_me"
    assert alice.directory.scanned_size("alice") == 2  # found again at the next check


async def test_forged_latest_entry_is_detected_on_first_run(
    live_server: LiveServer, signed_up: SignUp, mallory: e2e.Identity
) -> None:
    """On a client's first check, a latest entry that is not my current keys is foreign."""
    alice = await signed_up("alice")
    forge_log_entry(live_server, "alice", mallory)
    with pytest.raises(KeyDirectoryError) as caught:
        await alice.check_my_entries()
    assert caught.value.code == "foreign_key_for_me"


async def test_key_change_seen_by_my_client_raises_no_alarm(
    live_server: LiveServer, signed_up: SignUp, identities: list[e2e.Identity]
) -> None:
    """A key change logged through the store, with this client holding the new keys, is fine."""
    alice = await signed_up("alice")
    await signed_up("bob")
    await alice.check_my_entries()
    change_keys(live_server, "alice", identities[2])
    alice.account = Account("alice", identities[2])
    assert [e.index for e in await alice.check_my_entries()] == [2]


async def test_entries_not_in_the_signed_head_are_refused(signed_up: SignUp) -> None:
    """Entries that do not hash to the verified head fail with bad_entries."""
    alice = await signed_up("alice")
    await signed_up("bob")
    head = await alice.check_head()
    body = await alice.call("GET", "/api/v1/directory/entries?start=0")
    entries = [DirectoryEntry.from_json(e) for e in body["entries"]]
    altered = [dataclasses.replace(entries[0], timestamp_ms=entries[0].timestamp_ms + 1)]
    identity = identity_of(alice)
    with pytest.raises(KeyDirectoryError) as caught:
        alice.directory.check_my_entries(
            "alice",
            e2e.fingerprint(identity.enc_public_spki),
            e2e.fingerprint(identity.sign_public_spki),
            head,
            altered + entries[1:],
        )
    assert caught.value.code == "bad_entries"
