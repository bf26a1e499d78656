"""The vectorised environment and the compiled backend: the same market as the ordinary simulation.

Every copy of ``vector_env`` must follow, step for step, the ordinary simulation (``Simulation.step``
through ``parallel_env(..., backend="simulation")``) with the same seed and the same actions:
identical per-agent ledger, rewards, observations, rejections and every household's battery.
That is what shows the compiled round calls the same rules in the same order.
"""

import numpy as np
import pytest

pytest.importorskip("pettingzoo", reason="the rl extra (pettingzoo, gymnasium) is not installed")

from trexsim import parse_config  # noqa: E402
from trexsim.envs import _kernels as K  # noqa: E402
from trexsim.envs import parallel_env, vector_env  # noqa: E402
from trexsim.envs._core import compiled_supported  # noqa: E402
from trexsim.simulation import Simulation  # noqa: E402

ROUNDS = 40


def community(settlement="average_price", action="continuous", close_steps=2, rounds=ROUNDS, tie_break="random",
              observe=None):
    """Every path of the compiled round: fixed-price traders with a battery offered in the dispatch pool
    and dispatch-pool bids, self-consumption and external batteries, a grid-only household, time-of-use
    grid prices, agents whose price window reaches beyond the market's (some orders are rejected).
    ``observe``: the agents' optional observations (``trader.observe``; the second agent's noise differs)."""
    participants = {
        "pv": {"count": 2, "profile": {"type": "realistic", "pv_capacity_kw": 8},
               "storage": {"capacity_wh": 5000, "power_w": 3000, "initial_soc": 0.8},
               "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.08, "battery_ask_price": 0.11}},
        "home": {"count": 2, "profile": {"type": "realistic", "pv_capacity_kw": 0},
                 "trader": {"type": "fixed_price", "bid_price": 0.13, "ask_price": 0.09, "bid_pool": "dispatch"}},
        "idle": {"profile": {"type": "realistic", "pv_capacity_kw": 3},
                 "storage": {"capacity_wh": 8000, "power_w": 4000}, "trader": {"type": "grid_only"}},
        "rl_a": {"profile": {"type": "realistic", "pv_capacity_kw": 6},
                 "storage": {"capacity_wh": 10000, "power_w": 5000, "policy": "external"},
                 "trader": {"type": "external", "action": action, "max_price": 0.3, "max_quantity_wh": 150}},
        "rl_b": {"profile": {"type": "realistic", "pv_capacity_kw": 0},
                 "trader": {"type": "external", "action": action, "max_price": 0.3, "max_quantity_wh": 150,
                            "reward": "savings"}},
    }
    if observe is not None:
        participants["rl_a"]["trader"]["observe"] = dict(observe)
        participants["rl_b"]["trader"]["observe"] = {**observe, "forecast_noise": 0.25}
    return parse_config({
        "study": {"days": rounds / 1440, "seed": 11, "start_datetime": "2021-07-01 11:00:00"},
        "market": {"settlement": settlement, "close_steps": close_steps, "max_price": 0.25, "tie_break": tie_break,
                   "grid": {"buy_price": 0.14, "sell_price": 0.06,
                            "tou": [{"hours": [11], "buy_price": 0.2, "sell_price": 0.05}]}},
        "participants": participants,
    })


def random_actions(rng, steps, num_envs, agents, discrete=False):
    if discrete:
        a = rng.integers(-1, 22, (steps, num_envs, agents, 5)).astype(np.float64)
    else:
        a = rng.uniform(-1.2, 1.2, (steps, num_envs, agents, 5))
    a[rng.random(a.shape) < 0.02] = np.nan  # invalid values are clipped, never raised
    return a


EVERY_OBSERVATION = {"pending_setpoint": True, "tariff_ahead_h": 3, "forecast_h": 2}  # noisy forecasts (default)


@pytest.mark.parametrize("settlement,action,close_steps,tie_break,observe", [
    ("average_price", "continuous", 2, "random", None),
    ("exact_price", "discrete", 1, "pro_rata", None),
    ("exact_match", "continuous", 3, "random", None),
    ("average_price", "discrete", 1, "submission", None),
    ("k_double_auction", "continuous", 2, "random", None),
    ("sbba", "discrete", 1, "pro_rata", None),
    ("average_price", "continuous", 2, "random", EVERY_OBSERVATION),
    ("exact_price", "discrete", 3, "pro_rata", EVERY_OBSERVATION)])
def test_every_copy_equals_the_ordinary_simulation(settlement, action, close_steps, tie_break, observe):
    config = community(settlement, action, close_steps, tie_break=tie_break, observe=observe)
    assert compiled_supported(config) is None
    num_envs = 3
    vec = vector_env(config, num_envs=num_envs)
    assert vec.backend == "compiled"
    assert vec.obs_dim == 13 + (0 if observe is None else close_steps + 2 * 3 + 2 * 2)
    actions = random_actions(np.random.default_rng(4), ROUNDS, num_envs, 2, discrete=action == "discrete")
    obs, _ = vec.reset(seed=20)
    singles = [parallel_env(config, backend="simulation") for _ in range(num_envs)]
    for i, env in enumerate(singles):
        o, _ = env.reset(seed=20 + i)  # copy i runs seed 20 + i
        assert np.array_equal(obs[i], np.stack([o["rl_a"], o["rl_b"]]))
    rejected = settled = 0
    for t in range(ROUNDS):
        obs, rewards, terms, truncs, infos = vec.step(actions[t])
        final = infos.get("final_obs", obs)
        for i, env in enumerate(singles):
            o, r, _, _, inf = env.step({"rl_a": actions[t, i, 0], "rl_b": actions[t, i, 1]})
            for j, agent in enumerate(("rl_a", "rl_b")):
                assert r[agent] == rewards[i, j]
                assert np.array_equal(o[agent], final[i, j]), (t, i, agent)
                for key in ("bought_wh", "sold_wh", "grid_import_wh", "grid_export_wh", "net_profit_usd"):
                    assert inf[agent][key] == infos[key][i, j], (t, key)
                assert inf[agent].get("rejected_orders", 0) == infos["rejected_orders"][i, j]
                assert ("clipped" in inf[agent]) == infos["clipped"][i, j]
                rejected += infos["rejected_orders"][i, j]
                settled += infos["bought_wh"][i, j] + infos["sold_wh"][i, j]
            if t < ROUNDS - 1:  # (the last step already reset the vector env for its next episode)
                # every household's battery, not only the agents'
                assert np.array_equal(env._sim.participants.battery.stored_wh, vec._batch.state.stored_wh[i])
                assert np.array_equal(env._sim.participants.shadow_stored_wh, vec._batch.state.shadow_wh[i])
        assert truncs.all() == (t == ROUNDS - 1) and not terms.any()   # the period's end: a time limit
    assert rejected > 0 and settled > 0  # the comparison covered intake refusals and real trades
    for env in singles:
        env.close()


def test_single_env_backends_agree_and_match_a_fixed_price_run(tmp_path, two_houses):
    # the two houses, the buyer an external agent bidding its 1000 Wh at 0.12 $/kWh (action 0, 0 in
    # a [0, 0.24] $/kWh, 2000 Wh window): each round it buys the seller's 600 Wh at (0.12 + 0.10) / 2 = 0.11
    # $/kWh (0.066 $) and imports the other 400 Wh from the grid at 0.1449 $/kWh (0.05796 $)
    two_houses["study"]["days"] = 20 / 1440
    fixed = Simulation(parse_config(two_houses), tmp_path / "fixed").run(plots=False)
    two_houses["participants"]["buyer"]["trader"] = {"type": "external", "min_price": 0.0, "max_price": 0.24,
                                                     "max_quantity_wh": 2000}
    env = parallel_env(two_houses)
    assert env.backend == "compiled"
    env.reset()
    action = {"buyer": np.array([0.0, 0.0, -1.0, -1.0, 0.0], dtype=np.float32)}
    rewards, bought = [], []
    while env.agents:
        _, r, _, _, info = env.step(action)
        rewards.append(r["buyer"])
        bought.append(info["buyer"]["bought_wh"])
    assert bought == [0] + [600] * 19  # round 0 has no contracts (close_steps = 1)
    assert rewards[0] == pytest.approx(-1000 * 0.1449 / 1000)
    assert rewards[1:] == pytest.approx([-(600 * 0.11 / 1000 + 400 * 0.1449 / 1000)] * 19)
    assert sum(rewards) == pytest.approx(-fixed.summary["participants"]["buyer"]["net_cost"], abs=1e-9)


def test_same_seed_same_batch_trajectory_and_copies_differ():
    config = community()
    actions = random_actions(np.random.default_rng(1), 15, 2, 2)

    def run(seed):
        vec = vector_env(config, num_envs=2)
        out = [vec.reset(seed=seed)[0]]
        for t in range(15):
            obs, rewards, _, _, _ = vec.step(actions[t])
            out += [obs, rewards]
        return out

    a, b, c = run(3), run(3), run(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0][0], a[0][1])  # the two copies are different households (seeds 3 and 4)
    assert np.array_equal(c[0][0], a[0][1])  # seed 4 is copy 1 of seed 3


