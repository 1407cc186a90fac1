"""argon2id hashing of the client's ``auth_key``, off the event loop and bounded.

The server never receives the password: the browser derives ``auth_key`` from it with
PBKDF2 and HKDF. The server still hashes ``auth_key`` with argon2id (OWASP Password Storage
Cheat Sheet) so a stolen database cannot be replayed as credentials. Hashing runs in worker
threads, at most ``max_concurrent`` at once, so a login flood cannot exhaust memory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import ARGON2_VERSION

from securechat.errors import ServerBusy


@dataclass(frozen=True)
class VerifyResult:
    """Whether the key matched, and a new hash if the parameters have changed since."""

    ok: bool
    new_hash: str | None = None


class AuthKeyHasher:
    """Hash and verify ``auth_key`` values with argon2id."""

    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        max_concurrent: int,
        max_waiting: int = 32,
    ):
        self.hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_queued = max_concurrent + max_waiting
        self._queued = 0
        # What an unknown user's login is verified against: the shape of a stored hash with
        # these parameters, built without running argon2, so that every such login costs one
        # run, the first one included, exactly as a known user's does.
        self._decoy_hash = _decoy_hash(self.hasher)
        # argon2 computations done so far (metrics; tests use it to prove none ran).
        self.operations = 0

    @property
    def parameters(self) -> dict[str, int | str]:
        """The argon2 parameters, for the health page and the benchmark report."""
        return {
            "type": "argon2id",
            "time_cost": self.hasher.time_cost,
            "memory_kib": self.hasher.memory_cost,
            "parallelism": self.hasher.parallelism,
        }

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """A turn at argon2; ServerBusy when too many requests already wait for one."""
        if self._queued >= self._max_queued:
            raise ServerBusy()
        self._queued += 1
        try:
            async with self._slots:
                self.operations += 1
                yield
        finally:
            self._queued -= 1

    async def hash(self, auth_key: bytes) -> str:
        """A fresh argon2id hash of ``auth_key``."""
        async with self._slot():
            return await asyncio.to_thread(self.hasher.hash, auth_key)

    async def verify(self, stored_hash: str, auth_key: bytes) -> VerifyResult:
        """Check ``auth_key`` against ``stored_hash``; rehash if the parameters changed."""
        async with self._slot():
            ok = await asyncio.to_thread(self._verify, stored_hash, auth_key)
            if not ok:
                return VerifyResult(ok=False)
            if self.hasher.check_needs_rehash(stored_hash):
                new_hash = await asyncio.to_thread(self.hasher.hash, auth_key)
                return VerifyResult(ok=True, new_hash=new_hash)
            return VerifyResult(ok=True)

    async def waste_time(self, auth_key: bytes) -> None:
        """Do the work of a verification for an unknown user, so timing reveals nothing."""
        await self.verify(self._decoy_hash, auth_key)

    def _verify(self, stored_hash: str, auth_key: bytes) -> bool:
        try:
            return self.hasher.verify(stored_hash, auth_key)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def _decoy_hash(hasher: PasswordHasher) -> str:
    """An argon2id hash string in ``hasher``'s parameters, of random salt and digest bytes:
    it verifies nothing, and verifying against it costs what verifying a real one does."""
    salt, digest = (
        base64.b64encode(secrets.token_bytes(n)).rstrip(b"=").decode("ascii")
        for n in (hasher.salt_len, hasher.hash_len)
    )
    return (
        f"$argon2id$v={ARGON2_VERSION}$m={hasher.memory_cost},t={hasher.time_cost},"
        f"p={hasher.parallelism}${salt}${digest}"
    )
