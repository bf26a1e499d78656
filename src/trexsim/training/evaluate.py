"""Evaluate a learner on held-out days against rule-based baselines of the same household.

Three policies of the learner's household, each in the same community on the same days:

``agent``
    the trained policy, driving its orders and battery through :func:`trexsim.envs.gym_env`;
``rule``
    the household's battery on ``self_consumption`` and a rule trader (``eval.rule_trader``,
    by default ``fixed_price`` at 0.12 / 0.10 $/kWh like its neighbours);
``grid_only``
    the same battery on ``self_consumption`` and no market at all.

and, as the ceiling, ``grid_optimum``: the battery's perfect-foresight optimum against the grid (a linear
program, :mod:`trexsim.training.optimum`), with the share of the rule-to-optimum gap the agent closes.

Metrics per household and day (all from integer-Wh meter data):

* ``bill_usd``: what the household paid for the day, market and grid, less what it earned;
* ``self_sufficiency``: the share of its load not drawn from the grid,
  ``max(0, 1 - grid_import_wh / load_wh)`` (own PV, own battery and the local market count as local);
* ``battery_cycles``: equivalent full cycles, ``(charge_wh + discharge_wh) / (2 x capacity_wh)``
  at the meter;
* ``stored_change_wh``: stored energy at the end of the day less at its start (every episode starts
  at ``initial_soc``). A policy can lower its bill by leaving its battery emptier than the rule
  does, so ``bill_adjusted_usd`` also charges the energy taken out of (or credits the energy left
  in) the battery at ``value_per_kwh`` (default: the mean of the flat grid buy and sell prices; the
  same value training adds to an episode's last reward).

For the agent, the battery's energy at the meter of round k is what its meter netted beyond its
load and generation: ``(bought - sold + grid_import - grid_export) - load + generation``; the
delivery settlement makes that identity exact (see :mod:`trexsim.engine.delivery`). Load and
generation are the household's profile, which depends only on the seed, its id and the time.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from trexsim.config.schema import SimulationConfig
from trexsim.training.env import config_on_date

__all__ = ["Trace", "evaluate", "metrics", "run_agent", "run_rule", "write_report"]

POLICIES = ("grid_only", "rule", "agent")


@dataclass
class Trace:
    """One policy of the learner's household on one day, per round (Wh, $)."""

    policy: str
    date: str
    capacity_wh: float
    initial_stored_wh: float
    value_per_kwh: float
    load_wh: np.ndarray
    generation_wh: np.ndarray
    battery_charge_wh: np.ndarray
    battery_discharge_wh: np.ndarray
    stored_wh: np.ndarray  # after the round
    bought_wh: np.ndarray
    sold_wh: np.ndarray
    grid_import_wh: np.ndarray
    grid_export_wh: np.ndarray
    net_cost_usd: np.ndarray
    extra: dict = field(default_factory=dict)


def metrics(t: Trace) -> dict:
    load = int(t.load_wh.sum())
    imp = int(t.grid_import_wh.sum())
    charge, discharge = int(t.battery_charge_wh.sum()), int(t.battery_discharge_wh.sum())
    # per day: a merged trace (several days) holds each day's end less its start
    change = float(t.extra.get("stored_change_wh", t.stored_wh[-1] - t.initial_stored_wh if len(t.stored_wh) else 0.0))
    bill = float(t.net_cost_usd.sum())
    return {
        "bill_usd": round(bill, 6),
        "stored_change_wh": round(change, 3),
        "bill_adjusted_usd": round(bill - change * t.value_per_kwh / 1000.0, 6),
        "self_sufficiency": round(max(0.0, 1.0 - imp / load), 6) if load else None,
        "battery_cycles": round((charge + discharge) / (2 * t.capacity_wh), 6) if t.capacity_wh else 0.0,
        "load_wh": load,
        "generation_wh": int(t.generation_wh.sum()),
        "grid_import_wh": imp,
        "grid_export_wh": int(t.grid_export_wh.sum()),
        "market_bought_wh": int(t.bought_wh.sum()),
        "market_sold_wh": int(t.sold_wh.sum()),
        "battery_charge_wh": charge,
        "battery_discharge_wh": discharge,
    }


