"""Electric vehicles charged at home (the ``ev`` device).

Each local day ``D`` has one charging session: the car is plugged in at ``arrival_hour`` on day D and leaves at
``departure_hour`` (on day D + 1 when that is not later than the arrival), each moved by a normal draw of
``spread_minutes`` (kept within 3 sd). Charging starts at the arrival, or with a timer at the first
``charge_start_hour`` after it, and runs at ``charge_power_w`` until the meter has drawn the day's
``daily_energy_wh / efficiency`` (the day's energy is moved by a normal draw of ``energy_spread``) or the car
leaves, whichever is first. Times are local wall-clock times of the study's timezone, so a session keeps its
hours across daylight-saving changes.

A round's energy is the session's cumulative energy at the round's end, rounded to the Wh, minus the same at
its start: whole Wh in every round, and a session's rounds add up to its whole energy (nothing lost to
rounding). This is "uncontrolled" and "timer" charging in the EV-integration literature's terms (e.g. Muratori,
Nature Energy 2018, on the peaks uncontrolled residential charging makes).

**Smart charging** (``charging: "smart"``): the same sessions (same seed, arrival, departure and energy) whose
energy, where a TC price schedule reaches the car, goes into the session's cheapest rounds of the schedule
(:mod:`trexsim.devices.smart_charging`: all-or-nothing, or a logit water-filling with ``tc.response:
"proportional"``), never above the charger's power, before the departure. The car knows its own session (the
driver tells the charger when it leaves and what it needs), not the prices beyond the schedule: a session
still plugged in when the schedule ends puts what it can before that end and carries the rest into the next
schedule, which places it before the departure (the households remember what was metered:
:meth:`ElectricVehicles.follow`). Without a schedule it charges as ``scheduled`` from its arrival.
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo

import numpy as np

from trexsim.config.schema import EVConfig
from trexsim.devices import PriceResponsiveDevice
from trexsim.devices.smart_charging import place_sessions


class ElectricVehicles(PriceResponsiveDevice):
    kind = "ev"
    config_model = EVConfig
    responsive_setting = "charging: smart"

    def __init__(self, participant_ids, settings, positions, clock, seed):
        super().__init__(participant_ids, settings, positions, clock, seed)
        self._tz = zoneinfo.ZoneInfo(clock.timezone)
        self._sessions: dict[tuple[int, int], tuple[float, ...]] = {}
        self._smart = np.array([s.charging == "smart" for s in settings], dtype=bool)
        # (member, day) -> (round the followed schedule ended at, Wh the session had drawn by then)
        self._followed: dict[tuple[int, int], tuple[int, int]] = {}
        self._last_plan = None   # (key, plan): follow() meters the answer respond_wh just gave

    @classmethod
    def max_power_w(cls, settings: EVConfig) -> tuple[float, float]:
        return float(settings.charge_power_w), 0.0

    def _wall_s(self, ordinal: int, hours: float) -> float:
        """UTC seconds of local wall-clock time ``hours`` after midnight of day ``ordinal``."""
        day = _dt.date.fromordinal(ordinal)
        return (_dt.datetime(day.year, day.month, day.day, tzinfo=self._tz) + _dt.timedelta(hours=hours)).timestamp()

    def session(self, member: int, ordinal: int) -> tuple[float, float, float]:
        """Day ``ordinal``'s ``(charge_from_s, charge_until_s, power_w)`` for ``member`` (UTC seconds)."""
        return self._times(member, ordinal)[2:5]

    def _times(self, member: int, ordinal: int) -> tuple[float, ...]:
        """Day ``ordinal``'s ``(arrive_s, leave_s, charge_from_s, charge_until_s, power_w, energy_wh)``: the
        session's times (UTC seconds) and the whole Wh its scheduled charging meters."""
        key = (member, ordinal)
        cached = self._sessions.get(key)
        if cached is not None:
            return cached
        s: EVConfig = self.settings[member]
        z = np.clip(np.random.default_rng(self.member_seed(member, ordinal)).standard_normal(3), -3.0, 3.0)
        arrive = self._wall_s(ordinal, s.arrival_hour) + z[0] * s.spread_minutes * 60.0
        next_day = s.departure_hour <= s.arrival_hour
        leave = self._wall_s(ordinal + next_day, s.departure_hour) + z[1] * s.spread_minutes * 60.0
        start = arrive
        if s.charge_start_hour is not None:
            day = ordinal
            start = self._wall_s(day, s.charge_start_hour)
            while start < arrive:
                day += 1
                start = self._wall_s(day, s.charge_start_hour)
        energy_wh = s.daily_energy_wh * max(0.0, 1.0 + z[2] * s.energy_spread) / s.efficiency
        until = max(min(start + energy_wh / s.charge_power_w * 3600.0, leave), start)
        # the scheduled rounds' running sum ends at this (energy_wh below rounds it the same way)
        whole_wh = float(np.rint(s.charge_power_w / 3600.0 * (until - start)))
        out = (arrive, leave, start, until, s.charge_power_w, whole_wh)
        if len(self._sessions) > 100_000:
            self._sessions.clear()
        self._sessions[key] = out
        return out

    def _edges(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, int, int]:
        """The span's round edges (UTC seconds) and its first and last local days."""
        clock = self.clock
        edges = clock.start_utc_s + (start_round + np.arange(n_rounds + 1, dtype=np.int64)) * clock.interval_s
        edges = edges.astype(np.float64)
        first = _dt.datetime.fromtimestamp(edges[0], self._tz).date().toordinal()
        last = _dt.datetime.fromtimestamp(edges[-1], self._tz).date().toordinal()
        return edges, first, last

    def energy_wh(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        draw = np.zeros((n_rounds, len(self.settings)), dtype=np.int64)
        if n_rounds == 0:
            return draw, draw.copy()
        edges, first, last = self._edges(start_round, n_rounds)
        for m in range(len(self.settings)):
            # sessions that can reach into the span: from two days before it (a late departure) to its last day
            for ordinal in range(first - 2, last + 1):
                start, until, power_w = self.session(m, ordinal)
                if until <= edges[0] or start >= edges[-1] or until <= start:
                    continue
                lo = max(int(np.searchsorted(edges, start, side="right")) - 1, 0)
                hi = min(int(np.searchsorted(edges, until, side="left")), n_rounds)
                cumulative = np.rint(power_w / 3600.0 * np.clip(edges[lo:hi + 1] - start, 0.0, until - start))
                draw[lo:hi, m] += np.diff(cumulative).astype(np.int64)
        return draw, np.zeros_like(draw)

    # -- smart charging ----------------------------------------------------------------------------------------
    def responds(self) -> np.ndarray:
        return self._smart.copy()

    def respond_wh(self, start_round: int, n_rounds: int, price_per_kwh: np.ndarray,
                   band_per_kwh: float) -> tuple[np.ndarray, np.ndarray]:
        draw, supply = self.energy_wh(start_round, n_rounds)   # the members that charge as scheduled
        if n_rounds and self._smart.any():
            smart_draw, _ = self._plan(start_round, n_rounds, price_per_kwh, band_per_kwh)
            draw[:, self._smart] = smart_draw[:, self._smart]
        return draw, supply

    def follow(self, start_round: int, n_rounds: int, price_per_kwh: np.ndarray, band_per_kwh: float) -> None:
        if not (n_rounds and self._smart.any()):
            return
        _, carried = self._plan(start_round, n_rounds, price_per_kwh, band_per_kwh)
        end = start_round + n_rounds
        # older records are never asked again (a schedule's span starts where the last followed one ended)
        self._followed = {k: v for k, v in self._followed.items() if v[0] >= start_round}
        self._followed.update({key: (end, wh) for key, wh in carried.items()})

    def reset(self) -> None:
        self._followed.clear()
        self._last_plan = None

    def _drawn_before(self, member: int, ordinal: int, start_round: int, edge_s: float, times) -> int:
        """Wh session (member, day) drew before the span's first edge: as followed, else as scheduled."""
        followed = self._followed.get((member, ordinal))
        if followed is not None and followed[0] == start_round:
            return followed[1]
        _, _, start, until, power_w, _ = times
        return int(np.rint(power_w / 3600.0 * np.clip(edge_s - start, 0.0, until - start)))

    def _plan(self, start_round: int, n_rounds: int, price_per_kwh, band_per_kwh: float):
        """``(draw_wh (n_rounds, members), carried)``: the smart members' sessions placed under the prices;
        ``carried``: (member, day) -> Wh drawn by the span's end, of the sessions still plugged in then."""
        price = np.ascontiguousarray(price_per_kwh, dtype=np.float64)
        key = (start_round, n_rounds, price.tobytes(), float(band_per_kwh), tuple(sorted(self._followed.items())))
        if self._last_plan is not None and self._last_plan[0] == key:
            return self._last_plan[1]
        edges, first, last = self._edges(start_round, n_rounds)
        who, lo, hi, energy, drawn, caps = [], [], [], [], [], []
        for m in np.flatnonzero(self._smart):
            for ordinal in range(first - 2, last + 1):
                times = self._times(int(m), ordinal)
                arrive, leave, power_w, whole_wh = times[0], times[1], times[4], times[5]
                if leave <= edges[0] or arrive >= edges[-1]:
                    continue
                before = self._drawn_before(int(m), ordinal, start_round, edges[0], times)
                if whole_wh - before <= 0:
                    continue
                # the window within the known prices: from the arrival (or the span's start) to the departure
                # (or the span's end: what does not fit before it is carried into the next schedule)
                w0, w1 = max(arrive, edges[0]), min(leave, edges[-1])
                a = max(int(np.searchsorted(edges, w0, side="right")) - 1, 0)
                b = min(int(np.searchsorted(edges, w1, side="left")), n_rounds)
                if b <= a:
                    continue
                plugged_s = np.clip(np.minimum(edges[a + 1:b + 1], w1) - np.maximum(edges[a:b], w0), 0.0, None)
                who.append(((int(m), ordinal), leave > edges[-1]))
                lo.append(a)
                hi.append(b)
                energy.append(whole_wh - before)
                drawn.append(before)
                caps.append(power_w / 3600.0 * plugged_s)
        draw = np.zeros((n_rounds, len(self.settings)), dtype=np.int64)
        carried: dict[tuple[int, int], int] = {}
        if who:
            sizes = np.array([c.size for c in caps], dtype=np.int64)
            cap_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            out = np.zeros(int(sizes.sum()), dtype=np.int64)
            place_sessions(price, np.array(lo, dtype=np.int64), np.array(hi, dtype=np.int64), cap_start,
                           np.concatenate(caps), np.array(energy, dtype=np.float64), float(band_per_kwh), out)
            for j, ((session, goes_on), a, b) in enumerate(zip(who, lo, hi)):
                placed = out[cap_start[j]:cap_start[j] + sizes[j]]
                draw[a:b, session[0]] += placed
                if goes_on:
                    carried[session] = drawn[j] + int(placed.sum())
        self._last_plan = (key, (draw, carried))
        return draw, carried


__all__ = ["ElectricVehicles"]
