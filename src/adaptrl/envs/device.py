"""Device simulator: the point-mass and 1-D task families in pure JAX.

Their state *is* the observation, so reward and termination are exact functions of
(obs, action, next_obs). A family is a pure simulator (:class:`FamilySimulator`, the protocol of
:mod:`adaptrl.envs.simulator`): ``reset(sim_params, key, task)`` and ``step(sim_params, state, action, key)``,
which the sampler vmaps over tasks and rollouts and runs for the whole horizon inside one
``lax.scan`` (:func:`adaptrl.sampling.device_rollout`). :class:`DeviceVectorEnv` also offers the
host protocol (numpy ``reset``/``step``) so that every family can be driven the same way
(Gymnasium wrapper, tests).

Families (ProMP §7.3–7.4, App. D.2; TMAML §5.3; values of the original ProMP code as documented in
docs/environments.md, "Point and 1-D families"):

* ``PointCorners`` (ProMP Fig. 5, ``MetaPointEnvCorner``): s ∈ R², s' = s + clip(a, ±0.2),
  goal one of the corners (±2, ±2); sparse reward (default, radius 0.5): 0 while ‖s'‖₁ < 0.5,
  otherwise ‖s − g‖ − ‖s' − g‖ (progress towards the goal) when the goal is the corner nearest
  to s', else 0. ``reward_type="dense"``: −‖s' − g‖; ``"dense_squared"``: −‖s' − g‖².
  Reset s ~ U(−0.2, 0.2)², horizon 100, never terminates.
* ``PointMomentum`` (``MetaPointEnvMomentum``): obs (x, y, vx, vy); v' = v + clip(a, ±0.1),
  s' = s + v'; sparse reward (radius 2): max(2 − ‖s' − g‖, 0); same corners; reset s ~ U(±0.2)²,
  v ~ U(±0.1)²; horizon 200.
* ``Point1D`` (ProMP Fig. 6, the original's ``point_1d_hand_grads.py``): s₀ ~ U(−2, 2),
  s' = clip(a, ±2), reward exp(−0.1·(s' − g)²), goal ∈ {−1, +1}, horizon 5. Meant for the
  two-parameter policy a ~ N(θ₀·s² + θ₁, 1) (:class:`adaptrl.policies.QuadraticFeaturePolicy`),
  actions not normalised.
* ``Point1DRandGoal`` (TMAML §5.3): as ``Point1D`` with goal ~ U(−1, 1). TMAML does not state
  reward or horizon; we use Point1D's (documented choice, docs/environments.md).
* ``Point2DNavigation`` (MAML, Finn et al. 2017 §5.3; the original MAML code's
  ``PointEnvRandGoal``, learn2learn's ``Particles2D``): s ∈ R², s₀ = 0, s' = s + clip(a, ±0.1),
  reward −‖s' − g‖, goal g ~ U[−0.5, 0.5]², horizon 100, actions not normalised; never terminates
  (the original ends the episode within 0.01 of the goal; docs/environments.md).

Single-task environment (:data:`SINGLE_TASK_FAMILIES`; docs/environments.md, "Single-task
environments for model-based RL"):

* ``Point2D`` (Clavera thesis §5.5.4, MDP in App. B.3): S = R², A = [−0.1, 0.1]², s₀ ~ U[−2, 2]²,
  s' = s + clip(a), reward r(s, a) = −‖s‖² (the state the action is taken in, as App. B.3 writes
  it), horizon 30, never terminates, actions not normalised; one task (``{"task_id": 0}``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.envs.base import (
    EnvSpec,
    Tasks,
    check_tasks,
    env_action,
    merge_task_options,
    num_tasks,
    running_step_actions,
    signs,
)
from adaptrl.envs.mujoco_families import SINGLE_TASK_KEY, single_tasks
from adaptrl.errors import ConfigError, require_positive_int

CORNERS = np.array([[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]])


@dataclass(frozen=True)
class DeviceFamily:
    """A task family simulated in JAX; state = observation."""

    name: str
    obs_dim: int
    act_dim: int
    action_bound: float
    horizon: int
    init: Callable[[jax.Array, dict], jax.Array]
    dynamics: Callable[[jax.Array, jax.Array], jax.Array]
    reward: Callable[..., jax.Array]
    sample_task_fn: Callable[[np.random.Generator, int, dict], Tasks]
    task_keys: tuple[str, ...]
    task_description: str
    normalize_actions: bool
    task_options: dict[str, Any] = field(default_factory=dict)
    terminated: Callable[..., jax.Array] | None = None
    paper: str = ""
    deviations: tuple[str, ...] = ()

    @property
    def single_task(self) -> bool:
        """One MDP: every task is the trivial ``{"task_id": 0}``."""
        return self.task_keys == (SINGLE_TASK_KEY,)

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Merge user task options with the defaults; reject unknown or malformed ones."""
        merged = merge_task_options(self.name, self.task_options, options,
                                    "normalize_actions and horizon")
        if "reward_type" in merged and merged["reward_type"] not in REWARD_TYPES:
            raise ConfigError(
                f"{self.name}: reward_type must be one of {', '.join(REWARD_TYPES)}, "
                f"got {merged['reward_type']!r}."
            )
        return merged


