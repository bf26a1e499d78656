"""Compiled market rounds for the RL environments: many copies of a community, one call per round.

The general simulation passes messages between modules (controller, participants, market);
that costs tens of microseconds a round whatever the community's size, which is more than the
market itself. An RL environment steps the same community a million times, so
:func:`step_copies` runs one round of ``N`` independent copies inside one Numba function.

It is the same round, not a second copy of its rules: it calls the engine's compiled kernels —
:func:`trexsim.devices.battery.dispatch_and_step` (batteries, for the meters, the plan and the
grid-only shadow), :func:`trexsim.engine.intake._codes` (ALEX rule 7 intake checks),
:func:`trexsim.engine.ties.clear_book_ordered` (ALEX matching of every pool under the tie-break rule),
:func:`trexsim.engine.mechanisms.pair_prices` and :func:`~trexsim.engine.mechanisms.add_contract` (settlement prices, contract totals) and
:func:`trexsim.engine.delivery._settle` (delivery and net billing) — in the order the general
round loop calls them (``modules/participants.py`` then ``modules/market.py``):

1. start of round k: the battery of every household tracks its contracts for round k (external
   batteries follow their agent's set-point given for round k), the grid-only shadow battery
   runs, the meters of round k are read;
2. during round k (when ``d = k + close_steps`` is inside the episode): each household plans its
   battery for round d from its forecast, fixed-price traders place their residual (and spare
   battery discharge), external agents place their decoded orders; the book goes through the
   intake checks, in submission order (by participant, then order within its batch);
3. end of round k: round d's book is cleared, then delivery round k is settled.

``tests/test_envs_vector.py`` runs the same community through both paths and requires identical
ledgers, rewards and observations.

Trader codes: :data:`NO_ORDERS` (grid-only), :data:`FIXED_PRICE`, :data:`EXTERNAL`.
"""

from __future__ import annotations

import numba
import numpy as np

from trexsim.agents.baselines import battery_order, residual_order
from trexsim.devices.battery import dispatch_and_step, spare_discharge_wh, stored_after_committed
from trexsim.engine.delivery import _settle
from trexsim.engine.intake import _codes
from trexsim.engine.ties import clear_book_ordered
from trexsim.engine.mechanisms import add_contract, pair_prices

NO_ORDERS, FIXED_PRICE, EXTERNAL = 0, 1, 2
BID, ASK = 0, 1
NON_DISPATCH, DISPATCH = 0, 1
N_POOLS = 2

# the columns of the per-agent ledger the kernel returns for the settled delivery round
(L_MARKET_COST, L_MARKET_REVENUE, L_GRID_COST, L_GRID_REVENUE, L_GRID_ONLY_COST, L_BOUGHT, L_SOLD, L_IMPORT,
 L_EXPORT) = range(9)
LEDGER_COLUMNS = ("market_cost_usd", "market_revenue_usd", "grid_cost_usd", "grid_revenue_usd", "grid_only_cost_usd",
                  "bought_wh", "sold_wh", "grid_import_wh", "grid_export_wh")


@numba.njit(cache=True, nogil=True)
def observe(out, delivery_round, rounds, time_features, load_row, gen_row, stored_wh, capacity_wh, buy_price,
            sell_price, cleared_price, cleared_volume_wh, own_bought_wh, own_sold_wh, max_quantity_wh, max_price,
            n_participants):
    """Fill one copy's observations ``out`` (agents x 13) for ``delivery_round``.

    ``load_row``/``gen_row``/``stored_wh``/``capacity_wh``/``own_*`` are per agent; the layout is
    documented in :mod:`trexsim.envs.parallel`. Used by both backends, so they observe alike.
    """
    a_n = out.shape[0]
    inside = delivery_round < rounds
    for j in range(a_n):
        mq = max_quantity_wh[j]
        mp = max_price[j]
        if inside:
            for t in range(4):
                out[j, t] = time_features[delivery_round, t]
            out[j, 4] = load_row[j] / mq
            out[j, 5] = gen_row[j] / mq
            out[j, 7] = buy_price / mp
            out[j, 8] = sell_price / mp
        else:
            for t in (0, 1, 2, 3, 4, 5, 7, 8):
                out[j, t] = 0.0
        out[j, 6] = stored_wh[j] / capacity_wh[j] if capacity_wh[j] > 0 else 0.0
        out[j, 9] = cleared_price / mp
        out[j, 10] = cleared_volume_wh / (mq * n_participants)
        out[j, 11] = own_bought_wh[j] / mq
        out[j, 12] = own_sold_wh[j] / mq


