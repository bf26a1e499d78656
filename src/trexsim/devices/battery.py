"""Batteries of a whole population as arrays.

Model (per battery): usable capacity [Wh], charge and discharge power limits [W], one-way
efficiency ``eta`` applied to the stored energy (a charge of ``c`` Wh at the meter stores
``eta * c``; a discharge of ``d`` Wh at the meter draws ``d / eta``; round trip ``eta**2``),
and self-discharge given per 30 days, applied each round as a retention factor
``(1 - monthly) ** (interval_s / 2_592_000)``. Energies at the meter are whole Wh, the
stored energy is real-valued, and it never leaves ``[0, capacity]``.

(TREX-Core's battery let the state of charge exceed capacity and applied efficiency only
to its limits; this model does neither.)
"""

from __future__ import annotations

import numba
import numpy as np

SECONDS_PER_30_DAYS = 30 * 86400


def max_charge_wh(stored_wh, capacity_wh, charge_limit_wh, efficiency):
    """Largest whole-Wh charge at the meter this round [Wh]."""
    room = np.maximum(capacity_wh - stored_wh, 0.0) / efficiency
    return np.floor(np.minimum(charge_limit_wh, room) + 1e-9).astype(np.int64)


def max_discharge_wh(stored_wh, discharge_limit_wh, efficiency):
    """Largest whole-Wh discharge at the meter this round [Wh]."""
    return np.floor(np.minimum(discharge_limit_wh, stored_wh * efficiency) + 1e-9).astype(np.int64)


def self_consumption_dispatch(residual_wh, max_charge, max_discharge):
    """Charge from surplus, discharge to cover need.

    ``residual_wh`` is the energy the household still needs (+) or has to spare (-) after
    its own generation and its market position; returns ``(charge_wh, discharge_wh)``.
    """
    discharge = np.minimum(np.maximum(residual_wh, 0), max_discharge)
    charge = np.minimum(np.maximum(-residual_wh, 0), max_charge)
    return charge.astype(np.int64), discharge.astype(np.int64)


def step_stored_wh(stored_wh, charge_wh, discharge_wh, efficiency, retention, capacity_wh):
    """Stored energy after one round: charge, discharge, then self-discharge [Wh]."""
    stored = (stored_wh + charge_wh * efficiency - discharge_wh / efficiency) * retention
    # limits above keep this inside [0, capacity]; clip only float rounding residue
    return np.clip(stored, 0.0, capacity_wh)


@numba.njit(cache=True, nogil=True)
def dispatch_and_step(residual_wh, stored_wh, capacity_wh, charge_limit_wh, discharge_limit_wh, efficiency, retention, active):
    """Self-consumption dispatch and one round of battery physics, fused (one pass, no temporaries).

    Same rules as :func:`max_charge_wh`, :func:`max_discharge_wh`,
    :func:`self_consumption_dispatch` and :func:`step_stored_wh` combined; returns
    ``(charge_wh, discharge_wh, stored_after_wh)``.
    """
    n = residual_wh.size
    charge = np.zeros(n, dtype=np.int64)
    discharge = np.zeros(n, dtype=np.int64)
    after = np.empty(n, dtype=np.float64)
    for i in range(n):
        s = stored_wh[i]
        if active[i] and capacity_wh[i] > 0.0:
            r = residual_wh[i]
            eta = efficiency[i]
            if r > 0:
                lim = min(discharge_limit_wh[i], s * eta)
                d = np.int64(np.floor(lim + 1e-9))
                if d > r:
                    d = r
                discharge[i] = d
                s = s - d / eta
            elif r < 0:
                room = capacity_wh[i] - s
                if room < 0.0:
                    room = 0.0
                lim = min(charge_limit_wh[i], room / eta)
                c = np.int64(np.floor(lim + 1e-9))
                if c > -r:
                    c = -r
                charge[i] = c
                s = s + c * eta
        s = s * retention[i]
        if s < 0.0:
            s = 0.0
        elif s > capacity_wh[i]:
            s = capacity_wh[i]
        after[i] = s
    return charge, discharge, after


