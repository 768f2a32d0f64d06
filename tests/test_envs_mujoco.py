"""MuJoCo task families (host simulator): rewards and terminations recomputed by hand from the
reference formulas (those of the original ProMP code, as documented in docs/environments.md,
"MuJoCo families" and its deviations list), task distributions, observation layouts, per-task
physics, batched-vs-single stepping, JAX reward functions, divergence handling and input
validation. The task families are those of the ProMP paper (Rothfuss et al., ICLR 2019, App. D.2)
and the TMAML paper (Liu et al., 2019, §5.1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from adaptrl.envs import (
    ALIASES,
    canonical_name,
    family_names,
    host,
    obs_reward_fn,
    obs_terminated_fn,
)
from adaptrl.envs.kinematics import BatchKinematics, replicated_tree_xml
from adaptrl.envs.mujoco_families import FAMILIES as MUJOCO_FAMILIES
from adaptrl.errors import ConfigError

MUJOCO_NAMES = list(MUJOCO_FAMILIES)

# Values of the original ProMP code (docs/environments.md, "MuJoCo families" table: frame skip, dt,
# dims, horizon; timestep = dt / frame skip), written out independently.
TIMESTEP = {
    "HalfCheetahRandDirec": 0.01, "HalfCheetahRandVel": 0.01,
    "AntRandDirec": 0.01, "AntRandDirec2D": 0.01, "AntRandGoal": 0.01,
    "HumanoidRandDirec": 0.003, "HumanoidRandDirec2D": 0.003,
    "Walker2DRandDirec": 0.002, "Walker2DRandVel": 0.002,
    "SwimmerRandVel": 0.01,
    "HopperRandParams": 0.004, "Walker2DRandParams": 0.004,
}
FRAME_SKIP = {
    "HalfCheetahRandDirec": 5, "HalfCheetahRandVel": 5,
    "AntRandDirec": 5, "AntRandDirec2D": 5, "AntRandGoal": 5,
    "HumanoidRandDirec": 5, "HumanoidRandDirec2D": 5,
    "Walker2DRandDirec": 8, "Walker2DRandVel": 8,
    "SwimmerRandVel": 4,
    "HopperRandParams": 4, "Walker2DRandParams": 4,
}
HORIZON = {
    "HalfCheetahRandDirec": 100, "HalfCheetahRandVel": 100,
    "AntRandDirec": 100, "AntRandDirec2D": 100, "AntRandGoal": 200,
    "HumanoidRandDirec": 200, "HumanoidRandDirec2D": 200,
    "Walker2DRandDirec": 200, "Walker2DRandVel": 200,
    "SwimmerRandVel": 100,
    "HopperRandParams": 200, "Walker2DRandParams": 200,
}
# (obs_dim, act_dim). Ant/Humanoid without the 84 cfrc_ext dims (docs/environments.md, deviation 1).
DIMS = {
    "HalfCheetahRandDirec": (17, 6), "HalfCheetahRandVel": (17, 6),
    "AntRandDirec": (27, 8), "AntRandDirec2D": (27, 8), "AntRandGoal": (29, 8),
    "HumanoidRandDirec": (292, 17), "HumanoidRandDirec2D": (292, 17),
    "Walker2DRandDirec": (17, 6), "Walker2DRandVel": (17, 6),
    "SwimmerRandVel": (8, 2),
    "HopperRandParams": (11, 3), "Walker2DRandParams": (17, 6),
}
ACTION_BOUND = {name: (0.4 if name.startswith("Humanoid") else 1.0) for name in MUJOCO_NAMES}


def dt_of(name: str) -> float:
    return TIMESTEP[name] * FRAME_SKIP[name]


def com_xy(model, qpos: np.ndarray) -> np.ndarray:
    """Mass-weighted centre of mass (x, y) of every body, computed with MuJoCo's kinematics."""
    data = mujoco.MjData(model)
    out = np.empty((qpos.shape[0], 2))
    for i in range(qpos.shape[0]):
        data.qpos[:] = qpos[i]
        mujoco.mj_kinematics(model, data)
        mass = np.asarray(model.body_mass)
        out[i] = (mass[:, None] * data.xipos).sum(0)[:2] / mass.sum()
    return out


def reference_reward(name, model, qpos, qpos_next, action, task):
    """Per-step reward of the reference formulas; arrays are flat over environments [B, ...]."""
    dt = dt_of(name)
    ctrl = np.sum(action * action, axis=-1)
    vx = (qpos_next[:, 0] - qpos[:, 0]) / dt
    if name == "HalfCheetahRandDirec":
        return task["direction"] * vx - 0.05 * ctrl
    if name == "HalfCheetahRandVel":
        return -np.abs(vx - task["velocity"]) - 0.05 * ctrl
    if name == "AntRandDirec":
        return task["direction"] * vx - 0.5 * ctrl + 1.0
    if name == "AntRandDirec2D":
        vxy = (qpos_next[:, :2] - qpos[:, :2]) / dt
        return np.sum(task["direction"] * vxy, axis=-1) - 0.5 * ctrl + 1.0
    if name == "AntRandGoal":
        return -np.sum(np.abs(qpos_next[:, :2] - task["goal"]), axis=-1) - 0.1 * ctrl
    if name.startswith("Humanoid"):
        dcom = (com_xy(model, qpos_next) - com_xy(model, qpos)) / TIMESTEP[name]
        along = dcom[:, 0] * task["direction"] if name == "HumanoidRandDirec" else np.sum(
            task["direction"] * dcom, axis=-1
        )
        return 0.25 * along - 0.1 * ctrl + 5.0
    if name == "Walker2DRandDirec":
        return task["direction"] * vx + 1.0 - 1e-3 * ctrl
    if name == "Walker2DRandVel":
        return -np.abs(vx - task["velocity"]) + 15.0 - 1e-3 * ctrl
    if name == "SwimmerRandVel":
        return -np.abs(vx - task["velocity"]) - 1e-4 * ctrl
    if name in ("HopperRandParams", "Walker2DRandParams"):
        return vx + 1.0 - 1e-3 * ctrl
    raise AssertionError(name)


def reference_terminated(name, qpos, qvel):
    """Termination of the original ProMP code, from the true state [B, nq], [B, nv]."""
    finite = np.all(np.isfinite(qpos), axis=-1) & np.all(np.isfinite(qvel), axis=-1)
    if name in ("AntRandDirec", "AntRandDirec2D"):
        return ~(finite & (qpos[:, 2] >= 0.0) & (qpos[:, 2] <= 1.0))
    if name.startswith("Humanoid"):
        return (qpos[:, 2] < 1.0) | (qpos[:, 2] > 2.0)
    if name.startswith("Walker2D"):
        h, ang = qpos[:, 1], qpos[:, 2]
        return ~((h > 0.8) & (h < 2.0) & (ang > -1.0) & (ang < 1.0))
    if name == "HopperRandParams":
        s = np.concatenate([qpos[:, 2:], qvel], axis=-1)
        ok = finite & np.all(np.abs(s) < 100.0, axis=-1) & (qpos[:, 1] > 0.7) & (np.abs(qpos[:, 2]) < 0.2)
        return ~ok
    return np.zeros(qpos.shape[0], dtype=bool)


def flat_env_tasks(tasks, r):
    """Task entries repeated per rollout, flat over environments."""
    return {k: np.repeat(np.asarray(v), r, axis=0) for k, v in tasks.items()}


def flat(x):
    return x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x.reshape(-1)


