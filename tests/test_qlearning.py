"""The Q-learning trader population: arithmetic, exploration, credit assignment, files, learning."""

import copy

import duckdb
import numpy as np
import pytest
from scipy.stats import chi2

from trexsim import parse_config
from trexsim.agents.base import TraderObservation
from trexsim.agents.qlearning import QLearningTraders, choose_actions
from trexsim.config.schema import QLearningTrader
from trexsim.errors import TrexsimError
from trexsim.fabric import topics
from trexsim.fabric.messages import ASK, BID, Delivered
from trexsim.simulation import Simulation

PRICES = {"min_price": 0.07, "max_price": 0.14, "count": 100}


# --------------------------------------------------------------------------- helpers
class ScriptedDraws:
    """Stands in for the population's Generator: returns given draws, records what was asked."""

    def __init__(self, *blocks):
        self.blocks = [np.asarray(b, dtype=float) for b in blocks]
        self.shapes = []

    def random(self, shape):
        self.shapes.append(shape)
        return self.blocks.pop(0)


def spec(**kw):
    return QLearningTrader(type="q_learning", **kw)


def population(n, rng, members=None, **kw):
    members = np.arange(n) if members is None else np.asarray(members)
    return QLearningTraders(members, [spec(**kw)] * n, rng)


def observe(net_wh, delivery_round=1, episode=0):
    net = np.asarray(net_wh, dtype=np.int64)
    z = np.zeros_like(net)
    return TraderObservation(episode, delivery_round - 1, delivery_round, z, z, z, net, z, 0.1449, 0.069)


def delivered(round_, n, episode=0, market_revenue=None, market_cost=None, grid_revenue=None, grid_cost=None):
    z = np.zeros(n, dtype=np.int64)
    f = lambda v: np.zeros(n) if v is None else np.asarray(v, dtype=float)  # noqa: E731
    return Delivered(episode, round_, 0.1449, 0.069, z, z, z, z, z, z, z, z,
                     f(market_cost), f(market_revenue), f(grid_cost), f(grid_revenue), np.zeros(n), 0.0)


def market(sellers, buyers, trader, days, episodes=1, seed=1, settlement="exact_price", close_steps=1):
    """Flat households: ``sellers``/``buyers`` map an id to its Wh per 60 s round."""
    parts = {}
    for pid, wh in sellers.items():
        parts[pid] = {"profile": {"type": "flat", "generation_w": wh * 60}, "trader": copy.deepcopy(trader)}
    for pid, wh in buyers.items():
        parts[pid] = {"profile": {"type": "flat", "load_w": wh * 60}, "trader": copy.deepcopy(trader)}
    return {"study": {"name": "q", "days": days, "episodes": episodes, "seed": seed, "interval_s": 60},
            "market": {"settlement": settlement, "close_steps": close_steps}, "participants": parts,
            "records": {"plots": False}}


def q_trader(**kw):
    return {"type": "q_learning", "prices": dict(PRICES), **kw}


def simulate(cfg, path, **kw):
    sim = Simulation(parse_config(cfg), path)
    result = sim.run(plots=False, **kw)
    return sim, result


def ledger(db):
    with duckdb.connect(str(db), read_only=True) as con:
        orders = con.execute("SELECT * FROM orders ORDER BY episode, round, order_id").fetchall()
        settled = con.execute("SELECT * FROM settlements ORDER BY episode, round, bid_id, ask_id").fetchall()
        money = con.execute("SELECT * FROM deliveries ORDER BY episode, round, participant").fetchall()
    return orders, settled, money


