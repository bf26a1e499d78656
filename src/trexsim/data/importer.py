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
  average power over it. Another ``consumption*``/``generation*`` column is an error (a
  unit typo); other columns are ignored;
* timestamps are ISO 8601; with an offset (``2021-07-01T06:00:00Z``,
  ``2021-07-01 00:00:00-06:00``) they are absolute, without one they are local times in
  the profile's ``timezone`` or else the study timezone. A timestamp marks the start of
  its interval, or its end with ``timestamp_marks: "end"``. Local times follow the clock
  (``dst_slots: "clock"``) or, with ``dst_slots: "fixed"``, every day has the same slots;
* each participant's rows near the study period (within a day of it) must be regular
  (one interval, no gaps, no duplicates); the interval is inferred from the timestamps.
  Rows further away are neither checked nor served.

Every problem of a file is found in one pass and reported in one
:class:`~trexsim.errors.ProfileError` (the first 20 in full, then counts per kind);
each line starts with ``file:row:column:``; rows count from 1 with the CSV header as
line 1 (a CSV row's number is its line number, as long as no quoted field spans lines);
in Parquet files rows count data rows from 1.

Rounds get whole Wh from the rounded running integral of the data
(:meth:`FileProfiles.whole_wh`), so no energy is lost or made up by rounding.
Plausibility checks (:mod:`trexsim.data.checks`) warn about unit and timezone mistakes.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trexsim.config.schema import FileProfile
from trexsim.data import checks
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
_PROBLEM_LIMIT = 20  # problems of a file shown in full; the rest are counted
_MARGIN_S = 86_400  # rows within a day of the study period are read and checked


# --------------------------------------------------------------------------- parsed data
@dataclass(frozen=True)
class _Series:
    """One participant's data near the study period, regular in time."""

    start_s: int  # start of the first interval [s since the epoch, UTC]
    interval_s: int  # data interval [s]
    load_wh: np.ndarray  # energy per interval [Wh], (K,)
    gen_wh: np.ndarray  # energy per interval [Wh], (K,)
    rows: np.ndarray  # file row of each interval, (K,)
    data_start_s: int  # the participant's first and last data in the file (for messages) [s, UTC]
    data_end_s: int

    @property
    def end_s(self) -> int:
        return self.start_s + self.interval_s * self.load_wh.size


@dataclass(frozen=True)
class _ParsedFile:
    display: str  # the path as the user wrote it, for messages
    series: dict[str, _Series]  # only the ids that were asked for and found
    id_examples: tuple[str, ...]  # a few ids that are in the file, for messages
    id_column: str
    load_column: str = "consumption_wh"
    generation_column: str | None = None
    naive_times: bool = True  # timestamps without a UTC offset (local times)


@dataclass(frozen=True)
class _ReadOptions:
    """How a file is read (part of the cache key)."""

    timestamp_column: str
    id_column: str
    timezone: str  # of naive timestamps
    marks: str  # "start" or "end"
    dst_slots: str  # "clock" or "fixed"
    window: tuple[int, int] | None  # the study period [s, UTC]: rows within _MARGIN_S of it are read


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


# --------------------------------------------------------------------------- problems
class _Problems:
    """Every problem found in one file, reported together: the first ``limit`` by row in full, then counts.

    Each kind keeps only its first ``limit`` messages (by row), so a file with a million bad
    cells costs a million counts, not a million messages.
    """

    def __init__(self, display: str, limit: int = _PROBLEM_LIMIT):
        self.display, self.limit = display, limit
        self._shown: list[tuple[int, int, str | None, str]] = []  # (row or -1, sequence, column, message)
        self.counts: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, message: str, row: int | None = None, column: str | None = None) -> None:
        self.add_many(kind, np.array([-1 if row is None else row]), column, lambda _: message)

    def add_many(self, kind: str, rows: np.ndarray, column: str | None, message_of) -> None:
        """Problems of one ``kind`` at file ``rows`` (-1: no row); ``message_of(j)`` writes the j-th's text."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        self.counts[kind] = self.counts.get(kind, 0) + int(rows.size)
        for j in np.argsort(rows, kind="stable")[: self.limit]:
            self._shown.append((int(rows[j]), len(self._shown), column, message_of(int(j))))

    def lines(self) -> list[str]:
        shown = sorted(self._shown)[: self.limit]
        return [f"{_where(self.display, None if row < 0 else row, column)}: {message}" for row, _, column, message in shown]

    def error(self) -> ProfileError:
        lines = self.lines()
        n = self.total
        if n == 1:
            text = lines[0]
        else:
            text = f"{self.display}: {n:,} problems\n  " + "\n  ".join(lines)
            if n > len(lines):
                kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(self.counts.items(), key=lambda kv: -kv[1]))
                text += f"\n  ... and {n - len(lines):,} more ({n:,} in all: {kinds})"
        exc = ProfileError(text)
        exc.problems = lines  # type: ignore[attr-defined]
        return exc


def _cell_text(value) -> str:
    """A cell as the user would recognise it: 'N/A' for text, NaN, inf, empty."""
    if value is None or value is pd.NA or value is pd.NaT:
        return "empty"
    if isinstance(value, str):
        return repr(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return repr(str(value))
    if np.isnan(number):
        return "NaN"
    if np.isinf(number):
        return "inf" if number > 0 else "-inf"
    return repr(number)


def _csv_cells(path: Path, lines: set[int], column: str) -> dict[int, str]:
    """The raw text of ``column`` on the given CSV line numbers (header = line 1); for messages only."""
    import csv
    import gzip

    found: dict[int, str] = {}
    if not lines:
        return found
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    last = max(lines)
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            return found
        try:
            col = header.index(column)
        except ValueError:
            return found
        for number, fields in enumerate(reader, start=2):
            if number in lines:
                found[number] = fields[col] if col < len(fields) else ""
            if number >= last:
                break
    return found


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class _Times:
    """Parsed timestamps of the rows: UTC seconds, which are usable, and rows at local times that do not exist."""

    secs: np.ndarray  # [s since the epoch, UTC], int64 (rows)
    ok: np.ndarray  # bool (rows): parsed, whole second, exists
    nonexistent: np.ndarray  # bool (rows): a local time skipped when DST starts (secs: shifted forward)
    extra_of: np.ndarray  # dst_slots 'fixed': rows repeated for the second occurrence of the repeated hour
    extra_secs: np.ndarray  # ... and their UTC seconds
    naive: bool = True  # local times without a UTC offset


def _timestamps_utc_s(raw: pd.Series, rows: np.ndarray, ids: np.ndarray, problems: _Problems, column: str,
                      timezone: str, dst_slots: str) -> _Times:
    """Parse timestamps to UTC epoch seconds [s]; naive ones are local times in ``timezone``.

    In long format every timestamp repeats once per participant, so only the distinct
    values are parsed; ``codes`` map them back to rows. Every bad timestamp is reported.
    """
    n = len(raw)
    none = _Times(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool),
                  np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        index = pd.DatetimeIndex(raw).tz_convert("UTC")
        secs, frac = _seconds(index)
        isna = np.asarray(index.isna())
        frac &= ~isna
        _report_fractions(problems, frac, np.arange(n), index, rows, column)
        _report_empty(problems, isna, rows, column)
        ok = ~isna & ~frac
        return _Times(secs, ok, none.nonexistent, none.extra_of, none.extra_secs, naive=False)
    codes, uniq = pd.factorize(raw)
    empty_rows = codes < 0
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        _report_empty(problems, empty_rows, rows, column)
        return _localize(pd.DatetimeIndex(uniq), codes, rows, ids, problems, column, timezone, dst_slots, ~empty_rows)
    text = pd.Series(np.asarray(uniq, dtype=object)).astype(str).str.strip()
    empty_u = (text == "").to_numpy()
    empty_rows = empty_rows | (empty_u[codes] & (codes >= 0))
    _report_empty(problems, empty_rows, rows, column)
    aware = text.str.contains(_OFFSET_RE, regex=True).to_numpy() & ~empty_u
    naive = ~aware & ~empty_u
    if aware.any() and naive.any():
        row_naive = int(rows[np.argmax(naive[codes] & (codes >= 0))])
        row_aware = int(rows[np.argmax(aware[codes] & (codes >= 0))])
        example = text.iloc[int(np.argmax(naive))]
        problems.add("mixed timestamps", f"timestamp {example!r} has no UTC offset but row {row_aware} has one; use one kind in a file",
                     row_naive, column)
        return none
    if aware.any():
        parsed = pd.to_datetime(text.str.replace(r"\s*UTC$", "Z", regex=True), format="ISO8601", utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    bad_u = parsed.isna().to_numpy() & ~empty_u
    usable = (codes >= 0) & ~empty_rows
    bad_rows = np.flatnonzero(usable & bad_u[np.maximum(codes, 0)])
    problems.add_many("unparsable timestamp", rows[bad_rows], column, lambda j: (
        f"cannot parse timestamp {text.iloc[int(codes[bad_rows[j]])]!r} (use ISO 8601, e.g. '2021-07-01 00:00:00' "
        "or '2021-07-01T06:00:00Z')"))
    usable &= ~bad_u[np.maximum(codes, 0)]
    index = pd.DatetimeIndex(parsed)
    if not aware.any():
        return _localize(index, codes, rows, ids, problems, column, timezone, dst_slots, usable)
    secs_u, frac_u = _seconds(index)
    frac_rows = usable & frac_u[np.maximum(codes, 0)]
    _report_fractions(problems, frac_rows, np.maximum(codes, 0), index, rows, column)
    return _Times(secs_u[np.maximum(codes, 0)], usable & ~frac_rows, none.nonexistent, none.extra_of, none.extra_secs, naive=False)


def _report_empty(problems: _Problems, empty: np.ndarray, rows: np.ndarray, column: str) -> None:
    problems.add_many("empty timestamp", rows[empty], column, lambda j: "empty timestamp")


def _report_fractions(problems: _Problems, frac_rows: np.ndarray, codes: np.ndarray, index: pd.DatetimeIndex,
                      rows: np.ndarray, column: str) -> None:
    where = np.flatnonzero(frac_rows)
    problems.add_many("timestamp not a whole second", rows[where], column,
                      lambda j: f"timestamp {index[codes[where[j]]]} is not a whole second")


def _localize(naive_u: pd.DatetimeIndex, codes: np.ndarray, rows: np.ndarray, ids: np.ndarray, problems: _Problems,
              column: str, timezone: str, dst_slots: str, usable: np.ndarray) -> _Times:
    """Distinct local wall-clock times ``naive_u``, mapped to rows by ``codes``, to UTC seconds [s].

    The hour repeated when DST ends is told apart by order: per participant, in file
    order, the first occurrence is daylight time and the second standard time. With
    ``dst_slots='fixed'`` a repeated local time that a participant has only once serves
    both occurrences (an extra row), and local times skipped when DST starts are marked
    (their values must be zero; the caller drops them).
    """
    import zoneinfo

    n = codes.size
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        problems.add("unknown timezone", f"unknown timezone {timezone!r} for timestamps without an offset (use an IANA name "
                     "such as 'America/Edmonton')", None, column)
        return _Times(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool),
                      np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    safe = np.maximum(codes, 0)
    local = naive_u.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    missing = np.asarray(local.isna())
    secs_u, frac_u = _seconds(local.tz_convert("UTC"))
    secs = secs_u[safe]
    nonexistent = np.zeros(n, dtype=bool)
    extra_of = np.zeros(0, dtype=np.int64)
    extra_secs = np.zeros(0, dtype=np.int64)
    if missing.any():
        # NaT means ambiguous (fall back: the hour happens twice) or nonexistent (spring forward)
        probe = naive_u[missing].tz_localize(timezone, ambiguous=np.ones(int(missing.sum()), dtype=bool), nonexistent="NaT")
        nonexistent_u = np.zeros_like(missing)
        nonexistent_u[np.flatnonzero(missing)] = np.asarray(probe.isna())
        ambiguous_u = missing & ~nonexistent_u
        if nonexistent_u.any():
            forward = naive_u[nonexistent_u].tz_localize(timezone, nonexistent="shift_forward").tz_convert("UTC")
            secs_u[np.flatnonzero(nonexistent_u)], _ = _seconds(forward)
            secs = secs_u[safe]
            nonexistent = usable & nonexistent_u[safe]
        on_rows = np.flatnonzero(usable & ambiguous_u[safe])
        if on_rows.size:
            amb = pd.DataFrame({"id": ids[on_rows], "code": codes[on_rows]})
            first = amb.groupby(["id", "code"], sort=False).cumcount().to_numpy() == 0
            resolved = naive_u[codes[on_rows]].tz_localize(timezone, ambiguous=first)
            secs[on_rows], _ = _seconds(resolved.tz_convert("UTC"))
            if dst_slots == "fixed":
                once = amb.groupby(["id", "code"], sort=False)["code"].transform("size").to_numpy() == 1
                extra_of = on_rows[once]
                second = naive_u[codes[extra_of]].tz_localize(timezone, ambiguous=np.zeros(extra_of.size, dtype=bool))
                extra_secs, _ = _seconds(second.tz_convert("UTC"))
        frac_u = frac_u & ~missing
    frac_rows = usable & frac_u[safe]
    _report_fractions(problems, frac_rows, safe, naive_u, rows, column)
    return _Times(secs, usable & ~frac_rows & ~nonexistent, nonexistent, extra_of, extra_secs)


def _seconds(index: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds of a UTC index, and which entries are not whole seconds."""
    ns = index.as_unit("ns").asi8
    return ns // 1_000_000_000, ns % 1_000_000_000 != 0


