"""Gymnasium wrapper: one environment of a task family, registered as ``adaptrl/<Name>-v0``.

It runs on the same simulator code as the vectorised environments (a batch of one), so rewards,
observations and terminations are identical. Meta-RL methods switch tasks with
``env.unwrapped.sample_tasks(n)`` (a list of task dicts, drawn from the env's ``np_random``),
``set_task(task)`` and ``get_task()`` (single-task environments: the one task
``{"task_id": 0}``). The episode length limit is the family's paper horizon
(``max_episode_steps``), applied by Gymnasium's ``TimeLimit``; to change it use Gymnasium's own
option, ``gymnasium.make("adaptrl/HalfCheetah-v0", max_episode_steps=1000)``. The vector env's
``horizon`` option is not accepted here, because the ``TimeLimit`` that Gymnasium wraps around the
env would still end episodes at the registered length.

``import adaptrl`` registers the ids; without it use ``gymnasium.make("adaptrl:adaptrl/<Name>-v0")``.

Rendering (``render_mode="rgb_array"``, ``width``, ``height``): point and 1-D families are drawn
without OpenGL; MuJoCo families render with ``mujoco.Renderer`` (:mod:`adaptrl.envs.rendering`)
through MuJoCo's free camera, or with ``camera="track"`` a camera that follows the robot (a model
camera's name or id is also accepted).

Worker processes: the JAX families (point, 1-D) cannot be built in a process *forked* from one in
which JAX has run (XLA's threads do not survive ``fork``; the child would hang). There the
constructor raises one clear error instead; pass ``vector_kwargs={"context": "spawn"}`` to
``gymnasium.make_vec(..., vectorization_mode="async")``. Envs pickle (the vector env is rebuilt from
its family and options), so ``spawn`` and Ray workers work.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import gymnasium
import numpy as np

from adaptrl.envs import (
    DeviceVectorEnv,
    canonical_name,
    family_backend,
    family_horizon,
    family_names,
    make,
)
from adaptrl.envs.base import Task, check_tasks, stack_tasks, unstack_tasks
from adaptrl.envs.mujoco_families import ALIASES
from adaptrl.envs.rendering import add_goal_marker, make_renderer
from adaptrl.errors import ConfigError

_IMPORT_PID = os.getpid()


def jax_has_run() -> bool:
    """Whether this process (or the parent it was forked from) has initialised a JAX backend."""
    try:
        from jax._src import xla_bridge  # private: JAX exposes no public query for this

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions: assume it has
        return True


def refuse_forked_jax(name: str) -> None:
    """One clear error instead of a hang: a JAX family in a child forked after JAX ran."""
    if os.getpid() != _IMPORT_PID and jax_has_run():
        raise ConfigError(
            f"adaptrl/{name} runs in JAX, which cannot be used in a process forked after JAX ran in "
            "its parent (it would hang). Start workers with spawn, e.g. gymnasium.make_vec(..., "
            "vectorization_mode='async', vector_kwargs={'context': 'spawn'})."
        )


class MetaEnv(gymnasium.Env):
    """One environment of task family ``name`` (see the module docstring)."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, name: str, render_mode: str | None = None, width: int = 320,
                 height: int = 240, camera: int | str | None = None, **options: Any):
        name = canonical_name(name)
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        if camera is not None and not isinstance(camera, int | str):
            raise ConfigError(f"camera must be None, {TRACK_CAMERA!r}, a model camera's name or id, "
                              f"got {camera!r}.")
        if "horizon" in options:
            raise ConfigError(
                f"gymnasium.make('adaptrl/{name}-v0') takes the episode length as Gymnasium's "
                f"max_episode_steps={options['horizon']!r} (its TimeLimit ends the episodes), not "
                "as horizon; horizon is an option of adaptrl.envs.make."
            )
        if family_backend(name) == "host":
            options.setdefault("num_threads", 1)
        else:
            refuse_forked_jax(name)
        self._venv = make(name, **options)
        spec = self._venv.spec
        self.name, self.render_mode, self.camera = name, render_mode, camera
        self._width, self._height = width, height
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (spec.obs_dim,), np.float64)
        self.action_space = gymnasium.spaces.Box(
            spec.policy_action_low.astype(np.float32), spec.policy_action_high.astype(np.float32),
            dtype=np.float32,
        )
        self.metadata = {**self.metadata, "render_fps": max(1, round(1.0 / spec.dt))}
        self._task = unstack_tasks(self._venv.sample_tasks(1, 0))[0]
        self._obs: np.ndarray | None = None
        self._renderer = None

    def __getstate__(self) -> dict:
        """Pickling keeps everything but the renderer (rebuilt on the next ``render``); the vector
        env inside is rebuilt fresh, so a copy must be ``reset`` before stepping."""
        state = dict(self.__dict__)
        state["_renderer"] = None
        state.pop("_render_data", None)
        state["_obs"] = None
        return state

    # ----------------------------------------------------------------------------- meta API
    def sample_tasks(self, n: int) -> list[Task]:
        """``n`` tasks drawn with this env's ``np_random`` (seed it through ``reset(seed=...)``)."""
        return unstack_tasks(self._venv.sample_tasks(n, self.np_random))

    def set_task(self, task: Task) -> None:
        """Use ``task`` from the next ``reset`` on."""
        example = self._venv.sample_tasks(1, 0)
        stacked = stack_tasks([task])
        check_tasks(stacked, example, self.name)
        self._task = unstack_tasks(stacked)[0]

    def get_task(self) -> Task:
        """The current task."""
        return {k: np.array(v) for k, v in self._task.items()}

    # ------------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        env_seed = int(self.np_random.integers(0, 2**31 - 1))
        obs = self._venv.reset(stack_tasks([self._task]), 1, seed=env_seed)
        self._obs = np.asarray(obs[0, 0], np.float64)
        return self._obs.copy(), {"task": self.get_task()}

    def step(self, action):
        if self._obs is None:
            raise ConfigError("call reset() before step().")
        action = np.asarray(action, dtype=np.float64).reshape(1, 1, -1)
        obs, reward, done, info = self._venv.step(action)
        self._obs = np.asarray(obs[0, 0], np.float64)
        step_info = {k: v[0, 0].item() for k, v in info.items()}
        return self._obs.copy(), float(reward[0, 0]), bool(done[0, 0]), False, step_info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if isinstance(self._venv, DeviceVectorEnv):
            return _draw_point(self._obs, self._task, self._width, self._height)
        return self._render_mujoco()

    def _render_mujoco(self) -> np.ndarray:
        """A MuJoCo frame; a goal task's goal is drawn as a green disc (not part of the physics).
        A failed OpenGL context raises one ConfigError, kept and raised again on later calls."""
        import mujoco

        model = self._venv.model_for_task(0)
        if self._renderer is None:
            self._renderer = make_renderer(model, self._height, self._width)
            self._render_data = mujoco.MjData(model)
        qpos, qvel = self._venv.physics_state()
        self._render_data.qpos[:] = qpos[0, 0]
        self._render_data.qvel[:] = qvel[0, 0]
        mujoco.mj_forward(model, self._render_data)
        if self.camera is None:
            self._renderer.update_scene(self._render_data)
        else:
            self._renderer.update_scene(self._render_data, camera=_camera(model, self.camera))
        if "goal" in self._task:
            add_goal_marker(self._renderer.scene, self._task["goal"])
        return self._renderer.render().copy()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._venv.close()


