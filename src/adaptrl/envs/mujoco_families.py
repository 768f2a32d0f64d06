"""The MuJoCo task families of the papers, defined as data.

Each family is a :class:`MujocoFamily`: the model file, frame skip and timestep, how an
observation is read from the physics, the task distribution, the reset noise, and the reward and
termination. Reward and termination are written once, as functions of a *motion* (velocity and
position of the tracked point) and the action, in code that runs on numpy and JAX arrays alike
(``xp`` is the array module). The simulator feeds them the exact motion over the frame skip
(displacement / dt); :func:`obs_reward_fn` feeds them the motion read from observations, which is
what model-based methods have on imagined states.

All numbers come from the original ProMP code (documented in docs/environments.md); the task
families are those of ProMP (Rothfuss et al., 2019) App. D.2 and TMAML (Liu et al., 2019) §5.1.

:data:`SINGLE_TASK_FAMILIES` holds the single-task locomotion environments of the model-based
chapters of Clavera's thesis (2020; MB-MPO §5.5, App. B.3): HalfCheetah, Ant, Walker2D, Hopper
and Swimmer. Their reward is a function of ``(obs, action, next_obs)`` that reads the root's
velocity from ``next_obs`` (``reward_from_observation``), and the simulator computes it with that
very function (:meth:`MujocoFamily.observation_reward`), so the reward of an imagined transition
is the real one (docs/environments.md, "Single-task environments for model-based RL").

Differences, each listed in the family's ``deviations``:

* Contact forces. MuJoCo ≥ 2 only fills ``cfrc_ext`` when ``mj_rnePostConstraint`` runs, and
  batched ``mujoco.rollout`` returns the state (qpos, qvel), not derived quantities. The Ant and
  Humanoid families therefore leave the 84 clipped contact-force dimensions out of the observation
  and drop the contact cost (Ant: at most 0.5e-3·84 = 0.042 per step; Humanoid impact cost: at
  most 10, usually < 0.1). These are the Gymnasium ``Ant-v4`` / ``Humanoid-v4`` defaults too.
* Positions are read from the state after the step. The original read Ant's torso position and
  Humanoid's centre of mass (and Humanoid's ``cinert``/``cvel``/``qfrc_actuator`` observations)
  from MuJoCo's kinematics cache, which ``mj_step`` fills *before* integrating, i.e. one physics
  substep behind ``qpos``.
* Swimmer's reward sign is fixed: ``−|v − v_goal|`` (the original rewarded ``+|v − v_goal|``).
* Control costs use the action the simulator receives (after rescaling and clipping to the
  actuator range), as the original did behind ``normalize``; without normalisation the action is
  clipped to the bounds before the cost (the original charged the unclipped action).
* RandParams: parameters are set on a per-task model copy followed by ``mj_setConst``, so derived
  constants (subtree masses, inverse weights) are consistent with the new masses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptrl.envs.base import Tasks, merge_task_options, signs, unit_directions
from adaptrl.envs.rendering import import_mujoco
from adaptrl.errors import ConfigError

Motion = dict[str, Any]
"""``velocity``: [B, 2] velocity of the tracked point (x, y; y = 0 for planar models);
``position``: [B, 2] its position after the step."""

RewardFn = Callable[..., tuple[Any, dict[str, Any]]]


def sq_norm(xp, a):
    """Squared Euclidean norm over the last axis."""
    return xp.sum(a * a, axis=-1)


@dataclass(frozen=True)
class RandParams:
    """Per-task physics randomisation of the ``rand_param_envs`` package (docs/environments.md,
    "RandParams tasks").

    Every element of each parameter array is multiplied by ``base ** U(−L, L)``, independently,
    with ``L = log_scale_limit``; multipliers apply to the model's original values.
    """

    bases: dict[str, float] = field(
        default_factory=lambda: {
            "body_mass": 1.5,
            "body_inertia": 1.5,
            "dof_damping": 1.3,
            "geom_friction": 1.5,
        }
    )

    def sample(self, rng: np.random.Generator, n: int, model, log_scale_limit: float) -> Tasks:
        """Draw ``n`` parameter sets (absolute values) for ``model``."""
        tasks = {}
        for name, base in self.bases.items():
            init = np.asarray(getattr(model, name))
            exponents = rng.uniform(-log_scale_limit, log_scale_limit, size=(n, *init.shape))
            tasks[name] = init[None] * np.power(base, exponents)
        return tasks


@dataclass(frozen=True)
class MujocoFamily:
    """One MuJoCo task family (see the module docstring for the conventions)."""

    name: str
    asset: str
    frame_skip: int
    horizon: int
    obs_parts: tuple[str, ...]
    tracked_point: str
    reward: RewardFn
    obs_motion: Callable[..., Motion]
    terminated: Callable[..., Any] | None
    task_keys: tuple[str, ...]
    task_description: str
    reset_noise: tuple[str, float, str, float]
    timestep: float | None = None
    rand_params: RandParams | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    max_abs_qvel: float | None = None
    paper: str = ""
    deviations: tuple[str, ...] = ()
    settotalmass: float | None = None
    direction_dims: int = 1
    reward_from_observation: bool = False
    """The simulator's reward reads the motion from the observations (:meth:`observation_reward`)
    instead of the displacement of the tracked point over the frame skip."""
    normalize_actions: bool = True
    """Default of the ``normalize_actions`` option."""

    @property
    def single_task(self) -> bool:
        """One MDP: every task is the trivial ``{"task_id": 0}`` (:func:`single_tasks`)."""
        return self.task_keys == (SINGLE_TASK_KEY,)

    def observation_reward(self, xp, obs, action, next_obs, task):
        """``(reward, terms)`` of a transition from observations: the family's reward with the
        motion read from ``(obs, next_obs)`` (``obs_motion``). ``action`` is the action the
        simulator receives. :func:`adaptrl.envs.obs_reward_fn` calls it with ``xp = jax.numpy``;
        the simulator of a ``reward_from_observation`` family calls it with ``xp = numpy``."""
        motion = self.obs_motion(xp, obs, next_obs)
        return self.reward(xp, motion, action, task, self.frame_skip)

    def sample_tasks(self, rng: np.random.Generator, n: int, options: dict[str, Any], model) -> Tasks:
        """Draw ``n`` tasks with the family's task options."""
        if self.rand_params is not None:
            return self.rand_params.sample(rng, n, model, float(options["log_scale_limit"]))
        key = self.task_keys[0]
        if key == SINGLE_TASK_KEY:
            return single_tasks(n)
        if key == "direction" and self.direction_dims == 1:
            return {key: signs(rng, n)}
        if key == "direction":
            return {key: unit_directions(rng, n)}
        if key == "velocity":
            lo, hi = options["velocity_range"]
            return {key: rng.uniform(lo, hi, size=n)}
        if key == "goal":
            if options.get("goal_distribution", "disc") == "square":  # TMAML §5.1: U[−3, 3]²
                half = float(options["goal_radius"])
                return {key: rng.uniform(-half, half, size=(n, 2))}
            angle = rng.uniform(0.0, 2 * np.pi, size=n)
            radius = float(options["goal_radius"]) * np.sqrt(rng.uniform(0.0, 1.0, size=n))
            return {key: np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)}
        raise AssertionError(f"no sampler for task key {key}")

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Merge user task options with the defaults; reject unknown or malformed ones."""
        merged = merge_task_options(self.name, self.task_options, options,
                                    "normalize_actions, horizon and num_threads")
        if "velocity_range" in merged:
            value = merged["velocity_range"]
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                lo, hi = 1.0, 0.0
            if not lo <= hi:
                raise ConfigError(
                    f"{self.name}: velocity_range must be a pair (low, high) with low <= high, got {value!r}."
                )
            merged["velocity_range"] = (lo, hi)
        if "goal_distribution" in merged and merged["goal_distribution"] not in ("disc", "square"):
            raise ConfigError(f"{self.name}: goal_distribution must be 'disc' (ProMP) or 'square' "
                              f"(TMAML, uniform in [−goal_radius, goal_radius]²), got "
                              f"{merged['goal_distribution']!r}.")
        for key in ("goal_radius", "log_scale_limit"):
            if key in merged and not float(merged[key]) >= 0:
                raise ConfigError(f"{self.name}: {key} must be >= 0, got {merged[key]!r}.")
        return merged


SINGLE_TASK_KEY = "task_id"
"""The one entry of a single-task environment's task (always 0)."""