def _learner_key(config: SimulationConfig, learner: str) -> str:
    if learner not in config.participants or config.participants[learner].count != 1:
        raise ValueError(f"the learner {learner!r} must be a participant of its own (count 1) to be evaluated")
    return learner


def baseline_config(config: SimulationConfig, learner: str, trader: dict) -> SimulationConfig:
    """The community with the learner's household on a rule: ``trader`` and a self-consumption battery."""
    from trexsim.config import parse_config

    data = config.model_dump(mode="json", by_alias=False)
    spec = data["participants"][_learner_key(config, learner)]
    spec["trader"] = dict(trader)
    if spec.get("storage"):
        spec["storage"]["policy"] = "self_consumption"
    data["records"] = {**data.get("records", {}), "level": "summary", "plots": False}
    return parse_config(data)


def run_rule(config: SimulationConfig, learner: str, date, trader: dict, policy: str = "rule",
             value_per_kwh: float | None = None) -> Trace:
    """Run the day with the learner's household on a rule (a plain simulation, as ``trexsim run``)."""
    from trexsim.fabric import topics
    from trexsim.simulation import Simulation

    cfg = config_on_date(baseline_config(config, learner, trader), date)
    index = [pid for pid, _ in cfg.expanded_participants()].index(learner)
    rows: dict[str, list] = {k: [] for k in ("load_wh", "generation_wh", "battery_charge_wh", "battery_discharge_wh", "stored_wh")}
    rows.update({k: [] for k in ("bought_wh", "sold_wh", "grid_import_wh", "grid_export_wh", "net_cost_usd")})

    def on_meter(msg) -> None:
        j = int(np.flatnonzero(msg.participant == index)[0])
        for k, arr in (("load_wh", msg.load_wh), ("generation_wh", msg.generation_wh), ("battery_charge_wh", msg.battery_charge_wh),
                       ("battery_discharge_wh", msg.battery_discharge_wh), ("stored_wh", msg.battery_stored_wh)):
            rows[k].append(arr[j])

    def on_delivered(msg) -> None:
        i = index
        for k in ("bought_wh", "sold_wh", "grid_import_wh", "grid_export_wh"):
            rows[k].append(getattr(msg, k)[i])
        rows["net_cost_usd"].append(msg.market_cost_usd[i] - msg.market_revenue_usd[i] + msg.grid_cost_usd[i] - msg.grid_revenue_usd[i])

    with tempfile.TemporaryDirectory(prefix="trexsim-eval-") as tmp:
        sim = Simulation(cfg, tmp)
        sim.fabric.subscribe(topics.METER, on_meter)
        sim.fabric.subscribe(topics.DELIVERED, on_delivered)
        result = sim.run(plots=False)
    capacity, initial = _battery(cfg, learner)
    trace = Trace(policy, str(date), capacity, initial, _value(cfg, value_per_kwh), **{k: np.asarray(v) for k, v in rows.items()})
    trace.extra["summary_net_cost_usd"] = result.summary["participants"][learner]["net_cost"]
    return trace


def _battery(config: SimulationConfig, learner: str) -> tuple[float, float]:
    """Capacity and stored energy at the start of an episode, Wh (0, 0 without a battery)."""
    storage = config.participants[learner].storage
    return (storage.capacity_wh, storage.capacity_wh * storage.initial_soc) if storage else (0.0, 0.0)


def _value(config: SimulationConfig, value_per_kwh: float | None) -> float:
    from trexsim.training.config import default_energy_value_per_kwh

    return default_energy_value_per_kwh(config) if value_per_kwh is None else float(value_per_kwh)


