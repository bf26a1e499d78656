"""The simulation config: one JSON document, validated by these pydantic models.

Sections follow the original T-REX configs (``study``, ``market``, ``participants``)
so that its users feel at home; docs/configuration.md lists every key and every
difference from TREX-Core's keys.

Units are in the key names: ``_w`` watts, ``_wh`` watt-hours, ``_kwh`` kilowatt-hours,
prices in $/kWh, ``_s`` seconds.
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_STRICT = ConfigDict(extra="forbid", populate_by_name=True)


class _Model(BaseModel):
    model_config = _STRICT


def _parse_local(value: str) -> _dt.datetime | None:
    text = value.strip()
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):  # TREX-Core wrote '2018-07-01 0:0:0'
        try:
            return _dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------- study
class StudyConfig(_Model):
    name: str = Field("trexsim-study", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$",
                      description="Name of the study; names the output folder (letters, digits, _ . - and spaces).")
    description: str = ""
    start_datetime: str = Field(
        "2021-07-01 00:00:00",
        description="Local start time 'YYYY-MM-DD HH:MM:SS' in the study timezone (first round starts here).",
    )
    timezone: str = Field("America/Edmonton", description="IANA timezone of the site, e.g. 'America/Edmonton'.")
    days: float = Field(1, gt=0, description="Length of one episode in days.")
    episodes: int = Field(1, ge=1, description="Episodes; each repeats the same period.")
    seed: int = Field(0, ge=0, description="Seed of every random choice in the run.")
    interval_s: int = Field(60, gt=0, le=86400, description="Length of one market round in seconds.")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as 'America/Edmonton')")
        return value

    @field_validator("start_datetime")
    @classmethod
    def _parse_start(cls, value: str) -> str:
        parsed = _parse_local(value)
        if parsed is None:
            raise ValueError(f"{value!r} is not a date-time like '2021-07-01 00:00:00'")
        if parsed.tzinfo is not None:
            raise ValueError("give a local time without an offset; the timezone key says where")
        return parsed.isoformat(sep=" ")

    @model_validator(mode="after")
    def _whole_rounds(self) -> "StudyConfig":
        total_s = self.days * 86400
        if abs(total_s / self.interval_s - round(total_s / self.interval_s)) > 1e-9:
            raise ValueError("days * 86400 must be a whole number of interval_s rounds")
        return self

    @property
    def rounds_per_episode(self) -> int:
        return int(round(self.days * 86400 / self.interval_s))

    @property
    def start_utc_s(self) -> int:
        local = _dt.datetime.fromisoformat(self.start_datetime).replace(tzinfo=zoneinfo.ZoneInfo(self.timezone))
        return int(local.timestamp())


# --------------------------------------------------------------------------- market
class TouPeriod(_Model):
    """A time-of-use period: in these months and local hours the grid prices are these."""

    months: list[Annotated[int, Field(ge=1, le=12)]] = Field(default_factory=lambda: list(range(1, 13)), min_length=1)
    hours: list[Annotated[int, Field(ge=0, le=23)]] = Field(default_factory=lambda: list(range(24)), min_length=1)
    weekdays_only: bool = False
    buy_price: float = Field(gt=0, le=10)
    sell_price: float = Field(ge=0, le=10)

    @model_validator(mode="after")
    def _no_money_pump(self) -> "TouPeriod":
        if self.sell_price > self.buy_price:
            raise ValueError("sell_price must not exceed buy_price")
        return self


class GridConfig(_Model):
    """The grid: an infinite bus reached through net billing."""

    buy_price: float | None = Field(None, gt=0, le=10, description="$/kWh a participant pays the grid.")
    sell_price: float | None = Field(None, ge=0, le=10, description="$/kWh the grid pays for exported energy.")
    price: float | None = Field(None, ge=0, le=10, description="TREX-Core style base (sell) price, $/kWh.")
    fee_ratio: float | None = Field(None, ge=0, description="TREX-Core style: buy = price * (1 + fee_ratio).")
    tou: list[TouPeriod] = Field(default_factory=list, description="Time-of-use periods; later ones win.")

    @model_validator(mode="after")
    def _resolve_prices(self) -> "GridConfig":
        if self.fee_ratio is not None and self.price is None:
            raise ValueError("fee_ratio needs price (TREX-Core style: buy = price * (1 + fee_ratio))")
        if self.price is not None and (self.buy_price is not None or self.sell_price is not None):
            raise ValueError("give either price (+ fee_ratio) or buy_price/sell_price, not both")
        if self.price is not None:
            if self.sell_price is None:
                self.sell_price = round(self.price, 4)
            if self.buy_price is None:
                self.buy_price = round(self.price * (1 + (self.fee_ratio or 0.0)), 4)
        if self.buy_price is None:
            self.buy_price = 0.1449
        if self.sell_price is None:
            self.sell_price = 0.069
        if not 0 < self.buy_price <= 10:
            raise ValueError(f"the buy price works out to {self.buy_price:g} $/kWh; it must be in (0, 10]")
        if not 0 <= self.sell_price <= 10:
            raise ValueError(f"the sell price works out to {self.sell_price:g} $/kWh; it must be in [0, 10]")
        if self.sell_price > self.buy_price:
            raise ValueError("sell_price must not exceed buy_price (the grid would be a money pump)")
        return self


# the largest order quantity [Wh] and price [$/kWh] a market may accept, and the largest power [W]
# and scale factor of a participant's profile and devices: with them no energy total of a run can
# overflow int64 Wh and no money total loses float64 precision (docs/configuration.md, "Why these bounds")
MAX_ORDER_WH = 1_000_000_000
MAX_PRICE_PER_KWH = 1000.0
MAX_POWER_W = 1e9
MAX_SCALE = 1000.0


class MarketConfig(_Model):
    type: Literal["alex", "tc"] = Field(
        "alex", description="'alex': prices from the grid's tariff; 'tc': transactive control — the TC market "
                            "publishes the grid buy price per horizon from predicted powerflow (section 'tc').")
    id: str = "alex"
    settlement: str = Field(
        "average_price",
        description="Settlement mechanism: average_price (M1), exact_match (M2), exact_price (M3), or a registered one.",
    )
    close_steps: int = Field(1, ge=1, le=1440, description="Orders placed in round t are for delivery in t + close_steps.")
    grid: GridConfig = Field(default_factory=GridConfig)
    # bounds: an order is at most 1e9 Wh at 1000 $/kWh, so no total can overflow int64 Wh or lose
    # float64 precision in $ (docs/configuration.md, "Why these bounds")
    price_tick: float = Field(1e-4, ge=1e-9, le=1.0, description="Prices are rounded to this tick ($/kWh) on intake.")
    allowed_prices: list[Annotated[float, Field(ge=0, le=MAX_PRICE_PER_KWH)]] | None = Field(
        None, min_length=1, description="If set, orders at any other price are rejected at intake (the price list of exact_match studies)."
    )
    min_price: float = Field(0.0, ge=0, description="Lowest accepted order price, $/kWh.")
    max_price: float = Field(10.0, gt=0, le=MAX_PRICE_PER_KWH, description="Highest accepted order price, $/kWh.")
    max_order_wh: int = Field(10_000_000, gt=0, le=MAX_ORDER_WH, description="Largest accepted order quantity, Wh.")
    max_ahead_rounds: int = Field(1440, ge=0, description="How far beyond close_steps an order may reach, in rounds.")
    tie_break: Literal["random", "pro_rata", "submission"] = Field(
        "random",
        description="Who trades first among orders at equal prices: 'random' (a fresh order of the participants each "
                    "round, drawn from study.seed), 'pro_rata' (equal-price orders share the energy their price level "
                    "trades in proportion to their quantities, whole Wh by largest remainder) or 'submission' (the "
                    "roster order).")
    members: list[str] | None = Field(
        None, description="Who trades here (in a config with several 'markets'): participant ids or names of "
                          "participant groups (a key of 'participants' with a count). null: everyone.")
    parent: str | None = Field(
        None, description="The market (an id in 'markets') that takes the orders this one leaves unmatched, for the "
                          "same delivery round, before the grid takes the rest: a street's market below a community's.")

    @field_validator("settlement")
    @classmethod
    def _known_mechanism(cls, value: str) -> str:
        from trexsim.engine.mechanisms import registered_mechanisms

        names = registered_mechanisms()
        if value not in names:
            raise ValueError(f"unknown settlement mechanism {value!r}; choose one of {', '.join(sorted(names))}")
        return value

    @model_validator(mode="after")
    def _price_window(self) -> "MarketConfig":
        if self.min_price >= self.max_price:
            raise ValueError("min_price must be below max_price")
        return self


# --------------------------------------------------------------------------- profiles
class _ProfileBase(_Model):
    load_scale: float = Field(1.0, ge=0, le=MAX_SCALE, description="Multiplies consumption.")
    generation_scale: float = Field(1.0, ge=0, le=MAX_SCALE, description="Multiplies generation.")


class FlatProfile(_ProfileBase):
    """Constant power, e.g. 60000 W for 60 s rounds = 1000 Wh per round."""

    type: Literal["flat"]
    load_w: float = Field(0.0, ge=0, le=MAX_POWER_W)
    generation_w: float = Field(0.0, ge=0, le=MAX_POWER_W)


class RealisticProfile(_ProfileBase):
    """The built-in seeded generator: BDEW H25 household load with minute-level variability, PV from pvlib."""

    type: Literal["realistic"]
    annual_load_kwh: float = Field(4000.0, gt=0, le=MAX_POWER_W * 8.76, description="Annual household consumption, kWh.")
    pv_capacity_kw: float = Field(5.0, ge=0, le=MAX_POWER_W / 1000, description="PV DC nameplate, kW (0: no PV).")
    latitude: float = Field(53.5461, ge=-90, le=90)
    longitude: float = Field(-113.4938, ge=-180, le=180)
    altitude_m: float = Field(668.0)
    tilt_deg: float = Field(35.0, ge=0, le=90)
    azimuth_deg: float = Field(180.0, ge=0, lt=360)
    cloudiness: float = Field(0.3, ge=0, le=1, description="0 clear sky every day, 1 heavily overcast.")


class FileProfile(_ProfileBase):
    """Imported metered data (CSV or Parquet, long format), resampled to the round interval."""

    type: Literal["file"]
    path: str = Field(description="CSV or Parquet file; relative paths are relative to the config file.")
    id: str | None = Field(None, description="Participant id in the file (default: this participant's id).")
    timestamp_column: str = "timestamp"
    id_column: str = "participant_id"
    timezone: str | None = Field(None, description="Timezone of naive timestamps (default: the study's).")
    timestamp_marks: Literal["start", "end"] = Field("start", description="Whether a timestamp marks an interval's start or end.")
    upsample: Literal["hold", "interpolate"] = Field("hold", description="How coarser data is spread over finer rounds.")
    dst_slots: Literal["clock", "fixed"] = Field(
        "clock", description="'clock': naive local times follow the clock (the hour skipped when DST starts absent, the "
                             "repeated hour twice); 'fixed': every day has the same slots (e.g. 48): the skipped hour's "
                             "slots hold zeros and are dropped, the repeated hour appears once and serves both.")
    plausibility: Literal["warn", "error", "off"] = Field(
        "warn", description="Plausibility checks (peak power, yearly energy, PV at night, PV centroid vs solar noon): "
                            "warnings, errors or off.")
    latitude: float | None = Field(None, ge=-90, le=90, description="PV site for the solar checks [deg] (default: the study timezone's location).")
    longitude: float | None = Field(None, ge=-180, le=180, description="PV site for the solar checks [deg] (default: the study timezone's location).")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {value!r}")
        return value


ProfileConfig = Annotated[Union[FlatProfile, RealisticProfile, FileProfile], Field(discriminator="type")]


# --------------------------------------------------------------------------- devices
class BatteryConfig(_Model):
    """A battery behind the participant's meter."""

    type: Literal["battery", "Bess"] = "battery"
    capacity_wh: float = Field(13500.0, gt=0, le=MAX_POWER_W * 100, alias="capacity", description="Usable capacity, Wh.")
    power_w: float | None = Field(None, gt=0, le=MAX_POWER_W, alias="power", description="Charge and discharge limit, W.")
    charge_power_w: float | None = Field(None, gt=0, le=MAX_POWER_W)
    discharge_power_w: float | None = Field(None, gt=0, le=MAX_POWER_W)
    efficiency: float = Field(0.95, gt=0, le=1, description="One-way efficiency; round trip is its square.")
    monthly_self_discharge: float = Field(0.02, ge=0, lt=1, alias="monthly_sdr", description="Fraction lost per 30 days.")
    initial_soc: float = Field(0.5, ge=0, le=1, description="State of charge at the start of each episode (fraction).")
    policy: Literal["self_consumption", "idle", "external"] = Field(
        "self_consumption",
        description="self_consumption: charge from surplus PV, discharge to cover load; external: follow the set-point "
                    "of an external (RL) trader; idle: never used.",
    )

    @model_validator(mode="after")
    def _powers(self) -> "BatteryConfig":
        default = self.power_w if self.power_w is not None else 5000.0
        if self.charge_power_w is None:
            self.charge_power_w = default
        if self.discharge_power_w is None:
            self.discharge_power_w = default
        return self


