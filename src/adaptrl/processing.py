"""Sample processing for one task's batch: returns, baselines, GAE, normalisation.

Reference: ``MetaSampleProcessor`` and ``baselines/linear_baseline.py`` of the original ProMP code
(documented in docs/algorithms.md, "Sample processing"; GAE with λ = 1 and a linear baseline are
also the setting of Clavera's thesis (2020) App. B.3). Every function works on **one task's**
padded batch, arrays ``[R, T]`` (rollouts × time) or ``[R, T, obs]``, with ``mask`` 1.0 on real
steps and 0.0 on padding after termination (a prefix of ones per rollout, as
:class:`adaptrl.sampling.Trajectories` makes).
Callers ``jax.vmap`` over the task axis; :func:`standardize_rewards_across_tasks` is the one
function that takes all tasks ``[M, R, T]`` at once.

All functions are pure, ``jit``-compatible (no Python branching on traced values) and NaN-safe on
padding: whatever sits in padded entries (garbage, NaN, inf) has no effect on any output, and every
``[R, T]`` output is exactly 0 on padded steps.

Per-task processing of the original ProMP code, with λ = 1 in all its scripts::

    returns = discounted_returns(rewards, mask, gamma)
    values = linear_feature_baseline(observations, returns, mask)
    advantages = normalize_advantages(gae(rewards, values, mask, gamma=gamma, lam=lam), mask)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from adaptrl.registry import Registry

Array = jax.Array
Baseline = Callable[[Array, Array, Array], Array]

_HIGHEST = jax.lax.Precision.HIGHEST  # full float32 matmuls (no TF32/bf16 passes on GPUs)
_RIDGE_ATTEMPTS = 5
_RIDGE_GROWTH = 10.0


def _real(x: Array, mask: Array) -> Array:
    """``x`` on real steps, exactly 0 on padding (``where``, so NaN/inf padding cannot leak)."""
    return jnp.where(mask > 0, x, jnp.zeros_like(x))


def _reverse_time_scan(step: Callable[[Array, tuple[Array, ...]], Array], xs: tuple[Array, ...]) -> Array:
    """Backward recursion over the last (time) axis of ``[R, T]`` arrays.

    ``step(next, (x_t, ...)) -> out_t`` with ``next`` = ``out_{t+1}`` (0 after the last step).
    """

    def body(carry: Array, x: tuple[Array, ...]) -> tuple[Array, Array]:
        out = step(carry, x)
        return out, out

    xs_t = tuple(jnp.swapaxes(x, 0, 1) for x in xs)  # time-major for scan
    init = jnp.zeros_like(xs_t[0][0])
    _, out = jax.lax.scan(body, init, xs_t, reverse=True)
    return jnp.swapaxes(out, 0, 1)


def discounted_returns(rewards: Array, mask: Array, gamma: float) -> Array:
    """Discounted reward-to-go ``R_t = Σ_{k≥t} γ^{k−t} r_k`` over each rollout's real steps.

    Computed by the exact backward recursion ``R_t = mask_t · (r_t + γ R_{t+1})`` (a reverse
    ``lax.scan``), the original ProMP code's ``discount_cumsum``. Standard discounting: the
    return at step t is discounted from t, not from the start of the episode.

    This is *not* the convention of :func:`adaptrl.estimators.reward_to_go`, which folds the
    discount into the rewards (r_t := γ^t r_t, ProMP (Rothfuss et al., 2019) §3) and so
    discounts from the episode start: ``Ψ_t = Σ_{k≥t} γ^k r_k = γ^t R_t``. For a mask that is a
    prefix of ones, ``reward_to_go(r, mask, gamma=γ) = γ^t · discounted_returns(r, mask, γ)
    = discounted_returns(γ^t r, mask, 1)``; with ``gamma = 1`` (rewards already discount-folded,
    such as the DiCE rewards) the two functions agree (tests/test_processing.py checks all three).

    Args:
        rewards: ``[R, T]`` rewards; padded entries are ignored.
        mask: ``[R, T]``, 1.0 on real steps.
        gamma: discount factor γ.

    Returns:
        ``[R, T]`` returns, 0 on padding.
    """
    rewards = _real(rewards, mask)

    def step(next_return: Array, x: tuple[Array, Array]) -> Array:
        r, m = x
        return _real(r + gamma * next_return, m)

    return _reverse_time_scan(step, (rewards, mask))


def _time_features(num_steps: int, dtype: jnp.dtype) -> Array:
    """``[T, 1]`` column ``t = step_index / 100`` (the original ProMP code's baselines)."""
    return (jnp.arange(num_steps, dtype=dtype) / 100.0)[:, None]


def linear_feature_baseline_features(observations: Array, mask: Array) -> Array:
    """Features of the original ``LinearFeatureBaseline`` (docs/algorithms.md): ``[o, o², t, t², t³, 1]``.

    ``o = clip(obs, −10, 10)`` element-wise (the squares are of the clipped observation) and
    ``t = step_index / 100``. Padded steps' features are zeroed, so they drop out of the fit.

    Args:
        observations: ``[R, T, obs]``.
        mask: ``[R, T]``, 1.0 on real steps.

    Returns:
        ``[R, T, 2·obs + 4]`` features.
    """
    o = jnp.clip(observations, -10.0, 10.0)
    r, t_len = mask.shape
    t = jnp.broadcast_to(_time_features(t_len, o.dtype), (r, t_len, 1))
    feats = jnp.concatenate([o, o**2, t, t**2, t**3, jnp.ones_like(t)], axis=-1)
    return _real(feats, mask[..., None])


def linear_time_baseline_features(observations: Array, mask: Array) -> Array:
    """Features of the original ``LinearTimeBaseline``: ``[t, t², t³, 1]``, ``t = step_index/100``.

    Only the shape of ``observations`` (``[R, T, ...]``) is used. Padded steps' features are 0.

    Returns:
        ``[R, T, 4]`` features.
    """
    r, t_len = mask.shape
    t = jnp.broadcast_to(_time_features(t_len, jnp.result_type(observations.dtype, float)), (r, t_len, 1))
    feats = jnp.concatenate([t, t**2, t**3, jnp.ones_like(t)], axis=-1)
    return _real(feats, mask[..., None])


def damped_solve(gram: Array, rhs: Array, damping: Array | float) -> Array:
    """Solve ``(G + c·I) w = b`` for the symmetric PSD Gram matrix ``G`` of a ridge fit.

    The system is Jacobi-equilibrated before the LU solve (``jnp.linalg.solve``): with
    ``D = diag(G + c·I)^{-1/2}`` it solves ``(D (G + c·I) D) y = D b`` and returns ``w = D y``,
    mathematically the same solution, but the features' very different scales (``o²`` up to 100
    next to ``t³`` and the bias) no longer cost float32 accuracy. Deviation from the original code
    (docs/algorithms.md, deviation 5), which used ``np.linalg.lstsq`` in float64: a numerically
    singular damped system can come back with NaN/inf here, which :func:`ridge_fit` treats like
    the original treats NaN (retry with ten times the damping).
    """
    eye = jnp.eye(gram.shape[-1], dtype=gram.dtype)
    system = gram + damping * eye
    scale = jax.lax.rsqrt(jnp.diagonal(system))
    y = jnp.linalg.solve(system * scale[:, None] * scale[None, :], rhs * scale)
    return y * scale


def ridge_fit(
    features: Array,
    targets: Array,
    mask: Array,
    *,
    reg_coeff: float = 1e-5,
    attempts: int = _RIDGE_ATTEMPTS,
    solve: Callable[[Array, Array, Array], Array] = damped_solve,
) -> Array:
    """Damped least squares ``(XᵀX + c·I) w = Xᵀy`` over the real steps, with the original retry.

    ``c`` starts at ``reg_coeff`` and is multiplied by 10 for each further attempt (``attempts``
    in all, 5 in the original ``LinearFeatureBaseline.fit``) while the solution has NaN/inf
    entries (the original checks NaN only). The attempts run lazily in a ``lax.while_loop``; the
    first finite solution is returned. If none is, the weights are zeros (a zero baseline):
    deviation from the original code (docs/algorithms.md, deviation 5), which kept its last
    attempt's NaN coefficients and so poisoned every advantage of the task.

    Args:
        features: ``[R, T, F]`` (padded rows are ignored).
        targets: ``[R, T]`` regression targets (padded entries are ignored).
        mask: ``[R, T]``, 1.0 on real steps.
        reg_coeff: initial damping ``c``.
        attempts: number of damping values tried.
        solve: ``solve(G, b, c)`` for ``(G + c·I) w = b`` (default :func:`damped_solve`).

    Returns:
        ``[F]`` weights.
    """
    x = _real(features, mask[..., None]).reshape(-1, features.shape[-1])
    y = _real(targets, mask).reshape(-1)
    gram = jnp.einsum("nf,ng->fg", x, x, precision=_HIGHEST)
    rhs = jnp.einsum("nf,n->f", x, y, precision=_HIGHEST)

    def cond(state: tuple[Array, Array]) -> Array:
        k, w = state
        return (k < attempts) & ~jnp.all(jnp.isfinite(w))

    def body(state: tuple[Array, Array]) -> tuple[Array, Array]:
        k, _ = state
        c = jnp.asarray(reg_coeff, gram.dtype) * jnp.asarray(_RIDGE_GROWTH, gram.dtype) ** k
        return k + 1, solve(gram, rhs, c)

    init = (jnp.asarray(0, jnp.int32), jnp.full(rhs.shape, jnp.nan, rhs.dtype))
    _, w = jax.lax.while_loop(cond, body, init)
    return jnp.where(jnp.all(jnp.isfinite(w)), w, jnp.zeros_like(w))


def _predict(weights: Array, features: Array, mask: Array) -> Array:
    return _real(jnp.einsum("rtf,f->rt", features, weights, precision=_HIGHEST), mask)


def linear_feature_baseline(
    observations: Array, returns: Array, mask: Array, *, reg_coeff: float = 1e-5
) -> Array:
    """Fit the ``LinearFeatureBaseline`` on this batch and predict on the same batch, ``[R, T]``.

    ``X`` = :func:`linear_feature_baseline_features`, weights by :func:`ridge_fit`. The original
    ProMP code refits the baseline per task at every sampling step on that step's data, then
    predicts on the same paths (docs/algorithms.md, "Sample processing").
    """
    feats = linear_feature_baseline_features(observations, mask)
    return _predict(ridge_fit(feats, returns, mask, reg_coeff=reg_coeff), feats, mask)


def linear_time_baseline(
    observations: Array, targets: Array, mask: Array, *, reg_coeff: float = 1e-5
) -> Array:
    """The original ``LinearTimeBaseline``: fit ``[t, t², t³, 1]`` to ``targets`` and predict, ``[R, T]``.

    Used by the DiCE sample processing (docs/algorithms.md), whose targets are ``γ^t r_t``. Same
    damped fit and retry as :func:`linear_feature_baseline`; ``observations`` only supply the
    batch shape.
    """
    feats = linear_time_baseline_features(observations, mask)
    return _predict(ridge_fit(feats, targets, mask, reg_coeff=reg_coeff), feats, mask)


def zero_baseline(observations: Array, returns: Array, mask: Array) -> Array:
    """The original ``ZeroBaseline``: ``b = 0``, ``[R, T]``."""
    del observations
    return jnp.zeros(mask.shape, jnp.result_type(returns.dtype, float))


BASELINES: Registry[Baseline] = Registry("baseline")
"""Baselines by config name; each is ``baseline(observations, targets, mask) -> [R, T]``."""
BASELINES.register("linear", linear_feature_baseline, "ridge fit on the original's state-time features")
BASELINES.register("linear_time", linear_time_baseline, "ridge fit on time features only")
BASELINES.register("zero", zero_baseline, "b = 0")


def gae(rewards: Array, values: Array, mask: Array, *, gamma: float, lam: float) -> Array:
    """Generalised advantage estimation over each rollout's real steps, as the original ProMP code.

    ``δ_t = r_t + γ·v_{t+1}·mask_{t+1} − v_t`` and ``A_t = Σ_k (γλ)^k δ_{t+k}`` (over real steps),
    by the backward recursion ``A_t = mask_t · (δ_t + γλ A_{t+1})``.

    The value after a rollout's last real step is taken as 0, whether the episode terminated or
    was truncated at the horizon: the original code appends ``b_T = 0`` to every path
    (docs/algorithms.md, "Sample processing"). With ``λ = 1`` the sum telescopes to
    ``A_t = R_t − v_t`` (tests/test_processing.py).

    Args:
        rewards: ``[R, T]`` rewards.
        values: ``[R, T]`` baseline values ``v_t``.
        mask: ``[R, T]``, 1.0 on real steps.
        gamma: discount factor γ.
        lam: GAE λ.

    Returns:
        ``[R, T]`` advantages, 0 on padding.
    """
    rewards = _real(rewards, mask)
    values = _real(values, mask)
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    deltas = _real(rewards + gamma * next_values - values, mask)

    def step(next_adv: Array, x: tuple[Array, Array]) -> Array:
        delta, m = x
        return _real(delta + gamma * lam * next_adv, m)

    return _reverse_time_scan(step, (deltas, mask))


def _masked_mean_std(x: Array, mask: Array) -> tuple[Array, Array]:
    """Mean and population standard deviation of ``x`` over the entries with ``mask > 0``."""
    count = jnp.maximum(jnp.sum(mask > 0), 1).astype(jnp.result_type(x.dtype, float))
    mean = jnp.sum(_real(x, mask)) / count
    var = jnp.sum(_real((x - mean) ** 2, mask)) / count
    return mean, jnp.sqrt(var)


def normalize_advantages(advantages: Array, mask: Array, eps: float = 1e-8) -> Array:
    """``A ← (A − mean)/(std + eps)`` over the real steps of one task's batch, 0 on padding.

    Population std (``ddof = 0``, numpy's default), as the original code's ``normalize_adv``, which
    normalises **per task** (docs/algorithms.md, "Sample processing").
    """
    mean, std = _masked_mean_std(advantages, mask)
    return _real((advantages - mean) / (std + eps), mask)


def standardize_rewards_across_tasks(rewards: Array, mask: Array) -> Array:
    """E-MAML ``adj_avg_rewards``: ``(r − μ)/(σ + 1e−8)`` over **all tasks** of a sampling step.

    μ and σ (population std) are taken over every real step of every task, as in the original
    ProMP code (docs/algorithms.md, "Sample processing"). The original DiCE processor computed
    them over the padded arrays; pass ``mask = 1`` to get that.

    Args:
        rewards: ``[M, R, T]`` rewards of all tasks.
        mask: ``[M, R, T]``, 1.0 on real steps.

    Returns:
        ``[M, R, T]`` standardised rewards, 0 on padding.
    """
    mean, std = _masked_mean_std(rewards, mask)
    return _real((rewards - mean) / (std + 1e-8), mask)
