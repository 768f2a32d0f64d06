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

The split of a sampler batch into policy and simulator time exists only for MuJoCo families,
whose host loop calls them one after the other. A JAX family runs policy and dynamics fused in
one jitted ``lax.scan``, where no such split exists: its ``sampler_policy_seconds`` and
``sampler_env_seconds`` are ``None``, and ``notes`` says why.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.envs import DeviceVectorEnv, HostVectorEnv, canonical_name, family_horizon, make
from adaptrl.envs.base import env_action
from adaptrl.envs.mujoco_families import FAMILIES as MUJOCO_FAMILIES
from adaptrl.errors import ConfigError, require_positive_int
from adaptrl.policies import init_params, make_policy, per_task
from adaptrl.sampling import Sampler

FUSED_NOTE = ("sampler_policy_seconds and sampler_env_seconds are null: policy and dynamics run fused "
              "in one jitted lax.scan, so the batch time has no policy/simulator split")
"""The ``notes`` entry of a JAX family's sampler benchmark."""

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
        state = jax.vmap(sim.reset, in_axes=(None, 0, 0))({}, jax.random.split(key, batch), env_tasks)
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
    fused = None if sampler.simulator is None else FUSED_NOTE
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
        "sampler_policy_seconds": statistics.median(policy_s) if fused is None else None,
        "sampler_env_seconds": statistics.median(env_s) if fused is None else None,
        "sampler_steps_per_s": sampler_rate,
        "raw_steps_per_s": raw_rate,
        "raw_reference": raw_kind,
        "ratio": sampler_rate / raw_rate,
        "notes": [] if fused is None else [fused],
    }
    if gymnasium_steps:
        say("Gymnasium SyncVectorEnv")
        gym_envs = min(tasks * rollouts, GYMNASIUM_MAX_ENVS)
        gym_id, gym_rate = gymnasium_steps_per_s(env.spec.name, gym_envs, gymnasium_steps, seed)
        result.update(gymnasium_env=gym_id, gymnasium_envs=gym_envs, gymnasium_steps_per_s=gym_rate,
                      gymnasium_ratio=gym_rate / raw_rate)
    env.close()
    return result


