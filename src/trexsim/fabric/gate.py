"""The gate: every message from a participant account is checked here before the market and the recorder see it
(the networked fabric's, whatever the transport: :mod:`trexsim.fabric.protocol`)."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from trexsim.fabric import topics
from trexsim.fabric.messages import Accepted, EpisodeStart, MeterReadings, Orders, Rejected, RoundEnd, RoundStart

_METER_INT_FIELDS = ("load_wh", "generation_wh", "battery_charge_wh", "battery_discharge_wh", "grid_only_net_wh")
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1  # rounds and episodes are stored as INTEGER
# without a config's limits (trexsim.node.meter_limits), no meter value may exceed this [Wh]: what an INTEGER holds
METER_CEILING_WH = (1 << 31) - 1


def account_members(account: str, participant_ids: list[str], index_of: dict[str, int]) -> np.ndarray | None:
    """Roster indices an account may speak for: a participant id -> [its index]; ``grp-g-of-G`` -> its
    group; anything else -> None."""
    if account in index_of:
        return np.array([index_of[account]], dtype=np.int64)
    group = topics.parse_group_account(account)
    if group is not None:
        return participant_group(len(participant_ids), *group)
    return None


def participant_group(n_participants: int, group: int, groups: int) -> np.ndarray:
    """Roster indices of group ``group`` of ``groups`` (contiguous blocks, as even as possible)."""
    return np.array_split(np.arange(n_participants, dtype=np.int64), groups)[group]


def _rows(message: Any, rows: np.ndarray) -> Any:
    """The message with only ``rows`` of its per-row arrays (and of a ``reason`` list)."""
    changes = {f: getattr(message, f)[rows] for f in message.__struct_fields__ if isinstance(getattr(message, f), np.ndarray)}
    if isinstance(message, Rejected):
        changes["reason"] = [r for r, keep in zip(message.reason, rows) if keep]
    return msgspec.structs.replace(message, **changes)


class Gate:
    """Checks every message from a participant account before the market and the recorder see it."""

    def __init__(self, fabric, participant_ids: list[str]) -> None:
        self.fabric = fabric
        self.ids = list(participant_ids)
        self.n = len(self.ids)
        self.index_of = {pid: i for i, pid in enumerate(self.ids)}
        self.members: dict[str, np.ndarray | None] = {}
        self.masks: dict[str, np.ndarray] = {}  # account -> which roster indices it holds
        # per account, the highest booked order id of each household it holds (one account's ids never block another's)
        self.last_order_id: dict[str, np.ndarray] = {}
        self._admitting: str | None = None  # the account whose orders the market is handling now
        self.reported = np.zeros(self.n, dtype=bool)
        self.limits: dict[str, np.ndarray] | None = None  # per household, the largest meter values (meter_limits)
        self.plan_rounds = 1  # the rounds a TC double auction's interval holds (its bids' energy is over them)
        self.rounds = 0  # rounds started (all episodes)
        self.fallback_rounds = np.zeros(self.n, dtype=np.int64)  # per household: rounds settled from its profile
        # an id is used once the market books its order: a refused order's id may be sent again
        fabric.subscribe(topics.ACCEPTED, self.on_accepted)

    def on_accepted(self, msg: Accepted) -> None:
        account = self._admitting
        if account is None or not len(msg.order_id):
            return
        members = self.account_members(account)
        last = self._last_ids(account, members)
        np.maximum.at(last, np.asarray(msg.participant, dtype=np.int64) - members[0], np.asarray(msg.order_id, dtype=np.int64))

    def _last_ids(self, account: str, members: np.ndarray) -> np.ndarray:
        last = self.last_order_id.get(account)
        if last is None:  # an account holds a contiguous block of the roster: indexed from its first member
            last = self.last_order_id[account] = np.full(int(members[-1] - members[0]) + 1, -1, dtype=np.int64)
        return last

    def on_episode_start(self, msg: EpisodeStart) -> None:
        self.last_order_id.clear()

    def on_round_start(self, msg: RoundStart) -> None:
        self.reported[:] = False
        self.rounds += 1

    def note_meter(self, msg: MeterReadings) -> None:
        self.reported[np.asarray(msg.participant, dtype=np.int64)] = True

    def before_round_end(self, msg: RoundEnd) -> None:
        """Settle households with no valid reading this round from their profiles (and record it)."""
        fabric = self.fabric
        if fabric.meter_fallback is None or msg.round != fabric._round or self.reported.all():
            return
        missing = np.flatnonzero(~self.reported).astype(np.int64)
        self.record_rows(missing, "meter_missing")
        self.fallback_rounds[missing] += 1
        reading = fabric.meter_fallback(msg.episode, msg.round, missing)
        self.reported[missing] = True
        fabric._dispatch_local(reading)

    def account_members(self, account: str) -> np.ndarray | None:
        if account not in self.members:
            self.members[account] = account_members(account, self.ids, self.index_of)
        return self.members[account]

    def admit(self, account: str, msg: Any) -> Any:
        """The message, or its acceptable part; None if nothing of it may go on."""
        fabric = self.fabric
        members = self.account_members(account)
        if members is None:
            fabric._refuse(account, "unknown_account", f"account {account!r} is not in this simulation", msg)
            return None
        if fabric.accounts is not None and account not in fabric.accounts:
            fabric._refuse(account, "unknown_account", f"account {account!r} holds no households in this run's layout "
                                                       f"({', '.join(sorted(fabric.accounts)[:10]) or 'none remote'})", msg)
            return None
        participant = np.asarray(msg.participant)
        if participant.dtype.kind not in "iu":
            fabric._refuse(account, "malformed", f"participant indices of dtype {participant.dtype}", msg)
            return None
        mask = self.masks.get(account)
        if mask is None:
            mask = self.masks[account] = np.zeros(self.n, dtype=bool)
            mask[members] = True
        inside = (participant >= 0) & (participant < self.n)
        if not (inside.all() and mask[participant].all()):
            fabric._refuse(account, "participant_not_sender",
                           f"{account!r} may speak only for roster indices {members.tolist()[:20]}", msg)
            return None
        fabric._remote_accounts.setdefault(account, members)
        if isinstance(msg, Orders):
            return self._admit_orders(account, msg)
        return self._admit_meter(account, msg)

    def _admit_orders(self, account: str, msg: Orders) -> Orders | None:
        fabric = self.fabric
        if msg.from_market:  # only a market hands its leftovers to its parent market, and markets run here
            fabric._refuse(account, "not_a_market", f"orders claiming to come from market {msg.from_market!r}", msg)
            return None
        n = len(msg.participant)
        ids = np.asarray(msg.order_id)
        if ids.dtype.kind not in "iu":
            fabric._refuse(account, "malformed", f"order ids of dtype {ids.dtype} (whole numbers only)", msg)
            return None
        if {len(msg.side), len(msg.pool), len(msg.price), len(msg.quantity_wh), len(ids)} != {n}:
            return msg  # the market rejects it as malformed, with its own reason
        if (fabric._episode >= 0 and msg.episode != fabric._episode) or not all(
                _INT32_MIN <= v <= _INT32_MAX for v in (msg.episode, msg.round, msg.delivery_round)):
            # another episode's orders (or rounds no table can hold): refused here, recorded under the current round
            fabric._refuse(account, "wrong_round", f"orders of episode {msg.episode} round {msg.round} for "
                                                   f"{msg.delivery_round} during episode {fabric._episode}", msg)
            return None
        members = self.account_members(account)
        last = self._last_ids(account, members)
        participant = np.asarray(msg.participant, dtype=np.int64)
        ids = ids.astype(np.int64)
        # ids of a participant must rise: the first above the last one it used, each above the one before it
        order = np.lexsort((np.arange(n), participant))
        p_sorted, id_sorted = participant[order], ids[order]
        first = np.ones(n, dtype=bool)
        first[1:] = p_sorted[1:] != p_sorted[:-1]
        rising = np.empty(n, dtype=bool)
        rising[first] = id_sorted[first] > last[p_sorted[first] - members[0]]
        later = np.flatnonzero(~first)
        rising[later] = id_sorted[later] > id_sorted[later - 1]
        ok = np.empty(n, dtype=bool)
        ok[order] = rising
        if ok.all():
            return msg
        bad = _rows(msg, ~ok)
        self.fabric._refuse(account, "duplicate_order_id", f"order ids {np.asarray(bad.order_id).tolist()[:20]} "
                                                           "not above the last ones used", bad)
        return _rows(msg, ok) if ok.any() else None

    def _admit_meter(self, account: str, msg: MeterReadings) -> MeterReadings | None:
        fabric = self.fabric
        participant = np.asarray(msg.participant, dtype=np.int64)
        n = participant.size
        arrays = [np.asarray(getattr(msg, f)) for f in _METER_INT_FIELDS]
        stored = np.asarray(msg.battery_stored_wh)
        if any(a.size != n for a in arrays) or stored.size != n or any(a.dtype.kind not in "iu" for a in arrays):
            fabric._refuse(account, "malformed", "meter arrays of different lengths or not whole Wh", msg)
            return None
        if msg.episode != fabric._episode or msg.round != fabric._round:
            fabric._refuse(account, "wrong_round", f"reading for episode {msg.episode} round {msg.round} during "
                                                   f"episode {fabric._episode} round {fabric._round}", msg)
            return None
        if any((a < 0).any() for a in arrays[:4]) or not np.isfinite(stored).all() or (stored < 0).any():
            fabric._refuse(account, "meter_out_of_range", "negative energy or non-finite stored energy", msg)
            return None
        over = self._over_limits(participant, arrays, stored)
        if over.any():  # beyond what the household's devices can do in a round (docs/fabric.md, "Rejections")
            fabric._refuse(account, "meter_out_of_range", f"readings above the households' physical limits "
                                                          f"(roster indices {participant[over].tolist()[:20]})", _rows(msg, over))
            if over.all():
                return None
            msg, participant = _rows(msg, ~over), participant[~over]
        # a row already reported this round (or twice in the message) is refused; the others go on
        seen = self.reported[participant].copy()
        order = np.argsort(participant, kind="stable")
        repeat = np.zeros(participant.size, dtype=bool)
        repeat[order[1:]] = participant[order[1:]] == participant[order[:-1]]
        dup = seen | repeat
        if dup.any():
            fabric._refuse(account, "duplicate_meter", f"round {msg.round} already has a reading for roster indices "
                                                       f"{participant[dup].tolist()[:20]}", _rows(msg, dup))
            if dup.all():
                return None
            msg, participant = _rows(msg, ~dup), participant[~dup]
        self.reported[participant] = True
        return msg

    def plan_beyond_limits(self, plan) -> str:
        """Why a household's ``TCPlan`` asks for more than its meter can take ('' if it does not, or where no limits
        are known): a plan's net energy per round beyond what the household can import or export in a round
        (``grid_only_net_wh`` of :func:`trexsim.node.meter_limits`); a double auction's bid energy negative, or a
        household's bids over the interval above what it can draw in it (load and battery charge over the
        interval's ``plan_rounds``). Without this one household could bid the feeder's whole capacity away."""
        limits = self.limits
        if limits is None:
            return ""
        idx = np.asarray(plan.participant, dtype=np.int64)
        net = np.abs(np.asarray(plan.net_wh, dtype=np.float64))
        if plan.bid_wh is None:  # a schedule's answer: rounds x households, per round
            over = (net.reshape(-1, max(idx.size, 1)) > limits["grid_only_net_wh"][idx][None, :]).any(axis=0)
            if over.any():
                return f"net energy above the households' limits in a round (roster indices {idx[over].tolist()[:20]})"
            return ""
        rounds = max(int(self.plan_rounds), 1)
        if (net > limits["grid_only_net_wh"][idx] * rounds).any():
            return f"net energy over the interval above the households' limits ({rounds} rounds)"
        who = np.asarray(plan.bid_participant, dtype=np.int64)
        wh = np.asarray(plan.bid_wh, dtype=np.float64)
        if (wh < 0).any():
            return "a bid energy below 0 Wh"
        draw = (limits["load_wh"] + limits["battery_charge_wh"]) * rounds
        total = np.bincount(who, weights=wh, minlength=draw.size) if who.size else np.zeros(draw.size)
        over = np.flatnonzero(total > draw)
        if over.size:
            return (f"bids above what the households can draw in the interval ({rounds} rounds; roster indices "
                    f"{over.tolist()[:20]})")
        return ""

    def _over_limits(self, participant: np.ndarray, arrays: list[np.ndarray], stored: np.ndarray) -> np.ndarray:
        """Rows whose values exceed the households' limits (:func:`trexsim.node.meter_limits`), else the ceiling."""
        limits = self.limits
        if limits is None:
            over = np.zeros(participant.size, dtype=bool)
            for a in arrays:
                over |= np.abs(a.astype(np.float64)) > METER_CEILING_WH
            return over | (stored > METER_CEILING_WH)
        load, gen, charge, discharge, grid_only = arrays
        return ((load > limits["load_wh"][participant]) | (gen > limits["generation_wh"][participant])
                | (charge > limits["battery_charge_wh"][participant])
                | (discharge > limits["battery_discharge_wh"][participant])
                | (stored > limits["battery_stored_wh"][participant])
                | (np.abs(grid_only.astype(np.float64)) > limits["grid_only_net_wh"][participant]))

    # ------------------------------------------------------------------ recording
    def record(self, account: str | None, reason: str, msg: Any = None) -> None:
        """A refusal as Rejected rows (recorded in the ``rejections`` table, sent back to the account).

        Rows naming households the account does not speak for are recorded as the sender's (its roster index if
        it is one household, else -1), never as the households it named."""
        participant = None
        fabric = self.fabric
        members = self.account_members(account) if account is not None else None
        own = members if members is not None and members.size == 1 else np.array([-1], dtype=np.int64)
        forged = reason in ("participant_not_sender", "unknown_account")
        if isinstance(msg, (Orders, Rejected)):
            try:
                cols = [np.asarray(getattr(msg, f)).astype(dt).ravel() for f, dt in
                        (("participant", np.int64), ("side", np.int64), ("pool", np.int64), ("price", np.float64),
                         ("quantity_wh", np.float64), ("order_id", np.int64))]
                if len({c.size for c in cols}) == 1 and cols[0].size:
                    if forged:
                        cols[0] = np.full(cols[0].size, own[0], dtype=np.int64)
                    episode, round_, delivery = msg.episode, msg.round, msg.delivery_round
                    if ((fabric._episode >= 0 and episode != fabric._episode)
                            or not all(_INT32_MIN <= r <= _INT32_MAX for r in (episode, round_, delivery))):
                        episode, round_, delivery = fabric._episode, fabric._round, fabric._round  # as refused, when
                    return self._publish(episode, round_, delivery, cols, reason)
            except (TypeError, ValueError, OverflowError):
                pass
        if isinstance(msg, MeterReadings) and not forged:
            try:
                participant = np.asarray(msg.participant).astype(np.int64).ravel()
            except (TypeError, ValueError):
                participant = None
        if participant is None or participant.size == 0:
            participant = own
        self.record_rows(participant, reason)

    def record_rows(self, participant: np.ndarray, reason: str) -> None:
        fabric = self.fabric
        k = participant.size
        minus = np.full(k, -1, dtype=np.int64)
        nan = np.full(k, np.nan)
        self._publish(fabric._episode, fabric._round, fabric._round, [participant, minus, minus, nan, nan, minus], reason)

    def _publish(self, episode: int, round_: int, delivery_round: int, cols: list[np.ndarray], reason: str) -> None:
        # to this process's recorder only: the sender hears of it as an Error on its own topic
        self.fabric._dispatch_local(Rejected(int(episode), int(round_), int(delivery_round), *cols, [reason] * cols[0].size))