@numba.njit(cache=True, nogil=True)
def step_copies(k, rounds, close_steps,
                # per copy profiles (N, rounds, n) and grid prices (rounds,)
                load_wh, gen_wh, buy_price, sell_price,
                # batteries (n,), shared by the copies; external: follows an agent's set-point
                capacity_wh, charge_limit_wh, discharge_limit_wh, efficiency, retention, active, external_battery,
                # traders (n,)
                trader, fixed_bid_price, fixed_bid_price_booked, fixed_ask_price, fixed_ask_price_booked, bid_pool,
                battery_ask_price, battery_ask_price_booked, offers_battery, agent_of, agent_index,
                # market (tie_keys (N,): each copy's tie-break key, from its seed)
                min_price, max_price, max_order_wh, equal_prices, price_rule, tie_break, tie_keys,
                # decoded actions (N, agents): prices as given and as booked (snapped to the tick)
                bid_price, bid_price_booked, bid_wh, ask_price, ask_price_booked, ask_wh, battery_wh,
                # state (N, ...), updated in place
                stored_wh, shadow_wh, c_bought, c_sold, c_cost, c_revenue, has_contracts, plan_delta, has_plan,
                setpoint, has_setpoint, cleared,
                # outputs (N, agents, ...)
                ledger, rejected, obs, time_features, max_quantity_wh, obs_max_price):
    """One round ``k`` of every copy (see the module's docstring); returns nothing, fills the outputs.

    ``cleared`` (N, 2 + 2 * agents) holds each copy's last cleared round: mean settlement price,
    settled energy, then its agents' bought and sold energy (the public and own results the
    observations show). ``ledger`` (N, agents, 9) gets delivery round k's results per agent
    (:data:`LEDGER_COLUMNS`), ``rejected`` (N, agents) the agent's orders refused at intake,
    ``obs`` (N, agents, 13) the observations for delivery round ``k + 1 + close_steps``.
    """
    n_copies = load_wh.shape[0]
    n = load_wh.shape[2]
    a_n = agent_index.size
    slots = close_steps + 1
    sk = k % slots
    d = k + close_steps
    sd = d % slots
    zeros_i = np.zeros(n, dtype=np.int64)
    zeros_f = np.zeros(n)
    cap = 2 * n
    o_part = np.empty(cap, dtype=np.int64)
    o_side = np.empty(cap, dtype=np.int64)
    o_pool = np.empty(cap, dtype=np.int64)
    o_price = np.empty(cap)
    o_booked = np.empty(cap)
    o_qty = np.empty(cap, dtype=np.int64)
    for e in range(n_copies):
        load_k = load_wh[e, k]
        gen_k = gen_wh[e, k]
        # ---- start of round k: batteries and meters (Participants._meter)
        if has_contracts[e, sk]:
            bought_k = c_bought[e, sk]
            sold_k = c_sold[e, sk]
        else:
            bought_k = zeros_i
            sold_k = zeros_i
        need = np.empty(n, dtype=np.int64)
        residual_k = np.empty(n, dtype=np.int64)
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
        charge, discharge, after = dispatch_and_step(need, stored_wh[e], capacity_wh, charge_limit_wh,
                                                     discharge_limit_wh, efficiency, retention, active)
        stored_wh[e, :] = after
        c0, d0, shadow_after = dispatch_and_step(residual_k, shadow_wh[e], capacity_wh, charge_limit_wh,
                                                 discharge_limit_wh, efficiency, retention, active)
        shadow_wh[e, :] = shadow_after
        has_plan[e, sk] = False
        # ---- during round k: orders for delivery round d (Participants._trade)
        count = 0
        if d < rounds:
            load_f = load_wh[e, d]
            gen_f = gen_wh[e, d]
            stored = stored_wh[e].copy()
            for r in range(k + 1, d):  # each round between, as its contracts will leave the battery
                sr = r % slots
                delta = plan_delta[e, sr] if has_plan[e, sr] else zeros_f
                stored = stored_after_committed(load_wh[e, r], gen_wh[e, r],
                                                c_bought[e, sr] if has_contracts[e, sr] else zeros_i,
                                                c_sold[e, sr] if has_contracts[e, sr] else zeros_i, external_battery,
                                                delta, stored, capacity_wh, charge_limit_wh, discharge_limit_wh,
                                                efficiency, retention, active)
            residual = np.empty(n, dtype=np.int64)
            for i in range(n):
                residual[i] = load_f[i] - gen_f[i]
            c_plan, d_plan, planned_after = dispatch_and_step(residual, stored, capacity_wh, charge_limit_wh,
                                                              discharge_limit_wh, efficiency, retention, active)
            for i in range(n):
                plan_delta[e, sd, i] = planned_after[i] - stored[i]
            has_plan[e, sd] = True
            spare = spare_discharge_wh(stored, discharge_limit_wh, efficiency, d_plan, active)
            for i in range(n):
                kind = trader[i]
                if kind == FIXED_PRICE:
                    first = count
                    count = residual_order(i, residual[i] + (c_plan[i] - d_plan[i]), fixed_bid_price, fixed_ask_price,
                                           bid_pool, o_part, o_side, o_pool, o_price, o_qty, count)
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
                    if bid_wh[e, j] > 0:
                        o_part[count] = i
                        o_side[count] = BID
                        o_pool[count] = NON_DISPATCH
                        o_price[count] = bid_price[e, j]
                        o_booked[count] = bid_price_booked[e, j]
                        o_qty[count] = bid_wh[e, j]
                        count += 1
                    if ask_wh[e, j] > 0:
                        o_part[count] = i
                        o_side[count] = ASK
                        o_pool[count] = NON_DISPATCH
                        o_price[count] = ask_price[e, j]
                        o_booked[count] = ask_price_booked[e, j]
                        o_qty[count] = ask_wh[e, j]
                        count += 1
            for j in range(a_n):
                setpoint[e, sd, j] = battery_wh[e, j]
            has_setpoint[e, sd] = True
        # intake (Market.validate): the orders that fail a check are dropped, the rest booked
        accepted = 0
        if count > 0:
            codes = _codes(o_part[:count], o_side[:count], o_pool[:count], o_price[:count],
                           o_qty[:count].astype(np.float64), n, N_POOLS, min_price, max_price, max_order_wh)
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
        # ---- end of round k: clear delivery round d (Market.clear), then settle round k (Market.settle)
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
                part = o_part[:accepted].copy()
                price = o_booked[:accepted].copy()
                # an env's episode is episode 0 of a run with the copy's seed (as the simulation backend runs it)
                bi, ai, q, _ = clear_book_ordered(part, o_side[:accepted].copy(), o_pool[:accepted].copy(), price,
                                                  o_qty[:accepted].copy(), np.zeros(accepted, dtype=np.int64), n,
                                                  equal_prices, N_POOLS, tie_break, tie_keys[e], 0, d)
                for t in range(q.size):
                    bp, sp = pair_prices(price_rule, price[bi[t]], price[ai[t]])
                    add_contract(part[bi[t]], part[ai[t]], q[t], bp, sp, b_d, s_d, cost_d, rev_d)
                    volume += q[t]
                    value += q[t] * (bp + sp) / 2
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
        res = _settle(load_k, gen_k, charge, discharge, bought_k, sold_k, buy, sell)
        for j in range(a_n):
            i = agent_index[j]
            baseline = residual_k[i] + c0[i] - d0[i]
            ledger[e, j, L_MARKET_COST] = cost_k[i]
            ledger[e, j, L_MARKET_REVENUE] = rev_k[i]
            ledger[e, j, L_GRID_COST] = res[6][i]
            ledger[e, j, L_GRID_REVENUE] = res[7][i]
            ledger[e, j, L_GRID_ONLY_COST] = baseline * (buy / 1000.0) if baseline > 0 else baseline * (sell / 1000.0)
            ledger[e, j, L_BOUGHT] = bought_k[i]
            ledger[e, j, L_SOLD] = sold_k[i]
            ledger[e, j, L_IMPORT] = res[1][i]
            ledger[e, j, L_EXPORT] = res[2][i]
        has_contracts[e, sk] = False
        # ---- observations for the next step's delivery round
        nd = k + 1 + close_steps
        a_load = np.zeros(a_n)
        a_gen = np.zeros(a_n)
        a_stored = np.empty(a_n)
        a_cap = np.empty(a_n)
        for j in range(a_n):
            i = agent_index[j]
            if nd < rounds:
                a_load[j] = load_wh[e, nd, i]
                a_gen[j] = gen_wh[e, nd, i]
            a_stored[j] = stored_wh[e, i]
            a_cap[j] = capacity_wh[i]
        nb = buy_price[nd] if nd < rounds else 0.0
        ns = sell_price[nd] if nd < rounds else 0.0
        observe(obs[e], nd, rounds, time_features, a_load, a_gen, a_stored, a_cap, nb, ns, cleared[e, 0],
                cleared[e, 1], cleared[e, 2:2 + a_n], cleared[e, 2 + a_n:], max_quantity_wh, obs_max_price, n)


