"""Adaptation: differentiable inner steps θ_{k+1} = θ_k + α ⊙ g_k, g_k = ∇J^inner(θ_k; D_k).

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

Normalised inner gradient (``inner_grad_norm``, :data:`INNER_GRAD_NORMS`). With ``unit`` the step
is θ' = θ + α ⊙ g/√(‖g‖² + ε²), ‖g‖ the global L2 norm over all policy parameters of the task's
gradient and ε = :data:`GRAD_NORM_EPS` (a step of norm α up to float rounding whenever ‖g‖ ≫ ε,
zero for g = 0, and differentiable everywhere, so the meta-gradient passes through the
normalisation). It makes estimators whose gradients differ in scale (DiCE vs LVC) take steps of
the same size. Not in the papers or the original code (docs/algorithms.md, "The inner step").

Meta-test inner optimizers (:data:`INNER_OPTIMIZERS`, :func:`adapt_step_with`), for evaluation
only: ``sgd`` is the training step above; ``adam`` steps θ' = θ + α ⊙ m̂/(√v̂ + ε) with Adam's
moments of the (normalised) gradients kept per task across the adaptation steps, β1 = 0.9,
β2 = 0.999, ε = 10⁻⁸. That is the original code's meta-tester (ProMP ``full_code`` branch,
``maml_zoo/meta_tester.py``), which adapted with its ``VPG`` algorithm at
``learning_rate=inner_lr``: one ``tf.train.AdamOptimizer`` step (TF1 defaults, the values above)
per sampling round on all policy parameters, one optimizer instance so the moments persist
across rounds (docs/algorithms.md, "Meta-testing").
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from adaptrl.errors import ConfigError, unknown_name_error
from adaptrl.meta.batch import StepBatch
from adaptrl.meta.surrogates import INNER_SURROGATES, SurrogateInputs, reduce_surrogate
from adaptrl.policies import Params, Policy
from adaptrl.registry import Registry

INNER_GRAD_NORMS = ("none", "unit")
"""``inner_grad_norm``: ``none`` (the papers' step θ + α⊙g) or ``unit`` (θ + α⊙g/√(‖g‖² + ε²))."""

GRAD_NORM_EPS = 1e-8
"""ε of the normalised inner gradient g/√(‖g‖² + ε²): guards ‖g‖ = 0 (the step is then 0)."""

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
"""The meta-tester's Adam: ``tf.train.AdamOptimizer``'s defaults, which the original's ``VPG``
meta-tester used (optax's defaults are the same numbers)."""

INNER_OPTIMIZERS: Registry[optax.GradientTransformation] = Registry("inner optimizer")
"""Meta-test inner optimizers: the direction d of θ' = θ + α ⊙ d from the inner gradient g, as an
optax transformation of the *ascent* gradient (state per task, kept across the adaptation steps)."""
INNER_OPTIMIZERS.register("sgd", optax.identity(), "the training step θ + α⊙g (default)")
INNER_OPTIMIZERS.register("adam", optax.scale_by_adam(b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS),
                          "θ + α⊙m̂/(√v̂ + ε), Adam state per task across steps (the original "
                          "meta-tester's, β1 0.9, β2 0.999, ε 1e-8)")


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


def normalise_gradient(grads: Params, kind: str) -> Params:
    """``grads`` as they are (``none``) or ``g/√(‖g‖² + ε²)`` (``unit``; ‖g‖ the global L2 norm over
    every leaf, ε = :data:`GRAD_NORM_EPS`), differentiable in ``grads``."""
    if kind == "none":
        return grads
    if kind != "unit":
        raise unknown_name_error("inner grad norm", kind, INNER_GRAD_NORMS)
    squared = sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads))
    norm = jnp.sqrt(squared + GRAD_NORM_EPS ** 2)
    return jax.tree_util.tree_map(lambda g: g / norm, grads)


def inner_gradient(policy: Policy, params: Params, batch: StepBatch, spec: Any) -> Params:
    """g = ∇_θ J^inner(θ; batch), normalised as ``spec.inner_grad_norm`` says."""
    grads = jax.grad(lambda p: inner_objective(policy, p, batch, spec))(params)
    return normalise_gradient(grads, spec.inner_grad_norm)


def ascend(params: Params, step_size: Any, direction: Params) -> Params:
    """``θ + α ⊙ d`` for a scalar or per-parameter (pytree) α."""
    if isinstance(step_size, dict):
        return jax.tree_util.tree_map(lambda p, a, g: p + a * g, params, step_size, direction)
    return jax.tree_util.tree_map(lambda p, g: p + step_size * g, params, direction)


def adapt_step(policy: Policy, params: Params, step_size: Any, batch: StepBatch, spec: Any) -> Params:
    """One inner step ``θ' = θ + α ⊙ g``, g = ∇_θ J^inner(θ; batch) (normalised with
    ``spec.inner_grad_norm=unit``), differentiable in θ and α."""
    return ascend(params, step_size, inner_gradient(policy, params, batch, spec))


def adapt_step_with(direction: optax.GradientTransformation, policy: Policy, params: Params,
                    state: Any, step_size: Any, batch: StepBatch, spec: Any) -> tuple[Params, Any]:
    """One meta-test step with an inner optimizer: ``(d, state') = direction.update(g, state, θ)``
    and ``θ' = θ + α ⊙ d`` (g as in :func:`adapt_step`); returns ``(θ', state')``. With
    ``optax.identity()`` it is :func:`adapt_step`; with ``INNER_OPTIMIZERS["adam"]`` an Adam step
    (ascent on J^inner, i.e. Adam at learning rate α on the loss −J^inner)."""
    updates, state = direction.update(inner_gradient(policy, params, batch, spec), state, params)
    return ascend(params, step_size, updates), state


def check_inner_options(optimizer: str, lr: float | None = None, grad_norm: str | None = None) -> None:
    """One :class:`~adaptrl.errors.ConfigError` for a bad meta-test adaptation setting: an unknown
    ``--inner-optimizer`` or ``--inner-grad-norm`` (naming the valid ones), an ``--inner-lr`` that is
    not a finite number > 0 (``None``: the run's)."""
    INNER_OPTIMIZERS.get(optimizer)
    if grad_norm is not None and grad_norm not in INNER_GRAD_NORMS:
        raise unknown_name_error("inner grad norm", grad_norm, INNER_GRAD_NORMS)
    if lr is not None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--inner-lr must be a finite number > 0 (omit it for the run's inner_lr), "
                          f"got {lr!r}.")


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
