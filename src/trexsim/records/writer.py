"""The recorder module: listens to the fabric and appends every record to DuckDB in batches.

It sees only messages, so it records a networked run exactly as an in-process one. Rows are
buffered and appended as Arrow tables by a writer thread, so the round loop and DuckDB run on
two cores, a crash loses at most the last batch and a year-long run never holds its ledger in
memory.

How the rows reach DuckDB decides what a full-records run costs (see BENCHMARKS.md, issue 3):

* DuckDB writes an append of whole row groups (``ROW_GROUP_ROWS``) straight into the file; the
  rest of an append goes through the WAL and is compressed again at the next checkpoint, about
  twice the work. So the writer inserts whole row groups while the run goes and keeps the
  remainder for the next batch; every ``batch_rounds`` rounds (a "complete" flush: the end of a
  run, a failure, the crash bound) it inserts everything it holds.
* The delivery rows are buffered ``ceil(ROW_GROUP_ROWS / n)`` rounds at a time (about one row
  group), so the writer works through the run instead of after it. The buffers are reused, not
  reallocated: fresh memory costs a page fault per page, more than copying the rows into it.
* The database's row groups are 61,440 rows, half DuckDB's default, so that tables of a few
  hundred rows a round (orders and settlements of ~100 households) fill whole ones during a day
  and little is left for the end of a run: ≈ +10 % rounds/s at 100 households with full records,
  for ≈ 5–8 % more file.
"""

from __future__ import annotations

from array import array

import datetime as _dt
import queue
import threading
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from trexsim.fabric import topics
from trexsim.fabric.messages import (
    POOL_NAMES,
    SIDE_NAMES,
    Cleared,
    Delivered,
    EpisodeStart,
    MeterReadings,
    Accepted,
    Rejected,
    merge_meter_readings,
    Roster,
    RoundStart,
)
from trexsim.records.schema import TABLES, TYPES, VIEWS, WIDENABLE

# the run database's row group (DuckDB's default is 122,880): appends of whole ones skip the WAL
ROW_GROUP_ROWS = 61_440
_SIDES = pa.array(SIDE_NAMES)
_POOLS = pa.array(POOL_NAMES)


