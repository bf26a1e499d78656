"""Flexible household load that moves to cheap rounds within a window, as arrays (all households at once).

A share of each household's consumption (``share``, e.g. 0.2: dishwasher, laundry, EV top-ups) may be moved
within consecutive windows of ``window_rounds`` rounds. In each window:

1. the household's flexible energy in every round is ``flex_r = share * load_r``; what lies in the window's
   cheapest rounds (price equal to the window's minimum) stays there, everything else is taken out;
2. the taken energy is poured back into the price levels from the cheapest up, spread over each level's
   rounds in proportion to their headroom ``cap_r - flex already there``, where
   ``cap_r = max(max_wh, flex_r)`` (a round never gets more flexible energy than the device limit, or
   than it already had);
3. so the window's energy is unchanged (conserved to float rounding), a window with one price moves
   nothing, and the inflexible part ``(1 - share) * load_r`` is never touched.

Energies in Wh per round (floats); prices in $/kWh, one per round (the published schedule).

**Proportional response** (``band_per_kwh`` = b > 0). The rule above is all-or-nothing: the load jumps to
another round when two prices cross, so a TC price iteration over it has no fixed point to find. The
proportional rule is continuous in the prices. In each window with price spread ``Δ = max p - min p``:

1. the target: the window's flexible energy ``E = Σ flex_r`` spread over its rounds in proportion to
   ``w_r cap_r`` with ``w_r = exp(-(p_r - min p) / b)`` (a logit response: a round b $/kWh dearer than the
   cheapest gets e⁻¹ of its weight), capped at ``cap_r`` (water-filling: what a capped round cannot take
   goes to the others in the same proportions);
2. the household moves the fraction ``β = min(1, Δ / b)`` of the way there:
   ``new_r = flex_r + β (target_r - flex_r)``.

A window with one price moves nothing (β = 0), the window's energy is kept, no round exceeds its cap (both
``flex_r`` and ``target_r`` are within it), and as b falls to 0 the rule tends to moving all of it into the
cheapest rounds.
"""

from __future__ import annotations

import numba
import numpy as np

PRICE_TOL = 1e-12  # prices closer than this are one level


@numba.njit(cache=True, nogil=True)
def _shift(load_wh, price, share, max_wh, window_rounds):
    R, N = load_wh.shape
    out = load_wh.copy()
    for w0 in range(0, R, window_rounds):
        w1 = min(R, w0 + window_rounds)
        p = price[w0:w1]
        order = np.argsort(p, kind="mergesort")
        pmin = p[order[0]]
        if p[order[-1]] - pmin <= PRICE_TOL:
            continue  # one price: nothing to gain
        # level boundaries in sorted order
        n = w1 - w0
        level_start = np.empty(n + 1, dtype=np.int64)
        levels = 0
        for j in range(n):
            if j == 0 or p[order[j]] - p[order[j - 1]] > PRICE_TOL:
                level_start[levels] = j
                levels += 1
        level_start[levels] = n
        flex = np.empty(n)
        new = np.empty(n)
        for i in range(N):
            moved = 0.0
            for j in range(n):
                f = share[i] * load_wh[w0 + j, i]
                flex[j] = f
                if p[j] - pmin <= PRICE_TOL:
                    new[j] = f
                else:
                    new[j] = 0.0
                    moved += f
            for lv in range(levels):
                if moved <= 0.0:
                    break
                head_sum = 0.0
                for jj in range(level_start[lv], level_start[lv + 1]):
                    j = order[jj]
                    cap = max(max_wh[i], flex[j])
                    head_sum += max(cap - new[j], 0.0)
                if head_sum <= 0.0:
                    continue
                take = min(moved, head_sum)
                for jj in range(level_start[lv], level_start[lv + 1]):
                    j = order[jj]
                    cap = max(max_wh[i], flex[j])
                    new[j] += max(cap - new[j], 0.0) * (take / head_sum)
                moved -= take
            for j in range(n):
                out[w0 + j, i] = load_wh[w0 + j, i] - flex[j] + new[j]
    return out


