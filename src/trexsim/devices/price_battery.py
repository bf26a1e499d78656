"""A price-reactive battery behind each household's meter, as arrays: charge when cheap, discharge when dear.

Given one published price schedule (one price per round of a horizon), each battery sets two thresholds
from the schedule and its own size:

- ``n_dis`` = rounds it takes to empty a full battery at full discharge power; it may discharge in a round
  whose price is among the ``n_dis`` highest of the horizon (``price >= p_dis``) and above the horizon's
  lowest price;
- ``n_ch`` = rounds it takes to fill an empty battery at full charge power; it charges from the grid at full
  power in a round whose price is among the ``n_ch`` lowest (``price <= p_ch``), below the horizon's highest,
  and low enough to pay for the round trip (``price < p_dis * efficiency**2``).

Then, round by round: in a discharge round it covers the household's net import (load - PV) up to its
power and energy, never exporting; in a charge round it charges at full power; in any other round it
stores surplus PV, and covers net import only from energy above a reserve: what the discharge rounds
still ahead in the horizon will draw (their net import, up to the power limit). A horizon whose prices
are all equal gives no signal, and the battery runs plain self-consumption (cover net import, store surplus).

**Proportional response** (``band_per_kwh`` = b > 0). The thresholds above make the battery's energy jump
when a price crosses one, so a TC price iteration over it has no fixed point to find. The proportional rule
replaces each threshold by a linear ramp b $/kWh wide: a round calls for discharge with weight
``w_d = σ ramp((p - p_dis) / b + 1) ramp((p - p_min) / b)`` and for charging from the grid with
``w_c = σ ramp((p_ch - p) / b + 1) ramp((p_max - p) / b) ramp((p_dis η² - p) / b)`` (``ramp(x) = min(1,
max(0, x))``; ``σ = min(1, (p_max - p_min) / b)``, the schedule's signal; discharge first: ``w_c`` is
scaled by ``1 - w_d``). The round's set-point is the weighted mean of discharging to cover net import
(weight ``w_d``), charging at full power (``w_c``) and the rest (``1 - w_d - w_c``: self-consumption blended
by σ with the reserve-keeping rule), netted to one direction; the reserve counts each dear round ahead by its
``w_d``. Continuous in the prices; with b = 0 it is the threshold rule exactly.

Limits, per round: charge <= ``charge_limit_wh``, discharge <= ``discharge_limit_wh``, never both, stored
energy within ``[0, capacity_wh]``; same physics as ``trexsim.devices.battery`` (one-way efficiency on the
stored energy, self-discharge as a retention factor per round). Energies in Wh per round (floats).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from trexsim.devices.battery import BatteryBank

PRICE_TOL = 1e-12


@numba.njit(cache=True, nogil=True)
def _ramp(x):
    return min(1.0, max(0.0, x))


@numba.njit(cache=True, nogil=True)
def _weights(p, pmin, pmax, p_dis, p_ch, eta, signal, band):
    """How far round price ``p`` calls for discharging and for charging from the grid, each in [0, 1]:
    indicators of the thresholds with ``band`` 0, linear ramps ``band`` $/kWh wide otherwise."""
    if band <= 0.0:
        if signal <= 0.0:
            return 0.0, 0.0
        dis = 1.0 if (p >= p_dis - PRICE_TOL and p > pmin + PRICE_TOL) else 0.0
        ch = 1.0 if (p <= p_ch + PRICE_TOL and p < pmax - PRICE_TOL and p < p_dis * eta * eta - PRICE_TOL) else 0.0
        return dis, ch
    dis = signal * _ramp((p - p_dis) / band + 1.0) * _ramp((p - pmin) / band)
    ch = signal * _ramp((p_ch - p) / band + 1.0) * _ramp((pmax - p) / band) * _ramp((p_dis * eta * eta - p) / band)
    return dis, ch


@numba.njit(cache=True, nogil=True)
def _thresholds(asc, cap, eta, charge_limit_wh, discharge_limit_wh):
    """``(p_dis, p_ch)`` from the ascending prices ``asc`` of a horizon: the ``n_dis``-th highest and the
    ``n_ch``-th lowest, with ``n_dis`` / ``n_ch`` the rounds a full discharge / charge takes."""
    R = asc.size
    n_dis = R if discharge_limit_wh <= 0 else min(R, max(1, int(math.ceil(cap * eta / discharge_limit_wh - 1e-9))))
    n_ch = R if charge_limit_wh <= 0 else min(R, max(1, int(math.ceil(cap / eta / charge_limit_wh - 1e-9))))
    return asc[R - n_dis], asc[n_ch - 1]


def battery_thresholds(price_per_kwh: np.ndarray, bank: BatteryBank) -> tuple[np.ndarray, np.ndarray]:
    """``(p_dis, p_ch)`` [$/kWh] per battery of ``bank`` for one horizon's prices (one per round), as the
    threshold rule above sets them: discharge among the ``n_dis`` dearest rounds, charge among the ``n_ch``
    cheapest. Used by the TC double auction's bids (``trexsim.tc.auction``)."""
    asc = np.sort(np.asarray(price_per_kwh, dtype=np.float64))
    p_dis = np.empty(bank.n)
    p_ch = np.empty(bank.n)
    for i in range(bank.n):
        p_dis[i], p_ch[i] = _thresholds(asc, bank.capacity_wh[i], bank.efficiency[i], bank.charge_limit_wh[i],
                                        bank.discharge_limit_wh[i])
    return p_dis, p_ch


