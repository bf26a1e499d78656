"""The built-in seeded household generator: BDEW H25 load with minute-level variability, PV from pvlib.

Model (docs/profiles.md explains it for users)
----------------------------------------------
Everything is generated on an internal grid of one minute, in *blocks* of one day
(86,400 s) that start at the study start (``clock.start_utc_s + b * 86400``). All the
randomness of a block is drawn from seeds that depend only on the study seed, the
participant id (or the PV site) and the block's absolute start time, never on the
order of calls, so any split of a round range into chunks gives the same numbers.
Rounds are then integrated from the minute grid (exact for any ``interval_s``).

Load, per household ``h`` and minute ``t`` [W]::

    load_w = annual_kwh * (1 - f_h) * base(t - shift_h) * day_h * exp(s * x_h(t) - s**2 / 2) + events_w(t)

* ``base`` is the BDEW H25 standard household profile (demandlib, MIT licence),
  normalised to 1 kWh a year, read in local clock time and linearly interpolated
  between quarter-hour centres. No holidays are applied (H25 is German; a holiday
  calendar of the study region is not known here), so holidays look like their weekday.
* ``shift_h`` is a fixed per-household shift of the daily routine (normal, 20 min sd,
  at most 60 min), so that a thousand households do not all switch on at one minute.
* ``day_h`` is a lognormal day-to-day level (sd of log 0.2, mean 1).
* ``x_h`` is an AR(1) process in minutes (unit variance, time constant 15 min),
  giving a lognormal multiplier with mean 1 (``s = 0.35``).
* ``events_w``: appliance events (kettle, microwave, cooking, laundry/dishwasher, hair
  dryer or vacuum: 1.1 to 2.2 kW for 2 to 45 min) supplying ``f_h`` = 30 % of the
  expected energy (less when the mean count would exceed 40 a day); their count per day
  is Poisson (scaled by the day's H25 energy), their start times follow the square of
  the H25 shape (so mostly mornings and evenings).

Every factor has mean one, so the expected annual energy is ``annual_load_kwh``
(events cut off at the end of a day lose a fraction of a percent).

PV, per household [W]::

    gen_w = pv_kw * k_h * (1 - 0.14) * pvwatts_dc(poa_clear(t) * cloud(t - lag_h), t_cell) / 1 kW

* ``poa_clear``: pvlib Ineichen clear sky (bundled Linke turbidity, offline) at the
  site, transposed to the plane of array with the isotropic sky model.
* ``cloud``: one process per site (latitude, longitude) and day, shared by every
  household there: a daily clearness ``K = 1 - D`` with ``D ~ Beta(2 m, 2 (1 - m))``,
  ``m = 0.85 * cloudiness``, plus AR(1) minute variability (time constant 10 min,
  sd ``0.6 * sqrt(K (1 - K))``), clipped to [0.05, 1.1] (cloud edges can brighten).
  ``cloudiness = 0`` gives clear sky every day.
* ``lag_h`` (0 to 4 min) lets clouds pass over households at slightly different
  times; ``k_h`` (normal around 1, sd 3 %) stands for soiling, shading and module
  tolerance. Both are fixed per household.
* ``t_cell = 15 degC + 0.03 K m2/W * poa`` (a simple Ross model, constant ambient
  temperature), PVWatts DC with ``gamma_pdc = -0.004 /K``, 14 % system losses.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trexsim.config.schema import RealisticProfile
from trexsim.data.profiles import Clock, ProfileSource, participant_seed
from trexsim.errors import ProfileError

_GRID_S = 60  # internal resolution [s]
_BLOCK_S = 86_400  # one block of randomness [s]
_BLOCK_MIN = _BLOCK_S // _GRID_S

# stream tags keep the independent random streams of one participant apart
_TAG_LOAD = 1
_TAG_SITE = 2

# ---- load variability parameters
_SHIFT_SD_MIN = 20.0
_SHIFT_MAX_MIN = 60
_DAY_SIGMA = 0.2
_NOISE_SIGMA = 0.35
_NOISE_TAU_MIN = 15.0
_SPIKE_SHARE = 0.30
_MAX_EVENTS_PER_DAY = 40.0  # cap on the mean event count; larger loads get the rest as base load

# appliance events: power [W], shortest and longest duration [min], share of events
_APPLIANCES = np.array(
    [
        # power_w, min_min, max_min, probability
        [2000.0, 2, 5, 0.25],  # kettle
        [1100.0, 2, 8, 0.20],  # microwave
        [2200.0, 10, 45, 0.20],  # hob or oven
        [2000.0, 10, 30, 0.20],  # washing machine or dishwasher heating
        [1500.0, 5, 15, 0.15],  # hair dryer, vacuum cleaner, iron
    ]
)
_APPLIANCE_CUM_P = np.cumsum(_APPLIANCES[:, 3])
_APPLIANCE_CUM_P[-1] = 1.0
_EVENT_WH = float(np.sum(_APPLIANCES[:, 3] * _APPLIANCES[:, 0] * (_APPLIANCES[:, 1] + _APPLIANCES[:, 2]) / 2 / 60))

# ---- PV parameters
_PV_LOSSES = 0.14
_GAMMA_PDC = -0.004
_AMBIENT_C = 15.0
_ROSS_K_M2_PER_W = 0.03
_CLOUD_TAU_MIN = 10.0
_CLOUD_MEAN_DEFICIT = 0.85  # mean daily deficit of clearness at cloudiness 1
_CLOUD_CONCENTRATION = 2.0
_CLOUD_SD = 0.6
_CLOUD_MIN, _CLOUD_MAX = 0.05, 1.1
_LAG_MAX_MIN = 4
_PV_FACTOR_SD = 0.03


# --------------------------------------------------------------------------- base load shape
@functools.lru_cache(maxsize=16)
def _h25_year_w_per_kwh(year: int) -> np.ndarray:
    """BDEW H25 for one calendar year in local clock time, 15-min power [W per kWh/year].

    Normalised so that the year's energy is 1 kWh (1000 Wh): ``sum(p) * 0.25 h == 1000``.
    Cached because a study of 10,000 households needs it once, not 10,000 times.
    """
    from demandlib.bdew import H25

    index = pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq="15min", inclusive="left")
    # holidays=None: no holiday calendar (see the module docstring)
    values = np.asarray(H25(index), dtype=np.float64)
    values = values * (1000.0 / (values.sum() * 0.25))
    values.setflags(write=False)  # shared by every caller through the cache
    return values


def _base_w_per_kwh(utc_s: np.ndarray, timezone: str) -> np.ndarray:
    """H25 power at instants ``utc_s`` [s], read in local clock time [W per kWh/year]."""
    local = pd.DatetimeIndex(pd.to_datetime(utc_s, unit="s", utc=True)).tz_convert(timezone).tz_localize(None)
    local_s = local.as_unit("s").asi8.astype(np.float64)
    years = range(int(local.year.min()), int(local.year.max()) + 1)
    year0_s = pd.Timestamp(f"{years[0]}-01-01").value // 1_000_000_000  # naive: seconds of local clock time
    values = np.concatenate([_h25_year_w_per_kwh(y) for y in years])
    centres_s = year0_s + 900.0 * (np.arange(values.size) + 0.5)
    # linear between quarter-hour centres: smoother than the standard's steps, same energy
    return np.interp(local_s, centres_s, values)


# --------------------------------------------------------------------------- helpers
def _ar1(z: np.ndarray, tau_steps: float, sd: float = 1.0) -> np.ndarray:
    """Stationary AR(1) with standard deviation ``sd`` along the last axis.

    Parameters
    ----------
    z : numpy.ndarray
        Standard normals; the first entry of the last axis sets the initial state,
        so the output is one shorter.
    tau_steps : float
        Correlation time [steps]: ``phi = exp(-1 / tau_steps)``.
    sd : float
        Standard deviation of the output (scaling inside the filter saves a pass).
    """
    from scipy.signal import lfilter

    phi = float(np.exp(-1.0 / tau_steps))
    zi = sd * phi * z[..., :1]  # state before the first step, drawn from the stationary law
    out, _ = lfilter([sd * np.sqrt(1.0 - phi * phi)], [1.0, -phi], z[..., 1:], axis=-1, zi=zi)
    return out


def _rows_window(series: np.ndarray, width: int, first: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``out[i] = series[rows[i], first[i] : first[i] + width]`` as an ``(n, width)`` array.

    A row gather from a sliding-window view: it copies whole rows instead of indexing
    millions of single elements, which is what makes per-household time shifts cheap.
    """
    series = np.atleast_2d(series)
    windows = np.lib.stride_tricks.sliding_window_view(series, width, axis=-1)
    rows = np.zeros(first.size, dtype=np.intp) if rows is None else rows
    return windows[rows, first]