REWARD_TYPES = ("sparse", "dense", "dense_squared")


def _corner_tasks(rng: np.random.Generator, n: int, options: dict) -> Tasks:
    return {"goal": CORNERS[rng.integers(0, 4, size=n)]}


def corners_reward(obs, action, next_obs, task, *, reward_type="sparse", radius=0.5):
    """PointCorners reward (module docstring); ``obs``/``next_obs`` are positions ``[..., 2]``."""
    goal = task["goal"]
    dist_next = jnp.linalg.norm(next_obs - goal, axis=-1)
    if reward_type == "dense":
        return -dist_next
    if reward_type == "dense_squared":
        return -(dist_next**2)
    corner_dists = jnp.linalg.norm(next_obs[..., None, :] - CORNERS, axis=-1)
    nearest = jnp.asarray(CORNERS)[jnp.argmin(corner_dists, axis=-1)]
    goal_is_nearest = jnp.all(nearest == goal, axis=-1)
    progress = jnp.linalg.norm(obs - goal, axis=-1) - dist_next
    outside = jnp.sum(jnp.abs(next_obs), axis=-1) >= radius
    return jnp.where(outside & goal_is_nearest, progress, 0.0)


def momentum_reward(obs, action, next_obs, task, *, reward_type="sparse", radius=2.0):
    """PointMomentum reward: sparse ``max(radius − d, 0)``, dense ``−d``, dense_squared ``−d²``,
    with ``d = ‖s' − g‖``."""
    d = jnp.linalg.norm(next_obs[..., :2] - task["goal"], axis=-1)
    if reward_type == "dense":
        return -d
    if reward_type == "dense_squared":
        return -(d**2)
    return jnp.maximum(radius - d, 0.0)


def point1d_reward(obs, action, next_obs, task):
    """1-D reward ``exp(−0.1·(s' − g)²)`` (s' is the clipped action)."""
    return jnp.exp(-0.1 * (next_obs[..., 0] - task["goal"]) ** 2)


FAMILIES: dict[str, DeviceFamily] = {}


def _add(f: DeviceFamily) -> None:
    FAMILIES[f.name] = f


