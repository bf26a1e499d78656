"""Imported metered data: long-format CSV or Parquet files, resampled to the round interval.

File format (docs/profiles.md has the user's version)::

    timestamp,participant_id,consumption_kwh,generation_kwh
    2021-07-01 00:00:00,house_1,0.412,0.0
    2021-07-01 00:00:00,house_2,0.388,0.0
    2021-07-01 01:00:00,house_1,0.371,0.0

* one row per (timestamp, participant id); the column names are set per profile
  (``timestamp_column``, ``id_column``);
* exactly one load column among ``consumption_wh``, ``consumption_kwh``,
  ``consumption_w``, ``consumption_kw`` and at most one generation column among
  ``generation_wh``, ``generation_kwh``, ``generation_w``, ``generation_kw`` (none: no
  generation). ``_wh``/``_kwh`` are energy over the row's interval, ``_w``/``_kw`` the
  average power over it. Any other column is an error (it is most likely a typo);
* timestamps are ISO 8601; with an offset (``2021-07-01T06:00:00Z``,
  ``2021-07-01 00:00:00-06:00``) they are absolute, without one they are local times in
  the profile's ``timezone`` or else the study timezone. A timestamp marks the start of
  its interval, or its end with ``timestamp_marks: "end"``;
* each participant's rows must be regular (one interval, no gaps, no duplicates); the
  interval is inferred from the timestamps.

Every problem is a :class:`~trexsim.errors.ProfileError` that starts with
``file:row:column:``; rows count from 1 with the CSV header as line 1 (a CSV row's
number is its line number, as long as no quoted field spans lines); in Parquet files
rows count data rows from 1.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trexsim.config.schema import FileProfile
from trexsim.data.profiles import Clock, ProfileSource
from trexsim.errors import ProfileError

# column name -> (is power, factor to W or Wh)
_LOAD_COLUMNS = {"consumption_wh": (False, 1.0), "consumption_kwh": (False, 1000.0), "consumption_w": (True, 1.0), "consumption_kw": (True, 1000.0)}
_GEN_COLUMNS = {"generation_wh": (False, 1.0), "generation_kwh": (False, 1000.0), "generation_w": (True, 1.0), "generation_kw": (True, 1000.0)}
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_CHUNK_ROWS = 500_000
_PARQUET_BATCH_ROWS = 262_144
_NA_STRINGS = ["", "nan", "NaN", "NAN", "NA", "N/A", "null", "NULL", "None"]
# an ISO time followed by an offset; a bare date such as 2021-07-01 must not match
_OFFSET_RE = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|z|UTC|[+-]\d{2}(?::?\d{2})?)$"
_CACHE_SIZE = 8


# --------------------------------------------------------------------------- parsed data
@dataclass(frozen=True)
class _Series:
    """One participant's data, regular in time."""

    start_s: int  # start of the first interval [s since the epoch, UTC]
    interval_s: int  # data interval [s]
    load_wh: np.ndarray  # energy per interval [Wh], (K,)
    gen_wh: np.ndarray  # energy per interval [Wh], (K,)

    @property
    def end_s(self) -> int:
        return self.start_s + self.interval_s * self.load_wh.size


@dataclass(frozen=True)
class _ParsedFile:
    display: str  # the path as the user wrote it, for messages
    series: dict[str, _Series]  # only the ids that were asked for and found
    id_examples: tuple[str, ...]  # a few ids that are in the file, for messages
    id_column: str


_CACHE: OrderedDict[tuple, _ParsedFile] = OrderedDict()


def clear_cache() -> None:
    """Forget every parsed file (the cache is keyed by path and modification time)."""
    _CACHE.clear()


# --------------------------------------------------------------------------- errors
def _where(display: str, row: int | None = None, column: str | None = None) -> str:
    parts = [display]
    if row is not None:
        parts.append(str(row))
    if column is not None:
        parts.append(column)
    return ":".join(parts)


def _fail(display: str, message: str, row: int | None = None, column: str | None = None) -> ProfileError:
    return ProfileError(f"{_where(display, row, column)}: {message}")