def _profile_wh(config: SimulationConfig, learner: str) -> tuple[np.ndarray, np.ndarray]:
    """The learner's load and generation for every round of the study (its profile and devices alone)."""
    from trexsim.data.profiles import Clock, ProfileSet

    study = config.study
    rounds = study.rounds_per_episode
    clock = Clock(study.start_utc_s, study.interval_s, rounds, study.timezone)
    profiles = ProfileSet.of_participants([learner], [config.participants[learner]], clock, study.seed)
    load, gen = profiles.energy_wh(0, rounds)
    return load[:, 0], gen[:, 0]


def run_agent(config: SimulationConfig, learner: str, date, policy: Callable[[np.ndarray], np.ndarray],
              value_per_kwh: float | None = None, wrap: Callable | None = None) -> Trace:
    """Run the day with ``policy(observation) -> action`` driving the learner through the Gymnasium env
    (wrapped by ``wrap(env)`` when given, e.g. :class:`trexsim.training.env.ResidualOrders`)."""
    from trexsim.envs import gym_env

    cfg = config_on_date(config, date)
    _learner_key(cfg, learner)
    capacity, initial = _battery(cfg, learner)
    load, gen = _profile_wh(cfg, learner)
    rounds = cfg.study.rounds_per_episode
    cols = {k: np.zeros(rounds, dtype=np.int64) for k in ("bought_wh", "sold_wh", "grid_import_wh", "grid_export_wh")}
    cost = np.zeros(rounds)
    stored = np.zeros(rounds)
    clipped = 0
    env = gym_env(cfg, agent=learner)
    if wrap is not None:
        env = wrap(env)
    try:
        obs, _ = env.reset()
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(policy(obs))
            done = term or trunc
            k = info["delivered_round"]
            for name in cols:
                cols[name][k] = info[name]
            cost[k] = -info["net_profit_usd"]
            stored[k] = float(obs[6]) * capacity
            clipped += "clipped" in info
    finally:
        env.close()
    battery_wh = cols["bought_wh"] - cols["sold_wh"] + cols["grid_import_wh"] - cols["grid_export_wh"] - load + gen
    trace = Trace("agent", str(date), capacity, initial, _value(cfg, value_per_kwh), load, gen, np.maximum(battery_wh, 0), np.maximum(-battery_wh, 0), stored,
                  cols["bought_wh"], cols["sold_wh"], cols["grid_import_wh"], cols["grid_export_wh"], cost)
    trace.extra["clipped_actions"] = int(clipped)
    return trace


def grid_optimum(config: SimulationConfig, learner: str, date, value_per_kwh: float | None = None) -> dict:
    """The learner's perfect-foresight battery optimum against the grid on ``date``
    (:func:`trexsim.training.optimum.battery_optimum` on its profile, tariff and battery, the energy left at
    the end valued as the adjusted bills value it): the ceiling of a household trading with the grid alone.
    It is not a bound when the local market lets the household sell above (or buy below) the grid's prices."""
    from trexsim.devices.battery import BatteryBank
    from trexsim.engine.grid import tariff_prices
    from trexsim.training.optimum import battery_optimum

    cfg = config_on_date(config, date)
    study = cfg.study
    load, gen = _profile_wh(cfg, learner)
    starts = study.start_utc_s + np.arange(study.rounds_per_episode, dtype=np.int64) * study.interval_s
    buy, sell = tariff_prices(starts, study.timezone, cfg.market.grid)
    bank = BatteryBank(1, study.interval_s)
    storage = cfg.participants[learner].storage
    if storage is not None:
        bank.configure(0, storage.capacity_wh, storage.charge_power_w, storage.discharge_power_w, storage.efficiency,
                       storage.monthly_self_discharge, storage.initial_soc, True)
    value = _value(cfg, value_per_kwh)
    initial = float(bank.stored_wh[0])
    opt = battery_optimum(np.rint(load), np.rint(gen), buy, sell, capacity_wh=float(bank.capacity_wh[0]),
                          charge_limit_wh=float(bank.charge_limit_wh[0]), discharge_limit_wh=float(bank.discharge_limit_wh[0]),
                          efficiency=float(bank.efficiency[0]) if storage is not None else 1.0,
                          retention=float(bank.retention[0]) if storage is not None else 1.0, initial_wh=initial,
                          value_per_kwh=value)
    change = float(opt.stored_wh[-1] - initial) if len(opt.stored_wh) else 0.0
    return {"bill_usd": round(opt.cost_usd, 6), "stored_change_wh": round(change, 3),
            "bill_adjusted_usd": round(opt.cost_usd - change * value / 1000.0, 6)}


