"""Gymnasium wrapper: every family and alias registered as ``adaptrl/<Name>-v0`` passes Gymnasium's
env checker, exposes the meta API (sample_tasks / set_task / get_task), and gives the same rewards
as the vectorised environment. Task families: ProMP §7.3–7.4, App. D.2 and TMAML §5.1, §5.3
(docs/environments.md); tasks: ProMP §3.
"""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import adaptrl  # noqa: F401  (registers the ids)
from adaptrl.envs import ALIASES, canonical_name, family_names, stack_tasks
from adaptrl.envs.gym_env import MetaEnv
from adaptrl.errors import ConfigError

ALL_NAMES = [*family_names(), *sorted(ALIASES)]


def test_every_family_and_alias_registered():
    for name in ALL_NAMES:
        assert f"adaptrl/{name}-v0" in gymnasium.registry


@pytest.mark.parametrize("name", ALL_NAMES)
def test_check_env(name, gym_env):
    """Gymnasium's env checker passes for every registered id."""
    env = gym_env(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_spaces_and_time_limit(name, gym_env, make_env):
    """Spaces match the family spec; TimeLimit's max_episode_steps is the family horizon
    (docs/environments.md)."""
    env = gym_env(name)
    venv = make_env(name)
    spec = venv.spec
    assert env.spec.max_episode_steps == spec.horizon
    assert isinstance(env, gymnasium.wrappers.TimeLimit) or any(
        isinstance(w, gymnasium.wrappers.TimeLimit) for w in _wrappers(env)
    )
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (spec.act_dim,)
    np.testing.assert_array_equal(env.action_space.high, spec.policy_action_high.astype(np.float32))
    np.testing.assert_array_equal(env.action_space.low, spec.policy_action_low.astype(np.float32))
    assert env.unwrapped.name == canonical_name(name)


def _wrappers(env):
    while isinstance(env, gymnasium.Wrapper):
        yield env
        env = env.env


def test_time_limit_truncates_at_horizon(gym_env):
    """Point1D's horizon is 5: the 5th step is truncated, not terminated."""
    env = gym_env("Point1D")
    env.reset(seed=0)
    for t in range(1, 6):
        _, _, terminated, truncated, _ = env.step(np.array([0.5], dtype=np.float32))
        assert not terminated
        assert truncated == (t == 5)


@pytest.mark.parametrize("name", family_names())
def test_task_round_trip(name, gym_env):
    """ProMP §3 (tasks): sample_tasks → set_task → get_task/reset info round-trip; get_task returns a copy."""
    env = gym_env(name)
    env.reset(seed=3)
    tasks = env.unwrapped.sample_tasks(3)
    assert isinstance(tasks, list) and len(tasks) == 3
    assert sorted(tasks[0]) == sorted(make_keys(name))
    env.unwrapped.set_task(tasks[1])
    got = env.unwrapped.get_task()
    assert sorted(got) == sorted(tasks[1])
    for k in got:
        np.testing.assert_array_equal(got[k], tasks[1][k])
    _, info = env.reset(seed=1)
    for k in got:
        np.testing.assert_array_equal(info["task"][k], tasks[1][k])
    key = next(iter(got))
    got[key] = got[key] + 1.0  # mutating the returned copy does not change the task
    np.testing.assert_array_equal(env.unwrapped.get_task()[key], tasks[1][key])
    _, info = env.reset(seed=1, options={"task": tasks[2]})
    for k in tasks[2]:
        np.testing.assert_array_equal(env.unwrapped.get_task()[k], tasks[2][k])
        np.testing.assert_array_equal(info["task"][k], tasks[2][k])
    with pytest.raises(ConfigError):
        env.unwrapped.set_task({"no_such_key": np.zeros(2)})


def make_keys(name):
    from adaptrl.envs import make

    env = make(name)
    try:
        return list(env.sample_tasks(1, 0))
    finally:
        env.close()


@pytest.mark.parametrize(
    "name", ["HalfCheetahRandVel", "HopperRandParams", "PointCorners", "Point1DRandGoal"]
)
def test_sample_tasks_seeded_by_reset(name, gym_env):
    """sample_tasks draws from np_random: reproducible through reset(seed=...)."""
    a, b = gym_env(name), gym_env(name)
    a.reset(seed=11)
    b.reset(seed=11)
    ta, tb = a.unwrapped.sample_tasks(4), b.unwrapped.sample_tasks(4)
    for x, y in zip(ta, tb, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    b.reset(seed=12)
    tc = b.unwrapped.sample_tasks(4)
    assert any(not np.array_equal(x[k], y[k]) for x, y in zip(ta, tc, strict=True) for k in x)


FIXED_START = {"Point2DNavigation": [0.0, 0.0]}  # MAML §5.3: the point starts at the origin


@pytest.mark.parametrize("name", family_names())
def test_seeded_reset_reproducible(name, gym_env):
    env = gym_env(name)
    o1, _ = env.reset(seed=42)
    a = env.action_space.sample()
    s1 = env.step(a)
    o2, _ = env.reset(seed=42)
    s2 = env.step(a)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(s1[0], s2[0])
    assert s1[1] == s2[1]
    o3, _ = env.reset(seed=43)
    if name in FIXED_START:  # the seed has nothing to draw: every episode starts there
        np.testing.assert_array_equal(o3, FIXED_START[name])
    else:
        assert not np.array_equal(o1, o3)
    assert isinstance(s1[1], float) and isinstance(s1[2], bool) and s1[3] is False
    assert s1[0].shape == env.observation_space.shape and s1[0].dtype == np.float64
    assert "diverged" in s1[4]


@pytest.mark.parametrize(
    "name", ["HalfCheetahRandDirec", "AntRandGoal", "HumanoidRandDirec2D", "HopperRandParams",
             "SwimmerRandVel", "PointCorners", "PointMomentum", "Point1D"]
)
def test_gym_reward_equals_vector_env(name, gym_env, make_env):
    """The Gymnasium env (a batch of one) gives the vector env's observations, rewards and
    terminations for the same task, seed and actions."""
    env = gym_env(name)
    venv = make_env(name)
    task = venv.sample_tasks(5, seed=2)
    task = {k: v[3] for k, v in task.items()}
    seed = 17
    obs_g, _ = env.reset(seed=seed, options={"task": task})
    env_seed = int(np.random.default_rng(seed).integers(0, 2**31 - 1))  # as MetaEnv.reset draws it
    obs_v = venv.reset(stack_tasks([task]), 1, seed=env_seed)
    np.testing.assert_array_equal(obs_g, obs_v[0, 0])
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    for _ in range(4):
        a = rng.uniform(low, high).astype(np.float32)
        obs_g, rew_g, term_g, _, _ = env.step(a)
        obs_v, rew_v, done_v, _ = venv.step(a.astype(np.float64)[None, None])
        np.testing.assert_allclose(obs_g, obs_v[0, 0], rtol=1e-12, atol=0)
        assert rew_g == pytest.approx(float(rew_v[0, 0]), rel=1e-12, abs=1e-12)
        assert term_g == bool(done_v[0, 0])
        if term_g:
            break


def test_point_render(gym_env):
    """PointCorners renders an (H, W, 3) uint8 picture with the goal (green) and agent (red)."""
    env = gym_env("PointCorners", render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (240, 320, 3)
    colours = {tuple(c) for c in img.reshape(-1, 3).tolist()}
    assert (40, 160, 40) in colours and (200, 40, 40) in colours
    env2 = gym_env("PointCorners", render_mode="rgb_array", width=64, height=48)
    env2.reset(seed=0)
    assert env2.render().shape == (48, 64, 3)
    env3 = gym_env("PointCorners")
    env3.reset(seed=0)
    assert env3.render() is None


def test_bad_render_mode_and_step_before_reset():
    with pytest.raises(ConfigError, match="render_mode"):
        MetaEnv("PointCorners", render_mode="human")
    env = MetaEnv("Point1D")
    with pytest.raises(ConfigError, match="reset"):
        env.step(np.zeros(1, dtype=np.float32))
    env.close()


def test_module_import_syntax():
    env = gymnasium.make("adaptrl:adaptrl/Point1D-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1,)
    env.close()


@pytest.mark.parametrize("name", ["HalfCheetahRandDirec", "PointCorners", "HalfCheetah", "Point2D"])
def test_envs_pickle_and_deepcopy(name):
    """Vector envs and Gymnasium envs survive pickle and deepcopy (worker processes, Ray actors,
    snapshots): the copy is a fresh env of the same family and options that steps like the original."""
    import copy
    import pickle

    import adaptrl.envs

    vec = adaptrl.envs.make(name, horizon=7)
    for clone in (pickle.loads(pickle.dumps(vec)), copy.deepcopy(vec)):
        assert clone.spec.horizon == 7 and clone.spec.name == vec.spec.name
        tasks = vec.sample_tasks(2, 0)
        a, b = vec.reset(tasks, 3, seed=1), clone.reset(tasks, 3, seed=1)
        np.testing.assert_array_equal(a, b)
        actions = np.full((2, 3, vec.spec.act_dim), 0.3)
        np.testing.assert_array_equal(vec.step(actions)[0], clone.step(actions)[0])
    env = gymnasium.make(f"adaptrl/{name}-v0")
    env.reset(seed=3)
    clone = pickle.loads(pickle.dumps(env))
    np.testing.assert_array_equal(clone.reset(seed=3)[0], env.reset(seed=3)[0])
    action = env.action_space.sample()
    np.testing.assert_array_equal(clone.step(action)[0], env.step(action)[0])
    copy.deepcopy(env).reset(seed=0)


def test_async_vector_env_with_fork_after_jax_fails_clearly_and_spawn_works():
    """gymnasium.make_vec(..., "async") of a JAX family once JAX has run: fork gives one clear error
    (it used to hang forever); spawn works. Run in a subprocess with a timeout so a hang fails."""
    import subprocess
    import sys

    script = '''
import sys, jax, gymnasium, numpy as np, adaptrl
jax.numpy.ones(3).sum().block_until_ready()       # JAX has run in the parent
mode = sys.argv[1]
kwargs = {"context": "spawn"} if mode == "spawn" else {"context": "fork"}
env = gymnasium.make_vec("adaptrl/PointCorners-v0", num_envs=2, vectorization_mode="async",
                         vector_kwargs=kwargs)
try:
    obs, _ = env.reset(seed=0)
    print("OK", obs.shape)
except Exception as exc:
    print("ERROR", exc)
finally:
    env.close(terminate=True)
'''
    outputs = {}
    for mode in ("fork", "spawn"):
        done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                              timeout=120)
        outputs[mode] = done.stdout + done.stderr
    assert "OK (2, 2)" in outputs["spawn"], outputs["spawn"]
    assert "cannot be used in a process forked after JAX ran" in outputs["fork"], outputs["fork"]
