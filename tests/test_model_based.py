"""The learned model as a simulator, the shared model-based parts and MB-MPC (docs/model-based.md)."""

from __future__ import annotations

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from adaptrl.algorithms.model_based import ModelBased, transitions
from adaptrl.envs import make, obs_reward_fn, obs_terminated_fn
from adaptrl.envs.device import SimState
from adaptrl.errors import ConfigError
from adaptrl.experiment.campaign_runner import real_steps_per_iteration
from adaptrl.experiment.checkpoints import read_checkpoint
from adaptrl.experiment.config import build_config
from adaptrl.experiment.evaluation import evaluate
from adaptrl.experiment.rundir import load_run_config
from adaptrl.experiment.trainer import train
from adaptrl.models import ensemble as ens
from adaptrl.models.simulator import (
    EnsembleDynamics,
    ModelSimulator,
    ModelVectorEnv,
    TrueDynamics,
    balanced_members,
    model_sim_params,
)
from adaptrl.plots import read_progress
from adaptrl.policies import init_params, make_policy, per_task
from adaptrl.sampling import Sampler, controller_rollouts

TIME_COLUMNS = ("Time-EnvSampling", "Time-ModelFit", "Time-Planning", "ItrTime", "Time")


@dataclasses.dataclass(frozen=True)
class MemberOffset:
    """Dynamics whose member k moves every coordinate by k: the member used is readable from s'."""

    members: int
    obs_dim: int = 2

    def member_next(self, model, k, obs, action, key):
        return obs + k

    def all_next(self, model, obs, action, key):
        return obs[None] + jnp.arange(self.members, dtype=obs.dtype)[:, None, None]

    def delta_scale(self, model):
        return jnp.ones((self.members, self.obs_dim))


def point2d_model_sim(dynamics, member_choice="task", **kwargs):
    env = make("Point2D")
    return env, ModelSimulator(env.spec, dynamics, obs_reward_fn(env), obs_terminated_fn(env),
                               member_choice=member_choice, **kwargs)


def sim_params_for(members, obs_dim=2, pool=None, bias=None, noise=0.0, low=-1e6, high=1e6):
    pool = np.zeros((1, obs_dim)) if pool is None else pool
    return model_sim_params({}, pool, np.full(obs_dim, low), np.full(obs_dim, high), members,
                            output_bias=bias, output_noise_std=noise)


def test_true_dynamics_reproduce_the_real_point2d_trajectories_exactly():
    """Fed the true dynamics s' = s + a, the model simulator replays the real env's trajectory:
    bit-equal next states, the same rewards (to one float32 rounding) and dones at every step."""
    env, sim = point2d_model_sim(TrueDynamics(lambda s, a: s + a, members=1, obs_dim=2))
    policy = make_policy(2, (8,), init_std=1.0)
    params = per_task(init_params(policy, jax.random.PRNGKey(0), 2), 3)
    sampler = Sampler(env, policy, rollouts_per_task=4)
    traj = sampler.collect(params, env.sample_tasks(3, 0), jax.random.PRNGKey(1))
    obs = jnp.asarray(traj.observations).reshape(12, env.spec.horizon, 2)
    actions = jnp.asarray(traj.actions).reshape(12, env.spec.horizon, 2)
    rewards = np.asarray(traj.rewards).reshape(12, -1)
    task = {k: jnp.repeat(jnp.asarray(v), 4, axis=0) for k, v in env.sample_tasks(3, 0).items()}
    task["member"] = jnp.zeros(12, jnp.int32)
    params_sim = sim_params_for(1)
    state = SimState(obs[:, 0], task)
    for t in range(env.spec.horizon):
        state, reward, done = sim.step_batch(params_sim, state, actions[:, t], jax.random.PRNGKey(t),
                                             rollouts=4)
        last = jnp.asarray(traj.final_observations).reshape(12, 2)
        expected_next = obs[:, t + 1] if t + 1 < env.spec.horizon else last
        np.testing.assert_array_equal(np.asarray(state.obs), np.asarray(expected_next))
        np.testing.assert_allclose(np.asarray(reward), rewards[:, t], rtol=1e-6)  # XLA may fuse differently
        assert not np.asarray(done).any()


