"""Inner surrogates and outer surrogates of one task, each in its registry.

A surrogate is a function ``f(x: SurrogateInputs) -> scalar`` of one task's batch ``[R, T, ...]``
evaluated at some policy parameters: ``x.logp`` (log π_θ(a|s), differentiable), ``x.dist`` (the
policy's distribution parameters at θ), the processed ``x.batch``, the ``x.policy`` and the
algorithm's static ``x.spec``. Adding one is a function and a ``register`` call here; the
configuration, ``--help`` and the learner pick it up from :data:`INNER_SURROGATES` /
:data:`OUTER_SURROGATES` (docs/architecture.md, "Add an estimator"). Values are *maximised* and
taken before the loss normalisation (:func:`reduce_surrogate`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from adaptrl import estimators as est
from adaptrl.meta.batch import StepBatch
from adaptrl.registry import Registry


class SurrogateInputs(NamedTuple):
    """What a surrogate may read (module docstring)."""

    logp: jax.Array  # [R, T] log π_θ(a_t|s_t)
    dist: Any  # distribution parameters at θ, leaves [R, T, ...]
    batch: StepBatch  # one task's processed data, leaves [R, T, ...]
    policy: Any  # the adaptrl.policies.Policy
    spec: Any  # the algorithm's OuterSpec (clip_eps, control_variate, cv_formula, ...)


INNER_SURROGATES: Registry = Registry("inner estimator")
OUTER_SURROGATES: Registry = Registry("outer objective")


def reduce_surrogate(value: jax.Array, mask: jax.Array, reduction: str) -> jax.Array:
    """Apply the loss normalisation: ``per_trajectory`` keeps (1/N)ΣΣ, ``per_step`` rescales to
    the mean over real time steps (the original code's normalisation, docs/algorithms.md)."""
    return value * est.per_step_scale(mask) if reduction == "per_step" else value


def dice_objective(x: SurrogateInputs) -> jax.Array:
    """DiCE on the processed DiCE rewards, plus — with a control variate b (TMAML, Liu et al.
    2019, §4.2 and Alg. 2) — DiCE's baseline term with b and the control-variate surrogate
    (the corrected, unbiased form, or Eq. 7 as printed; docs/algorithms.md):

        J = J^DiCE + Σ_t [1 − □(l_t)]·b_t + J^CV(b)

    ``task`` control variates are action-dependent (one b^i per action coordinate, TMAML Eq. 11)
    and use the coordinate log-densities. Value and first-order gradient: those of DiCE with
    baseline b."""
    batch, spec = x.batch, x.spec
    value = est.dice(x.logp, batch.dice_rewards, batch.mask)
    if spec.control_variate == "none":
        return value
    coord = x.policy.coordinate_log_prob(x.dist, batch.actions) if spec.control_variate == "task" else None
    b = batch.cv_baselines
    value = value + est.dice_baseline_term(x.logp, b, batch.mask, coordinate_logp=coord)
    return value + est.CONTROL_VARIATES[spec.cv_formula](x.logp, b, batch.mask, coordinate_logp=coord)


# ---------------------------------------------------------------------------- inner surrogates
@INNER_SURROGATES.register("pgt", description="Σ log π·A, the original RL-MAML score function (E[∇²] = H2)")
def pgt_inner(x: SurrogateInputs) -> jax.Array:
    """Σ_t log π·A (the original RL-MAML inner step; ProMP §4: its Hessian estimate is H2 only)."""
    return est.pgt_from_advantages(x.logp, x.batch.advantages, x.batch.mask)


@INNER_SURROGATES.register(
    "lvc", description="Σ (π/⊥π)·A, the low-variance curvature estimator (E[∇²] = H1 + H2)")
def lvc_inner(x: SurrogateInputs) -> jax.Array:
    """Σ_t (π/⊥π)·A (ProMP §5, Eq. 9; E[∇²J^LVC] = H1 + H2, Eq. 10)."""
    return est.lvc_from_advantages(x.logp, x.batch.advantages, x.batch.mask)


@INNER_SURROGATES.register("likelihood_ratio",
                           description="Σ (π/π_old)·A, ProMP's J^LR (equals LVC at the sampling parameters)")
def likelihood_ratio_inner(x: SurrogateInputs) -> jax.Array:
    """Σ_t (π/π_old)·A (ProMP §6, Eq. 12; equals J^LVC at the sampling parameters)."""
    return est.likelihood_ratio(x.logp, x.batch.logp_old, x.batch.advantages, x.batch.mask)


INNER_SURROGATES.register("dice", dice_objective,
                          "DiCE on the processed DiCE rewards (E[∇²] = ∇²J), + TMAML control variate")


# ---------------------------------------------------------------------------- outer surrogates
@OUTER_SURROGATES.register("log_likelihood", description="Σ log π_θK·A (MAML-/LVC-/E-MAML-VPG)")
def log_likelihood_outer(x: SurrogateInputs) -> jax.Array:
    return est.pgt_from_advantages(x.logp, x.batch.advantages, x.batch.mask)


@OUTER_SURROGATES.register("ratio", description="Σ π_θK/π_old·A (the TRPO surrogate)")
def ratio_outer(x: SurrogateInputs) -> jax.Array:
    return est.likelihood_ratio(x.logp, x.batch.logp_old, x.batch.advantages, x.batch.mask)


@OUTER_SURROGATES.register("clip", description="Σ min(ρA, clip(ρ, 1±ε)A), ProMP's J^CLIP (§6, Eq. 13)")
def clip_outer(x: SurrogateInputs) -> jax.Array:
    return est.clipped_ratio(x.logp, x.batch.logp_old, x.batch.advantages, x.batch.mask,
                             clip_eps=x.spec.clip_eps)


OUTER_SURROGATES.register("dice", dice_objective, "DiCE on the post-update DiCE rewards (DiCE-VPG)")
