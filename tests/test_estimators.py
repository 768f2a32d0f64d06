"""Estimator surrogates by exact enumeration: the MagicBox and the PGT forward/backward forms
(ProMP, Rothfuss et al., 2019, App. B.1 Eq. 41–42, App. B.3.1 Eq. 66–68), the Hessian
decomposition (ProMP §5 Eq. 6, App. B.2), the expected Hessians of PGT, DiCE and LVC (ProMP
App. B.3, Eq. 8, Eq. 10; table in docs/algorithms.md), J^LR and J^CLIP (ProMP Eq. 12, App. C.3
Eq. 109) and formulation II / E-MAML (ProMP App. A.2 Eq. 25–28, 35).

A small finite-horizon tabular MDP is enumerated completely: every trajectory τ with its exact
probability P(τ; θ). So "equality in expectation" is an exact finite sum,
Σ_τ ⊥P(τ)·∇^k f(τ) for the N = 1 surrogate f, checked in float64 to ~1e−10. The exact return J(θ)
comes from backward dynamic programming (independent of the enumeration), and ∇J, ∇²J from
autodiff of it.

float64 is switched on per test with the ``jax.enable_x64`` context (autouse fixture below), so
other test modules running in the same process keep JAX's float32 default.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl import estimators as est

ATOL = 1e-9

#: The three reward-based surrogates by name; each is ``f(logp, rewards, mask, *, gamma, baseline)``.
REWARD_ESTIMATORS = {"pgt": est.pgt, "dice": est.dice, "lvc": est.lvc}


@pytest.fixture(autouse=True)
def x64():
    """Run each test in float64, restoring the process-wide setting afterwards."""
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------------------------
# A tabular finite-horizon MDP, its policies and the exact enumeration of its trajectories.
# ---------------------------------------------------------------------------------------------


class MDP(NamedTuple):
    p0: np.ndarray  # [S] initial-state distribution
    P: np.ndarray  # [S, A, S'] transition probabilities
    r: np.ndarray  # [S, A] rewards (undiscounted; the estimators fold γ^t in)
    T: int  # horizon


class Trajectories(NamedTuple):
    """All (S·A)^T trajectories (s_0, a_0, …, s_{T−1}, a_{T−1})."""

    states: np.ndarray  # [K, T] int
    actions: np.ndarray  # [K, T] int
    log_env: np.ndarray  # [K] log p0(s_0) + Σ_t log P(s_{t+1} | s_t, a_t)
    rewards: np.ndarray  # [K, T] r(s_t, a_t), undiscounted


class Policy(NamedTuple):
    theta: np.ndarray  # a fixed parameter vector to evaluate at
    logits: Callable  # θ → [S, A] action logits for every state


def make_mdp(seed: int, S: int, A: int, T: int) -> MDP:
    rng = np.random.default_rng(seed)
    return MDP(p0=rng.dirichlet(np.ones(S)), P=rng.dirichlet(np.ones(S), size=(S, A)),
               r=rng.normal(size=(S, A)), T=T)


def enumerate_trajectories(mdp: MDP) -> Trajectories:
    S, A = mdp.r.shape
    steps = list(itertools.product(range(S), range(A)))
    sa = np.array(list(itertools.product(steps, repeat=mdp.T)))  # [K, T, 2]
    states, actions = sa[..., 0], sa[..., 1]
    log_env = np.log(mdp.p0[states[:, 0]])
    for t in range(mdp.T - 1):
        log_env = log_env + np.log(mdp.P[states[:, t], actions[:, t], states[:, t + 1]])
    return Trajectories(states, actions, log_env, mdp.r[states, actions])


def make_policy(kind: str, S: int, A: int, seed: int) -> Policy:
    """``tabular``: softmax over θ ∈ R^{S×A}; ``mlp``: softmax over a tanh MLP of fixed features."""
    rng = np.random.default_rng(seed)
    if kind == "tabular":
        return Policy(0.7 * rng.normal(size=S * A), lambda th: th.reshape(S, A))
    features, hidden = rng.normal(size=(S, 3)), 4
    sizes = [(3, hidden), (hidden,), (hidden, A), (A,)]
    cuts = np.cumsum([0] + [int(np.prod(s)) for s in sizes])

    def logits(th):
        w1, b1, w2, b2 = (th[cuts[i]:cuts[i + 1]].reshape(sizes[i]) for i in range(4))
        return jnp.tanh(features @ w1 + b1) @ w2 + b2

    return Policy(rng.normal(size=cuts[-1]), logits)


def log_pi(policy: Policy, theta) -> jax.Array:
    """[S, A] table of log π_θ(a | s)."""
    return jax.nn.log_softmax(policy.logits(theta), axis=-1)


def traj_logp(policy: Policy, theta, states, actions) -> jax.Array:
    """log π_θ(a_t | s_t) along trajectories, same shape as ``states``."""
    return log_pi(policy, theta)[jnp.asarray(states), jnp.asarray(actions)]


def traj_probs(policy: Policy, theta, trajs: Trajectories) -> jax.Array:
    """P(τ; θ) for every enumerated trajectory, [K]."""
    return jnp.exp(trajs.log_env + traj_logp(policy, theta, trajs.states, trajs.actions).sum(-1))


def exact_return(policy: Policy, theta, mdp: MDP, gamma) -> jax.Array:
    """J(θ) = E[Σ_t γ^t r_t] by backward dynamic programming (not by enumeration)."""
    pi = jnp.exp(log_pi(policy, theta))
    v = jnp.zeros(mdp.r.shape[0])
    for t in reversed(range(mdp.T)):
        v = jnp.sum(pi * (gamma**t * mdp.r + mdp.P @ v), axis=-1)
    return mdp.p0 @ v


def state_marginals(policy: Policy, theta, mdp: MDP) -> jax.Array:
    """d_t(s) = P(s_t = s), [T, S], by forward recursion."""
    pi = jnp.exp(log_pi(policy, theta))
    d, out = jnp.asarray(mdp.p0), []
    for _ in range(mdp.T):
        out.append(d)
        d = jnp.einsum("s,sa,sap->p", d, pi, mdp.P)
    return jnp.stack(out)


def reward_to_go_loop(rewards, gamma):
    """Ψ_t = Σ_{t' ≥ t} γ^{t'} r_{t'} written out as sums over the time indices ([..., T])."""
    T = rewards.shape[-1]
    xp = jnp if isinstance(rewards, jax.Array) or isinstance(gamma, jax.Array) else np
    return xp.stack([sum(gamma**u * rewards[..., u] for u in range(t, T)) for t in range(T)], axis=-1)


def baseline_table(kind: str, mdp: MDP, seed: int = 7) -> np.ndarray | None:
    """A random baseline b_t(s) as a [T, S] table: ``state`` (same for all t), ``time_state``."""
    if kind == "none":
        return None
    rng = np.random.default_rng(seed)
    S = mdp.r.shape[0]
    if kind == "state":
        return np.tile(rng.normal(size=S), (mdp.T, 1))
    return rng.normal(size=(mdp.T, S))


def along(table: np.ndarray | None, states: np.ndarray) -> np.ndarray | None:
    """b_t(s_t) along trajectories, same shape as ``states`` ([K, T])."""
    return None if table is None else table[np.arange(states.shape[-1]), states]


class Exact(NamedTuple):
    """Exact quantities at θ (all as arrays over the enumerated trajectories where indexed by k)."""

    H1: np.ndarray  # E[Σ_t g_t g_tᵀ Ψ_t]
    H2: np.ndarray  # E[Σ_t ∇²l_t Ψ_t]
    H12: np.ndarray  # E[Σ_t Σ_{t'>t} g_t g_{t'}ᵀ Ψ_{t'}]
    hessian: np.ndarray  # ∇²J by autodiff of the exact (DP) return
    gradient: np.ndarray  # ∇J likewise
    probs: np.ndarray  # [K] P(τ)
    g: np.ndarray  # [K, T, P] scores g_t = ∇log π(a_t|s_t)
    hl: np.ndarray  # [K, T, P, P] ∇²log π(a_t|s_t)
    fisher: np.ndarray  # [S, P, P] F(s) = E_{a∼π(·|s)}[∇log π ∇log πᵀ]
    marginals: np.ndarray  # [T, S] d_t(s) = P(s_t = s)


class Problem:
    """A tabular MDP with all its trajectories and a policy, plus jitted exact computations (built
    once per process and shared by the tests; γ is an argument, so it does not recompile)."""

    def __init__(self, kind: str, T: int, S: int, A: int, seed: int):
        self.mdp = make_mdp(seed, S, A, T)
        self.trajs = enumerate_trajectories(self.mdp)
        self.policy = make_policy(kind, S, A, seed + 1)
        self._exact = jax.jit(self._exact_quantities)
        self._derivatives = jax.jit(self._estimator_derivatives)

    @property
    def theta(self) -> jax.Array:
        return jnp.asarray(self.policy.theta)

    def logp(self, theta) -> jax.Array:
        """[K, T] log π_θ(a_t | s_t) along every enumerated trajectory."""
        return traj_logp(self.policy, theta, self.trajs.states, self.trajs.actions)

    def exact(self, theta, gamma) -> Exact:
        """H1, H2, H12 by enumeration (ProMP App. B.2), ∇J and ∇²J by autodiff of the DP return,
        scores, Fisher matrices and state marginals — as NumPy arrays."""
        grad_J, hess_J, w, d_logpi, d2_logpi, marginals = (np.asarray(x) for x in self._exact(theta, gamma))
        g = d_logpi[self.trajs.states, self.trajs.actions]  # [K, T, P]
        hl = d2_logpi[self.trajs.states, self.trajs.actions]  # [K, T, P, P]
        psi = reward_to_go_loop(self.trajs.rewards, gamma)
        later = np.triu(np.ones((self.mdp.T, self.mdp.T)), k=1)  # later[t, t'] = 1 for t' > t
        H1 = np.einsum("k,kt,kti,ktj->ij", w, psi, g, g)
        H2 = np.einsum("k,kt,ktij->ij", w, psi, hl)
        H12 = np.einsum("k,tu,kti,kuj,ku->ij", w, later, g, g, psi)
        pi = np.exp(np.asarray(log_pi(self.policy, theta)))
        fisher = np.einsum("sa,sai,saj->sij", pi, d_logpi, d_logpi)
        return Exact(H1, H2, H12, hess_J, grad_J, w, g, hl, fisher, marginals)

    def derivatives(self, theta, gamma, baseline) -> dict[str, tuple[np.ndarray, ...]]:
        """Per trajectory (N = 1): value [K], gradient [K, P], Hessian [K, P, P] of pgt, dice
        and lvc, by name."""
        out = self._derivatives(theta, gamma, baseline)
        return {name: tuple(np.asarray(x) for x in v) for name, v in out.items()}

    def _exact_quantities(self, theta, gamma):
        """∇J, ∇²J (autodiff of the DP return), P(τ), ∇log π(a|s) and ∇²log π(a|s) for every
        (s, a), and the state marginals."""
        def J(th):
            return exact_return(self.policy, th, self.mdp, gamma)

        def table(th):
            return log_pi(self.policy, th)

        return (jax.grad(J)(theta), jax.hessian(J)(theta), traj_probs(self.policy, theta, self.trajs),
                jax.jacfwd(table)(theta), jax.hessian(table)(theta),
                state_marginals(self.policy, theta, self.mdp))

    def _estimator_derivatives(self, theta, gamma, baseline):
        out = {}
        for name, fn in REWARD_ESTIMATORS.items():
            def single(th, s, a, r, b, fn=fn):
                logp = traj_logp(self.policy, th, s, a)[None]
                return fn(logp, r[None], jnp.ones((1, s.shape[0])), gamma=gamma,
                          baseline=None if b is None else b[None])

            def derivs(s, a, r, b, single=single):
                return single(theta, s, a, r, b), jax.grad(single)(theta, s, a, r, b), \
                    jax.hessian(single)(theta, s, a, r, b)

            out[name] = jax.vmap(derivs)(self.trajs.states, self.trajs.actions, self.trajs.rewards,
                                         baseline)
        return out


@functools.lru_cache
def problem(kind: str = "tabular", T: int = 3, S: int = 3, A: int = 2, seed: int = 0) -> Problem:
    return Problem(kind, T, S, A, seed)


def expected(per_traj, probs):
    """Σ_τ ⊥P(τ)·x(τ) over the leading (trajectory) axis."""
    return np.tensordot(probs, per_traj, axes=1)


def fisher_baseline_term(ex: Exact, table: np.ndarray) -> np.ndarray:
    """Σ_t E[b_t(s_t) F(s_t)] = Σ_t Σ_s d_t(s) b_t(s) F(s), computed state by state."""
    return np.einsum("ts,ts,sij->ij", ex.marginals, table, ex.fisher)


def close(a, b, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)


def far(a, b, margin=1e-3):
    assert np.max(np.abs(np.asarray(a) - np.asarray(b))) > margin


# ---------------------------------------------------------------------------------------------
# Conventions: discounting, reward-to-go, MagicBox, per-step scale.
# ---------------------------------------------------------------------------------------------


def test_runs_in_float64():
    assert jnp.zeros(1).dtype == jnp.float64


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reward_to_go_folds_absolute_discount_and_masks(gamma):
    """Ψ_t = Σ_{t'≥t} γ^{t'} r_{t'} (r_t := γ^t r_t, ProMP §3); padding contributes nothing."""
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(4, 5))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], float)
    close(est.discount_weights(5, gamma), gamma ** np.arange(5))
    close(est.reward_to_go(rewards, mask, gamma=gamma), reward_to_go_loop(rewards * mask, gamma))
    garbage = np.where(mask > 0, rewards, np.nan)
    close(est.reward_to_go(garbage, mask, gamma=gamma), reward_to_go_loop(rewards * mask, gamma))
    close(est.discount_weights(3, 0.0), [1.0, 0.0, 0.0])


