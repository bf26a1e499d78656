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


def shift_flexible_load(load_wh: np.ndarray, price_per_kwh: np.ndarray, share, max_power_w, window_rounds: int,
                        interval_s: int) -> np.ndarray:
    """Consumption after moving each household's flexible share to cheap rounds (see the module doc).

    load_wh: (rounds, households) consumption, Wh per round; price_per_kwh: (rounds,);
    share, max_power_w: scalars or one per household; window_rounds: rounds per window (from round 0).
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
