"""Export every table of a run's database to Parquet or CSV."""

from __future__ import annotations

from pathlib import Path

import duckdb

from trexsim.errors import TrexsimError
from trexsim.records.schema import RECORDS, TABLES, VIEWS


def open_run(run_dir: str | Path) -> duckdb.DuckDBPyConnection:
    path = Path(run_dir) / "run.duckdb"
    if not path.exists():
        raise TrexsimError(f"{run_dir}: no run database (run.duckdb) here; give the --out folder of 'trexsim run'")
    return duckdb.connect(str(path), read_only=True)


def export_run(run_dir: str | Path, fmt: str = "parquet", out_dir: str | Path | None = None) -> list[Path]:
    """Write each table to ``out_dir`` (default ``run_dir/export``) as ``<table>.parquet`` or ``.csv``.

    ``deliveries`` is written from its view, derived columns included, as a user reads it, and so are the
    convenience views (``meter_readings``, ``grid_trades``, ``battery_states``, ``profits``, ``trades``). The
    tables of optional modules (the live powerflow's ``powerflow_*``) are written when they hold rows.
    """
    if fmt not in ("parquet", "csv"):
        raise TrexsimError(f"--format must be parquet or csv, not {fmt!r}")
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "export"
    out.mkdir(parents=True, exist_ok=True)
    con = open_run(run_dir)
    written = []
    try:
        optional = [t for t in TABLES if t not in RECORDS and t != "delivery_rows"]
        present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        filled = [t for t in optional if t in present and con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]]
        views = [v for v in VIEWS if v not in RECORDS]
        for table in RECORDS + views + filled:
            target = out / f"{table}.{fmt}"
            options = "(FORMAT parquet)" if fmt == "parquet" else "(FORMAT csv, HEADER true)"
            con.execute(f"COPY (SELECT * FROM {table}) TO '{target.as_posix()}' {options}")
            written.append(target)
    finally:
        con.close()
    return written
