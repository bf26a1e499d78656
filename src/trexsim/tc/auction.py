"""The transactive double auction: TC that clears, interval by interval, instead of iterating a schedule.

The market of PNNL's transactive control (the GridLAB-D ``auction`` object, TESP's double auction: Hammerstrom
et al., *Pacific Northwest GridWise Testbed Demonstration Projects, Part I: Olympic Peninsula Project*, PNNL-17167,
2007; Huang et al., *TESP*, PNNL-28420): before every price interval of 5 to 60 minutes each household's devices
bid what they would draw at each price, the feeder's capacity is the supply at the tariff, and one uniform price
clears where they meet. ``tc.market: "double_auction"`` (docs/powerflow.md, "The TC double auction").

**Clearing** (:func:`clear_tc_auction`), one interval, energies in Wh over it. ``U`` is the households' unresponsive
net demand (what they draw whatever the price), each bid ``(p_k, q_k)`` buys ``q_k > 0`` at any price up to
``p_k`` or sells ``|q_k|`` (``q_k < 0``, a battery discharging into the feeder's load) at any price from ``p_k``;
``C`` is the capacity, ``b`` the tariff (the base price) and ``cap`` the price cap. With

    D⁺(p) = U + Σ_{q_k > 0, p_k > p} q_k − Σ_{q_k < 0, p_k ≤ p} |q_k|     (the demand that surely clears at p)

the clearing price is the lowest candidate ``p*`` in ``{b} ∪ {p_k : b < p_k < cap} ∪ {cap}`` with
``D⁺(p*) ≤ C``, and ``cap`` if there is none. Buy bids above ``p*`` clear whole, those at exactly ``p*`` the
share ``fill = min(1, (C − D⁺(p*)) / Q(p*))`` of their energy (``Q(p*)`` their sum; 0 at the cap when
``D⁺(cap) > C``), those below nothing; sell bids at or below ``p*`` are dispatched whole. So an uncongested
interval clears at the tariff, a congested one at the marginal bid's price, and demand that exceeds the capacity
even at the cap (unresponsive load) is served at the cap: the overload that prices cannot remove.

**Bids** (:func:`household_bids`), each household from its forecast of the interval (``tc.forecast``):

- inflexible net demand per round ``n_r = (1 − s) load_r − pv_r`` (``s`` the flexible share), its imports
  ``I = Σ max(n_r, 0)`` and surplus ``X = Σ max(−n_r, 0)``;
- flexible load: of the backlog ``B`` (flexible energy deferred earlier in the window) plus the interval's own
  ``F = s Σ load_r``, what would no longer fit the window's ``m`` later intervals at full power,
  ``M = max(0, B + F − m P_max Δt)``, must run now and is unresponsive (in the window's last interval, or the
  episode's, all of it); of the rest it bids ``min(B + F − M, max(0, max(P_max Δt, F) − M))`` at the urgency
  price ``b + (cap − b) u``, ``u`` the interval's position in its window from 0 (first interval) to 1 (last);
- a price-reactive battery stores surplus PV unresponsively (``min(X, room)``) and sets its thresholds from the
  market's expected prices over the next day as the schedule's threshold rule does
  (:func:`trexsim.devices.price_battery.battery_thresholds`: ``p_dis`` the ``n_dis``-th highest, ``p_ch`` the
  ``n_ch``-th lowest): it offers to cover its inflexible imports, ``min(I, discharge limit, stored η)``, at
  ``p_dis``, and bids to charge from the grid with what room is left at ``p_ch`` when
  ``p_ch < p_dis η²`` and ``p_ch`` is below the highest expected price. Expected prices without spread give no
  signal: the battery runs self-consumption, unresponsively. Batteries that do not react run self-consumption.

**Following** (:func:`follow_cleared`): when the interval is metered, each device does what its bid cleared, on
the real load: the flexible load runs the cleared share of its bid (within what is really there: backlog plus
``s`` times the real load), spread evenly over the interval's rounds, the rest stays in the backlog; a battery
whose offer was dispatched and whose charge bid did not clear runs self-consumption on the real meter; one whose
offer was not dispatched holds its energy (stores surplus PV only) and charges from the grid the cleared share of
its charge bid. Energies are whole Wh with running sums kept within 0.5 Wh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRICE_TOL = 1e-9  # prices closer than this are one price


@dataclass(frozen=True)
class AuctionResult:
    """One interval's clearing."""

    price_per_kwh: float       # the uniform clearing price
    fill: float                # share of the buy bids at exactly that price that clears
    cleared_wh: np.ndarray     # per bid: the energy that clears (bought > 0, sold < 0)
    demand_wh: float           # the cleared net demand: U + every cleared bid
    congested: bool            # the capacity binds (the price is above the tariff, or bids were cut)