@numba.njit(cache=True, nogil=True)
def spare_discharge_wh(stored_wh, discharge_limit_wh, efficiency, planned_discharge_wh, active):
    """What each battery could still deliver in a round beyond its planned discharge [Wh, whole]:
    the largest discharge at the meter from ``stored_wh`` (:func:`max_discharge_wh`) less the plan;
    0 for batteries not on self-consumption (``active`` False)."""
    n = stored_wh.size
    spare = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if active[i]:
            spare[i] = np.int64(np.floor(min(discharge_limit_wh[i], stored_wh[i] * efficiency[i]) + 1e-9)) \
                - planned_discharge_wh[i]
    return spare


@numba.njit(cache=True, nogil=True)
def stored_after_committed(load_wh, generation_wh, bought_wh, sold_wh, keep_plan, plan_delta_wh, stored_wh, capacity_wh,
                           charge_limit_wh, discharge_limit_wh, efficiency, retention, active):
    """The stored energy a coming round will leave [Wh], from its forecast and what is already
    committed for it.

    The battery will cover what the round's contracts leave uncovered (the meter's rule,
    :func:`meter_round`), so energy already sold for that round — a battery's spare discharge
    sold in the dispatchable pool, say — is counted before the same energy is offered again for
    a later round. Where ``keep_plan`` is set (batteries that follow set-points from outside) the
    planned change ``plan_delta_wh`` is used instead.
    """
    n = load_wh.size
    need = np.empty(n, dtype=np.int64)
    for i in range(n):
        need[i] = load_wh[i] - generation_wh[i] - (bought_wh[i] - sold_wh[i])
    _, _, after = dispatch_and_step(need, stored_wh, capacity_wh, charge_limit_wh, discharge_limit_wh, efficiency,
                                    retention, active)
    for i in range(n):
        if keep_plan[i]:
            s = stored_wh[i] + plan_delta_wh[i]
            after[i] = min(max(s, 0.0), capacity_wh[i])
    return after


@numba.njit(cache=True, nogil=True)
def meter_round(load_wh, generation_wh, bought_wh, sold_wh, setpoint_mask, setpoint_wh, stored_wh, shadow_stored_wh,
                capacity_wh, charge_limit_wh, discharge_limit_wh, efficiency, retention, active):
    """One round of a population's batteries and meters.

    The battery covers the need beyond own PV and the contracted position (load - generation -
    (bought - sold)), except where ``setpoint_mask`` is set: there it follows ``setpoint_wh`` from
    outside (+ charge). A shadow battery runs the policy with no market at all, for the grid-only
    bill. Both through :func:`dispatch_and_step`. Returns ``(charge_wh, discharge_wh,
    stored_after_wh, shadow_after_wh, grid_only_net_wh)``.
    """
    n = load_wh.size
    need = np.empty(n, dtype=np.int64)
    residual = np.empty(n, dtype=np.int64)
    for i in range(n):
        residual[i] = load_wh[i] - generation_wh[i]
        # a set-point of +x Wh (charge) is a need of -x for the dispatch kernel
        need[i] = -setpoint_wh[i] if setpoint_mask[i] else residual[i] - (bought_wh[i] - sold_wh[i])
    charge, discharge, after = dispatch_and_step(need, stored_wh, capacity_wh, charge_limit_wh, discharge_limit_wh,
                                                 efficiency, retention, active)
    c0, d0, shadow_after = dispatch_and_step(residual, shadow_stored_wh, capacity_wh, charge_limit_wh,
                                             discharge_limit_wh, efficiency, retention, active)
    grid_only_net = np.empty(n, dtype=np.int64)
    for i in range(n):
        grid_only_net[i] = residual[i] + c0[i] - d0[i]
    return charge, discharge, after, shadow_after, grid_only_net


