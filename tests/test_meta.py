"""Meta-learner: differentiable adaptation (ProMP §5, Eq. 5–6; App. A.1, Eq. 14), outer steps (ProMP
§7.1 VPG, App. C.2 TRPO, Eq. 13 and Alg. 1), E-MAML term (ProMP App. A.2–A.3), learned step sizes,
presets (docs/algorithms.md; ProMP App. D)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from adaptrl import estimators as est
from adaptrl.algorithms import ALGORITHMS
from adaptrl.algorithms.meta_rl import MetaRL, sample_and_adapt
from adaptrl.errors import ConfigError
from adaptrl.experiment.config import build_config
from adaptrl.meta.adaptation import adapt, adapt_step, inner_objective, policy_log_prob
from adaptrl.meta.batch import StepBatch, stack_steps, step
from adaptrl.meta.learner import MetaLearner
from adaptrl.meta.objectives import OuterSpec, task_terms
from adaptrl.meta.surrogates import INNER_SURROGATES
from adaptrl.policies import GaussianDist, make_policy


def inner_spec(kind: str, reduction: str) -> OuterSpec:
    """The static spec of an inner step with surrogate ``kind``."""
    return OuterSpec(kind, 1, "log_likelihood", float("inf"), False, reduction)

TINY = dict(tasks_per_iter=4, rollouts_per_task=3, horizon=12, hidden_sizes=(8,), iterations=2,
            env_options={"reward_type": "dense"})


def tiny_config(algo="promp", env="PointCorners", **overrides):
    return build_config(algo, env, overrides={**TINY, **overrides})


def random_batch(key, r=3, t=6, obs_dim=2, act_dim=1, m=None):
    """A synthetic StepBatch for one task (or ``m`` tasks) with a few padded steps."""
    lead = (r, t) if m is None else (m, r, t)
    ks = jax.random.split(key, 8)
    mask = jnp.ones(lead).at[..., -2:].set(0.0).at[..., 0, -3].set(0.0)
    return StepBatch(
        observations=jax.random.normal(ks[0], (*lead, obs_dim)),
        actions=jax.random.normal(ks[1], (*lead, act_dim)),
        mask=mask,
        rewards=jax.random.normal(ks[2], lead) * mask,
        advantages=jax.random.normal(ks[3], lead) * mask,
        dice_rewards=jax.random.normal(ks[4], lead) * mask,
        logp_old=jax.random.normal(ks[5], lead) - 1.0,
        dist_old=GaussianDist(0.1 * jax.random.normal(ks[6], (*lead, act_dim)),
                              0.1 * jax.random.normal(ks[7], (*lead, act_dim))),
        reward_z=jnp.asarray(0.7) if m is None else jnp.linspace(-1, 1, m),
        cv_baselines=jnp.zeros(lead),
    )


@pytest.fixture(scope="module")
def small_policy():
    policy = make_policy(1, hidden_sizes=(5,))
    params = policy.init(jax.random.PRNGKey(1), jnp.zeros((1, 2)))
    return policy, params


@pytest.mark.parametrize("kind", ["pgt", "lvc", "likelihood_ratio", "dice"])
def test_meta_gradient_is_I_plus_alpha_H_times_outer_gradient(small_policy, kind):
    """ProMP §5, Eq. 5–6: autodiff through the inner step applies (I + αĤ) exactly (≤ 500 parameters)."""
    policy, params = small_policy
    flat, unravel = ravel_pytree(params)
    assert flat.size <= 500
    pre, post = random_batch(jax.random.PRNGKey(2)), random_batch(jax.random.PRNGKey(3))
    alpha = 0.3

    def inner(p):
        return inner_objective(policy, p, pre, inner_spec(kind, "per_trajectory"))

    def outer(p):
        return est.pgt_from_advantages(policy_log_prob(policy, p, post)[0], post.advantages, post.mask)

    def meta(f):
        adapted = adapt_step(policy, unravel(f), alpha, pre, inner_spec(kind, "per_trajectory"))
        return outer(adapted)

    with jax.enable_x64(True):
        flat64 = flat.astype(jnp.float64)
        h = jax.hessian(lambda f: inner(unravel(f)))(flat64)
        adapted = flat64 + alpha * jax.grad(lambda f: inner(unravel(f)))(flat64)
        outer_grad = jax.grad(lambda f: outer(unravel(f)))(adapted)
        expected = (jnp.eye(flat.size) + alpha * h) @ outer_grad
        got = jax.grad(meta)(flat64)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


def test_alpha_zero_meta_gradient_is_policy_gradient(small_policy):
    """ProMP App. A.1, Eq. 14: with α = 0 the meta-gradient is the plain gradient of the outer surrogate."""
    policy, params = small_policy
    pre, post = random_batch(jax.random.PRNGKey(4)), random_batch(jax.random.PRNGKey(5))
    spec = OuterSpec("pgt", 1, "log_likelihood", float("inf"), False, "per_trajectory")
    batches = stack_steps([pre, post])
    got = jax.grad(lambda p: task_terms(policy, spec, p, 0.0, batches).objective)(params)
    want = jax.grad(lambda p: est.pgt_from_advantages(policy_log_prob(policy, p, post)[0],
                                                      post.advantages, post.mask))(params)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_multi_step_adaptation_uses_one_batch_per_step(small_policy):
    """ProMP Alg. 1 / App. A.1: step k uses batch k (and only it); the chain is a composition of steps."""
    policy, params = small_policy
    batches = [random_batch(jax.random.PRNGKey(10 + k)) for k in range(3)]
    chain = adapt(policy, params, 0.2, batches, inner_spec("lvc", "per_step"))
    assert len(chain) == 4
    manual = params
    for k in range(3):
        manual = adapt_step(policy, manual, 0.2, batches[k], inner_spec("lvc", "per_step"))
        np.testing.assert_allclose(ravel_pytree(chain[k + 1])[0], ravel_pytree(manual)[0], rtol=1e-6)
    swapped = adapt(policy, params, 0.2, [batches[1], batches[0], batches[2]], inner_spec("lvc", "per_step"))
    assert not np.allclose(ravel_pytree(swapped[-1])[0], ravel_pytree(chain[-1])[0])


def test_sample_and_adapt_samples_k_plus_one_batches_with_adapted_params():
    """ProMP App. A.1 / Alg. 1: K inner steps consume K pre-update batches plus one post-update batch."""
    config = tiny_config(inner_steps=2)
    exp = MetaRL.build(config)
    calls = []
    collect = exp.sampler.collect

    def counting(params, tasks, key, sim_params=None):
        calls.append(ravel_pytree(jax.tree_util.tree_map(lambda x: x[0], params))[0])
        return collect(params, tasks, key, sim_params=sim_params)

    exp.sampler.collect = counting
    state = exp.learner.init(jax.random.PRNGKey(0))
    tasks = exp.env.sample_tasks(config.tasks_per_iter, seed=0)
    result = sample_and_adapt(exp, state.meta_params, tasks, jax.random.PRNGKey(1), 2)
    assert len(calls) == 3 and len(result.trajectories) == 3
    assert not np.allclose(calls[0], calls[1]) and not np.allclose(calls[1], calls[2])
    np.testing.assert_allclose(calls[0], ravel_pytree(state.meta_params["policy"])[0])


def _batches_for(config, seed=0):
    exp = MetaRL.build(config)
    state = exp.learner.init(jax.random.PRNGKey(seed))
    tasks = exp.env.sample_tasks(config.tasks_per_iter, seed=seed)
    result = sample_and_adapt(exp, state.meta_params, tasks, jax.random.PRNGKey(seed + 1),
                              config.inner_steps)
    return exp, state, stack_steps(result.batches)


def test_promp_with_one_step_no_clip_no_kl_equals_lvc_vpg():
    """ProMP Eq. 13, Alg. 1: N = 1, ε = ∞, η = 0 makes a ProMP iteration an LVC-VPG iteration."""
    promp = tiny_config("promp", outer_steps=1, clip_eps=float("inf"), kl_coef=0.0)
    lvc = tiny_config("lvc-vpg")
    exp, state, batches = _batches_for(promp)
    new_promp, _ = exp.learner.update(state, batches)
    lvc_learner = MetaLearner(lvc, exp.env.spec.obs_dim, exp.env.spec.act_dim)
    new_lvc, _ = lvc_learner.update(lvc_learner.init(jax.random.PRNGKey(0)), batches)
    a, b = ravel_pytree(new_promp.meta_params)[0], ravel_pytree(new_lvc.meta_params)[0]
    assert not np.allclose(a, ravel_pytree(state.meta_params)[0])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_promp_kl_penalty_is_zero_with_zero_gradient_at_the_start():
    """ProMP Eq. 13: at the first ProMP step θ = θ_o, so the inner KL is 0 and adds no gradient."""
    config = tiny_config("promp", outer_steps=1)
    exp, state, batches = _batches_for(config)
    no_kl = dataclasses.replace(config, kl_coef=0.0)
    with_kl_learner, no_kl_learner = exp.learner, MetaLearner(no_kl, 2, 2)
    info = with_kl_learner.evaluate(state, batches)
    assert info["KLInner"] < 1e-6
    a, _ = with_kl_learner.update(state, batches)
    b, _ = no_kl_learner.update(no_kl_learner.init(jax.random.PRNGKey(0)), batches)
    np.testing.assert_allclose(ravel_pytree(a.meta_params)[0], ravel_pytree(b.meta_params)[0], rtol=1e-5,
                               atol=1e-7)


def test_trpo_outer_step_respects_the_kl_bound():
    """ProMP App. C.2, Eq. 106: the post-update policies' mean KL after a MAML-TRPO step is ≤ δ."""
    config = tiny_config("maml-trpo", max_kl=0.005)
    exp, state, batches = _batches_for(config)
    new_state, info = exp.learner.update(state, batches)
    assert info["Accepted"] == 1.0
    after = exp.learner.evaluate(new_state, batches)
    assert 0 < after["MeanKL"] <= 0.005 * (1 + 1e-4)
    assert info["LossAfter"] < info["LossBefore"]


