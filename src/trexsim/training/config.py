"""The training config: which community, which learner, which algorithm, how long, which days.

A training config is a JSON file (``//`` comments allowed) validated with pydantic; every problem
is reported with its key path (``ppo.learning_rate: must be in (0, 1]``), as for simulation configs.

Training episodes start at midnight (the simulation's start time of day) of dates drawn from
``train_dates``; the held-out ``eval.days`` (and every date whose episode would overlap one) are
never drawn. The community and its seed stay the same, so a held-out day is an unseen day of the
same households (the realistic profiles depend only on the seed, the participant id and the time).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trexsim.config.loader import parse_config, read_config_text
from trexsim.config.schema import SimulationConfig
from trexsim.errors import ConfigError

__all__ = ["TrainingConfig", "default_energy_value_per_kwh", "load_training_config", "parse_training_config"]


def default_energy_value_per_kwh(config: SimulationConfig) -> float:
    """What a kWh left in the battery at the end of an episode is worth: the mean flat grid price, $/kWh."""
    grid = config.market.grid
    return (grid.buy_price + grid.sell_price) / 2.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


def _date(value: Any) -> str:
    try:
        return _dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ValueError(f"{value!r} is not a date like '2021-07-01'") from None


class DateRange(_Model):
    """Dates from ``start`` to ``end``, both included (local calendar dates of the study's site)."""

    start: str
    end: str

    @field_validator("start", "end", mode="before")
    @classmethod
    def _dates(cls, v: Any) -> str:
        return _date(v)

    @model_validator(mode="after")
    def _ordered(self) -> "DateRange":
        if self.end < self.start:
            raise ValueError("end must not be before start")
        return self

    def dates(self) -> list[_dt.date]:
        first, last = _dt.date.fromisoformat(self.start), _dt.date.fromisoformat(self.end)
        return [first + _dt.timedelta(days=i) for i in range((last - first).days + 1)]


class EvalConfig(_Model):
    """Held-out days: each is one episode of the simulation's length starting on that date."""

    days: list[str] = Field(min_length=1, description="Start dates of the held-out evaluation episodes.")
    deterministic: bool = Field(True, description="Evaluate the policy's mean action (no exploration noise).")
    rule_trader: dict = Field(default_factory=lambda: {"type": "fixed_price", "bid_price": 0.12, "ask_price": 0.10},
                              description="The trader the learner's household gets in the rule-based baseline.")

    @field_validator("days")
    @classmethod
    def _dates(cls, v: list[str]) -> list[str]:
        return [_date(x) for x in v]


class PPOConfig(_Model):
    """Stable-Baselines3 PPO hyperparameters (same names and meaning as ``stable_baselines3.PPO``)."""

    learning_rate: float = Field(3e-4, gt=0, le=1)
    n_steps: int = Field(2048, ge=8, description="Rollout length per environment between updates.")
    batch_size: int = Field(64, ge=2)
    n_epochs: int = Field(10, ge=1, le=1000)
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_range: float = Field(0.2, gt=0, le=1)
    ent_coef: float = Field(0.0, ge=0, le=1)
    vf_coef: float = Field(0.5, ge=0, le=10)
    max_grad_norm: float = Field(0.5, gt=0, le=100)
    net_arch: list[int] = Field(default_factory=lambda: [64, 64], min_length=1, description="Hidden layer widths.")
    log_std_init: float = Field(0.0, ge=-10, le=2, description="Initial log standard deviation of the action noise.")
    initial_action: list[float] | None = Field(
        None, description="Mean action of the untrained policy (the bias of its last layer), e.g. [0, -1, 0, -1, 0]: "
                          "no orders and a held battery; null: SB3's default (all 0).")

    @field_validator("initial_action")
    @classmethod
    def _in_box(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not -1 <= x <= 1 for x in v):
            raise ValueError("every value must be in [-1, 1]")
        return v

    @field_validator("net_arch")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 or w > 4096 for w in v):
            raise ValueError("every layer width must be in [1, 4096]")
        return v


class NormalizeConfig(_Model):
    """SB3 VecNormalize: running mean/std scaling of observations and rewards (saved as vecnormalize.pkl)."""

    observations: bool = True
    rewards: bool = True


class WarmStartConfig(_Model):
    """Fit the policy to the self-consumption rule before PPO (behaviour cloning; action 'residual' only)."""

    rounds: int = Field(20_000, ge=1, le=10**8, description="Environment steps the rule is run for to collect its actions.")
    epochs: int = Field(10, ge=1, le=1000, description="Passes of the fit over what was collected.")


