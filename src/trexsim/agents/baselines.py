"""Baseline traders: the grid-only bill everyone is compared with, and fixed prices."""

from __future__ import annotations

import numba
import numpy as np

from trexsim.agents.base import OrderBatch, TraderObservation, TraderPopulation
from trexsim.fabric.messages import ASK, BID, DISPATCH, NON_DISPATCH


class GridOnlyTraders(TraderPopulation):
    """Never trade in the market (net billing only; a battery still does self-consumption)."""

    kind = "grid_only"

    def act(self, obs: TraderObservation) -> OrderBatch:
        return OrderBatch.empty()


class FixedPriceTraders(TraderPopulation):
    """Bid the forecast residual load and ask the forecast residual generation at fixed prices.

    The residual is what is left after the household's own PV and its battery's planned
    self-consumption dispatch. Optionally the battery's spare discharge is offered in the
    dispatchable pool at ``battery_ask_price``.
    """

    kind = "fixed_price"

    def __init__(self, members, specs, rng):
        super().__init__(members, specs, rng)
        self.bid_price = np.array([s.bid_price for s in specs], dtype=np.float64)
        self.ask_price = np.array([s.ask_price for s in specs], dtype=np.float64)
        self.bid_pool = np.array([DISPATCH if s.bid_pool == "dispatch" else NON_DISPATCH for s in specs], dtype=np.int64)
        self.battery_ask_price = np.array([s.battery_ask_price or np.nan for s in specs], dtype=np.float64)
        self._offers_battery = bool(np.isfinite(self.battery_ask_price).any())

    def act(self, obs: TraderObservation) -> OrderBatch:
        return OrderBatch(*fixed_price_batch(
            np.ascontiguousarray(obs.planned_net_wh, dtype=np.int64),
            np.ascontiguousarray(obs.spare_discharge_wh, dtype=np.int64), self.bid_price, self.ask_price,
            self.bid_pool, self.battery_ask_price, self._offers_battery))


# The fixed-price rule, written once: FixedPriceTraders (modules) and the compiled RL env's round
# kernel (trexsim.envs._kernels) both place their orders through these two functions.
@numba.njit(cache=True, nogil=True)
def residual_order(i, net_wh, bid_price, ask_price, bid_pool, o_part, o_side, o_pool, o_price, o_qty, count):
    """Household ``i``'s order for its planned net energy ``net_wh`` (+ import): a bid at its bid
    price in its bid pool for a need, an ask at its ask price in the non-dispatchable pool for a
    surplus, none at 0. Written at ``o_*[count]``; returns the new count."""
    if net_wh == 0:
        return count
    o_part[count] = i
    if net_wh > 0:
        o_side[count] = BID
        o_pool[count] = bid_pool[i]
        o_price[count] = bid_price[i]
        o_qty[count] = net_wh
    else:
        o_side[count] = ASK
        o_pool[count] = NON_DISPATCH
        o_price[count] = ask_price[i]
        o_qty[count] = -net_wh
    return count + 1


@numba.njit(cache=True, nogil=True)
def battery_order(i, spare_wh, battery_ask_price, o_part, o_side, o_pool, o_price, o_qty, count):
    """Household ``i``'s ask for its battery's spare discharge (:func:`~trexsim.devices.battery.spare_discharge_wh`)
    in the dispatchable pool at its ``battery_ask_price`` (NaN: it offers none). Returns the new count."""
    if not np.isfinite(battery_ask_price[i]) or spare_wh <= 0:
        return count
    o_part[count] = i
    o_side[count] = ASK
    o_pool[count] = DISPATCH
    o_price[count] = battery_ask_price[i]
    o_qty[count] = spare_wh
    return count + 1


@numba.njit(cache=True, nogil=True)
def fixed_price_batch(net_wh, spare_wh, bid_price, ask_price, bid_pool, battery_ask_price, offers_battery):
    """A population's orders: every residual order in member order, then every battery ask.

    Returns ``(member, side, pool, price, quantity_wh)``.
    """
    n = net_wh.size
    cap = 2 * n if offers_battery else n
    member = np.empty(cap, dtype=np.int64)
    side = np.empty(cap, dtype=np.int64)
    pool = np.empty(cap, dtype=np.int64)
    price = np.empty(cap)
    quantity = np.empty(cap, dtype=np.int64)
    count = 0
    for i in range(n):
        count = residual_order(i, net_wh[i], bid_price, ask_price, bid_pool, member, side, pool, price, quantity, count)
    if offers_battery:
        for i in range(n):
            count = battery_order(i, spare_wh[i], battery_ask_price, member, side, pool, price, quantity, count)
    return member[:count], side[:count], pool[:count], price[:count], quantity[:count]
