"""Environment steps per second of trexsim's PettingZoo env (issue 7's benchmark).

    python benchmarks/bench_env.py --agents 10,100 --steps 2000

Each case: a community of ``agents`` external agents (realistic profiles, half with PV and an
externally driven battery) plus as many fixed-price households, one day; random actions drawn
up front; the clock covers ``env.step`` only. Reports env steps/s and agent-steps/s.
"""

from __future__ import annotations

import argparse
import platform
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="10,100")
    parser.add_argument("--steps", type=int, default=1400)
    args = parser.parse_args()
    from trexsim.envs import parallel_env

    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"{'agents':>6} {'steps':>6} {'env steps/s':>12} {'agent-steps/s':>14}")
    for n in (int(x) for x in args.agents.split(",")):
        env = parallel_env(community(n))
        obs, _ = env.reset(seed=0)
        rng = np.random.default_rng(0)
        steps = min(args.steps, 1400)
        actions = rng.uniform(-1, 1, (steps, len(env.possible_agents), 5)).astype(np.float32)
        for _ in range(20):  # warm-up (JIT cache loads, first profile chunk)
            env.step({a: actions[0, j] for j, a in enumerate(env.agents)})
        start = time.perf_counter()
        done = 0
        for t in range(steps):
            if not env.agents:
                break
            env.step({a: actions[t, j] for j, a in enumerate(env.agents)})
            done += 1
        elapsed = time.perf_counter() - start
        env.close()
        print(f"{n:>6} {done:>6} {done / elapsed:>12,.0f} {done * n / elapsed:>14,.0f}")


if __name__ == "__main__":
    main()
