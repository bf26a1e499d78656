"""Order intake checks (ALEX rule 7 and the timeline), one pass over a batch.

:func:`reject_codes` returns a code per order, 0 for an acceptable order; the first failing
check names the reason (``REASONS[code]``).
"""

from __future__ import annotations

import numba
import numpy as np

REASONS = (
    "",
    "unknown_participant",
    "bad_side",
    "bad_pool",
    "quantity_not_finite",
    "quantity_not_integer",
    "quantity_not_positive",
    "quantity_too_large",
    "price_not_finite",
    "price_out_of_range",
)


@numba.njit(cache=True, nogil=True)
def _codes(participant, side, pool, price, quantity, n_participants, n_pools, min_price, max_price, max_quantity):
    out = np.zeros(participant.size, dtype=np.int8)
    _codes_into(out, participant, side, pool, price, quantity, n_participants, n_pools, min_price, max_price,
                max_quantity)
    return out


@numba.njit(cache=True, nogil=True)
def _codes_into(out, participant, side, pool, price, quantity, n_participants, n_pools, min_price, max_price,
                max_quantity):
    """:func:`_codes` into ``out`` (int8, at least as long as the book; 0: accepted)."""
    n = participant.size
    for i in range(n):
        out[i] = 0
        q = quantity[i]
        p = price[i]
        # indices arrive as float64 so that 0.5 or NaN is refused, never truncated to 0
        if not (participant[i] >= 0 and participant[i] < n_participants and participant[i] == np.floor(participant[i])):
            out[i] = 1
        elif side[i] != 0 and side[i] != 1:
            out[i] = 2
        elif not (pool[i] >= 0 and pool[i] < n_pools and pool[i] == np.floor(pool[i])):
            out[i] = 3
        elif not np.isfinite(q):
            out[i] = 4
        elif q != np.floor(q):
            out[i] = 5
        elif q <= 0:
            out[i] = 6
        elif q > max_quantity:
            out[i] = 7
        elif not np.isfinite(p):
            out[i] = 8
        elif p < min_price or p > max_price:
            out[i] = 9


@numba.njit(cache=True, nogil=True)
def _member_codes(participant, side, pool, price, quantity, n_participants, n_pools, min_price, max_price,
                  max_quantity, member, not_member_code):
    """:func:`_codes`, then ``not_member_code`` for an otherwise acceptable order whose participant is not in
    ``member`` (a bool mask over the roster), in the same compiled call."""
    out = _codes(participant, side, pool, price, quantity, n_participants, n_pools, min_price, max_price, max_quantity)
    for i in range(out.size):
        if out[i] == 0 and (participant[i] >= member.size or not member[np.int64(participant[i])]):
            out[i] = not_member_code
    return out


def _numbers(values) -> np.ndarray:
    """An order column as the checks read it: int64 or float64 arrays as they are (whole numbers need no
    conversion: every check holds for them as for their float64 values), anything else as float64, so that
    0.5, NaN or text is refused, never truncated."""
    a = np.asarray(values)
    if a.dtype != np.int64:
        a = a.astype(np.float64) if a.dtype.kind in "biuf" else np.asarray(values, dtype=np.float64)
    return np.ascontiguousarray(a)


def reject_codes(participant, side, pool, price, quantity_wh, *, n_participants: int, n_pools: int = 2,
                 min_price: float = 0.0, max_price: float = 10.0, max_quantity_wh: float = 1e7,
                 member: np.ndarray | None = None, not_member_code: int = len(REASONS)) -> np.ndarray:
    """Reason code per order (index into :data:`REASONS`); arrays of equal length. ``member``: a bool mask over
    the roster of who may trade here; an acceptable order of anyone else gets ``not_member_code``."""
    args = (_numbers(participant), _numbers(side), _numbers(pool), _numbers(price), _numbers(quantity_wh),
            int(n_participants), int(n_pools),
            float(min_price), float(max_price), float(max_quantity_wh))
    if member is None:
        return _codes(*args)
    return _member_codes(*args, np.ascontiguousarray(member, dtype=np.bool_), int(not_member_code))