def test_emaml_term_adds_exactly_its_gradient():
    """ProMP App. A.3, Eq. 35: dropping the E-MAML term recovers MAML; the difference is the term's
    gradient."""
    config = tiny_config("maml-vpg", loss_reduction="per_trajectory")
    exp, state, batches = _batches_for(config)
    plain = exp.learner
    emaml = MetaLearner(dataclasses.replace(config, emaml=True), 2, 2)
    theta = state.meta_params

    def grads(learner):
        return jax.grad(lambda mp: learner.loss(mp, batches, state.kl_coefs)[0])(theta)

    diff = ravel_pytree(grads(emaml))[0] - ravel_pytree(grads(plain))[0]

    def term(mp):
        pre = step(batches, 0)

        def one(b, z):
            logp = policy_log_prob(plain.policy, mp["policy"], b)[0]
            return est.emaml_pre_term(logp, b.mask, z)

        per_task = jax.vmap(one)(pre, step(batches, 1).reward_z)
        return -jnp.mean(per_task)

    np.testing.assert_allclose(diff, ravel_pytree(jax.grad(term)(theta))[0], rtol=1e-4, atol=1e-6)
    assert np.abs(diff).max() > 1e-6


def test_learned_step_size_receives_gradient_and_trains():
    """The per-parameter step size (Meta-SGD style) is a meta-parameter the optimizer updates."""
    config = tiny_config("maml-vpg", learn_inner_lr=True, inner_lr=0.05)
    exp, state, batches = _batches_for(config)
    assert set(state.meta_params) == {"policy", "inner_lr"}
    new_state, _ = exp.learner.update(state, batches)
    before = ravel_pytree(state.meta_params["inner_lr"])[0]
    after = ravel_pytree(new_state.meta_params["inner_lr"])[0]
    np.testing.assert_allclose(before, 0.05)
    assert np.abs(after - before).max() > 1e-5


