"""The participants' side of transactive control: households that answer the TC market's schedules and follow
the published one.

Held by a participants module when the run's market is ``tc``. For each :class:`TCSchedule` it receives it
forecasts its households' loads and PV over the horizon (``tc.forecast``: yesterday's profiles by default,
or perfect, or with a stated error: ``trexsim.tc.forecast``) and answers with the planned net energies under that schedule (``trexsim.tc.response``):
flexible loads moved within their windows, price-reactive batteries dispatched. When the horizon's first
round is metered, it plans once more under the published schedule from the batteries' actual stored energy
and then follows that plan round by round:

- the metered consumption is the real load with the plan's move of flexible load applied, in whole Wh
  (the move rounded on its running sum, so a window's consumption stays the real one's to within a Wh);
  with a perfect forecast, the moved forecast itself;
- a price-reactive battery gets the plan's ``charge - discharge`` as its set-point (whole Wh), which the
  battery kernel applies within its power and energy limits (``trexsim.devices.battery.meter_round``).

Batteries react when ``tc.batteries`` is true and their policy is ``self_consumption``; an ``idle`` battery
stays idle, an ``external`` one follows its agent.

Price-responsive devices (``trexsim.devices.PriceResponsiveDevice``, e.g. an EV with ``charging: "smart"``)
answer every schedule in the same call (``_respond``): the forecast leaves them out, their own answer to the
prices (they know their own energy, e.g. a car its session) is added to it, so the plan the TC market predicts
the feeder from holds it; the meter then draws their answer to the published schedule in place of their
scheduled energy. In the double auction (``AuctionHouseholds``) they get no bids: they run as scheduled, with a
``PriceSignalWarning``.
"""

from __future__ import annotations

import numpy as np

from trexsim.config.schema import TCConfig
from trexsim.devices.battery import BatteryBank
from trexsim.devices.flexible_load import executed_shift_wh
from trexsim.errors import TrexsimError
from trexsim.fabric.messages import TCPlan, TCSchedule
from trexsim.tc.forecast import forecast_wh, lag_rounds
from trexsim.tc.response import respond


def whole_wh(energy_wh: np.ndarray) -> np.ndarray:
    """Float energies per round (rounds, households) as whole Wh whose running sums stay within 0.5 Wh."""
    total = np.rint(np.cumsum(energy_wh, axis=0))
    return np.diff(total, axis=0, prepend=0.0).astype(np.int64)


class _Households:
    """What both kinds of TC households hold: the settings, their profiles and batteries, and which batteries
    run at all (``active``: self-consumption, not an external agent's) and which of those react to prices."""

    def __init__(self, tc: TCConfig, profiles, battery: BatteryBank, interval_s: int, roster_index: np.ndarray,
                 external: np.ndarray):
        self.tc = tc
        self.profiles = profiles
        self.battery = battery
        self.interval_s = int(interval_s)
        self.roster_index = roster_index
        flexible = tc.flexible_load
        # the flexible load's window in rounds (1: none)
        self.window_rounds = max(1, int(round(flexible.window_h * 3600 / interval_s))) if flexible is not None else 1
        if tc.forecast.type == "persistence":
            lag_rounds(tc.forecast, self.interval_s)  # an error naming the key before any round
        self.active = battery.self_consumption & ~external
        self.react = self.active.copy() if tc.batteries else np.zeros_like(self.active)


