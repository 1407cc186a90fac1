"""The account service: what the accounts API decides, between parsing a request and answering it.

The views (accounts/views.py) parse requests and answer JSON; ``Accounts`` decides: the salt
to give a name that has no account, the throttles, argon2 verification and rehashing, which
sessions a revocation ends; the store persists. It needs no request context: the client's
address, the caller's session and device token come in as arguments; the session cookie stays
with accounts/sessions.py, the device cookie with the views.

Logins are throttled per client address, and per username for clients without a device token
for it (OWASP's "untrusted clients"). A client that presents a valid one (accounts/devices.py)
is counted against that device's own budget instead, and is not refused because guessers have
used up the name's: nobody who merely knows a name can lock its owner's browsers out. A device
that uses up its own budget is locked out, alone.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from securechat.accounts import validation
from securechat.accounts.devices import Device, DeviceTokens
from securechat.accounts.hashing import AuthKeyHasher
from securechat.accounts.throttle import Lockouts, SharedAttempts, Throttle
from securechat.config import Config
from securechat.errors import AccountDisabled, InvalidCredentials, NotFound, Throttled
from securechat.runtime import WALL_CLOCK, Clock
from securechat.store import NewUser, Session, Store, User

# Public session ids are 12 characters (9 random bytes); anything this long is not one.
PUBLIC_ID_MAX = 64


@dataclass(frozen=True)
class KdfParameters:
    """What the browser derives ``auth_key`` with: the PBKDF2 salt and iterations."""

    salt: bytes
    iterations: int


@dataclass(frozen=True)
class Registration:
    """A registration whose fields have all been checked. ``auth_key`` is hashed, never stored."""

    username: str
    salt: bytes
    iterations: int
    auth_key: bytes = field(repr=False)
    enc_public_key: bytes
    sign_public_key: bytes
    key_backup: str


@dataclass
class Accounts:
    """Pre-login, registration, login and the revocation of sessions, decided over the store."""

    config: Config
    store: Store
    clock: Clock
    hasher: AuthKeyHasher
    decoy_salt_key: bytes = field(repr=False)
    devices: DeviceTokens
    # Separate tables, so a flood of addresses cannot push a username's count out.
    login_user_throttle: Throttle
    login_address_throttle: Throttle
    # Failures of devices, by their token's nonce; one that reaches its cap moves to the
    # lockout list, which only such devices reach, so flooding the failure table with fresh
    # devices' first failures cannot free it.
    login_device_throttle: Throttle
    device_lockouts: Lockouts
    registration_throttle: Throttle
    # In a cluster, the attempts are counted there (cluster/limits.py), and in the tables
    # above only while it cannot be reached.
    shared: SharedAttempts | None = None

    @classmethod
    def create(
        cls,
        config: Config,
        store: Store,
        decoy_salt_key: bytes,
        clock: Clock = WALL_CLOCK,
        *,
        device_token_key: bytes,
        shared: SharedAttempts | None = None,
    ) -> Accounts:
        """The accounts of one process over ``store``, with its hasher and throttles (counted
        in ``shared`` when given, in this process's tables while it cannot be reached)."""
        return cls(
            config=config,
            store=store,
            clock=clock,
            hasher=AuthKeyHasher(
                time_cost=config.argon2_time_cost,
                memory_kib=config.argon2_memory_kib,
                parallelism=config.argon2_parallelism,
                max_concurrent=config.argon2_max_concurrent,
                max_waiting=config.argon2_max_waiting,
            ),
            decoy_salt_key=decoy_salt_key,
            devices=DeviceTokens(device_token_key, config.device_cookie_max_age),
            login_user_throttle=_login_throttle(config, config.login_failures_max),
            login_address_throttle=_login_throttle(config, config.login_failures_max),
            login_device_throttle=_login_throttle(config, config.device_failures_max),
            device_lockouts=Lockouts(
                duration=config.login_failure_window, max_keys=config.throttle_table_max
            ),
            registration_throttle=Throttle(
                max_failures=config.registrations_per_address,
                window=config.registration_window,
                max_keys=config.throttle_table_max,
                free_failures=config.registrations_per_address,
            ),
            shared=shared,
        )

    async def prelogin(self, username: str) -> KdfParameters:
        """The salt and iterations to derive ``auth_key`` with; a stable decoy for unknown names."""
        user = await self.store.accounts.user_by_name(username)
        if user is not None:
            return KdfParameters(user.salt, user.iterations)
        return KdfParameters(self._decoy_salt(username), self.config.kdf_min_iterations)

    def _decoy_salt(self, username: str) -> bytes:
        """A salt for a name that has no account: stable, and indistinguishable from a real one."""
        message = b"prelogin\x00" + username.encode()
        digest = hmac.new(self.decoy_salt_key, message, hashlib.sha256).digest()
        return digest[: validation.SALT_BYTES]

    def count_registration(self, address: str) -> None:
        """Refuse (Throttled) if ``address`` has registered too often, else count this attempt.

        Every attempt counts, valid or not: call it before reading the request's body.
        """
        key = "register:" + address
        now = self.clock.monotonic()
        _refuse_if_throttled(self.registration_throttle, key, now)
        self.registration_throttle.record_attempt(key, now)

    async def admit_registration(self, address: str) -> None:
        """:meth:`count_registration` over the whole cluster when its limits are shared.

        Without them nothing here waits, so the attempt is still counted before the caller's
        first await; with them the count is one atomic script."""
        if self.shared is None or not await self.shared.count_registration(address):
            self.count_registration(address)

    async def register(self, registration: Registration) -> None:
        """Hash ``auth_key`` with argon2id and store the account (UsernameTaken if it exists)."""
        auth_hash = await self.hasher.hash(registration.auth_key)
        new_user = NewUser(
            username=registration.username,
            salt=registration.salt,
            iterations=registration.iterations,
            auth_hash=auth_hash,
            enc_public_key=registration.enc_public_key,
            sign_public_key=registration.sign_public_key,
            key_backup=registration.key_backup,
        )
        await self.store.accounts.add_user(new_user, self.clock.now_ms())

    async def login(
        self, username: str, auth_key: bytes, address: str, device_token: str | None = None
    ) -> User:
        """The user ``auth_key`` proves to be, or Throttled, or InvalidCredentials (an unknown
        name and a wrong key alike). A valid ``device_token`` for ``username`` puts the attempt
        on that device's budget instead of the name's."""
        device = self._device(username, device_token)
        attempt = await self._count_login(username, address, device)
        try:
            user = await self._verify(username, auth_key)
        except InvalidCredentials:
            if device is not None:
                await self._lock_out_if_spent(device, attempt)
            raise
        await self._take_back(attempt)
        # Told only to whoever proved the password: nobody else learns an account is disabled.
        if await self.store.lifecycle.is_disabled(user.id):
            raise AccountDisabled()
        return user

    def issue_device_token(self, user: User) -> str:
        """A fresh device token for the browser that has just logged in as ``user``."""
        return self.devices.issue(user.username, self.clock.now_ms())

    def _device(self, username: str, token: str | None) -> Device | None:
        """The device ``token`` stands for, if it is valid for ``username``; else None."""
        return None if token is None else self.devices.read(token, username, self.clock.now_ms())

    async def _verify(self, username: str, auth_key: bytes) -> User:
        """The user ``auth_key`` proves to be, or InvalidCredentials. Rehashes the key if the
        argon2 parameters have changed."""
        user = await self.store.accounts.user_by_name(username)
        if user is None:
            await self.hasher.waste_time(auth_key)
            raise InvalidCredentials()
        result = await self.hasher.verify(user.auth_hash, auth_key)
        if not result.ok:
            raise InvalidCredentials()
        if result.new_hash is not None:
            await self.store.accounts.update_auth_hash(user.id, result.new_hash)
        return user

    async def _count_login(self, username: str, address: str, device: Device | None) -> _Attempt:
        """Count the attempt in the cluster's shared counts if there are any and they answer,
        else in this process's tables (without waiting: before the login's first await)."""
        if self.shared is not None:
            nonce = None if device is None else device.nonce
            shared_id = await self.shared.count_login(username, address, nonce)
            if shared_id is not None:
                return _Attempt(username, address, device, 0.0, shared_id)
        return _Attempt(username, address, device, self._count_here(username, address, device))

    def _count_here(self, username: str, address: str, device: Device | None) -> float:
        """Refuse a throttled address, or name (device, for a client that has one), else count
        this attempt as a failure of both; return when it was counted (a success takes that
        count back)."""
        # Counted as a failure from the start (before the login's first await), so guesses
        # sent all at once are throttled like guesses sent one by one.
        started = self.clock.monotonic()
        own = (self.login_user_throttle, username)
        if device is not None:
            _refuse_if_throttled(self.device_lockouts, device.nonce, started)
            own = (self.login_device_throttle, device.nonce)
        attempts = (own, (self.login_address_throttle, address))
        for throttle, key in attempts:
            _refuse_if_throttled(throttle, key, started)
        for throttle, key in attempts:
            throttle.record_failure(key, started)
        return started

    async def _take_back(self, attempt: _Attempt) -> None:
        """Forget a successful attempt's count, where it was counted."""
        device = attempt.device
        if attempt.shared_id is not None and self.shared is not None:
            nonce = None if device is None else device.nonce
            await self.shared.take_back(attempt.username, attempt.address, nonce, attempt.shared_id)
            return
        # The name's shared count is left alone after a device's login: guessers keep their
        # lockout while the owner is let in.
        if device is None:
            self.login_user_throttle.reset(attempt.username)
        else:
            self.login_device_throttle.reset(device.nonce)
        self.login_address_throttle.refund(attempt.address, attempt.started)

    async def _lock_out_if_spent(self, device: Device, attempt: _Attempt) -> None:
        """Move a device that has failed as often as its budget allows to the lockout list."""
        shared = None if attempt.shared_id is None else self.shared
        if shared is not None and await shared.lock_out_if_spent(device.nonce) is not None:
            return
        now, throttle = self.clock.monotonic(), self.login_device_throttle
        if throttle.failures(device.nonce, now) >= self.config.device_failures_max:
            throttle.reset(device.nonce)
            self.device_lockouts.lock(device.nonce, now)

    async def live_sessions(self, user_id: int) -> list[Session]:
        """The user's sessions neither revoked nor expired nor idle too long, newest first."""
        idle_ms = self.config.session_idle_timeout * 1000
        return await self.store.sessions.live_sessions(user_id, self.clock.now_ms(), idle_ms)

    async def revoke_other_sessions(self, current: Session) -> list[str]:
        """End every live session of ``current``'s user but ``current``; return the ids ended."""
        sessions = self.store.sessions
        return await sessions.revoke_others(current.user_id, current.id, self.clock.now_ms())

    async def revoke_session(self, current: Session, public_id: str) -> str:
        """End the live session of ``current``'s user with this public id (``current`` itself
        included); return its id, or NotFound if the user has no such live session."""
        if len(public_id) > PUBLIC_ID_MAX:
            raise NotFound()
        now = self.clock.now_ms()
        ended = await self.store.sessions.revoke_by_public_id(current.user_id, public_id, now)
        if ended is None:
            raise NotFound("No such session.")
        return ended


@dataclass(frozen=True)
class _Attempt:
    """A login attempt counted: in this process's tables at ``started``, or in the cluster's
    shared counts as ``shared_id``."""

    username: str
    address: str
    device: Device | None
    started: float
    shared_id: str | None = None


def _login_throttle(config: Config, max_failures: int) -> Throttle:
    """Failed logins per key (a username, an address, a device): one table each."""
    return Throttle(
        max_failures=max_failures,
        window=config.login_failure_window,
        max_keys=config.throttle_table_max,
    )


def _refuse_if_throttled(throttle: Throttle | Lockouts, key: str, now: float) -> None:
    wait = throttle.retry_after(key, now)
    if wait > 0:
        raise Throttled(wait)


__all__ = ["PUBLIC_ID_MAX", "Accounts", "KdfParameters", "Registration"]
