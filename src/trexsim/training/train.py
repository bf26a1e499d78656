"""Train a Stable-Baselines3 PPO agent on the learner's Gymnasium env, then evaluate it.

Output folder (``runs/<name>`` unless ``out_dir`` / ``--out``)::

    training.json          the training config as run (with the community inline)
    checkpoints/ppo_<steps>_steps.zip   every ``checkpoint_every_steps``
    model.zip              the final policy (``stable_baselines3.PPO.load``)
    tensorboard/PPO_1/     TensorBoard event files (``tensorboard --logdir OUT/tensorboard``)
    monitor/               SB3 Monitor files: return and length of every training episode
    report.json, eval_traces.csv, figures/*.png   the evaluation on the held-out days

Needs the ``rl`` extra (torch, stable-baselines3, tensorboard).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trexsim.training.config import TrainingConfig

__all__ = ["TrainingResult", "train"]


@dataclass
class TrainingResult:
    out_dir: Path
    model_path: Path
    report: dict
    figures: list[Path]
    timesteps: int
    train_seconds: float


def _progress_callback(total: int, on_progress: Callable[[int, float | None], None] | None):
    from stable_baselines3.common.callbacks import BaseCallback

    class Progress(BaseCallback):
        """Reports steps done and the mean return of the last 20 finished episodes."""

        def _on_step(self) -> bool:
            if on_progress is not None and (self.num_timesteps % 256 < self.training_env.num_envs or self.num_timesteps >= total):
                buf = self.model.ep_info_buffer
                recent = list(buf)[-20:] if buf else []
                on_progress(self.num_timesteps, sum(e["r"] for e in recent) / len(recent) if recent else None)
            return True

    return Progress()


def train(cfg: TrainingConfig, out_dir: str | Path | None = None, timesteps: int | None = None,
          on_progress: Callable[[int, float | None], None] | None = None, on_phase: Callable[[str], None] | None = None) -> TrainingResult:
    """Train, save checkpoints and the final model, evaluate on the held-out days, write the report."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from trexsim.training.env import DatedEnv
    from trexsim.training.evaluate import evaluate, sb3_policy, write_report

    total = int(timesteps if timesteps is not None else cfg.total_timesteps)
    out = Path(out_dir if out_dir is not None else (cfg.out_dir or Path("runs") / cfg.name))
    out.mkdir(parents=True, exist_ok=True)
    sim = cfg.simulation_config
    record = cfg.model_dump(mode="json")
    record["simulation"] = sim.model_dump(mode="json", by_alias=False)
    record["total_timesteps"] = total
    (out / "training.json").write_text(json.dumps(record, indent=2))
    (out / "monitor").mkdir(exist_ok=True)
    torch.set_num_threads(1)  # small networks: one thread is fastest and leaves the other cores alone
    dates = cfg.train_start_dates()

    def make(i: int):
        return lambda: Monitor(DatedEnv(sim, cfg.learner, dates), str(out / "monitor" / f"env{i}"))

    venv = DummyVecEnv([make(i) for i in range(cfg.n_envs)])
    venv.seed(cfg.seed)
    p = cfg.ppo
    model = PPO("MlpPolicy", venv, learning_rate=p.learning_rate, n_steps=p.n_steps, batch_size=p.batch_size,
                n_epochs=p.n_epochs, gamma=p.gamma, gae_lambda=p.gae_lambda, clip_range=p.clip_range, ent_coef=p.ent_coef,
                vf_coef=p.vf_coef, max_grad_norm=p.max_grad_norm, seed=cfg.seed, device="cpu", verbose=0,
                tensorboard_log=str(out / "tensorboard"),
                policy_kwargs={"net_arch": list(p.net_arch), "log_std_init": p.log_std_init})
    checkpoints = CheckpointCallback(save_freq=max(1, cfg.checkpoint_every_steps // cfg.n_envs),
                                     save_path=str(out / "checkpoints"), name_prefix="ppo")
    if on_phase:
        on_phase("train")
    start = time.perf_counter()
    model.learn(total_timesteps=total, callback=CallbackList([checkpoints, _progress_callback(total, on_progress)]))
    seconds = time.perf_counter() - start
    model_path = out / "model.zip"
    model.save(model_path)
    venv.close()
    if on_phase:
        on_phase("evaluate")
    report, traces = evaluate(sim, cfg.learner, cfg.eval.days, sb3_policy(model, cfg.eval.deterministic), cfg.eval.rule_trader)
    report = {"name": cfg.name, "algorithm": cfg.algorithm, "learner": cfg.learner, "timesteps": int(model.num_timesteps),
              "train_seconds": round(seconds, 1), "seed": cfg.seed, **report}
    figures = write_report(out, report, traces, out / "monitor")
    return TrainingResult(out, model_path, report, figures, int(model.num_timesteps), seconds)
