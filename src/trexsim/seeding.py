"""Where every random stream of a run comes from: one ``numpy.random.SeedSequence(study.seed)``.

Kept in one place so that a specialised fast path (e.g. the settlement study's compiled market)
draws exactly the numbers the general simulation draws.
"""

from __future__ import annotations

import numpy as np


def participants_rng(seed: int) -> np.random.Generator:
    """The participants module's generator (the first child of the study seed)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def run_id_rng(seed: int) -> np.random.Generator:
    """A generator for the run's id (the second child of the study seed)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])


def population_rngs(rng: np.random.Generator, n_populations: int) -> list[np.random.Generator]:
    """One generator per trader population, in the order the populations are built."""
    return list(rng.spawn(n_populations))


def forecast_noise_rng(seed: int) -> np.random.Generator:
    """The RL environments' forecast noise (the third child of the study seed: the other streams are
    unchanged whether forecasts are observed or not)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