def test_shapes_dtypes_and_clipping_reported():
    vec = vector_env(community(), num_envs=3)
    with pytest.raises(RuntimeError, match="call reset"):
        vec.step(np.zeros((3, 2, 5)))
    obs, infos = vec.reset(seed=0)
    assert obs.shape == (3, 2, 13) and obs.dtype == np.float32
    assert infos["seeds"].tolist() == [0, 1, 2]
    actions = np.zeros((3, 2, 5))
    actions[1, 0] = [5.0, np.nan, -3.0, 0.5, 2.0]
    obs, rewards, terms, truncs, infos = vec.step(actions)
    assert obs.shape == (3, 2, 13) and obs.dtype == np.float32
    assert rewards.shape == (3, 2) and rewards.dtype == np.float64
    assert terms.shape == truncs.shape == (3, 2) and terms.dtype == bool and not truncs.any()
    assert infos["clipped"].tolist() == [[False, False], [True, False], [False, False]]
    assert infos["bought_wh"].dtype == np.int64 and infos["delivered_round"] == 0
    # its bid at 0.3 $/kWh is above the market's max_price 0.25: refused at intake, reported, not raised
    assert infos["rejected_orders"].tolist() == [[0, 0], [1, 0], [0, 0]]
    # the used action is the clipped one: [1, 0, -1, 0.5, 1] = a bid at 0.3 $/kWh for 75 Wh (NaN -> 0, the
    # middle of [0, 150] Wh), an ask at 0 $/kWh for 112 Wh (0.75 x 150 = 112.5, half to even), full charge
    # 5000 W x 60 s = 83.3 -> 83 Wh
    orders, changed, used = vec._community.decode(actions)
    assert used[1, 0].tolist() == [1.0, 0.0, -1.0, 0.5, 1.0]
    bid_price, _, bid_wh, ask_price, _, ask_wh, battery_wh = (x[1, 0] for x in orders)
    assert (bid_price, bid_wh, ask_price, ask_wh, battery_wh) == (pytest.approx(0.3), 75, 0.0, 112, 83)
    with pytest.raises(ValueError, match=r"actions must have shape \(3, 2, 5\)"):
        vec.step(np.zeros((3, 5)))
    for bad in (-1, 2.5, "x"):
        with pytest.raises(ValueError, match="reset\\(seed=...\\) needs a non-negative integer"):
            vec.reset(seed=bad)


