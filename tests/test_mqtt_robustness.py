"""Bad messages, a killed participant process, the barrier's timeout and a rejoin — against a real Mosquitto.

The coordinator (controller, grid, market, recorder) runs in the test process; the households run in
``trexsim node participants`` processes, two groups: grp-0-of-2 = pro-1..pro-3 (indices 0-2),
grp-1-of-2 = con-1, con-2 (indices 3, 4).
"""

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import msgspec
import numpy as np
import pytest

from test_mqtt_fabric import MOSQUITTO, broker, community  # noqa: F401 - broker is a fixture

pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed")
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

from trexsim import parse_config  # noqa: E402
from trexsim.fabric.messages import Ack, Hello, MeterReadings, Orders  # noqa: E402
from trexsim.fabric.mqtt import _DECODER, _ENCODER, MqttFabric, _Envelope  # noqa: E402
from trexsim.node import profile_meter_fallback  # noqa: E402
from trexsim.simulation import Simulation  # noqa: E402

IDS = ["pro-1", "pro-2", "pro-3", "con-1", "con-2"]
ROUNDS = 30


def setup(tmp_path, url, name, barrier_timeout_s=5.0):
    cfg = community().model_dump(mode="json", by_alias=True)
    cfg["study"].update(days=ROUNDS / 1440, name=name)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    config = parse_config(cfg)
    local = Simulation(config, tmp_path / "local").run(plots=False)
    ns = f"test/{name}"
    net = MqttFabric(url, ns, role="coordinator", participant_ids=IDS, barrier_timeout_s=barrier_timeout_s, timeout_s=30)
    sim = Simulation(config, tmp_path / "net", fabric=net, local_participants=False)
    net.meter_fallback = profile_meter_fallback(config)
    return path, ns, net, sim, local.database


def node(path, url, ns, group):
    return subprocess.Popen([sys.executable, "-m", "trexsim", "node", "participants", str(path), "--fabric", url,
                             "--namespace", ns, "--group", str(group), "--groups", "2", "--timeout", "20"])