@dataclass(frozen=True)
class _Values:
    """An energy column: numbers (NaN where unusable) and what is wrong where."""

    values: np.ndarray  # float64 (rows)
    bad: np.ndarray  # bool (rows): not a finite, non-negative number
    kind: np.ndarray  # object (rows): the problem kind where bad


def _energy_values(raw: pd.Series) -> _Values:
    """Numbers of an energy column, with every text, NaN, infinite and negative cell marked."""
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    kind = np.full(values.size, None, dtype=object)
    nonfinite = ~np.isfinite(values)
    if nonfinite.any():
        where = np.flatnonzero(nonfinite)
        originals = raw.iloc[where].to_numpy(dtype=object)
        for j, original in zip(where, originals):
            if np.isinf(values[j]):
                kind[j] = "infinite energy"
            elif isinstance(original, str) and original.strip() not in _NA_STRINGS and not _is_nan_text(original):
                kind[j] = "not a number"
            else:
                kind[j] = "missing or NaN energy"
    negative = values < 0
    kind[negative] = "negative energy"
    return _Values(values, nonfinite | negative, kind)


def _is_nan_text(text: str) -> bool:
    try:
        return bool(np.isnan(float(text)))
    except ValueError:
        return False


def _report_values(problems: _Problems, vals: _Values, raw: pd.Series, rows: np.ndarray, pick: np.ndarray, column: str,
                   csv_path: Path | None) -> None:
    """Report the bad cells among rows ``pick`` (indices), showing each cell as written."""
    where = pick[vals.bad[pick]]
    if where.size == 0:
        return
    texts: dict[int, str] = {}
    if csv_path is not None:  # the CSV reader turned '', 'NA', 'nan' ... into NaN: read the cells' text back
        nan_like = where[vals.kind[where] != "negative energy"]
        first = nan_like[np.argsort(rows[nan_like], kind="stable")[: _PROBLEM_LIMIT]]
        texts = _csv_cells(csv_path, {int(r) for r in rows[first]}, column)

    for kind in ("missing or NaN energy", "not a number", "infinite energy", "negative energy"):
        sel = where[vals.kind[where] == kind]

        def message(j, sel=sel, kind=kind):
            i = int(sel[j])
            if kind == "negative energy":
                return f"negative energy {float(vals.values[i])!r}"
            cell = repr(texts[int(rows[i])]) if int(rows[i]) in texts else _cell_text(raw.iloc[i])
            if kind == "not a number":
                return f"not a number {cell}"
            return f"{kind} (cell {cell})"

        problems.add_many(kind, rows[sel], column, message)