def _minutes_to_rounds(power_w: np.ndarray, offset_s: int, interval_s: int, n_rounds: int, out: np.ndarray) -> None:
    """Integrate minute powers ``(n, M)`` [W] into round energies, written to ``out`` ``(n, n_rounds)`` [Wh].

    Round ``r`` covers ``[offset_s + r * interval_s, offset_s + (r + 1) * interval_s)`` seconds
    from the grid start; power is constant within each minute. ``out`` may be a transposed
    view of the caller's ``(rounds, members)`` array, which saves a copy.
    """
    n = power_w.shape[0]
    wh_per_w = _GRID_S / 3600.0
    if interval_s % _GRID_S == 0 and offset_s % _GRID_S == 0:
        k = interval_s // _GRID_S
        first = offset_s // _GRID_S
        part = power_w[:, first : first + n_rounds * k]
        if k == 1:
            np.multiply(part, wh_per_w, out=out)
        else:
            np.sum(part.reshape(n, n_rounds, k), axis=2, out=out)
            out *= wh_per_w
        return
    # general case: piecewise-linear cumulative energy at the round boundaries
    energy_wh = power_w * wh_per_w
    cum = np.zeros((n, energy_wh.shape[1] + 1))
    np.cumsum(energy_wh, axis=1, out=cum[:, 1:])
    padded = np.concatenate([energy_wh, np.zeros((n, 1))], axis=1)
    bounds = offset_s + interval_s * np.arange(n_rounds + 1, dtype=np.int64)
    idx = bounds // _GRID_S
    frac = (bounds - idx * _GRID_S) / _GRID_S
    at = cum[:, idx] + padded[:, idx] * frac
    np.subtract(at[:, 1:], at[:, :-1], out=out)