# --------------------------------------------------------------------------- the update
def test_q_update_arithmetic_by_hand():
    # members are participants 3 and 5 of a roster of 6: rewards must be read at those indices
    draws = ScriptedDraws([[0.0, 0.105], [0.9, 0.5]])  # member 0 explores action floor(0.105*100) = 10
    pop = population(2, draws, members=[3, 5], learning_rate=0.1, discount_factor=0.98, exploration=0.3)
    pop.q_ask[0, 10] = 0.5
    pop.q_ask[0, 40] = 1.0
    batch = pop.act(observe([-100, 50], delivery_round=7))
    assert batch.member.tolist() == [0, 1] and batch.side.tolist() == [ASK, BID]
    assert batch.quantity_wh.tolist() == [100, 50]
    assert batch.price[0] == pytest.approx(0.07 + 10 * 0.07 / 99)
    assert pop.last_explored.tolist() == [True, False]
    bid_action = int(pop.last_actions[1])  # all-zero bid table, u = 0.5: the 50th of 100 tied prices
    assert bid_action == 50
    before_ask, before_bid = pop.q_ask.copy(), pop.q_bid.copy()
    pop.on_delivered(delivered(7, 6, market_revenue=[0, 0, 0, 0.012, 0, 0], grid_revenue=[0, 0, 0, 0.003, 0, 0],
                               grid_cost=[0, 0, 0, 0.001, 0, 0.002], market_cost=[0.5, 0, 0, 0, 0, 0.006]))
    # seller: r = 0.012 + 0.003 - 0.001 = 0.014; 0.9 * 0.5 + 0.1 * (0.014 + 0.98 * max(Q) = 1.0) = 0.5494
    assert pop.q_ask[0, 10] == pytest.approx(0.5494, abs=1e-15)
    # buyer: r = -(0.006 + 0.002) = -0.008 on an all-zero table: 0.1 * (-0.008 + 0.98 * 0) = -0.0008
    assert pop.q_bid[1, 50] == pytest.approx(-0.0008, abs=1e-15)
    changed_ask = np.argwhere(pop.q_ask != before_ask).tolist()
    changed_bid = np.argwhere(pop.q_bid != before_bid).tolist()
    assert changed_ask == [[0, 10]] and changed_bid == [[1, 50]]
    assert pop.update_count.tolist() == [1, 1]
    # the same delivery again (a duplicate message) finds nothing pending: no second update
    pop.on_delivered(delivered(7, 6, market_revenue=[0, 0, 0, 1.0, 0, 0]))
    assert pop.q_ask[0, 10] == pytest.approx(0.5494, abs=1e-15)


def test_greedy_update_uses_the_max_before_the_update():
    pop = population(1, ScriptedDraws([[0.5, 0.5]]), learning_rate=0.1, discount_factor=0.98, exploration=0.0)
    pop.q_bid[0, 3] = 2.0
    pop.act(observe([10]))
    assert pop.last_actions.tolist() == [3]
    pop.on_delivered(delivered(1, 1, market_cost=[0.01]))
    assert pop.q_bid[0, 3] == pytest.approx(0.9 * 2.0 + 0.1 * (-0.01 + 0.98 * 2.0), abs=1e-15)  # 1.995


def test_delivered_of_another_episode_is_ignored():
    pop = population(1, ScriptedDraws([[0.5, 0.5]]), exploration=0.0)
    pop.act(observe([-10], delivery_round=4))
    pop.on_delivered(delivered(4, 1, episode=1, market_revenue=[1.0]))
    assert not pop.q_ask.any()
    pop.on_delivered(delivered(4, 1, episode=0, market_revenue=[1.0]))  # still pending for its own episode
    assert pop.q_ask[0, 50] == pytest.approx(0.1)


# --------------------------------------------------------------------------- exploration and ties
def test_one_draw_block_per_round_for_every_member():
    draws = ScriptedDraws(np.full((3, 2), 0.5), np.full((3, 2), 0.5))
    pop = population(3, draws)
    assert pop.act(observe([0, 0, 0])).member.size == 0
    assert pop.act(observe([0, 5, 0])).member.tolist() == [1]
    assert draws.shapes == [(3, 2), (3, 2)]


