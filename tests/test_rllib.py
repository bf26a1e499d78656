"""RLlib's multi-agent PPO trains over trexsim's PettingZoo env: examples/rllib/train_rllib.py runs as documented.

``ray[rllib]`` pins an older Gymnasium than the rest of the RL tests use, so it is not in the test extras: this test
skips where RLlib is absent, and ``.ci/run`` runs it in an environment of its own (``trexsim[rl]`` + ``ray[rllib]``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

try:  # (ray itself may be installed by the cluster extra without RLlib's own dependencies)
    import ray.rllib.algorithms.ppo  # noqa: F401
except ImportError:
    pytest.skip("ray[rllib] is not installed (.ci/run runs this test in an environment of its own)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]


def test_rllib_ppo_trains_on_the_community_rl_example(tmp_path):
    from trexsim.cli import app  # noqa: F401 - the CLI's init writes the example, as the docs do it
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["init", str(tmp_path / "rl"), "--example", "community-rl"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "rllib" / "train_rllib.py"),
                          str(tmp_path / "rl" / "community-rl.json"), "--iterations", "2", "--json", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "iteration   2: mean episode return" in run.stdout
    report = json.loads(out.read_text())
    # two iterations of 960 agent steps: 96-round episodes of 2 learners, so episodes finished and were scored
    assert len(report["iterations"]) == 2 and all(r is not None for r in report["iterations"])
    # every return is a sum of the learners' net profits over one day: finite, and at most a few dollars
    for r in report["iterations"] + [report["greedy_return_usd"], report["noop_return_usd"]]:
        assert abs(r) < 100.0
    # the do-nothing episode is deterministic: the same seed gives the same episode whatever was learned
    assert report["noop_return_usd"] == pytest.approx(2.274, abs=0.01)
