"""The TC market module: transactive control's price schedules from predicted powerflow, over the fabric.

Runs instead of the grid module's tariff when ``market.type`` is ``tc`` (docs/powerflow.md, "The TC market
on the fabric"). Episodes are cut into horizons of ``tc.horizon_h`` (the last one may be shorter). Ahead of
each horizon — at the end of round ``first - close_steps - 1``, or at the episode's start for the first
ones, so the traders of round ``first - close_steps`` already see its prices — it runs the TC loop as
messages:

1. publishes a ``TCSchedule`` (pass 0: the grid's time-of-use buy price); every participant module answers
   with a ``TCPlan``: its households' planned net energy per round under that schedule (flexible loads
   moved, price-reactive batteries dispatched: ``trexsim.tc.households``);
2. when every household has answered, solves the feeder once per price interval on the predicted average
   net powers (``trexsim.tc.response.predict_intervals``) and prices each interval as the grid's buy price
   plus the congestion component (``trexsim.tc.pricing``), damped into the last schedule; repeats 1-2
   ``tc.iterations`` times;
3. publishes the final schedule (``TCSchedule`` with ``final``; the households answer once more, which gives
   the published schedule's predicted loading) and then as ``GridPrices``: the market bills every import at
   the TC price and every export at the grid's sell price, through the same delivery rule as any run.

It records each price interval in the run's ``tc_schedule`` table and a ``tc`` entry in summary.json.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from trexsim.config.schema import PowerflowLimits, SimulationConfig, TCConfig
from trexsim.errors import ConfigError
from trexsim.engine.grid import tariff_prices
from trexsim.fabric import topics
from trexsim.fabric.messages import (Delivered, EpisodeEnd, EpisodeStart, GridPrices, RoundEnd, RoundStart, TCPlan,
                                     TCSchedule)
from trexsim.tc.forecast import whole_rounds as _rounds


def congestion_refund_usd(paid_usd: np.ndarray, imports_wh: np.ndarray, rule: str) -> np.ndarray:
    """What ``tc.refund`` returns to each household at an episode's end [$]: nothing (``none``), the whole
    congestion rent ``sum(paid_usd)`` in equal shares (``equal``) or in proportion to each household's
    imports (``by_import``; equal shares if nobody imported). Revenue neutral: the refunds add up to the rent."""
    paid = np.asarray(paid_usd, dtype=np.float64)
    rent = float(paid.sum())
    n = paid.size
    if rule == "none" or n == 0:
        return np.zeros(n)
    imports = np.asarray(imports_wh, dtype=np.float64)
    if rule == "by_import" and imports.sum() > 0:
        return rent * imports / imports.sum()
    return np.full(n, rent / n)


def tc_feeder(config: SimulationConfig):
    """(feeder, mapping, pf_import, pf_export) the TC market predicts with: the ``tc`` section's, else the
    ``powerflow`` section's, else a generated feeder (one house per participant) at 0.95 / 1.0."""
    tc = config.tc or TCConfig()
    pf = config.powerflow
    feeder = tc.feeder if tc.feeder is not None else (pf.feeder if pf is not None else None)
    mapping = tc.mapping if tc.feeder is not None or tc.mapping is not None else (pf.mapping if pf is not None else None)
    pf_import = tc.pf_import if tc.pf_import is not None else (pf.pf_import if pf is not None else 0.95)
    pf_export = tc.pf_export if tc.pf_export is not None else (pf.pf_export if pf is not None else 1.0)
    return feeder, mapping, pf_import, pf_export


def tc_v_min_pu(config: SimulationConfig) -> float:
    """The lowest voltage a TC auction's capacity keeps (``tc.capacity_limits: "loading_and_voltage"``): the ``tc``
    section's ``v_min_pu``, else the powerflow section's limit, else 0.95 p.u."""
    tc = config.tc or TCConfig()
    if tc.v_min_pu is not None:
        return tc.v_min_pu
    return (config.powerflow.limits if config.powerflow is not None else PowerflowLimits()).v_min_pu


