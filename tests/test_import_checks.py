"""Imported data (issue 12, items 9-12): energy kept to the Wh, plausibility, one-pass reports, validate."""

from __future__ import annotations

import datetime as dt
import json
import re
import warnings
import zoneinfo
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trexsim.cli import app
from trexsim.config.schema import FileProfile, FlatProfile
from trexsim.data import importer
from trexsim.data.checks import ProfileWarning
from trexsim.data.importer import FileProfiles
from trexsim.data.profiles import Clock, ProfileSet
from trexsim.errors import ProfileError

runner = CliRunner()


def make_clock(local: str, tz: str = "America/Edmonton", interval_s: int = 60, rounds: int = 1440) -> Clock:
    start = int(dt.datetime.fromisoformat(local).replace(tzinfo=zoneinfo.ZoneInfo(tz)).timestamp())
    return Clock(start_utc_s=start, interval_s=interval_s, rounds_per_episode=rounds, timezone=tz)


def whole_wh(path: Path, clock: Clock, ids=("h1",), chunk_rounds: int = 1440, **kw):
    specs = [FileProfile(type="file", path=str(path), id=i, **kw) for i in ids]
    return ProfileSet(list(ids), specs, clock, 0, chunk_rounds=chunk_rounds)


def write_rows(path: Path, start: str, step_min: int, columns: dict[str, list], ids=("h1",), fmt=None) -> Path:
    """A long-format CSV: ``columns`` maps column name -> values per time step (same for every id)."""
    t0 = pd.Timestamp(start)
    n = len(next(iter(columns.values())))
    lines = ["timestamp,participant_id," + ",".join(columns)]
    for i in range(n):
        stamp = (t0 + pd.Timedelta(minutes=step_min * i)) if fmt is None else fmt(i)
        text = stamp if isinstance(stamp, str) else stamp.strftime("%Y-%m-%d %H:%M:%S")
        for pid in ids:
            lines.append(f"{text},{pid}," + ",".join(str(columns[c][i]) for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True)
def _fresh_cache():
    importer.clear_cache()
    yield
    importer.clear_cache()


# =========================================================================== item 9: energy to the Wh
# a small PV system on a winter day, half-hourly, whole Wh per half-hour: 890 Wh
SMALL_PV_WH = [0] * 16 + [4, 12, 25, 41, 58, 74, 87, 95, 98, 95, 87, 74, 58, 41, 25, 12, 4] + [0] * 15


def test_small_pv_half_hours_are_delivered_to_the_wh(tmp_path):
    path = write_rows(tmp_path / "pv.csv", "2021-01-15 00:00:00", 30,
                      {"consumption_wh": [100] * 48, "generation_wh": SMALL_PV_WH})
    profiles = whole_wh(path, make_clock("2021-01-15 00:00:00"), plausibility="off")  # a hand-made shape, not sunlight
    load, gen = profiles.energy_wh(0, 1440)
    assert load.dtype == np.int64 and gen.dtype == np.int64
    # rounding each minute on its own gave 30 * rint(v / 30): 810 of the 890 Wh (4, 12 and 25 Wh vanished)
    assert int(gen.sum()) == 890 == sum(SMALL_PV_WH)
    assert gen[:, 0].reshape(48, 30).sum(axis=1).tolist() == SMALL_PV_WH
    assert load[:, 0].reshape(48, 30).sum(axis=1).tolist() == [100] * 48
    # 4 Wh over the 30 minutes of 08:00-08:30: running sum m * 4 / 30 rounded (half to even) then differenced
    assert np.flatnonzero(gen[480:510, 0]).tolist() == [3, 11, 18, 26]
    # 100 Wh per half-hour = 3.33 Wh a minute: 3, 3, 4, 3, 3, 4, ... and never 3 every minute (90 Wh)
    assert load[:6, 0].tolist() == [3, 4, 3, 3, 4, 3]


def test_whole_wh_do_not_depend_on_chunks(tmp_path):
    rng = np.random.default_rng(3)
    kwh = rng.uniform(0, 0.05, size=96).round(4).tolist()
    path = write_rows(tmp_path / "p.csv", "2021-07-01 00:00:00", 30, {"consumption_kwh": kwh, "generation_kwh": kwh[::-1]})
    clock = make_clock("2021-07-01 00:00:00", rounds=2 * 1440)
    whole = whole_wh(path, clock, plausibility="off").energy_wh(0, 2880)  # random numbers, not sunlight
    for profiles in (whole_wh(path, clock, chunk_rounds=7, plausibility="off"), whole_wh(path, clock, plausibility="off")):
        rows = [profiles.round_wh(k) for k in range(2880)]
        np.testing.assert_array_equal(np.array([r[0] for r in rows]), whole[0])
        np.testing.assert_array_equal(np.array([r[1] for r in rows]), whole[1])
    profiles = whole_wh(path, clock, plausibility="off")
    parts = np.concatenate([profiles.energy_wh(0, 1001)[0], profiles.energy_wh(1001, 1879)[0]])
    np.testing.assert_array_equal(parts, whole[0])
    # 0.0123 kWh = 12.3 Wh per half-hour: each half-hour within 1 Wh, the two days within 0.5 Wh
    per_half_hour = whole[0][:, 0].reshape(96, 30).sum(axis=1)
    assert np.abs(per_half_hour - np.array(kwh) * 1000).max() < 1.0
    assert abs(int(whole[0].sum()) - sum(kwh) * 1000) <= 0.5


@pytest.mark.parametrize("upsample", ["hold", "interpolate"])
def test_every_resampling_mode_keeps_the_energy(tmp_path, upsample):
    kwh = [0.0004, 0.0132, 0.0267, 0.0089, 0.0002, 0.0472, 0.0011, 0.0]  # 97.7 Wh in 8 hours
    path = write_rows(tmp_path / "h.csv", "2021-07-01 00:00:00", 60, {"consumption_kwh": kwh})
    load, _ = whole_wh(path, make_clock("2021-07-01 00:00:00", rounds=480), upsample=upsample).energy_wh(0, 480)
    assert int(load.sum()) == 98  # rint(97.7); rounding each minute on its own gave 60 (hold: only 47.2 Wh / 60 -> 1)
    if upsample == "hold":
        # running sums at the hours 0.4, 13.6, 40.3, 49.2, 49.4, 96.6, 97.7, 97.7 rounded, then differenced
        assert load[:, 0].reshape(8, 60).sum(axis=1).tolist() == [0, 14, 26, 9, 0, 48, 1, 0]


def test_finer_data_and_equal_intervals_keep_the_energy(tmp_path):
    # one-minute Wh with fractions, summed into 5-minute rounds
    values = [0.3, 0.4, 0.2, 0.42, 0.1] * 12  # 1.42 Wh per 5 minutes, 17.04 Wh in the hour
    path = write_rows(tmp_path / "m.csv", "2021-07-01 00:00:00", 1, {"consumption_wh": values})
    load, _ = whole_wh(path, make_clock("2021-07-01 00:00:00", interval_s=300, rounds=12)).energy_wh(0, 12)
    assert int(load.sum()) == 17  # rounding each round gave 12 x rint(1.42) = 12
    assert load[:, 0].tolist() == [1, 2, 1, 2, 1, 2, 1, 1, 2, 1, 2, 1]  # running sum 1.42 k rounded, differenced
    # data interval = round interval: rows map one to one, fractions carried
    path = write_rows(tmp_path / "q.csv", "2021-07-01 00:00:00", 15, {"consumption_wh": [0.4] * 8})
    load, _ = whole_wh(path, make_clock("2021-07-01 00:00:00", interval_s=900, rounds=8)).energy_wh(0, 8)
    assert load[:, 0].tolist() == [0, 1, 0, 1, 0, 0, 1, 0]  # 0.4, 0.8, 1.2, ... rounded: 0, 1, 1, 2, 2, 2, 3, 3


def test_file_and_flat_profiles_together(tmp_path):
    path = write_rows(tmp_path / "pv.csv", "2021-01-15 00:00:00", 30, {"consumption_wh": [0] * 48, "generation_wh": SMALL_PV_WH})
    specs = [FlatProfile(type="flat", load_w=600), FileProfile(type="file", path=str(path), id="h1", plausibility="off")]
    load, gen = ProfileSet(["f", "h1"], specs, make_clock("2021-01-15 00:00:00"), 0).energy_wh(0, 1440)
    assert load[:, 0].tolist() == [10] * 1440 and int(gen[:, 1].sum()) == 890


# =========================================================================== item 10: plausibility
def _warnings_of(make):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = make()
    return result, [str(w.message) for w in caught if issubclass(w.category, ProfileWarning)]


def _solar_pv(tz: str, day: str, lat: float, lon: float, step_min: int, kw: float, stamp_tz: str, marks: str = "start",
              days: int = 1):
    """PV power proportional to the cosine of the zenith from pvlib's SPA (independent of trexsim's solar
    formula), as energy per interval [kWh] with naive timestamps in ``stamp_tz``."""
    import pvlib

    start = pd.Timestamp(day, tz=tz)
    edges = pd.date_range(start, start + pd.Timedelta(days=days), freq=f"{step_min}min")
    fine = pd.date_range(start, start + pd.Timedelta(days=days), freq="1min", inclusive="left")
    zen = pvlib.solarposition.get_solarposition(fine, lat, lon)["apparent_zenith"].to_numpy()
    power_kw = kw * np.clip(np.cos(np.radians(zen)), 0, None)
    energy = power_kw.reshape(-1, step_min).sum(axis=1) / 60.0
    labels = edges[1:] if marks == "end" else edges[:-1]
    return [t.tz_convert(stamp_tz).strftime("%Y-%m-%d %H:%M:%S") for t in labels], energy.round(5).tolist()


def test_wh_values_in_a_kwh_column_are_a_392_kw_house(tmp_path):
    wh = [150] * 47 + [196]  # Wh per half-hour, written in a *_kwh column
    path = write_rows(tmp_path / "p.csv", "2021-07-01 00:00:00", 30, {"consumption_kwh": wh})
    _, got = _warnings_of(lambda: whole_wh(path, make_clock("2021-07-01 00:00:00")))
    text = "\n".join(got)
    assert "p.csv:49:consumption_kwh: peak load power 392.0 kW" in text
    assert "0.39 kW" in text  # what it would be as Wh
    assert "a year" not in text  # the peak already says it: no second warning about the yearly energy
    with pytest.raises(ProfileError, match="peak load power 392.0 kW"):
        whole_wh(path, make_clock("2021-07-01 00:00:00"), plausibility="error")
    _, none = _warnings_of(lambda: whole_wh(path, make_clock("2021-07-01 00:00:00"), plausibility="off"))
    assert none == []


def test_kwh_values_in_a_wh_column_are_far_below_a_household(tmp_path):
    path = write_rows(tmp_path / "p.csv", "2021-07-01 00:00:00", 30, {"consumption_wh": [0.25] * 48})  # 12 Wh a day: kWh values?
    _, got = _warnings_of(lambda: whole_wh(path, make_clock("2021-07-01 00:00:00")))
    assert any("consumption of 4.4 kWh a year" in w and "4,380 kWh a year" in w for w in got), got


def test_a_utc_profile_for_a_sydney_study_has_pv_at_night(tmp_path):
    tz = "Australia/Sydney"
    stamps, pv = _solar_pv(tz, "2021-01-15", -33.87, 151.21, 30, 3.0, stamp_tz="UTC")  # naive UTC times
    path = write_rows(tmp_path / "pv.csv", "", 30, {"consumption_kwh": [0.2] * 48, "generation_kwh": pv}, fmt=lambda i: stamps[i])
    # read as Sydney time, the rows run from 2021-01-14 13:00 to 2021-01-15 13:00
    _, got = _warnings_of(lambda: whole_wh(path, make_clock("2021-01-14 13:00:00", tz=tz)))
    text = "\n".join(got)
    assert "PV generates at night" in text, got
    assert "11.0 h before solar noon" in text and "UTC+00:00 rather than Australia/Sydney (UTC+11:00)" in text, got
    # read as UTC, as they are: no warning
    _, quiet = _warnings_of(lambda: whole_wh(path, make_clock("2021-01-15 00:00:00", tz=tz), timezone="UTC"))
    assert quiet == []


def test_interval_end_labels_without_the_flag_are_half_an_hour_late(tmp_path):
    tz = "Australia/Sydney"
    stamps, pv = _solar_pv(tz, "2021-01-15", -33.87, 151.21, 30, 3.0, stamp_tz=tz, marks="end", days=2)
    path = write_rows(tmp_path / "end.csv", "", 30, {"consumption_kwh": [0.2] * 96, "generation_kwh": pv}, fmt=lambda i: stamps[i])
    clock = make_clock("2021-01-15 12:00:00", tz=tz)  # inside the data either way
    _, got = _warnings_of(lambda: whole_wh(path, clock))
    text = "\n".join(got)
    assert re.search(r"centroid is (29|30|31) min after solar noon", text) and '"timestamp_marks": "end"' in text, got
    _, quiet = _warnings_of(lambda: whole_wh(path, clock, timestamp_marks="end"))
    assert quiet == []


def test_validate_reports_yearly_energy_and_peak_per_participant(tmp_path):
    # kW labelled kWh in half-hourly data doubles the energy: 1.2 kW all day reads as 57.6 kWh a day
    path = write_rows(tmp_path / "p.csv", "2021-07-01 00:00:00", 30, {"consumption_kwh": [1.2] * 48})
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"study": {"name": "x", "start_datetime": "2021-07-01 00:00:00", "days": 1},
                               "participants": {"h1": {"profile": {"type": "file", "path": "p.csv"}}}}))
    r = runner.invoke(app, ["validate", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "h1: consumption 21,024 kWh a year (57.6 kWh over the study), peak 2.4 kW" in r.output


# =========================================================================== item 11: one pass, DST
HEAD = "timestamp,participant_id,consumption_wh\n"


def test_every_problem_of_a_file_in_one_pass(tmp_path):
    rows = [f"2021-07-01 {h:02d}:00:00,h1,5" for h in range(24)]
    rows[3] = "2021-07-01 03:00:00,h1,"  # empty
    rows[5] = "2021-07-01 05:00:00,h1,-2"
    rows[7] = "2021-07-01 07:00:00,h1,lots"
    rows[9] = "2021-07-01 09:00:00,h1,N/A"
    del rows[12]  # a gap at 12:00
    rows.insert(15, "2021-07-01 15:00:00,h1,6")  # a duplicate of 15:00
    path = tmp_path / "bad.csv"
    path.write_text(HEAD + "\n".join(rows) + "\n")
    with pytest.raises(ProfileError) as err:
        whole_wh(path, make_clock("2021-07-01 00:00:00", rounds=1380))
    msg = str(err.value)
    assert "bad.csv: 6 problems" in msg
    for where, words in [("bad.csv:5:consumption_wh", "missing or NaN energy (cell '')"),
                         ("bad.csv:7:consumption_wh", "negative energy -2"),
                         ("bad.csv:9:consumption_wh", "not a number 'lots'"),
                         ("bad.csv:11:consumption_wh", "missing or NaN energy (cell 'N/A')"),
                         ("bad.csv:14:timestamp", "gap for participant 'h1'"),
                         ("bad.csv:17:timestamp", "duplicate row for participant 'h1'")]:
        assert f"{where}: {words}" in msg, msg


def test_many_problems_are_cut_at_a_limit_and_counted(tmp_path):
    rows = [f"2021-07-01 {m // 60:02d}:{m % 60:02d}:00,h1,{'' if m % 2 else 5}" for m in range(120)]
    path = tmp_path / "nan.csv"
    path.write_text(HEAD + "\n".join(rows) + "\n")
    with pytest.raises(ProfileError) as err:
        whole_wh(path, make_clock("2021-07-01 00:00:00", rounds=120))
    msg = str(err.value)
    assert "nan.csv: 60 problems" in msg
    assert msg.count("missing or NaN energy (cell ''") == 20
    assert "... and 40 more (60 in all: missing or NaN energy 60)" in msg


def test_only_the_rows_the_study_needs_are_checked(tmp_path):
    rows = [f"2021-07-{1 + h // 24:02d} {h % 24:02d}:00:00,h1,{60}" for h in range(24 * 10)]
    rows[24 * 8 + 5] = rows[24 * 8 + 5].rsplit(",", 1)[0] + ",-1"  # day 9: a week after the study
    path = tmp_path / "year.csv"
    path.write_text(HEAD + "\n".join(rows) + "\n")
    load, _ = whole_wh(path, make_clock("2021-07-02 00:00:00")).energy_wh(0, 1440)
    assert int(load.sum()) == 24 * 60
    with pytest.raises(ProfileError, match=r"year\.csv:199:consumption_wh: negative energy"):
        whole_wh(path, make_clock("2021-07-08 00:00:00"))


def test_a_gap_at_the_fall_back_hour_names_dst(tmp_path):
    stamps = ["00:00", "01:00", "02:00", "03:00"]  # 01:00 once: the repeated hour is missing
    path = tmp_path / "fall.csv"
    path.write_text(HEAD + "".join(f"2021-11-07 {s}:00,h1,60\n" for s in stamps))
    with pytest.raises(ProfileError) as err:
        whole_wh(path, make_clock("2021-11-07 00:00:00", rounds=60))
    msg = str(err.value)
    assert "fall.csv:4:timestamp: gap for participant 'h1'" in msg
    assert "DST ends in America/Edmonton" in msg and '"dst_slots": "fixed"' in msg


def test_a_nonexistent_spring_slot_names_dst_and_the_option(tmp_path):
    path = tmp_path / "spring.csv"
    path.write_text(HEAD + "".join(f"2021-03-14 {s}:00,h1,{v}\n" for s, v in [("01:00", 60), ("02:00", 0), ("03:00", 60)]))
    with pytest.raises(ProfileError) as err:
        whole_wh(path, make_clock("2021-03-14 00:00:00", rounds=60))
    msg = str(err.value)
    assert "spring.csv:3:timestamp: local time 2021-03-14 02:00:00 does not exist in America/Edmonton" in msg
    assert '"dst_slots": "fixed"' in msg


def _slots_48(day: str, values) -> list[str]:
    t0 = pd.Timestamp(day)
    return [f"{(t0 + pd.Timedelta(minutes=30 * i)).strftime('%Y-%m-%d %H:%M:%S')},h1,{values[i]}" for i in range(48)]


def test_48_slots_every_day_with_the_option(tmp_path):
    spring = [10] * 48
    spring[4] = spring[5] = 0  # 02:00 and 02:30 do not exist on 2021-03-14: they hold zeros
    fall = [10 + i for i in range(48)]  # 01:00 and 01:30 (slots 2 and 3: 12 and 13 Wh) appear once
    path = tmp_path / "slots.csv"
    path.write_text(HEAD + "\n".join(_slots_48("2021-03-14", spring) + _slots_48("2021-11-07", fall)) + "\n")
    # spring: a 23-hour day holds 46 slots of 10 Wh
    load, _ = whole_wh(path, make_clock("2021-03-14 00:00:00", interval_s=1800, rounds=46), dst_slots="fixed").energy_wh(0, 46)
    assert load[:, 0].tolist() == [10] * 46
    # fall: a 25-hour day; the repeated hour's slots serve both 01:00 hours
    load, _ = whole_wh(path, make_clock("2021-11-07 00:00:00", interval_s=1800, rounds=50), dst_slots="fixed").energy_wh(0, 50)
    assert load[:, 0].tolist() == [10, 11, 12, 13, 12, 13] + list(range(14, 58))
    assert int(load.sum()) == sum(fall) + 12 + 13
    # without the option the file is refused, naming DST
    with pytest.raises(ProfileError, match="does not exist in America/Edmonton"):
        whole_wh(path, make_clock("2021-03-14 00:00:00", interval_s=1800, rounds=46))


def test_48_slots_refuse_energy_at_a_time_that_does_not_exist(tmp_path):
    spring = [10] * 48
    spring[5] = 0
    path = tmp_path / "slots.csv"
    path.write_text(HEAD + "\n".join(_slots_48("2021-03-14", spring)) + "\n")
    with pytest.raises(ProfileError, match=r"slots\.csv:6:consumption_wh: .*02:00:00 does not exist .* holds 10"):
        whole_wh(path, make_clock("2021-03-14 00:00:00", interval_s=1800, rounds=46), dst_slots="fixed")


def test_parquet_cells_are_shown_as_text_not_numpy_reprs(tmp_path):
    frame = pd.DataFrame({"timestamp": ["2021-07-01 00:00:00", "2021-07-01 01:00:00", "2021-07-01 02:00:00"],
                          "participant_id": "h1", "consumption_kwh": [1.0, np.nan, np.inf]})
    path = tmp_path / "p.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(ProfileError) as err:
        whole_wh(path, make_clock("2021-07-01 00:00:00", rounds=180))
    msg = str(err.value)
    assert "p.parquet:2:consumption_kwh: missing or NaN energy (cell NaN)" in msg
    assert "p.parquet:3:consumption_kwh: infinite energy (cell inf)" in msg
    assert "np.float64" not in msg


# =========================================================================== item 12: validate, no empty folders
def _config(tmp_path: Path, participants: dict, days: float = 1) -> Path:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"study": {"name": "v", "start_datetime": "2021-07-01 00:00:00", "days": days},
                               "participants": participants}))
    return cfg


