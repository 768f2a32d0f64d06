"""ME-TRPO and MB-MPO: policy optimisation on the learned model (docs/model-based.md)."""

from __future__ import annotations

import csv
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl.algorithms.model_based import UniformController
from adaptrl.algorithms.policy_on_model import (
    DISAGREEMENT_CHUNK,
    PolicyOnModel,
    ValidationStop,
    ensemble_disagreement,
    episode_params,
    reported_return,
    weight_noise,
)
from adaptrl.experiment.campaign_runner import real_steps_per_iteration
from adaptrl.experiment.config import build_config
from adaptrl.experiment.evaluation import evaluate
from adaptrl.experiment.rundir import load_run_config
from adaptrl.experiment.trainer import train
from adaptrl.meta.batch import stack_steps
from adaptrl.meta.learner import MetaLearner
from adaptrl.models.simulator import TrueDynamics, model_sim_params
from adaptrl.policies import per_task

TIME_COLUMNS = ("ItrTime", "Time")


def tiny(algo: str, **overrides):
    """A seconds-long configuration on Point2D (s' = s + a, r = −‖s‖², horizon 30)."""
    values = dict(iterations=2, initial_random_steps=150, real_steps_per_iter=150, model_max_epochs=2,
                  model_hidden_sizes="16,16", hidden_sizes="16,16", rollouts_per_task=10,
                  policy_steps_per_iter=2, real_eval_episodes=4, validation_rollouts=8)
    if algo != "me-trpo":
        values["tasks_per_iter"] = 5
    values.update(overrides)
    return build_config(algo, "Point2D", overrides=values)


def perfect(config) -> PolicyOnModel:
    """The algorithm with the true Point2D dynamics as every ensemble member."""
    return PolicyOnModel(config, dynamics=TrueDynamics(lambda o, a: o + a, members=config.model_members,
                                                       obs_dim=2))


def point2d_sim_params(members: int) -> dict:
    starts = np.random.default_rng(0).uniform(-2, 2, (64, 2))
    return model_sim_params({}, starts, np.full(2, -10.0), np.full(2, 10.0), members)


def tree_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


def tree_close(a, b, **kwargs) -> None:
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kwargs)


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])


def optimal_point2d_return(horizon: int = 30, n: int = 20_000) -> float:
    """Mean return of a = −clip(s, ±0.1) (moving straight to the origin at full speed per
    coordinate, which minimises every ‖s_t‖²)."""
    s = np.random.default_rng(0).uniform(-2, 2, (n, 2))
    total = np.zeros(n)
    for _ in range(horizon):
        total -= (s * s).sum(-1)
        s = s - np.clip(s, -0.1, 0.1)
    return float(total.mean())


# ----------------------------------------------------------------------------- validation rule
def test_validation_rule_is_strict_and_stops_at_the_fifth_failed_check():
    """Thesis Eq. 5: ratio = mean_k 1[J_k(new) > J_k(old)], pass at ≥ 0.7; equal returns are not
    improvements; with every = 5 and patience = 25 the phase ends at the fifth failed check in a
    row, counted from the last passed one."""
    assert ValidationStop.improved_fraction(np.array([1, 2, 3, 4, 5.]), np.array([0, 2, 2, 3, 4.])) == 0.8
    rule = ValidationStop(every=5, patience=25, threshold=0.7, reference=np.zeros(5))
    assert not rule.check(5, np.zeros(5))  # nothing strictly better
    assert not rule.check(5, np.array([1, 1, 1, 0, 0.]))  # 0.6 < 0.7
    assert rule.check(5, np.array([1, 1, 1, 1, 0.]))  # 0.8: kept
    assert rule.kept_update == 5 and np.array_equal(rule.reference, [1, 1, 1, 1, 0])
    stops = [u for u in range(6, 400) if rule.due(u) and not rule.check(u, np.ones(5)) and rule.exhausted(u)]
    assert stops[0] == 30  # checks 10, 15, 20, 25, 30 fail (only member 4 improves: 0.2)
    assert [u for u in range(1, 31) if rule.due(u)] == [5, 10, 15, 20, 25, 30]


