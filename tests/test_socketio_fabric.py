"""The Socket.IO fabric through a real ``trexsim fabric-server`` started by the tests on 127.0.0.1.

The server runs as its own process (as a user starts it), except where a test reads the relay's
counters: there it runs on a thread of the test process (the same code, :class:`ServerThread`).
"""

import json
import signal
import socket
import subprocess
import sys
import time

import duckdb
from msgspec.structs import replace as msgspec_replace
import numpy as np
import pytest

pytest.importorskip("socketio", reason="python-socketio is not installed (pip install 'trexsim[net]')")
pytest.importorskip("aiohttp", reason="aiohttp is not installed (pip install 'trexsim[net]')")

from trexsim import parse_config  # noqa: E402
from trexsim.errors import TrexsimError  # noqa: E402
from trexsim.fabric import open_fabric, topics  # noqa: E402
from trexsim.fabric.messages import Orders  # noqa: E402
from trexsim.fabric.mqtt import _DECODER  # noqa: E402
from trexsim.fabric.socketio import SocketIOFabric, _client_class, parse_socketio_url  # noqa: E402
from trexsim.fabric.socketio_server import ServerThread, topic_matches  # noqa: E402
from trexsim.node import profile_meter_fallback  # noqa: E402
from trexsim.simulation import Simulation  # noqa: E402

IDS = ["pro-1", "pro-2", "pro-3", "con-1", "con-2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*extra):
    """``trexsim fabric-server`` in its own process, on a free port: (url, process)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "trexsim", "fabric-server", "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    if "fabric server on" not in line:
        proc.kill()
        pytest.fail(f"trexsim fabric-server did not start: {line}{proc.stdout.read()}")
    return f"socketio://127.0.0.1:{port}", proc


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0 and "stopped: relayed" in out, out


@pytest.fixture(scope="module")
def server():
    url, proc = start_server()
    yield url
    stop_server(proc)


def community(minutes=60, name="community"):
    return {
        "study": {"days": minutes / 1440, "seed": 9, "start_datetime": "2021-07-01 11:00:00", "name": name},
        "participants": {
            "pro": {"count": 3, "profile": {"type": "realistic", "pv_capacity_kw": 6},
                    "storage": {"capacity_wh": 8000, "power_w": 4000},
                    "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
            "con": {"count": 2, "profile": {"type": "realistic", "pv_capacity_kw": 0},
                    "trader": {"type": "fixed_price", "bid_price": 0.13, "ask_price": 0.11}},
        },
    }


def query(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def book(db):
    """The ledger: every order, settlement and delivery row, in a fixed order (order ids aside: a process
    holding a group of households numbers their orders in its own range)."""
    return (query(db, "SELECT * EXCLUDE (episode, order_id) FROM orders ORDER BY ALL"),
            query(db, "SELECT delivery_round, pool, buyer, seller, quantity_wh, buyer_price, seller_price "
                      "FROM settlements ORDER BY ALL"),
            query(db, "SELECT * EXCLUDE (episode) FROM deliveries ORDER BY round, participant"))


def raw_client(url, room, subscriptions=(), received=None, errors=None):
    """A bare Socket.IO client of the relay (what a third-party module would be)."""
    client = _client_class()(reconnection=False, handle_sigint=False, serializer="msgpack")
    if received is not None:
        client.on("bus", lambda topic, payload: received.append((topic, payload)))
    if errors is not None:
        client.on("fabric_error", lambda what, reason: errors.append((what, reason)))
    client.connect(parse_socketio_url(url), auth={"room": room, "subscriptions": list(subscriptions)},
                   transports=["websocket"], wait_timeout=10)
    return client


def wait_until(condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def run_in_two_processes(cfg: dict, tmp_path):
    """The config in process (``tmp_path/local``) and with its households in 2 participant processes over a
    secured relay (``tmp_path/net``), credentials as ``trexsim broker --no-start --groups 2`` writes them;
    returns the local run's result."""
    from typer.testing import CliRunner

    from trexsim.cli import app

    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"namespace": f"trexsim/{cfg['study']['name']}", "accounts": {
        "coordinator": "c-secret", "grp-0-of-2": "g0-secret", "grp-1-of-2": "g1-secret"}}))
    local = Simulation(parse_config(cfg), tmp_path / "local").run(plots=False)
    url, proc = start_server("--credentials", str(creds))
    try:
        r = CliRunner().invoke(app, ["run", str(path), "--fabric", url, "--participant-processes", "2", "--credentials",
                                     str(creds), "--out", str(tmp_path / "net"), "--no-plots", "--quiet"])
        assert r.exit_code == 0, r.output
    finally:
        stop_server(proc)
    return local


