"""Policies: the reference Gaussian MLP and the 1-D study's two-parameter policy.

Parameters are plain Flax pytrees, so adapted parameters θ' = θ + α∇J are pytrees too, and a
batch of per-task parameters is the same pytree with a leading task axis (:func:`per_task`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.errors import ConfigError
from adaptrl.registry import Registry

Params = Any

LOG_2PI = math.log(2 * math.pi)


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian policy of the original ProMP code (sizes: ProMP App. D.1, Table 1;
    architecture and initialisation: docs/algorithms.md).

    Mean: MLP ``obs → hidden… → act`` with tanh hidden layers, Glorot-uniform kernels and zero
    biases; log-std: one state-independent learned vector initialised to ``log(init_std)``
    (0 by default). ``__call__`` returns ``(mean, log_std)`` broadcast to the batch shape.
    """

    action_dim: int
    hidden_sizes: Sequence[int] = (64, 64)
    init_std: float = 1.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = obs
        for i, size in enumerate(self.hidden_sizes):
            x = nn.tanh(nn.Dense(size, kernel_init=nn.initializers.glorot_uniform(),
                                 bias_init=nn.initializers.zeros, name=f"hidden_{i}")(x))
        mean = nn.Dense(self.action_dim, kernel_init=nn.initializers.glorot_uniform(),
                        bias_init=nn.initializers.zeros, name="output")(x)
        log_std = self.param("log_std", nn.initializers.constant(math.log(self.init_std)),
                             (self.action_dim,))
        return mean, jnp.broadcast_to(log_std, mean.shape)


class QuadraticFeaturePolicy(nn.Module):
    """The two-parameter 1-D policy of ProMP Fig. 6: ``a ~ N(θ₀·s² + θ₁, 1)``, θ = (0.09, 0.05)
    initially (the original ``point_1d_hand_grads.py``)."""

    action_dim: int = 1
    init_theta: tuple[float, float] = (0.09, 0.05)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        theta = self.param("theta", lambda key: jnp.asarray(self.init_theta, jnp.float32))
        mean = theta[0] * obs[..., :1] ** 2 + theta[1]
        return mean, jnp.zeros_like(mean)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """``log N(x; μ, diag σ²) = −Σ log σ − ½ Σ ((x − μ)/σ)² − ½·d·log 2π`` over the last axis."""
    z = (x - mean) * jnp.exp(-log_std)
    return -jnp.sum(log_std, -1) - 0.5 * jnp.sum(z * z, -1) - 0.5 * x.shape[-1] * LOG_2PI


def gaussian_coordinate_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Per-coordinate ``log N(x_i; μ_i, σ_i²)`` (``[..., A]``); they sum to :func:`gaussian_log_prob`."""
    z = (x - mean) * jnp.exp(-log_std)
    return -log_std - 0.5 * z * z - 0.5 * LOG_2PI


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> jax.Array:
    """``KL(p‖q)`` of diagonal Gaussians, summed over the last axis:
    ``Σ [ ((μ_p − μ_q)² + σ_p² − σ_q²) / (2σ_q²) + log σ_q − log σ_p ]``."""
    var_p, var_q = jnp.exp(2 * log_std_p), jnp.exp(2 * log_std_q)
    return jnp.sum(((mean_p - mean_q) ** 2 + var_p - var_q) / (2 * var_q) + log_std_q - log_std_p, -1)


class GaussianDist(NamedTuple):
    """A diagonal Gaussian's parameters, ``[..., act]`` each."""

    mean: jax.Array
    log_std: jax.Array


class Policy(Protocol):
    """The actor protocol: what sampling and adaptation need from a policy.

    ``dist`` is a pytree of distribution parameters (for the Gaussian policies a
    :class:`GaussianDist`); the sampler records it per step, so log-probabilities and KLs under
    the sampling policy are available downstream without re-running it. A planner or an
    adaptive-model controller can implement the same methods (``sample_noise`` then returns the
    randomness it consumes, e.g. keys)."""

    def init(self, key: jax.Array, obs: jax.Array) -> Params: ...

    def distribution(self, params: Params, obs: jax.Array) -> Any: ...

    def sample_noise(self, key: jax.Array, batch_shape: tuple[int, ...]) -> Any: ...

    def sample(self, params: Params, obs: jax.Array, noise: Any) -> tuple[jax.Array, Any, jax.Array]: ...

    def log_prob(self, dist: Any, actions: jax.Array) -> jax.Array: ...

    def entropy(self, dist: Any) -> jax.Array: ...

    def kl(self, dist_p: Any, dist_q: Any) -> jax.Array: ...


