"""RL environments: API conformance, determinism, the same ledger as a run, clipping, privacy."""

import duckdb
import numpy as np
import pytest

pytest.importorskip("pettingzoo", reason="the rl extra (pettingzoo, gymnasium) is not installed")
from gymnasium.utils.env_checker import check_env  # noqa: E402
from pettingzoo.test import parallel_api_test  # noqa: E402

from trexsim import parse_config  # noqa: E402
from trexsim.envs import gym_env, parallel_env  # noqa: E402
from trexsim.fabric import topics  # noqa: E402
from trexsim.simulation import Simulation  # noqa: E402


def community(rounds=60, action="continuous", agents=2):
    participants = {
        "pv": {"count": 2, "profile": {"type": "realistic", "pv_capacity_kw": 6},
               "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
        "home": {"profile": {"type": "realistic", "pv_capacity_kw": 0}, "trader": {"type": "grid_only"}},
    }
    for i in range(agents):
        participants[f"rl{i}"] = {"profile": {"type": "realistic", "pv_capacity_kw": 5},
                                  "storage": {"capacity_wh": 10000, "power_w": 5000, "policy": "external"},
                                  "trader": {"type": "external", "action": action}}
    return {"study": {"days": rounds / 1440, "seed": 5, "start_datetime": "2021-07-01 10:00:00"},
            "participants": participants}


@pytest.mark.parametrize("action,backend", [("continuous", "compiled"), ("discrete", "compiled"),
                                            ("continuous", "simulation")])
def test_pettingzoo_parallel_api(action, backend):
    env = parallel_env(community(action=action), backend=backend)
    assert env.backend == backend
    parallel_api_test(env, num_cycles=50)
    assert env.observation_space("rl0") is env.observation_space("rl0")


@pytest.mark.parametrize("backend", ["compiled", "simulation"])
def test_gymnasium_check_env(backend):
    env = gym_env(community(agents=1), backend=backend)
    check_env(env, skip_render_check=True)


def rollout(env, seed, policy, steps=10_000):
    obs, _ = env.reset(seed=seed)
    trajectory = []
    while env.agents and steps:
        actions = {a: policy(a, obs[a]) for a in env.agents}
        obs, rewards, _, _, _ = env.step(actions)
        trajectory.append((sorted(rewards.items()), {a: o.tolist() for a, o in obs.items()}))
        steps -= 1
    return trajectory


def test_same_seed_same_trajectory_and_different_seed_differs():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (60, 5)).astype(np.float32)
    counter = {}

    def policy(agent, obs):
        counter[agent] = counter.get(agent, -1) + 1
        return actions[counter[agent] % 60]

    env = parallel_env(community())
    a = rollout(env, 1, policy)
    counter.clear()
    b = rollout(env, 1, policy)
    counter.clear()
    c = rollout(env, 2, policy)
    assert a == b
    assert a != c


def test_scripted_actions_give_the_same_ledger_as_a_fixed_price_run(tmp_path, two_houses):
    # trexsim run of the two houses, versus the buyer as an external agent placing the same orders:
    # bid its forecast load (1000 Wh) at 0.12; with the price window [0, 0.24] and 2000 Wh max these are the
    # action values 0.0 (price) and 0.0 (quantity)
    two_houses["study"]["days"] = 20 / 1440
    fixed = Simulation(parse_config(two_houses), tmp_path / "fixed").run(plots=False)
    two_houses["participants"]["buyer"]["trader"] = {"type": "external", "min_price": 0.0, "max_price": 0.24,
                                                     "max_quantity_wh": 2000}
    env = parallel_env(two_houses, out_dir=tmp_path / "env")
    obs, infos = env.reset()
    settled = []
    env._sim.fabric.subscribe(topics.CLEARED, lambda m: settled.extend(
        zip([m.delivery_round] * len(m.quantity_wh), m.buyer.tolist(), m.seller.tolist(), m.quantity_wh.tolist(),
            m.buyer_price.tolist())))
    total = 0.0
    while env.agents:
        if infos["buyer"]["delivery_round"] < 20:  # the observation is the delivery round's own forecast
            assert obs["buyer"][4] * 2000 == 1000
        obs, rewards, _, _, infos = env.step({"buyer": np.array([0.0, 0.0, -1.0, -1.0, 0.0], dtype=np.float32)})
        total += rewards["buyer"]
    env.close()
    con = duckdb.connect(str(fixed.database), read_only=True)
    ledger = con.execute("SELECT delivery_round, buyer, seller, quantity_wh, buyer_price FROM settlements "
                         "ORDER BY delivery_round").fetchall()
    assert len(ledger) == 19 and ledger[0] == (1, 0, 1, 600, pytest.approx(0.11))
    assert settled == [tuple(row) for row in ledger]
    # the env's rewards add up to the buyer's bill in the fixed-price run
    assert total == pytest.approx(-fixed.summary["participants"]["buyer"]["net_cost"], abs=1e-9)