def _fmt_time(utc_s: int, timezone: str) -> str:
    """An instant as local ISO time with offset (and UTC), for messages."""
    ts = pd.Timestamp(int(utc_s), unit="s", tz="UTC")
    try:
        local = ts.tz_convert(timezone)
    except Exception:  # an unknown zone is reported elsewhere; fall back to UTC
        return ts.isoformat()
    return f"{local.isoformat()} ({ts.strftime('%Y-%m-%dT%H:%M:%SZ')})"


# --------------------------------------------------------------------------- reading
def _suffix_kind(path: Path, display: str) -> str:
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise _fail(display, f"unsupported file type; use one of {', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}")


def _pick_columns(found: list[str], display: str, ts_col: str, id_col: str) -> tuple[str, str | None]:
    """Check the header; return the load and generation column names."""
    expected = f"'{ts_col}', '{id_col}', one of {sorted(_LOAD_COLUMNS)} and optionally one of {sorted(_GEN_COLUMNS)}"
    found_txt = ", ".join(repr(c) for c in found)
    for col in (ts_col, id_col):
        if col not in found:
            raise _fail(display, f"missing column {col!r}; found {found_txt}; expected {expected}", 1, col)
    loads = [c for c in found if c in _LOAD_COLUMNS]
    gens = [c for c in found if c in _GEN_COLUMNS]
    # other columns (a meter's extra fields) are ignored; an energy column with an unknown unit is not
    unknown = [c for c in found if c.lower().startswith(("consumption", "generation"))
               and c not in _LOAD_COLUMNS and c not in _GEN_COLUMNS]
    if unknown:
        raise _fail(display, f"unknown column {unknown[0]!r} (units go in the name); found {found_txt}; expected {expected}", 1, unknown[0])
    if not loads:
        raise _fail(display, f"no consumption column; found {found_txt}; expected {expected}", 1)
    if len(loads) > 1:
        raise _fail(display, f"more than one consumption column ({', '.join(loads)}); keep exactly one", 1, loads[1])
    if len(gens) > 1:
        raise _fail(display, f"more than one generation column ({', '.join(gens)}); keep at most one", 1, gens[1])
    return loads[0], (gens[0] if gens else None)


def _read_csv(path: Path, display: str, ts_col: str, id_col: str, wanted: set[str]):
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig")
    except FileNotFoundError:
        raise _fail(display, f"file not found ({path})") from None
    except Exception as exc:  # empty or undecodable file
        raise _fail(display, f"cannot read CSV header: {exc}", 1) from None
    found = [str(c) for c in header.columns]
    load_col, gen_col = _pick_columns(found, display, ts_col, id_col)
    energy_cols = [c for c in (load_col, gen_col) if c]
    frames, examples = [], {}
    offset = 0
    reader = pd.read_csv(
        path,
        usecols=[ts_col, id_col, *energy_cols],
        dtype={ts_col: str, id_col: str},
        keep_default_na=False,
        na_values={c: _NA_STRINGS for c in energy_cols},
        skip_blank_lines=False,  # keeps row numbers equal to line numbers
        chunksize=_CSV_CHUNK_ROWS,
        encoding="utf-8-sig",
    )
    try:
        for chunk in reader:
            rows = np.arange(offset + 2, offset + 2 + len(chunk), dtype=np.int64)  # header is line 1
            offset += len(chunk)
            ids = chunk[id_col].astype(str).str.strip()
            blank = (ids == "") & (chunk[ts_col].astype(str).str.strip() == "") & chunk[energy_cols].isna().all(axis=1)
            keep = ids.isin(wanted).to_numpy() & ~blank.to_numpy()
            _note_examples(examples, ids[~blank])
            if keep.any():
                part = chunk.loc[keep, [ts_col, *energy_cols]].copy()
                part.insert(0, "_id", ids[keep].to_numpy())
                part.insert(0, "_row", rows[keep])
                frames.append(part)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise _fail(display, f"cannot read CSV: {exc}") from None
    return frames, examples, load_col, gen_col


