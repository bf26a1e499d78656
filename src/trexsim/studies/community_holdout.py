"""Held-out evaluation of the learned battery trader of the community benchmark (``trexsim study community
--holdout weeks|months``).

The benchmark's ``learned`` leg trains and scores on the same year. Here the year is cut into blocks of
``block_days`` local days (weeks by default) and every block is an **episode**: each battery starts it empty
and what is left in it at the end is worth nothing, for every leg alike. The split decides which blocks
train and which test:

``weeks``
    interleaved: even blocks (1st, 3rd, ... week from 2016-08-01) train, odd blocks test. Both halves see
    every season, so the test measures generalisation to unseen days, not to an unseen climate; whole
    weeks (not days) keep a multi-day weather spell mostly on one side.
``months``
    seasonal: August to January train, February to July test (a block cut by the month boundary becomes two
    episodes). The harder split: the learner never saw spring or early summer.

Legs, all scored on the test episodes with the grid tariff (the delivery rule of ``trexsim.engine.delivery``
round by round, what the ledger's grid-only bill charges the meter):

``no_battery``, ``rule``
    idle batteries; the self-consumption rule (the one kernel ``dispatch_and_step``);
``optimum``
    every home's perfect-foresight LP (:func:`trexsim.training.optimum.battery_optimum`) per test episode;
``learned``
    one tabular Q-learner per home (:func:`train_table`) trained on that home's training episodes;
``learned_other_homes``
    a table shared by homes, trained on the training episodes of the other half of the homes (homes in
    building order alternate between two folds) and scored on this half's test episodes: held out in time
    and in homes. The state is home-independent (local hour, stored energy as a share of the capacity, the
    residual's sign), so one table serves any home.

The learners run ``seeds`` times (seeds ``seed .. seed + seeds - 1``). The share of the rule-to-optimum gap a
learner closes is ``sum(rule - learner) / sum(rule - optimum)`` over the test days and homes; its 95 %
interval is a percentile bootstrap that resamples seeds and test days together. Against the rule, per test
day (the community's bill, averaged over seeds): the share of days cheaper, a two-sided sign test and a
bootstrap interval of the mean daily saving.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numba
import numpy as np

from trexsim.engine.delivery import settle_participant
from trexsim.errors import ConfigError
from trexsim.studies.community import _act, _state

SPLITS = ("weeks", "months")
TRAIN_MONTHS = (8, 9, 10, 11, 12, 1)  # the ``months`` split: the study's first six months train
HOLDOUT_LEGS = ("no_battery", "rule", "optimum", "learned", "learned_other_homes")
HOLDOUT_TITLES = {"no_battery": "no battery use", "rule": "self-consumption rule", "optimum": "LP optimum (per episode)",
                  "learned": "learned, own home", "learned_other_homes": "learned, other homes (shared table)"}
FOLDS = 2  # homes alternate between two folds for the shared table
REWARD_BASELINES = {"rule": 0, "no_battery": 1}  # the reward's reference policy: its fixed action


@dataclass
class TableLearning:
    """The held-out learner: tabular Q-learning over (local hour, stored-energy bin, residual sign).

    Why each default (docs/community-benchmark.md, "Held-out evaluation"): the reward is the hour's saving
    against **no battery** (depends only on the learner's own flows, unlike the saving against the rule,
    whose battery follows another trajectory); values start optimistic so that every action is tried in every
    state, but not far above what a day can gain (from 1 $ the optimism outlived 2,000 passes in rarely
    reached states and a home without load learned to charge from the grid: the tests' two-home case); the learning rate falls with each state-action's visits (the hourly rewards are noisy: load and PV
    change from day to day under the same state); epsilon decays geometrically over many passes; gamma near 1
    because a charge at noon pays five to nine hours later, in the evening peak."""

    passes: int = 300
    learning_rate: float = 1.0      # times visits ** -rate_decay
    rate_decay: float = 0.6         # 0: a constant rate
    min_learning_rate: float = 0.01
    discount_factor: float = 0.99
    exploration_start: float = 1.0
    exploration_end: float = 0.01   # epsilon decays geometrically from start to end over the passes
    initial_value: float = 0.3      # [$] optimistic start: above an hour's saving, not far above a day's
    soc_bins: int = 8
    reward: str = "no_battery"      # the saving against: "no_battery" or "rule" (the benchmark leg's reward)


@dataclass
class Holdout:
    """The held-out evaluation's settings."""

    split: str = "weeks"
    block_days: int = 7
    seeds: int = 5
    bootstrap: int = 2000
    learning: TableLearning = field(default_factory=TableLearning)


def check_holdout(h: Holdout) -> None:
    """Bad settings are a ConfigError naming the command-line option."""
    problems = []
    if h.split not in SPLITS:
        problems.append(("--holdout", f"{h.split!r}: choose from {', '.join(SPLITS)}"))
    if h.seeds < 1:
        problems.append(("--holdout-seeds", f"{h.seeds}: at least 1"))
    if h.block_days < 1:
        problems.append(("--holdout-block-days", f"{h.block_days}: at least 1"))
    if h.learning.passes < 1:
        problems.append(("--holdout-passes", f"{h.learning.passes}: at least 1"))
    if h.learning.reward not in REWARD_BASELINES:
        problems.append(("reward", f"{h.learning.reward!r}: choose from {', '.join(REWARD_BASELINES)}"))
    if h.bootstrap < 100:
        problems.append(("bootstrap", f"{h.bootstrap}: at least 100 resamples"))
    if problems:
        raise ConfigError(problems)


# --------------------------------------------------------------------------- the split
def local_days(start_utc_s: int, rounds: int, timezone: str) -> tuple[np.ndarray, np.ndarray]:
    """Each round's local day index from the first local day, and its local month."""
    from trexsim.data.profiles import Clock

    ts = Clock(start_utc_s, 3600, rounds, timezone).timestamps_local(0, rounds)
    dates = ts.normalize().tz_localize(None)
    day = np.asarray((dates - dates[0]).days, dtype=np.int64)
    return day, np.asarray(ts.month, dtype=np.int64)


def split_episodes(day: np.ndarray, month: np.ndarray, split: str, block_days: int):
    """The episodes ``(start, end)`` of rounds and whether each is a test episode: maximal runs of rounds in one
    block of ``block_days`` days on one side of the split."""
    block = day // block_days
    if split == "weeks":
        test = block % 2 == 1
    elif split == "months":
        test = ~np.isin(month, TRAIN_MONTHS)
    else:
        raise ConfigError([("--holdout", f"{split!r}: choose from {', '.join(SPLITS)}")])
    cut = np.flatnonzero((np.diff(block) != 0) | (np.diff(test.astype(np.int8)) != 0)) + 1
    starts = np.concatenate([[0], cut]).astype(np.int64)
    ends = np.concatenate([cut, [day.size]]).astype(np.int64)
    return starts, ends, test[starts]


# --------------------------------------------------------------------------- the learner (compiled)
@numba.njit(cache=True, nogil=True)
def _bill(load, gen, charge, discharge, buy, sell):
    """One home's round on the grid tariff [$]: the delivery rule (``settle_participant``), nothing traded; no
    temporaries (this runs millions of times in training)."""
    out = settle_participant(load, gen, charge, discharge, 0, 0, buy, sell)
    return out[6] - out[7]


@numba.njit(cache=True, nogil=True)
def _greedy(q, state):
    a = 0
    for j in range(1, q.shape[1]):
        if q[state, j] > q[state, a]:
            a = j
    return a


@numba.njit(cache=True, nogil=True)
def _one_battery(capacity, charge_lim, discharge_lim, eta, retention):
    """One home's battery as the one-member arrays the battery kernel (``dispatch_and_step``) takes."""
    return (np.full(1, capacity), np.full(1, charge_lim), np.full(1, discharge_lim), np.full(1, eta),
            np.full(1, retention), np.ones(1, dtype=np.bool_))


@numba.njit(cache=True, nogil=True)
def _train_table(load, gen, buy, sell, hour, baseline, ep_home, ep_start, ep_end, capacity, charge_lim, discharge_lim,
                 eta, retention, initial, passes, rate, rate_decay, min_rate, gamma, eps_start, eps_end, q_init, bins,
                 seed):
    """Q-learning of one table over the episodes ``(ep_home[k], ep_start[k] .. ep_end[k])``, their order shuffled
    every pass. Reward of a round: ``baseline[t, i]`` (a reference policy's bill of that round) less the bill with
    the learner's flows."""
    np.random.seed(seed)
    cap, cl, dl, et, rt, on = _one_battery(capacity, charge_lim, discharge_lim, eta, retention)
    q = np.full((24 * bins * 3, 4), q_init)
    visits = np.zeros((24 * bins * 3, 4))
    order = np.arange(ep_home.size)
    returns = np.zeros(passes)
    for p in range(passes):
        eps = eps_start * (eps_end / eps_start) ** (p / max(passes - 1, 1))
        np.random.shuffle(order)
        total = 0.0
        for k in order:
            i = ep_home[k]
            t0, t1 = ep_start[k], ep_end[k]
            s = initial
            state = _state(hour[t0], s, capacity, load[t0, i] - gen[t0, i], bins)
            for t in range(t0, t1):
                if np.random.random() < eps:
                    a = np.random.randint(4)
                else:
                    a = _greedy(q, state)
                residual = load[t, i] - gen[t, i]
                c, d, s = _act(a, residual, s, cap, cl, dl, et, rt, on)
                r = baseline[t, i] - _bill(load[t, i], gen[t, i], c, d, buy[t], sell[t])
                total += r
                if t + 1 < t1:
                    nxt = _state(hour[t + 1], s, capacity, load[t + 1, i] - gen[t + 1, i], bins)
                    best = q[nxt, 0]
                    for j in range(1, 4):
                        best = max(best, q[nxt, j])
                    target = r + gamma * best
                else:
                    nxt = state
                    target = r  # the episode ends: what is left in the battery is worth nothing
                visits[state, a] += 1.0
                lr = max(rate * visits[state, a] ** -rate_decay, min_rate)
                q[state, a] += lr * (target - q[state, a])
                state = nxt
        returns[p] = total
    return q, visits, returns


@numba.njit(cache=True, nogil=True)
def _episode_costs(q, fixed_action, load, gen, buy, sell, hour, ep_home, ep_start, ep_end, capacity, charge_lim,
                   discharge_lim, eta, retention, initial, bins, cost, actions, flows):
    """Run a policy over the episodes and write each round's grid bill into ``cost[t, i]`` [$], its action into
    ``actions[t, i]`` and the battery's energy at the meter (+ charge) into ``flows[t, i]`` [Wh]: the greedy
    policy of ``q``, or ``fixed_action`` (0 the rule, 1 idle) when it is >= 0."""
    cap, cl, dl, et, rt, on = _one_battery(capacity, charge_lim, discharge_lim, eta, retention)
    for k in range(ep_home.size):
        i = ep_home[k]
        s = initial
        for t in range(ep_start[k], ep_end[k]):
            residual = load[t, i] - gen[t, i]
            if fixed_action >= 0:
                a = fixed_action
            else:
                a = _greedy(q, _state(hour[t], s, capacity, residual, bins))
            c, d, s = _act(a, residual, s, cap, cl, dl, et, rt, on)
            cost[t, i] = _bill(load[t, i], gen[t, i], c, d, buy[t], sell[t])
            actions[t, i] = a
            flows[t, i] = c - d


# --------------------------------------------------------------------------- the legs
@dataclass
class Battery:
    """One battery as the kernels take it (the benchmark's BatteryBank, per round)."""

    capacity_wh: float
    charge_limit_wh: float
    discharge_limit_wh: float
    efficiency: float
    retention: float
    initial_wh: float

    def args(self):
        return (self.capacity_wh, self.charge_limit_wh, self.discharge_limit_wh, self.efficiency, self.retention,
                self.initial_wh)


def battery_of(bench) -> Battery:
    from trexsim.devices.battery import BatteryBank

    bank = BatteryBank(1, 3600)
    bank.configure(0, bench.capacity_wh, bench.power_w, bench.power_w, bench.efficiency, 0.0, bench.initial_soc, True)
    return Battery(float(bank.capacity_wh[0]), float(bank.charge_limit_wh[0]), float(bank.discharge_limit_wh[0]),
                   float(bank.efficiency[0]), float(bank.retention[0]), float(bank.stored_wh[0]))


class Episodes:
    """Episodes of given homes: parallel arrays ``home, start, end`` (rounds ``start .. end - 1``)."""

    def __init__(self, home, start, end):
        self.home = np.ascontiguousarray(home, dtype=np.int64)
        self.start = np.ascontiguousarray(start, dtype=np.int64)
        self.end = np.ascontiguousarray(end, dtype=np.int64)

    @classmethod
    def of(cls, homes, starts, ends) -> "Episodes":
        homes = np.asarray(list(homes), dtype=np.int64)
        return cls(np.repeat(homes, len(starts)), np.tile(starts, homes.size), np.tile(ends, homes.size))


def train_table(arrays, episodes: Episodes, battery: Battery, learning: TableLearning, seed: int):
    """Train one Q-table over ``episodes``; returns ``(q, visits, saving against the reward's baseline per pass
    [$])``. The baseline is the bill of no battery or of the rule (``learning.reward``) on the same episodes."""
    load, gen, buy, sell, hour = arrays
    L = learning
    baseline = np.zeros(load.shape)
    policy_costs(arrays, episodes, battery, baseline, np.zeros(load.shape, dtype=np.int64),
                 fixed_action=REWARD_BASELINES[L.reward])
    return _train_table(load, gen, buy, sell, hour, baseline, episodes.home, episodes.start, episodes.end, *battery.args(),
                        int(L.passes), float(L.learning_rate), float(L.rate_decay), float(L.min_learning_rate),
                        float(L.discount_factor), float(L.exploration_start), float(L.exploration_end),
                        float(L.initial_value), int(L.soc_bins), int(seed))


def policy_costs(arrays, episodes: Episodes, battery: Battery, cost, actions, q=None, fixed_action: int = -1,
                 bins: int = 1, flows=None) -> None:
    """Score a policy (a Q-table's greedy one, or a fixed action) on ``episodes`` into ``cost``, ``actions`` and
    (when given) ``flows``."""
    load, gen, buy, sell, hour = arrays
    table = np.zeros((24 * bins * 3, 4)) if q is None else q
    if flows is None:
        flows = np.zeros(cost.shape, dtype=np.int64)
    _episode_costs(table, int(fixed_action), load, gen, buy, sell, hour, episodes.home, episodes.start, episodes.end,
                   *battery.args(), int(bins), cost, actions, flows)


def lp_costs(arrays, episodes: Episodes, battery: Battery, cost) -> None:
    """Every episode's perfect-foresight LP (:func:`battery_optimum`) per round into ``cost`` [$]."""
    from trexsim.training.optimum import battery_optimum

    load, gen, buy, sell, _ = arrays
    for i, t0, t1 in zip(episodes.home, episodes.start, episodes.end):
        opt = battery_optimum(load[t0:t1, i], gen[t0:t1, i], buy[t0:t1], sell[t0:t1], capacity_wh=battery.capacity_wh,
                              charge_limit_wh=battery.charge_limit_wh, discharge_limit_wh=battery.discharge_limit_wh,
                              efficiency=battery.efficiency, retention=battery.retention, initial_wh=battery.initial_wh)
        cost[t0:t1, i] = (buy[t0:t1] * opt.import_wh - sell[t0:t1] * opt.export_wh) / 1000.0


# --------------------------------------------------------------------------- statistics
def gap_share(rule_usd, learner_usd, optimum_usd) -> float | None:
    """``sum(rule - learner) / sum(rule - optimum)``: 1 at the optimum, 0 at the rule; None without a gap."""
    gap = float(np.sum(rule_usd) - np.sum(optimum_usd))
    if gap <= 1e-12:
        return None
    return float((np.sum(rule_usd) - np.sum(learner_usd)) / gap)


def bootstrap_gap_share(rule_day, learner_day, optimum_day, resamples: int, rng) -> tuple[float, float, float]:
    """The gap share (over all seeds and days) and its percentile 95 % interval, resampling seeds and days
    together. ``rule_day`` and ``optimum_day`` ``(D,)``, ``learner_day`` ``(S, D)`` [$ per test day]."""
    S, D = learner_day.shape
    saving = rule_day[None, :] - learner_day                      # (S, D)
    gap = rule_day - optimum_day                                  # (D,)
    point = float(saving.mean(axis=0).sum() / gap.sum())
    seeds = rng.integers(0, S, size=(resamples, S))
    days = rng.integers(0, D, size=(resamples, D))
    per_seed_day = saving[seeds].mean(axis=1)                     # (B, D): a resample of seeds, averaged
    num = np.take_along_axis(per_seed_day, days, axis=1).sum(axis=1)
    den = gap[days].sum(axis=1)
    shares = num / den
    lo, hi = np.percentile(shares, [2.5, 97.5])
    return point, float(lo), float(hi)


def paired_days(rule_day, learner_day, resamples: int, rng) -> dict:
    """Per test day, the community's saving against the rule (averaged over seeds): the share of days cheaper,
    a two-sided sign test over the days that differ, and a bootstrap 95 % interval of the mean daily saving."""
    from scipy.stats import binomtest

    saving = rule_day - np.atleast_2d(learner_day).mean(axis=0)  # (D,) [$]
    better = int((saving > 1e-9).sum())
    worse = int((saving < -1e-9).sum())
    p = float(binomtest(better, better + worse, 0.5).pvalue) if better + worse else 1.0
    means = saving[rng.integers(0, saving.size, size=(resamples, saving.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"days": int(saving.size), "days_cheaper": better, "days_dearer": worse,
            "share_of_days_cheaper": round(better / saving.size, 4), "sign_test_p": p,
            "mean_daily_saving_usd": round(float(saving.mean()), 4),
            "mean_daily_saving_ci95_usd": [round(float(lo), 4), round(float(hi), 4)]}


def per_day(cost, test_rounds, day) -> np.ndarray:
    """The community's bill per test day [$]: ``cost`` ``(T, n)`` summed over homes, on the test rounds."""
    days = np.unique(day[test_rounds])
    idx = np.searchsorted(days, day[test_rounds])
    return np.bincount(idx, weights=cost[test_rounds].sum(axis=1), minlength=days.size)


# --------------------------------------------------------------------------- the evaluation
class Split:
    """The training and test episodes of a split, for every home or a few."""

    def __init__(self, day, month, holdout: Holdout):
        starts, ends, test = split_episodes(day, month, holdout.split, holdout.block_days)
        if not test.any() or test.all():
            raise ConfigError([("--holdout", f"{holdout.split!r} with {holdout.block_days}-day blocks leaves "
                                             f"{'no test' if not test.any() else 'no training'} data in "
                                             f"{day.size} rounds")])
        self.starts, self.ends, self.test = starts, ends, test
        self.test_rounds = np.zeros(day.size, dtype=bool)
        for t0, t1 in zip(starts[test], ends[test]):
            self.test_rounds[t0:t1] = True

    def train(self, homes) -> Episodes:
        return Episodes.of(homes, self.starts[~self.test], self.ends[~self.test])

    def testing(self, homes) -> Episodes:
        return Episodes.of(homes, self.starts[self.test], self.ends[self.test])


def fold_tables(n_homes: int):
    """``(scored homes, training homes, table index)`` of each table: one per home on its own data
    (``learned``), or one per fold trained on the other fold's homes (``learned_other_homes``)."""
    own = [([i], [i], i) for i in range(n_homes)]
    shared = []
    for f in range(FOLDS):
        mine = [i for i in range(n_homes) if i % FOLDS == f]
        if mine:
            others = [i for i in range(n_homes) if i % FOLDS != f] or mine  # a single home: its own (no other)
            shared.append((mine, others, 500 + f))
    return {"learned": own, "learned_other_homes": shared}


def learned_run(arrays, split: Split, battery: Battery, learning: TableLearning, tables, seed: int, n_homes: int):
    """One seed of one learned leg: every table trained on its training homes' training episodes and its greedy
    policy scored on its scored homes' test episodes. Returns the bills ``(T, n)``, the actions and every
    table's saving in its last training pass."""
    T = arrays[0].shape[0]
    cost = np.zeros((T, n_homes))
    actions = np.full((T, n_homes), -1, dtype=np.int64)
    last = []
    for scored, trained, index in tables:
        q, _, returns = train_table(arrays, split.train(trained), battery, learning, seed * 1000 + index)
        policy_costs(arrays, split.testing(scored), battery, cost, actions, q=q, bins=learning.soc_bins)
        last.append(round(float(returns[-1]), 4))
    return cost, actions, last


def learned_entry(leg: str, runs, cost, split: Split, day, holdout: Holdout, rng) -> dict:
    """The results of a learned leg over its seeds: test cost, gap closed with its interval, the paired days."""
    rounds = split.test_rounds
    rule_day, optimum_day = per_day(cost["rule"], rounds, day), per_day(cost["optimum"], rounds, day)
    days_by_seed = np.stack([per_day(c, rounds, day) for c, _, _ in runs])
    totals = [float(c[rounds].sum()) for c, _, _ in runs]
    point, lo, hi = bootstrap_gap_share(rule_day, days_by_seed, optimum_day, holdout.bootstrap, rng)
    acts = np.concatenate([a[rounds].ravel() for _, a, _ in runs])
    share = np.bincount(acts[acts >= 0], minlength=4) / max(int((acts >= 0).sum()), 1)
    per_seed = [gap_share(cost["rule"][rounds], c[rounds], cost["optimum"][rounds]) for c, _, _ in runs]
    return {"title": HOLDOUT_TITLES[leg], "test_cost_usd": round(float(np.mean(totals)), 6),
            "test_cost_usd_per_seed": [round(x, 6) for x in totals],
            "gap_closed": round(point, 4), "gap_closed_ci95": [round(lo, 4), round(hi, 4)],
            "gap_closed_per_seed": [None if g is None else round(g, 4) for g in per_seed],
            "paired_days_vs_rule": paired_days(rule_day, days_by_seed, holdout.bootstrap, rng),
            "test_action_share": {a: round(float(x), 4) for a, x in
                                  zip(("self_consumption", "idle", "charge_full", "discharge_full"), share)},
            "training_saving_last_pass_usd": [last for _, _, last in runs]}


def evaluate(arrays, day, month, battery: Battery, holdout: Holdout, seed: int, n_homes: int) -> dict:
    """Every leg on the test episodes (module docstring); the arrays are ``(load, gen, buy, sell, hour)``."""
    check_holdout(holdout)
    T = arrays[0].shape[0]
    split = Split(day, month, holdout)
    homes = range(n_homes)
    cost = {leg: np.zeros((T, n_homes)) for leg in ("no_battery", "rule", "optimum")}
    scratch = np.zeros((T, n_homes), dtype=np.int64)
    policy_costs(arrays, split.testing(homes), battery, cost["no_battery"], scratch, fixed_action=1)
    policy_costs(arrays, split.testing(homes), battery, cost["rule"], scratch, fixed_action=0)
    lp_costs(arrays, split.testing(homes), battery, cost["optimum"])
    legs = {leg: {"title": HOLDOUT_TITLES[leg], "test_cost_usd": round(float(c[split.test_rounds].sum()), 6)}
            for leg, c in cost.items()}
    rng = np.random.default_rng(seed)
    for leg, tables in fold_tables(n_homes).items():
        runs = [learned_run(arrays, split, battery, holdout.learning, tables, seed + k, n_homes)
                for k in range(holdout.seeds)]
        legs[leg] = learned_entry(leg, runs, cost, split, day, holdout, rng)
    test_rounds = int(split.test_rounds.sum())
    return {"split": holdout.split, "block_days": holdout.block_days, "seeds": list(range(seed, seed + holdout.seeds)),
            "bootstrap": holdout.bootstrap, "learning": asdict(holdout.learning),
            "episodes": {"train": int((~split.test).sum()), "test": int(split.test.sum())},
            "rounds": {"train": T - test_rounds, "test": test_rounds},
            "test_days": int(np.unique(day[split.test_rounds]).size), "legs": legs}


def run_holdout(bench, holdout: Holdout, data, out_dir) -> dict:
    """The held-out evaluation on the benchmark's homes and tariff: writes ``holdout.json`` and ``holdout.md``."""
    from trexsim.studies.community import load_homes

    check_holdout(holdout)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    homes = load_homes(bench, data, out)
    study = homes.base.study
    day, month = local_days(study.start_utc_s, homes.rounds, study.timezone)
    arrays = (np.ascontiguousarray(homes.load_wh, dtype=np.int64), np.ascontiguousarray(homes.gen_wh, dtype=np.int64),
              np.ascontiguousarray(homes.buy, dtype=np.float64), np.ascontiguousarray(homes.sell, dtype=np.float64),
              np.ascontiguousarray(homes.hour, dtype=np.int64))
    result = evaluate(arrays, day, month, battery_of(bench), holdout, bench.seed, len(homes.ids))
    result = {"benchmark": "community, held-out evaluation", "tariff": bench.tariff, "homes": homes.ids,
              "rounds": homes.rounds, **result, "seconds": round(time.perf_counter() - began, 2)}
    (out / "holdout.json").write_text(json.dumps(result, indent=2))
    (out / "holdout.md").write_text(holdout_markdown(result))
    return result


def holdout_table(result: dict) -> str:
    """Cost per leg on the test data, the gap share with its interval, the paired per-day test (Markdown)."""
    legs = result["legs"]
    lines = ["| leg | test cost ($) | share of the rule-to-optimum gap closed [95 % CI] | test days cheaper than the "
             "rule | sign test p | mean daily saving vs rule ($) [95 % CI] |", "|---|---:|---:|---:|---:|---:|"]
    for leg, e in legs.items():
        if "gap_closed" in e:
            p = e["paired_days_vs_rule"]
            lo, hi = e["gap_closed_ci95"]
            dlo, dhi = p["mean_daily_saving_ci95_usd"]
            lines.append(f"| {e['title']} | {e['test_cost_usd']:,.2f} | {e['gap_closed']:.3f} [{lo:.3f}, {hi:.3f}] | "
                         f"{p['days_cheaper']} of {p['days']} | {p['sign_test_p']:.2g} | "
                         f"{p['mean_daily_saving_usd']:+.3f} [{dlo:+.3f}, {dhi:+.3f}] |")
        else:
            lines.append(f"| {e['title']} | {e['test_cost_usd']:,.2f} | | | | |")
    return "\n".join(lines) + "\n"


def holdout_markdown(result: dict) -> str:
    return (f"# Community benchmark, held out: split `{result['split']}` ({result['block_days']}-day blocks), "
            f"tariff `{result['tariff']}`\n\n{len(result['homes'])} homes; {result['rounds']['train']:,} training and "
            f"{result['rounds']['test']:,} test rounds ({result['test_days']} test days, {result['episodes']['test']} "
            f"test episodes); learners over seeds {result['seeds'][0]}..{result['seeds'][-1]}, bootstrap "
            f"{result['bootstrap']} resamples of seeds and days.\n\n" + holdout_table(result))


def with_options(holdout: Holdout, **changes) -> Holdout:
    """A copy with the learning settings in ``changes`` (``passes=...``) changed and the rest as given."""
    learn = {k: v for k, v in changes.items() if k in TableLearning.__dataclass_fields__}
    rest = {k: v for k, v in changes.items() if k not in learn}
    return replace(holdout, learning=replace(holdout.learning, **learn), **rest)


__all__ = ["Holdout", "HOLDOUT_LEGS", "SPLITS", "TableLearning", "bootstrap_gap_share", "check_holdout", "evaluate",
           "gap_share", "paired_days", "run_holdout", "split_episodes", "train_table"]