@pytest.mark.parametrize("backend", ["compiled", "simulation"])
def test_invalid_actions_are_clipped_and_reported(backend):
    env = parallel_env(community(agents=1), backend=backend)
    env.reset(seed=0)
    _, _, _, _, infos = env.step({"rl0": np.array([5.0, np.nan, -3.0, 0.5, 2.0])})
    clipped = infos["rl0"]["clipped"]["action"]
    assert clipped["used"] == [1.0, 0.0, -1.0, 0.5, 1.0]
    # a wrongly shaped action is padded/cut to 5 values and reported, never raised
    _, _, _, _, infos = env.step({"rl0": np.array([[0.1, 0.2, 0.3]])})
    assert infos["rl0"]["clipped"]["shape"] == "expected 5 values"
    _, _, _, _, infos = env.step({"rl0": np.zeros((1, 5))})  # a batch of one is taken as the action
    assert "clipped" not in infos["rl0"]


def test_battery_set_point_is_followed_within_limits():
    cfg = community(agents=1)
    env = parallel_env(cfg)
    env.reset(seed=0)
    soc = []
    for _ in range(20):  # full charge every round: 5000 W x 60 s = 83 Wh per round
        obs, _, _, _, _ = env.step({"rl0": np.array([-1, -1, -1, -1, 1.0], dtype=np.float32)})
        soc.append(float(obs["rl0"][6]))
    stored = np.array(soc) * 10000
    steps = np.diff(stored)
    # the set-point for round d is given in round d - 1 and executed in round d: 83 Wh at the meter, 0.95 stored
    assert np.allclose(steps[2:], 83 * 0.95, atol=0.05)


def test_observations_hold_no_private_state_of_others():
    base = community(agents=1)
    other = community(agents=1)
    other["participants"]["home"]["profile"]["annual_load_kwh"] = 9000  # a grid-only neighbour uses more
    env_a, env_b = parallel_env(base), parallel_env(other)
    obs_a, _ = env_a.reset(seed=3)
    obs_b, _ = env_b.reset(seed=3)
    action = {"rl0": np.zeros(5, dtype=np.float32)}
    for _ in range(30):
        assert np.array_equal(obs_a["rl0"][:9], obs_b["rl0"][:9])  # own forecasts, battery, time, grid prices
        obs_a, _, _, _, _ = env_a.step(action)
        obs_b, _, _, _, _ = env_b.step(action)


# ---------------------------------------------------------------------- history stacking (history=k)
@pytest.mark.parametrize("backend", ["compiled", "simulation"])
def test_history_stacking_conformance(backend):
    env = parallel_env(community(action="discrete"), backend=backend, history=3)
    parallel_api_test(env, num_cycles=50)
    space = env.observation_space("rl0")
    assert space is env.observation_space("rl0") and space.shape == (39,) and space.dtype == np.float32
    single = gym_env(community(agents=1), backend=backend, history=3)
    assert single.observation_space.shape == (39,)
    check_env(single, skip_render_check=True)