# --------------------------------------------------------------------------- devices
class DeviceSettings(_Model):
    """The base of a device's config (a participant's ``devices`` list): a ``type: Literal["name"]`` field and
    the device's own settings. Plug-in devices subclass it (``trexsim.devices.register_device``)."""


class EVConfig(DeviceSettings):
    """An electric vehicle charged at home: plugged in each evening, charged at the charger's power until its
    day's energy is in (or it leaves), from the arrival or from a timer, or (``charging: "smart"``) in the
    cheapest rounds of a TC price schedule (``trexsim.devices.ev``)."""

    type: Literal["ev"]
    daily_energy_wh: float = Field(8000.0, gt=0, le=MAX_POWER_W * 24, description="Energy put into the car each day, Wh (e.g. 40 km at 0.2 kWh/km).")
    charge_power_w: float = Field(7200.0, gt=0, le=MAX_POWER_W, description="The charger's power at the meter, W.")
    efficiency: float = Field(0.9, gt=0, le=1, description="Charger efficiency: the meter draws daily_energy_wh / efficiency.")
    arrival_hour: float = Field(18.0, ge=0, lt=24, description="Local time the car is plugged in, hours after midnight.")
    departure_hour: float = Field(7.5, ge=0, lt=24, description="Local time it leaves (the next day when not after arrival_hour).")
    charge_start_hour: float | None = Field(
        None, ge=0, lt=24, description="A charging timer: charging starts at this local time, the first after the arrival (null: at the arrival).")
    spread_minutes: float = Field(0.0, ge=0, le=180, description="Standard deviation of each day's arrival and departure (normal, kept within 3 sd), minutes.")
    energy_spread: float = Field(0.0, ge=0, le=1, description="Relative standard deviation of each day's energy (normal, kept within 3 sd and >= 0).")
    charging: Literal["scheduled", "smart"] = Field(
        "scheduled", description="'scheduled': from the arrival (or the timer) at full power; 'smart': "
                                 "price-responsive, each session's energy in the cheapest rounds of a TC price "
                                 "schedule before the departure (where no schedule exists: as 'scheduled', with a "
                                 "warning; docs/configuration.md, 'devices').")

    @field_validator("charging")
    @classmethod
    def _smart_has_no_timer(cls, value: str, info):
        if value == "smart" and info.data.get("charge_start_hour") is not None:
            raise ValueError("'smart' charging picks its own rounds: leave charge_start_hour unset (null)")
        return value

    @model_validator(mode="after")
    def _window(self) -> "EVConfig":
        if self.arrival_hour == self.departure_hour:
            raise ValueError("departure_hour equals arrival_hour: the car would never be plugged in")
        return self


