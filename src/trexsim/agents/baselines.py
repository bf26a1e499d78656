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
        net = obs.planned_net_wh
        if not self._offers_battery:
            return OrderBatch(*_residual_orders(np.ascontiguousarray(net, dtype=np.int64), self.bid_price, self.ask_price,
                                                self.bid_pool))
        member = np.flatnonzero(net)
        side = (net[member] < 0).astype(np.int64)  # BID = 0 for a need, ASK = 1 for a surplus
        is_ask = side.astype(bool)
        price = np.where(is_ask, self.ask_price[member], self.bid_price[member])
        pool = np.where(is_ask, NON_DISPATCH, self.bid_pool[member])
        qty = np.abs(net[member])
        if self._offers_battery:
            sellers = np.flatnonzero(np.isfinite(self.battery_ask_price) & (obs.spare_discharge_wh > 0))
            member = np.concatenate([member, sellers])
            side = np.concatenate([side, np.full(sellers.size, ASK)])
            pool = np.concatenate([pool, np.full(sellers.size, DISPATCH)])
            price = np.concatenate([price, self.battery_ask_price[sellers]])
            qty = np.concatenate([qty, obs.spare_discharge_wh[sellers]])
        return OrderBatch(member.astype(np.int64), side.astype(np.int64), pool.astype(np.int64), price, qty.astype(np.int64))


@numba.njit(cache=True, nogil=True)
def _residual_orders(net_wh, bid_price, ask_price, bid_pool):
    """A bid for each positive net energy and an ask for each negative one, in member order.

    Returns ``(member, side, pool, price, quantity_wh)``; asks go to the non-dispatchable pool.
    """
    n = net_wh.size
    count = 0
    for i in range(n):
        if net_wh[i] != 0:
            count += 1
    member = np.empty(count, dtype=np.int64)
    side = np.empty(count, dtype=np.int64)
    pool = np.empty(count, dtype=np.int64)
    price = np.empty(count)
    quantity = np.empty(count, dtype=np.int64)
    j = 0
    for i in range(n):
        v = net_wh[i]
        if v == 0:
            continue
        member[j] = i
        if v > 0:
            side[j] = BID
            pool[j] = bid_pool[i]
            price[j] = bid_price[i]
            quantity[j] = v
        else:
            side[j] = ASK
            pool[j] = NON_DISPATCH
            price[j] = ask_price[i]
            quantity[j] = -v
        j += 1
    return member, side, pool, price, quantity
