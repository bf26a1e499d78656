"""Tabular Q-learning traders: the T-REX paper's stateless bandit, vectorised over a population.

Every member keeps two action-value tables over one price grid, ``q_bid[i]`` (used when it
buys) and ``q_ask[i]`` (used when it sells); the population holds them as two arrays of shape
``(n_members, n_prices)``. There is no state: one round is one pull of a 100-armed bandit.

One round, for member ``i`` placing orders for delivery round ``d`` (``act``):

- quantity: ``obs.planned_net_wh[i]`` (its forecast residual after its own PV and battery
  plan, Wh): > 0 bids that many Wh, < 0 asks that many Wh, 0 places no order;
- price: action ``a`` of the bid table (buyers) or ask table (sellers), epsilon-greedy with
  random tie-breaking among greedy actions; the order's price is ``prices[i, a]`` ($/kWh);
  both sides go to the non-dispatchable pool;
- the population remembers ``(i, side, a)`` under ``d``.

When ``Delivered(round=d)`` arrives (end of round ``d``), every member that ordered for ``d``
gets the reward ``r = market_revenue - market_cost + grid_revenue - grid_cost`` of round ``d``
($, its net profit of that delivery) and updates only the entry ``(side, a)`` that placed the
order::

    Q[a] <- (1 - alpha) * Q[a] + alpha * (r + gamma * max(Q))

where ``Q`` is that side's table and ``max(Q)`` is taken over the table *before* this update
(``Q[a]``'s old value included): the next "state" of a stateless bandit is the same table.

Random draws (a fast path must reproduce this exactly)
------------------------------------------------------
The population draws from ``self.rng`` only in :meth:`QLearningTraders.act`, exactly once per
call: ``u = rng.random((n_members, 2))`` (float64), for every member, whether or not it
trades in that round and whether or not it learns. (The participants module calls ``act``
once in every round whose delivery round is inside the episode, so rounds
``rounds - close_steps ... rounds - 1`` draw nothing.) For a member ``i`` that orders, with
``P`` prices and exploration ``eps_i``:

- it explores iff ``u[i, 0] < eps_i`` (so ``eps = 0`` never explores and ``eps = 1`` always does);
- exploring, the action is ``floor(u[i, 1] * P)``;
- exploiting, the greedy actions are the indices of its side's table whose value equals the
  row maximum exactly; with ``t`` of them in ascending index order it takes the
  ``floor(u[i, 1] * t)``-th (0-based). An all-zero table is therefore uniform over all prices.

``floor(u * n) <= n - 1`` holds in float64 for every ``u < 1`` and ``n < 2**53``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numba
import numpy as np

from trexsim.agents.base import OrderBatch, TraderObservation, TraderPopulation
from trexsim.errors import TrexsimError
from trexsim.fabric.messages import NON_DISPATCH, Cleared, Delivered

TABLE_FILE = "q_tables.npz"
_NEVER = np.iinfo(np.int64).max  # greedy_after_episode unset: learning never stops


class QLearningTraders(TraderPopulation):
    """Epsilon-greedy tabular Q-learning over bid and ask prices, one row per member.

    Parameters
    ----------
    members : numpy.ndarray
        Participant indices (roster order) of the members, int.
    specs : list of trexsim.config.schema.QLearningTrader
        Each member's trader config, in ``members`` order.
    rng : numpy.random.Generator
        The population's own generator; the only source of randomness (see the module docstring).

    Attributes
    ----------
    prices : numpy.ndarray
        ``(n_members, n_prices)`` price grid of each member, $/kWh.
    q_bid, q_ask : numpy.ndarray
        ``(n_members, n_prices)`` action values, $ (discounted net profit per delivery).
    learning_rate, exploration : numpy.ndarray
        Alpha and the effective epsilon of each member in the current episode (0 when greedy).
    learning : numpy.ndarray
        Whether each member updates its tables in the current episode, bool.
    last_actions, last_sides : numpy.ndarray
        Price index and side (BID 0, ASK 1) of each member's order in the last round; -1: no order.
    last_explored : numpy.ndarray
        Whether that order's price was an exploratory draw, bool.
    order_count, explore_count, update_count : numpy.ndarray
        Per member over the whole run: orders placed, of which exploratory, and Q updates made.
    """

    kind = "q_learning"

    def __init__(self, members, specs, rng: np.random.Generator):
        super().__init__(members, specs, rng)
        n = self.members.size
        self.n_prices = _common_count(self.members, specs)
        self.prices = np.stack([np.linspace(s.prices.min_price, s.prices.max_price, s.prices.count) for s in specs])
        self.q_bid = np.zeros((n, self.n_prices))
        self.q_ask = np.zeros((n, self.n_prices))
        self._alpha0 = np.array([s.learning_rate for s in specs], dtype=np.float64)
        self._epsilon0 = np.array([s.exploration for s in specs], dtype=np.float64)
        # UCB1 members: their bonus scale (0: epsilon-greedy) and how often each price was chosen, per side
        self._ucb_c0 = np.array([s.ucb_c if s.policy == "ucb1" else 0.0 for s in specs], dtype=np.float64)
        self.n_bid = np.zeros((n, self.n_prices), dtype=np.int64)
        self.n_ask = np.zeros((n, self.n_prices), dtype=np.int64)
        self._gamma = np.array([s.discount_factor for s in specs], dtype=np.float64)
        self._alpha_mult = np.array([s.anneal.learning_rate for s in specs], dtype=np.float64)
        self._epsilon_mult = np.array([s.anneal.exploration for s in specs], dtype=np.float64)
        self._anneal_after = np.array([s.anneal.after_episode for s in specs], dtype=np.int64)
        self._learning_on = np.array([s.learning for s in specs], dtype=bool)
        self._greedy_after = np.array([_NEVER if s.greedy_after_episode is None else s.greedy_after_episode
                                       for s in specs], dtype=np.int64)
        self.last_actions = np.full(n, -1, dtype=np.int64)
        self.last_sides = np.full(n, -1, dtype=np.int64)
        self.last_explored = np.zeros(n, dtype=bool)
        self.order_count = np.zeros(n, dtype=np.int64)
        self.explore_count = np.zeros(n, dtype=np.int64)
        self.update_count = np.zeros(n, dtype=np.int64)
        self._ids: list[str] | None = None
        # delivery round -> (member positions, sides, actions) of the orders placed for it
        self._pending: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        credits = {s.credit for s in specs}
        if len(credits) > 1:
            raise TrexsimError("q_learning: every q_learning trader of a run needs the same credit rule, "
                               f"got {', '.join(sorted(credits))}")
        # 'next_action': a delivery's reward updates the actions chosen last (in the round it arrives)
        self.credit_next_action = credits == {"next_action"}
        self._latest: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # initial tables: files are checked now, rows matched by id once the ids are known
        self._table_files = {}
        for s in specs:
            if s.q_table and s.q_table not in self._table_files:
                self._table_files[s.q_table] = _read_table_file(s.q_table)
        self._tables_loaded = not self._table_files
        self._matched_ids: list[str] | None = None
        self.episode = 0
        self._set_episode(0)

    # ------------------------------------------------------------------ participant ids
    @property
    def participant_ids(self) -> list[str]:
        """Ids of the members (``"member-<participant index>"`` until the participants module sets them)."""
        if self._ids is None:
            return [f"member-{i}" for i in self.members]
        return list(self._ids)

    @participant_ids.setter
    def participant_ids(self, ids) -> None:
        self.set_participant_ids(ids)

    def set_participant_ids(self, ids) -> None:
        """Name the members (in ``members`` order); used to match and save Q-tables."""
        ids = [str(x) for x in ids]
        if len(ids) != self.members.size or len(set(ids)) != len(ids):
            raise TrexsimError(f"q_learning: expected {self.members.size} distinct participant ids, got {ids!r}")
        if self._matched_ids is not None and ids != self._matched_ids:
            # rows were already copied from a q_table file under other names: renaming would mislabel them
            raise TrexsimError("q_learning: participant ids must be set before the first episode starts")
        self._ids = ids

    # ------------------------------------------------------------------ episodes
    def reset(self, episode: int) -> None:
        """Start ``episode``: set its alpha, epsilon and learning flag; forget undelivered orders.

        Parameters
        ----------
        episode : int
            Episode number, from 0. Annealing is a pure function of it: alpha and epsilon are
            multiplied by their multipliers ``max(0, episode - anneal.after_episode)`` times.
        """
        self._load_tables()
        self.episode = int(episode)
        self._pending.clear()
        self._latest = None
        self._set_episode(self.episode)

    def _set_episode(self, episode: int) -> None:
        steps = np.maximum(0, episode - self._anneal_after)
        self.learning = self._learning_on & (episode <= self._greedy_after)
        self.learning_rate = self._alpha0 * self._alpha_mult ** steps
        # greedy members (evaluation) never explore; random tie-breaking still applies
        self.exploration = np.where(self.learning, self._epsilon0 * self._epsilon_mult ** steps, 0.0)
        self.ucb_c = np.where(self.learning, self._ucb_c0, 0.0)   # greedy members: no bonus
        self._any_learning = bool(self.learning.any())

    # ------------------------------------------------------------------ acting
    def act(self, obs: TraderObservation) -> OrderBatch:
        """Orders for ``obs.delivery_round``: the residual as quantity, an epsilon-greedy price.

        Parameters
        ----------
        obs : TraderObservation
            ``planned_net_wh`` (Wh, + import) decides side and quantity; nothing else is used.

        Returns
        -------
        OrderBatch
            At most one order per member with a non-zero residual (price in $/kWh, quantity in Wh).
        """
        if not self._tables_loaded:
            self._load_tables()
        n = self.members.size
        u = self.rng.random((n, 2))  # the fixed draw pattern: one (n, 2) block a call
        net = np.ascontiguousarray(obs.planned_net_wh)
        member, side, action = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        count = choose_actions(self.q_bid, self.q_ask, net, u, self.exploration, self.ucb_c, self.n_bid, self.n_ask,
                               member, side, action, self.last_actions, self.last_sides, self.last_explored)
        if count == 0:
            return OrderBatch.empty()
        member, side, action = member[:count], side[:count], action[:count]
        self.order_count[member] += 1
        self.explore_count[member] += self.last_explored[member]
        if self._any_learning:
            keep = self.learning[member]
            if keep.all():
                self._pending[obs.delivery_round] = self._latest = (member, side, action)
            elif keep.any():
                self._pending[obs.delivery_round] = self._latest = (member[keep], side[keep], action[keep])
            else:
                self._latest = None
        return OrderBatch(member, side, np.full(count, NON_DISPATCH, dtype=np.int64),
                          self.prices[member, action], np.abs(net[member]).astype(np.int64))

    # ------------------------------------------------------------------ learning
    def on_cleared(self, msg: Cleared) -> None:
        """Nothing to do: the reward needs the delivery outcome, which includes the grid's part."""

    def on_delivered(self, msg: Delivered) -> None:
        """Reward the actions that placed orders for ``msg.round`` with that round's net profit.

        Parameters
        ----------
        msg : Delivered
            Delivery settlement of one round, arrays indexed by participant; messages of
            another episode are ignored.
        """
        if msg.episode != self.episode:
            return
        entry = self._pending.pop(msg.round, None)
        if entry is None:
            return
        if self.credit_next_action:  # the original's rule: to the actions just chosen, not the ones that earned it
            if self._latest is None:
                return
            entry = self._latest
        member, side, action = entry
        p = self.members[member]
        reward = (msg.market_revenue_usd[p] - msg.market_cost_usd[p]) + (msg.grid_revenue_usd[p] - msg.grid_cost_usd[p])
        update_values(self.q_bid, self.q_ask, member, side, action, reward, self.learning_rate, self._gamma)
        self.update_count[member] += 1

    # ------------------------------------------------------------------ tables on disk
    def save(self, out_dir) -> list:
        """Write ``out_dir/q_tables.npz``; return ``[path]``.

        The file holds ``participant_ids`` (str, n), ``prices`` ($/kWh, n x P), ``q_bid`` and
        ``q_ask`` ($, n x P), ``learning_rate`` and ``exploration`` (the current episode's
        alpha and effective epsilon, n) and ``episode`` (scalar). ``q_table`` reads it back.
        """
        self._load_tables()
        path = Path(out_dir) / TABLE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:  # np.savez would append ".npz" to a path; a handle keeps the name
            np.savez(fh, participant_ids=np.array(self.participant_ids, dtype=str), prices=self.prices,
                     q_bid=self.q_bid, q_ask=self.q_ask, learning_rate=self.learning_rate,
                     exploration=self.exploration, episode=np.int64(self.episode))
        os.replace(tmp, path)  # never leave a half-written table where a later run would load it
        return [path]

    def _load_tables(self) -> None:
        """Copy each member's rows from its ``q_table`` file, matched by participant id (once)."""
        if self._tables_loaded:
            return
        ids = self.participant_ids
        for pos, spec in enumerate(self.specs):
            if spec.q_table:
                self.q_bid[pos], self.q_ask[pos] = _rows_for(self._table_files[spec.q_table], ids[pos], self.prices[pos])
        self._tables_loaded = True
        self._matched_ids = ids
        self._table_files = {}  # the rows are copied; do not keep whole files in memory