def _clock_change(timezone: str, a_s: int, b_s: int) -> tuple[int, float, float] | None:
    """The first change of UTC offset in ``timezone`` between instants ``a_s`` and ``b_s`` [s]: (instant, before, after)."""
    def offset(t: int) -> float:
        return pd.Timestamp(int(t), unit="s", tz="UTC").tz_convert(timezone).utcoffset().total_seconds()

    try:
        before, after = offset(a_s), offset(b_s)
    except Exception:
        return None
    if before == after:
        return None
    lo, hi = int(a_s), int(b_s)
    while hi - lo > 1:  # the offset changes once in a short span: bisect to the second
        mid = (lo + hi) // 2
        if offset(mid) == before:
            lo = mid
        else:
            hi = mid
    return hi, before, after


def _dst_note(timezone: str, a_s: int, b_s: int, gap: bool) -> str:
    """What a gap (or duplicate) between ``a_s`` and ``b_s`` has to do with a clock change, if anything."""
    change = _clock_change(timezone, a_s, b_s)
    if change is None:
        return ""
    at, before, after = change
    local_before = pd.Timestamp(at + int(before), unit="s")
    local_after = pd.Timestamp(at + int(after), unit="s")
    day = local_after.strftime("%Y-%m-%d")
    clocks = f"clocks go from {local_before.strftime('%H:%M')} to {local_after.strftime('%H:%M')} on {day}"
    if after < before:  # DST ends
        if gap:
            return (f"; this is the hour repeated when DST ends in {timezone} ({clocks}), which the file has once. "
                    "If every day of the file has the same slots (e.g. 48 half-hours), set the profile's "
                    "\"dst_slots\": \"fixed\"")
        return f"; at the clock change when DST ends in {timezone} ({clocks})"
    return f"; at the clock change when DST starts in {timezone} ({clocks})"


