"""Password change and recovery on a real cluster (tests/test_cluster.py's nodes over one
PostgreSQL and one Redis): the sessions they end have their sockets closed on the other node."""

from __future__ import annotations

import pytest

from securechat.client import change_password, recover, set_recovery_key
from tests.chatkit import PASSWORD
from tests.conftest import FAST_ITERATIONS
from tests.test_cluster import Nodes, _closed_with, _name_of
from tests.test_cluster import _nodes as _nodes  # the module's own cluster

pytestmark = pytest.mark.slow

NEW_PASSWORD = "a new and longer passphrase"


async def test_a_password_change_on_one_node_closes_other_sessions_on_the_other(
    nodes: Nodes,
) -> None:
    """alice changes her password on A: her other session's socket on B closes with 1008,
    her own session's socket on B stays, and the new password logs in on B."""
    alice, name = await _name_of(nodes, nodes.a, "alice")
    laptop = nodes.client(nodes.b)
    await laptop.login(name, PASSWORD)
    laptop_chat = await laptop.connect(after=None)
    own_on_b = await nodes.moved(alice, nodes.b).connect(after=None)
    await change_password(alice, PASSWORD, NEW_PASSWORD, iterations=FAST_ITERATIONS)
    assert await _closed_with(laptop_chat) == (1008, "session ended")
    assert await own_on_b.ping() == {"type": "pong"}
    await nodes.client(nodes.b).login(name, NEW_PASSWORD)


async def test_a_recovery_on_one_node_closes_every_socket_on_the_other(nodes: Nodes) -> None:
    """alice recovers through B: her socket on A closes, and the used key fails on A."""
    alice, name = await _name_of(nodes, nodes.a, "alice")
    code = await set_recovery_key(alice, PASSWORD)
    chat = await alice.connect(after=None)
    await recover(nodes.client(nodes.b), name, code, NEW_PASSWORD, iterations=FAST_ITERATIONS)
    assert await _closed_with(chat) == (1008, "session ended")
    with pytest.raises(Exception, match="recovery_key_used"):
        await recover(nodes.client(nodes.a), name, code, PASSWORD, iterations=FAST_ITERATIONS)
