"""The single-task model-free baselines trpo, ppo and vpg (adaptrl.algorithms.policy_gradient):
zero-inner-step compositions of MetaRL whose meta-objective is the plain surrogate at θ."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from adaptrl.algorithms.meta_rl import MetaRL, sample_and_adapt
from adaptrl.experiment.config import build_config
from adaptrl.experiment.evaluation import evaluate
from adaptrl.experiment.trainer import train
from adaptrl.meta.batch import StepBatch, stack_steps
from adaptrl.meta.learner import MetaLearner
from adaptrl.plots import read_progress

ALGOS = ("trpo", "ppo", "vpg")


def point2d(algo: str, **overrides):
    """``algo`` on Point2D (horizon 30, never terminates) with few trajectories."""
    return build_config(algo, "Point2D", overrides={"rollouts_per_task": 5, **overrides})


def quiet_train(config, run_dir, **kwargs):
    return train(config, run_dir, show_progress=False, tensorboard=False, make_plots=False, **kwargs)


def sampled_batch(config, seed: int = 0):
    """``(exp, state, batches)``: one iteration's stacked batches ``[1, 1, R, T, ...]`` at a fresh θ."""
    exp = MetaRL.build(config)
    state = exp.learner.init(jax.random.PRNGKey(seed))
    tasks = exp.env.sample_tasks(config.tasks_per_iter, seed=seed)
    result = sample_and_adapt(exp, state.meta_params, tasks, jax.random.PRNGKey(seed + 1), 0)
    exp.close()  # the environment only: the learner stays usable
    return exp, state, stack_steps(result.batches)


def one_task(batches: StepBatch) -> StepBatch:
    """Step 0, task 0 of stacked batches: leaves ``[R, T, ...]``."""
    return jax.tree_util.tree_map(lambda x: x[0, 0], batches)


def flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


# ------------------------------------------------------------------------------ compositions
def test_compositions_and_paper_presets():
    """The recipes are zero-inner-step, one-task compositions; --preset paper sizes them for the
    thesis's single-task MuJoCo comparison (10,000 real steps per iteration at horizon 200)."""
    trpo, ppo, vpg = (build_config(a, "Point2D") for a in ALGOS)
    for config in (trpo, ppo, vpg):
        assert (config.inner_steps, config.tasks_per_iter, config.kl_coef) == (0, 1, 0.0)
        assert config.horizon == 30  # Point2D's own horizon
    assert (trpo.outer_objective, trpo.optimizer, trpo.max_kl) == ("ratio", "trpo", 0.01)
    assert trpo.gae_lambda == 0.97
    assert (ppo.outer_objective, ppo.optimizer, ppo.clip_eps) == ("clip", "adam", 0.2)
    assert (ppo.outer_steps, ppo.outer_lr, ppo.gae_lambda) == (10, 3e-4, 0.97)
    assert (vpg.outer_objective, vpg.optimizer, vpg.outer_steps) == ("log_likelihood", "adam", 1)
    assert (vpg.outer_lr, vpg.gae_lambda) == (1e-3, 1.0)
    for algo in ALGOS:
        paper = build_config(algo, "HalfCheetah", preset="paper")
        assert (paper.rollouts_per_task, paper.horizon, paper.hidden_sizes) == (50, 200, (64, 64))
        assert paper.rollouts_per_task * paper.horizon * paper.tasks_per_iter == 10_000
        assert (paper.discount, paper.baseline, paper.normalize_advantages) == (0.99, "linear", True)
        assert paper.inner_steps == 0
        # a meta-RL family keeps its own horizon under the paper preset
        assert build_config(algo, "HalfCheetahRandVel", preset="paper").horizon == 100
    assert build_config("ppo", "Hopper", preset="paper").clip_eps == 0.2


# ---------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each baseline trained 2 iterations on Point2D: algo → (config, result, run_dir)."""
    out = {}
    for algo in ALGOS:
        config = point2d(algo, iterations=2)
        run_dir = tmp_path_factory.mktemp(algo)
        out[algo] = (config, quiet_train(config, run_dir), run_dir)
    return out


@pytest.mark.parametrize("algo", ALGOS)
def test_two_iterations_on_point2d(algo, runs):
    """Each baseline trains 2 iterations through the one training loop: finite metrics, one
    sampling round per iteration (no adaptation step), R·T real steps per iteration."""
    config, result, run_dir = runs[algo]
    progress = read_progress(run_dir)
    assert len(result.rows) == 2 and list(progress["Itr"]) == [0, 1]
    np.testing.assert_array_equal(progress["n_timesteps"], [5 * 30, 2 * 5 * 30])
    assert not any(key.startswith("Step_1-") for key in progress), "K = 0 has no post-update step"
    for key in ("Step_0-AverageReturn", "Step_0-StdReturn", "LossBefore", "LossAfter", "MeanKL"):
        assert np.all(np.isfinite(progress[key])), key
    assert np.all(progress["Step_0-NumTrajs"] == 5)
    if algo == "trpo":
        assert np.all(progress["MeanKL"] <= config.max_kl * (1 + 1e-4))


