"""A dynamics ensemble: K MLPs predicting the normalised state change, ``s' = s + f_k(s, a)``.

Each member k maps the z-scored input ``x̂ = (concat(s, a) − μ_in)/σ_in`` to the z-scored change
``Δ̂``; the prediction is ``s' = s + μ_Δ + σ_Δ·Δ̂`` (thesis §5.2.1; docs/model-based.md). The K
members' parameters are one pytree with a leading member axis (``jax.vmap`` of the Flax init over
K keys), so every member is evaluated in one ``vmap``; each member carries its own normalisation
statistics (:class:`Normalization`).

Two kinds: ``deterministic`` (MB-MPO / ME-TRPO: the MSE of thesis Eq. 6 on normalised Δ) and
``probabilistic`` (PETS-style diagonal Gaussian over Δ̂ with learnable soft log-variance bounds,
as used by MAAC; docs/model-based.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.errors import ConfigError, require_positive_int, unknown_name_error

KINDS = ("deterministic", "probabilistic")
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu, "tanh": nn.tanh, "swish": nn.swish,
}
INIT_MAX_LOGVAR = 0.5
INIT_MIN_LOGVAR = -10.0
LOGVAR_BOUND_PENALTY = 0.01


@dataclass(frozen=True)
class EnsembleSpec:
    """The static description of an ensemble (hashable: it is a static argument of jitted code).

    ``kind``: ``deterministic`` or ``probabilistic``; ``weight_norm``: every dense layer uses
    ``W = g·v/‖v‖`` per output unit (Salimans & Kingma 2016; MB-MPO uses it, thesis B.3);
    ``activation``: ``relu`` (the thesis), ``tanh`` or ``swish``."""

    obs_dim: int
    act_dim: int
    members: int = 5
    hidden_sizes: tuple[int, ...] = (512, 512)
    kind: str = "deterministic"
    weight_norm: bool = False
    activation: str = "relu"

    def __post_init__(self):
        set_field = object.__setattr__
        set_field(self, "obs_dim", require_positive_int("obs_dim", self.obs_dim))
        set_field(self, "act_dim", require_positive_int("act_dim", self.act_dim))
        set_field(self, "members", require_positive_int("members (ensemble size)", self.members))
        try:
            sizes = tuple(self.hidden_sizes)
        except TypeError:
            raise ConfigError(f"hidden_sizes must be a sequence of positive integers, "
                              f"got {self.hidden_sizes!r}.") from None
        for size in sizes:
            require_positive_int("every hidden size", size)
        set_field(self, "hidden_sizes", tuple(int(h) for h in sizes))
        if self.kind not in KINDS:
            raise unknown_name_error("ensemble kind", str(self.kind), KINDS)
        if self.activation not in ACTIVATIONS:
            raise unknown_name_error("activation", str(self.activation), ACTIVATIONS)
        if not isinstance(self.weight_norm, bool | np.bool_):
            raise ConfigError(f"weight_norm must be True or False, got {self.weight_norm!r}.")
        set_field(self, "weight_norm", bool(self.weight_norm))

    @property
    def probabilistic(self) -> bool:
        return self.kind == "probabilistic"

    @property
    def input_dim(self) -> int:
        return self.obs_dim + self.act_dim


class Normalization(NamedTuple):
    """Per-member data statistics; in :class:`EnsembleParams` every leaf has a leading member
    axis ``[K, ...]``, from :func:`normalization` there is none.

    ``input_*`` z-score ``concat(obs, action)`` ``[obs+act]``; ``delta_*`` z-score
    ``Δ = next_obs − obs`` ``[obs]``; ``obs_low``/``obs_high`` ``[obs]`` are the elementwise range
    of obs and next_obs in the member's training data (for clipping imagined states)."""

    input_mean: Any
    input_std: Any
    delta_mean: Any
    delta_std: Any
    obs_low: Any
    obs_high: Any


