"""market.tie_break: who trades among orders at equal prices (random, pro_rata, submission)."""

from __future__ import annotations

import copy

import duckdb
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trexsim.config.loader import parse_config
from trexsim.engine.mechanisms import clear_round, get_mechanism
from trexsim.engine.ties import PRO_RATA, RANDOM, SUBMISSION, participant_rank, submission_order, tie_key
from trexsim.simulation import Simulation

M1 = get_mechanism("average_price")
M2 = get_mechanism("exact_match")


def _clear(book, rule, mechanism=M1, key=0, delivery_round=0, n=None):
    """book: rows (participant, side, pool, price, quantity); returns (buyer, seller, quantity) per match."""
    a = np.array(book, dtype=float).reshape(-1, 5)
    n = int(a[:, 0].max()) + 1 if n is None else n
    res = clear_round(mechanism, a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.int64), a[:, 3],
                      a[:, 4].astype(np.int64), np.arange(len(a)), np.zeros(len(a), dtype=np.int64), n,
                      tie_break=rule, key=key, delivery_round=delivery_round)
    return res


def test_hand_worked_two_equal_sellers_one_buyer():
    # seller 0 and seller 1 both ask 100 Wh at 0.10; buyer 2 bids 100 Wh at 0.12
    book = [(0, 1, 0, 0.10, 100), (1, 1, 0, 0.10, 100), (2, 0, 0, 0.12, 100)]
    sold = _clear(book, SUBMISSION)[9]
    assert sold.tolist() == [100, 0, 0]  # the one listed first takes it all
    sold = _clear(book, PRO_RATA)[9]
    assert sold.tolist() == [50, 50, 0]
    # random: whoever the round's draw puts first; over many rounds each wins about half
    wins = np.zeros(2)
    for d in range(400):
        sold = _clear(book, RANDOM, key=12345, delivery_round=d)[9]
        assert sorted(sold.tolist()) == [0, 0, 100]
        wins += sold[:2] / 100
    assert 160 <= wins[0] <= 240 and wins.sum() == 400


def test_pro_rata_largest_remainder_hand_worked():
    # asks of 100 and 200 Wh at one price share a 100 Wh bid: 33.3 -> 33 and 66.7 -> 67 (larger remainder)
    book = [(0, 1, 0, 0.10, 100), (1, 1, 0, 0.10, 200), (2, 0, 0, 0.12, 100)]
    res = _clear(book, PRO_RATA)
    assert res[9].tolist() == [33, 67, 0] and res[8].tolist() == [0, 0, 100]
    # three equal bids share 100 Wh: 33.3 each, the single spare Wh to the first in submission order
    book = [(0, 0, 0, 0.12, 50), (1, 0, 0, 0.12, 50), (2, 0, 0, 0.12, 50), (3, 1, 0, 0.10, 100)]
    assert _clear(book, PRO_RATA)[8].tolist() == [34, 33, 33, 0]
    # M2: only the equal-price level trades; it shares 60 Wh among bids of 40 and 80 -> 20 and 40
    book = [(0, 0, 0, 0.11, 40), (1, 0, 0, 0.11, 80), (2, 0, 0, 0.12, 30), (3, 1, 0, 0.11, 60)]
    assert _clear(book, PRO_RATA, M2)[8].tolist() == [20, 40, 0, 0]
    # a level that trades in full, and a better-priced order, are untouched by the rule
    book = [(0, 0, 0, 0.13, 30), (1, 0, 0, 0.12, 40), (2, 0, 0, 0.12, 40), (3, 1, 0, 0.10, 110)]
    assert _clear(book, PRO_RATA)[8].tolist() == [30, 40, 40, 0]


def test_participant_rank_is_a_fresh_permutation_each_round():
    ranks = [participant_rank(tie_key(42), 0, d, 10) for d in range(50)]
    for r in ranks:
        assert sorted(r.tolist()) == list(range(10))
    assert len({tuple(r) for r in ranks}) == 50
    # who comes first is spread evenly over rounds
    firsts = np.bincount([int(np.argmin(r)) for r in (participant_rank(tie_key(1), 0, d, 4) for d in range(2000))], minlength=4)
    assert firsts.min() > 400
    assert np.array_equal(participant_rank(tie_key(42), 0, 7, 10), participant_rank(tie_key(42), 0, 7, 10))
    assert not np.array_equal(participant_rank(tie_key(42), 1, 7, 10), participant_rank(tie_key(42), 0, 7, 10))


_orders = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1), st.integers(0, 1),
                             st.sampled_from([0.10, 0.11, 0.12]), st.integers(1, 400)), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(_orders, st.sampled_from([M1, M2]))
