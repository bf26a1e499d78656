"""The TC market as modules (``market.type: tc``) against an ALEX run of the same community.

``python benchmarks/bench_tc.py [--sizes 10,50,200] [--repeat 3] [--json FILE]``

One day of one-minute rounds of the powerflow benchmark's community (``bench_powerflow.community``: realistic
profiles, 60 % with PV, half with a 13.5 kWh battery; here every trader ``grid_only``) on a generated feeder:

- ``tc modules``: ``trexsim run`` of the config with ``market.type: tc`` (day-ahead hourly schedule, 4 passes,
  20 % flexible load; full records, no figures): the TC market module and the participants module exchanging
  5 schedules and 5 plans over the in-process fabric, then 1,440 rounds billed at the schedule;
- ``alex``: the same community in an ordinary run (grid tariff), for scale.

Best of ``--repeat`` each, alternated, after warm-up runs (JIT, imports, profile caches).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_powerflow import community  # noqa: E402


def config(n: int, mode: str) -> dict:
    cfg = community(n, False)
    for spec in cfg["participants"].values():
        spec["trader"] = {"type": "grid_only"}
    if mode == "tc":
        cfg["market"] = {"type": "tc"}
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,50,200")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from trexsim import parse_config
    from trexsim.simulation import Simulation

    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        Simulation(parse_config(config(4, "tc")), tmp / "warm").run(plots=False)
        for n in sizes:
            Simulation(parse_config(config(n, "alex")), tmp / f"warm-{n}").run(plots=False)
            times: dict[str, list[float]] = {"tc modules": [], "alex": []}
            solves = None
            for r in range(args.repeat):
                for mode in times:
                    out = tmp / f"{mode.replace(' ', '-')}-{n}-{r}"
                    t0 = time.perf_counter()
                    res = Simulation(parse_config(config(n, "tc" if mode == "tc modules" else "alex")), out).run(plots=False)
                    if mode == "tc modules":
                        solves = res.summary["tc"]
                    times[mode].append(time.perf_counter() - t0)
            row = {"households": n, **{m: round(min(t), 3) for m, t in times.items()},
                   "tc_solves": solves["powerflow_solves_for_prices"], "tc_solve_s": solves["solve_s"],
                   "mean_price": solves["mean_price"], "max_congestion": solves["max_congestion"]}
            rows.append(row)
            print(f"{n:>5} households, one day: TC as modules {row['tc modules']:.2f} s "
                  f"({row['tc_solves']} solves for prices, {row['tc_solve_s']:.2f} s); ALEX run {row['alex']:.2f} s", flush=True)
    machine = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
               "load_average": os.getloadavg()}
    print("machine:", machine)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