def test_magic_box_value_gradient_hessian():
    """MagicBox (ProMP App. B.3.1): value(□(x)) = 1, ∇□ = ∇x, ∇²□ = ∇x∇xᵀ + ∇²x at the evaluation
    point."""

    def x(th):
        return jnp.sin(th[0]) * th[1] ** 2 + jnp.exp(th[2]) * th[0]

    def box(th):
        return est.magic_box(x(th))

    @jax.jit
    def evaluate(th):
        return box(th), jax.grad(box)(th), jax.hessian(box)(th), jax.grad(x)(th), jax.hessian(x)(th)

    value, grad, hess, dx, d2x = evaluate(jnp.array([0.3, -1.2, 0.5]))
    assert value == 1.0
    close(grad, dx)
    close(hess, np.outer(dx, dx) + d2x)


def test_per_step_scale():
    """N / max(Σ mask, 1): turns the mean over trajectories into a mean over real steps."""
    mask = jnp.array([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    close(est.per_step_scale(mask), 2 / 5)
    close(jax.jit(est.per_step_scale)(jnp.zeros((3, 4))), 3.0)
    assert jax.grad(lambda m: est.per_step_scale(m) * 1.0)(mask).sum() == 0.0
    logp, adv = jnp.arange(8.0).reshape(2, 4) / 10, jnp.arange(8.0).reshape(2, 4) - 3
    close(est.per_step_scale(mask) * est.pgt_from_advantages(logp, adv, mask),
          jnp.sum(logp * adv * mask) / mask.sum())


# ---------------------------------------------------------------------------------------------
# The Hessian decomposition (ProMP App. B.2) and the estimators' exact expectations.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "gamma"), [("tabular", 0.9), ("tabular", 1.0), ("mlp", 0.9)])
def test_hessian_decomposition(kind, gamma):
    """ProMP Eq. 6, App. B.2 (Eq. 43, 61–65): H1 + H2 + H12 + H12ᵀ = ∇²J, with
    H12 = E[Σ_t Σ_{t'>t} g_t g_{t'}ᵀ Ψ_{t'}]."""
    pb = problem(kind)
    h = pb.exact(pb.theta, gamma)
    close(h.probs.sum(), 1.0)
    close(h.probs @ reward_to_go_loop(pb.trajs.rewards, gamma)[:, 0],
          exact_return(pb.policy, pb.theta, pb.mdp, gamma))
    close(h.H1 + h.H2 + h.H12 + h.H12.T, h.hessian)
    # The terms the estimators drop are not negligible here, so the expected-Hessian checks
    # discriminate.
    assert np.abs(h.H12 + h.H12.T).max() > 1e-2 and np.abs(h.H1).max() > 1e-2


@pytest.mark.parametrize(("kind", "gamma", "baseline"), [
    ("tabular", 0.9, "none"), ("tabular", 0.9, "state"), ("tabular", 0.9, "time_state"),
    ("tabular", 1.0, "none"), ("tabular", 1.0, "state"), ("mlp", 0.9, "time_state"),
])
def test_expected_gradient_and_hessian(kind, gamma, baseline):
    """Expected gradients and Hessians of PGT, DiCE, LVC on the tabular MDP (softmax-table or MLP
    policy), exact expectations (N = 1):

    * E[∇ pgt] = E[∇ dice] = E[∇ lvc] = ∇J, with or without a state baseline;
    * E[∇² pgt] = H2 without a baseline (ProMP App. B.3), H2 + Σ_t E[b(s_t) F(s_t)] with one
      (E_a[∇²log π] = −F);
    * E[∇² dice] = ∇²J (ProMP Eq. 8; also with the DiCE baseline term);
    * E[∇² lvc] = H1 + H2 (ProMP Eq. 10; also with a state baseline).
    """
    pb = problem(kind)
    table = baseline_table(baseline, pb.mdp)
    h = pb.exact(pb.theta, gamma)
    out = pb.derivatives(pb.theta, gamma, along(table, pb.trajs.states))
    for name in REWARD_ESTIMATORS:
        close(expected(out[name][1], h.probs), h.gradient)
    pgt_hessian = h.H2 if table is None else h.H2 + fisher_baseline_term(h, table)
    close(expected(out["pgt"][2], h.probs), pgt_hessian)
    close(expected(out["dice"][2], h.probs), h.hessian)
    close(expected(out["lvc"][2], h.probs), h.H1 + h.H2)
    if table is not None:
        far(pgt_hessian, h.H2)  # the state baseline really does move PGT's expected Hessian


# ---------------------------------------------------------------------------------------------
# Per-sample identities (tier U).
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "baseline"), [("tabular", "none"), ("tabular", "time_state"),
                                                ("mlp", "state")])