def test_pro_rata_shares_each_level_by_quantity(book, mech):
    a = np.array(book, dtype=float)
    base = _clear(book, SUBMISSION, mech, n=6)
    pro = _clear(book, PRO_RATA, mech, n=6)
    # money and energy of every match, and nobody trades more than it offered
    filled = np.zeros(len(a))
    res = clear_round(mech, a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.int64), a[:, 3],
                      a[:, 4].astype(np.int64), np.arange(len(a)), np.zeros(len(a), dtype=np.int64), 6, tie_break=PRO_RATA)
    np.add.at(filled, res[6], res[3])
    np.add.at(filled, res[7], res[3])
    assert (filled <= a[:, 4]).all()
    assert int(pro[8].sum()) == int(pro[9].sum())
    self_trade_free = len({int(p) for p, s, *_ in book if s == 0} & {int(p) for p, s, *_ in book if s == 1}) == 0
    if self_trade_free:
        # the total traded is the same as under submission order, level by level on each side
        assert int(pro[3].sum()) == int(base[3].sum())
        for pool in (0, 1):
            for side in (0, 1):
                for price in (0.10, 0.11, 0.12):
                    level = np.flatnonzero((a[:, 1] == side) & (a[:, 2] == pool) & (a[:, 3] == price))
                    if level.size == 0:
                        continue
                    total = a[level, 4].sum()
                    traded = filled[level].sum()
                    # each order's fill is its quantity's share of the level, to within the 1 Wh of rounding
                    assert np.all(np.abs(filled[level] - traded * a[level, 4] / total) < 1.0)


def _community(tie_break, reverse=False, seed=42):
    cfg = {"study": {"name": "ties", "start_datetime": "2021-07-01 00:00:00", "timezone": "America/Edmonton",
                     "days": 1, "episodes": 1, "seed": seed, "interval_s": 60},
           "market": {"settlement": "average_price", "close_steps": 1, "tie_break": tie_break,
                      "grid": {"buy_price": 0.1449, "sell_price": 0.069}},
           "participants": {}}
    # six identical flat PV households and one buyer
    names = [f"p{i}" for i in range(6)]
    for name in (reversed(names) if reverse else names):
        cfg["participants"][name] = {"profile": {"type": "flat", "load_w": 0, "generation_w": 6000},
                                     "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}}
    cfg["participants"]["buyer"] = {"profile": {"type": "flat", "load_w": 12000, "generation_w": 0},
                                    "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}}
    return parse_config(cfg)


def _sold_by_id(result):
    con = duckdb.connect(str(result.database), read_only=True)
    rows = con.execute("SELECT p.participant_id, sum(s.quantity_wh) FROM settlements s JOIN participants p "
                       "ON p.participant = s.seller GROUP BY 1").fetchall()
    con.close()
    return {pid: int(q) for pid, q in rows}


def test_identical_sellers_share_the_market_unless_submission(tmp_path):
    # six identical sellers of 100 Wh a round, one buyer of 200 Wh: two of the six sell in each of the
    # 1,439 traded rounds (round 0 has no orders: they would have been placed before the run)
    sub = _sold_by_id(Simulation(_community("submission"), tmp_path / "s").run(plots=False))
    assert sub == {"p0": 143_900, "p1": 143_900}  # the first two listed win every round
    fair = 287_800 / 6
    rand = _sold_by_id(Simulation(_community("random"), tmp_path / "r").run(plots=False))
    assert sum(rand.values()) == 287_800 and len(rand) == 6
    assert min(rand.values()) > 0.8 * fair and max(rand.values()) < 1.2 * fair
    rev = _sold_by_id(Simulation(_community("random", reverse=True), tmp_path / "rr").run(plots=False))
    # listing order no longer decides: every seller's share stays near a sixth however the list is ordered
    assert min(rev.values()) > 0.8 * fair and max(rev.values()) < 1.2 * fair
    pro = _sold_by_id(Simulation(_community("pro_rata"), tmp_path / "p").run(plots=False))
    # 200 Wh over six asks of 100: 33 or 34 Wh each round, the spare Wh by submission order
    assert sum(pro.values()) == 287_800 and all(1_439 * 33 <= v <= 1_439 * 34 for v in pro.values())
    again = _sold_by_id(Simulation(_community("random"), tmp_path / "r2").run(plots=False))
    assert again == rand  # same seed, same ledger
    other = _sold_by_id(Simulation(_community("random", seed=43), tmp_path / "r3").run(plots=False))
    assert other != rand


def test_random_is_the_default():
    cfg = copy.deepcopy(_community("random").model_dump())
    del cfg["market"]["tie_break"]
    assert parse_config(cfg).market.tie_break == "random"


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.lists(st.tuples(st.integers(0, 59), st.integers(0, 2)), max_size=150),
       st.integers(0, 2**62), st.integers(0, 5), st.integers(0, 1439))
def test_the_random_order_from_the_markets_rank_is_the_order_from_the_draws(n, orders, key, episode, delivery_round):
    """The market sorts its book by the participant rank it already computed for tie_rank (a counting sort);
    the envs and the study sort the draws. Same book, same order."""
    participant = np.array([p % n for p, _ in orders], dtype=np.int64)
    placed = np.array([r for _, r in orders], dtype=np.int64)
    from_draws = submission_order(participant, placed, n, RANDOM, key, episode, delivery_round)
    from_rank = submission_order(participant, placed, n, RANDOM, key, episode, delivery_round,
                                 participant_rank(key, episode, delivery_round, n))
    assert from_draws.tolist() == from_rank.tolist()