@numba.njit(cache=True, nogil=True)
def plan_round(load_wh, generation_wh, stored_wh, capacity_wh, charge_limit_wh, discharge_limit_wh, efficiency,
               retention, active):
    """The self-consumption plan for a delivery round from forecasts and the expected stored energy.

    Returns ``(planned_battery_wh, planned_net_wh, stored_after_wh)``: the battery's planned energy
    at the meter (+ charge), the household's planned net energy (+ import) and the stored energy
    the plan leaves.
    """
    n = load_wh.size
    residual = np.empty(n, dtype=np.int64)
    for i in range(n):
        residual[i] = load_wh[i] - generation_wh[i]
    charge, discharge, after = dispatch_and_step(residual, stored_wh, capacity_wh, charge_limit_wh, discharge_limit_wh,
                                                 efficiency, retention, active)
    planned_battery = charge - discharge
    return planned_battery, residual + planned_battery, after


class BatteryBank:
    """All batteries of a population; members without a battery have zero capacity."""

    def __init__(self, n: int, interval_s: int):
        self.n = n
        self.interval_s = interval_s
        self.capacity_wh = np.zeros(n)
        self.charge_limit_wh = np.zeros(n)
        self.discharge_limit_wh = np.zeros(n)
        self.efficiency = np.ones(n)
        self.retention = np.ones(n)
        self.initial_soc = np.zeros(n)
        self.self_consumption = np.zeros(n, dtype=bool)
        self.stored_wh = np.zeros(n)

    def configure(self, i: int, capacity_wh, charge_power_w, discharge_power_w, efficiency, monthly_self_discharge, initial_soc, self_consumption: bool) -> None:
        hours = self.interval_s / 3600.0
        self.capacity_wh[i] = capacity_wh
        self.charge_limit_wh[i] = charge_power_w * hours
        self.discharge_limit_wh[i] = discharge_power_w * hours
        self.efficiency[i] = efficiency
        self.retention[i] = (1.0 - monthly_self_discharge) ** (self.interval_s / SECONDS_PER_30_DAYS)
        self.initial_soc[i] = initial_soc
        self.self_consumption[i] = self_consumption
        self.stored_wh[i] = initial_soc * capacity_wh

    @property
    def has_battery(self) -> np.ndarray:
        return self.capacity_wh > 0

    def reset(self) -> None:
        self.stored_wh = self.initial_soc * self.capacity_wh

    def limits(self, stored_wh: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        stored = self.stored_wh if stored_wh is None else stored_wh
        return (
            max_charge_wh(stored, self.capacity_wh, self.charge_limit_wh, self.efficiency),
            max_discharge_wh(stored, self.discharge_limit_wh, self.efficiency),
        )

    def dispatch(self, residual_wh: np.ndarray, stored_wh: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Self-consumption dispatch for members whose policy is self_consumption."""
        max_c, max_d = self.limits(stored_wh)
        c, d = self_consumption_dispatch(residual_wh, max_c, max_d)
        c[~self.self_consumption] = 0
        d[~self.self_consumption] = 0
        return c, d

    def dispatch_step(self, residual_wh: np.ndarray, stored_wh: np.ndarray | None = None):
        """``(charge_wh, discharge_wh, stored_after_wh)`` of a self-consumption round."""
        stored = self.stored_wh if stored_wh is None else stored_wh
        return dispatch_and_step(np.ascontiguousarray(residual_wh, dtype=np.int64), stored, self.capacity_wh,
                                 self.charge_limit_wh, self.discharge_limit_wh, self.efficiency, self.retention,
                                 self.self_consumption)

    def next_stored(self, charge_wh, discharge_wh, stored_wh: np.ndarray | None = None) -> np.ndarray:
        stored = self.stored_wh if stored_wh is None else stored_wh
        return step_stored_wh(stored, charge_wh, discharge_wh, self.efficiency, self.retention, self.capacity_wh)
