"""What the TC households plan with: forecasts of their own consumption and PV for a horizon.

The TC market prices a horizon from the net loads the households *plan*; the meters then read what they
really consume and generate. ``tc.forecast`` chooses how the plan sees the future (docs/powerflow.md,
"Forecasts"):

- ``perfect``: the profiles themselves (the future known exactly: an upper bound of what TC can do);
- ``persistence`` (the default): each round as the same household metered it ``lag_days`` earlier
  (1: yesterday, 7: last week), the forecast a utility can always make;
- ``noisy``: the profiles with a stated error, each round's load and PV times ``1 + e`` with ``e``
  normal of standard deviation ``error_pct`` %, clipped at zero; drawn per household and horizon from the
  study's seed, so the same household gets the same forecast however the households are split over
  processes.

Flexible loads move the forecast's energy; the meter applies the same move to the real load (the shift,
not the forecast, is what a household's devices execute). Batteries follow the plan's set-points within
their limits; whatever the plan got wrong is imported or exported.
"""

from __future__ import annotations

import numpy as np

from trexsim.config.schema import ForecastConfig
from trexsim.errors import TrexsimError


def whole_rounds(value_s: float, interval_s: int, key: str) -> int:
    """``value_s`` as a whole number (>= 1) of the study's rounds; else an error naming ``key``."""
    n = value_s / interval_s
    if n < 1 or abs(n - round(n)) > 1e-9:
        raise TrexsimError(f"{key}: {value_s:g} s is not a whole number (>= 1) of the study's {interval_s} s rounds")
    return int(round(n))


def lag_rounds(forecast: ForecastConfig, interval_s: int) -> int:
    """The persistence lag in rounds; an error naming ``tc.forecast.lag_days`` unless it is whole rounds."""
    return whole_rounds(forecast.lag_days * 86400, interval_s, "tc.forecast.lag_days")


def forecast_wh(profiles, forecast: ForecastConfig, first_round: int, n_rounds: int, interval_s: int, seed: int,
                household_index: np.ndarray, responsive: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(load_wh, generation_wh)`` float ``(n_rounds, households)``: the forecast of rounds
    ``first_round`` .. ``first_round + n_rounds - 1`` for the households of ``profiles``
    (``household_index``: their indices in the whole community, which key the noise). ``responsive`` False:
    without the price-responsive devices, which know their own energy and answer the prices themselves."""
    def read(first: int):   # (any profiles reader with energy_wh(first, n); the keyword only where it is needed)
        return profiles.energy_wh(first, n_rounds) if responsive else profiles.energy_wh(first, n_rounds, responsive=False)

    if forecast.type == "perfect":
        return read(first_round)
    if forecast.type == "persistence":
        lag = lag_rounds(forecast, interval_s)
        try:
            return read(first_round - lag)
        except Exception as exc:  # a file profile that does not reach back that far: say so, never guess
            raise TrexsimError(f"tc.forecast: a persistence forecast of round {first_round} needs the profiles "
                               f"{forecast.lag_days:g} days earlier: {exc}") from None
    load, gen = read(first_round)
    sigma = forecast.error_pct / 100.0
    noisy_load = np.empty_like(load)
    noisy_gen = np.empty_like(gen)
    for j, i in enumerate(np.asarray(household_index, dtype=np.int64)):
        rng = np.random.default_rng([int(seed), int(i), int(first_round), 0x7C])
        e = rng.normal(0.0, sigma, (2, n_rounds))
        noisy_load[:, j] = np.maximum(load[:, j] * (1.0 + e[0]), 0.0)
        noisy_gen[:, j] = np.maximum(gen[:, j] * (1.0 + e[1]), 0.0)
    return noisy_load, noisy_gen


__all__ = ["forecast_wh", "lag_rounds", "whole_rounds"]
