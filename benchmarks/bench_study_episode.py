"""The settlement study's compiled episode: CPU time of one training episode (``FastMarket.run_episode``).

    python benchmarks/bench_study_episode.py             # M1 and M3, the paper's over-supply and over-demand cells
    python benchmarks/bench_study_episode.py --episodes 21

Each cell (2 sellers, 2 buyers, 14 days of 1-minute rounds: 20,160 rounds) runs one warm-up episode (JIT,
caches), then ``--episodes`` more; prints the thread CPU time of the fastest, and the energy settled in the
last (the same to the Wh from commit to commit when the rules did not change). To compare with a parent
commit, run it once with ``PYTHONPATH=<a checkout of the parent>/src``.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=11)
    args = ap.parse_args()
    from trexsim.studies.fast_market import FastMarket
    from trexsim.studies.settlement import SettlementStudy

    study = SettlementStudy()
    for mech in ("average_price", "exact_price"):
        for scenario in list(study.scenarios)[:2]:
            market = FastMarket(study.cell_config(mech, scenario, 0))
            market.run_episode(0)
            best, trace = float("inf"), None
            for episode in range(1, args.episodes + 1):
                t0 = time.thread_time()
                trace = market.run_episode(episode)
                best = min(best, time.thread_time() - t0)
            print(f"{mech:14s} {scenario:12s} {best * 1000:6.1f} ms an episode of {market.rounds:,} rounds, "
                  f"{len(market.ids)} traders; settled {trace.settled_total_wh:,} Wh in the last", flush=True)


if __name__ == "__main__":
    main()
