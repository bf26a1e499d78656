"""The two halves of a TC pass: the households' response and the TC market's prediction.

- ``respond``: what the households do over one horizon under one price schedule — flexible loads move
  within their windows (``trexsim.devices.flexible_load``), price-reactive batteries charge when it is
  cheap and discharge when it is dear (``trexsim.devices.price_battery``), the other batteries run
  self-consumption; returns their loads, battery energies and net energies per round (Wh, floats).
- ``predict_intervals``: the TC market's forecast of the feeder under those net energies — one powerflow
  solve per price interval on the interval's average net powers, reduced to the most loaded transformer
  (% of rating) and the largest voltage deviation from 1 p.u. of the checked nodes.

The participants module calls ``respond`` for its own households when a schedule arrives over the fabric
(``trexsim.tc.households``); the TC market module (``trexsim.modules.tc``) calls ``predict_intervals`` on
the plans they answer with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Response:
    """One horizon's response to a schedule, arrays ``(rounds, households)`` of Wh per round."""

    load_wh: np.ndarray
    charge_wh: np.ndarray
    discharge_wh: np.ndarray
    stored_after_wh: np.ndarray
    net_wh: np.ndarray  # load - generation + charge - discharge (+ import)
    device_draw_wh: np.ndarray | None = None    # of load_wh: what the price-responsive devices draw (whole Wh)
    device_supply_wh: np.ndarray | None = None  # what they supply (whole Wh; net_wh takes it off)


def respond(base_load_wh: np.ndarray, generation_wh: np.ndarray, price_per_kwh: np.ndarray, stored_wh: np.ndarray,
            bank, active: np.ndarray, react: np.ndarray, flexible, window_rounds: int, interval_s: int,
            band_per_kwh: float = 0.0, device_draw_wh: np.ndarray | None = None,
            device_supply_wh: np.ndarray | None = None) -> Response:
    """The households' response over one horizon to ``price_per_kwh`` (one price per round).

    base_load_wh / generation_wh: the forecasts, ``(rounds, households)``; stored_wh: the batteries' energy at
    the horizon's start; bank: their sizes (a ``BatteryBank``); active: households whose battery runs at all;
    react: those (of ``active``) whose battery follows the price, the others run self-consumption;
    flexible: a ``FlexibleLoadConfig`` or None; window_rounds: its window in rounds; band_per_kwh: 0 for the
    devices' all-or-nothing rules, > 0 for their proportional ones (``tc.response``);
    device_draw_wh / device_supply_wh: the price-responsive devices' answer to the same prices
    (``trexsim.devices.DeviceSet.respond_wh``), added to the load after the flexible share has moved (it is
    not part of what the share moves) and to the generation, before the batteries answer the need.
    """
    from trexsim.devices.flexible_load import shift_flexible_load
    from trexsim.devices.price_battery import dispatch_bank

    load = np.asarray(base_load_wh, dtype=np.float64)
    price = np.asarray(price_per_kwh, dtype=np.float64)
    if flexible is not None and flexible.share > 0:
        load = shift_flexible_load(load, price, flexible.share, flexible.max_power_w, window_rounds, interval_s,
                                   band_per_kwh)
    if device_draw_wh is not None:
        load = load + device_draw_wh
    if device_supply_wh is not None:
        generation_wh = generation_wh + device_supply_wh
    need = load - generation_wh
    c1, d1, s1 = dispatch_bank(bank, need, price, stored_wh, active & react, band_per_kwh)
    if not np.all(react[active]):  # batteries that do not react: self-consumption (a flat price gives no signal)
        flat = np.full(len(price), price[0] if len(price) else 0.0)
        c0, d0, s0 = dispatch_bank(bank, need, flat, stored_wh, active & ~react)
        c1, d1, s1 = c1 + c0, d1 + d0, np.where((active & react)[None, :], s1, s0)
    return Response(load, c1, d1, s1, need + c1 - d1, device_draw_wh, device_supply_wh)