def test_adaptive_kl_coefficient_rule():
    """ProMP's adaptive η (the original ProMP code; docs/algorithms.md, "Outer objectives"): ÷2 below
    target/1.5, ×2 above 1.5·target."""
    base = tiny_config("promp", adaptive_kl=True, kl_coef=1e-3, outer_steps=2)
    exp, state, batches = _batches_for(base)
    low = MetaLearner(dataclasses.replace(base, target_kl=1e3), 2, 2)
    high = MetaLearner(dataclasses.replace(base, target_kl=1e-12), 2, 2)
    s_low, _ = low.update(low.init(jax.random.PRNGKey(0)), batches)
    s_high, _ = high.update(high.init(jax.random.PRNGKey(0)), batches)
    np.testing.assert_allclose(s_low.kl_coefs, 5e-4, rtol=1e-6)
    np.testing.assert_allclose(s_high.kl_coefs, 2e-3, rtol=1e-6)


def test_vpg_outer_step_is_one_adam_step():
    """ProMP §7.1, Table 1 (VPG outer step): one Adam step of size β on the first update moves every
    coordinate by ≈ β."""
    config = tiny_config("maml-vpg", outer_lr=1e-3)
    exp, state, batches = _batches_for(config)
    new_state, info = exp.learner.update(state, batches)
    delta = ravel_pytree(new_state.meta_params)[0] - ravel_pytree(state.meta_params)[0]
    moved = np.abs(delta)[np.abs(delta) > 0]
    np.testing.assert_allclose(moved, 1e-3, rtol=1e-2)
    assert set(info) >= {"LossBefore", "LossAfter"}


