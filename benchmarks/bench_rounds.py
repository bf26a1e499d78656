#!/usr/bin/env python
"""Round-loop throughput, setup time, peak memory and database size of trexsim.

Simulates one day of 1-minute rounds (1,440 rounds) of an ALEX market (average-price
settlement) for N households with realistic profiles. About 60 % have PV and about half
have a battery. Every household has a fixed-price trader. Each N is run with full
records and with summary-only records. Every case runs in a fresh subprocess (this
script calls itself with ``--one N LEVEL``), so peak memory (max RSS) is per case.
Inside that subprocess a tiny 2-household run first warms the Numba JIT, imports and
caches, so compile and cache-load time are not counted.

    python benchmarks/bench_rounds.py                           # N = 10, 100, 1000, 10000; full and summary
    python benchmarks/bench_rounds.py --sizes 10,100 --records full
    python benchmarks/bench_rounds.py --json bench.json
    python benchmarks/bench_rounds.py --year                    # 365 days x 1000 households, summary records
    python benchmarks/bench_rounds.py --one 1000 full           # one case, in this process (for cProfile)
    python benchmarks/bench_rounds.py --sizes 1000 --records full --streets 10  # 10 street markets + a community

This is a benchmark, not a test: it prints PASS/MISS next to the targets and never fails on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS_PER_DAY = 1440
DEFAULT_SIZES = (10, 100, 1000, 10000)
DEFAULT_LEVELS = ("full", "summary")

# issue targets: in-process, full records, one day of 1-minute rounds
RATE_TARGETS = {100: 5000.0, 1000: 1000.0, 10000: 100.0}  # N -> rounds/s
YEAR_PEAK_TARGET_MB = 2048.0  # 365 days x 1000 households: peak RSS under 2 GB


# --------------------------------------------------------------------------- config
def groups(n: int) -> dict[str, int]:
    """Split n households: about 50 % PV + battery, 10 % PV only, 40 % neither."""
    pv = round(0.6 * n)
    pv_battery = round(0.5 * n)
    return {"prosumer": pv_battery, "pv": pv - pv_battery, "consumer": n - pv}


def make_config(n: int, level: str, days: float = 1.0, seed: int = 42, batch_rounds: int | None = None,
                streets: int = 0) -> dict:
    """``streets`` > 0: the households split into that many street markets (M1) under one community market
    (M3) that takes what the streets leave unmatched."""
    trader = {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}
    kinds = {
        "prosumer": {"profile": {"type": "realistic", "annual_load_kwh": 5500, "pv_capacity_kw": 7.0},
                     "storage": {"capacity_wh": 13500, "power_w": 5000, "efficiency": 0.95, "initial_soc": 0.5}},
        "pv": {"profile": {"type": "realistic", "annual_load_kwh": 5000, "pv_capacity_kw": 5.0}},
        "consumer": {"profile": {"type": "realistic", "annual_load_kwh": 4500, "pv_capacity_kw": 0}},
    }
    participants = {}
    markets = []
    for street in range(max(1, streets)):
        size = n // max(1, streets) + (1 if street < n % max(1, streets) else 0)
        prefix = f"street{street}-" if streets else ""
        names = []
        for name, count in groups(size).items():
            if count > 0:
                participants[prefix + name] = {**kinds[name], "trader": dict(trader), "count": count}
                names.append(prefix + name)
        markets.append({"id": f"street{street}", "members": names, "parent": "community", "settlement": "average_price"})
    records = {"level": level, "plots": False}
    if batch_rounds:
        records["batch_rounds"] = batch_rounds
    return {
        "study": {"name": f"bench-{n}-{level}", "start_datetime": "2021-07-01 00:00:00", "timezone": "America/Edmonton",
                  "days": days, "episodes": 1, "seed": seed, "interval_s": 60},
        **({"markets": markets + [{"id": "community", "settlement": "exact_price"}],
            "grid": {"buy_price": 0.1449, "sell_price": 0.069}} if streets else
           {"market": {"type": "alex", "settlement": "average_price", "close_steps": 1,
                       "grid": {"buy_price": 0.1449, "sell_price": 0.069}}}),
        "participants": participants,
        "records": records,
    }


def db_size(out_dir: Path) -> int:
    return sum(p.stat().st_size for p in out_dir.glob("run.duckdb*") if p.is_file())


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / (1024.0 * 1024.0) if sys.platform == "darwin" else kb / 1024.0


# --------------------------------------------------------------------------- one case
def run_one(n: int, level: str, days: float, progress: bool = False, profile: str | None = None,
            batch_rounds: int | None = None, streets: int = 0) -> dict:
    """One case in this process: warm up, build, run; return the measurements.

    With ``profile``, cProfile covers only the measured part (construction and ``run``),
    not the imports and warm-up, and its stats are dumped to that file.
    """
    from trexsim import parse_config
    from trexsim.simulation import Simulation

    with tempfile.TemporaryDirectory(prefix="trexsim-bench-") as tmp:
        tmp = Path(tmp)
        # warm-up: the same modules and kernels, 2 households, 5 rounds
        t0 = time.perf_counter()
        warm = make_config(2, level, days=5 / ROUNDS_PER_DAY)
        warm["participants"] = {
            "a": {**make_config(10, level)["participants"]["prosumer"], "count": 1},
            "b": {**make_config(10, level)["participants"]["consumer"], "count": 1},
        }
        Simulation(parse_config(warm), tmp / "warm").run(plots=False)
        warmup_s = time.perf_counter() - t0

        config = parse_config(make_config(n, level, days=days, batch_rounds=batch_rounds, streets=streets))
        rounds = config.study.rounds_per_episode * config.study.episodes
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t0 = time.perf_counter()
        sim = Simulation(config, tmp / "run")
        setup_s = time.perf_counter() - t0

        last = [0.0]
        step = max(1, rounds // 20)

        def on_round(episode: int, k: int) -> None:
            last[0] = time.perf_counter()
            if progress and k % step == 0:
                el = last[0] - t_run
                print(f"  round {k}/{rounds}  {el:.0f} s  {k / el if el else 0:.0f} rounds/s  "
                      f"peak {peak_rss_mb():.0f} MB", file=sys.stderr, flush=True)

        t_run = time.perf_counter()
        result = sim.run(on_round=on_round, plots=False)
        t_end = time.perf_counter()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        run_s = t_end - t_run
        size = db_size(result.out_dir)
        settled = int(result.summary["market"]["settled_wh"])
    return {
        "participants": n, "records": level, "days": days, "rounds": rounds,
        "warmup_s": warmup_s, "setup_s": setup_s, "run_s": run_s,
        "loop_s": last[0] - t_run,  # until the last round's callback (before the final flush and summary)
        "finish_s": t_end - last[0],  # final flush to DuckDB, summary.json, close
        "rounds_per_s": rounds / run_s,
        "peak_rss_mb": peak_rss_mb(), "db_bytes": size, "settled_wh": settled,
        "batch_rounds": config.records.batch_rounds,
        "groups": groups(n), "streets": streets,
    }


def run_subprocess(n: int, level: str, days: float, timeout: float | None, progress: bool,
                   batch_rounds: int | None = None, streets: int = 0) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", str(n), level, "--days", repr(days),
           "--streets", str(streets)]
    if batch_rounds:
        cmd += ["--batch-rounds", str(batch_rounds)]
    if progress:
        cmd.append("--progress")
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"participants": n, "records": level, "days": days, "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        return {"participants": n, "records": level, "days": days, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- report
def machine() -> dict:
    import duckdb
    import numba
    import numpy
    import pandas

    import trexsim

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    commit = None
    try:
        repo = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and dirty:
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "platform": platform.platform(), "machine": platform.machine(), "cpu_model": cpu,
        "cpu_count": os.cpu_count(), "cpus_usable": usable, "memory_gb": mem_gb,
        "python": platform.python_version(), "numpy": numpy.__version__, "pandas": pandas.__version__,
        "duckdb": duckdb.__version__, "numba": numba.__version__, "trexsim": trexsim.__version__, "git_commit": commit,
    }


def verdict(row: dict) -> str:
    if "error" in row:
        return ""
    if row["days"] == 1 and row["records"] == "full" and row["participants"] in RATE_TARGETS:
        target = RATE_TARGETS[row["participants"]]
        return f">= {target:,.0f}  {'PASS' if row['rounds_per_s'] >= target else 'MISS'}"
    if row["days"] >= 365:
        return f"peak < 2 GB  {'PASS' if row['peak_rss_mb'] < YEAR_PEAK_TARGET_MB else 'MISS'}"
    return "-"


def print_table(rows: list[dict]) -> None:
    head = ["N", "records", "days", "rounds/s", "run s", "loop s", "finish s", "setup s", "peak MB", "db MB",
            "settled kWh", "target"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([f"{r['participants']:,}", r["records"], f"{r['days']:g}", "ERROR", r["error"][:60]] + [""] * 7)
            continue
        rate = f"{r['rounds_per_s']:,.0f}"
        if r.get("rounds_per_s_all"):
            rate += f" ({min(r['rounds_per_s_all']):,.0f}-{max(r['rounds_per_s_all']):,.0f})"
        body.append([f"{r['participants']:,}", r["records"], f"{r['days']:g}", rate,
                     f"{r['run_s']:.2f}", f"{r['loop_s']:.2f}", f"{r['finish_s']:.2f}", f"{r['setup_s']:.2f}",
                     f"{r['peak_rss_mb']:,.0f}", f"{r['db_bytes'] / 1e6:,.1f}", f"{r['settled_wh'] / 1000:,.1f}",
                     verdict(r)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i < len(cells) - 1 else str(c) for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for b in body:
        print(line(b))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="participant counts, e.g. 10,100 (default: %(default)s)")
    p.add_argument("--records", default=None, help="record levels, e.g. full,summary (default: full,summary; --year: summary)")
    p.add_argument("--days", type=float, default=1.0, help="days of 1-minute rounds per case (default: 1)")
    p.add_argument("--year", action="store_true", help="instead: 365 days for --year-participants households (long)")
    p.add_argument("--year-participants", type=int, default=1000, help="households in --year (default: %(default)s)")
    p.add_argument("--batch-rounds", type=int, default=None,
                   help="records.batch_rounds of the runs (default: the package default)")
    p.add_argument("--streets", type=int, default=0,
                   help="split the households into this many street markets under a community market (default: one market)")
    p.add_argument("--repeat", type=int, default=1,
                   help="fresh processes per case; the table shows the median by rounds/s (default: 1)")
    p.add_argument("--timeout", type=float, default=0, help="seconds per case before it is abandoned (0: none)")
    p.add_argument("--progress", action="store_true", help="print progress of each case to stderr")
    p.add_argument("--json", metavar="FILE", help="also write the results, machine and command line as JSON")
    p.add_argument("--one", nargs=2, metavar=("N", "LEVEL"), help="run one case in this process, print it as JSON")
    p.add_argument("--profile", metavar="FILE", help="with --one: cProfile construction + run only, stats to FILE "
                   "(read with python -m pstats FILE)")
    args = p.parse_args(argv)

    if args.one:
        res = run_one(int(args.one[0]), args.one[1], args.days, args.progress, args.profile, args.batch_rounds,
                      args.streets)
        print(json.dumps(res))
        return 0

    if args.year:
        sizes, days = [args.year_participants], 365.0
        levels = args.records.split(",") if args.records else ["summary"]
    else:
        sizes, days = [int(s) for s in args.sizes.split(",") if s.strip()], args.days
        levels = args.records.split(",") if args.records else list(DEFAULT_LEVELS)
    for level in levels:
        if level not in ("full", "summary"):
            p.error(f"unknown records level {level!r}")

    command = shlex.join([sys.executable] + sys.argv) if argv is None else shlex.join([sys.executable, __file__] + argv)
    info = machine()
    print(f"# {info['cpu_model']}, {info['cpus_usable']}/{info['cpu_count']} cpus, {info['memory_gb']} GB, "
          f"{info['platform']}; python {info['python']}, numpy {info['numpy']}, duckdb {info['duckdb']}, "
          f"numba {info['numba']}, trexsim {info['trexsim']} ({info['git_commit']})")
    print(f"# {command}")
    print(f"# {days:g} day(s) of 1-minute rounds; realistic profiles; fixed-price traders; average_price; "
          "each case in a fresh process after a JIT warm-up", flush=True)

    rows = []
    for n in sizes:
        for level in levels:
            runs = [run_subprocess(n, level, days, args.timeout or None, args.progress, args.batch_rounds, args.streets)
                    for _ in range(max(1, args.repeat))]
            ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["rounds_per_s"])
            row = dict(ok[(len(ok) - 1) // 2]) if ok else runs[0]
            if len(runs) > 1 and ok:
                row["repeats"] = len(runs)
                row["rounds_per_s_all"] = [r["rounds_per_s"] for r in ok]
                row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
            rows.append(row)
            if "error" in row:
                print(f"  N={n:,} {level}: {row['error']}", file=sys.stderr, flush=True)
            else:
                print(f"  N={n:,} {level}: {row['rounds_per_s']:,.0f} rounds/s, peak {row['peak_rss_mb']:,.0f} MB",
                      file=sys.stderr, flush=True)
    print()
    print_table(rows)
    print()
    print("rounds/s = rounds / wall time of sim.run(plots=False) (round loop incl. profile generation, final flush, "
          "summary); loop s = until the last round; finish s = final DB flush + summary; setup s = Simulation(...); "
          "peak MB = max RSS of the case's process; db MB = run.duckdb on disk.")

    if args.json:
        doc = {"command": command, "argv": sys.argv if argv is None else argv, "machine": info,
               "targets": {"rounds_per_s_full_records": {str(k): v for k, v in RATE_TARGETS.items()},
                           "year_1000_peak_rss_mb": YEAR_PEAK_TARGET_MB},
               "results": [{**r, "target": verdict(r)} for r in rows],
               "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        Path(args.json).write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
