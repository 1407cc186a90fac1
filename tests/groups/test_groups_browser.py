"""Groups in real Chromium (issue 13, item 5): three people in three browsers create a group,
chat with sender names, rename it and remove one, whose page says so and shows nothing sent
later (on SQLite, and on PostgreSQL + Redis across two nodes). Also: a member the server
inserts without a signed entry (a ghost), or an altered entry, is refused and shown; a member's
key change is warned of by name; adding, leaving, catching up offline and a Python bot in the
same group work; the group controls pass axe; the page's group-name layout gives the vector."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing

import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, Locator, Page, expect

from securechat import e2e
from securechat.client import Groups, SecureChatClient, reset_keys
from tests import vectorkit
from tests.browser_helpers import PASSWORD, WAIT_MS, ChatPage, register
from tests.chat.test_chat_browser import change_keys
from tests.conftest import MakeClient
from tests.engines import PostgresEngine, RedisEngine
from tests.livesrv import LiveServer
from tests.web.test_axe_browser import AXE, violations
from tools.cluster import Cluster, Node, free_port

pytestmark = pytest.mark.browser

PEOPLE = ("alice", "bob", "carol")


@pytest.fixture(name="contexts")
async def _contexts(
    browser: Browser, live_server: LiveServer
) -> AsyncIterator[list[BrowserContext]]:
    contexts = [await browser.new_context() for _ in PEOPLE]
    yield contexts
    for context in contexts:
        await asyncio.wait_for(context.close(), 20)


@pytest.fixture(name="accounts")
async def _accounts(
    make_client: MakeClient, identities: list[e2e.Identity]
) -> list[SecureChatClient]:
    clients = [await register(make_client, identities[i], name) for i, name in enumerate(PEOPLE)]
    await befriend(clients, PEOPLE)
    return clients


async def befriend(clients: list[SecureChatClient], names: tuple[str, ...]) -> None:
    """Make each of names (clients, logged in) the others' accepted contact: a group one of
    them adds another to is no invite (the message request rule)."""
    for client, name in zip(clients, names, strict=True):
        for other in names:
            if other != name:
                body = {"user": other, "action": "accept"}
                await client.call("POST", "/api/v1/contacts", body)


def accept_dialogs(chat: ChatPage) -> None:
    """Answer OK to the page's confirmations (remove, leave)."""

    async def handle(dialog: Dialog) -> None:
        await dialog.accept()

    chat.page.on("dialog", handle)