def models_benchmark(env_name: str, *, members: int = 5, hidden_sizes: tuple[int, ...] = (512, 512),
                     data_episodes: int = 20, epochs: int = 3, batch_size: int = 500, tasks: int = 20,
                     rollouts: int = 50, horizon: int = 200, planner: str = "random_shooting",
                     candidates: int = 1000, plan_horizon: int = 10, plan_envs: int = 20, repeats: int = 3,
                     seed: int = 0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Model-based throughput, each figure against a reference measured in the same process
    (docs/benchmarks.md, "Dynamics models"):

    * ensemble training: member-samples/s of ``members`` models trained together (one ``vmap``)
      against one model trained alone by the same code on the same data (``epochs`` full epochs;
      early stopping held off by persistency 0.9999, which cannot trigger while the loss falls
      below 1.5× its first value);
    * imagined rollouts: env-steps/s of the model simulator in the :class:`Sampler` (policy,
      member choice, reward, termination, clipping; ``tasks × rollouts`` environments for
      ``horizon`` steps) against a bare jitted forward pass of the same ensemble on the same
      batch in ``lax.scan`` (each member on its tasks' rows, no policy, no reward);
    * planner calls/s: one jitted MPC call for ``plan_envs`` environments (``candidates`` ×
      ``plan_horizon`` through the ensemble).
    """
    from adaptrl.envs import obs_reward_fn, obs_terminated_fn
    from adaptrl.models import ensemble as ens
    from adaptrl.models import training
    from adaptrl.models.simulator import EnsembleDynamics, ModelSimulator, ModelVectorEnv, model_sim_params
    from adaptrl.planners import batched_plan, make_planner

    say = progress or (lambda msg: None)
    for name, value in (("--members", members), ("--epochs", epochs), ("--repeats", repeats),
                        ("--tasks", tasks), ("--rollouts", rollouts), ("--horizon", horizon)):
        require_positive_int(name, value)
    if tasks % members:
        raise ConfigError(f"--tasks ({tasks}) must be a multiple of --members ({members}): task i is "
                          "imagined with member i mod K.")
    env = make(env_name)
    spec = env.spec
    say("collecting random transitions")
    rng = np.random.default_rng(seed)
    one_task = env.sample_tasks(1, 0)
    obs = env.reset(one_task, data_episodes, seed=seed)
    rows = []
    for _ in range(spec.horizon):
        act = rng.uniform(spec.policy_action_low, spec.policy_action_high, (1, data_episodes, spec.act_dim))
        nxt, _, _, _ = env.step(act)
        a_env = env_action(act, spec.action_low, spec.action_high, spec.normalize_actions)
        rows.append((obs.reshape(-1, spec.obs_dim), a_env.reshape(-1, spec.act_dim),
                     nxt.reshape(-1, spec.obs_dim)))
        obs = nxt
    data = [np.concatenate(part).astype(np.float32) for part in zip(*rows, strict=True)]
    n_rows = len(data[0])

    def training_rate(k: int) -> float:
        model_spec = ens.EnsembleSpec(spec.obs_dim, spec.act_dim, members=k,
                                      hidden_sizes=tuple(hidden_sizes))
        settings = training.FitSettings(batch_size=batch_size, max_epochs=epochs, persistency=0.9999)
        state = training.init_model_state(model_spec, settings, jax.random.PRNGKey(seed))
        training.fit(model_spec, settings, state, *data, jax.random.PRNGKey(seed))  # compile
        seconds = _median_time(lambda: jax.block_until_ready(
            training.fit(model_spec, settings, state, *data, jax.random.PRNGKey(seed + 1))[0].params),
            repeats)
        train_rows = n_rows - round(settings.valid_split * n_rows)
        return k * train_rows * epochs / seconds

    say(f"training {members} members together")
    ensemble_rate = training_rate(members)
    say("training one member alone")
    single_rate = training_rate(1)

    model_spec = ens.EnsembleSpec(spec.obs_dim, spec.act_dim, members=members,
                                  hidden_sizes=tuple(hidden_sizes))
    model = ens.init_ensemble(model_spec, jax.random.PRNGKey(seed))
    obs_low, obs_high = data[0].min(0) - 1.0, data[0].max(0) + 1.0
    dynamics = EnsembleDynamics(model_spec)
    sim = ModelSimulator(spec, dynamics, obs_reward_fn(env), obs_terminated_fn(env), member_choice="task")
    model_env = ModelVectorEnv(sim, lambda n, s: {k: np.repeat(v, n, axis=0) for k, v in one_task.items()})
    policy = make_policy(spec.act_dim)
    params = per_task(init_params(policy, jax.random.PRNGKey(seed), spec.obs_dim), tasks)
    sampler = Sampler(model_env, policy, rollouts, horizon)
    model_tasks = model_env.sample_tasks(tasks, 0)
    sim_params = model_sim_params(model, data[0][:100], obs_low, obs_high, members)
    say("imagined rollouts")
    sampler.collect(params, model_tasks, jax.random.PRNGKey(seed), sim_params=sim_params)
    imagine_s = _median_time(lambda: sampler.collect(params, model_tasks, jax.random.PRNGKey(seed + 1),
                                                     sim_params=sim_params), repeats)
    n_envs = tasks * rollouts
    per_member = n_envs // members

    @jax.jit
    def bare_forward(model, obs0, action):
        def step(o, _):
            return jax.vmap(lambda k, ok: dynamics.member_next(model, k, ok, action[: ok.shape[0]], None))(
                jnp.arange(members), o), None
        return jax.lax.scan(step, obs0, None, length=horizon)[0]

    obs0 = jnp.asarray(np.resize(data[0], (members, per_member, spec.obs_dim)))
    zero_action = jnp.zeros((per_member, spec.act_dim), jnp.float32)
    jax.block_until_ready(bare_forward(model, obs0, zero_action))
    forward_s = _median_time(lambda: jax.block_until_ready(bare_forward(model, obs0, zero_action)), repeats)

    say("planner calls")
    mpc = make_planner(planner, horizon=plan_horizon, candidates=candidates)
    low = jnp.asarray(spec.policy_action_low, jnp.float32)
    high = jnp.asarray(spec.policy_action_high, jnp.float32)
    reward_fn, terminated_fn = obs_reward_fn(env), obs_terminated_fn(env)
    task = {k: jnp.asarray(v[0]) for k, v in one_task.items()}

    def plan_step(p, o, a, particle, key):
        a_env = env_action(a, jnp.asarray(spec.action_low), jnp.asarray(spec.action_high),
                           spec.normalize_actions, xp=jnp)
        nxt = dynamics.member_next(p, particle % members, o[None], a_env[None], key)[0]
        return nxt, reward_fn(o, a, nxt, task), terminated_fn(nxt)

    plan = jax.jit(lambda p, s, o, k: batched_plan(mpc, plan_step, p, s, o, k, low, high))
    states = jax.vmap(lambda _: mpc.init(spec.act_dim, low, high))(jnp.arange(plan_envs))
    plan_obs = jnp.asarray(data[0][:plan_envs])
    jax.block_until_ready(plan(model, states, plan_obs, jax.random.PRNGKey(0)))
    plan_s = _median_time(
        lambda: jax.block_until_ready(plan(model, states, plan_obs, jax.random.PRNGKey(1))), repeats)
    env.close()
    return {
        "env": spec.name, "members": members, "hidden_sizes": list(hidden_sizes), "data_rows": n_rows,
        "epochs": epochs, "batch_size": batch_size,
        "ensemble_member_samples_per_s": ensemble_rate, "single_member_samples_per_s": single_rate,
        "ensemble_cost_ratio": single_rate / ensemble_rate,
        "imagined_envs": n_envs, "imagined_horizon": horizon,
        "imagined_steps_per_s": n_envs * horizon / imagine_s,
        "forward_steps_per_s": n_envs * horizon / forward_s,
        "imagined_to_forward": forward_s / imagine_s,
        "planner": planner, "plan_candidates": candidates, "plan_horizon": plan_horizon,
        "plan_envs": plan_envs,
        "planner_calls_per_s": 1.0 / plan_s,
        "planner_env_steps_per_s": plan_envs / plan_s,
    }


META_ITERATION_TIMES = ("Time-Sampling", "Time-InnerStep", "Time-SampleProc", "Time-OuterStep", "ItrTime")
"""The progress columns :func:`meta_iteration_benchmark` reports (medians over the timed iterations)."""


def meta_iteration_seconds(algo: str, env_name: str, *, backend: str = "native", preset: str = "paper",
                           iterations: int = 3, overrides: dict[str, Any] | None = None,
                           progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Median seconds of the parts of a meta-iteration (:data:`META_ITERATION_TIMES`) over
    iterations 2..``iterations`` of a real training run (the first compiles and is dropped), in a
    temporary run directory, with the environment on ``backend`` (``"native"`` or ``"mjx"``)."""
    import dataclasses
    import tempfile

    from adaptrl.experiment.config import build_config
    from adaptrl.experiment.trainer import train

    iterations = require_positive_int("iterations", iterations)
    if iterations < 2:
        raise ConfigError(f"iterations must be at least 2 (the first compiles and is not timed), got "
                          f"{iterations}.")
    settings = dict(overrides or {})
    settings["iterations"] = iterations
    config = build_config(algo, env_name, preset=preset, overrides=settings)
    if backend != "native":
        config = dataclasses.replace(config, env_options={**config.env_options, "backend": backend})
    (progress or (lambda msg: None))(f"{algo} on {env_name} ({backend}): {iterations} iterations")
    with tempfile.TemporaryDirectory() as tmp:
        rows = train(config, tmp, show_progress=False, tensorboard=False, make_plots=False).rows[1:]
    out = {key: statistics.median(float(r[key]) for r in rows) for key in META_ITERATION_TIMES}
    out["update"] = out["Time-OuterStep"] + out["Time-InnerStep"] + out["Time-SampleProc"]
    horizon = config.horizon or int(config.env_options.get("horizon") or family_horizon(config.env))
    out["batch"] = f"{config.tasks_per_iter} tasks × {config.rollouts_per_task} rollouts × {horizon} steps"
    return out


def meta_iteration_benchmark(algo: str, env_name: str, *, backend: str = "native",
                             reference: str | None = "native", preset: str = "paper", iterations: int = 3,
                             overrides: dict[str, Any] | None = None,
                             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Seconds per meta-iteration of ``algo`` on ``env_name`` with the environment on ``backend``
    and, in the same process, on ``reference`` (None: no reference), at the same configuration;
    ``ratio`` = reference seconds / backend seconds (> 1: the backend is faster)."""
    import platform

    result: dict[str, Any] = {
        "algo": algo, "env": canonical_name(env_name), "preset": preset, "iterations": iterations,
        "machine": platform.processor() or platform.machine(), "devices": [str(d) for d in jax.devices()],
        "backend": backend, "reference": reference,
    }
    result["backend_times"] = meta_iteration_seconds(algo, env_name, backend=backend, preset=preset,
                                                     iterations=iterations, overrides=overrides,
                                                     progress=progress)
    if reference is not None and reference != backend:
        result["reference_times"] = meta_iteration_seconds(algo, env_name, backend=reference, preset=preset,
                                                           iterations=iterations, overrides=overrides,
                                                           progress=progress)
        result["ratio"] = result["reference_times"]["ItrTime"] / result["backend_times"]["ItrTime"]
    return result