def test_kernel_matches_the_documented_draw_contract():
    """choose_actions against the module docstring's rule, written out with numpy."""
    rng = np.random.default_rng(11)
    n, P = 400, 12
    q_bid = rng.integers(0, 3, size=(n, P)).astype(float)  # many ties
    q_ask = rng.integers(-2, 1, size=(n, P)).astype(float)
    net = rng.integers(-2, 3, size=n)
    u = rng.random((n, 2))
    eps = rng.random(n) * 0.5
    out = [np.empty(n, np.int64) for _ in range(3)]
    last = [np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, bool)]
    no_ucb, counts = np.zeros(n), np.zeros((n, P), dtype=np.int64)
    count = choose_actions(q_bid, q_ask, net, u, eps, no_ucb, counts, counts.copy(), *out, *last)
    trade = np.flatnonzero(net)
    assert count == trade.size and out[0][:count].tolist() == trade.tolist()
    for j, i in enumerate(trade):
        q = q_ask[i] if net[i] < 0 else q_bid[i]
        if u[i, 0] < eps[i]:
            expected = int(np.floor(u[i, 1] * P))
        else:
            greedy = np.flatnonzero(q == q.max())
            expected = int(greedy[int(np.floor(u[i, 1] * greedy.size))])
        assert out[2][j] == expected and out[1][j] == (ASK if net[i] < 0 else BID)
        assert last[0][i] == expected and last[2][i] == (u[i, 0] < eps[i])
    assert (last[0][net == 0] == -1).all()


def test_epsilon_greedy_frequencies():
    n, rounds = 2000, 50
    pop = population(n, np.random.default_rng(3), exploration=0.3)
    pop.q_ask[:, 7] = 1.0  # one best price per member
    actions, explored = [], []
    for _ in range(rounds):
        pop.act(observe(np.full(n, -20)))
        actions.append(pop.last_actions.copy())
        explored.append(pop.last_explored.copy())
    actions, explored = np.concatenate(actions), np.concatenate(explored)
    # 100 000 draws: the explore share's standard error is 0.0014
    assert explored.mean() == pytest.approx(0.3, abs=0.01)
    assert (actions[~explored] == 7).all()
    counts = np.bincount(actions[explored], minlength=100)
    expected = explored.sum() / 100
    assert ((counts - expected) ** 2 / expected).sum() < chi2.ppf(0.9999, 99)  # uniform over all 100 prices
    assert pop.explore_count.sum() == explored.sum() and pop.order_count.sum() == n * rounds


def test_ties_are_broken_at_random():
    n = 30_000
    pop = population(n, np.random.default_rng(5), exploration=0.0)
    pop.act(observe(np.full(n, 10)))  # all-zero tables: every price is greedy
    counts = np.bincount(pop.last_actions, minlength=100)
    assert counts.min() > 0
    assert ((counts - n / 100) ** 2 / (n / 100)).sum() < chi2.ppf(0.9999, 99)
    pop.q_bid[:, [3, 50, 97]] = 1.0  # three greedy prices
    pop.act(observe(np.full(n, 10)))
    counts = np.bincount(pop.last_actions, minlength=100)
    assert set(np.flatnonzero(counts)) == {3, 50, 97}
    assert counts[[3, 50, 97]] / n == pytest.approx([1 / 3] * 3, abs=0.015)
    pop.q_bid[:, 50] = 1.5  # a single best price with epsilon 0: always chosen
    pop.act(observe(np.full(n, 10)))
    assert (pop.last_actions == 50).all()
    assert not pop.last_explored.any()


# --------------------------------------------------------------------------- annealing and greedy modes
def test_annealing_is_a_function_of_the_episode():
    pop = population(1, np.random.default_rng(0), learning_rate=0.1, exploration=0.2,
                     anneal={"learning_rate": 0.98, "exploration": 0.98, "after_episode": 0})
    for episode in (3, 1, 0, 2):  # out of order on purpose: no state carried between resets
        pop.reset(episode)
        assert pop.learning_rate[0] == pytest.approx(0.1 * 0.98 ** episode, rel=1e-12)
        assert pop.exploration[0] == pytest.approx(0.2 * 0.98 ** episode, rel=1e-12)
    late = population(1, np.random.default_rng(0), learning_rate=0.1, exploration=0.2,
                      anneal={"learning_rate": 0.5, "exploration": 0.98, "after_episode": 2})
    got = []
    for episode in range(5):
        late.reset(episode)
        got.append((late.learning_rate[0], late.exploration[0]))
    assert np.allclose(got, [(0.1, 0.2), (0.1, 0.2), (0.1, 0.2), (0.05, 0.2 * 0.98), (0.025, 0.2 * 0.98 ** 2)],
                       rtol=1e-12, atol=0)


