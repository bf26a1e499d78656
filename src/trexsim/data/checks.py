"""Plausibility checks of imported household data: units, timezone and timestamp mistakes.

A file can be well formed and still wrong: Wh values in a ``*_kwh`` column (a 392 kW
house), a profile in UTC read as Sydney time (PV at night), interval-end timestamps read
as starts (PV half an hour late). These checks look at one participant's data over the
study period and say what looks wrong and the likely cause. They never change data.

Thresholds (docs/profiles.md states them for users):

* household peak power: the highest average power over one data interval, load or
  generation, above :data:`MAX_PEAK_W` (50 kW, more than a 200 A, 240 V service);
* yearly energy: consumption over the study period scaled to a year, above
  :data:`MAX_ANNUAL_KWH` (50,000 kWh) or below :data:`MIN_ANNUAL_KWH` (100 kWh, but
  not zero); only for studies of at least a day;
* PV at night: more than :data:`NIGHT_SHARE` (1 %) of the generated energy in data
  intervals throughout which the sun is more than :data:`NIGHT_ELEVATION_DEG` (6 deg)
  below the horizon at the site;
* PV centroid: the energy-weighted mean time of generation more than
  :data:`CENTROID_TOLERANCE_S` (20 min) from solar noon at the site, for studies of at
  least a day with at least :data:`MIN_CENTROID_WH` (100 Wh) of generation.

Solar position: declination and equation of time of Spencer (1971), as in
``pvlib.solarposition.declination_spencer71`` and ``equation_of_time_spencer71``
(about 1 minute and 0.5 degree of error, far inside the tolerances above).

The site is the profile's ``latitude``/``longitude`` or else the principal location of
the study timezone in the tz database (``zone1970.tab``: Los Angeles for
America/Los_Angeles, Sydney for Australia/Sydney).
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

MAX_PEAK_W = 50_000.0
MAX_ANNUAL_KWH = 50_000.0
MIN_ANNUAL_KWH = 100.0
NIGHT_ELEVATION_DEG = -6.0
NIGHT_SHARE = 0.01
CENTROID_TOLERANCE_S = 20 * 60
MIN_CENTROID_WH = 100.0
MIN_SPAN_S = 86_400  # the yearly-energy and centroid checks need at least a day of data


class ProfileWarning(UserWarning):
    """Imported profile data look implausible (units, timezone, timestamp labels)."""


@dataclass(frozen=True)
class Site:
    latitude_deg: float
    longitude_deg: float
    source: str  # where the coordinates come from, for messages


# --------------------------------------------------------------------------- site
def _parse_iso6709(text: str) -> tuple[float, float]:
    """``+340308-1181434`` -> (34.0522, -118.2428) [degrees]."""
    split = max(text.rfind("+"), text.rfind("-"))
    lat, lon = text[:split], text[split:]

    def degrees(part: str, deg_digits: int) -> float:
        sign = -1.0 if part[0] == "-" else 1.0
        digits = part[1:]
        d = float(digits[:deg_digits])
        m = float(digits[deg_digits : deg_digits + 2] or 0)
        s = float(digits[deg_digits + 2 : deg_digits + 4] or 0)
        return sign * (d + m / 60.0 + s / 3600.0)

    return degrees(lat, 2), degrees(lon, 3)


@functools.lru_cache(maxsize=1)
def _zone_table() -> dict[str, tuple[float, float]]:
    """Zone name -> coordinates of its principal location, from the tz database."""
    candidates = [Path(p) / name for p in zoneinfo.TZPATH for name in ("zone1970.tab", "zone.tab")]
    try:  # the tzdata package (Windows, slim containers)
        root = resources.files("tzdata").joinpath("zoneinfo")
        candidates += [Path(str(root.joinpath(name))) for name in ("zone1970.tab", "zone.tab")]
    except (ModuleNotFoundError, TypeError):
        pass
    table: dict[str, tuple[float, float]] = {}
    for path in candidates:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("#") or not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) >= 3:
                table.setdefault(fields[2], _parse_iso6709(fields[1]))
    return table


def site_for(timezone: str, latitude_deg: float | None = None, longitude_deg: float | None = None) -> Site | None:
    """The PV site: given coordinates, else the timezone's principal location; None if unknown."""
    if latitude_deg is not None and longitude_deg is not None:
        return Site(float(latitude_deg), float(longitude_deg), "the profile's latitude/longitude")
    found = _zone_table().get(timezone)
    if found is None:
        return None
    return Site(found[0], found[1], f"{timezone}'s location in the tz database")


# --------------------------------------------------------------------------- sun
def _day_angle(utc_s: np.ndarray) -> np.ndarray:
    """Spencer's day angle [rad] of each UTC instant ``utc_s`` [s]."""
    day_of_year = pd.DatetimeIndex(pd.to_datetime(np.asarray(utc_s, dtype=np.int64), unit="s")).dayofyear.to_numpy()
    return 2.0 * np.pi * (day_of_year - 1) / 365.0


