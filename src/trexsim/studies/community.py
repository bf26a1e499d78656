"""The community benchmark of the ALEX follow-up studies (May and Musilek, IEEE Access 2024, arXiv 2403.15617;
the deep-RL sequel arXiv 2404.13142), as one command: ``trexsim study community``.

The 17 CityLearn 2022 homes (real metered load and PV, hourly) in one ALEX market from 2016-08-01 00:00 local
time (America/Los_Angeles) for as much of a year as the data hold (8,759 hourly rounds: the data end at
2017-07-31 23:00), each home with a 6.4 kWh / 5 kW battery (0.95 one-way efficiency, no self-discharge,
empty at the start), the flat net-billing tariff 0.1449 $/kWh import / 0.069 $/kWh export, and four legs:

``no_battery``
    the batteries never used (``storage.policy: "idle"``);
``rule``
    the building-level self-consumption rule: charge from surplus PV, discharge to cover the load
    (``storage.policy: "self_consumption"``, :func:`trexsim.devices.battery.dispatch_and_step`);
``optimum``
    every home's perfect-foresight optimum against the **grid tariff**, not the market
    (:func:`trexsim.training.optimum.battery_optimum`, one LP per home over the whole period), its
    schedule followed as battery set-points;
``learned``
    one tabular Q-learner per home (:func:`learn_home`), rewarded each hour by its battery's bill saving (against
    the battery idle) on the grid tariff, trained on the period itself; its greedy schedule followed as
    set-points. Scored on held-out weeks and homes instead: ``--holdout`` (:mod:`.community_holdout`).

Every home trades in ALEX (the default ``average_price`` settlement, M1) with the bundled rule trader
(``fixed_price``, bid 0.12 / ask 0.10 $/kWh): it bids its forecast residual need and asks its residual
surplus after its battery's plan. Every leg is one ordinary run of the simulation with its ledger; the
community net-load metrics are the run's ``summary.json`` ``community`` entry
(:func:`trexsim.records.summary.community_metrics`), and each home's bill is read from the ledger twice:
what it paid in ALEX (market and grid) and what its meter readings would cost on the grid tariff alone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numba
import numpy as np

from trexsim.devices.battery import dispatch_and_step as _dispatch_and_step
from trexsim.errors import ConfigError, TrexsimError

LEGS = ("no_battery", "rule", "optimum", "learned")
LEG_TITLES = {"no_battery": "no battery use", "rule": "self-consumption rule", "optimum": "LP optimum (grid tariff)",
              "learned": "learned (tabular Q, one per home)"}
START = "2016-08-01 00:00:00"
TIMEZONE = "America/Los_Angeles"
DATA_ENV = "TREXSIM_CITYLEARN_DIR"
DEFAULT_DATA = Path("..") / "shared" / "data" / "citylearn-2022"  # beside the checkout, as the tests look for it
METRICS = ("avg_daily_import_kwh", "avg_daily_export_kwh", "avg_daily_peak_kw", "avg_daily_valley_kw", "peak_kw",
           "valley_kw", "ramping_kw", "one_minus_daily_load_factor", "one_minus_monthly_load_factor")
METRIC_TITLES = {"avg_daily_import_kwh": "avg daily import (kWh)", "avg_daily_export_kwh": "avg daily export (kWh)",
                 "avg_daily_peak_kw": "avg daily peak (kW)", "avg_daily_valley_kw": "avg daily valley (kW)",
                 "peak_kw": "highest peak (kW)", "valley_kw": "lowest valley (kW)", "ramping_kw": "ramping (kW)",
                 "one_minus_daily_load_factor": "1 - daily load factor",
                 "one_minus_monthly_load_factor": "1 - monthly load factor"}

MIN_GAP_USD = 0.01  # a home's rule-to-optimum gap below this gets no "share of the gap closed"

# the learner's actions: each goes through the one battery kernel (dispatch_and_step)
A_RULE, A_IDLE, A_CHARGE, A_DISCHARGE = 0, 1, 2, 3
ACTIONS = ("self_consumption", "idle", "charge_full", "discharge_full")


@dataclass
class Learning:
    """The learned leg: tabular Q-learning per home over (hour of day, state-of-charge bin, residual sign), the
    held-out evaluation's learner (:class:`~trexsim.studies.community_holdout.TableLearning`, where each setting
    is explained). Until issue 18 the leg learned from its saving against the rule, from values of 0, at a
    constant rate 0.1 with epsilon 0.1 over 30 passes, and lost to the rule (docs/community-benchmark.md, the
    ablation): the reward against no battery and the schedule below are the fix."""

    episodes: int = 300           # passes over the study period
    learning_rate: float = 1.0    # times visits ** -rate_decay, at least min_learning_rate
    rate_decay: float = 0.6
    min_learning_rate: float = 0.01
    discount_factor: float = 0.99
    exploration: float = 1.0      # epsilon, decayed geometrically to exploration_end over the passes
    exploration_end: float = 0.01
    initial_value: float = 0.3    # [$] optimistic start of every Q-value
    soc_bins: int = 8
    reward: str = "no_battery"    # the hour's saving against "no_battery" or "rule"

    def table(self):
        from trexsim.studies.community_holdout import TableLearning

        return TableLearning(passes=self.episodes, learning_rate=self.learning_rate, rate_decay=self.rate_decay,
                             min_learning_rate=self.min_learning_rate, discount_factor=self.discount_factor,
                             exploration_start=self.exploration, exploration_end=self.exploration_end,
                             initial_value=self.initial_value, soc_bins=self.soc_bins, reward=self.reward)


# Grid tariffs the benchmark can run under (``--tariff``). ``flat`` is the published setup; under it the
# self-consumption rule is within a dollar a year of the optimum, so no policy can show much. ``tou`` adds an
# evening peak (16:00-21:00 local, every day: 0.30 $/kWh to buy; export unchanged): storing midday PV or cheap
# night energy for the evening pays, and the rule, which only stores PV surplus, leaves that on the table.
TARIFFS: dict[str, tuple[dict, ...]] = {
    "flat": (),
    "tou": ({"hours": [16, 17, 18, 19, 20], "buy_price": 0.30, "sell_price": 0.069},),
}


@dataclass
class CommunityBenchmark:
    """The benchmark's settings (the defaults are the published setup; see the module docstring)."""

    days: float | None = None     # None: every hour of the data from ``start``
    start: str = START
    seed: int = 0
    capacity_wh: float = 6400.0
    power_w: float = 5000.0
    efficiency: float = 0.95
    initial_soc: float = 0.0
    buy_price: float = 0.1449
    sell_price: float = 0.069
    settlement: str = "average_price"
    bid_price: float = 0.12
    ask_price: float = 0.10
    legs: tuple[str, ...] = LEGS
    learning: Learning = field(default_factory=Learning)
    tariff: str = "flat"          # a name of TARIFFS: the published flat one, or a time-of-use one with headroom

    QUICK_DAYS = 3

    def quick_version(self) -> "CommunityBenchmark":
        from dataclasses import replace

        return replace(self, days=self.QUICK_DAYS, learning=replace(self.learning, episodes=10))