class EnsembleParams(NamedTuple):
    """``net``: the K members' Flax parameters stacked on a leading axis (probabilistic members
    also hold ``max_logvar``/``min_logvar`` ``[obs]``); ``norm``: their :class:`Normalization`."""

    net: Any
    norm: Normalization


def weight_norm_kernel(v: jax.Array, g: jax.Array) -> jax.Array:
    """``W[:, j] = g_j · v[:, j] / ‖v[:, j]‖``: the effective kernel of a weight-normalised layer
    (Salimans & Kingma 2016), one norm per output unit."""
    return v * (g / jnp.linalg.norm(v, axis=0))


class WeightNormDense(nn.Module):
    """A dense layer ``x·W + b`` with ``W = g·v/‖v‖`` (:func:`weight_norm_kernel`).

    ``v`` is Glorot-uniform and ``g`` starts at ``‖v‖`` so the initial ``W`` equals ``v``, i.e.
    the same initial function as a plain Glorot layer."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        v = self.param("v", nn.initializers.glorot_uniform(), (x.shape[-1], self.features))
        g = self.param("g", lambda _: jnp.linalg.norm(v, axis=0))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return x @ weight_norm_kernel(v, g) + bias


def soft_bound_logvar(logvar: jax.Array, min_logvar: jax.Array, max_logvar: jax.Array) -> jax.Array:
    """``l ← max − softplus(max − l)``, then ``l ← min + softplus(l − min)`` (PETS / MAAC;
    docs/model-based.md).

    The result is above ``min`` and below ``max + softplus(min − max)`` (the second step can lift
    values just under ``max`` by at most ``softplus(min − max)``, ≈ 2.8e-5 for the initial bounds),
    and it is differentiable in the bounds, which are learned."""
    logvar = max_logvar - jax.nn.softplus(max_logvar - logvar)
    return min_logvar + jax.nn.softplus(logvar - min_logvar)


class DynamicsMLP(nn.Module):
    """One member: ``x̂ → hidden… → Δ̂`` (and a soft-bounded log-variance when probabilistic).

    Glorot-uniform kernels and zero biases as :mod:`adaptrl.policies`; returns
    ``(Δ̂ [..., obs], log-var [..., obs] or None)`` in normalised units."""

    obs_dim: int
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    weight_norm: bool = False
    probabilistic: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        act = ACTIVATIONS[self.activation]

        def dense(features: int, name: str) -> nn.Module:
            if self.weight_norm:
                return WeightNormDense(features, name=name)
            return nn.Dense(features, kernel_init=nn.initializers.glorot_uniform(),
                            bias_init=nn.initializers.zeros, name=name)

        for i, size in enumerate(self.hidden_sizes):
            x = act(dense(size, f"hidden_{i}")(x))
        out = dense(self.obs_dim * (2 if self.probabilistic else 1), "output")(x)
        if not self.probabilistic:
            return out, None
        max_logvar = self.param("max_logvar", nn.initializers.constant(INIT_MAX_LOGVAR), (self.obs_dim,))
        min_logvar = self.param("min_logvar", nn.initializers.constant(INIT_MIN_LOGVAR), (self.obs_dim,))
        mean, raw_logvar = out[..., :self.obs_dim], out[..., self.obs_dim:]
        return mean, soft_bound_logvar(raw_logvar, min_logvar, max_logvar)


def network(spec: EnsembleSpec) -> DynamicsMLP:
    """The Flax module of one member of ``spec``."""
    return DynamicsMLP(obs_dim=spec.obs_dim, hidden_sizes=spec.hidden_sizes, activation=spec.activation,
                       weight_norm=spec.weight_norm, probabilistic=spec.probabilistic)


def identity_normalization(spec: EnsembleSpec) -> Normalization:
    """``[K, ...]`` statistics that change nothing: mean 0, std 1, range ±∞."""
    k, i, o = spec.members, spec.input_dim, spec.obs_dim
    return Normalization(
        input_mean=jnp.zeros((k, i)), input_std=jnp.ones((k, i)),
        delta_mean=jnp.zeros((k, o)), delta_std=jnp.ones((k, o)),
        obs_low=jnp.full((k, o), -jnp.inf), obs_high=jnp.full((k, o), jnp.inf),
    )


@partial(jax.jit, static_argnames="spec")
def init_ensemble(spec: EnsembleSpec, key: jax.Array) -> EnsembleParams:
    """K members that differ only in their initialisation key; identity normalisation."""
    module = network(spec)
    dummy = jnp.zeros((1, spec.input_dim), jnp.float32)
    net = jax.vmap(lambda k: module.init(k, dummy))(jax.random.split(key, spec.members))
    return EnsembleParams(net=net, norm=identity_normalization(spec))


def normalization(obs: Any, act: Any, next_obs: Any, eps: float = 1e-8) -> Normalization:
    """One member's statistics (no member axis) from its training rows ``[N, ...]``.

    ``input = concat(obs, act)``, ``Δ = next_obs − obs``; means and population stds per column,
    stds floored at ``eps`` so a constant column (e.g. an unused action) gives a finite ``x̂``
    instead of 0/0. The floor is tiny, so such a column amplifies any unseen value by up to
    ``1/eps``; pass a larger ``eps`` where that matters (ME-TRPO floored std at 0.1,
    docs/model-based.md). Numpy, float32."""
    obs, act, next_obs = (np.asarray(x, np.float32) for x in (obs, act, next_obs))
    if obs.ndim != 2 or obs.shape[0] < 1 or obs.shape != next_obs.shape or act.ndim != 2 \
            or act.shape[0] != obs.shape[0]:
        raise ConfigError(f"normalization needs obs [N, obs], act [N, act], next_obs [N, obs] with N ≥ 1, "
                          f"got {obs.shape}, {act.shape}, {next_obs.shape}.")
    if not eps > 0:
        raise ConfigError(f"eps must be > 0, got {eps!r}.")
    inputs = np.concatenate([obs, act], axis=-1)
    delta = next_obs - obs
    both = np.concatenate([obs, next_obs], axis=0)
    return Normalization(
        input_mean=inputs.mean(0), input_std=np.maximum(inputs.std(0), eps).astype(np.float32),
        delta_mean=delta.mean(0), delta_std=np.maximum(delta.std(0), eps).astype(np.float32),
        obs_low=both.min(0), obs_high=both.max(0),
    )


def member(params: EnsembleParams, k: Any) -> EnsembleParams:
    """Member ``k``'s parameters (leaves without the member axis); ``k`` may be traced."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[k], params)


