"""Many learners in one market: do their settlement prices follow supply and demand?

Four households, every one an external agent (one PPO policy shared by all of them, Stable-Baselines3 on
``trexsim.envs.sb3.sb3_vec_env``), each with a 10 kWh battery on the self-consumption rule, trade in ALEX with
hourly rounds over summer days (a new day every episode). Two communities: over-supply (three with 7 kW of PV,
one without) and over-demand (one with PV, three without); two mechanisms: M1 (average price) and M3 (exact
price). Each agent bids and asks a price in the net-billing window [0.069, 0.1449] $/kWh and a quantity; its
reward is its net profit. After training, the deterministic policy runs 10 held-out days (seeds never trained
on) and the market's energy-weighted mean settlement price and settled energy are reported. Price theory says
over-supply should clear low in the window and over-demand high; the T-REX paper hoped learners would find that.

    python benchmarks/many_learners.py --timesteps 60000 --seeds 0 1 2 --out many.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

MECHANISMS = {"M1": "average_price", "M3": "exact_price"}
COMMUNITIES = {"over_supply": (3, 1), "over_demand": (1, 3)}   # (households with PV, without)
MIN_PRICE, MAX_PRICE = 0.069, 0.1449
EVAL_SEED = 100_000


def community(mechanism: str, pv: int, no_pv: int) -> dict:
    trader = {"type": "external", "min_price": MIN_PRICE, "max_price": MAX_PRICE, "max_quantity_wh": 5000,
              "reward": "net_profit"}
    battery = {"capacity_wh": 10000, "power_w": 5000, "efficiency": 0.95, "initial_soc": 0.2}
    return {
        "study": {"name": "many-learners", "days": 1, "seed": 0, "interval_s": 3600,
                  "start_datetime": "2021-06-01 00:00:00", "timezone": "America/Edmonton"},
        "market": {"settlement": mechanism, "close_steps": 1, "grid": {"buy_price": 0.1449, "sell_price": 0.069}},
        "participants": {
            "pv": {"count": pv, "profile": {"type": "realistic", "annual_load_kwh": 5000, "pv_capacity_kw": 7.0},
                   "storage": battery, "trader": trader},
            "home": {"count": no_pv, "profile": {"type": "realistic", "annual_load_kwh": 5000, "pv_capacity_kw": 0.0},
                     "storage": battery, "trader": trader},
        },
    }


def train(config, seed: int, timesteps: int):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    from trexsim.envs.sb3 import sb3_vec_env

    venv = sb3_vec_env(config, num_envs=8)   # 8 copies x 4 agents: 32 of SB3's environments, one policy
    venv.seed(seed)
    venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=0.99)
    model = PPO("MlpPolicy", venv, n_steps=48, batch_size=256, learning_rate=3e-4, gamma=0.99, seed=seed, verbose=0)
    model.learn(total_timesteps=timesteps)
    return model


def evaluate(config, policy, days: int) -> dict:
    """The market's energy-weighted mean settlement price [$/kWh] and settled energy [kWh a day] over ``days``
    held-out days, read from the public part of the observations (the last cleared round's mean price and
    energy)."""
    from trexsim.envs import vector_env

    env = vector_env(config, num_envs=days, reseed=False)
    obs, _ = env.reset(seed=EVAL_SEED)
    c = env._community
    value = energy = 0.0
    for _ in range(c.rounds):
        n_copies, n_agents, width = obs.shape
        actions = policy(obs.reshape(-1, width)).reshape(n_copies, n_agents, -1)
        obs, *_ = env.step(actions)
        price = obs[:, 0, 9].astype(np.float64) * c.max_price[0]
        wh = obs[:, 0, 10].astype(np.float64) * c.max_q[0] * c.n
        value += float((price * wh).sum())
        energy += float(wh.sum())
    return {"mean_price_per_kwh": value / energy if energy else None, "settled_kwh_per_day": energy / 1000.0 / days}


def main(argv=None) -> None:
    import torch

    from trexsim import parse_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timesteps", type=int, default=60_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-days", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = {"timesteps": args.timesteps, "eval_days": args.eval_days, "window": [MIN_PRICE, MAX_PRICE], "cells": {}}
    for m_name, mech in MECHANISMS.items():
        for c_name, (pv, no_pv) in COMMUNITIES.items():
            config = parse_config(community(mech, pv, no_pv))
            runs = []
            for seed in args.seeds:
                t0 = time.perf_counter()
                model = train(config, seed, args.timesteps)
                r = evaluate(config, lambda o: model.predict(o, deterministic=True)[0], args.eval_days)
                runs.append(r)
                price = "-" if r["mean_price_per_kwh"] is None else f"{r['mean_price_per_kwh']:.4f}"
                print(f"{m_name} {c_name:11s} seed {seed}: mean settlement price {price} $/kWh, "
                      f"{r['settled_kwh_per_day']:.2f} kWh a day ({time.perf_counter() - t0:.0f} s)", flush=True)
            results["cells"][f"{m_name} {c_name}"] = runs
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
