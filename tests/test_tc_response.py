"""The TC devices' proportional responses (``tc.response: "proportional"``): worked by hand, continuous in the
prices (a small price change gives a small change), energy kept, limits held, and nothing moved by a flat
schedule. The threshold rules they replace are pinned in tests/test_tc_market.py (band 0 gives them exactly)."""

import math

import numpy as np
import pytest

from trexsim.devices.flexible_load import shift_flexible_load
from trexsim.devices.price_battery import price_battery_dispatch


def test_flexible_load_by_hand():
    # one window of two rounds, prices 0.1 and 0.1 + b, all load flexible, caps out of reach: the target is the
    # 200 Wh spread by the logit weights [1, e^-1], and the spread (b) is a whole band, so all of the way there
    b = 0.05
    out = shift_flexible_load(np.array([[100.0], [100.0]]), np.array([0.1, 0.1 + b]), 1.0, 1e9, 2, 3600, b)
    w = np.array([1.0, math.exp(-1.0)])
    assert out[:, 0] == pytest.approx(200 * w / w.sum())
    # half a band of spread: half of the way
    out = shift_flexible_load(np.array([[100.0], [100.0]]), np.array([0.1, 0.1 + b / 2]), 1.0, 1e9, 2, 3600, b)
    w = np.array([1.0, math.exp(-0.5)])
    assert out[:, 0] == pytest.approx(100 + 0.5 * (200 * w / w.sum() - 100))
    # caps at the rounds' own flexible energy (max_power_w below it): the target fills the cheap round to its cap
    # and the rest stays where it was
    out = shift_flexible_load(np.array([[100.0], [100.0]]), np.array([0.1, 0.2]), 1.0, 10.0, 2, 3600, b)
    assert out[:, 0] == pytest.approx([100, 100])


def test_flexible_load_is_continuous_keeps_energy_and_caps_and_ignores_a_flat_schedule():
    rng = np.random.default_rng(3)
    load = rng.uniform(0, 800, (36, 5))
    price = rng.uniform(0.05, 0.4, 36)
    kw = dict(share=0.3, max_power_w=2000, window_rounds=12, interval_s=600, band_per_kwh=0.05)
    out = shift_flexible_load(load, price, **kw)
    assert out.reshape(3, 12, 5).sum(axis=1) == pytest.approx(load.reshape(3, 12, 5).sum(axis=1))
    cap = np.maximum(2000 * 600 / 3600, 0.3 * load)
    assert (out - 0.7 * load <= cap + 1e-9).all() and (out >= 0.7 * load - 1e-9).all()
    for eps in (1e-4, 1e-6):
        bumped = shift_flexible_load(load, price + eps * rng.standard_normal(36), **kw)
        assert np.abs(bumped - out).max() < 2000 * eps / 0.05 * 12   # Lipschitz in the prices, no jumps
    assert np.array_equal(shift_flexible_load(load, np.full(36, 0.2), **kw), load)
    # the threshold rule, for contrast, jumps when two prices cross
    p = np.array([0.1, 0.1 + 1e-9, 0.3])
    a = shift_flexible_load(np.full((3, 1), 300.0), p, 0.5, 1e9, 3, 3600)
    b = shift_flexible_load(np.full((3, 1), 300.0), p[[1, 0, 2]], 0.5, 1e9, 3, 3600)
    assert np.abs(a - b).max() > 100


def test_price_battery_by_hand():
    sizes = dict(capacity_wh=1000, charge_limit_wh=1000, discharge_limit_wh=1000, efficiency=1.0, retention=1.0)
    need = np.array([[0.0], [500.0]])
    # a wide spread: the ramps are at their ends, the same as the thresholds (charge full, cover the 500)
    for band in (0.0, 0.05):
        c, d, _ = price_battery_dispatch(need, np.array([0.1, 0.3]), np.zeros(1), band_per_kwh=band, **sizes)
        assert c[:, 0].tolist() == [1000, 0] and d[:, 0].tolist() == [0, 500]
    # a spread of 0.02 $/kWh: the threshold rule still charges 1,000 Wh for a 500 Wh need; the proportional one
    # has a signal of 0.4 and charges w_c = 0.4 * 1 * 0.4 * 0.4 of its 1,000 Wh (64 Wh), then covers what it
    # can of the 500 (0.16 of it by the dear round's weight, the rest by the blend of self-consumption and the
    # reserve rule: all 64 Wh)
    c, d, _ = price_battery_dispatch(need, np.array([0.1, 0.12]), np.zeros(1), **sizes)
    assert c[:, 0].tolist() == [1000, 0] and d[:, 0].tolist() == [0, 500]
    c, d, _ = price_battery_dispatch(need, np.array([0.1, 0.12]), np.zeros(1), band_per_kwh=0.05, **sizes)
    assert c[:, 0] == pytest.approx([64, 0]) and d[:, 0] == pytest.approx([0, 64])


def test_price_battery_is_continuous_and_within_its_limits():
    rng = np.random.default_rng(8)
    net = rng.uniform(-1500, 2500, (48, 6))
    price = rng.uniform(0.05, 0.4, 48)
    sizes = dict(capacity_wh=rng.uniform(2000, 13500, 6), charge_limit_wh=800.0, discharge_limit_wh=900.0,
                 efficiency=0.95, retention=0.9999)
    stored0 = rng.uniform(0, 2000, 6)
    c, d, s = price_battery_dispatch(net, price, stored0, band_per_kwh=0.05, **sizes)
    assert (c >= 0).all() and (d >= 0).all() and ((c == 0) | (d == 0)).all()
    assert (c <= 800 + 1e-9).all() and (d <= 900 + 1e-9).all()
    assert (s >= 0).all() and (s <= sizes["capacity_wh"] + 1e-9).all()
    for eps in (1e-5, 1e-7):
        c2, d2, _ = price_battery_dispatch(net, price + eps * rng.standard_normal(48), stored0, band_per_kwh=0.05,
                                           **sizes)
        assert np.abs((c2 - d2) - (c - d)).max() < 1e7 * eps    # no jumps: shrinks with the price change
    # a flat schedule: self-consumption, as the threshold rule
    flat = np.full(48, 0.2)
    a = price_battery_dispatch(net, flat, stored0, band_per_kwh=0.05, **sizes)
    b = price_battery_dispatch(net, flat, stored0, **sizes)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="band_per_kwh"):
        price_battery_dispatch(net, price, stored0, band_per_kwh=-1, **sizes)