def test_per_sample_identities(kind, baseline):
    """On every trajectory separately (N = 1):

    * the gradients of pgt, dice and lvc all equal Σ_t g_t (Ψ_t − b_t);
    * the backward PGT form Σ_t (Σ_{t'≤t} l_{t'}) r_t (ProMP Eq. 42) has the same gradient;
    * dice value = Σ_t γ^t r_t; Hessian = Σ_t[(Σ_{t'≤t}g)(Σ_{t'≤t}g)ᵀ + Σ_{t'≤t}∇²l] r_t
      (ProMP App. B.3.1; − Σ_t (g_t g_tᵀ + ∇²l_t) b_t from the baseline term);
    * pgt Hessian = Σ_t ∇²l_t (Ψ_t − b_t);
    * lvc Hessian = Σ_t (g_t g_tᵀ + ∇²l_t)(Ψ_t − b_t) (not the cross-index form printed in ProMP
      App. B.4 Eq. 97, 99).
    """
    gamma = 0.9
    pb = problem(kind)
    theta, trajs, T = pb.theta, pb.trajs, pb.mdp.T
    b = along(baseline_table(baseline, pb.mdp), trajs.states)
    b0 = np.zeros(trajs.rewards.shape) if b is None else b
    ex = pb.exact(theta, gamma)
    g, hl = ex.g, ex.hl
    logp = np.asarray(pb.logp(theta))
    rf = trajs.rewards * gamma ** np.arange(T)
    adv = reward_to_go_loop(trajs.rewards, gamma) - b0
    out = pb.derivatives(theta, gamma, b)

    pg = np.einsum("kti,kt->ki", g, adv)
    for name in REWARD_ESTIMATORS:
        close(out[name][1], pg)
    close(out["pgt"][0], np.sum(logp * adv, -1))
    close(out["dice"][0], rf.sum(-1))
    close(out["lvc"][0], adv.sum(-1))

    ggT_hl = np.einsum("kti,ktj->ktij", g, g) + hl
    close(out["pgt"][2], np.einsum("ktij,kt->kij", hl, adv))
    close(out["lvc"][2], np.einsum("ktij,kt->kij", ggT_hl, adv))
    G, HL = np.cumsum(g, axis=1), np.cumsum(hl, axis=1)
    dice_hessian = np.einsum("kti,ktj,kt->kij", G, G, rf) + np.einsum("ktij,kt->kij", HL, rf)
    close(out["dice"][2], dice_hessian - np.einsum("ktij,kt->kij", ggT_hl, b0))

    if b is None:  # ProMP Eq. 42: ∇ of the backward form Σ_t (Σ_{t'≤t} l_{t'}) r_t is
        # Σ_t (Σ_{t'≤t} g_{t'}) r_t
        close(np.einsum("kti,kt->ki", G, rf), out["pgt"][1])


