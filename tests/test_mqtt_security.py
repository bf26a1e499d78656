"""`trexsim broker`'s accounts and ACLs, enforced by a real Mosquitto started on 127.0.0.1 by the test."""

import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from test_mqtt_fabric import MOSQUITTO, community, free_port

pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed")
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

from trexsim.errors import TrexsimError  # noqa: E402
from trexsim.fabric import topics  # noqa: E402
from trexsim.fabric.broker import acl_rules, start_broker, write_broker_files  # noqa: E402
from trexsim.fabric.messages import Orders, Rejected, decode  # noqa: E402
from trexsim.fabric.mqtt import MqttFabric  # noqa: E402

IDS = ["pro-1", "pro-2", "pro-3", "con-1", "con-2"]  # community()'s households, in roster order
NS = "trexsim/sec"


@pytest.fixture(scope="module")
def secured():
    # under /tmp: mosquitto reads its password and ACL files as user 'mosquitto' when started as root
    directory = tempfile.mkdtemp(prefix="trexsim-broker-")
    # two layouts: each household in its own process, and a split into 2 processes
    files = write_broker_files(IDS, directory, NS, port=free_port(), groups=[2, len(IDS)])
    proc = start_broker(files)
    creds = json.loads(files.credentials.read_text())
    yield files, creds["accounts"]
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(directory, ignore_errors=True)


def login(files, passwords, account, role="participants", **kw):
    return MqttFabric(files.url, NS, role=role, account=account, username=account, password=passwords[account], **kw)


def orders_for(participant: int, order_id: int = 1) -> Orders:
    return Orders(0, 0, 1, np.array([participant]), np.array([0]), np.array([0]), np.array([0.12]), np.array([100]),
                  np.array([order_id]))


def test_the_generated_files(secured):
    files, passwords = secured
    conf = files.conf.read_text()
    assert f"listener {files.port} 127.0.0.1" in conf and "allow_anonymous false" in conf
    assert f"password_file {files.passwd}" in conf and f"acl_file {files.acl}" in conf
    # one account per household (a split into 5), each half of a split into 2, and the modules
    assert set(passwords) == {*IDS, "grp-0-of-2", "grp-1-of-2", "coordinator", "controller", "market", "observer"}
    assert "use_username_as_clientid true" in conf
    assert stat.S_IMODE(os.stat(files.credentials).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(files.passwd).st_mode) == 0o600
    if os.geteuid() == 0:  # readable by the user mosquitto drops to
        import pwd

        assert os.stat(files.passwd).st_uid == pwd.getpwnam("mosquitto").pw_uid
    lines = [line.split(":")[0] for line in files.passwd.read_text().splitlines()]
    assert sorted(lines) == sorted(passwords) and all(":$7$101$" in line for line in files.passwd.read_text().splitlines())
    acl = files.acl.read_text()
    block = acl.split("user pro-2\n")[1].split("\n\n")[0].splitlines()
    assert block == acl_rules("pro-2", NS) == [
        f"topic write {NS}/p/pro-2/orders", f"topic write {NS}/p/pro-2/meter", f"topic write {NS}/p/pro-2/round",
        f"topic write {NS}/p/pro-2/tc_plan",
        f"topic read {NS}/tc/#", f"topic read {NS}/p/pro-2/settlements",
        f"topic read {NS}/sim/#", f"topic read {NS}/grid/#", f"topic read {NS}/market/#",
        f"topic write {NS}/fabric/hello/pro-2", f"topic write {NS}/fabric/ack/pro-2"]


def test_a_wrong_password_and_no_password_are_refused(secured):
    files, passwords = secured
    with pytest.raises(TrexsimError, match="Not authorized"):
        MqttFabric(files.url, NS, role="participants", account="pro-1", username="pro-1", password="guess", timeout_s=5)
    with pytest.raises(TrexsimError, match="Not authorized"):
        MqttFabric(files.url, NS, role="participants", account="pro-1", timeout_s=5)


def test_bidding_as_another_participant_is_refused(secured):
    files, passwords = secured
    market = login(files, passwords, "market", role="market", participant_ids=IDS)
    mallory = login(files, passwords, "pro-1")
    seen = []
    market.subscribe(topics.ORDERS, seen.append)
    try:
        # on pro-2's topic: the broker refuses it and, over MQTT v5, says so
        mallory._send(f"{NS}/p/pro-2/orders", orders_for(1))
        # on its own topic naming pro-2 (index 1): the broker lets it through, the market's gate does not
        mallory._send(f"{NS}/p/pro-1/orders", orders_for(1))
        # its own order goes through
        mallory._send(f"{NS}/p/pro-1/orders", orders_for(0))
        market.poll(3.0)  # generous: a loaded machine may take a while
    finally:
        market.close()
        mallory.close()
    assert mallory.refused_publishes == [(f"{NS}/p/pro-2/orders", "Not authorized")]
    assert [m.participant.tolist() for m in seen] == [[0]]
    assert market.rejected == 1 and market.last_rejection.startswith("participant_not_sender")


