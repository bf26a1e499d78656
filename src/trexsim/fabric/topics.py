"""Topic names.

Logical topics (below, one per message kind) are what modules subscribe to on any fabric. A
networked fabric carries them on MQTT topics under the simulation's namespace, laid out so that
a broker's per-client ACLs can say who may write and read what (docs/fabric.md, "Topics"):

=====================================  ==================================  ==================
MQTT topic                             messages                            written by
=====================================  ==================================  ==================
``<ns>/sim/<kind>``                    Roster, EpisodeStart, RoundStart,   the controller
                                       RoundEnd, EpisodeEnd, SimulationEnd
``<ns>/grid/prices``                   GridPrices                          the grid
``<ns>/p/<account>/orders``            Orders                              that participant
``<ns>/p/<account>/meter``             MeterReadings                       that participant
``<ns>/p/<account>/round``             Bundle (meter, orders, Ack: its     that participant
                                       answer to a round bundle)
``<ns>/p/<account>/settlements``       Accepted, Rejected, Cleared,        the market (and the
                                       Delivered, Error (its rows only);   controller, to catch
                                       the round Bundle (rows, RoundStart)
                                       catch-up: Roster, EpisodeStart,     a rejoining module
                                       GridPrices                          up)
``<ns>/market/results``                MarketResults (public)              the market
``<ns>/fabric/hello/<account>``        Hello, Goodbye (last will)          that module
``<ns>/fabric/ack/<account>``          Ack                                 that module
=====================================  ==================================  ==================

``<account>`` is a participant id, or ``grp-<g>-of-<G>`` for a process holding group g (from 0)
of G contiguous groups of households, or ``market``, ``controller``, ``coordinator``.
"""

ROSTER = "sim/roster"
EPISODE_START = "sim/episode_start"
EPISODE_END = "sim/episode_end"
ROUND_START = "sim/round_start"
ROUND_END = "sim/round_end"
SIMULATION_END = "sim/end"
GRID_PRICES = "grid/prices"
ORDERS = "market/orders"
ACCEPTED = "market/accepted"
REJECTED = "market/rejected"
CLEARED = "market/cleared"
METER = "market/meter"
DELIVERED = "market/delivered"
# networked fabrics only
HELLO = "fabric/hello"
ACK = "fabric/ack"
ERROR = "market/error"
MARKET_RESULTS = "market/results"
# transactive control (a ``market.type: tc`` run): the TC market's schedules, the participants' responses
TC_SCHEDULE = "tc/schedule"
TC_PLAN = "tc/plan"

# the logical topic of each message kind (one kind per topic): what a networked fabric dispatches on
TOPIC_OF_KIND = {
    "Roster": ROSTER, "EpisodeStart": EPISODE_START, "EpisodeEnd": EPISODE_END, "RoundStart": ROUND_START,
    "RoundEnd": ROUND_END, "SimulationEnd": SIMULATION_END, "GridPrices": GRID_PRICES, "Orders": ORDERS,
    "Accepted": ACCEPTED, "Rejected": REJECTED, "Cleared": CLEARED, "MeterReadings": METER, "Delivered": DELIVERED,
    "Hello": HELLO, "Goodbye": HELLO, "Ack": ACK, "Error": ERROR, "MarketResults": MARKET_RESULTS,
    "TCSchedule": TC_SCHEDULE, "TCPlan": TC_PLAN,
}

# reserved account names; every other account is a participant id or a group
MODULE_ACCOUNTS = ("controller", "market", "coordinator")
FORBIDDEN_IN_ACCOUNT = set("/+#\x00")


def group_account(group: int, groups: int) -> str:
    """The account of a process holding group ``group`` (from 0) of ``groups``."""
    return f"grp-{group}-of-{groups}"


def parse_group_account(account: str) -> tuple[int, int] | None:
    """``grp-<g>-of-<G>`` -> (g, G); None for any other name."""
    parts = account.split("-")
    if len(parts) == 4 and parts[0] == "grp" and parts[2] == "of" and parts[1].isdigit() and parts[3].isdigit():
        g, n = int(parts[1]), int(parts[3])
        if 0 <= g < n:
            return g, n
    return None


def sim_topic(ns: str, kind: str) -> str:
    return f"{ns}/{kind}"


def participant_topic(ns: str, account: str, leaf: str) -> str:
    """``<ns>/p/<account>/<leaf>`` with leaf one of orders, meter, settlements."""
    return f"{ns}/p/{account}/{leaf}"
