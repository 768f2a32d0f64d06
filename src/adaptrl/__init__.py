"""adaptrl: fast-adapting reinforcement learning (gradient-based meta-RL and model-based RL).

Importing the package registers every task family with Gymnasium as ``adaptrl/<Name>-v0``.
"""

from adaptrl.envs import make
from adaptrl.envs.gym_env import register_envs

__version__ = "0.1.0"
__all__ = ["__version__", "make"]

register_envs()