def test_reading_another_participants_settlements_gets_nothing(secured):
    files, passwords = secured
    coordinator = login(files, passwords, "coordinator", role="coordinator")
    owner = login(files, passwords, "pro-2")
    snoop = login(files, passwords, "pro-1")
    got = {"owner": [], "snoop": []}
    owner._client.message_callback_add(f"{NS}/p/pro-2/settlements", lambda c, u, m: got["owner"].append(m.payload))
    snoop._client.message_callback_add(f"{NS}/p/pro-2/settlements", lambda c, u, m: got["snoop"].append(m.payload))
    snoop._client.message_callback_add(f"{NS}/#", lambda c, u, m: got["snoop"].append(m.payload))
    try:
        snoop._client.subscribe(f"{NS}/p/pro-2/settlements", qos=1)
        snoop._client.subscribe(f"{NS}/#", qos=1)
        time.sleep(0.3)
        secret = Rejected(0, 0, 1, np.array([1]), np.array([0]), np.array([0]), np.array([0.5]), np.array([7.0]),
                          np.array([3]), ["price_out_of_range"])
        coordinator._send(f"{NS}/p/pro-2/settlements", secret)
        deadline = time.monotonic() + 3
        while not got["owner"] and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        for f in (coordinator, owner, snoop):
            f.close()
    assert len(got["owner"]) == 1
    assert got["snoop"] == []


def test_a_run_over_the_secured_broker_gives_the_in_process_ledger(tmp_path, secured):
    from typer.testing import CliRunner

    from trexsim import parse_config
    from trexsim.cli import app
    from trexsim.simulation import Simulation

    files, _ = secured
    cfg = community().model_dump(mode="json", by_alias=True)
    cfg["study"].update(days=30 / 1440, name="sec")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    local = Simulation(parse_config(cfg), tmp_path / "local").run(plots=False)
    r = CliRunner().invoke(app, ["run", str(path), "--fabric", files.url, "--credentials", str(files.credentials),
                                 "--participant-processes", "2", "--out", str(tmp_path / "net"), "--no-plots", "--quiet"])
    assert r.exit_code == 0, r.output

    def book(db):
        con = duckdb.connect(str(db), read_only=True)
        rows = (con.execute("SELECT delivery_round, pool, buyer, seller, quantity_wh, buyer_price, seller_price "
                            "FROM settlements ORDER BY ALL").fetchall(),
                con.execute("SELECT * EXCLUDE (episode) FROM deliveries ORDER BY round, participant").fetchall(),
                con.execute("SELECT count(*) FROM rejections").fetchone()[0])
        con.close()
        return rows

    net = book(tmp_path / "net" / "run.duckdb")
    assert len(net[0]) > 0 and len(net[1]) == 30 * 5 and net[2] == 0
    assert net == book(local.database)


def test_decode_refuses_arrays_that_are_not_one_dimensional():
    import msgspec

    from trexsim.errors import MessageError

    bad = msgspec.msgpack.encode({"type": "Roster", "participant_ids": ["a"]})
    assert decode(bad).participant_ids == ["a"]
    arr = {"dtype": "<i8", "shape": [1, 1], "data": np.zeros(1, dtype=np.int64).tobytes()}
    two_d = msgspec.msgpack.encode({"type": "EpisodeEnd", "episode": 0}) and msgspec.msgpack.encode(
        {"type": "GridPrices", "episode": 0, "first_round": 0, "buy_price": arr, "sell_price": arr})
    with pytest.raises(MessageError, match="shape"):
        decode(two_d)
    short = {"dtype": "<i8", "shape": [3], "data": np.zeros(1, dtype=np.int64).tobytes()}
    with pytest.raises(MessageError, match="3"):
        decode(msgspec.msgpack.encode({"type": "GridPrices", "episode": 0, "first_round": 0, "buy_price": short,
                                       "sell_price": short}))


