"""Point and 1-D task families (JAX device simulator): dynamics and rewards by hand (as the
original ProMP code; docs/environments.md, "Point and 1-D families"), task distributions, resets,
JAX reward functions and input validation. Paper tasks: PointEnv corners (ProMP, Rothfuss et al.,
2019, §7.3, App. D.2), the 1-D goal ±1 task (ProMP §7.4) and the 1-D random-goal task (TMAML,
Liu et al., 2019, §5.3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl.envs import obs_reward_fn, obs_terminated_fn
from adaptrl.envs.base import env_action
from adaptrl.envs.device import FAMILIES as DEVICE_FAMILIES
from adaptrl.errors import ConfigError

DEVICE_NAMES = list(DEVICE_FAMILIES)
CORNERS = {(-2.0, -2.0), (2.0, -2.0), (-2.0, 2.0), (2.0, 2.0)}
# (obs_dim, act_dim, action bound, horizon, actions normalised by default)
SPECS = {
    "PointCorners": (2, 2, 0.2, 100, True),
    "PointMomentum": (4, 2, 0.1, 200, True),
    "Point1D": (1, 1, 2.0, 5, False),
    "Point1DRandGoal": (1, 1, 2.0, 5, False),
    "Point2DNavigation": (2, 2, 0.1, 100, False),
}


def put_state(env, states):
    """Overwrite the running environments' state (= observation), flat [B, obs_dim]."""
    env._obs = jnp.asarray(np.asarray(states, dtype=np.float32))