def equation_of_time_min(utc_s: np.ndarray) -> np.ndarray:
    """Equation of time [min] (Spencer 1971): apparent minus mean solar time."""
    b = _day_angle(utc_s)
    return (1440.0 / (2 * np.pi)) * (0.0000075 + 0.001868 * np.cos(b) - 0.032077 * np.sin(b)
                                     - 0.014615 * np.cos(2 * b) - 0.040849 * np.sin(2 * b))


def declination_rad(utc_s: np.ndarray) -> np.ndarray:
    """Solar declination [rad] (Spencer 1971)."""
    b = _day_angle(utc_s)
    return (0.006918 - 0.399912 * np.cos(b) + 0.070257 * np.sin(b) - 0.006758 * np.cos(2 * b)
            + 0.000907 * np.sin(2 * b) - 0.002697 * np.cos(3 * b) + 0.00148 * np.sin(3 * b))


def solar_noon_offset_s(utc_s: np.ndarray, longitude_deg: float) -> np.ndarray:
    """Seconds from the nearest solar noon at ``longitude_deg`` to each instant, in [-12 h, 12 h)."""
    utc_s = np.asarray(utc_s, dtype=np.float64)
    solar_s = utc_s + longitude_deg * 240.0 + equation_of_time_min(utc_s.astype(np.int64)) * 60.0  # apparent solar time
    return (solar_s - 43_200.0 + 43_200.0) % 86_400.0 - 43_200.0


def elevation_deg(utc_s: np.ndarray, site: Site) -> np.ndarray:
    """Sun elevation above the horizon [deg] at ``site``."""
    hour_angle = solar_noon_offset_s(utc_s, site.longitude_deg) * (2 * np.pi / 86_400.0)
    lat = np.radians(site.latitude_deg)
    dec = declination_rad(np.asarray(utc_s, dtype=np.int64))
    sin_el = np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(hour_angle)
    return np.degrees(np.arcsin(np.clip(sin_el, -1.0, 1.0)))


# --------------------------------------------------------------------------- checks
def _hours(seconds: float) -> str:
    if abs(seconds) < 3600:
        return f"{abs(seconds) / 60:.0f} min"
    return f"{abs(seconds) / 3600:.1f} h"


def _offset_text(seconds: float) -> str:
    sign = "+" if seconds >= 0 else "-"
    minutes = int(round(abs(seconds) / 60))
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _utc_offset_s(timezone: str, utc_s: int) -> float:
    try:
        return pd.Timestamp(int(utc_s), unit="s", tz="UTC").tz_convert(timezone).utcoffset().total_seconds()
    except Exception:
        return 0.0