def _read_parquet(path: Path, display: str, ts_col: str, id_col: str, wanted: set[str]):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.exists():
        raise _fail(display, f"file not found ({path})")
    try:
        pfile = pq.ParquetFile(path)
    except Exception as exc:
        raise _fail(display, f"cannot read Parquet file: {exc}") from None
    found = list(pfile.schema_arrow.names)
    load_col, gen_col = _pick_columns(found, display, ts_col, id_col)
    energy_cols = [c for c in (load_col, gen_col) if c]
    wanted_arr = pa.array(sorted(wanted), type=pa.string())
    frames, examples = [], {}
    offset = 0
    # batches keep memory bounded and the original row numbers known; only wanted ids are kept
    for batch in pfile.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[ts_col, id_col, *energy_cols]):
        n = batch.num_rows
        ids = batch.column(id_col).cast(pa.string())
        if len(examples) < 8:
            _note_examples(examples, pd.Series(pc.unique(ids).to_pylist()))
        mask = pc.fill_null(pc.is_in(ids, value_set=wanted_arr), False)
        if pc.any(mask).as_py():
            sel = batch.filter(mask)
            part = sel.select([ts_col, *energy_cols]).to_pandas()
            part.insert(0, "_id", ids.filter(mask).to_pylist())
            part.insert(0, "_row", np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False))) + offset + 1)
            frames.append(part)
        offset += n
    return frames, examples, load_col, gen_col


def _note_examples(examples: dict, ids: pd.Series) -> None:
    """Remember the first few distinct ids of the file (for 'not found' messages)."""
    if len(examples) >= 8:
        return
    for value in pd.unique(ids):
        if len(examples) >= 8:
            return
        if value is not None and value == value and str(value) != "":  # skip None, NaN and blanks
            examples.setdefault(str(value), None)


