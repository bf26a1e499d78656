"""The T-REX paper's settlement-mechanism study (section 5), reproduced with one command.

Which settlement mechanism lets Q-learning agents learn to price energy the way price theory
says they should? Every cell is a mechanism (M1 ``average_price``, M2 ``exact_match``, M3
``exact_price``) x a supply:demand scenario (2 sellers, 2 buyers on flat profiles: over-supply
167 vs 17 Wh per 1-minute round, over-demand 17 vs 167, balanced 83 vs 83). Agents train for
``episodes`` episodes of ``days`` days; for M3 a further ``anneal_episodes`` anneal alpha and
epsilon by ``anneal_multiplier`` per episode; then every cell runs ``greedy_episodes`` of its
greedy policy (no exploration, no updates), on which M2's "fails to converge" is judged.

The study is itself a JSON config (:class:`SettlementStudy`); ``trexsim study settlement`` runs
it, cells and seeds in parallel processes, on the compiled market
(:mod:`trexsim.studies.fast_market`), and writes per cell the price-concentration histograms of
bids, asks and settlements over the last ``final_episodes`` training episodes, a table of
quantity-weighted medians and a verdict against the paper's expectations: "as in the paper" where the prices
match the paper's claim and, for a claim about learned prices (M1, M3), the agents' policy has stabilised
(:func:`matches_paper`); settlements are kept at the prices actually paid and received, too (``paid_wh``).

Any registered mechanism can be a cell, a plug-in's too (``"mechanisms": ["average_price",
"mcafee"]``). A mechanism without a compiled clearing runs on the general simulation
(:class:`SimulatedMarket`: the modules and messages of ``trexsim run``, slower, the same histograms),
and the report names the backend of every cell; the paper has no expectation for a mechanism
outside M1-M3, so its cells get a verdict of ``None``.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from trexsim.config.schema import PriceGrid, SimulationConfig
from trexsim.errors import ConfigError

PAPER = {"average_price": "M1", "exact_match": "M2", "exact_price": "M3"}
CONVERGED_SHARE = 0.85  # a cell whose last episodes settle less than this share of the tradeable energy has not converged


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scenario(_Model):
    sellers: int = Field(2, ge=1, le=1000)
    buyers: int = Field(2, ge=1, le=1000)
    seller_wh: int = Field(ge=1, description="Generation of each seller per round, Wh.")
    buyer_wh: int = Field(ge=1, description="Consumption of each buyer per round, Wh.")


    @property
    def supply_wh(self) -> int:
        """Energy offered per round, all sellers, Wh."""
        return self.sellers * self.seller_wh

    @property
    def demand_wh(self) -> int:
        """Energy wanted per round, all buyers, Wh."""
        return self.buyers * self.buyer_wh

    @property
    def balance(self) -> str:
        """``over_supply``, ``over_demand`` or ``balanced`` (supply and demand within ``BALANCED_WITHIN`` of each
        other): which of the paper's expectations the cell is judged by, whatever its name."""
        if self.supply_wh > self.demand_wh * (1 + BALANCED_WITHIN):
            return "over_supply"
        if self.demand_wh > self.supply_wh * (1 + BALANCED_WITHIN):
            return "over_demand"
        return "balanced"


BALANCED_WITHIN = 0.1  # supply and demand within 10 % of each other: a balanced market


def ratio_scenarios(ratios=((10, 1), (6, 4), (5, 5), (4, 6), (1, 10)), total_wh: int = 368, sellers: int = 2,
                    buyers: int = 2) -> dict[str, Scenario]:
    """The supply:demand sweep (the paper's figure 6 used these ratios): ``total_wh`` per round split as
    ``supply : demand = a : b`` among ``sellers`` and ``buyers`` (10:1 is the paper's over-supply, 167 vs 17 Wh)."""
    out = {}
    for a, b in ratios:
        out[f"ratio_{a}_{b}"] = Scenario(sellers=sellers, buyers=buyers,
                                         seller_wh=max(1, round(total_wh * a / (a + b) / sellers)),
                                         buyer_wh=max(1, round(total_wh * b / (a + b) / buyers)))
    return out


def population_scenarios(sizes=(2, 5, 10)) -> dict[str, Scenario]:
    """The population sweep: the paper's three cells with ``k`` sellers and ``k`` buyers each, the same energy
    per agent (2+2 is the paper's)."""
    return {f"{name}_{k}x{k}": Scenario(sellers=k, buyers=k, seller_wh=sc.seller_wh, buyer_wh=sc.buyer_wh)
            for k in sizes for name, sc in _default_scenarios().items()}


SWEEPS = {"ratios": ratio_scenarios, "population": population_scenarios}


def _default_scenarios() -> dict[str, Scenario]:
    return {
        "over_supply": Scenario(seller_wh=167, buyer_wh=17),
        "over_demand": Scenario(seller_wh=17, buyer_wh=167),
        "balanced": Scenario(seller_wh=83, buyer_wh=83),
    }


class Learning(_Model):
    learning_rate: float = Field(0.1, gt=0, le=1)
    discount_factor: float = Field(0.98, ge=0, lt=1)
    exploration: float = Field(0.1, ge=0, le=1)
    policy: Literal["epsilon_greedy", "ucb1"] = Field(
        "epsilon_greedy", description="The agents' action choice while learning: the paper's epsilon-greedy, or "
                                      "UCB1 (the same Q-learning values, exploration by confidence bounds).")
    ucb_c: float = Field(0.01, gt=0, le=100, description="ucb1: the bonus's scale, $.")