# ------------------------------------------------------------------------------------------------
# Static description
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MUJOCO_NAMES)
def test_spec_matches_reference(name, make_env):
    """Timestep, frame skip, dt, horizon, dims and actuator bounds of the original ProMP code
    (docs/environments.md table; the horizons of the paper's families are ProMP App. D.2's)."""
    env = make_env(name, num_threads=1)
    assert env.model.opt.timestep == pytest.approx(TIMESTEP[name])
    assert env.family.frame_skip == FRAME_SKIP[name]
    assert env.spec.dt == pytest.approx(dt_of(name))
    assert env.spec.horizon == HORIZON[name]
    assert (env.spec.obs_dim, env.spec.act_dim) == DIMS[name]
    np.testing.assert_array_equal(env.spec.action_low, -ACTION_BOUND[name])
    np.testing.assert_array_equal(env.spec.action_high, ACTION_BOUND[name])
    assert env.spec.backend == "host"
    assert env.spec.normalize_actions is True
    np.testing.assert_array_equal(env.spec.policy_action_high, np.full(DIMS[name][1], 10.0))


def test_cheetah_total_mass_and_walker_foot_friction(make_env):
    """docs/environments.md deviation 5: half_cheetah keeps <compiler settotalmass="14">; walker's
    left foot friction is 1.9."""
    cheetah = make_env("HalfCheetahRandDirec", num_threads=1)
    assert cheetah.model.body_mass.sum() == pytest.approx(14.0)
    assert cheetah.model.body_subtreemass[0] == pytest.approx(14.0)
    walker = make_env("Walker2DRandDirec", num_threads=1)
    gid = mujoco.mj_name2id(walker.model, mujoco.mjtObj.mjOBJ_GEOM, "foot_left_geom")
    assert walker.model.geom_friction[gid, 0] == pytest.approx(1.9)


