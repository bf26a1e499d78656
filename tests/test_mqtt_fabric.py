"""The MQTT fabric through a real Mosquitto broker started by the test on 127.0.0.1."""

import hashlib
import shutil
import socket
import subprocess
import time

import duckdb
import numpy as np
import pytest

pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed")
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if shutil.os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

from trexsim import parse_config  # noqa: E402
from trexsim.errors import TrexsimError  # noqa: E402
from trexsim.fabric import topics  # noqa: E402
from trexsim.fabric.messages import Orders  # noqa: E402
from trexsim.fabric.mqtt import MqttFabric  # noqa: E402
from trexsim.simulation import Simulation  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    if MOSQUITTO is None:  # (other modules borrow this fixture: they skip with it, as this module does)
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 0\n"
                    "set_tcp_nodelay true\n")
    conf.chmod(0o644)
    conf.parent.chmod(0o755)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"mosquitto did not start: {proc.stdout.read().decode()}")
    yield f"mqtt://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def ledger(db):
    con = duckdb.connect(str(db), read_only=True)
    h = hashlib.sha256()
    for table, key in [("orders", "round, order_id"), ("settlements", "delivery_round, bid_id, ask_id"),
                       ("deliveries", "round, participant")]:
        for row in con.execute(f"SELECT * EXCLUDE (episode) FROM {table} ORDER BY {key}").fetchall():
            h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


