"""Attacks on a networked run with nothing but one household's own credentials (issue 13).

Each test runs against a real Mosquitto with the accounts and ACLs of ``trexsim broker`` and, where the
attack applies to it, a real secured Socket.IO relay with the same accounts, both on 127.0.0.1. The
households run in ``trexsim node participants`` processes; the coordinator (controller, grid, market,
recorder) in the test process, as under ``trexsim run``. The attacker is ``con-1``: a household whose
per-household account exists in credentials.json although its household runs in a group process
(grp-1-of-2 = con-1, con-2; grp-0-of-2 = pro-1 .. pro-3).
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time

import duckdb
import numpy as np
import pytest

from test_mqtt_fabric import MOSQUITTO, broker, community, free_port  # noqa: F401 - broker is a fixture

pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed")
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

from trexsim import parse_config  # noqa: E402
from trexsim.fabric.broker import start_broker, write_broker_files  # noqa: E402
from trexsim.fabric.messages import Ack, Goodbye, Hello, Orders  # noqa: E402
from trexsim.fabric.mqtt import MqttFabric  # noqa: E402
from trexsim.node import profile_meter_fallback  # noqa: E402
from trexsim.simulation import Simulation  # noqa: E402

IDS = ["pro-1", "pro-2", "pro-3", "con-1", "con-2"]
NS = "trexsim/attack"
ROUNDS = 30


@pytest.fixture(scope="module")
def accounts_dir():
    # under /tmp: mosquitto reads its password and ACL files as user 'mosquitto' when started as root
    directory = tempfile.mkdtemp(prefix="trexsim-attack-")
    # accounts of two layouts, as an operator may ask for: every household alone, and 2 groups
    files = write_broker_files(IDS, directory, NS, port=free_port(), groups=[2, len(IDS)])
    yield files
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def mosquitto(accounts_dir):
    proc = start_broker(accounts_dir)
    yield accounts_dir.url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def relay(accounts_dir):
    pytest.importorskip("socketio", reason="python-socketio is not installed")
    from trexsim.fabric.socketio_server import ServerThread

    with ServerThread(credentials=json.loads(accounts_dir.credentials.read_text())) as srv:
        yield srv.url


@pytest.fixture(params=["mqtt", "socketio"])
def bus(request, accounts_dir):
    """(url, credentials file, passwords, fabric class) of a secured Mosquitto or a secured Socket.IO relay."""
    url = request.getfixturevalue("mosquitto" if request.param == "mqtt" else "relay")
    if request.param == "mqtt":
        cls = MqttFabric
    else:
        from trexsim.fabric.socketio import SocketIOFabric as cls
    return url, accounts_dir.credentials, json.loads(accounts_dir.credentials.read_text())["accounts"], cls


def login(bus, account, role="participants", **kw):
    url, _, passwords, cls = bus
    return cls(url, NS, role=role, account=account, username=account, password=passwords[account], **kw)


def raw_publish(fabric, topic, payload: bytes):
    """Bytes on a topic, whatever the transport (what a client outside trexsim could send)."""
    if hasattr(fabric._client, "emit"):  # Socket.IO
        fabric._client.emit("bus", (topic, payload))
    else:
        fabric._client.publish(topic, payload, qos=1)


def setup_run(tmp_path, bus, name, barrier_timeout_s=5.0, **coordinator):
    cfg = community().model_dump(mode="json", by_alias=True)
    cfg["study"].update(days=ROUNDS / 1440, name=name)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    config = parse_config(cfg)
    local = Simulation(config, tmp_path / "local").run(plots=False)
    net = login(bus, "coordinator", role="coordinator", participant_ids=IDS, barrier_timeout_s=barrier_timeout_s,
                timeout_s=30, **coordinator)
    sim = Simulation(config, tmp_path / "net", fabric=net, local_participants=False)
    net.meter_fallback = profile_meter_fallback(config)
    url, creds, _, _ = bus
    login_args = ["--credentials", str(creds)] if creds is not None else []
    nodes = [subprocess.Popen([sys.executable, "-m", "trexsim", "node", "participants", str(path), "--fabric", url,
                               "--namespace", NS, *login_args, "--group", str(g), "--groups", "2",
                               "--timeout", "30"]) for g in range(2)]
    return net, sim, nodes, local.database


def finish(net, nodes):
    for n in nodes:
        try:
            n.wait(timeout=30)
        finally:
            n.kill()
    net.close()


def query(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def book(db):
    return (query(db, "SELECT delivery_round, pool, buyer, seller, quantity_wh, buyer_price, seller_price "
                      "FROM settlements ORDER BY ALL"),
            query(db, "SELECT * EXCLUDE (episode) FROM deliveries ORDER BY round, participant"))


def sync(net, mallory, topic_leaf="orders", timeout_s=20.0):
    """Wait until the coordinator has handled everything mallory sent so far: a garbage payload after it is
    refused (a client's messages arrive in order), so once the refusal is counted the rest was handled."""
    before = net.rejected
    raw_publish(mallory, f"{NS}/p/{mallory.account}/{topic_leaf}", b"\x93marker")
    deadline = time.monotonic() + timeout_s
    while net.rejected == before and time.monotonic() < deadline:
        net.poll(0.05)
    assert net.rejected > before, "the coordinator never saw the marker"


# ---------------------------------------------------------------------------------------------- item 1
def test_a_household_cannot_abort_stall_or_pace_the_run_through_hello_goodbye_and_ack(tmp_path, bus):
    """Hello(role='market') then Goodbye on the household's own hello topic aborted the run; a Goodbye naming
    another process's sender dropped that process; extra Hellos each stalled the run for the start-up timeout.
    A module's role and identity come from the account on the topic, and an account speaks only for itself."""
    net, sim, nodes, local_db = setup_run(tmp_path, bus, "identity", barrier_timeout_s=2.0)
    mallory = login(bus, "con-1")
    hello_topic, ack_topic = f"{NS}/fabric/hello/con-1", f"{NS}/fabric/ack/con-1"
    gaps = {}

    def attack(episode, next_round):
        if next_round == 5:
            real = [n.sender for n in net._nodes.values() if n.account == "grp-0-of-2"]
            mallory._send(hello_topic, Hello(mallory.sender, "market", "con-1"))
            mallory._send(ack_topic, Ack(mallory.sender, net.sender, 10**9))
            for sender in real:  # a Goodbye naming another process's sender
                mallory._send(hello_topic, Goodbye(sender, "grp-0-of-2"))
            mallory._send(hello_topic, Goodbye(mallory.sender, "con-1"))  # "the market process lost its connection"
            sync(net, mallory)
        if next_round == 10:  # hellos of made-up processes
            for i in range(3):
                mallory._send(hello_topic, Hello(f"con-1-fake{i}", "participants", "con-1"))
            sync(net, mallory)
            gaps["before"] = time.monotonic()
        if next_round == 11:
            gaps["after"] = time.monotonic()

    try:
        net.wait_for_hellos(2, timeout_s=60)
        sim.run(on_round=attack, plots=False)
    finally:
        mallory.close()
        finish(net, nodes)
    assert [n.returncode for n in nodes] == [0, 0]
    # the real processes were never dropped: the same ledger as in process, nothing settled from a profile
    assert book(sim.db_path) == book(local_db)
    assert query(sim.db_path, "SELECT count(*) FROM rejections WHERE reason = 'meter_missing'") == [(0,)]
    assert not [e for e in net.events if e["account"] != "con-1"]
    # the made-up processes were one process of con-1's, waited for one barrier timeout at most
    assert gaps["after"] - gaps["before"] < 2.0 + 3.0
    assert all(h.role == "participants" for h in net.hellos if h.account == "con-1")


# ---------------------------------------------------------------------------------------------- item 2
def wait_for(condition, timeout_s=20.0, poll=None):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        poll(0.05) if poll is not None else time.sleep(0.01)
    return condition()


def test_a_household_cannot_take_over_another_accounts_mqtt_client_id(mosquitto, accounts_dir):
    """Mosquitto disconnects a client when another connects with its client id: with a household's own
    login and the coordinator's (or the market's) client id, the coordinator was cut off (and the market's
    last will aborted the run). ``trexsim broker`` binds the client id to the account."""
    bus = (mosquitto, accounts_dir.credentials, json.loads(accounts_dir.credentials.read_text())["accounts"], MqttFabric)
    coordinator = login(bus, "coordinator", role="coordinator", participant_ids=IDS, timeout_s=10)
    market = login(bus, "market", role="market", participant_ids=IDS, timeout_s=10)
    intruders = []
    try:
        for victim in (coordinator, market):
            intruders.append(login(bus, "con-1", client_id=victim.sender, timeout_s=10))
        # a round trip through the broker after the intruders' logins: the coordinator still reads its topics
        intruders[-1]._send(f"{NS}/fabric/hello/con-1", Hello(intruders[-1].sender, "participants", "con-1"))
        assert wait_for(lambda: any(h.account == "con-1" for h in coordinator.hellos), poll=coordinator.poll)
        assert coordinator.disconnects == 0 and market.disconnects == 0
        assert coordinator._error is None and market._error is None
    finally:
        for f in (*intruders, coordinator, market):
            f.close()


def test_the_relay_binds_the_client_id_to_the_account(relay, accounts_dir):
    from trexsim.errors import TrexsimError
    from trexsim.fabric.socketio import SocketIOFabric

    bus = (relay, accounts_dir.credentials, json.loads(accounts_dir.credentials.read_text())["accounts"], SocketIOFabric)
    coordinator = login(bus, "coordinator", role="coordinator", participant_ids=IDS, timeout_s=10)
    try:
        with pytest.raises(TrexsimError, match="client id 'coordinator-.*' is not one of 'con-1'"):
            login(bus, "con-1", client_id=coordinator.sender, timeout_s=5)
        own = login(bus, "con-1", client_id="con-1-mine", timeout_s=5)  # its own: fine
        own.close()
        assert coordinator._error is None
    finally:
        coordinator.close()


# ---------------------------------------------------------------------------------------------- item 3
def _acks_seen(bus):
    """A watcher on every process's acknowledgements: on fabric/ack/<account>, and inside the one message a round
    a process answers a round bundle with (p/<account>/round, which only the coordinator's account may read:
    so this watcher needs an open broker)."""
    seen = []
    spy = MqttFabric(bus[0], NS, role="controller", account="spy", timeout_s=10)
    spy._client.message_callback_add(f"{NS}/fabric/ack/+", lambda c, u, m: seen.append(m.topic.rsplit("/", 1)[1]))
    spy._client.message_callback_add(f"{NS}/p/+/round", lambda c, u, m: seen.append(m.topic.split("/")[-2]))
    spy._client.subscribe(f"{NS}/p/+/round", qos=0)
    return spy, seen


def test_processes_late_all_at_once_are_taken_back_when_their_acks_resume(tmp_path, broker):  # noqa: F811
    """Both participant processes paused past the barrier: the coordinator went on alone and, with nothing
    left to wait for, never read the network again, so neither was ever taken back (every later round
    settled from profiles). Now their next acknowledgement brings them back. (An open broker: the watcher
    reads what every process answers; the attack needs no account.)"""
    import signal
    from collections import defaultdict

    bus = (broker, None, defaultdict(lambda: None), MqttFabric)
    net, sim, nodes, local_db = setup_run(tmp_path, bus, "paused", barrier_timeout_s=1.0)
    spy, acks = _acks_seen(bus)

    def pause(episode, next_round):
        if next_round == 5:
            for n in nodes:
                n.send_signal(signal.SIGSTOP)
        if next_round == 7:  # both dropped as late by now; they resume and acknowledge what they missed
            acks.clear()
            for n in nodes:
                n.send_signal(signal.SIGCONT)
            assert wait_for(lambda: {"grp-0-of-2", "grp-1-of-2"} <= set(acks), timeout_s=30)

    try:
        net.wait_for_hellos(2, timeout_s=60)
        sim.run(on_round=pause, plots=False)
    finally:
        for n in nodes:
            n.send_signal(signal.SIGCONT)
        spy.close()
        finish(net, nodes)
    events = [(e["event"], e["account"]) for e in net.events]
    assert sorted(events) == sorted([("late", "grp-0-of-2"), ("late", "grp-1-of-2"),
                                     ("rejoined", "grp-0-of-2"), ("rejoined", "grp-1-of-2")])
    missing = [r for r, in query(sim.db_path, "SELECT DISTINCT round FROM rejections WHERE reason = 'meter_missing' "
                                              "ORDER BY 1")]
    assert missing and set(missing) <= {5, 6, 7, 8}  # the paused rounds and the one they came back in
    late = "round >= 10"
    assert (query(sim.db_path, f"SELECT * EXCLUDE (episode) FROM deliveries WHERE {late} ORDER BY round, participant")
            == query(local_db, f"SELECT * EXCLUDE (episode) FROM deliveries WHERE {late} ORDER BY round, participant"))


def _children(pid):
    """Process ids whose parent is ``pid`` (from /proc)."""
    import os

    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def test_a_run_settled_mostly_from_profiles_says_so_in_its_exit_status_summary_and_console(tmp_path, mosquitto, accounts_dir):
    """The participant processes paused from round 10 to the end: the run used to say "finished", exit 0.
    Now it exits 3, says DEGRADED, and summary.json and the runs table say so."""
    import os
    import signal

    cfg = community().model_dump(mode="json", by_alias=True)
    cfg["study"].update(days=40 / 1440, name="degraded")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    passwords = json.loads(accounts_dir.credentials.read_text())["accounts"]
    import paho.mqtt.client as mqtt

    rounds, ended = [], []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.username_pw_set("observer", passwords["observer"])
    watcher.message_callback_add(f"{NS}/sim/round_start", lambda c, u, m: rounds.append(1))
    watcher.message_callback_add(f"{NS}/sim/end", lambda c, u, m: ended.append(1))
    watcher.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{NS}/sim/#")
    host, port = mosquitto.removeprefix("mqtt://").split(":")
    watcher.connect(host, int(port))
    watcher.loop_start()
    run = subprocess.Popen([sys.executable, "-m", "trexsim", "run", str(path), "--fabric", mosquitto,
                            "--credentials", str(accounts_dir.credentials), "--participant-processes", "2",
                            "--barrier-timeout", "0.5", "--out", str(tmp_path / "net"), "--no-plots"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    paused = []
    try:
        assert wait_for(lambda: len(rounds) >= 10, timeout_s=90)
        paused = _children(run.pid)
        assert len(paused) == 2
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        assert wait_for(lambda: ended, timeout_s=60)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
        out = run.communicate(timeout=60)[0]
        watcher.loop_stop()
        watcher.disconnect()
    assert run.returncode == 3, out
    assert "DEGRADED" in out
    summary = json.loads((tmp_path / "net" / "summary.json").read_text())
    fabric = summary["fabric"]
    assert fabric["degraded"] is True and fabric["fallback_share"] > 0.5 and fabric["max_fallback_share"] == 0.01
    assert fabric["household_rounds"] == 40 * 5
    assert query(tmp_path / "net" / "run.duckdb", "SELECT status FROM runs") == [("degraded",)]


# ---------------------------------------------------------------------------------------------- item 4
def _on_round_start(fabric, react):
    """Call ``react(round_start)`` on mallory's own network thread the moment a round starts."""
    from trexsim.fabric.mqtt import _DECODER

    def handle(topic, payload):
        if topic.endswith("/sim/round_start"):
            react(_DECODER.decode(payload).message)

    if hasattr(fabric._client, "emit"):  # Socket.IO
        fabric._client.on("bus", lambda topic, payload: handle(topic, payload))
    else:
        fabric._client.message_callback_add(f"{NS}/sim/round_start", lambda c, u, m: handle(m.topic, m.payload))


def test_a_household_cannot_erase_its_neighbours_readings_when_households_run_in_groups(tmp_path, bus):
    """con-1's own account, while con-1 runs in grp-1-of-2: its reading sent first made the group's whole
    reading a duplicate (con-2 settled from its profile, batteries idle). Accounts follow who holds each
    household: a run admits only its layout's accounts (here the two groups)."""
    from trexsim.fabric.messages import MeterReadings

    net, sim, nodes, local_db = setup_run(tmp_path, bus, "groups", accounts=["grp-0-of-2", "grp-1-of-2"])
    mallory = login(bus, "con-1")
    one = lambda v, dt=np.int64: np.array([v], dtype=dt)  # noqa: E731

    def first(start):
        mallory._send(f"{NS}/p/con-1/meter", MeterReadings(start.episode, start.round, one(3), one(0), one(0), one(0),
                                                           one(0), one(0.0, float), one(0)))

    _on_round_start(mallory, first)
    try:
        net.wait_for_hellos(2, timeout_s=60)
        sim.run(plots=False)
    finally:
        mallory.close()
        finish(net, nodes)
    assert book(sim.db_path) == book(local_db)
    reasons = dict(query(sim.db_path, "SELECT reason, count(*) FROM rejections GROUP BY ALL"))
    assert reasons == {"unknown_account": ROUNDS}  # each of mallory's readings, none of the group's
    # recorded as con-1's own (index 3), which is who sent them
    assert query(sim.db_path, "SELECT DISTINCT participant FROM rejections") == [(3,)]


def test_overlapping_accounts_refuse_only_the_rows_already_reported_and_keep_their_own_order_ids(mosquitto, accounts_dir):
    """Where the layout is not known (accounts of several layouts admitted), one account's reading refuses
    only the rows already reported, not a group's whole reading; and one account's order ids never block
    another's."""
    from trexsim.fabric import topics
    from trexsim.fabric.messages import EpisodeStart, MeterReadings, RoundStart

    bus = (mosquitto, accounts_dir.credentials, json.loads(accounts_dir.credentials.read_text())["accounts"], MqttFabric)
    market = login(bus, "market", role="market", participant_ids=IDS)
    group = login(bus, "grp-0-of-2")  # pro-1, pro-2, pro-3
    alone = login(bus, "pro-1")
    got = {topic: [] for topic in (topics.ORDERS, topics.METER, topics.REJECTED)}
    for topic, seen in got.items():
        market.subscribe(topic, seen.append)
    market.publish(topics.EPISODE_START, EpisodeStart(0, 0, 10, 60))
    market.publish(topics.ROUND_START, RoundStart(0, 3, 180, 60, 4))
    a = lambda *v, dt=np.int64: np.array(v, dtype=dt)  # noqa: E731
    meter = lambda *p: MeterReadings(0, 3, a(*p), a(*[10] * len(p)), a(*[0] * len(p)), a(*[0] * len(p)),  # noqa: E731
                                     a(*[0] * len(p)), a(*[0.0] * len(p), dt=float), a(*[10] * len(p)))
    order = lambda p, i: Orders(0, 3, 5, a(p), a(0), a(0), a(0.1, dt=float), a(100), a(i))  # noqa: E731
    try:
        alone.publish(topics.METER, meter(0))
        alone.publish(topics.ORDERS, order(0, 1 << 50))
        assert wait_for(lambda: len(got[topics.ORDERS]) == 1, poll=market.poll)
        group.publish(topics.METER, meter(0, 1, 2))
        group.publish(topics.ORDERS, order(0, 5))  # its own ids: 5 is above every id it used
        assert wait_for(lambda: len(got[topics.ORDERS]) == 2, poll=market.poll)
    finally:
        for f in (market, group, alone):
            f.close()
    assert [m.participant.tolist() for m in got[topics.METER]] == [[0], [1, 2]]
    assert [(r.reason, r.participant.tolist()) for r in got[topics.REJECTED]] == [(["duplicate_meter"], [0])]
    assert [o.order_id.tolist() for o in got[topics.ORDERS]] == [[1 << 50], [5]]


# ---------------------------------------------------------------------------------------------- items 5, 6
def test_absurd_meter_values_and_episode_numbers_are_refused_and_recorded(tmp_path, bus):
    """A household's own account (con-1, its process's layout not known to the coordinator): a reading of
    2^62 Wh of load and battery charge, one of 10^9 Wh of generation, and an order for episode 2^63 - 1.
    The readings were accepted (a grid export of -9.2e18 Wh, a bill of $6.4e14, `trexsim export` crashed);
    the order blanked the summary (it reported that episode, every total zero) and its rejection was lost."""
    from trexsim.fabric.messages import MeterReadings
    from trexsim.node import configure_market_fabric

    net, sim, nodes, local_db = setup_run(tmp_path, bus, "absurd")
    configure_market_fabric(net, sim.config)
    mallory = login(bus, "con-1")
    one = lambda v, dt=np.int64: np.array([v], dtype=dt)  # noqa: E731
    huge = 1 << 62

    def first(start):
        if start.round == 5:
            mallory._send(f"{NS}/p/con-1/meter", MeterReadings(0, 5, one(3), one(huge), one(0), one(huge), one(0),
                                                               one(0.0, float), one(0)))
        if start.round == 6:
            mallory._send(f"{NS}/p/con-1/meter", MeterReadings(0, 6, one(3), one(0), one(10**9), one(0), one(0),
                                                               one(0.0, float), one(-10**9)))

    def absurd_order(episode, next_round):
        if next_round == 8:
            mallory._send(f"{NS}/p/con-1/orders", Orders((1 << 63) - 1, 7, 8, one(3), one(0), one(0), one(0.12, float),
                                                         one(100), one(1 << 45)))
            sync(net, mallory)

    _on_round_start(mallory, first)
    try:
        net.wait_for_hellos(2, timeout_s=60)
        sim.run(on_round=absurd_order, plots=False)
    finally:
        mallory.close()
        finish(net, nodes)
    db = sim.db_path
    # the readings were refused (whichever came first, the group's own went through): the in-process ledger
    assert book(db) == book(local_db)
    assert query(db, "SELECT round, participant FROM rejections WHERE reason = 'meter_out_of_range' ORDER BY 1") in (
        [(5, 3), (6, 3)], [(5, 3)], [(6, 3)], [])
    assert query(db, "SELECT max(abs(grid_export_wh)), max(abs(grid_import_wh)) FROM deliveries")[0][0] < 10**6
    # the order's rejection is stored, under the round it was refused in; the summary is episode 0's
    assert query(db, f"SELECT episode, round, participant, reason FROM rejections WHERE order_id = {1 << 45}") == [
        (0, 7, 3, "wrong_round")]
    summary = json.loads((tmp_path / "net" / "summary.json").read_text())
    assert summary["episode"] == 0 and [e["episode"] for e in summary["episodes"]] == [0]
    assert summary["market"]["settled_wh"] > 0
    from trexsim.records.export import export_run

    export_run(tmp_path / "net", "csv")  # the deliveries view no longer overflows


# ---------------------------------------------------------------------------------------------- item 8
def test_hellos_cannot_amplify_into_catch_ups(tmp_path, bus):
    """Each ~100-byte Hello made the controller send a catch-up (roster, episode, the episode's grid prices) to the
    sender's settlements topic: 301 hellos, 195 MB. Catch-ups are rate-limited per account (a burst of 3, then
    one per 30 s), and carry the prices from the current round on only."""
    from trexsim.fabric.mqtt import _DECODER, HELLO_BURST

    net, sim, nodes, local_db = setup_run(tmp_path, bus, "flood")
    mallory = login(bus, "con-1")
    got = []

    def flood(episode, next_round):
        if next_round == 20:
            for i in range(50):
                mallory._send(f"{NS}/fabric/hello/con-1", Hello(f"con-1-flood{i}", "participants", "con-1"))
            sync(net, mallory)
            # the marker's answer comes after every catch-up the coordinator sent (one publisher's order)
            deadline = time.monotonic() + 20
            while not any(k == "Error" for k, _ in got) and time.monotonic() < deadline:
                try:
                    topic, payload = mallory._inbox.get(timeout=0.1)
                except Exception:  # queue.Empty
                    continue
                if topic.endswith("/settlements"):
                    got.append((type(_DECODER.decode(payload).message).__name__, len(payload)))

    try:
        net.wait_for_hellos(2, timeout_s=60)
        sim.run(on_round=flood, plots=False)
    finally:
        mallory.close()
        finish(net, nodes)
    kinds = [k for k, _ in got]
    assert kinds.count("Roster") == HELLO_BURST and kinds.count("EpisodeStart") == HELLO_BURST
    prices = [size for k, size in got if k == "GridPrices"]
    assert len(prices) == HELLO_BURST and max(prices) < 1000  # the 10 rounds left, not the episode's 30
    assert [e["event"] for e in net.events if e["event"] == "hello_rate_limited"] == ["hello_rate_limited"]
    assert book(sim.db_path) == book(local_db)


# ---------------------------------------------------------------------------------------------- item 9
@pytest.fixture(params=["mqtt", "socketio"])
def open_bus(request):
    """An open Mosquitto or an open relay (no accounts): url."""
    if request.param == "mqtt":
        yield request.getfixturevalue("broker")
    else:
        pytest.importorskip("socketio", reason="python-socketio is not installed")
        from trexsim.fabric.socketio_server import ServerThread

        with ServerThread() as srv:
            yield srv.url


def test_an_aborted_run_stops_its_module_processes_at_once(tmp_path, open_bus):
    """Every module in its own process; the controller fails at round 5. The market used to wait its 300 s
    timeout and the households their 60 s before exiting; the controller now tells them."""
    from trexsim.fabric import open_fabric
    from trexsim.modules.controller import Controller

    cfg = community().model_dump(mode="json", by_alias=True)
    cfg["study"].update(days=ROUNDS / 1440, name="abort")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    ns = "test/abort"
    node = [sys.executable, "-m", "trexsim", "node"]
    procs = [subprocess.Popen([*node, "market", str(path), "--fabric", open_bus, "--namespace", ns, "--out",
                               str(tmp_path / "market")]),
             subprocess.Popen([*node, "participants", str(path), "--fabric", open_bus, "--namespace", ns])]
    controller = open_fabric(open_bus, namespace=ns, role="controller", participant_ids=IDS, timeout_s=60)

    def fail(episode, next_round):
        if next_round == 5:
            raise RuntimeError("the operator pulled the plug")

    try:
        controller.wait_for_hellos(2, timeout_s=60)
        with pytest.raises(RuntimeError, match="pulled the plug"):
            Controller(controller, IDS, 0, 60, ROUNDS, 1, 1).run(on_round=fail)
        t0 = time.monotonic()
        codes = [p.wait(timeout=40) for p in procs]
        elapsed = time.monotonic() - t0
    finally:
        controller.close()
        for p in procs:
            p.kill()
    assert codes == [2, 2] and elapsed < 20
    # the market's database says the run failed
    assert query(tmp_path / "market" / "run.duckdb", "SELECT status FROM runs") == [("failed",)]


# ---------------------------------------------------------------------------------------------- item 7
def test_a_late_order_to_a_market_in_its_own_process_is_rejected_and_recorded(tmp_path, open_bus):
    """Every module in its own process; an order sent between RoundEnd(r) and RoundStart(r + 1) for delivery
    in r + 1, a round the market has cleared already: it used to be booked and never traded. The market now
    rejects it (delivery_too_near), records it, and tells the sender."""
    from trexsim.fabric import open_fabric
    from trexsim.fabric.mqtt import _DECODER

    cfg = community().model_dump(mode="json", by_alias=True)
    cfg["study"].update(days=ROUNDS / 1440, name="late")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    config = parse_config(cfg)
    ns = "test/late"
    node = [sys.executable, "-m", "trexsim", "node"]
    procs = [subprocess.Popen([*node, "market", str(path), "--fabric", open_bus, "--namespace", ns, "--out",
                               str(tmp_path / "market"), "--timeout", "60"]),
             subprocess.Popen([*node, "participants", str(path), "--fabric", open_bus, "--namespace", ns, "--group", "0",
                               "--groups", "2", "--timeout", "60"]),
             subprocess.Popen([*node, "participants", str(path), "--fabric", open_bus, "--namespace", ns, "--group", "1",
                               "--groups", "2", "--timeout", "60"])]
    controller = open_fabric(open_bus, namespace=ns, role="controller", participant_ids=IDS, timeout_s=60)
    late = open_fabric(open_bus, namespace=ns, role="participants", account="pro-1", timeout_s=10)
    answers = []
    one = lambda v, dt=np.int64: np.array([v], dtype=dt)  # noqa: E731
    from trexsim.modules.controller import Controller

    def between(episode, next_round):
        if next_round == 10:  # RoundEnd(9) is acknowledged by the market: round 10 is cleared, round 10 not started
            late._send(f"{ns}/p/pro-1/orders", Orders(0, 9, 10, one(0), one(0), one(0), one(0.2, float), one(300),
                                                      one(1 << 45)))
            deadline = time.monotonic() + 20
            while not answers and time.monotonic() < deadline:
                try:
                    topic, payload = late._inbox.get(timeout=0.1)
                except Exception:  # queue.Empty
                    continue
                msg = _DECODER.decode(payload).message
                if topic.endswith("/settlements") and type(msg).__name__ == "Rejected":
                    answers.append((msg.reason, msg.order_id.tolist()))

    try:
        controller.wait_for_hellos(3, timeout_s=60)
        Controller(controller, IDS, config.study.start_utc_s, 60, ROUNDS, 1, 1).run(on_round=between)
        codes = [p.wait(timeout=30) for p in procs]
    finally:
        late.close()
        controller.close()
        for p in procs:
            p.kill()
    assert codes == [0, 0, 0]
    assert answers == [(["delivery_too_near"], [1 << 45])]
    db = tmp_path / "market" / "run.duckdb"
    assert query(db, f"SELECT round, delivery_round, participant, reason FROM rejections WHERE order_id = {1 << 45}") == [
        (9, 10, 0, "delivery_too_near")]
    assert query(db, f"SELECT count(*) FROM orders WHERE order_id = {1 << 45}") == [(0,)]


# ---------------------------------------------------------------------------------------------- item 9
def test_a_failed_networked_run_keeps_its_database_and_writes_its_fabric_events(tmp_path, mosquitto, accounts_dir,
                                                                               monkeypatch):
    """`trexsim run --fabric ... --participant-processes 2` that fails at round 12: the output folder, the rows
    recorded before the fault and the barrier's events stay, and the runs table says 'failed'."""
    from typer.testing import CliRunner

    import trexsim.cli as cli

    cfg = community().model_dump(mode="json", by_alias=True)
    cfg["study"].update(days=ROUNDS / 1440, name="fails")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))

    mallory = []

    def run_until_round_12(sim, quiet, plots):
        def fail(episode, round_done):
            if round_done == 5:  # an event for the barrier to record: a household account's forged hello
                mallory.append(login((mosquitto, accounts_dir.credentials,
                                      json.loads(accounts_dir.credentials.read_text())["accounts"], MqttFabric),
                                     "con-1"))
                mallory[0]._send(f"{NS}/fabric/hello/con-1", Hello("con-1", "market", "con-1"))
                deadline = time.monotonic() + 20
                while not any(e["event"] == "refused_hello" for e in sim.fabric.events) and time.monotonic() < deadline:
                    sim.fabric.poll(0.05)
            if round_done == 12:
                raise cli.TrexsimError("the operator pulled the plug at round 12")
        return sim.run(on_round=fail, plots=plots)

    monkeypatch.setattr(cli, "_run_with_progress", run_until_round_12)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.app, ["run", str(path), "--out", str(out), "--fabric", mosquitto,
                                          "--participant-processes", "2", "--credentials",
                                          str(accounts_dir.credentials), "--quiet"])
    assert result.exit_code == 2, result.output
    db = out / "run.duckdb"
    assert query(db, "SELECT status FROM runs") == [("failed",)]
    # the rounds delivered before the fault are kept
    assert query(db, "SELECT count(*), count(DISTINCT participant), max(round) FROM deliveries") == [(60, 5, 11)]
    try:
        assert query(db, "SELECT episode, round, event, account FROM fabric_events") == [(0, 4, "refused_hello", "con-1")]
    finally:
        for m in mallory:
            m.close()
