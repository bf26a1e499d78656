"""The participants' side of transactive control: households that answer the TC market's schedules and follow
the published one.

Held by a participants module when the run's market is ``tc``. For each :class:`TCSchedule` it receives it
forecasts its households' loads and PV over the horizon (their own profiles: perfect foresight, as trexsim's
traders forecast) and answers with the planned net energies under that schedule (``trexsim.tc.response``):
flexible loads moved within their windows, price-reactive batteries dispatched. When the horizon's first
round is metered, it plans once more under the published schedule from the batteries' actual stored energy
and then follows that plan round by round:

- the metered consumption is the moved load, in whole Wh (rounded on the running sum, so a horizon's
  consumption is the forecast's to within a Wh);
- a price-reactive battery gets the plan's ``charge - discharge`` as its set-point (whole Wh), which the
  battery kernel applies within its power and energy limits (``trexsim.devices.battery.meter_round``).

Batteries react when ``tc.batteries`` is true and their policy is ``self_consumption``; an ``idle`` battery
stays idle, an ``external`` one follows its agent.
"""

from __future__ import annotations

import numpy as np

from trexsim.config.schema import TCConfig
from trexsim.devices.battery import BatteryBank
from trexsim.fabric.messages import TCPlan, TCSchedule
from trexsim.tc.response import respond


def whole_wh(energy_wh: np.ndarray) -> np.ndarray:
    """Float energies per round (rounds, households) as whole Wh whose running sums stay within 0.5 Wh."""
    total = np.rint(np.cumsum(energy_wh, axis=0))
    return np.diff(total, axis=0, prepend=0.0).astype(np.int64)


class TCHouseholds:
    def __init__(self, tc: TCConfig, profiles, battery: BatteryBank, interval_s: int, roster_index: np.ndarray,
                 external: np.ndarray):
        self.tc = tc
        self.profiles = profiles
        self.battery = battery
        self.interval_s = int(interval_s)
        self.roster_index = roster_index
        self.window_rounds = 1
        if tc.flexible_load is not None:
            self.window_rounds = max(1, int(round(tc.flexible_load.window_h * 3600 / interval_s)))
        self.active = battery.self_consumption & ~external
        self.react = self.active.copy() if tc.batteries else np.zeros_like(self.active)
        self.reset()

    def reset(self) -> None:
        self._final: dict[int, np.ndarray] = {}    # horizon's first round -> the published schedule
        self._expected_end: tuple[int, np.ndarray] | None = None  # (round, stored energy the last final plan ends with)
        self._h0 = self._h1 = -1
        self._load = self._setpoint = None

    # -- answering schedules ---------------------------------------------------------------------------------
    def _respond(self, first: int, price: np.ndarray, stored_wh: np.ndarray):
        load, gen = self.profiles.energy_wh(first, len(price))
        return respond(load, gen, price, stored_wh, self.battery, self.active, self.react, self.tc.flexible_load,
                       self.window_rounds, self.interval_s)

    def on_schedule(self, msg: TCSchedule) -> TCPlan:
        """The households' planned net energies under ``msg``'s schedule."""
        first = msg.first_round
        # the batteries when the horizon starts: as the last published plan leaves them, else as they are now
        stored = self.battery.stored_wh
        if self._expected_end is not None and self._expected_end[0] == first:
            stored = self._expected_end[1]
        r = self._respond(first, np.asarray(msg.buy_price, dtype=np.float64), stored)
        if msg.final:
            self._final[first] = np.array(msg.buy_price, dtype=np.float64)
            self._expected_end = (first + len(msg.buy_price), r.stored_after_wh[-1].copy())
        return TCPlan(msg.episode, first, msg.iteration, self.roster_index, np.ascontiguousarray(r.net_wh).ravel())

    # -- following the published schedule --------------------------------------------------------------------
    def meter_inputs(self, k: int, load_wh: np.ndarray, setpoint_mask: np.ndarray, setpoint_wh: np.ndarray):
        """Round k's metered load and battery set-points under the published plan (the inputs, when no plan)."""
        price = self._final.pop(k, None)
        if price is not None:  # a horizon starts: plan it from the batteries' actual energy
            r = self._respond(k, price, self.battery.stored_wh)
            self._h0, self._h1 = k, k + len(price)
            self._load = whole_wh(r.load_wh)
            self._setpoint = np.rint(r.charge_wh - r.discharge_wh).astype(np.int64)
        if not (self._h0 <= k < self._h1):
            return load_wh, setpoint_mask, setpoint_wh
        row = k - self._h0
        mask = setpoint_mask | self.react
        setpoint = np.where(self.react, self._setpoint[row], setpoint_wh)
        return self._load[row], mask, setpoint

    def load_forecast(self, d: int, load_wh: np.ndarray) -> np.ndarray:
        """The consumption planned for round d (the profile's where no plan covers it), for the traders."""
        if self._h0 <= d < self._h1:
            return self._load[d - self._h0]
        return load_wh


__all__ = ["TCHouseholds", "whole_wh"]