def test_eval_of_a_single_task_run(runs):
    """``adaptrl eval`` of a zero-step run: one row (step 0), its mean inside its interval."""
    report = evaluate(runs["trpo"][2], tasks=3)
    assert report["adapt_steps"] == 0 and [row["step"] for row in report["rows"]] == [0]
    row = report["rows"][0]
    assert math.isfinite(row["mean_return"]) and row["ci95_low"] <= row["mean_return"] <= row["ci95_high"]


# ------------------------------------------------------------------------------------- TRPO
@pytest.fixture(scope="module")
def trpo_batch():
    """``(exp, state, batches)`` of trpo on Point2D: 10 trajectories sampled at a fresh θ."""
    return sampled_batch(point2d("trpo", rollouts_per_task=10))


@pytest.mark.parametrize("max_kl", [0.01, 1e-3])
def test_trpo_step_respects_the_trust_region(max_kl, trpo_batch):
    """TRPO (Schulman et al. 2015): the accepted step improves the surrogate and its mean KL from
    the sampling policy — recomputed here from the new parameters — is within δ and uses a good
    part of it (the first line-search candidate lies on the boundary of a quadratic KL)."""
    exp, state, batches = trpo_batch
    learner = exp.learner if max_kl == exp.config.max_kl else MetaLearner(
        dataclasses.replace(exp.config, max_kl=max_kl), exp.env.spec.obs_dim, exp.env.spec.act_dim)
    new_state, info = learner.update(state, batches)
    assert info["Accepted"] == 1 and info["LossAfter"] < info["LossBefore"]
    assert info["MeanKL"] <= max_kl * (1 + 1e-4)
    assert info["MeanKL"] > 0.2 * max_kl
    b, policy = one_task(batches), learner.policy
    new_dist = policy.distribution(new_state.meta_params["policy"], b.observations)
    kl = jnp.sum(policy.kl(b.dist_old, new_dist) * b.mask) / jnp.sum(b.mask)
    np.testing.assert_allclose(float(kl), info["MeanKL"], rtol=1e-3)


def test_trpo_meta_gradient_is_the_plain_policy_gradient(trpo_batch):
    """With inner_steps = 0 the meta-gradient is ∇_θ of the importance-sampled surrogate,
    computed here from the policy's log_prob: per_step reduction makes it
    (1/Σ mask)·Σ_n Σ_t (π_θ/π_θold)·A_t·mask_t, i.e. mean over trajectories × R/Σ mask.
    At θ = θold it equals the score-function (VPG) gradient; away from θold it does not."""
    exp, state, batches = trpo_batch
    # some trajectories shortened, as if they had terminated: exercises the mask and the scale
    batches = batches._replace(mask=batches.mask.at[0, 0, 0, -7:].set(0.0).at[0, 0, 3, -20:].set(0.0))
    b, policy = one_task(batches), exp.learner.policy
    r = b.mask.shape[0]

    def logp(params):
        return policy.log_prob(policy.distribution(params, b.observations), b.actions)

    def ratio_surrogate(params):
        per_trajectory = jnp.sum(jnp.exp(logp(params) - b.logp_old) * b.advantages * b.mask, axis=-1)
        return jnp.mean(per_trajectory) * r / jnp.sum(b.mask)

    def score_surrogate(params):
        per_trajectory = jnp.sum(logp(params) * b.advantages * b.mask, axis=-1)
        return jnp.mean(per_trajectory) * r / jnp.sum(b.mask)

    ratio_gradient, score_gradient = jax.jit(jax.grad(ratio_surrogate)), jax.jit(jax.grad(score_surrogate))
    theta_old = state.meta_params["policy"]
    # the sampler recorded log π_θold of the very actions in the batch
    np.testing.assert_allclose(np.asarray(logp(theta_old)), np.asarray(b.logp_old), rtol=1e-5, atol=1e-4)
    meta = flat(exp.learner.meta_gradient(state.meta_params, batches))
    expected = flat(ratio_gradient(theta_old))
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(meta, expected, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(meta, flat(score_gradient(theta_old)), rtol=1e-4, atol=1e-5 * scale)

    leaves, treedef = jax.tree_util.tree_flatten(theta_old)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    theta = jax.tree_util.tree_unflatten(
        treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)])
    meta = flat(exp.learner.meta_gradient({**state.meta_params, "policy": theta}, batches))
    expected = flat(ratio_gradient(theta))
    np.testing.assert_allclose(meta, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert np.linalg.norm(meta - flat(score_gradient(theta))) > 1e-2 * np.linalg.norm(meta)


# -------------------------------------------------------------------------------------- PPO
RATIOS = np.array([0.5, 1.1, 1.5, 0.7, 1.3, 9.0])
ADVANTAGES = np.array([1.0, -1.0, 1.0, -1.0, -2.0, 5.0])
MASK = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # the last step is padding
#: min(ρA, clip(ρ, 0.8, 1.2)A) on the real steps: 0.5, −1.1, 1.2 (clipped), −0.8 (clipped), −2.6
CLIPPED_MEAN = (0.5 - 1.1 + 1.2 - 0.8 - 2.6) / 5
UNCLIPPED = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])  # the steps the gradient flows through


