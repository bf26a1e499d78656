"""Delivery (imbalance) settlement: the paper's rules 8 and 9, worked by hand."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trexsim.engine.delivery import settle_delivery

BUY, SELL = 0.1449, 0.069


def one(load, gen, bought=0, sold=0, charge=0, discharge=0):
    a = lambda x: np.array([x], dtype=np.int64)  # noqa: E731
    return settle_delivery(a(load), a(gen), a(charge), a(discharge), a(bought), a(sold), BUY, SELL)


def test_seller_shortfall_is_bought_from_the_grid():
    # sold 100 Wh, produced only 60 Wh, no load: the 40 Wh gap is bought at the grid's buy price
    r = one(load=0, gen=60, sold=100)
    assert r.shortfall_wh[0] == 40
    assert r.grid_import_wh[0] == 40 and r.grid_export_wh[0] == 0
    assert r.grid_cost_usd[0] == pytest.approx(40 * BUY / 1000)
    assert r.battery_cover_wh[0] == 0


def test_seller_shortfall_covered_by_battery():
    # the same seller discharges 30 Wh: only 10 Wh are left for the grid
    r = one(load=0, gen=60, sold=100, discharge=30)
    assert r.shortfall_wh[0] == 10
    assert r.battery_cover_wh[0] == 30
    assert r.grid_import_wh[0] == 10
    # fully covered
    r = one(load=0, gen=60, sold=100, discharge=40)
    assert (r.shortfall_wh[0], r.battery_cover_wh[0], r.grid_import_wh[0]) == (0, 40, 0)


def test_buyer_unused_energy_is_exported_at_the_sell_price():
    # bought 100 Wh, used 60 Wh: it paid the seller for 100; the 40 Wh surplus goes to the grid
    r = one(load=60, gen=0, bought=100)
    assert r.unused_wh[0] == 40
    assert r.grid_export_wh[0] == 40 and r.grid_import_wh[0] == 0
    assert r.grid_revenue_usd[0] == pytest.approx(40 * SELL / 1000)


def test_own_pv_serves_own_load_first_and_the_rest_is_net_billed():
    r = one(load=500, gen=200)
    assert r.net_meter_wh[0] == 300 and r.grid_import_wh[0] == 300
    r = one(load=200, gen=500)
    assert r.grid_export_wh[0] == 300


def test_seller_with_load_sells_only_its_surplus():
    # load 300, PV 500, sold 200: exactly on contract, nothing with the grid
    r = one(load=300, gen=500, sold=200)
    assert (r.grid_import_wh[0], r.grid_export_wh[0], r.shortfall_wh[0]) == (0, 0, 0)


vec = st.lists(st.integers(0, 5000), min_size=4, max_size=4)


@settings(max_examples=300, deadline=None)
@given(vec, vec, vec, vec, st.permutations(range(4)), st.integers(0, 3000))
def test_energy_balances_for_any_round(load, gen, charge, discharge, perm, traded):
    # one trade of `traded` Wh between participants perm[0] (buyer) and perm[1] (seller)
    bought = np.zeros(4, np.int64)
    sold = np.zeros(4, np.int64)
    bought[perm[0]] = traded
    sold[perm[1]] = traded
    L, G, C, D = (np.array(x, dtype=np.int64) for x in (load, gen, charge, discharge))
    r = settle_delivery(L, G, C, D, bought, sold, BUY, SELL)
    assert (L + C).sum() == (G + D).sum() + r.grid_import_wh.sum() - r.grid_export_wh.sum()
    assert ((r.grid_import_wh == 0) | (r.grid_export_wh == 0)).all()
    assert (r.shortfall_wh <= sold).all() and (r.unused_wh <= bought).all()
    assert (r.battery_cover_wh >= 0).all() and (r.battery_cover_wh <= D).all()