class SettlementStudy(_Model):
    """The study config. ``quick`` overrides for a smoke run (``--quick``)."""

    name: str = "settlement-mechanisms"
    mechanisms: list[str] = Field(default_factory=lambda: ["average_price", "exact_match", "exact_price"])
    scenarios: dict[str, Scenario] = Field(default_factory=_default_scenarios)
    prices: PriceGrid = Field(default_factory=PriceGrid)
    learning: Learning = Field(default_factory=Learning)
    episodes: int = Field(100, ge=1)
    days: float = Field(14, gt=0)
    interval_s: int = Field(60, gt=0)
    close_steps: int = Field(1, ge=1)
    grid_buy_price: float = Field(0.1449, gt=0)
    grid_sell_price: float = Field(0.069, ge=0)
    anneal_mechanisms: list[str] = Field(default_factory=lambda: ["exact_price"])
    anneal_episodes: int = Field(100, ge=0)
    anneal_multiplier: float = Field(0.98, gt=0, le=1)
    greedy_episodes: int = Field(20, ge=0)
    final_episodes: int = Field(10, ge=1)
    noise_threshold: float = Field(0.15, ge=0, le=1, description="Normalised concentration below this is exploration noise.")
    seed: int = Field(0, ge=0)
    seeds: int = Field(10, ge=1, le=1000, description="Seeds per cell (seed, seed + 1, ...), unless --seeds says "
                                                       "otherwise: enough for a bootstrap interval on every metric.")
    credit: Literal["order", "next_action"] = Field(
        "order", description="Which action a reward updates: the one that placed the order ('order'), or the one "
                             "chosen in the round the reward arrives ('next_action', the original TREX-Core agent's).")
    smoke_run: bool = Field(False, description="Set by --quick (quick_version): too short for the agents to converge, "
                                               "so results.md and the command give no verdicts.")
    quick: dict = Field(default_factory=lambda: {"episodes": 12, "days": 1, "anneal_episodes": 12, "greedy_episodes": 2,
                                                  "final_episodes": 3, "seeds": 1})

    @field_validator("mechanisms", "anneal_mechanisms")
    @classmethod
    def _known_mechanisms(cls, value: list[str]) -> list[str]:
        from trexsim.engine.mechanisms import registered_mechanisms

        names = registered_mechanisms()  # built-ins and installed plug-ins
        unknown = [m for m in value if m not in names]
        if unknown:
            raise ValueError(f"unknown settlement mechanism(s) {', '.join(map(repr, unknown))}; "
                             f"choose from {', '.join(names)}")
        return value

    def with_sweep(self, name: str) -> "SettlementStudy":
        """The study over a sweep's scenarios instead of its own (``SWEEPS``: ``ratios``, ``population``)."""
        if name not in SWEEPS:
            raise ConfigError([("--sweep", f"{name!r}: choose from {', '.join(SWEEPS)}")])
        return self.model_copy(update={"scenarios": SWEEPS[name](), "name": f"{self.name}-{name}"})

    def quick_version(self) -> "SettlementStudy":
        return self.model_copy(update={**self.quick, "smoke_run": True})

    def cell_config(self, mechanism: str, scenario: str, seed: int) -> SimulationConfig:
        """The simulation config of one cell: a plain trexsim config (runnable with ``trexsim run``)."""
        from trexsim.config import parse_config

        sc = self.scenarios[scenario]
        anneal = mechanism in self.anneal_mechanisms
        total = self.episodes + (self.anneal_episodes if anneal else 0) + self.greedy_episodes
        trader = {
            "type": "q_learning", "prices": self.prices.model_dump(), **self.learning.model_dump(),
            "anneal": ({"learning_rate": self.anneal_multiplier, "exploration": self.anneal_multiplier,
                        "after_episode": self.episodes - 1} if anneal else {}),
            "greedy_after_episode": ((self.episodes + (self.anneal_episodes if anneal else 0) - 1)
                                     if self.greedy_episodes else None),
            "credit": self.credit,
        }
        per_hour = 3600 / self.interval_s
        participants = {}
        for i in range(sc.sellers):
            participants[f"seller{i + 1}"] = {"profile": {"type": "flat", "generation_w": sc.seller_wh * per_hour},
                                              "trader": trader}
        for i in range(sc.buyers):
            participants[f"buyer{i + 1}"] = {"profile": {"type": "flat", "load_w": sc.buyer_wh * per_hour},
                                             "trader": trader}
        return parse_config({
            "study": {"name": f"{mechanism}-{scenario}-seed{seed}", "days": self.days, "episodes": total,
                      "seed": seed, "interval_s": self.interval_s},
            "market": {"settlement": mechanism, "close_steps": self.close_steps,
                       "grid": {"buy_price": self.grid_buy_price, "sell_price": self.grid_sell_price}},
            "participants": participants,
            "records": {"level": "summary", "plots": False},
        })


@dataclass
class CellResult:
    mechanism: str
    scenario: str
    seed: int
    prices: np.ndarray
    bid_wh: np.ndarray  # over the final training episodes
    ask_wh: np.ndarray
    settled_wh: np.ndarray  # (2P - 1) half-step bins
    greedy_bid_wh: np.ndarray | None = None  # over the greedy episodes after annealing (M3)
    greedy_ask_wh: np.ndarray | None = None
    greedy_settled_wh: np.ndarray | None = None
    # quantity settled at each price of the grid as paid by the buyer / received by the seller: the
    # settlement prices of a mechanism that pays each side its own price (M3), or the bid price (M2)
    buyer_price_wh: np.ndarray | None = None
    seller_price_wh: np.ndarray | None = None
    greedy_buyer_price_wh: np.ndarray | None = None
    greedy_seller_price_wh: np.ndarray | None = None
    # quantity settled at each price actually paid / received, on the fine bins ``paid_prices`` [$/kWh]
    # (:func:`~trexsim.studies.fast_market.paid_price_bins`): every mechanism's settlement prices, the
    # k-double auction's off the agents' grid included; what the figures draw
    paid_prices: np.ndarray | None = None
    paid_wh: np.ndarray | None = None
    received_wh: np.ndarray | None = None
    greedy_paid_wh: np.ndarray | None = None
    greedy_received_wh: np.ndarray | None = None
    settled_per_episode_wh: list[int] = field(default_factory=list)
    # learning curves, one value an episode: the share of agents whose greedy price changed in the episode
    # (:func:`greedy_actions`), and the entropy of the episode's bid and ask prices, quantity-weighted [bits]
    greedy_change_per_episode: list[float] = field(default_factory=list)
    bid_entropy_bits_per_episode: list[float] = field(default_factory=list)
    ask_entropy_bits_per_episode: list[float] = field(default_factory=list)
    policy_converged: bool | None = None  # both sides' prices as concentrated as converged agents' (converged_entropy_bits)
    efficient_wh: int = 0  # the most an episode can settle: min(supply, demand) x rounds with deliveries
    rounds: int = 0
    seconds: float = 0.0
    backend: str = "compiled"  # or "simulation: <why the compiled market cannot run it>"

    # over the final training episodes: [paid, received, paid's gap, received's gap] in $ (EpisodeTrace) and the Wh
    money_usd: np.ndarray = field(default_factory=lambda: np.zeros(4))
    money_wh: int = 0
    money_episodes: int = 0
    ce_range: tuple[float, float] = (0.0, 0.0)

    training_share: float = 0.0  # settled over the most settleable, over the last final_episodes training episodes
    greedy_share: float | None = None  # the same over the greedy episodes (None: none ran)

    def settled_share(self, episodes: int = 1) -> float:
        """Settled energy of the last ``episodes`` episodes over the most they could settle."""
        return self._share(self.settled_per_episode_wh[-episodes:])

    def _share(self, settled: list[int]) -> float:
        if not self.efficient_wh or not settled:
            return 0.0
        return float(sum(settled)) / (self.efficient_wh * len(settled))

    def price_metrics(self) -> dict[str, float | None]:
        """Over the final training episodes: the mean price buyers paid and sellers received [$/kWh], the
        auctioneer's surplus (paid - received) per episode [$], and the mean distance of the settlement prices
        (both sides, quantity-weighted) from the competitive-equilibrium price range [$/kWh] (None: nothing
        settled)."""
        paid, received, paid_gap, received_gap = self.money_usd.tolist()
        wh = self.money_wh
        per_kwh = (lambda usd: usd * 1000.0 / wh) if wh else (lambda usd: None)
        return {"mean_buyer_price": per_kwh(paid), "mean_seller_price": per_kwh(received),
                "auctioneer_surplus_usd": (paid - received) / self.money_episodes if self.money_episodes else None,
                "ce_price_gap": None if not wh else (paid_gap + received_gap) * 1000.0 / (2 * wh)}

    def medians(self, greedy: bool = False) -> dict[str, float | None]:
        half = np.linspace(self.prices[0], self.prices[-1], 2 * self.prices.size - 1)
        if greedy:
            if self.greedy_bid_wh is None:
                return {"bid": None, "ask": None, "settlement": None, "paid": None, "received": None}
            return {"bid": weighted_median(self.prices, self.greedy_bid_wh),
                    "ask": weighted_median(self.prices, self.greedy_ask_wh),
                    "settlement": weighted_median(half, self.greedy_settled_wh),
                    **self._paid_medians(self.greedy_paid_wh, self.greedy_received_wh)}
        return {"bid": weighted_median(self.prices, self.bid_wh), "ask": weighted_median(self.prices, self.ask_wh),
                "settlement": weighted_median(half, self.settled_wh),
                **self._paid_medians(self.paid_wh, self.received_wh)}

    def _paid_medians(self, paid_wh, received_wh) -> dict[str, float | None]:
        # the prices actually paid and received ("settlement" stays the pair's (bid + ask) / 2, which the
        # paper's verdicts read)
        if self.paid_prices is None or paid_wh is None:
            return {"paid": None, "received": None}
        return {"paid": weighted_median(self.paid_prices, paid_wh),
                "received": weighted_median(self.paid_prices, received_wh)}


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float | None:
    """Quantity-weighted median of prices (the lower median), None without weight."""
    total = float(np.sum(weights))
    if total <= 0:
        return None
    cum = np.cumsum(weights)
    return float(values[int(np.searchsorted(cum, total / 2.0))])


