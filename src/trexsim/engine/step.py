"""One market round of a community, written once: :func:`step` over ``N`` independent copies.

``step(k, params, state, inputs, out)`` runs round ``k`` of every copy in one compiled call. Its
arguments are named records (``NamedTuple`` of arrays, which Numba passes as typed tuples):

- :class:`RoundParams`: what does not change during a run (batteries, traders, market rules);
- :class:`RoundState`: what one round leaves to the next (stored energy, the contracts of the
  delivery rounds still ahead, battery plans and set-points), updated in place;
- :class:`RoundInputs`: what comes from outside (profiles, grid prices, the tie-break keys, the
  episode, and the orders and set-points of external traders for this round);
- :class:`RoundOutputs`: what the round produced (delivery round ``k``'s ledger per agent, the
  agents' refused orders, and the matches of the book cleared this round).

The round, in the order the modules of the general simulation run it (``modules/participants.py``,
``modules/market.py``, ``modules/delivery.py``), built from the engine's kernels, each written once:

1. start of round k: every battery tracks its contracts for round k
   (:func:`trexsim.devices.battery.dispatch_and_step`; external batteries follow the set-point their agent
   gave for round k), the grid-only shadow battery runs, the meters of round k are read;
2. during round k (while ``d = k + close_steps`` is inside the episode): every household plans its battery
   for round d from its forecast (:func:`~trexsim.devices.battery.stored_after_committed`), fixed-price
   traders place their residual and spare battery discharge
   (:func:`trexsim.agents.baselines.residual_order`, :func:`~trexsim.agents.baselines.battery_order`),
   external traders the orders in ``inputs``; the book goes through the intake checks
   (:func:`trexsim.engine.intake._codes`) in submission order (by participant, then order within its batch);
3. end of round k: round d's book is cleared (:func:`trexsim.engine.mechanisms.clear_book_priced`, the
   mechanism's compiled rule: a pairwise price rule, the k-double auction's uniform price or SBBA) and the
   contracts totalled by :func:`~trexsim.engine.mechanisms.add_contract`), then delivery round k is settled against the meters
   (:func:`trexsim.engine.delivery.settle_participant`).

Drivers: the compiled RL environments (``trexsim.envs._core.CompiledBatch``, N copies, observations from
the state afterwards) and the settlement study (``trexsim.studies.fast_market``: one copy, Q-learning traders
placing their orders as external orders). ``tests/test_envs_vector.py`` and ``tests/test_fast_market.py``
require both to give exactly the general simulation's ledgers.

Trader codes: :data:`NO_ORDERS` (grid-only), :data:`FIXED_PRICE`, :data:`EXTERNAL`.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from trexsim.agents.baselines import battery_order, residual_order
from trexsim.devices.battery import dispatch_and_step, spare_discharge_wh, stored_after_committed
from trexsim.engine.delivery import settle_participant
from trexsim.engine.intake import _codes_into
from trexsim.engine.mechanisms import ClearingWork, add_contract, clear_book_priced_into, new_clearing_work

NO_ORDERS, FIXED_PRICE, EXTERNAL = 0, 1, 2
BID, ASK = 0, 1
NON_DISPATCH, DISPATCH = 0, 1
N_POOLS = 2

# the columns of the per-agent ledger of the settled delivery round (RoundOutputs.ledger)
(L_MARKET_COST, L_MARKET_REVENUE, L_GRID_COST, L_GRID_REVENUE, L_GRID_ONLY_COST, L_BOUGHT, L_SOLD, L_IMPORT,
 L_EXPORT) = range(9)
LEDGER_COLUMNS = ("market_cost_usd", "market_revenue_usd", "grid_cost_usd", "grid_revenue_usd", "grid_only_cost_usd",
                  "bought_wh", "sold_wh", "grid_import_wh", "grid_export_wh")


class RoundParams(NamedTuple):
    """A community's fixed description: per participant ``(n,)`` unless noted."""

    rounds: int                          # rounds per episode
    close_steps: int                     # a round's orders deliver close_steps rounds later
    capacity_wh: np.ndarray              # battery (0: none)
    charge_limit_wh: np.ndarray          # per round, at the meter
    discharge_limit_wh: np.ndarray
    efficiency: np.ndarray               # one-way
    retention: np.ndarray                # self-discharge factor per round
    active: np.ndarray                   # bool: the battery runs self-consumption
    external_battery: np.ndarray         # bool: the battery follows its agent's set-points
    trader: np.ndarray                   # NO_ORDERS, FIXED_PRICE or EXTERNAL
    fixed_bid_price: np.ndarray          # $/kWh, as configured and as booked (on the market's tick)
    fixed_bid_price_booked: np.ndarray
    fixed_ask_price: np.ndarray
    fixed_ask_price_booked: np.ndarray
    bid_pool: np.ndarray                 # NON_DISPATCH or DISPATCH
    battery_ask_price: np.ndarray        # NaN: the trader offers no battery energy
    battery_ask_price_booked: np.ndarray
    offers_battery: bool                 # any trader offers battery energy
    agent_of: np.ndarray                 # participant -> agent index (-1: not an agent)
    agent_index: np.ndarray              # (agents,) agent -> participant
    min_price: float                     # market intake: $/kWh
    max_price: float
    max_order_wh: float
    equal_prices: bool                   # the mechanism matches only equal prices
    price_rule: int                      # trexsim.engine.mechanisms.compiled_clearing: the rule code
    price_k: float                       # and its k (the k-double auction's; 0 otherwise)
    tie_break: int                       # trexsim.engine.ties tie-break code


