"""MJX backend: the MuJoCo task families simulated by MuJoCo's JAX implementation (``mujoco-mjx``).

``make(name, backend="mjx")`` (``--set env_options.backend=mjx`` in a run) gives the same family —
the same model file, frame skip, observation, reward, termination, reset noise, task distribution
and action handling as the native simulator of :mod:`adaptrl.envs.host` — as a pure
:class:`~adaptrl.envs.simulator.DeviceSimulator` (:class:`MjxSimulator`). The sampler then runs a
whole batch of rollouts as one ``lax.scan`` on the device (:func:`adaptrl.sampling.device_rollout`),
so a meta-iteration's sampling, adaptation and outer step are device programs with no host round
trip per step. On CPU it is much slower than native MuJoCo (use it to check a configuration before
moving to an accelerator); the point of the backend is a GPU or TPU (``pip install 'adaptrl[gpu]'``).

How the pieces map (docs/environments.md, "The MJX backend"):

* **Physics.** ``frame_skip`` calls of ``mjx.step`` per control step on ``mjx.put_model`` of the
  family's model. Start states: ``qpos0`` plus the family's reset noise, drawn from the JAX key.
* **Observation, reward, termination.** The very functions the native simulator uses
  (:func:`adaptrl.envs.host.read_observation`, the family's ``reward``/``observation_reward`` and
  ``terminated``), called with ``xp = jax.numpy``.
* **RandParams tasks** (HopperRandParams, Walker2DRandParams). A task's masses, inertias,
  dampings and frictions replace the model's fields inside the vmapped step (batched model fields).
  The constants MuJoCo derives from them (``mj_setConst``: ``body_invweight0``, ``dof_invweight0``,
  ``body_subtreemass``, which set the constraints' regularisation) are computed per task on the
  host by MuJoCo itself, once per batch (:meth:`MjxSimulator.prepare_tasks`), exactly as the native
  simulator's per-task models.
* **Divergence.** A state that becomes non-finite or exceeds MuJoCo's ``mjMAXVAL`` (1e10) in
  ``qpos``, ``qvel`` or ``qacc`` ends its episode with reward 0 and keeps its last good state, as
  the native simulator does (native MuJoCo resets such a state itself; MJX does not).

Differences from the native simulator, all numerical: MJX computes in float32 (native: float64),
and its collision and constraint code is a separate implementation of the same model. Over short
horizons the two agree to the tolerances measured in ``tests/test_mjx.py`` and recorded in
docs/environments.md. The Humanoid families are not available: their model uses MuJoCo's PGS
solver, which MJX does not implement.
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.envs.base import EnvSpec, Tasks, check_tasks, env_action, num_tasks, running_step_actions
from adaptrl.envs.host import HostVectorEnv, MujocoPhysics, read_observation, task_models
from adaptrl.envs.mujoco_families import ALIASES, MujocoFamily
from adaptrl.envs.mujoco_families import FAMILIES as MUJOCO_FAMILIES
from adaptrl.envs.mujoco_families import SINGLE_TASK_FAMILIES as MUJOCO_SINGLE_TASK
from adaptrl.envs.rendering import import_mujoco
from adaptrl.errors import ConfigError, require_positive_int

MAXVAL = 1e10
"""MuJoCo's ``mjMAXVAL``: larger ``qpos``/``qvel``/``qacc`` entries count as a diverged state."""

DERIVED_CONSTANTS = ("body_invweight0", "dof_invweight0", "body_subtreemass")
"""The fields ``mj_setConst`` derives from a RandParams task's parameters that MJX's step reads."""

BACKENDS = ("native", "mjx")
"""Values of the ``backend`` option of the MuJoCo families."""


def import_mjx():
    """``mujoco.mjx``, or one :class:`ConfigError` saying how to install it. MJX's import prints
    a line about the optional Warp backend when ``warp`` is missing; that line is swallowed."""
    import_mujoco()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from mujoco import mjx
    except ImportError as e:
        raise ConfigError(f"backend=mjx needs the mujoco-mjx package ({e}); install it with "
                          "pip install 'adaptrl[gpu]' (or pip install mujoco-mjx), or use the native "
                          "backend (the default).") from None
    return mjx


