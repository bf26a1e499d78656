"""SBBA (Segal-Halevi, Hassidim and Aumann 2016): hand-worked books, its lottery, truthfulness for unit
traders (exact expectations over the lottery), and a whole run through the market."""


import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trexsim import parse_config
from trexsim.engine import get_mechanism
from trexsim.engine.mechanisms import lottery_rng


class FixedDraw:
    """A lottery that always draws ``value``: enumerating them gives SBBA's exact expectation."""

    def __init__(self, value):
        self.value = value

    def integers(self, k):
        assert 0 <= self.value < k
        return self.value


def clear(bids, asks, rng=None):
    """bids/asks: (participant, price $/kWh, Wh) -> ({bid index: Wh}, {ask index: Wh}, prices)."""
    b = np.array(bids, dtype=float).reshape(-1, 3)
    a = np.array(asks, dtype=float).reshape(-1, 3)
    m = get_mechanism("sbba").clear(b[:, 0].astype(int), b[:, 1], b[:, 2].astype(int), a[:, 0].astype(int), a[:, 1],
                                    a[:, 2].astype(int), rng=rng)
    bought, sold = {}, {}
    for i, j, q in zip(m.bid_index.tolist(), m.ask_index.tolist(), m.quantity_wh.tolist()):
        bought[i] = bought.get(i, 0) + q
        sold[j] = sold.get(j, 0) + q
    assert np.array_equal(m.buyer_price, m.seller_price)  # one price: strongly budget balanced
    return bought, sold, sorted(set(m.buyer_price.tolist()))


UNIT_BIDS = [(0, 0.10, 1), (1, 0.08, 1), (2, 0.06, 1), (3, 0.03, 1)]


def test_unit_traders_price_at_the_kth_bid_and_a_seller_lottery():
    # bids 0.10 0.08 0.06 0.03, asks 0.02 0.04 0.05 0.09 (peers.md TV1): k = 3, p = min(b_3, a_4) = min(0.06, 0.09)
    # = b_3, so buyer 3 leaves, buyers 0.10 and 0.08 trade, and two of the three cheapest sellers, by lottery
    asks = [(4, 0.02, 1), (5, 0.04, 1), (6, 0.05, 1), (7, 0.09, 1)]
    for draw, left_out in ((0, 0), (1, 1), (2, 2)):  # the draw names the supply unit left out
        bought, sold, price = clear(UNIT_BIDS, asks, FixedDraw(draw))
        assert bought == {0: 1, 1: 1}
        assert sold == {j: 1 for j in range(3) if j != left_out}
        assert price == [0.06]


def test_unit_traders_all_k_trade_when_the_next_ask_is_below_the_kth_bid():
    # the 4th ask at 0.055 <= b_3 = 0.06: p = a_4 = 0.055 and the 3 efficient trades are all made (no lottery)
    asks = [(4, 0.02, 1), (5, 0.04, 1), (6, 0.05, 1), (7, 0.055, 1)]
    bought, sold, price = clear(UNIT_BIDS, asks, FixedDraw(0))
    assert bought == {0: 1, 1: 1, 2: 1} and sold == {0: 1, 1: 1, 2: 1}
    assert price == [0.055]


def test_wh_book_drops_one_wh_from_the_ask_drawn():
    # bids 0.15 x 500, 0.12 x 300, 0.08 x 400; asks 0.07 x 400, 0.10 x 300, 0.13 x 200 (docs/mechanisms.md).
    # The curves cross at k = 700 Wh (Wh 700: 0.12 >= 0.10; Wh 701: 0.12 < 0.13); p = min(b_700, a_701) =
    # min(0.12, 0.13) = 0.12 = b_k: 699 bid Wh trade (500 + 199), and 699 of the 700 cheapest supply Wh:
    # the lottery's Wh 0-399 belong to the 0.07 ask, 400-699 to the 0.10 ask.
    bids = [(0, 0.15, 500), (1, 0.12, 300), (2, 0.08, 400)]
    asks = [(3, 0.07, 400), (4, 0.10, 300), (5, 0.13, 200)]
    for draw, sold_wh in ((0, {0: 399, 1: 300}), (399, {0: 399, 1: 300}), (400, {0: 400, 1: 299}),
                          (699, {0: 400, 1: 299})):
        bought, sold, price = clear(bids, asks, FixedDraw(draw))
        assert bought == {0: 500, 1: 199}
        assert sold == sold_wh
        assert price == [0.12]  # the k-double auction (k = 0.5) gives 700 Wh at 0.11 here
    # asks 0.07 x 400, 0.10 x 400, 0.11 x 200: k = 800 (Wh 800: 0.12 >= 0.10; Wh 801: 0.08 < 0.11) and
    # a_801 = 0.11 <= b_800 = 0.12, so p = a_801 and all 800 Wh trade at 0.11, nobody left out
    bought, sold, price = clear(bids, [(3, 0.07, 400), (4, 0.10, 400), (5, 0.11, 200)], FixedDraw(0))
    assert bought == {0: 500, 1: 300} and sold == {0: 400, 1: 400} and price == [0.11]
    # asks 0.07 x 400, 0.10 x 300, 0.115 x 200: the curves now cross inside the 0.115 ask (k = 800, a_801 = 0.115,
    # the same order's next Wh): all 800 trade at 0.115, 100 Wh of them the 0.115 ask's own
    bought, sold, price = clear(bids, [(3, 0.07, 400), (4, 0.10, 300), (5, 0.115, 200)], FixedDraw(0))
    assert bought == {0: 500, 1: 300} and sold == {0: 400, 1: 300, 2: 100} and price == [0.115]


