"""TRPO step: conjugate gradient on the KL Hessian plus a backtracking line search.

Reference: ``ConjugateGradientOptimizer`` of the original ProMP code (docs/algorithms.md, "Outer
optimizers") and TRPO as stated in ProMP (Rothfuss et al., 2019) App. C.2 Eq. 106–107:
minimise ``L(θ)`` subject to ``D̄_KL(π_θold ‖ π_θ) ≤ δ`` by the step
``θ ← θ − sqrt(2δ / (dᵀFd)) · d`` with ``d = F⁻¹ ∇L`` (``F = ∇²D̄_KL`` at θold), found by
conjugate gradient, followed by a backtracking line search.

Everything is generic over parameter pytrees (flattened with ``jax.flatten_util.ravel_pytree``)
and ``jit``-compatible as a whole: the conjugate gradient and the line search are
``lax.while_loop``s, and the line search evaluates its candidates lazily.

Deviations from the original code, deliberate (docs/algorithms.md, deviation 2):

* Hessian-vector products are exact (forward-over-reverse, :func:`hvp`) instead of the original's
  central finite difference ``(∇KL(θ + εv) − ∇KL(θ − εv)) / 2ε`` with an unscaled ε = 1e−5
  (``FiniteDifferenceHvp``), which in float32 would be mostly rounding noise.
* One acceptance rule: the original accepted a candidate with ``KL ≤ δ`` in the line search but
  afterwards rejected the step when ``KL ≥ δ``. Here a candidate is accepted iff
  ``loss < loss_before``, ``KL ≤ δ`` and both are finite; if no candidate is, the old parameters are
  kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

Array = jax.Array
PyTree = Any

_HIGHEST = jax.lax.Precision.HIGHEST


def _dot(a: Array, b: Array) -> Array:
    return jnp.dot(a, b, precision=_HIGHEST)


def conjugate_gradient(
    matvec: Callable[[Array], Array], b: Array, *, iters: int = 10, residual_tol: float = 1e-10
) -> Array:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` by conjugate gradient.

    ``A`` is given as ``matvec(v) = A v`` on flat vectors. Starts at ``x₀ = 0`` and runs at most
    ``iters`` iterations, stopping as soon as the squared residual ``rᵀr`` drops below
    ``residual_tol`` (checked before every iteration, so ``b = 0`` returns 0 without dividing by 0).
    Reference: ``conjugate_gradients`` of rllab and the original ProMP code (``cg_iters = 10``,
    residual tolerance 1e−10; docs/algorithms.md, "Outer optimizers")::

        α = rᵀr / pᵀAp;  x += α p;  r −= α Ap;  p = r + (r_newᵀr_new / rᵀr) p

    Args:
        matvec: ``v ↦ A v``.
        b: right-hand side, a flat vector.
        iters: maximum number of iterations.
        residual_tol: stop when ``rᵀr < residual_tol``.

    Returns:
        The approximate solution ``x``.
    """

    def cond(state: tuple[Array, Array, Array, Array, Array]) -> Array:
        i, _, _, _, rdotr = state
        return (i < iters) & (rdotr >= residual_tol)

    def body(state: tuple[Array, Array, Array, Array, Array]) -> tuple[Array, Array, Array, Array, Array]:
        i, x, r, p, rdotr = state
        z = matvec(p)
        alpha = rdotr / _dot(p, z)
        x = x + alpha * p
        r = r - alpha * z
        new_rdotr = _dot(r, r)
        p = r + (new_rdotr / rdotr) * p
        return i + 1, x, r, p, new_rdotr

    init = (jnp.asarray(0, jnp.int32), jnp.zeros_like(b), b, b, _dot(b, b))
    return jax.lax.while_loop(cond, body, init)[1]