@numba.njit(cache=True, nogil=True)
def decode_actions(raw, low, high, discrete, shift, scale, min_price, max_price, max_quantity_wh, charge_limit_wh,
                   discharge_limit_wh, tick, used, changed, bid_price, bid_booked, bid_wh, ask_price, ask_booked,
                   ask_wh, battery_wh):
    """Agents' actions ``raw`` (N, agents, 5) -> orders and set-points (N, agents), in one pass.

    Each value is clipped to its bounds (NaN -> 0: the lowest discrete level, the middle of a
    continuous range), discrete levels rounded; ``used`` gets the values acted on and ``changed``
    marks the agents whose action had to be changed. Then, per agent: a price maps linearly onto
    [min_price, max_price] and is booked at the market's tick (``rint(price / tick) * tick``, what
    ``Market._snap_price`` computes), a quantity onto [0, max_quantity_wh] in whole Wh (half to
    even), the set-point onto [-discharge limit, +charge limit] in whole Wh.
    """
    n_copies, a_n, width = raw.shape
    for e in range(n_copies):
        for j in range(a_n):
            ch = False
            for t in range(width):
                x = raw[e, j, t]
                v = x if np.isfinite(x) else 0.0
                if v < low[j, t]:
                    v = low[j, t]
                elif v > high[j, t]:
                    v = high[j, t]
                if discrete[j]:
                    v = np.rint(v)
                if not v == x:  # NaN compares unequal: a change too
                    ch = True
                used[e, j, t] = v
            changed[e, j] = ch
            span = max_price[j] - min_price[j]
            f0 = (used[e, j, 0] + shift[j, 0]) * scale[j, 0]
            f1 = (used[e, j, 1] + shift[j, 1]) * scale[j, 1]
            f2 = (used[e, j, 2] + shift[j, 2]) * scale[j, 2]
            f3 = (used[e, j, 3] + shift[j, 3]) * scale[j, 3]
            f4 = (used[e, j, 4] + shift[j, 4]) * scale[j, 4]
            bp = min_price[j] + f0 * span
            ap = min_price[j] + f2 * span
            bid_price[e, j] = bp
            ask_price[e, j] = ap
            bid_booked[e, j] = np.rint(bp / tick) * tick
            ask_booked[e, j] = np.rint(ap / tick) * tick
            bid_wh[e, j] = np.int64(np.rint(f1 * max_quantity_wh[j]))
            ask_wh[e, j] = np.int64(np.rint(f3 * max_quantity_wh[j]))
            s = 2 * f4 - 1  # [-1, 1]
            battery_wh[e, j] = np.int64(np.rint(s * charge_limit_wh[j] if s >= 0 else s * discharge_limit_wh[j]))


@numba.njit(cache=True, nogil=True)
def agent_rewards(ledger, savings, profit, reward):
    """Net profit [$] of the settled delivery round per agent, and the reward (``savings``: plus the
    grid-only cost, i.e. what the market and battery saved against the grid-only bill)."""
    n_copies, a_n, _ = ledger.shape
    for e in range(n_copies):
        for j in range(a_n):
            row = ledger[e, j]
            p = (row[L_MARKET_REVENUE] - row[L_MARKET_COST]) + (row[L_GRID_REVENUE] - row[L_GRID_COST])
            profit[e, j] = p
            reward[e, j] = row[L_GRID_ONLY_COST] + p if savings[j] else p


@numba.njit(cache=True, nogil=True)
def settled_price_and_volume(quantity_wh, buyer_price, seller_price):
    """Mean settlement price [$/kWh] (weighted by energy, at the pair's mid price) and energy [Wh] of a
    cleared round, summed in matching order (as :func:`step_copies` sums them)."""
    volume = 0
    value = 0.0
    for t in range(quantity_wh.size):
        volume += quantity_wh[t]
        value += quantity_wh[t] * (buyer_price[t] + seller_price[t]) / 2
    return (value / volume if volume > 0 else 0.0), volume