def cell_backend(config: SimulationConfig) -> str | None:
    """``None`` if the compiled study market runs this cell exactly, else why it cannot.

    The compiled market clears by a compiled rule, so a mechanism runs there only if
    :func:`~trexsim.engine.mechanisms.compiled_clearing` gives it one: the built-ins do (M1-M3, the
    k-double auctions, SBBA); a plug-in, or a subclass of a built-in that overrides its clearing or
    prices, does not.
    """
    from trexsim.engine.mechanisms import compiled_clearing, get_mechanism
    from trexsim.studies.fast_market import fast_path_supported

    name = config.market.settlement
    if compiled_clearing(get_mechanism(name)) is None:
        return f"settlement {name!r} has no compiled clearing"
    return fast_path_supported(config)


class SimulatedMarket:
    """A cell's episodes on the general simulation (:class:`~trexsim.simulation.Simulation`): every
    mechanism, slower; the same :class:`~trexsim.studies.fast_market.EpisodeTrace` histograms as
    :class:`~trexsim.studies.fast_market.FastMarket` (``tests/test_study.py`` checks both give the
    same traces for a built-in mechanism). ``out_dir`` holds the run's summary-level database.
    """

    def __init__(self, config: SimulationConfig, out_dir: Path):
        from trexsim.fabric import topics
        from trexsim.simulation import Simulation

        self.config = config
        self.sim = Simulation(config, out_dir)
        self.population = next(p for p in self.sim.participants.traders if p.kind == "q_learning")
        n = len(self.sim.participant_ids)
        if self.population.members.size != n:
            raise ValueError("the study's simulated market needs every participant to be a q_learning trader")
        self._grid = np.empty((n, self.population.prices.shape[1]))
        self._grid[self.population.members] = self.population.prices
        self._action: dict[tuple[int, int], int] = {}
        self._trace = None
        from trexsim.studies.fast_market import competitive_price_range, paid_price_bins

        self.ce_range = competitive_price_range(config)
        self.paid_bins = paid_price_bins(self.population.prices, config.market.price_tick)  # FastMarket's bins
        self.sim.fabric.subscribe(topics.ORDERS, self._on_orders)
        self.sim.fabric.subscribe(topics.CLEARED, self._on_cleared)

    def _on_orders(self, msg) -> None:
        t = self._trace
        participant = np.asarray(msg.participant, dtype=np.int64)
        # the price index each trader chose (its own grid; the market books the price snapped to the tick)
        action = np.abs(self._grid[participant] - np.asarray(msg.price)[:, None]).argmin(axis=1)
        q = np.asarray(msg.quantity_wh, dtype=np.float64)
        bids = np.asarray(msg.side) == 0
        np.add.at(t["bid_wh"], action[bids], q[bids])
        np.add.at(t["ask_wh"], action[~bids], q[~bids])
        for p, i, a in zip(participant.tolist(), np.asarray(msg.order_id).tolist(), action.tolist()):
            self._action[(p, i)] = a

    def _on_cleared(self, msg) -> None:
        from trexsim.studies.fast_market import price_gap_per_kwh, record_paid_prices

        t = self._trace
        low, high = self.ce_range
        for b, bid, s, ask, q, bp, sp in zip(np.asarray(msg.buyer).tolist(), np.asarray(msg.bid_id).tolist(),
                                             np.asarray(msg.seller).tolist(), np.asarray(msg.ask_id).tolist(),
                                             np.asarray(msg.quantity_wh).tolist(), np.asarray(msg.buyer_price).tolist(),
                                             np.asarray(msg.seller_price).tolist()):
            i, j = self._action[(b, bid)], self._action[(s, ask)]
            t["settled_wh"][i + j] += q
            t["buyer_wh"][i] += q
            t["seller_wh"][j] += q
            t["total"] += q
            t["money"] += np.array([q * bp, q * sp, q * price_gap_per_kwh(bp, low, high),
                                    q * price_gap_per_kwh(sp, low, high)]) / 1000.0
        q = np.ascontiguousarray(msg.quantity_wh, dtype=np.int64)
        record_paid_prices(np.ascontiguousarray(msg.buyer_price, dtype=np.float64),
                           np.ascontiguousarray(msg.seller_price, dtype=np.float64), q, q.size, self.paid_bins[0],
                           self.paid_bins[1], t["paid_wh"], t["received_wh"])

    def run_episode(self, episode: int):
        from trexsim.studies.fast_market import EpisodeTrace

        p = self._grid.shape[1]
        self._trace = {"bid_wh": np.zeros(p), "ask_wh": np.zeros(p), "settled_wh": np.zeros(2 * p - 1),
                       "buyer_wh": np.zeros(p), "seller_wh": np.zeros(p), "total": 0, "money": np.zeros(4),
                       "paid_wh": np.zeros(self.paid_bins[2]), "received_wh": np.zeros(self.paid_bins[2])}
        self._action.clear()
        self.sim.begin_episode(episode)
        while self.sim.step():
            pass
        self.sim.end_episode()
        t = self._trace
        return EpisodeTrace(t["bid_wh"], t["ask_wh"], t["settled_wh"], t["buyer_wh"], t["seller_wh"], int(t["total"]),
                            np.zeros(self._grid.shape[0]), *t["money"].tolist(), paid_wh=t["paid_wh"],
                            received_wh=t["received_wh"])

    def close(self) -> None:
        self.sim.recorder.close()