TRACK_CAMERA = "track"
"""``MetaEnv(..., camera="track")``: a camera that follows the robot's root body from the side."""

TRACK_DISTANCE, TRACK_ELEVATION = 4.0, -20.0


def _camera(model, camera: int | str):
    """What ``mujoco.Renderer.update_scene`` takes for ``camera``: :data:`TRACK_CAMERA` → a
    tracking ``MjvCamera`` on body 1 (the root), :data:`TRACK_DISTANCE` away, seen from the model's
    default azimuth (the side, for the planar robots) and :data:`TRACK_ELEVATION` degrees; a model
    camera's name or id as it is."""
    import mujoco

    if camera != TRACK_CAMERA:
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        if camera not in names and camera not in range(-1, model.ncam):
            raise ConfigError(f"camera {camera!r} is not {TRACK_CAMERA!r}, -1 (the free camera) or one of "
                              f"this model's cameras {names} (or ids 0..{model.ncam - 1}).")
        return camera
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    cam.trackbodyid = 1 if model.nbody > 1 else 0
    cam.distance, cam.elevation, cam.azimuth = TRACK_DISTANCE, TRACK_ELEVATION, model.vis.global_.azimuth
    return cam


def _draw_point(obs: np.ndarray | None, task: Task, width: int, height: int) -> np.ndarray:
    """A top-down picture of a point env: grey background, goal in green, agent in red."""
    img = np.full((height, width, 3), 235, np.uint8)
    scale = min(width, height) / 6.0

    def pixel(xy):
        x = np.atleast_1d(np.asarray(xy, float))
        y = x[1] if x.size > 1 else 0.0
        return int(height / 2 - y * scale), int(width / 2 + x[0] * scale)

    def dot(xy, colour, radius=4):
        r, c = pixel(xy)
        img[max(r - radius, 0):r + radius, max(c - radius, 0):c + radius] = colour

    goal = task.get("goal")
    if goal is not None:
        dot(goal, (40, 160, 40), 6)
    if obs is not None:
        dot(obs[:2], (200, 40, 40))
    return img


def register_envs() -> None:
    """Register every family and alias as ``adaptrl/<Name>-v0`` (idempotent)."""
    horizons = {n: family_horizon(n) for n in family_names()}
    for name in [*horizons, *ALIASES]:
        env_id = f"adaptrl/{name}-v0"
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id,
            entry_point="adaptrl.envs.gym_env:MetaEnv",
            kwargs={"name": name},
            max_episode_steps=horizons[ALIASES.get(name, name)],
        )