def test_greedy_modes():
    pop = population(1, np.random.default_rng(0), exploration=0.3, greedy_after_episode=1)
    pop.reset(1)
    assert pop.learning.tolist() == [True] and pop.exploration[0] == 0.3
    pop.reset(2)
    assert pop.learning.tolist() == [False] and pop.exploration[0] == 0.0
    off = population(1, np.random.default_rng(0), exploration=0.3, learning=False)
    assert off.learning.tolist() == [False] and off.exploration[0] == 0.0
    off.act(observe([-10], delivery_round=2))
    off.on_delivered(delivered(2, 1, market_revenue=[1.0]))
    assert not off.q_ask.any() and off.update_count[0] == 0


# --------------------------------------------------------------------------- in a simulation
def test_reward_of_delivery_d_updates_the_action_chosen_in_round_d_minus_2(tmp_path):
    # the buyer (participant 0) bids at a fixed price; the learner (participant 1) explores every round
    cfg = market({"seller": 167}, {}, q_trader(exploration=1.0, learning_rate=0.1, discount_factor=0.98),
                 days=40 / 1440, close_steps=2)
    cfg["participants"] = {"buyer": {"profile": {"type": "flat", "load_w": 17 * 60},
                                     "trader": {"type": "fixed_price", "bid_price": 0.11}},
                           **cfg["participants"]}
    sim = Simulation(parse_config(cfg), tmp_path / "r")
    pop = next(p for p in sim.participants.traders if p.kind == "q_learning")
    assert pop.members.tolist() == [1]
    rewards = {}
    sim.fabric.subscribe(topics.DELIVERED, lambda m: rewards.__setitem__(
        m.round, (m.market_revenue_usd[1] - m.market_cost_usd[1]) + (m.grid_revenue_usd[1] - m.grid_cost_usd[1])))
    sim.begin_episode(0)
    chosen, moved = [], 0
    for d in range(40):
        before = pop.q_ask[0].copy()
        assert sim.step()
        chosen.append(int(pop.last_actions[0]))  # placed in round d, for delivery in d + 2
        changed = np.flatnonzero(pop.q_ask[0] != before)
        if d < 2:  # nothing was ordered for rounds 0 and 1
            assert changed.size == 0
            continue
        a = chosen[d - 2]
        assert changed.tolist() == [a], f"delivery {d}: moved {changed.tolist()}, ordered with {a}"
        assert pop.q_ask[0, a] == (1 - 0.1) * before[a] + 0.1 * (rewards[d] + 0.98 * before.max())
        moved += chosen[d - 2] not in (chosen[d - 1], chosen[d])
    assert moved >= 30  # the check could tell the right action from the later ones
    assert len(set(chosen)) > 25


def test_learning_false_never_changes_loaded_tables_and_round_trip(tmp_path):
    trader = q_trader(exploration=0.5)
    sim, res = simulate(market({"s1": 167}, {"b1": 17}, trader, days=90 / 1440, seed=4), tmp_path / "a")
    saved = res.out_dir / "q_tables.npz"
    assert saved.exists()
    pop = sim.participants.traders[0]
    with np.load(saved) as f:
        assert f["participant_ids"].tolist() == pop.participant_ids
        assert np.array_equal(f["prices"], pop.prices) and f["prices"].shape == (2, 100)
        assert np.array_equal(f["q_bid"], pop.q_bid) and np.array_equal(f["q_ask"], pop.q_ask)
        assert f["learning_rate"].tolist() == [0.1, 0.1] and f["exploration"].tolist() == [0.5, 0.5]
        q_bid, q_ask = f["q_bid"].copy(), f["q_ask"].copy()
    assert q_ask[0].any() and q_bid[1].any()  # it learned something worth saving
    evaluate = q_trader(learning=False, q_table=str(saved))
    sim2, res2 = simulate(market({"s1": 167}, {"b1": 17}, evaluate, days=90 / 1440, episodes=2, seed=9), tmp_path / "b")
    pop2 = sim2.participants.traders[0]
    assert np.array_equal(pop2.q_bid, q_bid) and np.array_equal(pop2.q_ask, q_ask)
    assert pop2.explore_count.sum() == 0 and pop2.update_count.sum() == 0
    # greedy: every order at one of its member's best prices (the buyer's untried prices, still 0, tie;
    # its tried ones cost money and are negative)
    with duckdb.connect(str(res2.database), read_only=True) as con:
        orders = con.execute("SELECT participant, price FROM orders").fetchall()
    best = [pop2.prices[0, q_ask[0] == q_ask[0].max()], pop2.prices[1, q_bid[1] == q_bid[1].max()]]
    assert best[0].size == 1 and best[1].size > 1
    for participant, price in orders:
        assert np.abs(best[participant] - price).min() < 5e-5  # the market snaps prices to its 1e-4 tick
    with np.load(res2.out_dir / "q_tables.npz") as f:
        assert np.array_equal(f["q_ask"], q_ask) and f["exploration"].tolist() == [0.0, 0.0]