@dataclass(frozen=True)
class GaussianPolicy:
    """A diagonal-Gaussian actor around a Flax module returning ``(mean, log_std)``.

    Sampling is reparameterised, ``a = μ(s) + σ(s)·ε`` with ε ~ N(0, I) drawn by
    :meth:`sample_noise`, so an on-device rollout is differentiable in the parameters."""

    module: nn.Module
    act_dim: int

    def init(self, key: jax.Array, obs: jax.Array) -> Params:
        return self.module.init(key, obs)

    def apply(self, params: Params, obs: jax.Array) -> GaussianDist:
        """The distribution parameters (same as :meth:`distribution`)."""
        return GaussianDist(*self.module.apply(params, obs))

    def distribution(self, params: Params, obs: jax.Array) -> GaussianDist:
        return self.apply(params, obs)

    def sample_noise(self, key: jax.Array, batch_shape: tuple[int, ...]) -> jax.Array:
        return jax.random.normal(key, (*batch_shape, self.act_dim))

    def sample(self, params: Params, obs: jax.Array, noise: jax.Array):
        """``(action, dist, log π(action|obs))`` with ``action = μ + σ·noise``."""
        dist = self.apply(params, obs)
        action = dist.mean + jnp.exp(dist.log_std) * noise
        return action, dist, gaussian_log_prob(action, dist.mean, dist.log_std)

    def log_prob(self, dist: GaussianDist, actions: jax.Array) -> jax.Array:
        return gaussian_log_prob(actions, dist.mean, dist.log_std)

    def coordinate_log_prob(self, dist: GaussianDist, actions: jax.Array) -> jax.Array:
        """Per-coordinate log-densities ``[..., act]`` (TMAML's action-dependent baselines)."""
        return gaussian_coordinate_log_prob(actions, dist.mean, dist.log_std)

    def entropy(self, dist: GaussianDist) -> jax.Array:
        """``Σ (log σ + ½ log 2πe)`` over the action coordinates."""
        return jnp.sum(dist.log_std + 0.5 * (LOG_2PI + 1.0), -1)

    def kl(self, dist_p: GaussianDist, dist_q: GaussianDist) -> jax.Array:
        """``KL(p‖q)`` per step (:func:`gaussian_kl`)."""
        return gaussian_kl(dist_p.mean, dist_p.log_std, dist_q.mean, dist_q.log_std)


@dataclass(frozen=True)
class ExplorationActor:
    """A Gaussian policy's mean plus exploration noise, as an actor for the sampler (ME-TRPO's
    real-data exploration, thesis App. A.1.3; docs/model-based.md):

        a_t = μ_θ(s_t) + σ·ε_t,   ε_t ~ N(0, I),   σ ~ U(0, max_std)

    with σ drawn once per episode (``per="episode"``, the thesis) or at every step
    (``per="step"``, the original code). ``max_std = 0`` acts with the mean (deterministic).
    ``dist`` and the log-density are the policy's own (the noise replaces its σ); the sampler's
    noise layout is ``[T, M, R]``, time first."""

    policy: GaussianPolicy
    max_std: float = 0.0
    per: str = "episode"

    @property
    def act_dim(self) -> int:
        return self.policy.act_dim

    def init(self, key: jax.Array, obs: jax.Array) -> Params:
        return self.policy.init(key, obs)

    def distribution(self, params: Params, obs: jax.Array) -> GaussianDist:
        return self.policy.distribution(params, obs)

    def sample_noise(self, key: jax.Array, batch_shape: tuple[int, ...]) -> jax.Array:
        eps_key, std_key = jax.random.split(key)
        eps = jax.random.normal(eps_key, (*batch_shape, self.act_dim))
        std_shape = (*batch_shape, 1) if self.per == "step" else (1, *batch_shape[1:], 1)
        return eps * self.max_std * jax.random.uniform(std_key, std_shape)

    def sample(self, params: Params, obs: jax.Array, noise: jax.Array):
        dist = self.policy.apply(params, obs)
        action = dist.mean + noise
        return action, dist, gaussian_log_prob(action, dist.mean, dist.log_std)

    def log_prob(self, dist: GaussianDist, actions: jax.Array) -> jax.Array:
        return self.policy.log_prob(dist, actions)

    def entropy(self, dist: GaussianDist) -> jax.Array:
        return self.policy.entropy(dist)

    def kl(self, dist_p: GaussianDist, dist_q: GaussianDist) -> jax.Array:
        return self.policy.kl(dist_p, dist_q)


