"""Host simulator: every environment of every task stepped by one batched native MuJoCo call.

Per control step :meth:`HostVectorEnv.step` makes one ``mujoco.rollout`` call that advances all
still-running environments by ``frame_skip`` physics steps in C threads (one thread per core),
then reads observations, rewards and terminations with vectorised numpy. Environments that have
terminated are left out of the call (they stop being simulated). RandParams families pass one
model per environment (a per-task copy with the task's physics parameters).

Rewards: the task families reward the displacement of the tracked point over the frame skip
(exact average velocity); the single-task environments (``family.reward_from_observation``) are
rewarded by :meth:`~adaptrl.envs.mujoco_families.MujocoFamily.observation_reward` on
``(obs, action, next_obs)``, the function :func:`adaptrl.envs.obs_reward_fn` gives learned models.

A diverging state (non-finite, or reset by MuJoCo's own instability check, which we detect by the
simulation clock jumping back) ends that episode: it is marked done with zero reward, counted in
:attr:`HostVectorEnv.diverged_total` and logged, and the rest of the batch carries on.

MuJoCo's own warnings (such as its instability message) go to the ``adaptrl.mujoco`` logger, not to
``MUJOCO_LOG.TXT`` in the working directory (:func:`route_mujoco_warnings`).
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import numpy as np

from adaptrl.envs.base import EnvSpec, Tasks, check_tasks, env_action, flat_step_actions, num_tasks
from adaptrl.envs.kinematics import BatchKinematics
from adaptrl.envs.mujoco_families import FAMILIES as MUJOCO_FAMILIES
from adaptrl.envs.mujoco_families import SINGLE_TASK_FAMILIES as MUJOCO_SINGLE_TASK
from adaptrl.envs.mujoco_families import MujocoFamily, load_model
from adaptrl.envs.rendering import import_mujoco
from adaptrl.errors import ConfigError, require_positive_int

log = logging.getLogger(__name__)
mujoco_log = logging.getLogger("adaptrl.mujoco")

QVEL_CLIP = 10.0


def default_num_threads() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _log_mujoco_warning(message: str) -> None:
    """MuJoCo's warning callback (``mju_user_warning``): the message goes to ``adaptrl.mujoco``."""
    mujoco_log.warning("MuJoCo: %s", message.strip())


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to Python ``logging`` instead of ``MUJOCO_LOG.TXT`` in the cwd.

    MuJoCo's default handler prints a warning and appends it to ``MUJOCO_LOG.TXT`` in the working
    directory; a ``mju_user_warning`` callback replaces both
    (https://mujoco.readthedocs.io/en/stable/APIreference/APIglobals.html#mju-user-warning). This
    installs :func:`_log_mujoco_warning` unless some other callback is already set (a user's own is
    kept). Where MuJoCo has the configurable default log handler (``mujoco.MjLogConfig``,
    MuJoCo ≥ 3.10), its file output is also turned off while it still points at the default
    relative ``MUJOCO_LOG.TXT``, so errors and info messages do not create the file either.
    Idempotent; run whenever host MuJoCo is used (:class:`MujocoPhysics`).
    """
    mujoco = import_mujoco()

    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_log_mujoco_warning)
    config_type = getattr(mujoco, "MjLogConfig", None)
    if config_type is not None:
        config = config_type.get()
        if config.logto_file and config.logfile == "MUJOCO_LOG.TXT":
            config.logto_file = False
            config.set()


class MujocoPhysics:
    """Reads a family's observations and tracked point from batched ``qpos``/``qvel``.

    Humanoid's ``cinert``/``cvel`` and centre of mass are MuJoCo's ``mj_kinematics`` +
    ``mj_comPos`` + ``mj_comVel`` quantities, computed by MuJoCo for the whole batch on block models
    that replicate the kinematic tree (:class:`adaptrl.envs.kinematics.BatchKinematics`: one
    batched pass per block of up to 64 environments, no Python loop over environments);
    ``qfrc_actuator`` is linear in the control for motor actuators on hinge joints and is computed
    as ``clip(ctrl) @ G`` with ``G`` measured once from MuJoCo.
    """

    def __init__(self, family: MujocoFamily, model=None):
        route_mujoco_warnings()
        self.family = family
        self.model = load_model(family) if model is None else model
        self.nq, self.nv, self.nu = self.model.nq, self.model.nv, self.model.nu
        self.dt = float(self.model.opt.timestep) * family.frame_skip
        self.needs_kinematics = family.tracked_point == "com_xy" or any(
            p in family.obs_parts for p in ("cinert", "cvel")
        )
        self.kinematics = BatchKinematics(self.model) if self.needs_kinematics else None
        self.actuator_to_qfrc = None
        if "qfrc_actuator" in family.obs_parts:
            self.actuator_to_qfrc = self._measure_actuator_map()
        self.obs_dim = self.observe(
            self.model.qpos0[None], np.zeros((1, self.nv)), np.zeros((1, self.nu))
        )[0].shape[-1]

    def _measure_actuator_map(self) -> np.ndarray:
        mujoco = import_mujoco()

        m = copy.copy(self.model)  # unclamped controls: a unit control must give the gear itself
        m.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CLAMPCTRL
        d = mujoco.MjData(m)
        gmap = np.zeros((self.nu, self.nv))
        for i in range(self.nu):
            mujoco.mj_resetData(m, d)
            d.ctrl[i] = 1.0
            mujoco.mj_forward(m, d)
            gmap[i] = d.qfrc_actuator
        return gmap

    def observe(self, qpos: np.ndarray, qvel: np.ndarray, ctrl: np.ndarray):
        """Observations ``[B, obs_dim]`` and tracked-point positions ``[B, 2]``."""
        kin = self.kinematics(qpos, qvel) if self.needs_kinematics else {}
        return read_observation(np, self.family, qpos, qvel, ctrl, kin, self.actuator_to_qfrc)


def read_observation(xp, family: MujocoFamily, qpos, qvel, ctrl, kinematics: dict,
                     actuator_to_qfrc=None):
    """``(obs [B, obs_dim], tracked point [B, 2])`` of ``family`` from batched ``qpos``/``qvel``,
    the control ``ctrl`` (for ``qfrc_actuator = ctrl @ G``) and, for the parts that need them,
    MuJoCo's ``cinert``/``cvel``/``com`` (``kinematics``). ``xp`` is numpy (host simulator) or
    ``jax.numpy`` (:mod:`adaptrl.envs.mjx`)."""
    parts = []
    for part in family.obs_parts:
        if part == "qpos":
            parts.append(qpos)
        elif part == "qpos[1:]":
            parts.append(qpos[:, 1:])
        elif part == "qpos[2:]":
            parts.append(qpos[:, 2:])
        elif part == "qvel":
            parts.append(qvel)
        elif part == "clip(qvel)":
            parts.append(xp.clip(qvel, -QVEL_CLIP, QVEL_CLIP))
        elif part in ("cinert", "cvel"):
            parts.append(kinematics[part])
        elif part == "qfrc_actuator":
            parts.append(ctrl @ actuator_to_qfrc)
        else:  # pragma: no cover - family definitions are static
            raise AssertionError(part)
    obs = xp.concatenate(parts, axis=-1)
    tracked = family.tracked_point
    if tracked == "root_x":
        point = xp.stack([qpos[:, 0], xp.zeros_like(qpos[:, 0])], axis=-1)
    elif tracked == "root_xy":
        point = qpos[:, :2] * 1.0
    else:
        point = kinematics["com"][:, :2]
    return obs, point


class HostVectorEnv:
    """All environments of a meta-batch, stepped together (the host simulator of docs/architecture.md).

    Layout: ``reset`` takes ``M`` tasks and ``R`` rollouts per task; observations, actions,
    rewards and dones are ``[M, R, ...]`` arrays (numpy in, numpy out).

    Options: ``normalize_actions`` (default: the family's, on for the task families, off for the
    single-task environments), ``horizon`` (default trajectory length ``spec.horizon``; default
    the family's), ``num_threads`` and the family's task options.
    """

    def __reduce__(self):
        """Pickle and deep-copy by family name and options: the copy is a fresh env (call
        ``reset`` on it), so envs can go to worker processes and Ray actors (MuJoCo's batched
        ``Rollout`` and thread pool cannot be pickled)."""
        return _rebuild_host_env, (self.family.name, self._init_args)

    def __init__(
        self,
        family: MujocoFamily,
        *,
        normalize_actions: bool | None = None,
        horizon: int | None = None,
        num_threads: int | None = None,
        **task_options: Any,
    ):
        mujoco = import_mujoco()
        from mujoco import rollout

        self._init_args = dict(normalize_actions=normalize_actions, horizon=horizon, num_threads=num_threads,
                               **task_options)
        self.family = family
        self.options = family.validate_options(task_options)
        self.normalize_actions = (
            family.normalize_actions if normalize_actions is None else bool(normalize_actions)
        )
        horizon = require_positive_int("horizon", family.horizon if horizon is None else horizon)
        self.num_threads = require_positive_int(
            "num_threads", default_num_threads() if num_threads is None else num_threads
        )
        self.physics = MujocoPhysics(family)
        self.model = self.physics.model
        self._state_spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self._nstate = mujoco.mj_stateSize(self.model, self._state_spec)
        template = mujoco.MjData(self.model)
        self._state_template = np.zeros(self._nstate)
        mujoco.mj_getState(self.model, template, self._state_template, self._state_spec)
        self._datas = [mujoco.MjData(self.model) for _ in range(self.num_threads)]
        self._rollout = rollout.Rollout(nthread=self.num_threads)
        low, high = self.model.actuator_ctrlrange.T.copy()
        self.spec = EnvSpec(
            name=family.name,
            obs_dim=self.physics.obs_dim,
            act_dim=self.model.nu,
            action_low=low,
            action_high=high,
            horizon=horizon,
            dt=self.physics.dt,
            backend="host",
            task_description=family.task_description,
            normalize_actions=self.normalize_actions,
            paper=family.paper,
            deviations=family.deviations,
        )
        self.diverged_total = 0
        self._tasks: Tasks | None = None
        self._shape: tuple[int, int] | None = None

    # ----------------------------------------------------------------------------------- tasks
    def sample_tasks(self, n: int, seed: int | np.random.Generator | None = None) -> Tasks:
        """``n`` tasks from the family's distribution, as a dict of arrays with a task axis."""
        n = require_positive_int("number of tasks", n)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self.family.sample_tasks(rng, n, self.options, self.model)

    def _task_models(self, tasks: Tasks) -> list:
        """One model per task with the task's physics parameters (RandParams families)."""
        return task_models(self.model, self.family, tasks)

    # ----------------------------------------------------------------------------------- reset
    def reset(self, tasks: Tasks, rollouts_per_task: int, seed: int | None = None) -> np.ndarray:
        """Start ``rollouts_per_task`` episodes of every task; return observations ``[M, R, obs]``."""
        example = self.sample_tasks(1, 0)
        tasks = check_tasks(tasks, example, self.family.name)
        m = num_tasks(tasks)
        r = require_positive_int("rollouts_per_task", rollouts_per_task)
        b = m * r
        rng = np.random.default_rng(seed)
        self._tasks, self._shape = tasks, (m, r)
        self._task_index = np.repeat(np.arange(m), r)
        if self.family.rand_params is not None:
            per_task = np.fromiter(self._task_models(tasks), dtype=object, count=m)
            self._model_array = per_task[self._task_index]  # one model per environment
            self._models = self._model_array.tolist()
            self._env_tasks = {}
        else:
            self._models = self.model
            self._env_tasks = {k: v[self._task_index] for k, v in tasks.items()}

        nq, nv = self.physics.nq, self.physics.nv
        qpos = self.model.qpos0[None] + _noise(rng, self.family.reset_noise[:2], (b, nq))
        qvel = _noise(rng, self.family.reset_noise[2:], (b, nv))
        self._state = np.tile(self._state_template, (b, 1))
        self._state[:, 1 : 1 + nq] = qpos
        self._state[:, 1 + nq : 1 + nq + nv] = qvel
        self._obs, self._point = self.physics.observe(qpos, qvel, np.zeros((b, self.model.nu)))
        self._active = np.ones(b, dtype=bool)
        return self._obs.reshape(m, r, -1).copy()

    @property
    def active(self) -> np.ndarray:
        """``[M, R]`` bool: episodes still running."""
        return self._active.reshape(self._shape).copy()

    # ------------------------------------------------------------------------------------ step
    def step(self, actions: np.ndarray):
        """Advance every running episode by one control step.

        Args:
            actions: ``[M, R, act_dim]`` policy actions (in the ±10 box when actions are
                normalised); entries of finished episodes are ignored.

        Returns:
            ``(obs, reward, done, info)``: ``[M, R, obs_dim]``, ``[M, R]``, ``[M, R]`` bool, and a
            dict of ``[M, R]`` arrays (reward terms, ``diverged``). Finished episodes keep their
            last observation and get reward 0 and ``done = True``.
        """
        actions = flat_step_actions(self.family.name, self._shape, self.spec.act_dim, actions)
        m, r = self._shape
        b, nq, nv = m * r, self.physics.nq, self.physics.nv
        idx = np.flatnonzero(self._active)
        all_active = idx.size == b
        reward = np.zeros(b)
        done = ~self._active.copy()
        info: dict[str, np.ndarray] = {"diverged": np.zeros(b, dtype=bool)}
        if idx.size == 0:
            return self._obs.reshape(m, r, -1).copy(), reward.reshape(m, r), done.reshape(m, r), {
                k: v.reshape(m, r) for k, v in info.items()
            }
        act = actions if all_active else actions[idx]
        if not np.all(np.isfinite(act)):
            bad = idx[~np.all(np.isfinite(act), axis=-1)]
            raise ConfigError(
                f"{self.family.name}: non-finite actions for environments {bad[:10].tolist()} "
                "(flat index task*R + rollout); the policy produced NaN or inf."
            )
        ctrl = env_action(act, self.spec.action_low, self.spec.action_high, self.normalize_actions)
        state_in = self._state if all_active else self._state[idx]
        models = self._models
        if isinstance(models, list) and not all_active:
            models = self._model_array[idx].tolist()
        out, _ = self._rollout.rollout(
            models, self._datas, state_in, ctrl[:, None, :], nstep=self.family.frame_skip
        )
        new_state = out[:, -1]
        qpos, qvel = new_state[:, 1 : 1 + nq], new_state[:, 1 + nq : 1 + nq + nv]
        expected_time = state_in[:, 0] + self.physics.dt
        diverged = ~np.all(np.isfinite(new_state[:, : 1 + nq + nv]), axis=-1) | (
            np.abs(new_state[:, 0] - expected_time) > 1e-6 * max(1.0, float(expected_time.max()))
        )
        if diverged.any():
            qpos, qvel = qpos.copy(), qvel.copy()
            qpos[diverged] = state_in[diverged, 1 : 1 + nq]
            qvel[diverged] = state_in[diverged, 1 + nq : 1 + nq + nv]
        obs, point = self.physics.observe(qpos, qvel, ctrl)
        env_tasks = self._env_tasks if all_active else {
            k: v[idx] for k, v in self._env_tasks.items()
        }
        if self.family.reward_from_observation:  # the learned models' reward function itself
            prev_obs = self._obs if all_active else self._obs[idx]
            rew, terms = self.family.observation_reward(np, prev_obs, ctrl, obs, env_tasks)
        else:
            prev_point = self._point if all_active else self._point[idx]
            motion = {"velocity": (point - prev_point) / self.physics.dt, "position": point}
            rew, terms = self.family.reward(np, motion, ctrl, env_tasks, self.family.frame_skip)
        term = np.zeros(idx.size, dtype=bool)
        if self.family.terminated is not None:
            term |= np.asarray(self.family.terminated(np, obs))
        if self.family.max_abs_qvel is not None:
            term |= np.any(np.abs(qvel) >= self.family.max_abs_qvel, axis=-1)
        if diverged.any():
            count = int(diverged.sum())
            self.diverged_total += count
            log.warning(
                "%s: %d environment(s) diverged (unstable MuJoCo state); their episodes end here.",
                self.family.name, count,
            )
            rew = np.where(diverged, 0.0, rew)
            term |= diverged

        if all_active:
            self._state = new_state.copy()
            self._obs, self._point = obs, point
        else:
            self._state[idx] = new_state
            self._obs[idx], self._point[idx] = obs, point
        if diverged.any():
            self._state[idx[diverged], 1 : 1 + nq + nv] = state_in[diverged, 1 : 1 + nq + nv]
        reward[idx] = rew
        done[idx] = term
        info["diverged"][idx] = diverged
        for k, v in terms.items():
            info[k] = np.zeros(b)
            info[k][idx] = v
        self._active[idx[term]] = False
        return (
            self._obs.reshape(m, r, -1).copy(),
            reward.reshape(m, r),
            done.reshape(m, r),
            {k: v.reshape(m, r) for k, v in info.items()},
        )

    def rollout_inputs(self) -> tuple[Any, np.ndarray]:
        """``(models, states)`` of the current batch as ``mujoco.rollout`` takes them: the model
        (or one model per environment for RandParams) and the full-physics states ``[M·R, nstate]``."""
        return self._models, self._state.copy()

    def physics_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Current ``(qpos, qvel)``, ``[M, R, nq]`` and ``[M, R, nv]`` (for rendering and tests)."""
        m, r = self._shape
        nq, nv = self.physics.nq, self.physics.nv
        return (
            self._state[:, 1 : 1 + nq].reshape(m, r, nq).copy(),
            self._state[:, 1 + nq : 1 + nq + nv].reshape(m, r, nv).copy(),
        )

    def model_for_task(self, task_index: int):
        """The MjModel that simulates task ``task_index`` (per-task copy for RandParams)."""
        if isinstance(self._models, list):
            return self._models[task_index * self._shape[1]]
        return self.model

    def close(self) -> None:
        """Stop the thread pool."""
        self._rollout.close()


def task_models(model, family: MujocoFamily, tasks: Tasks) -> list:
    """One copy of ``model`` per task with the task's physics parameters (``family.task_keys``)
    and the constants ``mj_setConst`` derives from them (RandParams families)."""
    mujoco = import_mujoco()

    models = []
    for i in range(num_tasks(tasks)):
        m = copy.copy(model)
        for name in family.task_keys:
            getattr(m, name)[:] = tasks[name][i]
        mujoco.mj_setConst(m, mujoco.MjData(m))
        models.append(m)
    return models


def _noise(rng: np.random.Generator, kind_scale: tuple[str, float], shape) -> np.ndarray:
    kind, scale = kind_scale
    if kind == "uniform":
        return rng.uniform(-scale, scale, size=shape)
    return scale * rng.standard_normal(shape)


def _rebuild_host_env(name: str, init_args: dict) -> HostVectorEnv:
    family = MUJOCO_FAMILIES[name] if name in MUJOCO_FAMILIES else MUJOCO_SINGLE_TASK[name]
    return HostVectorEnv(family, **init_args)