def test_same_ledger_over_socketio_as_in_process(tmp_path, server):
    local = Simulation(parse_config(community()), tmp_path / "local").run(plots=False)
    fabric = open_fabric(server, namespace="test/same-ledger", participant_ids=IDS)
    assert isinstance(fabric, SocketIOFabric)
    heard = []  # what a module of another process would hear of the controller
    spy = raw_client(server, "test/same-ledger", ["test/same-ledger/sim/round_start"], heard)
    try:
        remote = Simulation(parse_config(community()), tmp_path / "sio", fabric=fabric).run(plots=False)
        assert wait_until(lambda: len(heard) == 60)
    finally:
        fabric.close()
        spy.disconnect()
    assert [_DECODER.decode(p).message.round for _, p in heard] == list(range(60))
    assert remote.summary["market"]["settled_wh"] > 0
    assert book(remote.database) == book(local.database)
    assert remote.summary["participants"] == local.summary["participants"]


def test_participants_in_separate_processes_over_a_secured_server_give_the_same_ledger(tmp_path):
    local = run_in_two_processes(community(30, "processes"), tmp_path)
    net = book(tmp_path / "net" / "run.duckdb")
    assert len(net[1]) > 0 and len(net[2]) == 30 * 5
    assert net == book(local.database)
    # every household reported its own meter over the relay: nothing was settled from a profile
    assert query(tmp_path / "net" / "run.duckdb", "SELECT count(*) FROM rejections WHERE reason = 'meter_missing'") == [(0,)]


def test_a_secured_server_refuses_wrong_logins_and_what_an_account_may_not_write_or_read():
    ns = "test/sec"
    creds = {"namespace": ns, "accounts": {"market": "m-secret", "pro-1": "p1-secret", "pro-2": "p2-secret"}}
    with ServerThread(credentials=creds) as srv:
        for account, password, reason in [("pro-1", "guess", "unknown account or wrong password"),
                                          ("pro-1", None, "unknown account or wrong password"),
                                          ("pro-9", "p1-secret", "unknown account or wrong password")]:
            with pytest.raises(TrexsimError, match=reason):
                SocketIOFabric(srv.url, ns, role="participants", account=account, password=password)
        with pytest.raises(TrexsimError, match="serves the namespace 'test/sec'"):
            SocketIOFabric(srv.url, "other/ns", role="participants", account="pro-1", password="p1-secret")
        market = SocketIOFabric(srv.url, ns, role="market", username="market", password="m-secret", participant_ids=IDS)
        pro1 = SocketIOFabric(srv.url, ns, role="participants", account="pro-1", password="p1-secret")
        pro2 = SocketIOFabric(srv.url, ns, role="participants", account="pro-2", password="p2-secret")
        seen, answers_2 = [], []
        market.subscribe(topics.ORDERS, seen.append)
        pro2.subscribe(topics.ERROR, answers_2.append)
        snooped = []  # pro-1's login, asking for pro-2's settlements
        snoop = _client_class()(reconnection=False, handle_sigint=False, serializer="msgpack")
        snoop.on("bus", lambda topic, payload: snooped.append(topic))
        snoop.connect(parse_socketio_url(srv.url), transports=["websocket"], wait_timeout=5, auth={
            "room": ns, "subscriptions": [f"{ns}/p/pro-2/settlements"], "username": "pro-1", "password": "p1-secret"})
        try:
            # pro-1 bids on pro-2's topic, as pro-2 (roster index 1): the server refuses it, the market never sees it
            bid = Orders(0, 0, 1, np.array([1]), np.array([0]), np.array([0]), np.array([0.12]), np.array([250]), np.array([7]))
            pro1._send(f"{ns}/p/pro-2/orders", bid)
            # pro-2 bids for pro-1 (index 0): the market refuses it and answers on pro-2's settlements topic
            pro2.publish(topics.ORDERS, msgspec_replace(bid, participant=np.array([0])))
            market.poll(0.5)
            pro2.poll(0.3)
            assert wait_until(lambda: len(pro1.refused_publishes) == 1)
        finally:
            for f in (market, pro1, pro2):
                f.close()
            snoop.disconnect()
    assert pro1.refused_publishes == [(f"{ns}/p/pro-2/orders", f"not authorized: 'pro-1' may not write '{ns}/p/pro-2/orders'")]
    assert seen == [] and market.last_rejection.startswith("participant_not_sender")
    assert [a.reason for a in answers_2] == ["participant_not_sender"]
    assert snooped == []  # pro-2's answer went to pro-2 only, not to pro-1 asking for it