_DEVICE_MODELS: list[type[_Model]] = [EVConfig]


def _device_union():
    members = tuple(_DEVICE_MODELS)
    return members[0] if len(members) == 1 else Annotated[Union[members], Field(discriminator="type")]


DeviceConfig = _device_union()


def add_device_config(model: type[_Model]) -> None:
    """Make ``model`` one of the configs a participant's ``devices`` may hold (a plug-in's), and rebuild the
    config models that hold it, so that it validates with errors named by key like a built-in's."""
    if model in _DEVICE_MODELS:
        return
    _DEVICE_MODELS.append(model)
    annotation = list[_device_union()]
    ParticipantConfig.model_fields["devices"].annotation = annotation
    ParticipantConfig.__annotations__["devices"] = annotation
    ParticipantConfig.model_rebuild(force=True)
    SimulationConfig.model_rebuild(force=True)


# --------------------------------------------------------------------------- traders
class GridOnlyTrader(_Model):
    """Never trades in the market: the net-billing baseline."""

    type: Literal["grid_only", "baseline_agent"]


class FixedPriceTrader(_Model):
    """Bids its forecast residual load and asks its forecast residual generation at fixed prices."""

    type: Literal["fixed_price", "basic_trader"]
    bid_price: float = Field(0.12, gt=0, le=10, description="$/kWh offered for energy bought.")
    ask_price: float = Field(0.10, gt=0, le=10, description="$/kWh asked for energy sold.")
    battery_ask_price: float | None = Field(
        None, gt=0, le=10, description="If set, the battery's planned discharge is offered in the dispatchable pool at this price."
    )
    bid_pool: Literal["non_dispatch", "dispatch"] = Field("non_dispatch", description="Pool bids buy from.")


