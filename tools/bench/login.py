"""The login scenario: logins per second against a server with the DEFAULT argon2id parameters.

Nothing is turned down here: the server runs with the default configuration, and each account
is registered with the default 600,000 PBKDF2 iterations. The client derives its keys once per
account (PBKDF2 is the browser's work, not the server's); every login then is the browser's two
requests, ``prelogin`` and ``login``, so what is measured is the server's cost: argon2id verify
(in worker threads, at most ``argon2_max_concurrent`` at once), the session insert, the cookie.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, Type

from securechat import e2e
from securechat.client import ClientError, SecureChatClient, registration_body
from securechat.config import Config
from tools.bench.accounts import PASSWORD, KeyMaterial, login_with_keys
from tools.bench.live import percentile
from tools.bench.procs import Server

_PARAMS = re.compile(r"\$argon2(?P<type>id|i|d)\$v=\d+\$m=(?P<m>\d+),t=(?P<t>\d+),p=(?P<p>\d+)\$")


def run_login(
    server: Server,
    identity: e2e.Identity,
    *,
    users: int,
    lanes: int,
    seconds: float,
    hash_samples: int = 3,
) -> dict[str, Any]:
    """Register ``users`` accounts, then log in from ``lanes`` clients for ``seconds``."""
    defaults = Config()
    materials = [_material(identity, defaults.kdf_min_iterations) for _ in range(users)]
    names = [f"login-{index:03d}" for index in range(users)]
    result = asyncio.run(_run(server.url, names, materials, lanes, seconds))
    result.update(
        server=server.spec.name,
        argon2=stored_parameters(server.data_dir / "data" / "securechat.db"),
        argon2_max_concurrent=defaults.argon2_max_concurrent,
        argon2_hash_cpu_ms=round(hash_cpu_ms(defaults, hash_samples), 1),
        pbkdf2_iterations=defaults.kdf_min_iterations,
    )
    return result


def _material(identity: e2e.Identity, iterations: int) -> KeyMaterial:
    import os

    salt = os.urandom(e2e.SALT_BYTES)
    keys = e2e.derive_keys(PASSWORD, salt, iterations)
    return KeyMaterial(
        identity, salt, iterations, keys, registration_body("x", salt, iterations, keys, identity)
    )


async def _run(
    url: str, names: list[str], materials: list[KeyMaterial], lanes: int, seconds: float
) -> dict[str, Any]:
    async with SecureChatClient(url) as client:
        for name, material in zip(names, materials, strict=True):
            await client.call("POST", "/api/v1/register", {**material.body, "username": name})
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    deadline = 0.0

    async def lane(index: int) -> None:
        name, material = names[index % len(names)], materials[index % len(names)]
        async with SecureChatClient(url) as client:
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    await login_with_keys(client, name, material)
                except ClientError as error:
                    failures[f"{error.status} {error.code}"] += 1
                    await asyncio.sleep(float(error.body.get("retry_after", 0.1)))
                    continue
                latencies.append((time.monotonic() - started) * 1000)

    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(lane(i) for i in range(lanes)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "logins": len(latencies),
        "failures": dict(failures),
        "logins_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "lanes": lanes,
    }


def stored_parameters(database: Path) -> dict[str, Any]:
    """The argon2 parameters actually used, read from a stored hash (evidence, not config)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        row = connection.execute("SELECT auth_hash FROM users LIMIT 1").fetchone()
    match = _PARAMS.match(row[0]) if row else None
    if match is None:
        return {}
    return {
        "type": "argon2" + match["type"],
        "memory_kib": int(match["m"]),
        "time_cost": int(match["t"]),
        "parallelism": int(match["p"]),
    }


def hash_cpu_ms(config: Config, samples: int = 3) -> float:
    """CPU time (all threads) of one argon2id hash with the configured parameters, here."""
    hasher = PasswordHasher(
        time_cost=config.argon2_time_cost,
        memory_cost=config.argon2_memory_kib,
        parallelism=config.argon2_parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )
    cpu0 = time.process_time()
    for _ in range(samples):
        hasher.hash(b"x" * 32)
    return (time.process_time() - cpu0) / samples * 1000
