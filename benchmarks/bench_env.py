"""Environment steps per second of trexsim's RL environments (issue 7's benchmark).

    python benchmarks/bench_env.py                       # 10 and 100 agents, every case, 5 repeats
    python benchmarks/bench_env.py --agents 100 --num-envs 16 --repeats 7

Each case: a community of ``agents`` external agents (realistic profiles, half with PV and an
externally driven battery) plus as many fixed-price households with PV, one day of one-minute
rounds (1,440 steps an episode); random actions drawn up front. Cases:

- ``single``: ``parallel_env`` (PettingZoo, dict actions built in the loop as a policy would),
  compiled backend (the default) and, for reference, the ``simulation`` backend;
- ``vector``: ``vector_env(num_envs=N)`` stepped with ``(N, agents, 5)`` arrays, steady state;
- ``vector+reset``: whole episodes of ``vector_env`` including the automatic reset with new
  seeds (profiles generated again for every copy), i.e. what a training loop sees.

The clock covers the steps only (construction, JIT loading and the first reset are outside it,
except the automatic resets of ``vector+reset``). Reports the median of the repeats, and their
range, in agent-steps/s (env steps/s x agents x copies) of wall-clock time, and the median per
CPU-second of the process (less sensitive to other work on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time

import numpy as np


def community(agents: int) -> dict:
    half = max(1, agents // 2)
    participants = {
        "rl_pv": {"count": half, "profile": {"type": "realistic", "pv_capacity_kw": 6},
                  "storage": {"capacity_wh": 10000, "power_w": 5000, "policy": "external"},
                  "trader": {"type": "external"}},
        "fixed": {"count": agents, "profile": {"type": "realistic", "pv_capacity_kw": 4},
                  "trader": {"type": "fixed_price"}},
    }
    if agents - half:
        participants["rl_home"] = {"count": agents - half, "profile": {"type": "realistic", "pv_capacity_kw": 0},
                                   "trader": {"type": "external"}}
    return {"study": {"days": 1, "seed": 1}, "participants": participants}


def bench_single(agents: int, steps: int, backend: str, history: int = 1) -> float:
    from trexsim.envs import parallel_env

    env = parallel_env(community(agents), backend=backend, history=history)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps = min(steps, 1400)
    actions = rng.uniform(-1, 1, (steps, len(env.possible_agents), 5)).astype(np.float32)
    for _ in range(20):  # warm-up (JIT cache loads)
        env.step({a: actions[0, j] for j, a in enumerate(env.agents)})
    start, cpu = time.perf_counter(), time.process_time()
    done = 0
    for t in range(steps):
        if not env.agents:
            break
        env.step({a: actions[t, j] for j, a in enumerate(env.agents)})
        done += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    env.close()
    return done * agents / elapsed, done * agents / cpu


def bench_vector(agents: int, num_envs: int, steps: int, episodes: int = 0, history: int = 1) -> float:
    from trexsim.envs import vector_env

    env = vector_env(community(agents), num_envs=num_envs, history=history)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (16, num_envs, agents, 5)).astype(np.float32)
    env.step(actions[0])  # warm-up
    if episodes:  # whole episodes from the start, automatic resets included
        env.reset(seed=0)
        steps = episodes * env._community.rounds
    else:
        steps = min(steps, env._community.rounds - 2)
    start, cpu = time.perf_counter(), time.process_time()
    for t in range(steps):
        env.step(actions[t % 16])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    env.close()
    return steps * num_envs * agents / elapsed, steps * num_envs * agents / cpu


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        commit = "?"
    return f"{cpu}, {os.cpu_count()} cores, python {platform.python_version()}, commit {commit or '?'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="10,100")
    parser.add_argument("--num-envs", type=int, default=16, help="copies of the vectorised env")
    parser.add_argument("--steps", type=int, default=1000, help="steps per repeat (single and vector cases)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="single,single-simulation,vector,vector+reset")
    parser.add_argument("--history", type=int, default=1, help="observations stacked per agent (the envs' history=k)")
    args = parser.parse_args()
    cases = args.cases.split(",")
    print(f"# {machine()}")
    print(f"{'agents':>6} {'case':<18} {'copies':>6} {'agent-steps/s (median)':>23} {'range':>23} {'per CPU-s':>11}")
    for n in (int(x) for x in args.agents.split(",")):
        for case in cases:
            if case == "single":
                run, copies = (lambda: bench_single(n, args.steps, "compiled", args.history)), 1
            elif case == "single-simulation":
                run, copies = (lambda: bench_single(n, args.steps, "simulation", args.history)), 1
            elif case == "vector":
                run, copies = (lambda: bench_vector(n, args.num_envs, args.steps, history=args.history)), args.num_envs
            elif case == "vector+reset":
                run, copies = (lambda: bench_vector(n, args.num_envs, 0, episodes=2, history=args.history)), args.num_envs
            else:
                raise SystemExit(f"unknown case {case!r}")
            repeats = args.repeats if case != "vector+reset" else max(1, args.repeats // 2)
            results = [run() for _ in range(repeats)]
            rates = [r[0] for r in results]
            lo, hi = min(rates), max(rates)
            per_cpu = statistics.median(r[1] for r in results)
            print(f"{n:>6} {case:<18} {copies:>6} {statistics.median(rates):>23,.0f} {f'{lo:,.0f} - {hi:,.0f}':>23}"
                  f" {per_cpu:>11,.0f}", flush=True)


if __name__ == "__main__":
    main()