class RoundState(NamedTuple):
    """What a round leaves to the next, per copy; ``slots = close_steps + 1`` delivery rounds in flight."""

    stored_wh: np.ndarray                # (N, n) battery energy now
    shadow_wh: np.ndarray                # (N, n) the grid-only shadow battery
    c_bought: np.ndarray                 # (N, slots, n) int64 contracts of each delivery round in flight
    c_sold: np.ndarray
    c_cost: np.ndarray                   # (N, slots, n) $
    c_revenue: np.ndarray
    has_contracts: np.ndarray            # (N, slots) bool
    plan_delta: np.ndarray               # (N, slots, n) planned change of stored energy
    has_plan: np.ndarray                 # (N, slots) bool
    setpoint: np.ndarray                 # (N, slots, agents) int64 external battery set-points
    has_setpoint: np.ndarray             # (N, slots) bool
    cleared: np.ndarray                  # (N, 2 + 2 agents) the last cleared round: mean price, energy,
                                         # then the agents' bought and sold energy


class RoundInputs(NamedTuple):
    """What comes from outside; the action arrays are (N, agents) and are read in the round given."""

    load_wh: np.ndarray                  # (N, rounds, n) whole Wh
    generation_wh: np.ndarray
    buy_price: np.ndarray                # (rounds,) $/kWh
    sell_price: np.ndarray
    tie_keys: np.ndarray                 # (N,) each copy's tie-break key (from its seed)
    episode: int                         # for the tie-break draws
    bid_price: np.ndarray                # as given (intake checks) and as booked (clearing)
    bid_price_booked: np.ndarray
    bid_wh: np.ndarray                   # int64; 0: no bid
    ask_price: np.ndarray
    ask_price_booked: np.ndarray
    ask_wh: np.ndarray
    battery_wh: np.ndarray               # int64 set-point for the delivery round (+ charge)


class RoundOutputs(NamedTuple):
    """What round k produced, per copy."""

    ledger: np.ndarray                   # (N, agents, 9) delivery round k (LEDGER_COLUMNS)
    rejected: np.ndarray                 # (N, agents) int64 the agent's orders refused at intake
    match_count: np.ndarray              # (N,) matches of the book cleared (delivery round k + close_steps)
    match_buyer: np.ndarray              # (N, 2 n) int64 participants, in matching order
    match_seller: np.ndarray
    match_wh: np.ndarray
    match_buyer_price: np.ndarray        # (N, 2 n) $/kWh
    match_seller_price: np.ndarray


def new_state(n_copies: int, n: int, agents: int, close_steps: int) -> RoundState:
    """An empty state (every battery empty: set ``stored_wh`` and ``shadow_wh`` before the first round)."""
    N, slots = int(n_copies), int(close_steps) + 1
    return RoundState(np.zeros((N, n)), np.zeros((N, n)), np.zeros((N, slots, n), dtype=np.int64),
                      np.zeros((N, slots, n), dtype=np.int64), np.zeros((N, slots, n)), np.zeros((N, slots, n)),
                      np.zeros((N, slots), dtype=np.bool_), np.zeros((N, slots, n)), np.zeros((N, slots), dtype=np.bool_),
                      np.zeros((N, slots, agents), dtype=np.int64), np.zeros((N, slots), dtype=np.bool_),
                      np.zeros((N, 2 + 2 * agents)))


def reset_state(state: RoundState, stored_wh: np.ndarray) -> None:
    """Start an episode: batteries at ``stored_wh`` (n,), no contracts, plans or set-points in flight."""
    state.stored_wh[:] = stored_wh
    state.shadow_wh[:] = stored_wh
    for arr in (state.has_contracts, state.has_plan, state.has_setpoint, state.cleared):
        arr[:] = 0