def single_tasks(n: int) -> Tasks:
    """``n`` copies of the only task of a single-task environment: ``{"task_id": zeros(n)}``.

    Single-task environments have one MDP; this trivial task distribution lets the samplers and
    the meta-learning code, which work on task batches, use them unchanged."""
    return {SINGLE_TASK_KEY: np.zeros(n)}


# ---------------------------------------------------------------------------------------------
# Rewards: (xp, motion, action, task, frame_skip) -> (reward [B], info dict of [B])
# ---------------------------------------------------------------------------------------------


def _direction_reward(ctrl_coef: float, alive: float, forward_weight: float = 1.0) -> RewardFn:
    """``forward_weight·dir·v_x − ctrl_coef·‖a‖² + alive`` (forward/backward families)."""

    def reward(xp, motion, action, task, frame_skip):
        forward = forward_weight * task["direction"] * motion["velocity"][..., 0]
        ctrl = -ctrl_coef * sq_norm(xp, action)
        return forward + ctrl + alive, {"reward_forward": forward, "reward_ctrl": ctrl}

    return reward


def _direction2d_reward(ctrl_coef: float, alive: float, forward_weight: float = 1.0) -> RewardFn:
    """``forward_weight·⟨d, v_xy⟩ − ctrl_coef·‖a‖² + alive`` (2-D direction families)."""

    def reward(xp, motion, action, task, frame_skip):
        forward = forward_weight * xp.sum(task["direction"] * motion["velocity"], axis=-1)
        ctrl = -ctrl_coef * sq_norm(xp, action)
        return forward + ctrl + alive, {"reward_forward": forward, "reward_ctrl": ctrl}

    return reward


