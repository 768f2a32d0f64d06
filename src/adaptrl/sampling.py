"""The sampler: per-task policy parameters × a vectorised simulator → padded trajectories.

Per control step there is one jitted policy call for all tasks (``vmap`` over the task axis of
the parameters) and one batched physics call. Trajectories are padded to the horizon with a mask
(1 on real steps), so everything downstream compiles once. On device simulators the whole
rollout — policy and physics — is one ``lax.scan`` inside one ``jit``
(:func:`device_rollout`, a pure function of the simulator's and the policy's parameters whose
result stays on the device and can be differentiated: actions are reparameterised).

The policy is any :class:`adaptrl.policies.Policy` (the actor protocol): the sampler draws its
noise with ``policy.sample_noise``, acts with ``policy.sample`` and records the distribution
parameters it sampled from (``Trajectories.dist``).

Deviation from the original ProMP code's sampler (docs/environments.md, MuJoCo deviation 8): it ran
envs until the *finished* paths held ``tasks × rollouts × horizon`` steps, restarting terminated
envs, so the number and length of paths per task varied. Here every task gets exactly
``rollouts_per_task`` trajectories; a terminated trajectory is masked from its last step on, and
``Trajectories.num_env_steps`` counts only the steps really simulated.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl import memory
from adaptrl.envs.base import Tasks, check_tasks, num_tasks
from adaptrl.envs.simulator import DeviceSimulator, VectorSimulator, device_simulator
from adaptrl.errors import require_positive_int
from adaptrl.policies import Params, Policy, check_per_task_params, init_params


class Trajectories(NamedTuple):
    """A meta-batch of trajectories, ``[tasks M, rollouts R, time T, ...]``.

    ``actions`` are the sampled policy actions (before rescaling/clipping to the simulator), so
    ``log_probs`` is their exact log-density under the sampling distribution ``dist`` (a pytree
    of the policy's distribution parameters, e.g. :class:`~adaptrl.policies.GaussianDist`).
    Padded steps (after termination) have ``mask = 0`` and ``rewards = 0``; ``dones`` is 1 on the
    step at which an episode terminated (not on truncation at the horizon). Leaves are numpy
    arrays from a host simulator and JAX arrays from a device simulator.
    """

    observations: Any  # [M, R, T, obs]
    actions: Any  # [M, R, T, act]
    rewards: Any  # [M, R, T]
    mask: Any  # [M, R, T]
    dones: Any  # [M, R, T]
    dist: Any  # pytree, leaves [M, R, T, ...]
    log_probs: Any  # [M, R, T]
    final_observations: Any  # [M, R, obs]

    @property
    def means(self):
        """The Gaussian sampling distribution's means ``[M, R, T, act]``."""
        return self.dist.mean

    @property
    def log_stds(self):
        """The Gaussian sampling distribution's log-stds ``[M, R, T, act]``."""
        return self.dist.log_std

    @property
    def num_env_steps(self) -> int:
        """Environment steps really simulated (real, unmasked steps)."""
        return int(np.asarray(self.mask).sum())

    def returns(self) -> np.ndarray:
        """Undiscounted return of every trajectory, ``[M, R]``."""
        return np.asarray(self.rewards).sum(-1)


def device_rollout(sim: DeviceSimulator, policy: Policy, sim_params: Any, policy_params: Params,
                   tasks: dict, key: jax.Array, *, rollouts: int, horizon: int) -> Trajectories:
    """``rollouts`` trajectories of ``horizon`` steps for every task, as one ``lax.scan``.

    Pure in all its array arguments (jit it with ``sim``, ``policy``, ``rollouts`` and
    ``horizon`` static): ``policy_params`` has a leading task axis, ``tasks`` entries ``[M, ...]``.
    ``key`` determines the start states (``split(key)[0]``), the action noise (``split(key)[1]``)
    and the simulator's own randomness (``fold_in(key, 2)``). Terminated environments keep their
    last state and are masked. Returns JAX arrays; with a differentiable simulator the rewards
    are differentiable in ``policy_params`` and ``sim_params`` (reparameterised actions)."""
    m, r = next(iter(tasks.values())).shape[0], rollouts
    reset_key, noise_key = jax.random.split(key)
    env_tasks = jax.tree_util.tree_map(lambda x: jnp.repeat(x, r, axis=0), tasks)
    reset_keys = jax.random.split(reset_key, m * r)
    state0 = jax.vmap(sim.reset, in_axes=(None, 0, 0))(sim_params, reset_keys, env_tasks)
    noise = policy.sample_noise(noise_key, (horizon, m, r))
    step_keys = jax.random.split(jax.random.fold_in(key, 2), horizon)
    if hasattr(sim, "step_batch"):  # a simulator that steps the whole batch itself (a learned model)
        def step_envs(params, states, actions, key):
            return sim.step_batch(params, states, actions, key, rollouts=r)
    else:
        def step_envs(params, states, actions, key):
            return jax.vmap(sim.step, in_axes=(None, 0, 0, 0))(params, states, actions,
                                                               jax.random.split(key, m * r))

    def step(carry, inputs):
        state, active = carry
        noise_t, key_t = inputs
        obs = jax.vmap(sim.observe)(state)
        action, dist, logp = jax.vmap(policy.sample)(policy_params, obs.reshape(m, r, -1), noise_t)
        flat_action = action.reshape(m * r, -1)
        next_state, reward, done = step_envs(sim_params, state, flat_action, key_t)
        record = (obs.reshape(m, r, -1), action, dist, logp, jnp.where(active, reward, 0.0).reshape(m, r),
                  active.reshape(m, r), (done & active).reshape(m, r))
        next_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(active.reshape(-1, *([1] * (new.ndim - 1))), new, old),
            next_state, state)
        return (next_state, active & ~done), record

    (final_state, _), (obs, action, dist, logp, rew, active, done) = jax.lax.scan(
        step, (state0, jnp.ones(m * r, dtype=bool)), (noise, step_keys))

    def batch_major(x):
        return jnp.moveaxis(x, 0, 2)

    def floating(x):  # bool → float32; float32 stays, float64 (x64 mode) stays float64
        return x.astype(jnp.promote_types(x.dtype, jnp.float32))

    return Trajectories(
        observations=floating(batch_major(obs)),
        actions=batch_major(action),
        rewards=floating(batch_major(rew)),
        mask=floating(batch_major(active)),
        dones=floating(batch_major(done)),
        dist=jax.tree_util.tree_map(batch_major, dist),
        log_probs=batch_major(logp),
        final_observations=floating(jax.vmap(sim.observe)(final_state).reshape(m, r, -1)),
    )


