"""trexsim.testing: every registered mechanism (built-ins and installed plug-ins) passes the conformance
checks, and each check catches the mechanism that breaks its rule, naming the rule and the book."""

from typing import ClassVar

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from trexsim.engine import registered_mechanisms  # noqa: E402
from trexsim.engine.matching import Matches  # noqa: E402
from trexsim.engine.mechanisms import AveragePrice, Mechanism, PairwiseMechanism  # noqa: E402
from trexsim.plugins import mechanism_origin  # noqa: E402
from trexsim.testing import Book, check_book, check_mechanism  # noqa: E402

# built-ins and plug-ins found through entry points; not the deliberately broken ones tests register
SHIPPED = [n for n in registered_mechanisms() if not mechanism_origin(n).startswith("registered at run time")]


def test_the_shipped_list_holds_the_built_ins():
    assert {"average_price", "exact_match", "exact_price"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_registered_mechanism_conforms(name):
    check_mechanism(name, max_examples=150)


# ------------------------------------------------------------------ each rule, broken on purpose
class _SelfTrader(Mechanism):
    """Pairs the i-th bid with the i-th ask (submission order) whenever bid >= ask, whoever placed them."""

    name = "self_trader"

    def clear(self, bid_participant, bid_price, bid_quantity_wh, ask_participant, ask_price, ask_quantity_wh):
        k = min(len(bid_price), len(ask_price))
        i = np.flatnonzero(np.asarray(bid_price[:k]) >= np.asarray(ask_price[:k]))
        q = np.minimum(np.asarray(bid_quantity_wh)[i], np.asarray(ask_quantity_wh)[i]).astype(np.int64)
        mid = (np.asarray(bid_price)[i] + np.asarray(ask_price)[i]) / 2
        return Matches(i, i.copy(), q, mid, mid.copy())


class _Wrapped(PairwiseMechanism):
    """M1's matching with its matches rewritten by ``change``."""

    budget_balance: ClassVar[str] = "strong"

    def settlement_prices(self, bid_price, ask_price):
        mid = (bid_price + ask_price) / 2
        return mid, mid.copy()

    def change(self, m: Matches, price) -> Matches:
        return m

    def clear_book(self, participant, side, pool, price, quantity_wh, n_pools=2):
        m, pools = super().clear_book(participant, side, pool, price, quantity_wh, n_pools)
        return self.change(m, price), pools


class _HalfWh(_Wrapped):
    name = "half_wh"

    def change(self, m, price):
        return Matches(m.bid_index, m.ask_index, m.quantity_wh - 0.5, m.buyer_price, m.seller_price)


class _Overfills(_Wrapped):
    name = "overfills"

    def change(self, m, price):
        return Matches(m.bid_index, m.ask_index, m.quantity_wh * 2, m.buyer_price, m.seller_price)


class _ClaimsStrong(_Wrapped):
    name = "claims_strong"  # M3's prices

    def change(self, m, price):
        return Matches(m.bid_index, m.ask_index, m.quantity_wh, price[m.bid_index], price[m.ask_index])


class _AboveBid(_Wrapped):
    name = "above_bid"
    budget_balance: ClassVar[str] = "weak"

    def change(self, m, price):
        return Matches(m.bid_index, m.ask_index, m.quantity_wh, price[m.bid_index] + 0.01, price[m.ask_index])


class _BelowAsk(_Wrapped):
    name = "below_ask"
    budget_balance: ClassVar[str] = "weak"

    def change(self, m, price):
        return Matches(m.bid_index, m.ask_index, m.quantity_wh, price[m.bid_index], price[m.ask_index] - 0.01)


class _AuctioneerPays(_Wrapped):
    name = "auctioneer_pays"  # the buyer pays the ask, the seller receives the bid
    budget_balance: ClassVar[str] = "weak"

    def change(self, m, price):
        return Matches(m.bid_index, m.ask_index, m.quantity_wh, price[m.ask_index], price[m.bid_index])


class _Drifts(_Wrapped):
    name = "drifts"  # prices move a little with every call: not a function of the book

    calls = 0

    def change(self, m, price):
        _Drifts.calls += 1
        bid, ask = price[m.bid_index], price[m.ask_index]
        p = ask + (bid - ask) * (0.5 - 0.1 * (_Drifts.calls % 2))  # between the ask and the bid: only this rule breaks
        return Matches(m.bid_index, m.ask_index, m.quantity_wh, p, p.copy())


class _Ragged(_Wrapped):
    name = "ragged"

    def change(self, m, price):
        return Matches(m.bid_index, m.ask_index[:-1], m.quantity_wh, m.buyer_price, m.seller_price)


@pytest.mark.parametrize("mechanism,rule", [
    (_SelfTrader(), "no participant trades with itself"),
    (_HalfWh(), "quantities must be whole Wh"),
    (_Overfills(), "an order is never filled beyond its quantity"),
    (_ClaimsStrong(), "strong budget balance: the buyer's price equals the seller's price"),
    (_AboveBid(), "a buyer never pays more than its bid"),
    (_BelowAsk(), "a seller never receives less than its ask"),
    (_AuctioneerPays(), "weak budget balance: the buyer's price is at least the seller's price"),
    (_Drifts(), "the same book cleared twice must give the same matches"),
    (_Ragged(), "the match arrays must have one length"),
], ids=lambda x: getattr(x, "name", None))
def test_each_broken_rule_is_caught_with_the_book(mechanism, rule):
    with pytest.raises(AssertionError) as err:
        check_mechanism(mechanism, max_examples=300, seed=1, shrink=False)
    message = str(err.value)
    assert message.startswith(f"settlement mechanism {mechanism.name!r} broke a market rule: {rule}")
    assert "book of " in message and "participant  side  pool" in message


def test_the_reported_book_is_shrunk_to_the_smallest_that_breaks_the_rule():
    # a self-trade needs one bid and one ask of the same participant: two orders, one participant
    with pytest.raises(AssertionError) as err:
        check_mechanism(_SelfTrader(), max_examples=300, seed=1, max_orders=6)
    assert "\nbook of 2 orders, 1 participant, " in str(err.value)


def test_check_book_on_a_hand_made_book():
    # participant 0 bids 100 Wh at 0.12 and asks 100 Wh at 0.10 in the same pool; participant 1 asks
    # 50 Wh at 0.11. M1 skips the self-trade: 0's bid buys 1's 50 Wh at 0.115. The self-trader pairs
    # the first bid with the first ask, both 0's.
    i = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    book = Book(i(0, 0, 1), i(0, 1, 1), i(0, 0, 0), np.array([0.12, 0.10, 0.11]), i(100, 100, 50), i(0, 0, 0), 2)
    check_book("average_price", book)
    check_book(AveragePrice(), book)
    with pytest.raises(AssertionError) as err:
        check_book(_SelfTrader(), book)
    assert str(err.value).splitlines()[:3] == [
        "settlement mechanism 'self_trader' broke a market rule: no participant trades with itself (match 0); "
        "matches (bid, ask, Wh, buyer $/kWh, seller $/kWh): [(0, 1, 100, 0.11, 0.11)]",
        "book of 3 orders, 2 participants, tie_break='submission', key=0",
        "  #  participant  side  pool          price $/kWh   quantity Wh  placed round"]