def tariff_periods(name: str) -> tuple[dict, ...]:
    """The time-of-use periods of the tariff ``name`` (``TARIFFS``); an unknown name is an error naming ``--tariff``."""
    if name not in TARIFFS:
        raise ConfigError([("--tariff", f"{name!r}: choose from {', '.join(TARIFFS)}")])
    return TARIFFS[name]


# --------------------------------------------------------------------------- data
def data_dir(value: str | os.PathLike | None) -> Path:
    """The CityLearn folder: ``value``, else ``$TREXSIM_CITYLEARN_DIR``, else ``../shared/data/citylearn-2022``."""
    return Path(value if value is not None else os.environ.get(DATA_ENV, DEFAULT_DATA))


def prepare_data(folder: str | os.PathLike, out_dir: Path) -> tuple[Path, list[str]]:
    """Convert the CityLearn homes into the import format (:func:`trexsim.data.importer.convert_citylearn`);
    returns the Parquet file and the home ids in building order."""
    from trexsim.data.importer import convert_citylearn

    root = Path(folder)
    if not root.is_dir():
        raise TrexsimError(f"the CityLearn 2022 data folder {root} does not exist (pass --data DIR or set {DATA_ENV}; "
                           "it holds Building_N.csv and schema.json)")
    path = convert_citylearn(root, out_dir / "data" / "citylearn-homes.parquet")
    import pandas as pd

    ids = list(dict.fromkeys(pd.read_parquet(path, columns=["participant_id"])["participant_id"]))
    return path, ids