def _velocity_reward(ctrl_coef: float, alive: float) -> RewardFn:
    """``−|v_x − v_goal| − ctrl_coef·‖a‖² + alive`` (target-velocity families)."""

    def reward(xp, motion, action, task, frame_skip):
        forward = -xp.abs(motion["velocity"][..., 0] - task["velocity"])
        ctrl = -ctrl_coef * sq_norm(xp, action)
        return forward + ctrl + alive, {
            "reward_forward": forward,
            "reward_ctrl": ctrl,
            "forward_vel": motion["velocity"][..., 0],
        }

    return reward


def _forward_reward(ctrl_coef: float, alive: float) -> RewardFn:
    """``v_x − ctrl_coef·‖a‖² + alive`` (RandParams families: always run forward)."""

    def reward(xp, motion, action, task, frame_skip):
        forward = motion["velocity"][..., 0]
        ctrl = -ctrl_coef * sq_norm(xp, action)
        return forward + ctrl + alive, {"reward_forward": forward, "reward_ctrl": ctrl}

    return reward


def _mb_forward_reward(ctrl_coef: float, alive: float, clip: float | None = None,
                       action_scale: float = 1.0) -> RewardFn:
    """``clip(v_x − ctrl_coef·‖a/action_scale‖² + alive, ±clip)``: the MB-MPO environments
    (Clavera thesis §5.5, App. B.3), with ``v_x`` the root's x-velocity read from ``next_obs``."""

    def reward(xp, motion, action, task, frame_skip):
        forward = motion["velocity"][..., 0]
        ctrl = -ctrl_coef * sq_norm(xp, action / action_scale)
        total = forward + ctrl + alive
        if clip is not None:
            total = xp.clip(total, -clip, clip)
        return total, {"reward_forward": forward, "reward_ctrl": ctrl}

    return reward


def _goal_reward(xp, motion, action, task, frame_skip):
    """AntRandGoal: ``−‖xy − g‖₁ − 0.1·‖a‖²`` (no survive bonus)."""
    distance = -xp.sum(xp.abs(motion["position"] - task["goal"]), axis=-1)
    ctrl = -0.1 * sq_norm(xp, action)
    return distance + ctrl, {"reward_forward": distance, "reward_ctrl": ctrl}


def _humanoid_reward(two_d: bool) -> RewardFn:
    """Humanoid: ``0.25·⟨d, Δcom⟩/timestep − 0.1·‖a‖² + 5``.

    The original divides the centre-of-mass displacement by MuJoCo's timestep, not by dt, so the
    weight on the velocity Δcom/dt is ``0.25·frame_skip`` (= 1.25, Gymnasium's Humanoid weight).
    """

    def reward(xp, motion, action, task, frame_skip):
        velocity = motion["velocity"]
        if two_d:
            along = xp.sum(task["direction"] * velocity, axis=-1)
        else:
            along = task["direction"] * velocity[..., 0]
        linvel = 0.25 * frame_skip * along
        ctrl = -0.1 * sq_norm(xp, action)
        return linvel + ctrl + 5.0, {"reward_linvel": linvel, "reward_quadctrl": ctrl}

    return reward


