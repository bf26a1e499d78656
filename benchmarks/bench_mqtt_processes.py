"""Steady rounds per second over MQTT with the households in K participant processes.

    python benchmarks/bench_mqtt_processes.py --households 50 --rounds 200 --processes 10 50

The coordinator (controller, grid, market, recorder) runs in this process, the households in K
``trexsim node participants`` processes, through a Mosquitto started here on 127.0.0.1 with the
settings ``trexsim broker`` writes (``set_tcp_nodelay true``, ``max_inflight_messages 0``; no
authentication, which costs nothing per message). Fixed-price traders, so the figure is the
fabric's. Reports the time to the first 10 rounds (processes warming up), the steady rate from
round 20 to the end, and the CPU milliseconds per steady round of the coordinator, of all the
participant processes together and of the broker (Linux /proc: on two cores, 2000 / their sum is
the ceiling in rounds/s).
"""

from __future__ import annotations

import argparse
import json
import os
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


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a live process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(households: int, rounds: int, processes: int) -> tuple[float, float, dict[str, float]]:
    """(seconds to round 10, steady rounds/s from round 20, CPU ms per steady round by process kind)."""
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
        pids = {"coordinator": [os.getpid()], "participants": [n.pid for n in nodes], "broker": [broker.pid]}
        cpu: list[dict[str, float]] = []

        def on_round(episode: int, next_round: int) -> None:
            stamps.append(time.perf_counter())
            if len(stamps) in (20, rounds - 1):  # the steady window's CPU, per kind of process
                cpu.append({k: sum(cpu_s(p) for p in v) for k, v in pids.items()})

        t0 = time.perf_counter()
        sim.run(plots=False, on_round=on_round)
        s = np.asarray(stamps)
        steady_rounds = rounds - 1 - 20
        cpu_ms = {k: 1000 * (cpu[1][k] - cpu[0][k]) / steady_rounds for k in pids} if len(cpu) == 2 else {}
        for n in nodes:
            n.wait(timeout=60)
        net.close()
        return s[9] - t0, (len(s) - 20) / (s[-1] - s[19]), cpu_ms
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
    print("| participant processes | first 10 rounds s | steady rounds/s | CPU ms/round: coordinator | participants (all) | broker |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k in args.processes:
        warm, rate, cpu_ms = measure(args.households, args.rounds, k)
        c = [f"{cpu_ms.get(x, float('nan')):.1f}" for x in ("coordinator", "participants", "broker")]
        print(f"| {k} | {warm:.1f} | {rate:.1f} | {' | '.join(c)} |", flush=True)


if __name__ == "__main__":
    main()