def _build_series(
    t_s: np.ndarray, rows: np.ndarray, load: np.ndarray, gen: np.ndarray, pid: str, problems: _Problems, ts_col: str,
    load_col: str, gen_col: str | None, marks: str, timezone: str, window: tuple[int, int] | None,
    value_check,
) -> _Series | None:
    """Check one participant's rows near the study period: values, duplicates, gaps, mixed intervals; convert to Wh.

    ``value_check(index_array)`` notes the given rows for the value checks and says whether
    any of their cells is bad. Returns None when a problem was found.
    """
    n_before = problems.total
    order = np.lexsort((rows, t_s))
    t_s, rows, load, gen = t_s[order], rows[order], load[order], gen[order]
    if t_s.size < 2:
        if t_s.size:
            problems.add("single row", f"participant {pid!r} has only one row; at least two are needed to infer the interval",
                         int(rows[0]), ts_col)
        value_check(order)
        return None
    d = np.diff(t_s)
    positive = d[d > 0]
    if positive.size and (positive == positive[0]).all():  # the common case: one interval throughout
        steps, counts = positive[:1], np.array([positive.size])
    else:
        steps, counts = np.unique(positive, return_counts=True)
    if steps.size == 0:
        problems.add("duplicate row", f"participant {pid!r}: every row has the same timestamp", int(rows[1]), ts_col)
        return None
    interval = int(steps[np.argmax(counts)])  # the most common step; ties go to the shortest
    starts = t_s - (interval if marks == "end" else 0)
    first_s, end_s = int(starts[0]), int(starts[-1]) + interval
    if window is not None:  # only the rows the study needs (and a margin) are checked and kept
        keep = (starts + interval > window[0] - _MARGIN_S) & (starts < window[1] + _MARGIN_S)
        sel = np.flatnonzero(keep)
        t_s, rows, load, gen, starts, order = t_s[sel], rows[sel], load[sel], gen[sel], starts[sel], order[sel]
    bad_values = value_check(order)
    if t_s.size == 0:
        return None if bad_values else _Series(first_s, interval, np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), first_s, end_s)
    d = np.diff(t_s)
    dup = np.flatnonzero(d == 0)
    problems.add_many("duplicate row", rows[dup + 1], ts_col, lambda j: (
        f"duplicate row for participant {pid!r} at {_fmt_time(int(t_s[dup[j]]), timezone)} (same as row "
        f"{min(int(rows[dup[j]]), int(rows[dup[j] + 1]))})"
        + _dst_note(timezone, int(t_s[dup[j]]) - interval, int(t_s[dup[j]]) + interval, gap=False)))
    gaps = np.flatnonzero((d > interval) & (d % interval == 0))
    problems.add_many("gap", rows[gaps + 1], ts_col, lambda j: (
        f"gap for participant {pid!r}: no data from {_fmt_time(int(t_s[gaps[j]]) + interval, timezone)} "
        f"to {_fmt_time(int(t_s[gaps[j] + 1]), timezone)} (interval {interval} s)"
        + _dst_note(timezone, int(t_s[gaps[j]]), int(t_s[gaps[j] + 1]), gap=True)))
    odd = np.flatnonzero((d > 0) & (d % interval != 0))
    problems.add_many("irregular interval", rows[odd + 1], ts_col, lambda j: (
        f"irregular timestamps for participant {pid!r}: {int(d[odd[j]])} s after row {int(rows[odd[j]])}, "
        f"while most rows are {interval} s apart (mixed intervals)"
        + _dst_note(timezone, int(t_s[odd[j]]), int(t_s[odd[j] + 1]), gap=False)))
    if bad_values or problems.total > n_before:
        return None
    is_power, factor = _LOAD_COLUMNS[load_col]
    load_wh = load * factor * (interval / 3600.0 if is_power else 1.0)
    if gen_col is None:
        gen_wh = np.zeros_like(load_wh)
    else:
        is_power, factor = _GEN_COLUMNS[gen_col]
        gen_wh = gen * factor * (interval / 3600.0 if is_power else 1.0)
    return _Series(int(starts[0]), interval, load_wh, gen_wh, rows, first_s, end_s)


