"""Meta-test inner optimizers and the normalised inner gradient (docs/algorithms.md, "The inner step"
and "Meta-testing"): the default step is the papers' θ + α⊙∇J^inner bit for bit; ``adam`` is the
original ProMP meta-tester's Adam (β1 0.9, β2 0.999, ε 1e-8, lr = inner_lr, state kept across the
steps; ``maml_zoo/meta_tester.py`` with ``algos/vpg.py``); ``inner_grad_norm=unit`` takes steps of
norm α and the meta-gradient differentiates through the normalisation."""

from __future__ import annotations

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from adaptrl.algorithms.meta_rl import MetaRL, sample_and_adapt
from adaptrl.cli import main
from adaptrl.errors import ConfigError
from adaptrl.experiment.config import build_config
from adaptrl.experiment.evaluation import load_run
from adaptrl.experiment.trainer import train
from adaptrl.meta import adaptation
from adaptrl.meta.adaptation import (
    GRAD_NORM_EPS,
    INNER_OPTIMIZERS,
    adapt_step,
    adapt_step_with,
    ascend,
    inner_objective,
    surrogate_inputs,
)
from adaptrl.meta.batch import StepBatch, stack_steps
from adaptrl.meta.objectives import OuterSpec, task_terms
from adaptrl.meta.surrogates import OUTER_SURROGATES, reduce_surrogate
from adaptrl.policies import GaussianDist, make_policy


def spec(kind: str = "likelihood_ratio", norm: str = "none", steps: int = 1,
         reduction: str = "per_step") -> OuterSpec:
    return OuterSpec(kind, steps, "log_likelihood", math.inf, False, reduction, inner_grad_norm=norm)


def batch(key, r=3, t=6, obs_dim=2, act_dim=1) -> StepBatch:
    """A synthetic one-task StepBatch with a few padded steps (as tests/test_meta.py)."""
    ks = jax.random.split(key, 8)
    mask = jnp.ones((r, t)).at[:, -2:].set(0.0)
    return StepBatch(
        observations=jax.random.normal(ks[0], (r, t, obs_dim)),
        actions=jax.random.normal(ks[1], (r, t, act_dim)), mask=mask,
        rewards=jax.random.normal(ks[2], (r, t)) * mask, advantages=jax.random.normal(ks[3], (r, t)) * mask,
        dice_rewards=jax.random.normal(ks[4], (r, t)) * mask, logp_old=jax.random.normal(ks[5], (r, t)) - 1.0,
        dist_old=GaussianDist(0.1 * jax.random.normal(ks[6], (r, t, act_dim)),
                              0.1 * jax.random.normal(ks[7], (r, t, act_dim))),
        reward_z=jnp.asarray(0.7), cv_baselines=jnp.zeros((r, t)))


@pytest.fixture(scope="module")
def small_policy():
    policy = make_policy(1, hidden_sizes=(5,))
    return policy, policy.init(jax.random.PRNGKey(1), jnp.zeros((1, 2)))


def flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0], np.float64)


def test_default_inner_step_is_the_papers_step_bit_for_bit(small_policy):
    """inner_grad_norm defaults to none, and then adapt_step is θ + α⊙∇J^inner computed as before
    (scalar and per-parameter α, eager and jitted): the same bits, not merely close."""
    policy, params = small_policy
    assert build_config("promp", "PointCorners").inner_grad_norm == "none"
    assert OuterSpec("lvc", 1, "log_likelihood", math.inf, False, "per_step").inner_grad_norm == "none"
    data, s = batch(jax.random.PRNGKey(2)), spec("dice")
    per_param = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.07), params)

    def before(p, alpha):  # the inner step as it was written before inner_grad_norm existed
        g = jax.grad(lambda q: inner_objective(policy, q, data, s))(p)
        if isinstance(alpha, dict):
            return jax.tree_util.tree_map(lambda x, a, y: x + a * y, p, alpha, g)
        return jax.tree_util.tree_map(lambda x, y: x + alpha * y, p, g)

    for alpha in (0.1, per_param):
        assert np.array_equal(flat(adapt_step(policy, params, alpha, data, s)), flat(before(params, alpha)))
    jitted = jax.jit(lambda p, a: adapt_step(policy, p, a, data, s))(params, 0.1)  # as the learner runs it
    assert np.array_equal(flat(jitted), flat(jax.jit(before)(params, 0.1)))
    assert not np.array_equal(flat(adapt_step(policy, params, 0.1, data, spec("dice", "unit"))),
                              flat(adapt_step(policy, params, 0.1, data, s)))


