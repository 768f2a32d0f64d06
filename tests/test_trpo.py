"""TRPO optimiser: conjugate gradient, Hessian-vector products, the constrained step (ProMP App. C.2,
Eq. 106–107; settings of the original ProMP code, docs/algorithms.md, "Outer optimizers")."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.optim import conjugate_gradient, hvp, trpo_search_direction, trpo_step


def _spd(n, seed, cond=5.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.linspace(1.0, cond, n)) @ q.T


def test_conjugate_gradient_solves_spd_system():
    a = _spd(10, 0)
    b = np.random.default_rng(1).normal(size=10)
    expected = np.linalg.solve(a, b)
    aj, bj = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    x = jax.jit(lambda b: conjugate_gradient(lambda v: aj @ v, b, iters=30, residual_tol=1e-14))(bj)
    np.testing.assert_allclose(x, expected, atol=1e-6)
    with jax.enable_x64(True):
        x64 = conjugate_gradient(lambda v: jnp.asarray(a) @ v, jnp.asarray(b), iters=10, residual_tol=1e-20)
        np.testing.assert_allclose(x64, expected, atol=1e-9)  # n iterations solve an n-D system


def test_conjugate_gradient_first_iteration_and_early_stop():
    a = jnp.asarray(_spd(4, 2), jnp.float32)
    b = jnp.asarray([1.0, -2.0, 0.5, 3.0])
    x1 = conjugate_gradient(lambda v: a @ v, b, iters=1)
    np.testing.assert_allclose(x1, (b @ b) / (b @ (a @ b)) * b, rtol=1e-5)  # steepest-descent step
    zero = conjugate_gradient(lambda v: a @ v, jnp.zeros(4), iters=10)
    assert np.all(np.asarray(zero) == 0.0)  # rᵀr < tol before the first iteration: no 0/0
    calls = []
    counted = lambda v: (jax.debug.callback(lambda: calls.append(1)), a @ v)[1]  # noqa: E731
    conjugate_gradient(counted, b, iters=50, residual_tol=1e-6)
    assert 4 <= len(calls) < 50  # stops early once the residual is small


def test_hvp_matches_explicit_hessian():
    def f(p):
        x, y = p["x"], p["y"]
        return jnp.sum(jnp.sin(x) * x**2) + jnp.dot(x, y) ** 3 + jnp.exp(0.3 * jnp.sum(y))

    p = {"x": jnp.asarray([0.3, -1.2, 0.7]), "y": jnp.asarray([0.5, 0.1, -0.4])}
    v = {"x": jnp.asarray([1.0, 0.5, -2.0]), "y": jnp.asarray([-0.3, 0.8, 0.2])}
    flat = lambda q: f({"x": q[:3], "y": q[3:]})  # noqa: E731
    hess = jax.jit(jax.hessian(flat))(jnp.concatenate([p["x"], p["y"]]))
    expected = hess @ jnp.concatenate([v["x"], v["y"]])
    got = jax.jit(hvp, static_argnums=0)(f, p, v)
    np.testing.assert_allclose(jnp.concatenate([got["x"], got["y"]]), expected, rtol=1e-5, atol=1e-5)


# --- a Gaussian-policy trust-region problem ------------------------------------------------------

OBS, ACT, N = 3, 2, 16


def _gaussian_problem(seed=0):
    rng = np.random.default_rng(seed)
    old = {
        "policy": {"w": jnp.asarray(rng.normal(size=(OBS, ACT)) * 0.3, jnp.float32), "b": jnp.zeros(ACT)},
        "log_std": jnp.full(ACT, -0.5),
    }
    states = jnp.asarray(rng.normal(size=(N, OBS)), jnp.float32)
    old_mean = _mean(old, states)
    old_std = jnp.exp(old["log_std"])
    actions = old_mean + old_std * jnp.asarray(rng.normal(size=(N, ACT)), jnp.float32)
    advantages = jnp.asarray(rng.normal(size=N), jnp.float32)
    old_logp = _log_prob(old, states, actions)

    def loss_fn(p):
        ratio = jnp.exp(_log_prob(p, states, actions) - old_logp)
        return -jnp.mean(ratio * advantages)

    def kl_fn(p):  # mean KL(old ‖ new) of diagonal Gaussians over the states
        mean, log_std = _mean(p, states), p["log_std"]
        kl = (
            log_std
            - old["log_std"]
            + (old_std**2 + (old_mean - mean) ** 2) / (2 * jnp.exp(2 * log_std))
            - 0.5
        )
        return jnp.mean(jnp.sum(kl, -1))

    return old, loss_fn, kl_fn


def _mean(p, states):
    return states @ p["policy"]["w"] + p["policy"]["b"]


def _log_prob(p, states, actions):
    z = (actions - _mean(p, states)) * jnp.exp(-p["log_std"])
    return jnp.sum(-0.5 * z**2 - p["log_std"] - 0.5 * jnp.log(2 * jnp.pi), -1)


def _jit_step(loss_fn, kl_fn, **kwargs):
    return jax.jit(functools.partial(trpo_step, loss_fn, kl_fn, **kwargs))


def test_trpo_step_gaussian_policy_respects_trust_region():
    old, loss_fn, kl_fn = _gaussian_problem()
    new, info = _jit_step(loss_fn, kl_fn, max_kl=0.01)(old)
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(old)  # nested dict pytree
    assert int(info["Accepted"]) == 1
    assert 0 <= int(info["NumBacktracks"]) < 15
    assert float(kl_fn(new)) <= 0.01  # ProMP Eq. 106: post-step KL ≤ δ (stricter than a 1.1δ tolerance)
    np.testing.assert_allclose(info["MeanKL"], kl_fn(new), rtol=1e-5)
    np.testing.assert_allclose(info["MeanKLBefore"], 0.0, atol=1e-6)
    np.testing.assert_allclose(info["LossBefore"], loss_fn(old), rtol=1e-6)
    np.testing.assert_allclose(info["LossAfter"], loss_fn(new), rtol=1e-5)
    assert float(info["LossAfter"]) < float(info["LossBefore"])
    np.testing.assert_allclose(info["dLoss"], info["LossBefore"] - info["LossAfter"], rtol=1e-6)
    assert float(info["MeanKL"]) > 0.005  # a real step, not a vanishing one
    assert set(info) == {
        "LossBefore",
        "LossAfter",
        "MeanKLBefore",
        "MeanKL",
        "dLoss",
        "NumBacktracks",
        "Accepted",
    }


def _quadratic_problem(damping=0.0, seed=3):
    f = jnp.asarray(_spd(5, seed, cond=4.0), jnp.float32)
    g = jnp.asarray(np.random.default_rng(seed).normal(size=5), jnp.float32)
    theta0 = jnp.asarray([0.1, -0.2, 0.3, 0.0, 1.0])
    loss_fn = lambda th: jnp.dot(g, th)  # noqa: E731
    kl_fn = lambda th: 0.5 * (th - theta0) @ f @ (th - theta0)  # noqa: E731
    return f, g, theta0, loss_fn, kl_fn


def test_first_candidate_lies_on_the_kl_boundary():
    f, g, theta0, loss_fn, kl_fn = _quadratic_problem()
    delta = 0.01
    d, beta = trpo_search_direction(loss_fn, kl_fn, theta0, max_kl=delta, cg_iters=20)
    f_inv_g = np.linalg.solve(np.asarray(f, np.float64), np.asarray(g, np.float64))
    expected = np.asarray(theta0) - np.sqrt(2 * delta / (g @ f_inv_g)) * f_inv_g
    first = theta0 - beta * d
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kl_fn(first), delta, rtol=1e-5)
    new, info = _jit_step(loss_fn, kl_fn, max_kl=delta, cg_iters=20)(theta0)
    assert int(info["Accepted"]) == 1
    # accepted at the first candidate, or, if float32 rounding put it a hair outside δ, the next one
    k = int(info["NumBacktracks"])
    assert k in (0, 1)
    np.testing.assert_allclose(new, theta0 - 0.8**k * beta * d, rtol=1e-6, atol=1e-7)
    assert float(info["MeanKL"]) <= delta


def test_first_candidate_accepted_in_float64():
    with jax.enable_x64(True):
        f, g, theta0, loss_fn, kl_fn = _quadratic_problem()
        f, g, theta0 = (jnp.asarray(x, jnp.float64) for x in (f, g, theta0))
        new, info = _jit_step(loss_fn, kl_fn, max_kl=0.01, cg_iters=5)(theta0)
        assert int(info["NumBacktracks"]) == 0 and int(info["Accepted"]) == 1
        f_inv_g = np.linalg.solve(np.asarray(f), np.asarray(g))
        np.testing.assert_allclose(new, theta0 - np.sqrt(0.02 / (g @ f_inv_g)) * f_inv_g, rtol=1e-6)
        np.testing.assert_allclose(info["MeanKL"], 0.01, rtol=1e-6)


def test_rejects_when_no_candidate_improves():
    f, g, theta0, _, kl_fn = _quadratic_problem()
    # linear decrease along −d, but a huge curvature outside the KL: every candidate is worse
    loss_fn = lambda th: jnp.dot(g, th) + 1e6 * jnp.sum((th - theta0) ** 2)  # noqa: E731
    new, info = _jit_step(loss_fn, kl_fn, max_kl=0.01)(theta0)
    assert int(info["Accepted"]) == 0
    assert int(info["NumBacktracks"]) == 15
    np.testing.assert_array_equal(new, theta0)
    np.testing.assert_allclose(info["LossAfter"], info["LossBefore"])
    assert float(info["dLoss"]) == 0.0 and float(info["MeanKL"]) == float(info["MeanKLBefore"])


def test_rejects_when_direction_is_not_finite():
    _, _, theta0, loss_fn, _ = _quadratic_problem()
    kl_fn = lambda th: -0.5 * jnp.sum((th - theta0) ** 2)  # noqa: E731  (negative curvature: β is NaN)
    new, info = _jit_step(loss_fn, kl_fn, max_kl=0.01)(theta0)
    assert int(info["Accepted"]) == 0
    np.testing.assert_array_equal(new, theta0)


def test_damping_changes_direction():
    f, g, theta0, loss_fn, kl_fn = _quadratic_problem(seed=4)
    lam = 2.0
    new, info = _jit_step(loss_fn, kl_fn, max_kl=0.01, damping=lam, cg_iters=20)(theta0)
    assert int(info["Accepted"]) == 1
    f64, g64 = np.asarray(f, np.float64), np.asarray(g, np.float64)
    damped = np.linalg.solve(f64 + lam * np.eye(5), g64)
    undamped = np.linalg.solve(f64, g64)
    step = np.asarray(theta0 - new, np.float64)

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    assert cos(step, damped) > 1 - 1e-5
    assert cos(step, undamped) < 1 - 1e-3
    d, beta = trpo_search_direction(loss_fn, kl_fn, theta0, max_kl=0.01, damping=lam, cg_iters=20)
    np.testing.assert_allclose(d, damped, rtol=1e-4)
    np.testing.assert_allclose(beta, np.sqrt(0.02 / (damped @ (f64 + lam * np.eye(5)) @ damped)), rtol=1e-4)
    assert float(info["MeanKL"]) < 0.01  # damping shortens the step inside the trust region
