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
from dataclasses import dataclass, field, replace

from securechat.accounts import validation
from securechat.accounts.devices import Device, DeviceTokens
from securechat.accounts.hashing import AuthKeyHasher
from securechat.accounts.throttle import Lockouts, SharedAttempts, Throttle
from securechat.config import Config
from securechat.errors import (
    AccountDisabled,
    InvalidCredentials,
    InvalidField,
    InvalidRecoveryKey,
    NotAuthenticated,
    NotFound,
    RecoveryKeyUsed,
    Throttled,
    UsernameTaken,
)
from securechat.runtime import WALL_CLOCK, Clock
from securechat.store import (
    NewKeys,
    NewPassword,
    NewUser,
    RecoveryRecord,
    Session,
    Store,
    User,
)

# Public session ids are 12 characters (9 random bytes); anything this long is not one.
PUBLIC_ID_MAX = 64
# Recovery attempts are counted as logins are, under names no username can take (":" is not
# allowed in one), so guessing a recovery key does not spend the password's budget.
RECOVERY_THROTTLE_PREFIX = "recover:"


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


@dataclass(frozen=True)
class PasswordMaterial:
    """A new password's material from the client, checked: ``auth_key`` is hashed, never
    stored, and ``key_backup`` is the backup re-wrapped under the new ``wrap_key``."""

    salt: bytes
    iterations: int
    auth_key: bytes = field(repr=False)
    key_backup: str