def test_policy_phase_ends_at_the_fifth_failed_check_and_restores_the_kept_policy(monkeypatch):
    """The phase of ME-TRPO on scripted returns J_k: update 5 passes (4 of 5 members improve),
    every later check fails, so it stops after update 30 and returns the policy of update 5."""
    config = tiny("me-trpo", policy_steps_per_iter=400, rollouts_per_task=4)
    alg = perfect(config)
    seen = []

    def scripted(learner, sim_params):
        seen.append(learner)
        return np.zeros(5) if len(seen) == 1 else np.array([1, 1, 1, 1, float(len(seen) == 2)])

    monkeypatch.setattr(alg, "validation_returns", scripted)
    start = alg.init(jax.random.PRNGKey(0)).extra.learner
    learner, metrics = alg.improve(start, point2d_sim_params(5), jax.random.PRNGKey(1))
    assert metrics["PolicyUpdates"] == 30 and metrics["PolicyUpdatesKept"] == 5
    assert len(seen) == 1 + 6  # the reference, then checks at 5, 10, …, 30
    assert tree_equal(learner.meta_params, seen[1].meta_params)
    assert not tree_equal(learner.meta_params, seen[-1].meta_params)
    alg.close()


# --------------------------------------------------------------------------------- MB-MPO
def test_with_zero_step_size_the_mb_mpo_meta_step_is_ensemble_averaged_trpo():
    """MBMPO-2's edge case: with α = 0 the adapted policies are θ, and MB-MPO's TRPO meta-step on
    the K + 1 batches equals TRPO on the post-update batches of all members (inner_steps = 0)."""
    # CG run to convergence (40 iterations): truncated at 10, its iterate depends on float32
    # rounding (1 % apart between LLVM optimisation levels), converged the two agree to 4e-5
    config = tiny("mb-mpo", inner_lr=0.0, rollouts_per_task=6, cg_damping=1e-2, cg_iters=40)
    alg = perfect(config)
    learner_state = alg.init(jax.random.PRNGKey(0)).extra.learner
    sim_params = point2d_sim_params(config.model_members)
    from adaptrl.algorithms.meta_rl import sample_and_adapt

    tasks = alg.imagined.sample_tasks(config.tasks_per_iter, seed=3)
    assert np.array_equal(tasks["member"], np.arange(5))
    result = sample_and_adapt(alg.meta, learner_state.meta_params, tasks, jax.random.PRNGKey(4), 1,
                              sim_params=sim_params)
    theta = learner_state.meta_params["policy"]
    tree_close(result.task_params, per_task(theta, 5), rtol=0, atol=0)
    batches = stack_steps(result.batches)
    post_only = jax.tree_util.tree_map(lambda x: x[1:], batches)
    trpo_config = build_config("me-trpo", "Point2D",
                               overrides={"hidden_sizes": "16,16", "cg_damping": 1e-2, "cg_iters": 40})
    trpo = MetaLearner(trpo_config, 2, 2)
    tree_close(alg.meta.learner.meta_gradient(learner_state.meta_params, batches),
               trpo.meta_gradient(learner_state.meta_params, post_only), rtol=1e-5, atol=1e-7)
    new_mbmpo, info_mbmpo = alg.meta.learner.update(learner_state, batches)
    new_trpo, info_trpo = trpo.update(learner_state, post_only)
    # the same step up to float32 rounding (different curvature programs: through the adaptation
    # and the distribution head for MB-MPO, the plain KL Hessian for TRPO)
    step_mbmpo = flat(new_mbmpo.meta_params) - flat(learner_state.meta_params)
    step_trpo = flat(new_trpo.meta_params) - flat(learner_state.meta_params)
    assert np.linalg.norm(step_trpo) > 0
    assert np.linalg.norm(step_mbmpo - step_trpo) < 1e-3 * np.linalg.norm(step_trpo)
    assert info_mbmpo["MeanKL"] == pytest.approx(info_trpo["MeanKL"], rel=1e-3)
    alg.close()


