"""The perfect-foresight optimum of a household's battery against the grid: the ceiling of a benchmark.

A learned battery trader is worth what it closes of the gap between the rule it replaces (the battery on
self-consumption) and the best any policy could do. With the day's load, PV and prices known in advance,
the best is a linear program (solved by HiGHS through SciPy), over the rounds ``t = 0 .. T-1``:

    minimise   sum_t (buy_t * import_t - sell_t * export_t) / 1000                        [$]
    subject to import_t - export_t = load_t - generation_t + charge_t - discharge_t       [Wh, the meter]
               stored_t = retention * (stored_{t-1} + efficiency * charge_t - discharge_t / efficiency)
               0 <= charge_t <= charge limit, 0 <= discharge_t <= discharge limit,
               0 <= stored_t <= capacity, import_t, export_t >= 0, stored_{-1} = initial,

the battery model of ``trexsim.devices.battery`` (one-way ``efficiency`` at the meter, then the round's
self-discharge), minus ``value_per_kwh * stored_{T-1} / 1000`` when the energy left at the end is worth
something (default 0, the episode's last round ends the account). Energies are continuous, so the optimum
is a bound on every whole-Wh policy; with ``buy_t >= sell_t`` (no money pump, which trexsim's tariffs
guarantee) it never imports and exports in the same round to gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trexsim.errors import TrexsimError


@dataclass(frozen=True)
class BatteryOptimum:
    """The optimal schedule: per round ``(T,)`` arrays [Wh], and its bill [$] (imports less exports; the
    value of the energy left at the end is not in it)."""

    cost_usd: float
    charge_wh: np.ndarray
    discharge_wh: np.ndarray
    stored_wh: np.ndarray          # after each round
    import_wh: np.ndarray
    export_wh: np.ndarray


def battery_optimum(load_wh, generation_wh, buy_price, sell_price, *, capacity_wh: float, charge_limit_wh: float,
                    discharge_limit_wh: float, efficiency: float = 1.0, retention: float = 1.0,
                    initial_wh: float = 0.0, value_per_kwh: float = 0.0) -> BatteryOptimum:
    """Solve the household's battery LP (module docstring). Prices in $/kWh per round; limits per round [Wh]."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_array

    load = np.asarray(load_wh, dtype=np.float64).ravel()
    gen = np.asarray(generation_wh, dtype=np.float64).ravel()
    T = load.size
    buy = np.broadcast_to(np.asarray(buy_price, dtype=np.float64), (T,))
    sell = np.broadcast_to(np.asarray(sell_price, dtype=np.float64), (T,))
    if gen.size != T:
        raise TrexsimError(f"battery_optimum: {T} rounds of load but {gen.size} of generation")
    if not (0 < efficiency <= 1 and 0 < retention <= 1):
        raise TrexsimError("battery_optimum: efficiency and retention must be in (0, 1]")
    if np.any(buy < sell):
        raise TrexsimError("battery_optimum: a round's buy price is below its sell price (a money pump)")
    # variables: charge, discharge, import, export, stored; each T long
    c, d, imp, exp, s = (np.arange(T) + k * T for k in range(5))
    cost = np.concatenate([np.zeros(2 * T), buy / 1000.0, -sell / 1000.0, np.zeros(T)])
    cost[s[-1]] -= value_per_kwh / 1000.0
    rows, cols, vals = [], [], []

    def put(row, col, value):
        rows.append(row)
        cols.append(col)
        vals.append(np.broadcast_to(value, np.shape(row)).astype(np.float64))

    t = np.arange(T)
    # the meter: import - export - charge + discharge = load - generation
    put(t, imp, 1.0), put(t, exp, -1.0), put(t, c, -1.0), put(t, d, 1.0)
    # the battery: stored_t - retention * stored_{t-1} - retention * eff * charge_t + retention / eff * discharge_t = 0
    put(T + t, s, 1.0)
    put(T + t[1:], s[:-1], -retention)
    put(T + t, c, -retention * efficiency), put(T + t, d, retention / efficiency)
    a_eq = coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(2 * T, 5 * T))
    b_eq = np.concatenate([load - gen, np.zeros(T)])
    b_eq[T] = retention * initial_wh
    bounds = ([(0, charge_limit_wh)] * T + [(0, discharge_limit_wh)] * T + [(0, None)] * (2 * T)
              + [(0, capacity_wh)] * T)
    res = linprog(cost, A_eq=a_eq.tocsr(), b_eq=b_eq, bounds=bounds, method="highs")
    if res.status != 0:
        raise TrexsimError(f"battery_optimum: the LP was not solved ({res.message})")
    x = res.x
    return BatteryOptimum(float(res.fun + value_per_kwh * x[s[-1]] / 1000.0), x[c], x[d], x[s], x[imp], x[exp])


def gap_closed(policy_cost_usd: float, rule_cost_usd: float, optimum_cost_usd: float) -> float | None:
    """The share of the rule-to-optimum gap a policy closes: 1 at the optimum, 0 at the rule, negative when
    worse than the rule; None when the rule is already optimal (no gap to close)."""
    gap = rule_cost_usd - optimum_cost_usd
    if gap <= 1e-12:
        return None
    return (rule_cost_usd - policy_cost_usd) / gap


__all__ = ["BatteryOptimum", "battery_optimum", "gap_closed"]
