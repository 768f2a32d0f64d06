"""Single-task environments for model-based RL (docs/environments.md, "Single-task environments
for model-based RL"): the MB-MPO locomotion tasks of Clavera's thesis (2020, §5.5 and App. B.3;
horizon 200, 1000 for MAAC) and the 2-D point of §5.5.4 / App. B.3.

The crucial property: the simulator's reward and termination are the functions that
``obs_reward_fn`` / ``obs_terminated_fn`` give learned models, so on real transitions the two agree
to float precision. Rewards and terminations are also recomputed by hand from the formulas of the
docs table, from the true physics state.
"""

from __future__ import annotations

import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import adaptrl  # registers the Gymnasium ids; adaptrl.envs.make below
from adaptrl.envs import (
    family_horizon,
    family_names,
    is_single_task,
    obs_reward_fn,
    obs_terminated_fn,
)
from adaptrl.envs.catalog import family_info
from adaptrl.errors import ConfigError
from adaptrl.policies import init_params, make_policy, per_task
from adaptrl.sampling import Sampler

MB_NAMES = ["HalfCheetah", "Ant", "Walker2D", "Hopper", "Swimmer"]
ALL_NAMES = [*MB_NAMES, "Point2D"]

# Written out from docs/environments.md's table: (obs_dim, act_dim, MuJoCo timestep, frame skip,
# qpos entries left out of the observation, index of the root x-velocity qvel[0] in obs).
LAYOUT = {
    "HalfCheetah": (17, 6, 0.01, 5, 1, 8),
    "Ant": (27, 8, 0.01, 5, 2, 13),
    "Walker2D": (17, 6, 0.002, 4, 1, 8),
    "Hopper": (11, 3, 0.002, 4, 1, 5),
    "Swimmer": (8, 2, 0.01, 4, 2, 3),
}
DT = {"HalfCheetah": 0.05, "Ant": 0.05, "Walker2D": 0.008, "Hopper": 0.008, "Swimmer": 0.04}


def host(make_env, name, **options):
    return make_env(name, num_threads=1, **options)


def flat(x):
    return x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x.reshape(-1)


def reference(name, qpos, qvel, action):
    """Reward and termination by hand from the true state after the step (docs table)."""
    a = np.clip(action, -1.0, 1.0)  # the actuator box the policy acts in
    cost = np.sum(a * a, axis=-1)
    vx = qvel[:, 0]
    never = np.zeros(len(vx), dtype=bool)
    finite = np.all(np.isfinite(qpos), -1) & np.all(np.isfinite(qvel), -1)
    if name == "HalfCheetah":
        return np.clip(vx - 0.1 * cost, -1000, 1000), never
    if name == "Ant":
        z = qpos[:, 2]
        return vx - 0.005 * cost + 1.0, ~(finite & (z >= 0.2) & (z <= 1.0))
    if name == "Walker2D":
        h, ang = qpos[:, 1], qpos[:, 2]
        return vx - 1e-3 * cost + 1.0, ~((h > 0.8) & (h < 2.0) & (ang > -1.0) & (ang < 1.0))
    if name == "Hopper":
        s = np.concatenate([qpos[:, 2:], qvel], axis=-1)  # gym's state_vector()[2:]
        ok = finite & np.all(np.abs(s) < 100, -1) & (qpos[:, 1] > 0.7) & (np.abs(qpos[:, 2]) < 0.2)
        return np.clip(vx + 1.0 - 1e-3 * cost, -1000, 1000), ~ok
    assert name == "Swimmer"
    return np.clip(vx - 1e-4 * cost, -1000, 1000), never


# ------------------------------------------------------------------------------------------------
# Static description, observations, Gymnasium
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MB_NAMES)
def test_spec_and_model(name, make_env):
    """Dims, frame skip and dt (Gymnasium's assets: dt as the thesis code's envs), horizon 200,
    actuator box ±1 in which the policy acts directly (no ±10 normalisation)."""
    env = host(make_env, name)
    obs_dim, act_dim, timestep, frame_skip, _, _ = LAYOUT[name]
    assert (env.spec.obs_dim, env.spec.act_dim) == (obs_dim, act_dim)
    assert env.model.opt.timestep == pytest.approx(timestep)
    assert env.family.frame_skip == frame_skip
    assert env.spec.dt == pytest.approx(DT[name])
    assert env.spec.horizon == family_horizon(name) == 200
    np.testing.assert_array_equal(env.model.actuator_ctrlrange, np.tile([-1.0, 1.0], (act_dim, 1)))
    assert env.spec.normalize_actions is False
    np.testing.assert_array_equal(env.spec.policy_action_high, np.ones(act_dim))
    np.testing.assert_array_equal(env.spec.policy_action_low, -np.ones(act_dim))
    assert env.spec.backend == "host"