def test_advantage_forms_are_the_reward_forms():
    """pgt/lvc are pgt_from_advantages/lvc_from_advantages with A = Ψ − b (one home per formula)."""
    rng = np.random.default_rng(3)
    logp, rewards, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    mask = np.ones((3, 4))
    adv = reward_to_go_loop(rewards, 0.8) - b

    @jax.jit
    def evaluate(lp):
        return [(jax.value_and_grad(lambda x, rf=rf: rf(x, rewards, mask, gamma=0.8, baseline=b))(lp),
                 jax.value_and_grad(lambda x, af=af: af(x, adv, mask))(lp))
                for rf, af in [(est.pgt, est.pgt_from_advantages), (est.lvc, est.lvc_from_advantages)]]

    for (value, grad), (value_adv, grad_adv) in evaluate(logp):
        close(value, value_adv)
        close(grad, grad_adv)


# ---------------------------------------------------------------------------------------------
# The likelihood ratio J^LR (ProMP Eq. 12) and clipping J^CLIP (ProMP App. C.3 Eq. 109).
# ---------------------------------------------------------------------------------------------


def test_likelihood_ratio_matches_lvc_at_theta_old():
    """ProMP §6 (after Eq. 12): at θ = θ_o, J^LR's value, gradient and Hessian equal LVC's (same
    A = Ψ − b), per sample; away from θ_o they differ, and J^LR's gradient is Σ_t ρ_t g_t A_t."""
    gamma = 0.9
    pb = problem("tabular")
    theta, trajs, T = pb.theta, pb.trajs, pb.mdp.T
    b = along(baseline_table("time_state", pb.mdp), trajs.states)
    adv = reward_to_go_loop(trajs.rewards, gamma) - b
    theta_away = theta + 0.3 * jnp.asarray(np.random.default_rng(5).normal(size=theta.shape))

    @jax.jit
    def per_traj_lr(theta_old):  # theta_old = None: logp_old = ⊥logp
        def single(th, s, a, A):
            logp = traj_logp(pb.policy, th, s, a)[None]
            old = jax.lax.stop_gradient(logp) if theta_old is None else \
                traj_logp(pb.policy, theta_old, s, a)[None]
            return est.likelihood_ratio(logp, old, A[None], jnp.ones((1, T)))

        return jax.vmap(lambda *x: (single(theta, *x), jax.grad(single)(theta, *x),
                                    jax.hessian(single)(theta, *x)))(trajs.states, trajs.actions, adv)

    lvc_out = pb.derivatives(theta, gamma, b)["lvc"]
    for theta_old in (None, theta):  # ⊥logp, or a constant equal to logp's value
        at_old = per_traj_lr(theta_old)
        for i in range(3):
            close(at_old[i], lvc_out[i])

    away = per_traj_lr(theta_away)
    g = pb.exact(theta, gamma).g
    rho = np.exp(np.asarray(pb.logp(theta)) - np.asarray(pb.logp(theta_away)))
    close(away[0], np.sum(rho * adv, -1))
    close(away[1], np.einsum("kt,kti,kt->ki", rho, g, adv))
    far(away[1], lvc_out[1])
    far(away[2], lvc_out[2])