# --------------------------------------------------------------------------- parsing
def _timestamps_utc_s(raw: pd.Series, rows: np.ndarray, ids: np.ndarray, display: str, column: str, timezone: str) -> np.ndarray:
    """Parse timestamps to UTC epoch seconds [s]; naive ones are local times in ``timezone``.

    In long format every timestamp repeats once per participant, so only the distinct
    values are parsed; ``codes`` map them back to rows.
    """
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        index = pd.DatetimeIndex(raw).tz_convert("UTC")
        secs, frac = _seconds(index)
        _check_whole(frac, np.arange(len(index)), index, rows, display, column)
        return secs
    codes, uniq = pd.factorize(raw)
    if (codes < 0).any():
        raise _fail(display, "empty timestamp", int(rows[np.argmax(codes < 0)]), column)
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        return _localize(pd.DatetimeIndex(uniq), codes, rows, ids, display, column, timezone)

    def first_row(mask_u: np.ndarray) -> int:
        return int(rows[np.argmax(mask_u[codes])])  # rows are in file order

    text = pd.Series(np.asarray(uniq, dtype=object)).astype(str).str.strip()
    empty = (text == "").to_numpy()
    if empty.any():
        raise _fail(display, "empty timestamp", first_row(empty), column)
    aware = text.str.contains(_OFFSET_RE, regex=True).to_numpy()
    if aware.any() and not aware.all():
        row_naive, row_aware = first_row(~aware), first_row(aware)
        example = text.iloc[int(codes[np.argmax((~aware)[codes])])]
        raise _fail(display, f"timestamp {example!r} has no UTC offset but row {row_aware} has one; use one kind in a file", row_naive, column)
    if aware.all():
        parsed = pd.to_datetime(text.str.replace(r"\s*UTC$", "Z", regex=True), format="ISO8601", utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        example = text.iloc[int(codes[np.argmax(bad[codes])])]
        raise _fail(display, f"cannot parse timestamp {example!r} (use ISO 8601, e.g. '2021-07-01 00:00:00' or '2021-07-01T06:00:00Z')", first_row(bad), column)
    index = pd.DatetimeIndex(parsed)
    if not aware.all():
        return _localize(index, codes, rows, ids, display, column, timezone)
    secs, frac = _seconds(index)
    _check_whole(frac, codes, index, rows, display, column)
    return secs[codes]


def _localize(naive_u: pd.DatetimeIndex, codes: np.ndarray, rows: np.ndarray, ids: np.ndarray, display: str, column: str, timezone: str) -> np.ndarray:
    """Distinct local wall-clock times ``naive_u``, mapped to rows by ``codes``, to UTC seconds [s].

    The hour repeated when DST ends is told apart by order: per participant, in file
    order, the first occurrence is daylight time and the second standard time.
    """
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise _fail(display, f"unknown timezone {timezone!r} for timestamps without an offset (use an IANA name such as 'America/Edmonton')", None, column) from None
    local = naive_u.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    missing = np.asarray(local.isna())
    secs_u, frac_u = _seconds(local.tz_convert("UTC"))
    secs = secs_u[codes]
    if missing.any():
        # NaT means ambiguous (fall back: the hour happens twice) or nonexistent (spring forward)
        probe = naive_u[missing].tz_localize(timezone, ambiguous=np.ones(int(missing.sum()), dtype=bool), nonexistent="NaT")
        nonexistent = np.zeros_like(missing)
        nonexistent[np.flatnonzero(missing)] = np.asarray(probe.isna())
        if nonexistent.any():
            i = int(np.argmax(nonexistent[codes]))
            raise _fail(display, f"local time {naive_u[codes[i]]} does not exist in {timezone} (clocks jump at a DST change)", int(rows[i]), column)
        on_rows = missing[codes]
        amb = pd.DataFrame({"id": ids[on_rows], "code": codes[on_rows]})
        first = amb.groupby(["id", "code"], sort=False).cumcount().to_numpy() == 0
        resolved = naive_u[codes[on_rows]].tz_localize(timezone, ambiguous=first)
        secs[on_rows], _ = _seconds(resolved.tz_convert("UTC"))
        frac_u = frac_u & ~missing
    _check_whole(frac_u, codes, naive_u, rows, display, column)
    return secs


def _seconds(index: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds of a UTC index, and which entries are not whole seconds."""
    ns = index.as_unit("ns").asi8
    return ns // 1_000_000_000, ns % 1_000_000_000 != 0


def _check_whole(frac_u: np.ndarray, codes: np.ndarray, index: pd.DatetimeIndex, rows: np.ndarray, display: str, column: str) -> None:
    if frac_u.any():
        i = int(np.argmax(frac_u[codes]))
        raise _fail(display, f"timestamp {index[codes[i]]} is not a whole second", int(rows[i]), column)


def _energy_values(raw: pd.Series, rows: np.ndarray, display: str, column: str) -> np.ndarray:
    """Numbers of an energy column, checked: no text, no NaN, no negatives."""
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        original = raw.iloc[i]
        is_text = isinstance(original, str) and original.strip() not in _NA_STRINGS
        try:
            is_text = is_text and not np.isnan(float(original))
        except ValueError:
            pass
        what = f"not a number {original!r}" if is_text else f"missing or NaN energy {original!r}"
        if np.isinf(values[i]):
            what = f"infinite energy {original!r}"
        raise _fail(display, what, int(rows[i]), column)
    negative = values < 0
    if negative.any():
        i = int(np.argmax(negative))
        raise _fail(display, f"negative energy {float(values[i])!r}", int(rows[i]), column)
    return values


def _build_series(
    t_s: np.ndarray, rows: np.ndarray, load: np.ndarray, gen: np.ndarray, pid: str, display: str, ts_col: str,
    load_col: str, gen_col: str | None, marks: str, timezone: str,
) -> _Series:
    """Check one participant's rows for duplicates, gaps and mixed intervals; convert to Wh."""
    order = np.lexsort((rows, t_s))
    t_s, rows, load, gen = t_s[order], rows[order], load[order], gen[order]
    if t_s.size < 2:
        raise _fail(display, f"participant {pid!r} has only one row; at least two are needed to infer the interval", int(rows[0]), ts_col)
    d = np.diff(t_s)
    dup = d == 0
    if dup.any():
        i = int(np.argmax(dup))
        first, second = sorted((int(rows[i]), int(rows[i + 1])))
        raise _fail(display, f"duplicate row for participant {pid!r} at {_fmt_time(int(t_s[i]), timezone)} (same as row {first})", second, ts_col)
    steps, counts = np.unique(d, return_counts=True)
    interval = int(steps[np.argmax(counts)])  # the most common step; ties go to the shortest
    odd = d != interval
    if odd.any():
        i = int(np.argmax(odd))
        if d[i] % interval == 0:
            raise _fail(
                display,
                f"gap for participant {pid!r}: no data from {_fmt_time(int(t_s[i]) + interval, timezone)} "
                f"to {_fmt_time(int(t_s[i + 1]), timezone)} (interval {interval} s)",
                int(rows[i + 1]),
                ts_col,
            )
        raise _fail(
            display,
            f"irregular timestamps for participant {pid!r}: {int(d[i])} s after row {int(rows[i])}, "
            f"while most rows are {interval} s apart (mixed intervals)",
            int(rows[i + 1]),
            ts_col,
        )
    start = int(t_s[0]) - (interval if marks == "end" else 0)
    is_power, factor = _LOAD_COLUMNS[load_col]
    load_wh = load * factor * (interval / 3600.0 if is_power else 1.0)
    if gen_col is None:
        gen_wh = np.zeros_like(load_wh)
    else:
        is_power, factor = _GEN_COLUMNS[gen_col]
        gen_wh = gen * factor * (interval / 3600.0 if is_power else 1.0)
    return _Series(start, interval, load_wh, gen_wh)


def _parse_file(path: Path, display: str, ts_col: str, id_col: str, timezone: str, marks: str, wanted: frozenset[str]) -> _ParsedFile:
    kind = _suffix_kind(path, display)
    reader = _read_csv if kind == "csv" else _read_parquet
    frames, examples, load_col, gen_col = reader(path, display, ts_col, id_col, set(wanted))
    id_examples = tuple(examples)
    if not frames:
        return _ParsedFile(display, {}, id_examples, id_col)
    data = pd.concat(frames, ignore_index=True)
    rows = data["_row"].to_numpy(dtype=np.int64)
    ids = data["_id"].to_numpy(dtype=object)
    # values first (cheap, row-wise), then time (needs the participant for DST ambiguity)
    load = _energy_values(data[load_col], rows, display, load_col)
    gen = _energy_values(data[gen_col], rows, display, gen_col) if gen_col else np.zeros_like(load)
    t_s = _timestamps_utc_s(data[ts_col].reset_index(drop=True), rows, ids, display, ts_col, timezone)
    series: dict[str, _Series] = {}
    codes, uniques = pd.factorize(ids)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for group in np.split(order, bounds):  # per participant, at load time only
        pid = str(uniques[codes[group[0]]])
        series[pid] = _build_series(t_s[group], rows[group], load[group], gen[group], pid, display, ts_col, load_col, gen_col, marks, timezone)
    return _ParsedFile(display, series, id_examples, id_col)


def _load(path: Path, display: str, ts_col: str, id_col: str, timezone: str, marks: str, wanted: frozenset[str]) -> _ParsedFile:
    """Parse a file once per (path, modification time, options, ids) and remember it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise _fail(display, f"file not found ({path})") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size, ts_col, id_col, timezone, marks, wanted)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    parsed = _parse_file(path, display, ts_col, id_col, timezone, marks, wanted)
    _CACHE[key] = parsed
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return parsed


# --------------------------------------------------------------------------- resampling
class _Timeline:
    """Members whose data share start, interval and length: resampled together, vectorised.

    Energies ``(K, n)`` [Wh] are integrated as a function of time: piecewise constant power
    within each data interval ("hold", and always when the data are finer than the rounds),
    or power linear between interval midpoints ("interpolate", data coarser than rounds).
    """

    def __init__(self, start_s: int, interval_s: int, load_wh: np.ndarray, gen_wh: np.ndarray, interpolate: np.ndarray):
        self.start_s, self.interval_s = start_s, interval_s
        self.k = load_wh.shape[0]
        self.energy = np.concatenate([load_wh, gen_wh], axis=1)  # (K, 2n): load columns then generation
        self.interpolate = np.concatenate([interpolate, interpolate])
        self.cum = np.zeros((self.k + 1, self.energy.shape[1]))
        np.cumsum(self.energy, axis=0, out=self.cum[1:])

    @property
    def end_s(self) -> int:
        return self.start_s + self.k * self.interval_s

    def energy_wh(self, bounds_s: np.ndarray, round_s: int) -> np.ndarray:
        """Energy between consecutive ``bounds_s`` [s, UTC], ``(len(bounds_s) - 1, 2n)`` [Wh]."""
        x = bounds_s - self.start_s
        out = self._hold(x)
        if self.interval_s > round_s and self.interpolate.any():
            cols = np.flatnonzero(self.interpolate)
            out[:, cols] = self._linear(x, cols)
        return np.maximum(out, 0.0)

    def _hold(self, x: np.ndarray) -> np.ndarray:
        idx = np.minimum(x // self.interval_s, self.k - 1)
        into = x - idx * self.interval_s  # seconds into interval idx (== interval at the very end)
        part = self.energy[idx] * (into / self.interval_s)[:, None]
        at = self.cum[idx] + part
        out = np.diff(at, axis=0)
        # a round inside one data interval gets that interval's share directly, free of the
        # round-off of differencing cumulative sums (hourly kWh held over minutes is exact)
        first = x[:-1] // self.interval_s
        last = (x[1:] - 1) // self.interval_s  # interval holding the round's last second
        same = first == last
        if same.any():
            share = (x[1:][same] - x[:-1][same]) / self.interval_s
            out[same] = self.energy[first[same]] * share[:, None]
        return out

    def _linear(self, x: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Integral of power linear between interval midpoints (held over the outer half intervals)."""
        d = self.interval_s
        power = self.energy[:, cols] * (3600.0 / d)  # [W]
        node_s = np.concatenate([[0.0], (np.arange(self.k) + 0.5) * d, [self.k * d]])
        node_w = np.concatenate([power[:1], power, power[-1:]], axis=0)
        seg_s = np.diff(node_s)
        seg_ws = 0.5 * (node_w[1:] + node_w[:-1]) * seg_s[:, None]
        cum_ws = np.concatenate([np.zeros((1, power.shape[1])), np.cumsum(seg_ws, axis=0)], axis=0)
        j = np.clip(np.searchsorted(node_s, x, side="right") - 1, 0, self.k)
        dx = (x - node_s[j])[:, None]
        slope = (node_w[j + 1] - node_w[j]) / seg_s[j][:, None]
        at = cum_ws[j] + dx * node_w[j] + 0.5 * slope * dx * dx
        return np.diff(at, axis=0) / 3600.0


# --------------------------------------------------------------------------- source
class FileProfiles(ProfileSource):
    """Metered data from long-format CSV or Parquet files, resampled to the rounds.

    Parameters
    ----------
    participant_ids : list of str
        Ids of the members.
    specs : list of FileProfile
        One spec per member; ``spec.id`` (default: the participant id) selects rows.
        ``trexsim.config.loader.load_config`` makes relative paths absolute (relative to
        the config file); a relative path that reaches this class is taken relative to
        the working directory.
    clock : Clock
        Round timing and the study timezone (used for timestamps without an offset).
    seed : int
        Unused (imported data are not random); kept for the common interface.

    Raises
    ------
    ProfileError
        For missing or malformed files, ids not in the file, or irregular data.
    """

    def __init__(self, participant_ids: list[str], specs: list[FileProfile], clock: Clock, seed: int):
        super().__init__(participant_ids, specs, clock, seed)
        n = len(self.specs)
        # members reading one file with the same options share one parse of it
        requests: dict[tuple, set[str]] = {}
        member_key: list[tuple] = []
        for pid, spec in zip(self.participant_ids, self.specs):
            if getattr(spec, "type", None) != "file":
                raise ProfileError(f"participant {pid!r}: FileProfiles needs a 'file' profile, got {getattr(spec, 'type', spec)!r}")
            path = Path(os.path.expanduser(spec.path))
            tz = spec.timezone or clock.timezone
            key = (spec.path, path.resolve() if path.exists() else path, spec.timestamp_column, spec.id_column, tz, spec.timestamp_marks)
            requests.setdefault(key, set()).add(spec.id if spec.id is not None else pid)
            member_key.append(key)
        parsed = {key: _load(key[1], key[0], key[2], key[3], key[4], key[5], frozenset(ids)) for key, ids in requests.items()}

        self._series: list[_Series] = []
        self._display: list[str] = []
        self._file_ids: list[str] = []
        for pid, spec, key in zip(self.participant_ids, self.specs, member_key):
            pf = parsed[key]
            file_id = spec.id if spec.id is not None else pid
            if file_id not in pf.series:
                some = ", ".join(repr(i) for i in pf.id_examples[:5]) or "none"
                hint = "" if spec.id is not None else " (set the profile's 'id' to pick one)"
                raise _fail(pf.display, f"participant {pid!r}: id {file_id!r} is not in the file; ids there include {some}{hint}", None, pf.id_column)
            self._series.append(pf.series[file_id])
            self._display.append(pf.display)
            self._file_ids.append(file_id)

        load_scale = np.array([s.load_scale for s in self.specs], dtype=np.float64)
        gen_scale = np.array([s.generation_scale for s in self.specs], dtype=np.float64)
        interpolate = np.array([s.upsample == "interpolate" for s in self.specs])
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, s in enumerate(self._series):
            groups.setdefault((s.start_s, s.interval_s, s.load_wh.size), []).append(i)
        self._timelines: list[tuple[np.ndarray, _Timeline]] = []
        for (start, interval, _), members in groups.items():
            idx = np.asarray(members, dtype=np.intp)
            load = np.stack([self._series[i].load_wh for i in members], axis=1) * load_scale[idx]
            gen = np.stack([self._series[i].gen_wh for i in members], axis=1) * gen_scale[idx]
            self._timelines.append((idx, _Timeline(start, interval, load, gen, interpolate[idx])))
        self._n = n

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

        Raises
        ------
        ProfileError
            If a round lies outside a member's data (naming file, participant and the
            first missing time).
        """
        n_rounds = max(int(n_rounds), 0)
        load = np.zeros((n_rounds, self._n))
        gen = np.zeros((n_rounds, self._n))
        if n_rounds == 0:
            return load, gen
        bounds = self.clock.start_utc_s + (int(start_round) + np.arange(n_rounds + 1, dtype=np.int64)) * self.clock.interval_s
        for idx, tl in self._timelines:
            if bounds[0] < tl.start_s or bounds[-1] > tl.end_s:
                self._coverage_error(int(idx[0]), int(bounds[0]), int(bounds[-1]), tl)
            both = tl.energy_wh(bounds, self.clock.interval_s)
            load[:, idx] = both[:, : idx.size]
            gen[:, idx] = both[:, idx.size :]
        return load, gen

    def _coverage_error(self, member: int, first_s: int, end_s: int, tl: _Timeline) -> None:
        tz = self.clock.timezone
        missing = first_s if first_s < tl.start_s else max(first_s, tl.end_s)
        raise _fail(
            self._display[member],
            f"participant {self.participant_ids[member]!r} (id {self._file_ids[member]!r}) has no data at "
            f"{_fmt_time(missing, tz)}; the file covers {_fmt_time(tl.start_s, tz)} to {_fmt_time(tl.end_s, tz)}. "
            "Set study.start_datetime (and days) inside the data",
        )


# --------------------------------------------------------------------------- CityLearn
_CITYLEARN_TZ = "America/Los_Angeles"
_CITYLEARN_FIRST_LABEL = pd.Timestamp("2016-07-31 23:00:00")  # row 0: month 7, hour 24 (hour ending), day type 7


def convert_citylearn(dataset_dir: str | os.PathLike, out_path: str | os.PathLike, buildings: list[str | int] | None = None) -> Path:
    """Convert the CityLearn Challenge 2022 homes into the long import format.

    Parameters
    ----------
    dataset_dir : path
        Folder with ``Building_N.csv`` and ``schema.json``.
    out_path : path
        Output file; ``.csv``/``.csv.gz`` or ``.parquet``/``.pq`` picks the format.
    buildings : list of str or int, optional
        ``["Building_1", 5]``; default: every building in ``schema.json``.

    Returns
    -------
    pathlib.Path
        ``out_path``: columns ``timestamp`` (interval start, UTC; ISO text with offset in
        CSV, a UTC timestamp in Parquet), ``participant_id`` (``Building_N``),
        ``consumption_kwh`` and ``generation_kwh`` (``solar_generation`` [Wh/kW] times the
        PV ``nominal_power`` [kW] / 1000).

    Notes
    -----
    The files label rows with ``month``, ``hour`` (1-24, hour ending) and ``day_type``,
    in a strict 24-row cycle from 2016-07-31 hour 24 (local time). The labels follow the
    local wall clock including daylight saving time: the PV peak moves by one hour in
    the row labels exactly on 2016-11-06 and 2017-03-12. So each row's interval start is
    its local label time; the label that does not exist on 2017-03-12 (02:00-03:00) is
    dropped and the repeated hour of 2016-11-06 (01:00-02:00) is given the same values
    twice. The result is a regular hourly series in UTC from 2016-08-01 06:00Z to
    2017-08-01 05:00Z (8,760 rows per building). A fixed hourly UTC range from the first
    row would shift every winter row by one hour against the labels.
    """
    root = Path(dataset_dir)
    out = Path(out_path)
    display = str(root)
    schema_path = root / "schema.json"
    if not schema_path.exists():
        raise _fail(str(schema_path), "file not found (is this a CityLearn dataset folder?)")
    schema = json.loads(schema_path.read_text())
    known = schema.get("buildings", {})
    names = list(known) if buildings is None else [b if isinstance(b, str) else f"Building_{int(b)}" for b in buildings]
    frames = []
    for name in names:  # a handful of buildings: a loop is fine here
        if name not in known:
            raise _fail(str(schema_path), f"building {name!r} not in schema.json; there are {', '.join(list(known)[:5])} ...")
        spec = known[name]
        pv_kw = float(((spec.get("pv") or {}).get("attributes") or {}).get("nominal_power", 0.0))
        csv_path = root / spec.get("energy_simulation", f"{name}.csv")
        try:
            df = pd.read_csv(csv_path, usecols=["month", "hour", "day_type", "non_shiftable_load", "solar_generation"])
        except FileNotFoundError:
            raise _fail(str(csv_path), "file not found") from None
        except ValueError as exc:
            raise _fail(str(csv_path), f"not a CityLearn building file: {exc}", 1) from None
        starts_utc = _citylearn_times(df, str(csv_path))
        keep, repeat = starts_utc[1], starts_utc[2]
        part = pd.DataFrame(
            {
                "timestamp": starts_utc[0],
                "participant_id": name,
                "consumption_kwh": df["non_shiftable_load"].to_numpy(dtype=np.float64)[keep][repeat],
                "generation_kwh": df["solar_generation"].to_numpy(dtype=np.float64)[keep][repeat] * pv_kw / 1000.0,
            }
        )
        frames.append(part)
    if not frames:
        raise _fail(display, "no buildings selected")
    table = pd.concat(frames, ignore_index=True)
    table["_n"] = table["participant_id"].str.extract(r"(\d+)$", expand=False).fillna("0").astype(int)
    table = table.sort_values(["timestamp", "_n"], kind="stable").drop(columns="_n").reset_index(drop=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = out.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        table.to_parquet(out, index=False)
    elif name.endswith(_CSV_SUFFIXES):
        table = table.assign(timestamp=table["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
        table.to_csv(out, index=False, float_format="%.10g")
    else:
        raise _fail(str(out), f"unsupported output type; use one of {', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}")
    return out


def _citylearn_times(df: pd.DataFrame, display: str) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Interval starts (UTC) of a CityLearn building file, checked against its labels.

    Returns the UTC starts, the rows kept (the nonexistent spring-forward hour dropped)
    and, indexing the kept rows, which row fills each output hour (the fall-back hour twice).
    """
    n = len(df)
    label = _CITYLEARN_FIRST_LABEL + pd.to_timedelta(np.arange(n), unit="h")  # local wall clock, hour starts
    # sanity check: the labels must be this strict cycle (hour ending, 1 = Monday ... 7 = Sunday, 8 = holiday)
    hour_ok = df["hour"].to_numpy() == label.hour + 1
    month_ok = df["month"].to_numpy() == label.month
    day_ok = (df["day_type"].to_numpy() == label.dayofweek + 1) | (df["day_type"].to_numpy() == 8)
    bad = ~(hour_ok & month_ok & day_ok)
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(display, f"row labels (month, hour, day_type) do not follow the 2016-08-01 ... 2017-07-31 hourly cycle; expected {label[i]} local time", i + 2, "hour")
    local = pd.DatetimeIndex(label).tz_localize(_CITYLEARN_TZ, ambiguous=True, nonexistent="NaT")
    keep = ~np.asarray(local.isna())
    local = local[keep]
    utc = local.tz_convert("UTC")
    # fill the UTC hour the labels skip (second 01:00 of the fall-back night) with the same row
    grid = pd.date_range(utc[0], utc[-1], freq="h")
    repeat = np.searchsorted(utc.asi8, grid.asi8, side="right") - 1
    return grid, keep, repeat


__all__ = ["FileProfiles", "clear_cache", "convert_citylearn"]