POLICIES: Registry[Callable[..., GaussianPolicy]] = Registry("policy kind")


@POLICIES.register("gaussian_mlp", description="diagonal Gaussian, tanh MLP mean, state-independent log-std")
def gaussian_mlp(act_dim: int, hidden_sizes: Sequence[int] = (64, 64),
                 init_std: float = 1.0) -> GaussianPolicy:
    sizes = tuple(int(h) for h in hidden_sizes)
    if any(h < 1 for h in sizes):
        raise ConfigError(f"hidden sizes must be positive integers, got {hidden_sizes!r}.")
    if not init_std > 0:
        raise ConfigError(f"init_std must be > 0, got {init_std!r}.")
    return GaussianPolicy(GaussianMLPPolicy(action_dim=act_dim, hidden_sizes=sizes, init_std=init_std),
                          act_dim)


@POLICIES.register("quadratic_feature", description="the 2-parameter 1-D policy of ProMP Fig. 6")
def quadratic_feature(act_dim: int, hidden_sizes: Sequence[int] = (),
                      init_std: float = 1.0) -> GaussianPolicy:
    return GaussianPolicy(QuadraticFeaturePolicy(action_dim=act_dim), act_dim)


def make_policy(act_dim: int, hidden_sizes: Sequence[int] = (64, 64), init_std: float = 1.0,
                kind: str = "gaussian_mlp") -> GaussianPolicy:
    """A policy by kind (:data:`POLICIES`): ``gaussian_mlp`` (default) or ``quadratic_feature``."""
    return POLICIES.get(kind)(act_dim, hidden_sizes, init_std)


def init_params(policy: Policy, key: jax.Array, obs_dim: int) -> Params:
    """Initial parameters of ``policy`` for observations of size ``obs_dim``."""
    return policy.init(key, jnp.zeros((1, obs_dim), jnp.float32))


def per_task(params: Params, num_tasks: int) -> Params:
    """Copy ``params`` along a new leading task axis of size ``num_tasks``."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num_tasks, *jnp.shape(x))), params)


def check_per_task_params(params: Params, reference: Params, num_tasks: int) -> None:
    """Raise a clear :class:`ConfigError` unless ``params`` is ``reference`` with a task axis."""
    ref_leaves, ref_tree = jax.tree_util.tree_flatten_with_path(reference)
    try:
        leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    except Exception as exc:  # pragma: no cover - tree_flatten accepts anything
        raise ConfigError(f"policy parameters are not a pytree: {exc}") from None
    if tree != ref_tree:
        raise ConfigError(
            "policy parameters do not match the policy's structure: expected "
            f"{[jax.tree_util.keystr(p) for p, _ in ref_leaves]}, "
            f"got {[jax.tree_util.keystr(p) for p, _ in leaves]}."
        )
    for (path, leaf), (_, ref) in zip(leaves, ref_leaves, strict=True):
        expected = (num_tasks, *np.shape(ref))
        if tuple(np.shape(leaf)) != expected:
            raise ConfigError(
                f"policy parameter {jax.tree_util.keystr(path)} must have shape {expected} "
                f"([tasks, ...]: one copy per task, see adaptrl.policies.per_task), "
                f"got {tuple(np.shape(leaf))}."
            )
