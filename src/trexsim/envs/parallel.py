"""A PettingZoo ParallelEnv over the ALEX market: one step is one market round.

The agents are the participants whose trader is ``{"type": "external"}``; the others keep their
configured traders. The environment drives the ordinary in-process simulation step by step
(:meth:`trexsim.simulation.Simulation.step`): no market rule is written here.

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

Action, ``continuous``: Box(-1, 1, (5,)) = bid price, bid quantity, ask price, ask quantity,
battery set-point. A price maps linearly onto [``min_price``, ``max_price``], a quantity onto
[0, ``max_quantity_wh``] (rounded to whole Wh; 0 places no order), the set-point onto
[-discharge limit, +charge limit] of the round (ignored without an external battery).
``discrete``: MultiDiscrete([price_levels, quantity_levels, price_levels, quantity_levels,
battery_levels]) over the same ranges. Values outside the space (or NaN) are clipped and reported
in ``infos[agent]["clipped"]``, never raised.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from trexsim.config.schema import SimulationConfig
from trexsim.errors import ConfigError
from trexsim.fabric import topics

OBS_SIZE = 13
OBS_HIGH = 1000.0


class TrexParallelEnv(ParallelEnv):
    metadata = {"name": "trexsim_alex_v0", "render_modes": []}

    def __init__(self, config: SimulationConfig, out_dir: str | Path | None = None):
        self._config = config
        members = config.expanded_participants()
        self.possible_agents = [pid for pid, spec in members if spec.trader.type == "external"]
        if not self.possible_agents:
            raise ConfigError([("participants", "no participant has an external trader: nothing for agents to control")])
        self._specs = {pid: spec for pid, spec in members}
        self._out_dir = Path(out_dir) if out_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        # normalised values lie in [-1, a few]; the bound is generous, not a clip
        self._obs_spaces = {a: spaces.Box(-1.0, OBS_HIGH, (OBS_SIZE,), np.float32) for a in self.possible_agents}
        self._act_spaces = {a: self._action_space(self._specs[a].trader) for a in self.possible_agents}
        self.agents: list[str] = []
        self._sim = None

    @staticmethod
    def _action_space(trader) -> spaces.Space:
        if trader.action == "discrete":
            return spaces.MultiDiscrete([trader.price_levels, trader.quantity_levels, trader.price_levels,
                                         trader.quantity_levels, trader.battery_levels])
        return spaces.Box(-1.0, 1.0, (5,), np.float32)

    # built once in __init__: PettingZoo requires the same object on every call
    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    # ------------------------------------------------------------------ episodes
    def reset(self, seed: int | None = None, options: dict | None = None):
        from trexsim.simulation import Simulation

        config = self._config
        if seed is not None:
            config = copy.deepcopy(config)
            config.study.seed = int(seed)
        if config.records.level != "summary" or config.records.plots:
            config = config.model_copy(deep=True)
            config.records.level, config.records.plots = "summary", False
        if self._sim is not None:
            self._sim.recorder.close()
        out = self._out_dir
        if out is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="trexsim-env-")
            out = Path(self._tmp.name)
        self._sim = sim = Simulation(config, out)
        ids = sim.participant_ids
        self._n = len(ids)
        self._index = np.array([ids.index(a) for a in self.possible_agents], dtype=np.int64)
        pops = [p for p in sim.participants.traders if p.kind == "external"]
        self._pop = pops[0]
        self._pos = np.searchsorted(self._pop.members, self._index)  # agent -> position in the population
        self._traders = [self._specs[a].trader for a in self.possible_agents]
        t = self._traders
        self._min_price = np.array([x.min_price for x in t])
        self._max_price = np.array([x.max_price for x in t])
        self._max_q = np.array([x.max_quantity_wh for x in t], dtype=np.float64)
        self._discrete = np.array([x.action == "discrete" for x in t])
        self._levels = np.array([[x.price_levels, x.quantity_levels, x.price_levels, x.quantity_levels, x.battery_levels]
                                 for x in t], dtype=np.float64)
        self._savings = np.array([x.reward == "savings" for x in t])
        disc = self._discrete[:, None]
        self._low = np.where(disc, 0.0, -1.0) * np.ones((len(t), 5))
        self._high = np.where(disc, self._levels - 1, 1.0)
        self._fill = np.where(disc, 0.0, 0.0) * np.ones((len(t), 5))  # NaN becomes the lowest level / the middle
        self._noop = np.where(disc, 0.0, -1.0) * np.ones((len(t), 5))
        self._noop[:, 4] = np.where(self._discrete, (self._levels[:, 4] - 1) / 2, 0.0)
        bank = sim.participants.battery
        has = np.array([s.storage is not None and s.storage.policy == "external" for s in (self._specs[a] for a in self.possible_agents)])
        self._charge_limit = np.where(has, np.floor(bank.charge_limit_wh[self._index]), 0.0)
        self._discharge_limit = np.where(has, np.floor(bank.discharge_limit_wh[self._index]), 0.0)
        self._capacity = bank.capacity_wh[self._index]
        rounds = config.study.rounds_per_episode
        local = sim.clock.timestamps_local(0, rounds)
        day = (np.asarray(local.hour) * 3600 + np.asarray(local.minute) * 60 + np.asarray(local.second)) / 86400.0
        week = (np.asarray(local.dayofweek) + day) / 7.0
        self._time = np.stack([np.sin(2 * np.pi * day), np.cos(2 * np.pi * day),
                               np.sin(2 * np.pi * week), np.cos(2 * np.pi * week)], axis=1).astype(np.float32)
        self._rounds = rounds
        self._close = config.market.close_steps
        self._delivered = None
        self._cleared = (0.0, 0.0, np.zeros(len(self.possible_agents)), np.zeros(len(self.possible_agents)))
        sim.fabric.subscribe(topics.DELIVERED, self._on_delivered)
        sim.fabric.subscribe(topics.CLEARED, self._on_cleared)
        sim.begin_episode(0)
        self._round = 0
        self.agents = list(self.possible_agents)
        obs = self._observe(self._close)
        return obs, {a: {"delivery_round": self._close} for a in self.agents}

    def close(self) -> None:
        if self._sim is not None:
            self._sim.recorder.close()
            self._sim = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ------------------------------------------------------------------ messages
    def _on_delivered(self, msg) -> None:
        self._delivered = msg

    def _on_cleared(self, msg) -> None:
        q = msg.quantity_wh
        volume = float(q.sum())
        price = float((q * (msg.buyer_price + msg.seller_price) / 2).sum() / volume) if volume else 0.0
        bought = np.bincount(msg.buyer, weights=q, minlength=self._n)[self._index]
        sold = np.bincount(msg.seller, weights=q, minlength=self._n)[self._index]
        self._cleared = (price, volume, bought, sold)

    # ------------------------------------------------------------------ steps
    def _decode(self, actions: dict) -> tuple[tuple, dict]:
        raw = self._noop.copy()  # an agent without an action places nothing and holds its battery
        clipped: dict[str, dict] = {}
        for j, agent in enumerate(self.possible_agents):
            a = actions.get(agent)
            if a is None:
                continue
            try:
                raw[j] = a
            except (ValueError, TypeError):
                v = np.resize(np.nan_to_num(np.asarray(a, dtype=np.float64).reshape(-1)), 5)
                raw[j] = v
                clipped.setdefault(agent, {})["shape"] = "expected 5 values"
        bad = ~np.isfinite(raw)
        fixed = np.clip(np.where(bad, self._fill, raw), self._low, self._high)
        fixed = np.where(self._discrete[:, None], np.rint(fixed), fixed)
        changed = np.flatnonzero(bad.any(axis=1) | (fixed != raw).any(axis=1))
        for j in changed:  # reported per agent, never raised
            clipped.setdefault(self.possible_agents[j], {})["action"] = {"given": raw[j].tolist(), "used": fixed[j].tolist()}
        raw = fixed
        # to [0, 1] fractions, then to physical units
        frac = np.where(self._discrete[:, None], raw / np.maximum(self._levels - 1, 1), (raw + 1) / 2)
        span = self._max_price - self._min_price
        bid_price = self._min_price + frac[:, 0] * span
        ask_price = self._min_price + frac[:, 2] * span
        bid_wh = np.rint(frac[:, 1] * self._max_q).astype(np.int64)
        ask_wh = np.rint(frac[:, 3] * self._max_q).astype(np.int64)
        setpoint = 2 * frac[:, 4] - 1  # [-1, 1]
        battery = np.rint(np.where(setpoint >= 0, setpoint * self._charge_limit, setpoint * self._discharge_limit)).astype(np.int64)
        return (bid_price, bid_wh, ask_price, ask_wh, battery), clipped

    def step(self, actions: dict):
        if not self.agents:
            raise RuntimeError("the episode is over: call reset()")
        (bid_price, bid_wh, ask_price, ask_wh, battery), clipped = self._decode(actions)
        n_pop = self._pop.members.size
        full = [np.zeros(n_pop), np.zeros(n_pop, np.int64), np.zeros(n_pop), np.zeros(n_pop, np.int64), np.zeros(n_pop, np.int64)]
        for arr, values in zip(full, (bid_price, bid_wh, ask_price, ask_wh, battery)):
            arr[self._pos] = values
        self._pop.set_actions(*full)
        k = self._round
        self._sim.step()
        self._round = k + 1
        d = self._delivered
        i = self._index
        profit = (d.market_revenue_usd[i] - d.market_cost_usd[i]) + (d.grid_revenue_usd[i] - d.grid_cost_usd[i])
        reward = np.where(self._savings, d.grid_only_cost_usd[i] + profit, profit)
        done = self._round >= self._rounds
        next_delivery = self._round + self._close
        obs = self._observe(next_delivery)
        rewards, terms, truncs, infos = {}, {}, {}, {}
        for j, agent in enumerate(self.agents):
            rewards[agent] = float(reward[j])
            terms[agent] = done
            truncs[agent] = False
            info = {"delivered_round": k, "delivery_round": next_delivery, "net_profit_usd": float(profit[j]),
                    "bought_wh": int(d.bought_wh[i[j]]), "sold_wh": int(d.sold_wh[i[j]]),
                    "grid_import_wh": int(d.grid_import_wh[i[j]]), "grid_export_wh": int(d.grid_export_wh[i[j]])}
            if agent in clipped:
                info["clipped"] = clipped[agent]
            infos[agent] = info
        if done:
            self._sim.end_episode()
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def _observe(self, delivery_round: int) -> dict:
        k = len(self.possible_agents)
        out = np.zeros((k, OBS_SIZE), dtype=np.float32)
        if delivery_round < self._rounds:
            sim = self._sim
            load, gen = sim.profiles.round_wh(delivery_round)
            out[:, 0:4] = self._time[delivery_round]
            out[:, 4] = load[self._index] / self._max_q
            out[:, 5] = gen[self._index] / self._max_q
            buy, sell = sim.participants.grid_prices(delivery_round)
            out[:, 7] = buy / self._max_price
            out[:, 8] = sell / self._max_price
        stored = self._sim.participants.battery.stored_wh[self._index]
        out[:, 6] = np.divide(stored, self._capacity, out=np.zeros(k), where=self._capacity > 0)
        price, volume, bought, sold = self._cleared
        out[:, 9] = price / self._max_price
        out[:, 10] = volume / (self._max_q * self._n)
        out[:, 11] = bought / self._max_q
        out[:, 12] = sold / self._max_q
        return {a: out[j] for j, a in enumerate(self.possible_agents) if a in self.agents}
