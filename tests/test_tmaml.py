"""TMAML: control-variate learning (TMAML §4.2, Eq. 11–12, Alg. 1–2), its integration into the
meta-objective, the presets (TMAML App. E, Table 1) and TMAML's task distributions (TMAML §5.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from adaptrl import estimators as est
from adaptrl.envs import make
from adaptrl.errors import ConfigError
from adaptrl.experiment.config import build_config
from adaptrl.meta import control_variates as cv
from adaptrl.meta.adaptation import policy_log_prob
from adaptrl.meta.objectives import OuterSpec, task_terms
from adaptrl.meta.surrogates import SurrogateInputs, dice_objective
from adaptrl.policies import make_policy
from test_meta import random_batch, tiny_config


def value_net(hidden=(6,)):
    net = cv.ValueMLP(hidden)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    # A non-zero output layer, so predictions depend on the inputs.
    params = jax.tree_util.tree_map(lambda x: x + 0.3, params)
    return net.apply, params


def task_data(key, r=6, t=5, d=4):
    k1, k2 = jax.random.split(key)
    features = jax.random.normal(k1, (r, t, d))
    targets = jax.random.normal(k2, (r, t))
    mask = jnp.ones((r, t)).at[0, -1].set(0.0)
    return features, targets, mask


def test_meta_cv_loss_is_zero_at_the_targets_and_halves_are_disjoint():
    """TMAML Eq. 12: L = 0 when V equals the reward-to-go; the halves partition the trajectories."""
    rewards = jnp.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    psi = est.reward_to_go(rewards, mask)
    np.testing.assert_allclose(psi, [[6.0, 5.0, 3.0], [0.5, 0.0, 0.0]])
    assert float(cv.masked_mse(psi, psi, mask)) == 0.0
    x = jnp.arange(7)
    for interleaved in (False, True):
        a, b = cv.halves(x, interleaved)
        assert sorted(np.concatenate([a, b]).tolist()) == list(range(6 if not interleaved else 7))
        merged = cv.merge_halves(a, b, 7, interleaved)
        assert set(np.asarray(merged).tolist()) <= set(range(7))


def test_meta_cv_alpha_zero_is_plain_regression_and_gradient_matches_finite_differences():
    """TMAML Alg. 1: α' = 0 reduces the Alg. 1 loss to regression on both halves; its gradient (through
    the MAML step, second order) matches central finite differences."""
    apply, phi = value_net()
    features, targets, mask = task_data(jax.random.PRNGKey(1))
    plain = cv.masked_mse(apply(phi, features[:3]), targets[:3], mask[:3]) + \
        cv.masked_mse(apply(phi, features[3:]), targets[3:], mask[3:])
    np.testing.assert_allclose(cv.meta_cv_task_loss(apply, phi, features, targets, mask, 0.0, False), plain,
                               rtol=1e-6)
    with jax.enable_x64(True):
        phi64 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), phi)
        f64, y64, m64 = (jnp.asarray(x, jnp.float64) for x in (features, targets, mask))
        flat, unravel = ravel_pytree(phi64)

        def loss(v):
            return cv.meta_cv_task_loss(apply, unravel(v), f64, y64, m64, 0.3, False)

        grad = jax.grad(loss)(flat)
        direction = jax.random.normal(jax.random.PRNGKey(2), flat.shape, jnp.float64)
        eps = 1e-5
        numeric = (loss(flat + eps * direction) - loss(flat - eps * direction)) / (2 * eps)
        np.testing.assert_allclose(grad @ direction, numeric, rtol=1e-6)
        first_order = jax.grad(
            lambda v: cv.meta_cv_task_loss(apply, unravel(v), f64, y64, m64, 0.0, False))(flat)
        assert np.abs(np.asarray(grad - first_order)).max() > 1e-4  # α' really enters


def test_meta_cv_values_do_not_leak():
    """TMAML Alg. 1, leakage: the baseline of a trajectory in half A comes only from parameters adapted on
    half B — changing half A's targets leaves half A's baselines unchanged (and moves B's)."""
    apply, phi = value_net()
    features, targets, mask = task_data(jax.random.PRNGKey(3))
    base = cv.meta_cv_values(apply, phi, features, targets, mask, 0.5)
    changed = cv.meta_cv_values(apply, phi, features, targets.at[:3].add(5.0), mask, 0.5)
    np.testing.assert_allclose(changed[:3], base[:3], rtol=1e-6)
    assert np.abs(np.asarray(changed[3:] - base[3:])).max() > 1e-3
    assert float(jnp.abs(base * (1 - mask)).max()) == 0.0


def test_action_dependent_baseline_ignores_its_own_coordinate():
    """TMAML Eq. 11: b^i(s, a^{−i}) does not change with a^i, but does with the other coordinates."""
    net = cv.ValueMLP((8,))
    psi = jax.tree_util.tree_map(lambda x: x + 0.2, net.init(jax.random.PRNGKey(0), jnp.zeros((1, 3 + 2))))
    features = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    actions = jax.random.normal(jax.random.PRNGKey(2), (4, 2))
    means, log_stds = jnp.zeros((4, 2)), jnp.full((4, 2), -0.5)
    noise = jax.random.normal(jax.random.PRNGKey(3), (16,))
    b = cv.action_dependent_baselines(net.apply, psi, features, actions, means, log_stds, noise)
    moved0 = cv.action_dependent_baselines(net.apply, psi, features, actions.at[:, 0].add(1.0), means,
                                           log_stds, noise)
    np.testing.assert_allclose(moved0[:, 0], b[:, 0], rtol=1e-6)
    assert np.abs(np.asarray(moved0[:, 1] - b[:, 1])).max() > 1e-4


def _policy_and_batch(m=2, act_dim=2):
    policy = make_policy(act_dim, hidden_sizes=(5,))
    params = policy.init(jax.random.PRNGKey(1), jnp.zeros((1, 2)))
    batches = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[
        random_batch(jax.random.PRNGKey(k), act_dim=act_dim, m=m) for k in (4, 5)])
    return policy, params, batches


