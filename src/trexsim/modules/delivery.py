"""Imbalance settlement: every delivered round, the meters against the contracts of every market.

A market decides contracts (``Cleared``); this module settles them when their round is delivered.
It takes the ``Cleared`` of every market on the fabric (one, or a street's and a community's above
it), totals each participant's contracts for the round (:func:`~trexsim.engine.mechanisms.total_contracts_checked`,
in the order the markets published them), reads the round's meters and bills the rest with the
grid at its net-billing prices (:func:`~trexsim.engine.market_round.settle_checked`), checking that
energy and money balance. Per round ``k``, at the end of round k, it publishes ``Delivered``.
"""

from __future__ import annotations

import numba
import numpy as np

from trexsim.engine.checks import DELIVERY_RULES, auctioneer_surplus_usd
from trexsim.engine.market_round import settle_checked
from trexsim.engine.mechanisms import total_contracts_checked
from trexsim.errors import ConservationError
from trexsim.fabric import topics
from trexsim.fabric.messages import (
    Cleared,
    Delivered,
    EpisodeStart,
    GridPrices,
    MeterReadings,
    Roster,
    RoundEnd,
    RoundStart,
    merge_meter_readings,
)


@numba.njit(cache=True, nogil=True)
def _add_cleared(buyer, seller, quantity_wh, buyer_price, seller_price, bought_wh, sold_wh, cost_usd, revenue_usd):
    """One market's contracts added to the participants' totals; returns their auctioneer surplus [$]
    (from each pair's prices, so exactly 0 for a strongly budget-balanced mechanism), NaN (nothing added) for
    contracts that do not fit the roster. One compiled call."""
    if not total_contracts_checked(buyer, seller, quantity_wh, buyer_price, seller_price, bought_wh, sold_wh,
                                   cost_usd, revenue_usd):
        return np.nan
    return auctioneer_surplus_usd(quantity_wh, buyer_price, seller_price)


class _Contracts:
    """One delivery round's contracts, totalled per participant over every market's ``Cleared``."""

    __slots__ = ("bought_wh", "sold_wh", "cost_usd", "revenue_usd", "surplus_usd")

    def __init__(self, n: int) -> None:
        self.bought_wh = np.zeros(n, dtype=np.int64)
        self.sold_wh = np.zeros(n, dtype=np.int64)
        self.cost_usd = np.zeros(n)
        self.revenue_usd = np.zeros(n)
        self.surplus_usd = 0.0

    def add(self, msg: Cleared) -> None:
        q = np.ascontiguousarray(msg.quantity_wh, dtype=np.int64)
        if not q.size:
            return
        buyer = np.ascontiguousarray(msg.buyer, dtype=np.int64)
        seller = np.ascontiguousarray(msg.seller, dtype=np.int64)
        bp = np.ascontiguousarray(msg.buyer_price, dtype=np.float64)
        sp = np.ascontiguousarray(msg.seller_price, dtype=np.float64)
        surplus = _add_cleared(buyer, seller, q, bp, sp, self.bought_wh, self.sold_wh, self.cost_usd, self.revenue_usd)
        if surplus != surplus:  # NaN
            raise ValueError(f"Cleared of market {msg.market!r}, delivery round {msg.delivery_round}: a match names a "
                             f"participant outside the roster of {self.bought_wh.size}, or its columns differ in length")
        self.surplus_usd += surplus