# ------------------------------------------------------------------------------------------------
# Rewards and terminations by hand
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MUJOCO_NAMES)
def test_reward_and_termination_by_hand(name, make_env):
    """Simulator reward/termination equal the original ProMP code's formulas (docs/environments.md
    table) on real transitions."""
    env = make_env(name, normalize_actions=False, num_threads=2)
    m, r = 2, 2
    tasks = env.sample_tasks(m, seed=3)
    env.reset(tasks, r, seed=4)
    env_tasks = flat_env_tasks(tasks, r)
    rng = np.random.default_rng(5)
    bound = ACTION_BOUND[name]
    for _ in range(3):
        qpos, qvel = (flat(x) for x in env.physics_state())
        active = flat(env.active)
        action = rng.uniform(-0.9 * bound, 0.9 * bound, size=(m, r, env.spec.act_dim))
        _, reward, done, info = env.step(action)
        qpos2, qvel2 = (flat(x) for x in env.physics_state())
        reward, done = flat(reward), flat(done)
        assert not flat(info["diverged"]).any()
        expected = reference_reward(name, env.model, qpos, qpos2, flat(action), env_tasks)
        np.testing.assert_allclose(reward[active], expected[active], rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(reward[~active], 0.0)
        np.testing.assert_array_equal(done[active], reference_terminated(name, qpos2, qvel2)[active])
        assert done[~active].all()


@pytest.mark.parametrize(
    "name", ["HalfCheetahRandDirec", "Walker2DRandVel", "AntRandGoal", "HumanoidRandDirec"]
)
def test_control_cost_uses_clipped_action(name, make_env):
    """docs/environments.md deviation 4: the control cost is charged on the action the simulator
    receives (clipped)."""
    env = make_env(name, normalize_actions=False, num_threads=1)
    env.reset(env.sample_tasks(1, seed=0), 1, seed=0)
    act_dim, bound = env.spec.act_dim, ACTION_BOUND[name]
    _, _, _, info = env.step(np.full((1, 1, act_dim), 3.0))
    coef = {"HalfCheetahRandDirec": 0.05, "Walker2DRandVel": 1e-3, "AntRandGoal": 0.1,
            "HumanoidRandDirec": 0.1}[name]
    key = "reward_quadctrl" if name.startswith("Humanoid") else "reward_ctrl"
    assert info[key][0, 0] == pytest.approx(-coef * act_dim * bound**2, rel=1e-12)


def test_normalized_actions_are_rescaled(make_env):
    """The original ProMP code's normalize(env) (docs/environments.md, "Action normalisation"):
    policy action a ∈ [-10, 10] becomes low + (a + 10)(high - low)/20, clipped."""
    env = make_env("HumanoidRandDirec", num_threads=1)  # bounds ±0.4
    env.reset(env.sample_tasks(1, seed=0), 3, seed=0)
    a = np.zeros((1, 3, 17))
    a[0, 0] = 10.0
    a[0, 1] = -5.0
    a[0, 2] = 25.0  # outside the box: clipped to the bound
    _, _, _, info = env.step(a)
    env_a = np.array([0.4, -0.2, 0.4])
    np.testing.assert_allclose(info["reward_quadctrl"][0], -0.1 * 17 * env_a**2, rtol=1e-12)


@pytest.mark.parametrize(
    "name", ["HalfCheetahRandDirec", "AntRandDirec", "Walker2DRandDirec", "HumanoidRandDirec"]
)
def test_direction_flips_velocity_term(name, make_env):
    """Forward/backward tasks (ProMP App. D.2, TMAML §5.1): flipping the direction flips the sign
    of the velocity term (same state and action)."""
    env = make_env(name, normalize_actions=False, num_threads=1)
    rng = np.random.default_rng(0)
    action = rng.uniform(-0.5, 0.5, size=(1, 1, env.spec.act_dim)) * ACTION_BOUND[name]
    terms = []
    for direction in (1.0, -1.0):
        env.reset({"direction": np.array([direction])}, 1, seed=11)
        _, _, _, info = env.step(action)
        terms.append(info["reward_linvel" if name.startswith("Humanoid") else "reward_forward"][0, 0])
    assert terms[0] != 0.0
    assert terms[1] == pytest.approx(-terms[0], rel=1e-12)


@pytest.mark.parametrize("name", ["HalfCheetahRandVel", "Walker2DRandVel", "SwimmerRandVel"])
def test_velocity_term_is_maximal_at_goal(name, make_env):
    """Random-velocity tasks (TMAML §5.1): -|v - v*| is maximal (zero) at v = v*."""
    env = make_env(name, num_threads=1)
    goal = 0.7
    v = np.linspace(-1.0, 2.0, 301)
    motion = {"velocity": np.stack([v, np.zeros_like(v)], -1), "position": None}
    _, terms = env.family.reward(np, motion, np.zeros((v.size, env.spec.act_dim)),
                                 {"velocity": np.full(v.size, goal)}, env.family.frame_skip)
    assert v[np.argmax(terms["reward_forward"])] == pytest.approx(goal)
    assert terms["reward_forward"].max() == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(terms["reward_forward"], -np.abs(v - goal))


def test_swimmer_sign_fixed(make_env):
    """docs/environments.md deviation 3 (the original ProMP code's sign bug, fixed): Swimmer rewards
    -|v - v*| (never a positive velocity term), the penalty of TMAML §5.1."""
    env = make_env("SwimmerRandVel", normalize_actions=False, num_threads=1)
    env.reset(env.sample_tasks(2, seed=1), 2, seed=1)
    for _ in range(3):
        _, reward, _, info = env.step(np.full((2, 2, 2), 0.5))
        assert (info["reward_forward"] <= 0).all()
        assert (reward < 0).all()


def test_ant_rand_goal_goal_unobserved_and_distance_term(make_env):
    """AntRandGoal (ProMP App. D.2): the goal is not in the observation; at the goal only the
    control cost remains."""
    env = make_env("AntRandGoal", normalize_actions=False, num_threads=1)
    action = np.full((1, 1, 8), 0.3)
    observations = []
    for goal in ([2.0, -1.0], [-1.5, 0.5]):
        obs0 = env.reset({"goal": np.array([goal])}, 1, seed=7)
        obs1, _, _, _ = env.step(action)
        observations.append((obs0, obs1))
    np.testing.assert_array_equal(observations[0][0], observations[1][0])
    np.testing.assert_array_equal(observations[0][1], observations[1][1])
    pos = np.array([[0.3, -0.2]])
    rew, terms = env.family.reward(np, {"velocity": np.zeros((1, 2)), "position": pos},
                                   np.full((1, 8), 0.5), {"goal": pos.copy()}, 5)
    assert terms["reward_forward"][0] == 0.0
    assert rew[0] == pytest.approx(-0.1 * 8 * 0.25)


# Hand-built observations: (family, obs entries {index: value}, expected done).
TERMINATION_CASES = [
    ("Walker2DRandDirec", {0: 0.7, 1: 0.0}, True),
    ("Walker2DRandDirec", {0: 1.2, 1: 0.0}, False),
    ("Walker2DRandDirec", {0: 1.2, 1: 1.5}, True),
    ("Walker2DRandDirec", {0: 1.2, 1: -1.0}, True),
    ("Walker2DRandDirec", {0: 2.1, 1: 0.0}, True),
    ("Walker2DRandVel", {0: 0.79, 1: 0.0}, True),
    ("Walker2DRandVel", {0: 1.0, 1: 0.9, 10: 50.0}, False),
    ("Walker2DRandParams", {0: 0.81, 1: -0.99}, False),
    ("Walker2DRandParams", {0: 1.2, 1: -1.2}, True),
    ("AntRandDirec", {0: 1.1}, True),
    ("AntRandDirec", {0: 0.5}, False),
    ("AntRandDirec", {0: 0.1}, False),  # the original ProMP code's lower bound is 0, not gym's 0.2
    ("AntRandDirec", {0: -0.01}, True),
    ("AntRandDirec", {0: 0.5, 20: np.nan}, True),
    ("AntRandDirec2D", {0: 1.1}, True),
    ("AntRandDirec2D", {0: 0.6}, False),
    ("AntRandGoal", {2: 1.5}, False),  # never terminates
    ("HumanoidRandDirec", {0: 0.9}, True),
    ("HumanoidRandDirec", {0: 1.4}, False),
    ("HumanoidRandDirec", {0: 2.1}, True),
    ("HumanoidRandDirec2D", {0: 0.99}, True),
    ("HumanoidRandDirec2D", {0: 1.3}, False),
    ("HopperRandParams", {0: 0.6, 1: 0.0}, True),
    ("HopperRandParams", {0: 1.2, 1: 0.3}, True),
    ("HopperRandParams", {0: 1.2, 1: -0.3}, True),
    ("HopperRandParams", {0: 1.2, 1: 0.1}, False),
    ("HopperRandParams", {0: 1.2, 1: 0.1, 3: 150.0}, True),
    ("HopperRandParams", {0: 1.2, 1: 0.1, 4: np.inf}, True),
    ("HalfCheetahRandDirec", {0: -5.0, 1: 3.0}, False),
    ("HalfCheetahRandVel", {0: 100.0}, False),
    ("SwimmerRandVel", {0: -3.0}, False),
]


@pytest.mark.parametrize(("name", "entries", "expected"), TERMINATION_CASES)
def test_termination_on_hand_built_obs(name, entries, expected, make_env):
    """Termination (docs/environments.md table, "done when") from hand-built next observations
    (numpy and jitted JAX)."""
    env = make_env(name, num_threads=1)
    obs = np.zeros((3, env.spec.obs_dim))
    obs[:, 0] = {"AntRandGoal": 0.0}.get(name, 1.25)
    for i, v in entries.items():
        obs[1, i] = v
    expect = np.array([False, expected, False])
    if name.startswith(("Ant", "Humanoid")) and name != "AntRandGoal":
        obs[[0, 2], 0] = 0.55 if name.startswith("Ant") else 1.3
    got_jax = np.asarray(jax.jit(obs_terminated_fn(env))(jnp.asarray(obs)))
    np.testing.assert_array_equal(got_jax, expect)
    if env.family.terminated is not None:
        np.testing.assert_array_equal(np.asarray(env.family.terminated(np, obs)), expect)


def test_real_termination_freezes_episode(make_env):
    """docs/environments.md deviation 8: a simulated fall ends that episode: done stays True,
    reward 0, obs frozen; others go on."""
    env = make_env("HopperRandParams", normalize_actions=False, num_threads=2)
    env.reset(env.sample_tasks(1, seed=0), 2, seed=0)
    action = np.zeros((1, 2, 3))
    action[0, 0] = 1.0  # full torque on env 0; env 1 stands still
    steps = 0
    for _ in range(100):
        obs, reward, done, _ = env.step(action)
        steps += 1
        if done.any():
            break
    else:
        pytest.fail("no episode terminated in 100 steps")
    assert steps > 1
    assert done[0, 0] and not done[0, 1]
    qpos, qvel = env.physics_state()
    assert reference_terminated("HopperRandParams", qpos[0], qvel[0]).tolist() == [True, False]
    assert reward[0, 0] != 0.0  # the terminating step itself is rewarded
    np.testing.assert_array_equal(env.active, [[False, True]])
    frozen_obs, frozen_q = obs[0, 0].copy(), qpos[0, 0].copy()
    for _ in range(3):
        q_before = env.physics_state()[0][0]
        obs2, reward2, done2, _ = env.step(action)
        q_after = env.physics_state()[0][0]
        # the running env is still rewarded by the reference formula
        expected = reference_reward("HopperRandParams", env.model, q_before, q_after, action[0], {})
        assert reward2[0, 1] == pytest.approx(expected[1], rel=1e-6)
        assert done2[0, 0] and reward2[0, 0] == 0.0
        np.testing.assert_array_equal(obs2[0, 0], frozen_obs)
        np.testing.assert_array_equal(env.physics_state()[0][0, 0], frozen_q)
        assert reward2[0, 1] != 0.0
        assert not np.array_equal(obs2[0, 1], obs[0, 1])
        obs = obs2


def test_hopper_true_velocity_bound_terminates(make_env):
    """docs/environments.md deviation 10: Hopper terminates when a true |qvel| >= 100, though obs
    clip it to 10."""
    env = make_env("HopperRandParams", normalize_actions=False, num_threads=1)
    env.reset(env.sample_tasks(1, seed=0), 2, seed=0)
    nq = env.model.nq
    env._state[0, 1 + nq] = 150.0  # root x velocity of env 0
    obs, reward, done, info = env.step(np.zeros((1, 2, 3)))
    qvel = env.physics_state()[1]
    assert abs(qvel[0, 0, 0]) >= 100.0
    assert obs[0, 0, 5] == 10.0
    assert not np.asarray(obs_terminated_fn(env)(jnp.asarray(obs[0, 0])))  # obs cannot see it
    assert done[0, 0] and not done[0, 1]
    assert not info["diverged"].any()


# ------------------------------------------------------------------------------------------------
# Task distributions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["HalfCheetahRandDirec", "AntRandDirec", "HumanoidRandDirec", "Walker2DRandDirec"]
)
def test_direction_tasks(name, make_env):
    """TMAML §5.1: direction ~ Bernoulli(0.5) on {-1, +1}."""
    env = make_env(name, num_threads=1)
    d = env.sample_tasks(4000, seed=0)["direction"]
    assert d.shape == (4000,)
    assert set(np.unique(d).tolist()) == {-1.0, 1.0}
    assert 0.46 < np.mean(d == 1.0) < 0.54


@pytest.mark.parametrize("name", ["AntRandDirec2D", "HumanoidRandDirec2D"])
def test_direction2d_tasks(name, make_env):
    """Random XY directions (ProMP App. D.2): unit directions with angle ~ U[0, 2π)
    (docs/environments.md table)."""
    env = make_env(name, num_threads=1)
    d = env.sample_tasks(4000, seed=0)["direction"]
    assert d.shape == (4000, 2)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-12)
    angle = np.mod(np.arctan2(d[:, 1], d[:, 0]), 2 * np.pi)
    counts = np.histogram(angle, bins=8, range=(0, 2 * np.pi))[0]
    assert counts.min() > 0.8 * 500 and counts.max() < 1.2 * 500