def test_adam_steps_match_the_hand_computed_update(small_policy):
    """Adam from zero state: m̂ = g, v̂ = g², so the first step moves every coordinate by
    lr·g/(|g| + ε) ≈ lr·sign(g) (a quadratic J = −½‖θ − c‖², and the policy's LVC surrogate); the
    second step uses the moments carried from the first (bias-corrected, β1 0.9, β2 0.999), not a
    fresh state."""
    assert (adaptation.ADAM_B1, adaptation.ADAM_B2, adaptation.ADAM_EPS) == (0.9, 0.999, 1e-8)
    adam, lr = INNER_OPTIMIZERS.get("adam"), 0.1
    theta, c = jnp.array([0.3, -2.0, 1.0, 5.0]), jnp.array([1.0, -2.5, 1.0 + 1e-3, -4.0])
    direction, _ = adam.update(c - theta, adam.init(theta), theta)  # ∇J = c − θ
    moved = ascend(theta, lr, direction)
    g = np.asarray(c - theta, np.float64)
    np.testing.assert_allclose(moved - theta, lr * g / (np.abs(g) + 1e-8), atol=1e-6)  # float32 θ
    np.testing.assert_allclose(moved - theta, lr * np.sign(g), atol=1e-5)  # ≈ lr·sign(g)

    policy, params = small_policy
    s = spec("likelihood_ratio")
    b1, b2 = batch(jax.random.PRNGKey(3)), batch(jax.random.PRNGKey(4))
    state = adam.init(params)
    theta1, state = adapt_step_with(adam, policy, params, state, lr, b1, s)
    theta2, state = adapt_step_with(adam, policy, theta1, state, lr, b2, s)
    g1 = flat(jax.grad(lambda p: inner_objective(policy, p, b1, s))(params))
    g2 = flat(jax.grad(lambda p: inner_objective(policy, p, b2, s))(theta1))
    x0 = flat(params)
    np.testing.assert_allclose(flat(theta1), x0 + lr * g1 / (np.abs(g1) + 1e-8), rtol=0, atol=2e-6)  # float32
    assert np.abs(np.abs(flat(theta1) - x0) - lr).max() < 1e-4  # every coordinate moved by ≈ lr
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2
    expected = flat(theta1) + lr * (m / (1 - 0.9 ** 2)) / (np.sqrt(v / (1 - 0.999 ** 2)) + 1e-8)
    np.testing.assert_allclose(flat(theta2), expected, rtol=1e-5, atol=5e-6)
    fresh = flat(theta1) + lr * g2 / (np.abs(g2) + 1e-8)  # what a state reset would give
    assert np.abs(flat(theta2) - fresh).max() > 1e-2
    assert int(state.count) == 2


def test_normalised_step_has_norm_alpha_for_estimators_of_different_scale(small_policy):
    """inner_grad_norm=unit: ‖θ' − θ‖ = α for LVC and DiCE although their gradients differ in
    norm (DiCE weighs raw rewards, LVC standardised advantages: here the rewards are 20× larger);
    a zero gradient gives a zero step, and a finite meta-gradient."""
    policy, params = small_policy
    data, alpha = batch(jax.random.PRNGKey(5)), 0.05
    data = data._replace(dice_rewards=20.0 * data.dice_rewards)
    raw = {kind: np.linalg.norm(flat(jax.grad(lambda p, k=kind: inner_objective(policy, p, data, spec(k)))(
        params))) for kind in ("likelihood_ratio", "dice")}
    assert raw["dice"] > 5 * raw["likelihood_ratio"], raw
    for kind in raw:
        step = flat(adapt_step(policy, params, alpha, data, spec(kind, "unit"))) - flat(params)
        np.testing.assert_allclose(np.linalg.norm(step), alpha, rtol=1e-5)
        unnormalised = flat(adapt_step(policy, params, alpha, data, spec(kind))) - flat(params)
        np.testing.assert_allclose(np.linalg.norm(unnormalised), alpha * raw[kind], rtol=1e-4)
    still = data._replace(advantages=jnp.zeros_like(data.advantages))
    zero_step = adapt_step(policy, params, alpha, still, spec("likelihood_ratio", "unit"))
    assert np.array_equal(flat(zero_step), flat(params))
    post = batch(jax.random.PRNGKey(6))
    zero_norm = spec("likelihood_ratio", "unit")
    zero_then_post = stack_steps([still, post])
    meta = jax.grad(lambda p: task_terms(policy, zero_norm, p, alpha, zero_then_post).objective)(params)
    assert np.all(np.isfinite(flat(meta)))
    assert GRAD_NORM_EPS == 1e-8