def test_clipped_ratio():
    """J^CLIP: zero gradient in the clipped region; at θ = θ_o value = Σ_t A_t (mean over n) and
    gradient = the policy gradient; clip_eps = inf is exactly J^LR."""
    rng = np.random.default_rng(4)
    adv = rng.normal(size=(3, 5))
    mask = np.ones((3, 5))
    eps = 0.2

    @jax.jit
    def f(x):  # logp = x directly (one parameter per step), logp_old = 0: value and gradient
        return jax.value_and_grad(lambda y: est.clipped_ratio(y, jnp.zeros_like(y), adv, mask,
                                                               clip_eps=eps))(x)

    clipped_x = 0.5 * np.sign(adv)  # ρ = e^{±0.5}: above 1 + ε where A > 0, below 1 − ε where A < 0
    value, grad = f(clipped_x)
    assert np.all(grad == 0.0)
    close(value, np.mean(np.sum((1 + eps * np.sign(adv)) * adv, -1)))
    free_x = -clipped_x  # the unclipped side: gradient ρ·A / N
    close(f(free_x)[1], np.exp(free_x) * adv / 3)

    # On the tabular MDP (all trajectories as one batch): at θ = θ_o the value is mean_n Σ_t A_t
    # and the gradient is the PG; with ε = ∞ it is J^LR everywhere.
    pb = problem("tabular")
    theta = pb.theta
    A = np.asarray(reward_to_go_loop(pb.trajs.rewards, 0.9))
    m = np.ones(A.shape)
    old = pb.logp(theta)
    theta_new = theta + 0.8 * jnp.asarray(rng.normal(size=theta.shape))

    @jax.jit
    def check(th):
        def clip(t, e):
            return est.clipped_ratio(pb.logp(t), old, A, m, clip_eps=e)

        def lr(t):
            return est.likelihood_ratio(pb.logp(t), old, A, m)

        def pg(t):
            return est.pgt_from_advantages(pb.logp(t), A, m)

        return (clip(th, eps), jax.grad(clip)(th, eps), jax.grad(pg)(th), clip(th, np.inf), lr(th),
                jax.grad(clip)(th, np.inf), jax.grad(lr)(th), jax.hessian(clip)(th, np.inf),
                jax.hessian(lr)(th))

    at_old, at_new = check(theta), check(theta_new)
    close(at_old[0], A.sum(-1).mean())
    close(at_old[1], at_old[2])
    for i, j in [(3, 4), (5, 6), (7, 8)]:
        close(at_new[i], at_new[j])
    far(at_new[1], at_new[6])  # with finite ε, away from θ_o, clipping changes the gradient


