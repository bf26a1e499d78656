"""A parametric European low-voltage feeder, written as an OpenDSS circuit (.dss text).

One MV/LV distribution transformer (10 kV / 0.4 kV, Dyn5) feeds radial laterals of underground cable
from its LV busbar; each house hangs off a junction on a lateral through its own service cable and is
one OpenDSS Load (its metered net power: PV and battery are inside it, so exports are negative
loads). The sizes and impedances are those of the Kerber reference LV networks (G. Kerber, TU München
2011, as implemented in pandapower); every number and its source is listed in ``docs/powerflow.md``.

Layout (``houses_per_lateral = 3``, two laterals)::

    MV source ── transformer ── lv ─┬─ j1_1 ── j1_2 ── j1_3        (main cable, spacing_m apart)
                                    │   │       │       │
                                    │  h001    h002    h003        (service cable, service_m)
                                    └─ j2_1 ── j2_2
                                        │       │
                                       h004    h005
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from trexsim.powerflow.errors import PowerflowError
from trexsim.powerflow.splitphase import SplitPhaseSpec, split_phase_text


@dataclass(frozen=True)
class TransformerType:
    kva: float
    uk_pct: float        # short-circuit voltage (impedance), % of rated voltage
    ur_pct: float        # resistive part = load losses at rated power / rated power, %
    no_load_kw: float    # iron (no-load) losses, kW
    i0_pct: float        # magnetising current, % of rated current
    source: str

    @property
    def x_pct(self) -> float:
        return math.sqrt(self.uk_pct ** 2 - self.ur_pct ** 2)


@dataclass(frozen=True)
class CableType:
    name: str
    r_ohm_per_km: float  # positive sequence, at 20 °C
    x_ohm_per_km: float
    max_a: float         # continuous current rating (buried, as in the source)
    source: str

    @property
    def r0_ohm_per_km(self) -> float:  # zero sequence ~ 4 x positive (4-core cable, neutral return only)
        return 4.0 * self.r_ohm_per_km

    @property
    def x0_ohm_per_km(self) -> float:
        return 4.0 * self.x_ohm_per_km


_KERBER = "Kerber (2011) reference LV networks, pandapower.networks.kerber_networks"
_PP_STD = "pandapower standard types (pandapower/std_types.py), '{} MVA 10/0.4 kV', Trafo Union data"

# 10/0.4 kV distribution transformers, Dyn5
TRANSFORMERS: dict[int, TransformerType] = {
    100: TransformerType(100, 4.0, 1.2, 0.45, 0.25, _KERBER + " ('0.1 MVA 10/0.4 kV')"),
    160: TransformerType(160, 4.0, 1.2, 0.38, 0.26, _KERBER + " ('0.16 MVA 10/0.4 kV')"),
    250: TransformerType(250, 4.0, 1.2, 0.60, 0.24, _PP_STD.format("0.25")),
    400: TransformerType(400, 4.0, 1.325, 0.95, 0.2375, _PP_STD.format("0.4")),
    630: TransformerType(630, 4.0, 1.0794, 1.18, 0.1873, _PP_STD.format("0.63")),
}

# 0.6/1 kV four-core cables (Al: NAYY, Cu: NYY) and one aerial bundled conductor
CABLES: dict[str, CableType] = {
    "NAYY 4x150 SE": CableType("NAYY 4x150 SE", 0.2067, 0.0804, 275.0, _KERBER),
    "NAYY 4x185 SE": CableType("NAYY 4x185 SE", 0.165, 0.0804, 313.0, _KERBER),
    "NAYY 4x50 SE": CableType("NAYY 4x50 SE", 0.6417, 0.0848, 141.0, _KERBER),
    "NYY 4x35": CableType("NYY 4x35", 0.5240, 0.0851, 156.0, _KERBER),
    "NFA2X 4x70": CableType("NFA2X 4x70", 0.443, 0.069, 270.0, _KERBER + " (overhead)"),
}


@dataclass(frozen=True)
class FeederSpec:
    """Parameters of the generated feeder; every field has a documented default (docs/powerflow.md)."""

    houses: int | None = None             # None: one house per participant of the run
    houses_per_lateral: int = 10
    spacing_m: float = 35.0               # between successive junctions on a lateral
    first_m: float | None = None          # LV busbar to the first junction (None: spacing_m)
    service_m: float = 15.0               # junction to house
    main_cable: str = "NAYY 4x150 SE"
    service_cable: str = "NAYY 4x50 SE"
    transformer_kva: int | None = None    # None: the smallest in TRANSFORMERS >= houses * kva_per_house
    kva_per_house: float = 4.0
    mv_kv: float = 10.0
    lv_kv: float = 0.4
    source_pu: float = 1.0                # MV voltage at the transformer, p.u.
    source_mvasc: float = 100.0           # MV short-circuit power at the transformer, MVA
    source_x_r: float = 1.0               # X/R of the MV source impedance
    house_phases: int = 3                 # 3: balanced three-phase houses; 1: single-phase, phases a, b, c in turn

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "feeder") -> "FeederSpec | SplitPhaseSpec":
        """The spec of ``data``; ``"layout": "split_phase"`` gives a ``SplitPhaseSpec`` (the NA feeder)."""
        layout = data.get("layout", "european")
        if layout == "split_phase":
            return SplitPhaseSpec.from_dict(data, source)
        if layout != "european":
            raise PowerflowError(f"{source}.layout: must be 'european' (default) or 'split_phase', got {layout!r}")
        data = {k: v for k, v in data.items() if k != "layout"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise PowerflowError(f"{source}: unknown feeder parameter(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(names))}")
        spec = cls(**dict(data))
        spec.validate(source)
        return spec

    @classmethod
    def from_file(cls, path: str | Path) -> "FeederSpec | SplitPhaseSpec":
        path = Path(path)
        try:
            import pyjson5

            data = pyjson5.loads(path.read_text())
        except FileNotFoundError:
            raise PowerflowError(f"{path}: no such feeder file") from None
        except Exception as exc:  # pyjson5 raises its own decoder errors
            raise PowerflowError(f"{path}: not a JSON feeder spec: {exc}") from None
        if not isinstance(data, dict):
            raise PowerflowError(f"{path}: a feeder spec is a JSON object of parameters")
        return cls.from_dict(data, str(path))

    def validate(self, source: str = "feeder") -> None:
        def bad(key, msg):
            raise PowerflowError(f"{source}.{key}: {msg}")

        if self.houses is not None and (not isinstance(self.houses, int) or self.houses < 1):
            bad("houses", "must be a whole number >= 1")
        if not isinstance(self.houses_per_lateral, int) or self.houses_per_lateral < 1:
            bad("houses_per_lateral", "must be a whole number >= 1")
        for key in ("spacing_m", "service_m", "kva_per_house", "mv_kv", "lv_kv", "source_pu", "source_mvasc",
                    "source_x_r"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                bad(key, f"must be a positive number, got {value!r}")
        if self.first_m is not None and not (isinstance(self.first_m, (int, float)) and self.first_m > 0):
            bad("first_m", f"must be a positive number, got {self.first_m!r}")
        for key in ("main_cable", "service_cable"):
            if getattr(self, key) not in CABLES:
                bad(key, f"unknown cable {getattr(self, key)!r}; choose one of {', '.join(CABLES)}")
        if self.transformer_kva is not None and self.transformer_kva not in TRANSFORMERS:
            bad("transformer_kva", f"must be one of {', '.join(map(str, TRANSFORMERS))} kVA (the documented types)")
        if self.house_phases not in (1, 3):
            bad("house_phases", "must be 1 or 3")

    def transformer_for(self, houses: int) -> TransformerType:
        if self.transformer_kva is not None:
            return TRANSFORMERS[self.transformer_kva]
        need = houses * self.kva_per_house
        for kva, trafo in TRANSFORMERS.items():
            if kva >= need:
                return trafo
        return TRANSFORMERS[max(TRANSFORMERS)]


@dataclass
class GeneratedFeeder:
    path: Path
    load_names: list[str]          # house i (0-based) is load_names[i]
    spec: FeederSpec
    houses: int
    transformer: TransformerType | None   # None: the split-phase feeder (service transformers in info)
    laterals: int                  # split-phase: service transformers
    info: dict = field(default_factory=dict)


def _dss_name(cable: str) -> str:
    return cable.lower().replace(" ", "_").replace("/", "_")


def feeder_text(spec: FeederSpec, houses: int) -> tuple[str, list[str], TransformerType, int]:
    """The .dss text of the feeder with ``houses`` houses; its load names; its transformer; its laterals."""
    spec.validate()
    if houses < 1:
        raise PowerflowError("a feeder needs at least one house")
    trafo = spec.transformer_for(houses)
    width = max(3, len(str(houses)))
    load_names = [f"house_{k + 1:0{width}d}" for k in range(houses)]
    laterals = math.ceil(houses / spec.houses_per_lateral)
    first_m = spec.first_m if spec.first_m is not None else spec.spacing_m
    main, service = CABLES[spec.main_cable], CABLES[spec.service_cable]
    lv_ln = spec.lv_kv / math.sqrt(3)
    lines = [
        f"! trexsim generated low-voltage feeder: {houses} houses on {laterals} laterals of {spec.main_cable},",
        f"! {spec.houses_per_lateral} houses per lateral {spec.spacing_m:g} m apart, service cables {spec.service_cable} "
        f"{spec.service_m:g} m, {trafo.kva:g} kVA {spec.mv_kv:g}/{spec.lv_kv:g} kV transformer.",
        "! Parameters and their sources: trexsim docs/powerflow.md. Loads are driven by trexsim (kW, kvar per round).",
        "clear",
        f"new circuit.trexsim_feeder basekv={spec.mv_kv:g} pu={spec.source_pu:g} phases=3 bus1=mv "
        f"mvasc3={spec.source_mvasc:g} mvasc1={spec.source_mvasc:g} x1r1={spec.source_x_r:g} x0r0={spec.source_x_r:g}",
        "",
        f"! {trafo.kva:g} kVA, uk = {trafo.uk_pct:g} %, ur = {trafo.ur_pct:g} %, P0 = {trafo.no_load_kw:g} kW, "
        f"i0 = {trafo.i0_pct:g} %; source: {trafo.source}",
        f"new transformer.tx phases=3 windings=2 buses=[mv lv] conns=[delta wye] kvs=[{spec.mv_kv:g} {spec.lv_kv:g}] "
        f"kvas=[{trafo.kva:g} {trafo.kva:g}] %loadloss={trafo.ur_pct:g} xhl={trafo.x_pct:.6g} "
        f"%noloadloss={100 * trafo.no_load_kw / trafo.kva:.6g} %imag={trafo.i0_pct:g} "
        f"normhkva={trafo.kva:g} emerghkva={1.5 * trafo.kva:g}",
        "",
    ]
    for cable in dict.fromkeys((main, service)):
        lines.append(f"! {cable.name}: {cable.source}; zero sequence taken as 4 x positive sequence")
        lines.append(
            f"new linecode.{_dss_name(cable.name)} nphases=3 units=km r1={cable.r_ohm_per_km:g} "
            f"x1={cable.x_ohm_per_km:g} r0={cable.r0_ohm_per_km:g} x0={cable.x0_ohm_per_km:g} c1=0 c0=0 "
            f"normamps={cable.max_a:g} emergamps={cable.max_a:g}")
    lines.append("")
    for k, load in enumerate(load_names):
        lateral, position = divmod(k, spec.houses_per_lateral)
        here = f"j{lateral + 1}_{position + 1}"
        before = "lv" if position == 0 else f"j{lateral + 1}_{position}"
        length = first_m if position == 0 else spec.spacing_m
        house_bus = f"h{k + 1:0{width}d}"
        lines.append(f"new line.main_{lateral + 1}_{position + 1} bus1={before} bus2={here} "
                     f"linecode={_dss_name(main.name)} length={length:g} units=m")
        lines.append(f"new line.service_{k + 1:0{width}d} bus1={here} bus2={house_bus} "
                     f"linecode={_dss_name(service.name)} length={spec.service_m:g} units=m")
        if spec.house_phases == 3:
            conn = f"phases=3 bus1={house_bus} kv={spec.lv_kv:g}"
        else:
            conn = f"phases=1 bus1={house_bus}.{k % 3 + 1} kv={lv_ln:.6g}"
        lines.append(f"new load.{load} {conn} kw=0 kvar=0 model=1 vminpu=0.7 vmaxpu=1.3")
    lines += ["", f"set voltagebases=[{spec.mv_kv:g} {spec.lv_kv:g}]", "calcvoltagebases", ""]
    return "\n".join(lines), load_names, trafo, laterals


def generate_feeder(spec: FeederSpec | SplitPhaseSpec | None, houses: int, path: str | Path) -> GeneratedFeeder:
    """Write the feeder's .dss file to ``path``; ``spec.houses`` (if set) overrides ``houses``."""
    spec = spec or FeederSpec()
    n = spec.houses if spec.houses is not None else houses
    if isinstance(spec, SplitPhaseSpec):
        text, load_names, n_tx = split_phase_text(spec, n)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        info = {"kind": "generated", "layout": "split_phase", "path": str(path), "houses": n,
                "service_transformers": n_tx, "houses_per_transformer": spec.houses_per_transformer,
                "service_transformer_kva": spec.service_transformer_kva,
                "spec": json.loads(json.dumps(dataclasses.asdict(spec)))}
        return GeneratedFeeder(path, load_names, spec, n, None, n_tx, info)
    text, load_names, trafo, laterals = feeder_text(spec, n)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    info = {"kind": "generated", "path": str(path), "houses": n, "laterals": laterals,
            "houses_per_lateral": spec.houses_per_lateral, "transformer_kva": trafo.kva,
            "transformer_uk_pct": trafo.uk_pct, "transformer_ur_pct": trafo.ur_pct,
            "spec": json.loads(json.dumps(dataclasses.asdict(spec)))}
    return GeneratedFeeder(path, load_names, spec, n, trafo, laterals, info)