def run_cell(study: SettlementStudy, mechanism: str, scenario: str, seed: int, progress=None) -> CellResult:
    """Train one cell and collect its histograms: on the compiled market, or on the general simulation
    for a mechanism the compiled market cannot run (:func:`cell_backend`; the result says which)."""
    import tempfile

    from trexsim.studies.fast_market import FastMarket

    start = time.perf_counter()
    config = study.cell_config(mechanism, scenario, seed)
    reason = cell_backend(config)
    tmp = None
    if reason is None:
        market = FastMarket(config)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="trexsim-study-")
        market = SimulatedMarket(config, Path(tmp.name))
    try:
        out = _train_cell(study, mechanism, scenario, seed, config, market, progress)
    finally:
        if tmp is not None:
            market.close()
            tmp.cleanup()
    out.backend = "compiled" if reason is None else f"simulation: {reason}"
    out.seconds = time.perf_counter() - start
    return out


def _train_cell(study, mechanism, scenario, seed, config, market, progress) -> CellResult:
    prices = market.population.prices[0]
    p = prices.size
    anneal = mechanism in study.anneal_mechanisms
    final_from = study.episodes - min(study.final_episodes, study.episodes)
    greedy_from = study.episodes + (study.anneal_episodes if anneal else 0)
    out = CellResult(mechanism, scenario, seed, prices, np.zeros(p), np.zeros(p), np.zeros(2 * p - 1),
                     buyer_price_wh=np.zeros(p), seller_price_wh=np.zeros(p))
    from trexsim.studies.fast_market import competitive_price_range, paid_price_centres

    out.ce_range = competitive_price_range(config)
    out.paid_prices = paid_price_centres(*market.paid_bins)
    out.paid_wh, out.received_wh = np.zeros_like(out.paid_prices), np.zeros_like(out.paid_prices)
    sc = study.scenarios[scenario]
    out.efficient_wh = min(sc.sellers * sc.seller_wh, sc.buyers * sc.buyer_wh) * max(
        config.study.rounds_per_episode - config.market.close_steps, 0)
    if study.greedy_episodes:
        out.greedy_bid_wh, out.greedy_ask_wh, out.greedy_settled_wh = np.zeros(p), np.zeros(p), np.zeros(2 * p - 1)
        out.greedy_buyer_price_wh, out.greedy_seller_price_wh = np.zeros(p), np.zeros(p)
        out.greedy_paid_wh, out.greedy_received_wh = np.zeros_like(out.paid_prices), np.zeros_like(out.paid_prices)
    greedy = greedy_actions(market.population)
    for episode in range(config.study.episodes):
        trace = market.run_episode(episode)
        out.settled_per_episode_wh.append(trace.settled_total_wh)
        now = greedy_actions(market.population)
        out.greedy_change_per_episode.append(float(np.mean(np.any(now != greedy, axis=0))))
        greedy = now
        out.bid_entropy_bits_per_episode.append(entropy_bits(trace.bid_wh))
        out.ask_entropy_bits_per_episode.append(entropy_bits(trace.ask_wh))
        if final_from <= episode < study.episodes:
            out.bid_wh += trace.bid_wh
            out.ask_wh += trace.ask_wh
            out.settled_wh += trace.settled_wh
            out.buyer_price_wh += trace.buyer_price_wh
            out.seller_price_wh += trace.seller_price_wh
            out.paid_wh += trace.paid_wh
            out.received_wh += trace.received_wh
            out.money_usd += (trace.paid_usd, trace.received_usd, trace.paid_gap_usd, trace.received_gap_usd)
            out.money_wh += trace.settled_total_wh
            out.money_episodes += 1
        if out.greedy_bid_wh is not None and episode >= greedy_from:
            out.greedy_bid_wh += trace.bid_wh
            out.greedy_ask_wh += trace.ask_wh
            out.greedy_settled_wh += trace.settled_wh
            out.greedy_buyer_price_wh += trace.buyer_price_wh
            out.greedy_seller_price_wh += trace.seller_price_wh
            out.greedy_paid_wh += trace.paid_wh
            out.greedy_received_wh += trace.received_wh
        if progress is not None:
            progress.put((mechanism, scenario, seed, episode + 1, config.study.episodes))
    out.rounds = config.study.rounds_per_episode * config.study.episodes
    out.policy_converged = policy_converged(out, study)
    out.training_share = out._share(out.settled_per_episode_wh[final_from:study.episodes])
    if study.greedy_episodes:
        out.greedy_share = out._share(out.settled_per_episode_wh[greedy_from:])
    return out


def greedy_actions(population) -> np.ndarray:
    """``(2, n)``: each agent's greedy price index, for bids and for asks (the highest action value; the lowest
    index among equal ones). An agent trades one side only, and the other side's values never move, so a change
    anywhere is a change of the agent's greedy price."""
    return np.stack([np.argmax(population.q_bid, axis=1), np.argmax(population.q_ask, axis=1)])


def entropy_bits(quantity_wh: np.ndarray) -> float:
    """The Shannon entropy [bits] of the prices of an episode's orders, each price weighted by its quantity:
    0 when every Wh was offered at one price, log2(P) when spread evenly over the P prices. (The agents'
    orders together: two agents settled on two prices give 1 bit.) NaN when nothing was ordered."""
    q = np.asarray(quantity_wh, dtype=np.float64)
    total = q.sum()
    if total <= 0:
        return float("nan")
    p = q[q > 0] / total
    return float(-(p * np.log2(p)).sum()) + 0.0


def converged_entropy_bits(exploration: float, prices: int, agents: int) -> float:
    """The entropy [bits] of one side's order prices when its ``agents`` (equal quantities) have converged: each
    places its orders at its own greedy price but for a share ``exploration`` drawn uniformly over the
    ``prices`` (epsilon-greedy; 0 for UCB1, which stops exploring). Agents sharing a greedy price give less."""
    if agents <= 0:
        return 0.0
    eps = float(exploration)
    greedy = (1.0 - eps) / agents + eps / prices
    rest = eps / prices
    h = -agents * greedy * np.log2(greedy) if greedy > 0 else 0.0
    if rest > 0:
        h -= (prices - agents) * rest * np.log2(rest)
    return float(h)


