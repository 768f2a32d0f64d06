"""Policies: the reference Gaussian MLP and the 1-D study's two-parameter policy.

Parameters are plain Flax pytrees, so adapted parameters θ' = θ + α∇J are pytrees too, and a
batch of per-task parameters is the same pytree with a leading task axis (:func:`per_task`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.errors import ConfigError

Params = Any

LOG_2PI = math.log(2 * math.pi)


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian policy of the original code (reference §4, spec CONV-3).

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


def make_policy(act_dim: int, hidden_sizes: Sequence[int] = (64, 64), init_std: float = 1.0,
                kind: str = "gaussian_mlp") -> nn.Module:
    """A policy module by kind: ``gaussian_mlp`` (default) or ``quadratic_feature``."""
    if kind == "gaussian_mlp":
        sizes = tuple(int(h) for h in hidden_sizes)
        if any(h < 1 for h in sizes):
            raise ConfigError(f"hidden sizes must be positive integers, got {hidden_sizes!r}.")
        if not init_std > 0:
            raise ConfigError(f"init_std must be > 0, got {init_std!r}.")
        return GaussianMLPPolicy(action_dim=act_dim, hidden_sizes=sizes, init_std=init_std)
    if kind == "quadratic_feature":
        return QuadraticFeaturePolicy(action_dim=act_dim)
    raise ConfigError(f"unknown policy kind {kind!r}; valid: gaussian_mlp, quadratic_feature.")


def init_params(policy: nn.Module, key: jax.Array, obs_dim: int) -> Params:
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
