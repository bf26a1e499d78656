"""Published test feeders shipped with trexsim, named in a config as ``"feeder": "builtin:<name>"``.

The circuit files are the IEEE PES Distribution System Analysis Subcommittee's test feeders in OpenDSS form,
as published in the OpenDSS repository (``src/trexsim/powerflow/feeders/*/NOTICE.md`` names the source, the
commit and every change). They go through the same OpenDSS path as a user's own circuit; with no mapping,
the run's households are assigned to the feeder's loads in the circuit's order, round robin
(``round_robin_mapping``). Nothing here imports OpenDSS: this module only finds files.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

from trexsim.powerflow.errors import PowerflowError

PREFIX = "builtin:"


@dataclass(frozen=True)
class BuiltinFeeder:
    name: str          # as written after "builtin:"
    folder: str        # under src/trexsim/powerflow/feeders/
    master: str        # the file OpenDSS redirects to
    title: str
    loads: int         # Load elements in the circuit, as published
    transformer_kva: float
    lv_kv: float       # the voltage the households' loads sit at (line to line), kV


BUILTIN_FEEDERS: dict[str, BuiltinFeeder] = {
    "european-lv": BuiltinFeeder(
        "european-lv", "european_lv", "master.dss",
        "IEEE European Low Voltage Test Feeder: 55 single-phase loads on 906 buses, 800 kVA 11/0.416 kV, 50 Hz",
        loads=55, transformer_kva=800.0, lv_kv=0.416),
    "ieee13": BuiltinFeeder(
        "ieee13", "ieee13", "IEEE13Nodeckt.dss",
        "IEEE 13 Node Test Feeder: 4.16 kV, 15 spot loads (3,466 kW), 5,000 kVA substation, regulators, 60 Hz",
        loads=15, transformer_kva=5000.0, lv_kv=4.16),
}


def is_builtin(feeder) -> bool:
    """Whether ``feeder`` (a config value: str, Path, dict or None) names a built-in feeder."""
    return isinstance(feeder, (str, Path)) and str(feeder).strip().lower().startswith(PREFIX)


def builtin_names() -> list[str]:
    return [PREFIX + name for name in BUILTIN_FEEDERS]


def builtin_feeder(feeder: str | Path, key: str = "powerflow.feeder") -> BuiltinFeeder:
    """The built-in feeder ``feeder`` names; an unknown name is an error naming ``key`` and every built-in."""
    name = str(feeder).strip()[len(PREFIX):].strip().lower()
    if name not in BUILTIN_FEEDERS:
        raise PowerflowError(f"{key}: unknown built-in feeder {str(feeder)!r}; the built-in feeders are "
                             f"{', '.join(builtin_names())}")
    return BUILTIN_FEEDERS[name]


def builtin_path(feeder: str | Path, key: str = "powerflow.feeder") -> Path:
    """The master .dss file of the built-in feeder ``feeder`` names (inside the installed package)."""
    spec = builtin_feeder(feeder, key)
    path = Path(str(resources.files("trexsim.powerflow").joinpath("feeders", spec.folder, spec.master)))
    if not path.is_file():  # pragma: no cover - a broken installation
        raise PowerflowError(f"{key}: the files of {PREFIX}{spec.name} are missing from this installation ({path})")
    return path


def round_robin_mapping(participant_ids: Sequence[str], load_names: Sequence[str]) -> dict[str, list[str]]:
    """Household i drives load i mod (number of loads), the loads in the circuit's order: one household per load
    while there are loads enough, then a second on each from the first load on, and so on."""
    if not load_names:
        raise PowerflowError("a built-in feeder without loads cannot carry households")
    return {pid: [load_names[i % len(load_names)]] for i, pid in enumerate(participant_ids)}