def test_meta_gradient_through_the_normalised_step_matches_finite_differences(small_policy):
    """Two normalised inner steps, then the outer objective: the autodiff meta-gradient matches
    central finite differences of the post-update objective (float64, as tests/test_tmaml.py), and
    differs from the gradient that treats ‖g‖ as a constant (the normalisation is differentiated).
    LVC, ProMP's inner estimator (not DiCE: its magic box makes the second derivative an estimator
    of the expected Hessian, by design, not the derivative of the sampled gradient that finite
    differences measure)."""
    policy, params = small_policy
    alpha = 0.2
    s = spec("likelihood_ratio", "unit", steps=2, reduction="per_trajectory")
    with jax.enable_x64(True):
        data = [jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), batch(jax.random.PRNGKey(k)))
                for k in (20, 21, 22)]
        batches = stack_steps(data)
        x0, unravel = ravel_pytree(jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), params))

        def objective(x):
            return task_terms(policy, s, unravel(x), alpha, batches).objective

        def objective_norm_held(x):  # the same forward pass, ‖g‖ outside the derivative
            p = unravel(x)
            plain = s._replace(inner_grad_norm="none")
            for step_batch in data[:2]:
                g = jax.grad(lambda q, b=step_batch: inner_objective(policy, q, b, plain))(p)
                squared = sum(jnp.sum(v ** 2) for v in jax.tree_util.tree_leaves(g))
                norm = jax.lax.stop_gradient(jnp.sqrt(squared + GRAD_NORM_EPS ** 2))
                p = jax.tree_util.tree_map(lambda a, v, n=norm: a + alpha * v / n, p, g)
            post = surrogate_inputs(policy, p, data[2], plain)
            outer = OUTER_SURROGATES.get("log_likelihood")(post)
            return reduce_surrogate(outer, data[2].mask, "per_trajectory")

        objective, objective_norm_held = jax.jit(objective), jax.jit(objective_norm_held)
        np.testing.assert_allclose(objective_norm_held(x0), objective(x0), rtol=1e-12)
        grad = jax.jit(jax.grad(objective))(x0)
        held = jax.jit(jax.grad(objective_norm_held))(x0)
        for seed in (7, 8):
            direction = jax.random.normal(jax.random.PRNGKey(seed), x0.shape, jnp.float64)
            eps = 1e-5
            numeric = (objective(x0 + eps * direction) - objective(x0 - eps * direction)) / (2 * eps)
            np.testing.assert_allclose(grad @ direction, numeric, rtol=1e-6)
            assert abs(float(held @ direction - numeric)) > 1e-3 * abs(float(numeric)) + 1e-6


