"""The ``trexsim`` command: run, report, validate, schema, init, export, plot, ...

Every command reports a user's mistake as a message naming what is wrong and where,
never as a traceback (exit status 2).
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from trexsim.errors import ConfigError, TrexsimError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="trexsim: simulate transactive energy markets (T-REX / ALEX).")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

EXAMPLES = ("community", "two-houses", "tc", "two-streets", "community-rl", "tc-european-lv", "tc-ev-european-lv",
            "tc-smart-ev-european-lv")


def _flags_without_type() -> None:
    """Show boolean flags as flags in --help (``--no-plots``), not as ``--no-plots <bool>``: recent typer
    versions print the type of every option, flags included."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "_trexsim", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._trexsim = True
    option.display_type_rich = display_type_rich


_flags_without_type()


def _version(value: bool) -> None:
    if value:
        from trexsim import __version__

        console.print(f"trexsim {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """trexsim: simulate transactive energy markets (T-REX / ALEX)."""


def _example_path(name: str) -> Path:
    if name not in EXAMPLES:
        raise TrexsimError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    return Path(str(resources.files("trexsim.config").joinpath("examples", f"{name}.json")))


def _fail(exc: Exception) -> None:
    from rich.markup import escape

    if isinstance(exc, ConfigError):
        err_console.print(f"[bold red]invalid config[/] {escape(exc.source or '')}")
        for path, msg in exc.problems:
            err_console.print(f"  [yellow]{escape(path)}[/]: {escape(str(msg))}" if path else f"  {escape(str(msg))}")
    else:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(2)


class _NothingLeftBehind:
    """On failure, remove what a command created under ``folder``: the folder itself (and the parents made for
    it) when it did not exist before, else the entries it added. On success, nothing happens."""

    def __init__(self, folder: Path | None = None):
        self.folder: Path | None = None
        self._created: Path | None = None  # the topmost folder that did not exist
        self._before: set[str] = set()
        if folder is not None:
            self.watch(folder)

    def watch(self, folder: Path) -> None:
        self.folder = Path(folder).absolute()
        self._created = None
        for candidate in (self.folder, *self.folder.parents):
            if candidate.exists():
                break
            self._created = candidate
        self._before = {p.name for p in self.folder.iterdir()} if self._created is None and self.folder.is_dir() else set()

    def release(self) -> None:
        """From now on a failure keeps what is there: a run that has started recording keeps its database (its
        runs.status says 'failed'), so that nothing recorded before a fault is lost."""
        self.folder = None

    def __enter__(self) -> "_NothingLeftBehind":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        failed = exc_type is not None and not (issubclass(exc_type, typer.Exit) and getattr(exc, "exit_code", 0) == 0)
        if failed and self.folder is not None:
            import shutil

            if self._created is not None:
                shutil.rmtree(self._created, ignore_errors=True)
            elif self.folder.is_dir():
                for entry in self.folder.iterdir():
                    if entry.name not in self._before:
                        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)
        return False


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="Config file (JSON, // comments allowed). Default: the bundled 'community' example."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: runs/<study name>)."),
    example: Optional[str] = typer.Option(None, help=f"Run a bundled example instead: {', '.join(EXAMPLES)}."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG figures."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the HTML report (report.html)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
    fabric: Optional[str] = typer.Option(None, "--fabric", help="Run over a networked fabric: mqtt://[USER:PASS@]HOST:PORT, mqtts://..., socketio://HOST:PORT."),
    participant_processes: int = typer.Option(0, "--participant-processes", min=0,
                                              help="With --fabric: run the households in this many separate processes."),
    credentials: Optional[Path] = typer.Option(None, "--credentials", help="With --fabric: credentials.json from `trexsim broker` (this process logs in as 'coordinator')."),
    barrier_timeout: float = typer.Option(10.0, "--barrier-timeout", min=0.01, help="With --fabric: seconds a round waits for a participant process before going on without it."),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="With an mqtts:// fabric: CA certificate to verify the broker."),
) -> None:
    """Run a simulation; write its database, summary.json, figures and report.html."""
    with _NothingLeftBehind() as leftovers:  # a failed run leaves no (empty or half-written) output folder
        status = _run(config, out, example, no_plots, quiet, fabric, participant_processes, credentials, barrier_timeout,
                      ca_file, leftovers, report=not no_report)
    if status:  # a degraded networked run: its results stay, its exit status says so
        raise typer.Exit(status)


def _run(config, out, example, no_plots, quiet, fabric, participant_processes, credentials, barrier_timeout, ca_file,
         leftovers: _NothingLeftBehind, report: bool = True) -> None:
    from trexsim.config import load_config

    network = None
    try:
        path = config if config is not None else _example_path(example or "community")
        cfg = load_config(path)
        leftovers.watch(out if out is not None else Path("runs") / cfg.study.name)
        if not quiet and not _kernels_compiled():
            err_console.print("compiling the market kernels, once (about 15 s; later runs reuse them)")
        from trexsim.simulation import Simulation

        nodes = []
        if participant_processes and fabric is None:
            raise TrexsimError("--participant-processes needs --fabric mqtt://HOST:PORT")
        if participant_processes > len(cfg.expanded_participants()):
            raise TrexsimError(f"--participant-processes {participant_processes}: the config has only "
                               f"{len(cfg.expanded_participants())} households")
        if fabric is not None:
            from trexsim.fabric import open_fabric
            from trexsim.node import fabric_options

            from trexsim.node import layout_accounts

            options = fabric_options(cfg, fabric, role="coordinator", credentials=credentials,
                                     participant_ids=[pid for pid, _ in cfg.expanded_participants()],
                                     accounts=layout_accounts(cfg, participant_processes),
                                     barrier_timeout_s=barrier_timeout, **({"ca_file": str(ca_file)} if ca_file else {}))
            namespace = options["namespace"]
            network = open_fabric(fabric, **options)
        sim = Simulation(cfg, out, fabric=network, local_participants=not participant_processes)
        leftovers.release()
        if network is not None:
            from trexsim.node import configure_market_fabric

            configure_market_fabric(network, cfg)
        if participant_processes:
            from trexsim.node import spawn_participant_nodes

            nodes = spawn_participant_nodes(path, fabric, namespace, participant_processes, credentials)
        finished = False
        try:
            if nodes:
                _wait_for_nodes(network, nodes, timeout_s=120)
            result = _run_with_progress(sim, quiet, plots=False if no_plots else None)
            finished = True
        except BaseException:
            if network is not None:  # a failed run keeps what it recorded, the barrier's events included
                from trexsim.node import record_fabric_events

                record_fabric_events(sim.db_path, getattr(network, "events", []))
            err_console.print(f"[yellow]the run failed; what it recorded is kept in {sim.db_path} "
                              "(runs.status 'failed')[/]")
            raise
        finally:
            for node in nodes:
                if not finished:  # the run failed: its module processes have nothing left to wait for
                    node.kill()
                try:
                    node.wait(timeout=30)
                except Exception:  # a node that does not stop by itself is stopped
                    node.kill()
        fabric_report = {}
        if network is not None:
            from trexsim.node import finish_networked_run

            fabric_report = finish_networked_run(result.out_dir, result.database, result.summary, network, sim.participant_ids)
            if not quiet and network.events:
                console.print(f"fabric events (table fabric_events): {len(network.events)}")
    except TrexsimError as exc:
        _fail(exc)
        return
    except ModuleNotFoundError as exc:
        _fail(TrexsimError(f"{exc.name} is not installed: pip install \"trexsim[net]\""))
        return
    finally:
        if network is not None:
            network.close()
    page = None
    if report:
        from trexsim.records.report import write_report

        try:
            page = write_report(result.out_dir)
        except TrexsimError as exc:  # the run's results stay; only the report is missing
            err_console.print(f"[yellow]warning:[/] no report: {exc}")
    if not quiet:
        print_summary(result.summary)
        console.print(f"\nresults: [bold]{result.out_dir}[/]  (database {result.database.name}, summary.json)")
        if result.figures:
            console.print(f"figures: [bold]{result.figures[0].parent}[/]  ({', '.join(f.name for f in result.figures)})")
        if page is not None:
            console.print(f"report: [bold]{page}[/]  (open it in a browser; it needs no network)")
    from trexsim.node import DEGRADED_EXIT_STATUS, degraded_warning

    warning = degraded_warning(fabric_report)
    if warning is not None:  # even with --quiet: a degraded run never passes for a normal one
        err_console.print(f"[bold red]{warning}[/]")
        return DEGRADED_EXIT_STATUS
    return 0


def _kernels_compiled() -> bool:
    """Whether numba's cache already holds the market kernels (else the first run compiles them, ~15 s)."""
    import os

    from importlib.util import find_spec

    spec = find_spec("trexsim.engine")
    places = [Path(p) / "__pycache__" for p in (spec.submodule_search_locations or [])] if spec else []
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    places.append(Path.home() / ".cache" / "numba")
    for place in places:
        try:
            if place.is_dir() and next(place.rglob("market_round.*.nbi"), None) is not None:
                return True
        except OSError:
            continue
    return False


def _wait_for_nodes(network, nodes, timeout_s: float) -> None:
    """Wait until every started module process has joined; stop early if one of them exits."""
    import time

    deadline = time.monotonic() + timeout_s
    while len(network.hellos) < len(nodes):
        dead = [n for n in nodes if n.poll() is not None]
        if dead:
            raise TrexsimError(f"{len(dead)} participant process(es) stopped before joining (exit status "
                               f"{', '.join(str(n.returncode) for n in dead)}; their error is printed above)")
        if time.monotonic() > deadline:
            raise TrexsimError(f"{len(network.hellos)} of {len(nodes)} participant processes joined within {timeout_s} s")
        network.poll(0.2)


def _run_with_progress(sim, quiet: bool, plots):
    if quiet:
        return sim.run(plots=plots)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    total = sim.total_rounds
    every = max(1, total // 200)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rounds"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task(sim.config.study.name, total=total)
        rounds = sim.config.study.rounds_per_episode

        def on_round(episode: int, round_done: int) -> None:
            if round_done % every == 0 or round_done == rounds:
                progress.update(task, completed=episode * rounds + round_done)

        return sim.run(on_round=on_round, plots=plots)


def print_summary(summary: dict) -> None:
    """The run's table, readable in an 80-column terminal: energies in kWh, money in $."""
    from rich import box

    study, market = summary["study"], summary["market"]
    table = Table(title=f"{study['name']}: {study['participants']} participants, {study['days']:g} day(s), "
                        f"{study['settlement']}, episode {summary['episode']}",
                  caption="energy in kWh, money in $ (negative bill: earned)", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 1))
    table.add_column("participant", overflow="fold", max_width=16)
    for col in ("bought\nmarket", "sold\nmarket", "bought\ngrid", "sold\ngrid", "bill", "grid\nonly", "saved"):
        table.add_column(col, justify="right", no_wrap=True)
    rows = list(summary["participants"].items())
    shown = rows if len(rows) <= 40 else rows[:20] + rows[-20:]
    kwh = lambda wh: f"{wh / 1000:,.1f}"  # noqa: E731
    for n, (pid, p) in enumerate(shown):
        if len(rows) > 40 and n == 20:
            table.add_row(f"... {len(rows) - 40} more", *[""] * 7)
        table.add_row(pid, kwh(p["market_bought_wh"]), kwh(p["market_sold_wh"]), kwh(p["grid_bought_wh"]),
                      kwh(p["grid_sold_wh"]), f"{p['net_cost']:.2f}", f"{p['grid_only_cost']:.2f}", f"{p['savings']:.2f}")
    console.print(table)
    price = market.get("mean_settlement_price")
    console.print(
        f"market: settled {market['settled_wh']:,} Wh at a mean price of "
        f"{'-' if price is None else f'{price:.4f} $/kWh'}; auctioneer surplus {market['auctioneer_surplus']:.4f} $;\n"
        f"rejected orders {market['rejected_orders']}; community bill {market['total_net_cost']:.2f} $ "
        f"vs {market['total_grid_only_cost']:.2f} $ grid-only")
    for mid, m in (summary.get("markets") or {}).items():
        mean = m.get("mean_buyer_price")
        console.print(f"  {mid} ({m['settlement']}{' -> ' + m['parent'] if m['parent'] else ''}): "
                      f"{m['settled_wh'] / 1000:,.1f} kWh, {m['contracts']:,} contracts"
                      + (f", buyers {mean:.4f} $/kWh" if mean is not None else ""))
    community = summary.get("community")
    if community:
        console.print(f"community net load ({community['basis']}): {community['avg_daily_import_kwh']:.1f} kWh imported "
                      f"and {community['avg_daily_export_kwh']:.1f} exported a day; peak {community['peak_kw']:.1f} kW, "
                      f"valley {community['valley_kw']:.1f} kW; summary.json 'community'")
    cons = summary.get("conservation", {})
    console.print(f"conservation checked every round: max energy error {cons.get('max_energy_error_wh')} Wh, "
                  f"max money error {cons.get('max_money_error_usd', 0):.2e} $")
    tc = summary.get("tc")
    if tc and tc.get("mean_price") is not None:
        console.print(f"TC market: {tc['horizons']} horizon(s) priced from {tc['powerflow_solves_for_prices']} powerflow "
                      f"solves; buy price mean {tc['mean_price']:.4f}, highest {tc['max_price']:.4f} $/kWh "
                      f"(congestion up to {tc['max_congestion']:.4f}); table tc_schedule")
    pf = summary.get("powerflow")
    if pf and pf.get("max_transformer_loading_pct") is not None:
        console.print(f"powerflow: peak transformer loading {pf['max_transformer_loading_pct']:.1f} %, voltage "
                      f"{pf['min_voltage_pu']:.3f}-{pf['max_voltage_pu']:.3f} p.u., {pf['hours_over_limit']:.1f} h over "
                      f"limits, {pf['violations']} violations; tables powerflow_*")


@app.command()
def validate(config: Path = typer.Argument(..., help="Config file to check.")) -> None:
    """Check a config and list every problem with its key path; read and check every profile file it names."""
    from rich.markup import escape

    from trexsim.config import load_config

    try:
        cfg = load_config(config)
        members = cfg.expanded_participants()
        files = [(pid, spec.profile) for pid, spec in members if spec.profile.type == "file"]
        report = None
        if files:
            from trexsim.data.importer import check_file_profiles
            from trexsim.data.profiles import Clock

            study = cfg.study
            clock = Clock(study.start_utc_s, study.interval_s, study.rounds_per_episode, study.timezone)
            report = check_file_profiles([pid for pid, _ in files], [p for _, p in files], clock)
    except TrexsimError as exc:
        _fail(exc)
        return
    if report is not None:
        for line in report.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(line)}")
        if report.errors:
            err_console.print("[bold red]invalid profile data[/]")
            for text in report.errors:
                err_console.print(f"  {escape(text)}".replace("\n", "\n  "))
            raise typer.Exit(2)
    console.print(f"[green]valid[/]: {config} ({len(members)} participants, "
                  f"{cfg.study.rounds_per_episode} rounds per episode, {cfg.study.episodes} episode(s))")
    if report is not None:
        console.print(f"profile files read: {len({m['file'] for m in report.members})}, each participant's data over the study:")
        for line in report.summary_lines():
            console.print(f"  {escape(line)}")