@pytest.mark.parametrize("algo", sorted(a for a in ALGORITHMS if "model" not in ALGORITHMS.get(a).settings))
def test_every_preset_runs_two_iterations_without_nan(algo, tmp_path):
    """docs/algorithms.md preset table (ProMP §7, TMAML §5): every preset builds and runs 2 iterations
    on PointCorners without NaN."""
    from adaptrl.experiment.trainer import train
    from adaptrl.plots import read_progress

    config = tiny_config(algo, inner_steps=2)
    result = train(config, tmp_path / algo, show_progress=False, tensorboard=False, make_plots=False)
    progress = read_progress(tmp_path / algo)
    assert len(result.rows) == 2 and list(progress["Itr"]) == [0, 1]
    for key in ("Step_0-AverageReturn", "Step_2-AverageReturn", "LossBefore", "LossAfter"):
        assert np.all(np.isfinite(progress[key])), key


def test_presets_match_promp_table_1():
    """ProMP App. D: Table 1 values and App. D.2 overrides (inner steps, horizon, sizes, RandParams lr)."""
    promp = build_config("promp", "HalfCheetahRandDirec", preset="paper")
    assert (promp.tasks_per_iter, promp.rollouts_per_task, promp.hidden_sizes) == (40, 20, (64, 64))
    assert (promp.outer_lr, promp.outer_steps, promp.clip_eps, promp.kl_coef) == (1e-3, 5, 0.3, 5e-4)
    assert (promp.inner_steps, promp.inner_lr, promp.horizon) == (1, 0.1, 100)
    assert build_config("maml-trpo", "HalfCheetahRandDirec").max_kl == 0.01
    assert build_config("maml-vpg", "HalfCheetahRandDirec").outer_lr == 1e-3
    assert build_config("promp", "PointCorners", preset="paper").inner_steps == 3
    assert build_config("promp", "AntRandGoal", preset="paper").inner_steps == 2
    assert build_config("maml-trpo", "HumanoidRandDirec", preset="paper").hidden_sizes == (128, 128)
    hopper = build_config("promp", "HopperRandParams", preset="paper")
    assert (hopper.inner_lr, hopper.outer_steps, hopper.adaptive_kl, hopper.horizon) == (0.05, 3, True, 200)
    assert build_config("maml-trpo", "HopperRandParams", preset="paper").outer_steps == 1
    assert build_config("promp", "WalkerFwdBack", preset="paper").env == "Walker2DRandDirec"
    nav = build_config("maml-trpo", "Point2DNavigation", preset="paper")  # MAML §5.3's own setting
    assert (nav.tasks_per_iter, nav.rollouts_per_task, nav.inner_steps, nav.inner_lr) == (20, 20, 1, 0.1)
    assert (nav.horizon, nav.hidden_sizes, nav.max_kl) == (100, (100, 100), 0.01)
    assert build_config("maml-trpo", "PointCorners", preset="paper").inner_steps == 3  # ProMP's elsewhere


@pytest.mark.parametrize("learn_inner_lr", [False, True])
def test_trpo_gauss_newton_curvature_equals_the_exact_kl_hessian_at_the_sampling_parameters(learn_inner_lr):
    """MetaLearner.outer_kl_curvature: J_Uᵀ H J_U v equals the exact Hessian-vector product of
    mean_i KL(π_old,K ‖ π_θK(θ)) through two adaptation steps at the sampling parameters (where
    ∂KL/∂θ_K = 0), also with a learned step size; away from them the two differ."""
    from adaptrl.optim import hvp

    config = tiny_config("maml-trpo", inner_steps=2, learn_inner_lr=learn_inner_lr)
    exp, state, batches = _batches_for(config)
    learner = exp.learner
    v = jax.tree_util.tree_map(lambda x: jax.random.normal(jax.random.PRNGKey(x.size), x.shape),
                               state.meta_params)

    def outer_kl(meta_params):
        return learner.terms(meta_params, batches).outer_kl

    exact = ravel_pytree(hvp(outer_kl, state.meta_params, v))[0]
    gauss_newton = ravel_pytree(learner.outer_kl_curvature(state.meta_params, batches)(v))[0]
    assert np.linalg.norm(exact) > 0
    np.testing.assert_allclose(gauss_newton, exact, rtol=2e-3, atol=2e-3 * float(np.abs(exact).max()))
    moved = jax.tree_util.tree_map(lambda p, d: p + 0.3 * d, state.meta_params, v)
    far_exact = ravel_pytree(hvp(outer_kl, moved, v))[0]
    far_gn = ravel_pytree(learner.outer_kl_curvature(moved, batches)(v))[0]
    assert np.linalg.norm(far_gn - far_exact) > 1e-3 * np.linalg.norm(far_exact)