class TCMarketModule:
    def __init__(self, fabric, config: SimulationConfig, participant_ids: list[str], con=None,
                 out_dir: str | Path = "."):
        """``con``: a DuckDB connection to the run's database (None: keep the schedules in memory only).
        A generated feeder is written to ``out_dir/tc/feeder.dss`` (with ``mapping.json``)."""
        from trexsim.powerflow.engine import create_engine
        from trexsim.powerflow.errors import PowerflowError
        from trexsim.powerflow.replay import load_feeder
        from trexsim.modules.powerflow import _feeder_argument

        self.fabric = fabric
        self.tc: TCConfig = config.tc or TCConfig()
        study = config.study
        self.grid = config.market.grid
        self.timezone = study.timezone
        self.interval_s = study.interval_s
        self.close_steps = config.market.close_steps
        self.n = len(participant_ids)
        self.horizon_rounds = _rounds(self.tc.horizon_h * 3600, self.interval_s, "tc.horizon_h")
        self.price_rounds = _rounds(self.tc.price_interval_s, self.interval_s, "tc.price_interval_s")
        if self.tc.flexible_load is not None:
            window = _rounds(self.tc.flexible_load.window_h * 3600, self.interval_s, "tc.flexible_load.window_h")
        self.auction = self.tc.market == "double_auction"
        if self.auction:
            # one interval at a time; a flexible-load window is whole intervals (its last one must run)
            self.horizon_rounds = self.price_rounds
            if self.tc.flexible_load is not None and window % self.price_rounds:
                raise ConfigError([("tc.flexible_load.window_h", f"{self.tc.flexible_load.window_h} h is not a whole "
                                  f"number of the double auction's intervals (tc.price_interval_s = "
                                  f"{self.tc.price_interval_s} s)")])
        self.con = con
        feeder, mapping, self.pf_import, self.pf_export = tc_feeder(config)
        folder = Path(out_dir) / "tc"
        folder.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine("opendss")
        try:
            self.feeder_info, layout, self.mapping = load_feeder(_feeder_argument(feeder), mapping, participant_ids,
                                                                 self.engine, folder)
        except PowerflowError as exc:
            raise PowerflowError(f"tc: {exc}") from None
        (folder / "mapping.json").write_text(json.dumps(self.mapping.table, indent=2) + "\n")
        self.engine.bind_loads(self.mapping.load_names)
        self.transformer_cols = np.flatnonzero(np.array(layout.element_kind) == "transformer")
        self.checked_nodes = np.flatnonzero(layout.node_checked)
        self.solves = 0
        self.solve_s = 0.0
        self.capacity_kw = None
        if self.auction:
            self.capacity_kw = self.tc.capacity_kw if self.tc.capacity_kw is not None else self._calibrate_capacity_kw()
            if self.tc.capacity_kw is None and self.tc.capacity_limits == "loading_and_voltage":
                self.capacity_kw = self._voltage_capacity_kw(self.capacity_kw, tc_v_min_pu(config))
        self._expected_congestion: dict[int, float] = {}   # auction: time of day (round of the UTC day) -> last congestion
        self.auction_stats = {"intervals": 0, "congested": 0, "at_cap": 0, "max_demand_kw": 0.0}
        self.episode = -1
        self._tou = self._sell = np.zeros(0)
        self._starts = np.zeros(0, dtype=np.int64)
        self._horizons: list[tuple[int, int]] = []
        self._next = 0                 # index of the next horizon to price
        self._todo: deque = deque()    # horizons due, waiting for the one in progress
        self._pass: dict[str, Any] | None = None
        self.rows: list[dict[str, Any]] = []   # every published price interval (also in tc_schedule)
        self.horizon_stats: list[dict[str, Any]] = []   # per published horizon: passes run, final residual
        self.refused_plans = 0
        self.late_horizons = 0
        self.participant_ids = list(participant_ids)
        self._imports_wh = np.zeros(self.n, dtype=np.int64)   # this episode's, per household
        self._paid_usd = np.zeros(self.n)                      # its congestion payments
        self.congestion: dict[str, Any] | None = None          # the last settled episode's (summary.json)
        fabric.subscribe(topics.EPISODE_START, self.on_episode_start)
        fabric.subscribe(topics.DELIVERED, self.on_delivered)
        fabric.subscribe(topics.EPISODE_END, self.on_episode_end)
        fabric.subscribe(topics.ROUND_START, self.on_round_start)
        fabric.subscribe(topics.ROUND_END, self.on_round_end)
        fabric.subscribe(topics.TC_PLAN, self.on_plan)

    # ------------------------------------------------------------------ when to price a horizon
    def _due_round(self, first: int) -> int:
        """The round at whose end the horizon starting at ``first`` is priced (-1: at the episode's start)."""
        return max(-1, first - self.close_steps - 1)

    def on_episode_start(self, msg: EpisodeStart) -> None:
        self.episode = msg.episode
        self._starts = msg.start_utc_s + np.arange(msg.rounds, dtype=np.int64) * msg.interval_s
        self._tou, self._sell = tariff_prices(self._starts, self.timezone, self.grid)
        if self.auction and len(self._tou) and self.tc.price_cap_per_kwh <= float(self._tou.max()):
            raise ConfigError([("tc.price_cap_per_kwh", f"{self.tc.price_cap_per_kwh} $/kWh is not above the tariff's "
                              f"highest buy price ({float(self._tou.max())} $/kWh): the auction could not price "
                              f"congestion")])
        H = self.horizon_rounds
        self._horizons = [(h0, min(msg.rounds, h0 + H)) for h0 in range(0, msg.rounds, H)]
        self._next = 0
        self.auction_stats = {"intervals": 0, "congested": 0, "at_cap": 0, "max_demand_kw": 0.0}
        self._todo.clear()
        self._pass = None
        self._queue_due(-1)

    # ------------------------------------------------------------------ the congestion rent and its refund
    def on_delivered(self, msg: Delivered) -> None:
        """Each household's congestion payment of the round: its imports times the TC price above the tariff."""
        if msg.episode != self.episode or not 0 <= msg.round < len(self._tou):
            return
        imports = np.asarray(msg.grid_import_wh, dtype=np.int64)
        self._imports_wh += imports
        self._paid_usd += imports * ((float(msg.grid_buy_price) - float(self._tou[msg.round])) / 1000.0)

    def on_episode_end(self, msg: EpisodeEnd) -> None:
        if msg.episode != self.episode:
            return
        refund = congestion_refund_usd(self._paid_usd, self._imports_wh, self.tc.refund)
        rows = {"episode": np.full(self.n, self.episode, dtype=np.int32), "participant": np.arange(self.n, dtype=np.int32),
                "imports_wh": self._imports_wh.copy(), "congestion_paid_usd": self._paid_usd.copy(), "refund_usd": refund}
        self._insert("tc_congestion", rows)
        self.congestion = {
            "episode": self.episode, "refund": self.tc.refund, "rent_usd": float(self._paid_usd.sum()),
            "refunded_usd": float(refund.sum()),
            "participants": {pid: {"congestion_paid_usd": float(p), "refund_usd": float(r)}
                             for pid, p, r in zip(self.participant_ids, self._paid_usd, refund)},
        }
        self._imports_wh[:] = 0
        self._paid_usd[:] = 0.0

    def on_round_start(self, msg: RoundStart) -> None:
        """A horizon whose prices are needed now is published as it stands (see ``_publish_late``)."""
        while (msg.episode == self.episode and self._pass is not None
               and self._pass["h0"] <= msg.delivery_round):
            self._publish_late()

    def on_round_end(self, msg: RoundEnd) -> None:
        if msg.episode == self.episode:
            self._queue_due(msg.round)

    def _queue_due(self, round_index: int) -> None:
        while self._next < len(self._horizons) and self._due_round(self._horizons[self._next][0]) <= round_index:
            self._todo.append(self._horizons[self._next])
            self._next += 1
        if self._pass is None and self._todo:
            self._begin(*self._todo.popleft())

    # ------------------------------------------------------------------ the predict-price-respond loop
    def _begin(self, h0: int, h1: int) -> None:
        base = self._tou[h0:h1].copy()
        self._pass = {"h0": h0, "h1": h1, "iteration": 0, "final": False, "base": base, "schedule": base,
                      "net": np.zeros((h1 - h0, self.n)), "heard": np.zeros(self.n, dtype=bool),
                      "low": None, "high": None, "bracket": float("nan"), "bids": [], "adaptive": None}
        self._publish_schedule()

    def _publish_schedule(self, **auction) -> None:
        p = self._pass
        p["heard"][:] = False
        if self.auction and not p["final"]:
            auction = {"expected_price": self._expected_prices(p["h0"]), "price_cap": self.tc.price_cap_per_kwh}
        self.fabric.publish(topics.TC_SCHEDULE, TCSchedule(self.episode, p["h0"], p["iteration"], p["final"],
                                                           p["schedule"].copy(), self._sell[p["h0"]:p["h1"]].copy(),
                                                           **auction))

    # ------------------------------------------------------------------ the double auction
    def _round_of_day(self, rounds: np.ndarray) -> np.ndarray:
        return (self._starts[rounds] % 86400) // self.interval_s

    def _expected_prices(self, h0: int) -> np.ndarray:
        """The prices the market expects over the next day from round h0 (within the episode): the tariff plus
        the congestion component it cleared at the same time of day last (persistence; none yet: 0)."""
        rounds = np.arange(h0, min(len(self._tou), h0 + 86400 // self.interval_s))
        last = self._expected_congestion
        return self._tou[rounds] + np.array([last.get(int(t), 0.0) for t in self._round_of_day(rounds)])

    def _voltage_capacity_kw(self, loading_kw: float, v_min_pu: float, tolerance: float = 1e-3) -> float:
        """The highest net demand [kW], alike in every household and at most ``loading_kw`` (the loading's
        capacity), at which the lowest checked bus voltage stays at or above ``v_min_pu``: a bisection on the demand
        (a larger demand never lifts the lowest voltage), to ``tolerance`` of ``loading_kw``; a demand whose
        powerflow does not solve counts as below the limit."""
        from trexsim.tc.response import lowest_voltage_pu

        def holds(total_kw: float) -> bool:
            net = np.full(self.n, total_kw / self.n * 1000.0 * self.interval_s / 3600.0)
            v = lowest_voltage_pu(self.engine, self.mapping, net, self.interval_s, self.pf_import, self.pf_export,
                                  self.checked_nodes)
            self.solves += 1
            return bool(np.isfinite(v) and v >= v_min_pu)

        if holds(loading_kw):
            return loading_kw
        if not holds(0.0):
            raise ConfigError([("tc.capacity_limits", f"the feeder's lowest voltage is below powerflow.limits."
                                                      f"v_min_pu ({v_min_pu}) with no demand at all; give "
                                                      f"tc.capacity_kw or lower the limit")])
        low, high = 0.0, loading_kw
        while high - low > tolerance * loading_kw:
            middle = (low + high) / 2.0
            low, high = (middle, high) if holds(middle) else (low, middle)
        return low

    def _calibrate_capacity_kw(self) -> float:
        """The net demand [kW], alike in every household, at which the most loaded transformer's predicted
        loading reaches its rating, 100 % (loading is near proportional to demand: a few rescaled solves). Where
        the feeder's powerflow stops converging first (long LV cables: the voltage collapses before the
        transformer is full), the highest demand that still solved, found by bisection."""
        if not len(self.transformer_cols):
            raise ConfigError([("tc.capacity_kw", "the feeder has no transformer to take the double auction's "
                                                  "capacity from; give it in kW")])
        threshold = 100.0
        per_house_kw, solved, failed = 1.0, 0.0, None
        for step in range(16):
            net = np.full((1, self.n), per_house_kw * 1000.0 * self.interval_s / 3600.0)
            loading = float(self._predict(net, rounds_per_price=1)[0][0])
            if np.isfinite(loading) and loading > 0:
                solved = max(solved, per_house_kw) if loading <= threshold * 1.001 else solved
                target = per_house_kw * threshold / loading
                if failed is None and step >= 3:  # every solve converged: four rescalings are enough
                    return target * self.n
            else:  # did not converge: the limit lies below
                failed = per_house_kw if failed is None else min(failed, per_house_kw)
                target = (solved + failed) / 2
            if failed is not None and target >= failed:
                target = (solved + failed) / 2
            per_house_kw = target
        if solved <= 0:
            raise ConfigError([("tc.capacity_kw", "the feeder's powerflow did not solve when calibrating the "
                                                  "double auction's capacity; give it in kW")])
        return solved * self.n

    def _on_bids(self, msg: TCPlan, idx: np.ndarray) -> None:
        p = self._pass
        unresp = np.asarray(msg.net_wh, dtype=np.float64)
        who = np.asarray(msg.bid_participant if msg.bid_participant is not None else [], dtype=np.int64)
        price = np.asarray(msg.bid_price if msg.bid_price is not None else [], dtype=np.float64)
        wh = np.asarray(msg.bid_wh if msg.bid_wh is not None else [], dtype=np.float64)
        if (unresp.size != idx.size or not (who.size == price.size == wh.size) or not np.all(np.isfinite(unresp))
                or not np.all(np.isfinite(price)) or not np.all(np.isfinite(wh)) or not np.isin(who, idx).all()):
            self.refused_plans += 1
            return
        p["net"][0, idx] = unresp
        p["bids"] = [b for b in p["bids"] if not np.isin(b[0], idx).any()] + [(who, price, wh)]
        p["heard"][idx] = True
        if p["heard"].all():
            self._clear()

    def _clear(self) -> None:
        from trexsim.tc.auction import clear_tc_auction

        p = self._pass
        h0, h1 = p["h0"], p["h1"]
        rounds = h1 - h0
        who = np.concatenate([b[0] for b in p["bids"]]) if p["bids"] else np.zeros(0, dtype=np.int64)
        price = np.concatenate([b[1] for b in p["bids"]]) if p["bids"] else np.zeros(0)
        wh = np.concatenate([b[2] for b in p["bids"]]) if p["bids"] else np.zeros(0)
        unresp = p["net"][0].copy()
        capacity_wh = self.capacity_kw * 1000.0 * rounds * self.interval_s / 3600.0
        base = float(self._tou[h0])
        result = clear_tc_auction(float(unresp.sum()), price, wh, capacity_wh, base, self.tc.price_cap_per_kwh)
        net = unresp + np.bincount(who, weights=result.cleared_wh, minlength=self.n)
        loading, dv = self._predict(np.repeat(net[None, :] / rounds, rounds, axis=0))
        schedule = (self._tou[h0:h1].copy() if result.price_per_kwh <= base
                    else np.full(rounds, result.price_per_kwh))
        for t, c in zip(self._round_of_day(np.arange(h0, h1)), schedule - self._tou[h0:h1]):
            self._expected_congestion[int(t)] = float(c)
        stats = self.auction_stats
        stats["intervals"] += 1
        stats["congested"] += int(result.congested)
        stats["at_cap"] += int(result.price_per_kwh >= self.tc.price_cap_per_kwh)
        stats["max_demand_kw"] = max(stats["max_demand_kw"], result.demand_wh / (rounds * self.interval_s / 3600.0) / 1000)
        p["schedule"], p["final"], p["iteration"] = schedule, True, 1
        self._publish_schedule(fill=result.fill)
        self._publish(loading, dv, schedule, 0.0)

    def on_plan(self, msg: TCPlan) -> None:
        p = self._pass
        if p is None or (msg.episode, msg.first_round, msg.iteration) != (self.episode, p["h0"], p["iteration"]):
            return  # an answer to a schedule no longer asked about
        idx = np.asarray(msg.participant, dtype=np.int64)
        rounds = p["h1"] - p["h0"]
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.n or msg.net_wh.size != (
                idx.size if self.auction else rounds * idx.size):
            self.refused_plans += 1  # never stops the market: the households count as not answering
            return
        if self.auction:
            return self._on_bids(msg, idx)
        p["net"][:, idx] = np.asarray(msg.net_wh, dtype=np.float64).reshape(rounds, idx.size)
        p["heard"][idx] = True
        if p["heard"].all():
            self._advance()

    def _predict(self, net_wh: np.ndarray, rounds_per_price: int | None = None):
        from trexsim.tc.response import predict_intervals

        t0 = time.perf_counter()
        out = predict_intervals(self.engine, self.mapping, net_wh, rounds_per_price or self.price_rounds,
                                self.interval_s, self.pf_import, self.pf_export, self.transformer_cols,
                                self.checked_nodes, self.tc.predict)
        self.solves += net_wh.shape[0] if self.tc.predict == "round_peak" else len(out[0])
        self.solve_s += time.perf_counter() - t0
        return out

    def _advance(self) -> None:
        from trexsim.tc.pricing import congestion_price
        from trexsim.tc.response import AdaptiveDamping, adaptive_schedule, bisect_congestion, next_schedule

        p = self._pass
        loading, dv = self._predict(p["net"])
        rounds = p["h1"] - p["h0"]
        congestion = np.repeat(congestion_price(loading, dv, self.tc.congestion), self.price_rounds)[:rounds]
        # the prices this schedule's own prediction implies, and how far the schedule is from them
        implied = p["base"] + congestion
        residual = float(np.max(np.abs(implied - p["schedule"]))) if rounds else 0.0
        if p["final"]:
            self._publish(loading, dv, implied, residual)
            return
        if self.tc.update == "bisection":
            firsts = np.arange(0, rounds, self.price_rounds)   # (a schedule is one price per interval, per round)
            p["low"], p["high"], middle = bisect_congestion(p["low"], p["high"], p["schedule"][firsts] - p["base"][firsts],
                                                            congestion[firsts])
            p["bracket"] = float(np.max(p["high"] - p["low"])) if rounds else 0.0
        converged = self.tc.tolerance is not None and (residual <= self.tc.tolerance or (
            self.tc.update == "bisection" and p["bracket"] <= self.tc.tolerance))
        if not converged:
            if self.tc.update == "adaptive":
                firsts = np.arange(0, rounds, self.price_rounds)
                if p["adaptive"] is None:
                    p["adaptive"] = AdaptiveDamping(self.tc.damping)
                step = adaptive_schedule(p["adaptive"], p["schedule"][firsts], implied[firsts])
                p["schedule"] = np.repeat(step, self.price_rounds)[:rounds]
            elif self.tc.update == "bisection":
                p["schedule"] = p["base"] + np.repeat(middle, self.price_rounds)[:rounds]
            else:
                p["schedule"] = next_schedule(p["schedule"], p["base"], congestion, p["iteration"], self.tc.damping,
                                              self.tc.update)
        p["iteration"] += 1
        p["final"] = converged or p["iteration"] == self.tc.iterations
        self._publish_schedule()

    def _publish_late(self) -> None:
        """Not every household answered before the horizon's prices were needed (a participant process late,
        crashed or gone): publish the schedule of the last complete pass, without a final ``TCSchedule``, so
        the households run that horizon on their own policies; the predictions are not known (NaN)."""
        self.late_horizons += 1
        p = self._pass
        nan = np.full(len(range(p["h0"], p["h1"], self.price_rounds)), np.nan)
        self._publish(nan, nan, np.full(p["h1"] - p["h0"], np.nan), float("nan"))

    def _publish(self, loading: np.ndarray, dv: np.ndarray, implied: np.ndarray, residual: float) -> None:
        p = self._pass
        self.horizon_stats.append({"episode": self.episode, "first_round": int(p["h0"]), "passes": int(p["iteration"]),
                                   "residual_per_kwh": residual, "bracket_per_kwh": p["bracket"],
                                   "step": p["adaptive"].used_step() if p["adaptive"] is not None else None,
                                   "lipschitz": p["adaptive"].lipschitz if p["adaptive"] is not None else None,
                                   "rejected": p["adaptive"].rejected if p["adaptive"] is not None else None})
        h0, h1 = p["h0"], p["h1"]
        schedule = p["schedule"]
        firsts = np.arange(h0, h1, self.price_rounds)
        rows = {
            "episode": np.full(len(firsts), self.episode, dtype=np.int32),
            "horizon_first_round": np.full(len(firsts), h0, dtype=np.int32),
            "first_round": firsts.astype(np.int32), "start_utc_s": self._starts[firsts],
            "tou_buy_price": self._tou[firsts], "congestion": schedule[firsts - h0] - self._tou[firsts],
            "price": schedule[firsts - h0], "sell_price": self._sell[firsts],
            "predicted_transformer_loading_pct": loading, "predicted_voltage_deviation_pu": dv,
            "implied_price": implied[firsts - h0],
        }
        self.rows.extend({k: v[j].item() for k, v in rows.items()} for j in range(len(firsts)))
        self._insert("tc_schedule", rows)
        self._pass = None
        self.fabric.publish(topics.GRID_PRICES, GridPrices(self.episode, h0, schedule.copy(), self._sell[h0:h1].copy()))
        if self._todo:
            self._begin(*self._todo.popleft())

    def _insert(self, table: str, rows: dict) -> None:
        """Append ``rows`` (column -> array, in the table's column order) to a table of the run's database."""
        if self.con is None:
            return
        self.con.register("_trexsim_tc_rows", pa.table(rows))
        try:
            self.con.execute(f"INSERT INTO {table} SELECT * FROM _trexsim_tc_rows")
        finally:
            self.con.unregister("_trexsim_tc_rows")

    # ------------------------------------------------------------------ results
    def summary(self) -> dict[str, Any]:
        """The schedules of the last episode, summed up (summary.json's ``tc`` entry)."""
        rows = [r for r in self.rows if r["episode"] == self.episode]
        price = np.array([r["price"] for r in rows]) if rows else np.zeros(0)
        congestion = np.array([r["congestion"] for r in rows]) if rows else np.zeros(0)
        return {
            "tc": self.tc.model_dump(mode="json", exclude={"feeder", "mapping"}), "feeder": self.feeder_info,
            "horizons": len(self._horizons), "price_intervals": len(rows),
            "powerflow_solves_for_prices": self.solves, "solve_s": round(self.solve_s, 4),
            "mean_price": float(price.mean()) if price.size else None,
            "max_price": float(price.max()) if price.size else None,
            "max_congestion": float(congestion.max()) if congestion.size else None,
            "max_predicted_transformer_loading_pct": float(np.nanmax([r["predicted_transformer_loading_pct"] for r in rows]))
            if rows and np.any(np.isfinite([r["predicted_transformer_loading_pct"] for r in rows])) else None,
            "late_horizons": self.late_horizons, "refused_plans": self.refused_plans,
            "congestion": self.congestion,
            # the double auction: its capacity, intervals cleared above the tariff or with bids cut, at the cap
            "auction": (dict(self.auction_stats, capacity_kw=round(float(self.capacity_kw), 3)) if self.auction
                        else None),
            # how far each published schedule is from the prices its own prediction implies ($/kWh; 0: a fixed
            # point), and the passes it took
            "horizon_passes": [h["passes"] for h in self.horizon_stats if h["episode"] == self.episode],
            "max_residual_per_kwh": max((h["residual_per_kwh"] for h in self.horizon_stats
                                         if h["episode"] == self.episode and np.isfinite(h["residual_per_kwh"])),
                                        default=None),
            # bisection: the widest bracket left around a horizon's fixed point ($/kWh; None: another update)
            "max_bracket_per_kwh": max((h["bracket_per_kwh"] for h in self.horizon_stats
                                        if h["episode"] == self.episode and np.isfinite(h["bracket_per_kwh"])),
                                       default=None),
            # adaptive: per horizon the step its last schedule took, the largest secant slope of F measured and
            # the passes rejected (their gap rose; the step halved); None: another update
            "adaptive": ([{"step": h["step"], "lipschitz": h["lipschitz"], "rejected": h["rejected"]}
                          for h in self.horizon_stats if h["episode"] == self.episode]
                         if self.tc.update == "adaptive" else None),
        }

    def close(self) -> None:
        self.engine.close()


__all__ = ["TCMarketModule", "congestion_refund_usd", "tc_feeder"]