class Sampler:
    """Collects ``rollouts_per_task`` trajectories per task for a policy and a simulator.

    Build once and call :meth:`collect` every iteration: the jitted pieces are compiled on the
    first call for a given number of tasks and reused afterwards.
    """

    def __init__(self, env: VectorSimulator, policy: Policy, rollouts_per_task: int,
                 horizon: int | None = None):
        self.env = env
        self.policy = policy
        self.rollouts_per_task = require_positive_int("rollouts_per_task", rollouts_per_task)
        self.horizon = require_positive_int(
            "horizon", env.spec.horizon if horizon is None else horizon
        )
        self._reference_params = init_params(policy, jax.random.PRNGKey(0), env.spec.obs_dim)
        self.simulator = device_simulator(env)
        self._policy_step = jax.jit(jax.vmap(self._act))
        self._device_rollout = None
        if self.simulator is not None:
            sim, r, t = self.simulator, self.rollouts_per_task, self.horizon
            self._device_rollout = jax.jit(
                lambda sim_params, params, tasks, key: device_rollout(
                    sim, policy, sim_params, params, tasks, key, rollouts=r, horizon=t))
        self._layout: list[tuple[tuple[int, ...], int]] | None = None
        self._treedef = None
        self.stats = {"PolicyExecTime": 0.0, "EnvExecTime": 0.0, "NumDiverged": 0}
        """Timings (seconds) and diverged-episode count of the last :meth:`collect`."""

    def _act(self, params: Params, obs: jax.Array, noise: Any) -> jax.Array:
        """One task: ``(action, dist, log-prob)`` packed into one ``[R, width]`` array, so the
        host loop makes one device-to-host copy per step."""
        action, dist, logp = self.policy.sample(params, obs, noise)
        leaves = jax.tree_util.tree_leaves((action, dist, logp[..., None]))
        return jnp.concatenate([x.reshape(*obs.shape[:-1], -1) for x in leaves], axis=-1)

    def _unpack(self, packed: np.ndarray, params: Params, obs: np.ndarray, noise: Any):
        """Split the packed host-loop output ``[..., width]`` back into ``(action, dist, logp)``."""
        if self._treedef is None:
            one = jax.eval_shape(self.policy.sample, jax.tree_util.tree_map(lambda x: x[0], params),
                                 obs[0], jax.tree_util.tree_map(lambda x: x[0], noise))
            leaves, self._treedef = jax.tree_util.tree_flatten(
                (one[0], one[1], jax.ShapeDtypeStruct((*one[2].shape, 1), one[2].dtype)))
            self._layout = [(leaf.shape[1:], int(np.prod(leaf.shape[1:]))) for leaf in leaves]
        lead = packed.shape[:-1]
        parts, at = [], 0
        for shape, width in self._layout:
            parts.append(packed[..., at:at + width].reshape(*lead, *shape))
            at += width
        action, dist, logp = jax.tree_util.tree_unflatten(self._treedef, parts)
        return action, dist, logp[..., 0]

    def _check_memory(self, m: int) -> None:
        """A :class:`~adaptrl.errors.ConfigError` before sampling when one round of ``m`` tasks
        would not fit in memory: the trajectories and the sampler's working memory
        (:func:`adaptrl.memory.estimate_batch_bytes`, phase ``sample``; what happens to the batch
        afterwards is checked by the algorithms, e.g. ``MetaLearner.check_training_memory``)."""
        spec = self.env.spec
        params = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(self._reference_params))
        shape = memory.BatchShape(tasks=m, rollouts=self.rollouts_per_task, horizon=self.horizon,
                                  obs_dim=spec.obs_dim, act_dim=spec.act_dim, param_count=params,
                                  inner_steps=0, env=spec.name)
        memory.check_fits(shape, "sample", request=f"sampling {m} tasks", vary="tasks",
                          label="number of tasks", alternatives="the rollouts per task or the horizon")

    def check(self, params: Params, tasks: Tasks) -> Tasks:
        """Validate tasks and per-task parameters; return the tasks as numpy arrays."""
        tasks = check_tasks(tasks, self.env.sample_tasks(1, 0), self.env.spec.name)
        check_per_task_params(params, self._reference_params, num_tasks(tasks))
        return tasks

    def collect(self, params: Params, tasks: Tasks, key: jax.Array, sim_params: Any = None) -> Trajectories:
        """Sample ``rollouts_per_task`` trajectories of every task with that task's parameters.

        Args:
            params: policy parameters with a leading task axis (one copy per task).
            tasks: a batch of tasks (``env.sample_tasks(M)``).
            key: JAX PRNG key; it determines the reset noise and the action noise.
            sim_params: a device simulator's parameters (default: its ``default_params()``).
        """
        tasks = self.check(params, tasks)
        self._check_memory(num_tasks(tasks))
        if self._device_rollout is not None:
            if hasattr(self.simulator, "prepare_tasks"):  # per-task constants computed on the host
                env_tasks = self.simulator.prepare_tasks(tasks)
            else:
                env_tasks = {k: jnp.asarray(v) for k, v in tasks.items()}
            if sim_params is None:
                sim_params = self.simulator.default_params()
            start = time.perf_counter()
            traj = jax.block_until_ready(self._device_rollout(sim_params, params, env_tasks, key))
            self.stats = {"PolicyExecTime": 0.0, "EnvExecTime": time.perf_counter() - start,
                          "NumDiverged": 0}
            return traj
        return self._host_rollout(params, tasks, key)

    # --------------------------------------------------------------------------- host backend
    def _host_rollout(self, params: Params, tasks: Tasks, key: jax.Array) -> Trajectories:
        env, t_max, r = self.env, self.horizon, self.rollouts_per_task
        m = num_tasks(tasks)
        act_dim = env.spec.act_dim
        reset_key, noise_key = jax.random.split(key)
        seed = int(jax.random.randint(reset_key, (), 0, np.iinfo(np.int32).max))
        noise = jax.tree_util.tree_map(np.asarray, self.policy.sample_noise(noise_key, (t_max, m, r)))

        def act(t: int, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            noise_t = jax.tree_util.tree_map(lambda x: x[t], noise)
            out = np.asarray(self._policy_step(params, obs, noise_t))
            return out[..., :act_dim], out

        loop = host_loop(env, tasks, r, t_max, seed, act)
        self.stats = loop.stats
        actions, dist, log_probs = self._unpack(loop.extras, params, loop.observations[:, :, 0],
                                                jax.tree_util.tree_map(lambda x: x[0], noise))
        return Trajectories(observations=loop.observations, actions=actions, rewards=loop.rewards,
                            mask=loop.mask, dones=loop.dones, dist=dist, log_probs=log_probs,
                            final_observations=loop.final_observations)


class HostLoop(NamedTuple):
    """What :func:`host_loop` recorded, ``[M, R, T, ...]`` numpy arrays."""

    observations: np.ndarray
    actions: np.ndarray
    extras: np.ndarray | None
    rewards: np.ndarray
    mask: np.ndarray
    dones: np.ndarray
    final_observations: np.ndarray
    stats: dict[str, float]


def host_loop(env: VectorSimulator, tasks: Tasks, rollouts: int, horizon: int, seed: int,
              act: Any) -> HostLoop:
    """The one host rollout loop: ``rollouts`` episodes of every task, stepped together.

    ``act(t, obs [M, R, obs]) → (env actions [M, R, act], extra [M, R, W] or None)`` is called
    once per step for all environments (a jitted policy, or an MPC planner on a model); the
    ``extra`` arrays (e.g. the distribution the policy sampled from) are recorded with the step.
    Terminated episodes are masked from their last step on; the loop ends early when all are."""
    m, r, t_max = num_tasks(tasks), rollouts, horizon
    obs_dim, act_dim = env.spec.obs_dim, env.spec.act_dim
    observations = np.zeros((m, r, t_max, obs_dim), np.float32)
    actions = np.zeros((m, r, t_max, act_dim), np.float32)
    extras = None
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
        action, extra = act(t, observations[:, :, t])
        actions[:, :, t] = action
        if extra is not None:
            if extras is None:
                extras = np.zeros((m, r, t_max, extra.shape[-1]), np.float32)
            extras[:, :, t] = extra
        policy_time += time.perf_counter() - start
        start = time.perf_counter()
        mask[:, :, t] = active
        obs, reward, done, _ = env.step(action)
        rewards[:, :, t] = reward
        dones[:, :, t] = done & active
        active = active & ~done
        env_time += time.perf_counter() - start
        if not active.any():
            break
    stats = {"PolicyExecTime": policy_time, "EnvExecTime": env_time,
             "NumDiverged": env.diverged_total - diverged_before}
    return HostLoop(observations, actions, extras, rewards, mask, dones,
                    np.asarray(obs, np.float32), stats)


class Controller(Protocol):
    """A stateful actor for the host loop (an MPC planner on a model; docs/model-based.md):
    ``carry = init(batch, key)``, then per step ``action, carry = act(carry, obs [B, obs], key)``."""

    def init(self, batch: int, key: jax.Array) -> Any: ...

    def act(self, carry: Any, obs: np.ndarray, key: jax.Array) -> tuple[np.ndarray, Any]: ...


def controller_rollouts(env: VectorSimulator, controller: Controller, tasks: Tasks, key: jax.Array, *,
                        rollouts: int, horizon: int) -> tuple[Trajectories, dict[str, float]]:
    """Episodes of a :class:`Controller` on a vector env (host loop), as :class:`Trajectories`
    (``dist`` is None and ``log_probs`` zero: a planner has no action density), with the loop's
    timings (``PolicyExecTime`` is the planning time)."""
    tasks = check_tasks(tasks, env.sample_tasks(1, 0), env.spec.name)
    m, r = num_tasks(tasks), require_positive_int("rollouts", rollouts)
    reset_key, init_key, act_key = jax.random.split(key, 3)
    seed = int(jax.random.randint(reset_key, (), 0, np.iinfo(np.int32).max))
    carry = [controller.init(m * r, init_key)]

    def act(t: int, obs: np.ndarray) -> tuple[np.ndarray, None]:
        action, carry[0] = controller.act(carry[0], obs.reshape(m * r, -1), jax.random.fold_in(act_key, t))
        return np.asarray(action).reshape(m, r, -1), None

    loop = host_loop(env, tasks, r, require_positive_int("horizon", horizon), seed, act)
    traj = Trajectories(observations=loop.observations, actions=loop.actions, rewards=loop.rewards,
                        mask=loop.mask, dones=loop.dones, dist=None,
                        log_probs=np.zeros_like(loop.rewards), final_observations=loop.final_observations)
    return traj, loop.stats