def new_outputs(n_copies: int, n: int, agents: int) -> RoundOutputs:
    N, cap = int(n_copies), 2 * int(n)
    return RoundOutputs(np.zeros((N, agents, len(LEDGER_COLUMNS))), np.zeros((N, agents), dtype=np.int64),
                        np.zeros(N, dtype=np.int64), np.zeros((N, cap), dtype=np.int64),
                        np.zeros((N, cap), dtype=np.int64), np.zeros((N, cap), dtype=np.int64), np.zeros((N, cap)),
                        np.zeros((N, cap)))


class Workspace(NamedTuple):
    """Scratch buffers of one round (their contents mean nothing between rounds; the zeros stay zero)."""

    zeros_i: np.ndarray
    zeros_f: np.ndarray
    o_part: np.ndarray                   # (2 n,) the round's orders, before and after intake
    o_side: np.ndarray
    o_pool: np.ndarray
    o_price: np.ndarray
    o_booked: np.ndarray
    o_qty: np.ndarray
    o_qty_f: np.ndarray
    placed: np.ndarray                   # zeros: every order of the book placed in the same round
    codes: np.ndarray                    # int8 intake codes
    need: np.ndarray                     # (n,)
    residual_k: np.ndarray
    residual: np.ndarray
    clearing: ClearingWork               # the clearing's buffers (a book has at most 2 n orders)


def new_workspace(n: int) -> Workspace:
    cap = 2 * int(n)
    i64 = np.int64
    return Workspace(np.zeros(n, dtype=i64), np.zeros(n), np.zeros(cap, dtype=i64), np.zeros(cap, dtype=i64),
                     np.zeros(cap, dtype=i64), np.zeros(cap), np.zeros(cap), np.zeros(cap, dtype=i64), np.zeros(cap),
                     np.zeros(cap, dtype=i64), np.zeros(cap, dtype=np.int8), np.zeros(n, dtype=i64),
                     np.zeros(n, dtype=i64), np.zeros(n, dtype=i64), new_clearing_work(cap))


@numba.njit(cache=True, nogil=True)
def _external_order(i, side, price, booked, quantity_wh, o_part, o_side, o_pool, o_price, o_booked, o_qty, count):
    """An external agent's order for participant ``i`` (none when ``quantity_wh`` is 0), in the
    non-dispatchable pool, written at ``o_*[count]``; returns the new count."""
    if quantity_wh <= 0:
        return count
    o_part[count] = i
    o_side[count] = side
    o_pool[count] = NON_DISPATCH
    o_price[count] = price
    o_booked[count] = booked
    o_qty[count] = quantity_wh
    return count + 1


