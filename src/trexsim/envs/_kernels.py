"""Compiled kernels of the RL environments around the one round (:func:`trexsim.engine.step.step`).

The general simulation passes messages between modules (controller, participants, market); that costs
tens of microseconds a round whatever the community's size, which is more than the market itself. An RL
environment steps the same community a million times, so its compiled backend runs the round as
:func:`trexsim.engine.step.step` over ``N`` copies in one call, and this module holds what is the
environment's own: decoding actions into orders (:func:`decode_actions`), observations
(:func:`observe`, :func:`observe_copies`) and rewards (:func:`agent_rewards`).

``tests/test_envs_vector.py`` runs the same community through the compiled and the simulation backends
and requires identical ledgers, rewards and observations.
"""

from __future__ import annotations

import numba
import numpy as np

from trexsim.engine.step import (  # noqa: F401  (the ledger layout and trader codes, re-exported)
    EXTERNAL, FIXED_PRICE, L_BOUGHT, L_EXPORT, L_GRID_COST, L_GRID_ONLY_COST, L_GRID_REVENUE, L_IMPORT,
    L_MARKET_COST, L_MARKET_REVENUE, L_SOLD, LEDGER_COLUMNS, NO_ORDERS)


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
def observe_ahead(out, delivery_round, rounds, pending_wh, charge_limit_wh, discharge_limit_wh, tariff_ahead,
                  forecast_wh, max_quantity_wh, max_price):
    """Fill the optional values after the 13 of one copy's observations ``out`` (agents x width).

    ``pending_wh`` (agents, P): the set-points [Wh, + charge] for the P delivery rounds chosen but not
    yet delivered, soonest first, / the agent's charge (or discharge) limit: in [-1, 1].
    ``tariff_ahead`` (rounds, 2 T): grid buy then sell prices [$/kWh] one to T hours after each delivery
    round, / ``max_price``. ``forecast_wh`` (rounds, agents, 2 F): forecast load then generation [Wh a
    round] for one to F hours after each delivery round (noise already applied), / ``max_quantity_wh``.
    The delivery round's own values are zero after the episode's last (as values 4, 5, 7, 8 are); the
    set-points in flight are state, observed until delivered.
    """
    a_n = out.shape[0]
    n_pending = pending_wh.shape[1]
    n_tariff = tariff_ahead.shape[1]
    n_forecast = forecast_wh.shape[2]
    t0 = 13 + n_pending
    f0 = t0 + n_tariff
    inside = delivery_round < rounds
    for j in range(a_n):
        for t in range(n_pending):
            wh = pending_wh[j, t]
            limit_wh = charge_limit_wh[j] if wh >= 0 else discharge_limit_wh[j]
            out[j, 13 + t] = wh / limit_wh if limit_wh > 0 else 0.0
        for t in range(n_tariff):
            out[j, t0 + t] = tariff_ahead[delivery_round, t] / max_price[j] if inside else 0.0
        for t in range(n_forecast):
            out[j, f0 + t] = forecast_wh[delivery_round, j, t] / max_quantity_wh[j] if inside else 0.0


@numba.njit(cache=True, nogil=True)
def hourly_forecast_wh(load_wh, gen_wh, rounds_per_hour, factors, out):
    """Every delivery round's forecast for the hours after it: ``out[r, j, h]`` (load) and
    ``out[r, j, F + h]`` (generation) = the mean energy [Wh a round] of agent ``j`` over the rounds
    ``r + 1 + h * rounds_per_hour`` to ``r + (h + 1) * rounds_per_hour`` (those inside the episode; 0 if
    none), times its noise factor ``factors[r, j, h]`` (``factors[r, j, F + h]``).

    ``load_wh``/``gen_wh``: (rounds, agents) the episode's profiles. An hour's mean, not one round's
    value: a household's one-minute load is mostly noise, the hour's shape is what can be planned on.
    """
    rounds, a_n = load_wh.shape
    n_hours = out.shape[2] // 2
    for j in range(a_n):
        for r in range(rounds):
            for h in range(n_hours):
                first = r + 1 + h * rounds_per_hour
                last = min(first + rounds_per_hour, rounds)
                load_sum = 0.0
                gen_sum = 0.0
                for q in range(first, last):
                    load_sum += load_wh[q, j]
                    gen_sum += gen_wh[q, j]
                count = last - first
                out[r, j, h] = load_sum / count * factors[r, j, h] if count > 0 else 0.0
                out[r, j, n_hours + h] = gen_sum / count * factors[r, j, n_hours + h] if count > 0 else 0.0