def f32(x):
    """The values the float32 simulator holds."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


@pytest.mark.parametrize("name", DEVICE_NAMES)
def test_spec(name, make_env):
    """Dimensions, action bounds, horizon, normalisation default (docs/environments.md)."""
    env = make_env(name)
    obs_dim, act_dim, bound, horizon, normalize = SPECS[name]
    assert (env.spec.obs_dim, env.spec.act_dim, env.spec.horizon) == (obs_dim, act_dim, horizon)
    np.testing.assert_array_equal(env.spec.action_high, np.full(act_dim, bound))
    np.testing.assert_array_equal(env.spec.action_low, np.full(act_dim, -bound))
    assert env.spec.normalize_actions is normalize
    assert env.spec.backend == "device"


@pytest.mark.parametrize("name", DEVICE_NAMES)
def test_shapes_and_never_done(name, make_env):
    """Reset/step shapes; these families never terminate within (and beyond) the horizon."""
    env = make_env(name)
    obs_dim, act_dim, _, horizon, _ = SPECS[name]
    m, r = 3, 2
    obs = env.reset(env.sample_tasks(m, seed=0), r, seed=0)
    assert obs.shape == (m, r, obs_dim)
    rng = np.random.default_rng(0)
    for _ in range(min(horizon, 12)):
        obs, reward, done, info = env.step(rng.uniform(-3, 3, size=(m, r, act_dim)))
        assert obs.shape == (m, r, obs_dim)
        assert reward.shape == done.shape == info["diverged"].shape == (m, r)
        assert not done.any()
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))
    term = jax.jit(obs_terminated_fn(env))(jnp.asarray(obs.reshape(-1, obs_dim)))
    assert term.shape == (m * r,) and not np.asarray(term).any()
    assert env.active.all()


# ------------------------------------------------------------------------------------------------
# PointCorners
# ------------------------------------------------------------------------------------------------


def _corners_sparse(s, s_next, g, radius=0.5):
    """Reference MetaPointEnvCorner sparse reward (written out per case)."""
    if np.abs(s_next).sum() < radius:
        return 0.0
    nearest = np.sign(s_next) * 2.0
    if not np.array_equal(nearest, g):
        return 0.0
    return np.linalg.norm(s - g) - np.linalg.norm(s_next - g)


def test_point_corners_sparse_by_hand(make_env):
    """PointCorners (ProMP App. D.2; the original code's sparse reward): s' = s + clip(a, ±0.2);
    reward 0 inside ‖s'‖₁ < 0.5, progress ‖s−g‖−‖s'−g‖ in the goal quadrant, 0 in the other
    quadrants."""
    env = make_env("PointCorners", normalize_actions=False)
    goal = np.array([2.0, 2.0])
    states = np.array([[0.1, 0.1], [1.0, 1.0], [-1.0, 1.0], [1.0, 1.0], [1.5, 1.5], [0.3, 0.1],
                       [1.0, -1.0], [0.2, 0.2]])
    actions = np.array([[0.1, 0.1], [0.2, 0.1], [0.1, 0.1], [0.5, 0.05], [-0.2, -0.2], [0.2, 0.1],
                        [0.1, 0.1], [0.1, 0.1]])
    # last case: ‖s'‖₁ = 0.6 ≥ 0.5 although ‖s'‖₂ ≈ 0.42 (the radius is an L1 radius)
    expected = [0.0, None, 0.0, None, None, None, 0.0, None]
    env.reset({"goal": goal[None]}, len(states), seed=0)
    put_state(env, states)
    obs, reward, done, _ = env.step(actions[None])
    s, a = f32(states), np.clip(actions, -0.2, 0.2)
    s_next = s + a
    np.testing.assert_allclose(obs[0], s_next, rtol=1e-6, atol=1e-6)
    hand = [_corners_sparse(s[i], s_next[i], goal) for i in range(len(states))]
    for i, e in enumerate(expected):
        if e is not None:
            assert hand[i] == e
    assert hand[1] > 0 and hand[3] > 0 and hand[4] < 0 and hand[5] > 0 and hand[7] > 0
    np.testing.assert_allclose(reward[0], hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(reward[0, [0, 2, 6]], 0.0)
    assert not done.any()


def test_point_corners_goal_quadrants(make_env):
    """PointCorners: reward is non-zero only for the goal whose quadrant holds s' (outside the radius)."""
    env = make_env("PointCorners", normalize_actions=False)
    goals = np.array(sorted(CORNERS))
    env.reset({"goal": goals}, 1, seed=0)
    put_state(env, np.tile([[-0.9, 0.8]], (4, 1)))
    _, reward, _, _ = env.step(np.tile([[-0.1, 0.1]], (4, 1, 1)))
    s, s_next = f32([-0.9, 0.8]), f32([-0.9, 0.8]) + np.array([-0.1, 0.1])
    for i, g in enumerate(goals):
        if tuple(g) == (-2.0, 2.0):
            expect = np.linalg.norm(s - g) - np.linalg.norm(s_next - g)
            assert reward[i, 0] == pytest.approx(expect, rel=1e-5)
            assert reward[i, 0] > 0
        else:
            assert reward[i, 0] == 0.0


@pytest.mark.parametrize("reward_type", ["dense", "dense_squared"])
def test_point_corners_dense(reward_type, make_env):
    """Reference §3.4: dense −‖s'−g‖ and dense_squared −‖s'−g‖²."""
    env = make_env("PointCorners", normalize_actions=False, reward_type=reward_type)
    goal = np.array([[-2.0, 2.0]])
    states = np.array([[0.0, 0.0], [0.5, -0.4], [-1.9, 1.9]])
    actions = np.array([[0.1, -0.3], [0.05, 0.05], [-0.2, 0.2]])
    env.reset({"goal": goal}, 3, seed=0)
    put_state(env, states)
    _, reward, _, _ = env.step(actions[None])
    d = np.linalg.norm(f32(states) + np.clip(actions, -0.2, 0.2) - goal, axis=-1)
    expect = -d if reward_type == "dense" else -(d**2)
    np.testing.assert_allclose(reward[0], expect, rtol=1e-5)


def test_point_corners_normalized_actions(make_env):
    """Reference §3.1: the policy acts in ±10, rescaled to ±0.2 (a·0.02) and clipped."""
    env = make_env("PointCorners", reward_type="dense")
    env.reset({"goal": np.array([[2.0, 2.0]])}, 3, seed=0)
    put_state(env, np.zeros((3, 2)))
    policy = np.array([[[10.0, -5.0], [2.5, 0.0], [-30.0, 40.0]]])
    obs, _, _, _ = env.step(policy)
    np.testing.assert_allclose(obs[0], [[0.2, -0.1], [0.05, 0.0], [-0.2, 0.2]], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# PointMomentum
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reward_type", ["sparse", "dense", "dense_squared"])
def test_point_momentum_by_hand(reward_type, make_env):
    """Reference §3.4: v' = v + clip(a, ±0.1), s' = s + v'; sparse max(2 − d, 0), dense −d, −d²."""
    env = make_env("PointMomentum", normalize_actions=False, reward_type=reward_type)
    goal = np.array([[2.0, 2.0]])
    states = np.array([[0.5, 0.5, 0.05, -0.05], [1.5, 1.4, 0.1, 0.1], [-1.0, -1.0, 0.0, 0.0],
                       [1.9, 2.1, -0.3, 0.2]])
    actions = np.array([[0.2, 0.03], [-0.05, 0.5], [0.0, -0.1], [0.1, -0.1]])
    env.reset({"goal": goal}, len(states), seed=0)
    put_state(env, states)
    obs, reward, _, _ = env.step(actions[None])
    s = f32(states)
    v_next = s[:, 2:] + np.clip(actions, -0.1, 0.1)
    s_next = s[:, :2] + v_next
    np.testing.assert_allclose(obs[0], np.concatenate([s_next, v_next], -1), rtol=1e-6, atol=1e-6)
    d = np.linalg.norm(s_next - goal, axis=-1)
    expect = {"sparse": np.maximum(2.0 - d, 0.0), "dense": -d, "dense_squared": -(d**2)}[reward_type]
    np.testing.assert_allclose(reward[0], expect, rtol=1e-5, atol=1e-6)
    if reward_type == "sparse":
        assert reward[0, 0] == 0.0 and reward[0, 2] == 0.0  # farther than 2 from the goal
        assert reward[0, 1] > 0.0 and reward[0, 3] > 0.0


def test_point_momentum_radius_option(make_env):
    """The sparse radius option is applied."""
    env = make_env("PointMomentum", normalize_actions=False, radius=4.0)
    env.reset({"goal": np.array([[2.0, 2.0]])}, 1, seed=0)
    put_state(env, [[0.0, 0.0, 0.0, 0.0]])
    _, reward, _, _ = env.step(np.zeros((1, 1, 2)))
    assert reward[0, 0] == pytest.approx(4.0 - np.sqrt(8.0), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# 1-D envs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Point1D", "Point1DRandGoal"])
def test_point1d_by_hand(name, make_env):
    """1-D envs (the original ``point_1d_hand_grads.py``; docs/environments.md): s' = clip(a, ±2),
    reward exp(−0.1·(s' − g)²)."""
    env = make_env(name)
    goals = np.array([1.0, -1.0]) if name == "Point1D" else np.array([0.37, -0.81])
    actions = np.array([0.5, 3.0, -2.5, -1.0])
    env.reset({"goal": goals}, len(actions), seed=0)
    obs, reward, done, _ = env.step(np.tile(actions[None, :, None], (2, 1, 1)))
    s_next = np.clip(actions, -2.0, 2.0)
    np.testing.assert_allclose(obs[..., 0], np.tile(s_next, (2, 1)), rtol=1e-6)
    expect = np.exp(-0.1 * (s_next[None, :] - goals[:, None]) ** 2)
    np.testing.assert_allclose(reward, expect, rtol=1e-6)
    assert not done.any()
    # reward is maximal (1) at the goal
    env.reset({"goal": goals}, 1, seed=0)
    _, reward, _, _ = env.step(goals[:, None, None])
    np.testing.assert_allclose(reward[:, 0], 1.0, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Tasks and resets
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["PointCorners", "PointMomentum"])
def test_corner_tasks(name, make_env):
    """Goals are exactly the four corners (±2, ±2), sampled uniformly (ProMP App. D.2)."""
    env = make_env(name)
    g = env.sample_tasks(4000, seed=0)["goal"]
    assert g.shape == (4000, 2)
    rows = [tuple(x) for x in g.tolist()]
    assert set(rows) == CORNERS
    counts = np.array([rows.count(c) for c in sorted(CORNERS)])
    assert counts.min() > 900 and counts.max() < 1100


def test_point1d_tasks(make_env):
    """Point1D: goal ∈ {−1, +1} (ProMP §7.4), both drawn about equally often."""
    g = make_env("Point1D").sample_tasks(2000, seed=0)["goal"]
    assert g.shape == (2000,)
    assert set(np.unique(g).tolist()) == {-1.0, 1.0}
    assert 0.45 < np.mean(g == 1.0) < 0.55


def test_point1d_rand_goal_tasks(make_env):
    """Point1DRandGoal: goal ~ U(−1, 1) (TMAML §5.3)."""
    g = make_env("Point1DRandGoal").sample_tasks(2000, seed=0)["goal"]
    assert g.min() >= -1.0 and g.max() <= 1.0
    assert g.min() < -0.98 and g.max() > 0.98 and abs(g.mean()) < 0.05


def test_point2d_navigation_is_mamls_task(make_env):
    """Point2DNavigation (MAML §5.3): start at the origin, s' = s + clip(a, ±0.1), reward −‖s' − g‖,
    goals uniform on [−0.5, 0.5]², 100 steps, no termination."""
    env = make_env("Point2DNavigation")
    goals = env.sample_tasks(4000, seed=0)["goal"]
    assert goals.shape == (4000, 2) and goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.min() < -0.49 and goals.max() > 0.49 and np.abs(goals.mean(0)).max() < 0.02
    tasks = {"goal": np.array([[0.3, -0.2]])}
    obs = env.reset(tasks, 1, seed=0).reshape(-1, 2)
    np.testing.assert_array_equal(obs, [[0.0, 0.0]])
    actions = [[0.05, -0.3], [0.5, 0.02], [-0.04, 0.1]]
    state, expected_obs, expected_rewards = np.zeros(2), [], []
    for a in actions:
        state = state + np.clip(a, -0.1, 0.1)
        expected_obs.append(state.copy())
        expected_rewards.append(-np.linalg.norm(state - tasks["goal"][0]))
    for a, want_obs, want_reward in zip(actions, expected_obs, expected_rewards, strict=True):
        obs, reward, terminated, _ = env.step(np.asarray(a, dtype=np.float32).reshape(1, 1, 2))
        np.testing.assert_allclose(obs.reshape(2), f32(want_obs), atol=1e-6)
        np.testing.assert_allclose(float(np.asarray(reward).ravel()[0]), want_reward, atol=1e-6)
        assert not np.asarray(terminated).any()
    assert env.spec.horizon == 100


@pytest.mark.parametrize("name", DEVICE_NAMES)
def test_task_sampling_seeded(name, make_env):
    """Same seed → identical tasks; different seed → different tasks; a batch is not constant."""
    env = make_env(name)
    a, b, c = env.sample_tasks(16, seed=1), env.sample_tasks(16, seed=1), env.sample_tasks(16, seed=2)
    np.testing.assert_array_equal(a["goal"], b["goal"])
    assert not np.array_equal(a["goal"], c["goal"])
    assert len(np.unique(a["goal"], axis=0)) > 1


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("PointCorners", [-0.2, -0.2], [0.2, 0.2]),
        ("PointMomentum", [-0.2, -0.2, -0.1, -0.1], [0.2, 0.2, 0.1, 0.1]),
        ("Point1D", [-2.0], [2.0]),
        ("Point1DRandGoal", [-2.0], [2.0]),
    ],
)
def test_reset_distribution(name, low, high, make_env):
    """Reference §3.4-3.5: initial states uniform in the documented boxes; seeded resets."""
    env = make_env(name)
    tasks = env.sample_tasks(2, seed=0)
    obs = env.reset(tasks, 500, seed=3).reshape(-1, len(low))
    low, high = np.array(low), np.array(high)
    assert np.all(obs >= low) and np.all(obs <= high)
    assert np.all(obs.min(0) < low + 0.02 * (high - low)) and np.all(obs.max(0) > high - 0.02 * (high - low))
    np.testing.assert_array_equal(env.reset(tasks, 500, seed=3).reshape(-1, len(low)), obs)
    assert not np.array_equal(env.reset(tasks, 500, seed=4).reshape(-1, len(low)), obs)
    assert len(np.unique(obs[:, 0])) == len(obs)  # rollouts start in different states


# ------------------------------------------------------------------------------------------------
# JAX reward functions and pure functions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("PointCorners", {}),
        ("PointCorners", {"reward_type": "dense"}),
        ("PointMomentum", {}),
        ("PointMomentum", {"reward_type": "dense_squared"}),
        ("Point1D", {}),
        ("Point1DRandGoal", {}),
    ],
)
def test_jax_reward_equals_simulator(name, options, make_env):
    """obs_reward_fn(env)(obs, policy action, next_obs, task) (jitted) equals the
    simulator reward on real transitions."""
    env = make_env(name, **options)
    m, r = 4, 8
    tasks = env.sample_tasks(m, seed=0)
    env_tasks = {k: jnp.asarray(np.repeat(v, r, axis=0)) for k, v in tasks.items()}
    obs = env.reset(tasks, r, seed=0)
    if name == "PointCorners":  # start near the corners so the sparse reward is exercised
        put_state(env, np.repeat(tasks["goal"], r, axis=0) * 0.7)
        obs = np.asarray(env._obs).reshape(m, r, -1)
    fn = jax.jit(obs_reward_fn(env))
    rng = np.random.default_rng(1)
    nonzero = 0
    for _ in range(10):
        a = rng.uniform(-12, 12, size=(m, r, env.spec.act_dim))
        next_obs, reward, _, _ = env.step(a)
        got = fn(jnp.asarray(obs.reshape(m * r, -1)), jnp.asarray(a.reshape(m * r, -1)),
                 jnp.asarray(next_obs.reshape(m * r, -1)), env_tasks)
        np.testing.assert_allclose(np.asarray(got), reward.reshape(-1), rtol=1e-5, atol=1e-6)
        nonzero += int(np.sum(reward != 0))
        obs = next_obs
    assert nonzero > 0