class PriceGrid(_Model):
    """Evenly spaced prices an agent chooses from, both ends included [$/kWh]."""

    min_price: float = Field(0.07, ge=0, le=10)
    max_price: float = Field(0.14, gt=0, le=10)
    count: int = Field(100, ge=2, le=100_000)

    @model_validator(mode="after")
    def _ordered(self) -> "PriceGrid":
        if self.min_price >= self.max_price:
            raise ValueError("min_price must be below max_price")
        return self


class Annealing(_Model):
    """Per-episode multipliers (T-REX paper: 0.98), applied from ``after_episode`` on."""

    learning_rate: float = Field(1.0, gt=0, le=1)
    exploration: float = Field(1.0, gt=0, le=1)
    after_episode: int = Field(0, ge=0, description="First episode whose start applies the multipliers is after_episode + 1.")


class QLearningTrader(_Model):
    """Tabular Q-learning (the T-REX paper's bandit agent): a bid-price and an ask-price table per agent.

    Quantity is the forecast residual load (bid) or generation (ask) for the delivery round;
    the action is a price from ``prices``; the reward is that delivery's net profit in $.
    """

    type: Literal["q_learning", "qlearn_bandit"]
    prices: PriceGrid = Field(default_factory=PriceGrid)
    learning_rate: float = Field(0.1, gt=0, le=1, description="alpha")
    discount_factor: float = Field(0.98, ge=0, lt=1, description="gamma")
    exploration: float = Field(0.1, ge=0, le=1, description="epsilon of the epsilon-greedy behaviour policy")
    policy: Literal["epsilon_greedy", "ucb1"] = Field(
        "epsilon_greedy", description="How a price is chosen while learning: epsilon-greedy (the paper's), or UCB1 "
                                      "(Auer, Cesa-Bianchi and Fischer 2002: the highest Q + ucb_c sqrt(ln t / n_a); "
                                      "every price tried once first; 'exploration' unused).")
    ucb_c: float = Field(0.01, gt=0, le=100, description="ucb1: the exploration bonus's scale, $ (rewards are $ a round).")
    anneal: Annealing = Field(default_factory=Annealing)
    learning: bool = Field(True, description="False: act greedily and never update (evaluation).")
    greedy_after_episode: int | None = Field(None, ge=0, description="From the episode after this one: greedy, no updates.")
    q_table: str | None = Field(None, description="A q_tables.npz saved by an earlier run, to continue training or evaluate.")
    credit: Literal["order", "next_action"] = Field(
        "order", description="Which action a delivery's reward updates: 'order', the action that placed the order "
                             "for it; 'next_action', the action chosen in the round the reward arrives (the original "
                             "TREX-Core agent's credit assignment). The same for every q_learning trader of a run.")


class ExternalObservation(_Model):
    """Optional values an external agent observes after the 13 of every observation (docs/envs.md
    "Observation"); all off by default, so the observation is the 13 values."""

    pending_setpoint: bool = Field(
        False, description="The battery set-points chosen for delivery rounds not yet delivered (market.close_steps "
                           "of them, soonest first) / the charge or discharge limit.")
    tariff_ahead_h: int = Field(0, ge=0, le=48, description="Grid buy, then sell prices one to this many hours after "
                                                          "the delivery round / max_price.")
    forecast_h: int = Field(0, ge=0, le=48, description="Own load, then generation, for each of this many hours after "
                                                      "the delivery round (the hour's mean Wh a round) / "
                                                      "max_quantity_wh, with forecast_noise.")
    forecast_noise: float = Field(0.1, ge=0, le=2, description="Relative standard deviation of the forecasts' "
                                                              "multiplicative lognormal noise (0: the exact profile).")


class RewardShaping(_Model):
    """Potential-based shaping of an external agent's reward (Ng, Harada and Russell 1999) with the value of its
    stored energy: ``r' = r + gamma * Phi(s') - Phi(s)``, ``Phi = stored_energy_usd_per_kwh x stored kWh``. With
    the learner's own discount as ``gamma`` it changes no optimal policy; it credits a charge when it is made,
    not hours later when the energy is used (docs/envs.md "Reward shaping")."""

    stored_energy_usd_per_kwh: float = Field(..., ge=0, le=10, description="Value of a kWh in the battery, $.")
    gamma: float = Field(0.99, gt=0, le=1, description="The learner's discount factor (policy invariance needs it).")