@dataclass(frozen=True)
class _Site:
    latitude: float
    longitude: float
    altitude_m: float

    @property
    def key(self) -> int:
        """Seed key of the site's shared cloud process (position only, rounded to ~10 m)."""
        return zlib.crc32(f"{self.latitude:.4f},{self.longitude:.4f}".encode("ascii"))


@dataclass
class _Block:
    """What one day block shares between all households (small arrays only)."""

    start_s: int  # absolute start [s since the epoch, UTC]
    key: int  # seed key: absolute start minute, offset to stay non-negative
    base_ext: np.ndarray  # H25 per minute with a halo of _SHIFT_MAX_MIN on both sides [W per kWh/year]
    event_cdf: np.ndarray  # cumulative distribution of appliance start minutes
    day_ratio: float  # the day's H25 energy relative to an average day
    pv_table: np.ndarray | None  # per-kW DC power of each PV group, with a halo of _LAG_MAX_MIN before [W/kW]


# --------------------------------------------------------------------------- source
class RealisticProfiles(ProfileSource):
    """Seeded synthetic households: BDEW H25 load with minute variability and pvlib PV.

    Parameters
    ----------
    participant_ids : list of str
        Ids of the members; each seeds its own random streams.
    specs : list of RealisticProfile
        One spec per member (``annual_load_kwh``, ``pv_capacity_kw``, site, orientation,
        ``cloudiness``, ``load_scale``, ``generation_scale``).
    clock : Clock
        Round timing and the study timezone (load follows local clock time).
    seed : int
        Study seed.

    Notes
    -----
    Households are processed in chunks of ``_CHUNK`` so that every temporary array stays
    small (cache-sized); only the two returned arrays are as large as the request.
    """

    _CHUNK = 256

    def __init__(self, participant_ids: list[str], specs: list[RealisticProfile], clock: Clock, seed: int):
        super().__init__(participant_ids, specs, clock, seed)
        for pid, spec in zip(self.participant_ids, self.specs):
            if getattr(spec, "type", None) != "realistic":
                raise ProfileError(f"participant {pid!r}: RealisticProfiles needs a 'realistic' profile, got {getattr(spec, 'type', spec)!r}")
        n = len(self.specs)
        self._n = n
        self._annual_kwh = np.array([s.annual_load_kwh for s in self.specs], dtype=np.float64)
        self._pv_kw = np.array([s.pv_capacity_kw for s in self.specs], dtype=np.float64)
        self._load_scale = np.array([s.load_scale for s in self.specs], dtype=np.float64)
        self._gen_scale = np.array([s.generation_scale for s in self.specs], dtype=np.float64)

        # expected appliance events per day, capped; the share they do not cover stays in the base load
        daily_wh = self._annual_kwh * 1000.0 / 365.25
        self._events_per_day = np.minimum(_SPIKE_SHARE * daily_wh / _EVENT_WH, _MAX_EVENTS_PER_DAY)
        self._base_share = 1.0 - self._events_per_day * _EVENT_WH / daily_wh
        from scipy.stats import poisson

        # room for the most events any household can draw on a busy day (H25 days reach ~1.6x the mean)
        self._event_slots = int(poisson.ppf(1.0 - 1e-12, 2.0 * float(self._events_per_day.max(initial=0.0)))) + 1

        # fixed per-household traits, from each participant's own seed (init only, not a hot path)
        self._spawn_keys: list[tuple[int, ...]] = []
        self._shift_min = np.zeros(n, dtype=np.intp)
        self._lag_min = np.zeros(n, dtype=np.intp)
        self._pv_factor = np.ones(n)
        for i, pid in enumerate(self.participant_ids):
            seq = participant_seed(self.seed, pid)
            self._spawn_keys.append(tuple(seq.spawn_key))
            rng = np.random.default_rng(seq)
            z = rng.standard_normal(2)
            self._shift_min[i] = int(np.clip(np.rint(z[0] * _SHIFT_SD_MIN), -_SHIFT_MAX_MIN, _SHIFT_MAX_MIN))
            self._pv_factor[i] = float(np.clip(1.0 + _PV_FACTOR_SD * z[1], 0.9, 1.06))
            self._lag_min[i] = int(rng.integers(0, _LAG_MAX_MIN + 1))

        # PV groups: households sharing site, orientation and cloudiness share one per-kW series
        sites: dict[_Site, int] = {}
        groups: dict[tuple[int, float, float, float], int] = {}
        self._pv_group = np.zeros(n, dtype=np.intp)
        for i, s in enumerate(self.specs):
            site = _Site(float(s.latitude), float(s.longitude), float(s.altitude_m))
            si = sites.setdefault(site, len(sites))
            key = (si, float(s.tilt_deg), float(s.azimuth_deg), float(s.cloudiness))
            self._pv_group[i] = groups.setdefault(key, len(groups))
        self._sites = list(sites)
        self._groups = list(groups)
        self._pv_rated_w_per_kw = self._pv_kw * self._pv_factor * self._gen_scale  # [kW], scales applied
        self._has_pv = bool(np.any(self._pv_rated_w_per_kw > 0))

    # ------------------------------------------------------------------ public
    def energy_wh(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        """Load and generation per round.

        Parameters
        ----------
        start_round : int
            First round (0 = study start).
        n_rounds : int
            Number of rounds.

        Returns
        -------
        load_wh, generation_wh : numpy.ndarray
            float64 ``(n_rounds, n_members)`` [Wh per round], >= 0, scales applied.
        """
        n_rounds = max(int(n_rounds), 0)
        interval_s = int(self.clock.interval_s)
        if n_rounds == 0 or self._n == 0:
            return np.zeros((n_rounds, self._n)), np.zeros((n_rounds, self._n))
        load_wh = np.empty((n_rounds, self._n))  # every column is written below
        gen_wh = np.empty((n_rounds, self._n)) if self._has_pv else np.zeros((n_rounds, self._n))
        t0 = int(start_round) * interval_s  # seconds since study start
        t1 = t0 + n_rounds * interval_s
        b0, b1 = t0 // _BLOCK_S, (t1 - 1) // _BLOCK_S
        blocks = [self._block(b) for b in range(b0, b1 + 1)]
        offset_s = t0 - b0 * _BLOCK_S
        for j0 in range(0, self._n, self._CHUNK):
            rows = np.arange(j0, min(j0 + self._CHUNK, self._n))
            cols = slice(rows[0], rows[-1] + 1)
            load_w = np.concatenate([self._load_rows(blk, rows) for blk in blocks], axis=1)
            _minutes_to_rounds(load_w, offset_s, interval_s, n_rounds, out=load_wh[:, cols].T)
            if self._has_pv:
                gen_w = np.concatenate([self._pv_rows(blk, rows) for blk in blocks], axis=1)
                _minutes_to_rounds(gen_w, offset_s, interval_s, n_rounds, out=gen_wh[:, cols].T)
        return load_wh, gen_wh

    # ------------------------------------------------------------------ blocks
    def _block(self, b: int) -> _Block:
        """Shared data of day block ``b`` (starting ``b`` days after the study start)."""
        start_s = self.clock.start_utc_s + b * _BLOCK_S
        m, halo = _BLOCK_MIN, _SHIFT_MAX_MIN
        mid_s = start_s + _GRID_S * np.arange(-halo, m + halo, dtype=np.int64) + _GRID_S // 2
        base_ext = _base_w_per_kwh(mid_s, self.clock.timezone)
        base = base_ext[halo : halo + m]
        rate = base * base  # appliance use clusters where the standard profile peaks
        # seeds use the block's absolute start minute (offset to stay non-negative), so they do
        # not depend on how rounds are chunked
        key = int(start_s // _GRID_S) + (1 << 40)
        return _Block(
            start_s=start_s,
            key=key,
            base_ext=base_ext,
            event_cdf=np.cumsum(rate) / rate.sum(),
            day_ratio=float(base.sum() * (_GRID_S / 3600.0) / (1000.0 / 365.25)),
            pv_table=self._pv_table(start_s, key) if self._has_pv else None,
        )

    def _load_rows(self, blk: _Block, rows: np.ndarray) -> np.ndarray:
        """Load of households ``rows`` in one block, ``(len(rows), 1440)`` [W], scales applied."""
        n, m, halo, k = rows.size, _BLOCK_MIN, _SHIFT_MAX_MIN, self._event_slots
        # one generator per household and day, derived from its participant seed
        z = np.empty((n, m + 2))
        u = np.empty((n, 1 + 3 * k))
        for i, r in enumerate(rows):
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=self._spawn_keys[r] + (_TAG_LOAD, blk.key)))
            rng.standard_normal(out=z[i])
            rng.random(out=u[i])

        shift = self._shift_min[rows]
        # log of day level times base share, minus the lognormal mean corrections (mean 1)
        log_level = _DAY_SIGMA * z[:, 0] - 0.5 * _DAY_SIGMA**2 + np.log(self._base_share[rows]) - 0.5 * _NOISE_SIGMA**2
        load = _ar1(z[:, 1:], _NOISE_TAU_MIN, _NOISE_SIGMA)
        load += log_level[:, None]
        np.exp(load, out=load)
        load *= _rows_window(blk.base_ext, m, halo - shift)  # value at t is base(t - shift)

        # appliance events, added through a difference array (one bincount for all households)
        from scipy.stats import poisson

        counts = poisson.ppf(u[:, 0], self._events_per_day[rows] * blk.day_ratio)
        counts = np.clip(np.nan_to_num(counts), 0, k).astype(np.intp)
        hh, slot = np.nonzero(np.arange(k)[None, :] < counts[:, None])
        if hh.size:
            u_kind, u_start, u_dur = u[hh, 1 + slot], u[hh, 1 + k + slot], u[hh, 1 + 2 * k + slot]
            kind = np.minimum(np.searchsorted(_APPLIANCE_CUM_P, u_kind, side="right"), len(_APPLIANCES) - 1)
            lower = np.where(kind > 0, _APPLIANCE_CUM_P[kind - 1], 0.0)
            jitter = (u_kind - lower) / _APPLIANCES[kind, 3]  # reuse the uniform's position within its bin
            power_w = _APPLIANCES[kind, 0] * (0.85 + 0.3 * jitter)
            d_min, d_max = _APPLIANCES[kind, 1], _APPLIANCES[kind, 2]
            dur = (d_min + np.floor(u_dur * (d_max - d_min + 1))).astype(np.intp)
            start = np.clip(np.searchsorted(blk.event_cdf, u_start) + shift[hh], 0, m - 1)
            end = np.minimum(start + dur, m)
            per_kwh = power_w / self._annual_kwh[rows][hh]
            width = m + 1
            diff = np.bincount(hh * width + start, weights=per_kwh, minlength=n * width)
            diff -= np.bincount(hh * width + end, weights=per_kwh, minlength=n * width)
            load += np.cumsum(diff.reshape(n, width), axis=1)[:, :m]
        load *= (self._annual_kwh[rows] * self._load_scale[rows])[:, None]
        return load

    def _pv_rows(self, blk: _Block, rows: np.ndarray) -> np.ndarray:
        """Generation of households ``rows`` in one block, ``(len(rows), 1440)`` [W], scales applied."""
        # clouds reach households with a lag: output at minute t reads the series at t - lag
        gen = _rows_window(blk.pv_table, _BLOCK_MIN, _LAG_MAX_MIN - self._lag_min[rows], rows=self._pv_group[rows])
        gen *= self._pv_rated_w_per_kw[rows][:, None]
        return gen

    def _pv_table(self, start_s: int, block_key: int) -> np.ndarray:
        """Per-kW DC power of every PV group for one block, ``(n_groups, 4 + 1440)`` [W per kW]."""
        import pvlib

        m, halo = _BLOCK_MIN, _LAG_MAX_MIN
        mid_s = start_s + _GRID_S * np.arange(-halo, m, dtype=np.int64) + _GRID_S // 2
        steps = mid_s.size
        table = np.zeros((len(self._groups), steps))
        for si, site in enumerate(self._sites):
            members = [gi for gi, g in enumerate(self._groups) if g[0] == si]
            orientations = tuple((self._groups[gi][1], self._groups[gi][2]) for gi in members)
            poa = _clear_sky_poa_w_per_m2(site, int(start_s), orientations).copy()  # (steps, len(members))

            # the site's shared cloud process: seeded by study seed, site and day only
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(site.key, _TAG_SITE, block_key)))
            u_day = rng.random()
            y = _ar1(rng.standard_normal(steps + 1), _CLOUD_TAU_MIN)
            levels = sorted({self._groups[gi][3] for gi in members})
            clouds = np.stack([_cloud_factor(c, u_day, y) for c in levels], axis=1)
            poa *= clouds[:, [levels.index(self._groups[gi][3]) for gi in members]]
            t_cell_c = _AMBIENT_C + _ROSS_K_M2_PER_W * poa
            dc_w = np.asarray(pvlib.pvsystem.pvwatts_dc(poa, t_cell_c, 1000.0, _GAMMA_PDC), dtype=np.float64)
            table[members] = np.clip(dc_w, 0.0, None).T * (1.0 - _PV_LOSSES)
        return table


