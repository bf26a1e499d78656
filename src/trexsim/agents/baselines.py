"""Baseline traders: the grid-only bill everyone is compared with, and fixed prices."""

from __future__ import annotations

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
        bidders = np.flatnonzero(net > 0)
        askers = np.flatnonzero(net < 0)
        member = np.concatenate([bidders, askers])
        side = np.concatenate([np.full(bidders.size, BID), np.full(askers.size, ASK)])
        pool = np.concatenate([self.bid_pool[bidders], np.full(askers.size, NON_DISPATCH)])
        price = np.concatenate([self.bid_price[bidders], self.ask_price[askers]])
        qty = np.concatenate([net[bidders], -net[askers]])
        if self._offers_battery:
            sellers = np.flatnonzero(np.isfinite(self.battery_ask_price) & (obs.spare_discharge_wh > 0))
            member = np.concatenate([member, sellers])
            side = np.concatenate([side, np.full(sellers.size, ASK)])
            pool = np.concatenate([pool, np.full(sellers.size, DISPATCH)])
            price = np.concatenate([price, self.battery_ask_price[sellers]])
            qty = np.concatenate([qty, obs.spare_discharge_wh[sellers]])
        return OrderBatch(member.astype(np.int64), side.astype(np.int64), pool.astype(np.int64), price, qty.astype(np.int64))