def hand_batch(learner: MetaLearner, params) -> StepBatch:
    """One task, one trajectory of 6 steps (last one padding) with ratios π_θ/π_old = RATIOS at
    ``params``, as stacked batches ``[1, 1, 1, 6, ...]``."""
    t = len(RATIOS)
    obs = jnp.linspace(-1.0, 1.0, t, dtype=jnp.float32).reshape(1, t, 1)
    actions = jnp.asarray([0.3, -0.2, 0.9, -1.1, 0.4, 0.0], jnp.float32).reshape(1, t, 1)
    dist = learner.policy.distribution(params, obs)
    logp = learner.policy.log_prob(dist, actions)
    zeros = jnp.zeros((1, t), jnp.float32)
    batch = StepBatch(observations=obs, actions=actions, mask=jnp.asarray(MASK, jnp.float32)[None],
                      rewards=zeros, advantages=jnp.asarray(ADVANTAGES, jnp.float32)[None],
                      dice_rewards=zeros, logp_old=logp - jnp.log(jnp.asarray(RATIOS, jnp.float32))[None],
                      dist_old=dist, reward_z=jnp.zeros((), jnp.float32), cv_baselines=zeros)
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None, None], batch)


@pytest.fixture(scope="module")
def ppo_learner():
    """The ppo composition's learner for a 1-D observation and action, hidden layer (4,)."""
    config = build_config("ppo", "Point2D", overrides={"hidden_sizes": (4,)})
    learner = MetaLearner(config, obs_dim=1, act_dim=1)
    return learner, learner.init(jax.random.PRNGKey(0))


def test_ppo_clipped_objective_closed_form(ppo_learner):
    """PPO Eq. 7 with ε = 0.2 on a hand-built batch: the objective is the per-step mean of
    min(ρA, clip(ρ)A) over real steps, and the gradient flows only through the unclipped terms —
    including ρ = 1.3 > 1 + ε with A < 0, where the pessimistic min keeps the unclipped term."""
    learner, state = ppo_learner
    params = state.meta_params["policy"]
    batches = hand_batch(learner, params)
    terms = learner.terms(state.meta_params, batches)
    np.testing.assert_allclose(float(terms.objective), CLIPPED_MEAN, rtol=1e-5)

    b = one_task(batches)
    logp_old = b.logp_old

    def unclipped_terms(p):
        logp = learner.policy.log_prob(learner.policy.distribution(p, b.observations), b.actions)
        return jnp.sum(jnp.exp(logp - logp_old) * ADVANTAGES * UNCLIPPED) / MASK.sum()

    expected = flat(jax.grad(unclipped_terms)(params))
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(flat(learner.meta_gradient(state.meta_params, batches)), expected,
                               rtol=1e-4, atol=1e-6)


def test_ppo_update_is_ten_full_batch_adam_steps(ppo_learner):
    """The ppo update: 10 Adam steps (β = 3·10⁻⁴) on −J^CLIP of the whole batch, no KL penalty."""
    learner, state = ppo_learner
    batches = hand_batch(learner, state.meta_params["policy"])
    new_state, info = learner.update(state, batches)

    optimizer = optax.adam(3e-4)
    meta, opt_state = state.meta_params, optimizer.init(state.meta_params)
    grad = jax.jit(jax.grad(lambda m: -learner.terms(m, batches).objective))
    for _ in range(10):
        grads = grad(meta)
        updates, opt_state = optimizer.update(grads, opt_state, meta)
        meta = optax.apply_updates(meta, updates)
    np.testing.assert_allclose(flat(new_state.meta_params), flat(meta), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(info["LossBefore"], -CLIPPED_MEAN, rtol=1e-5)
    assert info["LossAfter"] < info["LossBefore"]


# ---------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_trpo_learns_point2d(tmp_path):
    """TRPO on Point2D (reward −‖s‖², s₀ ~ U[−2, 2]², horizon 30): after 30 iterations of 20
    trajectories the mean return of the last 5 iterations is far above the first iteration's
    (from about −100 to about −15 for seed 0), every step within the trust region."""
    config = build_config("trpo", "Point2D", overrides={"iterations": 30})
    result = quiet_train(config, tmp_path / "run")
    returns = np.array([row["Step_0-AverageReturn"] for row in result.rows])
    first, last = returns[0], returns[-5:].mean()
    assert last > first + 25 and last > 0.5 * first, returns.round(1)
    assert max(row["MeanKL"] for row in result.rows) <= config.max_kl * (1 + 1e-4)