# ---------------------------------------------------------------------------------------------
# Masking and the mean over trajectories.
# ---------------------------------------------------------------------------------------------


def test_padding_is_ignored_and_batches_average():
    """Padded steps (mask 0, with garbage — even NaN/inf — logp, rewards, baselines, advantages
    and old logp) change no value, gradient or Hessian (w.r.t. logp, hence w.r.t. any parameters
    behind it): an N = 2 padded batch equals the mean of the two N = 1 evaluations on the
    unpadded trajectories (the sum for emaml_pre_term), and padded entries get exactly zero
    derivatives. (The *_from_advantages forms are what pgt/lvc evaluate.) Hessians are checked
    for the three reward-based estimators, whose second order couples time steps."""
    gamma, lengths, T_pad = 0.9, [4, 2], 6
    rng = np.random.default_rng(6)
    mask = np.array([[1.0] * L + [0.0] * (T_pad - L) for L in lengths])
    garbage = np.where(mask > 0, 0.0, 1e3)
    garbage[0, 4], garbage[1, 2], garbage[1, 5] = np.nan, np.inf, -np.inf
    logp = -rng.uniform(0.1, 2.0, size=(2, T_pad)) + garbage
    rewards, b, adv = (rng.normal(size=(2, T_pad)) + garbage for _ in range(3))
    old = logp + 0.3 * rng.normal(size=(2, T_pad))
    post = np.array([0.7, -1.3])

    objectives = {  # f(logp, rewards, mask, rows, steps) on the selected rows/steps of the extras
        **{f"{name}/baseline={with_b}": (lambda lp, r, m, rows, steps, fn=fn, with_b=with_b: fn(
            lp, r, m, gamma=gamma, baseline=b[rows, steps] if with_b else None))
           for name, fn in REWARD_ESTIMATORS.items() for with_b in (False, True)},
        "likelihood_ratio": lambda lp, r, m, rows, steps: est.likelihood_ratio(
            lp, old[rows, steps], adv[rows, steps], m),
        "clipped_ratio": lambda lp, r, m, rows, steps: est.clipped_ratio(
            lp, old[rows, steps], adv[rows, steps], m, clip_eps=0.2),
        "emaml_pre_term": lambda lp, r, m, rows, steps: est.emaml_pre_term(lp, m, post[rows]),
    }

    def derivs(f, x, second_order):
        hess = jax.hessian(f)(x) if second_order else jnp.zeros(x.shape * 2)
        return f(x), jax.grad(f)(x), hess

    @jax.jit
    def evaluate(lp):
        results = {}
        for name, obj in objectives.items():
            def batch(x, obj=obj):
                return obj(x, rewards, mask, slice(None), slice(None))

            def single(x, i, obj=obj):  # trajectory i alone, truncated to its real length
                L = lengths[i]
                return obj(x, rewards[i:i + 1, :L], mask[i:i + 1, :L], slice(i, i + 1), slice(0, L))

            second_order = "/" in name
            results[name] = (derivs(batch, lp, second_order),
                             [derivs(functools.partial(single, i=i), lp[i:i + 1, :L], second_order)
                              for i, L in enumerate(lengths)])
        return results

    for name, ((value, grad, hess), singles) in evaluate(logp).items():
        weight = 1.0 if name == "emaml_pre_term" else 1.0 / len(lengths)  # sum / mean over n
        assert np.isfinite(value) and np.all(np.isfinite(grad)) and np.all(np.isfinite(hess)), name
        close(value, weight * sum(s[0] for s in singles))
        expected_grad, expected_hess = np.zeros((2, T_pad)), np.zeros((2, T_pad, 2, T_pad))
        for i, (L, (_, g1, h1)) in enumerate(zip(lengths, singles, strict=True)):
            expected_grad[i, :L] = weight * g1[0]
            expected_hess[i, :L, i, :L] = weight * h1[0, :, 0, :]
        close(grad, expected_grad)
        close(hess, expected_hess)
        far(grad, 0.0, 1e-6)
    close(est.reward_to_go(rewards, mask, gamma=gamma)[1],
          np.r_[reward_to_go_loop(rewards[1:, :2], gamma)[0], np.zeros(4)])


