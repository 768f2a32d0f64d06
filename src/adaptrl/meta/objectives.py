"""Outer objectives: the meta-objective of one task, through every inner step.

For task i with stacked step batches D_0 … D_K (D_k sampled with θ_k):

    θ_0 = θ,  θ_{k+1} = θ_k + α⊙∇J^inner(θ_k; D_k)                          (adaptation)
    J_i  = J^outer(θ_K; D_K)                                                  (post-update term)
         + [E-MAML]  Σ_{k<K} Σ_{n,t} log π_{θ_k}(a|s)·⊥R̂'_i                   (formulation II)

Outer surrogates J^outer (maximised):

* ``log_likelihood`` — Σ_t log π_{θ_K}·A (MAML-/LVC-/E-MAML-VPG, reference §7.4)
* ``ratio``          — Σ_t π_{θ_K}/π_old·A (the TRPO surrogate, reference §7.3)
* ``clip``           — Σ_t min(ρA, clip(ρ, 1±ε)A), ρ = π_{θ_K}/π_old (ProMP's J^CLIP, Eq. 13)
* ``dice``           — DiCE on the step-K DiCE rewards (DiCE-VPG, reference §7.5)

Besides J_i the task returns the KLs the algorithms constrain or penalise:
``inner_kls[k] = mean_t KL(π_old,k ‖ π_{θ_k})`` on D_k (ProMP's penalty, k < K) and
``outer_kl = mean_t KL(π_old,K ‖ π_{θ_K})`` on D_K (TRPO's constraint).

E-MAML's R̂' follows the original (reference §7.3): the task's mean post-update reward
standardised over all tasks of the meta-batch. With ``per_step`` reduction the term is
mean_t log π·R̂' as in the original; with ``per_trajectory`` it is Σ_n Σ_t log π·R̂', the form
whose expectation is formulation II's pre-update gradient (spec GRAD-4, EST-4).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from adaptrl import estimators as est
from adaptrl.meta import batch as batch_ops
from adaptrl.meta.adaptation import (
    PolicyApply,
    adapt,
    dice_objective,
    mean_kl_from_old,
    policy_log_prob,
    reduce_surrogate,
)
from adaptrl.meta.batch import StepBatch


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


class TaskTerms(NamedTuple):
    objective: jax.Array  # J_i (maximised)
    inner_kls: jax.Array  # [K]
    outer_kl: jax.Array  # scalar


def outer_surrogate(kind: str, logp: jax.Array, batch: StepBatch, clip_eps: float, *,
                    mean: jax.Array | None = None, log_std: jax.Array | None = None,
                    control_variate: str = "none", cv_formula: str = "corrected") -> jax.Array:
    """J^outer on one task's post-update batch (before loss normalisation). ``dice`` includes the
    TMAML control variate when one is configured (its J^CV part adds exactly 0 to the gradient,
    spec CV-4; DiCE's baseline term with b is the first-order variance reduction)."""
    mask = batch.mask
    if kind == "log_likelihood":
        return est.pgt_from_advantages(logp, batch.advantages, mask)
    if kind == "ratio":
        return est.likelihood_ratio(logp, batch.logp_old, batch.advantages, mask)
    if kind == "clip":
        return est.clipped_ratio(logp, batch.logp_old, batch.advantages, mask, clip_eps=clip_eps)
    if kind == "dice":
        return dice_objective(logp, mean, log_std, batch, control_variate, cv_formula)
    raise ValueError(f"unknown outer objective {kind!r}")  # pragma: no cover - validated


def task_terms(apply: PolicyApply, spec: OuterSpec, policy_params: Any, step_size: Any,
               batches: StepBatch) -> TaskTerms:
    """J_i and the KLs of one task; ``batches`` leaves are ``[K+1, R, T, ...]``."""
    k_steps = spec.inner_steps
    steps = [batch_ops.step(batches, k) for k in range(k_steps + 1)]
    chain = adapt(apply, policy_params, step_size, steps[:k_steps], kind=spec.inner_estimator,
                  reduction=spec.reduction, control_variate=spec.control_variate,
                  cv_formula=spec.cv_formula)
    post = steps[k_steps]
    logp_post, mean_post, log_std_post = policy_log_prob(apply, chain[k_steps], post)
    surrogate = outer_surrogate(spec.outer_objective, logp_post, post, spec.clip_eps, mean=mean_post,
                                log_std=log_std_post, control_variate=spec.control_variate,
                                cv_formula=spec.cv_formula)
    objective = reduce_surrogate(surrogate, post.mask, spec.reduction)
    if spec.emaml:
        post_credit = jax.lax.stop_gradient(post.reward_z)
        for k in range(k_steps):
            logp_pre, _, _ = policy_log_prob(apply, chain[k], steps[k])
            term = est.emaml_pre_term(logp_pre, steps[k].mask, post_credit)
            if spec.reduction == "per_step":
                term = term / jnp.maximum(jnp.sum(steps[k].mask), 1.0)
            objective = objective + term
    inner_kls = jnp.stack([mean_kl_from_old(apply, chain[k], steps[k]) for k in range(k_steps)]) \
        if k_steps else jnp.zeros((0,))
    return TaskTerms(objective, inner_kls, mean_kl_from_old(apply, chain[k_steps], post))


def meta_terms(apply: PolicyApply, spec: OuterSpec, meta_params: dict, batches: StepBatch,
               default_step_size: float) -> TaskTerms:
    """:func:`task_terms` averaged over the task axis (leaves of ``batches``: ``[K+1, M, ...]``)."""
    step_size = meta_params.get("inner_lr", default_step_size)
    per_task = jax.vmap(lambda b: task_terms(apply, spec, meta_params["policy"], step_size, b),
                        in_axes=(1,))
    terms = per_task(batches)
    return TaskTerms(jnp.mean(terms.objective), jnp.mean(terms.inner_kls, axis=0),
                     jnp.mean(terms.outer_kl))