@pytest.mark.parametrize(
    ("name", "lo", "hi"),
    [("HalfCheetahRandVel", 0.0, 3.0), ("Walker2DRandVel", 0.0, 10.0), ("SwimmerRandVel", 0.1, 0.2)],
)
def test_velocity_tasks(name, lo, hi, make_env):
    """Target velocities ~ U(lo, hi), the original ProMP code's ranges (docs/environments.md table)."""
    env = make_env(name, num_threads=1)
    v = env.sample_tasks(4000, seed=0)["velocity"]
    assert v.shape == (4000,)
    assert v.min() >= lo and v.max() <= hi
    assert v.min() < lo + 0.01 * (hi - lo) and v.max() > hi - 0.01 * (hi - lo)
    assert np.mean(v) == pytest.approx((lo + hi) / 2, abs=0.03 * (hi - lo))


def test_ant_goal_tasks(make_env):
    """Goals uniform on the disc of radius 3, as the original ProMP code (docs/environments.md
    table; ProMP App. D.2 says "a circle in the XY plane")."""
    env = make_env("AntRandGoal", num_threads=1)
    g = env.sample_tasks(4000, seed=0)["goal"]
    assert g.shape == (4000, 2)
    radius = np.linalg.norm(g, axis=-1)
    assert radius.max() <= 3.0 and radius.max() > 2.95
    assert 0.22 < np.mean(radius < 1.5) < 0.28  # area fraction 1/4
    assert 0.22 < np.mean((g[:, 0] > 0) & (g[:, 1] > 0)) < 0.28


@pytest.mark.parametrize("name", ["HopperRandParams", "Walker2DRandParams"])
def test_rand_params_tasks(name, make_env):
    """RandParams tasks (ProMP App. D.2; docs/environments.md, "RandParams tasks"): per-element
    multipliers 1.5^U(-3, 3) (damping 1.3^U(-3, 3))."""
    env = make_env(name, num_threads=1)
    n = 300
    tasks = env.sample_tasks(n, seed=0)
    assert sorted(tasks) == ["body_inertia", "body_mass", "dof_damping", "geom_friction"]
    for key, base in [("body_mass", 1.5), ("body_inertia", 1.5), ("geom_friction", 1.5),
                      ("dof_damping", 1.3)]:
        init = np.asarray(getattr(env.model, key))
        assert tasks[key].shape == (n, *init.shape)
        nz = init != 0
        np.testing.assert_array_equal(tasks[key][:, ~nz], 0.0)
        exponent = np.log(tasks[key][:, nz] / init[nz]) / np.log(base)
        assert exponent.min() >= -3.0 - 1e-9 and exponent.max() <= 3.0 + 1e-9
        assert exponent.min() < -2.9 and exponent.max() > 2.9
        assert abs(exponent.mean()) < 0.2
        # independent per element: multipliers differ within one task
        assert np.std(exponent[0]) > 0.1


def test_rand_params_log_scale_limit_option(make_env):
    """docs/environments.md, "RandParams tasks": log_scale_limit bounds the exponents; 0 gives the
    model's own parameters."""
    env = make_env("HopperRandParams", num_threads=1, log_scale_limit=1.0)
    tasks = env.sample_tasks(200, seed=0)
    init = np.asarray(env.model.body_mass)
    ratio = tasks["body_mass"][:, 1:] / init[1:]
    assert ratio.min() >= 1.5**-1 - 1e-12 and ratio.max() <= 1.5 + 1e-12
    env0 = make_env("HopperRandParams", num_threads=1, log_scale_limit=0)
    tasks0 = env0.sample_tasks(3, seed=0)
    np.testing.assert_array_equal(tasks0["dof_damping"], np.tile(env0.model.dof_damping, (3, 1)))


@pytest.mark.parametrize("name", MUJOCO_NAMES)
def test_task_sampling_seeded(name, make_env):
    """Tasks T ~ ρ(T) (ProMP §3): same seed → identical tasks; other seed → different; tasks in a
    batch differ."""
    env = make_env(name, num_threads=1)
    a, b, c = env.sample_tasks(8, seed=1), env.sample_tasks(8, seed=1), env.sample_tasks(8, seed=2)
    assert sorted(a) == sorted(env.family.task_keys)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    first = {k: v[0] for k, v in a.items()}
    assert any(
        any(not np.array_equal(first[k], a[k][i]) for k in a) for i in range(1, 8)
    )
    if "direction" not in a:  # continuous tasks: the first two already differ
        assert any(not np.array_equal(a[k][0], a[k][1]) for k in a)


@pytest.mark.parametrize("name", ["HalfCheetahRandVel", "Walker2DRandVel", "SwimmerRandVel"])
def test_velocity_range_option(name, make_env):
    """TMAML §5.1's range U(0, 2) through the velocity_range option."""
    env = make_env(name, num_threads=1, velocity_range=(0, 2))
    v = env.sample_tasks(2000, seed=0)["velocity"]
    assert v.min() >= 0.0 and v.max() <= 2.0 and v.max() > 1.9


def test_goal_radius_option(make_env):
    """The goal_radius option (docs/environments.md, "Task options") changes the disc."""
    env = make_env("AntRandGoal", num_threads=1, goal_radius=1.0)
    g = env.sample_tasks(500, seed=0)["goal"]
    assert np.linalg.norm(g, axis=-1).max() <= 1.0


@pytest.mark.parametrize(
    ("name", "options", "needle"),
    [
        ("HalfCheetahRandVel", {"velocity_rnage": (0, 2)}, "velocity_range"),
        ("HalfCheetahRandDirec", {"velocity_range": (0, 2)}, "unknown option"),
        ("HalfCheetahRandVel", {"velocity_range": (3, 1)}, "velocity_range"),
        ("HalfCheetahRandVel", {"velocity_range": 3.0}, "velocity_range"),
        ("HalfCheetahRandVel", {"velocity_range": (0, 1, 2)}, "velocity_range"),
        ("AntRandGoal", {"goal_radius": -1.0}, "goal_radius"),
        ("HopperRandParams", {"log_scale_limit": -2.0}, "log_scale_limit"),
        ("HopperRandParams", {"log_scale_limit": float("nan")}, "log_scale_limit"),
        ("HalfCheetahRandDirec", {"num_threads": 0}, "num_threads"),
    ],
)
def test_bad_task_options(name, options, needle, make_env):
    """Bad options raise ConfigError naming the offending option."""
    with pytest.raises(ConfigError, match=needle):
        make_env(name, **options)


# ------------------------------------------------------------------------------------------------
# Observations
# ------------------------------------------------------------------------------------------------