def evaluate(config: SimulationConfig, learner: str, days: list[str], policy: Callable[[np.ndarray], np.ndarray],
             rule_trader: dict, value_per_kwh: float | None = None, wrap: Callable | None = None) -> tuple[dict, list[Trace]]:
    """Every policy on every held-out day: the report (per day and in total) and the traces.

    The verdict compares the adjusted bills (end-of-day battery energy valued); the plain bills too.
    """
    traces: list[Trace] = []
    for day in days:
        traces.append(run_rule(config, learner, day, {"type": "grid_only"}, policy="grid_only", value_per_kwh=value_per_kwh))
        traces.append(run_rule(config, learner, day, rule_trader, policy="rule", value_per_kwh=value_per_kwh))
        traces.append(run_agent(config, learner, day, policy, value_per_kwh=value_per_kwh, wrap=wrap))
    per_day = {day: {t.policy: metrics(t) for t in traces if t.date == day} for day in days}
    totals = {}
    for p in POLICIES:
        ts = [t for t in traces if t.policy == p]
        merged = Trace(p, "all", ts[0].capacity_wh, ts[0].initial_stored_wh, ts[0].value_per_kwh, *[np.concatenate([getattr(t, k) for t in ts]) for k in (
            "load_wh", "generation_wh", "battery_charge_wh", "battery_discharge_wh", "stored_wh", "bought_wh", "sold_wh",
            "grid_import_wh", "grid_export_wh", "net_cost_usd")])
        merged.extra["stored_change_wh"] = sum(float(t.stored_wh[-1] - t.initial_stored_wh) for t in ts)
        totals[p] = metrics(merged)
    # the ceiling: the battery's perfect-foresight optimum against the grid, each day
    optimum_days = {day: grid_optimum(config, learner, day, value_per_kwh) for day in days}
    optimum = {"per_day": optimum_days, "total": {k: round(sum(optimum_days[d][k] for d in days), 6)
                                                  for k in ("bill_usd", "stored_change_wh", "bill_adjusted_usd")}}
    agent, rule, grid = (totals[p]["bill_adjusted_usd"] for p in ("agent", "rule", "grid_only"))
    from trexsim.training.optimum import gap_closed

    closed = gap_closed(agent, rule, optimum["total"]["bill_adjusted_usd"])
    raw_agent, raw_rule = totals["agent"]["bill_usd"], totals["rule"]["bill_usd"]
    wins = sum(per_day[d]["agent"]["bill_adjusted_usd"] < per_day[d]["rule"]["bill_adjusted_usd"] for d in days)
    verdict = {
        "value_per_kwh": traces[0].value_per_kwh,
        "agent_minus_rule_bill_adjusted_usd": round(agent - rule, 6),
        "agent_minus_rule_bill_adjusted_pct": round(100 * (agent - rule) / abs(rule), 3) if rule else None,
        "rule_minus_grid_only_bill_adjusted_usd": round(rule - grid, 6),
        "days_agent_cheaper_than_rule": int(wins),
        "days": len(days),
        "agent_beats_rule": bool(agent < rule),
        "agent_minus_rule_bill_usd": round(raw_agent - raw_rule, 6),
        "agent_beats_rule_unadjusted": bool(raw_agent < raw_rule),
        "clipped_actions": int(sum(t.extra.get("clipped_actions", 0) for t in traces)),
        # the share of the rule-to-grid-optimum gap the agent closed (1: the optimum; None: no gap); with a
        # market that pays more than the grid the rule can beat the grid optimum, and the share means little
        "rule_minus_grid_optimum_bill_adjusted_usd": round(rule - optimum["total"]["bill_adjusted_usd"], 6),
        "gap_closed_vs_grid_optimum": None if closed is None else round(closed, 6),
    }
    return {"days": list(days), "totals": totals, "per_day": per_day, "grid_optimum": optimum, "verdict": verdict}, traces


