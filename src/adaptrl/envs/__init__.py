"""Task families of the papers, by name.

``make(name, **options)`` returns a vectorised environment (host MuJoCo or device JAX) that steps
all environments of all tasks together; ``gymnasium.make("adaptrl/<Name>-v0")`` gives one
environment with ``sample_tasks``/``set_task``/``get_task`` (registered on import of adaptrl).

Besides the task families of the meta-RL papers there are single-task environments for
model-based RL (Clavera thesis §5.5, App. B.3): ``HalfCheetah``, ``Ant``, ``Walker2D``, ``Hopper``,
``Swimmer`` (host MuJoCo) and ``Point2D`` (device). Their task distribution is trivial:
``sample_tasks(n)`` returns ``n`` identical tasks ``{"task_id": 0}``.

Options every family takes: ``normalize_actions`` (the original's ±10 action box, see
:func:`adaptrl.envs.base.env_action`; on by default for the MuJoCo task families and the point
task families, off for the 1-D envs and the single-task environments) and ``horizon`` (the default
trajectory length ``spec.horizon``, which the sampler uses; a positive integer, default the
family's, e.g. ``make("HalfCheetah", horizon=1000)``). MuJoCo families also take ``num_threads``
and ``backend`` (``"native"``, the default, or ``"mjx"``: MuJoCo's JAX implementation, which runs
whole rollouts on an accelerator; :mod:`adaptrl.envs.mjx`).
Task options are per family (``adaptrl envs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from adaptrl.envs.base import EnvSpec, Task, Tasks, env_action, stack_tasks, unstack_tasks
from adaptrl.envs.device import FAMILIES as DEVICE_FAMILIES
from adaptrl.envs.device import SINGLE_TASK_FAMILIES as DEVICE_SINGLE_TASK
from adaptrl.envs.device import DeviceFamily, DeviceVectorEnv
from adaptrl.envs.host import HostVectorEnv
from adaptrl.envs.mujoco_families import ALIASES, MujocoFamily
from adaptrl.envs.mujoco_families import FAMILIES as MUJOCO_FAMILIES
from adaptrl.envs.mujoco_families import SINGLE_TASK_FAMILIES as MUJOCO_SINGLE_TASK
from adaptrl.errors import ConfigError, unknown_name_error

VectorEnv = HostVectorEnv | DeviceVectorEnv

__all__ = [
    "ALIASES",
    "EnvSpec",
    "Task",
    "Tasks",
    "VectorEnv",
    "canonical_name",
    "family_backend",
    "family_horizon",
    "family_names",
    "is_single_task",
    "make",
    "obs_reward_fn",
    "obs_terminated_fn",
    "stack_tasks",
    "unstack_tasks",
]


_HOST = {**MUJOCO_FAMILIES, **MUJOCO_SINGLE_TASK}
_DEVICE = {**DEVICE_FAMILIES, **DEVICE_SINGLE_TASK}


def family_names() -> list[str]:
    """Every family name (aliases not included): MuJoCo task families, MuJoCo single-task
    environments, device task families, device single-task environments."""
    return [*MUJOCO_FAMILIES, *MUJOCO_SINGLE_TASK, *DEVICE_FAMILIES, *DEVICE_SINGLE_TASK]


def canonical_name(name: str) -> str:
    """Resolve aliases (``AntFwdBack`` → ``AntRandDirec``) and check the name exists."""
    name = ALIASES.get(name, name)
    if name not in _HOST and name not in _DEVICE:
        raise unknown_name_error("environment", name, [*family_names(), *ALIASES])
    return name


def _family(name: str) -> MujocoFamily | DeviceFamily:
    name = canonical_name(name)
    return _HOST[name] if name in _HOST else _DEVICE[name]


def family_horizon(name: str) -> int:
    """The paper horizon of family ``name`` (without building a simulator)."""
    return int(_family(name).horizon)


def family_backend(name: str) -> str:
    """``"host"`` (native MuJoCo) or ``"device"`` (pure JAX) for family ``name``."""
    return "host" if canonical_name(name) in _HOST else "device"


def is_single_task(name: str) -> bool:
    """Whether ``name`` is a single-task environment (one MDP; trivial task distribution)."""
    return bool(_family(name).single_task)


def make(name: str, **options: Any) -> VectorEnv:
    """The vectorised environment of family ``name`` with ``options`` (see module docstring).

    MuJoCo families take ``backend``: ``"native"`` (default, :class:`HostVectorEnv`) or ``"mjx"``
    (:class:`adaptrl.envs.mjx.MjxVectorEnv`, MuJoCo's JAX implementation on the device)."""
    name = canonical_name(name)
    backend = options.pop("backend", "native")
    if name in _HOST:
        if backend == "mjx":
            from adaptrl.envs.mjx import MjxVectorEnv

            return MjxVectorEnv(_HOST[name], **options)
        if backend != "native":
            raise ConfigError(f"{name}: backend must be 'native' (MuJoCo in C threads, the default) "
                              f"or 'mjx' (MuJoCo's JAX implementation, on the device), got {backend!r}.")
        return HostVectorEnv(_HOST[name], **options)
    if backend != "native":
        raise ConfigError(f"{name}: the backend option is for the MuJoCo families; {name} is "
                          f"always simulated in JAX (got backend={backend!r}).")
    return DeviceVectorEnv(_DEVICE[name], **options)


def obs_reward_fn(env: VectorEnv) -> Callable:
    """JAX ``reward(obs, action, next_obs, task)`` of ``env``'s family, for imagined transitions.

    ``action`` is the policy action (rescaled and clipped as the simulator does); ``task`` holds
    this transition's task entries. Exact for the point, 1-D and AntRandGoal families and for the
    single-task MuJoCo environments, whose simulator computes its reward with this very function
    (:meth:`~adaptrl.envs.mujoco_families.MujocoFamily.observation_reward`). For the
    velocity-driven MuJoCo task families the velocity term reads the root (Humanoid: torso)
    velocity of ``next_obs`` in place of the displacement over the frame skip that the simulator
    uses; every other term is exact.
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
        return family.observation_reward(jnp, obs, a, next_obs, task)[0]

    return mujoco_reward


def obs_terminated_fn(env: VectorEnv) -> Callable:
    """JAX ``terminated(next_obs) -> bool`` of ``env``'s family (never-ending families: all False).

    The simulator terminates with the same function. Exact except HopperRandParams' velocity
    bound, which its observation sees clipped to ±10 (the single-task Hopper observes unclipped
    velocities: exact).
    """
    if isinstance(env, DeviceVectorEnv):
        return env.terminated
    fn = env.family.terminated
    if fn is None:
        return lambda next_obs: jnp.zeros(next_obs.shape[:-1], dtype=bool)
    return lambda next_obs: fn(jnp, next_obs)