class GroupPage:
    """One person's chat page, driven through its group controls."""

    def __init__(self, chat: ChatPage) -> None:
        self.chat = chat
        self.page = chat.page
        # On a failure, what the page said is in the test's captured output.
        self.page.on("console", lambda m: print(f"[{chat.username}] {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: print(f"[{chat.username}] pageerror: {e}"))

    def listed(self, name: str) -> Locator:
        return self.page.locator("#group-list button[data-group]", has_text=name)

    async def create(self, name: str, people: list[str]) -> None:
        await self.page.get_by_role("button", name="New group").click()
        dialog = self.page.get_by_role("dialog", name="New group")
        await dialog.get_by_label("Group name").fill(name)
        search = dialog.get_by_role("combobox", name="People in the group")
        for person in people:
            await search.fill(person[:2])
            await dialog.get_by_role("option", name=person, exact=True).click()
        chosen = dialog.get_by_role("list", name="People chosen")
        await expect(chosen.locator("li")).to_have_count(len(people))
        await dialog.get_by_role("button", name="Create group").click()
        await expect(dialog).to_be_hidden(timeout=WAIT_MS)
        await expect(self.page.locator("#thread-title")).to_have_text(name, timeout=WAIT_MS)

    async def open(self, name: str) -> None:
        await self.listed(name).click(timeout=WAIT_MS)
        await expect(self.page.locator("#thread-title")).to_have_text(name, timeout=WAIT_MS)

    async def members(self) -> Locator:
        await self.page.get_by_role("button", name="Members", exact=True).click()
        dialog = self.page.locator("#group-members-dialog")
        await expect(dialog).to_be_visible()
        return dialog

    def message(self, sender: str, text: str) -> Locator:
        """A message shown in the open thread with its sender's name."""
        return self.chat.messages.filter(has_text=text).filter(
            has=self.page.locator(".msg__sender", has_text=sender)
        )


async def test_three_people_chat_rename_and_remove(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """Create, chat with sender names, rename (everyone sees it), remove carol: her page says
    she was removed and never shows what is sent after."""
    alice, bob, carol = [
        GroupPage(await ChatPage.open(context, live_server.url, name))
        for context, name in zip(contexts, PEOPLE, strict=True)
    ]
    await alice.create("Hikers", ["bob", "carol"])
    await bob.open("Hikers")
    await carol.open("Hikers")

    await alice.chat.send("hello from alice")
    await expect(bob.message("alice", "hello from alice")).to_have_count(1, timeout=WAIT_MS)
    await expect(carol.message("alice", "hello from alice")).to_have_count(1, timeout=WAIT_MS)
    await bob.chat.send("hi from bob")
    await expect(alice.message("bob", "hi from bob")).to_have_count(1, timeout=WAIT_MS)
    await expect(carol.message("bob", "hi from bob")).to_have_count(1, timeout=WAIT_MS)
    await carol.chat.send("carol here")
    await expect(alice.message("carol", "carol here")).to_have_count(1, timeout=WAIT_MS)
    await expect(bob.message("carol", "carol here")).to_have_count(1, timeout=WAIT_MS)
    # Each sees the others' messages once, in the order they were sent.
    assert await bob.chat.texts() == ["hello from alice", "hi from bob", "carol here"]
    await expect(alice.page.locator(".msg__read-count").first).to_contain_text(
        "Read by 2 of 2", timeout=WAIT_MS
    )

    members = await alice.members()
    await expect(members.locator(".group-member")).to_have_count(3)
    await expect(members.get_by_role("group", name="Safety number with bob")).to_be_visible(
        timeout=WAIT_MS
    )
    await members.get_by_label("New group name").fill("Trail crew")
    await members.get_by_role("button", name="Rename").click()
    for person in (alice, bob, carol):
        await expect(person.page.locator("#thread-title")).to_have_text(
            "Trail crew", timeout=WAIT_MS
        )
        await expect(person.listed("Trail crew")).to_have_count(1)
    await expect(
        bob.page.locator(".thread-notice", has_text="alice renamed the group")
    ).to_have_count(1)

    accept_dialogs(alice.chat)
    actions = members.get_by_role("group", name="Actions for carol")
    await actions.get_by_role("button", name="Remove").click()
    await expect(members.locator(".group-member")).to_have_count(2, timeout=WAIT_MS)
    await members.get_by_role("button", name="Close").click()

    await expect(carol.page.get_by_text("You were removed from Trail crew")).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(bob.page.locator(".thread-notice", has_text="carol was removed")).to_have_count(
        1, timeout=WAIT_MS
    )
    await expect(carol.page.locator("#composer-send")).to_be_disabled()

    await alice.chat.send("after carol left")
    await expect(bob.message("alice", "after carol left")).to_have_count(1, timeout=WAIT_MS)
    # Alice drew a new chain after the removal: carol's page, with all it kept, cannot open it.
    group = await carol.listed("Trail crew").get_attribute("data-group")
    bob_client = accounts[1]
    page = await bob_client.call("GET", f"/api/v1/groups/{group}/messages")
    later = next(m for m in page["messages"] if m["from"] == "alice")
    spki = (await bob_client.call("GET", "/api/v1/keys/alice"))["sign_public_key"]
    opened = await carol.page.evaluate(
        OPEN_WITH_KEPT_STATE, {"me": "carol", "group": group, "frame": later, "senderSpki": spki}
    )
    assert opened["named"] == "no chain" and opened["kept"]
    assert set(opened["kept"]) == {"undecryptable"}
    await bob.chat.send("bob after")
    await expect(alice.message("bob", "bob after")).to_have_count(1, timeout=WAIT_MS)
    await asyncio.sleep(1)  # anything on its way to carol would be here by now
    assert "after carol left" not in await carol.chat.texts()
    assert "bob after" not in await carol.chat.texts()
    await expect(carol.chat.messages).to_have_count(3)

    # Anyone may leave; the others see it.
    accept_dialogs(bob.chat)
    bob_members = await bob.members()
    await bob_members.get_by_role("button", name="Leave group").click()
    await expect(alice.page.locator(".thread-notice", has_text="bob left the group")).to_have_count(
        1, timeout=WAIT_MS
    )
    await expect(bob.page.locator(".thread-notice", has_text="You left the group")).to_have_count(1)
    await expect(bob.page.locator("#composer-send")).to_be_disabled()

    # A reload keeps the history here, and still nothing later.
    await carol.page.reload()
    await carol.chat.wait_ready()
    await carol.open("Trail crew")
    await expect(carol.page.get_by_text("You were removed from Trail crew")).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(carol.chat.messages).to_have_count(3, timeout=WAIT_MS)
    assert "after carol left" not in await carol.chat.texts()


# In a removed member's page: open a later group message with everything the page kept (its
# sealed group record with the receiver chains). Answers "opened" or the error's code.
OPEN_WITH_KEPT_STATE = """
async ({ me, group, frame, senderSpki }) => {
  const { ChatStore } = await import("/static/js/chat/store.js");
  const { Vault } = await import("/static/js/chat/vault.js");
  const { loadIdentity } = await import("/static/js/keystore.js");
  const c = await import("/static/js/crypto.js");
  const m = await import("/static/js/groups/membership.js");
  const s = await import("/static/js/groups/senderkeys.js");
  const st = await import("/static/js/groups/state.js");
  const store = await ChatStore.open(me);
  const { vault } = await Vault.open(store, await loadIdentity(me));
  const record = await vault.open(`group:${group}`, await store.meta(`group:${group}`));
  // The chain the message names was never handed to her; and none of those she kept opens it.
  const named = st.receiverFor(record, frame.from, frame.envelope.cid) ? "held" : "no chain";
  const kept = [];
  for (const held of record.receivers[frame.from] ?? []) {
    const chain = new s.ReceiverChain(c.b64decode(held.chainKey), held.iteration);
    for (const [i, key] of held.skipped) chain.skipped.set(i, c.b64decode(key));
    try {
      await s.openGroupMessage(frame.envelope, {
        chain, groupId: st.bytesOfHex(group), head: c.b64decode(frame.head),
        sender: frame.from, messageId: frame.id, senderSignSpki: c.b64decode(senderSpki),
      });
      kept.push("opened");
    } catch (error) {
      kept.push(error.code ?? String(error));
    }
  }
  return { named, kept };
}
"""


def insert_ghost(server: LiveServer, username: str) -> None:
    """Make username a member of every group in the database, with no entry: what a server
    that lies about membership would do."""
    with closing(sqlite3.connect(server.database_path)) as db, db:
        (user_id,) = db.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
        db.execute(
            "INSERT INTO group_members (group_row, user_id, admin) SELECT id, ?, 0 FROM groups",
            (user_id,),
        )


async def test_a_ghost_member_is_refused_and_shown(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """A member inserted into the database without a signed entry: the page names the group
    in a serious warning (role="alert") and refuses to send to it."""
    alice = GroupPage(await ChatPage.open(contexts[0], live_server.url, "alice"))
    await alice.create("Book club", ["bob"])
    await alice.chat.send("before the ghost")
    await expect(alice.chat.messages.filter(has_text="before the ghost")).to_have_attribute(
        "data-status", "sent", timeout=WAIT_MS
    )
    await asyncio.to_thread(insert_ghost, live_server, "carol")

    await alice.page.reload()
    await alice.chat.wait_ready()
    await alice.open("Book club")
    alarm = alice.page.get_by_role("alert").filter(has_text="Book club")
    await expect(alarm).to_be_visible(timeout=WAIT_MS)
    await expect(alarm).to_contain_text(
        "The server lists carol as a member of Book club, but no admin added them"
    )
    await expect(alice.page.locator("#composer-send")).to_be_disabled()
    await alice.chat.composer.fill("to the ghost")
    await alice.chat.composer.press("Enter")
    await expect(alice.chat.messages.filter(has_text="to the ghost")).to_have_count(0)
    await expect(alice.listed("Book club")).to_contain_text("Warning")


async def test_the_group_controls_pass_axe(
    browser: Browser, live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """The group list, the create dialog with people chosen, a group thread and the members
    dialog have no axe violations (tests/web/test_axe_browser.py checks the rest of the page)."""
    if not AXE.exists():
        pytest.fail(f"axe-core is missing ({AXE}): run `npm ci` (make test does)")
    context = await browser.new_context()
    try:
        await context.add_init_script(path=str(AXE))
        alice = GroupPage(await ChatPage.open(context, live_server.url, "alice"))
        await alice.page.get_by_role("button", name="New group").click()
        dialog = alice.page.get_by_role("dialog", name="New group")
        await dialog.get_by_label("Group name").fill("Axe club")
        await dialog.get_by_role("combobox", name="People in the group").fill("bo")
        await expect(dialog.get_by_role("option", name="bob", exact=True)).to_be_visible()
        assert await violations(alice.page) == [], "the create dialog, people found"
        await dialog.get_by_role("option", name="bob", exact=True).click()
        await dialog.get_by_role("button", name="Create group").click()
        await expect(alice.page.locator("#thread-title")).to_have_text("Axe club", timeout=WAIT_MS)
        await alice.chat.send("hello")
        await expect(alice.chat.messages.last).to_have_attribute(
            "data-status", "sent", timeout=WAIT_MS
        )
        assert await violations(alice.page) == [], "a group thread"
        members = await alice.members()
        await expect(members.get_by_role("group", name="Safety number with bob")).to_be_visible(
            timeout=WAIT_MS
        )
        assert await violations(alice.page) == [], "the members dialog"
    finally:
        await asyncio.wait_for(context.close(), 20)


async def test_js_seals_and_opens_the_pinned_group_name(browser_page: Page) -> None:
    """static/js/groups/names.js gives the pinned aad and detail of tests/vectors/groups.json
    (the Python names.py's), opens it, and refuses it at another index."""
    vector = vectorkit.load("groups")["name"]
    got = await browser_page.evaluate(
        """async (v) => {
        const n = await import("/static/js/groups/names.js");
        const c = await import("/static/js/crypto.js");
        const hex = (x) => Uint8Array.from(x.match(/../g), (b) => parseInt(b, 16));
        const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
        const [key, group] = [hex(v.name_key), hex(v.group_id)];
        const detail = await n.sealName(key, group, v.index, v.name, { _iv: hex(v.iv) });
        let moved = "opened";
        try {
          await n.openName(key, group, v.index + 1, c.b64decode(v.detail));
        } catch {
          moved = "refused";
        }
        return {
          aad: toHex(n.nameAad(group, v.index)),
          detail: c.b64encode(detail),
          name: await n.openName(key, group, v.index, c.b64decode(v.detail)),
          moved,
        };
        }""",
        vector,
    )
    assert got == {
        "aad": vector["aad"],
        "detail": vector["detail"],
        "name": vector["name"],
        "moved": "refused",
    }


async def test_a_members_key_change_shows_a_warning_naming_them(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """alice verifies bob and carol from the member list (the pairs' panel); bob's keys change:
    alice's group thread warns about bob (and only bob), the member list says his keys changed,
    and the group still works for carol, who reads what alice sends."""
    alice = GroupPage(await ChatPage.open(contexts[0], live_server.url, "alice"))
    carol = GroupPage(await ChatPage.open(contexts[2], live_server.url, "carol"))
    await alice.create("Choir", ["bob", "carol"])
    await expect(alice.page.locator("#group-key-warnings")).to_be_hidden()
    members = await alice.members()
    for person in ("bob", "carol"):
        row = members.locator(f'[data-member="{person}"]')
        await expect(row.locator(".verify__state")).to_have_text("Not verified", timeout=WAIT_MS)
        await row.get_by_role("button", name="Verify").click()
        panel = alice.page.get_by_role("dialog", name=f"Verify {person}")
        await panel.get_by_role("button", name="Mark as verified").click(timeout=WAIT_MS)
        await expect(panel.get_by_role("button", name="Mark as not verified")).to_be_visible()
        await panel.get_by_role("button", name="Close").click()
        await expect(row.locator(".verify__state")).to_have_text("Verified", timeout=WAIT_MS)
    change_keys(live_server, "bob", e2e.Identity.generate(2048))

    await alice.page.reload()
    await alice.chat.wait_ready()
    await alice.open("Choir")
    warnings = alice.page.locator("#group-key-warnings li")
    await expect(warnings).to_have_count(1, timeout=WAIT_MS)
    await expect(warnings).to_contain_text("bob's security keys changed")
    members = await alice.members()
    await expect(members.locator('[data-member="bob"] .verify__state')).to_have_text(
        "Keys changed", timeout=WAIT_MS
    )
    await expect(members.locator('[data-member="carol"] .verify__state')).to_have_text("Verified")
    await members.get_by_role("button", name="Close").click()
    # bob's new keys wait for alice to accept them; carol is not held up by that.
    await alice.chat.send("still singing")
    await carol.open("Choir")
    await expect(carol.message("alice", "still singing")).to_have_count(1, timeout=WAIT_MS)


async def test_an_added_member_reads_from_their_join(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """alice adds carol with the members dialog's picker: carol gets the group's name and reads
    what alice and bob send from then on, nothing from before; bob made admin gets the admin
    controls."""
    alice, bob, carol = [
        GroupPage(await ChatPage.open(context, live_server.url, name))
        for context, name in zip(contexts, PEOPLE, strict=True)
    ]
    await alice.create("Garden", ["bob"])
    await alice.chat.send("before carol")
    await bob.open("Garden")
    await expect(bob.message("alice", "before carol")).to_have_count(1, timeout=WAIT_MS)

    members = await alice.members()
    await members.get_by_role("combobox", name="Add people").fill("ca")
    await members.get_by_role("option", name="carol", exact=True).click()
    await members.get_by_role("button", name="Add to group").click()
    await expect(members.locator(".group-member")).to_have_count(3, timeout=WAIT_MS)
    await members.get_by_role("button", name="Leave group").click()
    await expect(alice.page.get_by_role("alert")).to_contain_text(
        "You are the only admin of Garden. Make someone else an admin before you leave."
    )
    await (
        members.get_by_role("group", name="Actions for bob")
        .get_by_role("button", name="Make admin")
        .click()
    )
    await expect(members.locator('[data-member="bob"] .verified-badge')).to_have_text(
        "Admin", timeout=WAIT_MS
    )
    await members.get_by_role("button", name="Close").click()

    await carol.open("Garden")
    await expect(carol.page.locator(".thread-notice", has_text="alice added you")).to_have_count(
        1, timeout=WAIT_MS
    )
    await alice.chat.send("welcome carol")
    await expect(carol.message("alice", "welcome carol")).to_have_count(1, timeout=WAIT_MS)
    await bob.chat.send("hi carol")
    await expect(carol.message("bob", "hi carol")).to_have_count(1, timeout=WAIT_MS)
    assert await carol.chat.texts() == ["welcome carol", "hi carol"]

    bob_members = await bob.members()
    await expect(bob_members.get_by_label("New group name")).to_be_visible(timeout=WAIT_MS)


async def test_a_strangers_group_waits_in_requests_until_joined_or_left(
    contexts: list[BrowserContext],
    live_server: LiveServer,
    accounts: list[SecureChatClient],
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """dave, no one's contact, creates a group with bob and carol: it waits under Requests
    naming him, not under Groups, its message unshown; bob joins (it moves to Groups, dave's
    message appears, dave becomes his contact); carol leaves, and the others see it."""
    await register(make_client, identities[3], "dave")
    dave = GroupPage(await ChatPage.open(contexts[0], live_server.url, "dave"))
    bob, carol = [
        GroupPage(await ChatPage.open(context, live_server.url, name))
        for context, name in zip(contexts[1:], ("bob", "carol"), strict=True)
    ]
    await dave.create("Strangers", ["bob", "carol"])
    await dave.chat.send("hello from dave")
    await expect(dave.chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)

    for person in (bob, carol):
        requests = person.page.get_by_role("region", name="Requests")
        invite = requests.locator("li[data-invite]", has_text="Strangers")
        await expect(invite).to_contain_text("dave added you", timeout=WAIT_MS)
        await expect(person.listed("Strangers")).to_have_count(0)
        await expect(person.page.get_by_text("hello from dave")).to_have_count(0)

    invite = bob.page.get_by_role("group", name="Invitation to Strangers from dave")
    await invite.get_by_role("button", name="Join").click()
    await expect(bob.listed("Strangers")).to_have_count(1, timeout=WAIT_MS)
    await expect(bob.page.locator("li[data-invite]")).to_have_count(0)
    await expect(bob.page.locator("#thread-title")).to_have_text("Strangers")
    await expect(bob.message("dave", "hello from dave")).to_have_count(1, timeout=WAIT_MS)
    contacts = await accounts[1].call("GET", "/api/v1/contacts")
    assert "dave" in contacts["contacts"]

    accept_dialogs(carol.chat)
    invite = carol.page.get_by_role("group", name="Invitation to Strangers from dave")
    await invite.get_by_role("button", name="Leave").click()
    await expect(carol.page.locator("li[data-invite]")).to_have_count(0, timeout=WAIT_MS)
    await expect(carol.listed("Strangers")).to_have_count(0)
    for person in (dave, bob):
        await expect(
            person.page.locator(".thread-notice", has_text="carol left the group")
        ).to_have_count(1, timeout=WAIT_MS)
    await bob.chat.send("hi dave")
    await expect(dave.message("bob", "hi dave")).to_have_count(1, timeout=WAIT_MS)
    await carol.page.reload()
    await carol.chat.wait_ready()
    await expect(carol.page.locator("li[data-invite]")).to_have_count(0)
    await expect(carol.listed("Strangers")).to_have_count(0)


async def test_the_page_and_the_python_client_share_a_group(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """alice in the page, bob a bot on securechat.client.Groups: bob gets the group's name from
    alice's key distribution and reads her message; alice's page reads bob's answer, under his
    name. The two implementations speak the same group_keys, name and message plaintexts."""
    alice = GroupPage(await ChatPage.open(contexts[0], live_server.url, "alice"))
    bot = Groups(await accounts[1].connect())
    await alice.create("Mixed", ["bob"])
    await alice.chat.send("hello bot")
    message = await bot.receive(wait=WAIT_MS / 1000)
    assert (message.sender, message.text) == ("alice", "hello bot")
    assert bot.name(message.group) == "Mixed"

    await bot.send(message.group, "hello page")
    await expect(alice.message("bob", "hello page")).to_have_count(1, timeout=WAIT_MS)


async def test_an_offline_member_catches_up(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """bob has no page open while alice creates the group and writes: when he opens the chat,
    the sync brings the group, its name, alice's chain and her messages, in order."""
    alice = GroupPage(await ChatPage.open(contexts[0], live_server.url, "alice"))
    await alice.create("Late club", ["bob"])
    for text in ("one", "two", "three"):
        await alice.chat.send(text)
    await expect(alice.chat.messages.last).to_have_attribute("data-status", "sent", timeout=WAIT_MS)

    bob = GroupPage(await ChatPage.open(contexts[1], live_server.url, "bob"))
    await expect(bob.listed("Late club").locator(".conv__unread")).to_have_text(
        "3 unread", timeout=WAIT_MS
    )
    await bob.open("Late club")
    await expect(bob.message("alice", "three")).to_have_count(1, timeout=WAIT_MS)
    assert await bob.chat.texts() == ["one", "two", "three"]
    await expect(alice.page.locator(".msg__read-count").last).to_contain_text(
        "Read by 1 of 1", timeout=WAIT_MS
    )


async def test_two_tabs_of_one_browser_send_in_turn(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """alice has the chat open in two tabs of one browser, which share her sender chain (kept
    in IndexedDB): sending from each in turn, never one iteration twice (the send lock), so
    bob reads every message, in order, and none is lost."""
    first = GroupPage(await ChatPage.open(contexts[0], live_server.url, "alice"))
    bob = GroupPage(await ChatPage.open(contexts[1], live_server.url, "bob"))
    await first.create("Two tabs", ["bob"])
    second = GroupPage(await ChatPage.open(contexts[0], live_server.url, "alice"))
    await second.open("Two tabs")
    texts = [f"{tab} tab, {n}" for n in range(2) for tab in ("first", "second")]
    for text in texts:
        tab = first if text.startswith("first") else second
        await tab.chat.send(text)
        mine = tab.chat.messages.filter(has_text=text)
        await expect(mine).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    await bob.open("Two tabs")
    await expect(bob.message("alice", texts[-1])).to_have_count(1, timeout=WAIT_MS)
    await expect(bob.chat.messages).to_have_count(len(texts))
    assert await bob.chat.texts() == texts
    unread = bob.page.locator('#messages > li.msg:not([data-state="ok"])')
    await expect(unread).to_have_count(0)


async def test_two_browsers_of_one_user_each_read_the_other(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """alice uses two browsers (two devices), each drawing its own sender chain: bob reads
    both, and each of alice's browsers reads what the other sent, from her own copy of the
    other's key distribution."""
    laptop = GroupPage(await ChatPage.open(contexts[0], live_server.url, "alice"))
    bob = GroupPage(await ChatPage.open(contexts[1], live_server.url, "bob"))
    await laptop.create("Two browsers", ["bob"])
    phone = GroupPage(await ChatPage.open(contexts[2], live_server.url, "alice"))
    await phone.open("Two browsers")
    texts = [f"from the {device}, {n}" for n in range(2) for device in ("laptop", "phone")]
    for text in texts:
        device = laptop if "laptop" in text else phone
        await device.chat.send(text)
        mine = device.chat.messages.filter(has_text=text)
        await expect(mine).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    await bob.open("Two browsers")
    for page in (bob, laptop, phone):
        await expect(page.chat.messages).to_have_count(len(texts), timeout=WAIT_MS)
        assert await page.chat.texts() == texts
        unread = page.page.locator('#messages > li.msg:not([data-state="ok"])')
        await expect(unread).to_have_count(0)


def flip_a_signature_bit(server: LiveServer) -> None:
    """Change one bit of the signature of every group's creation entry in the database."""
    with closing(sqlite3.connect(server.database_path)) as db, db:
        for row, entry in db.execute("SELECT group_row, entry FROM group_entries WHERE idx = 0"):
            forged = bytes(entry[:-1]) + bytes([entry[-1] ^ 1])
            db.execute(
                "UPDATE group_entries SET entry = ? WHERE group_row = ? AND idx = 0", (forged, row)
            )


async def test_a_forged_entry_is_refused_and_shown(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """The creation entry altered in the database: bob, new to the group, is told its
    membership could not be verified (bad_signature); alice, who kept the chain, that the
    server shows a different history. Neither can send to it."""
    alice = GroupPage(await ChatPage.open(contexts[0], live_server.url, "alice"))
    await alice.create("Quiet", ["bob"])
    await asyncio.to_thread(flip_a_signature_bit, live_server)

    bob = GroupPage(await ChatPage.open(contexts[1], live_server.url, "bob"))
    await bob.page.locator("#group-list button[data-group]").click(timeout=WAIT_MS)
    await expect(bob.page.get_by_role("alert")).to_contain_text(
        "could not be verified (bad_signature)", timeout=WAIT_MS
    )
    await expect(bob.page.locator("#composer-send")).to_be_disabled()

    await alice.page.reload()
    await alice.chat.wait_ready()
    await alice.open("Quiet")
    await expect(alice.page.get_by_role("alert")).to_contain_text(
        "The server now shows a different membership history for Quiet", timeout=WAIT_MS
    )
    await expect(alice.page.locator("#composer-send")).to_be_disabled()


# --- a member who deleted their account; a signer's key reset ----------------------------------


async def test_a_member_who_deleted_their_account_is_shown_and_can_be_removed(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """carol deletes her account: alice's and bob's pages keep talking (no key goes to her,
    nothing waits for her), their member lists say "Account deleted", and alice removes her."""
    alice, bob = [
        GroupPage(await ChatPage.open(context, live_server.url, name))
        for context, name in zip(contexts[:2], PEOPLE[:2], strict=True)
    ]
    await alice.create("Reunion", ["bob", "carol"])
    await alice.chat.send("before")
    await bob.open("Reunion")
    await expect(bob.message("alice", "before")).to_have_count(1, timeout=WAIT_MS)
    await accounts[2].delete_account(PASSWORD)

    await bob.chat.send("carol is gone")  # bob's first send: his chain goes to alice alone
    await expect(alice.message("bob", "carol is gone")).to_have_count(1, timeout=WAIT_MS)
    await alice.chat.send("still here")
    await expect(bob.message("alice", "still here")).to_have_count(1, timeout=WAIT_MS)
    for person in (alice, bob):
        await expect(person.page.get_by_role("alert").filter(has_text="Reunion")).to_have_count(0)
    bob_members = await bob.members()
    await expect(bob_members.locator('[data-member="carol"] .verify__state')).to_have_text(
        "Account deleted", timeout=WAIT_MS
    )
    await bob_members.get_by_role("button", name="Close").click()

    accept_dialogs(alice.chat)
    members = await alice.members()
    carol = members.locator('[data-member="carol"]')
    await expect(carol.locator(".verify__state")).to_have_text("Account deleted", timeout=WAIT_MS)
    await expect(carol.get_by_role("button", name="Verify")).to_have_count(0)
    await carol.get_by_role("button", name="Remove").click()
    await expect(members.locator(".group-member")).to_have_count(2, timeout=WAIT_MS)
    await members.get_by_role("button", name="Close").click()
    await expect(bob.page.locator(".thread-notice", has_text="carol was removed")).to_have_count(
        1, timeout=WAIT_MS
    )
    await alice.chat.send("after the removal")
    await expect(bob.message("alice", "after the removal")).to_have_count(1, timeout=WAIT_MS)


def forge_gone(server: LiveServer, username: str) -> None:
    """Take username out of every group's members and name them gone, though their account
    is there: what a server cutting a member off from the group's keys would do."""
    with closing(sqlite3.connect(server.database_path)) as db, db:
        (user_id,) = db.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
        db.execute(
            "INSERT INTO group_gone (group_row, username, admin)"
            " SELECT group_row, ?, admin FROM group_members WHERE user_id = ?",
            (username, user_id),
        )
        db.execute("DELETE FROM group_members WHERE user_id = ?", (user_id,))


async def test_a_gone_member_the_directory_does_not_prove_is_refused_and_shown(
    contexts: list[BrowserContext], live_server: LiveServer, accounts: list[SecureChatClient]
) -> None:
    """The database names carol gone while her account (and keys) are there: alice's page
    names the group in a serious warning, says the directory does not prove it, and sends
    nothing to the group."""
    alice = GroupPage(await ChatPage.open(contexts[0], live_server.url, "alice"))
    await alice.create("Cut off", ["bob", "carol"])
    await alice.chat.send("before the cut")
    await expect(alice.chat.messages.filter(has_text="before the cut")).to_have_attribute(
        "data-status", "sent", timeout=WAIT_MS
    )
    await asyncio.to_thread(forge_gone, live_server, "carol")
    shown = await accounts[1].call("GET", "/api/v1/groups")
    group = shown["groups"][0]["group"]
    detail = await accounts[1].call("GET", f"/api/v1/groups/{group}")
    assert detail["gone"] == ["carol"] and "carol" in detail["members"]

    await alice.page.reload()
    await alice.chat.wait_ready()
    await alice.open("Cut off")
    alarm = alice.page.get_by_role("alert").filter(has_text="Cut off")
    await expect(alarm).to_be_visible(timeout=WAIT_MS)
    await expect(alarm).to_contain_text(
        "The server says the accounts of carol were deleted, but the key directory does not "
        "prove it"
    )
    await expect(alice.page.locator("#composer-send")).to_be_disabled()


async def test_a_group_stands_after_its_admin_resets_keys(
    browser: Browser,
    contexts: list[BrowserContext],
    live_server: LiveServer,
    accounts: list[SecureChatClient],
    make_client: MakeClient,
    identities: list[e2e.Identity],
) -> None:
    """alice (a Python client) creates the group, then resets her keys: bob's page, which
    verified the chain before, still accepts it after a reload; dave, added afterwards under
    her new key, accepts it in a fresh browser (her first entry proved by the directory's
    history and vouched for by the add), and everyone reads everyone."""
    dave_client = await register(make_client, identities[3], "dave")
    await dave_client.call("POST", "/api/v1/contacts", {"user": "alice", "action": "accept"})
    admin = Groups(await accounts[0].connect())
    group = await admin.create("Reset", ["bob", "carol"])
    await admin.send(group, "before my reset")
    bob = GroupPage(await ChatPage.open(contexts[1], live_server.url, "bob"))
    await bob.open("Reset")
    await expect(bob.message("alice", "before my reset")).to_have_count(1, timeout=WAIT_MS)

    await reset_keys(accounts[0], PASSWORD, rsa_bits=2048)
    await bob.page.reload()
    await bob.chat.wait_ready()
    await bob.open("Reset")
    await expect(bob.page.locator("#composer-send")).to_be_enabled(timeout=WAIT_MS)
    await expect(bob.page.get_by_role("alert").filter(has_text="Reset")).to_have_count(0)

    await admin.add(group, ["dave"])
    await expect(bob.page.locator(".thread-notice", has_text="alice added dave")).to_have_count(
        1, timeout=WAIT_MS
    )
    context = await browser.new_context()
    try:
        dave = GroupPage(await ChatPage.open(context, live_server.url, "dave"))
        await dave.open("Reset")
        await expect(dave.page.locator("#composer-send")).to_be_enabled(timeout=WAIT_MS)
        await expect(dave.page.get_by_role("alert").filter(has_text="Reset")).to_have_count(0)
        await bob.chat.send("hello dave")
        await expect(dave.message("bob", "hello dave")).to_have_count(1, timeout=WAIT_MS)
        await dave.chat.send("hello all")
        await expect(bob.message("dave", "hello all")).to_have_count(1, timeout=WAIT_MS)
    finally:
        await asyncio.wait_for(context.close(), 20)


# --- on PostgreSQL + Redis, across two nodes -----------------------------------------------------

# Light server-side hashing (the page's own PBKDF2 is unchanged: it insists on 600,000).
CLUSTER_SETTINGS = {
    "SECURECHAT_ARGON2_TIME_COST": "1",
    "SECURECHAT_ARGON2_MEMORY_KIB": "8192",
    "SECURECHAT_ARGON2_PARALLELISM": "1",
}


@pytest.fixture(name="nodes")
async def _nodes(
    postgres_engine: PostgresEngine, redis_engine: RedisEngine
) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes A and B of a cluster (tools/cluster.py) over one fresh database and one Redis."""
    async with postgres_engine.fresh_database() as database:
        ports = [free_port() for _ in range(2)]
        origins = [f"http://127.0.0.1:{port}" for port in ports]
        cluster = await asyncio.to_thread(
            Cluster.prepare,
            postgres_engine.url(database),
            redis_engine.url,
            origins,
            CLUSTER_SETTINGS,
        )
        try:
            a, b = [await asyncio.to_thread(cluster.start_node, port) for port in ports]
            yield a, b
        finally:
            await asyncio.to_thread(cluster.stop)


async def test_a_group_across_two_nodes_on_postgresql(
    browser: Browser, nodes: tuple[Node, Node], identities: list[e2e.Identity]
) -> None:
    """alice and carol on node A, bob on node B: they chat in a group, alice removes carol, and
    carol's page says so and shows nothing sent after."""
    a, b = nodes
    clients = [SecureChatClient(a.url) for _ in PEOPLE]
    contexts = [await browser.new_context() for _ in PEOPLE]
    try:
        for client, identity, name in zip(clients, identities, PEOPLE, strict=False):
            await client.register(name, PASSWORD, iterations=e2e.MIN_ITERATIONS, identity=identity)
            await client.login(name, PASSWORD)
        await befriend(clients, PEOPLE)
        alice, bob, carol = [
            GroupPage(await ChatPage.open(context, node.url, name))
            for context, node, name in zip(contexts, (a, b, a), PEOPLE, strict=True)
        ]
        await alice.create("Nodes", ["bob", "carol"])
        await bob.open("Nodes")
        await carol.open("Nodes")
        await alice.chat.send("from node A")
        await expect(bob.message("alice", "from node A")).to_have_count(1, timeout=WAIT_MS)
        await bob.chat.send("from node B")
        await expect(alice.message("bob", "from node B")).to_have_count(1, timeout=WAIT_MS)
        await expect(carol.message("bob", "from node B")).to_have_count(1, timeout=WAIT_MS)

        accept_dialogs(alice.chat)
        members = await alice.members()
        await (
            members.get_by_role("group", name="Actions for carol")
            .get_by_role("button", name="Remove")
            .click()
        )
        await expect(members.locator(".group-member")).to_have_count(2, timeout=WAIT_MS)
        await members.get_by_role("button", name="Close").click()
        await expect(carol.page.get_by_text("You were removed from Nodes")).to_be_visible(
            timeout=WAIT_MS
        )
        await alice.chat.send("carol is gone")
        await expect(bob.message("alice", "carol is gone")).to_have_count(1, timeout=WAIT_MS)
        await asyncio.sleep(1)
        assert await carol.chat.texts() == ["from node A", "from node B"]
    finally:
        for context in contexts:
            await asyncio.wait_for(context.close(), 20)
        for client in clients:
            await client.close()