# ---------------------------------------------------------------------------------------------
# Formulation II (E-MAML; ProMP App. A.2) exactly.
# ---------------------------------------------------------------------------------------------


def test_emaml_pre_term_gives_exact_formulation_ii_gradient():
    """Formulation II (ProMP App. A.2 Eq. 25–28) on a 2-state, 2-action, T = 2 MDP with N = 2
    pre-update trajectories enumerated jointly. θ' = θ + α∇pgt(τ_1, τ_2) (deterministic in the
    samples), and
    J^II(θ) = Σ_{τ1,τ2} P(τ1)P(τ2)·J(θ'(τ1,τ2)) with J the exact post-update return. Then
    E_{τ1,τ2}[∇_θ J(θ'(τ1,τ2)) + ∇ emaml_pre_term(τ1, τ2; R̂' = J(θ'))] = ∇J^II exactly.
    Without the pre-update term (the plain PGT meta-gradient) or with a mean instead of the sum
    over n it is not. The pre-update term carries no α (the Eq. 27/35 variant; Eq. 3/37 print an α)."""
    gamma, alpha = 0.9, 0.8
    pb = problem("tabular", T=2, S=2, A=2, seed=11)
    theta, trajs = pb.theta, pb.trajs
    K = trajs.states.shape[0]
    pairs = np.array(list(itertools.product(range(K), repeat=2)))  # [K², 2]
    mask = np.ones((2, pb.mdp.T))
    states, actions, rewards = (jnp.asarray(x) for x in (trajs.states, trajs.actions, trajs.rewards))

    def pair_logp(th, pair):
        return traj_logp(pb.policy, th, states[pair], actions[pair])  # [2, T]

    def post_return(th, pair):  # J(θ'), θ' = θ + α(1/N)Σ_n Σ_t g_t Ψ_t through a differentiable step
        inner = jax.grad(lambda t: est.pgt(pair_logp(t, pair), rewards[pair], mask, gamma=gamma))
        return exact_return(pb.policy, th + alpha * inner(th), pb.mdp, gamma)

    def J_II(th):
        p = traj_probs(pb.policy, th, trajs)
        return jnp.sum(p[pairs[:, 0]] * p[pairs[:, 1]] * jax.vmap(post_return, (None, 0))(th, pairs))

    def surrogate(th, pair, pre_weight):
        pre = est.emaml_pre_term(pair_logp(th, pair), mask, post_return(th, pair))
        return post_return(th, pair) + pre_weight * pre

    @jax.jit
    def check(th):
        p = traj_probs(pb.policy, th, trajs)
        w = p[pairs[:, 0]] * p[pairs[:, 1]]
        estimates = [w @ jax.vmap(jax.grad(surrogate), (None, 0, None))(th, pairs, pre_weight)
                     for pre_weight in (1.0, 0.0, 0.5)]
        return jax.grad(J_II)(th), estimates

    exact, (with_pre, post_only, mean_pre) = check(theta)
    close(with_pre, exact)
    far(post_only, exact)  # ∇J_post alone (PGT inner step, no pre-update term) is a different gradient
    far(mean_pre, exact)  # a mean over the N pre-update trajectories is biased


# ---------------------------------------------------------------------------------------------
# Shape checks: wrongly shaped inputs are one clear error, not a silent broadcast.
# ---------------------------------------------------------------------------------------------

N, T, A = 4, 6, 2
FULL = np.ones((N, T))