def _check_inputs(spec: EnsembleSpec, obs: jax.Array, action: jax.Array) -> None:
    if obs.shape[-1:] != (spec.obs_dim,) or action.shape[-1:] != (spec.act_dim,) \
            or obs.shape[:-1] != action.shape[:-1]:
        raise ConfigError(f"the model needs obs [..., {spec.obs_dim}] and action [..., {spec.act_dim}] "
                          f"with the same batch shape, got {tuple(obs.shape)} and {tuple(action.shape)}.")


def normalised_outputs(spec: EnsembleSpec, params: EnsembleParams, obs: jax.Array,
                       action: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """One member's network outputs in normalised units: ``(Δ̂, log-var̂ or None)`` for
    ``x̂ = (concat(obs, a) − μ_in)/σ_in``."""
    obs, action = jnp.asarray(obs), jnp.asarray(action)
    _check_inputs(spec, obs, action)
    norm = params.norm
    x = (jnp.concatenate([obs, action], axis=-1) - norm.input_mean) / norm.input_std
    return network(spec).apply(params.net, x)


def predict_delta(spec: EnsembleSpec, params: EnsembleParams, obs: jax.Array,
                  action: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """One member's un-normalised ``(mean Δ, log-variance of Δ or None)`` for any batch shape.

    ``Δ = μ_Δ + σ_Δ·Δ̂`` and ``log var Δ = log var̂ + log σ_Δ²`` (thesis §5.2.1;
    docs/model-based.md), with ``Δ̂``, ``log var̂`` from :func:`normalised_outputs`."""
    delta_hat, logvar_hat = normalised_outputs(spec, params, obs, action)
    norm = params.norm
    mean = norm.delta_mean + norm.delta_std * delta_hat
    if logvar_hat is None:
        return mean, None
    return mean, logvar_hat + 2.0 * jnp.log(norm.delta_std)


def next_obs(spec: EnsembleSpec, params: EnsembleParams, obs: jax.Array, action: jax.Array,
             key: jax.Array | None = None) -> jax.Array:
    """One member's next state ``s' = s + Δ`` (thesis §5.2.1).

    Without ``key`` (or for a deterministic ensemble) the mean ``s + E[Δ]``; with ``key`` and a
    probabilistic ensemble a sample ``s + μ + ε·exp(logvar/2)``, ε ~ N(0, I). The original TF
    ``predict_sym`` used ``exp(logvar)`` (the variance) as the noise scale; we use the std."""
    mean, logvar = predict_delta(spec, params, obs, action)
    nxt = jnp.asarray(obs) + mean
    if key is None or logvar is None:
        return nxt
    return nxt + jax.random.normal(key, mean.shape, mean.dtype) * jnp.exp(0.5 * logvar)


def next_obs_all(spec: EnsembleSpec, params: EnsembleParams, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Every member's mean next state ``[K, ..., obs]`` for one shared batch, in one ``vmap``."""
    return jax.vmap(lambda p: next_obs(spec, p, obs, action))(params)


def _weighted_mean(per_row: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return per_row.mean()
    weights = jnp.asarray(weights, per_row.dtype)
    total = weights.sum()
    return (weights * per_row).sum() / jnp.where(total > 0, total, 1.0)


def member_loss(spec: EnsembleSpec, params: EnsembleParams, obs: jax.Array, act: jax.Array,
                next_obs: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """One member's training loss, in normalised units, with target ``Δ̂* = (s' − s − μ_Δ)/σ_Δ``.

    deterministic: ``mean‖Δ̂* − Δ̂‖²`` over state dims and rows (thesis App. B.3 / Eq. 6, up to
    the normalisation); probabilistic: the Gaussian NLL without constants,
    ``mean((Δ̂* − μ̂)²·exp(−log var̂) + log var̂) + 0.01·mean(max_logvar) − 0.01·mean(min_logvar)``
    (docs/model-based.md). ``weights`` (the batch shape, e.g. 0/1 masks of padded rows) turn the
    mean over rows into a weighted mean."""
    obs, next_obs = jnp.asarray(obs), jnp.asarray(next_obs)
    if next_obs.shape != obs.shape:
        raise ConfigError(f"next_obs must have the shape of obs {tuple(obs.shape)}, "
                          f"got {tuple(next_obs.shape)}.")
    if weights is not None and jnp.shape(weights) != obs.shape[:-1]:
        raise ConfigError(f"weights must have the batch shape {tuple(obs.shape[:-1])}, "
                          f"got {tuple(jnp.shape(weights))}.")
    mean_hat, logvar_hat = normalised_outputs(spec, params, obs, act)
    target = (next_obs - obs - params.norm.delta_mean) / params.norm.delta_std
    err = (target - mean_hat) ** 2
    if logvar_hat is None:
        return _weighted_mean(err.mean(-1), weights)
    nll = _weighted_mean((err * jnp.exp(-logvar_hat) + logvar_hat).mean(-1), weights)
    bounds = params.net["params"]
    return nll + LOGVAR_BOUND_PENALTY * (bounds["max_logvar"].mean() - bounds["min_logvar"].mean())
