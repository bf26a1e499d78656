"""Traders driven from outside the simulation: an RL environment sets each round's actions.

The environment (:mod:`trexsim.envs`) decodes the agents' actions into prices, quantities and
battery set-points and hands them over with :meth:`ExternalTraders.set_actions` before it steps
the round; :meth:`act` then turns them into orders for the delivery round like any other
population, so external agents go through the same market intake and rules as every trader.
"""

from __future__ import annotations

import numpy as np

from trexsim.agents.base import OrderBatch, TraderObservation, TraderPopulation
from trexsim.fabric.messages import ASK, BID, NON_DISPATCH


class ExternalTraders(TraderPopulation):
    kind = "external"

    def __init__(self, members, specs, rng):
        super().__init__(members, specs, rng)
        n = self.members.size
        self._bid_price = np.zeros(n)
        self._bid_wh = np.zeros(n, dtype=np.int64)
        self._ask_price = np.zeros(n)
        self._ask_wh = np.zeros(n, dtype=np.int64)
        self._battery_wh = np.zeros(n, dtype=np.int64)
        self._setpoints: dict[int, np.ndarray] = {}

    def set_actions(self, bid_price, bid_wh, ask_price, ask_wh, battery_wh) -> None:
        """This round's decisions, per member: prices [$/kWh], quantities [Wh], battery set-point [Wh at
        the meter, + charge / - discharge] for the delivery round. Zero quantities place no order."""
        self._bid_price = np.asarray(bid_price, dtype=np.float64)
        self._bid_wh = np.asarray(bid_wh, dtype=np.int64)
        self._ask_price = np.asarray(ask_price, dtype=np.float64)
        self._ask_wh = np.asarray(ask_wh, dtype=np.int64)
        self._battery_wh = np.asarray(battery_wh, dtype=np.int64)

    def act(self, obs: TraderObservation) -> OrderBatch:
        self._setpoints[obs.delivery_round] = self._battery_wh.copy()
        bidders = np.flatnonzero(self._bid_wh > 0)
        askers = np.flatnonzero(self._ask_wh > 0)
        member = np.concatenate([bidders, askers])
        batch = OrderBatch(
            member,
            np.concatenate([np.full(bidders.size, BID), np.full(askers.size, ASK)]).astype(np.int64),
            np.full(member.size, NON_DISPATCH, dtype=np.int64),
            np.concatenate([self._bid_price[bidders], self._ask_price[askers]]),
            np.concatenate([self._bid_wh[bidders], self._ask_wh[askers]]),
        )
        # actions hold for one round only: an agent that is not stepped places nothing
        self._bid_wh = np.zeros_like(self._bid_wh)
        self._ask_wh = np.zeros_like(self._ask_wh)
        self._battery_wh = np.zeros_like(self._battery_wh)
        return batch

    def battery_setpoint(self, round_index: int) -> np.ndarray:
        """The set-points the members gave for ``round_index`` (zeros if none), in member order."""
        return self._setpoints.pop(round_index, np.zeros(self.members.size, dtype=np.int64))

    def pending_setpoint(self, round_index: int) -> np.ndarray:
        """The set-points given for ``round_index`` and not yet delivered (zeros if none), in member order;
        unlike :meth:`battery_setpoint`, they stay (an RL observation reads them)."""
        held = self._setpoints.get(round_index)
        return np.zeros(self.members.size, dtype=np.int64) if held is None else held.copy()

    def reset(self, episode: int) -> None:
        self._setpoints.clear()
