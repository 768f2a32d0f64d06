"""A learned dynamics model as a device simulator (docs/model-based.md, "The model as a simulator").

:class:`ModelSimulator` implements the protocol of :mod:`adaptrl.envs.simulator`, so the existing
:class:`~adaptrl.sampling.Sampler` runs imagined rollouts as one ``lax.scan``, unchanged, and a
policy-gradient learner trains on them exactly as on a real simulator: ME-TRPO is TRPO on this
simulator and MB-MPO the meta-learner with tasks = ensemble members (thesis §4.2, §5.2).

An imagined transition from state s under policy action a:

    a_env = env_action(a)                       (the real env's rescaling and clipping)
    s'    = s + Δ_k(s, a_env)                   (member k's prediction, :mod:`adaptrl.models.ensemble`)
          + σ_Δ,k · (b_k + σ·ε)                 (with output_noise, thesis §5.5.3: b_k ~ U(0, b_max))
    s'    ← clip(s', low − m·w, high + m·w)     (w = high − low, the range of the real data)
    r     = reward(s, a, s'),  done = terminated(s')   (the real env's own functions)

Member choice k (thesis §4.2, §5.2.3): ``task`` — task i uses member i mod K for the whole
rollout (MB-MPO); ``step_rand`` — a uniformly random member at every step for every rollout
(ME-TRPO's ``step_rand``; when the batch divides by K, drawn as a random balanced assignment,
:func:`balanced_members`, which costs one member per row instead of all K); ``mean`` — the
ensemble mean (an ablation).

Start states come from a pool of real states in the parameters (``start_obs``; the real
initial-state distribution when filled with real ``reset`` observations, or states from the
buffer), drawn uniformly by ``reset``.

The parameters ``sim_params`` are a dict: ``model`` (what the dynamics needs, e.g. the
:class:`~adaptrl.models.ensemble.EnsembleParams`), ``start_obs`` ``[P, obs]``, ``obs_low`` /
``obs_high`` ``[obs]`` (the data range), and ``output_bias`` ``[K]`` / ``output_noise_std`` ``()``.
Changing them never recompiles a rollout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.envs.base import EnvSpec, Tasks, env_action
from adaptrl.envs.device import SimState
from adaptrl.errors import ConfigError, require_positive_int
from adaptrl.models import ensemble as ens

MEMBER_CHOICES = ("task", "step_rand", "mean")


def balanced_members(key: jax.Array, n: int, k_members: int) -> jax.Array:
    """``step_rand``'s members for ``n`` rows (``n`` a multiple of K): a uniformly random balanced
    assignment, row ``order[j]`` ↦ member ``j // (n/K)`` with ``order`` a random permutation. Each
    row's member is uniform on 1..K and independent of the previous step's (a fresh permutation
    per step); exactly n/K rows go to each member, so the step costs one member's forward pass
    per row instead of K."""
    return balanced_assignment(key, n, k_members)[1]


def balanced_assignment(key: jax.Array, n: int, k_members: int) -> tuple[jax.Array, jax.Array]:
    """``(order, members)`` of :func:`balanced_members`: rows ``order[j·n/K : (j+1)·n/K]`` are
    member ``j``'s."""
    order = jax.random.permutation(key, n)
    members = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32) // (n // k_members))
    return order, members


class Dynamics(Protocol):
    """The next-state function a :class:`ModelSimulator` steps with (K members)."""

    members: int

    def member_next(self, model: Any, k: Any, obs: jax.Array, action: jax.Array, key: jax.Array) -> jax.Array:
        """Member ``k``'s next state for a batch ``obs [B, obs]``, ``action [B, act]``."""
        ...

    def all_next(self, model: Any, obs: jax.Array, action: jax.Array, key: jax.Array) -> jax.Array:
        """Every member's next state ``[K, B, obs]``."""
        ...

    def delta_scale(self, model: Any) -> jax.Array:
        """``[K, obs]``: one normalised unit of Δ per member (scales the output noise)."""
        ...


@dataclass(frozen=True)
class EnsembleDynamics:
    """:class:`Dynamics` of a dynamics ensemble; ``model`` is its
    :class:`~adaptrl.models.ensemble.EnsembleParams`. Probabilistic members sample their
    Gaussian with the step's key; deterministic ones predict the mean."""

    spec: ens.EnsembleSpec

    @property
    def members(self) -> int:
        return self.spec.members

    def _key(self, key):
        return key if self.spec.kind == "probabilistic" else None

    def member_next(self, model, k, obs, action, key):
        return ens.next_obs(self.spec, ens.member(model, k), obs, action, self._key(key))

    def all_next(self, model, obs, action, key):
        if self.spec.kind == "probabilistic":
            keys = jax.random.split(key, self.spec.members)
            return jax.vmap(lambda k, kk: self.member_next(model, k, obs, action, kk))(
                jnp.arange(self.spec.members), keys)
        return ens.next_obs_all(self.spec, model, obs, action)

    def delta_scale(self, model):
        return model.norm.delta_std


