"""Devices behind a participant's meter, and the registry that plug-in devices join.

The battery is built into the participants module (``storage``; it reacts to the market's contracts).
Every other device is a :class:`ScheduledDevice`: its energy at the meter in each round follows from its
settings, the clock and the run's seed, not from the market. It therefore acts where the household's
profiles are read (:class:`trexsim.data.profiles.ProfileSet` adds what it draws to the load and what it
supplies to the generation), and every driver sees it the same way: the in-process and networked
simulations, both backends of the RL environments, the transactive-control forecasts and the battery
optimum. A config lists a household's devices under ``devices`` (``docs/configuration.md``, "devices").

A :class:`PriceResponsiveDevice` is a scheduled device that can also answer a price schedule: where the run
has one (a TC market of ``tc.market: "schedule"``), the TC households ask it for its energy under each
schedule they answer (so the TC market's prediction sees it) and meter what it answers to the published one;
everywhere else (ALEX markets, the TC double auction, the RL environments, the settlement study) it runs as
scheduled, and the first time its energy is read there a :class:`PriceSignalWarning` says so.

Built in: ``ev`` (:mod:`trexsim.devices.ev`; price-responsive with ``charging: "smart"``). A package outside
trexsim adds a kind through the entry point group ``trexsim.devices`` (:mod:`trexsim.plugins`), naming a
subclass registered by :func:`register_device`.
"""

from __future__ import annotations

import warnings
import zlib
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from trexsim.errors import TrexsimError