def hvp(f: Callable[[PyTree], Array], params: PyTree, v: PyTree) -> PyTree:
    """Exact Hessian-vector product ``∇²f(params) · v`` of a scalar function, forward-over-reverse:
    ``jax.jvp(jax.grad(f), (params,), (v,))[1]``. ``params`` and ``v`` are pytrees of the same
    structure; so is the result."""
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def _flat_direction(
    loss_and_kl_flat: Callable[[Array], tuple[Array, Array]],
    kl_flat: Callable[[Array], Array],
    theta: Array,
    *,
    max_kl: float,
    cg_iters: int,
    damping: float,
    curvature_flat: Callable[[Array], Array] | None = None,
) -> tuple[Array, Array, Array, Array]:
    """``(loss_before, kl_before, d, β)`` with ``d = (F + damping·I)⁻¹ g`` by CG and the step
    scale β; the loss, its gradient and the KL at θ come from one pass of ``loss_and_kl_flat``."""
    (loss_before, kl_before), g = jax.value_and_grad(loss_and_kl_flat, has_aux=True)(theta)
    if curvature_flat is None:
        _, f_jvp = jax.linearize(jax.grad(kl_flat), theta)  # v ↦ F v, the KL Hessian at theta
    else:
        f_jvp = curvature_flat

    def fvp(v: Array) -> Array:
        return f_jvp(v) + damping * v

    d = conjugate_gradient(fvp, g, iters=cg_iters)
    beta = jnp.sqrt(2.0 * max_kl / (_dot(d, fvp(d)) + 1e-8))
    return loss_before, kl_before, d, beta


def trpo_search_direction(
    loss_fn: Callable[[PyTree], Array],
    kl_fn: Callable[[PyTree], Array],
    params: PyTree,
    *,
    max_kl: float,
    cg_iters: int = 10,
    damping: float = 0.0,
) -> tuple[PyTree, Array]:
    """Natural-gradient direction and step scale of a TRPO step (steps 1–2 of :func:`trpo_step`).

    ``g = ∇loss``, ``d = (F + damping·I)⁻¹ g`` by :func:`conjugate_gradient` with the exact KL
    Hessian-vector product ``F v`` (:func:`hvp`), and ``β = sqrt(2δ / (dᵀ(F + damping·I)d + 1e−8))``.
    The first line-search candidate is ``params − β·d``; for a quadratic KL it lies on the trust
    region boundary ``KL = δ``.

    Returns:
        ``(d, β)``: ``d`` as a pytree like ``params``, β a scalar (NaN if ``dᵀFd < 0``).
    """
    theta, unravel = ravel_pytree(params)
    _, _, d, beta = _flat_direction(
        lambda th: (loss_fn(unravel(th)), kl_fn(unravel(th))),
        lambda th: kl_fn(unravel(th)),
        theta,
        max_kl=max_kl,
        cg_iters=cg_iters,
        damping=damping,
    )
    return unravel(d), beta


