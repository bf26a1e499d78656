"""A compiled episode loop for markets of Q-learning traders on flat profiles.

The settlement study runs ~40 million market rounds; the general in-process simulation (modules
and messages) runs thousands of rounds a second, so the study runs whole episodes inside one
Numba function. It is the same rules, not a second copy of them: it calls the engine's own
compiled kernels — :func:`trexsim.engine.ties.clear_book_ordered` (ALEX matching under the tie-break rule),
:func:`trexsim.engine.mechanisms.pair_prices` and :func:`~trexsim.engine.mechanisms.add_contract` (settlement prices, contract totals),
:func:`trexsim.engine.delivery._settle` (delivery and net billing) — and the Q-learning
population's :func:`~trexsim.agents.qlearning.choose_actions` and
:func:`~trexsim.agents.qlearning.update_values`, in the order the general round loop calls them,
with the population's own random stream. ``tests/test_fast_market.py`` runs the same scenario
both ways and requires identical settlements and Q-tables.

Scope (checked by :func:`fast_path_supported`): every participant a ``q_learning`` trader with a
flat profile and no battery, flat grid prices, a pairwise mechanism with a compiled price rule,
no ``allowed_prices``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from trexsim.agents.base import trader_kind
from trexsim.agents.qlearning import QLearningTraders, choose_actions, update_values
from trexsim.config.schema import SimulationConfig
from trexsim.engine.delivery import _settle
from trexsim.engine.ties import clear_book_ordered, tie_break_code, tie_key
from trexsim.engine.mechanisms import add_contract, compiled_price_rule, get_mechanism, pair_prices
from trexsim.seeding import participants_rng, population_rngs


def fast_path_supported(config: SimulationConfig) -> str | None:
    """``None`` if :func:`run_fast` can run this config, else the reason it cannot."""
    if len(config.market_list()) > 1:
        return f"markets: {len(config.market_list())} markets (the compiled round has one)"
    mech = get_mechanism(config.market.settlement)
    if compiled_price_rule(mech) is None:  # (a subclass with its own prices or clearing has none)
        return f"settlement {config.market.settlement!r} has no compiled price rule"
    if config.market.grid.tou:
        return "time-of-use grid prices"
    if config.market.allowed_prices is not None:
        return "market.allowed_prices"
    for pid, spec in config.participants.items():
        if not trader_kind(spec.trader.type).study_fast_path:
            return f"participant {pid} is not a q_learning trader"
        if spec.profile.type != "flat":
            return f"participant {pid} does not have a flat profile"
        if spec.storage is not None:
            return f"participant {pid} has a battery"
    return None


@dataclass
class EpisodeTrace:
    """What one episode did, summed over its rounds (arrays over the price grid of member 0)."""

    bid_wh: np.ndarray  # quantity bid at each price index
    ask_wh: np.ndarray  # quantity asked at each price index
    settled_wh: np.ndarray  # quantity settled at each half price index (2P - 1 bins: (bid + ask) / 2)
    buyer_price_wh: np.ndarray  # quantity settled at each bid price index
    seller_price_wh: np.ndarray  # quantity settled at each ask price index
    settled_total_wh: int
    reward_usd: np.ndarray  # per member, the episode's summed rewards


@numba.njit(cache=True, nogil=True)
def _episode(load_wh, gen_wh, close_steps, rounds, buy_price, sell_price, prices, q_bid, q_ask, u, epsilon,
             alpha, gamma, learning, equal_prices, price_rule, tie_break, tie_key, episode, bid_wh, ask_wh, settled_wh,
             buyer_wh, seller_wh, reward_usd, credit_next_action):
    n = load_wh.size
    slots = close_steps + 1
    bought = np.zeros((slots, n), dtype=np.int64)
    sold = np.zeros((slots, n), dtype=np.int64)
    cost = np.zeros((slots, n))
    revenue = np.zeros((slots, n))
    pend_member = np.zeros((slots, n), dtype=np.int64)
    pend_side = np.zeros((slots, n), dtype=np.int64)
    pend_action = np.zeros((slots, n), dtype=np.int64)
    pend_count = np.zeros(slots, dtype=np.int64)
    latest = -1  # the slot of the actions chosen last (credit 'next_action'); -1: none yet
    has_contracts = np.zeros(slots, dtype=np.bool_)
    net = load_wh - gen_wh
    member = np.empty(n, dtype=np.int64)
    side = np.empty(n, dtype=np.int64)
    action = np.empty(n, dtype=np.int64)
    last_action = np.empty(n, dtype=np.int64)
    last_side = np.empty(n, dtype=np.int64)
    last_explored = np.empty(n, dtype=np.bool_)
    pool = np.zeros(n, dtype=np.int64)
    zeros = np.zeros(n, dtype=np.int64)
    settled_total = 0
    for k in range(rounds):
        d = k + close_steps
        # during round k: orders for delivery round d, cleared at the end of round k
        if d < rounds:
            count = choose_actions(q_bid, q_ask, net, u[k], epsilon, member, side, action, last_action, last_side,
                                   last_explored)
            slot = d % slots
            bought[slot, :] = 0
            sold[slot, :] = 0
            cost[slot, :] = 0.0
            revenue[slot, :] = 0.0
            has_contracts[slot] = True
            pc = 0
            for j in range(count):
                if learning[member[j]]:
                    pend_member[slot, pc] = member[j]
                    pend_side[slot, pc] = side[j]
                    pend_action[slot, pc] = action[j]
                    pc += 1
            pend_count[slot] = pc
            latest = slot
            if count > 0:
                participant = member[:count].copy()
                price = np.empty(count)
                qty = np.empty(count, dtype=np.int64)
                for j in range(count):
                    price[j] = prices[member[j], action[j]]
                    x = net[member[j]]
                    qty[j] = x if x > 0 else -x
                    if side[j] == 0:
                        bid_wh[action[j]] += qty[j]
                    else:
                        ask_wh[action[j]] += qty[j]
                bi, ai, q, _ = clear_book_ordered(participant, side[:count].copy(), pool[:count], price, qty,
                                                  zeros[:count], n, equal_prices, 2, tie_break, tie_key, episode, d)
                for t in range(q.size):
                    bp, sp = pair_prices(price_rule, price[bi[t]], price[ai[t]])
                    add_contract(participant[bi[t]], participant[ai[t]], q[t], bp, sp, bought[slot], sold[slot],
                                 cost[slot], revenue[slot])
                    settled_wh[action[bi[t]] + action[ai[t]]] += q[t]
                    buyer_wh[action[bi[t]]] += q[t]
                    seller_wh[action[ai[t]]] += q[t]
                    settled_total += q[t]
        # end of round k: settle delivery round k, reward the orders placed for it
        slot = k % slots
        if has_contracts[slot]:
            b_k, s_k, c_k, r_k = bought[slot], sold[slot], cost[slot], revenue[slot]
        else:
            b_k, s_k, c_k, r_k = zeros, zeros, np.zeros(n), np.zeros(n)
        res = _settle(load_wh, gen_wh, zeros, zeros, b_k, s_k, buy_price, sell_price)
        grid_cost, grid_revenue = res[6], res[7]
        if has_contracts[slot]:
            credit = slot
            if credit_next_action:  # the original's rule: to the actions just chosen, not the ones that earned it
                credit = latest if pend_count[slot] > 0 else -1
            pc = pend_count[credit] if credit >= 0 else 0
            if pc > 0:
                rewards = np.empty(pc)
                for j in range(pc):
                    i = pend_member[credit, j]
                    rewards[j] = (r_k[i] - c_k[i]) + (grid_revenue[i] - grid_cost[i])
                    reward_usd[i] += rewards[j]
                update_values(q_bid, q_ask, pend_member[credit, :pc], pend_side[credit, :pc], pend_action[credit, :pc],
                              rewards, alpha, gamma)
            has_contracts[slot] = False
    return settled_total


def _participant_arrays(config: SimulationConfig):
    members = config.expanded_participants()
    hours = config.study.interval_s / 3600.0
    load = np.array([np.rint(s.profile.load_w * s.profile.load_scale * hours) for _, s in members], dtype=np.int64)
    gen = np.array([np.rint(s.profile.generation_w * s.profile.generation_scale * hours) for _, s in members], dtype=np.int64)
    return [pid for pid, _ in members], [s.trader for _, s in members], load, gen


class FastMarket:
    """Episodes of a Q-learning market, compiled; the population object carries the learning state.

    >>> fm = FastMarket(config)
    >>> trace = fm.run_episode(0)
    """

    def __init__(self, config: SimulationConfig):
        reason = fast_path_supported(config)
        if reason is not None:
            raise ValueError(f"the fast path cannot run this config: {reason}")
        self.config = config
        self.ids, specs, self.load_wh, self.gen_wh = _participant_arrays(config)
        rng = population_rngs(participants_rng(config.study.seed), 1)[0]
        self.population = QLearningTraders(np.arange(len(specs), dtype=np.int64), specs, rng)
        self.population.set_participant_ids(self.ids)
        tick = config.market.price_tick
        # the market books every price snapped to its tick: the same expression as the market module
        self.booked_prices = np.round(self.population.prices / tick) * tick
        mech = get_mechanism(config.market.settlement)
        self.equal_prices = bool(mech.equal_prices)
        self.price_rule = compiled_price_rule(mech)
        self.rounds = config.study.rounds_per_episode
        self.close_steps = config.market.close_steps
        self.tie_break = tie_break_code(config.market.tie_break)
        self.tie_key = tie_key(config.study.seed)

    def run_episode(self, episode: int) -> EpisodeTrace:
        pop = self.population
        pop.reset(episode)
        n, p = pop.q_bid.shape
        draws = max(self.rounds - self.close_steps, 0)
        u = pop.rng.random((draws, n, 2))  # the population's per-round (n, 2) draws, all at once
        bid = np.zeros(p)
        ask = np.zeros(p)
        settled = np.zeros(2 * p - 1)
        buyer = np.zeros(p)
        seller = np.zeros(p)
        reward = np.zeros(n)
        grid = self.config.market.grid
        total = _episode(self.load_wh, self.gen_wh, self.close_steps, self.rounds, float(grid.buy_price),
                         float(grid.sell_price), self.booked_prices, pop.q_bid, pop.q_ask, u, pop.exploration,
                         pop.learning_rate, pop._gamma, pop.learning, self.equal_prices, self.price_rule, self.tie_break, self.tie_key,
                         episode, bid, ask, settled, buyer, seller, reward, pop.credit_next_action)
        return EpisodeTrace(bid, ask, settled, buyer, seller, int(total), reward)
