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
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo

import numpy as np

from trexsim.config.schema import EVConfig
from trexsim.devices import ScheduledDevice


class ElectricVehicles(ScheduledDevice):
    kind = "ev"
    config_model = EVConfig

    def __init__(self, participant_ids, settings, positions, clock, seed):
        super().__init__(participant_ids, settings, positions, clock, seed)
        self._tz = zoneinfo.ZoneInfo(clock.timezone)
        self._sessions: dict[tuple[int, int], tuple[float, float, float]] = {}

    @classmethod
    def max_power_w(cls, settings: EVConfig) -> tuple[float, float]:
        return float(settings.charge_power_w), 0.0

    def _wall_s(self, ordinal: int, hours: float) -> float:
        """UTC seconds of local wall-clock time ``hours`` after midnight of day ``ordinal``."""
        day = _dt.date.fromordinal(ordinal)
        return (_dt.datetime(day.year, day.month, day.day, tzinfo=self._tz) + _dt.timedelta(hours=hours)).timestamp()

    def session(self, member: int, ordinal: int) -> tuple[float, float, float]:
        """Day ``ordinal``'s ``(charge_from_s, charge_until_s, power_w)`` for ``member`` (UTC seconds)."""
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
        until = min(start + energy_wh / s.charge_power_w * 3600.0, leave)
        out = (start, max(until, start), s.charge_power_w)
        if len(self._sessions) > 100_000:
            self._sessions.clear()
        self._sessions[key] = out
        return out

    def energy_wh(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        clock = self.clock
        edges = clock.start_utc_s + (start_round + np.arange(n_rounds + 1, dtype=np.int64)) * clock.interval_s
        edges = edges.astype(np.float64)
        draw = np.zeros((n_rounds, len(self.settings)), dtype=np.int64)
        if n_rounds == 0:
            return draw, draw.copy()
        first = _dt.datetime.fromtimestamp(edges[0], self._tz).date().toordinal()
        last = _dt.datetime.fromtimestamp(edges[-1], self._tz).date().toordinal()
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


__all__ = ["ElectricVehicles"]