class MjxState(NamedTuple):
    """One MJX environment: the physics, its observation and tracked point, and its task entries
    (with a RandParams task's derived constants)."""

    data: Any
    obs: jax.Array
    point: jax.Array
    task: dict
    diverged: jax.Array
    """Whether the last step diverged (its physics was rolled back)."""


@dataclass(frozen=True, eq=False)
class MjxSimulator:
    """A MuJoCo family as a pure JAX simulator (module docstring).

    ``sim_params`` (:meth:`default_params`) holds the ``mjx.Model`` and the actuator-to-force map,
    so the model's arrays are arguments of the compiled rollout, not constants baked into it."""

    family: MujocoFamily
    spec: EnvSpec
    physics: MujocoPhysics

    def default_params(self) -> dict:
        return self._params

    @functools.cached_property
    def _params(self) -> dict:
        """Put on the device once (the sampler asks for them at every batch)."""
        mjx = import_mjx()
        params = {"model": mjx.put_model(self.physics.model)}
        if self.physics.actuator_to_qfrc is not None:
            params["qfrc_map"] = jnp.asarray(self.physics.actuator_to_qfrc, dtype=jnp.float32)
        return params

    # --------------------------------------------------------------------------------- tasks
    def prepare_tasks(self, tasks: Tasks) -> dict:
        """Task entries as JAX arrays; a RandParams batch also gets the constants MuJoCo derives
        from each task's parameters (``mj_setConst`` on a per-task model copy, as the native
        simulator's models)."""
        out = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in tasks.items()}
        if self.family.rand_params is None:
            return out
        models = task_models(self.physics.model, self.family, tasks)
        out.update({name: jnp.asarray(np.stack([getattr(m, name) for m in models]), dtype=jnp.float32)
                    for name in DERIVED_CONSTANTS})
        return out

    def task_model(self, sim_params: dict, task: dict):
        """The ``mjx.Model`` of one environment: the family's, with a RandParams task's fields."""
        model = sim_params["model"]
        if self.family.rand_params is None:
            return model
        fields = (*self.family.task_keys, *DERIVED_CONSTANTS)
        return model.replace(**{name: task[name].astype(getattr(model, name).dtype) for name in fields})

    # --------------------------------------------------------------------------------- reset
    def reset(self, sim_params: dict, key: jax.Array, task: dict,
              start_obs: jax.Array | None = None) -> MjxState:
        """A start state: ``qpos0`` plus the family's reset noise (``start_obs`` is not supported:
        an observation does not hold the whole physics state)."""
        if start_obs is not None:
            raise ConfigError(f"{self.family.name} (backend=mjx) cannot start from an observation: "
                              "the observation leaves out part of the physics state (the root "
                              "position); start from qpos and qvel with reset_to.")
        nq, nv = self.physics.nq, self.physics.nv
        kq, kv = jax.random.split(key)
        qpos = jnp.asarray(self.physics.model.qpos0) + _jax_noise(kq, self.family.reset_noise[:2], (nq,))
        qvel = _jax_noise(kv, self.family.reset_noise[2:], (nv,))
        return self.reset_to(sim_params, qpos, qvel, task)

    def reset_to(self, sim_params: dict, qpos: jax.Array, qvel: jax.Array, task: dict) -> MjxState:
        """The state with the given ``qpos`` and ``qvel`` (at rest otherwise), for one environment."""
        mjx = import_mjx()
        model = self.task_model(sim_params, task)
        data = mjx.make_data(model).replace(qpos=jnp.asarray(qpos, jnp.float32),
                                            qvel=jnp.asarray(qvel, jnp.float32))
        ctrl = jnp.zeros(self.physics.nu, jnp.float32)
        obs, point = self._read(sim_params, data.qpos, data.qvel, ctrl)
        return MjxState(data, obs, point, task, jnp.zeros((), dtype=bool))

    def observe(self, state: MjxState) -> jax.Array:
        return state.obs

    # ---------------------------------------------------------------------------------- step
    def step(self, sim_params: dict, state: MjxState, action: jax.Array, key: jax.Array):
        """``frame_skip`` MJX steps with the rescaled, clipped ``action``; ``(state, reward, done)``."""
        mjx = import_mjx()
        family, physics = self.family, self.physics
        low, high = jnp.asarray(self.spec.action_low), jnp.asarray(self.spec.action_high)
        ctrl = env_action(action, low, high, self.spec.normalize_actions, xp=jnp).astype(jnp.float32)
        model = self.task_model(sim_params, state.task)
        data = jax.lax.fori_loop(0, family.frame_skip, lambda _, d: mjx.step(model, d),
                                 state.data.replace(ctrl=ctrl))
        diverged = ~(_sane(data.qpos) & _sane(data.qvel) & _sane(data.qacc))
        data = jax.tree_util.tree_map(lambda new, old: jnp.where(diverged, old, new), data, state.data)
        obs, point = self._read(sim_params, data.qpos, data.qvel, ctrl)
        task = state.task
        if family.reward_from_observation:
            reward, _ = family.observation_reward(jnp, state.obs[None], ctrl[None], obs[None], task)
        else:
            motion = {"velocity": (point - state.point)[None] / physics.dt, "position": point[None]}
            reward, _ = family.reward(jnp, motion, ctrl[None], task, family.frame_skip)
        done = jnp.zeros((1,), dtype=bool)
        if family.terminated is not None:
            done = done | family.terminated(jnp, obs[None])
        if family.max_abs_qvel is not None:
            done = done | jnp.any(jnp.abs(data.qvel) >= family.max_abs_qvel)
        reward = jnp.where(diverged, 0.0, reward[0])
        return MjxState(data, obs, point, task, diverged), reward, done[0] | diverged

    def _read(self, sim_params: dict, qpos, qvel, ctrl):
        obs, point = read_observation(jnp, self.family, qpos[None], qvel[None], ctrl[None], {},
                                      sim_params.get("qfrc_map"))
        return obs[0], point[0]


