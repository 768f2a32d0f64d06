"""The MJX backend (adaptrl.envs.mjx): agreement with native MuJoCo, a ProMP run on it, its errors.

MJX compiles slowly on CPU, so the default suite checks one family against native MuJoCo
(HopperRandParams: batched model fields, derived constants, termination) and a 2-iteration ProMP
run; the other families, the sampler's scan against the vector protocol and the Ant contact
analysis are `slow` (docs/environments.md, "The MJX backend", has the figures for every family).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl.envs import make
from adaptrl.envs.mjx import MjxSimulator, import_mjx, native_agreement
from adaptrl.envs.mujoco_families import FAMILIES, load_model
from adaptrl.errors import ConfigError
from adaptrl.experiment.config import build_config
from adaptrl.experiment.trainer import train
from adaptrl.policies import init_params, make_policy, per_task
from adaptrl.sampling import Sampler

TOLERANCE = 1e-3
"""Largest relative difference of observations and rewards over 10 control steps (float32 MJX
against float64 native MuJoCo; measured: at most 1.7e-4, docs/environments.md)."""

PLANAR = ["HalfCheetahRandVel", "Walker2DRandDirec", "Walker2DRandVel", "SwimmerRandVel",
          "Walker2DRandParams", "HalfCheetah", "Walker2D", "Hopper", "Swimmer", "HalfCheetahRandDirec"]


def assert_agrees(name: str, steps: int = 10) -> None:
    worst = native_agreement(name, steps=steps)
    assert worst["obs_rel"] <= TOLERANCE and worst["reward_rel"] <= TOLERANCE, worst
    assert worst["done_mismatches"] == 0, worst


def test_randparams_family_agrees_with_native():
    """Per-task masses, inertias, dampings and frictions (batched model fields) with the constants
    mj_setConst derives from them; an episode that terminates does so at the same step."""
    assert_agrees("HopperRandParams")


@pytest.mark.slow
@pytest.mark.parametrize("name", PLANAR)
def test_planar_families_agree_with_native(name):
    assert_agrees(name)


@pytest.mark.slow
def test_ant_differs_only_by_the_pyramid_frame():
    """Ant's contacts: from the same states along a native trajectory, MJX's accelerations match
    native MuJoCo's to 1e-3 with elliptic friction cones, and differ by more than 1e-2 at some
    contact with the model's pyramidal cones, whose edges depend on the contact's tangent frame
    (MJX aligns a capsule-plane contact frame with the capsule, MuJoCo picks its own)."""
    import mujoco

    mjx = import_mjx()
    worst = {}
    for cone in (mujoco.mjtCone.mjCONE_PYRAMIDAL, mujoco.mjtCone.mjCONE_ELLIPTIC):
        m = copy.copy(load_model(FAMILIES["AntRandDirec"]))
        m.opt.cone = cone
        m.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER  # qacc of the step itself (RK4 keeps a stage's)
        d = mujoco.MjData(m)
        rng = np.random.default_rng(0)
        d.qpos[:] = m.qpos0 + rng.uniform(-0.1, 0.1, m.nq)
        d.qvel[:] = 0.1 * rng.standard_normal(m.nv)
        mx, forward = mjx.put_model(m), jax.jit(mjx.forward)
        errors = []
        for _ in range(40):
            d.ctrl[:] = rng.uniform(-1, 1, m.nu)
            mujoco.mj_forward(m, d)
            dx = mjx.make_data(mx).replace(qpos=jnp.asarray(d.qpos, jnp.float32),
                                           qvel=jnp.asarray(d.qvel, jnp.float32),
                                           ctrl=jnp.asarray(d.ctrl, jnp.float32))
            qacc = np.asarray(forward(mx, dx).qacc)
            if d.ncon:
                errors.append(np.abs(qacc - d.qacc).max() / (1 + np.abs(d.qacc).max()))
            mujoco.mj_step(m, d)
        worst[int(cone)] = max(errors)
    assert worst[int(mujoco.mjtCone.mjCONE_ELLIPTIC)] < 1e-3, worst
    assert worst[int(mujoco.mjtCone.mjCONE_PYRAMIDAL)] > 1e-2, worst


@pytest.mark.slow
def test_sampler_scan_equals_the_vector_protocol():
    """The sampler's one-scan device rollout on MJX gives the observations and rewards of the
    same start states and actions stepped one call at a time."""
    env = make("HalfCheetahRandDirec", backend="mjx")
    policy = make_policy(env.spec.act_dim, hidden_sizes=(8,))
    tasks = env.sample_tasks(2, 0)
    params = per_task(init_params(policy, jax.random.PRNGKey(0), env.spec.obs_dim), 2)
    sampler = Sampler(env, policy, 2, 6)
    assert isinstance(sampler.simulator, MjxSimulator)
    key = jax.random.PRNGKey(3)
    traj = sampler.collect(params, tasks, key)
    reset_keys = jax.random.split(jax.random.split(key)[0], 4)  # device_rollout's start-state keys
    obs0 = env._start(env._reset(env._sim_params(), reset_keys, env._env_tasks(tasks, 2)))
    np.testing.assert_allclose(obs0, np.asarray(traj.observations)[:, :, 0], rtol=1e-5, atol=1e-6)
    actions = np.asarray(traj.actions)
    for t in range(6):
        obs, reward, _, _ = env.step(actions[:, :, t])
        np.testing.assert_allclose(reward, np.asarray(traj.rewards)[:, :, t], rtol=1e-4, atol=1e-5)
        if t < 5:
            np.testing.assert_allclose(obs, np.asarray(traj.observations)[:, :, t + 1], rtol=1e-4, atol=1e-5)


def test_promp_trains_two_iterations_on_mjx(tmp_path):
    """A 2-iteration ProMP run with the environment on MJX (CPU): the sampler runs MJX's scan,
    and both iterations log finite returns of every adaptation step."""
    config = build_config("promp", "HalfCheetahRandDirec", overrides={
        "env_options": {"backend": "mjx"}, "tasks_per_iter": 2, "rollouts_per_task": 2, "horizon": 8,
        "hidden_sizes": (8,), "iterations": 2})
    result = train(config, str(tmp_path / "run"), show_progress=False, tensorboard=False, make_plots=False)
    assert len(result.rows) == 2
    for row in result.rows:
        assert row["n_timesteps"] > 0
        for step in (0, 1):
            assert np.isfinite(float(row[f"Step_{step}-AverageReturn"]))
    assert "backend: mjx" in (tmp_path / "run" / "config.yaml").read_text()


def test_errors_are_one_clear_message():
    with pytest.raises(ConfigError, match=r"HumanoidRandDirec cannot use backend=mjx: its model uses "
                                          r"MuJoCo's PGS solver.*HumanoidRandDirec, HumanoidRandDirec2D"):
        make("HumanoidRandDirec", backend="mjx")
    with pytest.raises(ConfigError, match=r"backend must be 'native' .* or 'mjx' .*got 'gpu'"):
        make("HalfCheetahRandDirec", backend="gpu")
    with pytest.raises(ConfigError, match=r"the backend option is for the MuJoCo families; PointCorners"):
        make("PointCorners", backend="mjx")
    env = make("HalfCheetahRandDirec", backend="mjx")
    with pytest.raises(ConfigError, match=r"cannot start from an observation"):
        env.simulator.reset({}, jax.random.PRNGKey(0), {"direction": 1.0}, start_obs=jnp.zeros(17))
