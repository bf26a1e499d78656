"""Deep-RL training of one learner in a community: ``trexsim train CONFIG`` (see docs/training.md).

The training config and evaluation import only the core (and Gymnasium for the env);
:func:`train` needs the ``rl`` extra: ``pip install "trexsim[rl]"`` (torch, Stable-Baselines3,
TensorBoard). ``import trexsim`` never imports this package.
"""

from trexsim.training.config import TrainingConfig, load_training_config, parse_training_config

__all__ = ["TrainingConfig", "load_training_config", "parse_training_config", "train"]


def train(*args, **kwargs):
    """Train and evaluate (see :func:`trexsim.training.trainer.train`); needs torch and stable-baselines3."""
    from trexsim.training.trainer import train as _train

    return _train(*args, **kwargs)