def test_modules_started_one_by_one_as_on_separate_hosts(tmp_path, secured):
    """Market, controller and households each with its own account, as on separate hosts: the market by
    `trexsim node market`, con-1 by a `trexsim node participant` process, the controller, con-2 and the
    other households (grp-0-of-2) through the same functions in threads (to keep the test short)."""
    import subprocess
    import sys
    import threading

    from typer.testing import CliRunner

    from trexsim import parse_config
    from trexsim.cli import app
    from trexsim.node import fabric_options, hold_participants, participant_account, participants_account, run_controller
    from trexsim.simulation import Simulation

    files, _ = secured
    cfg = community().model_dump(mode="json", by_alias=True)
    cfg["study"].update(days=20 / 1440, name="sec")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    config = parse_config(cfg)
    local = Simulation(config, tmp_path / "local").run(plots=False)
    common = ["--fabric", files.url, "--credentials", str(files.credentials), "--timeout", "60"]
    # group 1 of 2 is con-1 and con-2: here one module each, logged in as the household itself
    procs = [subprocess.Popen([sys.executable, "-m", "trexsim", "node", "participant", str(path), "--id", "con-1", *common])]
    errors = []

    def module(role, account, body):
        try:
            fabric = MqttFabric(files.url, role=role, **{k: v for k, v in fabric_options(
                config, files.url, role=role, account=account, credentials=files.credentials).items() if k != "role"})
            try:
                body(fabric)
            finally:
                fabric.close()
        except Exception as exc:  # reported by the test below
            errors.append(exc)

    account, index = participants_account(config, 0, 2)
    threads = [threading.Thread(target=module, args=("participants", account, lambda f: (hold_participants(config, f, index),
                                                                                          f.serve("participants")))),
               threading.Thread(target=module, args=("participants", "con-2", lambda f: (
                   hold_participants(config, f, participant_account(config, "con-2")[1]), f.serve("participants")))),
               threading.Thread(target=module, args=("controller", "controller", lambda f: run_controller(config, f, 4)))]
    try:
        for t in threads:
            t.start()
        r = CliRunner().invoke(app, ["node", "market", str(path), "--out", str(tmp_path / "net"), *common])
        assert r.exit_code == 0, (r.output, errors)
        for t in threads:
            t.join(timeout=30)
        assert errors == []
        assert [p.wait(timeout=30) for p in procs] == [0]
    finally:
        for p in procs:
            p.kill()
    db = tmp_path / "net" / "run.duckdb"
    assert query_book(db) == query_book(local.database)
    assert len(query_book(db)[1]) == 20 * 5