@pytest.mark.parametrize("control_variate", ["meta", "task"])
def test_zero_control_variate_is_dice_and_outer_cv_adds_zero(control_variate):
    """TMAML Alg. 2: with b ≡ 0 the TMAML meta-objective and meta-gradient are DiCE's exactly; with any b
    the outer J^CV term adds exactly 0 to the meta-gradient (only DiCE's baseline term does)."""
    policy, params, batches = _policy_and_batch()
    task = jax.tree_util.tree_map(lambda x: x[:, 0], batches)  # one task, [K+1, R, T, ...]
    if control_variate == "task":  # action-dependent: one b^i per action coordinate
        task = task._replace(cv_baselines=jnp.zeros((*task.mask.shape, 2)))
    dice_spec = OuterSpec("dice", 1, "dice", 0.3, False, "per_step")
    cv_spec = dice_spec._replace(control_variate=control_variate)

    def grad_of(spec, data):
        grads = jax.grad(lambda p: task_terms(policy, spec, p, 0.1, data).objective)(params)
        return ravel_pytree(grads)[0]

    np.testing.assert_allclose(grad_of(cv_spec, task), grad_of(dice_spec, task), rtol=1e-5, atol=1e-7)
    shape = task.mask.shape + ((2,) if control_variate == "task" else ())
    b = jax.random.normal(jax.random.PRNGKey(9), shape)
    with_b = task._replace(cv_baselines=b)
    # The outer objective's CV surrogate: value 0, gradient 0 at the post-update parameters.
    post = jax.tree_util.tree_map(lambda x: x[1], with_b)
    for formula in ("corrected", "paper"):
        def outer_cv(p, formula=formula):
            logp, dist = policy_log_prob(policy, p, post)
            coord = None
            if control_variate == "task":
                from adaptrl.policies import gaussian_coordinate_log_prob
                coord = gaussian_coordinate_log_prob(post.actions, dist.mean, dist.log_std)
            return est.CONTROL_VARIATES[formula](logp, post.cv_baselines, post.mask, coordinate_logp=coord)
        assert float(outer_cv(params)) == 0.0
        assert float(jnp.abs(ravel_pytree(jax.grad(outer_cv)(params))[0]).max()) == 0.0
    # A non-zero b changes the meta-gradient (through DiCE's baseline term and the inner CV Hessian).
    assert np.abs(np.asarray(grad_of(cv_spec, with_b) - grad_of(dice_spec, with_b))).max() > 1e-6
    logp, dist = policy_log_prob(policy, params, post)
    inputs = SurrogateInputs(logp, dist, post, policy, cv_spec)
    np.testing.assert_allclose(dice_objective(inputs),
                               est.dice(logp, post.dice_rewards, post.mask), rtol=1e-6)


