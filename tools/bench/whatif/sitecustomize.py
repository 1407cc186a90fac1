"""Loaded by Python at start-up in a benchmark server whose kind names experiments (``+name``).

See tools/bench/experiments.py. This directory is on ``PYTHONPATH`` only for those servers.
"""

import os

from tools.bench import experiments

experiments.apply(os.environ.get("BENCH_EXPERIMENTS", ""))