@numba.njit(cache=True)
def _kth_best(score, u):
    """The ``floor(u * t)``-th (0-based, index order) of the ``t`` indices where ``score`` is largest."""
    best = score[0]
    ties = 1
    for j in range(1, score.size):
        if score[j] > best:
            best = score[j]
            ties = 1
        elif score[j] == best:
            ties += 1
    k = int(u * ties)
    for j in range(score.size):
        if score[j] == best:
            if k == 0:
                return j
            k -= 1
    return 0


@numba.njit(cache=True)
def ucb1_action(q, counts, c, u):
    """UCB1 (Auer, Cesa-Bianchi and Fischer 2002): a price never chosen yet if there is one (the
    ``floor(u * m)``-th of the ``m`` untried, in index order), else the highest ``q[a] + c sqrt(ln t / n_a)``
    with ``t = sum(n) + 1`` (ties as the greedy rule breaks them); ``counts[a]`` is then incremented."""
    n_prices = q.size
    untried = 0
    total = 0
    for j in range(n_prices):
        total += counts[j]
        if counts[j] == 0:
            untried += 1
    if untried > 0:
        k = int(u * untried)
        a = 0
        for j in range(n_prices):
            if counts[j] == 0:
                if k == 0:
                    a = j
                    break
                k -= 1
    else:
        score = np.empty(n_prices)
        log_t = np.log(total + 1.0)
        for j in range(n_prices):
            score[j] = q[j] + c * np.sqrt(log_t / counts[j])
        a = _kth_best(score, u)
    counts[a] += 1
    return a


