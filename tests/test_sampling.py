"""Sampler: shapes, masks after termination, determinism, per-task parameters (docs/architecture.md,
"The data flow")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl.envs import make
from adaptrl.errors import ConfigError
from adaptrl.policies import gaussian_log_prob, init_params, make_policy, per_task
from adaptrl.sampling import Sampler


def _setup(name, m, r, horizon, seed=0, **options):
    env = make(name, **options)
    policy = make_policy(env.spec.act_dim, hidden_sizes=(8, 8))
    params = per_task(init_params(policy, jax.random.PRNGKey(seed), env.spec.obs_dim), m)
    return env, policy, params, Sampler(env, policy, r, horizon), env.sample_tasks(m, seed)


@pytest.mark.parametrize("name", ["HalfCheetahRandDirec", "PointCorners", "Point1D"])
def test_shapes_and_log_probs(name):
    env, policy, params, sampler, tasks = _setup(name, 3, 4, 7)
    traj = sampler.collect(params, tasks, jax.random.PRNGKey(1))
    obs_dim, act_dim = env.spec.obs_dim, env.spec.act_dim
    assert traj.observations.shape == (3, 4, 7, obs_dim)
    assert traj.actions.shape == traj.means.shape == traj.log_stds.shape == (3, 4, 7, act_dim)
    for arr in (traj.rewards, traj.mask, traj.dones, traj.log_probs):
        assert arr.shape == (3, 4, 7)
    assert traj.final_observations.shape == (3, 4, obs_dim)
    assert traj.num_env_steps == 3 * 4 * 7
    expected = gaussian_log_prob(jnp.asarray(traj.actions), jnp.asarray(traj.means),
                                 jnp.asarray(traj.log_stds))
    np.testing.assert_allclose(traj.log_probs, expected, rtol=1e-5, atol=1e-5)
    # the recorded sampling distribution is the policy's at the recorded observations
    mean, log_std = jax.vmap(policy.apply)(params, jnp.asarray(traj.observations))
    np.testing.assert_allclose(traj.means, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(traj.log_stds, log_std, atol=1e-6)


def test_masks_after_termination():
    """Walker2D falls under large random actions: mask 1 up to and including the terminal step."""
    env, policy, params, sampler, tasks = _setup("Walker2DRandDirec", 2, 6, 200)
    params = jax.tree_util.tree_map(lambda x: x, params)
    params["params"]["log_std"] = params["params"]["log_std"] + 1.5  # std e^1.5 ≈ 4.5 in the ±10 box
    traj = sampler.collect(params, tasks, jax.random.PRNGKey(3))
    lengths = traj.mask.sum(-1)
    assert (lengths < 200).any(), "some walkers should fall within the horizon"
    for i in range(2):
        for j in range(6):
            n = int(lengths[i, j])
            assert np.all(traj.mask[i, j, :n] == 1) and np.all(traj.mask[i, j, n:] == 0)
            assert np.all(traj.rewards[i, j, n:] == 0)
            if n < 200:
                assert traj.dones[i, j, n - 1] == 1 and traj.dones[i, j].sum() == 1
            else:
                assert traj.dones[i, j].sum() == 0
    assert traj.num_env_steps == int(lengths.sum())
    # the terminal observation satisfies the family's termination rule
    ends = [(i, j, int(lengths[i, j])) for i in range(2) for j in range(6) if lengths[i, j] < 200]
    i, j, n = ends[0]
    h, ang = traj.final_observations[i, j, 0], traj.final_observations[i, j, 1]
    assert not (0.8 < h < 2.0 and -1.0 < ang < 1.0)


@pytest.mark.parametrize("name", ["HopperRandParams", "PointMomentum"])
def test_deterministic_given_key(name):
    env, policy, params, sampler, tasks = _setup(name, 2, 3, 30)
    a = sampler.collect(params, tasks, jax.random.PRNGKey(7))
    b = sampler.collect(params, tasks, jax.random.PRNGKey(7))
    c = sampler.collect(params, tasks, jax.random.PRNGKey(8))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.observations, c.observations)


def test_per_task_parameters_are_used_per_task():
    """Task i's trajectories are sampled with task i's parameters, not another task's."""
    env, policy, params, sampler, tasks = _setup("PointCorners", 3, 2, 10)
    bias = jnp.asarray([[5.0, 5.0], [-5.0, 0.0], [0.0, -5.0]])
    params["params"]["output"]["bias"] = bias
    params["params"]["log_std"] = jnp.full((3, 2), -6.0)  # near-deterministic actions
    traj = sampler.collect(params, tasks, jax.random.PRNGKey(0))
    for i in range(3):
        mean, _ = policy.apply(jax.tree_util.tree_map(lambda x, i=i: x[i], params),
                               jnp.asarray(traj.observations[i]))
        np.testing.assert_allclose(traj.means[i], mean, atol=1e-5)
    # the mean action is dominated by the bias: 5 in the ±10 box is +0.1 per step for the point
    steps = np.diff(traj.observations[:, 0, :, :], axis=1)
    np.testing.assert_allclose(steps[0].mean(0), [0.1, 0.1], atol=0.05)
    np.testing.assert_allclose(steps[1].mean(0), [-0.1, 0.0], atol=0.05)
    np.testing.assert_allclose(steps[2].mean(0), [0.0, -0.1], atol=0.05)