# ---------------------------------------------------------------------------------------------
# Termination on the next observation: (xp, next_obs) -> bool [B]
# ---------------------------------------------------------------------------------------------


def _ant_terminated(xp, obs):
    """Done unless the state is finite and ``0 ≤ z_torso ≤ 1`` (obs[0] = qpos[2])."""
    z = obs[..., 0]
    return ~(xp.all(xp.isfinite(obs), axis=-1) & (z >= 0.0) & (z <= 1.0))


def _ant_mb_terminated(xp, obs):
    """MB-MPO Ant: done unless the state is finite and ``0.2 ≤ z_torso ≤ 1`` (obs[0] = qpos[2])."""
    z = obs[..., 0]
    return ~(xp.all(xp.isfinite(obs), axis=-1) & (z >= 0.2) & (z <= 1.0))


def _humanoid_terminated(xp, obs):
    """Done when the torso height ``qpos[2]`` (obs[0]) leaves [1, 2]."""
    z = obs[..., 0]
    return (z < 1.0) | (z > 2.0)


def _walker_terminated(xp, obs):
    """Done unless ``0.8 < h < 2`` and ``−1 < angle < 1`` (obs[0] = qpos[1], obs[1] = qpos[2])."""
    h, ang = obs[..., 0], obs[..., 1]
    return ~((h > 0.8) & (h < 2.0) & (ang > -1.0) & (ang < 1.0))


def _hopper_terminated(xp, obs):
    """Done unless finite, ``|qpos[2:]|, |qvel| < 100``, ``h > 0.7`` and ``|angle| < 0.2``.

    ``obs = qpos[1:] ‖ qvel``: obs[0] = height qpos[1], obs[1] = torso angle qpos[2], so obs[1:]
    is gym's ``state_vector()[2:]``. Where the observation clips the velocities (HopperRandParams)
    the velocity test sees the clipped ones and the simulator also applies it to the true
    velocities (``max_abs_qvel``); for the single-task Hopper (unclipped velocities) it is exact.
    """
    h, ang = obs[..., 0], obs[..., 1]
    finite = xp.all(xp.isfinite(obs), axis=-1)
    bounded = xp.all(xp.abs(obs[..., 1:]) < 100.0, axis=-1)
    return ~(finite & bounded & (h > 0.7) & (xp.abs(ang) < 0.2))


# ---------------------------------------------------------------------------------------------
# Motion read from observations (what a learned model sees)
# ---------------------------------------------------------------------------------------------


def _planar_velocity_at(index: int):
    """Velocity ``(next_obs[index], 0)``: the root's x-velocity from the observation."""

    def motion(xp, obs, next_obs):
        vx = next_obs[..., index]
        return {"velocity": xp.stack([vx, xp.zeros_like(vx)], axis=-1), "position": None}

    return motion


def _xy_velocity_at(index: int, position_index: int | None = None):
    """Velocity ``next_obs[index:index+2]``; position ``next_obs[position_index:+2]`` if observed."""

    def motion(xp, obs, next_obs):
        position = None
        if position_index is not None:
            position = next_obs[..., position_index : position_index + 2]
        return {"velocity": next_obs[..., index : index + 2], "position": position}

    return motion


CHEETAH_DEV = (
    "control cost on the rescaled, clipped action (as the original behind normalize)",
)
ANT_DEV = (
    "observation drops the 84 clipped contact-force dims (cfrc_ext is not filled by MuJoCo >= 2 "
    "and not returned by batched rollout): 27-D instead of 111-D",
    "contact cost dropped (at most 0.042 per step in the original)",
    "torso position read from qpos after the step (the original read xpos, one substep behind)",
)
HUMANOID_DEV = (
    "observation drops the 84 cfrc_ext dims: qpos[2:] | qvel | cinert | cvel | qfrc_actuator = 292-D",
    "impact cost (min(0.5e-6·|cfrc_ext|², 10)) dropped",
    "cinert, cvel, qfrc_actuator and the centre of mass are computed at the observed state "
    "(the original's were one physics substep behind qpos)",
)
WALKER_DEV = ("walker2d.xml from Gymnasium (left-foot friction 1.9, as gym 0.10.5's asset)",)
RANDPARAMS_DEV = (
    "model: Gymnasium's asset with timestep 0.004 and frame skip 4 (the original used MuJoCo 1.31 "
    "and rand_param_envs' gym 0.7.4 asset)",
    "mj_setConst after setting the parameters keeps derived constants consistent",
)

