"""What every trexsim environment shares: the agents, their spaces, action decoding, and two backends
that run copies of the community round by round.

- :class:`CompiledBatch`: ``N`` copies stepped by one Numba call per round
  (:func:`trexsim.engine.step.step`, the one round of the engine's kernels). Used when the
  config is within its scope (:func:`compiled_supported`): fixed-price, grid-only and external
  traders, a mechanism with a compiled clearing (every built-in), no ``market.allowed_prices``.
- :class:`SimulationBatch`: ``N`` ordinary :class:`~trexsim.simulation.Simulation` objects, each
  stepped with :meth:`~trexsim.simulation.Simulation.step` (every config; slower).

Both take the same decoded actions and give the same per-agent ledger, rejections and
observations; ``tests/test_envs_vector.py`` checks that they agree exactly.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
from gymnasium import spaces

from trexsim.config.schema import SimulationConfig
from trexsim.data.profiles import Clock, ProfileSet
from trexsim.engine.grid import tariff_prices
from trexsim.agents.base import trader_kind
from trexsim.engine.mechanisms import compiled_clearing, get_mechanism
from trexsim.engine.ties import tie_break_code, tie_key
from trexsim.engine import step as S
from trexsim.envs import _kernels as K
from trexsim.errors import ConfigError
from trexsim.seeding import forecast_noise_rng

OBS_SIZE = 13
OBS_HIGH = 1000.0
ACTION_SIZE = 5
BACKENDS = ("auto", "compiled", "simulation")


def check_seed(seed) -> int:
    """A reset seed as an int, or a clear error (seeds are non-negative integers, like ``study.seed``)."""
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise ValueError(f"reset(seed=...) needs a non-negative integer, not {seed!r}") from None
    if value != seed or value < 0:
        raise ValueError(f"reset(seed=...) needs a non-negative integer, not {seed!r}")
    return value


def check_history(history) -> int:
    """``history=`` as an int >= 1, or a clear error."""
    try:
        value = int(history)
    except (TypeError, ValueError):
        raise ValueError(f"history must be a whole number of observations >= 1, not {history!r}") from None
    if value != history or value < 1 or isinstance(history, bool):
        raise ValueError(f"history must be a whole number of observations >= 1, not {history!r}")
    return value


def observation_space(history: int = 1, low=None, high=None) -> spaces.Box:
    """One agent's observation space: ``history`` stacked observations (zeros lie inside).
    ``low`` / ``high``: the bounds of one observation (:meth:`Community.observation_bounds`: 13 values and
    the optional ones; default the 13's loosest, -1 and :data:`OBS_HIGH`)."""
    low = np.full(OBS_SIZE, -1.0) if low is None else np.asarray(low, dtype=np.float64)
    high = np.full(OBS_SIZE, OBS_HIGH) if high is None else np.asarray(high, dtype=np.float64)
    return spaces.Box(np.tile(low, history).astype(np.float32), np.tile(high, history).astype(np.float32),
                      (history * low.size,), np.float32)


class History:
    """The last ``k`` observations of every agent of every copy, stacked oldest first.

    One preallocated ``(copies, agents, k, width)`` float32 array (``width``: 13 and the optional values): :meth:`push` shifts the blocks one
    place towards the oldest (an in-place slice copy, no allocation) and writes the newest last;
    :meth:`start` zeroes the older blocks (an episode's first observation has no past: zero
    padding). Both return the ``(copies, agents, k * 13)`` view of the array, which the next call
    overwrites: callers copy what they hand out.
    """

    def __init__(self, num_envs: int, n_agents: int, k: int, width: int = OBS_SIZE):
        self.k = k
        self.buffer = np.zeros((num_envs, n_agents, k, width), dtype=np.float32)
        self.flat = self.buffer.reshape(num_envs, n_agents, k * width)  # a view of the same memory

    def start(self, obs: np.ndarray) -> np.ndarray:
        self.buffer[:, :, :-1] = 0.0
        self.buffer[:, :, -1] = obs
        return self.flat

    def push(self, obs: np.ndarray) -> np.ndarray:
        # overlapping source and destination: NumPy copies through a buffer, so this is a shift
        self.buffer[:, :, :-1] = self.buffer[:, :, 1:]
        self.buffer[:, :, -1] = obs
        return self.flat


def compiled_supported(config: SimulationConfig) -> str | None:
    """``None`` if the compiled backend can run this config, else the reason it cannot.

    Every configured feature the compiled round does not implement must be named here: ``auto``
    then falls back to the simulation backend instead of silently running a different market.
    """
    if len(config.market_list()) > 1:
        return f"markets: {len(config.market_list())} markets (the compiled round has one)"
    if config.market.type != "alex":
        return f"market.type {config.market.type!r} (the grid prices come from the TC market module)"
    mech = get_mechanism(config.market.settlement)
    if compiled_clearing(mech) is None:  # (a subclass with its own prices or clearing has none; so do plug-ins)
        return f"settlement {config.market.settlement!r} has no compiled clearing"
    if config.market.allowed_prices is not None:
        return "market.allowed_prices"
    for pid, spec in config.participants.items():
        if not trader_kind(spec.trader.type).compiled_env:
            return f"participant {pid} has a {spec.trader.type} trader"
    return None


class Community:
    """The agents of a config and everything about them that does not change between episodes."""

    def __init__(self, config: SimulationConfig):
        self.config = config
        members = config.expanded_participants()
        self.participant_ids = [pid for pid, _ in members]
        self.specs = [spec for _, spec in members]
        self.agents = [pid for pid, spec in members if spec.trader.type == "external"]
        if not self.agents:
            raise ConfigError([("participants", "no participant has an external trader: nothing for agents to control")])
        self.n = len(members)
        self.agent_index = np.array([i for i, s in enumerate(self.specs) if s.trader.type == "external"], dtype=np.int64)
        t = [self.specs[i].trader for i in self.agent_index]
        self.traders = t
        a_n = len(t)
        self.min_price = np.array([x.min_price for x in t])
        self.max_price = np.array([x.max_price for x in t])
        self.max_q = np.array([x.max_quantity_wh for x in t], dtype=np.float64)
        self.discrete = np.array([x.action == "discrete" for x in t])
        self.levels = np.array([[x.price_levels, x.quantity_levels, x.price_levels, x.quantity_levels, x.battery_levels]
                                for x in t], dtype=np.float64)
        self.savings = np.array([x.reward == "savings" for x in t])
        # potential-based shaping (trader.shaping): the stored energy's value [$/Wh] and the discount, per agent
        self.shaping = any(x.shaping is not None for x in t)
        self.shape_usd_per_wh = np.array([x.shaping.stored_energy_usd_per_kwh / 1000.0 if x.shaping else 0.0 for x in t])
        self.shape_gamma = np.array([x.shaping.gamma if x.shaping else 1.0 for x in t])
        disc = self.discrete[:, None]
        self.low = np.where(disc, 0.0, -1.0) * np.ones((a_n, ACTION_SIZE))
        self.high = np.where(disc, self.levels - 1, 1.0)
        self.scale = np.where(disc, 1.0 / np.maximum(self.levels - 1, 1), 0.5)  # action -> [0, 1] fraction
        self.shift = np.where(disc, 0.0, 1.0) * np.ones((a_n, ACTION_SIZE))
        # an agent without an action places nothing and holds its battery
        self.noop = np.where(disc, 0.0, -1.0) * np.ones((a_n, ACTION_SIZE))
        self.noop[:, 4] = np.where(self.discrete, (self.levels[:, 4] - 1) / 2, 0.0)
        self.any_discrete = bool(self.discrete.any())
        self.external_battery = np.array([s.storage is not None and s.storage.policy == "external" for s in self.specs])
        study = config.study
        self.rounds = study.rounds_per_episode
        self.close_steps = config.market.close_steps
        self.clock = Clock(study.start_utc_s, study.interval_s, self.rounds, study.timezone)
        local = self.clock.timestamps_local(0, self.rounds)
        day = (np.asarray(local.hour) * 3600 + np.asarray(local.minute) * 60 + np.asarray(local.second)) / 86400.0
        week = (np.asarray(local.dayofweek) + day) / 7.0
        self.time_features = np.stack([np.sin(2 * np.pi * day), np.cos(2 * np.pi * day),
                                       np.sin(2 * np.pi * week), np.cos(2 * np.pi * week)], axis=1).astype(np.float32)
        starts = self.clock.round_start_s(np.arange(self.rounds, dtype=np.int64))
        self.buy_price, self.sell_price = tariff_prices(starts, study.timezone, config.market.grid)
        # the households' devices and traders, built by the participants module's own code
        self.participants = self._participants(study.seed)
        bank = self.participants.battery
        has = self.external_battery[self.agent_index]
        self.charge_limit = np.where(has, np.floor(bank.charge_limit_wh[self.agent_index]), 0.0)
        self.discharge_limit = np.where(has, np.floor(bank.discharge_limit_wh[self.agent_index]), 0.0)
        self.capacity = bank.capacity_wh[self.agent_index].copy()
        self.tick = float(config.market.price_tick)
        self._decode_buffers: dict[tuple, tuple] = {}
        self._optional_observations()
        self.obs_low, self.obs_high = self.observation_bounds()
        self.observation_spaces = {a: self.observation_space(j, 1) for j, a in enumerate(self.agents)}
        self.action_spaces = {a: self._action_space(x) for a, x in zip(self.agents, t)}

    def _optional_observations(self) -> None:
        """The values after the 13 (the external traders' ``observe``), and the tables they are read from.

        Every agent of one env has the same layout (the vectorised arrays have one shape); the noise may
        differ. An hour is ``rounds_per_hour`` rounds (3600 s / ``study.interval_s``, at least one).
        """
        wanted = [t.observe for t in self.traders]
        layouts = {(o.pending_setpoint, o.tariff_ahead_h, o.forecast_h) for o in wanted}
        where = "participants.<external>.trader.observe"
        if len(layouts) > 1:
            raise ConfigError([(where, "every external trader must observe the same values: pending_setpoint, "
                                       "tariff_ahead_h and forecast_h differ between them")])
        pending, tariff_h, forecast_h = layouts.pop()
        if pending and self.close_steps == 0:
            raise ConfigError([(where + ".pending_setpoint", "needs market.close_steps >= 1: with 0 no set-point "
                                                            "is ever pending")])
        if tariff_h and self.config.market.type == "tc":
            raise ConfigError([(where + ".tariff_ahead_h", "a 'tc' market's grid prices are not known ahead")])
        self.n_pending = self.close_steps if pending else 0
        self.tariff_h, self.forecast_h = int(tariff_h), int(forecast_h)
        self.forecast_noise = np.array([o.forecast_noise for o in wanted])
        self.rounds_per_hour = max(1, int(round(3600 / self.config.study.interval_s)))
        self.obs_size = OBS_SIZE + self.n_pending + 2 * self.tariff_h + 2 * self.forecast_h
        # the tariff is a function of time, known beyond the episode's end: sampled at the start of the round
        # h hours after each delivery round
        later = np.arange(self.rounds, dtype=np.int64)[:, None] + self.rounds_per_hour * np.arange(1, self.tariff_h + 1)
        buy, sell = tariff_prices(self.clock.round_start_s(later).ravel(), self.config.study.timezone,
                                  self.config.market.grid)
        self.tariff_ahead = np.concatenate([buy.reshape(later.shape), sell.reshape(later.shape)], axis=1)

    def forecast_wh(self, seed: int, load_wh: np.ndarray, gen_wh: np.ndarray) -> np.ndarray:
        """The episode's forecasts ``(rounds, agents, 2 forecast_h)`` [Wh a round] from its profiles
        ``(rounds, agents)`` (:func:`trexsim.envs._kernels.hourly_forecast_wh`): each value times an
        independent lognormal factor of mean 1 and relative standard deviation ``forecast_noise``, drawn
        from the episode's seed (the same seed, the same forecasts, on both backends)."""
        a_n = len(self.agents)
        out = np.zeros((self.rounds, a_n, 2 * self.forecast_h))
        if self.forecast_h == 0:
            return out
        # lognormal with E = 1 and std = sigma: log-std s = sqrt(ln(1 + sigma^2)), log-mean -s^2 / 2
        log_std = np.sqrt(np.log1p(self.forecast_noise ** 2))[None, :, None]
        z = forecast_noise_rng(int(seed)).standard_normal(out.shape)
        factors = np.exp(log_std * z - log_std ** 2 / 2)   # exactly 1 where the noise is 0
        K.hourly_forecast_wh(np.asarray(load_wh, dtype=np.float64), np.asarray(gen_wh, dtype=np.float64),
                             self.rounds_per_hour, factors, out)
        return out

    def shape(self, reward: np.ndarray, obs: np.ndarray, soc_before: np.ndarray) -> None:
        """Shape ``reward`` (copies, agents) in place with the state of charge of ``obs`` (the step's new
        observations) against ``soc_before``, which then holds it (no-op without ``trader.shaping``)."""
        if self.shaping:
            K.shape_rewards(reward, obs[:, :, 6].astype(np.float64), soc_before, self.capacity, self.shape_usd_per_wh,
                            self.shape_gamma)

    def observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)``, each (agents, 13 + optional values): the bounds every observation of the config keeps, in every
        episode and on every date (``trexsim train``'s dated episodes share one space).

        Times of day and week in [-1, 1]; state of charge and the agent's own last contracts (one bid and
        one ask of at most ``max_quantity_wh``) in [0, 1]; grid prices in [0, the config's dearest tariff
        price / ``max_price``] (a TC market's prices have no such bound: :data:`OBS_HIGH`); the mean
        settlement price in [0, ``market.max_price`` / ``max_price``]; the settled energy in
        [0, 2 ``market.max_order_wh`` / ``max_quantity_wh``] (at most two orders a participant). Forecast
        load and generation / ``max_quantity_wh`` have no bound a config fixes: [0, :data:`OBS_HIGH`].
        The optional values: pending set-points in [-1, 1], prices ahead as the grid prices, forecasts as
        the load and generation.
        """
        market, grid = self.config.market, self.config.market.grid
        tariff = max([grid.buy_price, grid.sell_price] + [p for t in grid.tou for p in (t.buy_price, t.sell_price)])
        a_n = len(self.agents)
        low = np.zeros((a_n, self.obs_size))
        high = np.ones((a_n, self.obs_size))
        low[:, 0:4] = -1.0
        high[:, 4:6] = OBS_HIGH
        high[:, 7:9] = OBS_HIGH if market.type == "tc" else tariff / self.max_price[:, None]
        low[:, 9] = np.minimum(0.0, market.min_price / self.max_price)
        high[:, 9] = np.maximum(market.max_price, 0.0) / self.max_price
        high[:, 10] = 2.0 * market.max_order_wh / self.max_q
        # a margin of a millionth where the observation's float arithmetic differs from the bound's
        high[:, 7:11] *= 1.0 + 1e-6
        low[:, 9] *= 1.0 + 1e-6
        t0 = OBS_SIZE + self.n_pending
        f0 = t0 + 2 * self.tariff_h
        low[:, OBS_SIZE:t0] = -1.0
        high[:, t0:f0] = high[:, 7:8]
        high[:, f0:] = OBS_HIGH
        return low, high

    def observation_space(self, agent: int, history: int = 1) -> spaces.Box:
        """Agent ``agent``'s (an index) space of ``history`` stacked observations."""
        return observation_space(history, self.obs_low[agent], self.obs_high[agent])

    def profiles(self, seed: int) -> ProfileSet:
        return ProfileSet.of_participants(self.participant_ids, self.specs, self.clock, seed,
                                          chunk_rounds=min(1440, self.rounds))

    def _participants(self, seed: int):
        from trexsim.fabric.inprocess import InProcessFabric
        from trexsim.modules.participants import Participants
        from trexsim.seeding import participants_rng

        return Participants(InProcessFabric(), self.participant_ids, self.specs, self.profiles(seed),
                            self.config.study.interval_s, self.rounds, self.close_steps, participants_rng(seed))

    @staticmethod
    def _action_space(trader) -> spaces.Space:
        if trader.action == "discrete":
            return spaces.MultiDiscrete([trader.price_levels, trader.quantity_levels, trader.price_levels,
                                         trader.quantity_levels, trader.battery_levels])
        return spaces.Box(-1.0, 1.0, (ACTION_SIZE,), np.float32)

    def booked(self, price: np.ndarray) -> np.ndarray:
        """Prices as the market books them: the same expression as ``Market._snap_price``."""
        tick = self.tick
        return np.round(price / tick) * tick

    def decode(self, raw: np.ndarray):
        """Actions ``(N, agents, 5)`` -> (orders and set-points as ``(N, agents)`` arrays, clipped mask, used actions).

        Out-of-range values and NaN are clipped (NaN to 0: the lowest discrete level, the middle of a
        continuous range); the mask says which agents' actions were changed
        (:func:`trexsim.envs._kernels.decode_actions`). The returned arrays are overwritten by the
        next call: copy what must outlive it.
        """
        raw = np.ascontiguousarray(raw, dtype=np.float64)
        buffers = self._decode_buffers.get(raw.shape)
        if buffers is None:  # reused from step to step: the results are consumed before the next decode
            shape = raw.shape[:2]
            buffers = self._decode_buffers[raw.shape] = (
                np.empty(raw.shape), np.empty(shape, dtype=np.bool_),
                (np.empty(shape), np.empty(shape), np.empty(shape, dtype=np.int64), np.empty(shape),
                 np.empty(shape), np.empty(shape, dtype=np.int64), np.empty(shape, dtype=np.int64)))
        used, changed, orders = buffers
        K.decode_actions(raw, self.low, self.high, self.discrete, self.shift, self.scale, self.min_price,
                         self.max_price, self.max_q, self.charge_limit, self.discharge_limit, self.tick, used,
                         changed, *orders)
        return orders, changed, used


class CompiledBatch:
    """``num_envs`` copies of the community in arrays, one :func:`trexsim.engine.step.step` call per round."""

    def __init__(self, community: Community, num_envs: int):
        c = self.c = community
        self.num_envs = N = int(num_envs)
        n, a_n = c.n, len(c.agents)
        trader = np.zeros(n, dtype=np.int64)
        f_bid = np.zeros(n)
        f_ask = np.zeros(n)
        bid_pool = np.zeros(n, dtype=np.int64)
        batt_ask = np.full(n, np.nan)
        for pop in c.participants.traders:
            if pop.kind == "fixed_price":
                m = pop.members
                trader[m] = S.FIXED_PRICE
                f_bid[m], f_ask[m], bid_pool[m], batt_ask[m] = pop.bid_price, pop.ask_price, pop.bid_pool, pop.battery_ask_price
            elif pop.kind == "external":
                trader[pop.members] = S.EXTERNAL
        agent_of = np.full(n, -1, dtype=np.int64)
        agent_of[c.agent_index] = np.arange(a_n)
        self.bank = bank = c.participants.battery
        mech = get_mechanism(c.config.market.settlement)
        m = c.config.market
        self.params = S.RoundParams(
            c.rounds, c.close_steps, bank.capacity_wh, bank.charge_limit_wh, bank.discharge_limit_wh, bank.efficiency,
            bank.retention, bank.self_consumption, c.external_battery, trader, f_bid, c.booked(f_bid), f_ask,
            c.booked(f_ask), bid_pool, batt_ask, c.booked(batt_ask), bool(np.isfinite(batt_ask).any()), agent_of,
            c.agent_index, float(m.min_price), float(m.max_price), float(m.max_order_wh),
            bool(getattr(mech, "equal_prices", False)), *compiled_clearing(mech), tie_break_code(m.tie_break))
        self.tie_keys = np.zeros(N, dtype=np.int64)
        R = c.rounds
        # every copy's whole episode of profiles, int32 Wh (8 bytes a household-round a copy) unless a
        # value needs more
        self.load = np.zeros((N, R, n), dtype=np.int32)
        self.gen = np.zeros((N, R, n), dtype=np.int32)
        self.seeds: list[int | None] = [None] * N
        self.state = S.new_state(N, n, a_n, c.close_steps)
        self.out = S.new_outputs(N, n, a_n)
        self.work = S.new_workspace(n)
        self.ledger, self.rejected, self.cleared = self.out.ledger, self.out.rejected, self.state.cleared
        self.obs = np.zeros((N, a_n, c.obs_size), dtype=np.float32)
        self.forecast = np.zeros((N, R, a_n, 2 * c.forecast_h))
        self.round = 0

    def reset(self, seeds: list[int]) -> np.ndarray:
        """Start an episode in every copy, copy ``i`` with ``seeds[i]``; returns the observations."""
        c = self.c
        for e, seed in enumerate(seeds):
            if self.seeds[e] != seed:  # profiles depend only on the seed: regenerate only when it changes
                load, gen = c.profiles(int(seed)).energy_wh(0, c.rounds)
                if self.load.dtype != np.int64 and max(int(load.max(initial=0)), int(gen.max(initial=0))) > np.iinfo(np.int32).max:
                    self.load, self.gen = self.load.astype(np.int64), self.gen.astype(np.int64)
                self.load[e], self.gen[e] = load, gen
                self.forecast[e] = c.forecast_wh(int(seed), load[:, c.agent_index], gen[:, c.agent_index])
                self.tie_keys[e] = tie_key(int(seed))
                self.seeds[e] = seed
        S.reset_state(self.state, self.bank.initial_soc * self.bank.capacity_wh)
        self.rejected[:] = 0
        self.round = 0
        d = c.close_steps
        a_n = len(c.agents)
        for e in range(self.num_envs):
            inside = d < c.rounds
            K.observe(self.obs[e], d, c.rounds, c.time_features,
                      self.load[e, d, c.agent_index].astype(np.float64) if inside else np.zeros(a_n),
                      self.gen[e, d, c.agent_index].astype(np.float64) if inside else np.zeros(a_n),
                      self.state.stored_wh[e, c.agent_index], c.capacity, c.buy_price[d] if inside else 0.0,
                      c.sell_price[d] if inside else 0.0, 0.0, 0.0, np.zeros(a_n), np.zeros(a_n), c.max_q,
                      c.max_price, c.n)
            # (nothing is pending before the first round)
            K.observe_ahead(self.obs[e], d, c.rounds, np.zeros((a_n, c.n_pending)), c.charge_limit,
                            c.discharge_limit, c.tariff_ahead, self.forecast[e], c.max_q, c.max_price)
        return self.obs

    def step(self, orders) -> None:
        c = self.c
        inputs = S.RoundInputs(self.load, self.gen, c.buy_price, c.sell_price, self.tie_keys, 0, *orders)
        # an env's episode is episode 0 of a run with the copy's seed (as the simulation backend runs it)
        S.step(self.round, self.params, self.state, inputs, self.out, self.work)
        K.observe_copies(self.round, self.params, self.state, inputs, c.time_features, c.max_q, c.max_price, self.obs,
                         c.charge_limit, c.discharge_limit, c.n_pending, c.tariff_ahead, self.forecast)
        self.round += 1

    def close(self) -> None:
        pass


class SimulationBatch:
    """``num_envs`` ordinary simulations (any config), stepped with ``Simulation.step``."""

    def __init__(self, community: Community, num_envs: int, out_dir: str | Path | None = None):
        self.c = community
        self.num_envs = int(num_envs)
        self._out_dir = Path(out_dir) if out_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.sims: list = [None] * self.num_envs
        a_n = len(community.agents)
        self.cleared = np.zeros((self.num_envs, 2 + 2 * a_n))
        self.ledger = np.zeros((self.num_envs, a_n, len(K.LEDGER_COLUMNS)))
        self.rejected = np.zeros((self.num_envs, a_n), dtype=np.int64)
        self.obs = np.zeros((self.num_envs, a_n, community.obs_size), dtype=np.float32)
        self.forecast = np.zeros((self.num_envs, community.rounds, a_n, 2 * community.forecast_h))
        self._pops: list = [None] * self.num_envs
        self._delivered: list = [None] * self.num_envs
        self.round = 0

    def _copy_dir(self, e: int) -> Path:
        if self._out_dir is not None:
            return self._out_dir if self.num_envs == 1 else self._out_dir / f"copy-{e}"
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="trexsim-env-")
        return Path(self._tmp.name) / f"copy-{e}"

    def reset(self, seeds: list[int]) -> np.ndarray:
        from trexsim.fabric import topics
        from trexsim.simulation import Simulation

        c = self.c
        base = c.config
        if base.records.level != "summary" or base.records.plots:  # the env needs no per-order records
            base = base.model_copy(deep=True)
            base.records.level, base.records.plots = "summary", False
        self.cleared[:] = 0
        for e, seed in enumerate(seeds):
            if self.sims[e] is not None:
                self.sims[e].recorder.close()
            config = base
            if seed != base.study.seed:
                config = copy.deepcopy(base)
                config.study.seed = int(seed)
            sim = self.sims[e] = Simulation(config, self._copy_dir(e))
            self._pops[e] = next(p for p in sim.participants.traders if p.kind == "external")
            sim.fabric.subscribe(topics.DELIVERED, lambda msg, e=e: self._delivered.__setitem__(e, msg))
            sim.fabric.subscribe(topics.CLEARED, lambda msg, e=e: self._on_cleared(e, msg))
            sim.fabric.subscribe(topics.REJECTED, lambda msg, e=e: self._on_rejected(e, msg))
            sim.begin_episode(0)
            if c.forecast_h:  # the forecasts come from the simulation's own profiles
                load, gen = sim.profiles.energy_wh(0, c.rounds)
                self.forecast[e] = c.forecast_wh(int(seed), load[:, c.agent_index], gen[:, c.agent_index])
        self.round = 0
        self._observe(c.close_steps)
        return self.obs

    def _on_cleared(self, e: int, msg) -> None:
        c = self.c
        q = msg.quantity_wh
        a_n = len(c.agents)
        row = self.cleared[e]
        row[0], row[1] = K.settled_price_and_volume(np.ascontiguousarray(q, dtype=np.int64),
                                                    np.ascontiguousarray(msg.buyer_price, dtype=np.float64),
                                                    np.ascontiguousarray(msg.seller_price, dtype=np.float64))
        row[2:2 + a_n] = np.bincount(msg.buyer, weights=q, minlength=c.n)[c.agent_index]
        row[2 + a_n:] = np.bincount(msg.seller, weights=q, minlength=c.n)[c.agent_index]

    def _on_rejected(self, e: int, msg) -> None:
        pos = np.searchsorted(self.c.agent_index, msg.participant)
        for p, who in zip(pos, msg.participant):
            if p < self.c.agent_index.size and self.c.agent_index[p] == who:
                self.rejected[e, p] += 1

    def _observe(self, delivery_round: int) -> None:
        c = self.c
        idx = c.agent_index
        inside = delivery_round < c.rounds
        for e, sim in enumerate(self.sims):
            if inside:
                load, gen = sim.profiles.round_wh(delivery_round)
                load, gen = load[idx].astype(np.float64), gen[idx].astype(np.float64)
                buy, sell = sim.participants.grid_prices(delivery_round)
            else:
                load = gen = np.zeros(idx.size)
                buy = sell = 0.0
            row = self.cleared[e]
            a_n = idx.size
            K.observe(self.obs[e], delivery_round, c.rounds, c.time_features, load, gen,
                      sim.participants.battery.stored_wh[idx], c.capacity, buy, sell, row[0], row[1],
                      row[2:2 + a_n], row[2 + a_n:], c.max_q, c.max_price, c.n)
            if c.obs_size > OBS_SIZE:
                # the set-points the external traders hold for the rounds not yet delivered, soonest first
                first = delivery_round - c.close_steps
                pending = np.zeros((a_n, c.n_pending))
                for t in range(c.n_pending):
                    pending[:, t] = self._pops[e].pending_setpoint(first + t)
                K.observe_ahead(self.obs[e], delivery_round, c.rounds, pending, c.charge_limit, c.discharge_limit,
                                c.tariff_ahead, self.forecast[e], c.max_q, c.max_price)

    def step(self, orders) -> None:
        bid_price, _, bid_wh, ask_price, _, ask_wh, battery = orders
        self.rejected[:] = 0
        for e, sim in enumerate(self.sims):
            # the external population holds exactly the agents, in the same (participant) order
            self._pops[e].set_actions(bid_price[e], bid_wh[e], ask_price[e], ask_wh[e], battery[e])
            sim.step()
            d = self._delivered[e]
            i = self.c.agent_index
            self.ledger[e] = np.stack([getattr(d, f)[i] for f in K.LEDGER_COLUMNS], axis=1)
        self.round += 1
        self._observe(self.round + self.c.close_steps)

    def end_episode(self) -> None:
        for sim in self.sims:
            if sim is not None:
                sim.end_episode()

    def close(self) -> None:
        for sim in self.sims:
            if sim is not None:
                sim.recorder.close()
        self.sims = [None] * self.num_envs
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def make_batch(community: Community, num_envs: int, backend: str = "auto", out_dir=None):
    """The backend for ``num_envs`` copies; ``auto``: compiled when the config allows it."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    reason = compiled_supported(community.config)
    if backend == "compiled" and reason is not None:
        raise ValueError(f"the compiled backend cannot run this config: {reason} (use backend='simulation')")
    if backend == "simulation" or (backend == "auto" and (reason is not None or out_dir is not None)):
        return SimulationBatch(community, num_envs, out_dir)
    return CompiledBatch(community, num_envs)
