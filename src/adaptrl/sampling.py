"""The sampler: per-task policy parameters × a vectorised simulator → padded trajectories.

Per control step there is one jitted policy call for all tasks (``vmap`` over the task axis of
the parameters) and one batched physics call. Trajectories are padded to the horizon with a mask
(1 on real steps), so everything downstream compiles once. On device simulators the whole
rollout — policy and physics — is one ``lax.scan`` inside one ``jit``.

Deviation from the original sampler (reference §5): it ran envs until the *finished* paths held
``tasks × rollouts × horizon`` steps, restarting terminated envs, so the number and length of
paths per task varied. Here every task gets exactly ``rollouts_per_task`` trajectories; a
terminated trajectory is masked from its last step on, and ``Trajectories.num_env_steps`` counts
only the steps really simulated.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.envs import DeviceVectorEnv, VectorEnv
from adaptrl.envs.base import Tasks, check_tasks, num_tasks
from adaptrl.errors import ConfigError, require_positive_int
from adaptrl.policies import Params, check_per_task_params, gaussian_log_prob, init_params


class Trajectories(NamedTuple):
    """A meta-batch of trajectories, ``[tasks M, rollouts R, time T, ...]``.

    ``actions`` are the sampled policy actions (before rescaling/clipping to the simulator), so
    ``log_probs`` is their exact log-density under the sampling distribution ``(means, log_stds)``.
    Padded steps (after termination) have ``mask = 0`` and ``rewards = 0``; ``dones`` is 1 on the
    step at which an episode terminated (not on truncation at the horizon).
    """

    observations: np.ndarray  # [M, R, T, obs]
    actions: np.ndarray  # [M, R, T, act]
    rewards: np.ndarray  # [M, R, T]
    mask: np.ndarray  # [M, R, T]
    dones: np.ndarray  # [M, R, T]
    means: np.ndarray  # [M, R, T, act]
    log_stds: np.ndarray  # [M, R, T, act]
    log_probs: np.ndarray  # [M, R, T]
    final_observations: np.ndarray  # [M, R, obs]

    @property
    def num_env_steps(self) -> int:
        """Environment steps really simulated (real, unmasked steps)."""
        return int(np.asarray(self.mask).sum())

    def returns(self) -> np.ndarray:
        """Undiscounted return of every trajectory, ``[M, R]``."""
        return np.asarray(self.rewards).sum(-1)


class Sampler:
    """Collects ``rollouts_per_task`` trajectories per task for a policy and a vector env.

    Build once and call :meth:`collect` every iteration: the jitted pieces are compiled on the
    first call for a given number of tasks and reused afterwards.
    """

    def __init__(self, env: VectorEnv, policy: nn.Module, rollouts_per_task: int,
                 horizon: int | None = None):
        self.env = env
        self.policy = policy
        self.rollouts_per_task = require_positive_int("rollouts_per_task", rollouts_per_task)
        self.horizon = require_positive_int(
            "horizon", env.spec.horizon if horizon is None else horizon
        )
        self._reference_params = init_params(policy, jax.random.PRNGKey(0), env.spec.obs_dim)
        self._policy_step = jax.jit(jax.vmap(self._act, in_axes=(0, 0, 0)))
        self._device_rollout = (
            jax.jit(self._scan_rollout) if isinstance(env, DeviceVectorEnv) else None
        )
        self.stats = {"PolicyExecTime": 0.0, "EnvExecTime": 0.0, "NumDiverged": 0}
        """Timings (seconds) and diverged-episode count of the last :meth:`collect`."""

    def _act(self, params: Params, obs: jax.Array, noise: jax.Array):
        """One task: actions, mean, log-std and log-prob for observations ``[R, obs]``."""
        mean, log_std = self.policy.apply(params, obs)
        action = mean + jnp.exp(log_std) * noise
        logp = gaussian_log_prob(action, mean, log_std)
        return jnp.concatenate([action, mean, log_std, logp[..., None]], axis=-1)

    def _check_memory(self, m: int) -> None:
        spec = self.env.spec
        floats = m * self.rollouts_per_task * self.horizon * (spec.obs_dim + 3 * spec.act_dim + 5)
        needed = 4 * floats
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            return
        if needed > available // 2:
            raise ConfigError(
                f"a batch of {m} tasks × {self.rollouts_per_task} rollouts × {self.horizon} steps "
                f"of {spec.name} needs {needed / 2**30:.1f} GiB, more than half of this machine's "
                f"{available / 2**30:.1f} GiB; use fewer tasks, rollouts or steps."
            )

    def check(self, params: Params, tasks: Tasks) -> Tasks:
        """Validate tasks and per-task parameters; return the tasks as numpy arrays."""
        tasks = check_tasks(tasks, self.env.sample_tasks(1, 0), self.env.spec.name)
        check_per_task_params(params, self._reference_params, num_tasks(tasks))
        return tasks

    def collect(self, params: Params, tasks: Tasks, key: jax.Array) -> Trajectories:
        """Sample ``rollouts_per_task`` trajectories of every task with that task's parameters.

        Args:
            params: policy parameters with a leading task axis (one copy per task).
            tasks: a batch of tasks (``env.sample_tasks(M)``).
            key: JAX PRNG key; it determines the reset noise and the action noise.
        """
        tasks = self.check(params, tasks)
        self._check_memory(num_tasks(tasks))
        if self._device_rollout is not None:
            env_tasks = {k: jnp.asarray(v) for k, v in tasks.items()}
            start = time.perf_counter()
            out = self._device_rollout(params, env_tasks, key)
            traj = Trajectories(*(np.asarray(x) for x in jax.block_until_ready(out)))
            self.stats = {"PolicyExecTime": 0.0, "EnvExecTime": time.perf_counter() - start,
                          "NumDiverged": 0}
            return traj
        return self._host_rollout(params, tasks, key)

    # --------------------------------------------------------------------------- host backend
    def _host_rollout(self, params: Params, tasks: Tasks, key: jax.Array) -> Trajectories:
        env, t_max, r = self.env, self.horizon, self.rollouts_per_task
        m = num_tasks(tasks)
        act_dim, obs_dim = env.spec.act_dim, env.spec.obs_dim
        reset_key, noise_key = jax.random.split(key)
        seed = int(jax.random.randint(reset_key, (), 0, np.iinfo(np.int32).max))
        noise = np.asarray(jax.random.normal(noise_key, (t_max, m, r, act_dim)))

        observations = np.zeros((m, r, t_max, obs_dim), np.float32)
        policy_out = np.zeros((m, r, t_max, 3 * act_dim + 1), np.float32)
        rewards = np.zeros((m, r, t_max), np.float32)
        mask = np.zeros((m, r, t_max), np.float32)
        dones = np.zeros((m, r, t_max), np.float32)
        policy_time = env_time = 0.0
        diverged_before = env.diverged_total

        start = time.perf_counter()
        obs = env.reset(tasks, r, seed=seed)
        env_time += time.perf_counter() - start
        active = np.ones((m, r), dtype=bool)
        for t in range(t_max):
            start = time.perf_counter()
            observations[:, :, t] = obs
            out = np.asarray(self._policy_step(params, observations[:, :, t], noise[t]))
            policy_out[:, :, t] = out
            policy_time += time.perf_counter() - start
            start = time.perf_counter()
            mask[:, :, t] = active
            obs, reward, done, _ = env.step(out[..., :act_dim])
            rewards[:, :, t] = reward
            dones[:, :, t] = done & active
            active = active & ~done
            env_time += time.perf_counter() - start
            if not active.any():
                break
        self.stats = {"PolicyExecTime": policy_time, "EnvExecTime": env_time,
                      "NumDiverged": env.diverged_total - diverged_before}
        return Trajectories(
            observations=observations,
            actions=policy_out[..., :act_dim],
            rewards=rewards,
            mask=mask,
            dones=dones,
            means=policy_out[..., act_dim : 2 * act_dim],
            log_stds=policy_out[..., 2 * act_dim : 3 * act_dim],
            log_probs=policy_out[..., -1],
            final_observations=np.asarray(obs, np.float32),
        )

    # ------------------------------------------------------------------------- device backend
    def _scan_rollout(self, params: Params, tasks: dict, key: jax.Array):
        env, t_max, r = self.env, self.horizon, self.rollouts_per_task
        m = next(iter(tasks.values())).shape[0]
        act_dim = env.spec.act_dim
        reset_key, noise_key = jax.random.split(key)
        env_tasks = jax.tree_util.tree_map(lambda x: jnp.repeat(x, r, axis=0), tasks)
        reset_keys = jax.random.split(reset_key, m * r)
        obs0 = jax.vmap(env.init)(reset_keys, env_tasks)
        step_envs = jax.vmap(env.step_env)

        def step(carry, noise_t):
            obs, active = carry
            out = jax.vmap(self._act)(params, obs.reshape(m, r, -1), noise_t)
            action = out[..., :act_dim].reshape(m * r, act_dim)
            next_obs, reward, done = step_envs(obs, action, env_tasks)
            record = (obs.reshape(m, r, -1), out, jnp.where(active, reward, 0.0).reshape(m, r),
                      active.reshape(m, r), (done & active).reshape(m, r))
            next_obs = jnp.where(active[:, None], next_obs, obs)
            return (next_obs, active & ~done), record

        noise = jax.random.normal(noise_key, (t_max, m, r, act_dim))
        (final_obs, _), (obs, out, rew, active, done) = jax.lax.scan(
            step, (obs0, jnp.ones(m * r, dtype=bool)), noise
        )

        def batch_major(x):
            return jnp.moveaxis(x, 0, 2)

        out = batch_major(out)
        return (
            batch_major(obs).astype(jnp.float32),
            out[..., :act_dim],
            batch_major(rew).astype(jnp.float32),
            batch_major(active).astype(jnp.float32),
            batch_major(done).astype(jnp.float32),
            out[..., act_dim : 2 * act_dim],
            out[..., 2 * act_dim : 3 * act_dim],
            out[..., -1],
            final_obs.reshape(m, r, -1).astype(jnp.float32),
        )

