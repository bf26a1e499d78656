"""A single-agent Gymnasium environment: one learner among fixed-policy participants."""

from __future__ import annotations

import gymnasium

from trexsim.config.schema import SimulationConfig
from trexsim.envs.parallel import TrexParallelEnv


class TrexGymEnv(gymnasium.Env):
    """The :class:`TrexParallelEnv` seen by one agent; every other external agent places nothing."""

    metadata = {"render_modes": []}

    def __init__(self, config: SimulationConfig, agent: str | None = None, out_dir=None, backend: str = "auto",
                 history: int = 1):
        self._env = TrexParallelEnv(config, out_dir, backend, history)
        agents = self._env.possible_agents
        if agent is None:
            if len(agents) != 1:
                raise ValueError(f"several external agents {agents}: name the learner with agent=")
            agent = agents[0]
        if agent not in agents:
            raise ValueError(f"{agent!r} is not an external agent; external agents: {agents}")
        self.agent = agent
        self.observation_space = self._env.observation_space(agent)
        self.action_space = self._env.action_space(agent)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, infos = self._env.reset(seed=seed, options=options)
        return obs[self.agent], infos[self.agent]

    def step(self, action):
        obs, rewards, terms, truncs, infos = self._env.step({self.agent: action})
        return obs[self.agent], rewards[self.agent], terms[self.agent], truncs[self.agent], infos[self.agent]

    def close(self) -> None:
        self._env.close()
