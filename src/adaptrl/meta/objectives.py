"""Outer objectives: the meta-objective of one task, through every inner step.

For task i with stacked step batches D_0 … D_K (D_k sampled with θ_k):

    θ_0 = θ,  θ_{k+1} = θ_k + α⊙∇J^inner(θ_k; D_k)                          (adaptation;
                                              ∇J^inner/‖∇J^inner‖ with inner_grad_norm=unit)
    J_i  = J^outer(θ_K; D_K)                                                  (post-update term)
         + [E-MAML]  Σ_{k<K} Σ_{n,t} log π_{θ_k}(a|s)·⊥R̂'_i                   (formulation II)

The outer surrogates J^outer (maximised) are the entries of
:data:`adaptrl.meta.surrogates.OUTER_SURROGATES` (``log_likelihood``, ``ratio``, ``clip``, ``dice``).

Besides J_i the task returns the KLs the algorithms constrain or penalise:
``inner_kls[k] = mean_t KL(π_old,k ‖ π_{θ_k})`` on D_k (ProMP's penalty, k < K) and
``outer_kl = mean_t KL(π_old,K ‖ π_{θ_K})`` on D_K (TRPO's constraint).

E-MAML's R̂' follows the original ProMP code (docs/algorithms.md): the task's mean post-update
reward standardised over all tasks of the meta-batch. With ``per_step`` reduction the term is
mean_t log π·R̂' as in the original; with ``per_trajectory`` it is Σ_n Σ_t log π·R̂', the form
whose expectation is formulation II's pre-update gradient (ProMP §4, Eq. 3).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adaptrl import estimators as est
from adaptrl.meta import batch as batch_ops
from adaptrl.meta.adaptation import adapt, mean_kl_from_old, surrogate_inputs
from adaptrl.meta.batch import StepBatch
from adaptrl.meta.surrogates import OUTER_SURROGATES, reduce_surrogate
from adaptrl.policies import Policy


class OuterSpec(NamedTuple):
    """The static parts of an algorithm's meta-objective."""

    inner_estimator: str
    inner_steps: int
    outer_objective: str
    clip_eps: float
    emaml: bool
    reduction: str
    control_variate: str = "none"
    cv_formula: str = "corrected"
    inner_grad_norm: str = "none"  # adaptation.INNER_GRAD_NORMS


class TaskTerms(NamedTuple):
    objective: jax.Array  # J_i (maximised)
    inner_kls: jax.Array  # [K]
    outer_kl: jax.Array  # scalar


def task_terms(policy: Policy, spec: OuterSpec, policy_params: Any, step_size: Any,
               batches: StepBatch) -> TaskTerms:
    """J_i and the KLs of one task; ``batches`` leaves are ``[K+1, R, T, ...]``."""
    k_steps = spec.inner_steps
    steps = [batch_ops.step(batches, k) for k in range(k_steps + 1)]
    chain = adapt(policy, policy_params, step_size, steps[:k_steps], spec)
    post = surrogate_inputs(policy, chain[k_steps], steps[k_steps], spec)
    objective = reduce_surrogate(OUTER_SURROGATES.get(spec.outer_objective)(post), post.batch.mask,
                                 spec.reduction)
    pre = [surrogate_inputs(policy, chain[k], steps[k], spec) for k in range(k_steps)]
    if spec.emaml:
        post_credit = jax.lax.stop_gradient(post.batch.reward_z)
        for x in pre:
            term = est.emaml_pre_term(x.logp, x.batch.mask, post_credit)
            if spec.reduction == "per_step":
                term = term / jnp.maximum(jnp.sum(x.batch.mask), 1.0)
            objective = objective + term
    inner_kls = jnp.stack([mean_kl_from_old(policy, x.dist, x.batch) for x in pre]) \
        if k_steps else jnp.zeros((0,))
    return TaskTerms(objective, inner_kls, mean_kl_from_old(policy, post.dist, post.batch))


def meta_terms(policy: Policy, spec: OuterSpec, meta_params: dict, batches: StepBatch,
               default_step_size: float) -> TaskTerms:
    """:func:`task_terms` averaged over the task axis (leaves of ``batches``: ``[K+1, M, ...]``)."""
    step_size = meta_params.get("inner_lr", default_step_size)
    per_task = jax.vmap(lambda b: task_terms(policy, spec, meta_params["policy"], step_size, b),
                        in_axes=(1,))
    terms = per_task(batches)
    return TaskTerms(jnp.mean(terms.objective), jnp.mean(terms.inner_kls, axis=0),
                     jnp.mean(terms.outer_kl))
