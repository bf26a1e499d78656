"""Steady rounds per second over MQTT with the households in K participant processes.

    python benchmarks/bench_mqtt_processes.py --households 50 --rounds 200 --processes 10 50

The coordinator (controller, grid, market, recorder) runs in this process, the households in K
``trexsim node participants`` processes, through a Mosquitto started here on 127.0.0.1 with the
settings ``trexsim broker`` writes (``set_tcp_nodelay true``, ``max_inflight_messages 0``; no
authentication, which costs nothing per message). Fixed-price traders, so the figure is the
fabric's. Reports the time to the first 10 rounds (processes warming up) and the steady rate from
round 20 to the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from trexsim import parse_config
from trexsim.fabric import open_fabric
from trexsim.node import fabric_options, profile_meter_fallback, spawn_participant_nodes
from trexsim.simulation import Simulation


def community(households: int, rounds: int) -> dict:
    pro = households // 2
    return {
        "study": {"days": rounds / 1440, "seed": 3, "start_datetime": "2021-07-01 11:00:00", "name": "bench-mqtt"},
        "participants": {
            "pro": {"count": pro, "profile": {"type": "realistic", "pv_capacity_kw": 6},
                    "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
            "con": {"count": households - pro, "profile": {"type": "realistic", "pv_capacity_kw": 0},
                    "trader": {"type": "fixed_price", "bid_price": 0.13, "ask_price": 0.11}},
        },
    }


def mosquitto(tmp: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "set_tcp_nodelay true\nmax_inflight_messages 0\nmax_queued_messages 100000\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return f"mqtt://127.0.0.1:{port}", proc


def measure(households: int, rounds: int, processes: int) -> tuple[float, float]:
    cfg = community(households, rounds)
    tmp = Path(tempfile.mkdtemp(prefix="trexsim-bench-"))
    url, broker = mosquitto(tmp)
    nodes = []
    try:
        path = tmp / "c.json"
        path.write_text(json.dumps(cfg))
        config = parse_config(cfg)
        options = fabric_options(config, url, role="coordinator", barrier_timeout_s=60,
                                 participant_ids=[p for p, _ in config.expanded_participants()])
        net = open_fabric(url, **options)
        sim = Simulation(config, tmp / "out", fabric=net, local_participants=False)
        net.meter_fallback = profile_meter_fallback(config)
        nodes = spawn_participant_nodes(path, url, options["namespace"], processes, timeout_s=300)
        net.wait_for_hellos(processes, timeout_s=600)
        stamps: list[float] = []
        t0 = time.perf_counter()
        sim.run(plots=False, on_round=lambda episode, next_round: stamps.append(time.perf_counter()))
        s = np.asarray(stamps)
        for n in nodes:
            n.wait(timeout=60)
        net.close()
        return s[9] - t0, (len(s) - 20) / (s[-1] - s[19])
    finally:
        for n in nodes:
            n.kill()
        broker.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--processes", type=int, nargs="+", default=[10, 50])
    args = ap.parse_args()
    print("| participant processes | first 10 rounds s | steady rounds/s |")
    print("|---:|---:|---:|")
    for k in args.processes:
        warm, rate = measure(args.households, args.rounds, k)
        print(f"| {k} | {warm:.1f} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
