"""Zero-intelligence constrained traders (Gode and Sunder 1993) for trexsim's ALEX market.

Gode, D. K. and Sunder, S. (1993). Allocative efficiency of markets with zero-intelligence traders:
market as a partial substitute for individual rationality. *Journal of Political Economy* 101(1),
119-137. Their ZI-C traders bid a random price below their value and ask a random price above their
cost, uniformly, with no memory and no strategy; double auctions of such traders still reach most of
the possible gains from trade, which made them the field's reference for "what the market rules alone
achieve".

For a household with a grid connection (net billing), in every round, for its planned net energy of
the delivery round (after its PV and its battery's plan, as trexsim's fixed-price trader sees it):

- a need of ``x`` Wh is bid in full, in the non-dispatchable pool, at ``floor + u * (value - floor)``,
  its value being the round's grid buy price (what the grid would charge instead) and ``floor`` its
  ``price_floor`` (default: the grid's sell price), clipped to at most the value;
- a surplus of ``x`` Wh is asked in full at ``cost + u * (ceiling - cost)``, its cost being the grid's
  sell price (what the grid would pay instead) and ``ceiling`` its ``price_ceiling`` (default: the grid's
  buy price), clipped to at least the cost;

with ``u`` uniform on [0, 1), one draw per member every round from the population's own generator
(spawned from the study's seed), so runs repeat exactly and one member's draws do not depend on whether
the others trade. The constraint of ZI-C: a bid never exceeds the value and an ask never falls below the
cost, so no trade leaves a household worse off than the grid would.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from trexsim.agents.base import OrderBatch, TraderObservation, TraderPopulation
from trexsim.config.schema import TraderSettings
from trexsim.fabric.messages import ASK, BID, NON_DISPATCH

__all__ = ["ZIConstrainedSettings", "ZIConstrainedTraders"]


class ZIConstrainedSettings(TraderSettings):
    """``{"type": "zi_constrained", "price_floor": ..., "price_ceiling": ...}`` ($/kWh)."""

    type: Literal["zi_constrained"]
    price_floor: float | None = Field(None, ge=0, le=10, description="Lowest bid price, $/kWh (null: the grid's sell price).")
    price_ceiling: float | None = Field(None, ge=0, le=10, description="Highest ask price, $/kWh (null: the grid's buy price).")

    @model_validator(mode="after")
    def _ordered(self) -> "ZIConstrainedSettings":
        if self.price_floor is not None and self.price_ceiling is not None and self.price_floor > self.price_ceiling:
            raise ValueError(f"price_floor ({self.price_floor:g}) is above price_ceiling ({self.price_ceiling:g})")
        return self


class ZIConstrainedTraders(TraderPopulation):
    """Every ZI-C household of a run, as arrays."""

    kind = "zi_constrained"
    config_model = ZIConstrainedSettings

    def __init__(self, members, specs, rng):
        super().__init__(members, specs, rng)
        self.price_floor = np.array([np.nan if s.price_floor is None else s.price_floor for s in specs])
        self.price_ceiling = np.array([np.nan if s.price_ceiling is None else s.price_ceiling for s in specs])

    def act(self, obs: TraderObservation) -> OrderBatch:
        net = np.asarray(obs.planned_net_wh, dtype=np.int64)
        u = self.rng.random(net.size)
        value, cost = float(obs.grid_buy_price), float(obs.grid_sell_price)
        floor = np.minimum(np.where(np.isnan(self.price_floor), cost, self.price_floor), value)
        ceiling = np.maximum(np.where(np.isnan(self.price_ceiling), value, self.price_ceiling), cost)
        bid_price = floor + u * (value - floor)
        ask_price = cost + u * (ceiling - cost)
        member = np.flatnonzero(net != 0)
        buys = net[member] > 0
        side = np.where(buys, BID, ASK).astype(np.int64)
        price = np.where(buys, bid_price[member], ask_price[member])
        return OrderBatch(member.astype(np.int64), side, np.full(member.size, NON_DISPATCH, dtype=np.int64), price,
                          np.abs(net[member]).astype(np.int64))