def test_training_with_normalised_inner_gradient_steps_alpha_and_updates():
    """--set inner_grad_norm=unit reaches the learner: every task's inner step during sampling has
    norm α, and the outer update through the normalised step (tests above: its meta-gradient) is
    finite and moves the parameters."""
    config = build_config("promp", "PointCorners", overrides=dict(
        tasks_per_iter=2, rollouts_per_task=2, horizon=8, inner_steps=1, hidden_sizes=(8,), outer_steps=1,
        env_options={"reward_type": "dense"}, inner_grad_norm="unit"))
    exp = MetaRL.build(config)
    try:
        assert exp.learner.spec.inner_grad_norm == "unit"
        state = exp.learner.init(jax.random.PRNGKey(0))
        tasks = exp.env.sample_tasks(2, seed=0)
        result = sample_and_adapt(exp, state.meta_params, tasks, jax.random.PRNGKey(1), config.inner_steps)
        steps = jax.vmap(lambda a, b: ravel_pytree(a)[0] - ravel_pytree(b)[0])(*result.step_params[::-1])
        np.testing.assert_allclose(np.linalg.norm(np.asarray(steps), axis=1), config.inner_lr, rtol=1e-5)
        new_state, info = exp.learner.update(state, stack_steps(result.batches))
    finally:
        exp.close()
    assert all(math.isfinite(v) for v in info.values())
    a = flat(new_state.meta_params)
    assert np.all(np.isfinite(a)) and not np.allclose(a, flat(state.meta_params))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The tiny PointCorners ProMP run (one iteration; dense reward, so that a horizon of 8 has
    non-zero advantages and the adaptation moves)."""
    run = tmp_path_factory.mktemp("inner") / "run"
    config = build_config("promp", "PointCorners", overrides={
        "tasks_per_iter": 2, "rollouts_per_task": 2, "horizon": 8, "iterations": 1,
        "env_options": {"reward_type": "dense"}})
    train(config, run, show_progress=False, tensorboard=False, make_plots=False)
    return run, config


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_eval_with_adam_writes_its_own_csv_and_differs_from_sgd(trained_run, capsys):
    """adaptrl eval --inner-optimizer adam: its own CSV (the default file keeps its name and its
    sgd numbers), rows recording the optimizer and lr; the same step-0 return and another
    post-update return. --inner-grad-norm unit with --inner-lr: steps of exactly that norm; the
    run's own settings given explicitly are the default evaluation."""
    run, config = trained_run
    seed = config.seed + 1_000_003
    assert main(["eval", str(run), "--tasks", "3", "--json"]) == 0
    sgd = json.loads(capsys.readouterr().out)
    assert "adaptation" not in sgd
    default_csv = run / f"eval_k1_tasks3_seed{seed}.csv"
    assert main(["eval", str(run), "--tasks", "3", "--inner-optimizer", "adam", "--json"]) == 0
    adam = json.loads(capsys.readouterr().out)
    assert adam["adaptation"] == {"inner_optimizer": "adam", "inner_lr": 0.1, "inner_grad_norm": "none"}
    adam_csv = run / f"eval_k1_tasks3_seed{seed}_adam_lr0.1_gradnorm-none.csv"
    default_rows, adam_rows = read_rows(default_csv), read_rows(adam_csv)
    assert "inner_optimizer" not in default_rows[0]
    assert [r["inner_optimizer"] for r in adam_rows] == ["adam", "adam"]
    assert [float(r["inner_lr"]) for r in adam_rows] == [0.1, 0.1]
    assert [float(r["mean_return"]) for r in default_rows] == [row["mean_return"] for row in sgd["rows"]]
    assert sgd["rows"][0]["mean_return"] == adam["rows"][0]["mean_return"]  # θ_0, same tasks and noise
    assert sgd["rows"][1]["mean_return"] != adam["rows"][1]["mean_return"]

    _, state, _ = load_run(run)
    algorithm = MetaRL.build(config)
    try:
        unit = algorithm.evaluate(state, tasks=3, seed=seed, inner_lr=0.05, inner_grad_norm="unit")
        same = algorithm.evaluate(state, tasks=3, seed=seed, inner_lr=config.inner_lr, inner_grad_norm="none")
    finally:
        algorithm.close()
    assert unit["adaptation"] == {"inner_optimizer": "sgd", "inner_lr": 0.05, "inner_grad_norm": "unit"}
    steps = jax.vmap(lambda a, b: ravel_pytree(a)[0] - ravel_pytree(b)[0])(
        unit["result"].step_params[1], unit["result"].step_params[0])
    np.testing.assert_allclose(np.linalg.norm(np.asarray(steps), axis=1), 0.05, rtol=1e-5)
    assert "adaptation" not in same and same["rows"] == sgd["rows"]  # the run's own settings, given


@pytest.mark.parametrize("args, message", [
    (["--inner-optimizer", "rmsprop"],
     "error: unknown inner optimizer 'rmsprop'. Valid inner optimizers: adam, sgd."),
    (["--inner-lr", "-1"], "error: --inner-lr must be a finite number > 0 (omit it for the run's inner_lr), "
                           "got -1.0."),
    (["--inner-grad-norm", "l2"], "error: unknown inner grad norm 'l2'. Valid inner grad norms: none, unit."),
])
def test_bad_meta_test_adaptation_is_one_config_error(tmp_path, capsys, args, message):
    """Checked before the run is read (the run directory does not even exist): one line."""
    assert main(["eval", str(tmp_path / "absent"), *args]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]
    with pytest.raises(ConfigError):
        adaptation.check_inner_options(*{"--inner-optimizer": ("rmsprop",), "--inner-lr": ("sgd", -1.0),
                                         "--inner-grad-norm": ("sgd", None, "l2")}[args[0]])
    with pytest.raises(ConfigError, match="Valid inner grad norms: none, unit"):
        build_config("promp", "PointCorners", overrides={"inner_grad_norm": "l2"})