def clear_tc_auction(unresponsive_wh: float, bid_price_per_kwh: np.ndarray, bid_wh: np.ndarray, capacity_wh: float,
                     base_price_per_kwh: float, price_cap_per_kwh: float) -> AuctionResult:
    """Clear one interval of the TC double auction (the module doc gives the rule)."""
    price = np.asarray(bid_price_per_kwh, dtype=np.float64)
    q = np.asarray(bid_wh, dtype=np.float64)
    if price.shape != q.shape or price.ndim != 1:
        raise ValueError("bid_price_per_kwh and bid_wh must be 1-d arrays of the same length")
    if not np.all(np.isfinite(price)) or not np.all(np.isfinite(q)):
        raise ValueError("bids must be finite")
    base, cap = float(base_price_per_kwh), float(price_cap_per_kwh)
    if cap <= base:
        raise ValueError(f"the price cap ({cap}) must be above the tariff ({base})")
    buy, sell = q > 0, q < 0
    inner = price[(price > base + PRICE_TOL) & (price < cap - PRICE_TOL)]
    candidates = np.unique(np.concatenate(([base], inner, [cap])))
    buy_p, buy_q = price[buy], q[buy]
    sell_p, sell_q = price[sell], -q[sell]
    # D⁺ at every candidate, from sorted bids: buys strictly above it, sells at or below it
    order_b = np.argsort(buy_p)
    above = buy_q[order_b].sum() - np.concatenate(([0.0], np.cumsum(buy_q[order_b])))[
        np.searchsorted(buy_p[order_b], candidates + PRICE_TOL, side="right")]
    order_s = np.argsort(sell_p)
    at_or_below = np.concatenate(([0.0], np.cumsum(sell_q[order_s])))[
        np.searchsorted(sell_p[order_s], candidates + PRICE_TOL, side="right")]
    d_plus = float(unresponsive_wh) + above - at_or_below
    fits = np.flatnonzero(d_plus <= capacity_wh + 1e-9)
    j = int(fits[0]) if fits.size else len(candidates) - 1
    p_star = float(candidates[j])
    marginal = buy & (np.abs(price - p_star) <= PRICE_TOL)
    q_marginal = float(q[marginal].sum())
    fill = 1.0 if q_marginal <= 0 else float(np.clip((capacity_wh - d_plus[j]) / q_marginal, 0.0, 1.0))
    cleared = np.where(buy, bid_share(price, p_star, fill) * q, np.where(price <= p_star + PRICE_TOL, q, 0.0))
    demand = float(unresponsive_wh) + float(cleared.sum())
    congested = p_star > base + PRICE_TOL or fill < 1.0 or demand > capacity_wh + 1e-9
    return AuctionResult(p_star, fill, cleared, demand, bool(congested))


def bid_share(bid_price_per_kwh, clearing_price_per_kwh: float, fill: float) -> np.ndarray:
    """The share of a buy bid that clears: 1 above the clearing price, ``fill`` at it, 0 below."""
    p = np.asarray(bid_price_per_kwh, dtype=np.float64)
    return np.where(p > clearing_price_per_kwh + PRICE_TOL, 1.0,
                    np.where(np.abs(p - clearing_price_per_kwh) <= PRICE_TOL, fill, 0.0))