def test_real_data_come_from_the_adapted_policies_after_a_random_first_iteration(monkeypatch):
    """MBMPO-3: iteration 0 collects with a uniform random controller; iteration 1 with the K
    adapted policies of iteration 0 (episode j ↦ task j mod M), which are θ adapted on a fresh
    imagined batch of the fitted model — and with real_data_policy=pre_update, θ itself."""
    config = tiny("mb-mpo")
    alg = perfect(config)
    controllers, collected = [], []
    real_collect, sampler_collect = alg.mb.collect, alg.collector.collect
    monkeypatch.setattr(alg.mb, "collect",
                        lambda c, *a, **k: controllers.append(c) or real_collect(c, *a, **k))
    monkeypatch.setattr(alg.collector, "collect",
                        lambda params, *a, **k: collected.append(params) or sampler_collect(params, *a, **k))
    state = alg.init(jax.random.PRNGKey(0))
    key0 = jax.random.PRNGKey(1)
    state, _, _ = alg.iteration(state, 0, key0)
    assert len(controllers) == 1 and isinstance(controllers[0], UniformController) and not collected
    keys = jax.random.split(key0, 6)
    sim_params = alg.mb.sim_params(state, keys[2])
    adapted, _ = alg.adapted_policies(state.extra.learner, sim_params, state, keys[4])
    assert tree_equal(state.extra.collect_params, adapted)
    theta = state.extra.learner.meta_params["policy"]
    assert not tree_equal(adapted, per_task(theta, 5))
    state, _, steps = alg.iteration(state, 1, jax.random.PRNGKey(2))
    assert len(controllers) == 1 and len(collected) == 1 and steps == 150  # 5 episodes of 30 steps
    assert tree_equal(collected[0], episode_params(adapted, 5))
    alg.close()

    pre = perfect(tiny("mb-mpo", real_data_policy="pre_update"))
    learner = pre.init(jax.random.PRNGKey(0)).extra.learner
    adapted, metrics = pre.adapted_policies(learner, point2d_sim_params(5), state, jax.random.PRNGKey(3))
    theta = learner.meta_params["policy"]
    assert tree_equal(pre.collection_params(learner, adapted), per_task(theta, 1))
    assert set(metrics) == {f"Member_{k}-{m}" for k in range(5) for m in ("InnerKL", "EnsembleStd")}
    # PostPolicy-* are the adapted policies' real returns also when θ collects the data
    evaluated, real_eval = [], pre.real_sampler.collect
    monkeypatch.setattr(pre.real_sampler, "collect",
                        lambda params, *a, **k: evaluated.append(params) or real_eval(params, *a, **k))
    n = pre.config.real_eval_episodes
    out = pre.real_performance(learner, adapted, jax.random.PRNGKey(4))
    assert tree_equal(evaluated[0], per_task(theta, n))
    assert tree_equal(evaluated[1], episode_params(adapted, n))
    assert not tree_equal(evaluated[1], per_task(theta, n))
    assert "PrePolicy-AverageReturn" in out and "PostPolicy-AverageReturn" in out
    pre.close()