class TrainingConfig(_Model):
    name: str = Field("trexsim-training", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
                      description="Names the output folder runs/<name> (letters, digits, _ . -).")
    simulation: str | dict = Field(description="The community: a simulation config path (relative to this file) or the config inline.")
    learner: str = Field(min_length=1, description="Participant id of the learning agent (an external trader).")
    algorithm: Literal["ppo"] = "ppo"
    action: Literal["full", "residual"] = Field(
        "full", description="full: the env's 5 values (prices, quantities, battery set-point); residual: bid price, ask "
                            "price and set-point, the quantities being the forecast residual after the battery.")
    total_timesteps: int = Field(100_000, ge=1, le=10**10, description="Environment steps (market rounds) to train.")
    seed: int = Field(0, ge=0, description="Seed of the network initialisation, the exploration and the date draws.")
    n_envs: int = Field(1, ge=1, le=64, description="Environments stepped side by side (SB3 DummyVecEnv).")
    train_dates: DateRange = Field(description="Dates training episodes may start on (held-out days excluded).")
    eval: EvalConfig
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    warm_start: WarmStartConfig | None = Field(None, description="Start from the self-consumption rule (action 'residual').")
    energy_value_per_kwh: float | None = Field(
        None, ge=0, le=10, description="$/kWh of the energy left in the battery at the end of an episode (added to the last "
                                       "reward and used for the adjusted bill); null: the mean of the grid's buy and sell prices.")
    checkpoint_every_steps: int = Field(10_000, ge=1, description="Save the model every this many environment steps.")
    out_dir: str | None = Field(None, description="Output folder (default runs/<name>); relative to the current directory.")

    # filled by the loader: the validated community, and the folder relative paths start from
    _simulation: SimulationConfig | None = None

    @property
    def energy_value(self) -> float:
        """$/kWh of the battery's end-of-episode energy (see ``energy_value_per_kwh``)."""
        return default_energy_value_per_kwh(self.simulation_config) if self.energy_value_per_kwh is None else self.energy_value_per_kwh

    @property
    def simulation_config(self) -> SimulationConfig:
        assert self._simulation is not None, "use load_training_config / parse_training_config"
        return self._simulation

    def train_start_dates(self) -> list[_dt.date]:
        """Dates a training episode may start on: the range less every overlap with a held-out episode."""
        days = self.simulation_config.study.days
        span = _dt.timedelta(days=max(1, int(-(-days // 1))))  # whole calendar days an episode touches
        held = [_dt.date.fromisoformat(d) for d in self.eval.days]
        return [d for d in self.train_dates.dates() if all(d + span <= h or h + span <= d for h in held)]


def _message(err: dict) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key (check its spelling in docs/training.md)"
    if kind == "missing":
        return "required key is missing"
    for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if name in ctx:
            return f"must be {op} {ctx[name]:g}"
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg[:1].lower() + msg[1:] if msg else msg


def _key_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if item in ("str", "dict[any,any]"):  # pydantic names the member of ``str | dict`` it tried
            continue
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
    return "".join(parts)


def parse_training_config(data: Any, source: str | None = None, base_dir: str | Path | None = None) -> TrainingConfig:
    """Validate a decoded training config; ``base_dir`` resolves a relative ``simulation`` path."""
    if not isinstance(data, dict):
        raise ConfigError([("", "a training config must be a JSON object")], source)
    try:
        cfg = TrainingConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            path = _key_path(tuple(e["loc"]))
            if (path, _message(e)) not in problems:
                problems.append((path, _message(e)))
        raise ConfigError(problems, source) from None
    # the community: its own problems are reported under 'simulation.'
    if isinstance(cfg.simulation, str):
        path = Path(cfg.simulation)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        from trexsim.config.loader import load_config

        try:
            sim = load_config(path)
        except ConfigError as exc:
            raise ConfigError([(f"simulation ({exc.source})" + (f".{p}" if p else ""), m) for p, m in exc.problems], source) from None
        cfg.simulation = str(path.resolve())
    else:
        try:
            sim = parse_config(cfg.simulation)
        except ConfigError as exc:
            raise ConfigError([("simulation" + (f".{p}" if p else ""), m) for p, m in exc.problems], source) from None
    problems = []
    members = dict(sim.expanded_participants())
    spec = members.get(cfg.learner)
    width = 5 if cfg.action == "full" else 3
    if cfg.ppo.initial_action is not None and len(cfg.ppo.initial_action) != width:
        names = ("bid price, bid quantity, ask price, ask quantity, battery set-point" if width == 5 else
                 "bid price, ask price, battery set-point")
        problems.append(("ppo.initial_action", f"must be {width} values with action {cfg.action!r}: {names}"))
    if cfg.warm_start is not None and cfg.action != "residual":
        problems.append(("warm_start", "needs action 'residual' (the rule is written as a residual action)"))
    if cfg.ppo.batch_size > cfg.ppo.n_steps * cfg.n_envs:
        problems.append(("ppo.batch_size", f"must not exceed n_steps x n_envs = {cfg.ppo.n_steps * cfg.n_envs}"))
    if spec is None:
        problems.append(("learner", f"{cfg.learner!r} is not a participant of the simulation; participants: {', '.join(members)}"))
    elif cfg.learner not in sim.participants:
        problems.append(("learner", f"{cfg.learner!r} is one of the copies of a 'count' entry: give the learner an entry of its own"))
    elif spec.trader.type != "external":
        problems.append(("learner", f"participant {cfg.learner!r} needs trader type 'external' (it has {spec.trader.type!r})"))
    elif cfg.action == "residual" and spec.trader.action != "continuous":
        problems.append(("action", "'residual' needs the learner's trader to have action 'continuous'"))
    if spec is None or cfg.learner not in sim.participants:
        pass
    elif cfg.eval.rule_trader.get("type") == "external":
        problems.append(("eval.rule_trader.type", "the rule-based baseline cannot be 'external'"))
    else:  # the baseline community must be a valid config too: its trader's problems are named under eval.rule_trader
        data = sim.model_dump(mode="json", by_alias=False)
        data["participants"][cfg.learner]["trader"] = cfg.eval.rule_trader
        if data["participants"][cfg.learner].get("storage"):
            data["participants"][cfg.learner]["storage"]["policy"] = "self_consumption"
        prefix = f"participants.{cfg.learner}.trader"
        try:
            parse_config(data)
        except ConfigError as exc:
            problems.extend(("eval.rule_trader" + p[len(prefix):] if p.startswith(prefix) else f"simulation.{p}", m)
                            for p, m in exc.problems)
    cfg._simulation = sim
    if not problems and not cfg.train_start_dates():
        problems.append(("train_dates", "no training date left once the held-out eval.days are taken out"))
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_training_config(path: str | Path) -> TrainingConfig:
    """Read and validate a training config file (JSON, ``//`` comments allowed)."""
    path = Path(path)
    return parse_training_config(read_config_text(path), str(path), path.parent)