def plausibility(start_s: int, interval_s: int, load_wh: np.ndarray, gen_wh: np.ndarray, site: Site | None,
                 timezone: str, marks: str, fmt_time, row_of, naive: bool = True) -> tuple[list[tuple[str, int | None, str]], dict]:
    """Check one participant's data over the study period.

    Parameters
    ----------
    start_s : int
        Start of the first interval [s since the epoch, UTC].
    interval_s : int
        Data interval [s].
    load_wh, gen_wh : numpy.ndarray
        Energy per interval [Wh], ``(K,)``, scales applied.
    site : Site or None
        Where the PV is; None skips the solar checks.
    timezone : str
        The study timezone (for times in messages and the timezone hint).
    marks : str
        The profile's ``timestamp_marks`` (for the hint).
    fmt_time : callable
        ``utc_s -> str`` for messages.
    row_of : callable
        ``interval index -> file row`` (or None) for messages.
    naive : bool
        Whether the file's timestamps are local times without a UTC offset (for the hint).

    Returns
    -------
    problems : list of (column kind, row or None, message)
        Column kind is ``"load"`` or ``"generation"``.
    stats : dict
        ``annual_load_kwh``, ``peak_load_kw``, ``annual_generation_kwh``, ``peak_generation_kw``,
        ``pv_centroid_min`` (minutes after solar noon) and ``night_generation_share``
        (None where not computed).
    """
    problems: list[tuple[str, int | None, str]] = []
    k = load_wh.size
    span_s = k * interval_s
    to_w = 3600.0 / interval_s
    stats: dict = {"annual_load_kwh": None, "peak_load_kw": None, "annual_generation_kwh": None,
                   "peak_generation_kw": None, "pv_centroid_min": None, "night_generation_share": None}
    if k == 0:
        return problems, stats
    year = 365.0 * 86_400 / span_s
    for kind, energy in (("load", load_wh), ("generation", gen_wh)):
        i = int(np.argmax(energy))
        peak_w = float(energy[i]) * to_w
        annual_kwh = float(energy.sum()) * year / 1000.0
        stats[f"peak_{kind}_kw"] = peak_w / 1000.0
        stats[f"annual_{kind}_kwh"] = annual_kwh if span_s >= MIN_SPAN_S else None
        if peak_w > MAX_PEAK_W:
            hint = (" Are Wh values in a *_kwh column (or W in a *_kw column)? They would be "
                    f"{peak_w / 1000 / 1000:,.2f} kW." if peak_w / 1000 <= MAX_PEAK_W else "")
            problems.append((kind, row_of(i), f"peak {kind} power {peak_w / 1000:,.1f} kW (average over the "
                             f"{interval_s} s interval at {fmt_time(start_s + i * interval_s)}) is far above a "
                             f"household's (at most {MAX_PEAK_W / 1000:.0f} kW).{hint}"))
        if kind == "load" and span_s >= MIN_SPAN_S:
            if annual_kwh > MAX_ANNUAL_KWH and peak_w <= MAX_PEAK_W:
                problems.append((kind, None, f"consumption of {annual_kwh:,.0f} kWh a year (over the study period, "
                                 f"scaled to a year) is far above a household's (at most {MAX_ANNUAL_KWH:,.0f})."))
            elif 0 < annual_kwh < MIN_ANNUAL_KWH:
                problems.append((kind, None, f"consumption of {annual_kwh:,.1f} kWh a year (over the study period, "
                                 f"scaled to a year) is far below a household's (at least {MIN_ANNUAL_KWH:,.0f}). "
                                 f"Are kWh values in a *_wh column? They would be {annual_kwh * 1000:,.0f} kWh a year."))
    total_gen = float(gen_wh.sum())
    if site is None or total_gen <= 0:
        return problems, stats
    edges = start_s + np.arange(k + 1, dtype=np.int64) * interval_s
    mids = edges[:-1] + interval_s / 2.0
    highest = np.maximum.reduce([elevation_deg(edges[:-1], site), elevation_deg(mids, site), elevation_deg(edges[1:], site)])
    night = highest < NIGHT_ELEVATION_DEG
    night_wh = float(gen_wh[night].sum())
    stats["night_generation_share"] = night_wh / total_gen
    where = f"at {site.latitude_deg:.2f}, {site.longitude_deg:.2f} ({site.source})"
    hints = []
    if span_s >= MIN_SPAN_S and total_gen >= MIN_CENTROID_WH:
        # circular mean of the time from solar noon (a 10-hour shift spreads across midnight)
        angle = solar_noon_offset_s(mids, site.longitude_deg) * (2 * np.pi / 86_400.0)
        offset_s = float(np.angle(np.sum(gen_wh * np.exp(1j * angle)))) * 86_400.0 / (2 * np.pi)
        stats["pv_centroid_min"] = offset_s / 60.0
        if abs(offset_s) > CENTROID_TOLERANCE_S:
            side = "after" if offset_s > 0 else "before"
            if abs(offset_s - interval_s) <= 10 * 60 and marks == "start":
                hints.append(f"the shift is one data interval ({interval_s} s): if timestamps mark the END of "
                             "their interval, set the profile's \"timestamp_marks\": \"end\"")
            elif abs(offset_s + interval_s) <= 10 * 60 and marks == "start":
                hints.append(f"the shift is one data interval ({interval_s} s) early: timestamps may lie one interval "
                             "before the intervals they hold (e.g. interval-start labels converted as interval ends)")
            elif abs(offset_s + interval_s) <= 10 * 60 and marks == "end":
                hints.append(f"the shift is one data interval ({interval_s} s) early: timestamps may mark the "
                             "START of their interval (\"timestamp_marks\": \"start\")")
            whole_h = round(offset_s / 3600.0)
            if whole_h != 0 and abs(offset_s - whole_h * 3600.0) <= 15 * 60:
                study_off = _utc_offset_s(timezone, int(mids[k // 2]))
                data_off = study_off + whole_h * 3600.0
                if naive:
                    hints.append(f"the shift is about {abs(whole_h)} h: timestamps may be in {_offset_text(data_off)} "
                                 f"rather than {timezone} ({_offset_text(study_off)}); set the profile's \"timezone\" "
                                 "(or give timestamps a UTC offset)")
                else:
                    hints.append(f"the shift is about {abs(whole_h)} h: the timestamps' UTC offsets may be wrong "
                                 f"(local times in {_offset_text(data_off)} written with another offset?)")
            if not hints:
                hints.append("panels facing east or west shift it too; otherwise check timestamp_marks and timezone")
            problems.append(("generation", None, f"the PV generation's centroid is {_hours(offset_s)} {side} solar "
                             f"noon {where}; {'; '.join(hints)}."))
    if night_wh > NIGHT_SHARE * total_gen:
        j = int(np.argmax(np.where(night, gen_wh, -1.0)))
        problems.append(("generation", row_of(j), f"PV generates at night: {night_wh / total_gen:.0%} of its energy "
                         f"falls in intervals when the sun is below the horizon {where} (e.g. {gen_wh[j]:,.1f} Wh at "
                         f"{fmt_time(int(edges[j]))}). Are the timestamps in another timezone than {timezone}?"))
    return problems, stats


__all__ = ["ProfileWarning", "Site", "plausibility", "site_for", "solar_noon_offset_s", "elevation_deg"]
