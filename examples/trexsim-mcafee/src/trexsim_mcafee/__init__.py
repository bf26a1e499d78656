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

The curves are walked by ``trexsim.engine.unit_curves`` (which SBBA, in trexsim, shares).

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
# the unit curves are trexsim's (SBBA walks them too); re-exported as this package's own name
from trexsim.engine.unit_curves import efficient_units, first_units, unit_book

__all__ = ["McAfee", "efficient_units"]
__version__ = "0.1.0"


@register_mechanism
class McAfee(Mechanism):
    """McAfee (1992) trade reduction, one unit per Wh (see the module docstring)."""

    name = "mcafee"
    paper_name = ""  # not one of the T-REX paper's mechanisms
    budget_balance: ClassVar[str] = "weak"

    def clear(self, bid_participant, bid_price, bid_quantity_wh, ask_participant, ask_price, ask_quantity_wh) -> Matches:
        book = unit_book(bid_price, bid_quantity_wh, ask_price, ask_quantity_wh)
        if book is None or book.k == 0:
            return Matches.empty()
        k, b_k, a_k, b_next, a_next = book.k, book.b_k, book.a_k, book.b_next, book.a_next
        p0 = None if b_next is None or a_next is None else (b_next + a_next) / 2.0
        if p0 is not None and a_k <= p0 <= b_k:
            units, buyer_price, seller_price = k, p0, p0
        else:  # trade reduction: the k-th Wh is dropped, the marginal orders' prices are paid and received
            units, buyer_price, seller_price = k - 1, b_k, a_k
        if units == 0:
            return Matches.empty()
        bids, bid_take = first_units(book.by_bid, book.bid_wh, units)
        asks, ask_take = first_units(book.by_ask, book.ask_wh, units)
        bi, ai, q = match_pairwise(np.asarray(bid_participant)[bids], book.bid_price[bids], bid_take,
                                   np.asarray(ask_participant)[asks], book.ask_price[asks], ask_take)
        return Matches(bids[bi], asks[ai], q, np.full(q.size, buyer_price), np.full(q.size, seller_price))