def test_greedy_after_episode_freezes_the_tables(tmp_path):
    trader = q_trader(exploration=0.5, greedy_after_episode=0)
    cfg = market({"s1": 167}, {"b1": 17}, trader, days=60 / 1440, episodes=3, seed=2)
    sim = Simulation(parse_config(cfg), tmp_path / "r")
    pop = sim.participants.traders[0]
    after_first = {}

    def on_round(episode, round_):
        if episode == 0 and round_ == 60:
            after_first["q"] = (pop.q_bid.copy(), pop.q_ask.copy(), pop.explore_count.sum())

    sim.run(on_round=on_round, plots=False)
    q_bid, q_ask, explored = after_first["q"]
    assert q_ask.any() and explored > 0
    assert np.array_equal(pop.q_bid, q_bid) and np.array_equal(pop.q_ask, q_ask)
    assert pop.explore_count.sum() == explored


def test_bad_table_files_are_named(tmp_path):
    trader = q_trader()
    sim, res = simulate(market({"s1": 167}, {"b1": 17}, trader, days=5 / 1440), tmp_path / "a")
    saved = res.out_dir / "q_tables.npz"
    ids = sim.participants.traders[0].participant_ids

    def attempt(path, **kw):
        cfg = market({"s1": 167}, {"b1": 17}, q_trader(q_table=str(path), **kw), days=5 / 1440)
        Simulation(parse_config(cfg), tmp_path / "b").run(plots=False)

    other = tmp_path / "other.npz"
    with np.load(saved) as f:
        np.savez(other, **{**dict(f), "participant_ids": np.array([ids[0], "someone-else"])})
    with pytest.raises(TrexsimError, match=rf"other\.npz.*{ids[1]}"):
        attempt(other)
    with pytest.raises(TrexsimError, match=r"other\.npz.*count is 50"):
        attempt(other, prices={**PRICES, "count": 50})  # checked before the ids: s1 is in the file
    with pytest.raises(TrexsimError, match=r"missing\.npz.*not found"):
        attempt(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip file")
    with pytest.raises(TrexsimError, match=r"junk\.npz"):
        attempt(junk)
    cut = tmp_path / "cut.npz"
    with np.load(saved) as f:
        np.savez(cut, **{**dict(f), "q_bid": f["q_bid"][:, :50]})
    with pytest.raises(TrexsimError, match=r"cut\.npz: q_bid has shape \(2, 50\)"):
        attempt(cut)
    attempt(res.out_dir)  # a run folder holding q_tables.npz is accepted too


def test_price_grids_must_share_a_count():
    with pytest.raises(TrexsimError, match="prices.count"):
        QLearningTraders(np.arange(2), [spec(), spec(prices={**PRICES, "count": 11})], np.random.default_rng(0))


def test_participant_ids_name_the_saved_rows(tmp_path):
    pop = QLearningTraders(np.array([2, 4]), [spec(), spec()], np.random.default_rng(0))
    assert pop.participant_ids == ["member-2", "member-4"]
    pop.participant_ids = ["h2", "h4"]
    with pytest.raises(TrexsimError, match="2 distinct"):
        pop.set_participant_ids(["h2", "h2"])
    path, = pop.save(tmp_path)
    with np.load(path) as f:
        assert f["participant_ids"].tolist() == ["h2", "h4"]


def test_same_seed_same_run_other_seed_differs(tmp_path):
    trader = q_trader(exploration=0.3)
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        sim, res = simulate(market({"s1": 167, "s2": 167}, {"b1": 17, "b2": 17}, trader, days=120 / 1440,
                                   episodes=2, seed=seed), tmp_path / name)
        pop = sim.participants.traders[0]
        runs.append((pop.q_bid.copy(), pop.q_ask.copy(), ledger(res.database)))
    (bid_a, ask_a, led_a), (bid_b, ask_b, led_b), (bid_c, ask_c, led_c) = runs
    assert np.array_equal(bid_a, bid_b) and np.array_equal(ask_a, ask_b) and led_a == led_b
    assert not np.array_equal(ask_a, ask_c) and led_a[0] != led_c[0]


def test_sellers_learn_to_ask_low_under_oversupply(tmp_path):
    """2 sellers of 167 Wh and 2 buyers of 17 Wh a minute, M3: the sellers undercut each other.

    With the paper's alpha 0.1 and gamma 0.98 the constant grid part of the reward
    (~$0.0115 a round) swamps the price-dependent part (< $0.0024) until every price has
    been tried often: that needs the paper's weeks of training. alpha 1 and gamma 0 make
    Q(a) the last reward of price a, so four days suffice; 150 of 150 seeds pass.
    """
    trader = q_trader(learning_rate=1.0, discount_factor=0.0, exploration=0.3)
    cfg = market({"s1": 167, "s2": 167}, {"b1": 17, "b2": 17}, trader, days=2, episodes=2, seed=12)
    cfg["records"]["level"] = "summary"
    sim, _ = simulate(cfg, tmp_path / "r")
    pop = sim.participants.traders[0]
    greedy_asks = pop.prices[[0, 1], pop.q_ask[[0, 1]].argmax(axis=1)]
    assert (greedy_asks < 0.105).all(), greedy_asks  # the lower half of 0.07 ... 0.14 $/kWh


def test_ucb1_by_hand():
    """UCB1: untried prices first (the floor(u m)-th of the m untried), then the highest Q + c sqrt(ln t / n)."""
    from trexsim.agents.qlearning import ucb1_action

    counts = np.array([3, 0, 0], dtype=np.int64)
    assert ucb1_action(np.zeros(3), counts, 1.0, 0.6) == 2 and counts.tolist() == [3, 0, 1]   # floor(0.6 x 2) = 1
    # t = 17: 0.5 + sqrt(ln 17 / 10) = 1.032, 0.2 + sqrt(ln 17) = 1.883, 0.9 + sqrt(ln 17 / 5) = 1.653
    counts = np.array([10, 1, 5], dtype=np.int64)
    assert ucb1_action(np.array([0.5, 0.2, 0.9]), counts, 1.0, 0.0) == 1 and counts.tolist() == [10, 2, 5]
    # a small bonus: the greedy price wins
    assert ucb1_action(np.array([0.5, 0.2, 0.9]), np.array([10, 1, 5]), 0.01, 0.0) == 2


def test_ucb1_traders_try_every_price_then_settle_on_the_best():
    """A population of UCB1 members: in the first P orders each price exactly once, greedy members (evaluation)
    take no bonus, and the configuration's errors name the key."""
    spec = parse_config({"participants": {"b": {"profile": {"type": "flat", "load_w": 600},
                                                "trader": {"type": "q_learning", "policy": "ucb1", "ucb_c": 0.5,
                                                           "prices": {"min_price": 0.07, "max_price": 0.14,
                                                                      "count": 5}}}}}).participants["b"].trader
    pop = QLearningTraders(np.array([0]), [spec], np.random.default_rng(0))
    chosen = [int(pop.act(observe([10])).price[0] * 1000 + 0.5) for _ in range(5)]
    assert sorted(chosen) == [70, 88, 105, 123, 140] and pop.n_bid.tolist() == [[1, 1, 1, 1, 1]]
    pop.q_bid[0] = [0.0, 0.0, 0.3, 0.0, 0.0]
    pop.act(observe([10]))
    assert pop.n_bid[0, 2] == 2      # every count 1: the bonus is alike, the value decides
    with pytest.raises(Exception, match="ucb_c"):
        parse_config({"participants": {"b": {"trader": {"type": "q_learning", "policy": "ucb1", "ucb_c": -1}}}})
