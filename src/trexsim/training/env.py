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
from trexsim.training.config import default_energy_value_per_kwh

__all__ = ["DatedEnv", "ResidualOrders", "config_on_date", "default_energy_value_per_kwh"]




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


class ResidualOrders(gymnasium.Wrapper):
    """The agent chooses its two prices and its battery set-point; the quantities follow from them.

    Action ``Box(-1, 1, (3,))`` = bid price, ask price, battery set-point, each as in the env's
    5-value action. The order quantities are the household's forecast residual after its own
    battery, the rule the ``fixed_price`` trader uses: with ``net = load - generation + battery``
    (Wh of the delivery round, battery + = charge), it bids ``max(net, 0)`` and asks
    ``max(-net, 0)``. Load and generation are the observation's own forecast (indices 4, 5); the
    set-point is first limited to what the battery can do from its expected stored energy (the last
    observed state of charge plus the set-point already placed for the round in between).
    """

    def __init__(self, env: gymnasium.Env, config: SimulationConfig, agent: str):
        super().__init__(env)
        spec = dict(config.expanded_participants())[agent]
        if spec.trader.type != "external" or spec.trader.action != "continuous":
            raise ValueError(f"ResidualOrders needs {agent!r} to have a continuous external trader")
        self._max_q = float(spec.trader.max_quantity_wh)
        storage = spec.storage if spec.storage is not None and spec.storage.policy == "external" else None
        hours = config.study.interval_s / 3600.0
        self._charge = float(np.floor(storage.charge_power_w * hours)) if storage else 0.0
        self._discharge = float(np.floor(storage.discharge_power_w * hours)) if storage else 0.0
        self._capacity = storage.capacity_wh if storage else 0.0
        self._eff = storage.efficiency if storage else 1.0
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self._obs = None
        self._pending_wh = 0.0  # battery energy at the meter already placed for the round in between

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs, self._pending_wh = obs, 0.0
        return obs, info

    def to_env_action(self, action) -> np.ndarray:
        """The env's 5-value action for ``action`` given the last observation."""
        a = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64).reshape(3)), -1.0, 1.0)
        obs = self._obs
        load, gen = float(obs[4]) * self._max_q, float(obs[5]) * self._max_q
        stored = float(obs[6]) * self._capacity
        stored += self._eff * self._pending_wh if self._pending_wh >= 0 else self._pending_wh / self._eff
        battery = a[2] * (self._charge if a[2] >= 0 else self._discharge)
        battery = min(battery, max(0.0, (self._capacity - stored) / self._eff)) if battery >= 0 else \
            -min(-battery, max(0.0, stored * self._eff))
        battery = float(np.floor(battery)) if battery >= 0 else -float(np.floor(-battery))  # whole Wh, never beyond the limit
        setpoint = battery / self._charge if battery >= 0 and self._charge else (battery / self._discharge if self._discharge else 0.0)
        net = load - gen + battery
        bid_wh, ask_wh = max(net, 0.0), max(-net, 0.0)
        to_q = lambda q: 2.0 * min(q, self._max_q) / self._max_q - 1.0  # noqa: E731 - the env maps [-1, 1] onto [0, max]
        self._pending_wh = battery
        return np.array([a[0], to_q(bid_wh), a[1], to_q(ask_wh), setpoint], dtype=np.float32)

    def step(self, action):
        obs, reward, term, trunc, info = self.env.step(self.to_env_action(action))
        self._obs = obs
        return obs, reward, term, trunc, info