def test_device_rollout_follows_dynamics_and_reward():
    """Device scan rollout: s' = s + clip(a·0.2/10, ±0.2) and the recorded reward is the env's."""
    env, policy, params, sampler, tasks = _setup("PointCorners", 2, 3, 20)
    traj = sampler.collect(params, tasks, jax.random.PRNGKey(4))
    obs = np.concatenate([traj.observations, traj.final_observations[:, :, None]], axis=2)
    env_act = np.clip(traj.actions * 0.02, -0.2, 0.2)
    np.testing.assert_allclose(obs[:, :, 1:], obs[:, :, :-1] + env_act, atol=1e-5)
    goal = np.asarray(tasks["goal"])[:, None, None]
    reward = env.reward(jnp.asarray(obs[:, :, :-1]), jnp.asarray(env_act),
                        jnp.asarray(obs[:, :, 1:]), {"goal": jnp.asarray(goal)})
    np.testing.assert_allclose(traj.rewards, reward, atol=1e-5)


def test_host_sampler_matches_manual_stepping():
    """The host sampler's transitions are exactly the vector env's for the recorded actions."""
    env, policy, params, sampler, tasks = _setup("SwimmerRandVel", 2, 2, 5)
    traj = sampler.collect(params, tasks, jax.random.PRNGKey(5))
    other = make("SwimmerRandVel")
    seed = int(jax.random.randint(jax.random.split(jax.random.PRNGKey(5))[0], (), 0,
                                  np.iinfo(np.int32).max))
    obs = other.reset(tasks, 2, seed=seed)
    for t in range(5):
        np.testing.assert_allclose(traj.observations[:, :, t], obs, rtol=1e-6, atol=1e-6)
        obs, reward, _, _ = other.step(traj.actions[:, :, t].astype(np.float64))
        np.testing.assert_allclose(traj.rewards[:, :, t], reward, rtol=1e-4, atol=1e-6)


def test_bad_parameter_shapes_and_tasks():
    env, policy, params, sampler, tasks = _setup("PointCorners", 3, 2, 5)
    with pytest.raises(ConfigError, match=r"must have shape \(3, 8\).*got \(2, 8\)"):
        sampler.collect(per_task(init_params(policy, jax.random.PRNGKey(0), 2), 2), tasks,
                        jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="structure"):
        sampler.collect({"params": {"w": jnp.zeros((3, 2))}}, tasks, jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="keys"):
        sampler.collect(params, {"target": np.zeros((3, 2))}, jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="rollouts_per_task"):
        Sampler(env, policy, 0)
    with pytest.raises(ConfigError, match="horizon"):
        Sampler(env, policy, 2, horizon=-1)