def query_book(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return (con.execute("SELECT delivery_round, pool, buyer, seller, quantity_wh, buyer_price, seller_price "
                            "FROM settlements ORDER BY ALL").fetchall(),
                con.execute("SELECT * EXCLUDE (episode) FROM deliveries ORDER BY round, participant").fetchall())
    finally:
        con.close()


def test_the_broker_command_writes_its_files_and_refuses_a_folder_mosquitto_cannot_reach(tmp_path):
    from typer.testing import CliRunner

    from trexsim.cli import app

    path = tmp_path / "c.json"
    path.write_text(json.dumps(community().model_dump(mode="json", by_alias=True)))
    target = tempfile.mkdtemp(prefix="trexsim-broker-cli-")
    try:
        r = CliRunner().invoke(app, ["broker", str(path), "--dir", target, "--port", "18830", "--groups", "3", "--no-start"])
        assert r.exit_code == 0, r.output
        creds = json.loads((Path(target) / "credentials.json").read_text())
        assert creds["url"] == "mqtt://127.0.0.1:18830" and creds["namespace"] == "trexsim/trexsim-study"
        # accounts follow who holds the households: 3 groups of 2, 2 and 1 (con-2 alone: its own id), no other
        assert set(creds["accounts"]) == {"grp-0-of-3", "grp-1-of-3", "con-2", "coordinator", "controller", "market",
                                          "observer"}
    finally:
        shutil.rmtree(target, ignore_errors=True)
    if os.geteuid() == 0:  # pytest's tmp_path lies under a 0700 folder: mosquitto's own user could not read it
        hidden = tmp_path / "private"
        hidden.mkdir(mode=0o700)
        r = CliRunner().invoke(app, ["broker", str(path), "--dir", str(hidden / "broker"), "--no-start"])
        assert r.exit_code == 2 and "not traversable by other users" in r.output
        assert not (hidden / "broker").exists()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_a_tls_listener_and_credentials_in_the_url():
    import subprocess

    directory = Path(tempfile.mkdtemp(prefix="trexsim-tls-"))
    broker_dir = Path(tempfile.mkdtemp(prefix="trexsim-broker-tls-"))  # a direct child of /tmp: mosquitto's user reaches it
    try:
        cert, key = directory / "cert.pem", directory / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                        "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        files = write_broker_files(IDS, broker_dir, NS, port=free_port(), certfile=cert, keyfile=key)
        assert files.url.startswith("mqtts://127.0.0.1:")
        proc = start_broker(files)
        try:
            passwords = json.loads(files.credentials.read_text())["accounts"]
            port = files.port
            market = MqttFabric(f"mqtts://market:{passwords['market']}@127.0.0.1:{port}", NS, role="market",
                                participant_ids=IDS, ca_file=str(cert))
            house = MqttFabric(f"mqtts://pro-2:{passwords['pro-2']}@127.0.0.1:{port}", NS, role="participants",
                               ca_file=str(cert))
            seen = []
            market.subscribe(topics.ORDERS, seen.append)
            try:
                assert house.account == "pro-2"  # from the URL's user name
                house.publish(topics.ORDERS, orders_for(1))
                market.poll(0.5)
            finally:
                market.close()
                house.close()
            assert [m.participant.tolist() for m in seen] == [[1]] and house.refused_publishes == []
            # without the CA the broker's certificate is not trusted
            with pytest.raises(TrexsimError, match="cannot reach|certificate"):
                MqttFabric(f"mqtts://pro-2:{passwords['pro-2']}@127.0.0.1:{port}", NS, role="participants", timeout_s=3)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(broker_dir, ignore_errors=True)


@pytest.mark.parametrize("tc_market", ["schedule", "double_auction"])
def test_a_tc_run_over_the_secured_broker_gives_the_in_process_ledger(tmp_path, secured, tc_market):
    """``market.type: tc`` with the households in 2 processes: the TC market's schedules (tc/schedule) and the
    households' plans (p/<account>/tc_plan; a double auction's bids ride on them) pass the generated ACLs and
    the gate, and every pass gives the in-process result."""
    from typer.testing import CliRunner

    from trexsim import parse_config
    from trexsim.cli import app
    from trexsim.simulation import Simulation

    files, _ = secured
    cfg = community().model_dump(mode="json", by_alias=True)
    cfg["study"].update(days=30 / 1440, name="sec-tc", start_datetime="2021-07-01 18:00:00")  # the evening peak
    cfg["market"]["type"] = "tc"
    for spec in cfg["participants"].values():
        spec["profile"]["load_scale"] = 8
    # two 15-minute horizons of 5-minute prices, congestion priced from 5 % loading: the second is priced mid-run
    cfg["tc"] = {"horizon_h": 0.25, "price_interval_s": 300, "iterations": 3, "feeder": {"transformer_kva": 100},
                 "congestion": {"loading_threshold_pct": 5},
                 "flexible_load": {"share": 0.3, "window_h": 0.25, "max_power_w": 5000}}
    if tc_market == "double_auction":  # six 5-minute auctions against a small capacity, so that some bind
        cfg["tc"].update(market="double_auction", capacity_kw=4.0)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    local = Simulation(parse_config(cfg), tmp_path / "local").run(plots=False)
    r = CliRunner().invoke(app, ["run", str(path), "--fabric", files.url, "--credentials", str(files.credentials),
                                 "--participant-processes", "2", "--out", str(tmp_path / "net"), "--no-plots", "--quiet"])
    assert r.exit_code == 0, r.output

    def book(db):
        con = duckdb.connect(str(db), read_only=True)
        rows = (con.execute("SELECT * EXCLUDE (episode) FROM tc_schedule ORDER BY first_round").fetchall(),
                con.execute("SELECT * EXCLUDE (episode) FROM rounds ORDER BY round").fetchall(),
                con.execute("SELECT * EXCLUDE (episode) FROM deliveries ORDER BY round, participant").fetchall(),
                con.execute("SELECT count(*) FROM rejections").fetchone()[0])
        con.close()
        return rows

    net = book(tmp_path / "net" / "run.duckdb")
    assert len(net[0]) == 6 and len(net[2]) == 30 * 5 and net[3] == 0
    assert max(row[4] for row in net[0]) > 0          # congestion was priced
    assert net == book(local.database)
    summary = json.loads((tmp_path / "net" / "summary.json").read_text())["tc"]
    assert summary["horizons"] == (2 if tc_market == "schedule" else 6)
    assert summary["late_horizons"] == 0 and summary["refused_plans"] == 0
