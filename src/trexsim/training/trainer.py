"""Train a Stable-Baselines3 PPO agent on the learner's Gymnasium env, then evaluate it.

Output folder (``runs/<name>`` unless ``out_dir`` / ``--out``)::

    training.json          the training config as run (with the community inline)
    checkpoints/ppo_<steps>_steps.zip   every ``checkpoint_every_steps``
    model.zip              the final policy (``stable_baselines3.PPO.load``)
    vecnormalize.pkl       the observation/reward scaling it was trained with (``VecNormalize.load``)
    tensorboard/PPO_1/     TensorBoard event files (``tensorboard --logdir OUT/tensorboard``)
    warm_start.json        with ``warm_start``: the rule's steps and the fit's losses
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
          on_progress: Callable[[int, float | None], None] | None = None, on_phase: Callable[[str], None] | None = None,
          evaluate_only: bool = False) -> TrainingResult:
    """Train, save checkpoints and the final model, evaluate on the held-out days, write the report.

    ``evaluate_only``: skip training; load ``OUT/model.zip`` (and ``OUT/vecnormalize.pkl``) and evaluate it.
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from trexsim.errors import TrexsimError
    from trexsim.training.env import DatedEnv, ResidualOrders
    from trexsim.training.evaluate import evaluate, write_report

    total = int(timesteps if timesteps is not None else cfg.total_timesteps)
    out = Path(out_dir if out_dir is not None else (cfg.out_dir or Path("runs") / cfg.name))
    sim = cfg.simulation_config
    torch.set_num_threads(1)  # small networks: one thread is fastest and leaves the other cores alone
    dates = cfg.train_start_dates()
    model_path, stats_path = out / "model.zip", out / "vecnormalize.pkl"

    wrap = (lambda env: ResidualOrders(env, sim, cfg.learner)) if cfg.action == "residual" else (lambda env: env)

    def make(i: int):
        return lambda: Monitor(wrap(DatedEnv(sim, cfg.learner, dates, cfg.energy_value)), str(out / "monitor" / f"env{i}"))

    seconds = 0.0
    if evaluate_only:
        if not model_path.exists():
            raise TrexsimError(f"no trained model to evaluate: {model_path} does not exist")
        model = PPO.load(model_path, device="cpu")
        norm = VecNormalize.load(str(stats_path), DummyVecEnv([lambda: wrap(DatedEnv(sim, cfg.learner, dates))])) if stats_path.exists() else None
        previous = out / "report.json"
        if previous.exists():
            seconds = json.loads(previous.read_text()).get("train_seconds", 0.0)
    else:
        out.mkdir(parents=True, exist_ok=True)
        record = cfg.model_dump(mode="json")
        record["simulation"] = sim.model_dump(mode="json", by_alias=False)
        record["total_timesteps"] = total
        (out / "training.json").write_text(json.dumps(record, indent=2))
        (out / "monitor").mkdir(exist_ok=True)
        venv = DummyVecEnv([make(i) for i in range(cfg.n_envs)])
        venv.seed(cfg.seed)
        norm = None
        if cfg.normalize.observations or cfg.normalize.rewards:
            # running mean/std of observations and of the discounted return: the inputs (a few % of
            # max_quantity_wh) and the rewards (cents) are far from unit scale
            venv = norm = VecNormalize(venv, norm_obs=cfg.normalize.observations, norm_reward=cfg.normalize.rewards,
                                       gamma=cfg.ppo.gamma)
        p = cfg.ppo
        model = PPO("MlpPolicy", venv, learning_rate=p.learning_rate, n_steps=p.n_steps, batch_size=p.batch_size,
                    n_epochs=p.n_epochs, gamma=p.gamma, gae_lambda=p.gae_lambda, clip_range=p.clip_range, ent_coef=p.ent_coef,
                    vf_coef=p.vf_coef, max_grad_norm=p.max_grad_norm, seed=cfg.seed, device="cpu", verbose=0,
                    tensorboard_log=str(out / "tensorboard"),
                    policy_kwargs={"net_arch": list(p.net_arch), "log_std_init": p.log_std_init})
        if p.initial_action is not None:
            if model.action_space.shape != (len(p.initial_action),):
                raise TrexsimError(f"ppo.initial_action: the learner's action space is {model.action_space}")
            with torch.no_grad():  # the last layer's weights start near 0, so its bias is the first mean action
                model.policy.action_net.bias.copy_(torch.as_tensor(p.initial_action, dtype=torch.float32))
        (out / "warm_start.json").unlink(missing_ok=True)  # from an earlier run in the same folder
        if cfg.warm_start is not None:
            from trexsim.training.warmstart import warm_start

            if on_phase:
                on_phase("warm_start")
            fitted = warm_start(model, venv, norm, cfg, cfg.warm_start.rounds, cfg.warm_start.epochs)
            (out / "warm_start.json").write_text(json.dumps(fitted, indent=2))
        checkpoints = CheckpointCallback(save_freq=max(1, cfg.checkpoint_every_steps // cfg.n_envs),
                                         save_path=str(out / "checkpoints"), name_prefix="ppo",
                                         save_vecnormalize=norm is not None)
        if on_phase:
            on_phase("train")
        start = time.perf_counter()
        model.learn(total_timesteps=total, callback=CallbackList([checkpoints, _progress_callback(total, on_progress)]))
        seconds = time.perf_counter() - start
        model.save(model_path)
        if norm is not None:
            norm.save(str(stats_path))
        venv.close()
    if on_phase:
        on_phase("evaluate")

    def policy(obs):
        x = norm.normalize_obs(obs) if norm is not None else obs  # the statistics as trained, frozen
        action, _ = model.predict(x, deterministic=cfg.eval.deterministic)
        return action

    warm_file = out / "warm_start.json"
    warm = json.loads(warm_file.read_text()) if warm_file.exists() else None
    report, traces = evaluate(sim, cfg.learner, cfg.eval.days, policy, cfg.eval.rule_trader, cfg.energy_value,
                              wrap=wrap if cfg.action == "residual" else None)
    report = {"name": cfg.name, "algorithm": cfg.algorithm, "action": cfg.action, "learner": cfg.learner, "timesteps": int(model.num_timesteps),
              "train_seconds": round(seconds, 1), "seed": cfg.seed, "warm_start": warm, **report}
    figures = write_report(out, report, traces, out / "monitor")
    return TrainingResult(out, model_path, report, figures, int(model.num_timesteps), seconds)