_add(DeviceFamily(
    name="PointCorners", obs_dim=2, act_dim=2, action_bound=0.2, horizon=100,
    init=lambda key, task: jax.random.uniform(key, (2,), minval=-0.2, maxval=0.2),
    dynamics=lambda obs, a: obs + a,
    reward=corners_reward, sample_task_fn=_corner_tasks, task_keys=("goal",),
    task_description="goal: one of the corners (±2, ±2), uniform",
    normalize_actions=True,
    task_options={"reward_type": "sparse", "radius": 0.5},
    paper="ProMP Fig. 5 (3 adaptation steps)",
    deviations=("none: the original's log_diagnostics signature bug does not apply",),
))
_add(DeviceFamily(
    name="PointMomentum", obs_dim=4, act_dim=2, action_bound=0.1, horizon=200,
    init=lambda key, task: jnp.concatenate([
        jax.random.uniform(jax.random.fold_in(key, 0), (2,), minval=-0.2, maxval=0.2),
        jax.random.uniform(jax.random.fold_in(key, 1), (2,), minval=-0.1, maxval=0.1),
    ]),
    dynamics=lambda obs, a: jnp.concatenate([obs[:2] + obs[2:] + a, obs[2:] + a]),
    reward=momentum_reward, sample_task_fn=_corner_tasks, task_keys=("goal",),
    task_description="goal: one of the corners (±2, ±2), uniform",
    normalize_actions=True,
    task_options={"reward_type": "sparse", "radius": 2.0},
    paper="ProMP App. D (MetaPointEnvMomentum, 3 adaptation steps)",
))
_add(DeviceFamily(
    name="Point1D", obs_dim=1, act_dim=1, action_bound=2.0, horizon=5,
    init=lambda key, task: jax.random.uniform(key, (1,), minval=-2.0, maxval=2.0),
    dynamics=lambda obs, a: a,
    reward=point1d_reward,
    sample_task_fn=lambda rng, n, options: {"goal": signs(rng, n)},
    task_keys=("goal",), task_description="goal ∈ {−1, +1}, uniform",
    normalize_actions=False, paper="ProMP Fig. 6 (formulation I vs II)",
))
_add(DeviceFamily(
    name="Point1DRandGoal", obs_dim=1, act_dim=1, action_bound=2.0, horizon=5,
    init=lambda key, task: jax.random.uniform(key, (1,), minval=-2.0, maxval=2.0),
    dynamics=lambda obs, a: a,
    reward=point1d_reward,
    sample_task_fn=lambda rng, n, options: {"goal": rng.uniform(-1.0, 1.0, size=n)},
    task_keys=("goal",), task_description="goal ~ U(−1, 1)",
    normalize_actions=False,
    paper="TMAML §5.3 / Fig. 4 (gradient accuracy)",
    deviations=("reward exp(−0.1(s'−g)²) and horizon 5 chosen (TMAML does not state them)",),
))

_add(DeviceFamily(
    name="Point2DNavigation", obs_dim=2, act_dim=2, action_bound=0.1, horizon=100,
    init=lambda key, task: jnp.zeros(2),
    dynamics=lambda obs, a: obs + a,
    reward=lambda obs, action, next_obs, task: -jnp.linalg.norm(next_obs - task["goal"], axis=-1),
    sample_task_fn=lambda rng, n, options: {"goal": rng.uniform(-0.5, 0.5, size=(n, 2))},
    task_keys=("goal",), task_description="goal ~ U[−0.5, 0.5]²",
    normalize_actions=False,
    paper="MAML (Finn et al. 2017) §5.3, 2-D navigation; learn2learn's Particles2D",
    deviations=("no termination within 0.01 of the goal (the original code's `done`): a policy at the "
                "goal keeps earning ≈ 0 (at least −0.014 per step) instead of ending the episode",
                "reward −‖s' − g‖ as the original code computes it; the paper's text says the "
                "negative squared distance"),
))


def point2d_reward(obs, action, next_obs, task):
    """Point2D reward ``−‖s‖²`` of the state the action is taken in (Clavera thesis App. B.3:
    r(s_t, a_t) = −‖s_t‖²)."""
    return -jnp.sum(obs * obs, axis=-1)


SINGLE_TASK_FAMILIES: dict[str, DeviceFamily] = {}
"""Point2D: one MDP (Clavera thesis §5.5.4)."""

