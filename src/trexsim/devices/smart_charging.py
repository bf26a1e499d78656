"""Charging sessions placed in the cheap rounds of a price schedule, all sessions at once (a Numba kernel).

A session j is a window of rounds of the span (``lo[j]`` .. ``hi[j] - 1``), what the charger can put in each
of them, ``cap_r`` Wh (its power times the part of the round the car is plugged in), and the energy ``E`` the
session still needs, Wh. Its answer to the prices ``p_r`` of its window, with ``Δ = max p - min p``:

- the reference ``ref_r``: ``E`` as soon as possible (each round filled to its cap from the first): what the
  car does without a price signal (``charging: "scheduled"`` from its arrival);
- the target ``target_r``:

  - all-or-nothing (``band_per_kwh`` b = 0): the cheapest rounds filled to their cap first (price order,
    the earlier round first among equal prices);
  - proportional (b > 0): ``target_r = min(cap_r, λ cap_r w_r)`` with ``w_r = exp(-(p_r - min p) / b)``
    and ``λ`` such that the rounds add up to ``E`` (water-filling: what a capped round cannot take goes to
    the others in the same proportions): a logit response, continuous in the prices, a round b $/kWh dearer
    than the cheapest getting e⁻¹ of the cheapest's weight per Wh of cap;
- the answer ``new_r = ref_r + β (target_r - ref_r)``, ``β = min(1, Δ / b)`` (b = 0: 1 where the prices
  differ at all, else 0): a flat window moves nothing, and the answer is continuous in the prices when b > 0,
  which the TC fixed point needs (as the proportional flexible load: ``trexsim.devices.flexible_load``).

Both ``ref`` and ``target`` keep every round within its cap and add up to ``E``, so ``new`` does too. The
answer is made whole Wh on its running sum (``floor(x + 0.5)``, which an integer cap passes unchanged, so a
full round is never above the charger's energy in it, and a part round at most within a Wh of it), so a
session's rounds add up to ``E`` exactly when ``E`` is whole Wh. ``E`` beyond the window's caps is cut to them.
"""

from __future__ import annotations

import numba
import numpy as np

PRICE_TOL = 1e-12  # prices closer than this are one price


@numba.njit(cache=True, nogil=True)
def _fill_in_order(cap, order, energy, out):
    """Fill ``out`` with ``energy``, each round to its cap, in the order given."""
    left = energy
    for jj in range(order.size):
        j = order[jj]
        take = min(cap[j], left)
        out[j] = take
        left -= take


@numba.njit(cache=True, nogil=True)
def _logit_fill(cap, price, band, energy, out):
    """``out_r = min(cap_r, λ cap_r exp(-(p_r - min p) / band))`` adding up to ``energy`` (water-filling)."""
    n = cap.size
    weight = cap * np.exp(-(price - price.min()) / band)
    free = np.ones(n, dtype=np.bool_)
    out[:] = 0.0
    left = energy
    for _ in range(n):
        mass = 0.0
        for j in range(n):
            if free[j]:
                mass += weight[j]
        if left <= 0.0 or mass <= 0.0:
            break
        capped = False
        for j in range(n):   # every round the share would overflow takes its cap; the rest is shared again
            if free[j] and left * weight[j] / mass >= cap[j]:
                out[j] = cap[j]
                free[j] = False
                capped = True
        if not capped:
            for j in range(n):
                if free[j]:
                    out[j] = left * weight[j] / mass
            left = 0.0
            break
        left = energy
        for j in range(n):
            if not free[j]:
                left -= out[j]
    if left > 1e-9:   # weights that underflowed to 0: the rest into the spare caps, cheapest first
        order = np.argsort(price, kind="mergesort")
        for jj in range(n):
            j = order[jj]
            take = min(cap[j] - out[j], left)
            out[j] += take
            left -= take


@numba.njit(cache=True, nogil=True)
def place_sessions(price, lo, hi, cap_start, caps, energy_wh, band, out_wh):
    """Each session's whole-Wh answer to ``price`` (see the module doc) into ``out_wh`` (laid out as ``caps``:
    session j's rounds at ``cap_start[j]`` .. ``cap_start[j] + hi[j] - lo[j] - 1``)."""
    for s in range(lo.size):
        n = hi[s] - lo[s]
        if n <= 0:
            continue
        c = caps[cap_start[s]:cap_start[s] + n]
        p = price[lo[s]:hi[s]]
        energy = min(energy_wh[s], c.sum())
        ref = np.empty(n)
        _fill_in_order(c, np.arange(n), energy, ref)
        spread = p.max() - p.min()
        target = np.empty(n)
        if band > 0.0:
            beta = min(1.0, spread / band)
            _logit_fill(c, p, band, energy, target)
        else:
            beta = 1.0 if spread > PRICE_TOL else 0.0
            _fill_in_order(c, np.argsort(p, kind="mergesort"), energy, target)
        total = 0.0
        placed = 0
        for j in range(n):
            total += max(ref[j] + beta * (target[j] - ref[j]), 0.0)
            whole = int(np.floor(total + 0.5))
            out_wh[cap_start[s] + j] = whole - placed
            placed = whole


__all__ = ["PRICE_TOL", "place_sessions"]