@numba.njit(cache=True, nogil=True)
def _shift_proportional(load_wh, price, share, max_wh, window_rounds, band):
    R, N = load_wh.shape
    out = load_wh.copy()
    for w0 in range(0, R, window_rounds):
        w1 = min(R, w0 + window_rounds)
        n = w1 - w0
        p = price[w0:w1]
        spread = p.max() - p.min()
        beta = min(1.0, spread / band)
        if beta <= 0.0:
            continue
        weight = np.exp(-(p - p.min()) / band)
        flex = np.empty(n)
        cap = np.empty(n)
        target = np.empty(n)
        free = np.empty(n, dtype=np.bool_)
        for i in range(N):
            total = 0.0
            for j in range(n):
                flex[j] = share[i] * load_wh[w0 + j, i]
                cap[j] = max(max_wh[i], flex[j])
                total += flex[j]
                target[j] = 0.0
                free[j] = True
            # water-filling: share what is left among the rounds not yet at their cap, in proportion to w cap
            left = total
            for _ in range(n):
                mass = 0.0
                for j in range(n):
                    if free[j]:
                        mass += weight[j] * cap[j]
                if left <= 0.0 or mass <= 0.0:
                    break
                capped = False
                for j in range(n):
                    if free[j] and left * weight[j] * cap[j] / mass >= cap[j]:
                        capped = True
                if not capped:
                    for j in range(n):
                        if free[j]:
                            target[j] = left * weight[j] * cap[j] / mass
                    left = 0.0
                    break
                for j in range(n):   # fill every round the share would overflow, then share the rest again
                    if free[j] and left * weight[j] * cap[j] / mass >= cap[j]:
                        target[j] = cap[j]
                        free[j] = False
                filled = 0.0
                for j in range(n):
                    if not free[j]:
                        filled += target[j]
                left = total - filled
            for j in range(n):
                out[w0 + j, i] = load_wh[w0 + j, i] + beta * (target[j] - flex[j])
    return out


def shift_flexible_load(load_wh: np.ndarray, price_per_kwh: np.ndarray, share, max_power_w, window_rounds: int,
                        interval_s: int, band_per_kwh: float = 0.0) -> np.ndarray:
    """Consumption after moving each household's flexible share to cheap rounds (see the module doc).

    load_wh: (rounds, households) consumption, Wh per round; price_per_kwh: (rounds,);
    share, max_power_w: scalars or one per household; window_rounds: rounds per window (from round 0);
    band_per_kwh: 0 for the all-or-nothing rule, > 0 for the proportional one.
    """
    load = np.ascontiguousarray(load_wh, dtype=np.float64)
    if load.ndim != 2:
        raise ValueError("load_wh must be (rounds, households)")
    price = np.ascontiguousarray(price_per_kwh, dtype=np.float64)
    if price.shape != (load.shape[0],):
        raise ValueError(f"price_per_kwh must have one price per round ({load.shape[0]}), got shape {price.shape}")
    n = load.shape[1]
    share_a = np.broadcast_to(np.asarray(share, dtype=np.float64), (n,)).copy()
    max_wh = np.broadcast_to(np.asarray(max_power_w, dtype=np.float64) * interval_s / 3600.0, (n,)).copy()
    if np.any((share_a < 0) | (share_a > 1)):
        raise ValueError("share must be in [0, 1]")
    if np.any(max_wh <= 0):
        raise ValueError("max_power_w must be positive")
    if int(window_rounds) < 1:
        raise ValueError("window_rounds must be >= 1")
    if load.size == 0:
        return load.copy()
    if band_per_kwh < 0:
        raise ValueError("band_per_kwh must be >= 0")
    if band_per_kwh > 0:
        return _shift_proportional(load, price, share_a, max_wh, int(window_rounds), float(band_per_kwh))
    return _shift(load, price, share_a, max_wh, int(window_rounds))


def executed_shift_wh(planned_shift_wh: np.ndarray, real_load_wh: np.ndarray, share: float,
                      window_rounds: int) -> np.ndarray:
    """The move of flexible load a household really makes when its plan was made on a forecast [Wh].

    ``planned_shift_wh`` (rounds, households): the plan's moved load minus the forecast it moved from (zero
    sum over each window of ``window_rounds`` rounds from the first). Out of each round it takes at most
    the flexible ``share`` of the real load (it cannot shed what is not consumed), and what it adds in the
    window's other rounds shrinks in proportion, so every window's real energy is kept exactly.
    """
    shift = np.asarray(planned_shift_wh, dtype=np.float64)
    out = np.zeros_like(shift)
    removed = np.minimum(np.maximum(-shift, 0.0), share * np.maximum(np.asarray(real_load_wh, dtype=np.float64), 0.0))
    added = np.maximum(shift, 0.0)
    for w0 in range(0, shift.shape[0], max(1, int(window_rounds))):
        sl = slice(w0, w0 + max(1, int(window_rounds)))
        total_added = added[sl].sum(axis=0)
        scale = np.divide(removed[sl].sum(axis=0), total_added, out=np.zeros_like(total_added), where=total_added > 0)
        out[sl] = added[sl] * scale - removed[sl]
    return out
