"""A compiled episode loop for markets of Q-learning traders on flat profiles.

The settlement study runs ~40 million market rounds; the general in-process simulation (modules
and messages) runs thousands of rounds a second, so the study runs whole episodes inside one
Numba function. It is the same round, not a second copy of it: each round is the engine's one round,
:func:`trexsim.engine.step.step` (intake, clearing, contracts, delivery and net billing), with the
Q-learning population's orders given as external orders, chosen before it by the population's own
:func:`~trexsim.agents.qlearning.choose_actions` and learned from after it by
:func:`~trexsim.agents.qlearning.update_values`, with the population's own random stream. ``tests/test_fast_market.py`` runs the same scenario
both ways and requires identical settlements and Q-tables.

Scope (checked by :func:`fast_path_supported`): every participant a ``q_learning`` trader with a
flat profile and no battery, flat grid prices, a mechanism with a compiled clearing (every built-in),
no ``allowed_prices``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from trexsim.agents.base import trader_kind
from trexsim.agents.qlearning import QLearningTraders, choose_actions, update_values
from trexsim.config.schema import SimulationConfig
from trexsim.engine.mechanisms import compiled_clearing, get_mechanism
from trexsim.engine.step import (EXTERNAL, L_GRID_COST, L_GRID_REVENUE, L_MARKET_COST, L_MARKET_REVENUE, RoundInputs,
                                 RoundParams, new_outputs, new_state, new_workspace, reset_state,
                                 step)
from trexsim.engine.ties import tie_break_code, tie_key
from trexsim.seeding import participants_rng, population_rngs


def fast_path_supported(config: SimulationConfig) -> str | None:
    """``None`` if :func:`run_fast` can run this config, else the reason it cannot."""
    if len(config.market_list()) > 1:
        return f"markets: {len(config.market_list())} markets (the compiled round has one)"
    mech = get_mechanism(config.market.settlement)
    if compiled_clearing(mech) is None:  # (a subclass with its own prices or clearing has none; so do plug-ins)
        return f"settlement {config.market.settlement!r} has no compiled clearing"
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
        if spec.devices:
            return f"participant {pid} has devices ({', '.join(d.type for d in spec.devices)})"
    return None


@dataclass
class EpisodeTrace:
    """What one episode did, summed over its rounds (arrays over the price grid of member 0)."""

    bid_wh: np.ndarray  # quantity bid at each price index
    ask_wh: np.ndarray  # quantity asked at each price index
    # the settled energy by the pair's order prices (what the agents chose, not what they paid, except M1 and M3):
    settled_wh: np.ndarray  # at each half price index (2P - 1 bins: (bid + ask) / 2)
    buyer_price_wh: np.ndarray  # at each bid price index
    seller_price_wh: np.ndarray  # at each ask price index
    settled_total_wh: int
    reward_usd: np.ndarray  # per member, the episode's summed rewards
    # money of the settled energy: what buyers paid and sellers received [$], and each side's distance from
    # the competitive-equilibrium price range (:func:`price_gap_per_kwh`), summed over the Wh [$]
    paid_usd: float = 0.0
    received_usd: float = 0.0
    paid_gap_usd: float = 0.0
    received_gap_usd: float = 0.0
    # quantity settled at each price actually paid by the buyer / received by the seller, on the fine bins of
    # :func:`paid_price_bins` (a k-double auction's k x bid + (1 - k) x ask need not be a price of the agents' grid)
    paid_wh: np.ndarray | None = None
    received_wh: np.ndarray | None = None


PAID_BINS_PER_TICK = 20  # prices paid are kept to 1/20 of the market's tick: exact for the midpoint and any k in 0.05 steps


def paid_price_bins(prices: np.ndarray, tick_usd: float) -> tuple[float, float, int]:
    """``(low_usd, bin_usd, bins)``: the fine grid that holds every price a settlement can pay [$/kWh].

    Settlement prices are combinations of booked prices (each the agents' price snapped to ``tick_usd``), so the
    grid runs from the lowest booked price to the highest, a tick of margin either side, in bins of
    ``tick_usd / PAID_BINS_PER_TICK``; a price is kept in its nearest bin (:func:`paid_price_bin`)."""
    low = (np.round(np.min(prices) / tick_usd) - 1) * tick_usd
    high = (np.round(np.max(prices) / tick_usd) + 1) * tick_usd
    bin_usd = tick_usd / PAID_BINS_PER_TICK
    return float(low), float(bin_usd), int(round((high - low) / bin_usd)) + 1


def paid_price_centres(low_usd: float, bin_usd: float, bins: int) -> np.ndarray:
    """The prices of :func:`paid_price_bins`' bins [$/kWh] (what the histograms of prices paid are drawn at)."""
    return low_usd + bin_usd * np.arange(bins)


@numba.njit(cache=True, nogil=True)
def paid_price_bin(price, low_usd, bin_usd, bins):
    """The bin of :func:`paid_price_bins` nearest ``price`` (clipped into the grid)."""
    i = int(np.rint((price - low_usd) / bin_usd))
    return 0 if i < 0 else (bins - 1 if i >= bins else i)


@numba.njit(cache=True, nogil=True)
def record_paid_prices(buyer_price, seller_price, quantity_wh, count, low_usd, bin_usd, paid_wh, received_wh):
    """Add the first ``count`` matches' energy at the price each buyer paid and each seller received: the one
    copy of this both study markets use (the compiled episode and :class:`~trexsim.studies.settlement.SimulatedMarket`),
    so their histograms agree bin for bin."""
    bins = paid_wh.size
    for t in range(count):
        q = quantity_wh[t]
        paid_wh[paid_price_bin(buyer_price[t], low_usd, bin_usd, bins)] += q
        received_wh[paid_price_bin(seller_price[t], low_usd, bin_usd, bins)] += q


@numba.njit(cache=True, nogil=True)
def price_gap_per_kwh(price, low, high):
    """How far ``price`` lies outside the range ``[low, high]`` [$/kWh] (0 inside it)."""
    return low - price if price < low else (price - high if price > high else 0.0)


@numba.njit(cache=True, nogil=True)
def _episode(params, state, inputs, out, work, prices, q_bid, q_ask, u, epsilon, ucb_c, n_bid, n_ask, alpha, gamma,
             learning, bid_wh, ask_wh, settled_wh, buyer_wh, seller_wh, reward_usd, credit_next_action, ce_range, money,
             paid_low_usd, paid_bin_usd, paid_wh, received_wh):
    rounds = params.rounds
    close_steps = params.close_steps
    n = params.agent_index.size  # every participant is an agent: its orders are given as external orders
    slots = close_steps + 1
    pend_member = np.zeros((slots, n), dtype=np.int64)
    pend_side = np.zeros((slots, n), dtype=np.int64)
    pend_action = np.zeros((slots, n), dtype=np.int64)
    pend_count = np.zeros(slots, dtype=np.int64)
    latest = -1  # the slot of the actions chosen last (credit 'next_action'); -1: none yet
    net = inputs.load_wh[0, 0] - inputs.generation_wh[0, 0]  # flat profiles: every round alike
    member = np.empty(n, dtype=np.int64)
    side = np.empty(n, dtype=np.int64)
    action = np.empty(n, dtype=np.int64)
    action_of = np.zeros(n, dtype=np.int64)  # participant -> the price index of its order this round
    last_action = np.empty(n, dtype=np.int64)
    last_side = np.empty(n, dtype=np.int64)
    last_explored = np.empty(n, dtype=np.bool_)
    settled_total = 0
    reward_buffer = np.empty(n)
    for k in range(rounds):
        d = k + close_steps
        # during round k: the agents' orders for delivery round d, cleared at the end of round k
        if d < rounds:
            count = choose_actions(q_bid, q_ask, net, u[k], epsilon, ucb_c, n_bid, n_ask, member, side, action,
                                   last_action, last_side, last_explored)
            slot = d % slots
            pc = 0
            for j in range(count):
                if learning[member[j]]:
                    pend_member[slot, pc] = member[j]
                    pend_side[slot, pc] = side[j]
                    pend_action[slot, pc] = action[j]
                    pc += 1
            pend_count[slot] = pc
            latest = slot
            inputs.bid_wh[0, :] = 0
            inputs.ask_wh[0, :] = 0
            for j in range(count):
                i = member[j]
                price = prices[i, action[j]]
                qty = net[i] if net[i] > 0 else -net[i]
                action_of[i] = action[j]
                if side[j] == 0:
                    inputs.bid_price[0, i] = price
                    inputs.bid_price_booked[0, i] = price
                    inputs.bid_wh[0, i] = qty
                    bid_wh[action[j]] += qty
                else:
                    inputs.ask_price[0, i] = price
                    inputs.ask_price_booked[0, i] = price
                    inputs.ask_wh[0, i] = qty
                    ask_wh[action[j]] += qty
        step(k, params, state, inputs, out, work)
        if d < rounds:
            for t in range(out.match_count[0]):
                b = action_of[out.match_buyer[0, t]]
                a = action_of[out.match_seller[0, t]]
                q = out.match_wh[0, t]
                settled_wh[b + a] += q
                buyer_wh[b] += q
                seller_wh[a] += q
                settled_total += q
                bp = out.match_buyer_price[0, t]
                sp = out.match_seller_price[0, t]
                money[0] += q * bp / 1000.0
                money[1] += q * sp / 1000.0
                money[2] += q * price_gap_per_kwh(bp, ce_range[0], ce_range[1]) / 1000.0
                money[3] += q * price_gap_per_kwh(sp, ce_range[0], ce_range[1]) / 1000.0
            record_paid_prices(out.match_buyer_price[0], out.match_seller_price[0], out.match_wh[0], out.match_count[0],
                               paid_low_usd, paid_bin_usd, paid_wh, received_wh)
        # end of round k: delivery round k settled; reward the orders placed for it
        if k >= close_steps:
            credit = k % slots
            if credit_next_action:  # the original's rule: to the actions just chosen, not the ones that earned it
                credit = latest if pend_count[credit] > 0 else -1
            pc = pend_count[credit] if credit >= 0 else 0
            if pc > 0:
                rewards = reward_buffer[:pc]
                for j in range(pc):
                    row = out.ledger[0, pend_member[credit, j]]
                    rewards[j] = (row[L_MARKET_REVENUE] - row[L_MARKET_COST]) + (row[L_GRID_REVENUE] - row[L_GRID_COST])
                    reward_usd[pend_member[credit, j]] += rewards[j]
                update_values(q_bid, q_ask, pend_member[credit, :pc], pend_side[credit, :pc], pend_action[credit, :pc],
                              rewards, alpha, gamma)
    return settled_total


def competitive_price_range(config: SimulationConfig) -> tuple[float, float]:
    """The competitive-equilibrium price range of a study cell [$/kWh]: every buyer values energy at the grid's
    buy price (what it pays otherwise), every seller at the grid's sell price (what it earns otherwise). More
    supply than demand: the marginal unit is a seller's, the price its value, the sell price; more demand
    than supply: the buy price; as much of each: any price between them (a Walrasian market's prices; e.g.
    Friedman and Rust, The Double Auction Market, 1993)."""
    grid = config.market.grid
    supply = demand = 0.0
    for _, spec in config.expanded_participants():
        net = spec.profile.load_w * spec.profile.load_scale - spec.profile.generation_w * spec.profile.generation_scale
        supply += max(-net, 0.0)
        demand += max(net, 0.0)
    buy, sell = float(grid.buy_price), float(grid.sell_price)
    if supply > demand:
        return sell, sell
    if demand > supply:
        return buy, buy
    return sell, buy


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
        self.equal_prices = bool(getattr(mech, "equal_prices", False))
        self.clearing = compiled_clearing(mech)  # (rule, k)
        self.rounds = R = config.study.rounds_per_episode
        self.close_steps = config.market.close_steps
        m = config.market
        n = len(specs)
        zeros, none = np.zeros(n), np.zeros(n, dtype=np.bool_)
        everyone = np.arange(n, dtype=np.int64)
        # the one round (trexsim.engine.step) with no batteries and every participant an agent placing orders
        self.params = RoundParams(
            R, self.close_steps, zeros, zeros, zeros, np.ones(n), np.ones(n), none, none,
            np.full(n, EXTERNAL, dtype=np.int64), zeros, zeros, zeros, zeros, np.zeros(n, dtype=np.int64),
            np.full(n, np.nan), np.full(n, np.nan), False, everyone, everyone, float(m.min_price), float(m.max_price),
            float(m.max_order_wh), self.equal_prices, *self.clearing, tie_break_code(m.tie_break))
        self.state = new_state(1, n, n, self.close_steps)
        self.out = new_outputs(1, n, n)
        self.work = new_workspace(n)
        self._profiles = (np.ascontiguousarray(np.broadcast_to(self.load_wh, (1, R, n))),
                          np.ascontiguousarray(np.broadcast_to(self.gen_wh, (1, R, n))))
        grid = config.market.grid
        self._prices = (np.full(R, float(grid.buy_price)), np.full(R, float(grid.sell_price)))
        self._orders = tuple(np.zeros((1, n), dtype=dt) for dt in (np.float64, np.float64, np.int64, np.float64,
                                                                   np.float64, np.int64, np.int64))
        self.tie_keys = np.array([tie_key(config.study.seed)], dtype=np.int64)
        self.ce_range = np.array(competitive_price_range(config))
        self.paid_bins = paid_price_bins(self.population.prices, tick)

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
        reset_state(self.state, np.zeros(n))
        inputs = RoundInputs(*self._profiles, *self._prices, self.tie_keys, int(episode), *self._orders)
        money = np.zeros(4)
        low, width, bins = self.paid_bins
        paid, received = np.zeros(bins), np.zeros(bins)
        total = _episode(self.params, self.state, inputs, self.out, self.work, self.booked_prices, pop.q_bid, pop.q_ask, u,
                         pop.exploration, pop.ucb_c, pop.n_bid, pop.n_ask, pop.learning_rate, pop._gamma, pop.learning,
                         bid, ask, settled, buyer, seller,
                         reward, pop.credit_next_action, self.ce_range, money, low, width, paid, received)
        return EpisodeTrace(bid, ask, settled, buyer, seller, int(total), reward, *money.tolist(), paid_wh=paid,
                            received_wh=received)