class TCHouseholds(_Households):
    def __init__(self, tc: TCConfig, profiles, battery: BatteryBank, interval_s: int, roster_index: np.ndarray,
                 external: np.ndarray):
        super().__init__(tc, profiles, battery, interval_s, roster_index, external)
        self.following = self.react   # the batteries that follow the plan's set-points in this horizon
        # the price-responsive devices: this market's schedules reach them (no fallback warning)
        devices = getattr(profiles, "devices", None)
        self.devices = devices if devices is not None and devices.responsive else None
        if self.devices is not None:
            self.devices.priced = True
        self.reset()

    def reset(self) -> None:
        self._final: dict[int, np.ndarray] = {}    # horizon's first round -> the published schedule
        self._expected_end: tuple[int, np.ndarray] | None = None  # (round, stored energy the last final plan ends with)
        self._h0 = self._h1 = -1
        self.following = self.react
        self._load = self._setpoint = self._shift = None
        self._device_wh = None   # (answered draw, scheduled draw) of the responsive devices in this horizon
        self._forecasts: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # horizon's first round -> its forecast
        if getattr(self, "devices", None) is not None:
            self.devices.reset()

    # -- answering schedules ---------------------------------------------------------------------------------
    def _forecast(self, first: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        """The horizon's forecast, made once (every pass of the TC loop plans with the same one)."""
        if first not in self._forecasts:
            self._forecasts = {f: v for f, v in self._forecasts.items() if f >= first}
            # (without the price-responsive devices: they answer the prices themselves in _respond)
            self._forecasts[first] = forecast_wh(self.profiles, self.tc.forecast, first, n_rounds, self.interval_s,
                                                 self.profiles.seed, self.roster_index, responsive=False)
        return self._forecasts[first]

    def _respond(self, first: int, price: np.ndarray, stored_wh: np.ndarray, follow: bool = False):
        """The households' answer to ``price``; ``follow``: it is the published schedule, which they meter (one
        code path for the TC market's prediction and for the meter)."""
        load, gen = self._forecast(first, len(price))
        band = self.tc.response_band_per_kwh if self.tc.response == "proportional" else 0.0
        draw = supply = None
        if self.devices is not None:
            draw, supply = self.devices.respond_wh(first, len(price), price, band, follow=follow)
        return respond(load, gen, price, stored_wh, self.battery, self.active, self.react, self.tc.flexible_load,
                       self.window_rounds, self.interval_s, band, draw, supply)

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
            r = self._respond(k, price, self.battery.stored_wh, follow=True)
            self._h0, self._h1 = k, k + len(price)
            self._device_wh = self._responsive_wh(k, len(price), r)
            if self.tc.forecast.type == "perfect":
                self._load, self._shift = whole_wh(r.load_wh), None
            else:  # the plan's move of flexible load, made on the real load when it is metered
                planned = r.load_wh - self._forecast(k, len(price))[0]
                if self._device_wh is not None:
                    planned = planned - self._device_wh[0]
                flexible = self.tc.flexible_load
                if flexible is not None and flexible.share > 0:
                    real, _ = self.profiles.energy_wh(k, len(price), responsive=False)
                    planned = executed_shift_wh(planned, real, flexible.share, self.window_rounds)
                self._load, self._shift = None, whole_wh(planned)
            self._setpoint = np.rint(r.charge_wh - r.discharge_wh).astype(np.int64)
            # a flat schedule gives no signal: the batteries run self-consumption on the real meter, not a
            # plan made on the forecast
            self.following = self.react if np.ptp(price) > 0 else np.zeros_like(self.react)
        if not (self._h0 <= k < self._h1):
            return load_wh, setpoint_mask, setpoint_wh
        row = k - self._h0
        mask = setpoint_mask | self.following
        setpoint = np.where(self.following, self._setpoint[row], setpoint_wh)
        return self._planned_load(row, load_wh), mask, setpoint

    def _responsive_wh(self, k: int, n_rounds: int, r):
        """``(answered draw, scheduled draw)`` of the responsive devices over the horizon (None: none). The
        meter's load holds their scheduled draw, which the answer replaces."""
        if self.devices is None:
            return None
        scheduled_draw, scheduled_supply = self.devices.energy_wh(k, n_rounds)
        kept_draw, kept_supply = self.devices.energy_wh(k, n_rounds, responsive=False)
        if not np.array_equal(r.device_supply_wh, scheduled_supply - kept_supply):
            raise TrexsimError("a price-responsive device supplies energy that moves with the TC price: the meter "
                               "takes only the draw of a device's answer (its supply stays as scheduled); "
                               "docs/extending.md, 'Adding a device'")
        return r.device_draw_wh, scheduled_draw - kept_draw

    def _planned_load(self, row: int, load_wh: np.ndarray) -> np.ndarray:
        if self._shift is None:
            return self._load[row]
        load = np.asarray(load_wh, dtype=np.int64)
        if self._device_wh is None:
            return np.maximum(load + self._shift[row], 0)
        answered, scheduled = self._device_wh[0][row], self._device_wh[1][row]
        # the flexible share moves the rest of the load; the devices draw their answer in place of their schedule
        return np.maximum(load - scheduled + self._shift[row], 0) + answered

    def load_forecast(self, d: int, load_wh: np.ndarray) -> np.ndarray:
        """The consumption planned for round d (the profile's where no plan covers it), for the traders."""
        if self._h0 <= d < self._h1:
            return self._planned_load(d - self._h0, load_wh)
        return load_wh


class AuctionHouseholds(_Households):
    """Households in a TC double auction (``tc.market: double_auction``): they answer each interval's call for
    bids with their devices' bids (``trexsim.tc.auction.household_bids``) and, when the interval is metered, do
    what cleared (``follow_cleared``). Same interface as :class:`TCHouseholds`."""

    def __init__(self, tc: TCConfig, profiles, battery: BatteryBank, interval_s: int, roster_index: np.ndarray,
                 external: np.ndarray):
        super().__init__(tc, profiles, battery, interval_s, roster_index, external)
        self.price_rounds = max(1, int(round(tc.price_interval_s / interval_s)))
        flexible = tc.flexible_load
        self.share = float(flexible.share) if flexible is not None else 0.0
        self.max_flexible_wh = float(flexible.max_power_w) * interval_s / 3600.0 if flexible is not None else 0.0
        if flexible is None:  # no flexible load: every interval is its own window (nothing deferred)
            self.window_rounds = self.price_rounds
        self.reset()

    def reset(self) -> None:
        n = len(self.roster_index)
        self.following = np.zeros(n, dtype=bool)
        self._bids: dict[int, object] = {}      # interval's first round -> the bids made for it
        self._cleared: dict[int, tuple[float, float]] = {}   # -> (price, fill)
        self._bid_backlog = np.zeros(n)         # the backlog the next bids start from (as the last clearing left it)
        self._backlog = np.zeros(n)             # the real one, as metered
        self._carry = np.zeros(n)               # flexible energy beyond the last bid (deferred whatever cleared)
        self._h0 = self._h1 = -1
        self._load = self._setpoint = None

    def on_schedule(self, msg: TCSchedule) -> TCPlan | None:
        from trexsim.tc.auction import bid_share, household_bids, urgency

        first = msg.first_round
        if msg.final:  # the cleared price: remember it, and what the bids leave deferred
            price, fill = float(msg.buy_price[0]), float(msg.fill)
            self._cleared[first] = (price, fill)
            bids = self._bids.get(first, (None, 0))[0]
            if bids is not None:
                left = bids.flexible_wh * (1 - bid_share(bids.flexible_price, price, fill))
                self._bid_backlog = np.zeros_like(left) if bids.must_run else self._carry + left
            return None
        rounds = len(msg.buy_price)
        load, gen = forecast_wh(self.profiles, self.tc.forecast, first, rounds, self.interval_s, self.profiles.seed,
                                self.roster_index)
        episode_end = msg.expected_price is not None and len(msg.expected_price) <= rounds
        must_run = (first % self.window_rounds) + rounds >= self.window_rounds or episode_end
        cap = float(msg.price_cap)
        left = 0 if must_run else (self.window_rounds - first % self.window_rounds - rounds) // self.price_rounds
        bids = household_bids(load, gen, self.share, self.max_flexible_wh, self._bid_backlog, must_run, left,
                              urgency(first, self.window_rounds, self.price_rounds), self.battery.stored_wh,
                              self.battery, self.react, self.active, np.asarray(msg.expected_price, dtype=np.float64),
                              float(msg.buy_price[0]), cap)
        # what the flexible load holds beyond its bid stays deferred whatever clears
        self._carry = (0.0 if must_run else self._bid_backlog + self.share * load.sum(axis=0) - bids.flexible_wh
                       - bids.flexible_must_wh)
        self._bids[first] = (bids, rounds)
        participant, price, wh = bids.rows(self.roster_index)
        return TCPlan(msg.episode, first, msg.iteration, self.roster_index, bids.unresponsive_wh.copy(),
                      participant, price, wh)

    def meter_inputs(self, k: int, load_wh: np.ndarray, setpoint_mask: np.ndarray, setpoint_wh: np.ndarray):
        from trexsim.tc.auction import follow_cleared

        cleared = self._cleared.pop(k, None)
        bids, rounds = self._bids.pop(k, (None, 0))
        if cleared is not None and bids is not None:  # an interval starts: follow what cleared, on the real load
            real, gen = self.profiles.energy_wh(k, rounds)
            self._load, self._setpoint, self.following, self._backlog = follow_cleared(
                bids, cleared[0], cleared[1], self.share, real, gen, self._backlog)
            self._h0, self._h1 = k, k + real.shape[0]
        if not (self._h0 <= k < self._h1):
            self.following = np.zeros_like(self.following)
            return load_wh, setpoint_mask, setpoint_wh
        row = k - self._h0
        return (self._load[row], setpoint_mask | self.following,
                np.where(self.following, self._setpoint[row], setpoint_wh))

    def load_forecast(self, d: int, load_wh: np.ndarray) -> np.ndarray:
        if self._h0 <= d < self._h1:
            return self._load[d - self._h0]
        return load_wh


__all__ = ["AuctionHouseholds", "TCHouseholds", "whole_wh"]
