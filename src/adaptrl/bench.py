"""Benchmarks, reported as ratios against a reference measured in the same process.

``sampler_benchmark`` times full batches of :class:`adaptrl.sampling.Sampler` (policy in the
loop) and, on the same model and batch size, the raw simulator: for MuJoCo families one
``mujoco.rollout`` call that steps every environment for ``horizon × frame_skip`` physics steps,
replaying open loop the actions of a sampler batch (no policy, no Python per step); for JAX
families the jitted environment dynamics alone in ``lax.scan``. Replaying the sampler's actions
matters: the cost of a MuJoCo step depends on the state (contacts), and uniform random controls
make HalfCheetah's physics about 25% cheaper per step than the small actions of a fresh policy.
Optionally it also times Gymnasium's own counterpart environment in a synchronous vector env
(a Python loop over environments).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.envs import DeviceVectorEnv, HostVectorEnv, canonical_name, make
from adaptrl.envs.base import env_action
from adaptrl.envs.mujoco_families import FAMILIES as MUJOCO_FAMILIES
from adaptrl.errors import ConfigError, require_positive_int
from adaptrl.policies import init_params, make_policy, per_task
from adaptrl.sampling import Sampler

GYMNASIUM_MAX_ENVS = 100
"""Envs in the Gymnasium comparison (its Python loop's rate per env-step does not depend on it)."""

GYMNASIUM_COUNTERPARTS = {
    "HalfCheetah": "HalfCheetah-v5",
    "Ant": "Ant-v5",
    "Humanoid": "Humanoid-v5",
    "Walker2D": "Walker2d-v5",
    "Swimmer": "Swimmer-v5",
    "Hopper": "Hopper-v5",
}


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def raw_mujoco_steps_per_s(env: HostVectorEnv, tasks, actions: np.ndarray, repeats: int,
                           seed: int = 0) -> float:
    """Env-steps/s of one batched ``mujoco.rollout`` call over the whole horizon.

    It replays, open loop, the actions of a sampler batch (``actions``: ``[M, R, T, act]`` policy
    actions, rescaled as the simulator does and held for the frame skip) from freshly reset
    states, so the physics does the same kind of work as in the sampler: the ratio isolates the
    cost of having the policy in the loop.
    """
    import mujoco
    from mujoco import rollout

    m, r, horizon, _ = actions.shape
    env.reset(tasks, r, seed=seed)
    model, initial = env.rollout_inputs()
    spec = env.spec
    ctrl = env_action(actions.reshape(m * r, horizon, -1).astype(np.float64), spec.action_low,
                      spec.action_high, spec.normalize_actions)
    control = np.repeat(ctrl, env.family.frame_skip, axis=1)
    datas = [mujoco.MjData(env.model) for _ in range(env.num_threads)]
    with rollout.Rollout(nthread=env.num_threads) as pool:
        pool.rollout(model, datas, initial, control[:, :1], nstep=1)  # warm the pool
        seconds = _median_time(lambda: pool.rollout(model, datas, initial, control), repeats)
    return m * r * horizon / seconds


def raw_device_steps_per_s(env: DeviceVectorEnv, tasks, rollouts: int, horizon: int,
                           repeats: int) -> float:
    """Env-steps/s of the jitted JAX dynamics alone (random actions) in ``lax.scan``."""
    sim = env.simulator
    env_tasks = {k: jnp.repeat(jnp.asarray(v), rollouts, axis=0) for k, v in tasks.items()}
    batch = next(iter(env_tasks.values())).shape[0]
    step = jax.vmap(sim.step, in_axes=(None, 0, 0, 0))

    @jax.jit
    def run(key):
        state = jax.vmap(sim.reset)(jax.random.split(key, batch), env_tasks)
        actions = jax.random.normal(key, (horizon, batch, env.spec.act_dim))
        step_keys = jax.random.split(jax.random.fold_in(key, 1), horizon * batch).reshape(horizon, batch, -1)

        def body(state, inputs):
            a, keys = inputs
            next_state, reward, _ = step(sim.default_params(), state, a, keys)
            return next_state, reward

        return jax.lax.scan(body, state, (actions, step_keys))

    jax.block_until_ready(run(jax.random.PRNGKey(0)))
    seconds = _median_time(lambda: jax.block_until_ready(run(jax.random.PRNGKey(1))), repeats)
    return batch * horizon / seconds


def gymnasium_steps_per_s(env_name: str, num_envs: int, steps: int, seed: int = 0) -> tuple[str, float]:
    """Env-steps/s of Gymnasium's counterpart env in a ``SyncVectorEnv`` (Python loop)."""
    import gymnasium

    gym_id = next((v for k, v in GYMNASIUM_COUNTERPARTS.items() if env_name.startswith(k)), None)
    if gym_id is None:
        raise ConfigError(f"no Gymnasium counterpart for {env_name}; valid families start with "
                          f"{', '.join(GYMNASIUM_COUNTERPARTS)}.")
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: None)  # Gymnasium's assets use deprecated attributes
    try:
        vec = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make(gym_id)] * num_envs,
                                             autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
    finally:
        mujoco.set_mju_user_warning(previous)
    vec.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(steps, *vec.action_space.shape))
    start = time.perf_counter()
    for t in range(steps):
        vec.step(actions[t])
    seconds = time.perf_counter() - start
    vec.close()
    return gym_id, num_envs * steps / seconds