def available_rounds(path: Path, start: str) -> int:
    """Whole hours of data from ``start`` (local time) to the end of the data."""
    import pandas as pd

    ts = pd.read_parquet(path, columns=["timestamp"])["timestamp"]
    first = pd.Timestamp(start).tz_localize(TIMEZONE).tz_convert("UTC")
    end = ts.max() + pd.Timedelta(hours=1)
    if ts.min() > first:
        raise TrexsimError(f"{path}: the data start at {ts.min()}, after the study start {start} ({TIMEZONE})")
    return int((end - first) // pd.Timedelta(hours=1))


# --------------------------------------------------------------------------- configs
def leg_config(bench: CommunityBenchmark, leg: str, profile_path: Path, ids: list[str], rounds: int):
    """The simulation config of one leg: a plain trexsim config (``trexsim run`` runs the first three as they are;
    the scheduled legs need their set-points, :func:`run_leg`)."""
    from trexsim.config import parse_config

    if leg not in LEGS:
        raise TrexsimError(f"unknown leg {leg!r}; choose from {', '.join(LEGS)}")
    scheduled = leg in ("optimum", "learned")
    policy = {"no_battery": "idle", "rule": "self_consumption"}.get(leg, "external")
    trader = ({"type": "external"} if scheduled else
              {"type": "fixed_price", "bid_price": bench.bid_price, "ask_price": bench.ask_price})
    participants = {
        pid: {"profile": {"type": "file", "path": str(profile_path), "id": pid, "plausibility": "off"},
              "storage": {"capacity_wh": bench.capacity_wh, "power_w": bench.power_w, "efficiency": bench.efficiency,
                          "monthly_self_discharge": 0.0, "initial_soc": bench.initial_soc, "policy": policy},
              "trader": trader}
        for pid in ids}
    return parse_config({
        "study": {"name": f"community-{leg.replace('_', '-')}", "start_datetime": bench.start, "timezone": TIMEZONE,
                  "days": rounds / 24.0, "interval_s": 3600, "seed": bench.seed},
        "market": {"type": "alex", "settlement": bench.settlement, "close_steps": 1,
                   "grid": {"buy_price": bench.buy_price, "sell_price": bench.sell_price,
                            "tou": [dict(p) for p in tariff_periods(bench.tariff)]}},
        "participants": participants,
        "records": {"level": "full", "plots": False},
    })


# --------------------------------------------------------------------------- the scheduled legs
def lp_schedule(load_wh: np.ndarray, gen_wh: np.ndarray, buy: np.ndarray, sell: np.ndarray, bench: CommunityBenchmark,
                interval_s: int = 3600) -> tuple[np.ndarray, np.ndarray]:
    """Every home's perfect-foresight optimum against the grid tariff (:func:`battery_optimum`), from round 1
    (round 0's battery follows no set-point: nothing is ordered before the first round). Returns the whole-Wh
    set-points at the meter ``(T, n)`` (+ charge; the LP's schedule rounded on its running sum) and each home's
    LP bill [$] (round 0 on the grid, idle)."""
    from trexsim.devices.battery import BatteryBank
    from trexsim.engine.delivery import settle_delivery
    from trexsim.training.optimum import battery_optimum

    T, n = load_wh.shape
    bank = BatteryBank(1, interval_s)
    bank.configure(0, bench.capacity_wh, bench.power_w, bench.power_w, bench.efficiency, 0.0, bench.initial_soc, True)
    setpoints = np.zeros((T, n), dtype=np.int64)
    cost = np.zeros(n)
    zero = np.zeros(n, dtype=np.int64)
    first = settle_delivery(load_wh[0], gen_wh[0], zero, zero, zero, zero, buy[0], sell[0])
    for i in range(n):
        opt = battery_optimum(load_wh[1:, i], gen_wh[1:, i], buy[1:], sell[1:], capacity_wh=float(bank.capacity_wh[0]),
                              charge_limit_wh=float(bank.charge_limit_wh[0]),
                              discharge_limit_wh=float(bank.discharge_limit_wh[0]), efficiency=float(bank.efficiency[0]),
                              retention=float(bank.retention[0]), initial_wh=float(bank.stored_wh[0] * bank.retention[0]))
        running = np.rint(np.cumsum(opt.charge_wh - opt.discharge_wh))
        setpoints[1:, i] = np.diff(running, prepend=0.0).astype(np.int64)
        cost[i] = opt.cost_usd + first.grid_cost_usd[i] - first.grid_revenue_usd[i]
    return setpoints, cost


def learn_home(load_wh, gen_wh, buy, sell, hour, capacity_wh, charge_limit_wh, discharge_limit_wh, efficiency,
               retention, initial_wh, learning: Learning, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train one home's tabular Q-learner over rounds 1 .. T-1 of the period (one episode a pass,
    :func:`~trexsim.studies.community_holdout.train_table`) and return its greedy schedule: whole-Wh set-points
    ``(T,)`` (round 0 idle, as a scheduled battery's is), the Q-table and the training record."""
    from trexsim.studies.community_holdout import Battery, Episodes, policy_costs, train_table

    T = load_wh.size
    arrays = (np.ascontiguousarray(np.reshape(load_wh, (T, 1)), dtype=np.int64),
              np.ascontiguousarray(np.reshape(gen_wh, (T, 1)), dtype=np.int64),
              np.ascontiguousarray(buy, dtype=np.float64), np.ascontiguousarray(sell, dtype=np.float64),
              np.ascontiguousarray(hour, dtype=np.int64))
    # round 0 idles: the battery enters round 1 with its initial energy after one round of self-discharge
    battery = Battery(float(capacity_wh), float(charge_limit_wh), float(discharge_limit_wh), float(efficiency),
                      float(retention), float(initial_wh) * float(retention))
    period = Episodes([0], [1], [T])
    table = learning.table()
    q, _, returns = train_table(arrays, period, battery, table, seed)
    greedy_usd, rule_usd = np.zeros((T, 1)), np.zeros((T, 1))
    actions, flows = np.full((T, 1), -1, dtype=np.int64), np.zeros((T, 1), dtype=np.int64)
    policy_costs(arrays, period, battery, greedy_usd, actions, q=q, bins=table.soc_bins, flows=flows)
    policy_costs(arrays, period, battery, rule_usd, np.zeros((T, 1), dtype=np.int64), fixed_action=A_RULE)
    setpoint = flows[:, 0].copy()
    taken = actions[1:, 0]
    share = np.bincount(taken, minlength=len(ACTIONS)) / max(taken.size, 1)
    record = {"episodes": int(learning.episodes), "rounds": int(T), "reward": f"saving against {learning.reward}",
              "saving_per_pass_usd": [round(float(x), 6) for x in returns],
              "greedy_saving_vs_rule_usd": round(float(rule_usd.sum() - greedy_usd.sum()), 6),
              "greedy_action_share": {a: round(float(x), 4) for a, x in zip(ACTIONS, share)}}
    return setpoint, q, record


@numba.njit(cache=True, nogil=True)
def _act(action, residual, stored, capacity, charge_lim, discharge_lim, eta, retention, on):
    """``(charge, discharge, stored after)`` of one round: self-consumption of the residual, idle, full charge or
    full discharge, each as a need handed to :func:`~trexsim.devices.battery.dispatch_and_step`."""
    need = np.empty(1, dtype=np.int64)
    if action == 0:
        need[0] = residual
    elif action == 1:
        need[0] = 0
    elif action == 2:
        need[0] = -np.int64(charge_lim[0] + 1.0)
    else:
        need[0] = np.int64(discharge_lim[0] + 1.0)
    s = np.empty(1)
    s[0] = stored
    c, d, after = _dispatch_and_step(need, s, capacity, charge_lim, discharge_lim, eta, retention, on)
    return c[0], d[0], after[0]


@numba.njit(cache=True, nogil=True)
def _state(hour, stored, capacity, residual, bins):
    b = int(stored / capacity * bins) if capacity > 0 else 0
    if b >= bins:
        b = bins - 1
    r = 0 if residual < 0 else (1 if residual == 0 else 2)
    return (hour * bins + b) * 3 + r


# --------------------------------------------------------------------------- running a leg
def run_leg(config, out_dir: Path, setpoints: np.ndarray | None = None, bid_price: float = 0.12,
            ask_price: float = 0.10):
    """Run one leg as an ordinary simulation (ledger, summary.json). With ``setpoints`` ``(T, n)`` [Wh at the
    meter, + charge] the external batteries follow them, and every home orders what the ``fixed_price`` rule
    orders for its planned residual (:func:`trexsim.agents.baselines.fixed_price_batch`) at the same prices."""
    from trexsim.agents.baselines import fixed_price_batch
    from trexsim.fabric import topics
    from trexsim.fabric.messages import BID, NON_DISPATCH
    from trexsim.simulation import Simulation

    sim = Simulation(config, out_dir)
    on_round = None
    if setpoints is not None:
        pop = next(p for p in sim.participants.traders if p.kind == "external")
        T = config.study.rounds_per_episode
        close = config.market.close_steps
        load, gen = sim.profiles.energy_wh(0, T)
        n = load.shape[1]
        if setpoints.shape != (T, n):
            raise TrexsimError(f"set-points of shape {setpoints.shape} for {T} rounds of {n} homes")
        bid, ask = np.full(n, float(bid_price)), np.full(n, float(ask_price))
        pools, none, spare = np.full(n, NON_DISPATCH, dtype=np.int64), np.full(n, np.nan), np.zeros(n, dtype=np.int64)

        def place(d: int) -> None:  # the decisions for delivery round d, handed over before round d - close runs
            if d >= T:
                return
            net = np.ascontiguousarray(load[d] - gen[d] + setpoints[d], dtype=np.int64)
            member, side, _, _, qty = fixed_price_batch(net, spare, bid, ask, pools, none, False)
            bid_wh, ask_wh = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
            buys = side == BID
            bid_wh[member[buys]], ask_wh[member[~buys]] = qty[buys], qty[~buys]
            pop.set_actions(bid, bid_wh, ask, ask_wh, setpoints[d])

        sim.fabric.subscribe(topics.EPISODE_START, lambda msg: place(close))  # after the populations' reset
        on_round = lambda episode, r: place(r + close)  # noqa: E731 - r rounds done; round r runs next
    return sim.run(on_round=on_round, plots=False)


def read_ledger(db_path: Path, n: int, rounds: int) -> dict:
    """Per home, from the run's ledger: its ALEX bill (market and grid) and its meter readings on the grid tariff
    alone (the ``grid_only_cost_usd`` rule of the ledger applied to the metered net energy), energy totals, the
    stored energy at the end; per round, each home's battery energy at the meter and the community's net energy."""
    import duckdb

    from trexsim.records.schema import DERIVED

    tariff = DERIVED["grid_only_cost_usd"].replace("d.grid_only_net_wh", "d.net_meter_wh")
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        rows = con.execute(f"""
            SELECT d.participant, sum(d.net_cost_usd), sum({tariff}), sum(d.load_wh), sum(d.generation_wh),
                   sum(d.battery_charge_wh), sum(d.battery_discharge_wh), sum(d.grid_import_wh), sum(d.grid_export_wh),
                   sum(d.bought_wh), sum(d.sold_wh), arg_max(d.battery_stored_wh, d.round)
            FROM deliveries d JOIN rounds r ON r.episode = d.episode AND r.round = d.round
            GROUP BY d.participant ORDER BY d.participant""").fetchall()
        battery = con.execute("""SELECT battery_charge_wh - battery_discharge_wh FROM deliveries
                                 ORDER BY round, participant""").fetchnumpy()
        net = con.execute("""SELECT sum(net_meter_wh) FROM deliveries GROUP BY round ORDER BY round""").fetchnumpy()
    finally:
        con.close()
    cols = ("alex_usd", "grid_tariff_usd", "load_wh", "generation_wh", "battery_charge_wh", "battery_discharge_wh",
            "grid_import_wh", "grid_export_wh", "market_bought_wh", "market_sold_wh", "final_stored_wh")
    homes = [dict(zip(cols, row[1:])) for row in rows]
    return {"homes": homes, "battery_wh": next(iter(battery.values())).astype(np.int64).reshape(rounds, n),
            "community_net_wh": next(iter(net.values())).astype(np.int64)}


# --------------------------------------------------------------------------- the benchmark
def _round_prices(config) -> tuple[np.ndarray, np.ndarray]:
    from trexsim.engine.grid import tariff_prices

    study = config.study
    starts = study.start_utc_s + np.arange(study.rounds_per_episode, dtype=np.int64) * study.interval_s
    return tariff_prices(starts, study.timezone, config.market.grid)


def _local_hours(config) -> np.ndarray:
    from trexsim.data.profiles import Clock

    study = config.study
    clock = Clock(study.start_utc_s, study.interval_s, study.rounds_per_episode, study.timezone)
    return np.asarray(clock.timestamps_local(0, study.rounds_per_episode).hour, dtype=np.int64)


@dataclass
class Homes:
    """The study's homes as arrays: whole-Wh load and PV ``(T, n)``, each round's tariff prices and local hour."""

    folder: Path
    profile_path: Path
    ids: list[str]
    have: int                      # hours in the data from the start
    rounds: int
    base: object                   # the rule leg's config (its study clock and grid)
    load_wh: np.ndarray
    gen_wh: np.ndarray
    buy: np.ndarray
    sell: np.ndarray
    hour: np.ndarray


def load_homes(bench: CommunityBenchmark, data: str | os.PathLike | None, out: Path) -> Homes:
    """Convert the CityLearn folder and read every home's profiles and the tariff for the study's rounds."""
    from trexsim.data.profiles import Clock, ProfileSet

    folder = data_dir(data)
    profile_path, ids = prepare_data(folder, out)
    have = available_rounds(profile_path, bench.start)
    rounds = have if bench.days is None else int(round(bench.days * 24))
    if rounds < 2 or rounds > have:
        raise TrexsimError(f"{folder}: {bench.days} days from {bench.start} need {rounds} hours; the data hold {have} "
                           f"from then (at most {have / 24:.2f} days)")
    base = leg_config(bench, "rule", profile_path, ids, rounds)
    study = base.study
    clock = Clock(study.start_utc_s, study.interval_s, rounds, study.timezone)
    load, gen = ProfileSet.of_participants(ids, [s for _, s in base.expanded_participants()], clock, study.seed,
                                           chunk_rounds=rounds).energy_wh(0, rounds)
    buy, sell = _round_prices(base)
    return Homes(folder, profile_path, ids, have, rounds, base, load, gen, buy, sell, _local_hours(base))


def run_benchmark(bench: CommunityBenchmark, data: str | os.PathLike | None, out_dir: str | os.PathLike,
                  on_leg=None) -> dict:
    """Run every leg, write ``results.json``, ``results.md`` and ``figures/``; returns the results."""
    from trexsim.devices.battery import BatteryBank
    from trexsim.training.optimum import gap_closed

    unknown = [leg for leg in bench.legs if leg not in LEGS]
    if unknown:
        raise TrexsimError(f"unknown leg(s) {', '.join(unknown)}; choose from {', '.join(LEGS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    homes = load_homes(bench, data, out)
    folder, profile_path, ids, have, rounds = homes.folder, homes.profile_path, homes.ids, homes.have, homes.rounds
    base, load, gen, buy, sell = homes.base, homes.load_wh, homes.gen_wh, homes.buy, homes.sell
    n = len(ids)
    study = base.study
    legs: dict[str, dict] = {}
    schedules: dict[str, np.ndarray] = {}
    extra: dict[str, dict] = {}
    for leg in bench.legs:
        if on_leg:
            on_leg(leg)
        t0 = time.perf_counter()
        setpoints = None
        if leg == "optimum":
            setpoints, lp_cost = lp_schedule(load, gen, buy, sell, bench)
            extra[leg] = {"lp_bill_usd": {pid: round(float(c), 6) for pid, c in zip(ids, lp_cost)},
                          "lp_total_usd": round(float(lp_cost.sum()), 6)}
        elif leg == "learned":
            bank = BatteryBank(1, 3600)
            bank.configure(0, bench.capacity_wh, bench.power_w, bench.power_w, bench.efficiency, 0.0, bench.initial_soc,
                           True)
            hours = homes.hour
            setpoints = np.zeros((rounds, n), dtype=np.int64)
            training = {}
            for i, pid in enumerate(ids):
                sp, _, record = learn_home(load[:, i], gen[:, i], buy, sell, hours, bank.capacity_wh[0],
                                           bank.charge_limit_wh[0], bank.discharge_limit_wh[0], bank.efficiency[0],
                                           bank.retention[0], bank.stored_wh[0], bench.learning, bench.seed * 1000 + i)
                setpoints[:, i] = sp
                training[pid] = record
            extra[leg] = {"learning": asdict(bench.learning), "training": training}
        prep = time.perf_counter() - t0
        config = leg_config(bench, leg, profile_path, ids, rounds)
        t1 = time.perf_counter()
        result = run_leg(config, out / "legs" / leg, setpoints, bench.bid_price, bench.ask_price)
        sim_s = time.perf_counter() - t1
        ledger = read_ledger(result.database, n, rounds)
        entry = {"title": LEG_TITLES[leg], "community": result.summary.get("community"),
                 "conservation": result.summary["conservation"],
                 "market": {k: result.summary["market"][k] for k in ("settled_wh", "mean_settlement_price",
                                                                       "total_net_cost")},
                 "bills": {"alex_total_usd": round(sum(h["alex_usd"] for h in ledger["homes"]), 6),
                           "grid_tariff_total_usd": round(sum(h["grid_tariff_usd"] for h in ledger["homes"]), 6),
                           "per_home": {pid: {"alex_usd": round(h["alex_usd"], 6),
                                              "grid_tariff_usd": round(h["grid_tariff_usd"], 6)}
                                        for pid, h in zip(ids, ledger["homes"])}},
                 "energy": {k: (int(sum(h[k] for h in ledger["homes"])) if k != "final_stored_wh" else
                                round(float(sum(h[k] for h in ledger["homes"])), 3))
                            for k in ledger["homes"][0] if k.endswith("_wh")},
                 "seconds": {"schedule": round(prep, 2), "simulation": round(sim_s, 2)}}
        if setpoints is not None:
            entry["setpoint_shortfall_wh"] = int(np.abs(ledger["battery_wh"] - setpoints).sum())
        entry.update(extra.get(leg, {}))
        legs[leg] = entry
        schedules[leg] = ledger["community_net_wh"]
    if "rule" in legs and "optimum" in legs:
        rule = legs["rule"]["bills"]["per_home"]
        lp = legs["optimum"]["lp_bill_usd"]
        for leg in ("learned",):
            if leg in legs:
                mine = legs[leg]["bills"]["per_home"]
                # a share of a gap under a cent says nothing (the rule is already optimal there): None
                legs[leg]["gap_closed"] = {
                    pid: (None if rule[pid]["grid_tariff_usd"] - lp[pid] < MIN_GAP_USD
                          or (g := gap_closed(mine[pid]["grid_tariff_usd"], rule[pid]["grid_tariff_usd"], lp[pid])) is None
                          else round(g, 4)) for pid in ids}
                total = gap_closed(legs[leg]["bills"]["grid_tariff_total_usd"], legs["rule"]["bills"]["grid_tariff_total_usd"],
                                   legs["optimum"]["lp_total_usd"])
                legs[leg]["gap_closed_total"] = None if total is None else round(total, 4)
    import pandas as pd

    first = pd.Timestamp(study.start_utc_s, unit="s", tz="UTC").tz_convert(TIMEZONE)
    last = pd.Timestamp(study.start_utc_s + rounds * 3600, unit="s", tz="UTC").tz_convert(TIMEZONE)
    results = {
        "benchmark": "community (May and Musilek, IEEE Access 2024, arXiv 2403.15617; arXiv 2404.13142)",
        "data": {"folder": folder.name, "homes": ids, "rounds": rounds, "interval_s": 3600,
                 "from": first.isoformat(), "to": last.isoformat(), "hours_in_data_from_start": have},
        "settings": {k: v for k, v in asdict(bench).items() if k != "learning"} | {"legs": list(bench.legs)},
        "market": {"type": "alex", "settlement": bench.settlement, "close_steps": 1,
                   "trader": {"type": "fixed_price", "bid_price": bench.bid_price, "ask_price": bench.ask_price}},
        "legs": legs,
        "seconds": round(time.perf_counter() - began, 2),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(results_markdown(results))
    results["figures"] = [str(p) for p in plot_benchmark(results, schedules, study, out / "figures")]
    return results


# --------------------------------------------------------------------------- the report
def _fmt(x, nd=3) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def metrics_table(results: dict) -> str:
    """The community metrics and bills, one column per leg (Markdown)."""
    legs = results["legs"]
    names = list(legs)
    lines = ["| metric | " + " | ".join(legs[n]["title"] for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for m in METRICS:
        lines.append(f"| {METRIC_TITLES[m]} | " + " | ".join(_fmt((legs[n]["community"] or {}).get(m)) for n in names) + " |")
    lines.append("| community bill in ALEX ($) | " + " | ".join(_fmt(legs[n]["bills"]["alex_total_usd"], 2) for n in names) + " |")
    lines.append("| community bill, grid tariff alone ($) | "
                 + " | ".join(_fmt(legs[n]["bills"]["grid_tariff_total_usd"], 2) for n in names) + " |")
    return "\n".join(lines) + "\n"


def leg_table(results: dict, leg: str) -> str:
    """One leg: every home's bills (Markdown)."""
    entry = results["legs"][leg]
    lp = entry.get("lp_bill_usd")
    gap = entry.get("gap_closed")
    head = "| home | bill in ALEX ($) | bill on the grid tariff ($) |" + (" LP's own bill ($) |" if lp else "") \
        + (" share of the rule-to-optimum gap closed |" if gap else "")
    lines = [head, "|---|---:|---:|" + ("---:|" if lp else "") + ("---:|" if gap else "")]
    for pid, b in entry["bills"]["per_home"].items():
        row = f"| {pid} | {_fmt(b['alex_usd'], 2)} | {_fmt(b['grid_tariff_usd'], 2)} |"
        if lp:
            row += f" {_fmt(lp[pid], 2)} |"
        if gap:
            row += f" {_fmt(gap[pid], 3)} |"
        lines.append(row)
    total = f"| all | {_fmt(entry['bills']['alex_total_usd'], 2)} | {_fmt(entry['bills']['grid_tariff_total_usd'], 2)} |"
    if lp:
        total += f" {_fmt(entry['lp_total_usd'], 2)} |"
    if gap:
        total += f" {_fmt(entry.get('gap_closed_total'), 3)} |"
    lines.append(total)
    return "\n".join(lines) + "\n"


def results_markdown(results: dict) -> str:
    d = results["data"]
    text = [f"# Community benchmark: {len(d['homes'])} CityLearn 2022 homes, {d['rounds']:,} hourly rounds "
            f"({d['from']} to {d['to']})\n",
            f"ALEX ({results['market']['settlement']}), every home with the fixed_price trader (bid "
            f"{results['market']['trader']['bid_price']}, ask {results['market']['trader']['ask_price']} $/kWh); "
            f"tariff {results['settings']['buy_price']} / {results['settings']['sell_price']} $/kWh; battery "
            f"{results['settings']['capacity_wh'] / 1000:g} kWh / {results['settings']['power_w'] / 1000:g} kW, "
            f"{results['settings']['efficiency']} one-way. Metrics from each run's summary.json `community`.\n",
            metrics_table(results)]
    for leg in results["legs"]:
        text.append(f"\n## {results['legs'][leg]['title']}\n")
        text.append(leg_table(results, leg))
    return "\n".join(text)


def plot_benchmark(results: dict, community_net: dict[str, np.ndarray], study, out_dir: Path) -> list[Path]:
    """Two figures: the community's net load on the average day of every leg, and every home's bill per leg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trexsim.data.profiles import Clock

    out_dir.mkdir(parents=True, exist_ok=True)
    legs = results["legs"]
    rounds = results["data"]["rounds"]
    hours = np.asarray(Clock(study.start_utc_s, 3600, rounds, study.timezone).timestamps_local(0, rounds).hour)
    fig, ax = plt.subplots(figsize=(8, 4))
    for leg, net in community_net.items():
        mean = np.bincount(hours, weights=net / 1000.0, minlength=24) / np.maximum(np.bincount(hours, minlength=24), 1)
        ax.plot(range(24), mean, marker="o", ms=3, label=legs[leg]["title"])
    ax.axhline(0, color="gray", lw=0.6)
    ax.set_xlabel("local hour")
    ax.set_ylabel("community net load (kW, + import)")
    ax.set_title(f"Community net load on the average day, {len(results['data']['homes'])} homes, {rounds:,} hours")
    ax.legend(fontsize=8)
    fig.tight_layout()
    first = out_dir / "community_net_load_average_day.png"
    fig.savefig(first, dpi=100)
    plt.close(fig)
    ids = results["data"]["homes"]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(len(legs), 1)
    for j, leg in enumerate(legs):
        bills = [legs[leg]["bills"]["per_home"][pid]["grid_tariff_usd"] for pid in ids]
        ax.bar(np.arange(len(ids)) + (j - (len(legs) - 1) / 2) * width, bills, width=width, label=legs[leg]["title"])
    ax.set_xticks(np.arange(len(ids)), [pid.replace("Building_", "B") for pid in ids], fontsize=8)
    ax.axhline(0, color="gray", lw=0.6)
    ax.set_ylabel("bill on the grid tariff ($)")
    ax.set_title("Every home's bill on the grid tariff, per leg")
    ax.legend(fontsize=8)
    fig.tight_layout()
    second = out_dir / "bills_per_home.png"
    fig.savefig(second, dpi=100)
    plt.close(fig)
    return [first, second]


__all__ = ["CommunityBenchmark", "LEGS", "Learning", "learn_home", "leg_config", "lp_schedule", "prepare_data",
           "read_ledger", "run_benchmark", "run_leg"]
