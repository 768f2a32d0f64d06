"""Meta-gradient estimator surrogates: pure JAX objectives whose derivatives are the estimators.

Every surrogate here is a scalar whose first and second derivatives with respect to whatever
parameters produced ``logp`` *are* the estimator (ProMP §5 and App. B; summary table in
docs/algorithms.md, "Inner estimators"). They are plain functions of arrays, so they work for any
differentiable ``logp`` (tabular softmax, Gaussian MLP), inside ``jit``/``vmap``/``grad``, and in a
differentiable inner loop (ProMP §5; TMAML Alg. 2).

Papers cited: ProMP = Rothfuss et al., "ProMP: Proximal Meta-Policy Search", ICLR 2019 (with its
appendix); TMAML = Liu et al., "Taming MAML: Efficient Unbiased Meta-Reinforcement Learning",
ICML 2019 ("TMAML App." is its supplement); Clavera thesis = I. Clavera, "Overcoming Model-Bias in
Reinforcement Learning", UC Berkeley 2020.

Conventions:

* Arrays are ``[N, T]``: N trajectories × T time steps (any leading shape ``[..., T]`` works; the
  "mean over trajectories" is then the mean over all leading entries).
* ``mask`` is 1.0 on real steps and 0.0 on padding. Every input is masked inside: padded entries
  are replaced by exactly 0 (``jnp.where``), so arbitrary — even non-finite — padding changes
  neither values nor gradients.
* Discounting is folded into the reward, r_t := γ^t r_t with the absolute time index t (ProMP §3),
  so the reward-to-go is Ψ_t = Σ_{t'≥t} γ^{t'} r_{t'} (:func:`reward_to_go`; compare
  :func:`adaptrl.processing.discounted_returns`, which discounts from t).
* ⊥ is ``jax.lax.stop_gradient`` (it blocks every derivative order); □(x) = exp(x − ⊥x) is the
  MagicBox (:func:`magic_box`; ProMP App. B.3.1 Eq. 66–68).
* A surrogate's value is (1/N)·Σ_n Σ_t (per-step surrogate): the mean over trajectories of the
  per-trajectory sum. Multiply by :func:`per_step_scale` to get a mean over real time steps
  instead (the original code's loss normalisation). The exception is :func:`emaml_pre_term`,
  which sums over the N pre-update trajectories (ProMP App. A.2 Eq. 27, 35).
* Shapes are checked when a function is called or traced (static shapes, no cost under ``jit``):
  the per-step arrays of one call (``logp``, ``rewards``, ``mask``, ``baseline``, ``advantages``,
  ``logp_old``) must have one shape — no broadcasting, so ``logp[0]`` against an ``[N, T]`` mask
  raises a :class:`~adaptrl.errors.ConfigError` naming the argument, its shape and the expected one.
* Baselines ``baseline`` are ``[N, T]`` arrays in the units of Ψ_t (an estimate of
  Σ_{t'≥t} γ^{t'} r_{t'} from s_t, i.e. *including* the γ^t factor) and are treated as constants
  (⊥). They must not depend on a_t (TMAML §4.2, Thm. 1).

Hessian content (ProMP §5 Eq. 6, App. B.2 Eq. 43–65), with g_t = ∇log π(a_t|s_t),
l_t = log π(a_t|s_t):

* H1 = E[Σ_t g_t g_tᵀ Ψ_t], H2 = E[Σ_t ∇²l_t Ψ_t], H12 = E[Σ_t Σ_{t'>t} g_t g_{t'}ᵀ Ψ_{t'}],
  and ∇²J = H1 + H2 + H12 + H12ᵀ.

* :func:`pgt` — first order unbiased; E[∇²] = H2 (with a state baseline b:
  H2 + Σ_t E[b(s_t) F(s_t)]).
* :func:`dice` — first order unbiased; E[∇²] = H1 + H2 + H12 + H12ᵀ = ∇²J (also with a baseline).
* :func:`lvc` — first order unbiased; E[∇²] = H1 + H2 (also with a state baseline).

where F(s) = E_{a∼π(·|s)}[g gᵀ] is the Fisher matrix at s (E_a[∇²log π] = −F). Without a
baseline these are ProMP §5 Eq. 8, 10 and App. B.3; tests/test_estimators.py checks every case,
with and without a baseline, by exact enumeration.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from adaptrl.errors import ConfigError

__all__ = [
    "clipped_ratio",
    "dice",
    "dice_baseline_term",
    "discount_weights",
    "emaml_pre_term",
    "likelihood_ratio",
    "lvc",
    "lvc_from_advantages",
    "magic_box",
    "per_step_scale",
    "pgt",
    "pgt_from_advantages",
    "reward_to_go",
    "tmaml_cv",
    "tmaml_cv_paper",
]

_sg = jax.lax.stop_gradient


def _require_shape(function: str, name: str, value: ArrayLike, expected: tuple[int, ...], why: str) -> None:
    """Raise a :class:`ConfigError` unless ``value`` has shape ``expected`` (``why``: whose it is)."""
    shape = np.shape(value)
    if shape != expected:
        raise ConfigError(f"{function}: {name} has shape {shape}, expected {expected} ({why}); per-step "
                          "arrays must have one shape, none is broadcast.")


def _check_shapes(function: str, reference: str, arrays: dict[str, ArrayLike | None]) -> tuple[int, ...]:
    """Raise a :class:`ConfigError` unless the given arrays of ``arrays`` (None: not given) have one
    shape, with a time axis; returns it. The expected shape is the one most of them have (on a
    tie, ``reference``'s, then the first's), so the message names the odd one out.

    Shapes are static, so under ``jit`` this runs once, at trace time, and costs nothing after."""
    shapes = {name: np.shape(value) for name, value in arrays.items() if value is not None}
    order = [reference, *(name for name in shapes if name != reference)]
    votes = [list(shapes.values()).count(shapes[name]) for name in order]
    expected = shapes[order[votes.index(max(votes))]]
    for name in order:
        if shapes[name] != expected:
            holders = [other for other in order if shapes[other] == expected]
            holders = " and ".join([", ".join(holders[:-1]), holders[-1]] if len(holders) > 1 else holders)
            raise ConfigError(f"{function}: {name} has shape {shapes[name]}, expected {expected} (the "
                              f"shape of {holders}); per-step arrays must have one shape, none is "
                              "broadcast.")
    if not expected:
        raise ConfigError(f"{function}: {reference} has shape (), expected [N, T] (or [..., T]) per-step "
                          "values.")
    return expected


def _check_baseline(function: str, logp_shape: tuple[int, ...], baseline: ArrayLike,
                    coordinate_logp: ArrayLike | None) -> None:
    """The baseline has ``logp``'s shape, or, in the action-dependent form, the shape
    ``[..., T, A]`` of ``coordinate_logp``, whose leading axes are ``logp``'s."""
    if coordinate_logp is None:
        _require_shape(function, "baseline", baseline, logp_shape, "the shape of logp")
        return
    coord_shape = np.shape(coordinate_logp)
    if coord_shape[:-1] != logp_shape:
        raise ConfigError(f"{function}: coordinate_logp has shape {coord_shape}, expected "
                          f"{logp_shape} + (A,): logp's shape, then one entry per action coordinate.")
    _require_shape(function, "baseline", baseline, coord_shape, "the shape of coordinate_logp")


