"""The benchmark harness: ``python -m tools.bench`` (``make bench``), see docs/performance.md.

Scenarios (live, offline drain, capacity, login) run against real server processes, ours and
two bare relays, with a load generator that speaks the protocol through ``securechat.client``.
"""