def test_step_rand_chooses_members_uniformly_and_independently():
    """ME-TRPO's step_rand: a uniform member per row per step (χ² test at p = 0.001), independent
    of the previous step's member."""
    k, n = 5, 5000
    _, sim = point2d_model_sim(MemberOffset(k), member_choice="step_rand")
    state = SimState(jnp.zeros((n, 2)), {"member": jnp.zeros(n, jnp.int32)})
    chosen = []
    for t in range(2):
        state2, _, _ = sim.step_batch(sim_params_for(k), state, jnp.zeros((n, 2)),
                                      jax.random.PRNGKey(t), rollouts=1)
        chosen.append(np.asarray(state2.obs[:, 0]).round().astype(int))
    counts = np.bincount(chosen[0], minlength=k)
    assert counts.sum() == n and stats.chisquare(counts).pvalue > 1e-3
    joint = np.histogram2d(chosen[0], chosen[1], bins=k)[0]
    assert stats.chi2_contingency(joint).pvalue > 1e-3
    assert (chosen[0] != chosen[1]).mean() > 0.7  # not the same member again


def test_step_rand_balanced_path_predicts_with_the_drawn_members():
    """step_rand with the batch a multiple of K: every row's next state is its drawn member's
    prediction (as evaluating every member and selecting), each member gets exactly N/K rows."""
    spec = ens.EnsembleSpec(obs_dim=2, act_dim=2, members=3, hidden_sizes=(16,))
    model = ens.init_ensemble(spec, jax.random.PRNGKey(3))
    _, sim = point2d_model_sim(EnsembleDynamics(spec), member_choice="step_rand")
    n = 12
    obs = jax.random.normal(jax.random.PRNGKey(4), (n, 2))
    act = 0.05 * jax.random.normal(jax.random.PRNGKey(5), (n, 2))
    params = model_sim_params(model, np.zeros((1, 2)), np.full(2, -1e6), np.full(2, 1e6), 3)
    key = jax.random.PRNGKey(6)
    state, _, _ = sim.step_batch(params, SimState(obs, {"member": jnp.zeros(n, jnp.int32)}), act, key,
                                 rollouts=n)
    members = np.asarray(balanced_members(jax.random.split(key, 3)[2], n, 3))
    assert np.bincount(members, minlength=3).tolist() == [4, 4, 4]
    every = ens.next_obs_all(spec, model, obs, jnp.clip(act, -0.1, 0.1))
    np.testing.assert_allclose(np.asarray(state.obs), np.asarray(every[members, jnp.arange(n)]),
                               rtol=1e-5, atol=1e-6)


