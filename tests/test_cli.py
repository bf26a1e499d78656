"""The trexsim command, as a user types it."""

import json

import duckdb
from typer.testing import CliRunner

from trexsim.cli import app

runner = CliRunner()


def test_run_validate_export_plot(tmp_path, two_houses):
    two_houses["study"]["days"] = 30 / 1440
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(two_houses))
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "settled 17,400 Wh" in r.output  # 29 rounds x 600 Wh
    assert (out / "summary.json").exists() and (out / "figures" / "prices.png").exists()
    r = runner.invoke(app, ["validate", str(cfg)])
    assert r.exit_code == 0 and "valid" in r.output
    r = runner.invoke(app, ["export", str(out), "--format", "csv"])
    assert r.exit_code == 0, r.output
    lines = (out / "export" / "settlements.csv").read_text().splitlines()
    assert len(lines) == 1 + 29
    r = runner.invoke(app, ["export", str(out), "--format", "parquet", "--out", str(tmp_path / "pq")])
    assert r.exit_code == 0
    assert duckdb.connect().execute(f"SELECT count(*) FROM '{tmp_path / 'pq' / 'deliveries.parquet'}'").fetchone()[0] == 60
    (out / "figures" / "prices.png").unlink()
    r = runner.invoke(app, ["plot", str(out)])
    assert r.exit_code == 0 and (out / "figures" / "prices.png").exists()


def test_bad_config_is_a_message_not_a_traceback(tmp_path, two_houses):
    two_houses["participants"]["seller"]["storage"] = {"efficiency": 0}
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(two_houses))
    for command in (["validate", str(cfg)], ["run", str(cfg), "--out", str(tmp_path / "o")]):
        r = runner.invoke(app, command)
        assert r.exit_code == 2
        assert "participants.seller.storage.efficiency: must be in (0, 1]" in r.output
        assert "Traceback" not in r.output
    r = runner.invoke(app, ["plot", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no run database" in r.output


def test_init_writes_a_valid_commented_example(tmp_path):
    r = runner.invoke(app, ["init", str(tmp_path)])
    assert r.exit_code == 0
    text = (tmp_path / "community.json").read_text()
    assert "//" in text
    assert runner.invoke(app, ["validate", str(tmp_path / "community.json")]).exit_code == 0
    assert runner.invoke(app, ["init", str(tmp_path)]).exit_code == 2  # will not overwrite


def test_schema_is_json(tmp_path):
    r = runner.invoke(app, ["schema", "--out", str(tmp_path / "s.json")])
    assert r.exit_code == 0
    schema = json.loads((tmp_path / "s.json").read_text())
    assert set(schema["properties"]) >= {"study", "market", "participants"}


def test_powerflow_command(tmp_path, two_houses):
    import pytest

    pytest.importorskip("opendssdirect", reason="the powerflow extra is not installed")
    two_houses["study"]["days"] = 30 / 1440
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(two_houses))
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(cfg), "--out", str(out), "--no-plots", "-q"]).exit_code == 0
    r = runner.invoke(app, ["powerflow", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "powerflow" / "powerflow_summary.json").read_text())
    assert summary["solved_rounds"] == 30 and summary["violations"]["total"] == 0
    r = runner.invoke(app, ["powerflow", str(out), "--mapping", str(tmp_path / "missing.json"),
                            "--feeder", str(tmp_path / "missing.dss")])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_version_and_flags():
    from trexsim import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"trexsim {__version__}"
    r = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "120"})
    assert r.exit_code == 0 and "--no-plots" in r.output and "--no-report" in r.output
    assert "<bool>" not in r.output  # flags are shown as flags, not as options taking a value


def test_summary_table_fits_80_columns(tmp_path, two_houses):
    two_houses["study"]["days"] = 30 / 1440
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(two_houses))
    r = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "o"), "--no-plots", "--no-report"],
                      env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    table = r.output[r.output.index("participant"):r.output.index("energy in kWh")]
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 80
    assert "grid" in table and "saved" in table and "seller" in table


def test_json_syntax_error_in_plain_words(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "study": {"name": "x"}\n  "market": {}\n}\n')
    r = runner.invoke(app, ["validate", str(bad)])
    assert r.exit_code == 2
    assert "line 3, column 3: expected ',' or '}', found '\"' (is a comma missing before it?)" in r.output
    assert '3 |   "market": {}' in r.output and "U+" not in r.output and "b'" not in r.output


def test_export_of_a_missing_run_creates_nothing(tmp_path):
    for extra in ([], ["--out", str(tmp_path / "elsewhere" / "x")]):
        r = runner.invoke(app, ["export", str(tmp_path / "nothing"), *extra])
        assert r.exit_code == 2 and "no run database" in r.output
        assert list(tmp_path.iterdir()) == []