class ImbalanceSettlement:
    """Settles each delivered round; keeps the run's largest energy and money errors (0 in a correct run)."""

    def __init__(self, fabric, n_participants: int, rounds_per_episode: int) -> None:
        self.fabric = fabric
        self.n = n_participants
        self.episode = -1
        self.round = -1
        self._contracts: dict[int, _Contracts] = {}
        self._meter: list[MeterReadings] = []
        self._buy = np.zeros(rounds_per_episode)
        self._sell = np.zeros(rounds_per_episode)
        self.max_energy_error_wh = 0
        self.max_money_error_usd = 0.0
        fabric.subscribe(topics.ROSTER, self.on_roster)
        fabric.subscribe(topics.EPISODE_START, self.on_episode_start)
        fabric.subscribe(topics.GRID_PRICES, self.on_grid_prices)
        fabric.subscribe(topics.ROUND_START, self.on_round_start)
        fabric.subscribe(topics.CLEARED, self.on_cleared)
        fabric.subscribe(topics.METER, self.on_meter)
        fabric.subscribe(topics.ROUND_END, self.on_round_end)

    def on_roster(self, msg: Roster) -> None:
        self.n = len(msg.participant_ids)

    def on_episode_start(self, msg: EpisodeStart) -> None:
        self.episode = msg.episode
        self.round = -1
        self._contracts.clear()
        self._meter = []

    def on_grid_prices(self, msg: GridPrices) -> None:
        end = msg.first_round + len(msg.buy_price)
        self._buy[msg.first_round:end] = msg.buy_price
        self._sell[msg.first_round:end] = msg.sell_price

    def on_round_start(self, msg: RoundStart) -> None:
        self.round = msg.round
        self._meter = []

    def on_cleared(self, msg: Cleared) -> None:
        if msg.episode != self.episode:
            return
        contracts = self._contracts.get(msg.delivery_round)
        if contracts is None:
            contracts = self._contracts[msg.delivery_round] = _Contracts(self.n)
        contracts.add(msg)

    def on_meter(self, msg: MeterReadings) -> None:
        if msg.episode == self.episode and msg.round == self.round:
            self._meter.append(msg)  # one message per participant module

    def on_round_end(self, msg: RoundEnd) -> None:
        if msg.round == self.round:
            self.fabric.publish(topics.DELIVERED, self.settle(msg.round))

    def settle(self, round_index: int) -> Delivered:
        n = self.n
        c = self._contracts.pop(round_index, None) or _Contracts(n)
        meter = merge_meter_readings(self._meter, n) if self._meter else None
        if meter is None:  # nobody reported: settle as zero energy (the grid covers every contract)
            z = np.zeros(n, dtype=np.int64)
            load = gen = charge = discharge = baseline = z
        else:
            load, gen = meter.load_wh, meter.generation_wh
            charge, discharge = meter.battery_charge_wh, meter.battery_discharge_wh
            baseline = meter.grid_only_net_wh
        buy_p, sell_p = float(self._buy[round_index]), float(self._sell[round_index])
        res = settle_checked(load, gen, charge, discharge, c.bought_wh, c.sold_wh, baseline, c.cost_usd, c.revenue_usd,
                             buy_p, sell_p, c.surplus_usd)
        self._check_conservation(round_index, res, c)
        return Delivered(
            self.episode, round_index, buy_p, sell_p, res.net_meter_wh, c.bought_wh, c.sold_wh,
            res.grid_import_wh, res.grid_export_wh, res.shortfall_wh, res.unused_wh, res.battery_cover_wh,
            c.cost_usd, c.revenue_usd, res.grid_cost_usd, res.grid_revenue_usd, res.grid_only_cost_usd, c.surplus_usd)

    def _check_conservation(self, round_index: int, res, c: _Contracts) -> None:
        """Keeps the run's largest errors; raises on a broken rule of the delivery checks
        (:mod:`trexsim.engine.checks`, run inside :func:`~trexsim.engine.market_round.settle_checked`)."""
        rule, who = res.broken_rule, res.broken_at
        energy_error, traded_error = res.energy_error_wh, res.traded_error_wh
        money_error = abs(float(c.cost_usd.sum()) - float(c.revenue_usd.sum()) - c.surplus_usd)
        self.max_energy_error_wh = max(self.max_energy_error_wh, abs(energy_error), abs(traded_error))
        if not np.isfinite(money_error):
            money_error = float("inf")
        self.max_money_error_usd = max(self.max_money_error_usd, money_error)
        if rule or energy_error or traded_error:
            broken = DELIVERY_RULES[rule] if rule else "energy consumed = energy supplied"
            raise ConservationError(
                f"episode {self.episode}, round {round_index} (delivery): broken rule: {broken}"
                + (f" (participant {who})" if who >= 0 else "")
                + f"; energy error {energy_error} Wh, traded error {traded_error} Wh, money error {money_error:.3g} $, "
                  f"auctioneer surplus {c.surplus_usd:.6g} $")