LAYOUTS = {
    "HalfCheetahRandDirec": lambda qp, qv: np.concatenate([qp[..., 1:], qv], -1),
    "HalfCheetahRandVel": lambda qp, qv: np.concatenate([qp[..., 1:], qv], -1),
    "AntRandDirec": lambda qp, qv: np.concatenate([qp[..., 2:], qv], -1),
    "AntRandDirec2D": lambda qp, qv: np.concatenate([qp[..., 2:], qv], -1),
    "AntRandGoal": lambda qp, qv: np.concatenate([qp, qv], -1),
    "Walker2DRandDirec": lambda qp, qv: np.concatenate([qp[..., 1:], np.clip(qv, -10, 10)], -1),
    "Walker2DRandVel": lambda qp, qv: np.concatenate([qp[..., 1:], np.clip(qv, -10, 10)], -1),
    "Walker2DRandParams": lambda qp, qv: np.concatenate([qp[..., 1:], np.clip(qv, -10, 10)], -1),
    "SwimmerRandVel": lambda qp, qv: np.concatenate([qp[..., 2:], qv], -1),
    "HopperRandParams": lambda qp, qv: np.concatenate([qp[..., 1:], np.clip(qv, -10, 10)], -1),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_obs_layout(name, make_env):
    """Observation = the original ProMP code's concatenation of qpos/qvel parts (docs/environments.md
    table)."""
    env = make_env(name, num_threads=1)
    m, r = 2, 3
    obs = env.reset(env.sample_tasks(m, seed=0), r, seed=0)
    assert obs.shape == (m, r, DIMS[name][0]) and obs.dtype == np.float64
    np.testing.assert_array_equal(obs, LAYOUTS[name](*env.physics_state()))
    rng = np.random.default_rng(0)
    for _ in range(2):
        obs, reward, done, info = env.step(rng.uniform(-10, 10, size=(m, r, DIMS[name][1])))
        assert obs.shape == (m, r, DIMS[name][0])
        assert reward.shape == done.shape == info["diverged"].shape == (m, r)
        assert done.dtype == bool
        np.testing.assert_array_equal(obs, LAYOUTS[name](*env.physics_state()))


def test_walker_obs_clips_velocity(make_env):
    """As in the original ProMP code (docs/environments.md table), Walker observes
    clip(qvel, -10, 10) while the state keeps the true velocity."""
    env = make_env("Walker2DRandDirec", normalize_actions=False, num_threads=1)
    env.reset(env.sample_tasks(1, seed=0), 1, seed=0)
    nq = env.model.nq
    env._state[0, 1 + nq + 3] = 60.0
    env._state[0, 1 + nq + 4] = -60.0
    obs, _, _, _ = env.step(np.zeros((1, 1, 6)))
    qvel = env.physics_state()[1][0, 0]
    assert np.abs(qvel).max() > 10.0  # the test is meaningful
    np.testing.assert_array_equal(obs[0, 0, 8:], np.clip(qvel, -10.0, 10.0))
    assert np.abs(obs[0, 0, 8:]).max() == 10.0


@pytest.mark.parametrize("name", ["HumanoidRandDirec", "HumanoidRandDirec2D"])
def test_humanoid_obs_kinematics(name, make_env):
    """docs/environments.md table and deviations 1-2: Humanoid obs = qpos[2:] | qvel | cinert |
    cvel | qfrc_actuator (22+23+140+84+23); cinert/cvel equal MuJoCo's own mj_kinematics +
    mj_comPos + mj_comVel at the same state."""
    env = make_env(name, normalize_actions=False, num_threads=1)
    model = env.model
    obs = env.reset(env.sample_tasks(1, seed=0), 2, seed=0)
    np.testing.assert_array_equal(obs[..., 269:], 0.0)  # no control before the first step
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    for step in range(2):
        assert obs.shape == (1, 2, 292)
        qpos, qvel = env.physics_state()
        for j in range(2):
            o = obs[0, j]
            np.testing.assert_array_equal(o[:22], qpos[0, j, 2:])
            np.testing.assert_array_equal(o[22:45], qvel[0, j])
            data.qpos[:] = qpos[0, j]
            data.qvel[:] = qvel[0, j]
            mujoco.mj_kinematics(model, data)
            mujoco.mj_comPos(model, data)
            mujoco.mj_comVel(model, data)
            np.testing.assert_allclose(o[45:185], data.cinert.ravel(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(o[185:269], data.cvel.ravel(), rtol=1e-10, atol=1e-12)
            if step:
                assert np.abs(o[185:269]).max() > 1e-3
        obs, _, _, _ = env.step(rng.uniform(-0.35, 0.35, size=(1, 2, 17)))


@pytest.mark.parametrize("normalize", [False, True])
def test_humanoid_obs_qfrc_actuator(normalize, make_env):
    """docs/environments.md deviation 2: the qfrc_actuator observation equals MuJoCo's
    data.qfrc_actuator after mj_forward with the control the simulator applied."""
    env = make_env("HumanoidRandDirec", normalize_actions=normalize, num_threads=1)
    model = env.model
    env.reset(env.sample_tasks(1, seed=0), 2, seed=0)
    rng = np.random.default_rng(1)
    policy_a = rng.uniform(-0.35, 0.35, size=(1, 2, 17))
    if normalize:
        policy_a = policy_a * 25.0  # → env action 0.04·a ∈ ±0.35
    obs, _, _, _ = env.step(policy_a)
    ctrl = policy_a * 0.04 if normalize else policy_a
    qpos, qvel = env.physics_state()
    data = mujoco.MjData(model)
    for j in range(2):
        data.qpos[:] = qpos[0, j]
        data.qvel[:] = qvel[0, j]
        data.ctrl[:] = ctrl[0, j]
        mujoco.mj_forward(model, data)
        assert np.abs(data.qfrc_actuator).max() > 1.0
        np.testing.assert_allclose(obs[0, j, 269:], data.qfrc_actuator, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Batched kinematics (cinert, cvel, centre of mass) against MuJoCo's own
# ------------------------------------------------------------------------------------------------

KINEMATICS_NAMES = [n for n, f in MUJOCO_FAMILIES.items()
                    if f.tracked_point == "com_xy" or {"cinert", "cvel"} & set(f.obs_parts)]


def mujoco_kinematics(model, qpos, qvel):
    """Reference: mj_kinematics + mj_comPos + mj_comVel per state on an MjData, flat [B, ...]."""
    data = mujoco.MjData(model)
    out = {"cinert": [], "cvel": [], "com": []}
    for q, v in zip(qpos, qvel, strict=True):
        data.qpos[:], data.qvel[:] = q, v
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mj_comVel(model, data)
        out["cinert"].append(data.cinert.ravel().copy())
        out["cvel"].append(data.cvel.ravel().copy())
        out["com"].append(data.subtree_com[0].copy())
    return {k: np.array(v) for k, v in out.items()}


def random_states(model, n, seed, spread=1.0, speed=3.0):
    """States far from the reference pose: qpos0 + U(±spread) (roots moved by up to ±50 m), qvel
    ~ N(0, speed²)."""
    rng = np.random.default_rng(seed)
    qpos = model.qpos0 + rng.uniform(-spread, spread, size=(n, model.nq))
    for j in np.flatnonzero(model.jnt_type == mujoco.mjtJoint.mjJNT_FREE):
        a = model.jnt_qposadr[j]
        qpos[:, a : a + 3] += rng.uniform(-50, 50, size=(n, 3))
    return qpos, speed * rng.standard_normal((n, model.nv))


def assert_close_rel(got, expected, rtol=1e-9):
    """|got − expected| ≤ rtol·max|expected| (relative to the array's scale)."""
    scale = max(np.abs(expected).max(), 1e-300)
    err = np.abs(got - expected).max()
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol:g} × scale {scale:.3g}"


@pytest.mark.parametrize("name", KINEMATICS_NAMES)
def test_batched_kinematics_equal_mujoco(name, make_env):
    """cinert, cvel and the centre of mass computed for a whole batch equal MuJoCo's
    mj_kinematics + mj_comPos + mj_comVel on random states, to 1e-9 relative, for batch sizes
    around the block sizes (partial, single and several blocks)."""
    env = make_env(name, num_threads=1)
    model = env.model
    kin = BatchKinematics(model)
    for seed, (n, spread) in enumerate([(1, 1.0), (5, np.pi), (64, 1.0), (150, np.pi)]):
        qpos, qvel = random_states(model, n, seed, spread)
        ref = mujoco_kinematics(model, qpos, qvel)
        got = kin(qpos, qvel)
        for key in ("cinert", "cvel", "com"):
            assert got[key].shape == ref[key].shape
            assert_close_rel(got[key], ref[key])


@pytest.mark.parametrize("name", KINEMATICS_NAMES)
def test_observations_equal_mujoco_kinematics(name, make_env):
    """The full observation and the tracked point (com x, y) of random states equal those built from
    MuJoCo's own kinematics and mj_forward's qfrc_actuator."""
    env = make_env(name, normalize_actions=False, num_threads=1)
    model = env.model
    qpos, qvel = random_states(model, 16, seed=2)
    ctrl = np.random.default_rng(3).uniform(-0.4, 0.4, size=(16, model.nu))
    obs, point = env.physics.observe(qpos, qvel, ctrl)
    ref = mujoco_kinematics(model, qpos, qvel)
    data = mujoco.MjData(model)
    qfrc = []
    for q, v, c in zip(qpos, qvel, ctrl, strict=True):
        data.qpos[:], data.qvel[:], data.ctrl[:] = q, v, c
        mujoco.mj_forward(model, data)
        qfrc.append(data.qfrc_actuator.copy())
    expected = np.concatenate([qpos[:, 2:], qvel, ref["cinert"], ref["cvel"], np.array(qfrc)], axis=-1)
    assert obs.shape == expected.shape == (16, DIMS[name][0])
    for part in (slice(0, 45), slice(45, 185), slice(185, 269), slice(269, 292)):
        assert_close_rel(obs[:, part], expected[:, part])
    assert_close_rel(point, ref["com"][:, :2])


GENERAL_TREE_XML = """
<mujoco>
  <worldbody>
    <geom type="plane" size="5 5 0.1"/>
    <body name="a" pos="0.1 0.2 1" quat="0.9 0.1 0.3 0.2">
      <freejoint/>
      <geom type="box" size="0.1 0.2 0.3" mass="2"/>
      <site name="s" pos="0.1 0 0"/>
      <body name="b" pos="0.3 0 0" euler="10 20 30">
        <joint type="hinge" axis="1 1 0" pos="0.05 0 0.1" ref="17"/>
        <joint type="slide" axis="0 0 1" ref="-0.2"/>
        <joint type="hinge" axis="0 1 0" pos="0 0.1 0"/>
        <geom type="capsule" fromto="0 0 0 0.3 0.1 0" size="0.05"/>
        <body name="c" pos="0.3 0.1 0">
          <joint type="ball" pos="0.01 0.02 0.03"/>
          <geom type="ellipsoid" size="0.1 0.05 0.02" pos="0.1 0 0" euler="5 40 7"/>
          <body name="welded_massless" pos="0.1 0 0" euler="0 30 0"/>
        </body>
      </body>
      <body name="d" pos="-0.2 0 0"><geom type="sphere" size="0.1" pos="0 0 -0.1"/></body>
    </body>
    <body name="e" pos="1 1 0.5" euler="0 0 45">
      <joint type="slide" axis="1 0 0"/>
      <joint type="hinge" axis="0 0 1" pos="0.1 0 0"/>
      <geom type="box" size="0.1 0.1 0.1" pos="0.05 0 0"/>
      <body name="f" pos="0 0 0.3"><joint type="hinge" axis="1 0 0"/><geom type="sphere" size="0.05"/></body>
    </body>
    <body name="static" pos="0 3 0"><geom type="sphere" size="0.2"/></body>
  </worldbody>
  <actuator><motor site="s" gear="1 0 0 0 0 0"/></actuator>
</mujoco>
"""


def test_batched_kinematics_general_tree():
    """Every joint type (free, ball, slide, hinge with ref and off-centre anchor), several joints on
    one body, welded, massless and static bodies, three trees: cinert, cvel and the centre of mass
    of every batch size up to two blocks equal MuJoCo's; the block model has the original's sizes
    per copy."""
    model = mujoco.MjModel.from_xml_string(GENERAL_TREE_XML)
    block = mujoco.MjModel.from_xml_string(replicated_tree_xml(model, 3))
    assert (block.nbody - 1, block.nq, block.nv, block.njnt) == (
        3 * (model.nbody - 1), 3 * model.nq, 3 * model.nv, 3 * model.njnt)
    for field in ("body_pos", "body_quat", "body_ipos", "body_iquat", "body_mass", "body_inertia"):
        np.testing.assert_array_equal(getattr(block, field)[1:], np.tile(getattr(model, field)[1:].T, 3).T)
    for field in ("jnt_type", "jnt_axis", "jnt_pos"):
        np.testing.assert_array_equal(getattr(block, field), np.tile(getattr(model, field).T, 3).T)
    np.testing.assert_array_equal(block.qpos0, np.tile(model.qpos0, 3))
    kin = BatchKinematics(model)
    qpos, qvel = random_states(model, 2 * kin.sizes[-1] + 3, seed=4, spread=2.0)
    ref = mujoco_kinematics(model, qpos, qvel)
    for n in (1, 2, 4, 5, 17, 64, qpos.shape[0]):
        got = kin(qpos[:n], qvel[:n])
        for key in ("cinert", "cvel", "com"):
            assert_close_rel(got[key], ref[key][:n])


def test_batched_kinematics_rejects_mocap_bodies():
    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><body mocap="true"><geom size="0.1"/></body></worldbody></mujoco>')
    with pytest.raises(NotImplementedError, match="mocap"):
        BatchKinematics(model)


@pytest.mark.parametrize(
    ("name", "qpos_noise", "qvel_noise"),
    [
        ("HalfCheetahRandDirec", ("uniform", 0.1), ("normal", 0.1)),
        ("AntRandDirec", ("uniform", 0.1), ("normal", 0.1)),
        ("HumanoidRandDirec", ("uniform", 0.01), ("uniform", 0.01)),
        ("Walker2DRandVel", ("uniform", 0.005), ("uniform", 0.005)),
        ("SwimmerRandVel", ("uniform", 0.1), ("uniform", 0.1)),
        ("HopperRandParams", ("uniform", 0.005), ("uniform", 0.005)),
    ],
)
def test_reset_noise(name, qpos_noise, qvel_noise, make_env):
    """Reset noise of the original ProMP code (docs/environments.md table), seeded (deviation 7):
    seeded resets are reproducible, other seeds differ."""
    env = make_env(name, num_threads=1)
    tasks = env.sample_tasks(2, seed=0)
    obs_a = env.reset(tasks, 60, seed=5)
    qpos, qvel = env.physics_state()
    obs_b = env.reset(tasks, 60, seed=5)
    np.testing.assert_array_equal(obs_a, obs_b)
    obs_c = env.reset(tasks, 60, seed=6)
    assert not np.array_equal(obs_a, obs_c)
    for values, (kind, scale) in ((qpos - env.model.qpos0, qpos_noise), (qvel, qvel_noise)):
        if kind == "uniform":
            assert np.abs(values).max() <= scale
            assert np.abs(values).max() > 0.9 * scale
            assert np.std(values) == pytest.approx(scale / np.sqrt(3), rel=0.15)
        else:
            assert np.std(values) == pytest.approx(scale, rel=0.15)
            assert np.abs(values).max() > scale  # not bounded by the scale


# ------------------------------------------------------------------------------------------------
# RandParams physics
# ------------------------------------------------------------------------------------------------


def _run(env, tasks, seed, actions):
    obs = [env.reset(tasks, 1, seed=seed)]
    for a in actions:
        obs.append(env.step(a)[0])
    return np.stack(obs)


@pytest.mark.parametrize("name", ["HopperRandParams", "Walker2DRandParams"])
def test_rand_params_change_physics(name, make_env):
    """Each task randomises the physics (ProMP App. D.2): tasks set the per-task model
    (docs/environments.md, "RandParams tasks" and deviation 6); different parameters → different
    trajectories; a new task does not inherit the previous task's parameters."""
    env = make_env(name, normalize_actions=False, num_threads=2)
    base = {k: np.array(getattr(env.model, k)) for k in env.family.task_keys}
    tasks = env.sample_tasks(3, seed=0)
    env.reset(tasks, 2, seed=0)
    for i in range(3):
        m = env.model_for_task(i)
        for k in env.family.task_keys:
            np.testing.assert_array_equal(getattr(m, k), tasks[k][i])
        # mj_setConst: derived constants consistent with the new masses
        assert m.body_subtreemass[0] == pytest.approx(tasks["body_mass"][i].sum())
    for k in env.family.task_keys:  # the shared model is untouched
        np.testing.assert_array_equal(getattr(env.model, k), base[k])

    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, size=(1, 1, env.spec.act_dim)) for _ in range(4)]
    one = lambda i, t=tasks: {k: v[i : i + 1] for k, v in t.items()}  # noqa: E731
    run_a = _run(env, one(0), 3, actions)
    run_b = _run(env, one(1), 3, actions)
    np.testing.assert_array_equal(run_a[0], run_b[0])  # same initial state
    assert np.abs(run_a[-1] - run_b[-1]).max() > 1e-3
    run_a2 = _run(env, one(0), 3, actions)  # back to task 0: no inheritance from task 1
    np.testing.assert_array_equal(run_a, run_a2)
    new = env.sample_tasks(2, seed=9)
    env.reset(new, 1, seed=0)
    for i in range(2):
        np.testing.assert_array_equal(env.model_for_task(i).body_mass, new["body_mass"][i])
    # sampling is relative to the untouched original parameters
    again = env.sample_tasks(3, seed=0)
    for k in tasks:
        np.testing.assert_array_equal(again[k], tasks[k])


def test_non_randparams_model_for_task_is_shared(make_env):
    """Task-only families simulate every task with the family model."""
    env = make_env("AntRandGoal", num_threads=1)
    env.reset(env.sample_tasks(2, seed=0), 1, seed=0)
    assert env.model_for_task(0) is env.model and env.model_for_task(1) is env.model


# ------------------------------------------------------------------------------------------------
# Batched step equals single-environment stepping
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["HalfCheetahRandDirec", "Walker2DRandParams", "AntRandDirec2D"])
def test_batched_step_equals_mj_step(name, make_env):
    """The batched rollout equals frame_skip plain mj_step calls from the same qpos/qvel and ctrl
    (the ctrl being the rescaled policy action)."""
    env = make_env(name, num_threads=2)
    m, r = 2, 2
    env.reset(env.sample_tasks(m, seed=1), r, seed=1)
    low, high = env.spec.action_low, env.spec.action_high
    rng = np.random.default_rng(2)
    for _ in range(3):
        qpos, qvel = env.physics_state()
        active = env.active
        policy_a = rng.uniform(-12, 12, size=(m, r, env.spec.act_dim))
        env.step(policy_a)
        qpos2, qvel2 = env.physics_state()
        for i in range(m):
            model = env.model_for_task(i)
            for j in range(r):
                if not active[i, j]:
                    continue
                data = mujoco.MjData(model)
                data.qpos[:] = qpos[i, j]
                data.qvel[:] = qvel[i, j]
                data.ctrl[:] = np.clip(low + (policy_a[i, j] + 10) * (high - low) / 20, low, high)
                for _ in range(FRAME_SKIP[name]):
                    mujoco.mj_step(model, data)
                np.testing.assert_allclose(data.qpos, qpos2[i, j], atol=1e-8, rtol=0)
                np.testing.assert_allclose(data.qvel, qvel2[i, j], atol=1e-8, rtol=0)