def test_lottery_is_uniform_and_seeded():
    asks = [(4, 0.02, 1), (5, 0.04, 1), (6, 0.05, 1), (7, 0.09, 1)]
    left_out = [next(j for j in range(3) if j not in clear(UNIT_BIDS, asks, lottery_rng(7, 0, r))[1]) for r in range(600)]
    counts = np.bincount(left_out, minlength=3)
    assert counts.sum() == 600 and counts.min() > 150  # each seller is left out about a third of the time
    again = [next(j for j in range(3) if j not in clear(UNIT_BIDS, asks, lottery_rng(7, 0, r))[1]) for r in range(600)]
    assert again == left_out


def test_no_trade_below_two_efficient_units():
    assert clear([(0, 0.10, 1)], [(1, 0.05, 1), (2, 0.20, 1)], FixedDraw(0))[0] == {}  # k = 1, p = b_1: 0 trades
    assert clear([(0, 0.04, 5)], [(1, 0.05, 5)], FixedDraw(0))[0] == {}  # k = 0


def _utility(values_b, values_s, bids, asks, who, side):
    """``who``'s expected utility (over every lottery draw, exactly) under the reports ``bids``/``asks``,
    valued at its true value; unit traders, all distinct participants."""
    b = [(i, p, 1) for i, p in enumerate(bids)]
    a = [(len(bids) + j, p, 1) for j, p in enumerate(asks)]
    k = sum(1 for x, y in zip(sorted(bids, reverse=True), sorted(asks)) if x >= y)
    total = 0.0
    draws = range(max(k, 1))
    for d in draws:
        bought, sold, price = clear(b, a, FixedDraw(d) if k else None)
        if side == 0 and bought.get(who):
            total += values_b[who] - price[0]
        if side == 1 and sold.get(who):
            total += price[0] - values_s[who]
    return total / len(draws)


prices = st.integers(1, 40).map(lambda c: c / 100)


@settings(max_examples=150, deadline=None)
@given(st.lists(prices, min_size=1, max_size=5, unique=True), st.lists(prices, min_size=1, max_size=5, unique=True),
       st.booleans(), st.integers(0, 4), prices)
def test_truthful_for_unit_traders(values_b, values_s, seller, who, report):
    """Segal-Halevi et al.'s theorem: no unit trader gains (in expectation over the lottery) by misreporting."""
    assume(len(set(values_b) | set(values_s)) == len(values_b) + len(values_s))  # no ties: a strict order
    side, values = (1, values_s) if seller else (0, values_b)
    assume(who < len(values))
    assume(report not in set(values_b) | set(values_s))
    truthful = _utility(values_b, values_s, values_b, values_s, who, side)
    lie_b, lie_s = list(values_b), list(values_s)
    (lie_s if seller else lie_b)[who] = report
    assert truthful >= -1e-12  # individually rational
    assert truthful >= _utility(values_b, values_s, lie_b, lie_s, who, side) - 1e-12


def _settlements(seed, out_dir):
    import duckdb

    from trexsim.simulation import Simulation

    cfg = {"study": {"name": "sbba", "start_datetime": "2021-07-01 00:00:00", "timezone": "America/Edmonton", "days": 1,
                     "seed": seed, "interval_s": 300},
           "market": {"settlement": "sbba", "tie_break": "random", "grid": {"buy_price": 0.1449, "sell_price": 0.069}},
           "participants": {
               "prosumer": {"count": 6, "profile": {"type": "realistic", "annual_load_kwh": 5500, "pv_capacity_kw": 7.0},
                            "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
               "consumer": {"count": 4, "profile": {"type": "realistic", "annual_load_kwh": 4500, "pv_capacity_kw": 0},
                            "trader": {"type": "fixed_price", "bid_price": 0.13, "ask_price": 0.10}}}}
    result = Simulation(parse_config(cfg), out_dir).run(plots=False)
    con = duckdb.connect(str(result.database), read_only=True)
    try:
        return con.execute("SELECT round, delivery_round, buyer, seller, quantity_wh, buyer_price, seller_price "
                           "FROM settlements ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_a_run_through_the_market_is_balanced_and_its_lottery_comes_from_the_seed(tmp_path):
    first, again, other = (_settlements(seed, tmp_path / f"run{i}") for i, seed in enumerate((1, 1, 2)))
    assert first == again  # the same config, the same lottery
    assert first and first != other  # another seed draws other sellers
    # one price a round, paid and received: the asks' 0.10 where supply is long (p = a_{k+1}), else the k-th
    # bid, a prosumer's 0.12 or a consumer's 0.13 (p = b_k)
    assert all(bp == sp for *_, bp, sp in first)
    assert {round(bp, 9) for *_, bp, _ in first} == {0.10, 0.12, 0.13}
