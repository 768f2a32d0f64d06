"""Pieces shared by every task family: the static description of a family, tasks as pytrees,
and the action normalisation of the original code.

A *task family* is a distribution over MDPs that share observation and action spaces (ProMP
(Rothfuss et al., 2019) §3; TMAML (Liu et al., 2019) §4.1). A *task* is one draw, stored as a
dict of numpy arrays; a batch of tasks is the same dict with a leading task axis
(``stack_tasks`` / ``unstack_tasks`` convert).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptrl.errors import ConfigError

Task = dict[str, np.ndarray]
"""One task: parameter name → array (no leading axis)."""

Tasks = dict[str, np.ndarray]
"""A batch of tasks: parameter name → array with a leading task axis."""

POLICY_ACTION_BOUND = 10.0
"""The original code's ``normalize(env)`` makes the policy act in ``[-10, 10]^d``
(docs/environments.md, "Action normalisation")."""


@dataclass(frozen=True)
class EnvSpec:
    """Static description of a task family, as listed by ``adaptrl envs``.

    Attributes:
        name: the family's name (``adaptrl/<name>-v0`` in Gymnasium).
        obs_dim, act_dim: observation and action dimensions.
        action_low, action_high: the simulator's own action bounds.
        horizon: default trajectory length, the one of the paper runs (the original code's
            ``max_path_length``; docs/environments.md).
        dt: seconds of simulated time per environment step.
        backend: ``"host"`` (native MuJoCo, batched in C threads) or ``"device"`` (pure JAX).
        task_description: the task distribution in words.
        normalize_actions: whether the policy acts in the ±10 box that is rescaled to the bounds.
        paper: where the family comes from.
        deviations: differences from the original code, in words.
    """

    name: str
    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    horizon: int
    dt: float
    backend: str
    task_description: str
    normalize_actions: bool
    paper: str = ""
    deviations: tuple[str, ...] = field(default=())

    @property
    def policy_action_low(self) -> np.ndarray:
        """Lower bound of the box the policy acts in."""
        if self.normalize_actions:
            return np.full(self.act_dim, -POLICY_ACTION_BOUND)
        return self.action_low

    @property
    def policy_action_high(self) -> np.ndarray:
        """Upper bound of the box the policy acts in."""
        if self.normalize_actions:
            return np.full(self.act_dim, POLICY_ACTION_BOUND)
        return self.action_high


def env_action(action, low, high, normalize: bool, xp=np):
    """Map a policy action to the action the simulator receives.

    With ``normalize`` (the original code's ``NormalizedEnv``, scale 10; docs/environments.md):
    ``low + (a + 10)·(high − low)/20``, clipped to ``[low, high]``; for symmetric bounds ``±u``
    this is ``a·u/10``. Without it the action is only clipped to the bounds.
    Works on numpy and JAX arrays (``xp`` is the array module).
    """
    if normalize:
        action = low + (action + POLICY_ACTION_BOUND) * (high - low) / (2 * POLICY_ACTION_BOUND)
    return xp.clip(action, low, high)


def stack_tasks(tasks: Sequence[Mapping[str, Any]]) -> Tasks:
    """Stack a list of single tasks into a batch with a leading task axis."""
    if len(tasks) == 0:
        raise ConfigError("need at least one task, got an empty list.")
    keys = list(tasks[0])
    for t in tasks:
        if sorted(t) != sorted(keys):
            raise ConfigError(f"all tasks must have the keys {sorted(keys)}, got {sorted(t)}.")
    return {k: np.stack([np.asarray(t[k]) for t in tasks]) for k in keys}


def unstack_tasks(tasks: Tasks) -> list[Task]:
    """Split a batch of tasks into a list of single tasks."""
    n = num_tasks(tasks)
    return [{k: np.asarray(v[i]) for k, v in tasks.items()} for i in range(n)]


def num_tasks(tasks: Tasks) -> int:
    """Length of the leading task axis (checked to be the same for every entry)."""
    sizes = {np.shape(v)[0] if np.ndim(v) else None for v in tasks.values()}
    if len(sizes) != 1 or None in sizes:
        raise ConfigError(
            "tasks must be a dict of arrays sharing one leading task axis, got shapes "
            f"{ {k: np.shape(v) for k, v in tasks.items()} }; use env.sample_tasks(n) or stack_tasks."
        )
    return sizes.pop()


def check_tasks(tasks: Tasks, example: Tasks, family: str) -> Tasks:
    """Validate a task batch against ``example`` (keys and per-task shapes); return numpy arrays."""
    if not isinstance(tasks, Mapping):
        raise ConfigError(
            f"{family}: tasks must be a dict of arrays with a leading task axis (from "
            f"sample_tasks), got {type(tasks).__name__}."
        )
    tasks = {k: np.asarray(v) for k, v in tasks.items()}
    if sorted(tasks) != sorted(example):
        raise ConfigError(f"{family}: tasks must have the keys {sorted(example)}, got {sorted(tasks)}.")
    num_tasks(tasks)
    for k, v in tasks.items():
        if v.shape[1:] != example[k].shape[1:]:
            raise ConfigError(
                f"{family}: task entry {k!r} must have per-task shape {example[k].shape[1:]}, "
                f"got {v.shape[1:]}."
            )
    return tasks


def merge_task_options(family: str, defaults: Mapping[str, Any], options: Mapping[str, Any],
                       common: str) -> dict[str, Any]:
    """``defaults`` updated with ``options``; unknown option names raise a :class:`ConfigError`
    listing the valid ones (``common`` names the options every family of the kind takes)."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(defaults)) or "none"
        raise ConfigError(
            f"{family}: unknown option(s) {', '.join(unknown)}. Valid task options: {valid}; "
            f"every family also takes {common}."
        )
    return {**defaults, **options}


def flat_step_actions(family: str, shape: tuple[int, int] | None, act_dim: int, actions) -> np.ndarray:
    """Validate ``actions`` for a vector-env step (``reset`` called, shape ``[M, R, act_dim]``) and
    return them as float64 ``[M·R, act_dim]``."""
    if shape is None:
        raise ConfigError("call reset(tasks, rollouts_per_task) before step().")
    actions = np.asarray(actions, dtype=np.float64)
    if actions.shape != (*shape, act_dim):
        raise ConfigError(
            f"{family}: actions must have shape {(*shape, act_dim)} ([tasks, rollouts, act_dim]), "
            f"got {actions.shape}."
        )
    return actions.reshape(-1, act_dim)


def running_step_actions(family: str, shape: tuple[int, int] | None, act_dim: int, actions,
                         active: np.ndarray) -> np.ndarray:
    """:func:`flat_step_actions` for a simulator that steps every environment: the running
    ones' actions must be finite, the finished ones' are replaced by zeros."""
    flat = flat_step_actions(family, shape, act_dim, actions)
    if not np.all(np.isfinite(flat[active])):
        raise ConfigError(f"{family}: non-finite actions; the policy produced NaN or inf.")
    return np.where(active[:, None], flat, 0.0)


def unit_directions(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` unit vectors in the plane: a standard normal draw normalised to length one
    (as the original AntRandDirec2D / HumanoidRandDirec2D; the angle is uniform on [0, 2π))."""
    d = rng.standard_normal((n, 2))
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def signs(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` draws uniform on {−1, +1} (forward/backward tasks)."""
    return rng.choice(np.array([-1.0, 1.0]), size=n)
