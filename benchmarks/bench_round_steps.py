#!/usr/bin/env python
"""Where a round's time goes: thread CPU time per round of each step of the in-process round loop.

Runs the configuration of ``bench_rounds.py`` (one day of 1-minute rounds, N households) three
times after a small warm-up and prints, per step (the market's intake, clearing and delivery, the
participants' metering and trading, the recorder's delivery rows), the CPU time of the calling
thread per round in microseconds. Thread CPU, not wall time: a busy machine changes it little, so
two commits can be compared on a shared host (run the parent with ``PYTHONPATH=OTHER/src``).

    python benchmarks/bench_round_steps.py 1000
    python benchmarks/bench_round_steps.py 100 --records full
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import tempfile
import time
from pathlib import Path

STEPS = {
    "trexsim.modules.market:Market": ("on_orders", "validate", "clear", "settle"),
    "trexsim.modules.participants:Participants": ("on_round_start", "_meter", "_trade", "on_cleared"),
    "trexsim.records.writer:Recorder": ("on_delivered", "on_cleared"),
}


def _timed(spent: collections.Counter, label: str, method):
    def wrapper(*args, **kwargs):
        start = time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            spent[label] += time.thread_time() - start
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="households")
    parser.add_argument("--records", default="summary", help="records level (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("bench_rounds", Path(__file__).with_name("bench_rounds.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from trexsim import parse_config
    from trexsim.simulation import Simulation

    spent: collections.Counter = collections.Counter()
    for target, methods in STEPS.items():
        module, cls_name = target.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        for name in methods:
            if hasattr(cls, name):
                setattr(cls, name, _timed(spent, f"{cls_name}.{name}", getattr(cls, name)))
    out = tempfile.mkdtemp(prefix="trexsim-steps-")
    Simulation(parse_config(bench.make_config(2, args.records, days=0.1)), f"{out}/warm").run(plots=False)
    spent.clear()
    rounds = 0
    for k in range(args.repeat):
        sim = Simulation(parse_config(bench.make_config(args.n, args.records)), f"{out}/run{k}")
        sim.run(plots=False)
        rounds += sim.total_rounds
    print(f"N={args.n:,}, records {args.records}, {rounds:,} rounds: thread CPU per round")
    for label, seconds in sorted(spent.items()):
        print(f"  {label:30s} {seconds / rounds * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
