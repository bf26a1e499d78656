"""Steady rounds per second of a networked run with the households in K participant processes,
over MQTT (a Mosquitto started here) and over Socket.IO (a ``trexsim fabric-server`` started here).

    python benchmarks/bench_fabric.py --households 50 --rounds 300 --processes 10 50 --fabrics mqtt socketio

The coordinator (controller, grid, market, recorder) runs in this process, the households in K
``trexsim node participants`` processes. Mosquitto on 127.0.0.1 with the settings ``trexsim broker``
writes (``set_tcp_nodelay true``, ``max_inflight_messages 0``, ``max_queued_messages 100000``,
``persistence false``; no authentication, which costs nothing per message); the relay with its
defaults. Fixed-price traders, so the figure is the fabric's. Per run: the time to the first 10
rounds (processes warming up), the steady rate from round 20 to the end, the CPU milliseconds per
steady round of the coordinator, of all participant processes together and of the broker / relay
(Linux /proc; on C cores, 1000 * C / their sum is the ceiling in rounds/s), and the messages a
round the coordinator sent and received. Prints a Markdown table and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trexsim import parse_config
from trexsim.fabric import open_fabric
from trexsim.node import configure_market_fabric, fabric_options, spawn_participant_nodes
from trexsim.simulation import Simulation

from bench_mqtt_processes import community as mqtt_processes_community  # noqa: E402 - a sibling script


def community(households: int, rounds: int) -> dict:
    """The households of bench_mqtt_processes.py (half with PV, fixed-price traders), under this benchmark's name."""
    config = mqtt_processes_community(households, rounds)
    config["study"]["name"] = "bench-fabric"
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def start_server(fabric: str, tmp: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    if fabric == "mqtt":
        conf = tmp / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "set_tcp_nodelay true\nmax_inflight_messages 0\nmax_queued_messages 100000\n")
        proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"mqtt://127.0.0.1:{port}"
    else:
        proc = subprocess.Popen([sys.executable, "-m", "trexsim", "fabric-server", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"socketio://127.0.0.1:{port}"
    wait_port(port)
    return url, proc


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a live process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Counting:
    """Counts the coordinator's sends and receives (wraps the fabric's _send and _receive)."""

    def __init__(self, net) -> None:
        self.sent = self.received = 0
        send, receive = net._send, net._receive

        def counted_send(*a, **k):
            self.sent += 1
            return send(*a, **k)

        def counted_receive(*a, **k):
            self.received += 1
            return receive(*a, **k)

        net._send, net._receive = counted_send, counted_receive


def measure(fabric: str, households: int, rounds: int, processes: int) -> dict:
    cfg = community(households, rounds)
    tmp = Path(tempfile.mkdtemp(prefix="trexsim-bench-"))
    url, server = start_server(fabric, tmp)
    nodes = []
    try:
        path = tmp / "c.json"
        path.write_text(json.dumps(cfg))
        config = parse_config(cfg)
        options = fabric_options(config, url, role="coordinator", barrier_timeout_s=60,
                                 participant_ids=[p for p, _ in config.expanded_participants()])
        net = open_fabric(url, **options)
        sim = Simulation(config, tmp / "out", fabric=net, local_participants=False)
        configure_market_fabric(net, config)
        nodes = spawn_participant_nodes(path, url, options["namespace"], processes, timeout_s=300)
        net.wait_for_hellos(processes, timeout_s=600)
        counts = Counting(net)
        stamps: list[float] = []
        pids = {"coordinator": [os.getpid()], "participants": [n.pid for n in nodes], "server": [server.pid]}
        marks: list[tuple[dict[str, float], int, int]] = []

        def on_round(episode: int, next_round: int) -> None:
            stamps.append(time.perf_counter())
            if len(stamps) in (20, rounds - 1):  # the steady window's CPU and messages
                marks.append(({k: sum(cpu_s(p) for p in v) for k, v in pids.items()}, counts.sent, counts.received))

        t0 = time.perf_counter()
        sim.run(plots=False, on_round=on_round)
        s = np.asarray(stamps)
        steady = rounds - 1 - 20
        (c0, s0, r0), (c1, s1, r1) = marks
        for n in nodes:
            n.wait(timeout=60)
        net.close()
        return {"warm_s": s[9] - t0, "rate": (len(s) - 20) / (s[-1] - s[19]),
                "cpu_ms": {k: 1000 * (c1[k] - c0[k]) / steady for k in pids},
                "sent": (s1 - s0) / steady, "received": (r1 - r0) / steady, "events": len(net.events),
                "settled_wh": sim_summary(tmp / "out")}
    finally:
        for n in nodes:
            n.kill()
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def sim_summary(out: Path) -> int:
    try:
        return int(json.loads((out / "summary.json").read_text())["market"]["settled_wh"])
    except (OSError, KeyError, ValueError):
        return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--processes", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--fabrics", nargs="+", default=["mqtt", "socketio"], choices=["mqtt", "socketio"])
    args = ap.parse_args()
    print(f"{args.households} households, {args.rounds} rounds; {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the start\n")
    print("| fabric | participant processes | first 10 rounds s | steady rounds/s | CPU ms/round: coordinator "
          "| participants (all) | broker / relay | coordinator msgs/round out | in | barrier events | settled Wh |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fabric in args.fabrics:
        for k in args.processes:
            r = measure(fabric, args.households, args.rounds, k)
            c = r["cpu_ms"]
            print(f"| {fabric} | {k} | {r['warm_s']:.1f} | {r['rate']:.1f} | {c['coordinator']:.1f} | "
                  f"{c['participants']:.1f} | {c['server']:.1f} | {r['sent']:.1f} | {r['received']:.1f} | "
                  f"{r['events']} | {r['settled_wh']} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
