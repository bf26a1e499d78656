"""Residential participants of a whole population: meters, profiles, batteries, traders.

One module holds one household or thousands, as arrays. Each round ``k`` it:

1. runs round k's devices and meters: the battery (self-consumption policy) tracks the
   household's contracted position for round k, i.e. it discharges to cover what load and
   sales need beyond PV and purchases, and charges from what is left over; then publishes
   the ``MeterReadings`` of round k (read at its end);
2. lets each trader population place orders for delivery round ``k + close_steps`` from
   what the household can see: its own forecast (its own profile for that round: perfect
   foresight, as in T-REX), its battery plan and the grid's prices.

It also keeps a shadow battery run with no market at all, so every round records the
household's grid-only bill (the counterfactual everyone is compared with).
"""

from __future__ import annotations

import msgspec
import numpy as np

from trexsim.agents.base import OrderBatch, TraderObservation, build_trader_populations, population_kinds
from trexsim.config.schema import ParticipantConfig
from trexsim.data.profiles import ProfileSet
from trexsim.devices.battery import BatteryBank, meter_round, plan_round, spare_discharge_wh, stored_after_committed
from trexsim.engine.mechanisms import total_contracts_checked
from trexsim.fabric import topics
from trexsim.seeding import population_rngs
from trexsim.fabric.messages import Cleared, Delivered, EpisodeStart, GridPrices, MeterReadings, Orders, RoundStart


_DELIVERED_ARRAYS = [f for f in Delivered.__struct_fields__ if f not in ("episode", "round", "grid_buy_price",
                                                                          "grid_sell_price", "auctioneer_surplus_usd")]