SINGLE_TASK_FAMILIES["Point2D"] = DeviceFamily(
    name="Point2D", obs_dim=2, act_dim=2, action_bound=0.1, horizon=30,
    init=lambda key, task: jax.random.uniform(key, (2,), minval=-2.0, maxval=2.0),
    dynamics=lambda obs, a: obs + a,
    reward=point2d_reward,
    sample_task_fn=lambda rng, n, options: single_tasks(n),
    task_keys=(SINGLE_TASK_KEY,), task_description="single task (goal: the origin)",
    normalize_actions=False,
    paper="Clavera thesis §5.5.4 / App. B.3 (MB-MPO plasticity study)",
    deviations=("none: the MDP of App. B.3 exactly (reward on the pre-step state s_t)",),
)


class SimState(NamedTuple):
    """The state of one device-simulated environment: its observation and its task entries.

    For the point and 1-D families the state is the observation; a learned dynamics model keeps
    the same layout with its own task entries (e.g. the ensemble member)."""

    obs: jax.Array
    task: dict


@dataclass(frozen=True)
class FamilySimulator:
    """A device family as a pure simulator (:class:`adaptrl.envs.simulator.DeviceSimulator`).

    ``reset(sim_params, key, task)`` draws a start state (or starts from ``start_obs``); ``step(sim_params,
    state, action, key)`` maps a *policy* action (rescaled and clipped as
    :func:`~adaptrl.envs.base.env_action`) to ``(next_state, reward, done)``. These analytic
    families have no parameters (``sim_params = {}``) and are deterministic (the key is unused);
    everything is a JAX function of its arguments, so the sampler runs a whole rollout inside one
    ``lax.scan`` and the rollout can be differentiated."""

    family: DeviceFamily
    spec: EnvSpec
    options: dict

    def default_params(self) -> dict:
        return {}

    def reset(self, sim_params: Any, key: jax.Array, task: dict,
              start_obs: jax.Array | None = None) -> SimState:
        obs = self.family.init(key, task) if start_obs is None else jnp.asarray(start_obs)
        return SimState(obs, task)

    def observe(self, state: SimState) -> jax.Array:
        return state.obs

    def step(self, sim_params: Any, state: SimState, action: jax.Array, key: jax.Array):
        low, high = jnp.asarray(self.spec.action_low), jnp.asarray(self.spec.action_high)
        a = env_action(action, low, high, self.spec.normalize_actions, xp=jnp)
        next_obs = self.family.dynamics(state.obs, a)
        reward = self.reward(state.obs, a, next_obs, state.task)
        return SimState(next_obs, state.task), reward, self.terminated(next_obs)

    def reward(self, obs, action, next_obs, task):
        """Reward from ``(obs, env action, next_obs)``; exact for these families."""
        kwargs = {k: v for k, v in self.options.items() if k in ("reward_type", "radius")}
        return self.family.reward(obs, action, next_obs, task, **kwargs)

    def terminated(self, next_obs):
        """Termination from the next observation (these families never terminate)."""
        if self.family.terminated is None:
            return jnp.zeros(next_obs.shape[:-1], dtype=bool)
        return self.family.terminated(jnp, next_obs)


