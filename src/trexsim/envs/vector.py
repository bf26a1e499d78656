"""Vectorised environment: ``num_envs`` independent copies of the community stepped as one batch.

Every copy is the same community (the config) with its own seed, so its own households' profiles:
copy ``i`` of the first episode after ``reset(seed=s)`` uses seed ``s + i`` (``s`` defaults to the
config's ``study.seed``) — exactly what ``parallel_env(config).reset(seed=s + i)`` gives. All
copies step in lockstep, one market round per step, and all end together after the study's
``rounds_per_episode`` rounds.

Arrays, agents in ``agents`` order (the participants with an external trader, config order):

- ``reset() -> obs, infos``; ``step(actions) -> obs, rewards, terminations, truncations, infos``
- ``actions``: ``(num_envs, n_agents, 5)`` (continuous values or discrete levels, as in
  :mod:`trexsim.envs.parallel`); out-of-range values and NaN are clipped, and
  ``infos["clipped"]`` ``(num_envs, n_agents)`` says whose; never an exception mid-episode.
- ``obs``: ``(num_envs, n_agents, 13 * history)`` float32 (``history=k`` stacks each agent's last
  ``k`` observations, oldest first, zeros before the episode's first; default 1: no stacking);
  ``rewards``: ``(num_envs, n_agents)`` float64 (the reward of the delivery round settled in this
  step, see docs/envs.md "Timing");
  ``terminations``/``truncations``: ``(num_envs, n_agents)`` bool.
- ``infos``: ``delivered_round`` and ``delivery_round`` (ints), per agent arrays
  ``net_profit_usd``, ``bought_wh``, ``sold_wh``, ``grid_import_wh``, ``grid_export_wh``,
  ``clipped``, ``rejected_orders``, and ``seeds`` (the copies' seeds of the episode).

Auto-reset (Gymnasium's "same-step" mode): the step that ends the episode returns
``truncations`` all True (the study's period is a time limit, not a terminal state), ``infos["final_obs"]`` (the last observations) and ``infos["final_seeds"]``,
and already the first observations of the next episode in ``obs``. With ``reseed=True`` (default)
the next episode's copy ``i`` uses seed ``s + e * num_envs + i`` for episode ``e`` (new days,
profiles generated again: about 50 ms per copy of 200 households); ``reseed=False`` replays the
same seeds (no regeneration). The history restarts with every episode: the first observations of
the next episode have zeros in their older blocks; ``final_obs`` holds the last episode's stacks.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from trexsim.config.schema import SimulationConfig
from trexsim.envs import _kernels as K
from trexsim.envs._core import (ACTION_SIZE, Community, History, SimulationBatch, check_history,
                                check_seed, make_batch, observation_space)

__all__ = ["TrexVectorEnv"]


class TrexVectorEnv:
    """``num_envs`` copies of the community as arrays; see the module docstring."""

    metadata = {"name": "trexsim_alex_vector_v0", "autoreset_mode": "SameStep", "render_modes": []}

    def __init__(self, config: SimulationConfig, num_envs: int = 8, backend: str = "auto", reseed: bool = True,
                 history: int = 1):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be at least 1, not {num_envs}")
        self.history = k = check_history(history)
        self._config = config
        self._community = c = Community(config)
        self.num_envs = int(num_envs)
        self.agents = list(c.agents)
        self.n_agents = len(self.agents)
        self.obs_dim, self.action_dim = k * c.obs_size, ACTION_SIZE
        self._batch = make_batch(c, self.num_envs, backend)
        self.backend = "simulation" if isinstance(self._batch, SimulationBatch) else "compiled"
        self.reseed = bool(reseed)
        # one agent's space holds every agent's observations (the loosest of their bounds); the batch's
        # space is each agent's own, for every copy
        self.single_observation_space = observation_space(k, c.obs_low.min(axis=0), c.obs_high.max(axis=0))
        low = np.tile(c.obs_low, (1, k)).astype(np.float32)
        high = np.tile(c.obs_high, (1, k)).astype(np.float32)
        self.observation_space = spaces.Box(np.broadcast_to(low, (self.num_envs, *low.shape)).copy(),
                                            np.broadcast_to(high, (self.num_envs, *high.shape)).copy(),
                                            (self.num_envs, self.n_agents, k * c.obs_size), np.float32)
        self._obs_spaces = c.observation_spaces if k == 1 else {a: c.observation_space(j, k) for j, a in enumerate(c.agents)}
        self._history = History(self.num_envs, self.n_agents, k, c.obs_size) if k > 1 else None
        self.single_action_spaces = c.action_spaces
        if not c.discrete.any():
            self.action_space = spaces.Box(-1.0, 1.0, (self.num_envs, self.n_agents, ACTION_SIZE), np.float32)
        elif c.discrete.all():
            self.action_space = spaces.MultiDiscrete(np.broadcast_to(c.levels.astype(np.int64),
                                                                     (self.num_envs, self.n_agents, ACTION_SIZE)))
        else:  # a mix: the array holds each agent's own kind of value
            self.action_space = None
        self._noop = np.broadcast_to(c.noop, (self.num_envs, self.n_agents, ACTION_SIZE)).copy()
        self._base_seed = config.study.seed
        self._episode = 0
        self._round = 0
        self._started = False
        self.seeds = np.zeros(self.num_envs, dtype=np.int64)

    def observation_space_of(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space_of(self, agent: str) -> spaces.Space:
        return self._community.action_spaces[agent]

    # ------------------------------------------------------------------ episodes
    def _start(self) -> np.ndarray:
        step = self.num_envs if self.reseed else 0
        self.seeds = self._base_seed + self._episode * step + np.arange(self.num_envs, dtype=np.int64)
        self._round = 0
        self._started = True
        obs = self._batch.reset(self.seeds.tolist())
        self._soc = obs[:, :, 6].astype(np.float64)  # the shaping's potential starts from the first state of charge
        if self._history is not None:  # a new episode has no past: the older blocks are zeros
            obs = self._history.start(obs)
        return obs.copy()

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start every copy: after ``reset(seed=s)`` copy ``i`` runs seed ``s + i``; ``reset()`` without a
        seed continues the sequence the automatic resets follow (with ``reseed``: the next episode's seeds,
        ``s + e*N + i``), from the config's ``study.seed`` the first time (Gymnasium's semantics)."""
        if seed is not None:
            self._base_seed, self._episode = check_seed(seed), 0
        elif not self._started:
            self._base_seed, self._episode = self._config.study.seed, 0
        else:
            self._episode += 1
        obs = self._start()
        return obs, {"seeds": self.seeds.copy(), "delivery_round": self._community.close_steps}

    def close(self) -> None:
        self._batch.close()

    # ------------------------------------------------------------------ steps
    def step(self, actions):
        if not self._started:
            raise RuntimeError("call reset() before the first step")
        c = self._community
        raw = np.asarray(actions, dtype=np.float64)
        want = (self.num_envs, self.n_agents, ACTION_SIZE)
        if raw.shape != want:
            if raw.size != self._noop.size:
                raise ValueError(f"actions must have shape {want} (num_envs, agents, 5), not {raw.shape}")
            raw = raw.reshape(want)
        orders, changed, _ = c.decode(raw)
        batch = self._batch
        batch.step(orders)
        k = self._round
        self._round = k + 1
        led = batch.ledger
        profit = np.empty(led.shape[:2])
        rewards = np.empty(led.shape[:2])
        K.agent_rewards(led, c.savings, profit, rewards)
        c.shape(rewards, batch.obs, self._soc)
        done = self._round >= c.rounds
        shape = (self.num_envs, self.n_agents)
        terminations = np.zeros(shape, dtype=bool)   # the period's end is a time limit (see TrexParallelEnv.step)
        truncations = np.full(shape, done)
        infos = {"delivered_round": k, "delivery_round": self._round + c.close_steps, "net_profit_usd": profit,
                 "bought_wh": led[..., K.L_BOUGHT].astype(np.int64), "sold_wh": led[..., K.L_SOLD].astype(np.int64),
                 "grid_import_wh": led[..., K.L_IMPORT].astype(np.int64),
                 "grid_export_wh": led[..., K.L_EXPORT].astype(np.int64), "clipped": changed.copy(),
                 "rejected_orders": batch.rejected.copy(), "seeds": self.seeds.copy()}
        obs = (batch.obs if self._history is None else self._history.push(batch.obs)).copy()
        if done:
            if isinstance(batch, SimulationBatch):
                batch.end_episode()
            infos["final_obs"] = obs
            infos["_final_obs"] = np.ones(self.num_envs, dtype=bool)
            infos["final_seeds"] = self.seeds.copy()
            self._episode += 1
            obs = self._start()
            infos["seeds"] = self.seeds.copy()
        return obs, rewards, terminations, truncations, infos

    def as_gymnasium(self, agent: str | None = None, autoreset_mode: str = "same_step"):
        """A :class:`gymnasium.vector.VectorEnv` view for one learner (see :class:`GymnasiumVectorView`)."""
        return GymnasiumVectorView(self, agent, autoreset_mode)