_CHEETAH = dict(
    asset="half_cheetah.xml",
    frame_skip=5,
    horizon=100,
    obs_parts=("qpos[1:]", "qvel"),
    tracked_point="root_x",
    obs_motion=_planar_velocity_at(8),
    terminated=None,
    reset_noise=("uniform", 0.1, "normal", 0.1),
    settotalmass=14.0,
)
_ANT = dict(
    asset="ant.xml",
    frame_skip=5,
    horizon=100,
    obs_parts=("qpos[2:]", "qvel"),
    tracked_point="root_xy",
    obs_motion=_xy_velocity_at(13),
    terminated=_ant_terminated,
    reset_noise=("uniform", 0.1, "normal", 0.1),
)
_HUMANOID = dict(
    asset="humanoid.xml",
    frame_skip=5,
    horizon=200,
    obs_parts=("qpos[2:]", "qvel", "cinert", "cvel", "qfrc_actuator"),
    tracked_point="com_xy",
    obs_motion=_xy_velocity_at(22),
    terminated=_humanoid_terminated,
    reset_noise=("uniform", 0.01, "uniform", 0.01),
)
_WALKER = dict(
    asset="walker2d.xml",
    frame_skip=8,
    horizon=200,
    obs_parts=("qpos[1:]", "clip(qvel)"),
    tracked_point="root_x",
    obs_motion=_planar_velocity_at(8),
    terminated=_walker_terminated,
    reset_noise=("uniform", 0.005, "uniform", 0.005),
)

FAMILIES: dict[str, MujocoFamily] = {}


def _add(family: MujocoFamily) -> None:
    FAMILIES[family.name] = family