@pytest.mark.parametrize("algo", ["me-trpo", "mb-mpo"])
def test_with_a_perfect_model_the_policy_solves_point2d(algo):
    """With the true dynamics as every member, one iteration of 30 policy updates on imagined
    rollouts brings the real return of the policy from the initial ≈ −140 to within 40 % of the
    optimum (≈ −14.6), and never beyond it."""
    config = tiny(algo, iterations=1, policy_steps_per_iter=30,
                  rollouts_per_task=100 if algo == "me-trpo" else 20, real_eval_episodes=100,
                  policy_validation="none", exploration_std=0.1)
    alg = perfect(config)
    state = alg.init(jax.random.PRNGKey(0))
    _, metrics, _ = alg.iteration(state, 0, jax.random.PRNGKey(1))
    best = optimal_point2d_return()
    assert metrics["Imagined-First-Step_0-AverageReturn"] < 5 * best
    se = metrics["PrePolicy-StdReturn"] / math.sqrt(100)
    assert 1.4 * best < metrics["PrePolicy-AverageReturn"] < best + 3 * se, (metrics, best)
    alg.close()


def rows_without_time(run_dir):
    with open(run_dir / "progress.csv") as f:
        return [{k: v for k, v in row.items() if not k.startswith("Time") and k not in TIME_COLUMNS}
                for row in csv.DictReader(f)]


def test_mb_mpo_resumes_exactly_and_evaluates(tmp_path, interrupted_run):
    """An MB-MPO run interrupted after iteration 1 and resumed writes the uninterrupted rows (the
    checkpoint holds the models, their optimizer states, the buffer, the policy and the
    collection policies); eval reports the pre-update and the adapted policies' real returns."""
    straight, resumed = interrupted_run(tiny("mb-mpo", iterations=3), tmp_path, plots=True)
    rows = rows_without_time(resumed)
    assert rows == rows_without_time(straight) and len(rows) == 3
    assert all(math.isfinite(float(r["PostPolicy-AverageReturn"])) for r in rows)
    # the real steps `adaptrl reproduce` budgets with: whole episodes of the random, then the K
    # adapted policies (150 steps = 5 episodes of 30), the logging-only episodes not counted
    config = load_run_config(resumed)
    first, later = real_steps_per_iteration(config)
    assert (first, later) == (150, 150)
    assert [int(r["n_timesteps"]) for r in rows] == [first, first + later, first + 2 * later]
    assert reported_return(config.to_dict()) == "PrePolicy-AverageReturn"
    assert reported_return({**config.to_dict(), "real_eval_episodes": 0}) == "AverageReturn"
    assert (tmp_path / "resumed" / "plots" / "learning_curve.png").is_file()
    report = evaluate(tmp_path / "resumed", tasks=3, seed=1)
    assert [r["step"] for r in report["rows"]] == [0, 1]


@pytest.mark.parametrize(("algo", "env"), [
    pytest.param("me-trpo", "HalfCheetah", marks=pytest.mark.slow), ("me-trpo", "Point2D"),
    ("mb-mpo", "HalfCheetah"), pytest.param("mb-promp", "HalfCheetah", marks=pytest.mark.slow)])
def test_paper_presets_run_two_short_iterations(algo, env, tmp_path):
    """Every paper preset (MB-MPO's and MB-ProMP's are the same on every env; ME-TRPO's differs on Point2D;
    two of the four cases are in the slow suite), shrunk in data volume only (its models, policy and
    optimiser as set), runs two iterations with finite losses and returns."""
    shrink = dict(iterations=2, initial_random_steps=40, real_steps_per_iter=40, horizon=20,
                  model_max_epochs=2, rollouts_per_task=2, policy_steps_per_iter=6, validation_every=2,
                  validation_rollouts=3, real_eval_episodes=2)
    config = build_config(algo, env, preset="paper", overrides=shrink)
    result = train(config, tmp_path / "run", show_progress=False, tensorboard=False, make_plots=False)
    for row in result.rows:
        for key in ("LossBefore", "LossAfter", "Model-TrainLoss", "PrePolicy-AverageReturn"):
            assert math.isfinite(row[key]), (key, row)
    assert [row["n_timesteps"] for row in result.rows] == [40, 80]  # 2 whole episodes of 20 each