def write_report(out_dir: Path, report: dict, traces: list[Trace], monitor_dir: Path | None = None) -> list[Path]:
    """report.json, eval_traces.csv and the figures (bill per day, SoC on the first day, learning curve)."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    frames = []
    for t in traces:
        frames.append(pd.DataFrame({"date": t.date, "policy": t.policy, "round": np.arange(len(t.load_wh)),
                                    **{k: getattr(t, k) for k in ("load_wh", "generation_wh", "battery_charge_wh",
                                                                 "battery_discharge_wh", "stored_wh", "bought_wh", "sold_wh",
                                                                 "grid_import_wh", "grid_export_wh", "net_cost_usd")}}))
    pd.concat(frames).to_csv(out_dir / "eval_traces.csv", index=False, float_format="%.6g")
    return plot_report(out_dir, report, traces, monitor_dir)


def plot_report(out_dir: Path, report: dict, traces: list[Trace], monitor_dir: Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = out_dir / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    paths = []
    colors = {"grid_only": "#999999", "rule": "#1f77b4", "agent": "#d62728"}
    days = report["days"]
    fig, ax = plt.subplots(figsize=(min(10.0, max(5.0, 0.75 * len(days) + 2.5)), 3.4))
    width = 0.27
    for j, p in enumerate(POLICIES):
        ax.bar(np.arange(len(days)) + (j - 1) * width, [report["per_day"][d][p]["bill_adjusted_usd"] for d in days], width,
               label=p.replace("_", "-"), color=colors[p])
    ax.set_xticks(np.arange(len(days)), [d[5:] for d in days])
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("bill of the day, $")
    ax.set_title("Learner's household on held-out days\n(adjusted bill: battery energy left at the end valued)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(figs / "bills.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    first = days[0]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for t in traces:
        if t.date == first and t.capacity_wh:
            ax.plot(np.arange(len(t.stored_wh)) + 1, 100 * t.stored_wh / t.capacity_wh, label=t.policy.replace("_", "-"),
                    color=colors[t.policy], lw=1.4 if t.policy == "agent" else 1.0)
    t0 = next(t for t in traces if t.date == first)
    ax2 = ax.twinx()
    ax2.fill_between(np.arange(len(t0.load_wh)), t0.generation_wh, color="#f2c14e", alpha=0.3, step="post", label="PV")
    ax2.step(np.arange(len(t0.load_wh)), t0.load_wh, where="post", color="#555555", lw=0.6, label="load")
    ax2.set_ylabel("Wh per round")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_ylim(0, 100)
    ax.set_xlabel("round")
    ax.set_ylabel("battery state of charge, %")
    ax.set_title(f"Battery on {first}")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    fig.tight_layout()
    paths.append(figs / "soc.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    curve = learning_curve(monitor_dir) if monitor_dir is not None else None
    if curve is not None and len(curve):
        steps, reward = curve
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(steps, reward, ".", ms=2, color="#aaaaaa", label="episode")
        k = max(1, len(reward) // 20)
        if len(reward) >= k:
            smooth = np.convolve(reward, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, color="#d62728", label=f"mean of {k}")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("episode return")
        ax.set_title("Training episodes")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(figs / "learning_curve.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def learning_curve(monitor_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Cumulative steps and return of every finished training episode, from SB3 Monitor files."""
    import pandas as pd

    files = sorted(Path(monitor_dir).glob("*.monitor.csv"))
    if not files:
        return None
    df = pd.concat([pd.read_csv(f, skiprows=1) for f in files]).sort_values("t")
    if df.empty:
        return None
    return df["l"].cumsum().to_numpy(), df["r"].to_numpy()