def trpo_step(
    loss_fn: Callable[[PyTree], Array],
    kl_fn: Callable[[PyTree], Array],
    params: PyTree,
    *,
    max_kl: float,
    cg_iters: int = 10,
    damping: float = 0.0,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
    loss_and_kl_fn: Callable[[PyTree], tuple[Array, Array]] | None = None,
    curvature_fn: Callable[[PyTree], PyTree] | None = None,
) -> tuple[PyTree, dict[str, Array]]:
    """One TRPO step: minimise ``loss_fn`` subject to ``kl_fn ≤ max_kl`` (ProMP App. C.2 Eq. 106–107).

    1. ``g = ∇loss(θ)``; ``d = (F + damping·I)⁻¹ g`` by conjugate gradient (``cg_iters``), with
       ``F v`` the exact Hessian-vector product of ``kl_fn`` at θ.
    2. ``β = sqrt(2δ / (dᵀ(F + damping·I)d + 1e−8))``, δ = ``max_kl``.
    3. For ``k = 0 … max_backtracks − 1`` try ``θ_k = θ − backtrack_ratio^k · β · d`` and accept the
       first with ``loss(θ_k) < loss(θ)``, ``kl(θ_k) ≤ δ`` and both finite (a NaN β rejects).
    4. If none is accepted, keep θ.

    Args:
        loss_fn: scalar loss of the parameters (a closure over the data).
        kl_fn: mean ``KL(π_old ‖ π_params)`` from the fixed old (sampling) policy: 0 with zero
            gradient at ``params``. Its Hessian at ``params`` is F (unless ``curvature_fn``);
            when ``loss_and_kl_fn`` is given, the line search checks that function's KL, so
            ``kl_fn`` may estimate the same KL more cheaply (e.g. on a subsample).
        params: current parameters, any pytree of float arrays.
        max_kl: trust-region size δ.
        cg_iters: conjugate-gradient iterations (original code: 10).
        damping: ``λ`` added to the KL Hessian, ``F + λI`` (original code: ``reg_coeff = 0``).
        backtrack_ratio: step shrink factor per backtrack (original code: 0.8).
        max_backtracks: number of candidates tried (original code: 15; defaults as in
            docs/algorithms.md, "Outer optimizers").
        loss_and_kl_fn: optional ``params → (loss, kl)`` computing both from one forward pass
            (for a meta-objective, one rebuild of the adaptation per line-search candidate
            instead of two); defaults to calling ``loss_fn`` and ``kl_fn``.
        curvature_fn: optional ``v ↦ F v`` at ``params`` (pytrees like ``params``) replacing the
            Hessian-vector product of ``kl_fn`` (e.g. the Gauss-Newton form of a KL through a
            differentiable map, :meth:`adaptrl.meta.learner.MetaLearner.outer_kl_curvature`).

    Returns:
        ``(new_params, info)``; ``info`` holds scalars ``LossBefore``, ``LossAfter``,
        ``MeanKLBefore`` (KL at the old parameters), ``MeanKL`` (at the returned parameters),
        ``dLoss = LossBefore − LossAfter``, ``NumBacktracks`` (index of the accepted candidate, or
        ``max_backtracks`` if rejected) and ``Accepted`` (1 or 0).
    """
    theta, unravel = ravel_pytree(params)

    def loss_flat(th: Array) -> Array:
        return loss_fn(unravel(th))

    def kl_flat(th: Array) -> Array:
        return kl_fn(unravel(th))

    def loss_and_kl_flat(th: Array) -> tuple[Array, Array]:
        if loss_and_kl_fn is None:
            return loss_flat(th), kl_flat(th)
        return loss_and_kl_fn(unravel(th))

    curvature_flat = None
    if curvature_fn is not None:
        def curvature_flat(v: Array) -> Array:
            return ravel_pytree(curvature_fn(unravel(v)))[0]

    loss_before, kl_before, d, beta = _flat_direction(
        loss_and_kl_flat, kl_flat, theta, max_kl=max_kl, cg_iters=cg_iters, damping=damping,
        curvature_flat=curvature_flat,
    )

    State = tuple[Array, Array, Array, Array, Array]  # k, accepted, theta, loss, kl

    def cond(state: State) -> Array:
        k, accepted, _, _, _ = state
        return (k < max_backtracks) & ~accepted & jnp.isfinite(beta)

    def body(state: State) -> State:
        k, _, _, _, _ = state
        candidate = theta - (backtrack_ratio**k * beta) * d
        loss, kl = loss_and_kl_flat(candidate)
        ok = jnp.isfinite(loss) & jnp.isfinite(kl) & (loss < loss_before) & (kl <= max_kl)
        return jnp.where(ok, k, k + 1), ok, candidate, loss, kl

    init: State = (
        jnp.asarray(0, jnp.int32),
        jnp.asarray(False),
        theta,
        jnp.asarray(loss_before),
        jnp.asarray(kl_before),
    )
    index, accepted, cand, cand_loss, cand_kl = jax.lax.while_loop(cond, body, init)
    new_theta = jnp.where(accepted, cand, theta)
    loss_after = jnp.where(accepted, cand_loss, loss_before)
    kl_after = jnp.where(accepted, cand_kl, kl_before)
    info = {
        "LossBefore": loss_before,
        "LossAfter": loss_after,
        "MeanKLBefore": kl_before,
        "MeanKL": kl_after,
        "dLoss": loss_before - loss_after,
        "NumBacktracks": jnp.where(accepted, index, max_backtracks),
        "Accepted": accepted.astype(jnp.int32),
    }
    return unravel(new_theta), info
