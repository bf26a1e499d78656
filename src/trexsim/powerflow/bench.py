"""Powerflow speed on generated feeders: ``python -m trexsim.powerflow.bench [--rounds N] [HOUSES ...]``.

Two ways of giving OpenDSS a new snapshot of every house's power are timed on the same random net
loads (±5 kW per house, new values every round) over the generated feeder:

- ``setters``: the engine's way: per round, ``Loads.Idx`` + ``Loads.kW`` + ``Loads.kvar`` for every
  load whose power changed, then ``Solution.Solve`` in snapshot mode;
- ``loadshape``: the engine's ``solve_arrays``, in batches of 60 rounds: every load follows its own LoadShape
  holding the batch (``useactual=yes``, kW and kvar given once as arrays), and OpenDSS solves a snapshot at each
  of its hours.

Both get every node voltage, element loading and the losses per round (on plain circuits such as these, from
the node voltages: ``OpenDSSEngine`` explains how), and
the two are checked to give the same voltages.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from trexsim.powerflow.feeder import FeederSpec, generate_feeder
from trexsim.powerflow.opendss import OpenDSSEngine


def _feeder(houses: int, folder: Path):
    gen = generate_feeder(FeederSpec(), houses, folder / f"feeder_{houses}.dss")
    engine = OpenDSSEngine()
    engine.load_circuit(gen.path)
    engine.bind_loads(gen.load_names)
    return engine, gen


def bench_setters(houses: int, p_w: np.ndarray, q_var: np.ndarray, folder: Path) -> tuple[float, np.ndarray]:
    engine, _ = _feeder(houses, folder)
    v = np.empty(len(p_w))
    t0 = time.perf_counter()
    for r in range(len(p_w)):
        engine.set_loads(p_w[r], q_var[r])
        engine.solve()
        v[r] = engine.results().node_pu.min()
    return time.perf_counter() - t0, v


def bench_loadshape(houses: int, p_w: np.ndarray, q_var: np.ndarray, interval_s: int,
                    folder: Path, batch: int = 60) -> tuple[float, np.ndarray]:
    """The engine's ``solve_arrays`` in batches of ``batch`` rounds (what the live module does; the replay's
    ``solve_series`` does the same in blocks of 60): LoadShapes, a snapshot solve per round, results from the node
    voltages. ``interval_s`` is kept for the callers; the shapes step one notional hour per round."""
    engine, _ = _feeder(houses, folder)
    v = np.empty(len(p_w))
    t0 = time.perf_counter()
    for b in range(0, len(p_w), batch):
        _, node_pu, _, _ = engine.solve_arrays(p_w[b:b + batch], q_var[b:b + batch], "loadshape")
        v[b:b + batch] = node_pu.min(axis=1)
    return time.perf_counter() - t0, v


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("houses", nargs="*", type=int, default=[10, 50, 100, 200])
    parser.add_argument("--rounds", type=int, default=1440)
    args = parser.parse_args(argv)
    import scipy.sparse  # noqa: F401  (imported once, ~0.2 s; a simulation has it already, from pvlib)

    rng = np.random.default_rng(1)
    print(f"{'houses':>6} {'setters r/s':>12} {'loadshape r/s':>14} {'max |dV| p.u.':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for houses in args.houses:
            p = rng.uniform(-5000, 5000, (args.rounds, houses)).round()
            q = np.abs(p) * 0.3287
            t_set, v_set = bench_setters(houses, p, q, Path(tmp))
            t_shape, v_shape = bench_loadshape(houses, p, q, 60, Path(tmp))
            print(f"{houses:>6} {args.rounds / t_set:>12.0f} {args.rounds / t_shape:>14.0f} "
                  f"{np.abs(v_set - v_shape).max():>14.2e}")


if __name__ == "__main__":
    main()