@pytest.mark.parametrize("name", MB_NAMES)
def test_observation_layout(name, make_env):
    """obs = qpos without x (Ant, Swimmer: without x, y) ‖ qvel, unclipped; obs[v] = qvel[0]."""
    env = host(make_env, name)
    _, _, _, _, drop, v = LAYOUT[name]
    env.reset(env.sample_tasks(2), 2, seed=0)
    obs, *_ = env.step(np.full((2, 2, env.spec.act_dim), 0.3))
    qpos, qvel = env.physics_state()
    np.testing.assert_array_equal(obs, np.concatenate([qpos[..., drop:], qvel], axis=-1))
    np.testing.assert_array_equal(obs[..., v], qvel[..., 0])


@pytest.mark.parametrize("name", ALL_NAMES)
def test_check_env_and_spaces(name, gym_env):
    """Gymnasium's env checker passes; spaces are the documented ones; TimeLimit = horizon."""
    env = gym_env(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
    dims = {**{n: LAYOUT[n][:2] for n in MB_NAMES}, "Point2D": (2, 2)}[name]
    assert env.observation_space.shape == (dims[0],) and env.action_space.shape == (dims[1],)
    bound = 0.1 if name == "Point2D" else 1.0
    np.testing.assert_array_equal(env.action_space.high, np.full(dims[1], bound, np.float32))
    assert env.spec.max_episode_steps == (30 if name == "Point2D" else 200)


# ------------------------------------------------------------------------------------------------
# Rewards and terminations: by hand, and the one shared definition
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MB_NAMES)
def test_reward_and_termination_by_hand(name, make_env):
    """The simulator's rewards and dones equal the docs table's formulas on real transitions,
    with actions outside the box clipped before the control cost."""
    env = host(make_env, name)
    env.reset(env.sample_tasks(2), 3, seed=1)
    rng = np.random.default_rng(2)
    for _ in range(4):
        active = flat(env.active)
        action = rng.uniform(-1.5, 1.5, size=(2, 3, env.spec.act_dim))
        _, reward, done, info = env.step(action)
        qpos, qvel = (flat(x) for x in env.physics_state())
        assert not flat(info["diverged"]).any()
        expected, terminated = reference(name, qpos, qvel, flat(action))
        np.testing.assert_allclose(flat(reward)[active], expected[active], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(flat(done)[active], terminated[active])


def real_rollout(env, steps, seed, scale=1.3):
    """Random actions (partly outside the box) on ``env``: per step (obs, action, next_obs,
    reward, done, active-before-the-step), flat over environments."""
    rng = np.random.default_rng(seed)
    obs = flat(env.reset(env.sample_tasks(2), 4, seed=seed))
    out = []
    for _ in range(steps):
        active = flat(env.active)
        if not active.any():
            break
        action = rng.uniform(-scale, scale, size=(2, 4, env.spec.act_dim))
        next_obs, reward, done, _ = env.step(action)
        out.append((obs, flat(action), flat(next_obs), flat(reward), flat(done), active))
        obs = flat(next_obs)
    return out


@pytest.mark.parametrize("name", MB_NAMES)
def test_obs_reward_fn_reproduces_simulator(name, make_env):
    """One definition: the jitted obs_reward_fn(env)(obs, policy action, next_obs, task) and
    obs_terminated_fn(env)(next_obs) give the simulator's rewards and dones on a real rollout."""
    env = host(make_env, name)
    reward_fn, done_fn = jax.jit(obs_reward_fn(env)), jax.jit(obs_terminated_fn(env))
    task = {k: jnp.asarray(v) for k, v in env.sample_tasks(8).items()}
    steps = real_rollout(env, 60, seed=3)
    n_done = 0
    for obs, action, next_obs, reward, done, active in steps:
        got = np.asarray(reward_fn(jnp.asarray(obs), jnp.asarray(action), jnp.asarray(next_obs), task))
        np.testing.assert_allclose(got[active], reward[active], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(done_fn(jnp.asarray(next_obs)))[active], done[active])
        n_done += int(done[active].sum())
    if name in ("Walker2D", "Hopper"):
        assert n_done > 0, "random actions should make some walkers/hoppers fall in 60 steps"


def test_obs_reward_fn_on_sampler_trajectories():
    """The model-based use: rewards recomputed from a Sampler batch of real Hopper trajectories
    (float32 observations, policy actions) equal the recorded ones on every unmasked step."""
    env = adaptrl.envs.make("Hopper", num_threads=1)
    try:
        policy = make_policy(env.spec.act_dim, hidden_sizes=(8, 8))
        params = per_task(init_params(policy, jax.random.PRNGKey(0), env.spec.obs_dim), 2)
        traj = Sampler(env, policy, 3, 40).collect(params, env.sample_tasks(2), jax.random.PRNGKey(1))
        # the next observation of a live step is the following one, except on an episode's last
        # live step, whose next observation is the final one
        next_obs = np.concatenate([traj.observations[:, :, 1:], traj.final_observations[:, :, None]],
                                  axis=2)
        mask = np.concatenate([traj.mask, np.zeros((*traj.mask.shape[:2], 1))], axis=2)
        last = (mask[:, :, :-1] == 1) & (mask[:, :, 1:] == 0)
        next_obs = np.where(last[..., None], traj.final_observations[:, :, None], next_obs)
        assert (traj.dones == 1).any(), "some hoppers should fall within 40 steps"
        task = {k: jnp.zeros(traj.rewards.shape) for k in env.sample_tasks(1)}
        got = obs_reward_fn(env)(jnp.asarray(traj.observations), jnp.asarray(traj.actions),
                                 jnp.asarray(next_obs), task)
        done = obs_terminated_fn(env)(jnp.asarray(next_obs))
        live = traj.mask == 1
        np.testing.assert_allclose(np.asarray(got)[live], traj.rewards[live], rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(done)[live], traj.dones[live] == 1)
    finally:
        env.close()


@pytest.mark.parametrize(("name", "clipped"), [("HalfCheetah", True), ("Ant", False),
                                               ("Walker2D", False), ("Hopper", True),
                                               ("Swimmer", True)])
def test_reward_clipping(name, clipped, make_env):
    """HalfCheetah, Hopper, Swimmer clip the reward to ±1000; Ant and Walker2D do not."""
    env = host(make_env, name)
    dim, v = env.spec.obs_dim, LAYOUT[name][5]
    next_obs = np.zeros((2, dim))
    next_obs[:, 0] = 0.5  # (Ant, Walker2D, Hopper: some height)
    next_obs[0, v], next_obs[1, v] = 5000.0, -5000.0
    a = np.zeros((2, env.spec.act_dim))
    got = np.asarray(obs_reward_fn(env)(jnp.zeros((2, dim)), jnp.asarray(a), jnp.asarray(next_obs),
                                        {"task_id": jnp.zeros(2)}))
    alive = 1.0 if name in ("Ant", "Walker2D", "Hopper") else 0.0
    expected = [1000.0, -1000.0] if clipped else [5000.0 + alive, -5000.0 + alive]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_ant_control_cost_scale(make_env):
    """Ant: 0.005·‖a/scale‖² with scale = half the actuator range = 1 (docs table)."""
    env = host(make_env, "Ant")
    next_obs = np.zeros((1, 27))
    next_obs[0, 0] = 0.5
    a = np.full((1, 8), 0.5)
    got = float(obs_reward_fn(env)(jnp.zeros((1, 27)), jnp.asarray(a), jnp.asarray(next_obs),
                                   {"task_id": jnp.zeros(1)})[0])
    assert got == pytest.approx(1.0 - 0.005 * 8 * 0.25, rel=1e-6)


def put(env, index, qpos=None, qvel=None):
    """Overwrite entries of environment 0's (qpos, qvel) in the host env's state."""
    nq = env.physics.nq
    for offset, values in ((1, qpos), (1 + nq, qvel)):
        for i, x in (values or {}).items():
            env._state[0, offset + i] = x


@pytest.mark.parametrize(
    ("name", "qpos", "qvel"),
    [
        ("Hopper", {1: 0.5}, None),  # fallen: height 0.5 < 0.7
        ("Hopper", {2: 0.5}, None),  # torso tilted beyond 0.2 rad
        ("Hopper", None, {3: 300.0}),  # a joint velocity beyond 100 (seen unclipped by the obs)
        ("Walker2D", {1: 0.5}, None),  # fallen
        ("Walker2D", {2: 1.3}, None),  # tilted beyond 1 rad
        ("Ant", {2: 1.5}, None),  # torso above 1.0
    ],
)
def test_termination_in_constructed_state(name, qpos, qvel, make_env):
    """A constructed unhealthy state ends the episode (simulator and obs_terminated_fn agree);
    the untouched environment next to it does not."""
    env = host(make_env, name)
    env.reset(env.sample_tasks(1), 2, seed=0)
    put(env, 0, qpos, qvel)
    next_obs, reward, done, info = env.step(np.zeros((1, 2, env.spec.act_dim)))
    assert not info["diverged"].any()
    assert done[0, 0] and not done[0, 1]
    np.testing.assert_array_equal(np.asarray(obs_terminated_fn(env)(jnp.asarray(next_obs))), done)
    assert not env.active[0, 0] and env.active[0, 1]


@pytest.mark.parametrize("name", ["HalfCheetah", "Swimmer", "Point2D"])
def test_never_done(name, make_env):
    """HalfCheetah, Swimmer and Point2D never terminate, whatever the state."""
    env = make_env(name) if name == "Point2D" else host(make_env, name)
    fn = obs_terminated_fn(env)
    weird = np.array([[1e6] * env.spec.obs_dim, [-3.0] * env.spec.obs_dim])
    assert not np.asarray(fn(jnp.asarray(weird))).any()
    env.reset(env.sample_tasks(1), 3, seed=0)
    scale = 0.1 if name == "Point2D" else 1.0
    for _ in range(30):
        _, _, done, _ = env.step(np.full((1, 3, env.spec.act_dim), scale))
        assert not done.any()


# ------------------------------------------------------------------------------------------------
# Single task, horizon option, seeding
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_single_task(name, make_env, gym_env):
    """sample_tasks(n) gives n identical trivial tasks whatever the seed; the Gymnasium wrapper's
    set_task/get_task work; the catalogue says "single task"."""
    env = make_env(name) if name == "Point2D" else host(make_env, name)
    a, b = env.sample_tasks(5, seed=1), env.sample_tasks(5, seed=2)
    assert sorted(a) == ["task_id"]
    np.testing.assert_array_equal(a["task_id"], np.zeros(5))
    np.testing.assert_array_equal(b["task_id"], a["task_id"])
    assert is_single_task(name) and not is_single_task("HalfCheetahRandDirec")
    info = family_info(name)
    assert info["single_task"] is True and "single task" in info["tasks"]
    genv = gym_env(name)
    genv.reset(seed=0)
    tasks = genv.unwrapped.sample_tasks(3)
    assert len(tasks) == 3 and all(t["task_id"] == 0 for t in tasks)
    genv.unwrapped.set_task(tasks[2])
    got = genv.unwrapped.get_task()
    assert sorted(got) == ["task_id"] and got["task_id"] == 0.0
    with pytest.raises(ConfigError):
        genv.unwrapped.set_task({"goal": np.zeros(2)})


def test_single_task_envs_are_listed():
    names = family_names()
    assert set(ALL_NAMES) <= set(names)
    for name in ALL_NAMES:
        assert f"adaptrl/{name}-v0" in gymnasium.registry
    assert not family_info("HalfCheetahRandDirec")["single_task"]


@pytest.mark.parametrize("name", ["HalfCheetah", "Point2D", "HalfCheetahRandDirec"])
def test_horizon_option(name, make_env):
    """make(name, horizon=H) sets spec.horizon (the sampler's default length); default the
    family's; anything but a positive integer is a ConfigError."""
    opts = {} if name == "Point2D" else {"num_threads": 1}
    default = {"HalfCheetah": 200, "Point2D": 30, "HalfCheetahRandDirec": 100}[name]
    assert make_env(name, **opts).spec.horizon == default
    env = make_env(name, horizon=1000, **opts)
    assert env.spec.horizon == 1000
    policy = make_policy(env.spec.act_dim, hidden_sizes=(4,))
    assert Sampler(env, policy, 1).horizon == 1000
    for bad in (0, -5, 2.5, "100", True, [3]):
        with pytest.raises(ConfigError, match="horizon"):
            make_env(name, horizon=bad, **opts)


def test_gymnasium_episode_length(gym_env):
    """In Gymnasium the episode length is max_episode_steps (TimeLimit); horizon is refused with
    a message pointing there."""
    env = gym_env("Swimmer", max_episode_steps=250)
    assert env.spec.max_episode_steps == 250
    env.reset(seed=0)
    a = np.zeros(2, np.float32)
    truncated = [env.step(a)[3] for _ in range(250)]
    assert not any(truncated[:-1]) and truncated[-1]
    with pytest.raises(ConfigError, match="max_episode_steps"):
        gym_env("HalfCheetah", horizon=1000)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_seeded_reset(name, make_env):
    """Same seed → same start states; other seed → different; rollouts start apart."""
    env = make_env(name) if name == "Point2D" else host(make_env, name)
    tasks = env.sample_tasks(2)
    o1, o2, o3 = (env.reset(tasks, 3, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(o1, o2)
    assert not np.array_equal(o1, o3)
    assert not np.array_equal(o1[0, 0], o1[0, 1])


# ------------------------------------------------------------------------------------------------
# Point2D (thesis §5.5.4, App. B.3)
# ------------------------------------------------------------------------------------------------


def test_point2d_dynamics_and_reward(make_env):
    """s' = s + clip(a, ±0.1), r = −‖s‖² of the state the action is taken in, never done;
    obs_reward_fn and the pure simulator step give the same."""
    env = make_env("Point2D")
    assert (env.spec.obs_dim, env.spec.act_dim, env.spec.horizon) == (2, 2, 30)
    assert env.spec.normalize_actions is False
    np.testing.assert_array_equal(env.spec.action_high, [0.1, 0.1])
    s = env.reset(env.sample_tasks(1), 1, seed=0)[0, 0].astype(np.float64)
    actions = [(0.05, -0.02), (0.3, -0.4), (-1.0, 0.07), (0.0, 0.0)]
    fn = obs_reward_fn(env)
    task = {"task_id": jnp.zeros(())}
    for a in actions:
        next_obs, reward, done, _ = env.step(np.array(a)[None, None])
        expected_next = s + np.clip(a, -0.1, 0.1)
        np.testing.assert_allclose(next_obs[0, 0], expected_next, rtol=0, atol=1e-6)
        assert reward[0, 0] == pytest.approx(-np.sum(s**2), rel=1e-6)
        assert not done[0, 0]
        assert float(fn(jnp.asarray(s), jnp.asarray(a), jnp.asarray(next_obs[0, 0]), task)) == \
            pytest.approx(float(reward[0, 0]), rel=1e-6)
        sim = env.simulator
        state = sim.reset({}, jax.random.PRNGKey(0), task, start_obs=jnp.asarray(s, jnp.float32))
        nxt, r, d = sim.step(sim.default_params(), state, jnp.asarray(a, jnp.float32),
                             jax.random.PRNGKey(1))
        np.testing.assert_allclose(np.asarray(sim.observe(nxt)), next_obs[0, 0], atol=1e-6)
        assert float(r) == pytest.approx(float(reward[0, 0]), rel=1e-6) and not bool(d)
        s = np.asarray(next_obs[0, 0], np.float64)


def test_point2d_reset_distribution(make_env):
    """s₀ ~ U[−2, 2]²: inside the box, filling it, centred."""
    env = make_env("Point2D")
    obs = env.reset(env.sample_tasks(2), 1000, seed=3).reshape(-1, 2)
    assert np.all(obs >= -2.0) and np.all(obs <= 2.0)
    assert np.all(obs.min(0) < -1.95) and np.all(obs.max(0) > 1.95)
    assert np.all(np.abs(obs.mean(0)) < 0.1)
    assert np.all(np.abs(obs.std(0) - 4 / np.sqrt(12)) < 0.05)


def test_point2d_device_rollout_return():
    """A whole device rollout (lax.scan in the Sampler) at horizon 30: the return is −Σ_t ‖s_t‖²
    over the recorded observations."""
    env = adaptrl.envs.make("Point2D")
    policy = make_policy(2, hidden_sizes=(8,))
    params = per_task(init_params(policy, jax.random.PRNGKey(0), 2), 2)
    traj = Sampler(env, policy, 3).collect(params, env.sample_tasks(2), jax.random.PRNGKey(4))
    obs = np.asarray(traj.observations)
    assert obs.shape == (2, 3, 30, 2) and np.asarray(traj.mask).all()
    np.testing.assert_allclose(np.asarray(traj.rewards), -np.sum(obs**2, -1), rtol=1e-5, atol=1e-6)
    steps = np.diff(np.concatenate([obs, np.asarray(traj.final_observations)[:, :, None]], 2), axis=2)
    assert np.abs(steps).max() <= 0.1 + 1e-6