def test_the_relay_routes_by_topic_filter_in_one_global_order():
    with ServerThread() as srv:
        a_got, b_got, c_got, d_got = [], [], [], []
        a = raw_client(srv.url, "r", ["r/a/#"], a_got)
        b = raw_client(srv.url, "r", ["r/b/+"], b_got)
        c = raw_client(srv.url, "r", ["r/+/x"], c_got)
        d = raw_client(srv.url, "r", ["r/#"], d_got)
        other_room = []
        e = raw_client(srv.url, "s", ["s/#"], other_room)
        try:
            for i in range(100):  # a and b publish interleaved, as fast as they can
                a.emit("bus", ("r/b/x", b"a%d" % i))
                b.emit("bus", ("r/a/x", b"b%d" % i))
            assert wait_until(lambda: len(d_got) == 200)
            time.sleep(0.2)  # nothing more is on its way
        finally:
            for client in (a, b, c, d, e):
                client.disconnect()
    # each got what its filter matches, never its own messages, nothing from another room
    assert sorted(p for _, p in a_got) == sorted(b"b%d" % i for i in range(100))
    assert sorted(p for _, p in b_got) == sorted(b"a%d" % i for i in range(100))
    assert other_room == []
    # c and d saw the messages in the same order (the relay's one order), each sender's in its own order
    assert c_got == d_got and len(c_got) == 200
    assert [p for _, p in d_got if p.startswith(b"a")] == [b"a%d" % i for i in range(100)]
    assert [p for _, p in d_got if p.startswith(b"b")] == [b"b%d" % i for i in range(100)]
    assert srv.stats.relayed == 200 and srv.stats.deliveries == 200 * 3 and srv.stats.refused == 0


def test_topic_filters_match_as_in_mqtt():
    assert topic_matches("ns/sim/+", "ns/sim/round_start")
    assert not topic_matches("ns/sim/+", "ns/sim/round_start/x")
    assert not topic_matches("ns/sim/+", "ns/sim")
    assert topic_matches("ns/p/h1/settlements", "ns/p/h1/settlements")
    assert not topic_matches("ns/p/h1/settlements", "ns/p/h2/settlements")
    assert topic_matches("ns/#", "ns/p/h1/orders") and topic_matches("ns/p/#", "ns/p")


def test_a_participant_gets_only_its_own_settlements():
    with ServerThread() as srv:
        market = SocketIOFabric(srv.url, "test/own", role="market", participant_ids=IDS)
        h1 = SocketIOFabric(srv.url, "test/own", role="participants", account="pro-2")
        h4 = SocketIOFabric(srv.url, "test/own", role="participants", account="con-2")
        errors_h1, errors_h4 = [], []
        h1.subscribe(topics.ERROR, errors_h1.append)
        h4.subscribe(topics.ERROR, errors_h4.append)
        spy_got = []
        spy = raw_client(srv.url, "test/own", ["test/own/p/pro-2/#"], spy_got)
        try:
            # pro-2 (roster index 1) bids for pro-3 (index 2): the market refuses it, and says so to pro-2 alone
            orders = Orders(0, 0, 1, np.array([2]), np.array([0]), np.array([0]), np.array([0.12]), np.array([250]),
                            np.array([7]))
            h1.publish(topics.ORDERS, orders)
            market.poll(0.5)
            h1.poll(0.5)
            h4.poll(0.1)
        finally:
            for f in (market, h1, h4):
                f.close()
            spy.disconnect()
    assert [t for t, _ in spy_got] == ["test/own/p/pro-2/orders", "test/own/p/pro-2/settlements"]
    assert _DECODER.decode(spy_got[0][1]).message.quantity_wh.tolist() == [250]
    assert market.rejected == 1 and market.last_rejection.startswith("participant_not_sender")
    assert [e.reason for e in errors_h1] == ["participant_not_sender"]
    assert errors_h4 == [] and h4.rejected == 0