def test_auto_reset_starts_the_next_episode_with_new_seeds():
    config = community(rounds=12)
    vec = vector_env(config, num_envs=2)
    vec.reset(seed=5)
    zeros = np.zeros((2, 2, 5))
    for t in range(12):
        obs, _, _, truncs, infos = vec.step(zeros)
        assert truncs.all() == (t == 11)
    # the step that ended the episode gave the next episode's first observations: seeds 5 + 2 + i
    assert infos["final_seeds"].tolist() == [5, 6] and infos["seeds"].tolist() == [7, 8]
    assert infos["_final_obs"].all() and not np.array_equal(infos["final_obs"], obs)
    fresh, _ = vector_env(config, num_envs=2).reset(seed=7)
    assert np.array_equal(obs, fresh)
    # and it continues like a fresh env with those seeds
    obs, rewards, _, _, _ = vec.step(zeros)
    fresh_env = vector_env(config, num_envs=2)
    fresh_env.reset(seed=7)
    obs2, rewards2, _, _, _ = fresh_env.step(zeros)
    assert np.array_equal(obs, obs2) and np.array_equal(rewards, rewards2)
    # reseed=False replays the same days
    same = vector_env(config, num_envs=2, reseed=False)
    first, _ = same.reset(seed=5)
    for _ in range(12):
        obs, _, _, _, infos = same.step(zeros)
    assert infos["seeds"].tolist() == [5, 6] and np.array_equal(obs, first)