@pytest.mark.parametrize("name", DEVICE_NAMES)
def test_step_env_matches_vector_step(name, make_env):
    """The pure per-env step (used inside lax.scan) equals the vector protocol's step."""
    env = make_env(name)
    tasks = env.sample_tasks(2, seed=0)
    obs = env.reset(tasks, 1, seed=0)
    a = np.random.default_rng(0).uniform(-5, 5, size=(2, 1, env.spec.act_dim))
    next_obs, reward, done, _ = env.step(a)
    for i in range(2):
        task = {k: jnp.asarray(v[i]) for k, v in tasks.items()}
        sim = env.simulator
        state = sim.reset({}, jax.random.PRNGKey(0), task, start_obs=jnp.asarray(obs[i, 0]))
        next_state, rew, d = sim.step(sim.default_params(), state, jnp.asarray(a[i, 0]),
                                      jax.random.PRNGKey(1))
        o = sim.observe(next_state)
        np.testing.assert_allclose(np.asarray(o), next_obs[i, 0], rtol=1e-6)
        assert float(rew) == pytest.approx(float(reward[i, 0]), rel=1e-6, abs=1e-7)
        assert bool(d) == bool(done[i, 0])


def test_env_action_mapping():
    """Reference §3.1: low + (a + 10)(high − low)/20, clipped; no normalisation: clip only."""
    low, high = np.array([-1.0, 0.0]), np.array([1.0, 4.0])
    a = np.array([[10.0, 10.0], [-10.0, -10.0], [0.0, 0.0], [5.0, -5.0], [20.0, -20.0]])
    expect = np.array([[1.0, 4.0], [-1.0, 0.0], [0.0, 2.0], [0.5, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(env_action(a, low, high, True), expect)
    np.testing.assert_allclose(np.asarray(env_action(jnp.asarray(a), low, high, True, xp=jnp)), expect,
                               rtol=1e-6)
    np.testing.assert_allclose(env_action(a, low, high, False), np.clip(a, low, high))


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "needle"),
    [
        ("PointCorners", {"reward_type": "bogus"}, "reward_type"),
        ("PointCorners", {"velocity_range": (0, 1)}, "unknown option"),
        ("Point1D", {"reward_type": "dense"}, "unknown option"),
    ],
)
def test_bad_options(name, options, needle, make_env):
    with pytest.raises(ConfigError, match=needle):
        make_env(name, **options)


def test_bad_input(make_env):
    env = make_env("PointCorners")
    tasks = env.sample_tasks(2, seed=0)
    with pytest.raises(ConfigError, match="reset"):
        env.step(np.zeros((2, 1, 2)))
    with pytest.raises(ConfigError, match="rollouts_per_task"):
        env.reset(tasks, 0)
    with pytest.raises(ConfigError, match="keys"):
        env.reset({"direction": np.ones(2)}, 1)
    with pytest.raises(ConfigError, match="per-task shape"):
        env.reset({"goal": np.ones(2)}, 1)
    env.reset(tasks, 3, seed=0)
    with pytest.raises(ConfigError, match="shape"):
        env.step(np.zeros((2, 2, 2)))
    bad = np.zeros((2, 3, 2))
    bad[0, 2, 1] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        env.step(bad)
    obs, _, _, _ = env.step(np.zeros((2, 3, 2)))
    assert obs.shape == (2, 3, 2)