def test_partial_batch_uses_each_tasks_model(make_env):
    """docs/environments.md, "RandParams tasks" (one model per environment) and deviation 8: once
    some episodes have ended, the running ones still step with their own task's model (checked
    against plain mj_step)."""
    env = make_env("HopperRandParams", normalize_actions=False, num_threads=2)
    env.reset(env.sample_tasks(2, seed=4), 2, seed=4)
    nq = env.model.nq
    env._state[0, 1 + nq] = 150.0  # env (0, 0) ends through the velocity bound
    _, _, done, _ = env.step(np.zeros((2, 2, 3)))
    np.testing.assert_array_equal(done, [[True, False], [False, False]])
    rng = np.random.default_rng(0)
    for _ in range(3):
        qpos, qvel = env.physics_state()
        active = env.active
        action = rng.uniform(-1, 1, size=(2, 2, 3))
        env.step(action)
        qpos2, qvel2 = env.physics_state()
        for i, j in zip(*np.nonzero(active), strict=True):
            model = env.model_for_task(i)
            data = mujoco.MjData(model)
            data.qpos[:], data.qvel[:], data.ctrl[:] = qpos[i, j], qvel[i, j], action[i, j]
            for _ in range(FRAME_SKIP["HopperRandParams"]):
                mujoco.mj_step(model, data)
            np.testing.assert_allclose(data.qpos, qpos2[i, j], atol=1e-8, rtol=0)
            np.testing.assert_allclose(data.qvel, qvel2[i, j], atol=1e-8, rtol=0)


