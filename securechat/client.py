"""A Python client that speaks the same protocol and crypto as the browser.

It is what the tests, the benchmark and any bot use. The password never leaves it: it derives
``auth_key`` (sent) and ``wrap_key`` (kept) exactly as the page does (docs/protocol.md).

The session cookie is ``Secure``; browsers send it to http://localhost, but Python's cookie jar
will not send a Secure cookie over plain HTTP, so the client keeps the cookie itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from securechat import datadir, e2e, merkle, transparency
from securechat.protocol import normalize_username

DEFAULT_ITERATIONS = 600_000
COOKIE_NAME = "__Host-securechat"


class ClientError(Exception):
    """The server refused a request; ``status`` and ``body`` say why."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        return str(self.body.get("error", ""))


@dataclass
class Account:
    """A signed-in user's name and private keys (held only by this client)."""

    username: str
    identity: e2e.Identity


class SecureChatClient:
    """One user's connection to a SecureChat server."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        min_iterations: int = e2e.MIN_ITERATIONS,
        directory: KeyDirectoryView | None = None,
    ) -> None:
        # The floor on PBKDF2 iterations this client accepts from the server at login; only
        # tests lower it, to save time.
        self.min_iterations = min_iterations
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self.session_cookie: str | None = None
        self.account: Account | None = None
        # What this client has seen of the key directory (pins, last head).
        self.directory = directory if directory is not None else KeyDirectoryView()
        # Chat sockets opened by connect(), closed with the client.
        self.chats: list[ChatConnection] = []

    async def __aenter__(self) -> SecureChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for chat in self.chats:
            await chat.close()
        await self.http.aclose()

    async def connect(self, *, after: int | None = 0, wait: float = 10.0) -> ChatConnection:
        """Open the chat socket with this session (cookie and Origin as a browser sends them).

        With ``after`` (default 0: everything), connect with ``?after=`` so the server replays
        first; the replayed frames are in ``ChatConnection.replayed``. A refused handshake
        raises websockets' ``InvalidStatus``.
        """
        scheme = "wss" if self.base_url.startswith("https:") else "ws"
        headers = {"Cookie": f"{COOKIE_NAME}={self.session_cookie}"} if self.session_cookie else {}
        query = "" if after is None else f"?after={int(after)}"
        socket = await websockets_connect(
            f"{scheme}://{urlsplit(self.base_url).netloc}/ws{query}",
            origin=Origin(self.origin),
            additional_headers=headers,
            max_size=CHAT_MAX_FRAME,
            open_timeout=wait,
            proxy=None,
        )
        chat = ChatConnection(self, socket, wait=wait)
        self.chats.append(chat)
        if after is not None:
            chat.cursor, chat.in_order = int(after), True
            await chat.collect_replay()
        return chat

    # Raw requests -------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        """Origin (as a browser sends it) and the session cookie, if any."""
        headers = {"Origin": self.origin}
        if self.session_cookie:
            headers["Cookie"] = f"{COOKIE_NAME}={self.session_cookie}"
        return headers

    async def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Send one request as this client; keep the session cookie the server sets."""
        response = await self.http.request(
            method, path, json=body if method != "GET" else None, headers=self.headers()
        )
        self._keep_cookie(response)
        return response

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """A request whose failure raises ClientError; returns the JSON body (or None)."""
        response = await self.request(method, path, body)
        if response.status_code >= 400:
            raise ClientError(response.status_code, _json_or_empty(response))
        return response.json() if response.content else None

    def _keep_cookie(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            if COOKIE_NAME in cookie:
                morsel = cookie[COOKIE_NAME]
                expired = morsel["max-age"] == "0" or not morsel.value
                self.session_cookie = None if expired else morsel.value

    # Accounts -----------------------------------------------------------------------------

    async def prelogin(self, username: str) -> tuple[bytes, int]:
        """The salt and iterations for ``username`` (a decoy if it does not exist)."""
        body = await self.call("POST", "/api/v1/prelogin", {"username": username})
        return e2e.b64decode(body["salt"]), int(body["iterations"])

    async def register(
        self,
        username: str,
        password: str,
        *,
        iterations: int = DEFAULT_ITERATIONS,
        identity: e2e.Identity | None = None,
        rsa_bits: int = 3072,
    ) -> e2e.Identity:
        """Create an account; the keys are generated here unless ``identity`` is given."""
        salt = os.urandom(16)
        keys = e2e.derive_keys(password, salt, iterations, min_iterations=self.min_iterations)
        identity = identity or e2e.Identity.generate(rsa_bits)
        await self.call(
            "POST",
            "/api/v1/register",
            registration_body(username, salt, iterations, keys, identity),
        )
        return identity

    async def login(self, username: str, password: str) -> Account:
        """Log in and restore the private keys from the server's opaque backup."""
        salt, iterations = await self.prelogin(username)
        keys = e2e.derive_keys(password, salt, iterations, min_iterations=self.min_iterations)
        body = await self.call(
            "POST",
            "/api/v1/login",
            {"username": username, "auth_key": e2e.b64encode(keys.auth_key)},
        )
        identity = e2e.open_key_backup(body["key_backup"], keys.wrap_key)
        self.account = Account(body["username"], identity)
        return self.account

    async def logout(self) -> None:
        """End this session on the server."""
        await self.call("POST", "/api/v1/logout", {})
        self.session_cookie = None
        self.account = None

    async def me(self) -> str:
        """The signed-in username."""
        body = await self.call("GET", "/api/v1/me")
        return str(body["username"])

    # Key directory ------------------------------------------------------------------------

    async def directory_key(self) -> bytes:
        """The directory's public key (SPKI DER), pinned on first use and checked after."""
        body = await self.call("GET", "/api/v1/directory")
        try:
            spki = e2e.b64decode(body["public_key"])
        except (KeyError, TypeError, ValueError) as error:
            raise KeyDirectoryError("bad_response", "no directory key") from error
        self.directory.pin_directory_key(spki)
        return spki

    async def fetch_verified_keys(self, username: str) -> VerifiedKeys:
        """A user's keys, proved in the log, consistent with every head seen, compared to the pin.

        Raises KeyDirectoryError when any check fails: such keys must not be used.
        """
        name = normalize_username(username)
        pinned = self.directory.directory_key or await self.directory_key()
        body = await self.call("GET", f"/api/v1/keys/{quote(name, safe='')}")
        try:
            proved = verify_key_response(body, name, pinned)
        except KeyDirectoryError as error:
            if error.code == "bad_signature":
                await self.directory_key()  # a rotated key says directory_key_changed
            raise
        await self.check_head(proved.tree_head)
        is_self = self.account is not None and self.account.username == name
        return self.directory.pin_contact(proved, is_self=is_self)

    async def check_head(
        self, head: transparency.SignedTreeHead | None = None
    ) -> transparency.SignedTreeHead:
        """Check a head (default: the server's latest) against the last one seen; keep it."""
        if head is None:
            pinned = self.directory.directory_key or await self.directory_key()
            try:
                head = transparency.SignedTreeHead.from_json(
                    await self.call("GET", "/api/v1/directory/head")
                )
            except ValueError as error:
                raise KeyDirectoryError("bad_response", str(error)) from None
            if not transparency.verify_tree_head(pinned, head):
                raise KeyDirectoryError("bad_signature", "the head is not signed by the directory")
        last = self.directory.last_head
        proof = None
        if last is not None and last.tree_size != head.tree_size:
            sizes = sorted((last.tree_size, head.tree_size))
            proof = await self._consistency_proof(sizes[0], sizes[1])
        self.directory.keep_head(self.directory.check_head(head, proof))
        return head

    async def _consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        try:
            body = await self.call(
                "GET", f"/api/v1/directory/consistency?from={old_size}&to={new_size}"
            )
            return [e2e.b64decode(p) for p in body["proof"]]
        except ClientError as error:
            # An honest log proves any two sizes it has signed; refusing is evidence too.
            raise KeyDirectoryError(
                "log_forked", f"no consistency proof from {old_size} to {new_size}"
            ) from error
        except (KeyError, TypeError, ValueError) as error:
            raise KeyDirectoryError("bad_response", "malformed consistency proof") from error

    async def check_my_entries(self) -> list[DirectoryEntry]:
        """Watch the log for keys under my name that I do not hold (``KeyDirectoryView``).

        Reads the entries added since the last call up to a freshly checked head and hands them
        to ``self.directory.check_my_entries``; returns my entries among them. Raises
        KeyDirectoryError (``foreign_key_for_me``, ``bad_entries``, or a head check's code).
        """
        if self.account is None:
            raise RuntimeError("log in first")
        head = await self.check_head()
        start = self.directory.scanned_size(self.account.username)
        entries: list[DirectoryEntry] = []
        while start + len(entries) < head.tree_size:
            at = start + len(entries)
            body = await self.call(
                "GET", f"/api/v1/directory/entries?start={at}&end={head.tree_size}"
            )
            page = body.get("entries") if isinstance(body, dict) else None
            if not isinstance(page, list) or not page:
                raise KeyDirectoryError("bad_entries", f"no log entries served from {at}")
            try:
                entries += [DirectoryEntry.from_json(e) for e in page]
            except KeyDirectoryError as error:
                raise KeyDirectoryError("bad_entries", str(error)) from None
        identity = self.account.identity
        return self.directory.check_my_entries(
            self.account.username,
            e2e.fingerprint(identity.enc_public_spki),
            e2e.fingerprint(identity.sign_public_spki),
            head,
            entries[: head.tree_size - start],
        )

    def safety_number(self, keys: VerifiedKeys) -> str:
        """The 60-digit safety number between me and the owner of ``keys``."""
        if self.account is None:
            raise RuntimeError("log in first")
        me = self.account.identity
        return e2e.safety_number(
            self.account.username,
            me.sign_public_spki,
            me.enc_public_spki,
            keys.username,
            keys.sign_public_key,
            keys.enc_public_key,
        )


def registration_body(
    username: str, salt: bytes, iterations: int, keys: e2e.DerivedKeys, identity: e2e.Identity
) -> dict[str, Any]:
    """The JSON of ``POST /api/v1/register``."""
    return {
        "username": username,
        "salt": e2e.b64encode(salt),
        "iterations": iterations,
        "auth_key": e2e.b64encode(keys.auth_key),
        "enc_public_key": e2e.b64encode(identity.enc_public_spki),
        "sign_public_key": e2e.b64encode(identity.sign_public_spki),
        "key_backup": e2e.seal_key_backup(identity, keys.wrap_key),
    }


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# --- Key directory ----------------------------------------------------------------------------
# The client's side of docs/protocol.md "Key directory", the twin of static/js/directory.js:
# pin the directory key on first use, verify the signed head and inclusion proof of every key
# before using it, check each newer head is consistent with the last one, and pin contacts'
# fingerprints on first use.

PinState = Literal["new", "same", "changed"]
_KEY_RESPONSE_FIELDS = frozenset(
    {"username", "enc_public_key", "sign_public_key", "entry", "inclusion_proof", "tree_head"}
)
_ENTRY_FIELDS = frozenset(
    {"index", "timestamp", "user_hash", "enc_fingerprint", "sign_fingerprint"}
)


class KeyDirectoryError(Exception):
    """The directory failed a check; ``code`` says which (the same codes as directory.js).

    ``bad_response``: malformed; ``bad_signature``: the tree head is not signed by the pinned
    directory key; ``directory_key_changed``: the server now shows another directory key;
    ``wrong_user``: the entry is another user's; ``not_in_log``: the keys are not the ones the
    log holds, or the inclusion proof fails; ``log_forked``: a head is not consistent with one
    seen before (the log was rewritten, or different people are shown different logs);
    ``bad_entries``: log entries served that do not hash to the signed head;
    ``foreign_key_for_me``: the log lists keys under my name that I do not hold.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class DirectoryEntry:
    """One log entry as served (fingerprints as raw 32-byte SHA-256)."""

    index: int
    timestamp_ms: int
    user_hash: bytes
    enc_fingerprint: bytes
    sign_fingerprint: bytes

    @classmethod
    def from_json(cls, data: object) -> DirectoryEntry:
        """Parse strictly; KeyDirectoryError("bad_response") on anything unexpected."""
        try:
            if not isinstance(data, dict) or set(data) != _ENTRY_FIELDS:
                raise ValueError("an entry has exactly " + ", ".join(sorted(_ENTRY_FIELDS)))
            return cls(
                index=transparency.json_uint(data, "index"),
                timestamp_ms=transparency.json_uint(data, "timestamp"),
                user_hash=transparency.json_b64(data, "user_hash", 32),
                enc_fingerprint=_exact(_unhex(data["enc_fingerprint"]), 32),
                sign_fingerprint=_exact(_unhex(data["sign_fingerprint"]), 32),
            )
        except (ValueError, TypeError) as error:
            raise KeyDirectoryError("bad_response", f"malformed log entry: {error}") from None

    def leaf_hash(self) -> bytes:
        """The entry's RFC 9162 leaf hash."""
        return transparency.entry_leaf_hash(self)


def _unhex(text: object) -> bytes:
    if not isinstance(text, str) or text != text.lower():
        raise ValueError("a fingerprint is lower-case hex")
    return bytes.fromhex(text)


def _exact(data: bytes, size: int) -> bytes:
    if len(data) != size:
        raise ValueError(f"expected {size} bytes")
    return data


@dataclass(frozen=True)
class ProvedKeys:
    """A user's keys whose log entry is proved included in a correctly signed tree head."""

    username: str
    enc_public_key: bytes
    sign_public_key: bytes
    entry: DirectoryEntry
    tree_head: transparency.SignedTreeHead

    @property
    def enc_fingerprint(self) -> str:
        return e2e.fingerprint(self.enc_public_key)

    @property
    def sign_fingerprint(self) -> str:
        return e2e.fingerprint(self.sign_public_key)


def verify_key_response(body: object, username: str, directory_key: bytes) -> ProvedKeys:
    """Check a ``GET /api/v1/keys/<username>`` answer against the pinned directory key.

    The leaf is rebuilt from the keys served (never from the fingerprints the server states),
    so a key swapped anywhere but in the log fails the inclusion proof.
    """
    if not isinstance(body, dict) or not set(body) >= _KEY_RESPONSE_FIELDS:
        raise KeyDirectoryError("bad_response", "the key response lacks fields")
    try:
        head = transparency.SignedTreeHead.from_json(body["tree_head"])
        enc_spki = e2e.b64decode(body["enc_public_key"])
        sign_spki = e2e.b64decode(body["sign_public_key"])
        e2e.load_rsa_public_spki(enc_spki)
        e2e.load_ed25519_public_spki(sign_spki)
        proof = [_exact(e2e.b64decode(p), 32) for p in body["inclusion_proof"]]
    except (ValueError, TypeError) as error:
        raise KeyDirectoryError("bad_response", str(error)) from None
    entry = DirectoryEntry.from_json(body["entry"])
    if not transparency.verify_tree_head(directory_key, head):
        raise KeyDirectoryError("bad_signature", "the tree head is not signed by the directory")
    if body["username"] != username or entry.user_hash != transparency.user_hash(username):
        raise KeyDirectoryError("wrong_user", f"the log entry is not {username}'s")
    served = DirectoryEntry(
        entry.index,
        entry.timestamp_ms,
        entry.user_hash,
        hashlib.sha256(enc_spki).digest(),
        hashlib.sha256(sign_spki).digest(),
    )
    if not merkle.verify_inclusion(
        served.leaf_hash(), entry.index, head.tree_size, proof, head.root_hash
    ):
        raise KeyDirectoryError("not_in_log", f"the keys served for {username} are not in the log")
    return ProvedKeys(username, enc_spki, sign_spki, entry, head)


@dataclass
class ContactPin:
    """The fingerprints first seen for a contact, and a different pair seen since, if any."""

    enc_fingerprint: str
    sign_fingerprint: str
    index: int
    verified: bool = False
    pending: dict[str, Any] | None = None  # {"enc_fingerprint", "sign_fingerprint", "index"}


@dataclass(frozen=True)
class VerifiedKeys:
    """Proved keys plus what the pin says: ``new``, ``same`` or ``changed`` since first seen."""

    proved: ProvedKeys
    state: PinState
    verified: bool
    is_self: bool
    previous: ContactPin | None = None

    @property
    def username(self) -> str:
        return self.proved.username

    @property
    def enc_public_key(self) -> bytes:
        return self.proved.enc_public_key

    @property
    def sign_public_key(self) -> bytes:
        return self.proved.sign_public_key

    @property
    def may_send(self) -> bool:
        """False while a verified contact's key has changed and the change is not accepted."""
        return not (self.state == "changed" and self.verified)


@dataclass
class SelfScan:
    """How far my client has read the log for my own entries: size, frontier, known pairs."""

    size: int
    frontier: list[str]  # b64 roots of the perfect subtrees of the first ``size`` leaves
    known: list[str]  # "enc_fingerprint:sign_fingerprint" pairs seen in the log as mine


def _frontier_append(frontier: list[bytes], size: int, leaf: bytes) -> None:
    """Append a leaf hash to the frontier of a tree of ``size`` leaves, in place."""
    node = leaf
    while size % 2 == 1:
        node = merkle.node_hash(frontier.pop(), node)
        size //= 2
    frontier.append(node)


def _frontier_root(frontier: list[bytes]) -> bytes:
    """The RFC 9162 root of the tree whose frontier this is."""
    if not frontier:
        return merkle.EMPTY_ROOT
    node = frontier[-1]
    for left in reversed(frontier[:-1]):
        node = merkle.node_hash(left, node)
    return node


def foreign_entries(
    mine: list[DirectoryEntry], current: str, known: set[str], first: bool
) -> list[DirectoryEntry]:
    """My entries (index order) that carry keys I do not hold; see check_my_entries."""

    def pair(e: DirectoryEntry) -> str:
        return f"{e.enc_fingerprint.hex()}:{e.sign_fingerprint.hex()}"

    accepted = set(known)
    if first and mine and pair(mine[-1]) == current:
        accepted |= {pair(e) for e in mine}
    last_current = max((e.index for e in mine if pair(e) == current), default=-1)
    return [
        e
        for e in mine
        if pair(e) != current and not (pair(e) in accepted and e.index < last_current)
    ]


class KeyDirectoryView:
    """What one client has seen: the pinned directory key, the last head, contacts' pins.

    Pure (no network): ``SecureChatClient`` feeds it. With ``path`` it is kept in a JSON file
    (mode 0600) between runs; it holds only public keys, fingerprints and tree heads.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.directory_key: bytes | None = None
        self.last_head: transparency.SignedTreeHead | None = None
        self.contacts: dict[str, ContactPin] = {}
        self.self_scans: dict[str, SelfScan] = {}
        if path is not None and path.exists():
            self._load(json.loads(path.read_text("utf-8")))

    def pin_directory_key(self, spki: bytes) -> None:
        """Pin on first use; afterwards a different key is refused until accepted by hand."""
        if self.directory_key is None:
            self.directory_key = spki
            self.save()
        elif spki != self.directory_key:
            raise KeyDirectoryError(
                "directory_key_changed",
                f"the server's directory key is now {e2e.fingerprint(spki)}, not the pinned "
                f"{e2e.fingerprint(self.directory_key)}",
            )

    def accept_directory_key(self, spki: bytes) -> None:
        """Re-pin after a rotation checked out of band; the last head is kept and still checked."""
        self.directory_key = spki
        self.save()

    def pin_contact(self, proved: ProvedKeys, *, is_self: bool = False) -> VerifiedKeys:
        """Compare ``proved`` with the contact's pin (pinning it on first sight)."""
        seen: dict[str, Any] = {
            "enc_fingerprint": proved.enc_fingerprint,
            "sign_fingerprint": proved.sign_fingerprint,
            "index": proved.entry.index,
        }
        pin = self.contacts.get(proved.username)
        if pin is None:
            self.contacts[proved.username] = ContactPin(**seen)
            self.save()
            return VerifiedKeys(proved, "new", False, is_self)
        if (pin.enc_fingerprint, pin.sign_fingerprint) == (
            seen["enc_fingerprint"],
            seen["sign_fingerprint"],
        ):
            if pin.pending is not None:  # the pinned keys are back: nothing left to accept
                pin.pending = None
                self.save()
            return VerifiedKeys(proved, "same", pin.verified, is_self)
        pin.pending = seen
        self.save()
        previous = ContactPin(pin.enc_fingerprint, pin.sign_fingerprint, pin.index, pin.verified)
        return VerifiedKeys(proved, "changed", pin.verified, is_self, previous)

    def mark_verified(self, username: str, verified: bool = True) -> None:
        """Record that the safety number with this contact was compared (or un-mark it)."""
        self.contacts[username].verified = verified
        self.save()

    def accept_change(self, username: str) -> None:
        """Pin the contact's new keys; verification starts over."""
        pin = self.contacts[username]
        if pin.pending is None:
            return
        self.contacts[username] = ContactPin(**pin.pending)
        self.save()

    def check_head(
        self, head: transparency.SignedTreeHead, proof: list[bytes] | None
    ) -> transparency.SignedTreeHead:
        """Check ``head`` against the last head with a consistency ``proof`` between them.

        Returns the head to keep (the larger). ``proof`` runs from the smaller size to the
        larger; it is not needed for equal sizes.
        """
        last = self.last_head
        if last is None:
            return head
        if head.tree_size == last.tree_size:
            if head != last:
                raise KeyDirectoryError(
                    "log_forked", f"two different heads of size {head.tree_size}"
                )
            return last
        old, new = (last, head) if last.tree_size < head.tree_size else (head, last)
        if proof is None or not merkle.verify_consistency(
            old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof
        ):
            raise KeyDirectoryError(
                "log_forked",
                f"the head of size {head.tree_size} is not consistent with the head of size "
                f"{last.tree_size} seen before",
            )
        return new

    def scanned_size(self, username: str) -> int:
        """How many log entries check_my_entries has read for ``username`` (0 at first)."""
        scan = self.self_scans.get(username)
        return scan.size if scan is not None else 0

    def check_my_entries(
        self,
        username: str,
        enc_fingerprint: str,
        sign_fingerprint: str,
        head: transparency.SignedTreeHead,
        entries: list[DirectoryEntry],
    ) -> list[DirectoryEntry]:
        """Check the log entries ``scanned_size(username) <= index < head.tree_size``.

        Nobody but the owner can tell that a key logged under their name is not theirs, so the
        owner's client reads every entry (the twin of checkMyEntries in static/js/directory.js).
        ``head`` must be verified (signature, consistency). The entries, with the frontier kept
        of those read before, must hash to its root (``bad_entries`` otherwise: entries hidden
        or altered). Each entry under my name must carry my current fingerprints, or a pair
        seen here as mine before that a later entry with my current keys supersedes; anything
        else is ``foreign_key_for_me``. The first run accepts my past entries only if the
        latest carries my current keys. Nothing is kept from a failed run. Returns my entries.
        """
        scan = self.self_scans.get(username)
        start = scan.size if scan is not None else 0
        if head.tree_size <= start:
            return []
        frontier = [e2e.b64decode(h) for h in scan.frontier] if scan is not None else []
        me = transparency.user_hash(username)
        mine: list[DirectoryEntry] = []
        for size, entry in enumerate(entries, start):
            if entry.index != size:
                raise KeyDirectoryError("bad_entries", f"entry {entry.index} served at {size}")
            _frontier_append(frontier, size, entry.leaf_hash())
            if entry.user_hash == me:
                mine.append(entry)
        if start + len(entries) != head.tree_size or _frontier_root(frontier) != head.root_hash:
            raise KeyDirectoryError(
                "bad_entries",
                f"the log entries served do not hash to the head of size {head.tree_size}",
            )
        current = f"{enc_fingerprint}:{sign_fingerprint}"
        known = set(scan.known) if scan is not None else set()
        foreign = foreign_entries(mine, current, known, first=scan is None)
        if foreign:
            raise KeyDirectoryError(
                "foreign_key_for_me",
                f"the key directory lists keys for {username} that this client does not hold "
                f"(log entries {', '.join(str(e.index) for e in foreign)})",
            )
        known |= {f"{e.enc_fingerprint.hex()}:{e.sign_fingerprint.hex()}" for e in mine}
        self.self_scans[username] = SelfScan(
            head.tree_size, [e2e.b64encode(h) for h in frontier], sorted(known)
        )
        self.save()
        return mine

    def keep_head(self, head: transparency.SignedTreeHead) -> None:
        """Remember the latest head checked."""
        if self.last_head != head:
            self.last_head = head
            self.save()

    def save(self) -> None:
        """Write the view to ``path`` (atomically), if it has one."""
        if self.path is None:
            return
        datadir.replace_private_file(self.path, json.dumps(self._to_json(), indent=1).encode())

    def _to_json(self) -> dict[str, Any]:
        key = self.directory_key
        data: dict[str, Any] = {
            "v": 1,
            "directory_key": e2e.b64encode(key) if key else None,
            "last_head": self.last_head.to_json() if self.last_head else None,
            "contacts": {name: dataclasses.asdict(pin) for name, pin in self.contacts.items()},
        }
        if self.self_scans:  # public too: sizes, subtree hashes, my fingerprints
            data["self_scans"] = {
                name: dataclasses.asdict(scan) for name, scan in self.self_scans.items()
            }
        return data

    def _load(self, data: dict[str, Any]) -> None:
        key, head = data.get("directory_key"), data.get("last_head")
        self.directory_key = e2e.b64decode(key) if key else None
        self.last_head = transparency.SignedTreeHead.from_json(head) if head else None
        self.contacts = {name: ContactPin(**pin) for name, pin in data["contacts"].items()}
        scans = data.get("self_scans") or {}
        self.self_scans = {name: SelfScan(**scan) for name, scan in scans.items()}


# --- Real-time chat ---------------------------------------------------------------------------
# The client's side of docs/protocol.md "Real-time chat (WebSocket)": the same frames, cursor and
# de-duplication rules the page follows, and the same end-to-end crypto (securechat.e2e).

# Frames from the server are at most an envelope (56 KiB) and a little JSON around it.
CHAT_MAX_FRAME = 1 << 20


class ChatClosed(Exception):
    """The chat socket is closed; ``code`` and ``reason`` are the server's (None: no close frame)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"chat closed: {code} {reason}")
        self.code = code
        self.reason = reason


class ChatError(Exception):
    """The server answered a frame with an ``error`` frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = str(frame.get("code"))
        self.frame = frame


class ChatConnection:
    """One chat socket: send frames, read them in order, keep the cursor, open messages.

    Frames read while waiting for something else are kept (``receive`` returns them first), so
    no frame is ever lost to a ``wait_for``. ``cursor`` follows the protocol's rule: it moves
    with a ``synced`` frame and with each ``message``, ``receipt`` and ``ack`` read while
    positions arrive in order: on a socket opened with ``?after=``, or after a ``synced``.
    """

    def __init__(self, client: SecureChatClient, socket: ClientConnection, *, wait: float) -> None:
        self.client = client
        self.socket = socket
        # Seconds any one wait for the server may take before TimeoutError.
        self.wait = wait
        self.cursor = 0
        # Whether positions on this socket arrive in order, without gaps (docs/protocol.md).
        self.in_order = False
        # Frames of the last sync, in order; every message seen, by id (de-duplicated).
        self.replayed: list[dict[str, Any]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self._backlog: deque[dict[str, Any]] = deque()
        self._keys: dict[str, VerifiedKeys] = {}

    @property
    def username(self) -> str:
        if self.client.account is None:
            raise RuntimeError("log in first")
        return self.client.account.username

    @property
    def close_code(self) -> int | None:
        """The close code received from the server, once closed."""
        return self.socket.close_code

    async def close(self) -> None:
        """Close the socket (normal closure)."""
        await self.socket.close()

    # Frames ------------------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        """Send one frame as compact JSON."""
        await self.socket.send(json.dumps(frame, separators=(",", ":")))

    async def send_raw(self, data: str | bytes) -> None:
        """Send a text (str) or binary (bytes) frame exactly as given."""
        await self.socket.send(data)

    async def receive(self, *, wait: float | None = None) -> dict[str, Any]:
        """The next frame, oldest kept first; ChatClosed once the socket is closed."""
        if self._backlog:
            return self._backlog.popleft()
        return await self._read(self.wait if wait is None else wait)

    async def wait_for(
        self, kind: str, *, wait: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """The first frame of type ``kind`` whose fields equal ``fields``; others are kept."""
        match = {"type": kind, **fields}
        return await self._take(
            lambda frame: all(frame.get(k) == v for k, v in match.items()),
            self.wait if wait is None else wait,
        )

    async def _take(self, wanted: Callable[[dict[str, Any]], bool], wait: float) -> dict[str, Any]:
        """The first frame ``wanted`` accepts, kept ones first; the others stay kept, in order."""
        for frame in self._backlog:
            if wanted(frame):
                self._backlog.remove(frame)
                return frame
        async with asyncio.timeout(wait):
            while True:
                frame = await self._read(None)
                if wanted(frame):
                    return frame
                self._backlog.append(frame)

    async def _read(self, wait: float | None) -> dict[str, Any]:
        try:
            async with asyncio.timeout(wait):
                text = await self.socket.recv()
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            raise ChatClosed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from None
        frame: dict[str, Any] = json.loads(text)
        self._note(frame)
        return frame

    def _note(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "synced":
            self.in_order = True
            self.cursor = max(self.cursor, int(frame["seq"]))
        elif kind in ("message", "receipt", "ack") and self.in_order:
            self.cursor = max(self.cursor, int(frame["seq"]))
        if kind == "message":
            self.messages.setdefault(frame["id"], frame)

    # The protocol ------------------------------------------------------------------------

    async def sync(self, after: int | None = None) -> list[dict[str, Any]]:
        """Ask for everything after ``after`` (default: the cursor); return the messages and
        receipts until ``synced``. Other frames meanwhile are kept for ``receive``."""
        await self.send_frame({"type": "sync", "after": self.cursor if after is None else after})
        return await self.collect_replay()

    async def collect_replay(self) -> list[dict[str, Any]]:
        """Read a replay up to its ``synced``; keep its messages and receipts in ``replayed``."""
        replayed: list[dict[str, Any]] = []
        async with asyncio.timeout(self.wait):
            while True:
                frame = await self._read(None)
                if frame["type"] == "synced":
                    break
                if frame["type"] in ("message", "receipt"):
                    replayed.append(frame)
                else:
                    self._backlog.append(frame)
        self.replayed = replayed
        return replayed

    async def send_message(
        self, to: str, text: str, *, message_id: str | None = None
    ) -> dict[str, Any]:
        """Encrypt ``text`` for ``to`` (and for my other devices), send it, return the ack.

        Raises ChatError if the server answers with an error frame for this id.
        """
        message_id = message_id or str(uuid.uuid4())
        envelope = await self.seal(to, text, message_id)
        await self.send_frame({"type": "send", "id": message_id, "to": to, "envelope": envelope})
        return await self.wait_ack(message_id)

    async def seal(self, to: str, text: str, message_id: str) -> dict[str, Any]:
        """The envelope of ``text`` from me to ``to`` under ``message_id``."""
        account = self._account()
        keys = await self.keys(to)
        if not keys.may_send:
            raise KeyDirectoryError("key_changed", f"{to}'s verified keys changed")
        return e2e.encrypt_message(
            message_id=message_id,
            sender=account.username,
            recipient=to,
            text=text,
            written_ms=time.time_ns() // 1_000_000,
            sender_identity=account.identity,
            recipient_enc_spki=keys.enc_public_key,
        )

    async def wait_ack(self, message_id: str) -> dict[str, Any]:
        """The ack for ``message_id``; ChatError if an error frame for it comes first."""
        frame = await self._take(
            lambda frame: frame.get("id") == message_id and frame["type"] in ("ack", "error"),
            self.wait,
        )
        return _ack_or_raise(frame)

    async def open(self, frame: dict[str, Any]) -> e2e.Plaintext:
        """Verify and decrypt a ``message`` frame (mine or someone else's)."""
        account = self._account()
        sender = frame["from"]
        mine = sender == account.username
        sign_key = (
            account.identity.sign_public_spki if mine else (await self.keys(sender)).sign_public_key
        )
        return e2e.open_message(
            frame["envelope"],
            message_id=frame["id"],
            sender=sender,
            recipient=frame["to"],
            reader=account.identity,
            sender_sign_spki=sign_key,
            as_sender=mine,
        )

    async def keys(self, username: str) -> VerifiedKeys:
        """A user's keys, verified through the key directory once per connection."""
        if username not in self._keys:
            self._keys[username] = await self.client.fetch_verified_keys(username)
        return self._keys[username]

    async def mark(self, seq: int, status: Literal["delivered", "read"]) -> None:
        """Tell the sender that message ``seq`` was delivered to me or read."""
        await self.send_frame({"type": status, "seq": seq})

    async def typing(self, to: str) -> None:
        """Tell ``to`` that I am typing."""
        await self.send_frame({"type": "typing", "to": to})

    async def ping(self) -> dict[str, Any]:
        """Ping the server; return its pong."""
        await self.send_frame({"type": "ping"})
        return await self.wait_for("pong")

    def _account(self) -> Account:
        if self.client.account is None:
            raise RuntimeError("log in first")
        return self.client.account


def _ack_or_raise(frame: dict[str, Any]) -> dict[str, Any]:
    if frame["type"] == "error":
        raise ChatError(frame)
    return frame
