"""The parts every model-based algorithm shares (docs/model-based.md): real data, the buffer, the
ensemble fit, the model as a simulator, and the model-bias diagnostics.

One model-based iteration is, in every algorithm of the thesis (Alg. 1–3):

1. collect real episodes with a controller (a uniform random one first, thesis Alg. 3 line 1);
2. measure the current model on them *before* it sees them (held-out k-step error, thesis ch. 3);
3. add them to the FIFO buffer and fit the ensemble (warm start, per-member early stopping);
4. improve the controller on the model — MB-MPC: nothing, the planner *is* the controller;
   ME-TRPO / MB-MPO: policy optimisation on imagined rollouts of :func:`model_simulator`.

:class:`ModelBasedState` is what the training loop checkpoints: the models, their optimizer
states and normalisation, the buffer, and the pool of real start states, so a resumed run
continues exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.envs import VectorEnv, obs_reward_fn, obs_terminated_fn
from adaptrl.envs.base import env_action
from adaptrl.meta.config import TrainConfig
from adaptrl.models import buffer as buf
from adaptrl.models import diagnostics, training
from adaptrl.models import ensemble as ens
from adaptrl.models.simulator import EnsembleDynamics, ModelSimulator, ModelVectorEnv, model_sim_params
from adaptrl.sampling import Controller, Trajectories, controller_rollouts


class ModelBasedState(NamedTuple):
    """The checkpointed state of a model-based algorithm (module docstring)."""

    model: training.ModelTrainState
    buffer: buf.TransitionBuffer
    start_obs: np.ndarray  # [P, obs] real start states (true initial-state distribution)
    extra: Any = ()  # the algorithm's own state (e.g. a policy and its optimizer)


def ensemble_spec(config: TrainConfig, obs_dim: int, act_dim: int) -> ens.EnsembleSpec:
    return ens.EnsembleSpec(obs_dim=obs_dim, act_dim=act_dim, members=config.model_members,
                            hidden_sizes=tuple(config.model_hidden_sizes), kind=config.model_kind,
                            weight_norm=config.model_weight_norm, activation=config.model_activation)


def fit_settings(config: TrainConfig) -> training.FitSettings:
    return training.FitSettings(learning_rate=config.model_lr, batch_size=config.model_batch_size,
                                max_epochs=config.model_max_epochs, valid_split=config.model_valid_split,
                                persistency=config.model_persistency, bootstrap=config.model_bootstrap,
                                shared_split=config.model_shared_split)


def episodes_for(steps: int, horizon: int) -> int:
    """Whole episodes of ``horizon`` steps covering ``steps`` real steps."""
    return max(1, math.ceil(steps / horizon))


def single_task(env: VectorEnv, n: int) -> dict[str, np.ndarray]:
    """``n`` copies of the env's task (model-based runs use the env's first task)."""
    one = env.sample_tasks(1, 0)
    return {k: np.repeat(v, n, axis=0) for k, v in one.items()}


def data_range(buffer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension minimum and maximum of every observation in ``buffer`` (states and next
    states): the range imagined states are clipped to (widened by the clip margin)."""
    obs, _, next_obs = buf.buffer_contents(buffer)
    both = np.concatenate([obs, next_obs])
    return both.min(0), both.max(0)


