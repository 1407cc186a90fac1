"""Real accounts, sessions and envelopes for the load, made through ``securechat.client``.

Key material is made once and shared: a few RSA/Ed25519 identities, each with one salt and one
key backup, so creating thousands of accounts costs the server its real work (validation,
argon2, the insert, the session) and costs this process almost nothing. The envelope is sealed
once with the real end-to-end crypto and reused for every message, so the load generator does
not spend its CPU on RSA and the size is realistic (about 1 KiB).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securechat import e2e
from securechat.client import SecureChatClient, registration_body
from tools.bench.procs import Server, ServerSpec

# Every login in flight counts against its address until it succeeds, and past five at once
# from one address logins are throttled (securechat/accounts/views.py): stay under that.
LOGINS_IN_FLIGHT = 4
PASSWORD = "bench horse battery staple"  # noqa: S105 (a throwaway benchmark account)
# Text sized so that the canonical envelope JSON is about 1 KiB with 2048-bit RSA.
TEXT = "The quick brown fox jumps over the lazy dog. " * 5


@dataclass(frozen=True)
class User:
    """A registered account with one live session (its cookie value)."""

    name: str
    cookie: str


@dataclass(frozen=True)
class KeyMaterial:
    """One identity's registration fields and derived keys, shared by many bench accounts."""

    identity: e2e.Identity
    salt: bytes
    iterations: int
    keys: e2e.DerivedKeys
    body: dict[str, Any]


def key_material(count: int, iterations: int) -> list[KeyMaterial]:
    """``count`` identities (2048-bit RSA: generation is slow) ready to register with."""
    result = []
    for _ in range(count):
        identity = e2e.Identity.generate(2048)
        salt = os.urandom(e2e.SALT_BYTES)
        keys = e2e.derive_keys(PASSWORD, salt, iterations, min_iterations=iterations)
        body = registration_body("placeholder", salt, iterations, keys, identity)
        result.append(KeyMaterial(identity, salt, iterations, keys, body))
    return result


def make_envelope(material: KeyMaterial) -> str:
    """One real envelope (AES-GCM, RSA-OAEP twice, Ed25519), as canonical JSON text."""
    envelope = e2e.encrypt_message(
        message_id=str(uuid.uuid4()),
        sender="bench-sender",
        recipient="bench-recipient",
        text=TEXT,
        written_ms=int(time.time() * 1000),
        sender_identity=material.identity,
        recipient_enc_spki=material.identity.enc_public_spki,
    )
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True)


def people(
    spec: ServerSpec, workdir: Path, names: list[str], materials: list[KeyMaterial]
) -> list[tuple[str, str]]:
    """Each user's (name, session cookie), made on a server of ``spec`` whose data directory
    in ``workdir`` the next server there starts from; a bare relay has no accounts (the user is
    named in the URL): empty cookies."""
    if not spec.kind.startswith("ours"):
        return [(name, "") for name in names]
    with Server(spec, workdir) as server:
        sessions = asyncio.run(create_users(server.url, names, materials))
    return [(group[0].name, group[0].cookie) for group in sessions]


async def create_users(
    base_url: str,
    names: list[str],
    materials: list[KeyMaterial],
    *,
    lanes: int = 16,
    sessions_per_user: int = 1,
) -> list[list[User]]:
    """Register and log in every name; return each name's sessions, in order."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(names)):
        queue.put_nowait(index)
    results: list[list[User]] = [[] for _ in names]
    logins = asyncio.Semaphore(LOGINS_IN_FLIGHT)

    async def lane() -> None:
        client = SecureChatClient(base_url, min_iterations=materials[0].iterations)
        try:
            while not queue.empty():
                index = queue.get_nowait()
                material = materials[index % len(materials)]
                results[index] = await _create_one(
                    client, names[index], material, sessions_per_user, logins
                )
        finally:
            await client.close()

    await asyncio.gather(*(lane() for _ in range(lanes)))
    return results


async def _create_one(
    client: SecureChatClient,
    name: str,
    material: KeyMaterial,
    sessions: int,
    logins: asyncio.Semaphore,
) -> list[User]:
    client.session_cookie = None
    await client.call("POST", "/api/v1/register", {**material.body, "username": name})
    users: list[User] = []
    for _ in range(sessions):
        client.session_cookie = None
        async with logins:
            await login_with_keys(client, name, material)
        if client.session_cookie is None:
            raise RuntimeError(f"{name}: the login answered without a session cookie")
        users.append(User(name, client.session_cookie))
    return users


async def login_with_keys(client: SecureChatClient, name: str, material: KeyMaterial) -> None:
    """The browser's login (prelogin, then login) with the keys already derived.

    ``SecureChatClient.login`` would also run PBKDF2 and load the private keys from the backup:
    client-side work that would make this process, not the server, the thing measured.
    """
    await client.prelogin(name)
    await client.call(
        "POST",
        "/api/v1/login",
        {"username": name, "auth_key": e2e.b64encode(material.keys.auth_key)},
    )