def shape_cases():
    """``(function, call, argument, wrong shape)``: ``call(**{argument: array of that shape})``
    with every other argument well shaped ([N, T], baselines per coordinate [N, T, A])."""
    good = {"logp": FULL, "rewards": FULL, "mask": FULL, "baseline": FULL, "advantages": FULL,
            "logp_old": FULL}
    reward_forms = [(name, lambda f=f, **a: f(a["logp"], a["rewards"], a["mask"], baseline=a["baseline"]),
                     ("logp", "rewards", "mask", "baseline")) for name, f in REWARD_ESTIMATORS.items()]
    forms = [
        *reward_forms,
        ("pgt_from_advantages", lambda **a: est.pgt_from_advantages(a["logp"], a["advantages"], a["mask"]),
         ("logp", "advantages", "mask")),
        ("lvc_from_advantages", lambda **a: est.lvc_from_advantages(a["logp"], a["advantages"], a["mask"]),
         ("logp", "advantages", "mask")),
        ("likelihood_ratio", lambda **a: est.likelihood_ratio(a["logp"], a["logp_old"], a["advantages"],
                                                              a["mask"]), ("logp_old", "advantages", "mask")),
        ("clipped_ratio", lambda **a: est.clipped_ratio(a["logp"], a["logp_old"], a["advantages"], a["mask"],
                                                        clip_eps=0.2), ("logp_old", "advantages", "mask")),
        ("reward_to_go", lambda **a: est.reward_to_go(a["rewards"], a["mask"]), ("mask",)),
        ("dice_baseline_term", lambda **a: est.dice_baseline_term(a["logp"], a["baseline"], a["mask"]),
         ("mask", "baseline")),
        ("tmaml_cv", lambda **a: est.tmaml_cv(a["logp"], a["baseline"], a["mask"]), ("mask", "baseline")),
        ("tmaml_cv_paper", lambda **a: est.tmaml_cv_paper(a["logp"], a["baseline"], a["mask"]),
         ("mask", "baseline")),
        ("emaml_pre_term", lambda **a: est.emaml_pre_term(a["logp"], a["mask"], 1.0), ("mask",)),
    ]
    for name, call, arguments in forms:
        for argument in arguments:
            for wrong in ((T,), (1, T), (N, T + 1)):  # logp[0]; one row; another horizon
                yield pytest.param(name, call, good, argument, wrong, id=f"{name}-{argument}-{wrong}")


@pytest.mark.parametrize(("name", "call", "good", "argument", "wrong"), list(shape_cases()))
def test_wrongly_shaped_argument_is_one_clear_error(name, call, good, argument, wrong):
    import re

    from adaptrl.errors import ConfigError

    value = call(**good)  # well shaped: a finite scalar (reward_to_go: Ψ, [N, T])
    assert np.shape(value) == ((N, T) if name == "reward_to_go" else ()) and np.all(np.isfinite(value))
    expected = f"{name}: {argument} has shape {wrong}, expected {(N, T)} (the shape of "
    with pytest.raises(ConfigError, match=re.escape(expected)) as error:
        call(**{**good, argument: np.ones(wrong)})
    holders = str(error.value).split("the shape of ", 1)[1].split(")", 1)[0]
    assert argument not in re.split(r", | and ", holders) and holders  # the others, named as expected


def test_shape_check_runs_at_trace_time_under_jit():
    """The check reads static shapes: it raises while tracing and compiles away."""
    from adaptrl.errors import ConfigError

    dice = jax.jit(lambda logp, rewards, mask: est.dice(logp, rewards, mask, gamma=0.9))
    assert np.isfinite(dice(FULL, FULL, FULL))
    with pytest.raises(ConfigError, match=r"dice: mask has shape \(6,\), expected \(4, 6\)"):
        dice(FULL, FULL, FULL[0])
    text = jax.jit(lambda logp: est.pgt(logp, FULL, FULL)).lower(FULL).as_text()
    assert "ConfigError" not in text and "callback" not in text  # nothing of the check is left at run time


def test_action_dependent_baseline_shapes_are_checked():
    from adaptrl.errors import ConfigError

    coordinate_logp = np.zeros((N, T, A))
    for f in (est.dice_baseline_term, est.tmaml_cv, est.tmaml_cv_paper):
        assert np.isfinite(f(FULL, np.ones((N, T, A)), FULL, coordinate_logp=coordinate_logp))
        with pytest.raises(ConfigError, match=r"baseline has shape \(4, 6\), expected \(4, 6, 2\) "
                                              r"\(the shape of coordinate_logp\)"):
            f(FULL, FULL, FULL, coordinate_logp=coordinate_logp)
        with pytest.raises(ConfigError,
                           match=r"coordinate_logp has shape \(6, 2\), expected \(4, 6\) \+ \(A,\)"):
            f(FULL, np.ones((T, A)), FULL, coordinate_logp=coordinate_logp[0])


def test_emaml_post_return_must_broadcast_to_one_value_per_trajectory():
    from adaptrl.errors import ConfigError

    logp, mask = np.zeros((3, N, T)), np.ones((3, N, T))
    for post_return in (1.0, np.ones((3, 1)), np.ones((3, N))):  # scalar, per task, per trajectory
        assert np.isfinite(est.emaml_pre_term(logp, mask, post_return))
    with pytest.raises(ConfigError, match=r"post_return has shape \(3, 4, 6\), expected a scalar or a shape "
                                          r"that broadcasts to \(3, 4\)"):
        est.emaml_pre_term(logp, mask, np.ones((3, N, T)))


def test_scalar_logp_is_an_error():
    from adaptrl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"lvc: logp has shape \(\), expected \[N, T\]"):
        est.lvc(0.0, 1.0, 1.0)