@numba.njit(cache=True, nogil=True)
def _dispatch(net_wh, price, stored0, capacity_wh, charge_limit_wh, discharge_limit_wh, efficiency, retention, active,
              band):
    R, N = net_wh.shape
    charge = np.zeros((R, N))
    discharge = np.zeros((R, N))
    stored_after = np.zeros((R, N))
    asc = np.sort(price)
    pmin, pmax = asc[0], asc[R - 1]
    if band > 0.0:
        signal = min(1.0, (pmax - pmin) / band)
    else:
        signal = 0.0 if pmax - pmin <= PRICE_TOL else 1.0
    for i in range(N):
        s = stored0[i]
        eta = efficiency[i]
        cap = capacity_wh[i]
        if not active[i] or cap <= 0.0:
            for r in range(R):
                s = s * retention[i]
                stored_after[r, i] = s
            continue
        p_dis, p_ch = _thresholds(asc, cap, eta, charge_limit_wh[i], discharge_limit_wh[i])
        # energy to keep for the discharge rounds still ahead: what they will need, from round r + 1 on
        reserve = np.zeros(R)
        ahead = 0.0
        for r in range(R - 1, -1, -1):
            reserve[r] = min(ahead, cap)
            if net_wh[r, i] > 0.0:
                w_dis, _ = _weights(price[r], pmin, pmax, p_dis, p_ch, eta, signal, band)
                ahead += w_dis * min(net_wh[r, i], discharge_limit_wh[i]) / eta
        for r in range(R):
            need = net_wh[r, i]
            max_c = min(charge_limit_wh[i], max(cap - s, 0.0) / eta)
            max_d = min(discharge_limit_wh[i], s * eta)
            w_dis, w_ch = _weights(price[r], pmin, pmax, p_dis, p_ch, eta, signal, band)
            if need <= 0.0:
                w_dis = 0.0
            w_ch *= 1.0 - w_dis        # discharging into a dear round comes first, then charging from the grid
            w_rest = 1.0 - w_dis - w_ch
            # the rest: self-consumption where the schedule gives no signal; with one, surplus PV is stored and
            # net import covered only from energy above the reserve the dear rounds ahead need
            c_rest = min(-need, max_c) if need < 0.0 else 0.0
            d_flat = min(need, max_d) if need > 0.0 else 0.0
            d_signal = min(need, max_d, (s - reserve[r]) * eta) if (need > 0.0 and s > reserve[r]) else 0.0
            d_rest = (1.0 - signal) * d_flat + signal * d_signal
            c = w_ch * max_c + w_rest * c_rest
            d = w_dis * min(need, max_d) + w_rest * d_rest
            if c > 0.0 and d > 0.0:  # (only where ramps overlap) one set-point: the net of the two
                c, d = max(c - d, 0.0), max(d - c, 0.0)
            s = (s + c * eta - d / eta) * retention[i]
            if s < 0.0:
                s = 0.0
            elif s > cap:
                s = cap
            charge[r, i] = c
            discharge[r, i] = d
            stored_after[r, i] = s
    return charge, discharge, stored_after


def price_battery_dispatch(net_wh: np.ndarray, price_per_kwh: np.ndarray, stored_wh: np.ndarray, capacity_wh,
                           charge_limit_wh, discharge_limit_wh, efficiency, retention, active=None,
                           band_per_kwh: float = 0.0):
    """``(charge_wh, discharge_wh, stored_after_wh)``, each (rounds, households), over one horizon.

    band_per_kwh: 0 for the threshold rule, > 0 for the proportional one (see the module doc).

    net_wh: (rounds, households) load - generation before the battery, Wh per round; price_per_kwh: the
    horizon's schedule, one per round; stored_wh: energy stored at the horizon's start; the rest per battery.
    """
    net = np.ascontiguousarray(net_wh, dtype=np.float64)
    price = np.ascontiguousarray(price_per_kwh, dtype=np.float64)
    if net.ndim != 2 or price.shape != (net.shape[0],):
        raise ValueError("net_wh must be (rounds, households) and price_per_kwh one price per round")
    n = net.shape[1]

    def arr(x):
        return np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)))

    act = np.ones(n, dtype=np.bool_) if active is None else np.ascontiguousarray(np.broadcast_to(active, (n,)), dtype=np.bool_)
    if net.shape[0] == 0:
        z = np.zeros((0, n))
        return z, z.copy(), z.copy()
    if band_per_kwh < 0:
        raise ValueError("band_per_kwh must be >= 0")
    return _dispatch(net, price, arr(stored_wh), arr(capacity_wh), arr(charge_limit_wh), arr(discharge_limit_wh),
                     arr(efficiency), arr(retention), act, float(band_per_kwh))


def dispatch_bank(bank: BatteryBank, net_wh: np.ndarray, price_per_kwh: np.ndarray, stored_wh: np.ndarray | None = None,
                  active: np.ndarray | None = None, band_per_kwh: float = 0.0):
    """``price_battery_dispatch`` with the sizes of a ``BatteryBank`` (as configured from ``storage``)."""
    stored = bank.stored_wh if stored_wh is None else stored_wh
    return price_battery_dispatch(net_wh, price_per_kwh, stored, bank.capacity_wh, bank.charge_limit_wh,
                                  bank.discharge_limit_wh, bank.efficiency, bank.retention,
                                  bank.has_battery if active is None else active, band_per_kwh)