def test_nan_policy_gives_clear_error():
    env, policy, params, sampler, tasks = _setup("HalfCheetahRandDirec", 2, 2, 3)
    params["params"]["output"]["bias"] = jnp.full((2, env.spec.act_dim), jnp.nan)
    with pytest.raises(ConfigError, match="non-finite actions"):
        sampler.collect(params, tasks, jax.random.PRNGKey(0))


def test_impossible_batch_size_is_refused_before_allocating():
    env, policy, params, sampler, tasks = _setup("PointCorners", 2, 2, 5)
    huge = Sampler(env, policy, rollouts_per_task=10**7, horizon=10**4)
    with pytest.raises(ConfigError, match="GiB"):
        huge.collect(params, tasks, jax.random.PRNGKey(0))


# ----------------------------------------------------------------------- the simulator protocol
class LinearModelSimulator:
    """A stand-in for a learned dynamics model: s' = W·s + a, reward −‖s'‖², parameters W passed
    to every step (the device-simulator protocol of adaptrl.envs.simulator)."""

    def __init__(self, spec):
        self.spec = spec

    def default_params(self):
        return {"W": jnp.eye(2)}

    def reset(self, sim_params, key, task, start_obs=None):
        obs = jax.random.uniform(key, (2,), minval=-0.5, maxval=0.5) if start_obs is None else start_obs
        return obs

    def observe(self, state):
        return state

    def step(self, sim_params, state, action, key):
        next_state = sim_params["W"] @ state + 0.1 * action
        return next_state, -jnp.sum(next_state**2), jnp.asarray(False)


def _mean_return(sim, policy, sim_params, params, tasks, key, horizon=6):
    from adaptrl.sampling import device_rollout

    traj = device_rollout(sim, policy, sim_params, params, tasks, key, rollouts=3, horizon=horizon)
    return jnp.mean(jnp.sum(traj.rewards, -1))


def test_device_rollout_is_differentiable_in_policy_and_simulator_parameters():
    """Pathwise gradients of the mean return through the whole on-device rollout (reparameterised
    actions) equal central finite differences, for the policy's and for the simulator's
    parameters — a learned model's weights are an argument, not a constant."""
    env = make("PointCorners")
    sim = LinearModelSimulator(env.spec)
    policy = make_policy(2, hidden_sizes=(4,), init_std=0.3)
    params = per_task(init_params(policy, jax.random.PRNGKey(0), 2), 2)
    tasks = {"goal": jnp.zeros((2, 2))}
    key = jax.random.PRNGKey(3)
    sim_params = {"W": jnp.asarray([[0.9, 0.1], [-0.2, 1.0]])}
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), params)
        sim64 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), sim_params)
        g_policy, g_sim = jax.grad(lambda p, s: _mean_return(sim, policy, s, p, tasks, key), argnums=(0, 1))(
            params64, sim64)
        for tree, grad, argnum in ((params64, g_policy, 0), (sim64, g_sim, 1)):
            direction = jax.tree_util.tree_map(lambda x: jnp.cos(jnp.arange(x.size).reshape(x.shape) + 1.0),
                                               tree)
            eps = 1e-5

            def shifted(sign, tree=tree, direction=direction, eps=eps):
                return jax.tree_util.tree_map(lambda x, dx, s=sign * eps: x + s * dx, tree, direction)

            def value(t, argnum=argnum):
                return _mean_return(sim, policy, t if argnum == 1 else sim64, t if argnum == 0 else params64,
                                    tasks, key)

            fd = (value(shifted(1)) - value(shifted(-1))) / (2 * eps)
            analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grad),
                                                           jax.tree_util.tree_leaves(direction), strict=True))
            assert abs(float(analytic)) > 1e-3
            np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-6)