def test_simulation_backend_and_unsupported_configs():
    config = community()
    sim_vec = vector_env(config, num_envs=2, backend="simulation")
    comp_vec = vector_env(config, num_envs=2)
    actions = random_actions(np.random.default_rng(2), 10, 2, 2)
    a, _ = sim_vec.reset(seed=1)
    b, _ = comp_vec.reset(seed=1)
    assert np.array_equal(a, b)
    for t in range(10):
        ra = sim_vec.step(actions[t])
        rb = comp_vec.step(actions[t])
        assert np.array_equal(ra[0], rb[0]) and np.array_equal(ra[1], rb[1])
    sim_vec.close()
    q = community().model_dump(by_alias=True)
    q["participants"]["home"]["trader"] = {"type": "q_learning"}
    q = parse_config(q)
    assert "q_learning" in compiled_supported(q)
    assert vector_env(q, num_envs=1).backend == "simulation"
    with pytest.raises(ValueError, match="compiled backend cannot run this config"):
        vector_env(q, num_envs=1, backend="compiled")


def test_gymnasium_vector_view():
    import gymnasium

    vec = vector_env(community(), num_envs=3)
    shared = vec.as_gymnasium()  # every (copy, agent) pair a sub-environment, one shared policy
    assert isinstance(shared, gymnasium.vector.VectorEnv) and shared.num_envs == 6
    obs, _ = shared.reset(seed=0)
    assert obs.shape == (6, 13) and shared.action_space.shape == (6, 5)
    obs, rewards, terms, truncs, infos = shared.step(shared.action_space.sample())
    assert rewards.shape == terms.shape == (6,) and infos["bought_wh"].shape == (6,)
    one = vector_env(community(), num_envs=3).as_gymnasium(agent="rl_a")
    obs, _ = one.reset(seed=0)
    assert obs.shape == (3, 13) and one.single_action_space.shape == (5,)
    assert np.array_equal(obs, vec.reset(seed=0)[0][:, 0])
    with pytest.raises(ValueError, match="not an external agent"):
        vec.as_gymnasium(agent="pv-1")
    # registered: gymnasium.make_vec builds the compiled copies for one learner
    made = gymnasium.make_vec("trexsim/ALEX-v0", num_envs=3, config=community(), agent="rl_a")
    obs, _ = made.reset(seed=0)
    assert made.num_envs == 3 and np.array_equal(obs, vec.reset(seed=0)[0][:, 0])


def test_ledger_columns_are_the_delivered_fields():
    from trexsim.fabric.messages import Delivered

    assert set(K.LEDGER_COLUMNS) <= set(Delivered.__struct_fields__)


# ---------------------------------------------------------------------- history stacking (history=k)
@pytest.mark.parametrize("backend", ["compiled", "simulation"])
def test_vector_history_stacks_and_restarts_at_auto_reset(backend):
    config = community(rounds=5)
    plain = vector_env(config, num_envs=2, backend=backend)
    vec = vector_env(config, num_envs=2, backend=backend, history=3)
    assert vec.observation_space.shape == (2, 2, 39) and vec.single_observation_space.shape == (39,)
    assert vec.obs_dim == 39 and vec.observation_space_of("rl_a") is vec.observation_space_of("rl_a")
    actions = random_actions(np.random.default_rng(4), 6, 2, 2)
    seen = [plain.reset(seed=3)[0]]
    obs, _ = vec.reset(seed=3)
    assert obs.shape == (2, 2, 39) and obs.dtype == np.float32
    assert not obs[..., :26].any() and np.array_equal(obs[..., 26:], seen[0])  # zero-padded start
    for t in range(5):
        p_obs, _, _, _, p_infos = plain.step(actions[t])
        obs, _, _, truncs, infos = vec.step(actions[t])
        assert truncs.all() == (t == 4)
        if t < 4:
            seen.append(p_obs)
            # newest last: this step's, the previous step's, the one before (zeros before the start)
            assert np.array_equal(obs[..., 26:], seen[t + 1]) and np.array_equal(obs[..., 13:26], seen[t])
            assert np.array_equal(obs[..., :13], seen[t - 1] if t >= 1 else np.zeros_like(seen[0]))
    # the last step: final_obs is the stack of the episode's last three observations ...
    final = infos["final_obs"]
    assert np.array_equal(final[..., 26:], p_infos["final_obs"])
    assert np.array_equal(final[..., 13:26], seen[4]) and np.array_equal(final[..., :13], seen[3])
    # ... and obs already the next episode's first, its history cleared (zeros, then the first obs)
    assert not obs[..., :26].any() and np.array_equal(obs[..., 26:], p_obs)
    # the Gymnasium view carries the stacked shape
    view = vec.as_gymnasium()
    assert view.single_observation_space.shape == (39,) and view.reset(seed=3)[0].shape == (4, 39)


