"""Devices behind a participant's meter, and the registry that plug-in devices join.

The battery is built into the participants module (``storage``; it reacts to the market's contracts).
Every other device is a :class:`ScheduledDevice`: its energy at the meter in each round follows from its
settings, the clock and the run's seed, not from the market. It therefore acts where the household's
profiles are read (:class:`trexsim.data.profiles.ProfileSet` adds what it draws to the load and what it
supplies to the generation), and every driver sees it the same way: the in-process and networked
simulations, both backends of the RL environments, the transactive-control forecasts and the battery
optimum. A config lists a household's devices under ``devices`` (``docs/devices.md``).

Built in: ``ev`` (:mod:`trexsim.devices.ev`). A package outside trexsim adds a kind through the entry point
group ``trexsim.devices`` (:mod:`trexsim.plugins`), naming a subclass registered by :func:`register_device`.
"""

from __future__ import annotations

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

    def energy_wh(self, start_round: int, n_rounds: int) -> tuple[np.ndarray, np.ndarray]:
        """``(draw_wh, supply_wh)`` int64 ``(n_rounds, households)``: every device's energy, summed per household."""
        draw = np.zeros((n_rounds, self.n), dtype=np.int64)
        supply = np.zeros((n_rounds, self.n), dtype=np.int64)
        for owners, bank in self._banks:
            answer = bank.energy_wh(start_round, n_rounds)
            if not (isinstance(answer, tuple) and len(answer) == 2):
                raise TrexsimError(f"{_where(bank)}: must return (draw_wh, supply_wh), not {type(answer).__name__}")
            d, s = answer
            d, s = _checked(bank, d, "draw_wh", n_rounds, owners.size), _checked(bank, s, "supply_wh", n_rounds, owners.size)
            np.add.at(draw, (slice(None), owners), d)
            np.add.at(supply, (slice(None), owners), s)
        return draw, supply


def _where(bank: ScheduledDevice) -> str:
    return f"device {bank.kind!r} ({type(bank).__module__}:{type(bank).__qualname__}).energy_wh"


def _checked(bank: ScheduledDevice, values, name: str, n_rounds: int, members: int) -> np.ndarray:
    """A device's answer as int64, or an error naming the device kind and what is wrong with it."""
    where = _where(bank)
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

__all__ = ["ScheduledDevice", "DeviceSet", "DEVICE_KINDS", "register_device", "device_class"]
