"""A PettingZoo ParallelEnv over the ALEX market: one step is one market round.

The agents are the participants whose trader is ``{"type": "external"}``; the others keep their
configured traders. Two backends run the round (``backend=``): ``"simulation"`` drives the ordinary
in-process simulation step by step (:meth:`trexsim.simulation.Simulation.step`), ``"compiled"``
runs the same round through the engine's compiled kernels in one call
(:mod:`trexsim.envs._kernels`; several times faster, see docs/envs.md "Speed"; fixed-price,
grid-only and external traders). ``"auto"`` (the default) takes the compiled one when the config
allows it and no ``out_dir`` (run database) is asked for. No market rule is written here; both
give the same ledger, rewards and observations (tests/test_envs_vector.py).

Timeline of a step (``close_steps = c``): the step taken in round ``k`` places each agent's orders
(and battery set-point) for delivery round ``k + c``; the market clears them at the end of round
``k`` and settles delivery round ``k``. The reward returned by that step is the agent's net profit
of delivery round ``k`` — the outcome of the action it took ``c`` steps earlier (rounds before ``c``
have no contracts: the grid covers them). The observation returned is for the next round.

Observation (float32, 13 values, all the agent's own or public):

====  =============================================================================
 0-1  sin, cos of the delivery round's local time of day
 2-3  sin, cos of its day of the week
 4    own forecast load of the delivery round / ``max_quantity_wh``
 5    own forecast generation of the delivery round / ``max_quantity_wh``
 6    own battery state of charge (0 without a battery)
 7    grid buy price of the delivery round / ``max_price``
 8    grid sell price of the delivery round / ``max_price``
 9    last cleared round's mean settlement price / ``max_price`` (0 if nothing settled)
 10   last cleared round's settled energy / (``max_quantity_wh`` x participants)
 11   own energy bought in the last cleared round / ``max_quantity_wh``
 12   own energy sold in the last cleared round / ``max_quantity_wh``
====  =============================================================================

Then, when the trader's ``observe`` asks for them (off by default), in this order: the pending battery
set-points (``close_steps`` values), the grid buy then sell prices 1 to ``tariff_ahead_h`` hours ahead,
and own load then generation forecasts for the ``forecast_h`` hours ahead (docs/envs.md "Optional
observations"); ``env.observation_space(agent)`` has the width.

History stacking (``history=k``, default 1: none): each observation is the concatenation of the
agent's last ``k`` observations, oldest first, ``k * 13`` values; the newest is the last 13. At
the start of an episode the older blocks are zeros (the first observation after ``reset`` is
``k - 1`` blocks of zeros followed by the first observation).

Action, ``continuous``: Box(-1, 1, (5,)) = bid price, bid quantity, ask price, ask quantity,
battery set-point. A price maps linearly onto [``min_price``, ``max_price``], a quantity onto
[0, ``max_quantity_wh``] (rounded to whole Wh; 0 places no order), the set-point onto
[-discharge limit, +charge limit] of the round (ignored without an external battery).
``discrete``: MultiDiscrete([price_levels, quantity_levels, price_levels, quantity_levels,
battery_levels]) over the same ranges. Values outside the space (or NaN) are clipped and reported
in ``infos[agent]["clipped"]``, never raised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from trexsim.config.schema import SimulationConfig
from trexsim.envs import _kernels as K
from trexsim.envs._core import (OBS_HIGH, OBS_SIZE, Community, History, SimulationBatch, check_history, check_seed,
                                make_batch)

__all__ = ["OBS_HIGH", "OBS_SIZE", "TrexParallelEnv"]


class TrexParallelEnv(ParallelEnv):
    metadata = {"name": "trexsim_alex_v0", "render_modes": []}

    def __init__(self, config: SimulationConfig, out_dir: str | Path | None = None, backend: str = "auto",
                 history: int = 1):
        self.history = k = check_history(history)
        self._config = config
        self._community = c = Community(config)
        self.possible_agents = list(c.agents)
        self._batch = make_batch(c, 1, backend, out_dir)
        self.backend = "simulation" if isinstance(self._batch, SimulationBatch) else "compiled"
        # built once: PettingZoo requires the same object on every call
        self._obs_spaces = c.observation_spaces if k == 1 else {a: c.observation_space(j, k) for j, a in enumerate(c.agents)}
        self._history = History(1, len(c.agents), k, c.obs_size) if k > 1 else None
        self._act_spaces = c.action_spaces
        self._noop = c.noop[None].copy()
        self._profit = np.zeros((1, len(c.agents)))
        self._reward = np.zeros((1, len(c.agents)))
        self.agents: list[str] = []
        self._round = 0
        self._first_seed: int | None = None   # the seed of the last reset(seed=...), episodes counted from it
        self._episodes = 0

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    @property
    def _sim(self):
        """The simulation of the ``simulation`` backend (None with the compiled one)."""
        return self._batch.sims[0] if isinstance(self._batch, SimulationBatch) else None

    # ------------------------------------------------------------------ episodes
    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start an episode. ``reset(seed=s)`` starts the sequence of episode seeds ``s, s + 1, ...`` with
        ``s``; ``reset()`` without a seed continues it (Gymnasium's semantics: a new episode, not the last
        one again), starting at the config's ``study.seed`` the first time. The seed decides the
        households' realistic profiles and the round's random tie order; infos give it as ``seed``."""
        if seed is not None:
            self._first_seed, self._episodes = check_seed(seed), 0
        elif self._first_seed is None:
            self._first_seed, self._episodes = self._config.study.seed, 0
        else:
            self._episodes += 1
        seed = check_seed(self._first_seed + self._episodes)
        obs = self._batch.reset([seed])
        self._soc = obs[:, :, 6].astype(np.float64)  # the shaping's potential starts from the first state of charge
        if self._history is not None:
            obs = self._history.start(obs)
        self._round = 0
        self.agents = list(self.possible_agents)
        d = self._community.close_steps
        obs = obs[0].copy()
        return {a: obs[j] for j, a in enumerate(self.agents)}, {a: {"delivery_round": d, "seed": seed}
                                                                for a in self.agents}

    def close(self) -> None:
        self._batch.close()

    # ------------------------------------------------------------------ steps
    def _gather(self, actions: dict) -> tuple[np.ndarray, dict]:
        agents = self.possible_agents
        if len(actions) == len(agents):
            try:  # the usual case: one well-formed action per agent, stacked in one call
                raw = np.array([actions[a] for a in agents], dtype=np.float64)
                if raw.shape == (len(agents), 5):
                    return raw[None], {}
            except (KeyError, ValueError, TypeError):
                pass
        raw = self._noop.copy()  # an agent without an action places nothing and holds its battery
        row = raw[0]
        clipped: dict[str, dict] = {}
        for j, agent in enumerate(agents):
            a = actions.get(agent)
            if a is None:
                continue
            try:
                row[j] = a
            except (ValueError, TypeError):
                row[j] = np.resize(np.nan_to_num(np.asarray(a, dtype=np.float64).reshape(-1)), 5)
                clipped.setdefault(agent, {})["shape"] = "expected 5 values"
        return raw, clipped

    def step(self, actions: dict):
        if not self.agents:
            raise RuntimeError("the episode is over: call reset()")
        c = self._community
        raw, clipped = self._gather(actions)
        orders, changed, used = c.decode(raw)
        if changed.any():  # reported per agent, never raised
            for j in np.flatnonzero(changed[0]):
                clipped.setdefault(self.possible_agents[j], {})["action"] = {"given": raw[0, j].tolist(),
                                                                             "used": used[0, j].tolist()}
        batch = self._batch
        batch.step(orders)
        k = self._round
        self._round = k + 1
        led = batch.ledger[0]
        profit, reward = self._profit, self._reward
        K.agent_rewards(batch.ledger, c.savings, profit, reward)
        c.shape(reward, batch.obs, self._soc)
        profit, reward = profit[0], reward[0]
        done = self._round >= c.rounds
        next_delivery = self._round + c.close_steps
        obs = batch.obs[0] if self._history is None else self._history.push(batch.obs)[0]
        agents = self.possible_agents
        rewards = dict(zip(agents, reward.tolist()))
        # the study's period ends: a time limit, not a terminal state (the household, its battery's energy and
        # tomorrow go on), so learners that bootstrap keep valuing what is stored
        terms = dict.fromkeys(agents, False)
        truncs = dict.fromkeys(agents, done)
        cols = led[:, K.L_BOUGHT:].astype(np.int64).T.tolist()
        infos = {}
        for j, (agent, p, b, s, imp, exp) in enumerate(zip(agents, profit.tolist(), *cols)):
            infos[agent] = {"delivered_round": k, "delivery_round": next_delivery, "net_profit_usd": p,
                            "bought_wh": b, "sold_wh": s, "grid_import_wh": imp, "grid_export_wh": exp}
        if clipped or batch.rejected.any():
            for agent, info in clipped.items():
                infos[agent]["clipped"] = info
            for j in np.flatnonzero(batch.rejected[0]):
                infos[agents[j]]["rejected_orders"] = int(batch.rejected[0, j])
        obs = obs.copy()  # one copy; the agents get rows of it
        observations = {a: obs[j] for j, a in enumerate(agents)}
        if done:
            if isinstance(batch, SimulationBatch):
                batch.end_episode()
            self.agents = []
        return observations, rewards, terms, truncs, infos
