"""A parametric North American split-phase (120/240 V) feeder, written as an OpenDSS circuit (.dss text).

A three-phase overhead primary (``primary_kv``, default 25 kV: the Edmonton community's distribution
voltage class) runs from the substation bus; every ``primary_spacing_m`` a single-phase, centre-tapped
service transformer (``primary_kv / sqrt 3`` to 120/240 V, on phases a, b, c in turn) feeds
``houses_per_transformer`` houses, each through its own triplex secondary (``secondary_m``). Each house is
one 240 V load between the two hot legs (its net power; PV and battery inside), so voltages are reported
per leg on a 120 V base (the IEEE 8500-node feeder's convention: secondaries get a 0.208 kV base, whose
line-to-neutral value is 120 V).

    source ── p1 ──── p2 ──── p3 ...       three-phase primary, primary_spacing_m apart
               │       │       │
              st1     st2     st3          service transformers (phase a, b, c, a, ...)
             / | \\    ...
          h001 h002 h003                   triplex secondaries, secondary_m each

Where the numbers come from is in docs/powerflow.md ("The split-phase feeder"): the triplex impedance is
computed by OpenDSS (Carson's equations, neutral Kron-reduced) from the conductor's geometry; the
transformer and primary data are typical values, not a cited standard.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from trexsim.powerflow.errors import PowerflowError

# single-phase service transformer sizes (kVA) and assumed nameplate impedance (%Z total, %R), no-load loss (%)
SERVICE_TRANSFORMERS: dict[float, tuple[float, float, float]] = {
    25: (2.0, 1.1, 0.35), 37.5: (2.0, 1.0, 0.3), 50: (2.0, 0.9, 0.25), 75: (2.0, 0.8, 0.25), 100: (2.2, 0.8, 0.2),
    167: (2.5, 0.7, 0.2),
}


@dataclass(frozen=True)
class SplitPhaseSpec:
    """Parameters of the generated split-phase feeder (``layout: "split_phase"``)."""

    layout: str = "split_phase"
    houses: int | None = None                 # default: one house per participant
    houses_per_transformer: int = 5
    service_transformer_kva: float = 50.0
    primary_kv: float = 25.0                  # line-to-line
    primary_spacing_m: float = 100.0          # between service transformer taps on the primary
    primary_r_ohm_per_km: float = 0.19        # positive sequence, overhead 336 kcmil-class conductor
    primary_x_ohm_per_km: float = 0.40
    primary_amps: float = 530.0
    secondary_m: float = 30.0                 # transformer to each house, triplex
    triplex_diameter_mm: float = 9.35         # 1/0 AWG aluminium, 19 strands
    triplex_r_ohm_per_km: float = 0.538       # 1/0 AWG aluminium (53.5 mm²) at 20 °C
    triplex_insulation_mm: float = 1.52       # 60 mil, 600 V
    triplex_amps: float = 150.0
    source_pu: float = 1.0
    source_mvasc: float = 200.0
    source_x_r: float = 4.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "feeder") -> "SplitPhaseSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise PowerflowError(f"{source}: unknown split-phase feeder parameter(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(names))}")
        spec = cls(**dict(data))
        spec.validate(source)
        return spec

    def validate(self, source: str = "feeder") -> None:
        def bad(key, msg):
            raise PowerflowError(f"{source}.{key}: {msg}")

        if self.layout != "split_phase":
            bad("layout", f"must be 'split_phase' here, got {self.layout!r}")
        if self.houses is not None and (not isinstance(self.houses, int) or self.houses < 1):
            bad("houses", "must be a whole number >= 1")
        if not isinstance(self.houses_per_transformer, int) or self.houses_per_transformer < 1:
            bad("houses_per_transformer", "must be a whole number >= 1")
        if self.service_transformer_kva not in SERVICE_TRANSFORMERS:
            bad("service_transformer_kva", f"must be one of {', '.join(f'{k:g}' for k in SERVICE_TRANSFORMERS)} kVA")
        for f in dataclasses.fields(self):
            if f.name in ("layout", "houses", "houses_per_transformer", "service_transformer_kva"):
                continue
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                bad(f.name, f"must be a positive number, got {value!r}")


def split_phase_text(spec: SplitPhaseSpec, houses: int) -> tuple[str, list[str], int]:
    """The .dss text with ``houses`` houses; its load names; the number of service transformers."""
    spec.validate()
    if houses < 1:
        raise PowerflowError("a feeder needs at least one house")
    width = max(3, len(str(houses)))
    names = [f"house_{k + 1:0{width}d}" for k in range(houses)]
    n_tx = math.ceil(houses / spec.houses_per_transformer)
    kva = spec.service_transformer_kva
    z_pct, r_pct, nll_pct = SERVICE_TRANSFORMERS[kva]
    x_pct = math.sqrt(z_pct ** 2 - r_pct ** 2)
    kv_ln = spec.primary_kv / math.sqrt(3)
    # conductor centres of a triplex bundle: an equilateral triangle of side diameter + 2 x insulation
    side = spec.triplex_diameter_mm + 2 * spec.triplex_insulation_mm
    gmr_mm = 0.7580 * spec.triplex_diameter_mm / 2  # 19-strand conductor: GMR = 0.758 r
    lines = [
        f"! trexsim generated split-phase feeder: {houses} houses on {n_tx} service transformers of {kva:g} kVA,",
        f"! {spec.houses_per_transformer} houses each, {spec.primary_kv:g} kV primary, 120/240 V triplex secondaries.",
        "! Parameters and their sources: trexsim docs/powerflow.md. Loads are driven by trexsim (kW, kvar per round).",
        "clear",
        f"new circuit.trexsim_split_phase basekv={spec.primary_kv:g} pu={spec.source_pu:g} phases=3 bus1=sourcebus "
        f"mvasc3={spec.source_mvasc:g} mvasc1={spec.source_mvasc:g} x1r1={spec.source_x_r:g} x0r0={spec.source_x_r:g}",
        "",
        f"new linecode.primary nphases=3 units=km r1={spec.primary_r_ohm_per_km:g} x1={spec.primary_x_ohm_per_km:g} "
        f"r0={3 * spec.primary_r_ohm_per_km:g} x0={3 * spec.primary_x_ohm_per_km:g} c1=0 c0=0 "
        f"normamps={spec.primary_amps:g} emergamps={spec.primary_amps:g}",
        f"new wiredata.al_triplex rac={spec.triplex_r_ohm_per_km:g} runits=km gmrac={gmr_mm:.4g} gmrunits=mm "
        f"diam={spec.triplex_diameter_mm:g} radunits=mm normamps={spec.triplex_amps:g} emergamps={spec.triplex_amps:g}",
        f"new linespacing.triplex nconds=3 nphases=2 units=mm x=[{-side / 2:.4g} {side / 2:.4g} 0] "
        f"h=[6000 6000 {6000 + side * math.sqrt(3) / 2:.6g}]",
        "new linegeometry.triplex nconds=3 nphases=2 reduce=yes spacing=triplex wires=[al_triplex al_triplex al_triplex]",
        "",
    ]
    for t in range(n_tx):
        before = "sourcebus" if t == 0 else f"p{t}"
        phase = t % 3 + 1
        lines.append(f"new line.primary_{t + 1} phases=3 bus1={before} bus2=p{t + 1} linecode=primary "
                     f"length={spec.primary_spacing_m:g} units=m")
        # centre-tapped: primary on one phase, two 120 V secondary halves in series (legs .1 and .2, neutral .0)
        lines.append(f"new transformer.st{t + 1} phases=1 windings=3 buses=[p{t + 1}.{phase} s{t + 1}.1.0 s{t + 1}.0.2] "
                     f"conns=[wye wye wye] kvs=[{kv_ln:.6g} 0.12 0.12] kvas=[{kva:g} {kva:g} {kva:g}] "
                     f"%rs=[{r_pct / 2:.4g} {r_pct:.4g} {r_pct:.4g}] xhl={x_pct:.4g} xht={x_pct:.4g} xlt={x_pct * 2 / 3:.4g} "
                     f"%noloadloss={nll_pct:g} normhkva={kva:g} emerghkva={1.5 * kva:g}")
    for k, load in enumerate(names):
        t = k // spec.houses_per_transformer
        house = f"h{k + 1:0{width}d}"
        lines.append(f"new line.secondary_{k + 1:0{width}d} phases=2 bus1=s{t + 1}.1.2 bus2={house}.1.2 "
                     f"geometry=triplex length={spec.secondary_m:g} units=m")
        lines.append(f"new load.{load} phases=1 bus1={house}.1.2 kv=0.24 kw=0 kvar=0 model=1 vminpu=0.7 vmaxpu=1.3")
    lines += ["", f"set voltagebases=[{spec.primary_kv:g} 0.208]", "calcvoltagebases", ""]
    return "\n".join(lines), names, n_tx