def create_database(path: Path) -> duckdb.DuckDBPyConnection:
    # the file's row groups are half DuckDB's default: at ~100 households a day's orders and
    # settlements fill whole ones, which go straight into the file while the run goes instead of
    # through the WAL after it (BENCHMARKS.md, issue 3)
    con = duckdb.connect(":memory:")
    quoted = str(path).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS run (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
    con.execute("USE run")
    # one core for the writer thread: the round loop keeps the other
    con.execute("SET threads TO 1")
    # DuckDB keeps the blocks it wrote cached up to its memory limit (80 % of RAM by default): a
    # long full-records run would grow by ~30 MB a day at 1,000 households. The writer never reads
    # them back, so a small limit bounds the run's memory at no cost in speed (not stored in the file).
    con.execute("SET memory_limit = '256MB'")
    for name, definition in TYPES.items():
        exists = con.execute("SELECT count(*) FROM duckdb_types() WHERE type_name = ?", [name]).fetchone()[0]
        if not exists:
            con.execute(f"CREATE TYPE {name} AS {definition}")
    for name, columns in TABLES.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
    for name, query in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
    return con


class Totals:
    """Running per-participant totals: the summary never needs to re-read the ledger."""

    FIELDS = ("bought_wh", "sold_wh", "grid_import_wh", "grid_export_wh", "market_cost_usd", "market_revenue_usd",
              "grid_cost_usd", "grid_revenue_usd", "grid_only_cost_usd", "shortfall_wh", "unused_wh", "battery_cover_wh",
              "load_wh", "generation_wh")

    def __init__(self, n: int):
        self.by_episode: dict[int, dict[str, np.ndarray]] = {}
        self.n = n
        self.settled_wh: dict[int, int] = {}
        self.settled_value_usd: dict[int, float] = {}
        self.settled_seller_value_usd: dict[int, float] = {}
        self.surplus_usd: dict[int, float] = {}
        self.rejections: dict[int, int] = {}
        # per market (its index in the markets table), over every episode: [energy Wh, contracts, buyers' value $]
        self.by_market: dict[int, list] = {}
        # per episode, the delivered rounds and the community's net metered energy of each [Wh] (compact arrays:
        # a year of minute rounds is 8 MB, not a list of tuples)
        self.community_net_wh: dict[int, tuple[array, array]] = {}

    def episode(self, e: int) -> dict[str, np.ndarray]:
        if e not in self.by_episode:
            self.by_episode[e] = {f: np.zeros(self.n, dtype=np.float64) for f in self.FIELDS}
            self.settled_wh[e] = 0
            self.settled_value_usd[e] = 0.0
            self.settled_seller_value_usd[e] = 0.0
            self.surplus_usd[e] = 0.0
            self.rejections[e] = 0
        return self.by_episode[e]


class Recorder:
    def __init__(self, fabric, db_path: Path, n_participants: int, level: str = "full", batch_rounds: int = 1440,
                 market_ids: list[str] | None = None):
        """``market_ids``: the run's markets, in the order of the ``markets`` table (a message naming no market
        is the first's)."""
        self.path = Path(db_path)
        self.con = create_database(self.path)
        self.full = level == "full"
        self.n = n_participants
        # every batch_rounds rounds everything buffered goes into the database (what a killed process can lose)
        self.batch_rounds = max(1, int(batch_rounds))
        # delivery rounds per buffer: about one row group of rows. The same at both levels: totals are
        # summed per buffer, so summary.json is the same to the last digit whatever the level
        self.buffer_rounds = min(self.batch_rounds, -(-ROW_GROUP_ROWS // max(1, n_participants)))
        self.totals = Totals(n_participants)
        self._market_index = {m: i for i, m in enumerate(market_ids or [""])}
        self._market_index[""] = 0
        self._rows: dict[str, list] = {name: [] for name in ("rounds", "orders", "settlements", "rejections")}
        self._meter: list[MeterReadings] = []
        self._round_start: dict[int, int] = {}
        self._since_complete = 0
        self._free: list[dict] = []  # delivery buffers the writer has finished with
        self._free_lock = threading.Lock()
        self._dbuf = self._delivery_buffers()
        self._dkeys = np.zeros((self.buffer_rounds, 2), dtype=np.int64)
        self._dfill = 0
        # rows the writer holds back until they fill a row group, per table: [(arrow table, [releases])]
        self._held: dict[str, list] = {}
        # DuckDB inserts release the GIL: a writer thread overlaps them with the round loop.
        # The queue is bounded, so a slow disk slows the simulation instead of filling memory.
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._writer_error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="trexsim-recorder", daemon=True)
        self._writer.start()
        fabric.subscribe(topics.ROSTER, self.on_roster)
        fabric.subscribe(topics.EPISODE_START, self.on_episode_start)
        fabric.subscribe(topics.ROUND_START, self.on_round_start)
        fabric.subscribe(topics.ACCEPTED, self.on_orders)
        fabric.subscribe(topics.REJECTED, self.on_rejected)
        fabric.subscribe(topics.CLEARED, self.on_cleared)
        fabric.subscribe(topics.METER, self.on_meter)
        fabric.subscribe(topics.DELIVERED, self.on_delivered)

    # ------------------------------------------------------------------ buffers
    _INTS = ("load_wh", "generation_wh", "battery_charge_wh", "battery_discharge_wh", "bought_wh", "sold_wh",
             "grid_import_wh", "grid_export_wh", "shortfall_wh", "unused_wh", "battery_cover_wh", "grid_only_net_wh")
    _FLOATS = ("battery_stored_wh", "market_cost_usd", "market_revenue_usd", "grid_cost_usd", "grid_revenue_usd",
               "grid_only_cost_usd")

    def _delivery_buffers(self) -> dict:
        """A set of (rounds x participants) delivery buffers: a used one if the writer is done with it."""
        with self._free_lock:
            if self._free:
                return self._free.pop()
        shape = (self.buffer_rounds, self.n)
        # filled every round in both levels: totals are summed from it at each flush. Energies stay
        # int64 here (as the messages carry them); DuckDB narrows them to INTEGER on insert.
        buf = {c: np.zeros(shape, dtype=np.int64) for c in self._INTS}
        buf.update({c: np.zeros(shape) for c in self._FLOATS})
        if self.full:
            buf["episode"] = np.zeros(shape, dtype=np.int32)
            buf["round"] = np.zeros(shape, dtype=np.int32)
            buf["participant"] = np.broadcast_to(np.arange(self.n, dtype=np.int32), shape).copy()
        return buf

    def _release(self, buf: dict) -> None:
        with self._free_lock:
            self._free.append(buf)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Another connection to the run database, for a module that writes tables of its own."""
        cur = self.con.cursor()
        cur.execute("USE run")
        return cur

    def write_meta(self, runs_row: dict, participants_rows: dict[str, list], markets_rows: dict[str, list] | None = None) -> None:
        self.con.append("runs", _frame(runs_row, single=True))
        self.con.append("participants", _frame(participants_rows))
        if markets_rows is not None:
            self.con.append("markets", _frame(markets_rows))

    def _market(self, market_id: str) -> int:
        """The index of a market in the ``markets`` table (-1: a market this run does not have)."""
        return self._market_index.get(market_id, -1)

    def finish_meta(self, status: str) -> None:
        self.wait()
        self.con.execute("UPDATE runs SET finished_utc = ?, status = ?", [_dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None), status])

    # ------------------------------------------------------------------ handlers
    def on_roster(self, msg: Roster) -> None:
        self.n = len(msg.participant_ids)

    def on_episode_start(self, msg: EpisodeStart) -> None:
        self.totals.episode(msg.episode)

    def on_round_start(self, msg: RoundStart) -> None:
        self._round_start[msg.round] = msg.start_utc_s

    def on_orders(self, msg: Accepted) -> None:
        """Accepted orders, as booked (rejected ones go to the rejections table)."""
        if self.full and len(msg.participant):
            self._rows["orders"].append(msg)  # turned into columns once per batch, at flush

    def on_rejected(self, msg: Rejected) -> None:
        n = len(msg.reason)
        episode, round_, delivery = msg.episode, msg.round, msg.delivery_round
        if self.totals.by_episode and episode not in self.totals.by_episode:
            # a rejected order claiming an episode that never ran: counted and stored under the latest one, so that
            # it neither opens an empty episode in the summary nor is lost to a number no column holds
            episode = max(self.totals.by_episode)
        round_, delivery = (int(np.clip(r, -(1 << 31), (1 << 31) - 1)) for r in (round_, delivery))
        self.totals.episode(episode)
        self.totals.rejections[episode] += n
        self._rows["rejections"].append((
            np.full(n, episode, dtype=np.int32), np.full(n, round_, dtype=np.int32),
            np.full(n, delivery, dtype=np.int32), np.asarray(msg.order_id, dtype=np.int64),
            np.asarray(msg.participant, dtype=np.int64), np.asarray(msg.side, dtype=np.int64),
            np.asarray(msg.pool, dtype=np.int64), np.asarray(msg.price, dtype=np.float64),
            np.asarray(msg.quantity_wh, dtype=np.float64), np.asarray(msg.reason, dtype=object),
            np.full(n, self._market(msg.market), dtype=np.int16)))

    def on_cleared(self, msg: Cleared) -> None:
        if len(msg.quantity_wh):
            self._rows["settlements"].append(msg)  # turned into columns once per batch, at flush

    def on_meter(self, msg: MeterReadings) -> None:
        # one message per participant module, merged at delivery (as the market does)
        if self._meter and (self._meter[0].episode, self._meter[0].round) != (msg.episode, msg.round):
            self._meter = []
        self._meter.append(msg)

    def on_delivered(self, msg: Delivered) -> None:
        # copied row by row into reused buffers: keeping the messages until a flush instead would
        # hold ~17 MB a row group of fresh memory, whose page faults cost more than the copies
        parts = self._meter
        b = self._dbuf
        i = self._dfill
        if parts and parts[0].round == msg.round and parts[0].episode == msg.episode:
            meter = merge_meter_readings(parts, self.n)
            for field in _METER_FIELDS:
                b[field][i] = getattr(meter, field)
        else:  # no readings for this round: recorded as zero, as the market settled it
            for field in _METER_FIELDS:
                b[field][i] = 0
        for field in _DELIVERED_FIELDS:
            b[field][i] = getattr(msg, field)
        self.totals.surplus_usd[msg.episode] = self.totals.surplus_usd.get(msg.episode, 0.0) + msg.auctioneer_surplus_usd
        rounds, net = self.totals.community_net_wh.setdefault(msg.episode, (array("q"), array("q")))
        rounds.append(msg.round)
        net.append(int(np.sum(msg.net_meter_wh)))
        # the round's row; its energy totals are summed from the delivery buffer at the flush
        self._rows["rounds"].append((self._round_start.pop(msg.round, 0), msg.grid_buy_price, msg.grid_sell_price,
                                     msg.auctioneer_surplus_usd))
        self._dkeys[i] = (msg.episode, msg.round)
        self._dfill = i + 1
        self._since_complete += 1
        if self._since_complete >= self.batch_rounds:
            self.flush()
        elif self._dfill >= self.buffer_rounds:
            self._flush(complete=False)

    # ------------------------------------------------------------------ writing
    def _add_settled(self, columns: dict) -> None:
        q = columns["quantity_wh"]
        for e in np.unique(columns["episode"]):
            rows = columns["episode"] == e
            self.totals.episode(int(e))
            self.totals.settled_wh[int(e)] += int(q[rows].sum())
            self.totals.settled_value_usd[int(e)] += float((q[rows] * columns["buyer_price"][rows]).sum() / 1000.0)
            self.totals.settled_seller_value_usd[int(e)] += float((q[rows] * columns["seller_price"][rows]).sum() / 1000.0)
        market = columns["market"]
        for m in np.unique(market):
            rows = market == m
            entry = self.totals.by_market.setdefault(int(m), [0, 0, 0.0])
            entry[0] += int(q[rows].sum())
            entry[1] += int(rows.sum())
            entry[2] += float((q[rows] * columns["buyer_price"][rows]).sum() / 1000.0)

    def _add_totals(self, k: int) -> None:
        episodes = self._dkeys[:k, 0]
        for e in np.unique(episodes):
            rows = slice(None, k) if episodes[0] == episodes[-1] == e else (episodes == e)
            tot = self.totals.episode(int(e))
            for field in Totals.FIELDS:
                tot[field] += self._dbuf[field][:k][rows].sum(axis=0)

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(*item)
            except BaseException as exc:  # reported to the simulation at the next flush
                self._writer_error = exc
            finally:
                self._queue.task_done()

    def _write(self, parts: list, complete: bool) -> None:
        """Insert what fills whole row groups (everything, if ``complete``); hold the rest back."""
        for table, data, release in parts:
            self._held.setdefault(table, []).append((data, [release] if release else []))
        for table, held in self._held.items():
            rows = sum(data.num_rows for data, _ in held)
            take = rows if complete else rows - rows % ROW_GROUP_ROWS
            if take == 0:
                continue
            # zero-copy: the batches stay separate Arrow chunks of one table
            data = held[0][0] if len(held) == 1 else pa.concat_tables([d for d, _ in held], promote_options="permissive")
            self._insert(table, data.slice(0, take) if take < rows else data)
            # buffers whose rows are all in the database go back for reuse; the rest stay held
            keep, end = [], 0
            for part, releases in held:
                end += part.num_rows
                if end <= take:
                    for release in releases:
                        release()
                else:
                    keep.extend(releases)
            held[:] = [(data.slice(take), keep)] if take < rows else []

    def _insert(self, table: str, data: pa.Table) -> None:
        try:
            _append(self.con, table, data)
        except duckdb.ConversionException:
            # an energy beyond INTEGER (2.1 GWh in one round): widen the table's energy columns, keep going
            for column in WIDENABLE.get(table, ()):
                self.con.execute(f"ALTER TABLE {table} ALTER {column} TYPE BIGINT")
            _append(self.con, table, data)

    def _submit(self, parts: list, complete: bool) -> None:
        if self._writer_error is not None:
            raise self._writer_error
        if parts or complete:
            self._queue.put((parts, complete))

    def wait(self) -> None:
        """Block until every submitted batch is in the database."""
        self._queue.join()
        if self._writer_error is not None:
            raise self._writer_error

    def flush(self) -> None:
        """Hand everything buffered to the writer, which inserts all of it (see ``wait``)."""
        self._since_complete = 0
        self._flush(complete=True)

    def _flush(self, complete: bool) -> None:
        batch: list = []
        rows = self._rows["rounds"]
        k = self._dfill
        if rows:  # one per delivered round, in the order of the delivery buffer's k rows
            start, buy, sell, surplus = (np.array(c) for c in zip(*rows))
            buf = self._dbuf
            batch.append(("rounds", pa.table({
                "episode": self._dkeys[:k, 0].astype(np.int32), "round": self._dkeys[:k, 1].astype(np.int32), "start_utc_s": start,
                "grid_buy_price": buy, "grid_sell_price": sell, "market_wh": buf["bought_wh"][:k].sum(axis=1),
                "grid_import_wh": buf["grid_import_wh"][:k].sum(axis=1),
                "grid_export_wh": buf["grid_export_wh"][:k].sum(axis=1), "auctioneer_surplus_usd": surplus}), None))
            rows.clear()
        for name, fields in (("orders", _ORDER_FIELDS), ("settlements", _SETTLEMENT_FIELDS)):
            messages = self._rows[name]
            if not messages:
                continue
            counts = np.array([len(m.quantity_wh) for m in messages])
            columns = {c: np.repeat(np.array([getattr(m, c) for m in messages], dtype=np.int32), counts)
                       for c in ("episode", "round", "delivery_round")}
            columns["market"] = np.repeat(np.array([self._market(m.market) for m in messages], dtype=np.int16), counts)
            for column, attribute in fields.items():
                columns[column] = np.concatenate([getattr(m, attribute) for m in messages],
                                                 dtype=_DTYPES.get(column), casting="same_kind")
            messages.clear()
            if name == "settlements":
                self._add_settled(columns)
                if not self.full:
                    continue
            arrays = {}
            for column in _COLUMNS[name]:
                values = columns[column]
                if column == "side":
                    arrays[column] = _codes(values, _SIDES)
                elif column == "pool":
                    arrays[column] = _codes(values, _POOLS)
                else:  # int64 participant indices and energies: DuckDB narrows them to INTEGER on insert
                    arrays[column] = pa.array(values)
            batch.append((name, pa.table(arrays), None))
        parts = self._rows["rejections"]
        if parts:
            columns = [np.concatenate(c) for c in zip(*parts)]
            arrays = {}
            for column, values in zip(_COLUMNS["rejections"], columns):
                arrays[column] = pa.array(list(values), type=pa.string()) if values.dtype == object else pa.array(values)
            batch.append(("rejections", pa.table(arrays), None))
            parts.clear()
        if k:
            self._add_totals(k)
            if self.full:
                buf = self._dbuf
                buf["episode"][:k] = self._dkeys[:k, :1]
                buf["round"][:k] = self._dkeys[:k, 1:]
                # views of the buffers, no copy: the writer hands the set back once its rows are inserted
                data = pa.table({c: pa.array(buf[c][:k].reshape(-1)) for c in _COLUMNS["delivery_rows"]})
                batch.append(("delivery_rows", data, lambda buf=buf: self._release(buf)))
                self._dbuf = self._delivery_buffers()
            self._dfill = 0
        self._submit(batch, complete)

    def close(self) -> None:
        if self._writer.is_alive():
            try:
                self.flush()
            finally:
                self._queue.put(None)
                self._writer.join()
        self.con.close()
        if self._writer_error is not None:
            raise self._writer_error


_DELIVERED_FIELDS = ("bought_wh", "sold_wh", "grid_import_wh", "grid_export_wh", "shortfall_wh", "unused_wh",
                     "battery_cover_wh", "market_cost_usd", "market_revenue_usd", "grid_cost_usd", "grid_revenue_usd",
                     "grid_only_cost_usd")
_METER_FIELDS = ("load_wh", "generation_wh", "battery_charge_wh", "battery_discharge_wh", "battery_stored_wh",
                 "grid_only_net_wh")
_ORDER_FIELDS = {"order_id": "order_id", "participant": "participant", "side": "side", "pool": "pool",
                 "price": "price", "quantity_wh": "quantity_wh", "tie_rank": "tie_rank", "batch_position": "batch_position"}
_SETTLEMENT_FIELDS = {"pool": "pool", "buyer": "buyer", "seller": "seller", "quantity_wh": "quantity_wh",
                      "buyer_price": "buyer_price", "seller_price": "seller_price", "bid_id": "bid_id", "ask_id": "ask_id"}
_COLUMNS = {name: [c.strip().split()[0] for c in cols.replace("\n", " ").split(",") if c.strip()] for name, cols in TABLES.items()}
# one dtype per column whatever the messages carried, so held batches of a table concatenate
_DTYPES = {"order_id": np.int64, "participant": np.int64, "price": np.float64, "quantity_wh": np.int64,
           "tie_rank": np.int64, "batch_position": np.int64,
           "buyer": np.int64, "seller": np.int64, "buyer_price": np.float64, "seller_price": np.float64,
           "bid_id": np.int64, "ask_id": np.int64}


def _append(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    # arrow scan by name: columns are listed in the table's own order
    con.register("_batch", data)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _batch")
    finally:
        con.unregister("_batch")


def _codes(values, names: pa.Array) -> pa.Array:
    # dictionary-encoded: DuckDB reads it straight into an ENUM column
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(values, dtype=np.int8)), names)


def _frame(data: dict, single: bool = False):
    import pandas as pd

    if single:
        return pd.DataFrame({k: [v] for k, v in data.items()})
    return pd.DataFrame(data)