def _parse_file(path: Path, display: str, opts: _ReadOptions, wanted: frozenset[str]) -> _ParsedFile:
    kind = _suffix_kind(path, display)
    reader = _read_csv if kind == "csv" else _read_parquet
    frames, examples, load_col, gen_col = reader(path, display, opts.timestamp_column, opts.id_column, set(wanted))
    id_examples = tuple(examples)
    if not frames:
        return _ParsedFile(display, {}, id_examples, opts.id_column, load_col, gen_col)
    data = pd.concat(frames, ignore_index=True)
    rows = data["_row"].to_numpy(dtype=np.int64)
    ids = data["_id"].to_numpy(dtype=object)
    problems = _Problems(display)
    csv_path = path if kind == "csv" else None
    load_v = _energy_values(data[load_col])
    gen_v = _energy_values(data[gen_col]) if gen_col else _Values(np.zeros(len(data)), np.zeros(len(data), dtype=bool),
                                                                   np.full(len(data), None, dtype=object))
    ts_col = opts.timestamp_column
    times = _timestamps_utc_s(data[ts_col].reset_index(drop=True), rows, ids, problems, ts_col, opts.timezone, opts.dst_slots)

    checked = np.zeros(rows.size, dtype=bool)  # rows whose cells are checked (reported together, after the loop)

    # rows at local times that do not exist: a problem, unless dst_slots 'fixed' and they hold zeros
    skipped = np.flatnonzero(times.nonexistent)
    if skipped.size:
        near = skipped
        if opts.window is not None:
            near = skipped[(times.secs[skipped] > opts.window[0] - _MARGIN_S) & (times.secs[skipped] < opts.window[1] + _MARGIN_S)]
        naive_text = data[ts_col].reset_index(drop=True)
        if opts.dst_slots == "fixed":
            for vals, col in ((load_v, load_col), (gen_v, gen_col)):
                if col is None:
                    continue
                held = near[~vals.bad[near] & (vals.values[near] != 0)]
                problems.add_many("energy at a local time that does not exist", rows[held], col, lambda j, held=held, vals=vals: (
                    f"local time {_naive_text(naive_text.iloc[int(held[j])])} does not exist in {opts.timezone} (DST "
                    f"starts) but holds {float(vals.values[held[j]])!r}; with \"dst_slots\": \"fixed\" these slots must be zero"))
        else:
            zero = ~load_v.bad & (load_v.values == 0) & ~gen_v.bad & (gen_v.values == 0)
            problems.add_many("local time does not exist", rows[near], ts_col, lambda j: (
                f"local time {_naive_text(naive_text.iloc[int(near[j])])} does not exist in {opts.timezone} (clocks "
                "jump forward when DST starts)"
                + ("; it holds zero: if every day of the file has the same slots (e.g. 48 half-hours), set the "
                   "profile's \"dst_slots\": \"fixed\"" if zero[near[j]] else "")))
    usable = times.ok
    t_s, load, gen = times.secs, load_v.values, gen_v.values
    if times.extra_of.size:  # dst_slots 'fixed': the repeated hour's slots serve its second occurrence too
        extra = times.extra_of
        t_s = np.concatenate([t_s, times.extra_secs])
        rows_all = np.concatenate([rows, rows[extra]])
        ids_all = np.concatenate([ids, ids[extra]])
        load, gen = np.concatenate([load, load[extra]]), np.concatenate([gen, gen[extra]])
        usable = np.concatenate([usable, usable[extra]])
        source = np.concatenate([np.arange(rows.size), extra])
    else:
        rows_all, ids_all, source = rows, ids, np.arange(rows.size)
    series: dict[str, _Series] = {}
    codes, uniques = pd.factorize(ids_all)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for group in np.split(order, bounds):  # per participant, at load time only
        pid = str(uniques[codes[group[0]]])
        good = group[usable[group]]
        unplaced = group[~usable[group] & (source[group] < rows.size)]
        unplaced = unplaced[~times.nonexistent[source[unplaced]]]

        def check(pick: np.ndarray, good=good, unplaced=unplaced) -> bool:
            # the cells of the rows in use, and of rows whose timestamp is bad (they cannot be placed)
            chosen = np.concatenate([source[good[pick]], source[unplaced]])
            checked[chosen] = True
            return bool(load_v.bad[chosen].any() or gen_v.bad[chosen].any())

        built = _build_series(t_s[good], rows_all[good], load[good], gen[good], pid, problems, ts_col, load_col, gen_col,
                              opts.marks, opts.timezone, opts.window, check)
        if built is not None:
            series[pid] = built
    if (checked & (load_v.bad | gen_v.bad)).any():
        chosen = np.flatnonzero(checked)
        _report_values(problems, load_v, data[load_col], rows, chosen, load_col, csv_path)
        if gen_col:
            _report_values(problems, gen_v, data[gen_col], rows, chosen, gen_col, csv_path)
    if problems:
        raise problems.error()
    return _ParsedFile(display, series, id_examples, opts.id_column, load_col, gen_col, times.naive)