# ------------------------------------------------------------------------------------------------
# JAX reward functions
# ------------------------------------------------------------------------------------------------


def _transitions(env, m=2, r=2, steps=3, seed=0):
    """Real (obs, action, next_obs, sim reward, env tasks, qpos, qpos') from running env."""
    tasks = env.sample_tasks(m, seed=seed)
    obs = env.reset(tasks, r, seed=seed)
    rng = np.random.default_rng(seed)
    env_tasks = flat_env_tasks(tasks, r)
    out = []
    for _ in range(steps):
        active = flat(env.active)
        qpos = flat(env.physics_state()[0])
        a = rng.uniform(-10, 10, size=(m, r, env.spec.act_dim))
        next_obs, reward, _, _ = env.step(a)
        qpos2 = flat(env.physics_state()[0])
        out.append((flat(obs)[active], flat(a)[active], flat(next_obs)[active], flat(reward)[active],
                    {k: v[active] for k, v in env_tasks.items()}, qpos[active], qpos2[active]))
        obs = next_obs
    return out


def _jax_reward(env, obs, a, next_obs, task):
    fn = jax.jit(obs_reward_fn(env))
    return np.asarray(fn(jnp.asarray(obs), jnp.asarray(a), jnp.asarray(next_obs),
                         {k: jnp.asarray(v) for k, v in task.items()}))


def test_jax_reward_exact_ant_rand_goal(make_env):
    """docs/environments.md, "Reward and termination as JAX functions": obs_reward_fn is exact for
    AntRandGoal (position is observed)."""
    env = make_env("AntRandGoal", num_threads=1)
    for obs, a, next_obs, reward, task, _, _ in _transitions(env):
        np.testing.assert_allclose(_jax_reward(env, obs, a, next_obs, task), reward, rtol=1e-5, atol=1e-5)


# velocity read from next_obs (indices into the observation) and the forward term of the family
VELOCITY_TERMS = {
    "HalfCheetahRandDirec": (8, lambda v, t: t["direction"] * v[:, 0]),
    "HalfCheetahRandVel": (8, lambda v, t: -np.abs(v[:, 0] - t["velocity"])),
    "AntRandDirec": (13, lambda v, t: t["direction"] * v[:, 0]),
    "AntRandDirec2D": (13, lambda v, t: np.sum(t["direction"] * v, -1)),
    "HumanoidRandDirec": (22, lambda v, t: 1.25 * t["direction"] * v[:, 0]),
    "HumanoidRandDirec2D": (22, lambda v, t: 1.25 * np.sum(t["direction"] * v, -1)),
    "Walker2DRandDirec": (8, lambda v, t: t["direction"] * v[:, 0]),
    "Walker2DRandVel": (8, lambda v, t: -np.abs(v[:, 0] - t["velocity"])),
    "SwimmerRandVel": (3, lambda v, t: -np.abs(v[:, 0] - t["velocity"])),
    "HopperRandParams": (5, lambda v, t: v[:, 0]),
    "Walker2DRandParams": (8, lambda v, t: v[:, 0]),
}