class ScheduledDevice(ABC):
    """Every device of one kind in a set of households, as arrays (one member per configured device).

    Subclasses set ``kind`` (the name) and ``config_model`` (a
    :class:`trexsim.config.schema.DeviceSettings` subclass whose ``type`` is ``Literal[kind]``) and implement
    :meth:`energy_wh`. ``participant_ids[m]`` is member m's household, ``settings[m]`` its config;
    ``member_seed(m)`` is its own seed sequence (from the run's seed, the household's id and the device's
    place in its list), so that its random choices do not depend on who else is in the run.
    """

    kind: ClassVar[str] = ""
    config_model: ClassVar[type] = type(None)

    def __init__(self, participant_ids: list[str], settings: list, positions: list[int], clock, seed: int):
        self.participant_ids = list(participant_ids)
        self.settings = list(settings)
        self.positions = list(positions)  # each member's place in its household's devices list
        self.clock = clock
        self.seed = int(seed)

    def member_seed(self, member: int, *key: int) -> np.random.SeedSequence:
        """Member ``member``'s seed sequence, extended by ``key`` (e.g. a day number)."""
        pid = self.participant_ids[member].encode("utf-8")
        return np.random.SeedSequence(entropy=self.seed, spawn_key=(zlib.crc32(pid), 0xDE51CE, self.positions[member],
                                                                    *(int(k) for k in key)))

    @classmethod
    def max_power_w(cls, settings) -> tuple[float, float]:
        """``(draw_w, supply_w)``: the most one device with these settings draws and supplies at the meter
        (a networked market refuses meter readings above the household's ceiling; the default: none beyond
        the profile's own ceiling, 1 MW; a device that may go beyond it overrides this)."""
        return 0.0, 0.0

    @abstractmethod
    def energy_wh(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        """``(draw_wh, supply_wh)``: whole Wh, integer arrays ``(n_rounds, members)``, >= 0, of rounds
        ``start_round`` .. ``start_round + n_rounds - 1`` (``start_round`` may be negative: a forecast that
        looks back). A pure function of the round: the same round gives the same energy in any span."""


class PriceResponsiveDevice(ScheduledDevice):
    """A device that answers a price schedule: its energy moves to cheap rounds when it is given prices.

    Without prices it is a :class:`ScheduledDevice`: :meth:`energy_wh` is what it does (and what every driver
    without a price schedule meters). With a schedule (the TC market's, ``tc.market: "schedule"``) the TC
    households call :meth:`respond_wh` once per pass of the price iteration, and once more with the published
    schedule, whose answer they meter (``follow`` true: see :meth:`follow`).

    ``responsive_setting`` names the setting that makes a member respond (in warnings); :meth:`responds` says
    which members do (default: all); the members that do not are answered by :meth:`energy_wh` alone.
    """

    responsive_setting: ClassVar[str] = "type"

    def responds(self) -> np.ndarray:
        """Bool ``(members,)``: the members that answer prices (the others always run as scheduled)."""
        return np.ones(len(self.settings), dtype=bool)

    @abstractmethod
    def respond_wh(self, start_round: int, n_rounds: int, price_per_kwh: np.ndarray,
                   band_per_kwh: float) -> tuple[np.ndarray, np.ndarray]:
        """``(draw_wh, supply_wh)`` of rounds ``start_round`` .. ``start_round + n_rounds - 1`` under
        ``price_per_kwh`` (float ``(n_rounds,)``, $/kWh, one price per round of the span), as :meth:`energy_wh`
        returns them: whole Wh, integer arrays ``(n_rounds, members)``, >= 0.

        ``band_per_kwh``: 0 for an all-or-nothing answer (``tc.response: "threshold"``), > 0 for one continuous
        in the prices (``"proportional"``, the width of its price ramp), which the TC fixed point needs to
        converge. The device keeps its own energy: what it moves it moves within the span (or carries past the
        span's end, see :meth:`follow`), never more or less of it; a flat price moves nothing (it answers
        :meth:`energy_wh`). Rows of members that do not respond are ignored (their :meth:`energy_wh` is used).
        A pure function of its arguments and of what it has followed."""

    def follow(self, start_round: int, n_rounds: int, price_per_kwh: np.ndarray, band_per_kwh: float) -> None:
        """The household does what :meth:`respond_wh` answers to this schedule (the published one) in these
        rounds. A device whose energy reaches past the span (a car still plugged in when the prices end)
        remembers what it has drawn here, so that its answer for the next span carries only what is left.
        Default: nothing to remember."""

    def reset(self) -> None:
        """A new episode: forget what was followed."""


class PriceSignalWarning(UserWarning):
    """A price-responsive device runs as scheduled because this driver gives it no price schedule."""


DEVICE_KINDS: dict[str, type[ScheduledDevice]] = {}


def register_device(device: type[ScheduledDevice]) -> type[ScheduledDevice]:
    """Register a device kind (usable as a class decorator); its config model joins the participants'
    ``devices`` so that a config names it by ``type`` and its errors name their keys."""
    from trexsim.config.schema import DeviceSettings, add_device_config
    from trexsim.plugins import kind_and_settings

    name, model, types = kind_and_settings(device, ScheduledDevice, DeviceSettings, "device")
    if types != (name,):
        raise ValueError(f"{model.__qualname__}.type must be Literal[{name!r}] (the device's kind)")
    if name in DEVICE_KINDS:
        if DEVICE_KINDS[name] is device or (DEVICE_KINDS[name].__module__, DEVICE_KINDS[name].__qualname__) == (
                device.__module__, device.__qualname__):
            return device
        old = DEVICE_KINDS[name]
        raise ValueError(f"device kind {name!r} is already registered ({old.__module__}:{old.__qualname__})")
    DEVICE_KINDS[name] = device
    add_device_config(model)
    return device


def device_class(kind: str) -> type[ScheduledDevice]:
    """The registered class of a device ``type``."""
    if kind not in DEVICE_KINDS:
        from trexsim.plugins import load_device_plugins

        load_device_plugins()
    try:
        return DEVICE_KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown device type {kind!r}; registered: {', '.join(sorted(DEVICE_KINDS))}") from None


class DeviceSet:
    """The devices of a list of households, grouped by kind: what they add to the households' meters.

    ``devices[i]``: household i's device configs (``ParticipantConfig.devices``).
    """

    def __init__(self, participant_ids: list[str], devices: list[list], clock, seed: int):
        self.n = len(participant_ids)
        self.participant_ids = list(participant_ids)
        self.priced = False   # a price schedule reaches the responsive devices (set by the TC households)
        self._warned = False
        groups: dict[str, tuple[list[int], list, list[int]]] = {}
        for i, listed in enumerate(devices):
            for position, settings in enumerate(listed):
                owners, configs, places = groups.setdefault(settings.type, ([], [], []))
                owners.append(i)
                configs.append(settings)
                places.append(position)
        self._banks = []
        for kind, (owners, configs, places) in groups.items():
            bank = device_class(kind)([participant_ids[i] for i in owners], configs, places, clock, seed)
            self._banks.append((np.asarray(owners, dtype=np.int64), bank))

    def __bool__(self) -> bool:
        return bool(self._banks)

    def energy_wh(self, start_round: int, n_rounds: int, responsive: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(draw_wh, supply_wh)`` int64 ``(n_rounds, households)``: every device's energy, summed per household.

        ``responsive`` False leaves out the price-responsive members (whose answer to a schedule the TC
        households add themselves: :meth:`respond_wh`); True counts them as scheduled."""
        draw = np.zeros((n_rounds, self.n), dtype=np.int64)
        supply = np.zeros((n_rounds, self.n), dtype=np.int64)
        if responsive and not self.priced:
            self._warn_unpriced()
        for owners, bank in self._banks:
            d, s = _answer(bank, bank.energy_wh(start_round, n_rounds), "energy_wh", n_rounds, owners.size)
            if not responsive and isinstance(bank, PriceResponsiveDevice):
                keep = ~_responds(bank)
                d, s = d * keep, s * keep
            np.add.at(draw, (slice(None), owners), d)
            np.add.at(supply, (slice(None), owners), s)
        return draw, supply

    @property
    def responsive(self) -> bool:
        """Whether any member of any device answers prices."""
        return any(isinstance(b, PriceResponsiveDevice) and _responds(b).any() for _, b in self._banks)

    def respond_wh(self, start_round: int, n_rounds: int, price_per_kwh: np.ndarray, band_per_kwh: float,
                   follow: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(draw_wh, supply_wh)`` int64 ``(n_rounds, households)``: the price-responsive members' answer to
        ``price_per_kwh`` (one price per round), summed per household; ``follow``: it is the published schedule,
        which the households meter (the devices remember what they did: ``PriceResponsiveDevice.follow``)."""
        price = np.ascontiguousarray(price_per_kwh, dtype=np.float64)
        if price.shape != (n_rounds,):
            raise ValueError(f"price_per_kwh must have one price per round ({n_rounds}), got shape {price.shape}")
        draw = np.zeros((n_rounds, self.n), dtype=np.int64)
        supply = np.zeros((n_rounds, self.n), dtype=np.int64)
        for owners, bank in self._banks:
            if not isinstance(bank, PriceResponsiveDevice):
                continue
            keep = _responds(bank)
            if not keep.any():
                continue
            d, s = _answer(bank, bank.respond_wh(start_round, n_rounds, price, float(band_per_kwh)), "respond_wh",
                           n_rounds, owners.size)
            if follow:
                bank.follow(start_round, n_rounds, price, float(band_per_kwh))
            np.add.at(draw, (slice(None), owners), d * keep)
            np.add.at(supply, (slice(None), owners), s * keep)
        return draw, supply

    def reset(self) -> None:
        """A new episode: the responsive devices forget what they followed."""
        for _, bank in self._banks:
            if isinstance(bank, PriceResponsiveDevice):
                bank.reset()

    def _warn_unpriced(self) -> None:
        if self._warned:
            return
        self._warned = True
        for owners, bank in self._banks:
            if not isinstance(bank, PriceResponsiveDevice):
                continue
            members = np.flatnonzero(_responds(bank))
            if not members.size:
                continue
            ids = sorted({bank.participant_ids[m] for m in members})
            who = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            warnings.warn(PriceSignalWarning(
                f"device {bank.kind!r} ({bank.responsive_setting}) of {who}: no price schedule reaches it in this "
                f"run (only a TC market with tc.market 'schedule' publishes one), so it runs as scheduled"),
                stacklevel=4)


def _responds(bank: "PriceResponsiveDevice") -> np.ndarray:
    keep = np.asarray(bank.responds(), dtype=bool)
    if keep.shape != (len(bank.settings),):
        raise TrexsimError(f"device {bank.kind!r} ({type(bank).__module__}:{type(bank).__qualname__}).responds: "
                           f"shape {keep.shape}, expected ({len(bank.settings)},)")
    return keep


def _answer(bank, answer, method: str, n_rounds: int, members: int) -> tuple[np.ndarray, np.ndarray]:
    """A device's ``(draw_wh, supply_wh)`` checked, or an error naming the device, its method and the fault."""
    if not (isinstance(answer, tuple) and len(answer) == 2):
        raise TrexsimError(f"{_where(bank, method)}: must return (draw_wh, supply_wh), not {type(answer).__name__}")
    d, s = answer
    return (_checked(bank, d, "draw_wh", n_rounds, members, method),
            _checked(bank, s, "supply_wh", n_rounds, members, method))


def _where(bank: ScheduledDevice, method: str = "energy_wh") -> str:
    return f"device {bank.kind!r} ({type(bank).__module__}:{type(bank).__qualname__}).{method}"


def _checked(bank: ScheduledDevice, values, name: str, n_rounds: int, members: int,
             method: str = "energy_wh") -> np.ndarray:
    """A device's answer as int64, or an error naming the device kind and what is wrong with it."""
    where = _where(bank, method)
    arr = np.asarray(values)
    if arr.shape != (n_rounds, members):
        raise TrexsimError(f"{where}: {name} has shape {arr.shape}, expected {(n_rounds, members)} (rounds, devices)")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TrexsimError(f"{where}: {name} must be whole Wh in an integer array, not {arr.dtype}")
    if arr.size and arr.min() < 0:
        r, m = np.unravel_index(int(np.argmin(arr)), arr.shape)
        raise TrexsimError(f"{where}: {name} is negative ({int(arr[r, m])} Wh) for {bank.participant_ids[m]!r} in "
                           f"the span's round {int(r)}")
    return arr.astype(np.int64, copy=False)


def _register_builtins() -> None:
    from trexsim.devices.ev import ElectricVehicles

    register_device(ElectricVehicles)


_register_builtins()

__all__ = ["ScheduledDevice", "PriceResponsiveDevice", "PriceSignalWarning", "DeviceSet", "DEVICE_KINDS",
           "register_device", "device_class"]
