"""The recorder keeps every rejection, whatever episode or round number the rejected order claimed (issue 13, item 6)."""

import duckdb
import numpy as np

from trexsim.fabric import topics
from trexsim.fabric.inprocess import InProcessFabric
from trexsim.fabric.messages import EpisodeStart, Rejected
from trexsim.records.writer import Recorder


def test_a_rejection_claiming_an_absurd_episode_is_stored_under_the_running_one(tmp_path):
    fabric = InProcessFabric()
    recorder = Recorder(fabric, tmp_path / "run.duckdb", 2)
    fabric.publish(topics.EPISODE_START, EpisodeStart(0, 0, 10, 60))
    one = lambda v, dt=np.int64: np.array([v], dtype=dt)  # noqa: E731
    fabric.publish(topics.REJECTED, Rejected((1 << 63) - 1, (1 << 62), -(1 << 62), one(1), one(0), one(0), one(0.1, float),
                                             one(5.0, float), one(7), ["wrong_round"]))
    recorder.flush()
    assert sorted(recorder.totals.by_episode) == [0] and recorder.totals.rejections[0] == 1
    recorder.close()
    con = duckdb.connect(str(tmp_path / "run.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT episode, round, delivery_round, participant, order_id, reason FROM rejections").fetchall()
    finally:
        con.close()
    assert rows == [(0, (1 << 31) - 1, -(1 << 31), 1, 7, "wrong_round")]