def test_a_malformed_message_is_refused_and_the_next_good_one_goes_through():
    with ServerThread() as srv:
        market = SocketIOFabric(srv.url, "test/bad", role="market", participant_ids=["h0", "h1"])
        house = SocketIOFabric(srv.url, "test/bad", role="participants", account="h1")
        seen, answers = [], []
        market.subscribe(topics.ORDERS, seen.append)
        house.subscribe(topics.ERROR, answers.append)
        errors = []
        rogue = raw_client(srv.url, "test/bad", errors=errors)
        try:
            house._client.emit("bus", ("test/bad/p/h1/orders", b"\x93not msgpack at all"))
            rogue.emit("bus", ("test/bad/p/h1/orders", "a string, not bytes"))  # not relayed
            rogue.emit("bus", ("elsewhere/p/h1/orders", b"\x90"))  # outside its room: not relayed
            rogue.emit("bus")  # no arguments
            rogue.emit("shout", "hello")  # not an event of the protocol
            ok = Orders(0, 1, 2, np.array([1]), np.array([0]), np.array([0]), np.array([0.1]), np.array([5]), np.array([1]))
            house.publish(topics.ORDERS, ok)
            market.poll(1.0)
            house.poll(0.3)
            assert wait_until(lambda: len(errors) == 4)
        finally:
            market.close()
            house.close()
            rogue.disconnect()
        stats = srv.stats
    assert market.rejected == 1 and market.last_rejection.startswith("malformed")
    assert len(seen) == 1 and seen[0].quantity_wh.tolist() == [5]
    assert [what for what, _ in errors] == ["bus", "elsewhere/p/h1/orders", "bus", "shout"]
    assert "(topic, binary payload), got (str, str)" in errors[0][1] and "unknown event 'shout'" in errors[3][1]
    assert [a.reason for a in answers] == ["malformed"]  # the market's answer on h1's own topic
    assert stats.refused == 4 and stats.relayed == 3  # the bad payload, the answer, the good order