def test_new_simulator_parameters_do_not_recompile_the_rollout():
    """The jitted rollout takes the simulator's parameters as an argument: new weights reuse the
    compiled function and change the result (nothing is baked in as a constant)."""
    from adaptrl.sampling import device_rollout

    env = make("PointCorners")
    sim = LinearModelSimulator(env.spec)
    policy = make_policy(2, hidden_sizes=(4,))
    params = per_task(init_params(policy, jax.random.PRNGKey(0), 2), 2)
    tasks = {"goal": jnp.zeros((2, 2))}
    rollout = jax.jit(lambda s, p, t, k: device_rollout(sim, policy, s, p, t, k, rollouts=3, horizon=5))
    first = rollout({"W": jnp.eye(2)}, params, tasks, jax.random.PRNGKey(1))
    second = rollout({"W": 0.5 * jnp.eye(2)}, params, tasks, jax.random.PRNGKey(1))
    assert rollout._cache_size() == 1
    assert not np.allclose(np.asarray(first.rewards), np.asarray(second.rewards))
    # same key: same start states and noise, so the first actions agree and later ones follow W
    np.testing.assert_allclose(np.asarray(first.actions[:, :, 0]), np.asarray(second.actions[:, :, 0]))
    np.testing.assert_allclose(np.asarray(first.observations[:, :, 0]),
                               np.asarray(second.observations[:, :, 0]))


def test_device_family_rollout_matches_its_vector_protocol():
    """PointCorners through the Sampler's one-scan rollout gives the same trajectories as stepping
    the same simulator through its vector protocol with the recorded actions."""
    env, policy, params, sampler, tasks = _setup("PointCorners", 2, 3, 9)
    traj = sampler.collect(params, tasks, jax.random.PRNGKey(4))
    obs = np.asarray(traj.observations)
    sim = env.simulator
    rewards = []
    for i in range(2):
        for j in range(3):
            task = {k: jnp.asarray(v[i]) for k, v in tasks.items()}
            state = sim.reset({}, jax.random.PRNGKey(0), task, start_obs=jnp.asarray(obs[i, j, 0]))
            row = []
            for t in range(9):
                np.testing.assert_allclose(np.asarray(sim.observe(state)), obs[i, j, t], rtol=1e-5, atol=1e-6)
                state, reward, _ = sim.step(sim.default_params(), state, jnp.asarray(traj.actions[i, j, t]),
                                            jax.random.PRNGKey(t))
                row.append(float(reward))
            rewards.append(row)
    np.testing.assert_allclose(np.asarray(rewards).reshape(2, 3, 9), np.asarray(traj.rewards), rtol=1e-5,
                               atol=1e-6)


def test_sampling_check_names_the_largest_number_of_tasks_that_fits(monkeypatch):
    """Under a 1 GiB limit the sampler refuses, without sampling, a round whose trajectories and
    working memory (adaptrl.memory, phase ``sample``) exceed it, and names the largest that fits."""
    from adaptrl import memory

    monkeypatch.delenv(memory.MEMORY_ENV, raising=False)
    monkeypatch.setattr(memory, "available_bytes", lambda: memory.GIB)
    env, policy, _, _, _ = _setup("PointCorners", 2, 2, 5)
    sampler = Sampler(env, policy, rollouts_per_task=1000, horizon=1000)

    def never(*args):
        raise AssertionError("sampled")

    sampler._device_rollout = never
    params = per_task(init_params(policy, jax.random.PRNGKey(0), env.spec.obs_dim), 40)
    with pytest.raises(ConfigError) as info:
        sampler.collect(params, env.sample_tasks(40, 0), jax.random.PRNGKey(0))
    message = str(info.value)
    assert message.startswith("sampling 40 tasks needs about ")
    assert "(one sampling round: 40 tasks × 1000 rollouts × 1000 steps of PointCorners)" in message
    largest = int(message.split("the largest number of tasks that fits is ")[1].split()[0])
    shape = memory.BatchShape(tasks=largest, rollouts=1000, horizon=1000, obs_dim=env.spec.obs_dim,
                              act_dim=env.spec.act_dim, param_count=sum(
                                  int(np.size(x)) for x in jax.tree_util.tree_leaves(params)) // 40,
                              inner_steps=0)
    assert 0 < largest < 40
    assert memory.estimate_batch_bytes(shape, "sample") <= memory.GIB - memory.RESERVE_BYTES
