"""Who is online in a cluster: each node's lease and its users' socket counts, in Redis.

Each node keeps, under its own id (chat/service.py ``node_id``):

- ``securechat:node:<id>`` - its lease, a key that expires ``node_lease`` seconds after the
  node last refreshed it (every third of that);
- ``securechat:node:<id>:users`` - a hash, user -> that user's sockets on the node, written
  at each user's first and last socket; it outlives the lease (twice as long), so that a
  surviving node can read who was on a dead one and announce them offline;
- its id in the set ``securechat:nodes``.

A user is online when a node whose lease is alive holds them. So a node that is SIGKILLed
takes its users offline when its lease runs out (``node_lease``, 15 s by default), and the
first live node to find the lease gone reaps it: in one Lua script (atomic, so two reapers
never both take a node, and a node refreshing at that moment is either reaped whole or not at
all) it removes the id from the set, reads the dead node's users and deletes its hash; the
users go to presence, which announces each one offline unless another node holds them, and
to the resync, which checks every local socket (chat/cluster.ChatCluster.reaped). Redis restarting loses all of it: a node
finds its lease missing at the next refresh and writes its users again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Final, cast

from securechat.cluster.redis import RedisDown, RedisLink, as_text, stop_if_cancelled
from securechat.runtime import cancel_and_wait

log = logging.getLogger(__name__)

NODES_KEY: Final = "securechat:nodes"
NODE_PREFIX: Final = "securechat:node:"

# KEYS: the node set. ARGV: this node's id, the node key prefix. Reaps every other node whose
# lease key is gone: removes it from the set, reads and deletes its users hash. Returns a flat
# list: per node reaped, its id, how many users, then those users. The lease and users keys
# are built here from the ids in the set (so the script is for one Redis, not Redis Cluster).
_REAP: Final = """
local reaped = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if node ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. node) == 0 then
    redis.call('SREM', KEYS[1], node)
    local users = redis.call('HKEYS', ARGV[2] .. node .. ':users')
    redis.call('DEL', ARGV[2] .. node .. ':users')
    table.insert(reaped, node)
    table.insert(reaped, #users)
    for _, user in ipairs(users) do table.insert(reaped, user) end
  end
end
return reaped
"""


def lease_key(node_id: str) -> str:
    return NODE_PREFIX + node_id


def users_key(node_id: str) -> str:
    return f"{NODE_PREFIX}{node_id}:users"


class NodeLeases:
    """This node's lease and user counts in Redis; presence across every live node."""

    def __init__(
        self,
        link: RedisLink,
        node_id: str,
        lease: float,
        local_counts: Callable[[], Mapping[str, int]],
        on_reaped: Callable[[Iterable[str]], None] = lambda users: None,
    ) -> None:
        self.link = link
        self.node_id = node_id
        self.lease_ms = max(1, round(lease * 1000))
        self.refresh_every = lease / 3
        self._local_counts = local_counts
        self.on_reaped = on_reaped
        self._task: asyncio.Task[None] | None = None
        self._stale = True  # the hash is not known to match the hub: write it whole
        self._records = 0  # record() calls so far
        self._reap = link.client.register_script(_REAP)
        self.reaped = 0

    def mark_stale(self) -> None:
        """Have the next refresh write this node's users whole (Redis may have lost them)."""
        self._stale = True

    # The presence directory (chat/presence.py) -------------------------------------------

    async def record(self, user: str, sockets: int) -> None:
        """Write how many sockets ``user`` holds on this node (0 removes the user); skipped
        while Redis is down (the whole hash is written again when the lease is retaken)."""

        async def write() -> Any:
            async with self.link.client.pipeline(transaction=True) as pipe:
                key = users_key(self.node_id)
                if sockets:
                    pipe.hset(key, user, sockets)
                else:
                    pipe.hdel(key, user)
                pipe.pexpire(key, 2 * self.lease_ms)
                return await pipe.execute()

        self._records += 1
        try:
            await self.link.call(write, "presence record")
        except RedisDown:
            self._stale = True  # the next refresh writes the whole hash again

    async def online(self, users: Sequence[str]) -> set[str] | None:
        """Which of ``users`` a live node holds; None while Redis does not answer."""
        try:
            return await self.holders(users)
        except RedisDown:
            return None

    async def holders(self, users: Sequence[str]) -> set[str]:
        """Which of ``users`` a live node holds (RedisDown if Redis does not answer)."""
        if not users:
            return set()
        nodes = await self.live_nodes()

        async def read() -> list[Any]:
            async with self.link.client.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.hmget(users_key(node), list(users))
                return await pipe.execute()

        found: set[str] = set()
        for counts in await self.link.call(read, "presence read"):
            found.update(user for user, count in zip(users, counts, strict=True) if count)
        return found

    async def live_nodes(self) -> list[str]:
        """The ids of the nodes whose lease is alive, this one included once it has one."""

        async def read() -> list[str]:
            nodes = sorted(as_text(node) for node in await self.link.client.smembers(NODES_KEY))
            if not nodes:
                return []
            alive = await self.link.client.exists(*(lease_key(node) for node in nodes))
            if alive == len(nodes):
                return nodes
            async with self.link.client.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.exists(lease_key(node))
                flags = await pipe.execute()
            return [node for node, flag in zip(nodes, flags, strict=True) if flag]

        return await self.link.call(read, "live nodes")

    # The lease ------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Extend the lease; if it was gone (Redis restarted, or this node was taken for
        dead) or a write was missed, take it again and write every local user anew."""
        key = lease_key(self.node_id)

        async def extend() -> list[Any]:
            # The users hash and the node's place in the set live as long as the lease: a
            # quiet node (no socket opened or closed) keeps its users online, and a node a
            # reaper took for dead while it stalled puts itself back.
            async with self.link.client.pipeline(transaction=True) as pipe:
                pipe.pexpire(key, self.lease_ms)
                pipe.pexpire(users_key(self.node_id), 2 * self.lease_ms)
                pipe.sadd(NODES_KEY, self.node_id)
                result: list[Any] = await pipe.execute()
                return result

        lease_kept, users_kept, _ = await self.link.call(extend, "lease")
        users_lost = not users_kept and bool(self._local_counts())
        if lease_kept and not users_lost and not self._stale:
            return
        self._stale = False
        records = self._records
        counts = dict(self._local_counts())

        async def rewrite() -> Any:
            async with self.link.client.pipeline(transaction=True) as pipe:
                pipe.set(key, "1", px=self.lease_ms)
                pipe.sadd(NODES_KEY, self.node_id)
                pipe.delete(users_key(self.node_id))
                if counts:
                    pipe.hset(users_key(self.node_id), mapping=cast("Mapping[Any, Any]", counts))
                    pipe.pexpire(users_key(self.node_id), 2 * self.lease_ms)
                return await pipe.execute()

        try:
            await self.link.call(rewrite, "lease")
        except RedisDown:
            self._stale = True
            raise
        if self._records != records:
            self._stale = True  # a record may have landed before the snapshot: again next time

    async def reap(self) -> list[str]:
        """Remove the nodes whose lease ran out; the users they held (for the reaper only:
        the script is atomic, so of nodes reaping together one takes each dead node)."""
        reply = await self.link.call(
            partial(self._reap, keys=[NODES_KEY], args=[self.node_id, NODE_PREFIX]), "reap"
        )
        users: list[str] = []
        index = 0
        while index < len(reply):
            node, count = as_text(reply[index]), int(reply[index + 1])
            held = [as_text(user) for user in reply[index + 2 : index + 2 + count]]
            index += 2 + count
            users.extend(held)
            self.reaped += 1
            log.warning("node %s lost its lease; %d users were on it", node, len(held))
        return users

    async def leave(self) -> None:
        """Give the lease up at shutdown: this node's users go offline at once."""

        async def drop() -> Any:
            async with self.link.client.pipeline(transaction=True) as pipe:
                pipe.srem(NODES_KEY, self.node_id)
                pipe.delete(lease_key(self.node_id), users_key(self.node_id))
                return await pipe.execute()

        with contextlib.suppress(RedisDown):  # else the lease runs out by itself
            await self.link.call(drop, "leave")

    def start(self) -> None:
        """Start refreshing the lease and reaping dead nodes."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cluster-lease")

    async def stop(self) -> None:
        """Stop refreshing; the lease is given up."""
        await cancel_and_wait(self._task)
        self._task = None
        await self.leave()

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
                dead_users = await self.reap()
                if dead_users:
                    self.on_reaped(dead_users)
            except RedisDown:
                pass  # the link logs it; the lease is taken again when Redis answers
            except Exception:
                log.exception("refreshing the node lease failed")
            stop_if_cancelled()
            await asyncio.sleep(self.refresh_every)


__all__ = ["NODES_KEY", "NODE_PREFIX", "NodeLeases", "lease_key", "users_key"]