class Participants:
    def __init__(self, fabric, participant_ids: list[str], specs: list[ParticipantConfig], profiles: ProfileSet,
                 interval_s: int, rounds_per_episode: int, close_steps: int, rng: np.random.Generator,
                 roster_index: np.ndarray | None = None, roster_size: int | None = None, tc=None,
                 home_market: list[str] | None = None):
        """``roster_index``: where these households stand in the whole roster, when this module holds
        only some of them (one process of a networked run); messages always use roster indices.
        ``tc``: the ``TCConfig`` of a transactive-control run (``market.type: tc``): the households then answer
        the TC market's schedules and follow the published one (``trexsim.tc.households``).
        ``home_market``: with several markets, the id of the market each household's trader places its orders in
        (one per household of this module); None: the only market."""
        self.fabric = fabric
        self.ids = list(participant_ids)
        self.n = len(self.ids)
        self.roster_index = np.arange(self.n, dtype=np.int64) if roster_index is None else np.asarray(roster_index, dtype=np.int64)
        self.roster_size = self.n if roster_size is None else int(roster_size)
        self._whole_roster = self.roster_size == self.n
        self.profiles = profiles
        self.rounds = rounds_per_episode
        self.close_steps = close_steps
        self.index = self.roster_index
        self.battery = BatteryBank(self.n, interval_s)
        for i, spec in enumerate(specs):
            s = spec.storage
            if s is not None:
                # an external battery is driven through the same kernel, with the agent's set-point as its need
                self.battery.configure(i, s.capacity_wh, s.charge_power_w, s.discharge_power_w, s.efficiency,
                                       s.monthly_self_discharge, s.initial_soc, s.policy in ("self_consumption", "external"))
        self.shadow_stored_wh = self.battery.stored_wh.copy()
        self._zeros = np.zeros(self.n, dtype=np.int64)
        self._zeros_f = np.zeros(self.n)
        self._offers_battery = any(getattr(s.trader, "battery_ask_price", None) for s in specs)
        trader_seeds = iter(population_rngs(rng, len(population_kinds([s.trader for s in specs]))))
        self.traders = build_trader_populations([s.trader for s in specs], lambda kind: next(trader_seeds))
        for pop in self.traders:
            pop.set_participant_ids([self.ids[i] for i in pop.members])
        # (population, positions of its members whose battery follows the population's set-points)
        self._setpoint_sources = []
        external = np.array([s.storage is not None and s.storage.policy == "external" for s in specs], dtype=bool)
        for pop in self.traders:
            if hasattr(pop, "battery_setpoint"):
                positions = np.flatnonzero(external[pop.members])
                if positions.size:
                    self._setpoint_sources.append((pop, positions))
        # households whose battery follows a set-point from outside, and this round's set-points [Wh, + charge]
        self._setpoint_mask = np.zeros(self.n, dtype=bool)
        for pop, positions in self._setpoint_sources:
            self._setpoint_mask[pop.members[positions]] = True
        self._setpoint_wh = np.zeros(self.n, dtype=np.int64)
        self.tc = None
        if tc is not None:
            from trexsim.tc.households import AuctionHouseholds, TCHouseholds

            households = AuctionHouseholds if tc.market == "double_auction" else TCHouseholds
            self.tc = households(tc, profiles, self.battery, interval_s, self.roster_index, external)
            fabric.subscribe(topics.TC_SCHEDULE, self.on_tc_schedule)
        self._buy = np.zeros(rounds_per_episode)
        self._sell = np.zeros(rounds_per_episode)
        self.episode = -1
        # delivery round -> the roster's contracted (bought Wh, sold Wh, cost $, revenue $) in every market
        self._contracts: dict[int, tuple[np.ndarray, ...]] = {}
        self._plan_delta: dict[int, np.ndarray] = {}
        # order ids are unique per participant module: a module's ids start at its first household's place << 40
        self._order_id_base = int(self.roster_index.min()) << 40 if self.n else 0
        # with several markets: (market id, this module's positions of the households trading there)
        self._routes: list[tuple[str, np.ndarray]] | None = None
        if home_market is not None:
            if len(home_market) != self.n:
                raise ValueError(f"home_market: {len(home_market)} ids for {self.n} households")
            names = np.asarray(home_market, dtype=object)
            self._routes = [(m, np.flatnonzero(names == m)) for m in dict.fromkeys(home_market)]
            # each roster index's route (-1: not held here)
            self._route_of = np.full(self.roster_size, -1, dtype=np.int64)
            for i, (_, positions) in enumerate(self._routes):
                self._route_of[self.roster_index[positions]] = i
        self._next_order_id = self._order_id_base
        fabric.subscribe(topics.EPISODE_START, self.on_episode_start)
        fabric.subscribe(topics.GRID_PRICES, self.on_grid_prices)
        fabric.subscribe(topics.ROUND_START, self.on_round_start)
        fabric.subscribe(topics.CLEARED, self.on_cleared)
        fabric.subscribe(topics.DELIVERED, self.on_delivered)

    def on_episode_start(self, msg: EpisodeStart) -> None:
        self.episode = msg.episode
        self.battery.reset()
        self.shadow_stored_wh = self.battery.stored_wh.copy()
        self._contracts.clear()
        self._plan_delta.clear()
        self._next_order_id = self._order_id_base
        for pop in self.traders:
            pop.reset(msg.episode)
        if self.tc is not None:
            self.tc.reset()

    def on_tc_schedule(self, msg) -> None:
        if msg.episode == self.episode:
            plan = self.tc.on_schedule(msg)
            if plan is not None:
                self.fabric.publish(topics.TC_PLAN, plan)

    def on_grid_prices(self, msg: GridPrices) -> None:
        end = msg.first_round + len(msg.buy_price)
        self._buy[msg.first_round:end] = msg.buy_price
        self._sell[msg.first_round:end] = msg.sell_price

    def grid_prices(self, round_index: int) -> tuple[float, float]:
        """The grid's (buy, sell) prices [$/kWh] for a round of the current episode, as published."""
        return float(self._buy[round_index]), float(self._sell[round_index])

    def on_cleared(self, msg: Cleared) -> None:
        if msg.episode != self.episode:
            return
        totals = self._contracts.get(msg.delivery_round)
        if totals is None:  # (every market's contracts for the round add up here, over the whole roster)
            r = self.roster_size
            totals = self._contracts[msg.delivery_round] = (np.zeros(r, dtype=np.int64), np.zeros(r, dtype=np.int64),
                                                            np.zeros(r), np.zeros(r))
        if len(msg.quantity_wh):
            i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
            f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
            if not total_contracts_checked(i64(msg.buyer), i64(msg.seller), i64(msg.quantity_wh),
                                           f64(msg.buyer_price), f64(msg.seller_price), *totals):
                raise ValueError(f"Cleared of market {msg.market!r}, delivery round {msg.delivery_round}: a match "
                                 f"names a participant outside the roster of {self.roster_size}, or its columns "
                                 f"differ in length")
        for pop in self.traders:
            pop.on_cleared(msg)

    def _own_contracts(self, totals, zero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This module's households' (bought, sold) Wh of one delivery round's contracts (totals over the roster)."""
        if totals is None:
            return zero, zero
        if self._whole_roster:
            return totals[0], totals[1]
        return totals[0][self.roster_index], totals[1][self.roster_index]

    def on_delivered(self, msg: Delivered) -> None:
        if not self._whole_roster:  # populations index by their own households: hand them their rows
            idx = self.roster_index
            msg = msgspec.structs.replace(msg, **{f: getattr(msg, f)[idx] for f in _DELIVERED_ARRAYS})
        for pop in self.traders:
            pop.on_delivered(msg)

    # ------------------------------------------------------------------ one round
    def on_round_start(self, msg: RoundStart) -> None:
        k = msg.round
        self._meter(k)
        if msg.delivery_round < self.rounds:
            self._trade(k, msg.delivery_round)

    def _meter(self, k: int) -> None:
        load, gen = self.profiles.round_wh(k)
        zero = np.zeros(self.n, dtype=np.int64)
        bought, sold = self._own_contracts(self._contracts.pop(k, None), zero)
        battery = self.battery
        mask, setpoint = self._setpoint_mask, self._setpoint_wh
        for pop, positions in self._setpoint_sources:  # external batteries follow their agent's set-point
            setpoint[pop.members[positions]] = pop.battery_setpoint(k)[positions]
        if self.tc is not None:  # moved loads, price-reactive batteries
            load, mask, setpoint = self.tc.meter_inputs(k, load, mask, setpoint)
        charge, discharge, battery.stored_wh, self.shadow_stored_wh, grid_only_net = meter_round(
            load, gen, bought, sold, mask, setpoint, battery.stored_wh, self.shadow_stored_wh, battery.capacity_wh,
            battery.charge_limit_wh, battery.discharge_limit_wh, battery.efficiency, battery.retention,
            battery.self_consumption)
        self._plan_delta.pop(k, None)
        self.fabric.publish(topics.METER, MeterReadings(
            self.episode, k, self.index, load, gen, charge, discharge, battery.stored_wh.copy(), grid_only_net))

    def _trade(self, k: int, d: int) -> None:
        load_f, gen_f = self.profiles.round_wh(d)
        if self.tc is not None:
            load_f = self.tc.load_forecast(d, load_f)
        battery = self.battery
        # expected stored energy when round d starts: now, then each round between as its contracts
        # will leave it (energy already sold for those rounds is not offered again)
        stored = battery.stored_wh
        if d > k + 1:
            keep_plan = self._setpoint_mask if self.tc is None else self._setpoint_mask | self.tc.following
            zero = np.zeros(self.n, dtype=np.int64)
            for r in range(k + 1, d):
                load_r, gen_r = self.profiles.round_wh(r)
                if self.tc is not None:
                    load_r = self.tc.load_forecast(r, load_r)
                bought_r, sold_r = self._own_contracts(self._contracts.get(r), zero)
                delta = self._plan_delta.get(r)
                stored = stored_after_committed(
                    load_r, gen_r, bought_r, sold_r, keep_plan, self._zeros_f if delta is None else delta, stored,
                    battery.capacity_wh, battery.charge_limit_wh, battery.discharge_limit_wh, battery.efficiency,
                    battery.retention, battery.self_consumption)
        planned_battery, planned_net, after = plan_round(
            load_f, gen_f, stored, battery.capacity_wh, battery.charge_limit_wh, battery.discharge_limit_wh,
            battery.efficiency, battery.retention, battery.self_consumption)
        self._plan_delta[d] = after - stored
        if self._offers_battery:
            spare = spare_discharge_wh(stored, battery.discharge_limit_wh, battery.efficiency,
                                       np.maximum(-planned_battery, 0), battery.self_consumption)
        else:
            spare = self._zeros
        parts = []
        buy, sell = float(self._buy[d]), float(self._sell[d])
        for pop in self.traders:
            m = pop.members
            if m.size == self.n:  # one population holds everyone: no gathering needed
                obs = TraderObservation(self.episode, k, d, load_f, gen_f, planned_battery, planned_net, spare, buy, sell)
            else:
                obs = TraderObservation(self.episode, k, d, load_f[m], gen_f[m], planned_battery[m], planned_net[m],
                                        spare[m], buy, sell)
            batch = pop.act(obs)
            if batch.member.size:
                parts.append((self.roster_index[m[batch.member] if m.size != self.n else batch.member], batch.side, batch.pool,
                              batch.price, batch.quantity_wh))
        if not parts:
            return
        cols = [np.concatenate(c) for c in zip(*parts)] if len(parts) > 1 else list(parts[0])
        count = cols[0].size
        ids = np.arange(self._next_order_id, self._next_order_id + count, dtype=np.int64)
        self._next_order_id += count
        if self._routes is None:
            self.fabric.publish(topics.ORDERS, Orders(self.episode, k, d, cols[0], cols[1], cols[2], cols[3], cols[4], ids))
            return
        # one message per market, each order to its household's home: the orders grouped by market once (a stable
        # sort keeps each market's orders in their order), each message a slice of the grouped columns
        route = self._route_of[cols[0]]
        order = np.argsort(route, kind="stable")
        grouped = [c[order] for c in cols] + [ids[order]]
        bounds = np.searchsorted(route[order], np.arange(len(self._routes) + 1))
        for i, (market, _) in enumerate(self._routes):
            a, b = bounds[i], bounds[i + 1]
            if b > a:
                self.fabric.publish(topics.ORDERS, Orders(self.episode, k, d, *(c[a:b] for c in grouped), market=market))


__all__ = ["OrderBatch", "Participants"]