def test_one_step_adaptation_transpose_is_its_forward_product():
    """MetaLearner.adaptation_products with one plain step: J_Uᵀ w taken as Σ_i J_Ui w_i (forward
    mode, J_Ui = I + α∇²J^inner_i symmetric) equals the transpose of the linearised adaptation for
    every inner estimator, and J_U v its J_U v; the Gauss-Newton KL curvature built on it equals
    the exact Hessian-vector product at the sampling parameters. Two steps, a learned α or a
    normalised inner gradient are not symmetric and take the transpose."""
    from adaptrl.optim import hvp

    exp, state, batches = _batches_for(tiny_config("maml-trpo", inner_steps=1))
    meta_params = state.meta_params
    key = iter(jax.random.split(jax.random.PRNGKey(3), 32))
    v = jax.tree_util.tree_map(lambda x: jax.random.normal(next(key), x.shape), meta_params)
    flat = lambda tree: ravel_pytree(tree)[0]  # noqa: E731
    obs_dim, act_dim = exp.env.spec.obs_dim, exp.env.spec.act_dim
    for inner_estimator in sorted(INNER_SURROGATES.names()):
        # the same trajectories serve every estimator: the batch carries what each one needs
        config = tiny_config("maml-trpo", inner_steps=1, inner_estimator=inner_estimator)
        learner = MetaLearner(config, obs_dim, act_dim)
        assert learner.symmetric_adaptation(meta_params)
        adapted, u_jvp, u_vjp = learner.adaptation_products(meta_params, batches)
        w = jax.tree_util.tree_map(lambda x: jax.random.normal(next(key), x.shape), adapted)
        reference_adapted, reference_jvp = jax.linearize(
            lambda mp, learner=learner: learner.adapted_params(mp, batches), meta_params)
        transposed = flat(jax.linear_transpose(reference_jvp, meta_params)(w)[0])
        summed = flat(jax.tree_util.tree_map(lambda x: x.sum(0), w))  # J_Uᵀ w without the α∇² part
        assert np.linalg.norm(transposed - summed) > 1e-3 * np.linalg.norm(transposed), inner_estimator
        np.testing.assert_allclose(flat(adapted), flat(reference_adapted), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(flat(u_jvp(v)), flat(reference_jvp(v)), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(flat(u_vjp(w)), transposed, rtol=1e-4,
                                   atol=1e-5 * float(np.abs(transposed).max()), err_msg=inner_estimator)
    # at the sampling parameters of the batch (its post-update steps came from the default
    # estimator's adaptation) the curvature built on the symmetric products is the exact one
    exact = flat(hvp(lambda mp: exp.learner.terms(mp, batches).outer_kl, meta_params, v))
    np.testing.assert_allclose(flat(exp.learner.outer_kl_curvature(meta_params, batches)(v)), exact,
                               rtol=2e-3, atol=2e-3 * float(np.abs(exact).max()))
    for other in (dict(inner_steps=2), dict(learn_inner_lr=True), dict(inner_grad_norm="unit")):
        learner_other = MetaLearner(tiny_config("maml-trpo", **{"inner_steps": 1, **other}), obs_dim, act_dim)
        params = learner_other.init(jax.random.PRNGKey(0)).meta_params
        assert not learner_other.symmetric_adaptation(params), other


def test_trpo_curvature_option_selects_the_exact_product_and_both_steps_agree(monkeypatch):
    """``trpo_curvature=exact`` takes the TRPO step with forward-over-reverse products of the whole
    KL (the learner's Gauss-Newton form is not called); both steps start from the same data and
    agree closely, since the two products coincide at the sampling parameters."""
    from adaptrl.meta import learner as learner_module
    from adaptrl.meta.learner import trpo_update

    config = tiny_config("maml-trpo", inner_steps=1)
    exp, state, batches = _batches_for(config)
    gauss_newton, _ = trpo_update(exp.learner, state, batches)
    exact_learner = learner_module.MetaLearner(dataclasses.replace(config, trpo_curvature="exact"),
                                               exp.env.spec.obs_dim, exp.env.spec.act_dim)

    def not_called(*args, **kwargs):
        raise AssertionError("the Gauss-Newton product was used with trpo_curvature=exact")

    monkeypatch.setattr(exact_learner, "outer_kl_curvature", not_called)
    exact, _ = trpo_update(exact_learner, state, batches)
    step_gn = ravel_pytree(gauss_newton.meta_params)[0] - ravel_pytree(state.meta_params)[0]
    step_exact = ravel_pytree(exact.meta_params)[0] - ravel_pytree(state.meta_params)[0]
    assert np.linalg.norm(step_exact) > 0
    assert np.linalg.norm(step_gn - step_exact) < 1e-2 * np.linalg.norm(step_exact)
    with pytest.raises(ConfigError, match="unknown trpo curvature 'fisher'"):
        build_config("maml-trpo", "PointCorners", overrides={"trpo_curvature": "fisher"})


@pytest.mark.parametrize("algo", ["maml-trpo", "trpo"])
def test_cg_subsample_takes_the_curvature_of_a_rollout_prefix_and_the_line_search_of_all(algo):
    """``cg_subsample = 0.5`` with 4 rollouts per task: the TRPO step equals ``trpo_step`` with the
    curvature of the first 2 rollouts of every task (Gauss-Newton through the adaptation for
    MAML-TRPO, the exact KL Hessian without one) and the whole batch's loss and KL in the line
    search; the step differs from the full-curvature one, and it satisfies KL ≤ δ on the whole batch."""
    from adaptrl.meta.batch import rollout_prefix
    from adaptrl.meta.learner import trpo_update
    from adaptrl.optim.trpo import trpo_step

    config = tiny_config(algo, rollouts_per_task=4, cg_subsample=0.5)
    exp, state, batches = _batches_for(config)
    learner = exp.learner
    prefix = rollout_prefix(batches, 0.5)
    assert prefix.mask.shape[2] == 2 and batches.mask.shape[2] == 4
    np.testing.assert_array_equal(prefix.observations, batches.observations[:, :, :2])
    np.testing.assert_array_equal(prefix.reward_z, batches.reward_z)  # no rollout axis
    assert rollout_prefix(batches, 1.0) is batches

    new_state, info = trpo_update(learner, state, batches)

    def loss_and_kl(p, data):
        terms = learner.terms(p, data)
        return -terms.objective, terms.outer_kl

    if config.inner_steps:
        curvature = learner.outer_kl_curvature(state.meta_params, prefix)
    else:
        _, curvature = jax.linearize(jax.grad(lambda p: loss_and_kl(p, prefix)[1]), state.meta_params)
    expected, _ = trpo_step(
        lambda p: loss_and_kl(p, batches)[0], lambda p: loss_and_kl(p, batches)[1], state.meta_params,
        max_kl=config.max_kl, cg_iters=config.cg_iters, damping=config.cg_damping,
        backtrack_ratio=config.backtrack_ratio, max_backtracks=config.max_backtracks,
        loss_and_kl_fn=lambda p: loss_and_kl(p, batches), curvature_fn=curvature)
    theta = ravel_pytree(state.meta_params)[0]
    step_sub = ravel_pytree(new_state.meta_params)[0] - theta
    np.testing.assert_allclose(step_sub, ravel_pytree(expected)[0] - theta,
                               rtol=1e-5, atol=1e-6 * float(np.abs(step_sub).max()))
    full_learner = MetaLearner(dataclasses.replace(config, cg_subsample=1.0), exp.env.spec.obs_dim,
                               exp.env.spec.act_dim)
    full_state, _ = trpo_update(full_learner, state, batches)
    step_full = ravel_pytree(full_state.meta_params)[0] - theta
    assert int(info["Accepted"]) == 1 and np.linalg.norm(step_sub) > 0
    assert np.linalg.norm(step_sub - step_full) > 1e-3 * np.linalg.norm(step_full)
    assert float(loss_and_kl(new_state.meta_params, batches)[1]) <= config.max_kl
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="cg_subsample must be in"):
            tiny_config(algo, cg_subsample=bad)