def _gym_vector_base():
    import gymnasium

    return gymnasium.vector.VectorEnv


class GymnasiumVectorView(_gym_vector_base()):
    """This vector env as a Gymnasium ``VectorEnv`` with flat batches, for a single learner.

    ``agent=None``: every (copy, agent) pair is one sub-environment (``num_envs = copies x agents``,
    row ``i * n_agents + j`` is agent ``j`` of copy ``i``): one shared policy drives them all.
    ``agent=ID``: one sub-environment per copy, that agent learning; the other external agents
    place nothing.

    ``autoreset_mode``: ``"same_step"`` (the final observations in ``infos["final_obs"]``, the step's
    observations already the next episode's first) or ``"next_step"`` (Gymnasium's default, which its vector
    wrappers such as ``NormalizeObservation`` need: the step that ends an episode returns its final
    observations, and the next ``step`` call starts the next episode, ignoring its actions, with rewards 0).
    Infos are arrays of one entry per sub-environment, each with its ``_key`` mask, as Gymnasium's
    ``DictInfoToList`` expects.
    """

    def __init__(self, env: TrexVectorEnv, agent: str | None = None, autoreset_mode: str = "same_step"):
        from gymnasium.vector import AutoresetMode
        from gymnasium.vector.utils import batch_space

        self.env = env
        if agent is not None and agent not in env.agents:
            raise ValueError(f"{agent!r} is not an external agent; external agents: {env.agents}")
        self.agent = agent
        self._j = None if agent is None else env.agents.index(agent)
        spaces_ = {str(s) for s in env.single_action_spaces.values()}
        if agent is None and len(spaces_) > 1:
            raise ValueError("the agents have different action spaces: name one learner with agent=")
        self.num_envs = env.num_envs * (env.n_agents if agent is None else 1)
        self.single_observation_space = env.single_observation_space if agent is None else env.observation_space_of(agent)
        self.single_action_space = env.single_action_spaces[agent or env.agents[0]]
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        modes = {"same_step": AutoresetMode.SAME_STEP, "next_step": AutoresetMode.NEXT_STEP}
        if autoreset_mode not in modes:
            raise ValueError(f"autoreset_mode must be one of {sorted(modes)}, not {autoreset_mode!r}")
        self._next_step = autoreset_mode == "next_step"
        self._pending: tuple | None = None   # next_step: the next episode's first observations and infos
        self.metadata = {"autoreset_mode": modes[autoreset_mode], "render_modes": []}
        self.render_mode = None
        self.closed = False

    def _flat(self, x):
        return x.reshape(self.num_envs, *x.shape[2:]) if self._j is None else x[:, self._j]

    def _infos(self, infos: dict) -> dict:
        out = {}
        for key, value in infos.items():
            if isinstance(value, np.ndarray) and value.ndim >= 2 and value.shape[1] == self.env.n_agents:
                out[key] = self._flat(value)
            elif isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == self.env.num_envs and self._j is None:
                out[key] = np.repeat(value, self.env.n_agents, axis=0)
            else:
                out[key] = value
        for key in [k for k in out if not k.startswith("_")]:  # arrays per sub-environment, with masks
            value = out[key]
            if not (isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == self.num_envs):
                out[key] = np.full(self.num_envs, value)
            out.setdefault(f"_{key}", np.ones(self.num_envs, dtype=bool))
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._pending = None
        obs, infos = self.env.reset(seed=seed, options=options)
        return self._flat(obs), self._infos(infos)

    def step(self, actions):
        env = self.env
        a = np.asarray(actions, dtype=np.float64)
        if self._j is None:
            full = a.reshape(env.num_envs, env.n_agents, ACTION_SIZE)
        else:
            full = env._noop.copy()
            full[:, self._j] = a.reshape(env.num_envs, ACTION_SIZE)
        if self._pending is not None:  # next_step: this call starts the episode the last one ended before
            obs, infos = self._pending
            self._pending = None
            none = np.zeros(self.num_envs, dtype=bool)
            return obs, np.zeros(self.num_envs), none, none.copy(), infos
        obs, rewards, terms, truncs, infos = env.step(full)
        obs, rewards, terms, truncs = self._flat(obs), self._flat(rewards), self._flat(terms), self._flat(truncs)
        infos = self._infos(infos)
        if self._next_step and "final_obs" in infos:
            first = {k: infos[k] for k in ("seeds", "_seeds") if k in infos}
            self._pending = (obs, first)
            obs = infos.pop("final_obs")
            for k in ("_final_obs", "final_seeds", "_final_seeds"):
                infos.pop(k, None)
        return obs, rewards, terms, truncs, infos

    def close_extras(self, **kwargs) -> None:
        self.env.close()
