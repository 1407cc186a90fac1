"""The cluster scenario's pieces: SecureChat nodes over a throwaway PostgreSQL and Redis, measured
as one server.

A cluster is started as `make cluster` starts one (tools/cluster.py: engines of its own, the
shared secrets from ``init --cluster``, Hypercorn nodes on free ports), with the bench's light
key stretching. Its accounts are made through the first node; each session's cookie serves on
every node, as behind a load balancer without affinity. Its CPU is that of every process that
serves a message: each node's process tree, the postmaster with its backends, and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tools.bench import accounts
from tools.bench.procs import LIGHT_SETTINGS, ServerSpec, tree_cpu_seconds
from tools.bench.wsclient import Endpoint
from tools.cluster import LocalCluster, free_port, local_cluster

# What the cluster is measured beside, on the live scenario's ramp (tools/bench/plan.py).
REFERENCES = ("ours-hypercorn", "quart-relay")


@dataclass
class ClusterUnderTest:
    """A running cluster, named for the report (``cluster-1``: one node)."""

    name: str
    local: LocalCluster

    @property
    def spec(self) -> ServerSpec:
        return ServerSpec(self.name, "cluster")

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.local.cluster.nodes]

    def pids(self) -> list[int]:
        """The top processes: each node's Hypercorn, the postmaster, redis-server."""
        nodes = [node.process.pid for node in self.local.cluster.nodes]
        return [*nodes, self.local.postgres.pid, self.local.redis.process.pid]

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the nodes, PostgreSQL (backends included) and Redis."""
        return sum(tree_cpu_seconds(pid) for pid in self.pids())

    def endpoint(self, compression: bool) -> Endpoint:
        """The load generator's target: a pair's first user on node 1, the second on node 2."""
        first, *others = self.urls
        return Endpoint(first, "cookie", compression, tuple(others))

    def create_users(
        self, names: list[str], materials: list[accounts.KeyMaterial]
    ) -> list[tuple[str, str]]:
        """Register and log in every name through the first node: (name, cookie) each."""
        sessions = asyncio.run(accounts.create_users(self.urls[0], names, materials))
        return [(group[0].name, group[0].cookie) for group in sessions]


@contextlib.contextmanager
def running_cluster(nodes: int) -> Iterator[ClusterUnderTest]:
    """``nodes`` nodes on their own PostgreSQL and Redis; everything stopped on exit."""
    ports = tuple(free_port() for _ in range(nodes))
    with local_cluster(ports, LIGHT_SETTINGS) as local:
        yield ClusterUnderTest(f"cluster-{nodes}", local)


def cluster_line(runs: dict[str, dict[str, Any]], compression: bool) -> dict[str, Any]:
    """The cluster scenario's JSON line: each run's held rate and CPU per message, losses."""
    return {
        "scenario": "cluster",
        "compression": compression,
        "users": max((run["users"] for run in runs.values()), default=0),
        "delivered_per_s": {name: run["delivered_per_s"] for name, run in runs.items()},
        "server_cpu_us_per_msg": {name: run["server_cpu_us_per_msg"] for name, run in runs.items()},
        "lost": sum(run["lost"] for run in runs.values()),
        "duplicated": sum(run["duplicated"] for run in runs.values()),
        "runs": runs,
    }