def test_task_member_choice_grouped_fast_path_equals_the_general_path():
    """Task i ↦ member i mod K: the per-member grouped evaluation (one matmul per member) gives the
    same next states as evaluating every member and selecting, and the member really is i mod K."""
    spec = ens.EnsembleSpec(obs_dim=2, act_dim=2, members=2, hidden_sizes=(16,))
    model = ens.init_ensemble(spec, jax.random.PRNGKey(3))
    env, sim = point2d_model_sim(EnsembleDynamics(spec))
    m, r = 4, 3
    obs = jax.random.normal(jax.random.PRNGKey(4), (m * r, 2))
    act = 0.05 * jax.random.normal(jax.random.PRNGKey(5), (m * r, 2))
    members = (jnp.arange(m * r) // r) % 2
    state = SimState(obs, {"member": members})
    params = model_sim_params(model, np.zeros((1, 2)), np.full(2, -1e6), np.full(2, 1e6), 2)
    keys = jax.random.PRNGKey(6)
    fast = sim.step_batch(params, state, act, keys, rollouts=r)
    slow = sim.step_batch(params, state, act, keys, rollouts=r, grouped=False)
    np.testing.assert_allclose(np.asarray(fast[0].obs), np.asarray(slow[0].obs), rtol=1e-5, atol=1e-6)
    every = ens.next_obs_all(spec, model, obs, jnp.clip(act, -0.1, 0.1))
    np.testing.assert_allclose(np.asarray(fast[0].obs), np.asarray(every[members, jnp.arange(m * r)]),
                               rtol=1e-5, atol=1e-6)


def test_mean_choice_is_the_ensemble_mean():
    _, sim = point2d_model_sim(MemberOffset(4), member_choice="mean")
    state = SimState(jnp.zeros((3, 2)), {"member": jnp.zeros(3, jnp.int32)})
    nxt, _, _ = sim.step_batch(sim_params_for(4), state, jnp.zeros((3, 2)),
                               jax.random.PRNGKey(0), rollouts=1)
    np.testing.assert_allclose(np.asarray(nxt.obs), 1.5)  # mean of 0, 1, 2, 3


def test_output_noise_has_the_stated_mean_and_std():
    """Thesis §5.5.3 (MBMPO-4): member k's predictions get N(b_k, σ²) added (normalised units)."""
    k, r = 2, 20000
    _, sim = point2d_model_sim(TrueDynamics(lambda s, a: s, members=k, obs_dim=2), output_noise=True)
    bias = np.array([0.3, 0.8])
    members = (jnp.arange(k * r) // r) % k
    state = SimState(jnp.zeros((k * r, 2)), {"member": members})
    nxt, _, _ = sim.step_batch(sim_params_for(k, bias=bias, noise=0.1), state, jnp.zeros((k * r, 2)),
                               jax.random.PRNGKey(0), rollouts=r)
    noise = np.asarray(nxt.obs).reshape(k, r, 2)
    np.testing.assert_allclose(noise.mean(axis=(1, 2)), bias, atol=0.005)
    np.testing.assert_allclose(noise.std(axis=(1, 2)), 0.1, rtol=0.03)


def test_predictions_are_clipped_to_the_widened_data_range():
    _, sim = point2d_model_sim(MemberOffset(1), clip_margin=0.5)
    state = SimState(jnp.array([[10.0, -10.0]]), {"member": jnp.zeros(1, jnp.int32)})
    nxt, _, _ = sim.step_batch(sim_params_for(1, low=-1.0, high=1.0), state, jnp.zeros((1, 2)),
                               jax.random.PRNGKey(0), rollouts=1)
    np.testing.assert_allclose(np.asarray(nxt.obs), [[2.0, -2.0]])  # [−1 − 0.5·2, 1 + 0.5·2]


def test_model_simulator_rollout_draws_starts_from_the_pool_and_reuses_the_compilation():
    """The Sampler runs imagined rollouts unchanged; starts come from the pool; new weights do not
    recompile."""
    spec = ens.EnsembleSpec(obs_dim=2, act_dim=2, members=2, hidden_sizes=(8,))
    env, sim = point2d_model_sim(EnsembleDynamics(spec))
    model_env = ModelVectorEnv(sim, lambda n, seed: env.sample_tasks(n, seed))
    policy = make_policy(2, (8,))
    sampler = Sampler(model_env, policy, rollouts_per_task=3, horizon=5)
    tasks = model_env.sample_tasks(4, 0)
    np.testing.assert_array_equal(tasks["member"], [0, 1, 0, 1])
    pool = np.array([[1.0, 1.0], [-1.0, 0.5], [0.25, -2.0]])
    params = per_task(init_params(policy, jax.random.PRNGKey(0), 2), 4)
    for seed in range(2):
        model = ens.init_ensemble(spec, jax.random.PRNGKey(seed))
        traj = sampler.collect(params, tasks, jax.random.PRNGKey(seed),
                               sim_params=model_sim_params(model, pool, np.full(2, -9.0), np.full(2, 9.0), 2))
        starts = np.asarray(traj.observations)[:, :, 0].reshape(-1, 2)
        assert all(np.any(np.all(np.isclose(s, pool), axis=1)) for s in starts)
    assert sampler._device_rollout._cache_size() == 1
    with pytest.raises(ConfigError, match="sim_params"):
        sampler.collect(params, tasks, jax.random.PRNGKey(0))


def test_transitions_pair_each_step_with_its_next_observation():
    """Real steps become (s, a_env, s') rows; s' of the last simulated step is the final observation."""
    env = make("Point2D")
    mb_config = build_config("mb-mpc", "Point2D", overrides=dict(horizon=7))
    mb = ModelBased(mb_config, env)
    traj, _ = controller_rollouts(env, mb.random_controller(), env.sample_tasks(3, 0), jax.random.PRNGKey(0),
                                  rollouts=2, horizon=7)
    obs, act, nxt = transitions(env, traj)
    assert obs.shape == (3 * 2 * 7, 2)
    np.testing.assert_allclose(nxt, obs + act, rtol=1e-6, atol=1e-6)  # Point2D: s' = s + a
    assert np.all(np.abs(act) <= 0.1 + 1e-7)


def tiny_mpc(**overrides):
    values = dict(iterations=3, real_steps_per_iter=150, initial_random_steps=150, horizon=30,
                  model_hidden_sizes="32,32", model_members=2, plan_candidates=100, model_max_epochs=20,
                  model_batch_size=64, checkpoint_every=1, buffer_size=2000, model_start_pool=16)
    values.update(overrides)
    return build_config("mb-mpc", "Point2D", overrides=values)


def rows_without_time(run_dir):
    with open(run_dir / "progress.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in csv.DictReader(f)]


def test_mb_mpc_reaches_the_point2d_goal_region_in_a_few_iterations(tmp_path):
    """MB-MPC on Point2D (r = −‖s′‖²): after two model fits, MPC brings the point from
    s0 ~ U[−2, 2]² to within 0.25 of the origin by the episode's end, and the return is far above
    the random controller's."""
    result = train(tiny_mpc(iterations=3), tmp_path / "run", show_progress=False, tensorboard=False)
    rows = result.rows
    assert rows[-1]["AverageReturn"] > 0.4 * rows[0]["AverageReturn"]  # returns are negative
    report = evaluate(tmp_path / "run", tasks=8, seed=5)
    final = np.asarray(report["result"].final_observations).reshape(-1, 2)
    assert np.median(np.linalg.norm(final, axis=-1)) < 0.25
    assert report["rows"][0]["ci95_low"] < report["rows"][0]["mean_return"] < report["rows"][0]["ci95_high"]


def test_mb_mpc_resumes_exactly_after_ctrl_c(tmp_path, interrupted_run):
    """An MB-MPC run interrupted after iteration 1 and resumed writes the uninterrupted rows:
    the checkpoint holds the models, their optimizer states and normalisation, and the buffer."""
    def check_checkpoint(run_dir):
        arrays, meta = read_checkpoint(run_dir)
        assert meta["iteration"] == 2
        assert any(name.startswith(".buffer") for name in arrays) and any("opt_state" in n for n in arrays)

    straight, resumed = interrupted_run(tiny_mpc(iterations=3), tmp_path, between=check_checkpoint)
    assert rows_without_time(resumed) == rows_without_time(straight)


def test_mb_mpc_settings_are_checked():
    with pytest.raises(ConfigError, match="inner_lr is not a setting of mb-mpc"):
        build_config("mb-mpc", "Point2D", overrides={"inner_lr": "0.05"})
    with pytest.raises(ConfigError, match="planner"):
        build_config("mb-mpc", "Point2D", overrides={"planner": "ilqr"})
    with pytest.raises(ConfigError, match="plan_candidates is not a setting of promp"):
        build_config("promp", "PointCorners", overrides={"plan_candidates": "5"})
    assert build_config("mb-mpc", "Point2D", overrides={"planner": "cem"}).planner == "cem"


def test_fitted_ensemble_beats_the_constant_velocity_guess_on_held_out_halfcheetah():
    """Fitted on random-controller HalfCheetah data, the ensemble predicts held-out transitions
    (other episodes) better than the constant-velocity guess q' = q + dt·q̇, q̇' = q̇."""
    from adaptrl.models import training

    env = make("HalfCheetah")
    mb = ModelBased(build_config("mb-mpc", "HalfCheetah", overrides=dict(horizon=100)), env)

    def data(seed, episodes):
        traj, _ = controller_rollouts(env, mb.random_controller(), env.sample_tasks(1, 0),
                                      jax.random.PRNGKey(seed), rollouts=episodes, horizon=100)
        return transitions(env, traj)

    train_data, held_out = data(0, 30), data(1, 5)
    spec = ens.EnsembleSpec(env.spec.obs_dim, env.spec.act_dim, members=2, hidden_sizes=(128, 128))
    settings = training.FitSettings(batch_size=256, max_epochs=60)
    state, _ = training.fit(spec, settings, training.init_model_state(spec, settings, jax.random.PRNGKey(0)),
                            *train_data, jax.random.PRNGKey(1))
    obs, act, nxt = held_out
    predicted = np.asarray(ens.next_obs_all(spec, state.params, jnp.asarray(obs), jnp.asarray(act)).mean(0))
    q, qd = obs[:, :8], obs[:, 8:]
    guess = np.concatenate([q + env.spec.dt * qd[:, 1:], qd], axis=1)
    model_error = np.mean((predicted - nxt) ** 2)
    guess_error = np.mean((guess - nxt) ** 2)
    env.close()
    assert model_error < 0.1 * guess_error, (model_error, guess_error)


def test_cli_trains_and_evaluates_mb_mpc_and_benchmarks_models(tmp_path, capsys):
    """`adaptrl train mb-mpc` writes a run directory with the model-based keys, `eval` runs the
    controller on fresh episodes, `train --help` lists the setting groups and `bench models
    --json` prints the documented keys."""
    from adaptrl.cli import main

    run = tmp_path / "run"
    settings = ["real_steps_per_iter=60", "initial_random_steps=60", "model_hidden_sizes=16",
                "plan_candidates=20", "model_max_epochs=3", "model_members=2"]
    argv = ["train", "mb-mpc", "--env", "Point2D", "--iterations", "2", "--out", str(run), "--no-progress"]
    for setting in settings:
        argv += ["--set", setting]
    assert main(argv) == 0
    header = (run / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ("Itr", "n_timesteps", "AverageReturn", "StdReturn", "MaxReturn", "Model-TrainLoss",
                "Model-ValidLoss", "Model-Epochs", "Model-PredError-1", "Model-PredError-10",
                "Time-EnvSampling", "Time-ModelFit", "Time-Planning", "ItrTime"):
        assert key in header, key
    assert "inner_lr" not in (run / "config.yaml").read_text()  # only the groups mb-mpc uses
    # the real steps `adaptrl reproduce` budgets with: 60 steps = 2 whole episodes of 30, each iteration
    first, later = real_steps_per_iteration(load_run_config(run))
    np.testing.assert_array_equal(read_progress(run)["n_timesteps"], [first, first + later])
    assert (first, later) == (60, 60)
    assert (run / "plots" / "learning_curve.png").is_file()
    capsys.readouterr()
    assert main(["eval", str(run), "--tasks", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tasks"] == 3 and report["rows"][0]["step"] == 0
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "[model-based: MPC planner]" in help_text and "mppi_temperature" in help_text
    assert main(["bench", "models", "--env", "Point2D", "--hidden", "8", "--tasks", "2", "--members", "2",
                 "--rollouts", "2", "--horizon", "5", "--candidates", "8", "--plan-envs", "2",
                 "--repeats", "1", "--epochs", "1", "--data-episodes", "4", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    for key in ("ensemble_member_samples_per_s", "single_member_samples_per_s", "imagined_steps_per_s",
                "forward_steps_per_s", "planner_calls_per_s"):
        assert bench[key] > 0


@pytest.mark.slow
def test_mb_mpc_learns_halfcheetah(tmp_path):
    """MB-MPC (default preset) on HalfCheetah: after a few model fits MPC runs forward. The random
    controller's return is about −50 (control cost, no net motion); MPC's must beat it by 60."""
    config = build_config("mb-mpc", "HalfCheetah", overrides={"iterations": 4})
    result = train(config, tmp_path / "run", show_progress=False, tensorboard=False)
    returns = [row["AverageReturn"] for row in result.rows]
    assert returns[0] < 0
    assert max(returns[1:]) > returns[0] + 60, returns
