"""FileProfiles: imported metered data (CSV and Parquet, long format) and the CityLearn converter."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trexsim.config.schema import FileProfile
from trexsim.data import importer
from trexsim.data.importer import FileProfiles, convert_citylearn
from trexsim.data.profiles import Clock
from trexsim.errors import ProfileError

from conftest import CITYLEARN_DIR as CITYLEARN  # noqa: E402


def make_clock(local: str, tz: str = "America/Edmonton", interval_s: int = 60, rounds: int = 1440) -> Clock:
    start = int(dt.datetime.fromisoformat(local).replace(tzinfo=zoneinfo.ZoneInfo(tz)).timestamp())
    return Clock(start_utc_s=start, interval_s=interval_s, rounds_per_episode=rounds, timezone=tz)


def source(path: Path, clock: Clock, ids: list[str] | None = None, **kw) -> FileProfiles:
    ids = ids or ["h1"]
    specs = [FileProfile(type="file", path=str(path), **kw) for _ in ids]
    return FileProfiles(ids, specs, clock, seed=0)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"))
    return path


def hourly_rows(start: str, hours: int, ids=("h1",), value=lambda i, pid: 1.0 + 0.1 * i, gen=None) -> str:
    head = "timestamp,participant_id,consumption_kwh" + (",generation_kwh" if gen else "")
    lines = [head]
    t0 = pd.Timestamp(start)
    for i in range(hours):
        for pid in ids:
            row = f"{(t0 + pd.Timedelta(hours=i)).strftime('%Y-%m-%d %H:%M:%S')},{pid},{value(i, pid)!r}"
            if gen:
                row += f",{gen(i, pid)!r}"
            lines.append(row)
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def _fresh_cache():
    importer.clear_cache()
    yield
    importer.clear_cache()


# --------------------------------------------------------------------------- resampling
def test_hourly_kwh_held_over_minutes_is_value_over_60(tmp_path):
    path = write_csv(tmp_path / "p.csv", hourly_rows("2021-07-01 00:00:00", 6, gen=lambda i, pid: 0.5 * i))
    load, gen = source(path, make_clock("2021-07-01 00:00:00", rounds=360)).energy_wh(0, 360)
    assert load.shape == (360, 1) and gen.shape == (360, 1)
    for h in range(6):
        expected = (1.0 + 0.1 * h) * 1000 / 60
        assert load[h * 60 : (h + 1) * 60, 0] == pytest.approx(np.full(60, expected), rel=1e-12)
        assert gen[h * 60 : (h + 1) * 60, 0] == pytest.approx(np.full(60, 0.5 * h * 1000 / 60), rel=1e-12, abs=1e-12)
    assert load.sum() == pytest.approx(sum(1.0 + 0.1 * h for h in range(6)) * 1000, rel=1e-12)


def test_chunks_of_a_file_source_concatenate(tmp_path):
    path = write_csv(tmp_path / "p.csv", hourly_rows("2021-07-01 00:00:00", 6))
    src = source(path, make_clock("2021-07-01 00:00:00"))
    whole, _ = src.energy_wh(0, 300)
    parts = np.concatenate([src.energy_wh(0, 77)[0], src.energy_wh(77, 223)[0]])
    np.testing.assert_allclose(parts, whole, rtol=1e-12)


def test_quarter_hour_power_in_watts(tmp_path):
    lines = ["participant_id,timestamp,consumption_w,generation_kw"]
    for q in range(8):
        t = pd.Timestamp("2021-07-01 00:00:00") + pd.Timedelta(minutes=15 * q)
        lines.append(f"h1,{t.isoformat(sep=' ')},{600 + 120 * q},{0.25 * q}")
    path = write_csv(tmp_path / "w.csv", "\n".join(lines) + "\n")
    load, gen = source(path, make_clock("2021-07-01 00:00:00", rounds=120)).energy_wh(0, 120)
    for q in range(8):
        # average power P [W] over a 60 s round is P / 60 Wh
        assert load[q * 15 : (q + 1) * 15, 0] == pytest.approx(np.full(15, (600 + 120 * q) / 60), rel=1e-12)
        assert gen[q * 15 : (q + 1) * 15, 0] == pytest.approx(np.full(15, 250 * q / 60), rel=1e-12, abs=1e-12)
    # and one 15-minute round holds the interval's whole energy
    load15, _ = source(path, make_clock("2021-07-01 00:00:00", interval_s=900, rounds=8)).energy_wh(0, 8)
    assert load15[:, 0] == pytest.approx([(600 + 120 * q) * 0.25 for q in range(8)], rel=1e-12)


def test_minute_data_summed_into_five_minute_rounds(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.uniform(0, 50, size=60).round(3)
    t0 = pd.Timestamp("2021-07-01 00:00:00")
    lines = ["timestamp,participant_id,consumption_wh"] + [f"{(t0 + pd.Timedelta(minutes=i)).isoformat()},h1,{v}" for i, v in enumerate(values)]
    path = write_csv(tmp_path / "m.csv", "\n".join(lines) + "\n")
    load, gen = source(path, make_clock("2021-07-01 00:00:00", interval_s=300, rounds=12)).energy_wh(0, 12)
    assert load[:, 0] == pytest.approx(values.reshape(12, 5).sum(axis=1), rel=1e-12)
    assert not gen.any()  # no generation column: zeros


def test_timestamp_marks_end_shifts_by_one_interval(tmp_path):
    path = write_csv(tmp_path / "p.csv", hourly_rows("2021-07-01 01:00:00", 4))
    clock = make_clock("2021-07-01 01:00:00", rounds=120)
    start_marks, _ = source(path, clock, timestamp_marks="start").energy_wh(0, 120)
    end_marks, _ = source(path, clock, timestamp_marks="end").energy_wh(0, 120)
    # 'end': the row stamped 02:00 covers 01:00-02:00, so 01:00-02:00 gets the second row's value
    assert start_marks[0, 0] == pytest.approx(1.0 * 1000 / 60)
    assert end_marks[0, 0] == pytest.approx(1.1 * 1000 / 60)
    np.testing.assert_allclose(end_marks[:60], start_marks[60:])
    # with 'end' the data start an hour earlier: 00:00 is covered, with the first row
    early, _ = source(path, make_clock("2021-07-01 00:00:00"), timestamp_marks="end").energy_wh(0, 60)
    assert early[:, 0] == pytest.approx(np.full(60, 1000 / 60))
    with pytest.raises(ProfileError):
        source(path, make_clock("2021-07-01 00:00:00"), timestamp_marks="start").energy_wh(0, 60)


def test_interpolate_is_smooth_and_keeps_energy(tmp_path):
    values = {0: 1.0, 1: 3.0, 2: 2.0, 3: 2.0}
    path = write_csv(tmp_path / "p.csv", hourly_rows("2021-07-01 00:00:00", 4, value=lambda i, pid: values[i]))
    clock = make_clock("2021-07-01 00:00:00", rounds=240)
    held, _ = source(path, clock).energy_wh(0, 240)
    smooth, _ = source(path, clock, upsample="interpolate").energy_wh(0, 240)
    assert smooth.sum() == pytest.approx(held.sum(), rel=1e-12)  # total energy is kept exactly
    assert (smooth >= 0).all()
    # within 00:30-01:30 power ramps linearly from 1 kW to 3 kW: steps of 2 kW / 60 min
    ramp = smooth[30:90, 0]
    assert np.diff(ramp) == pytest.approx(np.full(59, 2000 / 60 / 60), rel=1e-9)
    # each hour's energy stays close to the metered one (not exact: that is the point of smoothing)
    hourly = smooth[:, 0].reshape(4, 60).sum(axis=1)
    assert hourly == pytest.approx([1000 * values[i] for i in range(4)], rel=0.25)
    assert not np.allclose(hourly, [1000 * values[i] for i in range(4)])


def test_naive_times_use_profile_timezone_then_study_timezone(tmp_path):
    path = write_csv(tmp_path / "p.csv", hourly_rows("2021-07-01 00:00:00", 3))
    clock = make_clock("2021-07-01 00:00:00", tz="America/Edmonton", rounds=60)  # 06:00 UTC
    study_tz, _ = source(path, clock).energy_wh(0, 60)
    assert study_tz[0, 0] == pytest.approx(1000 / 60)
    # the same rows read as UTC times: 06:00 UTC is the file's 7th hour, which it lacks
    with pytest.raises(ProfileError, match="no data at"):
        source(path, clock, timezone="UTC").energy_wh(0, 60)
    # read as Toronto time: Edmonton midnight is Toronto 02:00, the third row
    toronto, _ = source(path, clock, timezone="America/Toronto").energy_wh(0, 60)
    assert toronto[0, 0] == pytest.approx(1.2 * 1000 / 60)


def test_aware_timestamps_are_converted(tmp_path):
    text = """
