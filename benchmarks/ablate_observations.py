"""Ablation of the optional observations (``trader.observe``) and of reward shaping (``trader.shaping``): does
each help a learner?

One household with 5 kW of PV and a 10 kWh battery driven by the agent, alone on the market (so every
order goes to the grid: what is learned is the battery), a time-of-use tariff (0.30 $/kWh 17:00-21:00,
0.10 otherwise, 0.05 for export), hourly rounds, one day an episode, each episode a new day (the seed
decides the realistic profiles). SB3 PPO trains on ``trexsim.envs.sb3.sb3_vec_env`` with the reward
``savings`` ($ saved against the household's grid-only bill); each trained policy (deterministic) is then
run on held-out days (seeds 100000 and up, never trained on) and its mean daily savings reported.

    python benchmarks/ablate_observations.py --timesteps 30000 --seeds 0 1 2 --out ablation.json

Variants: ``base`` (the 13 values), ``pending`` (+ the pending set-point; close_steps is 1, so one),
``tariff`` (+ the buy and sell price 1-6 hours ahead), ``forecast`` (+ load and PV 1-3 hours ahead,
the default 10 % noise), ``all``; ``base+shaping`` and ``all+shaping`` add potential-based shaping with the
stored energy valued at 0.20 $/kWh (between the day's 0.10 and the peak's 0.30) and PPO's gamma 0.99. Every
policy is scored on the unshaped reward. Results and the command are in docs/envs.md ("Ablation").
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

VARIANTS = {
    "base": {},
    "pending": {"pending_setpoint": True},
    "tariff": {"tariff_ahead_h": 6},
    "forecast": {"forecast_h": 3},
    "all": {"pending_setpoint": True, "tariff_ahead_h": 6, "forecast_h": 3},
}
SHAPING = {"stored_energy_usd_per_kwh": 0.20, "gamma": 0.99}
VARIANTS["base+shaping"] = VARIANTS["base"]
VARIANTS["all+shaping"] = VARIANTS["all"]
EVAL_SEED = 100_000


def household(observe: dict, shaping: dict | None = None) -> dict:
    return {
        "study": {"name": "ablate-observations", "days": 1, "seed": 0, "interval_s": 3600,
                  "start_datetime": "2021-06-01 00:00:00", "timezone": "America/Edmonton"},
        "market": {"close_steps": 1,
                   "grid": {"buy_price": 0.10, "sell_price": 0.05,
                            "tou": [{"hours": [17, 18, 19, 20], "buy_price": 0.30, "sell_price": 0.05}]}},
        "participants": {
            "home": {"profile": {"type": "realistic", "annual_load_kwh": 6000, "pv_capacity_kw": 5.0},
                     "storage": {"capacity_wh": 10000, "power_w": 5000, "efficiency": 0.95, "initial_soc": 0.2,
                                 "policy": "external"},
                     # discrete levels: PPO's categorical policy keeps exploring, where its Gaussian one
                     # settled on a bound of the set-point (always discharge) in a first try
                     "trader": {"type": "external", "action": "discrete", "price_levels": 2, "quantity_levels": 2,
                                "battery_levels": 5, "max_price": 0.35, "max_quantity_wh": 5000,
                                "reward": "savings", "observe": observe, "shaping": shaping}},
        },
    }


def evaluate(config, policy, days: int) -> np.ndarray:
    """Each held-out day's savings [$] under ``policy(obs (days, width)) -> actions (days, 5)``."""
    from trexsim.envs import vector_env

    env = vector_env(config, num_envs=days, reseed=False)
    obs, _ = env.reset(seed=EVAL_SEED)
    total = np.zeros(days)
    for _ in range(env._community.rounds):
        obs, rewards, _, truncs, _ = env.step(policy(obs[:, 0])[:, None])
        total += rewards[:, 0]
    return total


def train(config, seed: int, timesteps: int):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    from trexsim.envs.sb3 import sb3_vec_env

    venv = sb3_vec_env(config, num_envs=8)
    venv.seed(seed)
    venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=0.99)  # $ a round are small numbers
    model = PPO("MlpPolicy", venv, n_steps=96, batch_size=192, learning_rate=3e-4, gamma=0.99, ent_coef=0.0,
                seed=seed, verbose=0)
    model.learn(total_timesteps=timesteps)
    return model


def main(argv=None) -> None:
    import torch

    from trexsim import parse_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timesteps", type=int, default=30_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--eval-days", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shaping-usd-per-kwh", type=float, default=SHAPING["stored_energy_usd_per_kwh"],
                    help="the stored energy's value in the +shaping variants")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    shaping = dict(SHAPING, stored_energy_usd_per_kwh=args.shaping_usd_per_kwh)
    torch.set_num_threads(args.threads)

    hold = np.array([0, 0, 0, 0, 2])  # no orders, battery held (set-point level 2 of 0..4: 0 Wh)
    base = parse_config(household({}))
    idle = evaluate(base, lambda o: np.tile(hold, (o.shape[0], 1)), args.eval_days)
    results = {"hold_battery": float(idle.mean()), "eval_days": args.eval_days, "timesteps": args.timesteps,
               "shaping": shaping, "variants": {}}
    print(f"battery held (no learning): {idle.mean():.4f} $/day saved over {args.eval_days} held-out days")
    for name in args.variants:
        config = parse_config(household(VARIANTS[name], shaping if name.endswith("+shaping") else None))
        scored = parse_config(household(VARIANTS[name]))   # (every policy is scored on the unshaped reward)
        scores = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            model = train(config, seed, args.timesteps)
            saved = evaluate(scored, lambda o: model.predict(o, deterministic=True)[0], args.eval_days)
            scores.append(float(saved.mean()))
            print(f"{name:12s} seed {seed}: {saved.mean():.4f} $/day saved ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        results["variants"][name] = {"per_seed": scores, "mean": float(np.mean(scores)),
                                     "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0}
        r = results["variants"][name]
        print(f"{name:12s} mean {r['mean']:.4f} $/day, std {r['std']:.4f} over seeds {args.seeds}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