def _naive_text(value) -> str:
    return str(pd.Timestamp(value)) if not isinstance(value, str) else value.strip()


def _load(path: Path, display: str, opts: _ReadOptions, wanted: frozenset[str]) -> _ParsedFile:
    """Parse a file once per (path, modification time, options, ids) and remember it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise _fail(display, f"file not found ({path})") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size, opts, wanted)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    parsed = _parse_file(path, display, opts, wanted)
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
    Whole Wh per round are the differences of the rounded running integral, so rounding
    never adds up: every span of rounds gets its energy to within 1 Wh.
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
            out[:, cols] = np.diff(self._linear_at(x, cols), axis=0)
        return np.maximum(out, 0.0)

    def whole_wh(self, bounds_s: np.ndarray, round_s: int) -> np.ndarray:
        """Whole Wh between consecutive ``bounds_s`` [s, UTC], int64 ``(len(bounds_s) - 1, 2n)``.

        The running integral from the first data interval is rounded (half to even) at
        each bound and differenced: a source interval whose bounds are rounds gets its
        energy to within 1 Wh (exactly when the data are whole Wh), any span of rounds
        too, and the result does not depend on how the rounds are split into chunks.
        """
        x = bounds_s - self.start_s
        at = self._hold_at(x)
        if self.interval_s > round_s and self.interpolate.any():
            cols = np.flatnonzero(self.interpolate)
            at[:, cols] = self._linear_at(x, cols)
        np.maximum.accumulate(at, axis=0, out=at)  # float noise never makes a negative round
        return np.diff(np.rint(at), axis=0).astype(np.int64)

    def _hold_at(self, x: np.ndarray) -> np.ndarray:
        """Energy from the start of the data to each of ``x`` [s after the start], power held per interval [Wh]."""
        idx = np.minimum(x // self.interval_s, self.k - 1)
        into = x - idx * self.interval_s  # seconds into interval idx (== interval at the very end)
        return self.cum[idx] + self.energy[idx] * (into / self.interval_s)[:, None]

    def _hold(self, x: np.ndarray) -> np.ndarray:
        out = np.diff(self._hold_at(x), axis=0)
        # a round inside one data interval gets that interval's share directly, free of the
        # round-off of differencing cumulative sums (hourly kWh held over minutes is exact)
        first = x[:-1] // self.interval_s
        last = (x[1:] - 1) // self.interval_s  # interval holding the round's last second
        same = first == last
        if same.any():
            share = (x[1:][same] - x[:-1][same]) / self.interval_s
            out[same] = self.energy[first[same]] * share[:, None]
        return out

    def _linear_at(self, x: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Integral [Wh] to each of ``x`` of power linear between interval midpoints (held over the outer half intervals)."""
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
        return at / 3600.0


# --------------------------------------------------------------------------- source
@dataclass
class _Member:
    pid: str
    spec: FileProfile
    key: tuple
    file_id: str
    parsed: _ParsedFile | None = None
    series: _Series | None = None


def _read_options(spec: FileProfile, clock: Clock) -> _ReadOptions:
    window = (clock.start_utc_s, clock.start_utc_s + clock.rounds_per_episode * clock.interval_s)
    return _ReadOptions(spec.timestamp_column, spec.id_column, spec.timezone or clock.timezone, spec.timestamp_marks,
                        spec.dst_slots, window)


def _resolve(participant_ids: list[str], specs: list[FileProfile], clock: Clock) -> tuple[list[_Member], dict[str, ProfileError]]:
    """Read every file once (members reading one file with the same options share one parse) and find each
    member's series; return the members and, per file, its problems as one error."""
    requests: dict[tuple, set[str]] = {}
    members: list[_Member] = []
    for pid, spec in zip(participant_ids, specs):
        if getattr(spec, "type", None) != "file":
            raise ProfileError(f"participant {pid!r}: FileProfiles needs a 'file' profile, got {getattr(spec, 'type', spec)!r}")
        path = Path(os.path.expanduser(spec.path))
        key = (spec.path, path.resolve() if path.exists() else path, _read_options(spec, clock))
        file_id = spec.id if spec.id is not None else pid
        requests.setdefault(key, set()).add(file_id)
        members.append(_Member(pid, spec, key, file_id))
    errors: dict[str, ProfileError] = {}
    parsed: dict[tuple, _ParsedFile] = {}
    for key, ids in requests.items():
        try:
            parsed[key] = _load(key[1], key[0], key[2], frozenset(ids))
        except ProfileError as exc:
            errors.setdefault(key[0], exc)
    missing: dict[str, _Problems] = {}
    for m in members:
        pf = parsed.get(m.key)
        if pf is None:
            continue
        m.parsed = pf
        if m.file_id not in pf.series:
            some = ", ".join(repr(i) for i in pf.id_examples[:5]) or "none"
            hint = "" if m.spec.id is not None else " (set the profile's 'id' to pick one)"
            missing.setdefault(pf.display, _Problems(pf.display)).add(
                "id not in the file", f"participant {m.pid!r}: id {m.file_id!r} is not in the file; ids there include {some}{hint}",
                None, pf.id_column)
            continue
        m.series = pf.series[m.file_id]
    for display, problems in missing.items():
        errors.setdefault(display, problems.error())
    return members, errors