_add(MujocoFamily(
    name="HalfCheetahRandDirec", **_CHEETAH,
    reward=_direction_reward(0.05, 0.0), task_keys=("direction",),
    task_description="direction ∈ {−1, +1}, uniform",
    paper="ProMP Fig. 2 / TMAML (HalfCheetah Fwd/Back)", deviations=CHEETAH_DEV,
))
_add(MujocoFamily(
    name="HalfCheetahRandVel", **_CHEETAH,
    reward=_velocity_reward(0.05, 0.0), task_keys=("velocity",),
    task_description="target velocity ~ U(velocity_range), default U(0, 3)",
    task_options={"velocity_range": (0.0, 3.0)},
    paper="ProMP (E-MAML study) / TMAML (range U(0, 2))", deviations=CHEETAH_DEV,
))
_add(MujocoFamily(
    name="AntRandDirec", **_ANT,
    reward=_direction_reward(0.5, 1.0), task_keys=("direction",),
    task_description="direction ∈ {−1, +1}, uniform",
    paper="ProMP Fig. 7 (AntFwdBack) / TMAML (Ant Fwd/Back)", deviations=ANT_DEV,
))
_add(MujocoFamily(
    name="AntRandDirec2D", **_ANT,
    reward=_direction2d_reward(0.5, 1.0), task_keys=("direction",), direction_dims=2,
    task_description="unit direction in the plane, angle uniform on [0, 2π)",
    paper="ProMP Fig. 2 (AntRandDirec)", deviations=ANT_DEV,
))
_add(MujocoFamily(
    name="AntRandGoal", **{**_ANT, "obs_parts": ("qpos", "qvel"), "horizon": 200,
                          "obs_motion": _xy_velocity_at(15, position_index=0), "terminated": None},
    reward=_goal_reward, task_keys=("goal",),
    task_description="goal uniform on a disc of radius goal_radius (default 3); "
                     "goal_distribution=square: uniform in [−goal_radius, goal_radius]² (TMAML)",
    task_options={"goal_radius": 3.0, "goal_distribution": "disc"},
    paper="ProMP Fig. 7 (AntRandGoal)", deviations=ANT_DEV,
))
_add(MujocoFamily(
    name="HumanoidRandDirec", **_HUMANOID,
    reward=_humanoid_reward(two_d=False), task_keys=("direction",),
    task_description="direction ∈ {−1, +1}, uniform",
    paper="ProMP Fig. 7 (HumanoidFwdBack) / TMAML (Humanoid Fwd/Back)", deviations=HUMANOID_DEV,
))
_add(MujocoFamily(
    name="HumanoidRandDirec2D", **_HUMANOID,
    reward=_humanoid_reward(two_d=True), task_keys=("direction",), direction_dims=2,
    task_description="unit direction in the plane, angle uniform on [0, 2π)",
    paper="ProMP Fig. 2 (HumanoidRandDirec)", deviations=HUMANOID_DEV,
))
_add(MujocoFamily(
    name="Walker2DRandDirec", **_WALKER,
    reward=_direction_reward(1e-3, 1.0), task_keys=("direction",),
    task_description="direction ∈ {−1, +1}, uniform",
    paper="ProMP Fig. 2 / TMAML (Walker Fwd/Back)", deviations=WALKER_DEV,
))
_add(MujocoFamily(
    name="Walker2DRandVel", **_WALKER,
    reward=_velocity_reward(1e-3, 15.0), task_keys=("velocity",),
    task_description="target velocity ~ U(velocity_range), default U(0, 10)",
    task_options={"velocity_range": (0.0, 10.0)},
    paper="ProMP code's paper sweeps / TMAML (range U(0, 2))", deviations=WALKER_DEV,
))
_add(MujocoFamily(
    name="SwimmerRandVel", asset="swimmer.xml", frame_skip=4, horizon=100,
    obs_parts=("qpos[2:]", "qvel"), tracked_point="root_x", obs_motion=_planar_velocity_at(3),
    terminated=None, reset_noise=("uniform", 0.1, "uniform", 0.1),
    reward=_velocity_reward(1e-4, 0.0), task_keys=("velocity",),
    task_description="target velocity ~ U(velocity_range), default U(0.1, 0.2)",
    task_options={"velocity_range": (0.1, 0.2)},
    paper="TMAML (Swimmer rand-vel, range U(0, 2))",
    deviations=("reward sign fixed: −|v − v_goal| (the original rewarded +|v − v_goal|)",),
))
_add(MujocoFamily(
    name="HopperRandParams", asset="hopper.xml", frame_skip=4, timestep=0.004, horizon=200,
    obs_parts=("qpos[1:]", "clip(qvel)"), tracked_point="root_x", obs_motion=_planar_velocity_at(5),
    terminated=_hopper_terminated, reset_noise=("uniform", 0.005, "uniform", 0.005),
    reward=_forward_reward(1e-3, 1.0), task_keys=("body_mass", "body_inertia", "dof_damping",
                                                  "geom_friction"),
    task_description="body mass, inertia, friction ×1.5^U(−L, L), damping ×1.3^U(−L, L), L = 3",
    rand_params=RandParams(), task_options={"log_scale_limit": 3.0}, max_abs_qvel=100.0,
    paper="ProMP Fig. 2 (HopperRandParams)", deviations=RANDPARAMS_DEV,
))
_add(MujocoFamily(
    name="Walker2DRandParams", **{**_WALKER, "frame_skip": 4}, timestep=0.004,
    reward=_forward_reward(1e-3, 1.0), task_keys=("body_mass", "body_inertia", "dof_damping",
                                                  "geom_friction"),
    task_description="body mass, inertia, friction ×1.5^U(−L, L), damping ×1.3^U(−L, L), L = 3",
    rand_params=RandParams(), task_options={"log_scale_limit": 3.0},
    paper="ProMP Fig. 2 (Walker2DRandParams)", deviations=WALKER_DEV + RANDPARAMS_DEV,
))

# ---------------------------------------------------------------------------------------------
# Single-task environments of the model-based chapters (Clavera thesis §5.5, App. B.3)
# ---------------------------------------------------------------------------------------------

SINGLE_TASK_FAMILIES: dict[str, MujocoFamily] = {}
"""HalfCheetah, Ant, Walker2D, Hopper, Swimmer: one MDP each, reward from observations."""

MB_PAPER = "Clavera thesis §5.5 / App. B.3 (MB-MPO; also ME-TRPO, MAAC at horizon 1000)"
MB_TASK = "single task"
MB_DEV = (
    "MuJoCo 3 with Gymnasium's bundled asset (the thesis's code: rllab copies of gym's envs on "
    "MuJoCo 1.31)",
    "reward and termination computed from (obs, action, next_obs) by the same function as "
    "imagined transitions (velocity = qvel[0] of next_obs at the end of the step)",
)
MB_UNCLIPPED = ("velocities observed unclipped (gym's Hopper/Walker2d clip qvel to ±10 in the "
                "observation)",)