@dataclass
class HouseholdBids:
    """One interval's bids of a population's households, arrays ``(households,)`` (energies in Wh over it)."""

    unresponsive_wh: np.ndarray
    flexible_wh: np.ndarray        # the flexible load's bid
    flexible_must_wh: np.ndarray   # flexible energy that must run now (in unresponsive_wh): the window ends
    flexible_price: float
    must_run: bool
    offer_wh: np.ndarray           # battery discharge offered (>= 0)
    offer_price: np.ndarray
    charge_wh: np.ndarray          # battery charging from the grid bid (>= 0)
    charge_price: np.ndarray
    reacting: np.ndarray           # batteries that bid (with a price signal); the others run self-consumption

    def rows(self, roster_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(participant, price, wh)`` of every bid with energy, as a :class:`TCPlan` carries them."""
        n = self.unresponsive_wh.size
        participant = np.concatenate([roster_index] * 3)
        price = np.concatenate((np.full(n, self.flexible_price), self.offer_price, self.charge_price))
        wh = np.concatenate((self.flexible_wh, -self.offer_wh, self.charge_wh))
        keep = wh != 0
        return participant[keep].astype(np.int64), price[keep], wh[keep]


def urgency(first_round: int, window_rounds: int, price_rounds: int) -> float:
    """The interval's position in its flexible-load window: 0 for the first interval, 1 for the last."""
    if window_rounds <= price_rounds:
        return 1.0
    return min(1.0, (first_round % window_rounds) / (window_rounds - price_rounds))


def household_bids(load_wh: np.ndarray, generation_wh: np.ndarray, share: float, max_flexible_wh: float,
                   backlog_wh: np.ndarray, must_run: bool, intervals_left: int, urgency_share: float,
                   stored_wh: np.ndarray, bank,
                   react: np.ndarray, active: np.ndarray, expected_price_per_kwh: np.ndarray, base_price_per_kwh: float,
                   price_cap_per_kwh: float) -> HouseholdBids:
    """The households' bids for one interval (the module doc gives the rules).

    load_wh / generation_wh: the forecast, ``(rounds, households)``; share / max_flexible_wh: the flexible load's
    share and power limit as Wh per round (0 share: no flexible load); backlog_wh: flexible energy deferred
    earlier in the window; must_run: the window's (or episode's) last interval; intervals_left: the window's
    intervals after this one; urgency_share: :func:`urgency`;
    stored_wh: the batteries' energy; bank: their sizes (a ``BatteryBank``); active: batteries that run at all,
    react: those (of active) that bid; expected_price_per_kwh: the market's expected prices over the next day,
    one per round."""
    from trexsim.devices.price_battery import battery_thresholds

    load = np.asarray(load_wh, dtype=np.float64)
    gen = np.asarray(generation_wh, dtype=np.float64)
    rounds = load.shape[0]
    flexible_new = share * load.sum(axis=0)
    flexible_all = np.asarray(backlog_wh, dtype=np.float64) + flexible_new
    # what must run now so the rest still fits the window's later intervals at full power
    flexible_unresp = np.maximum(flexible_all - max_flexible_wh * rounds * intervals_left, 0.0)
    if must_run:
        flexible_unresp = flexible_all
    flexible_bid = np.minimum(flexible_all - flexible_unresp,
                              np.maximum(np.maximum(max_flexible_wh * rounds, flexible_new) - flexible_unresp, 0.0))
    net = (1.0 - share) * load - gen
    imports = np.maximum(net, 0.0).sum(axis=0)
    surplus = np.maximum(-net, 0.0).sum(axis=0)
    stored = np.asarray(stored_wh, dtype=np.float64)
    has = active & (bank.capacity_wh > 0)
    room = np.where(has, np.minimum(bank.charge_limit_wh * rounds, np.maximum(bank.capacity_wh - stored, 0.0)
                                    / bank.efficiency), 0.0)
    deliverable = np.where(has, np.minimum(bank.discharge_limit_wh * rounds, stored * bank.efficiency), 0.0)
    store = np.minimum(surplus, room)
    expected = np.asarray(expected_price_per_kwh, dtype=np.float64)
    signal = expected.size > 0 and float(np.ptp(expected)) > PRICE_TOL
    reacting = has & react & signal
    cover = np.minimum(imports, deliverable)
    offer = np.where(reacting, cover, 0.0)
    p_dis, p_ch = battery_thresholds(expected if expected.size else np.zeros(1), bank)
    charge_ok = reacting & (p_ch < float(expected.max(initial=0.0)) - PRICE_TOL) & (p_ch < p_dis * bank.efficiency ** 2
                                                                                     - PRICE_TOL)
    charge = np.where(charge_ok, np.maximum(room - store, 0.0), 0.0)
    self_consuming = has & ~reacting
    unresponsive = imports - surplus + store - np.where(self_consuming, cover, 0.0) + flexible_unresp
    flexible_price = float(base_price_per_kwh + (price_cap_per_kwh - base_price_per_kwh) * urgency_share)
    return HouseholdBids(unresponsive, flexible_bid, flexible_unresp, flexible_price, bool(must_run), offer, p_dis,
                         charge, p_ch, reacting)


def follow_cleared(bids: HouseholdBids, price_per_kwh: float, fill: float, share: float, real_load_wh: np.ndarray,
                   real_generation_wh: np.ndarray, backlog_wh: np.ndarray):
    """What the households do in the interval under the cleared price: ``(load_wh, setpoint_wh, following,
    backlog_after_wh)`` — the metered consumption and battery set-points per round (whole Wh, ``(rounds,
    households)``), the batteries that follow the set-points (the others run self-consumption) and the flexible
    energy still deferred at the interval's end."""
    from trexsim.tc.households import whole_wh

    real = np.asarray(real_load_wh, dtype=np.float64)
    gen = np.asarray(real_generation_wh, dtype=np.float64)
    rounds = real.shape[0]
    flexible_real = share * real
    available = np.asarray(backlog_wh, dtype=np.float64) + flexible_real.sum(axis=0)
    if bids.must_run:
        run = available
    else:
        run = np.minimum(available, bids.flexible_must_wh
                         + bid_share(bids.flexible_price, price_per_kwh, fill) * bids.flexible_wh)
    inflexible = real - flexible_real
    load = whole_wh(inflexible + run[None, :] / max(rounds, 1))
    run = load.sum(axis=0) - inflexible.sum(axis=0)   # what ran in whole Wh: the backlog keeps the rounding
    dispatched = bids.offer_price <= price_per_kwh + PRICE_TOL
    charge = bid_share(bids.charge_price, price_per_kwh, fill) * bids.charge_wh
    following = bids.reacting & (~dispatched | (charge > 0))
    surplus = np.maximum(gen - load, 0.0)
    setpoint = np.rint(surplus + charge[None, :] / max(rounds, 1)).astype(np.int64)
    return load, setpoint, following, available - run


__all__ = ["AuctionResult", "HouseholdBids", "bid_share", "clear_tc_auction", "follow_cleared", "household_bids",
           "urgency"]
