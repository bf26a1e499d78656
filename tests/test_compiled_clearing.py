"""The compiled clearing (``engine.mechanisms.clear_book_priced``) gives exactly what each built-in
mechanism's own Python methods give, so every driver that runs it (the market module, the compiled RL env,
the settlement study's compiled market) clears as the mechanism is written."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trexsim.engine.mechanisms import (SBBA, SBBA_UNITS, UNIFORM_K, KDoubleAuction, Mechanism, clear_round,
                                       compiled_clearing, get_mechanism, lottery_integer, lottery_rng)
from trexsim.engine.ties import PRO_RATA, RANDOM, SUBMISSION

BUILT_INS = ["average_price", "exact_match", "exact_price", "k_double_auction", "k_double_auction_0",
             "k_double_auction_1", "sbba"]


def python_only(mechanism: Mechanism) -> Mechanism:
    """The same mechanism through its own Python methods: a subclass overriding ``clear_book`` has no
    compiled clearing, so ``clear_round`` calls the methods."""
    base = type(mechanism)

    def clear_book(self, *args, **kwargs):
        return base.clear_book(self, *args, **kwargs)

    cls = type(f"PythonOnly{base.__name__}", (base,), {"clear_book": clear_book, "__module__": __name__})
    assert compiled_clearing(cls()) is None
    return cls()


def test_every_built_in_has_a_compiled_clearing():
    assert compiled_clearing(get_mechanism("k_double_auction")) == (UNIFORM_K, 0.5)
    assert compiled_clearing(get_mechanism("k_double_auction_1")) == (UNIFORM_K, 1.0)
    assert compiled_clearing(get_mechanism("sbba")) == (SBBA_UNITS, 0.0)
    assert all(compiled_clearing(get_mechanism(name)) is not None for name in BUILT_INS)


def test_k_double_auction_price_by_hand():
    # bids 0.14 x 100 (p0), 0.10 x 50 (p1); asks 0.06 x 80 (p2), 0.08 x 100 (p3). ALEX matching:
    # p0-p2 80 Wh, p0-p3 20 Wh, p1-p3 50 Wh; lowest matched bid 0.10, highest matched ask 0.08.
    # k = 0.5: 0.09 for all; k = 0: 0.08; k = 1: 0.10.
    book = dict(participant=[0, 1, 2, 3], side=[0, 0, 1, 1], pool=[0, 0, 0, 0], price=[0.14, 0.10, 0.06, 0.08],
                quantity_wh=[100, 50, 80, 100], order_id=[0, 1, 2, 3], placed_round=[0, 0, 0, 0], n_participants=4)
    for name, price in [("k_double_auction", 0.09), ("k_double_auction_0", 0.08), ("k_double_auction_1", 0.10)]:
        r = clear_round(get_mechanism(name), **book)
        assert r[3].tolist() == [80, 20, 50]
        assert r[4] == pytest.approx([price] * 3, abs=1e-15) and np.array_equal(r[4], r[5])
        assert r[10][0] == pytest.approx(100 * price / 1000)  # p0 pays for its 100 Wh


def test_lottery_is_counter_based_and_uniform():
    draws = [lottery_integer(7, 0, r, 0, 3) for r in range(3000)]
    assert draws == [lottery_integer(7, 0, r, 0, 3) for r in range(3000)]
    assert all(900 < draws.count(v) < 1100 for v in range(3))
    lot = lottery_rng(7, 2, 5)
    assert [lot.integers(10) for _ in range(3)] == [lottery_integer(7, 2, 5, d, 10) for d in range(3)]
    assert 0.0 <= lottery_rng(1, 1, 1).random() < 1.0
    assert lottery_integer(8, 0, 0, 0, 1 << 40) != lottery_integer(7, 0, 0, 0, 1 << 40)


@st.composite
def books(draw):
    n = draw(st.integers(2, 7))  # participants
    size = draw(st.integers(1, 14))
    ticks = draw(st.lists(st.integers(0, 6), min_size=size, max_size=size))  # few prices: ties are common
    return dict(
        participant=np.array(draw(st.lists(st.integers(0, n - 1), min_size=size, max_size=size)), dtype=np.int64),
        side=np.array(draw(st.lists(st.integers(0, 1), min_size=size, max_size=size)), dtype=np.int64),
        pool=np.array(draw(st.lists(st.integers(0, 1), min_size=size, max_size=size)), dtype=np.int64),
        price=np.array([0.05 + 0.015 * t for t in ticks]),
        quantity_wh=np.array(draw(st.lists(st.sampled_from([1, 2, 3, 7, 40, 500]), min_size=size, max_size=size)),
                             dtype=np.int64),
        order_id=np.arange(size, dtype=np.int64) + 100,
        placed_round=np.array(draw(st.lists(st.integers(0, 1), min_size=size, max_size=size)), dtype=np.int64),
        n_participants=n)


@pytest.mark.parametrize("name", ["k_double_auction", "k_double_auction_0", "k_double_auction_1", "sbba"])
@settings(max_examples=250, deadline=None)
@given(book=books(), tie_break=st.sampled_from([SUBMISSION, RANDOM, PRO_RATA]), key=st.integers(0, 2**62),
       delivery_round=st.integers(0, 50))
def test_compiled_clearing_is_the_mechanisms_own(name, book, tie_break, key, delivery_round):
    mechanism = get_mechanism(name)
    kw = dict(tie_break=tie_break, key=key, episode=3, delivery_round=delivery_round)
    compiled = clear_round(mechanism, **book, **kw)
    own = clear_round(python_only(mechanism), **book, **kw)
    for got, want in zip(compiled, own):
        assert np.array_equal(np.asarray(got), np.asarray(want)), (got, want)


def test_python_only_really_takes_the_python_path():
    assert isinstance(python_only(get_mechanism("sbba")), SBBA)
    assert isinstance(python_only(get_mechanism("k_double_auction")), KDoubleAuction)