ENTROPY_MARGIN_BITS = 0.5  # how far above converged agents' entropy a side may lie and still count as converged


def policy_converged(cell: "CellResult", study: SettlementStudy) -> bool | None:
    """Judged on the policies as played: over the final training episodes, each side's order prices are at most
    :data:`ENTROPY_MARGIN_BITS` more spread (entropy, :func:`entropy_bits`) than converged agents' would be
    (:func:`converged_entropy_bits`). A side whose agents still wander over the price grid is near log2(P) bits
    (6.6 for 100 prices) and fails; None if a side placed no orders in those episodes."""
    sc = study.scenarios[cell.scenario]
    eps = study.learning.exploration if study.learning.policy == "epsilon_greedy" else 0.0
    final_from = study.episodes - min(study.final_episodes, study.episodes)
    verdicts = []
    for per_episode, agents in ((cell.bid_entropy_bits_per_episode, sc.buyers),
                                (cell.ask_entropy_bits_per_episode, sc.sellers)):
        x = np.asarray(per_episode[final_from:study.episodes], dtype=np.float64)
        x = x[np.isfinite(x)]
        if x.size == 0:
            return None
        verdicts.append(x.mean() <= converged_entropy_bits(eps, study.prices.count, agents) + ENTROPY_MARGIN_BITS)
    return bool(all(verdicts))


# --------------------------------------------------------------------------- verdicts
def _band(price: float | None, lo: float, hi: float) -> str:
    if price is None:
        return "none"
    x = (price - lo) / (hi - lo)
    return "low" if x < 1 / 3 else ("high" if x > 2 / 3 else "middle")


def verdict(cell: CellResult, study: SettlementStudy) -> tuple[str, str]:
    """``(expected, observed)`` in words, against the paper's section 5 expectations."""
    lo, hi = study.prices.min_price, study.prices.max_price
    m = cell.medians()
    bid, ask, settle = (_band(m[k], lo, hi) for k in ("bid", "ask", "settlement"))
    observed = (f"bids {bid}, asks {ask}, settlements {settle}; "
                f"{cell.training_share:.0%} of the tradeable energy settled"
                + (f" ({cell.greedy_share:.0%} by the greedy policy)" if cell.greedy_share is not None else "")
                + {True: "; policy stable", False: "; policy not stable", None: ""}[getattr(cell, "policy_converged", None)])
    if cell.mechanism not in PAPER:
        expected = "no expectation in the paper (not one of its mechanisms)"
    elif cell.mechanism == "exact_match":
        expected = "fails to converge in the training time"
    elif study.scenarios[cell.scenario].balance == "over_supply":
        expected = "asks driven low, bids following"
    elif study.scenarios[cell.scenario].balance == "over_demand":
        expected = "bids driven high, asks following"
    elif cell.mechanism == "average_price":
        expected = "fails: actions diverge to the extremes (bids high, asks low)"
    else:
        expected = "prices near the middle; greedy bid = ask"
    return expected, observed


def needs_stable_policy(mechanism: str) -> bool:
    """Whether the paper's claim for this mechanism is about where learned prices went (M1, M3: "asks driven low",
    "actions diverge to the extremes", ...), so that it holds only for agents whose policy has stabilised. M2's
    claim is itself about convergence ("fails to converge") and is judged on the greedy policy's settled share."""
    return mechanism in PAPER and mechanism != "exact_match"


def matches_paper(cell: CellResult, study: SettlementStudy) -> bool | None:
    """"As in the paper": the cell's prices or settlements behave as the paper expects
    (:func:`prices_match_paper`) and, for a claim about learned prices (:func:`needs_stable_policy`), its
    policy has stabilised (:func:`policy_converged`): a band of wandering prices that happens to sit where the
    paper's figures do is not the learned behaviour the paper reports. None for a mechanism the paper did not
    study; a policy that was not judged (None) leaves the price criterion alone."""
    return combine_verdicts(cell.mechanism, prices_match_paper(cell, study), getattr(cell, "policy_converged", None))


def combine_verdicts(mechanism: str, prices: bool | None, policy_stable: bool | None) -> bool | None:
    """:func:`matches_paper` from its two parts (also what reads results written before the policy verdict)."""
    if prices is None or not needs_stable_policy(mechanism):
        return prices
    return bool(prices and policy_stable is not False)


def prices_match_paper(cell: CellResult, study: SettlementStudy) -> bool | None:
    """The price / settlement half of the verdict: whether the cell's medians (M1, M3) or its greedy policy's
    settled share (M2) are what the paper expects; None for a mechanism the paper did not study."""
    if cell.mechanism not in PAPER:
        return None
    lo, hi = study.prices.min_price, study.prices.max_price
    m = cell.medians()
    bid, ask = _band(m["bid"], lo, hi), _band(m["ask"], lo, hi)
    step = (hi - lo) / (study.prices.count - 1)
    if cell.mechanism == "exact_match":
        # "fails to converge in the same training time", judged on the policies: the greedy policy (no
        # exploration) still leaves a clear share of the tradeable energy unsettled. (Judged on the
        # training episodes it could not fail: with epsilon 0.1 a pair trades only when neither side
        # explores, so even converged agents settle at most about 82 % there.)
        share = cell.greedy_share if cell.greedy_share is not None else cell.training_share
        return share < CONVERGED_SHARE
    balance = study.scenarios[cell.scenario].balance
    if balance == "over_supply":
        return ask == "low" and bid in ("low", "middle")
    if balance == "over_demand":
        return bid == "high" and ask in ("high", "middle")
    if cell.mechanism == "average_price":
        return bid == "high" and ask == "low"
    g = cell.medians(greedy=True)
    near = g["bid"] is not None and g["ask"] is not None and abs(g["bid"] - g["ask"]) <= 2 * step + 1e-12
    return _band(m["settlement"], lo, hi) == "middle" and near