@pytest.mark.parametrize("backend", ["compiled", "simulation"])
def test_history_is_the_last_k_observations_oldest_first_zero_padded(backend):
    plain = parallel_env(community(rounds=12), backend=backend)
    stacked = parallel_env(community(rounds=12), backend=backend, history=4)
    rng = np.random.default_rng(3)
    seen = [plain.reset(seed=7)[0]]  # the unstacked observations, step by step
    obs, _ = stacked.reset(seed=7)
    for a in plain.possible_agents:
        assert obs[a].shape == (52,)
        assert not obs[a][:39].any()  # no past at the start: three blocks of zeros
        assert np.array_equal(obs[a][39:], seen[0][a])
    for t in range(1, 13):  # 12 rounds: 12 steps
        actions = {a: rng.uniform(-1, 1, 5).astype(np.float32) for a in plain.possible_agents}
        seen.append(plain.step(actions)[0])
        obs, *_ = stacked.step(actions)
        for a in plain.possible_agents:
            blocks = obs[a].reshape(4, 13)
            for b in range(4):  # block 3 is this step's observation, block 2 the previous step's, ...
                past = t - 3 + b
                expected = seen[past][a] if past >= 0 else np.zeros(13, np.float32)
                assert np.array_equal(blocks[b], expected), (t, a, b)
    assert not stacked.agents  # the episode ended with the plain env's
    again, _ = stacked.reset(seed=7)  # a new episode forgets the old one
    assert not again["rl0"][:39].any() and np.array_equal(again["rl0"][39:], seen[0]["rl0"])


def test_history_must_be_a_whole_number_of_at_least_one():
    for bad in (0, -2, 1.5, "three"):
        with pytest.raises(ValueError, match="history must be a whole number"):
            parallel_env(community(), history=bad)
    with pytest.raises(ValueError, match="history"):
        gym_env(community(agents=1), history=0)


@pytest.mark.parametrize("backend", ["compiled", "simulation"])
def test_reset_without_a_seed_starts_a_new_episode(backend):
    """Gymnasium's semantics: reset() continues the env's sequence of episodes instead of replaying the
    last one (an SB3 loop resets without a seed and would otherwise see one episode forever)."""
    def first_obs(env, **kw):
        obs, infos = env.reset(**kw)
        return obs["rl0"].tolist(), infos["rl0"]["seed"]

    env = parallel_env(community(), backend=backend)
    o5, s5 = first_obs(env)                      # the first reset: the config's study.seed (5)
    o6, s6 = first_obs(env)                      # then the next episode: seed 6
    assert (s5, s6) == (5, 6) and o5 != o6
    o9, s9 = first_obs(env, seed=9)
    o10, s10 = first_obs(env)
    assert (s9, s10) == (9, 10)
    fresh = parallel_env(community(), backend=backend)
    assert first_obs(fresh, seed=6) == (o6, 6)   # an unseeded episode is the seeded one of its seed
    assert first_obs(fresh, seed=10) == (o10, 10)
    assert first_obs(fresh, seed=9) == (o9, 9)   # and a seed starts the sequence again


def test_vector_reset_without_a_seed_continues_the_seed_sequence():
    from trexsim.envs import vector_env

    vec = vector_env(community(), num_envs=3)
    _, infos = vec.reset(seed=4)
    assert infos["seeds"].tolist() == [4, 5, 6]
    _, infos = vec.reset()
    assert infos["seeds"].tolist() == [7, 8, 9]   # the next episode's, as the automatic reset would give
    _, infos = vec.reset(seed=4)
    assert infos["seeds"].tolist() == [4, 5, 6]
    first = vector_env(community(), num_envs=2)
    assert first.reset()[1]["seeds"].tolist() == [5, 6]   # the config's seed the first time


@pytest.mark.parametrize("backend", ["compiled", "simulation"])
def test_observation_bounds_are_tight_and_hold(backend):
    """Each index's bounds follow from the config (docs/envs.md, "Observation"); a whole episode of random
    actions stays inside them, and every copy of the vector env inside its own."""
    from trexsim.envs import vector_env

    cfg = community(rounds=120)
    cfg["market"] = {"grid": {"buy_price": 0.2, "sell_price": 0.05, "tou": [
        {"hours": [17, 18, 19], "buy_price": 0.3, "sell_price": 0.06}]}, "max_price": 1.0, "max_order_wh": 5000}
    env = parallel_env(cfg, backend=backend)
    space = env.observation_space("rl0")
    trader = parse_config(cfg).participants["rl0"].trader
    mp, mq = trader.max_price, trader.max_quantity_wh
    assert space.low.tolist()[:4] == [-1] * 4 and space.high.tolist()[:4] == [1] * 4
    assert space.high[6] == 1 and space.high[11] == 1 and space.high[12] == 1
    assert space.high[7] == pytest.approx(0.3 / mp, rel=1e-5)                   # the dearest tariff price
    assert space.high[9] == pytest.approx(1.0 / mp, rel=1e-5)                   # market.max_price
    assert space.high[10] == pytest.approx(2 * 5000 / mq, rel=1e-5)
    assert np.all(space.low[4:] >= 0) and space.high[4] == 1000
    obs, _ = env.reset(seed=2)
    rng = np.random.default_rng(1)
    seen = 0
    while env.agents:
        for a in env.agents:
            assert env.observation_space(a).contains(obs[a]), (a, obs[a])
        obs, *_ = env.step({a: rng.uniform(-1, 1, 5).astype(np.float32) for a in env.agents})
        seen += 1
    assert seen == 120
    if backend == "compiled":
        vec = vector_env(cfg, num_envs=3)
        o, _ = vec.reset(seed=2)
        for _ in range(60):
            assert vec.observation_space.contains(o)
            o, *_ = vec.step(rng.uniform(-1, 1, (3, 2, 5)))


