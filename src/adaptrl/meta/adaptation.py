"""Adaptation: the inner surrogate and differentiable inner steps θ_{k+1} = θ_k + α ⊙ ∇J^inner.

All functions here act on *one task* (arrays ``[R, T, ...]``); the learner ``vmap``s them over
the task axis. Every inner step is a plain gradient-ascent step on all policy parameters, the
log-std included (reference §7.1), built with ``jax.grad`` so that differentiating the result
with respect to θ applies (I + α∇²J^inner) exactly (spec EST-0). Step k uses the data sampled
with θ_{k−1} (spec OBJ-1: fresh samples at every step).

The step size α is a scalar or a pytree shaped like the parameters (per-parameter, Meta-SGD
style). When learned, it is part of the meta-parameters and receives the outer gradient through
every inner step (the original's ``trainable_inner_step_size`` never reached an optimizer,
reference defect 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from adaptrl import estimators as est
from adaptrl.meta.batch import StepBatch
from adaptrl.policies import Params, gaussian_coordinate_log_prob, gaussian_kl, gaussian_log_prob

PolicyApply = Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]


def policy_log_prob(apply: PolicyApply, params: Params, batch: StepBatch):
    """``(log π_θ(a|s), mean, log_std)`` on one task's batch ``[R, T, ...]``."""
    mean, log_std = apply(params, batch.observations)
    return gaussian_log_prob(batch.actions, mean, log_std), mean, log_std


def reduce_surrogate(value: jax.Array, mask: jax.Array, reduction: str) -> jax.Array:
    """Apply the loss normalisation: ``per_trajectory`` keeps (1/N)ΣΣ, ``per_step`` rescales to
    the mean over real time steps (the original code's normalisation)."""
    return value * est.per_step_scale(mask) if reduction == "per_step" else value


def dice_objective(logp: jax.Array, mean: jax.Array, log_std: jax.Array, batch: StepBatch,
                   control_variate: str = "none", cv_formula: str = "corrected") -> jax.Array:
    """DiCE on the processed DiCE rewards, plus — with a control variate b (TMAML, spec CV-4) —
    DiCE's baseline term with b and the control-variate surrogate (EST-6, or Eq. 7 as printed):

        J = J^DiCE + Σ_t [1 − □(l_t)]·b_t + J^CV(b)

    ``task`` control variates are action-dependent (one b^i per action coordinate, Eq. 11) and use
    the coordinate log-densities. Value and first-order gradient: those of DiCE with baseline b."""
    mask = batch.mask
    value = est.dice(logp, batch.dice_rewards, mask)
    if control_variate == "none":
        return value
    coord = (gaussian_coordinate_log_prob(batch.actions, mean, log_std)
             if control_variate == "task" else None)
    b = batch.cv_baselines
    value = value + est.dice_baseline_term(logp, b, mask, coordinate_logp=coord)
    return value + est.CONTROL_VARIATES[cv_formula](logp, b, mask, coordinate_logp=coord)


def inner_objective(kind: str, logp: jax.Array, batch: StepBatch, reduction: str, *,
                    mean: jax.Array | None = None, log_std: jax.Array | None = None,
                    control_variate: str = "none", cv_formula: str = "corrected") -> jax.Array:
    """The inner surrogate J^inner of one task (to be *maximised*).

    * ``pgt`` — Σ_t log π·A (original RL-MAML, E[∇²] = H2, spec EST-1)
    * ``lvc`` — Σ_t (π/⊥π)·A (E[∇²] = H1 + H2, spec EST-3)
    * ``likelihood_ratio`` — Σ_t (π/π_old)·A (ProMP J^LR, Eq. 12; equals LVC at the sampling
      parameters, spec ALG-4)
    * ``dice`` — DiCE on the processed DiCE rewards (E[∇²] = ∇²J, spec EST-2), plus the TMAML
      control variate when ``control_variate`` is not ``none`` (:func:`dice_objective`)
    """
    mask = batch.mask
    if kind == "pgt":
        value = est.pgt_from_advantages(logp, batch.advantages, mask)
    elif kind == "lvc":
        value = est.lvc_from_advantages(logp, batch.advantages, mask)
    elif kind == "likelihood_ratio":
        value = est.likelihood_ratio(logp, batch.logp_old, batch.advantages, mask)
    elif kind == "dice":
        value = dice_objective(logp, mean, log_std, batch, control_variate, cv_formula)
    else:  # pragma: no cover - configs are validated
        raise ValueError(f"unknown inner estimator {kind!r}")
    return reduce_surrogate(value, mask, reduction)


def adapt_step(apply: PolicyApply, params: Params, step_size: Any, batch: StepBatch, *,
               kind: str, reduction: str, control_variate: str = "none",
               cv_formula: str = "corrected") -> Params:
    """One inner step ``θ' = θ + α ⊙ ∇_θ J^inner(θ; batch)``, differentiable in θ and α."""

    def objective(p):
        logp, mean, log_std = policy_log_prob(apply, p, batch)
        return inner_objective(kind, logp, batch, reduction, mean=mean, log_std=log_std,
                               control_variate=control_variate, cv_formula=cv_formula)

    grads = jax.grad(objective)(params)
    if isinstance(step_size, dict):
        return jax.tree_util.tree_map(lambda p, a, g: p + a * g, params, step_size, grads)
    return jax.tree_util.tree_map(lambda p, g: p + step_size * g, params, grads)


def adapt(apply: PolicyApply, params: Params, step_size: Any, step_batches: list[StepBatch], *,
          kind: str, reduction: str, control_variate: str = "none",
          cv_formula: str = "corrected") -> list[Params]:
    """``[θ_0, θ_1, …, θ_K]`` with θ_{k+1} = θ_k + α⊙∇J^inner(θ_k; D_k), one batch per step."""
    chain = [params]
    for batch in step_batches:
        chain.append(adapt_step(apply, chain[-1], step_size, batch, kind=kind, reduction=reduction,
                                control_variate=control_variate, cv_formula=cv_formula))
    return chain


def mean_kl_from_old(apply: PolicyApply, params: Params, batch: StepBatch) -> jax.Array:
    """Mean over real steps of KL(π_old ‖ π_θ) on the batch, π_old the sampling distribution."""
    _, mean, log_std = policy_log_prob(apply, params, batch)
    kl = gaussian_kl(batch.means_old, batch.log_stds_old, mean, log_std)
    return jnp.sum(kl * batch.mask) / jnp.maximum(jnp.sum(batch.mask), 1.0)
