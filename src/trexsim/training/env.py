"""A training environment: the learner's Gymnasium env on a different day every episode.

Built only on the public :func:`trexsim.envs.gym_env`; every episode is a fresh simulation of the
same community (same config, same seed) whose ``study.start_datetime`` is moved to a date drawn
from the training dates.
"""

from __future__ import annotations

import datetime as _dt

import gymnasium
import numpy as np

from trexsim.config.schema import SimulationConfig

__all__ = ["DatedEnv", "config_on_date", "default_energy_value_per_kwh"]


def default_energy_value_per_kwh(config: SimulationConfig) -> float:
    """What a kWh left in the battery at the end of an episode is worth: the mean flat grid price, $/kWh."""
    grid = config.market.grid
    return (grid.buy_price + grid.sell_price) / 2.0


def config_on_date(config: SimulationConfig, date: _dt.date | str) -> SimulationConfig:
    """A copy of ``config`` whose study starts on ``date`` at the same local time of day."""
    out = config.model_copy(deep=True)
    time_of_day = out.study.start_datetime.split(" ")[1] if " " in out.study.start_datetime else "00:00:00"
    out.study.start_datetime = f"{_dt.date.fromisoformat(str(date)).isoformat()} {time_of_day}"
    return out


class DatedEnv(gymnasium.Env):
    """``gym_env(config on date d, agent)`` with ``d`` drawn per episode from ``dates``.

    The draws come from the generator seeded by ``reset(seed=...)`` (Gymnasium's ``np_random``),
    so a seeded run sees the same sequence of days.

    Every episode starts with the battery at ``initial_soc`` and nothing values what is left in it at
    the end, so a policy could "earn" by emptying it on the last day. The last step's reward
    therefore also gets ``energy_value_per_kwh x (stored at the end - stored at the start) / 1000``
    (in ``info["terminal_energy_value_usd"]``); 0 turns this off.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: SimulationConfig, agent: str, dates: list[_dt.date], energy_value_per_kwh: float | None = None):
        from trexsim.envs import gym_env

        if not dates:
            raise ValueError("DatedEnv needs at least one date")
        self._config, self._agent, self._dates = config, agent, list(dates)
        storage = dict(config.expanded_participants())[agent].storage
        self._capacity_wh = storage.capacity_wh if storage is not None else 0.0
        self._initial_wh = storage.capacity_wh * storage.initial_soc if storage is not None else 0.0
        self._value = default_energy_value_per_kwh(config) if energy_value_per_kwh is None else float(energy_value_per_kwh)
        self._make = gym_env
        self._env = gym_env(config_on_date(config, self._dates[0]), agent=agent)
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space
        self.date: _dt.date | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.date = self._dates[int(self.np_random.integers(len(self._dates)))]
        self._env.close()
        self._env = self._make(config_on_date(self._config, self.date), agent=self._agent)
        obs, info = self._env.reset()  # the community's own seed: the same households on every date
        return obs, {**info, "date": self.date.isoformat()}

    def step(self, action):
        obs, reward, term, trunc, info = self._env.step(action)
        if (term or trunc) and self._capacity_wh:
            bonus = self._value * (float(obs[6]) * self._capacity_wh - self._initial_wh) / 1000.0
            reward = float(reward) + bonus
            info = {**info, "terminal_energy_value_usd": bonus}
        return obs, reward, term, trunc, info

    def close(self) -> None:
        self._env.close()