@app.command()
def schema(out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout.")) -> None:
    """Print the JSON Schema of the config (for editors)."""
    from trexsim.config.schema import SimulationConfig
    from trexsim.plugins import load_device_plugins, load_trader_plugins

    load_trader_plugins()  # installed trader and device plug-ins' settings belong in the schema too
    load_device_plugins()
    text = json.dumps(SimulationConfig.model_json_schema(by_alias=False), indent=2)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        out.write_text(text + "\n")
        console.print(f"wrote {out}")


@app.command()
def init(
    directory: Path = typer.Argument(..., help="Folder to write the example config into."),
    example: str = typer.Option("community", help=f"Which example: {', '.join(EXAMPLES)}."),
    force: bool = typer.Option(False, help="Overwrite an existing file."),
) -> None:
    """Write a commented example config to DIR/<example>.json."""
    try:
        source = _example_path(example)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{example}.json"
        if target.exists() and not force:
            raise TrexsimError(f"{target} exists (use --force to overwrite)")
        target.write_text(source.read_text())
    except (TrexsimError, OSError) as exc:
        _fail(exc)
        return
    console.print(f"wrote {target}; run it with: trexsim run {target}")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run's output folder."),
    format: str = typer.Option("parquet", "--format", "-f", help="parquet or csv."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the files (default RUN_DIR/export)."),
) -> None:
    """Write every table of a run's database as Parquet or CSV files."""
    from trexsim.records.export import export_run

    with _NothingLeftBehind(out if out is not None else run_dir / "export"):  # a failed export leaves no folder
        try:
            files = export_run(run_dir, format, out)
        except TrexsimError as exc:
            _fail(exc)
            return
    console.print(f"wrote {len(files)} tables to {files[0].parent}")


@app.command()
def plot(run_dir: Path = typer.Argument(..., help="A run's output folder.")) -> None:
    """Redraw a run's figures into RUN_DIR/figures."""
    from trexsim.records.export import open_run
    from trexsim.records.plots import plot_run

    try:
        open_run(run_dir).close()
        figures = plot_run(run_dir)
    except TrexsimError as exc:
        _fail(exc)
        return
    console.print(f"wrote {', '.join(str(f) for f in figures)}")


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="One run's output folder, or several to compare side by side."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The HTML file (default RUN_DIR/report.html; with several runs, ./report.html)."),
) -> None:
    """Write a run's interactive report: one HTML file that opens offline in any browser (several runs: side by side)."""
    from trexsim.records.report import write_report

    try:
        page = write_report(run_dirs, out)
    except TrexsimError as exc:
        _fail(exc)
        return
    console.print(f"wrote [bold]{page}[/] ({page.stat().st_size / 1e6:.1f} MB; open it in a browser, it needs no network)")