class DeviceVectorEnv:
    """A device simulator behind the vector protocol (numpy ``reset``/``step`` of ``[M, R]``
    environments, as :class:`adaptrl.envs.host.HostVectorEnv`), so every family can be driven the
    same way (Gymnasium wrapper, tests). The pure functions are :attr:`simulator`'s.

    Options: ``normalize_actions`` (default: the family's), ``horizon`` (``spec.horizon``, the
    default trajectory length; default the family's) and the family's task options."""

    def __reduce__(self):
        """Pickle and deep-copy by family name and options (a fresh env; jitted functions are not
        picklable)."""
        return _rebuild_device_env, (self.family.name, self._init_args)

    def __init__(self, family: DeviceFamily, *, normalize_actions: bool | None = None,
                 horizon: int | None = None, **task_options: Any):
        self._init_args = dict(normalize_actions=normalize_actions, horizon=horizon, **task_options)
        self.family = family
        self.options = family.validate_options(task_options)
        self.normalize_actions = (
            family.normalize_actions if normalize_actions is None else bool(normalize_actions)
        )
        horizon = require_positive_int("horizon", family.horizon if horizon is None else horizon)
        bound = np.full(family.act_dim, family.action_bound)
        self.spec = EnvSpec(
            name=family.name, obs_dim=family.obs_dim, act_dim=family.act_dim,
            action_low=-bound, action_high=bound, horizon=horizon, dt=1.0,
            backend="device", task_description=family.task_description,
            normalize_actions=self.normalize_actions, paper=family.paper,
            deviations=family.deviations,
        )
        self.simulator = FamilySimulator(family, self.spec, self.options)
        sim = self.simulator
        self._batched_init = jax.jit(jax.vmap(lambda key, task: sim.reset({}, key, task).obs))
        self._batched_step = jax.jit(jax.vmap(
            lambda obs, action, task: _drop_key_step(sim, obs, action, task)))
        self._shape: tuple[int, int] | None = None
        self.diverged_total = 0
        self._active: np.ndarray | None = None

    def reward(self, obs, action, next_obs, task):
        """Reward from ``(obs, env action, next_obs)`` (:meth:`FamilySimulator.reward`)."""
        return self.simulator.reward(obs, action, next_obs, task)

    def terminated(self, next_obs):
        """Termination from the next observation (:meth:`FamilySimulator.terminated`)."""
        return self.simulator.terminated(next_obs)

    # ------------------------------------------------------------------------ vector protocol
    def sample_tasks(self, n: int, seed: int | np.random.Generator | None = None) -> Tasks:
        """``n`` tasks from the family's distribution, as a dict of arrays with a task axis."""
        n = require_positive_int("number of tasks", n)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self.family.sample_task_fn(rng, n, self.options)

    def reset(self, tasks: Tasks, rollouts_per_task: int, seed: int | None = None) -> np.ndarray:
        """Start ``rollouts_per_task`` episodes of every task; observations ``[M, R, obs]``."""
        tasks = check_tasks(tasks, self.sample_tasks(1, 0), self.family.name)
        m, r = num_tasks(tasks), require_positive_int("rollouts_per_task", rollouts_per_task)
        self._shape = (m, r)
        self._env_tasks = {k: jnp.asarray(np.repeat(v, r, axis=0)) for k, v in tasks.items()}
        if seed is None:
            seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        keys = jax.random.split(jax.random.PRNGKey(seed), m * r)
        self._obs = self._batched_init(keys, self._env_tasks)
        self._active = np.ones(m * r, dtype=bool)
        return np.asarray(self._obs).reshape(m, r, -1)

    @property
    def active(self) -> np.ndarray:
        """``[M, R]`` bool: episodes still running."""
        return self._active.reshape(self._shape).copy()

    def step(self, actions: np.ndarray):
        """Vector-protocol step (see :meth:`adaptrl.envs.host.HostVectorEnv.step`)."""
        flat = running_step_actions(self.family.name, self._shape, self.spec.act_dim, actions, self._active)
        m, r = self._shape
        next_obs, reward, done = self._batched_step(self._obs, jnp.asarray(flat), self._env_tasks)
        was_active = self._active.copy()
        reward = np.where(was_active, np.asarray(reward), 0.0)
        done = np.asarray(done) | ~was_active
        self._obs = jnp.where(jnp.asarray(was_active)[:, None], next_obs, self._obs)
        self._active = was_active & ~done
        info = {"diverged": np.zeros((m, r), dtype=bool)}
        return np.asarray(self._obs).reshape(m, r, -1), reward.reshape(m, r), done.reshape(m, r), info

    def close(self) -> None:
        """Nothing to release."""


def _drop_key_step(sim: FamilySimulator, obs, action, task):
    """``sim.step`` from an observation, for the deterministic families (no parameters, no key)."""
    state, reward, done = sim.step({}, SimState(obs, task), action, jax.random.PRNGKey(0))
    return state.obs, reward, done


def _rebuild_device_env(name: str, init_args: dict) -> DeviceVectorEnv:
    family = FAMILIES[name] if name in FAMILIES else SINGLE_TASK_FAMILIES[name]
    return DeviceVectorEnv(family, **init_args)
