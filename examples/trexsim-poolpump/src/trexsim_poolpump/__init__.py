"""A pool pump on a daily timer: ``power_w`` from ``start_hour`` (local wall-clock time) for
``hours_per_day`` hours, every day.

A trexsim device is a :class:`trexsim.devices.ScheduledDevice`: every pump of a run in one object, asked
for whole-Wh energy over any span of rounds. A round's energy is the day's cumulative energy at its end,
rounded to the Wh, minus the same at its start, so any span gives the same rounds and a day's rounds
add up to its whole energy.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Literal

import numpy as np
from pydantic import Field

from trexsim.config.schema import DeviceSettings
from trexsim.devices import ScheduledDevice


class PoolPumpConfig(DeviceSettings):
    type: Literal["pool_pump"]
    power_w: float = Field(1100.0, gt=0, le=20_000, description="The pump's power at the meter, W.")
    start_hour: float = Field(10.0, ge=0, lt=24, description="Local time the timer starts it, hours after midnight.")
    hours_per_day: float = Field(6.0, gt=0, le=24, description="How long it runs each day, hours.")


class PoolPumps(ScheduledDevice):
    kind = "pool_pump"
    config_model = PoolPumpConfig

    @classmethod
    def max_power_w(cls, settings: PoolPumpConfig) -> tuple[float, float]:
        return settings.power_w, 0.0

    def energy_wh(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        tz = zoneinfo.ZoneInfo(self.clock.timezone)
        edges = (self.clock.start_utc_s
                 + (start_round + np.arange(n_rounds + 1, dtype=np.int64)) * self.clock.interval_s).astype(float)
        draw = np.zeros((n_rounds, len(self.settings)), dtype=np.int64)
        first = dt.datetime.fromtimestamp(edges[0], tz).date()
        last = dt.datetime.fromtimestamp(edges[-1], tz).date()
        for m, s in enumerate(self.settings):
            day = first - dt.timedelta(days=1)  # yesterday's run may reach past midnight
            while day <= last:
                on = (dt.datetime(day.year, day.month, day.day, tzinfo=tz) + dt.timedelta(hours=s.start_hour)).timestamp()
                seconds = s.hours_per_day * 3600.0
                cumulative = np.rint(s.power_w / 3600.0 * np.clip(edges - on, 0.0, seconds))
                draw[:, m] += np.diff(cumulative).astype(np.int64)
                day += dt.timedelta(days=1)
        return draw, np.zeros_like(draw)