@functools.lru_cache(maxsize=8)
def _site_turbidity(site: _Site) -> tuple[np.ndarray, np.ndarray]:
    """pvlib's Linke turbidity of every day of a non-leap and of a leap year at ``site``."""
    import pvlib

    noons = pd.date_range("2015-01-01 12:00", periods=365, freq="D", tz="UTC").append(
        pd.date_range("2016-01-01 12:00", periods=366, freq="D", tz="UTC"))
    values = pvlib.clearsky.lookup_linke_turbidity(noons, site.latitude, site.longitude).to_numpy()
    return values[:365], values[365:]


def _linke_turbidity(site: _Site, times: pd.DatetimeIndex) -> pd.Series:
    """pvlib's Linke turbidity at ``times``, its climatology file read once per site.

    pvlib interpolates the monthly values to the UTC day of the year (leap years apart), so a
    non-leap and a leap year's days are every value there is; looking them up once spares reading
    the file for every day of a run. Same numbers as ``pvlib.clearsky.lookup_linke_turbidity``.
    """
    normal, leap = _site_turbidity(site)
    utc = times.tz_convert("UTC")
    doy = utc.dayofyear.to_numpy() - 1
    return pd.Series(np.where(utc.is_leap_year, leap[np.minimum(doy, 365)], normal[np.minimum(doy, 364)]), index=times)