def query(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def book(db, where="true"):
    return (query(db, "SELECT delivery_round, pool, buyer, seller, quantity_wh, buyer_price, seller_price FROM settlements "
                      f"WHERE {where.replace('round', 'delivery_round')} ORDER BY ALL"),
            query(db, f"SELECT * EXCLUDE (episode) FROM deliveries WHERE {where} ORDER BY round, participant"))


def first_orders(payload):
    """The Orders in a participant process's answer to a round bundle (None if it placed none)."""
    return first_orders_of(_DECODER.decode(payload).message.items)


def first_orders_of(items):
    return next((m for m in items if type(m).__name__ == "Orders"), None)


def test_every_kind_of_bad_message_is_refused_recorded_and_answered(tmp_path, broker):  # noqa: F811
    path, ns, net, sim, local_db = setup(tmp_path, broker, "bad")
    nodes = [node(path, broker, ns, 0), node(path, broker, ns, 1)]
    mallory = MqttFabric(broker, ns, role="participants", account="grp-0-of-2")
    seen_orders = []
    # what the real grp-0-of-2 process answers each round bundle with: its meter readings, orders and Ack in one message
    mallory._client.message_callback_add(f"{ns}/p/grp-0-of-2/round", lambda c, u, m: seen_orders.append(m.payload))
    mallory._client.subscribe(f"{ns}/p/grp-0-of-2/round", qos=1)
    topic = f"{ns}/p/grp-0-of-2"

    def inject(episode, next_round):
        if next_round != 6:
            return
        k = next_round - 1  # the round the market is in now
        raw = mallory._client.publish
        raw(f"{topic}/orders", b"\x93garbage", qos=1)  # malformed
        raw(f"{topic}/meter", b"\x00" * ((1 << 20) + 1), qos=1)  # oversized
        big = (1 << 40) - 10  # above every id grp-0-of-2 uses, so only the price is wrong
        one = lambda v, dt=np.int64: np.array([v], dtype=dt)  # noqa: E731
        # (for delivery k + 2: the market has already cleared k + 1, so an order for it is too late)
        mallory._send(f"{topic}/orders", Orders(0, k, k + 2, one(0), one(0), one(0), one(99.0, float), one(500), one(big)))
        # an order for k + 1, which the market cleared at the end of round k, sent before round k + 1 starts:
        # too late, refused and recorded (it used to be booked and never traded)
        mallory._send(f"{topic}/orders", Orders(0, k, k + 1, one(0), one(0), one(0), one(0.12, float), one(500), one(big + 3)))
        mallory._send(f"{topic}/orders", Orders(0, k - 3, k - 2, one(1), one(0), one(0), one(0.12, float), one(500), one(big + 1)))
        mallory._send(f"{topic}/orders", Orders(0, k, k + 1, one(4), one(0), one(0), one(0.12, float), one(500), one(big + 2)))
        meter = lambda r, load: MeterReadings(0, r, one(2), one(load), one(0), one(0), one(0), one(0.0, float), one(load))  # noqa: E731
        mallory._send(f"{topic}/meter", meter(k, -5))  # out of range
        mallory._send(f"{topic}/meter", meter(k - 3, 5))  # stale
        # a replay of the group's first answer (round 0's meter readings: stale; its orders: replayed ids; its Ack
        # of an old bundle: nothing), and of those orders alone
        first = next(p for p in seen_orders if first_orders(p) is not None)
        raw(f"{topic}/round", first, qos=1)
        sender = _DECODER.decode(first).sender
        raw(f"{topic}/orders", _ENCODER.encode(_Envelope(sender, 0, first_orders(first))), qos=1)
        net.poll(1.0)

    try:
        net.wait_for_hellos(2, timeout_s=60)
        sim.run(on_round=inject, plots=False)
        for n in nodes:
            assert n.wait(timeout=20) == 0
    finally:
        for n in nodes:
            n.kill()
        net.close()
    first = _DECODER.decode(next(p for p in seen_orders if first_orders(p) is not None)).message.items
    replayed = len(first_orders_of(first).order_id)
    stale = sum(len(m.participant) for m in first if type(m).__name__ == "MeterReadings")  # one row per household
    reasons = dict(query(sim.db_path, "SELECT reason, count(*) FROM rejections GROUP BY reason"))
    assert stale == 3 and reasons == {
        "malformed": 1, "oversized": 1, "price_out_of_range": 1, "wrong_round": 2 + stale, "delivery_too_near": 1,
        "participant_not_sender": 1, "meter_out_of_range": 1, "duplicate_order_id": 2 * replayed}
    assert query(sim.db_path, "SELECT round, participant, price FROM rejections WHERE reason = 'price_out_of_range'") == [(5, 0, 99.0)]
    # none of it changed a contract or a bill
    assert book(sim.db_path) == book(local_db)
    # each refusal was answered on the sender's own topic
    answers = []
    while not mallory._inbox.empty():
        mqtt_topic, payload = mallory._inbox.get()
        if mqtt_topic.endswith("/settlements"):
            msg = _DECODER.decode(payload).message
            for m in (msg.items if type(msg).__name__ == "Bundle" else [msg]):  # a round bundle holds its Rejected rows
                answers.extend([m.reason] if type(m).__name__ == "Error" else
                               m.reason if type(m).__name__ == "Rejected" else [])
    mallory.close()
    assert sorted(set(answers)) == sorted(reasons)


def _rows_of(db, participants, first_round, last_round):
    return query(db, f"SELECT round, participant, load_wh, generation_wh, battery_charge_wh, battery_discharge_wh, "
                     f"net_meter_wh, bought_wh, sold_wh, grid_import_wh, grid_export_wh FROM deliveries "
                     f"WHERE participant IN ({', '.join(map(str, participants))}) AND round BETWEEN {first_round} AND {last_round} "
                     f"ORDER BY round, participant")


def test_a_participant_process_killed_mid_run(tmp_path, broker):  # noqa: F811
    path, ns, net, sim, local_db = setup(tmp_path, broker, "kill", barrier_timeout_s=2.0)
    nodes = [node(path, broker, ns, 0), node(path, broker, ns, 1)]

    def kill(episode, next_round):
        if next_round == 10:
            nodes[1].send_signal(signal.SIGKILL)
            nodes[1].wait(timeout=10)

    try:
        net.wait_for_hellos(2, timeout_s=60)
        sim.run(on_round=kill, plots=False)
        assert nodes[0].wait(timeout=20) == 0
    finally:
        for n in nodes:
            n.kill()
        net.close()
    assert nodes[1].returncode == -signal.SIGKILL
    db = sim.db_path
    # everything before the kill is the in-process ledger
    assert book(db, "round < 10") == book(local_db, "round < 10")
    assert query(db, "SELECT count(*) FROM deliveries") == [(ROUNDS * 5,)]
    # afterwards the lost households are settled from their profiles, battery idle, the grid taking the rest
    missing = query(db, "SELECT participant, min(round), count(*) FROM rejections WHERE reason = 'meter_missing' GROUP BY ALL ORDER BY 1")
    assert missing == [(3, 10, ROUNDS - 10), (4, 10, ROUNDS - 10)]
    after, reference = _rows_of(db, [3, 4], 10, ROUNDS - 1), _rows_of(local_db, [3, 4], 10, ROUNDS - 1)
    assert [r[:4] for r in after] == [r[:4] for r in reference]  # same load and generation
    for _, _, load, gen, charge, discharge, net_wh, bought, sold, imp, exp in after:
        assert charge == discharge == 0 and net_wh == load - gen
        assert imp - exp == net_wh - bought + sold
    # orders they placed before the kill were still delivered (round 10's contracts); none after
    assert query(db, "SELECT count(*) FROM orders WHERE participant IN (3, 4) AND round >= 10") == [(0,)]
    assert [e["event"] for e in net.events] in (["left"], ["late"], ["late", "left"])


def test_the_barrier_goes_on_without_a_silent_process_and_takes_it_back(tmp_path, broker):  # noqa: F811
    path, ns, net, sim, local_db = setup(tmp_path, broker, "barrier", barrier_timeout_s=10.0)
    real = node(path, broker, ns, 0)
    silent = MqttFabric(broker, ns, role="participants", account="grp-1-of-2")
    waits, kinds = [], []

    def churn(episode, next_round):
        if next_round == 5:  # joins, then never acknowledges anything
            net.barrier_timeout_s = 0.5
            net.timeout_s = 0.5  # how long a process that never finished a round (loading its profiles) is waited for
            silent._send(f"{ns}/fabric/hello/grp-1-of-2", Hello(silent.sender, "participants", "grp-1-of-2"))
            net.poll(0.3)
        if next_round == 15:  # one acknowledgement (of the latest round start) brings it back into the barrier
            last = None
            while not silent._inbox.empty():
                mqtt_topic, payload = silent._inbox.get()
                envelope = _DECODER.decode(payload)
                if mqtt_topic.endswith("/settlements"):
                    kinds.append(type(envelope.message).__name__)
                    if kinds[-1] == "Bundle" and type(envelope.message.items[-1]).__name__ == "RoundStart":
                        last = envelope.sequence  # the latest round start, as this process's bundle
            silent._send(f"{ns}/fabric/ack/grp-1-of-2", Ack(silent.sender, net.sender, last))
            net.poll(0.3)
        waits.append(time.monotonic())

    try:
        net.wait_for_hellos(1, timeout_s=60)
        sim.run(on_round=churn, plots=False)
        assert real.wait(timeout=20) == 0
    finally:
        real.kill()
        net.close()
    events = [(e["event"], e["account"], e["round"]) for e in net.events]
    assert events == [("joined", "grp-1-of-2", 4), ("late", "grp-1-of-2", 5), ("rejoined", "grp-1-of-2", 14),
                      ("late", "grp-1-of-2", 15)]
    # it cost the run two waits of 0.5 s (rounds 5 and 15), not one per round
    gaps = np.diff(waits)
    assert 0.5 <= gaps[4] < 1.5 and 0.5 <= gaps[14] < 1.5
    assert sorted(gaps)[-3] < 0.5
    silent.close()
    # it got the catch-up on its own topic: the roster, the episode, the grid's prices
    # and from the next round on, its round starts in its round bundles (waited for, never acknowledged)
    assert kinds[:3] == ["Roster", "EpisodeStart", "GridPrices"] and kinds[3:] and set(kinds[3:]) == {"Bundle"}
    db = sim.db_path
    assert query(db, "SELECT count(*) FROM rejections WHERE reason = 'meter_missing'") == [(ROUNDS * 2,)]
    # the silent households are settled on the profiles their own process would have read
    assert [r[:4] for r in _rows_of(db, [3, 4], 0, ROUNDS - 1)] == [r[:4] for r in _rows_of(local_db, [3, 4], 0, ROUNDS - 1)]


def test_a_restarted_participant_process_rejoins(tmp_path, broker):  # noqa: F811
    path, ns, net, sim, local_db = setup(tmp_path, broker, "rejoin", barrier_timeout_s=2.0)
    nodes = [node(path, broker, ns, 0), node(path, broker, ns, 1)]

    def churn(episode, next_round):
        if next_round == 8:
            nodes[1].send_signal(signal.SIGKILL)
            nodes[1].wait(timeout=10)
            net.poll(0.3)
        if next_round == 12:
            nodes.append(node(path, broker, ns, 1))
            # its hello replaces the lost process of the same account (one process per account)
            deadline = time.monotonic() + 60
            while not any(e["event"] == "joined" for e in net.events) and time.monotonic() < deadline:
                net.poll(0.05)

    try:
        net.wait_for_hellos(2, timeout_s=60)
        sim.run(on_round=churn, plots=False)
        assert nodes[0].wait(timeout=20) == 0 and nodes[2].wait(timeout=20) == 0
    finally:
        for n in nodes:
            n.kill()
        net.close()
    db = sim.db_path
    # its connection's drop (the last will) or, if the round came first, the barrier's timeout; then its hello
    assert [e["event"] for e in net.events] in (["left", "joined"], ["late", "joined"])
    missing = query(db, "SELECT DISTINCT round FROM rejections WHERE reason = 'meter_missing' ORDER BY 1")
    assert [r[0] for r in missing] == [8, 9, 10, 11]
    assert query(db, "SELECT count(*) FROM rejections WHERE reason <> 'meter_missing'") == [(0,)]
    rounds_with_orders = [r[0] for r in query(db, "SELECT DISTINCT round FROM orders WHERE participant IN (3, 4) ORDER BY 1")]
    assert [r for r in rounds_with_orders if 8 <= r < 12] == []
    assert set(range(12, ROUNDS - 1)) <= set(rounds_with_orders)
    # back in: its meter readings are its own again (the profile's load, no fallback rows)
    assert [r[:4] for r in _rows_of(db, [3, 4], 12, ROUNDS - 1)] == [r[:4] for r in _rows_of(local_db, [3, 4], 12, ROUNDS - 1)]


def test_the_gate_by_hand(broker):  # noqa: F811
    """Duplicate ids within one message, a second reading in a round, an unknown account — one message each."""
    from trexsim.fabric import topics
    from trexsim.fabric.messages import EpisodeStart, RoundStart

    ns = "test/gate"
    market = MqttFabric(broker, ns, role="market", participant_ids=IDS)
    house = MqttFabric(broker, ns, role="participants", account="grp-0-of-2")  # roster indices 0, 1, 2
    stranger = MqttFabric(broker, ns, role="participants", account="nobody")
    got = {topic: [] for topic in (topics.ORDERS, topics.METER, topics.REJECTED)}
    for topic, seen in got.items():
        market.subscribe(topic, seen.append)
    market.publish(topics.EPISODE_START, EpisodeStart(0, 0, 10, 60))
    market.publish(topics.ROUND_START, RoundStart(0, 3, 180, 60, 4))
    a = lambda *v, dt=np.int64: np.array(v, dtype=dt)  # noqa: E731
    meter = lambda *p: MeterReadings(0, 3, a(*p), a(*[10] * len(p)), a(*[0] * len(p)), a(*[0] * len(p)),  # noqa: E731
                                     a(*[0] * len(p)), a(*[0.0] * len(p), dt=float), a(*[10] * len(p)))
    try:
        # participant 0 uses id 5 twice: the second is a replay; participant 1's id 5 is its own
        house.publish(topics.ORDERS, Orders(0, 3, 4, a(0, 0, 1), a(0, 0, 1), a(0, 0, 0), a(0.1, 0.1, 0.1, dt=float),
                                            a(100, 200, 300), a(5, 5, 5)))
        house.publish(topics.METER, meter(0, 1))
        house.publish(topics.METER, meter(1))  # a second reading for participant 1 in round 3
        stranger.publish(topics.ORDERS, Orders(0, 3, 4, a(3), a(0), a(0), a(0.1, dt=float), a(100), a(1)))
        market.poll(3.0)  # generous: a loaded machine may take a while
    finally:
        for f in (market, house, stranger):
            f.close()
    assert [(o.participant.tolist(), o.quantity_wh.tolist()) for o in got[topics.ORDERS]] == [([0, 1], [100, 300])]
    assert [m.participant.tolist() for m in got[topics.METER]] == [[0, 1]]
    # (two senders: their messages may arrive in either order)
    assert sorted((r.reason, r.participant.tolist(), r.order_id.tolist()) for r in got[topics.REJECTED]) == [
        (["duplicate_meter"], [1], [-1]), (["duplicate_order_id"], [0], [5]),
        (["unknown_account"], [-1], [1])]  # recorded as the sender's (no household), not as index 3's


def test_random_messages_never_stop_the_gate_or_the_market():
    """400 orders and readings with random dtypes, lengths, values and rounds, through the gate into a real market."""
    from trexsim.config.schema import MarketConfig
    from trexsim.fabric import topics
    from trexsim.fabric.inprocess import InProcessFabric
    from trexsim.fabric.messages import EpisodeStart, RoundStart
    from trexsim.fabric.mqtt import _Gate
    from trexsim.modules.market import Market
    from trexsim.modules.delivery import ImbalanceSettlement

    class Fabric(InProcessFabric):  # the in-process fabric with what the gate asks of a networked one
        _episode, _round, meter_fallback, accounts = 0, 3, None, None

        def __init__(self):
            super().__init__()
            self.refused, self._remote_accounts = [], {}

        def _refuse(self, account, reason, detail, message=None):
            self.refused.append(reason)

        def _dispatch_local(self, message):
            self.publish(topics.TOPIC_OF_KIND[type(message).__name__], message)

    fabric = Fabric()
    Market(fabric, MarketConfig(), 5, 10)
    delivery = ImbalanceSettlement(fabric, 5, 10)
    gate = _Gate(fabric, IDS)
    booked = []
    fabric.subscribe(topics.ACCEPTED, booked.append)
    fabric.publish(topics.EPISODE_START, EpisodeStart(0, 0, 10, 60))
    fabric.publish(topics.ROUND_START, RoundStart(0, 3, 0, 60, 4))
    rng = np.random.default_rng(5)

    def arr(n):
        dtype = rng.choice(["<i8", "<i4", "<f8", "<f4", "|b1", "|u1", "<u8", "|i1"])
        values = rng.normal(0, 1e6, n) if rng.random() < 0.5 else rng.integers(-3, 6, n)
        with np.errstate(all="ignore"):
            return values > 0 if dtype == "|b1" else np.asarray(values).astype(np.dtype(dtype))

    admitted = 0
    for i in range(400):
        if i % 4 == 0:  # a valid order among the noise, with a random id (a repeat of one booked is a replay)
            one = lambda v, dt=np.int64: np.array([v], dtype=dt)  # noqa: E731
            msg = Orders(0, 3, 4, one(int(rng.integers(0, 3))), one(int(rng.integers(0, 2))), one(0),
                         one(0.11, float), one(100), one(int(rng.integers(0, 50))))
            if gate.admit("grp-0-of-2", msg) is not None:
                gate._admitting = "grp-0-of-2"  # as the fabric does while the market handles an account's orders
                fabric.publish(topics.ORDERS, msg)
                gate._admitting = None
        n = int(rng.integers(0, 4))
        size = lambda: n if rng.random() < 0.8 else int(rng.integers(0, 4))  # noqa: E731
        for msg in (Orders(0, int(rng.choice([3, 2, 2**40])), int(rng.choice([4, 3, 99])), *[arr(size()) for _ in range(6)]),
                    MeterReadings(0, int(rng.choice([3, 2])), *[arr(size()) for _ in range(7)])):
            passed = gate.admit("grp-0-of-2", msg)  # may speak for roster indices 0, 1, 2 only
            if passed is not None:
                admitted += 1
                gate._admitting = "grp-0-of-2"
                fabric.publish(topics.ORDERS if isinstance(msg, Orders) else topics.METER, passed)
                gate._admitting = None
    assert admitted > 30 and len(fabric.refused) > 300
    assert booked and all(set(a.participant.tolist()) <= {0, 1, 2} for a in booked)
    # no id was booked twice for one participant
    pairs = [(p, o) for a in booked for p, o in zip(a.participant.tolist(), a.order_id.tolist())]
    assert len(pairs) == len(set(pairs))
    assert delivery.max_energy_error_wh == 0


def test_a_lost_market_stops_the_run_with_a_clear_error(broker):  # noqa: F811
    import threading

    from trexsim.errors import TrexsimError
    from trexsim.modules.controller import Controller

    ns = "test/lost-market"
    controller = MqttFabric(broker, ns, role="controller", barrier_timeout_s=0.3, timeout_s=5)
    market = MqttFabric(broker, ns, role="market", participant_ids=IDS, timeout_s=3)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_serve_quietly(market)))
    thread.start()
    try:
        controller.wait_for_hellos(1, timeout_s=10)
        clock = Controller(controller, IDS, 0, 60, 10, 1, 1)
        clock.announce()
        clock.start_episode(0)
        assert clock.step() and clock.step()  # the market acknowledges every message
        market._client.socket().close()  # the connection drops without a goodbye: the broker sends the will
        t0 = time.monotonic()
        with pytest.raises(TrexsimError, match="market process .* lost its connection"):
            for _ in range(8):
                clock.step()
        assert time.monotonic() - t0 < 4  # told by the will, not by the 5 s timeout
    finally:
        thread.join(timeout=10)
        controller.close()
    assert outcome and outcome[0] is not None


def _serve_quietly(fabric):
    try:
        fabric.serve("market")
    except Exception as exc:  # its connection is gone: it stops with an error of its own
        return exc
    return None