@numba.njit(cache=True)
def choose_actions(q_bid, q_ask, net_wh, u, epsilon, ucb_c, n_bid, n_ask, member, side, action, last_action, last_side,
                   last_explored):
    """Epsilon-greedy (or, where ``ucb_c > 0``, UCB1) prices with random tie-breaking for every member with a
    residual.

    The reference implementation of the draw contract in the module docstring; a fast path
    calls this kernel rather than re-implementing it.

    Parameters
    ----------
    q_bid, q_ask : numpy.ndarray
        ``(n, P)`` action values, $.
    net_wh : numpy.ndarray
        ``(n,)`` planned net energy of the delivery round, Wh (> 0 bid, < 0 ask, 0 no order).
    u : numpy.ndarray
        ``(n, 2)`` uniform draws in [0, 1): column 0 explore or not, column 1 the action.
    epsilon : numpy.ndarray
        ``(n,)`` exploration probability.
    ucb_c, n_bid, n_ask : numpy.ndarray
        ``(n,)`` UCB1 bonus scale ($; 0: epsilon-greedy) and ``(n, P)`` how often each price was chosen
        (UCB1 members' counts are incremented here). A UCB1 member uses only ``u[i, 1]`` (ties, untried).
    member, side, action : numpy.ndarray
        ``(n,)`` int64 outputs; the first ``count`` entries are the orders, in member order.
    last_action, last_side, last_explored : numpy.ndarray
        ``(n,)`` per-member outputs for statistics (-1 / False where no order).

    Returns
    -------
    int
        ``count``, the number of orders.
    """
    n, n_prices = q_bid.shape
    count = 0
    for i in range(n):
        last_action[i] = -1
        last_side[i] = -1
        last_explored[i] = False
        x = net_wh[i]
        if x == 0:
            continue
        q = q_ask[i] if x < 0 else q_bid[i]
        if ucb_c[i] > 0.0:
            a = ucb1_action(q, n_ask[i] if x < 0 else n_bid[i], ucb_c[i], u[i, 1])
            top = q[0]
            for j in range(1, n_prices):
                top = max(top, q[j])
            last_explored[i] = q[a] < top   # chosen for its bonus, not its value
        elif u[i, 0] < epsilon[i]:
            a = int(u[i, 1] * n_prices)
            last_explored[i] = True
        else:
            a = _kth_best(q, u[i, 1])  # the k-th greedy action in index order
        s = 1 if x < 0 else 0  # ASK for a surplus, BID for a need
        member[count] = i
        side[count] = s
        action[count] = a
        last_action[i] = a
        last_side[i] = s
        count += 1
    return count


