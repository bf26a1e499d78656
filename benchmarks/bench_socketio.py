"""Rounds per second of one small community in process, over MQTT (Mosquitto) and over Socket.IO.

    python benchmarks/bench_socketio.py --households 10 --rounds 120 --processes 2 10

Every household trades at fixed prices (the traders cost almost nothing, so the figure is the
fabric's). A networked run has the controller, grid, market and recorder in this process and the
households in K ``trexsim node participants`` processes; the clock runs from the first round to
the end of the run (process start-up and joining excluded). Mosquitto runs with
``set_tcp_nodelay true`` and ``max_inflight_messages 0``; ``trexsim fabric-server`` with its
defaults. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trexsim import parse_config
from trexsim.simulation import Simulation


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def community(households: int, rounds: int) -> dict:
    pro = households // 2
    return {
        "study": {"days": rounds / 1440, "seed": 3, "start_datetime": "2021-07-01 11:00:00", "name": "bench-fabric"},
        "participants": {
            "pro": {"count": pro, "profile": {"type": "realistic", "pv_capacity_kw": 6},
                    "trader": {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10}},
            "con": {"count": households - pro, "profile": {"type": "realistic", "pv_capacity_kw": 0},
                    "trader": {"type": "fixed_price", "bid_price": 0.13, "ask_price": 0.11}},
        },
    }


def start_mosquitto(tmp: Path) -> tuple[str, subprocess.Popen]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 0\n"
                    "set_tcp_nodelay true\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return f"mqtt://127.0.0.1:{port}", proc


def start_socketio() -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "trexsim", "fabric-server", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # "Socket.IO fabric server on ..."
    return f"socketio://127.0.0.1:{port}", proc


def networked(url: str, cfg: dict, path: Path, out: Path, processes: int) -> float:
    """Seconds from the first round to the end of a run over ``url`` with ``processes`` participant processes."""
    from trexsim.fabric import open_fabric
    from trexsim.node import fabric_options, profile_meter_fallback, spawn_participant_nodes

    config = parse_config(cfg)
    options = fabric_options(config, url, role="coordinator", participant_ids=[p for p, _ in config.expanded_participants()],
                             barrier_timeout_s=30)
    net = open_fabric(url, **options)
    nodes = []
    try:
        sim = Simulation(config, out, fabric=net, local_participants=not processes)
        if processes:
            net.meter_fallback = profile_meter_fallback(config)
            nodes = spawn_participant_nodes(path, url, options["namespace"], processes)
            net.wait_for_hellos(processes, timeout_s=300)
        t0 = time.perf_counter()
        sim.run(plots=False)
        elapsed = time.perf_counter() - t0
        for n in nodes:
            n.wait(timeout=60)
        if net.events:
            print(f"  warning: fabric events {net.events}", file=sys.stderr)
        return elapsed
    finally:
        for n in nodes:
            n.kill()
        net.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=120)
    ap.add_argument("--processes", type=int, nargs="+", default=[2, 10], help="participant process counts")
    ap.add_argument("--fabrics", nargs="+", default=["inprocess", "mqtt", "socketio"])
    args = ap.parse_args()
    cfg = community(args.households, args.rounds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "c.json"
        path.write_text(json.dumps(cfg))
        Simulation(parse_config(cfg), tmp / "warm").run(plots=False)  # compile the kernels once
        if "inprocess" in args.fabrics:
            t0 = time.perf_counter()
            Simulation(parse_config(cfg), tmp / "inproc").run(plots=False)
            rows.append(("in-process", 0, time.perf_counter() - t0))
        for fabric in ("mqtt", "socketio"):
            if fabric not in args.fabrics:
                continue
            url, server = start_mosquitto(tmp) if fabric == "mqtt" else start_socketio()
            try:
                for k in [0, *args.processes]:
                    rows.append((fabric, k, networked(url, cfg, path, tmp / f"{fabric}-{k}", k)))
            finally:
                server.terminate()
                server.wait(timeout=10)
    print(f"{args.households} households, {args.rounds} rounds; {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}\n")
    print("| fabric | participant processes | run s | rounds/s |")
    print("|---|---:|---:|---:|")
    for fabric, k, seconds in rows:
        print(f"| {fabric} | {k or '- (all in the coordinator)'} | {seconds:.2f} | {args.rounds / seconds:.1f} |")


if __name__ == "__main__":
    main()
