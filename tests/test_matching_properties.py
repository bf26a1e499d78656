"""Hypothesis properties of the pairwise matcher and every registered mechanism."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trexsim.engine import get_mechanism, match_pairwise, registered_mechanisms
from trexsim.plugins import mechanism_origin

prices = st.sampled_from([0.07, 0.08, 0.09, 0.10, 0.11, 0.12, 0.13, 0.14])
orders = st.lists(st.tuples(st.integers(0, 5), prices, st.integers(1, 2000)), min_size=0, max_size=25)


def reference(bids, asks, equal):
    """The literal rule: bids high to low, asks low to high (stable), every bid against every ask in order."""
    border = sorted(range(len(bids)), key=lambda i: -bids[i][1])
    aorder = sorted(range(len(asks)), key=lambda j: asks[j][1])
    rem_a = [a[2] for a in asks]
    out = []
    for i in border:
        rem_b = bids[i][2]
        for j in aorder:
            if rem_b == 0:
                break
            if rem_a[j] == 0 or bids[i][0] == asks[j][0]:
                continue
            if (equal and asks[j][1] != bids[i][1]) or (not equal and asks[j][1] > bids[i][1]):
                continue
            q = min(rem_b, rem_a[j])
            out.append((i, j, q))
            rem_b -= q
            rem_a[j] -= q
    return out


def arrays(book):
    a = np.array(book, dtype=float).reshape(-1, 3)
    return a[:, 0].astype(np.int64), a[:, 1], a[:, 2].astype(np.int64)


@settings(max_examples=300, deadline=None)
@given(orders, orders, st.booleans())
def test_kernel_equals_the_literal_rule(bids, asks, equal):
    bi, ai, q = match_pairwise(*arrays(bids), *arrays(asks), equal_prices=equal)
    assert list(zip(bi.tolist(), ai.tolist(), q.tolist())) == reference(bids, asks, equal)


@settings(max_examples=300, deadline=None)
# the built-ins and installed plug-ins, not the deliberately broken mechanisms other test modules register
# (test_self_checks), whichever order the modules are collected in
@given(orders, orders, st.sampled_from([n for n in registered_mechanisms()
                                        if not mechanism_origin(n).startswith("registered at run time")]))
def test_mechanism_invariants(bids, asks, name):
    mech = get_mechanism(name)
    bp, bpr, bq = arrays(bids)
    ap, apr, aq = arrays(asks)
    m = mech.clear(bp, bpr, bq, ap, apr, aq)
    if len(m) == 0:
        return
    # quantities: positive integers, never more than an order offered (energy conserved)
    assert (m.quantity_wh > 0).all()
    assert (np.bincount(m.bid_index, weights=m.quantity_wh, minlength=len(bids)) <= bq).all()
    assert (np.bincount(m.ask_index, weights=m.quantity_wh, minlength=len(asks)) <= aq).all()
    # no self-trade
    assert (bp[m.bid_index] != ap[m.ask_index]).all()
    # individual rationality: nobody pays above its bid or receives below its ask
    assert (m.buyer_price <= bpr[m.bid_index] + 1e-12).all()
    assert (m.seller_price >= apr[m.ask_index] - 1e-12).all()
    # weak budget balance: buyers pay at least what sellers receive
    assert (m.quantity_wh * m.buyer_price).sum() >= (m.quantity_wh * m.seller_price).sum() - 1e-9
    if mech.budget_balance == "strong":
        assert np.allclose(m.buyer_price, m.seller_price)


@settings(max_examples=200, deadline=None)
@given(orders, orders)
def test_matching_is_maximal(bids, asks):
    """After clearing, no compatible pair of different participants has energy left on both sides."""
    bp, bpr, bq = arrays(bids)
    ap, apr, aq = arrays(asks)
    bi, ai, q = match_pairwise(bp, bpr, bq, ap, apr, aq)
    rem_b = bq - np.bincount(bi, weights=q, minlength=len(bids)).astype(np.int64)
    rem_a = aq - np.bincount(ai, weights=q, minlength=len(asks)).astype(np.int64)
    for i in np.flatnonzero(rem_b > 0):
        for j in np.flatnonzero(rem_a > 0):
            assert not (apr[j] <= bpr[i] and ap[j] != bp[i])


@settings(max_examples=100, deadline=None)
@given(orders, orders, st.floats(0.5, 3.0))
def test_price_scaling_keeps_fills(bids, asks, c):
    bp, bpr, bq = arrays(bids)
    ap, apr, aq = arrays(asks)
    m1 = get_mechanism("average_price").clear(bp, bpr, bq, ap, apr, aq)
    m2 = get_mechanism("average_price").clear(bp, bpr * c, bq, ap, apr * c, aq)
    assert m1.quantity_wh.tolist() == m2.quantity_wh.tolist()
    assert np.allclose(m1.buyer_price * c, m2.buyer_price)


book_orders = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1), st.integers(0, 1), prices, st.integers(1, 2000),
                                 st.integers(0, 3)), min_size=0, max_size=30)


@settings(max_examples=300, deadline=None)
@given(book_orders, st.sampled_from(["average_price", "exact_match", "exact_price"]),
       st.sampled_from(["submission", "random", "pro_rata"]), st.integers(0, 2**40), st.integers(0, 1000))
def test_compiled_round_clearing_equals_the_mechanism_methods(book, name, tie_break, key, delivery_round):
    """The market's one-call clearing gives exactly what the mechanism's own methods give, under every tie rule."""
    from trexsim.engine.mechanisms import clear_round, compiled_price_rule
    from trexsim.engine.ties import tie_break_code

    mech = get_mechanism(name)
    assert compiled_price_rule(mech) is not None

    class ThroughMethods(type(mech)):  # overriding a method turns the compiled call off
        def settlement_prices(self, bid_price, ask_price):
            return super().settlement_prices(bid_price, ask_price)

    slow = ThroughMethods()
    assert compiled_price_rule(slow) is None
    a = np.array(book, dtype=float).reshape(-1, 6)
    cols = (a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.int64), a[:, 3],
            a[:, 4].astype(np.int64), np.arange(len(book), dtype=np.int64) + 100, a[:, 5].astype(np.int64))
    ties = dict(tie_break=tie_break_code(tie_break), key=key, episode=1, delivery_round=delivery_round)
    fast = clear_round(mech, *cols, n_participants=6, **ties)
    reference = clear_round(slow, *cols, n_participants=6, **ties)
    for got, want in zip(fast, reference):
        np.testing.assert_array_equal(got, want)
    # contracts are the matches summed per participant; money balances up to the auctioneer's surplus
    pools, buyer, seller, q, bp, sp, bid_id, ask_id, bought, sold, cost, revenue, bid_index, ask_index = fast
    assert (bid_id == cols[5][bid_index]).all() and (ask_id == cols[5][ask_index]).all()
    assert bought.sum() == sold.sum() == q.sum()
    assert (buyer != seller).all()
    assert cost.sum() - revenue.sum() >= -1e-12