class ExternalTrader(_Model):
    """Orders (and, with ``storage.policy: external``, the battery) come from outside: an RL agent
    driving the simulation through :mod:`trexsim.envs`."""

    type: Literal["external"]
    action: Literal["continuous", "discrete"] = Field("continuous", description="Box in [-1, 1] or MultiDiscrete levels.")
    min_price: float = Field(0.0, ge=0, le=10, description="Price of the lowest action, $/kWh.")
    max_price: float = Field(0.3, gt=0, le=10, description="Price of the highest action, $/kWh.")
    max_quantity_wh: int = Field(2000, gt=0, le=MAX_ORDER_WH, description="Quantity of the largest order action, Wh per round.")
    price_levels: int = Field(21, ge=2, le=1000, description="Discrete actions: prices from min to max.")
    quantity_levels: int = Field(11, ge=2, le=1000, description="Discrete actions: quantities from 0 to max.")
    battery_levels: int = Field(11, ge=3, le=1001, description="Discrete actions: set-points from full discharge to full charge (odd: 0 is a level).")
    reward: Literal["net_profit", "savings"] = Field(
        "net_profit", description="net_profit: the delivery's net profit, $; savings: its grid-only cost minus its net cost, $.")
    observe: ExternalObservation = Field(default_factory=ExternalObservation,
                                         description="Optional values observed after the 13 (docs/envs.md).")
    shaping: RewardShaping | None = Field(None, description="Potential-based reward shaping with the stored "
                                                            "energy's value (null: none).")

    @model_validator(mode="after")
    def _window(self) -> "ExternalTrader":
        if self.min_price >= self.max_price:
            raise ValueError("min_price must be below max_price")
        return self


class TraderSettings(_Model):
    """The base of a plug-in trader's config model (``trexsim.agents.base.register_trader``): a
    ``type: Literal["name", ...]`` field and the trader's own settings; unknown keys are errors, as
    everywhere in a config."""


_TRADER_MODELS: list[type[_Model]] = [GridOnlyTrader, FixedPriceTrader, QLearningTrader, ExternalTrader]
TraderConfig = Annotated[Union[tuple(_TRADER_MODELS)], Field(discriminator="type")]


def add_trader_config(model: type[_Model]) -> None:
    """Make ``model`` one of the configs a participant's ``trader`` may be (a plug-in's), and rebuild the
    config models that hold it, so that it validates with errors named by key like a built-in's."""
    if model in _TRADER_MODELS:
        return
    _TRADER_MODELS.append(model)
    members = Union[tuple(_TRADER_MODELS)]
    ParticipantConfig.model_fields["trader"].annotation = members   # (the field keeps its discriminator)
    ParticipantConfig.__annotations__["trader"] = Annotated[members, Field(discriminator="type")]
    ParticipantConfig.model_rebuild(force=True)
    SimulationConfig.model_rebuild(force=True)


class ParticipantConfig(_Model):
    type: Literal["residential", "Residential"] = "residential"
    profile: ProfileConfig
    storage: BatteryConfig | None = None
    devices: list[DeviceConfig] = Field(
        default_factory=list, description="Devices behind the meter besides the battery (an EV, plug-ins' devices): each adds "
                                          "its energy to the household's metered load or generation (docs/configuration.md, 'devices').")
    trader: TraderConfig = Field(default_factory=lambda: GridOnlyTrader(type="grid_only"))
    count: int = Field(1, ge=1, le=1_000_000, description="Copies of this household, named '<id>-1' ... '<id>-N' (numbers zero-padded to N's width).")

    @model_validator(mode="after")
    def _external_battery(self) -> "ParticipantConfig":
        if self.storage is not None and self.storage.policy == "external" and self.trader.type != "external":
            raise ValueError("storage.policy 'external' needs an external trader to give the set-points")
        return self


# --------------------------------------------------------------------------- records
class RecordsConfig(_Model):
    level: Literal["full", "summary"] = Field("full", description="full: every order, settlement and meter row.")
    batch_rounds: int = Field(1440, ge=1, description="Rounds buffered before a write to the database.")
    plots: bool = True


# --------------------------------------------------------------------------- powerflow (optional)
class PowerflowLimits(_Model):
    v_min_pu: float = Field(0.95, gt=0, lt=2, description="Lowest acceptable bus voltage, p.u.")
    v_max_pu: float = Field(1.05, gt=0, lt=2, description="Highest acceptable bus voltage, p.u.")
    max_loading_pct: float = Field(100.0, gt=0, description="Highest acceptable line/transformer loading, % of rating.")

    @model_validator(mode="after")
    def _ordered(self) -> "PowerflowLimits":
        if self.v_min_pu >= self.v_max_pu:
            raise ValueError("v_min_pu must be below v_max_pu")
        return self