def test_settings_of_policy_search_are_checked():
    from adaptrl.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of model_members"):
        PolicyOnModel(tiny("mb-mpo", tasks_per_iter=7))
    with pytest.raises(ConfigError, match="policy validation"):
        tiny("me-trpo", policy_validation="oracle")
    with pytest.raises(ConfigError, match="policy_steps_per_iter is not a setting of mb-mpc"):
        build_config("mb-mpc", "Point2D", overrides={"policy_steps_per_iter": "3"})


@pytest.mark.slow
def test_me_trpo_learns_halfcheetah(tmp_path):
    """ME-TRPO (default preset) on HalfCheetah: the policy's real return climbs from the random
    initial policy's ≈ −75 (control cost, no net motion) to a forward gait, at least 60 higher,
    within five iterations (12,000 real steps)."""
    config = build_config("me-trpo", "HalfCheetah", overrides={"iterations": 5})
    result = train(config, tmp_path / "run", show_progress=False, tensorboard=False, make_plots=False)
    returns = [row["PrePolicy-AverageReturn"] for row in result.rows]
    assert returns[0] < 0
    assert max(returns[2:]) > returns[0] + 60, returns


@pytest.mark.slow
def test_mb_mpo_learns_halfcheetah(tmp_path):
    """MB-MPO (default preset) on HalfCheetah: the pre-update policy's real return climbs from the
    random initial policy's ≈ −40 to a forward gait at least 50 higher within six iterations
    (12,000 real steps)."""
    config = build_config("mb-mpo", "HalfCheetah", overrides={"iterations": 6})
    result = train(config, tmp_path / "run", show_progress=False, tensorboard=False, make_plots=False)
    returns = [row["PrePolicy-AverageReturn"] for row in result.rows]
    assert returns[0] < 0
    assert max(returns[3:]) > returns[0] + 50, returns


def test_parameter_noise_has_the_stated_std_and_spares_the_log_std():
    """ME-TRPO's parameter noise (thesis App. A.1.3): per weight N(0, (c·|θ − θ_prev|)²), zero on log σ."""
    theta = {"w": jnp.array([1.0, 2.0, -1.0]), "log_std": jnp.array([0.5, 0.5])}
    previous = {"w": jnp.array([0.0, 2.5, -1.0]), "log_std": jnp.array([0.0, 0.0])}
    noise = weight_noise(theta, previous, 3.0, jax.random.PRNGKey(0), 20_000)
    assert noise["w"].shape == (20_000, 3) and not np.any(noise["log_std"])
    np.testing.assert_allclose(noise["w"].std(axis=0), [3.0, 1.5, 0.0], rtol=0.03, atol=1e-7)
    np.testing.assert_allclose(noise["w"].mean(axis=0), 0.0, atol=0.05)
    assert not np.any(weight_noise(theta, previous, 0.0, jax.random.PRNGKey(0), 4)["w"])


def test_ensemble_disagreement_is_the_std_over_members_averaged_over_state_dims():
    """Thesis Fig. 11's disagreement per state–action pair, computed in chunks: equal to the std
    over the K members' next states, averaged over state dims, also for a row count that is not
    a multiple of the chunk (the padding is cut off)."""
    from adaptrl.models.ensemble import EnsembleSpec, init_ensemble, next_obs_all
    from adaptrl.models.simulator import EnsembleDynamics

    spec = EnsembleSpec(obs_dim=3, act_dim=2, members=4, hidden_sizes=(8,))
    model = init_ensemble(spec, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    n = DISAGREEMENT_CHUNK + 37
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    act = rng.normal(size=(n, 2)).astype(np.float32)
    got = np.asarray(ensemble_disagreement(EnsembleDynamics(spec), model, obs, act))
    every = np.asarray(jax.jit(next_obs_all, static_argnums=0)(spec, model, obs, act), np.float64)
    assert got.shape == (n,) and every.std(axis=0).mean(-1).min() > 1e-3  # the members do disagree
    np.testing.assert_allclose(got, every.std(axis=0).mean(-1), rtol=1e-4, atol=1e-6)