@pytest.mark.parametrize("kind,optimizer", [("meta", "sgd"), ("meta", "adam"), ("task", "sgd")])
def test_control_variate_fits_the_reward_to_go(kind, optimizer):
    """Repeated Alg. 1 updates (meta, β' as a plain or an Adam step) / the per-task fit (task)
    lower the squared error of the baselines to Ψ̃ below that of b = 0 on a batch whose return
    depends on the state; the reported explained variance agrees with that error."""
    m, r, t = 3, 8, 6
    key = jax.random.PRNGKey(0)
    # The state is fixed along a trajectory, so Ψ̃_t = (T − t)·tanh(s) is a function of (s, t/T).
    obs = jnp.broadcast_to(jax.random.normal(key, (m, r, 1, 2)), (m, r, t, 2))
    mask = jnp.ones((m, r, t))
    dice_rewards = jnp.tanh(obs[..., 0]) + 0.05 * jax.random.normal(jax.random.PRNGKey(1), (m, r, t))
    batch = random_batch(jax.random.PRNGKey(2), r=r, t=t, m=m, act_dim=2)._replace(
        observations=obs, mask=mask, dice_rewards=dice_rewards,
        cv_baselines=jnp.zeros((m, r, t, 2)) if kind == "task" else jnp.zeros((m, r, t)))
    lr = {"sgd": 0.05, "adam": 0.01}[optimizer] if kind == "meta" else 0.02
    learner = cv.ControlVariate(kind, 2, 2, hidden_sizes=(16,), inner_lr=0.01, lr=lr,
                                steps=30 if kind == "meta" else 200, action_samples=8,
                                optimizer=optimizer)
    state = learner.init(jax.random.PRNGKey(3))
    target = est.reward_to_go(dice_rewards, mask)
    for i in range(8 if kind == "meta" else 1):
        state, out, _ = learner.attach(state, batch, jax.random.PRNGKey(10 + i))
    if kind == "meta":  # baselines come from the parameters before this batch's update
        state, out, stats = learner.attach(state, batch, jax.random.PRNGKey(99))
        b = out.cv_baselines
    else:
        stats = learner.attach(state, batch, jax.random.PRNGKey(10))[2]
        b = jnp.mean(out.cv_baselines, axis=-1)  # each coordinate's b^i estimates Ψ̃
    error = float(jnp.mean((b - target) ** 2))
    assert error < 0.5 * float(jnp.mean(target**2)), (error, float(jnp.mean(target**2)))
    expected = 1 - error / float(jnp.var(target))
    assert stats["explained_variance"] == pytest.approx(expected, abs=1e-4)


def test_adam_meta_control_variate_learns_faster_than_plain_steps():
    """On a poorly scaled input (the informative state coordinate is ~50× smaller than the
    return it predicts), Alg. 1's plain β' = 0.01 step leaves b near its zero-output start for
    25 batches, while Adam with the same rate fits it (why the default preset uses
    ``cv_optimizer=adam``; on HalfCheetah the plain step explains 0.000 of Ψ̃'s variance after
    8 batches, docs/reproductions.md)."""
    m, r, t = 2, 8, 6
    obs = 0.02 * jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(0), (m, r, 1, 2)), (m, r, t, 2))
    batch = random_batch(jax.random.PRNGKey(2), r=r, t=t, m=m, act_dim=2)._replace(
        observations=obs, mask=jnp.ones((m, r, t)), dice_rewards=jnp.tanh(obs[..., 0] / 0.02),
        cv_baselines=jnp.zeros((m, r, t)))
    quality = {}
    for optimizer in ("sgd", "adam"):
        learner = cv.ControlVariate("meta", 2, 2, hidden_sizes=(16,), inner_lr=0.01, lr=0.01, steps=10,
                                    action_samples=1, optimizer=optimizer)
        state = learner.init(jax.random.PRNGKey(3))
        for i in range(25):
            state, _, stats = learner.attach(state, batch, jax.random.PRNGKey(i))
        quality[optimizer] = stats["explained_variance"]
    assert quality["sgd"] < 0.2 < 0.6 < quality["adam"], quality


def test_explained_variance():
    target = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])
    mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the padded 99 is ignored
    assert float(cv.explained_variance(target, target, mask)) == pytest.approx(1.0)
    assert float(cv.explained_variance(jnp.full_like(target, 3.0), target, mask)) == pytest.approx(0.0)
    assert float(cv.explained_variance(jnp.zeros_like(target), target, mask)) < 0


def test_tmaml_presets_and_table_1():
    """TMAML App. E, Table 1 under --preset paper; the composition of the presets; validation."""
    c = build_config("tmaml-meta-cv", "AntRandDirec", preset="paper")
    assert (c.inner_estimator, c.control_variate, c.cv_formula, c.outer_objective) == \
        ("dice", "meta", "corrected", "clip")
    assert (c.inner_lr, c.outer_lr, c.cv_inner_lr, c.cv_lr, c.cv_optimizer) == \
        (0.01, 1e-3, 0.01, 0.01, "sgd")
    assert build_config("tmaml-meta-cv", "AntRandDirec").cv_optimizer == "adam"
    assert (c.tasks_per_iter, c.rollouts_per_task, c.outer_steps, c.clip_eps, c.kl_coef, c.horizon) == \
        (40, 20, 5, 0.3, 5e-4, 100)
    assert (c.hidden_sizes, c.inner_steps) == ((64, 64), 1)
    assert build_config("tmaml-task-cv", "HumanoidRandDirec", preset="paper").hidden_sizes == (128, 128)
    goal = build_config("tmaml-meta-cv", "AntRandGoal", preset="paper")
    assert goal.inner_steps == 2 and goal.env_options["goal_distribution"] == "square"
    vel = build_config("tmaml-task-cv", "HalfCheetahRandVel", preset="paper")
    assert list(vel.env_options["velocity_range"]) == [0.0, 2.0]
    paper = build_config("tmaml-meta-cv", "AntRandDirec", overrides={"cv_formula": "paper"})
    assert paper.cv_formula == "paper"
    with pytest.raises(ConfigError, match="inner_estimator=dice"):
        build_config("tmaml-meta-cv", "AntRandDirec", overrides={"inner_estimator": "pgt"})
    with pytest.raises(ConfigError, match="cv formula"):
        build_config("tmaml-meta-cv", "AntRandDirec", overrides={"cv_formula": "printed"})
    with pytest.raises(ConfigError, match="cv optimizer"):
        build_config("tmaml-meta-cv", "AntRandDirec", overrides={"cv_optimizer": "rmsprop"})