@dataclass(frozen=True)
class TrueDynamics:
    """:class:`Dynamics` of a known function ``fn(obs, env_action) → next_obs`` shared by all
    ``members`` (a perfect model: how the model simulator is tested against the real env)."""

    fn: Callable[[jax.Array, jax.Array], jax.Array]
    members: int = 1
    obs_dim: int = 1

    def member_next(self, model, k, obs, action, key):
        return self.fn(obs, action)

    def all_next(self, model, obs, action, key):
        return jnp.broadcast_to(self.fn(obs, action), (self.members, *obs.shape))

    def delta_scale(self, model):
        return jnp.ones((self.members, self.obs_dim))


@dataclass(frozen=True)
class ModelSimulator:
    """The learned model as a :class:`~adaptrl.envs.simulator.DeviceSimulator` (module docstring).

    ``reward_fn(obs, policy_action, next_obs, task)`` and ``terminated_fn(next_obs)`` are the real
    environment's (:func:`adaptrl.envs.obs_reward_fn`, :func:`adaptrl.envs.obs_terminated_fn`).
    Besides the per-environment ``step`` it has ``step_batch`` for a whole ``[M·R]`` batch, which
    :func:`adaptrl.sampling.device_rollout` prefers: with member choice ``task`` and M a multiple
    of K, each member then evaluates only its own tasks' rows (one dense matmul per member, no
    per-row gather of weights); otherwise every member is evaluated and one is selected."""

    spec: EnvSpec
    dynamics: Any
    reward_fn: Callable
    terminated_fn: Callable
    member_choice: str = "task"
    clip_margin: float = 1.0
    output_noise: bool = False
    """Add the biased-model noise of ``sim_params`` (off: no noise is drawn at all)."""

    def __post_init__(self):
        if self.member_choice not in MEMBER_CHOICES:
            raise ConfigError(f"member_choice must be one of {', '.join(MEMBER_CHOICES)}, "
                              f"got {self.member_choice!r}.")

    def default_params(self) -> Any:
        raise ConfigError("a model simulator has no default parameters: pass sim_params "
                          "(model_sim_params(...)) to Sampler.collect.")

    def reset(self, sim_params: Any, key: jax.Array, task: dict,
              start_obs: jax.Array | None = None) -> SimState:
        if start_obs is None:
            pool = sim_params["start_obs"]
            start_obs = pool[jax.random.randint(key, (), 0, pool.shape[0])]
        return SimState(jnp.asarray(start_obs), task)

    def observe(self, state: SimState) -> jax.Array:
        return state.obs

    def step(self, sim_params: Any, state: SimState, action: jax.Array, key: jax.Array):
        """One environment (vmapped by the caller): every member is evaluated, one is used."""
        batch = jax.tree_util.tree_map(lambda x: x[None], (state, action))
        next_state, reward, done = self.step_batch(sim_params, batch[0], batch[1], key, rollouts=1,
                                                   grouped=False)
        return jax.tree_util.tree_map(lambda x: x[0], (next_state, reward, done))

    def step_batch(self, sim_params: Any, states: SimState, actions: jax.Array, key: jax.Array, *,
                   rollouts: int, grouped: bool = True):
        """A batch of ``N = M·rollouts`` environments (rows task-major, as the sampler lays them
        out) with one key for the step; ``grouped`` allows the per-member fast path of member
        choice ``task``."""
        obs, task = states.obs, states.task
        n = obs.shape[0]
        k_members = self.dynamics.members
        low, high = jnp.asarray(self.spec.action_low), jnp.asarray(self.spec.action_high)
        env_act = env_action(actions, low, high, self.spec.normalize_actions, xp=jnp)
        model = sim_params["model"]
        predict_key, noise_key, member_key = jax.random.split(key, 3)
        m = n // rollouts
        if self.member_choice == "task" and grouped and m % k_members == 0:
            # rows of task i are i·R … i·R + R − 1 and task i uses member i mod K
            def by_member(x):
                return jnp.moveaxis(x.reshape(m // k_members, k_members, rollouts, *x.shape[1:]), 1, 0
                                    ).reshape(k_members, -1, *x.shape[1:])

            def back(x):
                x = x.reshape(k_members, m // k_members, rollouts, *x.shape[2:])
                return jnp.moveaxis(x, 0, 1).reshape(n, *x.shape[3:])

            member_keys = jax.random.split(predict_key, k_members)
            grouped_next = jax.vmap(lambda k, o, a, kk: self.dynamics.member_next(model, k, o, a, kk))(
                jnp.arange(k_members), by_member(obs), by_member(env_act), member_keys)
            next_obs = back(grouped_next)
            members = (jnp.arange(n) // rollouts) % k_members
        elif self.member_choice == "step_rand" and grouped and n % k_members == 0:
            # a balanced draw: each member predicts n/K random rows (one matmul per member)
            order, members = balanced_assignment(member_key, n, k_members)
            member_keys = jax.random.split(predict_key, k_members)
            grouped_next = jax.vmap(lambda k, o, a, kk: self.dynamics.member_next(model, k, o, a, kk))(
                jnp.arange(k_members), obs[order].reshape(k_members, n // k_members, -1),
                env_act[order].reshape(k_members, n // k_members, -1), member_keys)
            next_obs = jnp.zeros_like(obs).at[order].set(grouped_next.reshape(n, -1))
        else:
            every = self.dynamics.all_next(model, obs, env_act, predict_key)  # [K, N, obs]
            if self.member_choice == "mean":
                next_obs = every.mean(axis=0)
                members = None
            else:
                if self.member_choice == "task":
                    members = jnp.asarray(task["member"]).astype(jnp.int32) % k_members
                else:
                    members = jax.random.randint(member_key, (n,), 0, k_members)
                next_obs = jnp.take_along_axis(every, members[None, :, None], axis=0)[0]
        if self.output_noise:
            next_obs = next_obs + self._output_noise(sim_params, members, obs.shape, noise_key)
        next_obs = self._clip(sim_params, next_obs)
        reward = self.reward_fn(obs, actions, next_obs, task)
        done = self.terminated_fn(next_obs)
        return SimState(next_obs, task), reward, done

    def _output_noise(self, sim_params, members, shape, key):
        """σ_Δ,k·(b_k + σ·ε): the biased-model noise of thesis §5.5.3 in normalised Δ units."""
        bias, std = sim_params["output_bias"], sim_params["output_noise_std"]
        scale = self.dynamics.delta_scale(sim_params["model"])  # [K, obs]
        if members is None:  # ensemble mean: the mean bias, averaged scale
            return scale.mean(0) * (bias.mean() + std * jax.random.normal(key, shape))
        return scale[members] * (bias[members][:, None] + std * jax.random.normal(key, shape))

    def _clip(self, sim_params, next_obs):
        low, high = sim_params["obs_low"], sim_params["obs_high"]
        if math.isinf(self.clip_margin):
            return next_obs
        width = (high - low) * self.clip_margin
        return jnp.clip(next_obs, low - width, high + width)


def model_sim_params(model: Any, start_obs: np.ndarray, obs_low: np.ndarray, obs_high: np.ndarray,
                     members: int, output_bias: np.ndarray | None = None,
                     output_noise_std: float = 0.0) -> dict[str, Any]:
    """The ``sim_params`` of a :class:`ModelSimulator` (module docstring); no output noise by
    default."""
    start_obs = np.asarray(start_obs, np.float32)
    if start_obs.ndim != 2 or start_obs.shape[0] < 1:
        raise ConfigError(f"start_obs must be a non-empty [P, obs] array, got shape {start_obs.shape}.")
    bias = np.zeros(members, np.float32) if output_bias is None else np.asarray(output_bias, np.float32)
    if bias.shape != (members,):
        raise ConfigError(f"output_bias must have shape ({members},), got {bias.shape}.")
    return {"model": model, "start_obs": jnp.asarray(start_obs),
            "obs_low": jnp.asarray(obs_low, jnp.float32), "obs_high": jnp.asarray(obs_high, jnp.float32),
            "output_bias": jnp.asarray(bias), "output_noise_std": jnp.asarray(output_noise_std, jnp.float32)}


class ModelVectorEnv:
    """A :class:`ModelSimulator` behind the vector protocol the :class:`~adaptrl.sampling.Sampler`
    takes: its tasks are the real env's tasks with a ``member`` entry (task i ↦ member i mod K)."""

    def __init__(self, simulator: ModelSimulator, real_tasks: Callable[[int, Any], Tasks]):
        self.simulator = simulator
        self.spec = simulator.spec
        self._real_tasks = real_tasks
        self.diverged_total = 0

    def sample_tasks(self, n: int, seed: int | np.random.Generator | None = None) -> Tasks:
        """``n`` tasks of the real env, task i imagined with member i mod K."""
        n = require_positive_int("number of tasks", n)
        tasks = dict(self._real_tasks(n, seed))
        tasks["member"] = np.arange(n) % self.simulator.dynamics.members
        return tasks

    def reset(self, tasks: Tasks, rollouts_per_task: int, seed: int | None = None) -> np.ndarray:
        raise ConfigError("a model simulator is sampled on the device (Sampler.collect with "
                          "sim_params); it has no host reset/step.")

    def step(self, actions: np.ndarray):
        raise ConfigError("a model simulator is sampled on the device (Sampler.collect with "
                          "sim_params); it has no host reset/step.")

    def close(self) -> None:
        """Nothing to release."""
