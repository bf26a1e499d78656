"""Multi-agent PPO from RLlib over trexsim's PettingZoo environment: every learner of a config, one shared policy.

    pip install "trexsim[rl]" "ray[rllib]"
    trexsim init rl --example community-rl          # 2 learners (rl-1, rl-2) among 6 neighbours, 15-minute rounds
    python examples/rllib/train_rllib.py rl/community-rl.json --iterations 20

RLlib (Ray 2.40 and newer: its "new API stack") drives ``trexsim.envs.parallel_env`` through its own PettingZoo
wrapper, ``ParallelPettingZooEnv``: nothing trexsim-specific is needed beyond the env. Each iteration prints the
mean episode return (the learners' summed net profit over one episode, $) and, at the end, the greedy policy's
return on a fresh episode of the same env next to the episode return of a do-nothing policy (every agent's
no-op action: no orders, battery held) so a reader sees whether it learned anything.

Everything random flows from ``--seed`` (RLlib's ``debugging(seed=...)`` and the env's reset seeds); RLlib's
own sampling is not bit-for-bit reproducible across machines (PyTorch kernels, thread scheduling).

``ray[rllib]`` pins its own Gymnasium (1.2.x for Ray 2.60), older than the one trexsim's other RL paths are tested
with (``tests/test_rllib.py`` runs this script in a separate environment with that pin: see ``.ci/run``).
"""

from __future__ import annotations

import argparse
import json
import os


def make_env(env_config: dict):
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    import trexsim.envs

    return ParallelPettingZooEnv(trexsim.envs.parallel_env(env_config["config"], backend=env_config.get("backend", "auto")))


def episode_return(algo, config_path: str, seed: int, greedy: bool) -> float:
    """The learners' summed reward [$] over one episode: the trained policy's deterministic actions (``greedy``)
    or every agent's no-op (no orders, battery held)."""
    import numpy as np
    import torch
    import trexsim.envs
    from ray.rllib.core.columns import Columns

    env = trexsim.envs.parallel_env(config_path)
    obs, _ = env.reset(seed=seed)
    module = algo.get_module("shared") if greedy else None
    total = 0.0
    while env.agents:
        if greedy:
            batch = {Columns.OBS: torch.as_tensor(np.stack([obs[a] for a in env.agents]))}
            out = module.forward_inference(batch)
            dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            acts = dist.to_deterministic().sample().numpy()
            actions = {a: acts[i] for i, a in enumerate(env.agents)}
        else:
            actions = {}  # an agent given no action places no orders and holds its battery
        obs, rewards, _, _, _ = env.step(actions)
        total += float(sum(rewards.values()))
    env.close()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="a trexsim config with at least one external trader")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=960, help="agent steps per training batch")
    ap.add_argument("--json", help="write the per-iteration returns and the final comparison here")
    args = ap.parse_args()

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    register_env("trexsim-alex", make_env)
    config = (
        PPOConfig()
        .environment("trexsim-alex", env_config={"config": os.path.abspath(args.config)})
        .framework("torch")
        .env_runners(num_env_runners=0, rollout_fragment_length="auto")
        .training(train_batch_size_per_learner=args.batch, minibatch_size=min(128, args.batch), num_epochs=5, lr=3e-4)
        .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, episode, **kw: "shared")
        .debugging(seed=args.seed)
    )
    algo = config.build_algo() if hasattr(config, "build_algo") else config.build()
    history = []
    for i in range(args.iterations):
        result = algo.train()
        ret = result.get("env_runners", {}).get("episode_return_mean")
        history.append(None if ret is None else float(ret))
        print(f"iteration {i + 1:3d}: mean episode return {'-' if ret is None else f'{ret:8.3f}'} $", flush=True)
    learned = episode_return(algo, args.config, args.seed + 10_000, greedy=True)
    idle = episode_return(algo, args.config, args.seed + 10_000, greedy=False)
    print(f"greedy policy on a fresh episode: {learned:.3f} $; do-nothing policy on the same episode: {idle:.3f} $")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"iterations": history, "greedy_return_usd": learned, "noop_return_usd": idle}, f, indent=2)
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