def test_validate_reads_every_profile_file(tmp_path):
    good = [f"2021-07-01 {h:02d}:00:00,h1,500" for h in range(24)]
    (tmp_path / "a.csv").write_text(HEAD + "\n".join(good[:5] + ["2021-07-01 05:00:00,h1,oops"] + good[6:]) + "\n")
    (tmp_path / "b.csv").write_text(HEAD + "\n".join(good[:10] + good[11:]) + "\n")  # a gap
    (tmp_path / "c.csv").write_text(HEAD + "\n".join(good[:12]) + "\n")  # half the day
    (tmp_path / "ok.csv").write_text(HEAD + "\n".join(good) + "\n")
    cfg = _config(tmp_path, {f"p{x}": {"profile": {"type": "file", "path": f"{x}.csv", "id": "h1"}} for x in ("a", "b", "c", "ok")})
    r = runner.invoke(app, ["validate", str(cfg)])
    assert r.exit_code == 2, r.output
    assert "valid:" not in r.output
    assert "a.csv:7:consumption_wh: not a number 'oops'" in r.output
    assert "b.csv:12:timestamp: gap for participant 'h1'" in r.output
    assert "c.csv: participant 'pc' (id 'h1') has no data at 2021-07-01T12:00:00-06:00" in r.output
    cfg = _config(tmp_path, {"pok": {"profile": {"type": "file", "path": "ok.csv", "id": "h1"}}})
    r = runner.invoke(app, ["validate", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "valid" in r.output and "pok: consumption 4,380 kWh a year (12.0 kWh over the study), peak 0.5 kW" in r.output


def test_a_failed_run_leaves_no_output_folder(tmp_path):
    (tmp_path / "short.csv").write_text(HEAD + "".join(f"2021-07-01 {h:02d}:00:00,h1,500\n" for h in range(12)))
    cfg = _config(tmp_path, {"h1": {"profile": {"type": "file", "path": "short.csv"}}})
    out = tmp_path / "new" / "run"
    r = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--no-plots", "--quiet"])
    assert r.exit_code == 2, r.output
    assert "has no data at" in r.output
    assert not (tmp_path / "new").exists()
    # an existing folder is left as it was
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "kept"), "--no-plots", "--quiet"])
    assert r.exit_code == 2
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt"]


def test_a_failed_export_leaves_no_output_folder(tmp_path):
    r = runner.invoke(app, ["export", str(tmp_path / "no-such-run")])
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "no-such-run").exists()
    r = runner.invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "x" / "y")])
    assert r.exit_code == 2
    assert not (tmp_path / "x").exists()