# --------------------------------------------------------------------------- running and reporting
def run_study(study: SettlementStudy, out_dir: Path, seeds: int = 1, workers: int = 1, on_progress=None,
              cluster: str | None = None) -> list[CellResult]:
    """Run every cell x seed (in ``workers`` processes) and write results and figures to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [(m, s, study.seed + k) for k in range(seeds) for m in study.mechanisms for s in study.scenarios]
    results: list[CellResult] = []
    if cluster is not None:
        results = _run_on_ray(study, tasks, cluster, workers, on_progress)
    elif workers <= 1:
        for m, s, seed in tasks:
            results.append(run_cell(study, m, s, seed))
            if on_progress:
                on_progress(results[-1])
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_cell, study, m, s, seed) for m, s, seed in tasks]
            for future in as_completed(futures):
                results.append(future.result())
                if on_progress:
                    on_progress(results[-1])
    order = {t: i for i, t in enumerate(tasks)}
    results.sort(key=lambda r: order[(r.mechanism, r.scenario, r.seed)])
    write_report(study, results, out_dir)
    return results


def _run_on_ray(study: SettlementStudy, tasks: list, cluster: str, workers: int, on_progress) -> list[CellResult]:
    """The same cells on Ray: ``cluster`` is ``ray://HOST:PORT`` (or an address Ray accepts) or ``local``.

    ``local`` starts a Ray instance on this machine with ``workers`` CPUs and usage statistics off.
    Ray listens on the machine's own address unless loopback is the only interface (the tests run
    it in a network namespace that has only loopback).
    """
    import os

    from trexsim.errors import TrexsimError

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise TrexsimError('--cluster needs Ray: pip install "trexsim[cluster]"') from None
    if cluster == "local":
        ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=cluster, log_to_driver=False)
    try:
        remote = ray.remote(run_cell)
        pending = [remote.remote(study, m, s, seed) for m, s, seed in tasks]
        results = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            results.append(ray.get(done[0]))
            if on_progress:
                on_progress(results[-1])
        return results
    finally:
        ray.shutdown()


def write_report(study: SettlementStudy, results: list[CellResult], out_dir: Path) -> dict:
    rows = []
    for r in results:
        med, greedy = r.medians(), r.medians(greedy=True)
        expected, observed = verdict(r, study)
        sc = study.scenarios[r.scenario]
        rows.append({"mechanism": r.mechanism, "paper": PAPER.get(r.mechanism, ""), "scenario": r.scenario,
                     "balance": sc.balance, "supply_wh": sc.supply_wh, "demand_wh": sc.demand_wh, "seed": r.seed, "median_bid": med["bid"], "median_ask": med["ask"],
                     "median_settlement": med["settlement"], "median_paid": med["paid"],
                     "median_received": med["received"], "greedy_median_bid": greedy["bid"],
                     "greedy_median_ask": greedy["ask"], "expected": expected, "observed": observed,
                     "matches_paper": matches_paper(r, study), "prices_match_paper": prices_match_paper(r, study),
                     "settled_wh_last_episode": r.settled_per_episode_wh[-1],
                     "settled_share": round(r.training_share, 4),
                     "greedy_settled_share": None if r.greedy_share is None else round(r.greedy_share, 4),
                     **{k: (None if v is None else round(v, 6)) for k, v in r.price_metrics().items()},
                     "ce_price_range": list(r.ce_range),
                     "policy_converged": r.policy_converged,
                     "greedy_change_final": _mean_final(r.greedy_change_per_episode, study, r.mechanism),
                     "bid_entropy_bits": _mean_final(r.bid_entropy_bits_per_episode, study, r.mechanism),
                     "ask_entropy_bits": _mean_final(r.ask_entropy_bits_per_episode, study, r.mechanism),
                     "learning_curve": {
                         "settled_share": [round(x / r.efficient_wh, 4) if r.efficient_wh else None
                                           for x in r.settled_per_episode_wh],
                         "greedy_change": [round(x, 4) for x in r.greedy_change_per_episode],
                         "bid_entropy_bits": [_round_or_none(x) for x in r.bid_entropy_bits_per_episode],
                         "ask_entropy_bits": [_round_or_none(x) for x in r.ask_entropy_bits_per_episode]},
                     "rounds": r.rounds, "seconds": round(r.seconds, 2), "backend": r.backend})
    summary = {"study": study.model_dump(), "cells": rows, "robustness": robustness(rows),
               "statistics": cell_statistics(rows),
               "rounds": int(sum(r.rounds for r in results)), "cell_seconds": round(sum(r.seconds for r in results), 2)}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2))
    stats = statistics_table(summary)
    (out_dir / "results.md").write_text(results_table(summary) + ("\n" + stats if stats else ""))
    np.savez_compressed(out_dir / "histograms.npz", **{
        f"{r.mechanism}.{r.scenario}.{r.seed}.{name}": getattr(r, name)
        for r in results for name in ("bid_wh", "ask_wh", "settled_wh", "buyer_price_wh", "seller_price_wh", "greedy_bid_wh",
                                      "greedy_ask_wh", "greedy_settled_wh", "greedy_buyer_price_wh", "greedy_seller_price_wh",
                                      "paid_prices", "paid_wh", "received_wh", "greedy_paid_wh", "greedy_received_wh")
        if getattr(r, name) is not None})
    plot_study(study, results, out_dir)
    return summary


def row_verdicts(row: dict) -> tuple[bool | None, bool | None]:
    """``(as in the paper, prices as in the paper)`` of a ``results.json`` cell. Results written before the
    policy verdict was folded in kept only the price criterion, as ``matches_paper``: it is combined here with
    the row's ``policy_converged`` (absent in results older still: the price criterion alone)."""
    if "prices_match_paper" in row:
        return row["matches_paper"], row["prices_match_paper"]
    prices = row["matches_paper"]
    return combine_verdicts(row["mechanism"], prices, row.get("policy_converged")), prices


def robustness(rows: list[dict]) -> dict[str, str]:
    """Per cell, in words: in how many seeds it is as in the paper, and where the prices alone are in more
    seeds, that the policy did not stabilise in the rest."""
    cells: dict[str, list[tuple]] = {}
    for r in rows:
        both, prices = row_verdicts(r)
        if both is not None:
            cells.setdefault(f"{r['mechanism']}/{r['scenario']}", []).append((both, prices))
    out = {}
    for key, v in cells.items():
        both, prices = sum(b for b, _ in v), sum(bool(p) for _, p in v)
        out[key] = f"{both}/{len(v)} seeds match the paper" + (
            f" ({prices}/{len(v)} on prices alone; the policy did not stabilise)" if prices > both else "")
    return out


STAT_METRICS = ("median_bid", "median_ask", "median_settlement", "settled_share", "greedy_median_bid",
                "greedy_median_ask", "greedy_settled_share", "mean_buyer_price", "mean_seller_price",
                "auctioneer_surplus_usd", "ce_price_gap", "policy_converged", "greedy_change_final",
                "bid_entropy_bits", "ask_entropy_bits")


