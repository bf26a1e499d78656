"""Pure array kernels of the market rules: no I/O, no messaging, nothing mutated in place.

Every driver (the in-process simulation, networked modules, RL environments) calls these.
"""

from trexsim.engine.delivery import DeliveryResult, settle_delivery
from trexsim.engine.matching import Matches, match_pairwise
from trexsim.engine.mechanisms import (
    Mechanism,
    PairwiseMechanism,
    get_mechanism,
    register_mechanism,
    registered_mechanisms,
)

__all__ = [
    "DeliveryResult",
    "Matches",
    "Mechanism",
    "PairwiseMechanism",
    "get_mechanism",
    "match_pairwise",
    "register_mechanism",
    "registered_mechanisms",
    "settle_delivery",
]