def _sane(x: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(x) & (jnp.abs(x) <= MAXVAL))


def _jax_noise(key: jax.Array, kind_scale: tuple[str, float], shape) -> jax.Array:
    """The reset noise of :func:`adaptrl.envs.host._noise`, drawn from a JAX key."""
    kind, scale = kind_scale
    if kind == "uniform":
        return jax.random.uniform(key, shape, minval=-scale, maxval=scale)
    return scale * jax.random.normal(key, shape)


def check_mjx_family(family: MujocoFamily, model) -> None:
    """One :class:`ConfigError` for a family MJX cannot simulate."""
    mujoco = import_mujoco()
    if model.opt.solver == mujoco.mjtSolver.mjSOL_PGS:
        names = ", ".join(sorted(n for n, f in {**MUJOCO_FAMILIES, **MUJOCO_SINGLE_TASK}.items()
                                 if f.asset == family.asset))
        raise ConfigError(f"{family.name} cannot use backend=mjx: its model uses MuJoCo's PGS solver, "
                          f"which MJX does not implement (this holds for {names}). Use the native "
                          "backend (the default).")


class MjxVectorEnv:
    """An MJX family behind the vector protocol (numpy ``reset``/``step`` of ``[M, R]``
    environments, as :class:`adaptrl.envs.host.HostVectorEnv`); the sampler uses
    :attr:`simulator` directly and runs whole rollouts on the device.

    Options: ``normalize_actions``, ``horizon`` and the family's task options, as the native
    simulator; ``num_threads`` is accepted and ignored (the device decides its parallelism)."""

    def __reduce__(self):
        """Pickle by family name and options (a fresh env; compiled functions do not pickle)."""
        return _rebuild_mjx_env, (self.family.name, self._init_args)

    def __init__(self, family: MujocoFamily, *, normalize_actions: bool | None = None,
                 horizon: int | None = None, num_threads: int | None = None, **task_options: Any):
        import_mjx()
        self._init_args = dict(normalize_actions=normalize_actions, horizon=horizon, **task_options)
        self.family = family
        self.options = family.validate_options(task_options)
        self.normalize_actions = (
            family.normalize_actions if normalize_actions is None else bool(normalize_actions)
        )
        horizon = require_positive_int("horizon", family.horizon if horizon is None else horizon)
        self.physics = MujocoPhysics(family)
        self.model = self.physics.model
        check_mjx_family(family, self.model)
        low, high = self.model.actuator_ctrlrange.T.copy()
        self.spec = EnvSpec(
            name=family.name, obs_dim=self.physics.obs_dim, act_dim=self.model.nu,
            action_low=low, action_high=high, horizon=horizon, dt=self.physics.dt, backend="mjx",
            task_description=family.task_description, normalize_actions=self.normalize_actions,
            paper=family.paper,
            deviations=(*family.deviations, "simulated by MJX in float32 (docs/environments.md, "
                                             "'The MJX backend')"),
        )
        self.simulator = MjxSimulator(family, self.spec, self.physics)
        sim = self.simulator
        self._reset = jax.jit(jax.vmap(sim.reset, in_axes=(None, 0, 0)))
        self._reset_to = jax.jit(jax.vmap(sim.reset_to, in_axes=(None, 0, 0, 0)))
        self._step = jax.jit(jax.vmap(sim.step, in_axes=(None, 0, 0, None)))
        self.diverged_total = 0
        self._shape: tuple[int, int] | None = None
        self._active: np.ndarray | None = None

    def _sim_params(self) -> dict:
        return self.simulator.default_params()

    def sample_tasks(self, n: int, seed: int | np.random.Generator | None = None) -> Tasks:
        """``n`` tasks from the family's distribution (the native simulator's, draw for draw)."""
        n = require_positive_int("number of tasks", n)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self.family.sample_tasks(rng, n, self.options, self.model)

    def _env_tasks(self, tasks: Tasks, rollouts_per_task: int) -> dict:
        tasks = check_tasks(tasks, self.sample_tasks(1, 0), self.family.name)
        m, r = num_tasks(tasks), require_positive_int("rollouts_per_task", rollouts_per_task)
        self._shape = (m, r)
        prepared = self.simulator.prepare_tasks(tasks)
        return jax.tree_util.tree_map(lambda x: jnp.repeat(x, r, axis=0), prepared)

    def reset(self, tasks: Tasks, rollouts_per_task: int, seed: int | None = None) -> np.ndarray:
        """Start ``rollouts_per_task`` episodes of every task; observations ``[M, R, obs]``."""
        env_tasks = self._env_tasks(tasks, rollouts_per_task)
        m, r = self._shape
        if seed is None:
            seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        keys = jax.random.split(jax.random.PRNGKey(seed), m * r)
        return self._start(self._reset(self._sim_params(), keys, env_tasks))

    def reset_to(self, tasks: Tasks, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Start every environment from given ``qpos`` ``[M, R, nq]`` and ``qvel`` ``[M, R, nv]``
        (e.g. a native simulator's start states, :meth:`HostVectorEnv.physics_state`)."""
        qpos, qvel = np.asarray(qpos), np.asarray(qvel)
        env_tasks = self._env_tasks(tasks, qpos.shape[1])
        m, r = self._shape
        return self._start(self._reset_to(self._sim_params(), jnp.asarray(qpos.reshape(m * r, -1)),
                                          jnp.asarray(qvel.reshape(m * r, -1)), env_tasks))

    def _start(self, states: MjxState) -> np.ndarray:
        m, r = self._shape
        self._states = states
        self._active = np.ones(m * r, dtype=bool)
        return np.asarray(states.obs, dtype=np.float64).reshape(m, r, -1)

    @property
    def active(self) -> np.ndarray:
        """``[M, R]`` bool: episodes still running."""
        return self._active.reshape(self._shape).copy()

    def step(self, actions: np.ndarray):
        """Vector-protocol step (see :meth:`adaptrl.envs.host.HostVectorEnv.step`)."""
        flat = running_step_actions(self.family.name, self._shape, self.spec.act_dim, actions, self._active)
        m, r = self._shape
        states, reward, done = self._step(self._sim_params(), self._states, jnp.asarray(flat),
                                          jax.random.PRNGKey(0))
        was_active = self._active.copy()
        keep = jnp.asarray(was_active)
        self._states = jax.tree_util.tree_map(
            lambda new, old: jnp.where(keep.reshape(-1, *([1] * (new.ndim - 1))), new, old), states,
            self._states)
        diverged = was_active & np.asarray(states.diverged)
        self.diverged_total += int(diverged.sum())
        reward = np.where(was_active, np.asarray(reward, dtype=np.float64), 0.0)
        done = np.asarray(done) | ~was_active
        self._active = was_active & ~done
        obs = np.asarray(self._states.obs, dtype=np.float64).reshape(m, r, -1)
        info = {"diverged": diverged.reshape(m, r)}
        return obs, reward.reshape(m, r), done.reshape(m, r), info

    def physics_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Current ``(qpos, qvel)``, ``[M, R, nq]`` and ``[M, R, nv]``."""
        m, r = self._shape
        data = self._states.data
        return (np.asarray(data.qpos, np.float64).reshape(m, r, -1),
                np.asarray(data.qvel, np.float64).reshape(m, r, -1))

    def close(self) -> None:
        """Nothing to release."""


def _rebuild_mjx_env(name: str, init_args: dict) -> MjxVectorEnv:
    family = MUJOCO_FAMILIES[name] if name in MUJOCO_FAMILIES else MUJOCO_SINGLE_TASK[name]
    return MjxVectorEnv(family, **init_args)


def native_agreement(name: str, *, steps: int = 10, tasks: int = 2, rollouts: int = 2, seed: int = 0,
                     **options: Any) -> dict[str, float]:
    """How closely the MJX simulator of family ``name`` follows the native one: both start from
    the native simulator's start states and take the same uniformly random policy actions for
    ``steps`` control steps (episodes that end stop counting). Returns the largest relative
    differences ``max|x_mjx − x_native| / (1 + max|x_native|)`` of the observations
    (``obs_rel``) and rewards (``reward_rel``) over the steps, and ``done_mismatches``, the number
    of environment-steps whose termination differs."""
    name = ALIASES.get(name, name)
    if name not in MUJOCO_FAMILIES and name not in MUJOCO_SINGLE_TASK:
        raise ConfigError(f"{name} is not a MuJoCo family; valid: "
                          f"{', '.join([*MUJOCO_FAMILIES, *MUJOCO_SINGLE_TASK])}.")
    family = MUJOCO_FAMILIES.get(name) or MUJOCO_SINGLE_TASK[name]
    native = HostVectorEnv(family, num_threads=1, **options)
    device = MjxVectorEnv(family, **options)
    task_batch = native.sample_tasks(tasks, seed)
    native.reset(task_batch, rollouts, seed=seed)
    device.reset_to(task_batch, *native.physics_state())
    rng = np.random.default_rng(seed)
    low, high = native.spec.policy_action_low, native.spec.policy_action_high
    worst = {"obs_rel": 0.0, "reward_rel": 0.0, "done_mismatches": 0}
    for _ in range(steps):
        running = native.active
        actions = rng.uniform(low, high, size=(tasks, rollouts, native.spec.act_dim))
        obs_n, rew_n, done_n, _ = native.step(actions)
        obs_d, rew_d, done_d, _ = device.step(actions)
        if not running.any():
            break
        worst["obs_rel"] = max(worst["obs_rel"], float(
            np.abs(obs_d - obs_n)[running].max() / (1 + np.abs(obs_n[running]).max())))
        worst["reward_rel"] = max(worst["reward_rel"], float(
            np.abs(rew_d - rew_n)[running].max() / (1 + np.abs(rew_n[running]).max())))
        worst["done_mismatches"] += int((done_d != done_n)[running].sum())
    native.close()
    return worst