timestamp,participant_id,consumption_wh
2021-07-01T06:00:00Z,h1,60
2021-07-01T07:00:00+00:00,h1,120
2021-07-01 02:00:00-06:00,h1,180
"""
    path = write_csv(tmp_path / "p.csv", text)
    load, _ = source(path, make_clock("2021-07-01 00:00:00", rounds=180)).energy_wh(0, 180)
    assert load[::60, 0] == pytest.approx([1.0, 2.0, 3.0])


def test_naive_local_times_through_fall_back(tmp_path):
    # Edmonton, 2021-11-07: 01:00 local happens twice; metered data in local time repeat it
    stamps = ["00:00", "01:00", "01:00", "02:00", "03:00"]
    lines = ["timestamp,participant_id,consumption_wh"] + [f"2021-11-07 {s}:00,h1,{60 * (i + 1)}" for i, s in enumerate(stamps)]
    path = write_csv(tmp_path / "dst.csv", "\n".join(lines) + "\n")
    load, _ = source(path, make_clock("2021-11-07 00:00:00", rounds=300)).energy_wh(0, 300)
    assert load[::60, 0] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])


def test_parquet_matches_csv_and_native_timestamps(tmp_path):
    text = hourly_rows("2021-07-01 00:00:00", 5, ids=("h1", "h2"), value=lambda i, pid: i + (0.5 if pid == "h2" else 0.0))
    csv_path = write_csv(tmp_path / "p.csv", text)
    frame = pd.read_csv(csv_path)
    pq_path = tmp_path / "p.parquet"
    frame.to_parquet(pq_path, index=False)
    native = frame.assign(timestamp=pd.to_datetime(frame["timestamp"]).dt.tz_localize("America/Edmonton").dt.tz_convert("UTC"))
    native_path = tmp_path / "native.pq"
    native.to_parquet(native_path, index=False)
    clock = make_clock("2021-07-01 00:00:00", rounds=300)
    expected = source(csv_path, clock, ids=["h1", "h2"]).energy_wh(0, 300)
    for path in (pq_path, native_path):
        got = source(path, clock, ids=["h1", "h2"]).energy_wh(0, 300)
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)
    assert expected[0][0, 1] == pytest.approx(0.5 * 1000 / 60)


def test_spec_id_selects_rows_and_scales_apply(tmp_path):
    path = write_csv(tmp_path / "p.csv", hourly_rows("2021-07-01 00:00:00", 2, ids=("a", "b"), value=lambda i, pid: 2.0 if pid == "a" else 4.0, gen=lambda i, pid: 1.0))
    specs = [
        FileProfile(type="file", path=str(path), id="b"),
        FileProfile(type="file", path=str(path), id="a", load_scale=1.5, generation_scale=0.0),
    ]
    load, gen = FileProfiles(["x", "y"], specs, make_clock("2021-07-01 00:00:00", rounds=60), 0).energy_wh(0, 60)
    assert load[0] == pytest.approx([4000 / 60, 1.5 * 2000 / 60])
    assert gen[0] == pytest.approx([1000 / 60, 0.0])


def test_file_is_parsed_once_for_many_participants(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "p.csv", hourly_rows("2021-07-01 00:00:00", 2, ids=("a", "b", "c")))
    calls = []
    real = importer._parse_file
    monkeypatch.setattr(importer, "_parse_file", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    specs = [FileProfile(type="file", path=str(path), id=i) for i in ("a", "b", "c", "a")]
    FileProfiles(["p1", "p2", "p3", "p4"], specs, make_clock("2021-07-01 00:00:00"), 0)
    assert len(calls) == 1
    FileProfiles(["p1", "p2", "p3", "p4"], specs, make_clock("2021-07-01 00:00:00"), 0)
    assert len(calls) == 1  # cached by path and modification time


# --------------------------------------------------------------------------- coverage
def test_rounds_outside_the_data_name_file_participant_and_time(tmp_path):
    path = write_csv(tmp_path / "short.csv", hourly_rows("2021-07-01 00:00:00", 2))
    src = source(path, make_clock("2021-07-01 00:00:00"))
    src.energy_wh(0, 120)  # exactly the data: fine
    with pytest.raises(ProfileError) as err:
        src.energy_wh(60, 120)
    msg = str(err.value)
    assert "short.csv" in msg and "'h1'" in msg and "2021-07-01T02:00:00-06:00" in msg
    with pytest.raises(ProfileError, match=r"2021-06-30T23:59:00-06:00"):
        source(path, make_clock("2021-06-30 23:59:00")).energy_wh(0, 10)


# --------------------------------------------------------------------------- bad data
GOOD_HEAD = "timestamp,participant_id,consumption_wh\n"


@pytest.mark.parametrize(
    "name, text, where, words",
    [
        ("neg.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n2021-07-01 01:00:00,h1,-3.0\n", "neg.csv:3:consumption_wh", "negative energy -3.0"),
        ("nan.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n2021-07-01 01:00:00,h1,\n", "nan.csv:3:consumption_wh", "NaN"),
        ("nan2.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,nan\n2021-07-01 01:00:00,h1,4\n", "nan2.csv:2:consumption_wh", "NaN"),
        ("text.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n2021-07-01 01:00:00,h1,lots\n", "text.csv:3:consumption_wh", "not a number 'lots'"),
        ("ts.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n2021-07-01 01:00:00,h1,5\n2021-13-01 02:00:00,h1,5\n", "ts.csv:4:timestamp", "cannot parse timestamp '2021-13-01 02:00:00'"),
        ("empty_ts.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n,h1,5\n", "empty_ts.csv:3:timestamp", "empty timestamp"),
        ("gap.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n2021-07-01 01:00:00,h1,5\n2021-07-01 02:00:00,h1,5\n2021-07-01 04:00:00,h1,5\n", "gap.csv:5:timestamp", "gap for participant 'h1'"),
        ("dup.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n2021-07-01 01:00:00,h1,5\n2021-07-01 01:00:00,h1,6\n", "dup.csv:4:timestamp", "duplicate row for participant 'h1'"),
        ("mixed.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n2021-07-01 01:00:00,h1,5\n2021-07-01 02:00:00,h1,5\n2021-07-01 02:15:00,h1,5\n", "mixed.csv:5:timestamp", "irregular"),
        ("offsets.csv", GOOD_HEAD + "2021-07-01T06:00:00Z,h1,5\n2021-07-01 01:00:00,h1,5\n", "offsets.csv:3:timestamp", "no UTC offset"),
        ("subsec.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n2021-07-01 01:00:00.250,h1,5\n", "subsec.csv:3:timestamp", "not a whole second"),
        ("one.csv", GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n", "one.csv:2:timestamp", "only one row"),
        ("nots.csv", "time,participant_id,consumption_wh\n2021-07-01 00:00:00,h1,5\n", "nots.csv:1:timestamp", "missing column 'timestamp'"),
        ("noid.csv", "timestamp,house,consumption_wh\n2021-07-01 00:00:00,h1,5\n", "noid.csv:1:participant_id", "missing column 'participant_id'"),
        ("unknown.csv", "timestamp,participant_id,consumption_mwh\n2021-07-01 00:00:00,h1,5\n", "unknown.csv:1:consumption_mwh", "unknown column"),
        ("noload.csv", "timestamp,participant_id,generation_wh\n2021-07-01 00:00:00,h1,5\n", "noload.csv:1", "no consumption column"),
        ("twoload.csv", "timestamp,participant_id,consumption_wh,consumption_kwh\n2021-07-01 00:00:00,h1,5,1\n", "twoload.csv:1:consumption_kwh", "more than one consumption"),
        ("twogen.csv", "timestamp,participant_id,consumption_wh,generation_w,generation_kw\n2021-07-01 00:00:00,h1,5,1,1\n", "twogen.csv:1:generation_kw", "more than one generation"),
    ],
)
def test_bad_data_names_file_row_and_column(tmp_path, name, text, where, words):
    path = write_csv(tmp_path / name, text)
    with pytest.raises(ProfileError) as err:
        source(path, make_clock("2021-07-01 00:00:00")).energy_wh(0, 60)
    msg = str(err.value)
    assert where in msg, msg
    assert words in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError, match=r"nowhere\.csv: file not found"):
        source(tmp_path / "nowhere.csv", make_clock("2021-07-01 00:00:00"))


def test_unsupported_extension(tmp_path):
    path = write_csv(tmp_path / "data.txt", hourly_rows("2021-07-01 00:00:00", 2))
    with pytest.raises(ProfileError, match=r"data\.txt: unsupported file type"):
        source(path, make_clock("2021-07-01 00:00:00"))


def test_unknown_participant_lists_ids_present(tmp_path):
    path = write_csv(tmp_path / "p.csv", hourly_rows("2021-07-01 00:00:00", 2, ids=("alpha", "beta")))
    with pytest.raises(ProfileError) as err:
        source(path, make_clock("2021-07-01 00:00:00"), ids=["gamma"])
    msg = str(err.value)
    assert "p.csv:participant_id" in msg and "'gamma'" in msg and "'alpha'" in msg and "'beta'" in msg


def test_unknown_timezone_for_naive_timestamps(tmp_path):
    path = write_csv(tmp_path / "p.csv", hourly_rows("2021-07-01 00:00:00", 2))
    clock = make_clock("2021-07-01 00:00:00")
    bad_clock = Clock(start_utc_s=clock.start_utc_s, interval_s=60, rounds_per_episode=60, timezone="Mars/Olympus_Mons")
    with pytest.raises(ProfileError, match=r"p\.csv:timestamp: unknown timezone 'Mars/Olympus_Mons'"):
        source(path, bad_clock)
    # the schema already refuses an unknown zone in the profile itself
    with pytest.raises(ValueError):
        FileProfile(type="file", path=str(path), timezone="Mars/Olympus_Mons")


def test_row_numbers_count_lines_with_blank_lines(tmp_path):
    text = GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n\n2021-07-01 01:00:00,h1,-1\n"
    path = write_csv(tmp_path / "blank.csv", text)
    with pytest.raises(ProfileError, match=r"blank\.csv:4:consumption_wh: negative energy"):
        source(path, make_clock("2021-07-01 00:00:00"))


def test_bad_parquet_rows_count_from_one(tmp_path):
    frame = pd.DataFrame(
        {
            "timestamp": ["2021-07-01 00:00:00", "2021-07-01 00:00:00", "2021-07-01 01:00:00", "2021-07-01 01:00:00"],
            "participant_id": ["h0", "h1", "h0", "h1"],
            "consumption_kwh": [1.0, 1.0, 1.0, -2.0],
        }
    )
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(ProfileError, match=r"bad\.parquet:4:consumption_kwh: negative energy -2\.0"):
        source(path, make_clock("2021-07-01 00:00:00"))
    frame.loc[3, "consumption_kwh"] = np.nan
    frame.to_parquet(path, index=False)
    importer.clear_cache()
    with pytest.raises(ProfileError, match=r"bad\.parquet:4:consumption_kwh: missing or NaN"):
        source(path, make_clock("2021-07-01 00:00:00"))
    # h0 alone is fine: bad rows of participants nobody reads are not looked at
    load, _ = source(path, make_clock("2021-07-01 00:00:00"), ids=["h0"]).energy_wh(0, 120)
    assert load[:, 0] == pytest.approx(np.full(120, 1000 / 60))


def test_parquet_null_timestamp_and_naive_native_times(tmp_path):
    stamps = pd.to_datetime(["2021-11-07 00:00", "2021-11-07 01:00", "2021-11-07 01:00", "2021-11-07 02:00"])
    frame = pd.DataFrame({"timestamp": stamps, "participant_id": "h1", "consumption_wh": [60.0, 120.0, 180.0, 240.0]})
    path = tmp_path / "native.parquet"
    frame.to_parquet(path, index=False)
    load, _ = source(path, make_clock("2021-11-07 00:00:00", rounds=240)).energy_wh(0, 240)
    assert load[::60, 0] == pytest.approx([1.0, 2.0, 3.0, 4.0])  # the repeated 01:00 in order
    frame["timestamp"] = frame["timestamp"].astype(str).astype(object)
    frame.loc[2, "timestamp"] = None
    frame.to_parquet(tmp_path / "null.parquet", index=False)
    with pytest.raises(ProfileError, match=r"null\.parquet:3:timestamp: empty timestamp"):
        source(tmp_path / "null.parquet", make_clock("2021-11-07 00:00:00"))


def test_bad_data_of_other_participants_is_ignored_in_csv(tmp_path):
    text = GOOD_HEAD + "2021-07-01 00:00:00,h1,5\n2021-07-01 00:00:00,h2,-5\n2021-07-01 01:00:00,h1,5\n"
    path = write_csv(tmp_path / "p.csv", text)
    load, _ = source(path, make_clock("2021-07-01 00:00:00"), ids=["h1"]).energy_wh(0, 120)
    assert load.sum() == pytest.approx(10.0)


# --------------------------------------------------------------------------- CityLearn
@pytest.mark.skipif(not CITYLEARN.exists(), reason="CityLearn 2022 data not available")
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_citylearn_round_trip(tmp_path, suffix):
    out = convert_citylearn(CITYLEARN, tmp_path / f"citylearn{suffix}", buildings=["Building_1", 4])
    table = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert len(table) == 2 * 8760
    assert set(table["participant_id"]) == {"Building_1", "Building_4"}
    first = pd.Timestamp(table["timestamp"].iloc[0])
    assert first == pd.Timestamp("2016-08-01 06:00:00", tz="UTC")  # 2016-07-31 23:00 PDT

    src1 = pd.read_csv(CITYLEARN / "Building_1.csv")
    src4 = pd.read_csv(CITYLEARN / "Building_4.csv")
    clock = make_clock("2017-06-01 00:00:00", tz="America/Los_Angeles")
    specs = [FileProfile(type="file", path=str(out), id="Building_1"), FileProfile(type="file", path=str(out), id="Building_4")]
    load, gen = FileProfiles(["b1", "b4"], specs, clock, 0).energy_wh(0, 1440)
    # 2017-06-01 00:00 local is label row 7297 (month 6, hour 1, hour ending), as the README counts
    row = 1 + 24 * (pd.Timestamp("2017-06-01") - pd.Timestamp("2016-08-01")).days
    assert (src1.month[row], src1.hour[row]) == (6, 1)
    day1 = src1.iloc[row : row + 24]
    day4 = src4.iloc[row : row + 24]
    hourly_load = load.reshape(24, 60, 2).sum(axis=1)
    hourly_gen = gen.reshape(24, 60, 2).sum(axis=1)
    assert hourly_load[:, 0] == pytest.approx(day1["non_shiftable_load"].to_numpy() * 1000, rel=1e-9)
    assert hourly_load[:, 1] == pytest.approx(day4["non_shiftable_load"].to_numpy() * 1000, rel=1e-9)
    assert hourly_gen[:, 0] == pytest.approx(day1["solar_generation"].to_numpy() * 4.0, rel=1e-9)  # 4 kW PV
    assert hourly_gen[:, 1] == pytest.approx(day4["solar_generation"].to_numpy() * 5.0, rel=1e-9)  # 5 kW PV
    assert load[5 * 60, 0] == pytest.approx(day1["non_shiftable_load"].iloc[5] * 1000 / 60, rel=1e-9)


@pytest.mark.skipif(not CITYLEARN.exists(), reason="CityLearn 2022 data not available")
def test_citylearn_winter_rows_follow_the_local_labels(tmp_path):
    out = convert_citylearn(CITYLEARN, tmp_path / "b2.csv", buildings=[2])
    src = pd.read_csv(CITYLEARN / "Building_2.csv")
    clock = make_clock("2017-01-15 00:00:00", tz="America/Los_Angeles", interval_s=3600, rounds=24)
    load, gen = FileProfiles(["b2"], [FileProfile(type="file", path=str(out), id="Building_2")], clock, 0).energy_wh(0, 24)
    row = 1 + 24 * (pd.Timestamp("2017-01-15") - pd.Timestamp("2016-08-01")).days
    assert (src.month[row], src.hour[row], src.day_type[row]) == (1, 1, 7)  # a Sunday
    assert load[:, 0] == pytest.approx(src["non_shiftable_load"].iloc[row : row + 24].to_numpy() * 1000, rel=1e-9)
    assert gen[:, 0] == pytest.approx(src["solar_generation"].iloc[row : row + 24].to_numpy() * 4.0, rel=1e-9)
    # the year is complete in UTC: regular hourly rows, no gaps, no duplicates
    stamps = pd.to_datetime(pd.read_csv(out)["timestamp"])
    assert (stamps.diff().dropna() == pd.Timedelta(hours=1)).all()


def test_other_columns_of_a_meter_export_are_ignored(tmp_path):
    text = "timestamp,participant_id,meter_serial,consumption_kwh\n" + "".join(
        f"2021-07-01 0{h}:00:00,h1,SN-7,{1 + h}\n" for h in range(3))
    path = write_csv(tmp_path / "extra.csv", text)
    load, _ = source(path, make_clock("2021-07-01 00:00:00", rounds=180)).energy_wh(0, 180)
    assert load[0, 0] == pytest.approx(1000 / 60) and load[179, 0] == pytest.approx(3000 / 60)