def _add_single(family: MujocoFamily) -> None:
    SINGLE_TASK_FAMILIES[family.name] = family


_MB = dict(horizon=200, task_keys=(SINGLE_TASK_KEY,), task_description=MB_TASK,
           reward_from_observation=True, normalize_actions=False, paper=MB_PAPER)

_add_single(MujocoFamily(
    name="HalfCheetah", **{**_CHEETAH, **_MB}, reward=_mb_forward_reward(0.1, 0.0, clip=1000.0),
    deviations=MB_DEV,
))
_add_single(MujocoFamily(
    name="Ant", **{**_ANT, **_MB, "terminated": _ant_mb_terminated},
    reward=_mb_forward_reward(0.005, 1.0, action_scale=1.0),
    deviations=(
        *MB_DEV,
        "observation drops the 84 clipped contact-force dims (cfrc_ext is not filled by MuJoCo "
        ">= 2 and not returned by batched rollout): 27-D instead of 111-D; no contact cost",
        "control cost 0.005·‖a/scale‖² with scale = half the actuator range = 1 (ctrlrange ±1)",
    ),
))
_add_single(MujocoFamily(
    name="Walker2D", **{**_WALKER, **_MB, "frame_skip": 4, "obs_parts": ("qpos[1:]", "qvel")},
    reward=_mb_forward_reward(1e-3, 1.0),
    deviations=(*MB_DEV, *MB_UNCLIPPED, *WALKER_DEV),
))
_add_single(MujocoFamily(
    name="Hopper", asset="hopper.xml", frame_skip=4, obs_parts=("qpos[1:]", "qvel"),
    tracked_point="root_x", obs_motion=_planar_velocity_at(5), terminated=_hopper_terminated,
    reset_noise=("uniform", 0.005, "uniform", 0.005), **_MB,
    reward=_mb_forward_reward(1e-3, 1.0, clip=1000.0),
    deviations=(
        *MB_DEV, *MB_UNCLIPPED,
        "termination bound |·| < 100 on obs[1:] (gym's state_vector()[2:]); the MB-MPO code's "
        "bound on obs[3:] omits obs[1] (torso angle, already |·| < 0.2) and obs[2] (thigh angle, "
        "joint range [−2.62, 0]), so the two agree on any state a simulation reaches",
    ),
))
_add_single(MujocoFamily(
    name="Swimmer", asset="swimmer.xml", frame_skip=4, obs_parts=("qpos[2:]", "qvel"),
    tracked_point="root_x", obs_motion=_planar_velocity_at(3), terminated=None,
    reset_noise=("uniform", 0.1, "uniform", 0.1), **_MB,
    reward=_mb_forward_reward(1e-4, 0.0, clip=1000.0), deviations=MB_DEV,
))

ALIASES = {
    "AntFwdBack": "AntRandDirec",
    "HumanoidFwdBack": "HumanoidRandDirec",
    "WalkerFwdBack": "Walker2DRandDirec",
    "HalfCheetahFwdBack": "HalfCheetahRandDirec",
}


def asset_path(asset: str) -> str:
    """Path of a MuJoCo model file bundled with Gymnasium."""
    import gymnasium

    return os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", asset)


_MODEL_CACHE: dict[tuple[str, float | None], Any] = {}


def load_model(family: MujocoFamily):
    """Compile the family's MjModel (cached; callers copy before modifying).

    Gymnasium's half_cheetah.xml uses ``<compiler settotalmass>``, which MuJoCo ≥ 3.3 deprecates;
    we strip the attribute and apply ``mj_setTotalmass`` ourselves, which is what it did.
    """
    mujoco = import_mujoco()

    key = (family.asset, family.timestep)
    if key not in _MODEL_CACHE:
        with open(asset_path(family.asset)) as f:
            xml = f.read()
        if family.settotalmass is not None:
            xml = xml.replace(f'settotalmass="{family.settotalmass:g}"', "")
        model = mujoco.MjModel.from_xml_string(xml)
        if family.settotalmass is not None:
            mujoco.mj_setTotalmass(model, family.settotalmass)
            mujoco.mj_setConst(model, mujoco.MjData(model))
        if family.timestep is not None:
            model.opt.timestep = family.timestep
        _MODEL_CACHE[key] = model
    return _MODEL_CACHE[key]