class PowerflowConfig(_Model):
    """A live powerflow module on OpenDSS (needs ``trexsim[powerflow]``); see docs/powerflow.md."""

    feeder: str | dict[str, Any] | None = Field(
        None, description="An OpenDSS .dss circuit, a built-in test feeder ('builtin:european-lv', 'builtin:ieee13'), "
                          "a .json file of feeder-generator parameters, the parameters themselves, or null: a "
                          "generated feeder with one house per participant.")
    mapping: str | dict[str, str | list[str]] | None = Field(
        None, description="Participant id -> circuit load name(s), or a JSON file of it (needed with a .dss circuit "
                          "whose loads are not named after the participants).")
    every: int = Field(1, ge=1, description="Solve every k-th round; a solved round stands for the k rounds from it.")
    limits: PowerflowLimits = Field(default_factory=PowerflowLimits)
    pf_import: float = Field(0.95, gt=0, le=1, description="Power factor of imports (lagging).")
    pf_export: float = Field(1.0, gt=0, le=1, description="Power factor of exports (absorbing vars; 1: none).")
    detail: bool = Field(False, description="Also record every bus voltage and element loading of every solved round.")
    engine: Literal["opendss"] = "opendss"
    solver: Literal["auto", "inline", "process"] = Field(
        "auto", description="Where the solves run: in the round loop's thread, or beside it in a process of its own (forked); "
                            "auto: a process where the machine gives this run a second CPU core (and can fork), else inline.")

    @field_validator("feeder")
    @classmethod
    def _feeder_parameters(cls, value):
        from trexsim.powerflow.builtin import builtin_feeder, is_builtin

        if is_builtin(value):
            from trexsim.powerflow.errors import PowerflowError

            try:
                builtin_feeder(value, "feeder")
            except PowerflowError as exc:
                raise ValueError(str(exc).removeprefix("feeder: ")) from None
        if isinstance(value, dict):
            from trexsim.powerflow.errors import PowerflowError
            from trexsim.powerflow.feeder import FeederSpec

            try:
                FeederSpec.from_dict(value, "feeder")
            except PowerflowError as exc:
                raise ValueError(str(exc)) from None
        return value


# --------------------------------------------------------------------------- transactive control (optional)
class CongestionPricing(_Model):
    """The congestion component of the TC price (docs/powerflow.md states the formula)."""

    type: str = Field("linear", description="A registered congestion component ('linear' is built in).")
    loading_threshold_pct: float = Field(60.0, ge=0, description="Predicted transformer loading above which it rises, %.")
    loading_price: float = Field(0.5, ge=0, description="$/kWh added per 100 % of loading above the threshold.")
    voltage_threshold_pu: float = Field(0.03, ge=0, description="Predicted voltage deviation |V - 1| above which it rises, p.u.")
    voltage_price: float = Field(5.0, ge=0, description="$/kWh added per 1 p.u. of deviation above the threshold.")

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        from trexsim.tc.pricing import registered_congestion

        if value not in registered_congestion():
            raise ValueError(f"unknown congestion component {value!r}; choose one of {', '.join(sorted(registered_congestion()))}")
        return value


class FlexibleLoadConfig(_Model):
    share: float = Field(0.2, ge=0, le=1, description="Share of every household's consumption that can be shifted.")
    window_h: float = Field(6.0, gt=0, description="Shifted energy stays within consecutive windows of this many hours.")
    max_power_w: float = Field(3000.0, gt=0, description="Most flexible power a household draws in one round, W.")


class ForecastConfig(_Model):
    """How the TC households forecast their own load and PV (trexsim.tc.forecast; docs/powerflow.md)."""

    type: Literal["perfect", "persistence", "noisy"] = Field(
        "persistence", description="perfect: the profiles themselves; persistence: the same rounds lag_days "
                                   "earlier; noisy: the profiles with a normal error of error_pct %.")
    lag_days: float = Field(1.0, gt=0, le=366, description="persistence: days back (1: yesterday, 7: last week).")
    error_pct: float = Field(10.0, ge=0, le=100, description="noisy: standard deviation of each round's relative error, %.")