@numba.njit(cache=True, nogil=True)
def step(k, params, state, inputs, out, work):
    """Round ``k`` of every copy (see the module's docstring); fills ``out`` and updates ``state``.
    ``work``: the round's scratch buffers (:func:`new_workspace`), so that a round allocates little."""
    # the records' fields as locals: read once a round, not once an access
    (rounds, close_steps, capacity_wh, charge_limit_wh, discharge_limit_wh, efficiency, retention, active,
     external_battery, trader, fixed_bid_price, fixed_bid_price_booked, fixed_ask_price,
     fixed_ask_price_booked, bid_pool, battery_ask_price, battery_ask_price_booked, offers_battery, agent_of,
     agent_index, min_price, max_price, max_order_wh, equal_prices, price_rule, price_k, tie_break) = params
    (stored_wh, shadow_wh, c_bought, c_sold, c_cost, c_revenue, has_contracts, plan_delta, has_plan, setpoint,
     has_setpoint, cleared) = state
    (load_wh, generation_wh, buy_price, sell_price, tie_keys, episode, bid_price, bid_price_booked, bid_wh,
     ask_price, ask_price_booked, ask_wh, battery_wh) = inputs
    (ledger, rejected, match_count, match_buyer, match_seller, match_wh, match_buyer_price, match_seller_price) = out
    w = work
    n_copies = load_wh.shape[0]
    n = load_wh.shape[2]
    a_n = agent_index.size
    slots = close_steps + 1
    sk = k % slots
    d = k + close_steps
    sd = d % slots
    zeros_i, zeros_f = w.zeros_i, w.zeros_f
    o_part, o_side, o_pool, o_price, o_booked, o_qty = w.o_part, w.o_side, w.o_pool, w.o_price, w.o_booked, w.o_qty
    o_qty_f, placed, codes = w.o_qty_f, w.placed, w.codes
    need, residual_k, residual = w.need, w.residual_k, w.residual
    batteries = False  # a community without batteries skips the battery kernel (it would give zeros)
    for i in range(n):
        if capacity_wh[i] > 0.0:
            batteries = True
    for e in range(n_copies):
        load_k = load_wh[e, k]
        gen_k = generation_wh[e, k]
        # ---- start of round k: batteries and meters (Participants._meter)
        if has_contracts[e, sk]:
            bought_k = c_bought[e, sk]
            sold_k = c_sold[e, sk]
        else:
            bought_k = zeros_i
            sold_k = zeros_i
        for i in range(n):
            residual_k[i] = load_k[i] - gen_k[i]
            need[i] = residual_k[i] - (bought_k[i] - sold_k[i])
        for j in range(a_n):
            rejected[e, j] = 0
            i = agent_index[j]
            if external_battery[i]:
                # a set-point of +x Wh (charge) is a need of -x for the dispatch kernel
                need[i] = -setpoint[e, sk, j] if has_setpoint[e, sk] else 0
        has_setpoint[e, sk] = False
        if batteries:
            charge, discharge, after = dispatch_and_step(need, stored_wh[e], capacity_wh, charge_limit_wh,
                                                         discharge_limit_wh, efficiency, retention, active)
            stored_wh[e, :] = after
            c0, d0, shadow_after = dispatch_and_step(residual_k, shadow_wh[e], capacity_wh, charge_limit_wh,
                                                     discharge_limit_wh, efficiency, retention, active)
            shadow_wh[e, :] = shadow_after
        else:  # what the battery kernel gives a community without batteries, without calling it
            charge, discharge, c0, d0 = zeros_i, zeros_i, zeros_i, zeros_i
        has_plan[e, sk] = False
        # ---- during round k: orders for delivery round d (Participants._trade)
        count = 0
        if d < rounds:
            load_f = load_wh[e, d]
            gen_f = generation_wh[e, d]
            for i in range(n):
                residual[i] = load_f[i] - gen_f[i]
            if batteries:
                stored = stored_wh[e].copy()
                for r in range(k + 1, d):  # each round between, as its contracts will leave the battery
                    sr = r % slots
                    delta = plan_delta[e, sr] if has_plan[e, sr] else zeros_f
                    stored = stored_after_committed(load_wh[e, r], generation_wh[e, r],
                                                    c_bought[e, sr] if has_contracts[e, sr] else zeros_i,
                                                    c_sold[e, sr] if has_contracts[e, sr] else zeros_i,
                                                    external_battery, delta, stored, capacity_wh,
                                                    charge_limit_wh, discharge_limit_wh, efficiency,
                                                    retention, active)
                c_plan, d_plan, planned_after = dispatch_and_step(residual, stored, capacity_wh, charge_limit_wh,
                                                                  discharge_limit_wh, efficiency, retention,
                                                                  active)
                for i in range(n):
                    plan_delta[e, sd, i] = planned_after[i] - stored[i]
                spare = spare_discharge_wh(stored, discharge_limit_wh, efficiency, d_plan, active)
            else:
                c_plan, d_plan, spare = zeros_i, zeros_i, zeros_i
                plan_delta[e, sd, :] = 0.0
            has_plan[e, sd] = True
            for i in range(n):
                kind = trader[i]
                if kind == FIXED_PRICE:
                    first = count
                    count = residual_order(i, residual[i] + (c_plan[i] - d_plan[i]), fixed_bid_price,
                                           fixed_ask_price, bid_pool, o_part, o_side, o_pool, o_price, o_qty, count)
                    if offers_battery:
                        count = battery_order(i, spare[i], battery_ask_price, o_part, o_side, o_pool, o_price, o_qty,
                                              count)
                    for t in range(first, count):  # the same orders at the prices as booked (on the tick)
                        if o_side[t] == BID:
                            o_booked[t] = fixed_bid_price_booked[i]
                        elif o_pool[t] == DISPATCH:
                            o_booked[t] = battery_ask_price_booked[i]
                        else:
                            o_booked[t] = fixed_ask_price_booked[i]
                elif kind == EXTERNAL:
                    j = agent_of[i]
                    count = _external_order(i, BID, bid_price[e, j], bid_price_booked[e, j], bid_wh[e, j], o_part,
                                            o_side, o_pool, o_price, o_booked, o_qty, count)
                    count = _external_order(i, ASK, ask_price[e, j], ask_price_booked[e, j], ask_wh[e, j], o_part,
                                            o_side, o_pool, o_price, o_booked, o_qty, count)
            for j in range(a_n):
                setpoint[e, sd, j] = battery_wh[e, j]
            has_setpoint[e, sd] = True
        # intake (Market.validate): the orders that fail a check are dropped, the rest booked
        accepted = 0
        if count > 0:
            for t in range(count):
                o_qty_f[t] = o_qty[t]
            _codes_into(codes, o_part[:count], o_side[:count], o_pool[:count], o_price[:count], o_qty_f[:count], n,
                        N_POOLS, min_price, max_price, max_order_wh)
            for t in range(count):
                if codes[t] == 0:
                    o_part[accepted] = o_part[t]
                    o_side[accepted] = o_side[t]
                    o_pool[accepted] = o_pool[t]
                    o_booked[accepted] = o_booked[t]
                    o_qty[accepted] = o_qty[t]
                    accepted += 1
                elif trader[o_part[t]] == EXTERNAL:
                    rejected[e, agent_of[o_part[t]]] += 1
        # ---- end of round k: clear delivery round d (Market), then settle round k (ImbalanceSettlement)
        match_count[e] = 0
        if d < rounds:
            b_d = c_bought[e, sd]
            s_d = c_sold[e, sd]
            cost_d = c_cost[e, sd]
            rev_d = c_revenue[e, sd]
            b_d[:] = 0
            s_d[:] = 0
            cost_d[:] = 0.0
            rev_d[:] = 0.0
            has_contracts[e, sd] = True
            volume = 0
            value = 0.0
            if accepted > 0:
                part = o_part[:accepted]
                price = o_booked[:accepted]
                # (the matching reads the book, never writes it: views of the order buffers)
                cw = w.clearing
                m = clear_book_priced_into(part, o_side[:accepted], o_pool[:accepted], price, o_qty[:accepted],
                                           placed[:accepted], n, price_rule, price_k, equal_prices, N_POOLS, tie_break,
                                           tie_keys[e], episode, d, cw)
                bi, ai, q = cw.bi, cw.ai, cw.q
                for t in range(m):
                    bp = cw.buyer_price[t]
                    sp = cw.seller_price[t]
                    add_contract(part[bi[t]], part[ai[t]], q[t], bp, sp, b_d, s_d, cost_d, rev_d)
                    match_buyer[e, t] = part[bi[t]]
                    match_seller[e, t] = part[ai[t]]
                    match_wh[e, t] = q[t]
                    match_buyer_price[e, t] = bp
                    match_seller_price[e, t] = sp
                    volume += q[t]
                    value += q[t] * (bp + sp) / 2
                match_count[e] = m
            cleared[e, 0] = value / volume if volume > 0 else 0.0
            cleared[e, 1] = volume
            for j in range(a_n):
                cleared[e, 2 + j] = b_d[agent_index[j]]
                cleared[e, 2 + a_n + j] = s_d[agent_index[j]]
        if has_contracts[e, sk]:
            bought_k = c_bought[e, sk]
            sold_k = c_sold[e, sk]
            cost_k = c_cost[e, sk]
            rev_k = c_revenue[e, sk]
        else:
            bought_k = zeros_i
            sold_k = zeros_i
            cost_k = zeros_f
            rev_k = zeros_f
        buy = buy_price[k]
        sell = sell_price[k]
        for j in range(a_n):
            i = agent_index[j]
            _, imp, exp, _, _, _, grid_cost, grid_revenue = settle_participant(
                load_k[i], gen_k[i], charge[i], discharge[i], bought_k[i], sold_k[i], buy, sell)
            baseline = residual_k[i] + c0[i] - d0[i]
            ledger[e, j, L_MARKET_COST] = cost_k[i]
            ledger[e, j, L_MARKET_REVENUE] = rev_k[i]
            ledger[e, j, L_GRID_COST] = grid_cost
            ledger[e, j, L_GRID_REVENUE] = grid_revenue
            ledger[e, j, L_GRID_ONLY_COST] = baseline * (buy / 1000.0) if baseline > 0 else baseline * (sell / 1000.0)
            ledger[e, j, L_BOUGHT] = bought_k[i]
            ledger[e, j, L_SOLD] = sold_k[i]
            ledger[e, j, L_IMPORT] = imp
            ledger[e, j, L_EXPORT] = exp
        has_contracts[e, sk] = False


__all__ = ["RoundParams", "RoundState", "RoundInputs", "RoundOutputs", "Workspace", "step", "new_state",
           "new_outputs", "new_workspace",
           "reset_state", "LEDGER_COLUMNS", "NO_ORDERS", "FIXED_PRICE", "EXTERNAL"]
