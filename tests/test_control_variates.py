"""TMAML control variates by exact enumeration: TMAML (Liu et al., 2019) §4.2 Eq. 7 as printed
(Thm. 1 fails for it), our corrected control variate (docs/algorithms.md, "TMAML control
variates"), their sums with DiCE, and the action-dependent form of TMAML Eq. 11.

The tabular MDP, its enumerated trajectories and the exact H1/H2/H12, Fisher matrices and state
marginals come from ``test_estimators`` (shared helpers, float64). Expectations are exact finite
sums Σ_τ P(τ)·x(τ).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl import estimators as est
from test_estimators import (
    MDP,
    Policy,
    along,
    baseline_table,
    close,
    enumerate_trajectories,
    exact_return,
    expected,
    far,
    fisher_baseline_term,
    log_pi,
    problem,
    traj_logp,
    traj_probs,
)

GAMMA = 0.9


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def value_baseline(pb, gamma: float) -> np.ndarray:
    """b_t(s) = E[Ψ_t | s_t = s] = γ^t V_t(s) as a [T, S] table (V by backward DP): the value
    function in the units of the folded reward-to-go."""
    pi = np.exp(np.asarray(log_pi(pb.policy, pb.theta)))
    mdp = pb.mdp
    v, out = np.zeros(mdp.r.shape[0]), []
    for t in reversed(range(mdp.T)):
        v = np.sum(pi * (mdp.r + gamma * mdp.P @ v), axis=-1)
        out.append(gamma**t * v)
    return np.stack(out[::-1])


def surrogate_derivatives(pb, fn, b):
    """Per trajectory: value [K], gradient [K, P], Hessian [K, P, P] of ``fn(logp, rewards, b)``."""
    trajs = pb.trajs

    def single(th, s, a, r, bb):
        logp = traj_logp(pb.policy, th, s, a)[None]
        return fn(logp, r[None], bb[None], jnp.ones((1, s.shape[0])))

    def derivs(s, a, r, bb):
        return (single(pb.theta, s, a, r, bb), jax.grad(single)(pb.theta, s, a, r, bb),
                jax.hessian(single)(pb.theta, s, a, r, bb))

    out = jax.jit(jax.vmap(derivs))(trajs.states, trajs.actions, trajs.rewards, jnp.asarray(b))
    return tuple(np.asarray(x) for x in out)


def hessian_variance(hessians: np.ndarray, probs: np.ndarray) -> float:
    """E‖H − E H‖²_F: the total variance of a per-sample Hessian estimate (N = 1)."""
    mean = expected(hessians, probs)
    return float(probs @ np.sum((hessians - mean) ** 2, axis=(1, 2)))


def dice_with(b_weight: float, cv=None):
    """DiCE (+ its baseline term with weight ``b_weight``) (+ a control-variate surrogate)."""
    def fn(logp, r, b, mask):
        value = est.dice(logp, r, mask, gamma=GAMMA)
        if b_weight:
            value = value + b_weight * est.dice_baseline_term(logp, b, mask)
        if cv is not None:
            value = value + cv(logp, b, mask)
        return value
    return fn


@pytest.mark.parametrize(("kind", "baseline"), [("tabular", "state"), ("tabular", "time_state"),
                                                ("mlp", "time_state")])
def test_control_variate_values_gradients_and_expected_hessians(kind, baseline):
    """Per sample: value and gradient of both surrogates are 0 on every sample.
    In expectation: E[∇² tmaml_cv] = 0 for any state(-time) baseline (the corrected form);
    E[∇² tmaml_cv_paper] = 2·Σ_t E[b(s_t)·F(s_t)] ≠ 0 (TMAML Eq. 7 as printed, contrary to
    its Thm. 1)."""
    pb = problem(kind)
    table = baseline_table(baseline, pb.mdp)
    b = along(table, pb.trajs.states)
    ex = pb.exact(pb.theta, GAMMA)
    corrected = surrogate_derivatives(pb, lambda lp, r, bb, m: est.tmaml_cv(lp, bb, m), b)
    printed = surrogate_derivatives(pb, lambda lp, r, bb, m: est.tmaml_cv_paper(lp, bb, m), b)
    for value, grad, _ in (corrected, printed):
        close(value, 0.0)
        close(grad, 0.0)
    close(expected(corrected[2], ex.probs), 0.0)
    bias = 2.0 * fisher_baseline_term(ex, table)
    close(expected(printed[2], ex.probs), bias)
    far(bias, 0.0)
    # Per sample the corrected Hessian is −Σ_t b_t [G_t g_tᵀ + g_t G_tᵀ], G_t = Σ_{t'<t} g_{t'}.
    G = np.cumsum(ex.g, axis=1) - ex.g
    per_sample = -np.einsum("kt,kti,ktj->kij", b, G, ex.g)
    close(corrected[2], per_sample + np.swapaxes(per_sample, 1, 2))


def test_dice_plus_cv_is_unbiased_and_lowers_hessian_variance():
    """DiCE with the control variates, b = V^π (exact, γ^t V_t(s)):

    * DiCE + baseline term + corrected CV: E[∇] = ∇J and E[∇²] = ∇²J (unbiased);
    * DiCE + Eq. 7 as printed: E[∇²] = ∇²J + 2ΣE[bF] (biased);
    * Hessian variance: LVC < DiCE + CV < DiCE (the claim of TMAML Thm 2 holds for the corrected
      form), and the printed form has a higher variance than DiCE (the values on this MDP are in
      docs/reproductions.md, "Estimator variance on the tabular MDP").
    """
    pb = problem("tabular")
    table = value_baseline(pb, GAMMA)
    b = along(table, pb.trajs.states)
    ex = pb.exact(pb.theta, GAMMA)
    # The DP baseline is the exact conditional expectation of Ψ_t given s_t.
    psi = np.stack([sum(GAMMA**u * pb.trajs.rewards[:, u] for u in range(t, pb.mdp.T))
                    for t in range(pb.mdp.T)], axis=-1)
    for t in range(pb.mdp.T):
        for s in range(pb.mdp.r.shape[0]):
            sel = pb.trajs.states[:, t] == s
            close(ex.probs[sel] @ psi[sel, t] / ex.probs[sel].sum(), table[t, s])

    plain = surrogate_derivatives(pb, dice_with(0.0), b)
    with_b = surrogate_derivatives(pb, dice_with(1.0), b)
    cv = surrogate_derivatives(pb, dice_with(1.0, est.tmaml_cv), b)
    cv_paper = surrogate_derivatives(pb, dice_with(1.0, est.tmaml_cv_paper), b)
    lvc = surrogate_derivatives(pb, lambda lp, r, bb, m: est.lvc(lp, r, m, gamma=GAMMA, baseline=bb), b)
    for out in (plain, with_b, cv, cv_paper):
        close(expected(out[1], ex.probs), ex.gradient)
    for out in (plain, with_b, cv):
        close(expected(out[2], ex.probs), ex.hessian)
    close(expected(cv_paper[2], ex.probs), ex.hessian + 2.0 * fisher_baseline_term(ex, table))

    var = {name: hessian_variance(out[2], ex.probs)
           for name, out in (("dice", plain), ("dice_b", with_b), ("cv", cv), ("cv_paper", cv_paper),
                             ("lvc", lvc))}
    assert var["lvc"] < var["cv"] < var["dice_b"] <= var["dice"] < var["cv_paper"], var


def test_action_dependent_control_variate():
    """TMAML Eq. 11 and Thm. 1 on an MDP whose action is two independent binary coordinates
    (a = 2·a¹ + a², π(a|s) = π¹(a¹|s)·π²(a²|s)):

    * a per-coordinate baseline b^i(s_t, a_t^{−i}) keeps DiCE's gradient unbiased and the
      action-dependent corrected CV has E[∇²] = 0, so DiCE + both has E[∇²] = ∇²J;
    * negative control: a baseline that depends on a_t itself biases the gradient (TMAML's
      control variates may depend on the state and task only, §4.2).
    """
    S, T = 2, 3
    rng = np.random.default_rng(5)
    mdp = MDP(p0=rng.dirichlet(np.ones(S)), P=rng.dirichlet(np.ones(S), size=(S, 4)),
              r=rng.normal(size=(S, 4)), T=T)
    trajs = enumerate_trajectories(mdp)
    bits = np.array([[a // 2, a % 2] for a in range(4)])  # a → (a¹, a²)
    jbits = jnp.asarray(bits)

    def coord_logits(th):
        return th.reshape(S, 2, 2)  # [s, coordinate, value]

    policy = Policy(rng.normal(size=S * 4),
                    lambda th: coord_logits(th)[:, 0, bits[:, 0]] + coord_logits(th)[:, 1, bits[:, 1]])
    theta = jnp.asarray(policy.theta)

    def coordinate_logp(th, s, a):  # [T, 2]
        table = jax.nn.log_softmax(coord_logits(th), axis=-1)  # [S, 2, 2]
        return jnp.stack([table[s, 0, jbits[a, 0]], table[s, 1, jbits[a, 1]]], axis=-1)

    # b^i(s, a^{−i}): a table over (s, other coordinate's value), one per coordinate.
    b_table = rng.normal(size=(S, 2, 2))  # [s, i, value of a^{−i}]
    other = bits[:, ::-1]  # the value of the other coordinate, per action and coordinate
    b_coord = b_table[trajs.states[..., None], np.arange(2), other[trajs.actions]]  # [K, T, 2]
    b_action = rng.normal(size=(S, 4))[trajs.states, trajs.actions]  # depends on a_t: not allowed

    def surrogate(th, s, a, r, bc, ba, which):
        logp = traj_logp(policy, th, s, a)[None]
        mask = jnp.ones((1, T))
        coord = coordinate_logp(th, s, a)[None]
        value = est.dice(logp, r[None], mask, gamma=GAMMA)
        if which == "coordinate":
            value = value + est.dice_baseline_term(logp, bc[None], mask, coordinate_logp=coord)
            value = value + est.tmaml_cv(logp, bc[None], mask, coordinate_logp=coord)
        elif which == "action":
            value = value + est.dice_baseline_term(logp, ba[None], mask)
        return value

    @jax.jit
    def moments(th):
        probs = traj_probs(policy, th, trajs)
        out = {}
        for which in ("coordinate", "action"):
            args = (trajs.states, trajs.actions, trajs.rewards, b_coord, b_action)
            g = jax.vmap(jax.grad(surrogate), (None, 0, 0, 0, 0, 0, None))(th, *args, which)
            h = jax.vmap(jax.hessian(surrogate), (None, 0, 0, 0, 0, 0, None))(th, *args, which)
            out[which] = (probs @ g, jnp.tensordot(probs, h, axes=1))
        cv_h = jax.vmap(jax.hessian(lambda t, s, a, bc: est.tmaml_cv(
            traj_logp(policy, t, s, a)[None], bc[None], jnp.ones((1, T)),
            coordinate_logp=coordinate_logp(t, s, a)[None])), (None, 0, 0, 0))(
            th, trajs.states, trajs.actions, b_coord)
        J = lambda t: exact_return(policy, t, mdp, GAMMA)  # noqa: E731
        return out, jnp.tensordot(probs, cv_h, axes=1), jax.grad(J)(th), jax.hessian(J)(th)

    out, cv_hessian, grad_J, hess_J = moments(theta)
    close(cv_hessian, 0.0)
    close(out["coordinate"][0], grad_J)
    close(out["coordinate"][1], hess_J)
    far(out["action"][0], grad_J)  # negative control: b depends on a_t


def test_registry_of_control_variates():
    assert {"corrected": est.tmaml_cv, "paper": est.tmaml_cv_paper} == est.CONTROL_VARIATES
    assert len(list(itertools.chain(est.CONTROL_VARIATES))) == 2