@numba.njit(cache=True)
def update_values(q_bid, q_ask, member, side, action, reward, alpha, gamma):
    """``Q[a] <- (1 - alpha) Q[a] + alpha (r + gamma max Q)`` for each rewarded order, in place.

    Parameters
    ----------
    q_bid, q_ask : numpy.ndarray
        ``(n, P)`` action values, $, updated in place.
    member, side, action : numpy.ndarray
        The rewarded orders: member position, BID 0 / ASK 1, price index.
    reward : numpy.ndarray
        Net profit of each order's delivery round, $.
    alpha, gamma : numpy.ndarray
        ``(n,)`` learning rate and discount factor per member.
    """
    for j in range(member.size):
        i = member[j]
        q = q_ask[i] if side[j] == 1 else q_bid[i]
        best = q[0]
        for v in q:
            if v > best:
                best = v
        a = action[j]
        # the max is over the table before this update: the next state is this same table
        q[a] = (1.0 - alpha[i]) * q[a] + alpha[i] * (reward[j] + gamma[i] * best)


def _common_count(members: np.ndarray, specs: list) -> int:
    """The price count every member shares (the tables are one array per side)."""
    counts = sorted({s.prices.count for s in specs})
    if len(counts) > 1:
        by_count = {c: [int(m) for m, s in zip(members, specs) if s.prices.count == c] for c in counts}
        detail = "; ".join(f"{c} for participant indices {idx}" for c, idx in by_count.items())
        raise TrexsimError(f"q_learning traders of one run must share prices.count (got {detail})")
    return counts[0]