@app.command()
def train(
    config: Path = typer.Argument(..., help="Training config (JSON, // comments allowed), e.g. examples/ppo_battery/train.json."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: the config's out_dir, else runs/<name>)."),
    timesteps: Optional[int] = typer.Option(None, "--timesteps", "-n", min=1, help="Train this many environment steps instead of total_timesteps."),
    eval_only: bool = typer.Option(False, "--eval-only", help="Do not train: evaluate the model already in the output folder again."),
) -> None:
    """Train a deep-RL agent (PPO) in a community, then evaluate it against the rule-based battery on held-out days."""
    from trexsim.training.config import load_training_config

    try:
        cfg = load_training_config(config)
    except TrexsimError as exc:
        _fail(exc)
        return
    try:
        import stable_baselines3  # noqa: F401
        import tensorboard  # noqa: F401
        import torch  # noqa: F401
    except ModuleNotFoundError as exc:
        _fail(TrexsimError(f"{exc.name} is not installed; training needs the rl extra: pip install 'trexsim[rl]'"))  # _fail escapes rich markup
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from trexsim.training.trainer import train as run_training

    total = timesteps or cfg.total_timesteps
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                  TextColumn("{task.fields[ret]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(cfg.name, total=total, ret="")

        def on_progress(steps: int, mean_return: float | None) -> None:
            progress.update(task, completed=min(steps, total),
                            ret="" if mean_return is None else f"episode return {mean_return:+.3f}")

        def on_phase(phase: str) -> None:
            if phase == "warm_start":
                progress.update(task, description=f"{cfg.name}: fitting the policy to the self-consumption rule")
            elif phase == "train":
                progress.update(task, description=cfg.name)
            elif phase == "evaluate":
                progress.update(task, completed=total, description=f"{cfg.name}: evaluating on {len(cfg.eval.days)} held-out days")

        try:
            result = run_training(cfg, out, timesteps, on_progress=on_progress, on_phase=on_phase, evaluate_only=eval_only)
        except TrexsimError as exc:
            progress.stop()
            _fail(exc)
            return
    rep = result.report
    table = Table(title=f"{cfg.learner} on {len(rep['days'])} held-out days after {result.timesteps:,} steps "
                        f"({result.train_seconds / 60:.1f} min)")
    for col in ("policy", "bill\n$", "bill adj.\n$", "self-\nsuff.", "cycles", "grid in\nkWh", "grid out\nkWh", "bought\nkWh", "sold\nkWh"):
        table.add_column(col, justify="right" if col != "policy" else "left", no_wrap=True)
    for name, m in rep["totals"].items():
        table.add_row(name.replace("_", "-"), f"{m['bill_usd']:.2f}", f"{m['bill_adjusted_usd']:.2f}",
                      "-" if m["self_sufficiency"] is None else f"{m['self_sufficiency']:.0%}", f"{m['battery_cycles']:.1f}",
                      *(f"{m[k] / 1000:.1f}" for k in ("grid_import_wh", "grid_export_wh", "market_bought_wh", "market_sold_wh")))
    console.print(table)
    v = rep["verdict"]
    pct = "" if v["agent_minus_rule_bill_adjusted_pct"] is None else f" ({v['agent_minus_rule_bill_adjusted_pct']:+.1f} %)"
    console.print(f"agent vs rule, adjusted bill (battery energy left at the end of a day valued at {v['value_per_kwh']:.4f} $/kWh): "
                  f"{v['agent_minus_rule_bill_adjusted_usd']:+.3f} ${pct}, cheaper on {v['days_agent_cheaper_than_rule']} of "
                  f"{v['days']} days: the agent {'[bold green]beats[/]' if v['agent_beats_rule'] else '[bold red]does not beat[/]'} "
                  f"the rule (plain bill: {v['agent_minus_rule_bill_usd']:+.3f} $)")
    if "grid_optimum" in rep:
        closed = v.get("gap_closed_vs_grid_optimum")
        console.print(f"ceiling: the battery's perfect-foresight optimum against the grid, adjusted bill "
                      f"{rep['grid_optimum']['total']['bill_adjusted_usd']:.2f} $; the agent closed "
                      f"{'-' if closed is None else f'{closed:.0%}'} of the rule-to-optimum gap")
    console.print(f"model {result.model_path}; report {result.out_dir / 'report.json'}; figures {result.out_dir / 'figures'}; "
                  f"TensorBoard: tensorboard --logdir {result.out_dir / 'tensorboard'}")


@app.command()
def powerflow(
    run_dir: Path = typer.Argument(..., help="A run's output folder."),
    feeder: Optional[Path] = typer.Option(None, "--feeder", help="A .dss circuit, or a .json of feeder-generator parameters (default: a generated feeder for the run's households)."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", help="JSON participant id -> load name (with a .dss circuit)."),
    every: int = typer.Option(1, "--every", min=1, help="Solve every k-th round."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default RUN_DIR/powerflow)."),
    v_min_pu: float = typer.Option(0.95, help="Lowest acceptable voltage, p.u."),
    v_max_pu: float = typer.Option(1.05, help="Highest acceptable voltage, p.u."),
    max_loading_pct: float = typer.Option(100.0, help="Highest acceptable line/transformer loading, %."),
) -> None:
    """Replay a run's meter readings through a feeder on OpenDSS: voltages, loading, losses, violations."""
    try:
        from trexsim.powerflow import powerflow_command

        report = powerflow_command(run_dir, feeder=feeder, mapping=mapping, every=every, out=out, v_min_pu=v_min_pu,
                                   v_max_pu=v_max_pu, max_loading_pct=max_loading_pct)
    except TrexsimError as exc:
        _fail(exc)
        return
    console.print(str(report))
    console.print(f"results and figures: [bold]{report.out_dir}[/]")


@app.command("fabric-server")
def fabric_server(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(5000, "--port", min=0, max=65535, help="TCP port (0: any free port, printed)."),
    max_message_mb: float = typer.Option(16.0, "--max-message-mb", min=0.001, help="Largest event relayed [MiB]."),
    credentials: Optional[Path] = typer.Option(None, "--credentials", help="credentials.json from `trexsim broker --no-start`: clients log in to its accounts, each limited to its ACL."),
) -> None:
    """Start the Socket.IO relay that modules connect to with --fabric socketio://HOST:PORT (Ctrl-C stops it)."""
    try:
        from trexsim.fabric.socketio_server import run_server

        creds = None
        if credentials is not None:
            from trexsim.fabric.broker import load_credentials

            creds = load_credentials(credentials)

        def ready(actual_port: int, stats) -> None:
            console.print(f"Socket.IO fabric server on [bold]socketio://{host}:{actual_port}[/] (Ctrl-C stops it)")
            if creds is not None:
                console.print(f"namespace {creds.get('namespace')}: {len(creds['accounts'])} accounts, each limited to its ACL")
            elif host not in ("127.0.0.1", "localhost", "::1"):
                # an open relay: say so where the port is reachable from elsewhere
                err_console.print("[yellow]warning:[/] without --credentials the relay checks no credentials: anyone who "
                                  "reaches this port can join a simulation")

        stats = run_server(host, port, int(max_message_mb * 1024 * 1024), on_ready=ready, credentials=creds)
    except TrexsimError as exc:
        _fail(exc)
        return
    except ModuleNotFoundError as exc:
        _fail(TrexsimError(f"{exc.name} is not installed: pip install \"trexsim[net]\""))
        return
    except OSError as exc:
        _fail(TrexsimError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"))
        return
    console.print(f"stopped: relayed {stats.relayed:,} events, refused {stats.refused:,}")


@app.command()
def compare(
    config: Path = typer.Argument(..., help="Config file of the community (its traders run the ALEX market; its 'tc' section, if any, sets TC)."),
    feeder: Optional[Path] = typer.Option(None, "--feeder", help="A .dss circuit, or a .json of feeder-generator parameters (default: a generated feeder, one house per participant)."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", help="JSON participant id -> load name (with a .dss circuit)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/<study name>-compare)."),
    every: int = typer.Option(1, "--every", min=1, help="Solve the powerflow every k-th round."),
    v_min_pu: float = typer.Option(0.95, help="Lowest acceptable voltage, p.u."),
    v_max_pu: float = typer.Option(1.05, help="Highest acceptable voltage, p.u."),
    max_loading_pct: float = typer.Option(100.0, help="Highest acceptable line/transformer loading, %."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the figures."),
) -> None:
    """Run one community three ways (grid only, transactive control, ALEX) on one feeder, side by side."""
    try:
        from trexsim.tc.compare import LABELS, MODES, compare_command

        result = compare_command(config, feeder=feeder, mapping=mapping, out=out, every=every, v_min_pu=v_min_pu,
                                 v_max_pu=v_max_pu, max_loading_pct=max_loading_pct, plots=not no_plots)
    except TrexsimError as exc:
        _fail(exc)
        return
    from rich.markup import escape

    for warning in result.report.get("warnings", []):
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    modes = result.report["modes"]
    table = Table(title=f"{result.report['study']}: three ways on one feeder")
    table.add_column("")
    for m in MODES:
        table.add_column(LABELS[m], justify="right")
    rows = [("peak transformer loading (%)", "peak_transformer_loading_pct", "{:.1f}"),
            ("hours over limits", "hours_over_limit", "{:.2f}"),
            ("hours transformer overloaded", "hours_transformer_overloaded", "{:.2f}"),
            ("lowest voltage (p.u.)", "min_voltage_pu", "{:.4f}"), ("highest voltage (p.u.)", "max_voltage_pu", "{:.4f}"),
            ("losses (kWh)", "losses_kwh", "{:.2f}"), ("violations", "violations", "{}"), ("bills, total ($)", "total_bill", "{:.2f}")]
    for label, key, fmt in rows:
        table.add_row(label, *[fmt.format(modes[m][key]) if modes[m][key] is not None else "-" for m in MODES])
    console.print(table)
    bills = Table(title="bills per participant ($; negative: earned)")
    bills.add_column("participant")
    for m in MODES:
        bills.add_column(LABELS[m], justify="right")
    tc = modes["tc"]
    bills.add_column("of TC: congestion paid", justify="right")
    bills.add_column("refunded", justify="right")
    for pid in result.report["participants"]:
        bills.add_row(pid, *[f"{modes[m]['bills'][pid]:.3f}" for m in MODES],
                      f"{tc['congestion_paid'][pid]:.3f}", f"{tc['congestion_refund'][pid]:.3f}")
    console.print(bills)
    runs = [m for m in MODES if (result.out_dir / m / "run.duckdb").exists()]  # the modes recorded in a database
    if runs:
        from trexsim.records.report import write_report

        try:
            page = write_report([result.out_dir / m for m in runs], result.out_dir / "report.html",
                                labels=[LABELS[m] for m in runs])
            console.print(f"report of {', '.join(LABELS[m] for m in runs)} side by side: [bold]{page}[/]")
        except TrexsimError as exc:
            err_console.print(f"[yellow]warning:[/] no report: {exc}")
    console.print(f"report, figures and each mode's run: [bold]{result.out_dir}[/]")


node_app = typer.Typer(no_args_is_help=True, help="Run one module of a networked simulation.")
app.add_typer(node_app, name="node")


_FABRIC_HELP = "Broker URL: mqtt://[USER:PASS@]HOST:PORT or mqtts://... (or socketio://HOST:PORT)."
_CREDENTIALS_HELP = "credentials.json from `trexsim broker` (else the password comes from $TREXSIM_FABRIC_PASSWORD or the URL)."


def _node_fabric(cfg, fabric: str, role: str, account: Optional[str], namespace: Optional[str], credentials: Optional[Path],
                 timeout: float, ca_file: Optional[Path], **extra):
    from trexsim.fabric import open_fabric
    from trexsim.node import fabric_options

    options = fabric_options(cfg, fabric, role=role, account=account, namespace=namespace, credentials=credentials,
                             timeout_s=timeout, **({"ca_file": str(ca_file)} if ca_file else {}), **extra)
    return open_fabric(fabric, **options)


def _serve_node(body) -> None:
    try:
        body()
    except TrexsimError as exc:
        _fail(exc)
    except ModuleNotFoundError as exc:
        _fail(TrexsimError(f"{exc.name} is not installed: pip install \"trexsim[net]\""))
    except KeyboardInterrupt:
        raise typer.Exit(130)


@node_app.command("participants")
def node_participants(
    config: Path = typer.Argument(..., help="The simulation's config file."),
    fabric: str = typer.Option(..., "--fabric", help=_FABRIC_HELP),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Topic namespace (default trexsim/<study name>)."),
    group: int = typer.Option(0, "--group", min=0, help="Which group of households this process holds (from 0)."),
    groups: int = typer.Option(1, "--groups", min=1, help="How many groups the households are split into."),
    credentials: Optional[Path] = typer.Option(None, "--credentials", help=_CREDENTIALS_HELP),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Give up after this many seconds without a message."),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="CA certificate for an mqtts:// broker."),
) -> None:
    """Hold a group of households (account grp-<g>-of-<G>, or the household's id) until the simulation ends."""
    def body():
        from trexsim.config import load_config
        from trexsim.node import hold_participants, participants_account

        cfg = load_config(config)
        account, index = participants_account(cfg, group, groups)
        network = _node_fabric(cfg, fabric, "participants", account, namespace, credentials, timeout, ca_file,
                               roster_size=len(cfg.expanded_participants()))
        try:
            hold_participants(cfg, network, index)
            network.serve("participants")
        finally:
            network.close()

    _serve_node(body)


@node_app.command("participant")
def node_participant(
    config: Path = typer.Argument(..., help="The simulation's config file."),
    participant_id: str = typer.Option(..., "--id", help="The household's participant id (its account)."),
    fabric: str = typer.Option(..., "--fabric", help=_FABRIC_HELP),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Topic namespace (default trexsim/<study name>)."),
    credentials: Optional[Path] = typer.Option(None, "--credentials", help=_CREDENTIALS_HELP),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Give up after this many seconds without a message."),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="CA certificate for an mqtts:// broker."),
) -> None:
    """Hold one household, logged in as its own account, until the simulation ends."""
    def body():
        from trexsim.config import load_config
        from trexsim.node import hold_participants, participant_account

        cfg = load_config(config)
        account, index = participant_account(cfg, participant_id)
        network = _node_fabric(cfg, fabric, "participants", account, namespace, credentials, timeout, ca_file,
                               roster_size=len(cfg.expanded_participants()))
        try:
            hold_participants(cfg, network, index)
            network.serve("participants")
        finally:
            network.close()

    _serve_node(body)


@node_app.command("market")
def node_market(
    config: Path = typer.Argument(..., help="The simulation's config file."),
    fabric: str = typer.Option(..., "--fabric", help=_FABRIC_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder of the run's database (default runs/<study name>)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Topic namespace (default trexsim/<study name>)."),
    credentials: Optional[Path] = typer.Option(None, "--credentials", help=_CREDENTIALS_HELP),
    timeout: float = typer.Option(300.0, "--timeout", min=0.1, help="Give up after this many seconds without a message."),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="CA certificate for an mqtts:// broker."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the HTML report (report.html)."),
) -> None:
    """Run the market, the grid and the recorder (the run's database, its report.html) until the simulation ends."""
    def body():
        from trexsim.config import load_config
        from trexsim.node import serve_market

        cfg = load_config(config)
        network = _node_fabric(cfg, fabric, "market", "market", namespace, credentials, timeout, ca_file,
                               participant_ids=[pid for pid, _ in cfg.expanded_participants()])
        try:
            out_dir, summary = serve_market(cfg, network, out)
        finally:
            network.close()
        console.print(f"market done: settled {summary['market']['settled_wh']:,} Wh, rejected orders "
                      f"{summary['market']['rejected_orders']}; results in [bold]{out_dir}[/]")
        if not no_report:
            from trexsim.records.report import write_report

            try:
                console.print(f"report: [bold]{write_report(out_dir)}[/]")
            except TrexsimError as exc:  # the run's results stay; only the report is missing
                err_console.print(f"[yellow]warning:[/] no report: {exc}")

    _serve_node(body)


@node_app.command("controller")
def node_controller(
    config: Path = typer.Argument(..., help="The simulation's config file."),
    fabric: str = typer.Option(..., "--fabric", help=_FABRIC_HELP),
    expect: int = typer.Option(..., "--expect", min=1, help="Module processes to wait for before the first round (the market + participant processes)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Topic namespace (default trexsim/<study name>)."),
    credentials: Optional[Path] = typer.Option(None, "--credentials", help=_CREDENTIALS_HELP),
    barrier_timeout: float = typer.Option(10.0, "--barrier-timeout", min=0.01, help="Seconds a round waits for a participant process."),
    timeout: float = typer.Option(120.0, "--timeout", min=0.1, help="Seconds to wait for the modules to join, and for the market each round."),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="CA certificate for an mqtts:// broker."),
) -> None:
    """Drive the clock: episodes and rounds, with the barrier, once the other modules have joined."""
    def body():
        from trexsim.config import load_config
        from trexsim.node import run_controller

        cfg = load_config(config)
        network = _node_fabric(cfg, fabric, "controller", "controller", namespace, credentials, timeout, ca_file,
                               barrier_timeout_s=barrier_timeout)
        try:
            run_controller(cfg, network, expect, wait_s=timeout)
        finally:
            network.close()
        console.print(f"controller done: {cfg.study.episodes} episode(s) of {cfg.study.rounds_per_episode} rounds; "
                      f"{len(network.events)} fabric event(s)")
        for e in network.events:
            console.print(f"  episode {e['episode']} round {e['round']}: {e['account']} {e['event']}")

    _serve_node(body)


@app.command()
def broker(
    config: Path = typer.Argument(..., help="The simulation's config file (its participants get accounts)."),
    port: int = typer.Option(1883, "--port", min=1, max=65535, help="TCP port of the listener."),
    host: str = typer.Option("127.0.0.1", "--host", help="Listen address (0.0.0.0 for every interface; then use TLS or a private network)."),
    directory: Optional[Path] = typer.Option(None, "--dir", help="Folder for the files (default runs/broker-<study name>)."),
    groups: list[int] = typer.Option([], "--groups", help="Also make accounts for a split of the households into G processes (repeatable)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Topic namespace (default trexsim/<study name>)."),
    no_start: bool = typer.Option(False, "--no-start", help="Write the files only."),
    certfile: Optional[Path] = typer.Option(None, "--certfile", help="Server certificate (PEM): the listener speaks TLS (mqtts://)."),
    keyfile: Optional[Path] = typer.Option(None, "--keyfile", help="The certificate's private key (PEM)."),
) -> None:
    """Write a Mosquitto config with per-participant accounts and ACLs, then run Mosquitto on it (Ctrl-C stops it)."""
    from trexsim.config import load_config
    from trexsim.fabric.broker import default_namespace, start_broker, write_broker_files

    try:
        cfg = load_config(config)
        files = write_broker_files([pid for pid, _ in cfg.expanded_participants()],
                                   directory or Path("runs") / f"broker-{cfg.study.name.replace(' ', '_')}",
                                   namespace or default_namespace(cfg.study.name), port=port, host=host, groups=groups,
                                   certfile=certfile, keyfile=keyfile)
        console.print(f"wrote {files.conf}, {files.passwd.name}, {files.acl.name}, {files.credentials.name} (0600) "
                      f"in {files.directory}")
        console.print(f"namespace {files.namespace}; modules: --fabric {files.url} --credentials {files.credentials}")
        if no_start:
            return
        proc = start_broker(files, stdout=None, stderr=None)
    except TrexsimError as exc:
        _fail(exc)
        return
    console.print(f"mosquitto running on [bold]{files.url}[/] (pid {proc.pid}); Ctrl-C stops it")
    import signal

    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())  # stopping this command stops the broker too
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)


study_app = typer.Typer(no_args_is_help=True, help="Reproducible studies.")
app.add_typer(study_app, name="study")


@study_app.command("settlement")
def study_settlement(
    config: Optional[Path] = typer.Argument(None, help="Study config (JSON); default: the T-REX paper's study."),
    quick: bool = typer.Option(False, "--quick", help="A short smoke run (see the config's 'quick' overrides)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Seeds per cell (default: the study's, 10; --quick: 1); the report gives every metric's bootstrap interval over them."),
    out: Path = typer.Option(Path("runs/settlement-study"), "--out", "-o", help="Output folder."),
    workers: int = typer.Option(2, "--workers", "-w", min=1, help="Parallel processes."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Run the cells on Ray: ray://HOST:PORT, or 'local' to start one."),
    credit: Optional[str] = typer.Option(None, "--credit", help="Which action a reward updates: 'order' (the one that placed the order; the default) or 'next_action' (the original TREX-Core agent's)."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="Other cells: 'ratios' (supply:demand 10:1, 6:4, 5:5, 4:6, 1:10) or 'population' (the paper's cells with 2+2, 5+5 and 10+10 agents)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", min=0.0, max=0.999, help="The agents' discount factor (the paper's 0.98; 0: a pure bandit)."),
    learner: Optional[str] = typer.Option(None, "--learner", help="The agents' action choice: 'epsilon_greedy' (the paper's) or 'ucb1'."),
) -> None:
    """The T-REX paper's settlement-mechanism study (M1/M2/M3 x over-supply/over-demand/balanced; any registered mechanism)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from trexsim.config.loader import read_config_text
    from trexsim.studies.settlement import SettlementStudy, run_study

    try:
        if config is None:
            study = SettlementStudy()
        else:
            from pydantic import ValidationError

            try:
                study = SettlementStudy.model_validate(read_config_text(config))
            except ValidationError as exc:
                raise ConfigError([(".".join(str(x) for x in e["loc"]), e["msg"]) for e in exc.errors()], str(config)) from None
        if quick:
            study = study.quick_version()
        if credit is not None:
            if credit not in ("order", "next_action"):
                raise ConfigError([("--credit", f"{credit!r}: choose 'order' or 'next_action'")])
            study = study.model_copy(update={"credit": credit})
        if sweep is not None:
            study = study.with_sweep(sweep)
        if learner is not None:
            if learner not in ("epsilon_greedy", "ucb1"):
                raise ConfigError([("--learner", f"{learner!r}: choose 'epsilon_greedy' or 'ucb1'")])
            study = study.model_copy(update={"learning": study.learning.model_copy(update={"policy": learner}),
                                             "name": f"{study.name}-{learner}"})
        if gamma is not None:
            study = study.model_copy(update={"learning": study.learning.model_copy(update={"discount_factor": gamma}),
                                             "name": f"{study.name}-gamma{gamma:g}"})
        if seeds is None:
            seeds = study.seeds
        cells = len(study.mechanisms) * len(study.scenarios) * seeds
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cells"),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task(study.name, total=cells)
            results = run_study(study, out, seeds=seeds, workers=workers, cluster=cluster,
                                on_progress=lambda r: progress.update(task, advance=1, description=f"{r.mechanism}/{r.scenario}"))
    except TrexsimError as exc:
        _fail(exc)
        return
    import json as _json

    report = _json.loads((out / "results.json").read_text())
    table = Table(title=f"{study.name}: quantity-weighted medians over the last {study.final_episodes} training episodes")
    for col in ("cell", "seed", "bid", "ask", "settle", "greedy\nbid", "greedy\nask", "settled\nshare", "greedy\nsettled",
                "as in\npaper"):
        table.add_column(col, no_wrap=True)
    fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    for c in report["cells"]:
        table.add_row(f"{c['paper'] or c['mechanism']} {c['scenario'].replace('_', '-')}", str(c["seed"]),
                      fmt(c["median_bid"]), fmt(c["median_ask"]), fmt(c["median_settlement"]),
                      fmt(c["greedy_median_bid"]), fmt(c["greedy_median_ask"]), f"{c['settled_share']:.0%}",
                      "-" if c.get("greedy_settled_share") is None else f"{c['greedy_settled_share']:.0%}",
                      _paper_verdict_word(c, quick))
    console.print(table)
    for backend in sorted({c["backend"] for c in report["cells"] if c["backend"] != "compiled"}):
        mechs = sorted({c["mechanism"] for c in report["cells"] if c["backend"] == backend})
        console.print(f"  {', '.join(mechs)}: on the general {backend} (slower; the same histograms)")
    if quick:  # no verdicts: a smoke run cannot converge, so a "no" would look like a failure it is not
        console.print(f"[yellow]--quick: a smoke run of {study.episodes} episodes, far too short for the traders to "
                      "converge, so it gives no verdicts; the full study (without --quick) runs "
                      f"{SettlementStudy().episodes} episodes a cell and compares each with the paper[/]")
    else:
        for cell, text in report["robustness"].items():
            console.print(f"  {cell}: {text}")
    console.print(f"{report['rounds']:,} market rounds in {len(results)} cells; results and figures in [bold]{out}[/]")


def _paper_verdict_word(cell: dict, quick: bool) -> str:
    """The command's "as in paper" column: '-' for a smoke run or a mechanism outside the paper, 'yes', 'no', or
    'no (policy)' where the prices are as in the paper but the policy never stabilised."""
    from trexsim.studies.settlement import row_verdicts

    both, prices = row_verdicts(cell)
    if both is None or quick:
        return "-"
    return "yes" if both else ("no (policy)" if prices else "no")


@study_app.command("community")
def study_community(
    data: Optional[Path] = typer.Option(None, "--data", help="The CityLearn 2022 folder (Building_N.csv, schema.json); "
                                                             "default $TREXSIM_CITYLEARN_DIR or ../shared/data/citylearn-2022."),
    out: Path = typer.Option(Path("runs/community-benchmark"), "--out", "-o", help="Output folder."),
    days: Optional[float] = typer.Option(None, "--days", min=0.1, help="Days from 2016-08-01 (default: every hour of the data, 8,759)."),
    quick: bool = typer.Option(False, "--quick", help="A short smoke run: 3 days, 10 learning passes."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the market's tie-breaks and the learners."),
    legs: Optional[str] = typer.Option(None, "--legs", help="Comma-separated legs (default all: no_battery,rule,optimum,learned)."),
    tariff: str = typer.Option("flat", "--tariff", help="'flat' (the published 0.1449 / 0.069 $/kWh) or 'tou' (an evening peak, 16:00-21:00 at 0.30 $/kWh: headroom for a policy)."),
    holdout: Optional[str] = typer.Option(None, "--holdout", help="Instead of the legs in ALEX: the held-out evaluation of the learned trader on the grid tariff, split 'weeks' (even weeks train, odd weeks test) or 'months' (Aug-Jan train, Feb-Jul test); writes holdout.json and holdout.md."),
    holdout_seeds: int = typer.Option(5, "--holdout-seeds", help="With --holdout: learner seeds --seed .. --seed + N - 1."),
    holdout_passes: int = typer.Option(300, "--holdout-passes", help="With --holdout: training passes over the training episodes."),
    holdout_block_days: int = typer.Option(7, "--holdout-block-days", help="With --holdout: days per episode block (the split's unit)."),
) -> None:
    """The ALEX community benchmark (May and Musilek 2024): 17 CityLearn homes, a year, four legs, the community metrics."""
    from dataclasses import replace

    from trexsim.studies.community import CommunityBenchmark, metrics_table, run_benchmark

    bench = CommunityBenchmark(seed=seed, tariff=tariff)
    if quick:
        bench = bench.quick_version()
    if days is not None:
        bench = replace(bench, days=days)
    if legs is not None:
        bench = replace(bench, legs=tuple(x.strip() for x in legs.split(",") if x.strip()))
    if holdout is not None:
        _study_community_holdout(bench, data, out, holdout, holdout_seeds, holdout_passes, holdout_block_days)
        return
    try:
        with console.status("community benchmark") as status:
            results = run_benchmark(bench, data, out, on_leg=lambda leg: status.update(f"community benchmark: {leg}"))
    except TrexsimError as exc:
        _fail(exc)
        return
    d = results["data"]
    console.print(f"{len(d['homes'])} homes, {d['rounds']:,} hourly rounds from {d['from']} to {d['to']}; "
                  f"legs: {', '.join(results['legs'])}")
    console.print(metrics_table(results), markup=False, highlight=False)
    console.print(f"{results['seconds']:.1f} s; results.json, results.md and figures in [bold]{out}[/]")


def _study_community_holdout(bench, data, out, split, seeds, passes, block_days) -> None:
    from trexsim.studies.community import tariff_periods
    from trexsim.studies.community_holdout import Holdout, holdout_table, run_holdout, with_options

    try:
        tariff_periods(bench.tariff)
        settings = with_options(Holdout(split=split, seeds=seeds, block_days=block_days), passes=passes)
        with console.status("community benchmark, held out"):
            result = run_holdout(bench, settings, data, out)
    except TrexsimError as exc:
        _fail(exc)
        return
    console.print(f"{len(result['homes'])} homes, split {result['split']} ({result['block_days']}-day blocks): "
                  f"{result['rounds']['train']:,} training and {result['rounds']['test']:,} test rounds, "
                  f"{result['test_days']} test days, seeds {result['seeds'][0]}..{result['seeds'][-1]}")
    console.print(holdout_table(result), markup=False, highlight=False)
    console.print(f"{result['seconds']:.1f} s; holdout.json and holdout.md in [bold]{out}[/]")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