def transitions(env: VectorEnv, traj: Trajectories) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real steps of ``traj`` as ``(obs, env action, next obs)`` rows, episode by episode.

    The next observation of step t is the observation recorded at t + 1, or the final one after
    the last step; finished episodes keep their last observation, so a terminal transition ends
    on the terminal state. Actions are what the simulator received (rescaled and clipped)."""
    obs = np.asarray(traj.observations)
    nxt = np.concatenate([obs[:, :, 1:], np.asarray(traj.final_observations)[:, :, None]], axis=2)
    last = np.asarray(traj.mask).sum(axis=(0, 1)).nonzero()[0].max()  # the last step simulated
    nxt[:, :, last] = np.asarray(traj.final_observations)
    spec = env.spec
    act = env_action(np.asarray(traj.actions), spec.action_low, spec.action_high, spec.normalize_actions)
    real = np.asarray(traj.mask) > 0
    return obs[real], act[real].astype(np.float32), nxt[real]


def episode_returns(traj: Trajectories) -> np.ndarray:
    """Undiscounted return of every episode, flat."""
    return np.asarray(traj.rewards).sum(-1).ravel()


def return_metrics(traj: Trajectories, prefix: str = "") -> dict[str, float]:
    """``AverageReturn``, ``StdReturn``, ``MaxReturn``, ``MinReturn`` of the episodes."""
    returns = episode_returns(traj)
    return {f"{prefix}AverageReturn": float(returns.mean()), f"{prefix}StdReturn": float(returns.std()),
            f"{prefix}MaxReturn": float(returns.max()), f"{prefix}MinReturn": float(returns.min())}


@dataclass
class UniformController:
    """Uniformly random actions in the policy's action box (the first iteration's controller)."""

    low: np.ndarray
    high: np.ndarray

    def init(self, batch: int, key: jax.Array) -> None:
        return None

    def act(self, carry: None, obs: np.ndarray, key: jax.Array) -> tuple[np.ndarray, None]:
        u = np.asarray(jax.random.uniform(key, (obs.shape[0], len(self.low))))
        return (self.low + u * (self.high - self.low)).astype(np.float32), None


class ModelBased:
    """Real data, buffer, ensemble fit and diagnostics for one configuration (module docstring);
    a model-based algorithm holds one and adds its own improvement step."""

    def __init__(self, config: TrainConfig, env: VectorEnv):
        self.config, self.env = config, env
        spec = env.spec
        self.spec = ensemble_spec(config, spec.obs_dim, spec.act_dim)
        self.settings = fit_settings(config)
        self.horizon = config.horizon
        self.reward_fn = obs_reward_fn(env)
        self.terminated_fn = obs_terminated_fn(env)
        self.task = {k: v[0] for k, v in single_task(env, 1).items()}
        self.dynamics = EnsembleDynamics(self.spec)

    # ------------------------------------------------------------------------------- state
    def init(self, key: jax.Array, extra: Any = ()) -> ModelBasedState:
        model_key, start_key = jax.random.split(key)
        spec = self.env.spec
        return ModelBasedState(
            model=training.init_model_state(self.spec, self.settings, model_key),
            buffer=buf.empty_buffer(self.config.buffer_size, spec.obs_dim, spec.act_dim),
            start_obs=self.reset_states(self.config.model_start_pool, start_key),
            extra=extra)

    def reset_states(self, n: int, key: jax.Array) -> np.ndarray:
        """``n`` observations from the real env's initial-state distribution."""
        seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
        return np.asarray(self.env.reset(single_task(self.env, 1), n, seed=seed)[0], np.float32)

    # ------------------------------------------------------------------------------- data
    def collect(self, controller: Controller, steps: int, key: jax.Array) -> tuple[Trajectories, dict]:
        """Whole real episodes covering ``steps`` steps, run in parallel by ``controller``."""
        n = episodes_for(steps, self.horizon)
        return controller_rollouts(self.env, controller, single_task(self.env, n), key, rollouts=1,
                                   horizon=self.horizon)

    def random_controller(self) -> UniformController:
        spec = self.env.spec
        return UniformController(np.asarray(spec.policy_action_low, np.float32),
                                 np.asarray(spec.policy_action_high, np.float32))

    # ------------------------------------------------------------------------------- model
    def absorb(self, state: ModelBasedState, traj: Trajectories, itr: int, key: jax.Array
               ) -> tuple[ModelBasedState, dict[str, float]]:
        """Held-out prediction error of the current model on ``traj``, then add ``traj`` to the
        buffer and fit the ensemble on the whole buffer (re-initialised every
        ``model_reinit_every`` iterations). Returns the new state and the ``Model-*`` metrics."""
        c = self.config
        metrics = self.prediction_errors(state, traj) if itr > 0 else self.prediction_errors(None, traj)
        buffer = buf.add_transitions(state.buffer, *transitions(self.env, traj))
        model = state.model
        init_key, fit_key = jax.random.split(key)
        if c.model_reinit_every and itr > 0 and itr % c.model_reinit_every == 0:
            model = training.init_model_state(self.spec, self.settings, init_key)
        start = time.perf_counter()
        model, report = training.fit(self.spec, self.settings, model, *buf.buffer_contents(buffer), fit_key,
                                     reset_optimizer=c.model_reset_optimizer)
        metrics.update({"Model-TrainLoss": float(np.mean(report.train_loss)),
                        "Model-ValidLoss": float(np.mean(report.valid_loss)),
                        "Model-Epochs": float(np.mean(report.epochs)),
                        "Time-ModelFit": time.perf_counter() - start,
                        "BufferSize": float(buffer.size)})
        return state._replace(model=model, buffer=buffer), metrics

    def prediction_errors(self, state: ModelBasedState | None, traj: Trajectories) -> dict[str, float]:
        """``Model-PredError-1`` and ``Model-PredError-k``: mean squared open-loop error of the
        current ensemble on real trajectories it was not fitted on (NaN before the first fit)."""
        k = self.config.model_pred_error_k
        keys = [f"Model-PredError-{j}" for j in sorted({1, k})]
        if state is None:
            return dict.fromkeys(keys, math.nan)
        spec = self.env.spec
        actions = env_action(np.asarray(traj.actions), spec.action_low, spec.action_high,
                             spec.normalize_actions)
        errors = diagnostics.k_step_errors(self.spec, state.model.params, np.asarray(traj.observations)[:, 0],
                                           actions[:, 0], np.asarray(traj.mask)[:, 0], k,
                                           final_observations=np.asarray(traj.final_observations)[:, 0])
        return {f"Model-PredError-{j}": float(errors[j - 1]) for j in sorted({1, k})}

    # ------------------------------------------------------------------------------- imagination
    def model_simulator(self, member_choice: str | None = None) -> ModelVectorEnv:
        """The ensemble as a vector env for the :class:`~adaptrl.sampling.Sampler`."""
        sim = ModelSimulator(self.env.spec, self.dynamics, self.reward_fn, self.terminated_fn,
                             member_choice=member_choice or self.config.member_choice,
                             clip_margin=self.config.model_clip_margin,
                             output_noise=self.config.model_output_bias_max > 0
                             or self.config.model_output_noise_std > 0)
        return ModelVectorEnv(sim, lambda n, seed: single_task(self.env, n))

    def sim_params(self, state: ModelBasedState, key: jax.Array) -> dict[str, Any]:
        """The model simulator's parameters for the current state: the ensemble, the start pool
        (real reset states, or buffer states with ``model_start_states=buffer``), the data
        range for clipping and the output noise of thesis §5.5.3 (b ~ U(0, b_max) per member)."""
        c = self.config
        if c.model_start_states == "buffer":
            obs = buf.buffer_contents(state.buffer)[0]
            rows = np.asarray(jax.random.randint(jax.random.fold_in(key, 0), (c.model_start_pool,), 0,
                                                 len(obs)))
            start = obs[rows]
        else:
            start = state.start_obs
        low, high = data_range(state.buffer)
        bias = c.model_output_bias_max * np.asarray(
            jax.random.uniform(jax.random.fold_in(key, 1), (c.model_members,)))
        return model_sim_params(state.model.params, start, low, high, c.model_members,
                                output_bias=bias, output_noise_std=c.model_output_noise_std)

    def planner_step(self):
        """The ensemble as a planner step function ``(params, obs, action, particle, key)``.
        With several particles, particle p follows member p mod K (PETS's TS-∞). With one, every
        planning call uses one member drawn uniformly for that call (``params["member"]``), the
        same for all candidates and environments: over an episode every member plans, the member
        draw does not decide which candidate wins, and all candidates share the member's weights
        (one dense matmul). Reward and termination are the env's."""
        spec, dyn, k_members = self.env.spec, self.dynamics, self.spec.members
        low, high = jnp.asarray(spec.action_low), jnp.asarray(spec.action_high)
        reward_fn, terminated_fn, task = self.reward_fn, self.terminated_fn, self.task
        task = {k: jnp.asarray(v) for k, v in task.items()}
        normalize = spec.normalize_actions
        clip = not math.isinf(self.config.model_clip_margin)

        one_particle = self.config.plan_particles == 1

        def step(params, obs, action, particle, key):
            a = env_action(action, low, high, normalize, xp=jnp)
            # one particle: the member drawn for this planning call (MPCController.act);
            # several: TS-∞, particle p follows member p mod K for the whole horizon
            member_id = params["member"] if one_particle else particle % k_members
            next_obs = dyn.member_next(params["model"], member_id, obs[None], a[None], key)[0]
            if clip:
                width = (params["obs_high"] - params["obs_low"]) * params["clip_margin"]
                next_obs = jnp.clip(next_obs, params["obs_low"] - width, params["obs_high"] + width)
            return next_obs, reward_fn(obs, action, next_obs, task), terminated_fn(next_obs)

        return step

    def planner_params(self, state: ModelBasedState) -> dict[str, Any]:
        """The parameters of :meth:`planner_step`: the ensemble, the data range for clipping, the
        clip margin and the member of the current planning call."""
        low, high = data_range(state.buffer)
        return {"model": state.model.params, "obs_low": jnp.asarray(low), "obs_high": jnp.asarray(high),
                "clip_margin": jnp.asarray(self.config.model_clip_margin, jnp.float32),
                "member": jnp.asarray(0, jnp.int32)}