def _rows_for(data: dict, pid: str, prices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q_bid row, q_ask row)`` of participant ``pid`` in a read table file, checked against its grid."""
    row = data["index"].get(pid)
    if row is None:
        held = list(data["index"])
        shown = ", ".join(map(repr, held[:5])) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise TrexsimError(f"{data['path']}: no Q-tables for participant {pid!r} (the file holds {shown})")
    saved = data["prices"][row]
    if saved.size != prices.size:
        raise TrexsimError(f"{data['path']}: participant {pid!r} has Q-tables over {saved.size} prices, "
                           f"but its prices.count is {prices.size}")
    if not np.allclose(saved, prices, rtol=0.0, atol=1e-9):  # same count, other window: the actions differ
        raise TrexsimError(f"{data['path']}: participant {pid!r} was trained on prices {saved[0]:g}..{saved[-1]:g} "
                           f"$/kWh, but its price grid is {prices[0]:g}..{prices[-1]:g} $/kWh")
    return data["q_bid"][row], data["q_ask"][row]


def _read_table_file(name: str) -> dict:
    """Read and check a saved ``q_tables.npz`` (or the run folder holding one)."""
    path = Path(name)
    if path.is_dir():
        path = path / TABLE_FILE
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise TrexsimError(f"{path}: Q-table file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise TrexsimError(f"{path}: not a Q-table file written by trexsim ({exc})") from None
    missing = [k for k in ("participant_ids", "prices", "q_bid", "q_ask") if k not in data]
    if missing:
        raise TrexsimError(f"{path}: not a Q-table file, it lacks {', '.join(missing)}")
    ids = [str(x) for x in np.atleast_1d(data["participant_ids"])]
    if len(set(ids)) != len(ids):
        raise TrexsimError(f"{path}: participant_ids repeats an id")
    shape = (len(ids), data["prices"].shape[-1] if data["prices"].ndim == 2 else -1)
    for key in ("prices", "q_bid", "q_ask"):
        if data[key].ndim != 2 or data[key].shape != shape:
            raise TrexsimError(f"{path}: {key} has shape {data[key].shape}, expected "
                               f"{len(ids)} participants x the prices' count, {shape}")
        try:
            data[key] = data[key].astype(np.float64, casting="same_kind")
        except TypeError:
            raise TrexsimError(f"{path}: {key} is not numeric ({data[key].dtype})") from None
        if not np.isfinite(data[key]).all():
            raise TrexsimError(f"{path}: {key} holds NaN or infinite values")
    return {"path": str(path), "index": {pid: j for j, pid in enumerate(ids)},
            "prices": data["prices"], "q_bid": data["q_bid"], "q_ask": data["q_ask"]}


__all__ = ["QLearningTraders", "TABLE_FILE", "choose_actions", "ucb1_action", "update_values"]
