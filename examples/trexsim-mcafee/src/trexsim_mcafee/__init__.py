"""McAfee's trade-reduction double auction as a trexsim settlement mechanism (a plug-in example).

R. P. McAfee, "A dominant strategy double auction", Journal of Economic Theory 56 (1992) 434-450.

The rule, for traders of one unit each: sort the bids from the highest (b_1 >= b_2 >= ...) and the
asks from the lowest (a_1 <= a_2 <= ...); the efficient trade count k is the largest with
b_k >= a_k. Let p0 = (b_{k+1} + a_{k+1}) / 2.

- If a_k <= p0 <= b_k, the k highest buyers and the k lowest sellers all trade at p0 (strong
  budget balance: every buyer pays what its seller receives).
- Otherwise the k-th pair is dropped: the k - 1 highest buyers pay b_k and the k - 1 lowest
  sellers receive a_k; the auctioneer keeps (k - 1)(b_k - a_k) (weak budget balance).

Nobody's price depends on its own order, which is what makes truthful bidding a dominant strategy
for single-unit traders. The price of this is at most one trade out of k.

**Adapted to integer Wh: every Wh is a unit.** An order of q Wh at price p counts as q unit
orders at p, so b_j is the price of the bid that holds the j-th Wh of the demand curve (bids
sorted from the highest price, equal prices in submission order) and a_j that of the ask holding
the j-th Wh of the supply curve; k is the efficient quantity in Wh where the two curves cross.
The trade reduction drops one Wh, not a whole order (a 1000 Wh bid against a 600 Wh ask trades
599 Wh). The curves are walked segment by segment, never expanded, so an order of 10^9 Wh costs
as much as one of 1 Wh. Chosen because it is McAfee's rule applied to the market's own unit and
loses at most 1 Wh of the efficient quantity per pool and round; an order is not a single-unit
trader, so the dominant-strategy property of the paper does not carry over to multi-Wh orders.

Two conventions of our own:

- If the book has no (k+1)-th bid unit or no (k+1)-th ask unit (one side is exhausted by the
  efficient trades), p0 is undefined and the trade-reduction branch applies.
- The traded Wh (the first k, or k - 1, of each curve) are paired in ALEX's pairwise order by
  :func:`trexsim.engine.matching.match_pairwise`, which never pairs a participant with itself: a
  Wh that could only trade with its own participant's order stays unsold (at one uniform price on
  each side, the pairing moves energy, never money between others).

The mechanism declares ``budget_balance = "weak"``: some books clear at p0 with nothing left over,
others leave the auctioneer b_k - a_k per Wh.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from trexsim.engine.matching import Matches, match_pairwise
from trexsim.engine.mechanisms import Mechanism, register_mechanism

__all__ = ["McAfee", "efficient_units"]
__version__ = "0.1.0"


def efficient_units(bid_price, bid_quantity_wh, ask_price, ask_quantity_wh):
    """Where the unit demand and supply curves cross.

    Parameters
    ----------
    bid_price, bid_quantity_wh : arrays
        Bids sorted from the highest price [$/kWh], quantities [Wh].
    ask_price, ask_quantity_wh : arrays
        Asks sorted from the lowest price [$/kWh], quantities [Wh].

    Returns
    -------
    k : int
        The efficient trade count [Wh]: the largest k with b_k >= a_k.
    b_k, a_k : float
        The k-th unit's bid and ask prices [$/kWh] (NaN when k = 0).
    b_next, a_next : float or None
        The (k+1)-th unit's bid and ask prices, None where that side has no (k+1)-th unit.
    """
    nb, na = len(bid_price), len(ask_price)
    i = j = 0
    used_b = used_a = 0  # Wh of the current bid / ask already counted
    k = 0
    b_k = a_k = float("nan")
    while i < nb and j < na and bid_price[i] >= ask_price[j]:
        step = min(int(bid_quantity_wh[i]) - used_b, int(ask_quantity_wh[j]) - used_a)
        k += step
        used_b += step
        used_a += step
        b_k, a_k = float(bid_price[i]), float(ask_price[j])
        if used_b == bid_quantity_wh[i]:
            i, used_b = i + 1, 0
        if used_a == ask_quantity_wh[j]:
            j, used_a = j + 1, 0
    b_next = float(bid_price[i]) if i < nb else None
    a_next = float(ask_price[j]) if j < na else None
    return k, b_k, a_k, b_next, a_next


def _first_units(order: np.ndarray, quantity_wh: np.ndarray, units: int) -> tuple[np.ndarray, np.ndarray]:
    """The orders (indices, in submission order) holding the first ``units`` Wh of a sorted curve, and
    how many of their Wh."""
    q = quantity_wh[order]
    before = np.cumsum(q) - q
    take = np.clip(units - before, 0, q)
    keep = take > 0
    index, taken = order[keep], take[keep]
    back = np.argsort(index, kind="stable")  # submission order, as match_pairwise expects
    return index[back], taken[back]


@register_mechanism
class McAfee(Mechanism):
    """McAfee (1992) trade reduction, one unit per Wh (see the module docstring)."""

    name = "mcafee"
    paper_name = ""  # not one of the T-REX paper's mechanisms
    budget_balance: ClassVar[str] = "weak"

    def clear(self, bid_participant, bid_price, bid_quantity_wh, ask_participant, ask_price, ask_quantity_wh) -> Matches:
        bid_price = np.asarray(bid_price, dtype=np.float64)
        ask_price = np.asarray(ask_price, dtype=np.float64)
        bid_q = np.asarray(bid_quantity_wh, dtype=np.int64)
        ask_q = np.asarray(ask_quantity_wh, dtype=np.int64)
        if bid_q.size == 0 or ask_q.size == 0:
            return Matches.empty()
        by_bid = np.argsort(-bid_price, kind="stable")  # highest first, equal prices in submission order
        by_ask = np.argsort(ask_price, kind="stable")
        k, b_k, a_k, b_next, a_next = efficient_units(bid_price[by_bid], bid_q[by_bid], ask_price[by_ask], ask_q[by_ask])
        if k == 0:
            return Matches.empty()
        p0 = None if b_next is None or a_next is None else (b_next + a_next) / 2.0
        if p0 is not None and a_k <= p0 <= b_k:
            units, buyer_price, seller_price = k, p0, p0
        else:  # trade reduction: the k-th Wh is dropped, the marginal orders' prices are paid and received
            units, buyer_price, seller_price = k - 1, b_k, a_k
        if units == 0:
            return Matches.empty()
        bids, bid_take = _first_units(by_bid, bid_q, units)
        asks, ask_take = _first_units(by_ask, ask_q, units)
        bi, ai, q = match_pairwise(np.asarray(bid_participant)[bids], bid_price[bids], bid_take,
                                   np.asarray(ask_participant)[asks], ask_price[asks], ask_take)
        return Matches(bids[bi], asks[ai], q, np.full(q.size, buyer_price), np.full(q.size, seller_price))
