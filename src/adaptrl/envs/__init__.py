"""Task families of the papers, by name.

``make(name, **options)`` returns a vectorised environment (host MuJoCo or device JAX) that steps
all environments of all tasks together; ``gymnasium.make("adaptrl/<Name>-v0")`` gives one
environment with ``sample_tasks``/``set_task``/``get_task`` (registered on import of adaptrl).

Options every family takes: ``normalize_actions`` (the original's ±10 action box, see
:func:`adaptrl.envs.base.env_action`; on by default for MuJoCo and point envs, off for the 1-D
envs). Host families also take ``num_threads``. Task options are per family (``adaptrl envs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from adaptrl.envs.base import EnvSpec, Task, Tasks, env_action, stack_tasks, unstack_tasks
from adaptrl.envs.device import FAMILIES as DEVICE_FAMILIES
from adaptrl.envs.device import DeviceVectorEnv
from adaptrl.envs.host import HostVectorEnv
from adaptrl.envs.mujoco_families import ALIASES
from adaptrl.envs.mujoco_families import FAMILIES as MUJOCO_FAMILIES
from adaptrl.errors import unknown_name_error

VectorEnv = HostVectorEnv | DeviceVectorEnv

__all__ = [
    "ALIASES",
    "EnvSpec",
    "Task",
    "Tasks",
    "VectorEnv",
    "canonical_name",
    "family_horizon",
    "family_names",
    "make",
    "obs_reward_fn",
    "obs_terminated_fn",
    "stack_tasks",
    "unstack_tasks",
]


def family_names() -> list[str]:
    """Every family name (aliases not included), MuJoCo first."""
    return list(MUJOCO_FAMILIES) + list(DEVICE_FAMILIES)


def canonical_name(name: str) -> str:
    """Resolve aliases (``AntFwdBack`` → ``AntRandDirec``) and check the name exists."""
    name = ALIASES.get(name, name)
    if name not in MUJOCO_FAMILIES and name not in DEVICE_FAMILIES:
        raise unknown_name_error("environment", name, [*family_names(), *ALIASES])
    return name


def family_horizon(name: str) -> int:
    """The paper horizon of family ``name`` (without building a simulator)."""
    name = canonical_name(name)
    family = MUJOCO_FAMILIES[name] if name in MUJOCO_FAMILIES else DEVICE_FAMILIES[name]
    return int(family.horizon)


def make(name: str, **options: Any) -> VectorEnv:
    """The vectorised environment of family ``name`` with ``options`` (see module docstring)."""
    name = canonical_name(name)
    if name in MUJOCO_FAMILIES:
        return HostVectorEnv(MUJOCO_FAMILIES[name], **options)
    return DeviceVectorEnv(DEVICE_FAMILIES[name], **options)


def obs_reward_fn(env: VectorEnv) -> Callable:
    """JAX ``reward(obs, action, next_obs, task)`` of ``env``'s family, for imagined transitions.

    ``action`` is the policy action (rescaled and clipped as the simulator does); ``task`` holds
    this transition's task entries. Exact for the point, 1-D and AntRandGoal families. For the
    velocity-driven MuJoCo families the velocity term reads the root (Humanoid: torso) velocity of
    ``next_obs`` in place of the displacement over the frame skip that the simulator uses; every
    other term is exact.
    """
    spec = env.spec
    low, high = jnp.asarray(spec.action_low), jnp.asarray(spec.action_high)
    if isinstance(env, DeviceVectorEnv):

        def device_reward(obs, action, next_obs, task):
            a = env_action(action, low, high, spec.normalize_actions, xp=jnp)
            return env.reward(obs, a, next_obs, task)

        return device_reward
    family = env.family

    def mujoco_reward(obs, action, next_obs, task):
        a = env_action(action, low, high, spec.normalize_actions, xp=jnp)
        motion = family.obs_motion(jnp, obs, next_obs)
        return family.reward(jnp, motion, a, task, family.frame_skip)[0]

    return mujoco_reward


def obs_terminated_fn(env: VectorEnv) -> Callable:
    """JAX ``terminated(next_obs) -> bool`` of ``env``'s family (never-ending families: all False).

    Exact except Hopper's velocity bound, which the observation sees clipped to ±10.
    """
    if isinstance(env, DeviceVectorEnv):
        return env.terminated
    fn = env.family.terminated
    if fn is None:
        return lambda next_obs: jnp.zeros(next_obs.shape[:-1], dtype=bool)
    return lambda next_obs: fn(jnp, next_obs)
