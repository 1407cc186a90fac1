"""The garbage-collection policy: survivors frozen, thawed once grown, started while serving.

The collector is process-wide, so the policy's own behaviour is checked in a fresh interpreter
(the test process's collector is left as it is); the wiring is checked on a live server.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from securechat.config import PROJECT_ROOT
from securechat.gcpolicy import FreezeSurvivors
from tests.conftest import fast_config
from tests.livesrv import LiveServer
from tests.web.test_metrics import AUTH, TOKEN, scrape


def run_fresh(script: str) -> str:
    """Run ``script`` in a new interpreter with the project importable; return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_survivors_are_frozen_and_skipped_until_the_frozen_set_grows() -> None:
    """A cycle that dies after being frozen waits for the thaw; then one full collection frees
    it. Counted: the complete collections, and every pause."""
    out = run_fresh(
        """
        import gc, weakref
        from securechat.gcpolicy import FreezeSurvivors

        class Node:
            pass

        policy = FreezeSurvivors(growth=0.5)
        policy.start()
        assert policy.frozen > 0 and policy.stats.complete_collections == 1

        node = Node()
        node.me = node  # a cycle: only the cyclic collector can free it
        ref = weakref.ref(node)
        gc.collect()  # node survives (still referenced): frozen with the rest
        del node
        gc.collect()
        assert ref() is not None, "a frozen object is not examined"

        held = [[] for _ in range(policy.frozen)]  # the frozen set more than doubles
        gc.collect()  # freezes them, sees the growth, thaws everything
        assert policy.frozen == 0
        gc.collect()  # a complete collection again
        assert ref() is None, "the thaw let the collector free the dead cycle"
        assert policy.stats.complete_collections == 2
        assert policy.frozen >= len(held)
        assert sum(policy.stats.pauses.counts) >= 5 and policy.stats.pauses.longest > 0

        policy.stop()
        assert gc.get_freeze_count() == 0 and policy._on_collection not in gc.callbacks
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_without_the_policy_the_same_cycle_is_freed_at_once() -> None:
    """The control for the test above: its first assertion depends on the freezing."""
    out = run_fresh(
        """
        import gc, weakref

        class Node:
            pass

        node = Node()
        node.me = node
        ref = weakref.ref(node)
        gc.collect()
        del node
        gc.collect()
        print("freed" if ref() is None else "kept")
        """
    )
    assert out.strip() == "freed"


def test_growth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FreezeSurvivors(growth=0)


async def test_a_serving_app_runs_the_policy_and_reports_it(tmp_path: Path) -> None:
    """Started while serving (default config), shown in /metrics, stopped with the server."""
    assert gc.get_freeze_count() == 0  # the tests' own servers run without it
    server = LiveServer(
        fast_config(tmp_path / "data", admin_token=TOKEN, gc_freeze_growth=1.0)
    ).start()
    try:
        samples = await scrape(server.url)
        assert samples["securechat_gc_frozen_objects"] > 0
        assert samples["securechat_gc_complete_collections_total"] >= 1
        assert "securechat_gc_pause_seconds_count" in samples
    finally:
        server.stop()
    assert gc.get_freeze_count() == 0


async def test_policy_off_leaves_the_collector_alone(tmp_path: Path) -> None:
    server = LiveServer(
        fast_config(tmp_path / "data", admin_token=TOKEN, gc_freeze_growth=0)
    ).start()
    try:
        assert gc.get_freeze_count() == 0
        async with httpx.AsyncClient(base_url=server.url) as http:
            body = (await http.get("/metrics", headers=AUTH)).text
        assert "securechat_gc_frozen_objects" not in body
    finally:
        server.stop()