class TCConfig(_Model):
    """Transactive control: a price schedule from predicted powerflow, price-reactive batteries and flexible loads."""

    market: Literal["schedule", "double_auction"] = Field(
        "schedule", description="'schedule': day-ahead price schedules from predicted powerflow, iterated with the "
                                "households' plans; 'double_auction': a transactive double auction cleared every "
                                "price interval (5-60 min) against the feeder's capacity (docs/powerflow.md).")
    price_cap_per_kwh: float = Field(
        1.0, gt=0, description="'double_auction': the highest price the auction clears at, $/kWh (demand that does "
                               "not fit the capacity even at the cap is served at it).")
    capacity_kw: float | None = Field(
        None, gt=0, description="'double_auction': the feeder's capacity, the auction's supply at the tariff, kW "
                                "(null: the net demand, alike in every household, at which the predicted loading of "
                                "the most loaded transformer reaches its rating).")
    capacity_limits: Literal["loading", "loading_and_voltage"] = Field(
        "loading", description="'double_auction' with capacity_kw null: what bounds the calibrated capacity: the most "
                               "loaded transformer's rating ('loading'), or that and the lowest checked bus voltage "
                               "staying at or above tc.v_min_pu ('loading_and_voltage'; long LV "
                               "feeders, whose voltage falls below its limit long before the transformer is full).")
    v_min_pu: float | None = Field(
        None, gt=0, lt=2, description="capacity_limits 'loading_and_voltage': the lowest bus voltage the capacity keeps, "
                                      "p.u. (null: powerflow.limits.v_min_pu, else 0.95).")
    horizon_h: float = Field(24.0, gt=0, description="Each schedule covers this many hours (day-ahead: 24).")
    price_interval_s: int = Field(3600, gt=0, description="Length of one price of the schedule, s (hourly: 3600).")
    iterations: int = Field(4, ge=1, le=100, description="Predict-price-respond passes before a schedule is published.")
    damping: float = Field(0.5, gt=0, le=1, description="Weight of the newest pass's prices in the schedule.")
    predict: Literal["interval_mean", "round_peak"] = Field(
        "interval_mean", description="What a price interval's predicted loading is: one solve on the interval's "
                                     "mean net powers, or the worst of a solve per round (the peak an hourly mean hides).")
    update: Literal["damped", "averaging", "bisection", "adaptive"] = Field(
        "damped", description="How a pass's prices enter the schedule: 'damped' (weight damping), 'averaging' "
                              "(the method of successive averages: the mean of every pass's prices so far), "
                              "'bisection' (each price interval's congestion component bisected between bounds "
                              "on the fixed point: the bracket halves every pass) or 'adaptive' (damped from the "
                              "best schedule so far, the step at most damping and 1 / (1 + L) with L F's largest "
                              "measured slope, halved whenever a pass's gap rises; converges with "
                              "response 'proportional').")
    tolerance: float | None = Field(
        None, gt=0, description="Stop before 'iterations' passes once a schedule's own prediction implies prices "
                                "within this many $/kWh of it, or (bisection) every bracket is narrower "
                                "(null: always run every pass).")
    response: Literal["threshold", "proportional"] = Field(
        "threshold", description="How the devices answer a schedule: 'threshold' (all-or-nothing: batteries by "
                                 "price thresholds, flexible load into the cheapest rounds) or 'proportional' "
                                 "(continuous in the prices, ramps response_band_per_kwh wide: docs/powerflow.md).")
    response_band_per_kwh: float = Field(
        0.05, gt=0, le=10, description="'proportional': the width of the devices' price ramps, $/kWh.")
    congestion: CongestionPricing = Field(default_factory=CongestionPricing)
    flexible_load: FlexibleLoadConfig | None = Field(default_factory=FlexibleLoadConfig)
    batteries: bool = Field(True, description="Participants' batteries react to the price (else self-consumption).")
    forecast: ForecastConfig = Field(default_factory=ForecastConfig,
                                     description="What the households plan with (default: yesterday's profiles).")
    refund: Literal["none", "equal", "by_import"] = Field(
        "none", description="The congestion rent (imports x (TC price - tariff)) at each episode's end: 'none' "
                            "keeps it with the network; 'equal' returns it in equal shares to the households; "
                            "'by_import' in proportion to each household's imports (revenue neutral both ways).")
    feeder: str | dict[str, Any] | None = Field(
        None, description="The feeder the TC market predicts on (as powerflow.feeder); null: the powerflow "
                          "section's, else a generated one.")
    mapping: str | dict[str, str | list[str]] | None = Field(
        None, description="Participant id -> circuit load name(s), as powerflow.mapping (null: the powerflow section's).")
    pf_import: float | None = Field(None, gt=0, le=1, description="Power factor of predicted imports (null: the powerflow section's, else 0.95).")
    pf_export: float | None = Field(None, gt=0, le=1, description="Power factor of predicted exports (null: the powerflow section's, else 1).")

    _feeder_parameters = field_validator("feeder")(PowerflowConfig._feeder_parameters.__func__)

    @model_validator(mode="after")
    def _voltage_capacity(self) -> "TCConfig":
        # a setting no driver would read is refused by key, never silently ignored
        if self.capacity_limits == "loading_and_voltage" and (self.market != "double_auction" or
                                                              self.capacity_kw is not None):
            raise ValueError("capacity_limits 'loading_and_voltage' bounds the calibrated capacity of a "
                             "market 'double_auction' (with capacity_kw null)")
        if self.v_min_pu is not None and self.capacity_limits != "loading_and_voltage":
            raise ValueError("v_min_pu is read only with capacity_limits 'loading_and_voltage'")
        return self

    @field_validator("price_interval_s")
    @classmethod
    def _auction_interval(cls, value: int, info):
        if info.data.get("market") == "double_auction" and not 300 <= value <= 3600:
            raise ValueError(f"a double auction clears every 5 to 60 minutes (300-3600 s), got {value} s")
        return value