def predict_intervals(engine, mapping, net_wh: np.ndarray, rounds_per_price: int, interval_s: int, pf_import: float,
                      pf_export: float, transformer_cols: np.ndarray, checked_nodes: np.ndarray,
                      basis: str = "interval_mean"):
    """``(loading_pct, voltage_dev_pu)`` per price interval of ``net_wh`` (rounds, participants).

    ``basis``: ``interval_mean`` solves once per interval on its mean net powers; ``round_peak`` solves every
    round and keeps each interval's worst (an hourly mean hides a 10-minute peak). engine: a powerflow engine
    with the feeder loaded and ``mapping``'s loads bound; a solve that does not converge gives NaN (the
    congestion component counts it as 0; ``round_peak`` ignores it if another round of the interval solved).
    """
    from trexsim.powerflow.replay import net_powers

    m = net_wh.shape[0]
    starts = np.arange(0, m, rounds_per_price)
    if basis == "round_peak":
        loading, dv = predict_intervals(engine, mapping, net_wh, 1, interval_s, pf_import, pf_export,
                                        transformer_cols, checked_nodes)
        with np.errstate(all="ignore"):
            return (np.array([np.nanmax(loading[a:a + rounds_per_price]) if np.isfinite(loading[a:a + rounds_per_price]).any()
                              else np.nan for a in starts]),
                    np.array([np.nanmax(dv[a:a + rounds_per_price]) if np.isfinite(dv[a:a + rounds_per_price]).any()
                              else np.nan for a in starts]))
    k = len(starts)
    sums = np.add.reduceat(net_wh, starts, axis=0)
    lengths = np.minimum(rounds_per_price, m - starts)
    p, q = net_powers(sums / lengths[:, None], interval_s, pf_import, pf_export)
    loading = np.full(k, np.nan)
    dv = np.full(k, np.nan)
    for j in range(k):
        engine.set_loads(mapping.expand(p[j]), mapping.expand(q[j]))
        if not engine.solve():
            continue
        snap = engine.results()
        loading[j] = snap.loading_pct[transformer_cols].max() if len(transformer_cols) else 0.0
        dv[j] = np.abs(snap.node_pu[checked_nodes] - 1.0).max() if len(checked_nodes) else 0.0
    return loading, dv


def lowest_voltage_pu(engine, mapping, net_wh: np.ndarray, interval_s: int, pf_import: float, pf_export: float,
                      checked_nodes: np.ndarray) -> float:
    """The lowest voltage [p.u.] of the checked nodes with every participant's net energy ``net_wh`` [Wh in one
    round] on the feeder (NaN: the powerflow did not solve; 1.0 with no checked node)."""
    from trexsim.powerflow.replay import net_powers

    p, q = net_powers(np.asarray(net_wh, dtype=np.float64)[None, :], interval_s, pf_import, pf_export)
    engine.set_loads(mapping.expand(p[0]), mapping.expand(q[0]))
    if not engine.solve():
        return float("nan")
    return float(engine.results().node_pu[checked_nodes].min()) if len(checked_nodes) else 1.0


def next_schedule(schedule: np.ndarray, base_per_kwh: np.ndarray, congestion_per_kwh: np.ndarray, iteration: int,
                  damping: float, update: str = "damped") -> np.ndarray:
    """The schedule after pass ``iteration`` (from 0): the first pass's prices as they are; later ones damped
    in (``damped``: ``(1 - damping) * schedule + damping * new``) or averaged (``averaging``, the method of
    successive averages: ``schedule + (new - schedule) / (iteration + 1)``, the mean of every pass's prices)."""
    new = base_per_kwh + congestion_per_kwh
    if iteration == 0:
        return new
    if update == "averaging":
        return schedule + (new - schedule) / (iteration + 1)
    return (1 - damping) * schedule + damping * new


@dataclass
class AdaptiveDamping:
    """What the ``adaptive`` update carries from one pass of a horizon to the next (per price interval, $/kWh).

    ``step``: the damping now in use (starts at ``tc.damping``, only ever falls); ``accepted`` and
    ``accepted_gap``: the schedule with the smallest gap so far and its ``F(p) - p``; ``lipschitz``: the largest
    secant estimate of ``F``'s Lipschitz constant (max-norm) seen between two passes; ``rejected``: passes whose
    gap rose, after which the step was halved."""

    step: float
    accepted: np.ndarray | None = None
    accepted_gap: np.ndarray | None = None
    last: np.ndarray | None = None
    last_implied: np.ndarray | None = None
    lipschitz: float = 0.0
    rejected: int = 0

    def used_step(self) -> float:
        """The step the next schedule takes: the damping, capped at ``1 / (1 + L)`` (see ``adaptive_schedule``)."""
        return min(self.step, 1.0 / (1.0 + self.lipschitz))