def test_the_pages_first_example_runs_as_written(tmp_path):
    """docs/envs.md's opening blocks, in a fresh interpreter (so gymnasium.make's module prefix is what
    registers the env): the bundled community-rl example, every env it shows."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "envs.md").read_text()
    blocks = re.findall(r"```(\w+)\n(.*?)```", page, re.S)
    (bash_lang, bash), (py_lang, python) = blocks[0], blocks[1]
    assert (bash_lang, py_lang) == ("bash", "python")
    args = bash.split("#")[0].split()
    assert args[:2] == ["trexsim", "init"]
    run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=300)
    r = subprocess.run([sys.executable, "-m", "trexsim", *args[1:]], **run)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-c", python + "\nprint('ran', vec.num_envs, len(obs), single.spec.id)"], **run)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split()[-4:] == ["ran", "16", "16", "trexsim/ALEX-v0"]


def test_stable_baselines3_trains_on_the_batched_env():
    """sb3_vec_env: SB3's VecEnv over the compiled batch (every (copy, agent) one of SB3's envs); its
    rewards are the vector env's, episodes end with terminal observations, and PPO learns on it."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO

    from trexsim.envs import vector_env
    from trexsim.envs.sb3 import sb3_vec_env

    cfg = community(rounds=30)
    venv = sb3_vec_env(cfg, num_envs=3)
    assert venv.num_envs == 3 * 2 and venv.observation_space.shape == (13,)
    twin = vector_env(cfg, num_envs=3)
    venv.seed(4)
    obs = venv.reset()
    twin_obs, _ = twin.reset(seed=4)
    assert np.array_equal(obs, twin_obs.reshape(6, 13))
    rng = np.random.default_rng(0)
    for t in range(30):
        actions = rng.uniform(-1, 1, (6, 5)).astype(np.float32)
        venv.step_async(actions)
        obs, rewards, dones, infos = venv.step_wait()
        twin_obs, twin_rewards, *_ = twin.step(actions.reshape(3, 2, 5))
        assert rewards == pytest.approx(twin_rewards.reshape(6), abs=1e-6)
        assert len(infos) == 6 and "net_profit_usd" in infos[0]
        if t < 29:
            assert not dones.any()
    assert dones.all() and infos[0]["terminal_observation"].shape == (13,)
    assert all(info["TimeLimit.truncated"] for info in infos)   # a time limit: SB3 bootstraps its value
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=2 * 16 * 6)
    assert model.num_timesteps >= 2 * 16 * 6
    venv.close()


@pytest.mark.parametrize("backend", ["compiled", "simulation"])
def test_the_periods_end_truncates_and_never_terminates(backend):
    from trexsim.envs import vector_env

    env = parallel_env(community(rounds=20), backend=backend)
    env.reset(seed=1)
    ends = []
    while env.agents:
        _, _, terms, truncs, _ = env.step({a: env.action_space(a).sample() for a in env.agents})
        ends.append((any(terms.values()), all(truncs.values())))
    assert ends == [(False, False)] * 19 + [(False, True)]
    vec = vector_env(community(rounds=20), num_envs=2, backend=backend)
    vec.reset(seed=1)
    for t in range(20):
        *_, terms, truncs, infos = vec.step(np.zeros((2, 2, 5)))
        assert not terms.any() and truncs.all() == (t == 19)
    assert "final_obs" in infos
