"""Adaptation: differentiable inner steps θ_{k+1} = θ_k + α ⊙ ∇J^inner(θ_k; D_k).

All functions here act on *one task* (arrays ``[R, T, ...]``); the learner ``vmap``s them over
the task axis. Every inner step is a plain gradient-ascent step on all policy parameters, the
log-std included (as the original ProMP code), built with ``jax.grad`` so that differentiating
the result with respect to θ applies (I + α∇²J^inner) exactly (the transformation of ProMP §4,
Eq. 2). Step k uses the
data sampled with θ_k (fresh samples at every step, ProMP §3).

The step size α is a scalar or a pytree shaped like the parameters (per-parameter, Meta-SGD
style). When learned, it is part of the meta-parameters and receives the outer gradient through
every inner step (the original's ``trainable_inner_step_size`` never reached an optimizer;
docs/algorithms.md, deviations).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from adaptrl.meta.batch import StepBatch
from adaptrl.meta.surrogates import INNER_SURROGATES, SurrogateInputs, reduce_surrogate
from adaptrl.policies import Params, Policy


def policy_log_prob(policy: Policy, params: Params, batch: StepBatch) -> tuple[jax.Array, Any]:
    """``(log π_θ(a|s), dist_θ)`` on one task's batch ``[R, T, ...]``."""
    dist = policy.distribution(params, batch.observations)
    return policy.log_prob(dist, batch.actions), dist


def surrogate_inputs(policy: Policy, params: Params, batch: StepBatch, spec: Any) -> SurrogateInputs:
    """Everything a surrogate reads, at parameters ``params``."""
    logp, dist = policy_log_prob(policy, params, batch)
    return SurrogateInputs(logp, dist, batch, policy, spec)


def inner_objective(policy: Policy, params: Params, batch: StepBatch, spec: Any) -> jax.Array:
    """J^inner of one task at ``params`` (to be *maximised*), after the loss normalisation:
    the surrogate ``spec.inner_estimator`` of :data:`~adaptrl.meta.surrogates.INNER_SURROGATES`."""
    value = INNER_SURROGATES.get(spec.inner_estimator)(surrogate_inputs(policy, params, batch, spec))
    return reduce_surrogate(value, batch.mask, spec.reduction)


def adapt_step(policy: Policy, params: Params, step_size: Any, batch: StepBatch, spec: Any) -> Params:
    """One inner step ``θ' = θ + α ⊙ ∇_θ J^inner(θ; batch)``, differentiable in θ and α."""
    grads = jax.grad(lambda p: inner_objective(policy, p, batch, spec))(params)
    if isinstance(step_size, dict):
        return jax.tree_util.tree_map(lambda p, a, g: p + a * g, params, step_size, grads)
    return jax.tree_util.tree_map(lambda p, g: p + step_size * g, params, grads)


def adapt(policy: Policy, params: Params, step_size: Any, step_batches: list[StepBatch],
          spec: Any) -> list[Params]:
    """``[θ_0, θ_1, …, θ_K]`` with θ_{k+1} = θ_k + α⊙∇J^inner(θ_k; D_k), one batch per step."""
    chain = [params]
    for batch in step_batches:
        chain.append(adapt_step(policy, chain[-1], step_size, batch, spec))
    return chain


def mean_kl_from_old(policy: Policy, dist: Any, batch: StepBatch) -> jax.Array:
    """Mean over real steps of KL(π_old ‖ π_θ) on the batch, π_old the sampling distribution and
    ``dist`` π_θ's parameters on the batch's observations."""
    kl = policy.kl(batch.dist_old, dist)
    return jnp.sum(kl * batch.mask) / jnp.maximum(jnp.sum(batch.mask), 1.0)