def test_tmaml_task_distributions():
    """TMAML §5.1: velocities ~ U[0, 2]; Ant goals uniform in [−3, 3]²."""
    env = make("HalfCheetahRandVel", velocity_range=[0.0, 2.0])
    goal_env = make("AntRandGoal", goal_distribution="square", goal_radius=3.0)
    try:
        v = env.sample_tasks(2000, seed=0)["velocity"]
        assert v.min() >= 0 and v.max() <= 2 and abs(v.mean() - 1.0) < 0.05
        g = goal_env.sample_tasks(4000, seed=0)["goal"]
        assert np.abs(g).max() <= 3.0
        # A square, not a disc: corners are reached, and each coordinate is uniform.
        assert (np.linalg.norm(g, axis=1) > 3.2).mean() > 0.05
        assert abs(np.abs(g[:, 0]).mean() - 1.5) < 0.1
    finally:
        env.close()
        goal_env.close()
    with pytest.raises(ConfigError, match="goal_distribution"):
        make("AntRandGoal", goal_distribution="circle")


@pytest.mark.parametrize("algo", ["tmaml-meta-cv", "tmaml-task-cv"])
def test_tmaml_runs_and_logs_the_control_variate_loss(algo, tmp_path):
    """The TMAML presets train end to end; the meta CV's parameters change and are checkpointed."""
    from adaptrl.experiment.evaluation import load_run
    from adaptrl.experiment.trainer import train

    config = tiny_config(algo)
    result = train(config, tmp_path / algo, show_progress=False, tensorboard=False, make_plots=False)
    assert all(np.isfinite(row["LossAfter"]) for row in result.rows)
    assert {"CVLoss", "CVExplainedVariance", "Time-ControlVariate"} <= set(result.rows[0])
    assert all(np.isfinite(row["CVExplainedVariance"]) for row in result.rows)
    # Replay iteration 0 with the trainer's keys; row 0 reports the explained variance
    # 1 − Σ(Ψ̃ − b)² / Σ(Ψ̃ − mean Ψ̃)² over the real steps of the last adaptation step's batch.
    from adaptrl.algorithms.meta_rl import MetaRL, sample_and_adapt, task_seed
    from adaptrl.experiment.seeding import init_key, iteration_key

    replay = MetaRL.build(config)
    try:
        start = replay.learner.init(init_key(config.seed))
        task_key, sample_key = jax.random.split(iteration_key(config.seed, 0))
        tasks = replay.env.sample_tasks(config.tasks_per_iter, seed=task_seed(task_key))
        last = sample_and_adapt(replay, start.meta_params, tasks, sample_key, config.inner_steps,
                                cv_params=start.cv_params).batches[-1]
    finally:
        replay.close()
    mask = np.asarray(last.mask) > 0
    psi = np.flip(np.cumsum(np.flip(np.where(mask, np.asarray(last.dice_rewards), 0.0), -1), -1), -1)[mask]
    b = np.asarray(last.cv_baselines)
    b = (b.mean(axis=-1) if b.ndim > mask.ndim else b)[mask]  # task CV: one b^i per action coordinate
    expected = 1.0 - np.sum((psi - b) ** 2) / np.sum((psi - psi.mean()) ** 2)
    assert result.rows[0]["CVExplainedVariance"] == pytest.approx(expected, abs=1e-4)
    _, state, _ = load_run(tmp_path / algo)
    if algo == "tmaml-meta-cv":
        from adaptrl.algorithms.meta_rl import MetaRL
        from adaptrl.experiment.seeding import init_key

        exp = MetaRL.build(config)
        try:
            fresh = exp.learner.init(init_key(config.seed)).cv_params
        finally:
            exp.close()
        assert np.abs(ravel_pytree(state.cv_params)[0] - ravel_pytree(fresh)[0]).max() > 0