@functools.lru_cache(maxsize=64)
def _clear_sky_poa_w_per_m2(site: _Site, start_s: int, orientations: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Clear-sky plane-of-array irradiance [W/m2] of one day block (with its lag halo) at ``site``.

    ``(steps, len(orientations))`` for (tilt, azimuth) pairs in degrees; read-only. It depends on
    neither the seed nor the households, so copies of a community (an RL environment's, a study's)
    share it: solar geometry is most of what generating a day of PV costs.
    """
    import pvlib

    mid_s = start_s + _GRID_S * np.arange(-_LAG_MAX_MIN, _BLOCK_MIN, dtype=np.int64) + _GRID_S // 2
    times = pd.DatetimeIndex(pd.to_datetime(mid_s, unit="s", utc=True))
    loc = pvlib.location.Location(site.latitude, site.longitude, altitude=site.altitude_m)
    solpos = loc.get_solarposition(times)
    clear = loc.get_clearsky(times, model="ineichen", solar_position=solpos, linke_turbidity=_linke_turbidity(site, times))
    tilt = np.array([o[0] for o in orientations])[None, :]
    azim = np.array([o[1] for o in orientations])[None, :]
    poa = pvlib.irradiance.get_total_irradiance(
        tilt,
        azim,
        solpos["apparent_zenith"].to_numpy()[:, None],
        solpos["azimuth"].to_numpy()[:, None],
        clear["dni"].to_numpy()[:, None],
        clear["ghi"].to_numpy()[:, None],
        clear["dhi"].to_numpy()[:, None],
        model="isotropic",
    )["poa_global"]
    poa = np.clip(np.nan_to_num(np.asarray(poa, dtype=np.float64)), 0.0, None)
    poa.setflags(write=False)
    return poa

def _cloud_factor(cloudiness: float, u_day: float, y: np.ndarray) -> np.ndarray:
    """Cloud transmission of one day (fraction of clear-sky POA) from a site's shared draws.

    Parameters
    ----------
    cloudiness : float
        0 (clear sky every day) to 1 (heavily overcast).
    u_day : float
        The site's uniform draw of the day.
    y : numpy.ndarray
        The site's unit-variance AR(1) series of the day.
    """
    if cloudiness <= 0.0:
        return np.ones_like(y)
    from scipy.special import betaincinv

    mean_deficit = _CLOUD_MEAN_DEFICIT * cloudiness
    a, b = _CLOUD_CONCENTRATION * mean_deficit, _CLOUD_CONCENTRATION * (1.0 - mean_deficit)
    clearness = 1.0 - float(betaincinv(a, b, u_day))
    sd = _CLOUD_SD * np.sqrt(clearness * (1.0 - clearness))
    return np.clip(clearness + sd * y, _CLOUD_MIN, _CLOUD_MAX)


__all__ = ["RealisticProfiles"]
