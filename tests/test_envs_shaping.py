"""Potential-based reward shaping with the stored energy's value (``trader.shaping``), worked by hand.

``r' = r + gamma * Phi(s') - Phi(s)`` with ``Phi = value x state of charge x capacity`` (Ng, Harada and Russell
1999): every step's shaped reward differs from the unshaped one by exactly that term, on both backends and in the
vector env across its automatic resets, and over an episode with ``gamma = 1`` the terms telescope to the stored
energy's change in value.
"""

import copy

import numpy as np
import pytest

pytest.importorskip("pettingzoo", reason="the rl extra (pettingzoo, gymnasium) is not installed")

from trexsim import parse_config  # noqa: E402
from trexsim.envs import parallel_env, vector_env  # noqa: E402
from trexsim.errors import ConfigError  # noqa: E402

CAPACITY_WH = 10_000.0


def household(shaping=None):
    """One learning household with a 10 kWh battery (half full at the start) among two fixed-price neighbours."""
    trader = {"type": "external", "max_price": 0.5, "max_quantity_wh": 3000}
    if shaping is not None:
        trader["shaping"] = shaping
    return {
        "study": {"days": 0.5, "seed": 3, "interval_s": 3600, "start_datetime": "2021-07-01 00:00:00"},
        "market": {"close_steps": 1, "grid": {"buy_price": 0.10, "sell_price": 0.05}},
        "participants": {
            "pv": {"count": 2, "profile": {"type": "realistic", "pv_capacity_kw": 6},
                   "trader": {"type": "fixed_price", "bid_price": 0.09, "ask_price": 0.07}},
            "rl": {"profile": {"type": "realistic", "pv_capacity_kw": 5},
                   "storage": {"capacity_wh": CAPACITY_WH, "power_w": 3000, "policy": "external", "initial_soc": 0.5},
                   "trader": trader},
        },
    }


def run(config, backend, actions):
    env = parallel_env(parse_config(config), backend=backend)
    obs, _ = env.reset(seed=11)
    socs, rewards = [float(obs["rl"][6])], []
    for a in actions:
        obs, r, *_ = env.step({"rl": a})
        socs.append(float(obs["rl"][6]))
        rewards.append(r["rl"])
    return np.array(socs), np.array(rewards)


ACTIONS = np.random.default_rng(0).uniform(-1, 1, (12, 5))


@pytest.mark.parametrize("backend", ["compiled", "simulation"])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_each_step_gains_exactly_gamma_phi_next_minus_phi(backend, gamma):
    value = 0.2  # $/kWh
    socs, plain = run(household(), backend, ACTIONS)
    socs_shaped, shaped = run(household({"stored_energy_usd_per_kwh": value, "gamma": gamma}), backend, ACTIONS)
    assert np.array_equal(socs, socs_shaped)          # shaping changes the reward, nothing the household does
    phi = value * socs * CAPACITY_WH / 1000.0         # $
    assert np.ptp(socs) > 0.2                         # the random set-points moved the battery
    assert shaped - plain == pytest.approx(gamma * phi[1:] - phi[:-1], abs=1e-9)
    if gamma == 1.0:  # the terms telescope: the episode gains the stored energy's change in value
        assert (shaped - plain).sum() == pytest.approx(phi[-1] - phi[0], abs=1e-9)


def test_the_vector_env_shapes_every_copy_and_restarts_the_potential_with_each_episode():
    cfg = parse_config(household({"stored_energy_usd_per_kwh": 0.3, "gamma": 0.95}))
    plain_cfg = parse_config(household())
    env, plain = vector_env(cfg, num_envs=3), vector_env(plain_cfg, num_envs=3)
    obs, _ = env.reset(seed=5)
    plain.reset(seed=5)
    soc = obs[:, 0, 6].astype(np.float64)
    rounds = cfg.study.rounds_per_episode
    for step in range(rounds + 3):   # across the automatic reset at the episode's end
        a = np.random.default_rng(step).uniform(-1, 1, (3, 1, 5))
        obs, r, _, trunc, info = env.step(a)
        _, r_plain, *_ = plain.step(a)
        after = (info["final_obs"] if trunc.any() else obs)[:, 0, 6].astype(np.float64)
        expected = 0.3 * (0.95 * after - soc) * CAPACITY_WH / 1000.0
        assert r[:, 0] - r_plain[:, 0] == pytest.approx(expected, abs=1e-9)
        soc = obs[:, 0, 6].astype(np.float64)   # after a reset: the new episode's first state of charge


def test_bad_shaping_is_named():
    for bad, key in (({"stored_energy_usd_per_kwh": -1}, "stored_energy_usd_per_kwh"),
                     ({"stored_energy_usd_per_kwh": 0.1, "gamma": 0}, "gamma"),
                     ({"value": 0.1}, "value")):
        with pytest.raises(ConfigError, match=key):
            parse_config(household(copy.deepcopy(bad)))
