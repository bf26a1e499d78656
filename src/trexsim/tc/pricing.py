"""The congestion component of the TC price, pluggable by name.

The built-in ``linear`` component, per price interval h (docs/powerflow.md)::

    congestion_h = loading_price * max(0, L_h - loading_threshold_pct) / 100
                 + voltage_price * max(0, dV_h - voltage_threshold_pu)

with L_h the predicted loading of the most loaded transformer (% of rating) and dV_h the largest predicted
deviation of a bus voltage from 1 p.u. in interval h. The TC price is the grid's buy price plus it.

Another component: ``register_congestion("name", fn)`` with ``fn(loading_pct, voltage_dev_pu, params)``
returning $/kWh per interval (arrays of the same shape); select it with ``tc.congestion.type: "name"``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

CongestionFn = Callable[[np.ndarray, np.ndarray, object], np.ndarray]
_REGISTRY: dict[str, CongestionFn] = {}


def register_congestion(name: str, fn: CongestionFn) -> None:
    """Make a congestion component available as ``tc.congestion.type: name``."""
    _REGISTRY[name] = fn


def registered_congestion() -> dict[str, CongestionFn]:
    return dict(_REGISTRY)


def linear_congestion(loading_pct: np.ndarray, voltage_dev_pu: np.ndarray, params) -> np.ndarray:
    """$/kWh: linear in the predicted loading and voltage deviation beyond their thresholds."""
    loading = np.maximum(np.asarray(loading_pct, dtype=float) - params.loading_threshold_pct, 0.0) / 100.0
    voltage = np.maximum(np.asarray(voltage_dev_pu, dtype=float) - params.voltage_threshold_pu, 0.0)
    return params.loading_price * loading + params.voltage_price * voltage


register_congestion("linear", linear_congestion)


def congestion_price(loading_pct: np.ndarray, voltage_dev_pu: np.ndarray, params) -> np.ndarray:
    """The congestion component named by ``params.type``, $/kWh per interval (NaN inputs count as 0)."""
    fn = _REGISTRY[params.type]
    out = np.asarray(fn(np.nan_to_num(loading_pct), np.nan_to_num(voltage_dev_pu), params), dtype=float)
    return np.maximum(out, 0.0)
