"""The optional observations of an external trader (``trader.observe``): each value worked by hand.

The 13 values stay the default (their tests are in tests/test_envs.py); ``tests/test_envs_vector.py``
requires both backends to give identical observations with every optional value on.
"""

import numpy as np
import pytest

pytest.importorskip("pettingzoo", reason="the rl extra (pettingzoo, gymnasium) is not installed")

from trexsim import parse_config  # noqa: E402
from trexsim.envs import parallel_env, vector_env  # noqa: E402
from trexsim.envs._core import Community  # noqa: E402
from trexsim.errors import ConfigError  # noqa: E402

BACKENDS = ["compiled", "simulation"]


def household(observe=None, interval_s=3600, days=1, close_steps=1, tou=True, max_price=0.5):
    """One learning household with a battery among two fixed-price neighbours; optionally a two-hour
    time-of-use peak at 17:00-19:00 local (buy 0.30, sell 0.02 $/kWh; otherwise 0.10 and 0.05)."""
    trader = {"type": "external", "max_price": max_price, "max_quantity_wh": 3000}
    if observe is not None:
        trader["observe"] = observe
    return {
        "study": {"days": days, "seed": 3, "interval_s": interval_s, "start_datetime": "2021-07-01 00:00:00"},
        "market": {"close_steps": close_steps,
                   "grid": {"buy_price": 0.10, "sell_price": 0.05,
                            "tou": [{"hours": [17, 18], "buy_price": 0.30, "sell_price": 0.02}] if tou else []}},
        "participants": {
            "pv": {"count": 2, "profile": {"type": "realistic", "pv_capacity_kw": 6},
                   "trader": {"type": "fixed_price", "bid_price": 0.09, "ask_price": 0.07}},
            "rl": {"profile": {"type": "realistic", "pv_capacity_kw": 5},
                   "storage": {"capacity_wh": 10000, "power_w": 5000, "policy": "external"}, "trader": trader},
        },
    }


def episode(env, actions):
    """The observations of ``rl`` from reset to the end of the episode (one per step, the first from reset)."""
    obs, _ = env.reset(seed=7)
    seen = [obs["rl"]]
    for a in actions:
        obs, *_ = env.step({"rl": a})
        seen.append(obs["rl"])
    return np.array(seen)


def test_default_is_the_13_values_and_unknown_keys_are_named():
    c = Community(parse_config(household()))
    assert c.obs_size == 13 and c.obs_low.shape == (1, 13)
    assert parse_config(household()).participants["rl"].trader.observe.forecast_noise == 0.1  # noisy by default
    with pytest.raises(ConfigError, match="forecast_hours"):
        parse_config(household({"forecast_hours": 3}))
    with pytest.raises(ConfigError, match="tariff_ahead_h"):
        parse_config(household({"tariff_ahead_h": -1}))


