"""One day of TC for the bundled example's 55 households on the IEEE European LV test feeder, timed.

``python benchmarks/bench_tc_european_lv.py [--interval-s 600] [--repeat 3] [--json FILE]``

The bundled ``tc-european-lv`` example (``builtin:european-lv``, 55 realistic households, day-ahead hourly TC
prices by bisection, proportional device responses, a live powerflow module on the same feeder) run as it is
(``tc``), and as grid only (``grid only``: the same config with ``market.type: alex``, every trader
``grid_only``, no TC section, the same live powerflow). Full records, no figures. Reports each run's wall time,
rounds per second, the TC market's OpenDSS solves for prices and the live module's solves per second of their
own solve time, and the peak transformer loading the live powerflow measured. Best of ``--repeat`` each,
alternated, after a warm-up run (JIT, imports, profile caches).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from importlib import resources
from pathlib import Path


def example(interval_s: int) -> dict:
    import pyjson5

    data = pyjson5.decode((resources.files("trexsim.config") / "examples" / "tc-european-lv.json").read_text())
    data["study"]["interval_s"] = interval_s
    data["records"] = {"plots": False}
    return data


def grid_only(data: dict) -> dict:
    data = copy.deepcopy(data)
    data["market"]["type"] = "alex"
    data.pop("tc", None)
    for spec in data["participants"].values():
        spec["trader"] = {"type": "grid_only"}
    return data


def run_once(data: dict, out: Path) -> dict:
    from trexsim import parse_config
    from trexsim.simulation import Simulation

    t0 = time.perf_counter()
    res = Simulation(parse_config(data), out).run(plots=False)
    wall = time.perf_counter() - t0
    s = res.summary
    rounds = s["study"]["rounds_per_episode"] if "rounds_per_episode" in s["study"] else None
    pf = s["powerflow"]
    row = {"wall_s": wall, "rounds": rounds or pf["solved_rounds"], "live_solves": pf["solved_rounds"],
           "live_solve_s": pf["solve_s"], "peak_transformer_loading_pct": pf["max_transformer_loading_pct"],
           "min_voltage_pu": pf["min_voltage_pu"], "max_voltage_pu": pf["max_voltage_pu"]}
    if s.get("tc"):
        row.update(tc_solves=s["tc"]["powerflow_solves_for_prices"], tc_solve_s=s["tc"]["solve_s"],
                   max_price=s["tc"]["max_price"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval-s", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    tc = example(args.interval_s)
    legs = {"tc": tc, "grid only": grid_only(tc)}
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_once(tc, tmp / "warm")
        for r in range(args.repeat):
            for name, data in legs.items():
                row = run_once(data, tmp / f"{name.replace(' ', '-')}-{r}")
                if name not in best or row["wall_s"] < best[name]["wall_s"]:
                    best[name] = row
    households = sum(g.get("count", 1) for g in tc["participants"].values())
    for name, row in best.items():
        line = (f"{name:>9}: {households} households, {row['rounds']} rounds of {args.interval_s} s: "
                f"{row['wall_s']:.2f} s ({row['rounds'] / row['wall_s']:.0f} rounds/s); live powerflow "
                f"{row['live_solves']} solves in {row['live_solve_s']:.2f} s "
                f"({row['live_solves'] / max(row['live_solve_s'], 1e-9):.0f} solves/s); "
                f"peak transformer loading {row['peak_transformer_loading_pct']:.2f} %")
        if "tc_solves" in row:
            line += (f"; TC prices: {row['tc_solves']} solves in {row['tc_solve_s']:.2f} s "
                     f"({row['tc_solves'] / max(row['tc_solve_s'], 1e-9):.0f} solves/s), highest price "
                     f"{row['max_price']:.4f} $/kWh")
        print(line, flush=True)
    machine = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
               "load_average": os.getloadavg()}
    print("machine:", machine)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "interval_s": args.interval_s,
                                               "households": households, "best": best}, indent=2) + "\n")


if __name__ == "__main__":
    main()
