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

__all__ = ["DatedEnv", "config_on_date"]


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
    """

    metadata = {"render_modes": []}

    def __init__(self, config: SimulationConfig, agent: str, dates: list[_dt.date]):
        from trexsim.envs import gym_env

        if not dates:
            raise ValueError("DatedEnv needs at least one date")
        self._config, self._agent, self._dates = config, agent, list(dates)
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
        return self._env.step(action)

    def close(self) -> None:
        self._env.close()
