"""Warm start: fit the untrained PPO policy to the self-consumption rule before PPO improves on it.

Only for ``action: "residual"``, where the rule can be written as an action: the battery set-point
is the forecast surplus ``generation - load`` (charge what PV has left over, discharge what the
load needs, within the battery's limits) and the prices are the rule trader's bid and ask. The
rule drives the training environments for ``rounds`` steps; the policy's mean action is fitted to
the rule's actions (mean squared error) and its value function to the discounted returns the rule
earned (behaviour cloning; then PPO fine-tunes both).
"""

from __future__ import annotations

import numpy as np

__all__ = ["rule_action", "warm_start"]


def rule_action(obs: np.ndarray, max_quantity_wh: float, charge_wh: float, discharge_wh: float,
                bid_action: float, ask_action: float) -> np.ndarray:
    """The self-consumption rule as a residual action, for observations ``(n, 13)`` -> ``(n, 3)``."""
    surplus_wh = (obs[:, 5] - obs[:, 4]) * max_quantity_wh
    setpoint = np.where(surplus_wh >= 0, surplus_wh / max(charge_wh, 1.0), surplus_wh / max(discharge_wh, 1.0))
    out = np.empty((obs.shape[0], 3), dtype=np.float32)
    out[:, 0], out[:, 1], out[:, 2] = bid_action, ask_action, np.clip(setpoint, -1.0, 1.0)
    return out


def warm_start(model, venv, norm, cfg, rounds: int, epochs: int) -> dict:
    """Run the rule in ``venv`` for ``rounds`` steps and fit ``model.policy`` to it; returns the fit's losses."""
    import torch

    sim = cfg.simulation_config
    spec = dict(sim.expanded_participants())[cfg.learner]
    trader, rule = spec.trader, cfg.eval.rule_trader
    to_action = lambda price: float(np.clip(2 * (price - trader.min_price) / (trader.max_price - trader.min_price) - 1, -1, 1))  # noqa: E731
    hours = sim.study.interval_s / 3600.0
    storage = spec.storage
    charge = np.floor(storage.charge_power_w * hours) if storage is not None else 0.0
    discharge = np.floor(storage.discharge_power_w * hours) if storage is not None else 0.0
    bid, ask = to_action(rule.get("bid_price", 0.12)), to_action(rule.get("ask_price", 0.10))

    n = venv.num_envs
    steps = max(1, rounds // n)
    obs = venv.reset()
    xs, acts, rewards, dones = [], [], [], []
    for _ in range(steps):
        raw = norm.get_original_obs() if norm is not None else obs
        act = rule_action(raw, trader.max_quantity_wh, charge, discharge, bid, ask)
        xs.append(obs.copy())
        acts.append(act)
        obs, reward, done, _ = venv.step(act)
        rewards.append(reward.copy())  # as PPO will see them (scaled by VecNormalize)
        dones.append(done.copy())
    gamma = cfg.ppo.gamma
    returns = np.zeros((steps, n), dtype=np.float32)
    running = np.zeros(n, dtype=np.float32)
    for t in range(steps - 1, -1, -1):  # discounted return to the end of each episode
        running = rewards[t] + gamma * running * (1.0 - dones[t])
        returns[t] = running
    x = torch.as_tensor(np.concatenate(xs), dtype=torch.float32)
    y = torch.as_tensor(np.concatenate(acts), dtype=torch.float32)
    g = torch.as_tensor(returns.reshape(-1), dtype=torch.float32)
    policy = model.policy
    optimiser = torch.optim.Adam(policy.parameters(), lr=1e-3)
    rng = np.random.default_rng(cfg.seed)
    batch = 256
    losses = {}
    for _ in range(epochs):
        order = rng.permutation(len(x))
        total_a = total_v = 0.0
        for start in range(0, len(order), batch):
            idx = torch.as_tensor(order[start:start + batch])
            mean = policy.get_distribution(x[idx]).distribution.mean
            value = policy.predict_values(x[idx]).flatten()
            loss_a = torch.mean((mean - y[idx]) ** 2)
            loss_v = torch.mean((value - g[idx]) ** 2)
            optimiser.zero_grad()
            (loss_a + 0.5 * loss_v).backward()
            optimiser.step()
            total_a += loss_a.item() * len(idx)
            total_v += loss_v.item() * len(idx)
        losses = {"action_mse": total_a / len(x), "value_mse": total_v / len(x)}
    return {"rounds": int(steps * n), "epochs": int(epochs), **losses}