def test_vector_history_must_be_at_least_one():
    with pytest.raises(ValueError, match="history must be a whole number"):
        vector_env(community(), num_envs=2, history=0)


def test_a_tc_market_is_never_run_on_the_compiled_backend():
    """The compiled round knows only tariff prices: a TC config (grid prices from predicted powerflow)
    falls back to the simulation backend, whose rewards are billed at the TC prices."""
    pytest.importorskip("opendssdirect", reason="the TC market needs the powerflow extra (pip install 'trexsim[powerflow]')")
    from importlib import resources

    import pyjson5

    cfg = pyjson5.decode((resources.files("trexsim.config") / "examples" / "tc.json").read_text())
    cfg["study"]["days"] = 0.25
    cfg["tc"]["forecast"] = {"type": "perfect"}   # (yesterday's night predicts no congestion in these 6 hours)
    cfg.pop("powerflow")
    cfg["participants"]["rl"] = {"profile": {"type": "realistic", "annual_load_kwh": 5000, "load_scale": 16,
                                             "pv_capacity_kw": 0},
                                 "trader": {"type": "external", "max_price": 0.5, "max_quantity_wh": 500}}
    config = parse_config(cfg)
    assert "market.type 'tc'" in compiled_supported(config)
    vec = vector_env(config, num_envs=1)
    assert vec.backend == "simulation"
    with pytest.raises(ValueError, match="market.type 'tc'"):
        vector_env(config, num_envs=1, backend="compiled")
    env = parallel_env(config)
    env.reset(seed=5)
    hold = {"rl": np.array([-1.0, -1.0, -1.0, -1.0, 0.0])}  # no orders, battery idle: the grid at TC prices
    total = bill = tariff_bill = 0.0
    market = env._sim.delivery  # the prices the run billed: the TC market's schedule
    for _ in range(int(0.25 * 144)):
        _, r, _, _, info = env.step(hold)
        k, imp, exp = info["rl"]["delivered_round"], info["rl"]["grid_import_wh"], info["rl"]["grid_export_wh"]
        total += r["rl"]
        bill += imp * market._buy[k] / 1000 - exp * market._sell[k] / 1000
        tariff_bill += imp * 0.1449 / 1000 - exp * 0.069 / 1000
    env.close()
    assert total == pytest.approx(-bill, rel=1e-9)
    assert abs(bill - tariff_bill) > 0.01  # the TC prices differ from the tariff: the backend matters


def test_make_vec_runs_under_gymnasiums_vector_wrappers():
    """gymnasium.make_vec gives Gymnasium's default auto-reset (next step) and infos as masked arrays, so its
    vector wrappers run on it: NormalizeObservation and FlattenObservation refused the same-step mode, and
    DictInfoToList refused plain ints in infos (issue 18)."""
    import gymnasium
    from gymnasium.wrappers.vector import DictInfoToList, FlattenObservation, NormalizeObservation

    cfg = community(rounds=6)
    made = gymnasium.make_vec("trexsim/ALEX-v0", num_envs=2, config=cfg, agent="rl_a")
    assert made.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP
    twin = vector_env(cfg, num_envs=2)
    obs, infos = made.reset(seed=1)
    twin.reset(seed=1)
    assert infos["delivery_round"].shape == (2,) and infos["_delivery_round"].all()
    zeros = np.zeros((2, 5))
    for t in range(6):
        obs, rewards, terms, truncs, infos = made.step(zeros)
        full = twin._noop.copy()   # the other agent places nothing, as the view has it
        full[:, 0] = 0.0
        t_obs, t_rewards, _, _, t_infos = twin.step(full)
        assert rewards == pytest.approx(t_rewards[:, 0])
    # the step that ends the episode returns its final observations ...
    assert truncs.all() and not terms.any() and np.array_equal(obs, t_infos["final_obs"][:, 0])
    # ... and the next call starts the next episode, whatever the actions: rewards 0, the first observations
    obs, rewards, terms, truncs, _ = made.step(np.ones((2, 5)))
    assert not rewards.any() and not terms.any() and not truncs.any() and np.array_equal(obs, t_obs[:, 0])
    for wrapper in (NormalizeObservation, FlattenObservation, DictInfoToList):
        env = wrapper(gymnasium.make_vec("trexsim/ALEX-v0", num_envs=2, config=cfg, agent="rl_a"))
        env.reset(seed=0)
        for _ in range(14):   # two episodes and their resets
            env.step(env.action_space.sample())
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        vector_env(cfg, num_envs=1).as_gymnasium("rl_a", autoreset_mode="later")