@pytest.mark.parametrize("name", list(VELOCITY_TERMS))
def test_jax_reward_velocity_families(name, make_env):
    """docs/environments.md, "Reward and termination as JAX functions": sim reward − JAX reward =
    forward term(displacement/dt) − forward term(obs velocity); every other term is exact."""
    env = make_env(name, num_threads=1)
    index, forward = VELOCITY_TERMS[name]
    dt = dt_of(name)
    checked = 0
    for obs, a, next_obs, reward, task, qpos, qpos2 in _transitions(env):
        if name.startswith("Humanoid"):
            v_sim = (com_xy(env.model, qpos2) - com_xy(env.model, qpos)) / dt
        else:
            v_sim = (qpos2[:, :2] - qpos[:, :2]) / dt
            if name not in ("AntRandDirec", "AntRandDirec2D"):
                v_sim[:, 1] = 0.0
        v_obs = next_obs[:, index : index + 2].copy()
        if not name.startswith(("Ant", "Humanoid")):
            v_obs[:, 1] = 0.0
        expected_diff = forward(v_sim, task) - forward(v_obs, task)
        jax_r = _jax_reward(env, obs, a, next_obs, task)
        np.testing.assert_allclose(reward - jax_r, expected_diff, rtol=0, atol=2e-4)
        checked += len(reward)
    assert checked >= 4


# ------------------------------------------------------------------------------------------------
# Divergence
# ------------------------------------------------------------------------------------------------


def test_divergence_ends_only_that_episode(make_env, in_tmp):
    """An unstable state ends its episode (done, reward 0, info['diverged']), is counted, and the
    rest of the batch carries on with finite observations."""
    env = make_env("HalfCheetahRandDirec", num_threads=2)
    env.reset(env.sample_tasks(2, seed=0), 2, seed=0)
    nq, nv = env.model.nq, env.model.nv
    env._state[1, 1 + nq : 1 + nq + nv] = 1e12  # env (task 0, rollout 1)
    before = env.physics_state()
    obs, reward, done, info = env.step(np.ones((2, 2, 6)))
    expect = np.array([[False, True], [False, False]])
    np.testing.assert_array_equal(info["diverged"], expect)
    np.testing.assert_array_equal(done, expect)
    assert reward[0, 1] == 0.0
    assert env.diverged_total == 1
    others = ~expect
    assert np.all(np.isfinite(obs[others])) and np.all(reward[others] != 0.0)
    np.testing.assert_array_equal(env.physics_state()[0][0, 1], before[0][0, 1])  # state restored
    np.testing.assert_array_equal(obs[0, 1], LAYOUTS["HalfCheetahRandDirec"](*before)[0, 1])
    obs2, reward2, done2, info2 = env.step(np.ones((2, 2, 6)))
    assert done2[0, 1] and reward2[0, 1] == 0.0 and not info2["diverged"].any()
    np.testing.assert_array_equal(obs2[0, 1], obs[0, 1])
    assert not done2[others].any() and np.all(np.isfinite(obs2[others]))
    assert not np.array_equal(obs2[others], obs[others])
    assert env.diverged_total == 1


def test_divergence_with_finished_episodes(make_env, in_tmp):
    """Divergence in a partly finished batch is attributed to the right environment."""
    env = make_env("HopperRandParams", normalize_actions=False, num_threads=2)
    env.reset(env.sample_tasks(1, seed=0), 4, seed=0)
    nq, nv = env.model.nq, env.model.nv
    env._state[0, 1 + nq] = 150.0  # env 0 ends through the velocity bound
    _, _, done, _ = env.step(np.zeros((1, 4, 3)))
    np.testing.assert_array_equal(done, [[True, False, False, False]])
    env._state[2, 1 + nq : 1 + nq + nv] = 1e12
    obs, reward, done, info = env.step(np.zeros((1, 4, 3)))
    np.testing.assert_array_equal(info["diverged"], [[False, False, True, False]])
    np.testing.assert_array_equal(done, [[True, False, True, False]])
    np.testing.assert_array_equal(reward[0, [0, 2]], 0.0)
    assert np.all(reward[0, [1, 3]] != 0.0) and np.all(np.isfinite(obs[0, [1, 3]]))
    assert env.diverged_total == 1
    np.testing.assert_array_equal(env.active, [[False, True, False, True]])


def test_mujoco_warnings_go_to_logging_not_cwd(make_env, tmp_path, monkeypatch, caplog):
    """MuJoCo's warnings on a diverging state reach Python logging ("adaptrl.mujoco") and no
    MUJOCO_LOG.TXT is written into the working directory."""
    monkeypatch.chdir(tmp_path)
    env = make_env("HalfCheetahRandDirec", num_threads=2)
    assert mujoco.get_mju_user_warning() is host._log_mujoco_warning
    env.reset(env.sample_tasks(1, seed=0), 2, seed=0)
    nq, nv = env.model.nq, env.model.nv
    env._state[1, 1 + nq : 1 + nq + nv] = 1e12
    with caplog.at_level("WARNING"):
        _, _, _, info = env.step(np.ones((1, 2, 6)))
    assert info["diverged"].tolist() == [[False, True]]
    messages = [r.getMessage() for r in caplog.records if r.name == "adaptrl.mujoco"]
    assert any("unstable" in m for m in messages), messages
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# Bad input and names
# ------------------------------------------------------------------------------------------------


def test_unknown_name_suggests_close_match(make_env):
    with pytest.raises(ConfigError, match="HalfCheetahRandDirec"):
        make_env("HalfCheetahRandDir")
    with pytest.raises(ConfigError, match="Valid environments"):
        make_env("NoSuchEnv")


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_resolve(alias, make_env):
    env = make_env(alias, num_threads=1)
    assert env.spec.name == ALIASES[alias] == canonical_name(alias)
    assert alias not in family_names()


def test_bad_step_and_reset_input(make_env):
    env = make_env("HalfCheetahRandDirec", num_threads=1)
    tasks = env.sample_tasks(2, seed=0)
    with pytest.raises(ConfigError, match="reset"):
        env.step(np.zeros((2, 1, 6)))
    with pytest.raises(ConfigError, match="rollouts_per_task"):
        env.reset(tasks, 0)
    with pytest.raises(ConfigError, match="keys"):
        env.reset({"goal": np.zeros((2, 2))}, 1)
    with pytest.raises(ConfigError, match="per-task shape"):
        env.reset({"direction": np.ones((2, 2))}, 1)
    with pytest.raises(ConfigError, match="leading task axis"):
        env.reset({"direction": np.float64(1.0)}, 1)
    with pytest.raises(ConfigError, match="number of tasks"):
        env.sample_tasks(0)
    env.reset(tasks, 1, seed=0)
    with pytest.raises(ConfigError, match="shape"):
        env.step(np.zeros((2, 6)))
    with pytest.raises(ConfigError, match="shape"):
        env.step(np.zeros((2, 1, 5)))
    bad = np.zeros((2, 1, 6))
    bad[1, 0, 3] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        env.step(bad)
    bad[1, 0, 3] = np.inf
    with pytest.raises(ConfigError, match="non-finite"):
        env.step(bad)
    obs, reward, _, _ = env.step(np.zeros((2, 1, 6)))  # still usable after the errors
    assert obs.shape == (2, 1, 17) and np.all(np.isfinite(reward))


def test_bad_input_rand_params_tasks(make_env):
    env = make_env("HopperRandParams", num_threads=1)
    tasks = env.sample_tasks(2, seed=0)
    del tasks["geom_friction"]
    with pytest.raises(ConfigError, match="keys"):
        env.reset(tasks, 1)