def adaptive_schedule(state: AdaptiveDamping, schedule_per_kwh: np.ndarray, implied_per_kwh: np.ndarray) -> np.ndarray:
    """The next schedule of the ``adaptive`` update, one price per interval [$/kWh]; updates ``state``.

    ``schedule_per_kwh`` is the schedule the households just answered, ``implied_per_kwh`` the prices its own
    prediction implies, ``F(p)``. The step is a damped one from the best schedule so far,
    ``p <- p_best + a (F(p_best) - p_best)``, with

    - ``a = min(damping, 1 / (1 + L))``, ``L`` the largest secant slope ``|F(p) - F(q)| / |p - q|`` measured
      between any two consecutive passes: where ``F`` falls in the price as ``F(p) = p_0 - L p`` per interval
      (a dearer hour draws less load, so less congestion), ``p - a (p - F(p))`` contracts by ``1 - a`` and does
      not overshoot for any ``a <= 1 / (1 + L)``;
    - a safeguard: a pass whose largest gap ``max |F(p) - p|`` is larger than the best one's is rejected, the
      damping is halved and the next step is taken again from the best schedule. Coupled intervals (flexible
      load moving into the next hour) make a secant see less than the full slope; the safeguard keeps the best
      gap from ever rising, and a small enough step contracts wherever ``F`` is continuous and ``p - F(p)``
      monotone (``F`` falls in the prices).
    """
    p = np.asarray(schedule_per_kwh, dtype=np.float64)
    f = np.nan_to_num(np.asarray(implied_per_kwh, dtype=np.float64))
    gap = f - p
    if state.last is not None:
        moved = float(np.max(np.abs(p - state.last))) if p.size else 0.0
        if moved > 1e-12:
            state.lipschitz = max(state.lipschitz, float(np.max(np.abs(f - state.last_implied))) / moved)
    state.last, state.last_implied = p.copy(), f.copy()
    size = float(np.max(np.abs(gap))) if gap.size else 0.0
    if state.accepted is None or size <= float(np.max(np.abs(state.accepted_gap))):
        state.accepted, state.accepted_gap = p.copy(), gap
    else:
        state.step /= 2.0
        state.rejected += 1
    return state.accepted + state.used_step() * state.accepted_gap


def bisect_congestion(low: np.ndarray, high: np.ndarray | None, congestion: np.ndarray,
                      implied: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One bisection step of the congestion component, per price interval: ``(low, high, next)`` [$/kWh].

    ``congestion`` is the component the schedule just asked about carried, ``implied`` the one its own
    prediction implies (``F``). A higher price never draws more load from a household (flexible loads move
    away from it, batteries discharge into it), so ``F`` falls as the component rises, and the fixed point
    ``c = F(c)`` lies above ``c`` where ``F(c) > c`` and below it otherwise. The first pass asks at
    ``c = 0`` (the tariff), whose ``F(0)`` bounds the fixed point from above (``high`` None: set it). Each
    pass halves every interval's bracket ``[low, high]`` and asks at its middle: after ``k`` passes the fixed
    point (or, where ``F`` jumps over the line ``F(c) = c``, the jump) is located within ``F(0) / 2**k``.
    Where the households' responses couple intervals (flexible load moving between them) the bracket still
    halves; whether it holds a fixed point is what the residual ``|F(c) - c|`` tells.
    """
    c = np.asarray(congestion, dtype=np.float64)
    f = np.nan_to_num(np.asarray(implied, dtype=np.float64))
    if high is None:
        low, high = np.zeros_like(c), np.maximum(f, c)
    else:
        above = f > c
        low = np.where(above, np.maximum(low, c), low)
        high = np.where(above, high, np.minimum(high, c))
    return low, high, (low + high) / 2.0


__all__ = ["AdaptiveDamping", "Response", "adaptive_schedule", "bisect_congestion", "lowest_voltage_pu", "next_schedule", "predict_intervals", "respond"]