def test_layouts_must_agree_and_a_pending_set_point_needs_a_close_step():
    with pytest.raises(ConfigError, match="close_steps"):
        Community(parse_config(household({"pending_setpoint": True}, close_steps=0)))
    cfg = household({"forecast_h": 2})
    cfg["participants"]["rl2"] = {"profile": {"type": "realistic"},
                                  "trader": {"type": "external", "observe": {"forecast_h": 1}}}
    with pytest.raises(ConfigError, match="same values"):
        Community(parse_config(cfg))
    cfg["participants"]["rl2"]["trader"]["observe"] = {"forecast_h": 2, "forecast_noise": 0.3}  # noise may differ
    assert Community(parse_config(cfg)).obs_size == 13 + 4


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("interval_s", [3600, 900])
def test_tariff_ahead_is_the_known_time_of_use_prices(backend, interval_s):
    """Hourly samples: value h (1..3) is the price of the round starting h hours after the delivery round,
    the 17:00 and 18:00 hours 0.30 / 0.02, the others 0.10 / 0.05 (past midnight: the next day's tariff)."""
    env = parallel_env(household({"tariff_ahead_h": 3}, interval_s=interval_s), backend=backend)
    assert env.observation_space("rl").shape == (13 + 6,)
    rounds = 86400 // interval_s
    per_hour = 3600 // interval_s
    seen = episode(env, [np.zeros(5, np.float32)] * rounds)
    for step, o in enumerate(seen[:-1]):
        delivery = step + 1  # close_steps = 1
        if delivery >= rounds:
            assert not o[13:].any()  # after the episode's last delivery round: zeros, as values 7 and 8
            continue
        hours = [(delivery // per_hour + h) % 24 for h in (1, 2, 3)]
        buy = [0.30 if hour in (17, 18) else 0.10 for hour in hours]
        sell = [0.02 if hour in (17, 18) else 0.05 for hour in hours]
        assert o[13:16].tolist() == np.float32(np.array(buy) / 0.5).tolist(), (step, hours)
        assert o[16:19].tolist() == np.float32(np.array(sell) / 0.5).tolist(), (step, hours)
        assert env.observation_space("rl").contains(o)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("close_steps", [1, 3])
def test_a_chosen_set_point_shows_until_it_is_delivered(backend, close_steps):
    """A full-charge set-point chosen in round 4 (for delivery round 4 + c) and a full discharge in round 6:
    each shows, in delivery order, in every observation until its round is delivered; nothing else."""
    env = parallel_env(household({"pending_setpoint": True}, close_steps=close_steps), backend=backend)
    c = close_steps
    hold = np.array([-1, -1, -1, -1, 0], np.float32)  # no orders; set-point 0 (the middle of [-1, 1])
    actions = [hold.copy() for _ in range(20)]
    actions[4][4], actions[6][4] = 1.0, -1.0
    seen = episode(env, actions)
    chosen = {4 + c: 1.0, 6 + c: -1.0}  # delivery round -> normalised set-point
    for step in range(len(seen)):
        # after `step` steps (rounds 0..step-1 run), rounds step..step+c-1 are chosen and not yet delivered
        pending = [chosen.get(r, 0.0) for r in range(step, step + c)]
        assert seen[step][13:13 + c].tolist() == pending, (step, seen[step][13:13 + c])


@pytest.mark.parametrize("backend", BACKENDS)
def test_forecasts_without_noise_are_the_profiles_hourly_means(backend):
    """1-minute rounds, forecast_noise 0: value h is the mean load (then generation) over the 60 rounds of
    hour h after the delivery round, / max_quantity_wh, exactly; rounds past the episode's end do not count."""
    cfg = household({"forecast_h": 2, "forecast_noise": 0}, interval_s=60, days=0.25, tou=False)
    env = parallel_env(cfg, backend=backend)
    c = env._community
    load, gen = c.profiles(7).energy_wh(0, c.rounds)
    load, gen = load[:, c.agent_index[0]], gen[:, c.agent_index[0]]
    seen = episode(env, [np.zeros(5, np.float32)] * c.rounds)
    for step in range(0, c.rounds, 7):
        d = step + 1
        want = []
        for series in (load, gen):
            for h in range(2):
                part = series[d + 1 + 60 * h: min(d + 1 + 60 * (h + 1), c.rounds)]
                want.append(part.sum() / part.size / 3000 if part.size else 0.0)
        assert seen[step][13:17].tolist() == np.float32(want).tolist(), step
    assert seen[5][13:15].any() and seen[300][15:17].any()  # (load and daytime generation are not zero)


def test_noisy_forecasts_follow_the_seed_and_have_the_stated_spread():
    def forecasts(seed, noise):
        vec = vector_env(household({"forecast_h": 3, "forecast_noise": noise}, interval_s=60, days=1, tou=False),
                         num_envs=1, backend="compiled")
        vec.reset(seed=seed)
        return vec._batch.forecast[0].copy()

    exact = forecasts(7, 0)
    noisy = forecasts(7, 0.1)
    assert np.array_equal(noisy, forecasts(7, 0.1))             # the same seed: the same forecasts
    ratio = noisy[exact > 0] / exact[exact > 0]
    assert abs(ratio.mean() - 1) < 0.01 and abs(ratio.std() - 0.1) < 0.01  # mean 1, relative std 0.1
    # another seed: other days, and other noise on them (compared as ratios to that seed's exact forecasts)
    exact_8 = forecasts(8, 0)
    assert not np.array_equal(exact_8, exact)
    ratio_8 = forecasts(8, 0.1)[exact_8 > 0] / exact_8[exact_8 > 0]
    n = min(ratio.size, ratio_8.size)
    assert abs(np.corrcoef(ratio[:n], ratio_8[:n])[0, 1]) < 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_value_on_stays_inside_the_bounds_and_stacks(backend):
    observe = {"pending_setpoint": True, "tariff_ahead_h": 4, "forecast_h": 2}
    env = parallel_env(household(observe, interval_s=900, close_steps=2), backend=backend)
    stacked = parallel_env(household(observe, interval_s=900, close_steps=2), backend=backend, history=3)
    width = 13 + 2 + 8 + 4
    assert env.observation_space("rl").shape == (width,) and stacked.observation_space("rl").shape == (3 * width,)
    rng = np.random.default_rng(0)
    actions = list(rng.uniform(-1, 1, (96, 5)).astype(np.float32))
    plain = episode(env, actions)
    both = episode(stacked, actions)
    for t, (o, s) in enumerate(zip(plain, both)):
        assert env.observation_space("rl").contains(o), t
        assert np.array_equal(s[-width:], o) and stacked.observation_space("rl").contains(s)
    # close_steps 2: the last three observations are past the episode's last delivery round; a forecast hour
    # past the episode's end is 0 (the last eight observations' second hour)
    assert (plain[:, 13:15] != 0).any() and (plain[:-3, 15:23] > 0).all() and (plain[:-8, 23:25] > 0).all()
    assert not plain[-8:, 24].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_vector_env_stacks_the_wider_observation(backend):
    cfg = household({"pending_setpoint": True, "tariff_ahead_h": 2, "forecast_h": 1}, close_steps=2)
    width = 13 + 2 + 4 + 2
    plain = vector_env(cfg, num_envs=2, backend=backend)
    vec = vector_env(cfg, num_envs=2, backend=backend, history=2)
    assert vec.obs_dim == 2 * width and vec.observation_space.shape == (2, 1, 2 * width)
    before = plain.reset(seed=1)[0]
    obs = vec.reset(seed=1)[0]
    assert np.array_equal(obs[..., width:], before) and not obs[..., :width].any()
    actions = np.random.default_rng(2).uniform(-1, 1, (23, 2, 1, 5))
    for a in actions:
        now = plain.step(a)[0]
        obs = vec.step(a)[0]
        assert np.array_equal(obs[..., width:], now) and np.array_equal(obs[..., :width], before)
        assert vec.observation_space.contains(obs)
        before = now


def test_gymnasium_check_env_with_every_value_on():
    from gymnasium.utils.env_checker import check_env

    from trexsim.envs import gym_env

    observe = {"pending_setpoint": True, "tariff_ahead_h": 2, "forecast_h": 2}
    env = gym_env(household(observe, close_steps=2), history=2)
    assert env.observation_space.shape == (2 * (13 + 2 + 4 + 4),)
    check_env(env, skip_render_check=True)
