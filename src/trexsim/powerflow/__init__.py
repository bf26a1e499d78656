"""Powerflow of a trexsim community on a distribution feeder, after the fact from a run's ledger.

``powerflow_command(run_dir, feeder=None, mapping=None, every=1, out=None, ...)`` replays a run's
metered net loads through a feeder (a generated European LV feeder, or a user's OpenDSS circuit with a
participant -> load mapping) and writes ``RUN_DIR/powerflow/``. The solver sits behind
``PowerflowEngine``; ``OpenDSSEngine`` runs OpenDSS through OpenDSSDirect.py, an optional dependency
(``pip install 'trexsim[powerflow]'``) imported only when an engine is created. See docs/powerflow.md.
"""

from trexsim.powerflow.engine import Layout, PowerflowEngine, Snapshot, create_engine
from trexsim.powerflow.errors import PowerflowError
from trexsim.powerflow.feeder import CABLES, TRANSFORMERS, FeederSpec, GeneratedFeeder, feeder_text, generate_feeder
from trexsim.powerflow.mapping import LoadMapping, read_mapping, resolve_mapping
from trexsim.powerflow.splitphase import SplitPhaseSpec
from trexsim.powerflow.replay import Ledger, Limits, Report, net_powers, powerflow_command, read_ledger, replay_ledger

__all__ = [
    "CABLES", "TRANSFORMERS", "FeederSpec", "GeneratedFeeder", "Layout", "Ledger", "Limits", "LoadMapping",
    "PowerflowEngine", "PowerflowError", "Report", "Snapshot", "SplitPhaseSpec", "create_engine", "feeder_text", "generate_feeder",
    "net_powers", "powerflow_command", "read_ledger", "read_mapping", "replay_ledger", "resolve_mapping",
]