def community():
    return parse_config({
        "study": {"days": 60 / 1440, "seed": 9, "start_datetime": "2021-07-01 11:00:00"},
        "participants": {
            "pro": {"count": 3, "profile": {"type": "realistic", "pv_capacity_kw": 6},
                    "storage": {"capacity_wh": 8000, "power_w": 4000},
                    "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
            "con": {"count": 2, "profile": {"type": "realistic", "pv_capacity_kw": 0},
                    "trader": {"type": "fixed_price", "bid_price": 0.13, "ask_price": 0.11}},
        },
    })


def test_same_ledger_over_the_broker_as_in_process(tmp_path, broker):
    local = Simulation(community(), tmp_path / "local").run(plots=False)
    fabric = MqttFabric(broker, namespace="test/same-ledger")
    try:
        remote = Simulation(community(), tmp_path / "mqtt", fabric=fabric).run(plots=False)
    finally:
        fabric.close()
    assert remote.summary["market"]["settled_wh"] > 0
    assert ledger(remote.database) == ledger(local.database)
    assert remote.summary["participants"] == local.summary["participants"]


def test_a_malformed_message_is_refused_and_the_next_good_one_goes_through(broker):
    market = MqttFabric(broker, namespace="test/bad", role="market", participant_ids=["h0", "h1"])
    house = MqttFabric(broker, namespace="test/bad", role="participants", account="h1")
    seen = []
    market.subscribe(topics.ORDERS, seen.append)
    try:
        house._client.publish("test/bad/p/h1/orders", b"\x93not msgpack at all", qos=1).wait_for_publish(5)
        ok = Orders(0, 1, 2, np.array([1]), np.array([0]), np.array([0]), np.array([0.1]), np.array([5]), np.array([1]))
        house.publish(topics.ORDERS, ok)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:  # a loaded machine may take a while
            market.poll(0.2)
    finally:
        market.close()
        house.close()
    assert market.rejected == 1 and market.last_rejection.startswith("malformed")
    assert len(seen) == 1 and seen[0].quantity_wh.tolist() == [5]


def test_an_unreachable_broker_is_a_clear_error():
    with pytest.raises(TrexsimError, match="cannot reach the MQTT broker"):
        MqttFabric(f"mqtt://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(TrexsimError, match="expected mqtt://"):
        MqttFabric("http://127.0.0.1:1883")


def run_here_and_in_processes(cfg: dict, tmp_path, broker: str, processes: int = 2):
    """The config run in process (``tmp_path/local``) and with its participants in ``processes`` processes over
    the broker (``tmp_path/net``, through `trexsim run --fabric`); returns the local run's result."""
    import json

    from typer.testing import CliRunner

    from trexsim.cli import app

    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    local = Simulation(parse_config(cfg), tmp_path / "local").run(plots=False)
    r = CliRunner().invoke(app, ["run", str(path), "--fabric", broker, "--participant-processes", str(processes),
                                 "--out", str(tmp_path / "net"), "--no-plots", "--quiet"])
    assert r.exit_code == 0, r.output
    return local


def test_participants_in_separate_processes_give_the_same_ledger(tmp_path, broker):
    cfg = community().model_dump(mode="json", by_alias=True)
    cfg["study"]["days"] = 30 / 1440
    cfg["study"]["name"] = "processes"
    local = run_here_and_in_processes(cfg, tmp_path, broker)

    def book(db):
        con = duckdb.connect(str(db), read_only=True)
        rows = (con.execute("SELECT delivery_round, pool, buyer, seller, quantity_wh, buyer_price, seller_price "
                            "FROM settlements ORDER BY ALL").fetchall(),
                con.execute("SELECT * EXCLUDE (episode) FROM deliveries ORDER BY round, participant").fetchall())
        con.close()
        return rows

    net = book(tmp_path / "net" / "run.duckdb")
    assert len(net[0]) > 0 and len(net[1]) == 30 * 5
    assert net == book(local.database)


def test_a_participant_publishes_at_qos_1_until_the_broker_accepts_then_at_qos_0(broker):
    """The first publish on a topic is confirmed by the broker (a refusal would come back); later ones
    need no PUBACK. A process that waits on the fabric reads its socket itself (no paho thread)."""
    import paho.mqtt.client as mqtt

    got = []
    spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = lambda client, userdata, msg: got.append(msg.qos)
    host, port = broker.removeprefix("mqtt://").split(":")
    spy.connect(host, int(port))
    spy.loop_start()
    house = MqttFabric(broker, namespace="test/qos", role="participants", account="h1")
    market = MqttFabric(broker, namespace="test/qos", role="market", participant_ids=["h0", "h1"])
    seen = []
    market.subscribe(topics.ORDERS, seen.append)
    try:
        spy.subscribe("test/qos/p/h1/orders", qos=1)[0]
        time.sleep(0.3)
        for i in range(3):
            house.publish(topics.ORDERS, Orders(0, 1, 2, np.array([1]), np.array([0]), np.array([0]), np.array([0.1]),
                                                np.array([5 + i]), np.array([i + 1])))
            deadline = time.monotonic() + 5
            while "test/qos/p/h1/orders" not in house._confirmed_topics and time.monotonic() < deadline:
                time.sleep(0.01)
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:  # a loaded machine may take a while
            market.poll(0.2)
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        spy.loop_stop()
        spy.disconnect()
        market.close()
        house.close()
    assert got == [1, 0, 0]  # delivered at min(publish QoS, subscription QoS 1)
    assert [o.quantity_wh.tolist() for o in seen] == [[5], [6], [7]]  # the market got all three, in order
    assert market._own_loop and market._client._thread is None


def test_a_fabric_takes_its_subscriptions_again_after_the_broker_restarts(tmp_path):
    """A clean-start session loses its subscriptions with the connection: after reconnecting the
    fabric subscribes again, so messages reach it once more."""
    import paho.mqtt.client as mqtt

    from trexsim.fabric.messages import Hello
    from trexsim.fabric.mqtt import _ENCODER, _Envelope

    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    conf.chmod(0o644)
    tmp_path.chmod(0o755)

    def start():
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return proc
            except OSError:
                time.sleep(0.05)
        proc.kill()
        pytest.fail("mosquitto did not start")

    def say_hello(account):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.publish(f"ns/fabric/hello/{account}",
                       _ENCODER.encode(_Envelope(f"{account}-1", 0, Hello(f"{account}-1", "participants", account))),
                       qos=1).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()

    broker = start()
    watcher = MqttFabric(f"mqtt://127.0.0.1:{port}", "ns", role="coordinator", timeout_s=10)
    try:
        say_hello("a")
        assert [h.account for h in watcher.wait_for_hellos(1, timeout_s=5)] == ["a"]
        broker.terminate()
        broker.wait(timeout=10)
        broker = start()
        watcher.poll(3.0)  # notices the lost connection, reconnects and subscribes again
        say_hello("b")
        assert [h.account for h in watcher.wait_for_hellos(2, timeout_s=5)] == ["a", "b"]
    finally:
        watcher.close()
        broker.terminate()
        broker.wait(timeout=10)