def _combined(errors: dict[str, ProfileError]) -> ProfileError:
    if len(errors) == 1:
        return next(iter(errors.values()))
    exc = ProfileError("\n".join(str(e) for e in errors.values()))
    exc.problems = [line for e in errors.values() for line in getattr(e, "problems", [str(e)])]  # type: ignore[attr-defined]
    return exc


def _study_slice(series: _Series, clock: Clock) -> slice:
    """The data intervals that overlap the study period."""
    start = clock.start_utc_s
    end = start + clock.rounds_per_episode * clock.interval_s
    d = series.interval_s
    i0 = max(0, (start - series.start_s) // d)
    i1 = min(series.load_wh.size, -(-(end - series.start_s) // d))
    return slice(int(i0), int(max(i0, i1)))


def _plausibility(m: _Member, clock: Clock) -> tuple[list[str], dict]:
    """Plausibility messages (``file:row:column: ...``) and figures of one member over the study period."""
    s, pf, spec = m.series, m.parsed, m.spec
    part = _study_slice(s, clock)
    load = s.load_wh[part] * spec.load_scale
    gen = s.gen_wh[part] * spec.generation_scale
    site = checks.site_for(clock.timezone, spec.latitude, spec.longitude)
    rows = s.rows[part]
    found, stats = checks.plausibility(
        s.start_s + part.start * s.interval_s, s.interval_s, load, gen, site, clock.timezone, spec.timestamp_marks,
        lambda t: _fmt_time(t, clock.timezone), lambda i: int(rows[i]) if 0 <= i < rows.size else None,
        naive=pf.naive_times)
    scaled = [w for w, x in (("load_scale", spec.load_scale), ("generation_scale", spec.generation_scale)) if x != 1]
    note = f" (with {' and '.join(scaled)})" if scaled else ""
    who = f"participant {m.pid!r}" + (f" (id {m.file_id!r})" if m.file_id != m.pid else "")
    messages = []
    for kind, row, text in found:  # a row names the participant; without one, say who
        column = pf.load_column if kind == "load" else pf.generation_column
        messages.append(f"{_where(pf.display, row, column)}: {'' if row is not None else who + ': '}{text}{note}")
    return messages, stats


def _lines_error(display: str, lines: list[str]) -> ProfileError:
    text = lines[0] if len(lines) == 1 else f"{display}: {len(lines)} problems\n  " + "\n  ".join(lines)
    exc = ProfileError(text)
    exc.problems = list(lines)  # type: ignore[attr-defined]
    return exc


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
        Round timing and the study timezone (used for timestamps without an offset). Only
        the rows within a day of the clock's period are read and checked.
    seed : int
        Unused (imported data are not random); kept for the common interface.

    Raises
    ------
    ProfileError
        For missing or malformed files, ids not in the file, or irregular data: every
        problem of every file in one message (up to 20 per file, then counts); also for
        implausible data of members whose ``plausibility`` is ``"error"``.

    Warns
    -----
    ProfileWarning
        Implausible data (:mod:`trexsim.data.checks`) of members whose ``plausibility``
        is ``"warn"`` (the default).
    """

    def __init__(self, participant_ids: list[str], specs: list[FileProfile], clock: Clock, seed: int):
        super().__init__(participant_ids, specs, clock, seed)
        n = len(self.specs)
        members, errors = _resolve(self.participant_ids, self.specs, clock)
        if errors:
            raise _combined(errors)
        refused: dict[str, list[str]] = {}
        for m in members:
            if m.spec.plausibility == "off":
                continue
            messages, _ = _plausibility(m, clock)
            if m.spec.plausibility == "error":
                if messages:
                    refused.setdefault(m.parsed.display, []).extend(messages)
            else:
                for text in messages:
                    warnings.warn(checks.ProfileWarning(text), stacklevel=2)
        if refused:
            raise _combined({display: _lines_error(display, lines) for display, lines in refused.items() if lines})
        self._series: list[_Series] = [m.series for m in members]
        self._display: list[str] = [m.parsed.display for m in members]
        self._file_ids: list[str] = [m.file_id for m in members]

        load_scale = np.array([s.load_scale for s in self.specs], dtype=np.float64)
        gen_scale = np.array([s.generation_scale for s in self.specs], dtype=np.float64)
        interpolate = np.array([s.upsample == "interpolate" for s in self.specs])
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, s in enumerate(self._series):
            groups.setdefault((s.start_s, s.interval_s, s.load_wh.size), []).append(i)
        self._timelines: list[tuple[np.ndarray, _Timeline]] = []
        for (start, interval, _), idx_list in groups.items():
            idx = np.asarray(idx_list, dtype=np.intp)
            load = np.stack([self._series[i].load_wh for i in idx_list], axis=1) * load_scale[idx]
            gen = np.stack([self._series[i].gen_wh for i in idx_list], axis=1) * gen_scale[idx]
            self._timelines.append((idx, _Timeline(start, interval, load, gen, interpolate[idx])))
        self._n = n

    def check_coverage(self, n_rounds: int) -> None:
        self._bounds(0, n_rounds)

    def _bounds(self, start_round: int, n_rounds: int) -> np.ndarray:
        bounds = self.clock.start_utc_s + (int(start_round) + np.arange(n_rounds + 1, dtype=np.int64)) * self.clock.interval_s
        for idx, tl in self._timelines:
            if bounds[0] < tl.start_s or bounds[-1] > tl.end_s:
                self._coverage_error(int(idx[0]), int(bounds[0]), int(bounds[-1]), tl)
        return bounds

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
        bounds = self._bounds(start_round, n_rounds)
        for idx, tl in self._timelines:
            both = tl.energy_wh(bounds, self.clock.interval_s)
            load[:, idx] = both[:, : idx.size]
            gen[:, idx] = both[:, idx.size :]
        return load, gen

    def whole_wh(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        """Load and generation per round in whole Wh, int64 ``(n_rounds, n_members)``.

        Rounded on the running integral of the data (see :meth:`_Timeline.whole_wh`): every
        source interval's energy is delivered to the Wh, the same for any chunking.
        """
        n_rounds = max(int(n_rounds), 0)
        load = np.zeros((n_rounds, self._n), dtype=np.int64)
        gen = np.zeros((n_rounds, self._n), dtype=np.int64)
        if n_rounds == 0:
            return load, gen
        bounds = self._bounds(start_round, n_rounds)
        for idx, tl in self._timelines:
            both = tl.whole_wh(bounds, self.clock.interval_s)
            load[:, idx] = both[:, : idx.size]
            gen[:, idx] = both[:, idx.size :]
        return load, gen

    def _coverage_error(self, member: int, first_s: int, end_s: int, tl: _Timeline) -> None:
        raise _fail(self._display[member], _coverage_text(self.participant_ids[member], self._file_ids[member],
                                                          self._series[member], first_s, end_s, tl.start_s, tl.end_s,
                                                          self.clock.timezone))


def _coverage_text(pid: str, file_id: str, series: _Series, first_s: int, end_s: int, have_start: int, have_end: int,
                   tz: str) -> str:
    missing = first_s if first_s < have_start else max(first_s, have_end)
    inside = series.data_start_s <= missing < series.data_end_s
    return (f"participant {pid!r} (id {file_id!r}) has no data at {_fmt_time(missing, tz)}; the file covers "
            f"{_fmt_time(series.data_start_s, tz)} to {_fmt_time(series.data_end_s, tz)}"
            + (" (only rows within a day of the study period are read)" if inside else "")
            + ". Set study.start_datetime (and days) inside the data")


# --------------------------------------------------------------------------- checking a config's files
@dataclass
class ProfileReport:
    """What :func:`check_file_profiles` found: errors, warnings and each member's figures."""

    errors: list[str]
    warnings: list[str]
    members: list[dict]

    def summary_lines(self) -> list[str]:
        """One line per member: yearly energy and peak power, the PV centroid."""
        lines = []
        for m in self.members:
            st = m["stats"]
            if st is None:
                continue
            text = f"{m['participant']}: consumption "
            text += (f"{st['annual_load_kwh']:,.0f} kWh a year ({st['load_kwh']:,.1f} kWh over the study)"
                     if st["annual_load_kwh"] is not None else f"{st['load_kwh']:,.1f} kWh over the study")
            text += f", peak {st['peak_load_kw']:,.1f} kW"
            if st["generation_kwh"] > 0:
                text += "; generation " + (f"{st['annual_generation_kwh']:,.0f} kWh a year"
                                           if st["annual_generation_kwh"] is not None else f"{st['generation_kwh']:,.1f} kWh")
                text += f", peak {st['peak_generation_kw']:,.1f} kW"
                if st["pv_centroid_min"] is not None:
                    c = st["pv_centroid_min"]
                    text += f", centroid {abs(c):.0f} min {'after' if c >= 0 else 'before'} solar noon"
            lines.append(text)
        return lines


def check_file_profiles(participant_ids: list[str], specs: list[FileProfile], clock: Clock) -> ProfileReport:
    """Read and check every file profile as a run would, without stopping at the first problem.

    Every file is parsed (every problem of a file in one message), every member's id is
    looked up, the whole study period must lie inside each member's data, and the
    plausibility checks run (their messages are errors for members with
    ``plausibility: "error"``, else warnings).

    Parameters
    ----------
    participant_ids : list of str
        Ids of the members with a ``file`` profile.
    specs : list of FileProfile
        Their profiles.
    clock : Clock
        The study's rounds and timezone.

    Returns
    -------
    ProfileReport
    """
    members, errors = _resolve(participant_ids, specs, clock)
    error_lines = [str(e) for e in errors.values()]
    warning_lines: list[str] = []
    rows = []
    end = clock.start_utc_s + clock.rounds_per_episode * clock.interval_s
    for m in members:
        entry = {"participant": m.pid, "file": m.spec.path, "stats": None}
        rows.append(entry)
        if m.series is None:
            continue
        s = m.series
        have_end = s.start_s + s.interval_s * s.load_wh.size
        if clock.start_utc_s < s.start_s or end > have_end:
            error_lines.append(f"{m.parsed.display}: " + _coverage_text(m.pid, m.file_id, s, clock.start_utc_s, end,
                                                                       s.start_s, have_end, clock.timezone))
            continue
        messages, stats = _plausibility(m, clock)
        part = _study_slice(s, clock)
        stats["load_kwh"] = float(s.load_wh[part].sum()) * m.spec.load_scale / 1000.0
        stats["generation_kwh"] = float(s.gen_wh[part].sum()) * m.spec.generation_scale / 1000.0
        entry["stats"] = stats
        if m.spec.plausibility == "error":
            error_lines.extend(messages)
        elif m.spec.plausibility == "warn":
            warning_lines.extend(messages)
    return ProfileReport(error_lines, warning_lines, rows)


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


__all__ = ["FileProfiles", "ProfileReport", "check_file_profiles", "clear_cache", "convert_citylearn"]