@dataclass(frozen=True)
class RecoveryMaterial:
    """A recovery key's material from the client: the ``recovery_auth`` it derives (hashed,
    never stored) and the second copy of the key backup, wrapped under its other key."""

    recovery_auth: bytes = field(repr=False)
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

    async def check_available(self, username: str) -> None:
        """Raise UsernameTaken if ``username`` has an account or is held in quarantine, as
        :meth:`register` would (a race between the check and the registration is still settled
        by the store's UNIQUE index)."""
        if await self.store.accounts.user_by_name(username) is not None:
            raise UsernameTaken()
        if await self.store.lifecycle.quarantine_until(username, self.clock.now_ms()) is not None:
            raise UsernameTaken()

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
        # A rehash is a compare and set: a password change committed since the read wins, and
        # this login then fails at the session insert, which checks the hash it proved.
        if result.new_hash is not None and await self.store.accounts.update_auth_hash(
            user.id, user.auth_hash, result.new_hash
        ):
            user = replace(user, auth_hash=result.new_hash)  # what the session insert checks
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

    # --- password change, recovery key, key reset (issue 12, items 1-2) -------------------

    async def change_password(
        self,
        session: Session,
        old_auth_key: bytes,
        new: PasswordMaterial,
        address: str,
        device_token: str | None = None,
    ) -> list[str]:
        """Check the old ``auth_key`` (counted as a login), then replace salt, iterations,
        hash and key backup at once and end every other session; return the ids ended."""
        await self._prove_password(session, old_auth_key, address, device_token)
        user = await self._user(session.username)
        password = await self._new_password(new)
        ended = await self.store.accounts.change_password(
            user.id, user.auth_hash, password, session.id, self.clock.now_ms()
        )
        if ended is None:  # another change won the race since the check above
            raise InvalidCredentials("The password was changed meanwhile. Try again.")
        return ended

    async def set_recovery_key(
        self,
        session: Session,
        auth_key: bytes,
        recovery: RecoveryMaterial,
        address: str,
        device_token: str | None = None,
    ) -> None:
        """Check the password's ``auth_key``, then set (or replace) the recovery key."""
        await self._prove_password(session, auth_key, address, device_token)
        auth_hash = await self.hasher.hash(recovery.recovery_auth)
        await self.store.accounts.set_recovery(
            session.user_id, auth_hash, recovery.key_backup, self.clock.now_ms()
        )

    async def recovery_backup(self, username: str, recovery_auth: bytes, address: str) -> str:
        """The recovery-wrapped key backup, once ``recovery_auth`` proves the recovery key
        (counted like a login); InvalidRecoveryKey or RecoveryKeyUsed otherwise."""
        _, record = await self._prove_recovery(username, recovery_auth, address)
        return record.key_backup

    async def recover(
        self,
        username: str,
        recovery_auth: bytes,
        new: PasswordMaterial,
        new_recovery: RecoveryMaterial,
        address: str,
    ) -> list[str]:
        """Use the recovery key: a new password and a new recovery key at once, every session
        ended (their ids returned). The used key never works again."""
        if hmac.compare_digest(recovery_auth, new_recovery.recovery_auth):
            raise InvalidField("new_recovery_auth", "new_recovery_auth must be a new recovery key")
        user, record = await self._prove_recovery(username, recovery_auth, address)
        password = await self._new_password(new)
        new_hash = await self.hasher.hash(new_recovery.recovery_auth)
        ended = await self.store.accounts.recover(
            user.id,
            record.auth_hash,
            password,
            (new_hash, new_recovery.key_backup),
            self.clock.now_ms(),
        )
        if ended is None:  # a recovery racing this one used the key first
            raise RecoveryKeyUsed()
        return ended

    async def reset_own_keys(
        self,
        session: Session,
        auth_key: bytes,
        keys: NewKeys,
        address: str,
        device_token: str | None = None,
    ) -> list[str]:
        """Check the password's ``auth_key``, then :meth:`reset_keys` keeping this session."""
        await self._prove_password(session, auth_key, address, device_token)
        return await self.reset_keys(session.username, keys, keep_session_id=session.id)

    async def reset_keys(
        self,
        username: str,
        keys: NewKeys,
        password: PasswordMaterial | None = None,
        keep_session_id: str | None = None,
    ) -> list[str]:
        """Publish new keys for ``username`` (and with ``password``, a new password): the key
        directory logs the change, the recovery key goes (it opens the old keys only), and
        every session but ``keep_session_id`` ends; return the ids ended. NotFound if there
        is no such user. The caller has proved the account (the password, or an operator)."""
        stored = None if password is None else await self._new_password(password)
        return await self.store.accounts.reset_keys(
            username, keys, stored, keep_session_id, self.clock.now_ms()
        )

    async def recovery_key_set_at(self, user_id: int) -> int | None:
        """When the user's recovery key was set (ms), or None if there is none."""
        record = await self.store.accounts.recovery(user_id)
        return None if record is None else record.created_at

    async def _prove_password(
        self, session: Session, auth_key: bytes, address: str, device_token: str | None
    ) -> None:
        """InvalidCredentials unless ``auth_key`` is the session user's, counted as a login."""
        try:
            user = await self.login(session.username, auth_key, address, device_token)
        except InvalidCredentials:
            raise InvalidCredentials("Wrong password.") from None
        if user.id != session.user_id:  # the name was deleted and registered again
            raise InvalidCredentials("Wrong password.")

    async def _prove_recovery(
        self, username: str, recovery_auth: bytes, address: str
    ) -> tuple[User, RecoveryRecord]:
        """The user and recovery key ``recovery_auth`` proves; its attempts are throttled as
        logins are, on the name's own budget (``recover:`` keys) and the address's."""
        attempt = await self._count_login(RECOVERY_THROTTLE_PREFIX + username, address, None)
        proved = await self._verify_recovery(username, recovery_auth)
        await self._take_back(attempt)
        return proved

    async def _verify_recovery(
        self, username: str, recovery_auth: bytes
    ) -> tuple[User, RecoveryRecord]:
        # Every refusal costs two argon2 verifications (a decoy stands in for a missing user,
        # key or previous key), so timing tells no one whether the account exists, has a
        # recovery key or has used one.
        user = await self.store.accounts.user_by_name(username)
        record = None if user is None else await self.store.accounts.recovery(user.id)
        if user is None or record is None:
            await self.hasher.waste_time(recovery_auth)
            await self.hasher.waste_time(recovery_auth)
            raise InvalidRecoveryKey()
        if (await self.hasher.verify(record.auth_hash, recovery_auth)).ok:
            return user, record
        # Only someone who held the old key gets told it was used; others learn nothing more.
        previous = record.previous_hash
        if previous is None:
            await self.hasher.waste_time(recovery_auth)
        elif (await self.hasher.verify(previous, recovery_auth)).ok:
            raise RecoveryKeyUsed()
        raise InvalidRecoveryKey()

    async def _user(self, username: str) -> User:
        user = await self.store.accounts.user_by_name(username)
        if user is None:
            raise NotAuthenticated()
        return user

    async def _new_password(self, new: PasswordMaterial) -> NewPassword:
        """What the store keeps of a new password: its ``auth_key`` hashed with argon2id."""
        auth_hash = await self.hasher.hash(new.auth_key)
        return NewPassword(new.salt, new.iterations, auth_hash, new.key_backup)


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


__all__ = [
    "PUBLIC_ID_MAX",
    "Accounts",
    "KdfParameters",
    "PasswordMaterial",
    "RecoveryMaterial",
    "Registration",
]