def _masked(x: ArrayLike, mask: ArrayLike) -> Array:
    """``x · mask`` with padded entries (mask ≤ 0) set to exactly 0, even where ``x`` is inf/NaN.

    The cotangent reaching ``x`` on padded entries is exactly 0, so padding never contributes to
    any derivative."""
    x, mask = jnp.asarray(x), jnp.asarray(mask)
    return jnp.where(mask > 0, x * mask, jnp.zeros((), jnp.result_type(x, mask)))


def _mean_of_sums(per_step: Array) -> Array:
    """(1/N)·Σ_n Σ_t per_step[n, t]: sum over time (last axis), mean over the trajectories."""
    return jnp.mean(jnp.sum(per_step, axis=-1))


def _advantages(rewards: ArrayLike, mask: ArrayLike, gamma: float | ArrayLike,
                baseline: ArrayLike | None) -> Array:
    """Ψ_t − b_t (masked), the weight of the score-function terms of :func:`pgt` and :func:`lvc`."""
    psi = reward_to_go(rewards, mask, gamma=gamma)
    if baseline is None:
        return psi
    return psi - _masked(baseline, mask)


def discount_weights(T: int, gamma: float | ArrayLike, dtype: jnp.dtype | None = None) -> Array:
    """The folded-discount factors ``[γ^0, γ^1, …, γ^{T−1}]`` (r_t := γ^t r_t, ProMP §3).

    ``0^0 = 1``, so ``gamma = 0`` keeps only the first reward."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return jnp.power(jnp.asarray(gamma, dtype), jnp.arange(T, dtype=dtype))


def reward_to_go(rewards: ArrayLike, mask: ArrayLike, *, gamma: float | ArrayLike = 1.0) -> Array:
    """Discount-folded reward-to-go Ψ_t = Σ_{t'=t}^{T−1} γ^{t'} r_{t'} mask_{t'}, shape ``[N, T]``.

    The factor is γ^{t'} with the *absolute* time index t' (ProMP §3, App. B.1 Eq. 41–42), not
    γ^{t'−t}: the discount is folded into the reward, so Ψ_0 is the discounted return R(τ) and
    Ψ_t is in the same units as every surrogate here. Padded steps contribute nothing (and Ψ_t
    is 0 on them); ``mask`` may have holes.

    This differs from :func:`adaptrl.processing.discounted_returns`, the standard return
    R_t = Σ_{t'≥t} γ^{t'−t} r_{t'} discounted from t (the sample processing's convention): for a
    mask that is a prefix of ones per row, ``reward_to_go(r, mask, gamma=γ) = γ^t ·
    discounted_returns(r, mask, γ)``, and with γ = 1 (rewards already discount-folded, e.g. the
    DiCE rewards γ^t r_t − b(t)) the two coincide (tests/test_processing.py).
    """
    _check_shapes("reward_to_go", "rewards", {"rewards": rewards, "mask": mask})
    rewards = jnp.asarray(rewards)
    dtype = jnp.result_type(rewards, float)
    r = _masked(rewards, mask) * discount_weights(rewards.shape[-1], gamma, dtype)
    return jnp.flip(jnp.cumsum(jnp.flip(r, axis=-1), axis=-1), axis=-1)


def magic_box(x: ArrayLike) -> Array:
    """The MagicBox □(x) = exp(x − ⊥x) (ProMP App. B.3.1 Eq. 66–68; TMAML Eq. 5).

    Value 1 at every point; ∇□(x) = □(x)∇x, so ∇□ = ∇x and ∇²□ = ∇x∇xᵀ + ∇²x when evaluated.
    With x = log π_θ it is the weight π_θ/⊥π_θ (value 1, gradient g)."""
    x = jnp.asarray(x)
    return jnp.exp(x - _sg(x))


def pgt_from_advantages(logp: ArrayLike, advantages: ArrayLike, mask: ArrayLike) -> Array:
    """Score-function surrogate on given advantages: (1/N)·Σ_n Σ_t l_t·⊥A_t·mask_t.

    The advantages are used as they are (already discounted/baselined/normalised by the caller)
    and are constants (⊥). With A_t = Ψ_t − b(s_t) this is :func:`pgt` (ProMP App. B.1
    Eq. 41–42, App. B.3). Expected Hessian: H2 only when A = Ψ (see :func:`pgt`).
    """
    _check_shapes("pgt_from_advantages", "logp", {"logp": logp, "advantages": advantages, "mask": mask})
    return _mean_of_sums(_masked(logp, mask) * _sg(_masked(advantages, mask)))


def lvc_from_advantages(logp: ArrayLike, advantages: ArrayLike, mask: ArrayLike) -> Array:
    """LVC surrogate on given advantages: (1/N)·Σ_n Σ_t □(l_t)·⊥A_t·mask_t, □(l) = π_θ/⊥π_θ.

    Advantages are constants (⊥). With A_t = Ψ_t − b(s_t) this is :func:`lvc` (ProMP §5
    Eq. 9–10, App. B.4 Eq. 82–101). Expected Hessian: H1 + H2 (see :func:`lvc`).
    """
    _check_shapes("lvc_from_advantages", "logp", {"logp": logp, "advantages": advantages, "mask": mask})
    return _mean_of_sums(magic_box(_masked(logp, mask)) * _sg(_masked(advantages, mask)))


def pgt(logp: ArrayLike, rewards: ArrayLike, mask: ArrayLike, *, gamma: float | ArrayLike = 1.0,
        baseline: ArrayLike | None = None) -> Array:
    """Policy-gradient-theorem surrogate ("MAML"): (1/N)·Σ_n Σ_t l_t·⊥(Ψ_t − b_t)·mask_t.

    Paper: ProMP App. B.1 Eq. 41 (forward form; equals the backward form
    Σ_t (Σ_{t'≤t} l_{t'}) r_t, Eq. 42) and App. B.3 (its Hessian); Clavera thesis Eq. 52.

    * Gradient: Σ_t g_t(Ψ_t − b_t) per sample; unbiased with or without a state baseline.
    * Per-sample Hessian: Σ_t ∇²l_t (Ψ_t − b_t).
    * Expected Hessian (ProMP App. B.3): **H2** without a baseline — H1 and H12 + H12ᵀ are dropped.
      With a state(-and-time) baseline b(s_t) the expected Hessian is no longer H2: since
      E_a[∇²log π] = −F(s) (F(s) = E_a[g gᵀ], the Fisher matrix at s),
      E[∇² pgt] = H2 − Σ_t E[b(s_t) E_a[∇²l_t]] = **H2 + Σ_t E[b(s_t) F(s_t)]**.
      The first order is unaffected.
    """
    _check_shapes("pgt", "logp", {"logp": logp, "rewards": rewards, "mask": mask, "baseline": baseline})
    return pgt_from_advantages(logp, _advantages(rewards, mask, gamma, baseline), mask)


def dice(logp: ArrayLike, rewards: ArrayLike, mask: ArrayLike, *, gamma: float | ArrayLike = 1.0,
         baseline: ArrayLike | None = None) -> Array:
    """DiCE surrogate: (1/N)·Σ_n Σ_t [□(Σ_{t'≤t} l_{t'})·r_t + (1 − □(l_t))·⊥b_t]·mask_t.

    r_t is discount-folded (γ^t r_t). Paper: ProMP §5 Eq. 7–8, App. B.3.1 Eq. 66–80; Clavera thesis
    Eq. 15–16; TMAML Eq. 5. The baseline term is the DiCE paper's baseline term (Foerster et al., 2018),
    which uses only the current step's □(l_t) (not the cumulative one).

    * Value: Σ_t r_t (the baseline term has value 0).
    * Gradient: Σ_t (Σ_{t'≤t} g_{t'}) r_t − Σ_t g_t b_t = Σ_t g_t (Ψ_t − b_t); unbiased.
    * Per-sample Hessian: Σ_t [(Σ_{t'≤t}g_{t'})(Σ_{t'≤t}g_{t'})ᵀ + Σ_{t'≤t}∇²l_{t'}] r_t
      − Σ_t (g_t g_tᵀ + ∇²l_t) b_t.
    * Expected Hessian (ProMP Eq. 8): **H1 + H2 + H12 + H12ᵀ = ∇²J**, with or without a state
      baseline — the baseline term's expected Hessian −Σ_t E[b(s_t) E_a[∇²π/π]] is 0.

    The cumulative log-probability is taken over masked ``logp`` (padding contributes 0).
    """
    _check_shapes("dice", "logp", {"logp": logp, "rewards": rewards, "mask": mask, "baseline": baseline})
    logp_m = _masked(logp, mask)
    rewards = jnp.asarray(rewards)
    r = _masked(rewards, mask) * discount_weights(rewards.shape[-1], gamma, jnp.result_type(rewards, float))
    per_step = magic_box(jnp.cumsum(logp_m, axis=-1)) * r
    if baseline is not None:
        per_step = per_step + _baseline_factor(logp_m, baseline, mask, None)
    return _mean_of_sums(_masked(per_step, mask))


def lvc(logp: ArrayLike, rewards: ArrayLike, mask: ArrayLike, *, gamma: float | ArrayLike = 1.0,
        baseline: ArrayLike | None = None) -> Array:
    """Low-variance curvature surrogate: (1/N)·Σ_n Σ_t □(l_t)·⊥(Ψ_t − b_t)·mask_t.

    □(l_t) = π_θ(a_t|s_t)/⊥π_θ(a_t|s_t). Paper: ProMP §5 Eq. 9–10, App. B.4 Eq. 82–101;
    Clavera thesis Eq. 17–18; ProMP workshop version Eq. 5; TMAML Eq. 6.

    * Gradient: Σ_t g_t(Ψ_t − b_t) per sample; unbiased.
    * Per-sample Hessian: Σ_t (g_t g_tᵀ + ∇²l_t)(Ψ_t − b_t) (the correct form, not the
      cross-index form Σ_t Σ_{t'≤t} g_{t'} g_tᵀ r_t printed in ProMP App. B.4 Eq. 97, 99;
      tests/test_estimators.py checks it per sample).
    * Expected Hessian (ProMP Eq. 10): **H1 + H2** (bias −(H12 + H12ᵀ)), also with a state
      baseline, since E_a[g gᵀ + ∇²l] = E_a[∇²π/π] = 0.
    """
    _check_shapes("lvc", "logp", {"logp": logp, "rewards": rewards, "mask": mask, "baseline": baseline})
    return lvc_from_advantages(logp, _advantages(rewards, mask, gamma, baseline), mask)


def likelihood_ratio(logp: ArrayLike, logp_old: ArrayLike, advantages: ArrayLike,
                     mask: ArrayLike) -> Array:
    """Importance-weighted surrogate J^LR: (1/N)·Σ_n Σ_t exp(l_t − ⊥l^old_t)·⊥A_t·mask_t.

    Paper: ProMP §6 Eq. 12 (ProMP's inner objective); Clavera thesis Eq. 20; ProMP workshop
    version Eq. 6. ``logp_old`` (the
    sampling policy π_θo) and ``advantages`` (A^{π_θo}) are constants. At θ = θ_o (``logp_old``
    equal to the value of ``logp``) its value, gradient and Hessian equal those of
    :func:`lvc_from_advantages` with the same A — expected Hessian H1 + H2 when A = Ψ − b(s) —
    and away from θ_o it accounts for the shift of the pre-update action distribution.
    """
    _check_shapes("likelihood_ratio", "logp",
                  {"logp": logp, "logp_old": logp_old, "advantages": advantages, "mask": mask})
    ratio = jnp.exp(_masked(logp, mask) - _sg(_masked(logp_old, mask)))
    return _mean_of_sums(ratio * _sg(_masked(advantages, mask)))


def clipped_ratio(logp: ArrayLike, logp_old: ArrayLike, advantages: ArrayLike, mask: ArrayLike, *,
                  clip_eps: float) -> Array:
    """PPO clipped surrogate J^CLIP (ProMP App. C.3 Eq. 109):
    (1/N)·Σ_n Σ_t min(ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t)·mask_t, ρ_t = exp(l_t − ⊥l^old_t).

    Paper: ProMP App. C.3 Eq. 109 (used as the outer objective of ProMP, §6 Eq. 13). ``logp_old`` and
    ``advantages`` are constants. The gradient is 0 on steps in the clipped region
    (ρ > 1 + ε with A > 0, or ρ < 1 − ε with A < 0). At θ = θ_o the value is Σ_t A_t and the
    gradient is the policy gradient Σ_t g_t A_t (first-order match, App. C.1 Eq. 104); its Hessian there
    is LVC's (H1 + H2 in expectation, as :func:`likelihood_ratio`). ``clip_eps = inf`` gives
    exactly :func:`likelihood_ratio`.
    """
    _check_shapes("clipped_ratio", "logp",
                  {"logp": logp, "logp_old": logp_old, "advantages": advantages, "mask": mask})
    ratio = jnp.exp(_masked(logp, mask) - _sg(_masked(logp_old, mask)))
    adv = _sg(_masked(advantages, mask))
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return _mean_of_sums(_masked(jnp.minimum(ratio * adv, clipped * adv), mask))


def emaml_pre_term(logp: ArrayLike, mask: ArrayLike, post_return: ArrayLike) -> Array:
    """E-MAML (formulation II) pre-update credit term:
    Σ_n Σ_t l^{(n)}_t·mask_t·⊥R̂' — a **sum** (not a mean) over the N pre-update trajectories.

    Paper: ProMP §3, App. A.2 Eq. 25–28 and Eq. 35 (no α; Eq. 3 and 37 print an extra α);
    Clavera thesis Eq. 11, 48, App. C.1.2. Formulation II's update θ' = U(θ, τ^{1:N}) depends on all N
    pre-update trajectories jointly, so ∇J^II = E[∇J_post + Σ_n ∇log π_θ(τ^{(n)})·R(τ')]: each of
    the N log-likelihoods gets the full post-update return. Add this term to the outer surrogate
    of a task whose inner step used :func:`pgt` (expected inner Hessian H2; ProMP App. A.2 Eq. 28).

    ``post_return`` R̂' is an estimate of the task's post-update return and is a constant (⊥).
    What to use is an implementation choice (the training loop's is in docs/algorithms.md,
    "E-MAML term"): typically the mean discounted return of the
    task's post-update batch, optionally minus a baseline; the tests use the exact post-update
    expected return. It is a scalar, or broadcastable against ``logp.shape[:-1]`` (e.g. one value
    per task, shape ``[tasks, 1]``, for ``[tasks, N, T]`` inputs). The value of this term is
    meaningless; its gradient is the estimator.
    """
    shape = _check_shapes("emaml_pre_term", "logp", {"logp": logp, "mask": mask})
    try:
        broadcast = np.broadcast_shapes(np.shape(post_return), shape[:-1])
    except ValueError:
        broadcast = None
    if broadcast != shape[:-1]:
        raise ConfigError(f"emaml_pre_term: post_return has shape {np.shape(post_return)}, expected a scalar "
                          f"or a shape that broadcasts to {shape[:-1]} (logp's shape without its time axis).")
    per_trajectory = jnp.sum(_masked(logp, mask), axis=-1)
    return jnp.sum(per_trajectory * _sg(jnp.asarray(post_return)))


def _baseline_factor(logp_m: Array, baseline: ArrayLike, mask: ArrayLike,
                     coordinate_logp: ArrayLike | None) -> Array:
    """c_t = [1 − □(l_t)]·⊥b_t, or Σ_i [1 − □(l^i_t)]·⊥b^i_t for an action-dependent baseline
    (one b^i per action coordinate, coordinate log-densities l^i_t with Σ_i l^i_t = l_t); [N, T]."""
    if coordinate_logp is None:
        return (1.0 - magic_box(logp_m)) * _sg(_masked(baseline, mask))
    coord = jnp.asarray(coordinate_logp)
    m = jnp.asarray(mask)[..., None]
    coord_m = _masked(coord, m)
    b = _sg(_masked(baseline, m))
    return jnp.sum((1.0 - magic_box(coord_m)) * b, axis=-1)


def dice_baseline_term(logp: ArrayLike, baseline: ArrayLike, mask: ArrayLike, *,
                       coordinate_logp: ArrayLike | None = None) -> Array:
    """The DiCE baseline term (1/N)·Σ_n Σ_t [1 − □(l_t)]·⊥b_t (value 0, gradient −Σ_t g_t b_t).

    With ``coordinate_logp`` ``[N, T, A]`` (log-densities of the A independent action coordinates)
    and ``baseline`` ``[N, T, A]`` it is the action-dependent form Σ_t Σ_i [1 − □(l^i_t)]·⊥b^i_t,
    gradient −Σ_t Σ_i g^i_t b^i_t with b^i = b^i(s_t, a_t^{−i}) (Wu et al., 2018; TMAML §4.2
    Eq. 11). Unbiased as long as b^i does not depend on a^i_t (TMAML Thm. 1;
    tests/test_control_variates.py has a negative control).
    """
    shape = _check_shapes("dice_baseline_term", "logp", {"logp": logp, "mask": mask})
    _check_baseline("dice_baseline_term", shape, baseline, coordinate_logp)
    logp_m = _masked(logp, mask)
    return _mean_of_sums(_masked(_baseline_factor(logp_m, baseline, mask, coordinate_logp), mask))


def tmaml_cv(logp: ArrayLike, baseline: ArrayLike, mask: ArrayLike, *,
             coordinate_logp: ArrayLike | None = None) -> Array:
    """Corrected TMAML control variate (the default; derived here, see docs/algorithms.md,
    "TMAML control variates"):
    J^CV = −(1/N)·Σ_n Σ_t [1 − □(Σ_{t'<t} l_{t'})]·[1 − □(l_t)]·⊥b(s_t)·mask_t.

    Add it to :func:`dice` (with the same baseline in DiCE's baseline term) in the inner and the
    outer objective (TMAML Alg. 2). The product runs over the *earlier* steps t' < t
    only; that is what makes it a control variate (Mao et al.'s second-order baseline):

    * value 0 and gradient 0 on every sample, so the inner step and first-order outer gradients
      are unchanged;
    * per-sample Hessian −Σ_t b_t [G_t g_tᵀ + g_t G_tᵀ], G_t = Σ_{t'<t} g_{t'}, whose expectation
      is **0** for any b(s_t) that does not depend on a_t (E[g_t | s_t, past] = 0);
    * combined with DiCE every cross term g_{t'} g_tᵀ (t' < t) is weighted by Ψ_t − b(s_t).

    ``coordinate_logp``/``baseline`` ``[N, T, A]`` give the action-dependent form (per-coordinate
    [1 − □(l^i_t)]·b^i_t, TMAML Eq. 11), whose expected Hessian is also 0.
    Paper: TMAML §4.2 (corrects Eq. 7; see :func:`tmaml_cv_paper`), TMAML App. C–D. The expected
    Hessian 0 is checked by exact enumeration in tests/test_control_variates.py.
    """
    shape = _check_shapes("tmaml_cv", "logp", {"logp": logp, "mask": mask})
    _check_baseline("tmaml_cv", shape, baseline, coordinate_logp)
    logp_m = _masked(logp, mask)
    earlier = jnp.cumsum(logp_m, axis=-1) - logp_m  # Σ_{t'<t} l_{t'}
    factor = _baseline_factor(logp_m, baseline, mask, coordinate_logp)
    return -_mean_of_sums(_masked((1.0 - magic_box(earlier)) * factor, mask))


def tmaml_cv_paper(logp: ArrayLike, baseline: ArrayLike, mask: ArrayLike, *,
                   coordinate_logp: ArrayLike | None = None) -> Array:
    """TMAML §4.2 Eq. 7 exactly as printed:
    J^TMAML = (1/N)·Σ_n Σ_t [1 − Π_{t'=0}^{t} w_{t'}]·[1 − w_t]·⊥b(s_t)·mask_t, w = π/⊥π.

    Value 0 and gradient 0 per sample, but it is **not** a control variate (contrary to TMAML
    Thm. 1; docs/algorithms.md, tests/test_control_variates.py): the product
    includes t' = t, so the per-sample Hessian is Σ_t b_t [(G_t + g_t) g_tᵀ + g_t (G_t + g_t)ᵀ] and
    E[∇²J^TMAML] = 2·Σ_t E[b(s_t)·F(s_t)] ≠ 0 (F the Fisher matrix at s_t); and its sign adds +b
    where TMAML's Eq. 10 subtracts it. Shipped to reproduce the paper (``cv_formula=paper``).
    """
    shape = _check_shapes("tmaml_cv_paper", "logp", {"logp": logp, "mask": mask})
    _check_baseline("tmaml_cv_paper", shape, baseline, coordinate_logp)
    logp_m = _masked(logp, mask)
    upto = jnp.cumsum(logp_m, axis=-1)  # Σ_{t'≤t} l_{t'}
    factor = _baseline_factor(logp_m, baseline, mask, coordinate_logp)
    return _mean_of_sums(_masked((1.0 - magic_box(upto)) * factor, mask))


#: The control-variate surrogates by ``cv_formula``.
CONTROL_VARIATES: dict[str, Callable[..., Array]] = {"corrected": tmaml_cv, "paper": tmaml_cv_paper}


def per_step_scale(mask: ArrayLike) -> Array:
    """N / max(Σ mask, 1), a constant (⊥), for ``mask`` of shape ``[N, T]`` (N = all leading entries).

    Multiplying any surrogate above by it turns "mean over trajectories of per-trajectory sums"
    into "mean over real time steps", the loss normalisation of the original code. An all-padding
    mask gives N (no division by zero, no exception — safe inside ``jit``).
    """
    mask = jnp.asarray(mask)
    n = math.prod(mask.shape[:-1])
    total = jnp.maximum(jnp.sum(mask), 1.0)
    return _sg(jnp.asarray(n, total.dtype) / total)