def sampler_benchmark(env_name: str, tasks: int, rollouts: int, horizon: int, *, repeats: int = 3,
                      threads: int | None = None, gymnasium_steps: int = 0, seed: int = 0,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the sampler against raw batched stepping (see the module docstring).

    Returns a dict with ``sampler_steps_per_s``, ``raw_steps_per_s``, ``ratio`` and the setup.
    """
    tasks = require_positive_int("--tasks", tasks)
    rollouts = require_positive_int("--rollouts", rollouts)
    horizon = require_positive_int("--horizon", horizon)
    repeats = require_positive_int("--repeats", repeats)
    say = progress or (lambda msg: None)
    if threads is not None and canonical_name(env_name) not in MUJOCO_FAMILIES:
        raise ConfigError(f"--threads applies to MuJoCo families only; {env_name} runs in JAX.")
    env = make(env_name, **({} if threads is None else {"num_threads": threads}))
    policy = make_policy(env.spec.act_dim)
    params = per_task(init_params(policy, jax.random.PRNGKey(seed), env.spec.obs_dim), tasks)
    sampler = Sampler(env, policy, rollouts, horizon)
    task_batch = env.sample_tasks(tasks, seed)

    say("compiling and warming up the sampler")
    sampler.collect(params, task_batch, jax.random.PRNGKey(seed))
    steps, seconds, policy_s, env_s = [], [], [], []
    for i in range(repeats):
        say(f"sampler batch {i + 1}/{repeats}")
        start = time.perf_counter()
        traj = sampler.collect(params, task_batch, jax.random.PRNGKey(seed + 1 + i))
        seconds.append(time.perf_counter() - start)
        steps.append(traj.num_env_steps)
        policy_s.append(sampler.stats["PolicyExecTime"])
        env_s.append(sampler.stats["EnvExecTime"])
    rates = [s / t for s, t in zip(steps, seconds, strict=True)]
    sampler_rate = statistics.median(rates)

    say("raw batched stepping")
    if isinstance(env, HostVectorEnv):
        raw_rate = raw_mujoco_steps_per_s(env, task_batch, traj.actions, repeats, seed)
        raw_kind = "mujoco.rollout, one call over the horizon, replaying the sampler's actions"
    else:
        raw_rate = raw_device_steps_per_s(env, task_batch, rollouts, horizon, repeats)
        raw_kind = "jitted JAX dynamics in lax.scan, random actions"
    result: dict[str, Any] = {
        "env": env.spec.name,
        "tasks": tasks,
        "rollouts": rollouts,
        "horizon": horizon,
        "batch_envs": tasks * rollouts,
        "threads": getattr(env, "num_threads", None),
        "repeats": repeats,
        "env_steps_per_batch": int(statistics.median(steps)),
        "sampler_seconds_per_batch": statistics.median(seconds),
        "sampler_policy_seconds": statistics.median(policy_s),
        "sampler_env_seconds": statistics.median(env_s),
        "sampler_steps_per_s": sampler_rate,
        "raw_steps_per_s": raw_rate,
        "raw_reference": raw_kind,
        "ratio": sampler_rate / raw_rate,
    }
    if gymnasium_steps:
        say("Gymnasium SyncVectorEnv")
        gym_envs = min(tasks * rollouts, GYMNASIUM_MAX_ENVS)
        gym_id, gym_rate = gymnasium_steps_per_s(env.spec.name, gym_envs, gymnasium_steps, seed)
        result.update(gymnasium_env=gym_id, gymnasium_envs=gym_envs, gymnasium_steps_per_s=gym_rate,
                      gymnasium_ratio=gym_rate / raw_rate)
    env.close()
    return result