@numba.njit(cache=True, nogil=True)
def pending_setpoints(k, close_steps, setpoint, has_setpoint, pending_wh):
    """One copy's set-points in flight after round ``k`` (delivery rounds ``k + 1`` to ``k + close_steps``,
    soonest first; 0 where none was chosen) from its ring of slots (:class:`trexsim.engine.step.RoundState`)."""
    slots = close_steps + 1
    for t in range(pending_wh.shape[1]):
        slot = (k + 1 + t) % slots
        for j in range(pending_wh.shape[0]):
            pending_wh[j, t] = setpoint[slot, j] if has_setpoint[slot] else 0


@numba.njit(cache=True, nogil=True)
def observe_copies(k, params, state, inputs, time_features, max_quantity_wh, max_price, obs, charge_limit_wh,
                   discharge_limit_wh, n_pending, tariff_ahead, forecast_wh):
    """Every copy's observations ``obs`` (N, agents, width) after round ``k``: for delivery round
    ``k + 1 + close_steps``, from the state :func:`trexsim.engine.step.step` left; ``forecast_wh``
    (N, rounds, agents, 2 F) each copy's forecasts (:func:`hourly_forecast_wh`)."""
    p, s, x = params, state, inputs
    rounds = p.rounds
    n = x.load_wh.shape[2]
    a_n = p.agent_index.size
    nd = k + 1 + p.close_steps
    a_load = np.zeros(a_n)
    a_gen = np.zeros(a_n)
    a_stored = np.empty(a_n)
    a_cap = np.empty(a_n)
    pending_wh = np.zeros((a_n, n_pending))
    nb = x.buy_price[nd] if nd < rounds else 0.0
    ns = x.sell_price[nd] if nd < rounds else 0.0
    for e in range(x.load_wh.shape[0]):
        for j in range(a_n):
            i = p.agent_index[j]
            if nd < rounds:
                a_load[j] = x.load_wh[e, nd, i]
                a_gen[j] = x.generation_wh[e, nd, i]
            a_stored[j] = s.stored_wh[e, i]
            a_cap[j] = p.capacity_wh[i]
        observe(obs[e], nd, rounds, time_features, a_load, a_gen, a_stored, a_cap, nb, ns, s.cleared[e, 0],
                s.cleared[e, 1], s.cleared[e, 2:2 + a_n], s.cleared[e, 2 + a_n:], max_quantity_wh, max_price, n)
        if obs.shape[2] > 13:
            pending_setpoints(k, p.close_steps, s.setpoint[e], s.has_setpoint[e], pending_wh)
            observe_ahead(obs[e], nd, rounds, pending_wh, charge_limit_wh, discharge_limit_wh, tariff_ahead,
                          forecast_wh[e], max_quantity_wh, max_price)


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
def shape_rewards(reward, soc_now, soc_before, capacity_wh, usd_per_wh, gamma):
    """Potential-based shaping in place (Ng, Harada and Russell 1999): ``reward += gamma Phi(s') - Phi(s)``
    with ``Phi = usd_per_wh x state of charge x capacity_wh`` (the stored energy's value, $), per copy and agent;
    ``soc_before`` then becomes ``soc_now`` (the next step's ``s``)."""
    n_copies, a_n = reward.shape
    for e in range(n_copies):
        for j in range(a_n):
            v = usd_per_wh[j] * capacity_wh[j]
            reward[e, j] += gamma[j] * v * soc_now[e, j] - v * soc_before[e, j]
            soc_before[e, j] = soc_now[e, j]


@numba.njit(cache=True, nogil=True)
def settled_price_and_volume(quantity_wh, buyer_price, seller_price):
    """Mean settlement price [$/kWh] (weighted by energy, at the pair's mid price) and energy [Wh] of a
    cleared round, summed in matching order (as :func:`trexsim.engine.step.step` sums them)."""
    volume = 0
    value = 0.0
    for t in range(quantity_wh.size):
        volume += quantity_wh[t]
        value += quantity_wh[t] * (buyer_price[t] + seller_price[t]) / 2
    return (value / volume if volume > 0 else 0.0), volume