def _round_or_none(x: float, digits: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def _mean_final(per_episode: list[float], study: SettlementStudy, mechanism: str) -> float | None:
    """The mean over the final training episodes (before annealing and the greedy episodes), NaN ignored."""
    final_from = study.episodes - min(study.final_episodes, study.episodes)
    x = np.asarray(per_episode[final_from:study.episodes], dtype=np.float64)
    x = x[np.isfinite(x)]
    return round(float(x.mean()), 4) if x.size else None


def bootstrap_ci(values, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict | None:
    """The mean of ``values`` (one per seed) and its percentile bootstrap interval (Efron and Tibshirani
    1993): ``resamples`` resamples of the seeds with replacement, drawn from ``seed`` so the report repeats.
    None for fewer than two values (no interval from one seed)."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": round(float(x.mean()), 6), "ci95": [round(float(lo), 6), round(float(hi), 6)], "seeds": int(x.size)}


def cell_statistics(rows: list[dict]) -> dict:
    """Per cell (``mechanism/scenario``), every metric of :data:`STAT_METRICS` over its seeds:
    :func:`bootstrap_ci` (None where a cell has one seed)."""
    cells: dict[str, list[dict]] = {}
    for r in rows:
        cells.setdefault(f"{r['mechanism']}/{r['scenario']}", []).append(r)
    return {key: {m: bootstrap_ci([r.get(m) for r in rs]) for m in STAT_METRICS} for key, rs in cells.items()}


def statistics_table(summary: dict) -> str:
    """The cells' means over seeds with 95 % bootstrap intervals, as Markdown (empty with one seed)."""
    stats = summary.get("statistics") or {}
    if not any(v for cell in stats.values() for v in cell.values()):
        return ""
    lines = ["| cell | bid | ask | settle | settled share | buyers paid | sellers got | gap to CE price | "
             "auctioneer $/episode |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, cell in stats.items():
        def show(m, pct=False):
            v = cell.get(m)
            if v is None:
                return "-"
            f = (lambda x: f"{100 * x:.1f} %") if pct else (lambda x: f"{x:.4f}")
            return f"{f(v['mean'])} [{f(v['ci95'][0])}, {f(v['ci95'][1])}]"
        lines.append(f"| {key} | {show('median_bid')} | {show('median_ask')} | {show('median_settlement')} | "
                     f"{show('settled_share', True)} | {show('mean_buyer_price')} | {show('mean_seller_price')} | "
                     f"{show('ce_price_gap')} | {show('auctioneer_surplus_usd')} |")
    return ("Means over seeds with 95 % percentile bootstrap intervals (2,000 resamples of the seeds):\n\n"
            + "\n".join(lines) + "\n")


def matched_column(rows: list[dict]) -> str:
    """The "as in the paper" column: seeds as in the paper over seeds judged; where more seeds match on prices
    alone, how many, with the policy not stable (:func:`matches_paper`)."""
    verdicts = [row_verdicts(r) for r in rows]
    verdicts = [(b, p) for b, p in verdicts if b is not None]
    if not verdicts:
        return "-"
    both, prices = sum(b for b, _ in verdicts), sum(bool(p) for _, p in verdicts)
    text = f"{both}/{len(verdicts)}"
    return text + (f" (prices {prices}/{len(verdicts)}, policy not stable)" if prices > both else "")


def results_table(summary: dict) -> str:
    """The study's results as a Markdown table, from ``results.json`` (what ``run_study`` returns): one
    row per cell; medians in $/kWh of the lowest seed with the range over all seeds in brackets, the
    settled share's range, the paper's claim, in how many seeds both sides' prices were as concentrated as
    converged agents' over the final training episodes ("policy stable", :func:`policy_converged`) and how many seeds match the paper (:func:`matched_column`: prices and,
    for M1 and M3, a stable policy). REPRODUCTION.md's table is this output, never typed by hand."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for c in summary["cells"]:
        cells.setdefault((c["mechanism"], c["scenario"]), []).append(c)

    def value(rows: list[dict], key: str) -> str:
        values = [r.get(key) for r in rows if r.get(key) is not None]
        if not values:
            return "-"
        first = f"{rows[0][key]:.4f}" if rows[0].get(key) is not None else "-"
        lo, hi = min(values), max(values)
        if len(values) == 1:
            return first
        return f"{first} (all seeds)" if f"{lo:.4f}" == f"{hi:.4f}" else f"{first} ({lo:.4f}–{hi:.4f})"

    def share(rows: list[dict], key: str = "settled_share") -> str:
        values = [r.get(key) for r in rows if r.get(key) is not None]
        if not values:
            return "-"
        lo, hi = (f"{x:.0%}".replace("%", " %") for x in (min(values), max(values)))
        return lo if lo == hi else f"{lo.split()[0]}–{hi}"

    def stable(rows: list[dict]) -> str:
        flags = [r.get("policy_converged") for r in rows if r.get("policy_converged") is not None]
        return f"{sum(flags)}/{len(flags)}" if flags else "-"

    # (results written before the learning curves have no policy verdicts: their table stays as it was)
    with_stable = any("policy_converged" in c for c in summary["cells"])
    seeds = sorted({c["seed"] for c in summary["cells"]})
    smoke = bool(summary["study"].get("smoke_run"))  # --quick: far too short to converge, so no verdicts
    lines = [f"| cell | paper's claim | bid | ask | settle | greedy bid | greedy ask | settled share | greedy settled | "
             f"gap to CE price | auctioneer $/episode | {'policy stable | ' if with_stable else ''}"
             f"as in the paper ({'smoke run: no verdicts' if smoke else str(len(seeds)) + ' seed' + ('s' if len(seeds) > 1 else '')}) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if with_stable else "") + "---|"]
    for (mech, scenario), rows in cells.items():
        rows = sorted(rows, key=lambda r: r["seed"])
        matched = "-" if smoke else matched_column(rows)
        lines.append(f"| {rows[0]['paper'] or mech} {scenario.replace('_', '-')} | {rows[0]['expected']} | "
                     f"{value(rows, 'median_bid')} | {value(rows, 'median_ask')} | {value(rows, 'median_settlement')} | "
                     f"{value(rows, 'greedy_median_bid')} | {value(rows, 'greedy_median_ask')} | {share(rows)} | "
                     f"{share(rows, 'greedy_settled_share')} | {value(rows, 'ce_price_gap')} | "
                     f"{value(rows, 'auctioneer_surplus_usd')} | {stable(rows) + ' | ' if with_stable else ''}{matched} |")
    return "\n".join(lines) + "\n"


def _figure_name(mechanism: str) -> str:
    return f"{PAPER[mechanism]} {mechanism}" if mechanism in PAPER else mechanism


def draw_settlements(ax, cell: CellResult, greedy: bool, step_usd: float) -> None:
    """The settled energy at the prices actually paid and received (never a price nobody paid, as (bid + ask) / 2 is
    for the k-double auction or SBBA): one bar a price where buyers pay what sellers receive (M1, M2, the uniform
    prices), the two sides apart where they differ (M3)."""
    g = "greedy_" if greedy else ""
    paid, received = getattr(cell, g + "paid_wh"), getattr(cell, g + "received_wh")
    if paid is None or cell.paid_prices is None:  # (a cell built by hand, not run)
        return
    top = max(paid.max(), received.max())
    if top <= 0:
        return
    x = cell.paid_prices
    if np.array_equal(paid, received):
        on = paid > 0
        ax.bar(x[on], paid[on] / top, width=0.9 * step_usd, color="tab:green")
        return
    for h, color, label in ((paid, "tab:green", "paid"), (received, "darkolivegreen", "received")):
        on = h > 0
        ax.bar(x[on], h[on] / top, width=0.6 * step_usd, color=color, alpha=0.7, label=label)
    ax.legend(fontsize=6, loc="upper right")


def plot_study(study: SettlementStudy, results: list[CellResult], out_dir: Path) -> list[Path]:
    """Figures 3-5 of the paper (one per mechanism: scenarios x bids/asks/settlements) and figure 6."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    seed0 = min(r.seed for r in results)
    cells = {(r.mechanism, r.scenario): r for r in results if r.seed == seed0}
    scenarios = list(study.scenarios)

    def draw(ax, r, which, greedy=False):
        prices = r.prices
        width = prices[1] - prices[0]
        g = "greedy_" if greedy else ""
        if which != "settlements":
            h = getattr(r, g + ("bid_wh" if which == "bids" else "ask_wh"))
            if h is not None and h.max() > 0:
                ax.bar(prices, h / h.max(), width=0.9 * width, color="tab:blue" if which == "bids" else "tab:orange")
        else:
            draw_settlements(ax, r, greedy, width)
        ax.axhline(study.noise_threshold, color="gray", lw=0.6, ls="--")
        ax.set_ylim(0, 1.05)
        # half a bar beyond the window's ends: bars at exactly the lowest and highest price stay visible
        pad = 0.6 * (prices[1] - prices[0])
        ax.set_xlim(prices[0] - pad, prices[-1] + pad)
        ax.tick_params(labelsize=7)

    for mech in study.mechanisms:
        fig, axes = plt.subplots(len(scenarios), 3, figsize=(11, 2.4 * len(scenarios)), squeeze=False)
        for i, sc in enumerate(scenarios):
            r = cells.get((mech, sc))
            for j, which in enumerate(("bids", "asks", "settlements")):
                ax = axes[i][j]
                if r is not None:
                    draw(ax, r, which)
                if i == 0:
                    ax.set_title(which)
                if j == 0:
                    ax.set_ylabel(sc.replace("_", "-"), fontsize=8)
                if i == len(scenarios) - 1:
                    ax.set_xlabel("price ($/kWh)", fontsize=8)
        fig.suptitle(f"{_figure_name(mech)}: quantity at each price, last {study.final_episodes} training episodes "
                     f"(normalised; dashed: {study.noise_threshold} noise level)", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"concentration_{mech}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        figures.append(path)
    for mech in study.mechanisms:
        if not any(cells.get((mech, sc)) is not None and cells[(mech, sc)].greedy_bid_wh is not None for sc in scenarios):
            continue
        fig, axes = plt.subplots(len(scenarios), 3, figsize=(11, 2.4 * len(scenarios)), squeeze=False)
        for i, sc in enumerate(scenarios):
            r = cells.get((mech, sc))
            for j, which in enumerate(("bids", "asks", "settlements")):
                if r is not None and r.greedy_bid_wh is not None:
                    draw(axes[i][j], r, which, greedy=True)
                if i == 0:
                    axes[i][j].set_title(which)
                if j == 0:
                    axes[i][j].set_ylabel(sc.replace("_", "-"), fontsize=8)
        after = "annealing" if mech in study.anneal_mechanisms else "training"
        fig.suptitle(f"{_figure_name(mech)}: greedy policy after {after} ({study.greedy_episodes} episodes)",
                     fontsize=9)
        fig.tight_layout()
        path = out_dir / f"greedy_{mech}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        figures.append(path)
    figures.append(plot_learning_curves(study, results, out_dir / "learning_curves.png"))
    return figures


def plot_learning_curves(study: SettlementStudy, results: list[CellResult], path: Path) -> Path:
    """One panel a cell (mechanisms down, scenarios across), every seed: the settled share of the tradeable
    energy and the share of agents whose greedy price changed, per episode; the entropy of the bid and ask
    prices on a second axis [bits]. Dotted lines: where annealing and the greedy episodes start."""
    import matplotlib.pyplot as plt

    scenarios = list(study.scenarios)
    fig, axes = plt.subplots(len(study.mechanisms), len(scenarios), figsize=(3.3 * len(scenarios),
                             2.3 * len(study.mechanisms)), squeeze=False, sharey=True)
    by_cell: dict[tuple[str, str], list[CellResult]] = {}
    for r in results:
        by_cell.setdefault((r.mechanism, r.scenario), []).append(r)
    for i, mech in enumerate(study.mechanisms):
        for j, sc in enumerate(scenarios):
            ax = axes[i][j]
            twin = ax.twinx()
            for k, r in enumerate(sorted(by_cell.get((mech, sc), []), key=lambda r: r.seed)):
                x = np.arange(1, len(r.settled_per_episode_wh) + 1)
                label = k == 0
                if r.efficient_wh:
                    ax.plot(x, np.asarray(r.settled_per_episode_wh) / r.efficient_wh, color="tab:green", lw=0.8,
                            alpha=0.6, label="settled share" if label else None)
                ax.plot(x, r.greedy_change_per_episode, color="tab:red", lw=0.6, ls="-", alpha=0.5,
                        label="greedy price changed" if label else None)
                twin.plot(x, r.bid_entropy_bits_per_episode, color="tab:blue", lw=0.6, ls="--", alpha=0.5,
                          label="bid entropy" if label else None)
                twin.plot(x, r.ask_entropy_bits_per_episode, color="tab:orange", lw=0.6, ls=":", alpha=0.7,
                          label="ask entropy" if label else None)
            anneal = study.anneal_episodes if mech in study.anneal_mechanisms else 0
            for edge in (study.episodes, study.episodes + anneal):
                ax.axvline(edge + 0.5, color="grey", lw=0.6, ls=":")
            ax.set_ylim(-0.02, 1.05)
            twin.set_ylim(0, np.log2(study.prices.count) + 0.2)
            ax.tick_params(labelsize=6)
            twin.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(sc.replace("_", "-"), fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{PAPER.get(mech, '') or mech}\nshare", fontsize=7)
            if j == len(scenarios) - 1:
                twin.set_ylabel("entropy [bits]", fontsize=7)
            if i == 0 and j == 0:
                h1, l1 = ax.get_legend_handles_labels()
                h2, l2 = twin.get_legend_handles_labels()
                ax.legend(h1 + h2, l1 + l2, fontsize=5, loc="center right")
    fig.suptitle(f"{study.name}: learning curves (every seed; episodes on the x axis)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