class SimulationConfig(_Model):
    version: str | None = Field(None, description="Accepted for TREX-Core compatibility; ignored.")
    study: StudyConfig = Field(default_factory=StudyConfig)
    market: MarketConfig = Field(default_factory=MarketConfig)
    markets: list[MarketConfig] | None = Field(
        None, min_length=1, description="Several markets, each with its own id, mechanism and members, instead of "
                                        "'market' (docs/configuration.md, 'Several markets'). 'market' then reads as "
                                        "the first of them.")
    grid: GridConfig | None = Field(None, description="With 'markets': the grid behind every market (one for all).")
    participants: dict[str, ParticipantConfig]
    records: RecordsConfig = Field(default_factory=RecordsConfig)
    powerflow: PowerflowConfig | None = Field(None, description="A live powerflow module (docs/powerflow.md).")
    tc: TCConfig | None = Field(None, description="Transactive-control settings for `trexsim compare` (docs/powerflow.md).")

    @model_validator(mode="wrap")
    @classmethod
    def _trader_plugins_first(cls, data: Any, handler):
        # trader and device plug-ins add members to the unions: load them before the first config is read,
        # and validate again with the rebuilt models when loading them changed a union just now
        from trexsim.plugins import load_device_plugins, load_trader_plugins

        if load_trader_plugins() | load_device_plugins():
            return cls.model_validate(data)
        return handler(data)

    @field_validator("participants")
    @classmethod
    def _some_participants(cls, value: dict[str, ParticipantConfig]) -> dict[str, ParticipantConfig]:
        if not value:
            raise ValueError("at least one participant is needed")
        for pid in value:
            if not pid or pid == "grid" or any(c in pid for c in "/#+ \t"):
                raise ValueError(f"participant id {pid!r} is not allowed (no spaces, '/', '#', '+', not 'grid')")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SimulationConfig":
        members = self.expanded_participants()
        if self.markets is not None:
            self._check_markets([pid for pid, _ in members])
        elif self.grid is not None:
            raise ValueError("grid: a top-level 'grid' goes with 'markets'; with one 'market', set market.grid")
        if self.market.close_steps >= self.study.rounds_per_episode:
            raise ValueError(f"market.close_steps ({self.market.close_steps}) must be below the rounds per episode "
                             f"({self.study.rounds_per_episode}), or nothing is ever delivered")
        return self

    def _check_markets(self, participant_ids: list[str]) -> None:
        # (a dumped config holds both, 'market' as the first of 'markets', and every market's grid: it reads back)
        if "market" in self.model_fields_set and self.market != self.markets[0]:
            raise ValueError("give either 'market' (one market) or 'markets' (several), not both")
        grids = [(i, m.grid) for i, m in enumerate(self.markets) if "grid" in m.model_fields_set]
        grid = self.grid if self.grid is not None else (grids[0][1] if grids else GridConfig())
        ids = [m.id for m in self.markets]
        groups = {key for key, spec in self.participants.items() if spec.count != 1}
        known = set(participant_ids) | groups
        for i, m in enumerate(self.markets):
            where = f"markets[{i}] ({m.id!r})"
            if not m.id or any(c in m.id for c in "/#+ \t\x00"):
                raise ValueError(f"{where}.id: not allowed (no spaces, '/', '#', '+')")
            if ids.count(m.id) > 1:
                raise ValueError(f"{where}.id: two markets have this id")
            if "grid" in m.model_fields_set and m.grid != grid:
                raise ValueError(f"{where}.grid: the grid is one for every market; set it once at the top level ('grid')")
            if m.type != "alex" and len(self.markets) > 1:
                raise ValueError(f"{where}.type: {m.type!r} runs as the only market; several markets are type 'alex'")
            if m.close_steps != self.markets[0].close_steps:
                raise ValueError(f"{where}.close_steps: every market has the same close_steps "
                                 f"({self.markets[0].close_steps}, as markets[0]'s) in this version")
            for name in m.members or []:
                if name not in known:
                    raise ValueError(f"{where}.members: {name!r} is neither a participant id nor a participant group")
            if m.parent is not None:
                if m.parent not in ids:
                    raise ValueError(f"{where}.parent: no market has the id {m.parent!r}")
                seen, up = {m.id}, m.parent
                while up is not None:
                    if up in seen:
                        raise ValueError(f"{where}.parent: the markets' parents form a loop through {up!r}")
                    seen.add(up)
                    up = self.markets[ids.index(up)].parent
        homeless = [pid for pid, home in zip(participant_ids, self.home_markets()) if home < 0]
        if homeless:
            raise ValueError(f"markets: {homeless[0]!r}{f' and {len(homeless) - 1} more' if len(homeless) > 1 else ''} "
                             "trade in no market: name them (or their group) in a market's members, or leave one "
                             "market's members null (open to everyone)")
        # the first market stands for all where one market's settings are read (close_steps, the grid)
        self.markets = [m.model_copy(update={"grid": grid}) for m in self.markets]
        object.__setattr__(self, "market", self.markets[0])

    def market_list(self) -> list[MarketConfig]:
        """Every market of the simulation: 'markets', or the one 'market'."""
        return list(self.markets) if self.markets is not None else [self.market]

    def market_members(self) -> list[list[int]]:
        """For each market of :meth:`market_list`, the roster indices of the participants who may trade in it:
        its ``members`` (everyone if null) and everyone who may trade in a market below it."""
        ids = [pid for pid, _ in self.expanded_participants()]
        index = {pid: i for i, pid in enumerate(ids)}
        by_group: dict[str, list[int]] = {}
        for i, group in enumerate(self._groups()):
            if group is not None:
                by_group.setdefault(group, []).append(i)
        markets = self.market_list()
        own = []
        for m in markets:
            if m.members is None:
                own.append(set(range(len(ids))))
            else:
                own.append({j for name in m.members for j in (by_group[name] if name in by_group else [index[name]])})
        position = {m.id: i for i, m in enumerate(markets)}
        out = [set(s) for s in own]
        for i, m in enumerate(markets):
            up = m.parent
            while up is not None:
                out[position[up]] |= own[i]
                up = markets[position[up]].parent
        return [sorted(s) for s in out]

    def home_markets(self) -> list[int]:
        """Each participant's home market (an index into :meth:`market_list`, -1 for none): where its trader
        places orders. The first market that names it in ``members`` (directly or by its group), else the first
        market open to everyone."""
        ids = [pid for pid, _ in self.expanded_participants()]
        markets = self.market_list()
        if len(markets) == 1:
            return [0] * len(ids)
        everyone = next((i for i, m in enumerate(markets) if m.members is None), -1)
        home = []
        for pid, group in zip(ids, self._groups()):
            named = next((i for i, m in enumerate(markets) if m.members is not None
                          and (pid in m.members or (group is not None and group in m.members))), everyone)
            home.append(named)
        return home

    def _groups(self) -> list[str | None]:
        """Each participant's group (its key in ``participants`` when it has a ``count``, else None), in the
        order of :meth:`expanded_participants`."""
        return [key if spec.count != 1 else None for key, spec in self.participants.items() for _ in range(spec.count)]

    def expanded_participants(self) -> list[tuple[str, ParticipantConfig]]:
        """Participants in config order, with ``count`` copies expanded to their own ids."""
        out: list[tuple[str, ParticipantConfig]] = []
        for pid, spec in self.participants.items():
            if spec.count == 1:
                out.append((pid, spec))
            else:
                width = len(str(spec.count))
                out.extend((f"{pid}-{i:0{width}d}", spec) for i in range(1, spec.count + 1))
        seen: set[str] = set()
        for pid, _ in out:
            if pid in seen:
                raise ValueError(f"participant id {pid!r} appears twice after expanding 'count'")
            seen.add(pid)
        return out
