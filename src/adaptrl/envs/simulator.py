"""The simulator protocols: what the sampler needs from an environment.

Two kinds of simulator implement them (docs/architecture.md):

* :class:`DeviceSimulator` — pure JAX functions of explicit arguments, for one environment:

      state = reset(sim_params, key, task, start_obs=None)
      next_state, reward, done = step(sim_params, state, action, key)
      obs = observe(state)

  The parameters ``sim_params`` (``default_params()`` for an analytic family) and the key are
  arguments, never captured, so a learned dynamics model whose weights change every iteration is
  just another device simulator (its ensemble member is a task entry), and a rollout compiled
  once stays on the device and can be differentiated (:func:`adaptrl.sampling.device_rollout`).
  ``reset`` from given start states is how imagined rollouts branch from real data; ``reset``
  also takes ``sim_params`` because a learned model's start-state distribution (a pool of real
  start states) is part of its parameters.
  ``action`` is always the *policy* action; the simulator rescales and clips it.
  Optional: ``prepare_tasks(tasks) -> dict`` turns a host task batch into the task entries the
  pure functions take, once per batch (the MJX simulator adds the constants MuJoCo derives from a
  RandParams task's physics parameters, :mod:`adaptrl.envs.mjx`); without it the entries are the
  task arrays themselves.

* :class:`VectorSimulator` — the batched host protocol: ``reset(tasks, rollouts_per_task, seed)``
  and ``step(actions)`` on ``[tasks M, rollouts R, ...]`` numpy arrays. Native MuJoCo
  (:class:`adaptrl.envs.host.HostVectorEnv`) steps all environments in one C call per step;
  :class:`adaptrl.envs.device.DeviceVectorEnv` offers the same protocol over a device simulator.
  A vector simulator that also carries a ``simulator`` attribute (a :class:`DeviceSimulator`) is
  sampled with one ``lax.scan``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

from adaptrl.envs.base import EnvSpec, Tasks


@runtime_checkable
class DeviceSimulator(Protocol):
    """One environment as pure JAX functions (module docstring)."""

    spec: EnvSpec

    def default_params(self) -> Any: ...

    def reset(self, sim_params: Any, key: jax.Array, task: dict,
              start_obs: jax.Array | None = None) -> Any: ...

    def observe(self, state: Any) -> jax.Array: ...

    def step(self, sim_params: Any, state: Any, action: jax.Array,
             key: jax.Array) -> tuple[Any, jax.Array, jax.Array]: ...


@runtime_checkable
class VectorSimulator(Protocol):
    """``[M, R]`` environments stepped together, numpy in and out (module docstring)."""

    spec: EnvSpec
    diverged_total: int

    def sample_tasks(self, n: int, seed: int | np.random.Generator | None = None) -> Tasks: ...

    def reset(self, tasks: Tasks, rollouts_per_task: int, seed: int | None = None) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]: ...

    def close(self) -> None: ...


def device_simulator(env: Any) -> DeviceSimulator | None:
    """The pure simulator behind ``env``, or None for a host-only simulator."""
    sim = getattr(env, "simulator", None)
    return sim if isinstance(sim, DeviceSimulator) else None