def test_connections_that_cannot_be_made_are_clear_errors():
    with pytest.raises(TrexsimError, match="cannot reach the Socket.IO server"):
        SocketIOFabric(f"socketio://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(TrexsimError, match="expected socketio://"):
        SocketIOFabric("http://127.0.0.1:5000")
    with pytest.raises(TrexsimError, match="needs an account"):
        SocketIOFabric("socketio://127.0.0.1:5000", role="participants")
    import socketio

    with ServerThread() as srv:
        for auth, reason in [({}, "connect with auth {'room'"), ({"room": ""}, "auth 'room' must be"),
                             ({"room": "r", "subscriptions": ["elsewhere/#"]}, "under 'r/'"),
                             ({"room": "r", "subscriptions": ["r/a+/b"]}, "'+' must be a whole level"),
                             ({"room": "r", "will": ["r/x", "not base64!"]}, "base64 payload")]:
            client = _client_class()(reconnection=False, handle_sigint=False, serializer="msgpack")
            said = []
            client.on("connect_error", said.append)
            with pytest.raises(socketio.exceptions.ConnectionError):
                client.connect(parse_socketio_url(srv.url), auth=auth, transports=["websocket"], wait_timeout=5)
            assert len(said) == 1 and reason in said[0]["message"]
        assert srv.stats.clients == 0


def test_a_killed_participant_process_leaves_by_its_will_and_the_run_goes_on(tmp_path):
    cfg = community(20, "kill")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    config = parse_config(cfg)
    with ServerThread() as srv:
        net = SocketIOFabric(srv.url, "test/kill", role="coordinator", participant_ids=IDS, barrier_timeout_s=10)
        sim = Simulation(config, tmp_path / "net", fabric=net, local_participants=False)
        net.meter_fallback = profile_meter_fallback(config)
        nodes = [subprocess.Popen([sys.executable, "-m", "trexsim", "node", "participants", str(path), "--fabric", srv.url,
                                   "--namespace", "test/kill", "--group", str(g), "--groups", "2", "--timeout", "20"])
                 for g in range(2)]

        def kill(episode, next_round):
            if next_round == 5:
                nodes[1].send_signal(signal.SIGKILL)
                nodes[1].wait(timeout=10)
                net.poll(0.5)  # the will arrives: con-1 and con-2 are no longer waited for

        try:
            net.wait_for_hellos(2, timeout_s=60)
            t0 = time.monotonic()
            sim.run(on_round=kill, plots=False)
            elapsed = time.monotonic() - t0
            assert nodes[0].wait(timeout=20) == 0
        finally:
            for n in nodes:
                n.kill()
            net.close()
        wills = srv.stats.wills
    assert wills == 1
    assert [(e["event"], e["account"], e["round"]) for e in net.events] == [("left", "grp-1-of-2", 4)]
    assert elapsed < 10  # never waited out the barrier's 10 s: the will said the process was gone
    db = sim.db_path
    assert query(db, "SELECT count(*) FROM deliveries") == [(20 * 5,)]
    # con-1 and con-2 (indices 3, 4) settled from their profiles from round 5 on
    assert query(db, "SELECT participant, min(round), count(*) FROM rejections WHERE reason = 'meter_missing' "
                     "GROUP BY ALL ORDER BY 1") == [(3, 5, 15), (4, 5, 15)]


def test_every_module_in_its_own_process(tmp_path, server):
    """The market (with the recorder), the households and the controller: three processes, three Socket.IO clients."""
    from typer.testing import CliRunner

    from trexsim.cli import app

    cfg = community(20, "split")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    local = Simulation(parse_config(cfg), tmp_path / "local").run(plots=False)
    node = [sys.executable, "-m", "trexsim", "node"]
    procs = [subprocess.Popen([*node, "market", str(path), "--fabric", server, "--out", str(tmp_path / "market"),
                               "--timeout", "60"])]
    procs.append(subprocess.Popen([*node, "participants", str(path), "--fabric", server, "--timeout", "60"]))
    try:
        r = CliRunner().invoke(app, ["node", "controller", str(path), "--fabric", server, "--expect", "2", "--timeout", "60"])
        assert r.exit_code == 0, r.output
        assert "20 rounds; 0 fabric event(s)" in r.output
        assert [p.wait(timeout=30) for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()
    net = book(tmp_path / "market" / "run.duckdb")
    assert len(net[1]) > 0 and len(net[2]) == 20 * 5
    assert net == book(local.database)


def test_both_transports_hold_the_whole_protocol_state():
    """MqttFabric and SocketIOFabric are transports under one protocol (``NetworkFabric._init_state``): each holds
    every attribute of the protocol's state, of the same type, and the MQTT transport only adds its own."""
    pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed")
    from trexsim.fabric.mqtt import MqttFabric
    from trexsim.fabric.protocol import NetworkFabric

    protocol = NetworkFabric.__new__(NetworkFabric)
    protocol._init_state("market", None, None, "ns", 1.0, 1.0, 1 << 20, None, IDS, 0)
    probe = MqttFabric.__new__(MqttFabric)  # MqttFabric's state is set before it connects; no broker needed
    with pytest.raises(TrexsimError, match="cannot reach the MQTT broker"):
        MqttFabric.__init__(probe, f"mqtt://127.0.0.1:{free_port()}", "ns", role="market", participant_ids=IDS, timeout_s=1)
    with ServerThread() as srv:
        fabric = SocketIOFabric(srv.url, "ns", role="market", participant_ids=IDS)
        fabric.close()
    state = set(vars(protocol))
    for transport in (probe, fabric):
        assert state - set(vars(transport)) == set()
        assert {a: type(getattr(protocol, a)) for a in state} == {a: type(getattr(transport, a)) for a in state}
    assert set(vars(probe)) - state == {"_client", "_mqtt", "_taken_over", "_publish_qos", "_confirmed_topics",
                                        "_own_loop", "_mid_topic"}


def test_a_stopped_server_is_a_clear_error_not_a_hang():
    from trexsim.fabric.messages import RoundStart

    srv = ServerThread().start()
    fabric = SocketIOFabric(srv.url, "ns")
    srv.stop()  # the server disconnects its clients as it stops
    assert wait_until(lambda: fabric._error is not None)
    with pytest.raises(TrexsimError, match=r"disconnected from the Socket.IO server \(server disconnect\)"):
        fabric.publish(topics.ROUND_START, RoundStart(0, 0, 0, 60, 1))
    fabric.close()


def test_oversized_events_are_refused_and_a_huge_one_cuts_its_sender_off():
    with ServerThread(max_message_bytes=1000) as srv:
        errors, got = [], []
        sender = raw_client(srv.url, "r", errors=errors)
        listener = raw_client(srv.url, "r", ["r/#"], got)
        sender.emit("bus", ("r/x", b"a" * 1500))  # over the limit: refused, answered
        assert wait_until(lambda: len(errors) == 1)
        sender.emit("bus", ("r/x", b"a" * 100_000))  # far over it (past Engine.IO's own bound): disconnected
        assert wait_until(lambda: not sender.connected)
        other = raw_client(srv.url, "r")
        other.emit("bus", ("r/x", b"a" * 900))  # the server goes on serving everyone else
        assert wait_until(lambda: len(got) == 1)
        for client in (listener, other):
            client.disconnect()
        stats = srv.stats
    assert errors == [("r/x", "1500 bytes is over the server's limit of 1000")]
    assert got == [("r/x", b"a" * 900)] and stats.relayed == 1 and stats.refused == 1


def test_a_client_reconnects_to_a_restarted_server():
    port = free_port()
    cmd = [sys.executable, "-m", "trexsim", "fabric-server", "--port", str(port)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert "fabric server on" in first.stdout.readline()
    url = f"socketio://127.0.0.1:{port}"
    house = SocketIOFabric(url, "test/re", role="participants", account="pro-1", timeout_s=20)
    got = []
    house.subscribe(topics.ROUND_START, got.append)
    first.kill()  # the server dies without a word: the connection just drops
    first.wait(timeout=10)
    assert wait_until(lambda: house._error is not None)
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert "fabric server on" in second.stdout.readline()
        assert wait_until(lambda: house._error is None, timeout_s=10)  # reconnected, with its filters and will
        from trexsim.fabric.messages import RoundStart

        controller = SocketIOFabric(url, "test/re", role="controller")
        controller.publish(topics.ROUND_START, RoundStart(0, 3, 0, 60, 4))
        house.poll(1.0)
        controller.close()
        house.close()
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=10)
    assert [m.round for m in got] == [3]


def test_a_tc_run_over_a_secured_server_gives_the_in_process_ledger(tmp_path):
    """``market.type: tc``: the TC market's schedules and the households' plans over the Socket.IO relay, with
    the households in 2 processes, give the in-process schedule, rounds and deliveries."""
    pytest.importorskip("opendssdirect")

    cfg = community(30, "tcsio")
    cfg["study"]["start_datetime"] = "2021-07-01 18:00:00"
    cfg["market"] = {"type": "tc"}
    for spec in cfg["participants"].values():
        spec["profile"]["load_scale"] = 8
    cfg["tc"] = {"horizon_h": 0.25, "price_interval_s": 300, "iterations": 2, "feeder": {"transformer_kva": 100},
                 "congestion": {"loading_threshold_pct": 5}}
    local = run_in_two_processes(cfg, tmp_path)
    sql = ["SELECT * EXCLUDE (episode) FROM tc_schedule ORDER BY first_round",
           "SELECT * EXCLUDE (episode) FROM rounds ORDER BY round",
           "SELECT * EXCLUDE (episode) FROM deliveries ORDER BY round, participant"]
    net = [query(tmp_path / "net" / "run.duckdb", q) for q in sql]
    assert len(net[0]) == 6 and max(row[4] for row in net[0]) > 0 and len(net[2]) == 30 * 5
    assert net == [query(local.database, q) for q in sql]


def test_the_market_tree_over_socketio_with_participant_processes_gives_the_same_ledger(tmp_path):
    """Two street markets under a community market (tests/test_markets.py's hand-worked tree) with the
    households in 2 processes over a secured Socket.IO relay: the same contracts in every market, the same
    orders and deliveries as in process (the MQTT test's twin; Socket.IO inherits the MQTT fabric's protocol)."""
    import copy

    from test_markets import TREE

    cfg = copy.deepcopy(TREE)
    cfg["study"]["days"] = 20 / 1440
    cfg["study"]["name"] = "tree-sio"
    local = run_in_two_processes(cfg, tmp_path)

    def tree_book(db):
        return [query(db, f"SELECT {cols} FROM {table} ORDER BY ALL") for table, cols in (
            ("settlements", "market, delivery_round, pool, buyer, seller, quantity_wh, buyer_price, seller_price"),
            ("orders", "market, round, delivery_round, participant, side, price, quantity_wh"),
            ("deliveries", "* EXCLUDE (episode)"))]

    net = tree_book(tmp_path / "net" / "run.duckdb")
    assert len(net[0]) == 4 * 19 and net == tree_book(local.database)
