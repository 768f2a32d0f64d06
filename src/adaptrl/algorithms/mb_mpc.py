"""MB-MPC: model predictive control on a learned dynamics ensemble, the thesis's model-based
baseline (Clavera 2020, §5.5.2, "MB-MPC"; the MB-MPO comparison of Fig. 8).

Iteration 0 collects ``initial_random_steps`` real steps with a uniform random controller; every
later iteration collects ``real_steps_per_iter`` real steps by MPC on the current ensemble
(receding horizon: at every real step the planner — random shooting, CEM or MPPI,
:mod:`adaptrl.planners` — plans ``plan_horizon`` steps through the model and the first action is
executed; its plan, shifted by one, warm-starts the next step). Each iteration then adds the
episodes to the buffer and fits the ensemble (:class:`~adaptrl.algorithms.model_based.ModelBased`).
The controller is the planner; there is no policy to optimise.

``--preset paper`` is the thesis code's MB-MPC baseline: random shooting, 1000 candidates,
horizon 10, 4000 real steps per iteration, 5 × (512, 512) ReLU models, at most 200 epochs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.algorithms.base import AlgorithmSpec, IterationOutput, register
from adaptrl.algorithms.model_based import ModelBased, ModelBasedState, return_metrics
from adaptrl.analysis.statistics import eval_row
from adaptrl.envs import make
from adaptrl.meta.config import TrainConfig
from adaptrl.meta.learner import tree_is_finite
from adaptrl.planners import PlanState, batched_plan, make_planner
from adaptrl.sampling import Trajectories


def planner_settings(config: TrainConfig) -> dict[str, Any]:
    """The planner's settings from the ``plan_*`` / ``cem_*`` / ``mppi_*`` config keys."""
    common = dict(horizon=config.plan_horizon, candidates=config.plan_candidates,
                  particles=config.plan_particles, discount=config.plan_discount)
    if config.planner == "cem":
        return dict(common, elites=config.cem_elites, iterations=config.cem_iterations,
                    momentum=config.cem_momentum, init_std=config.cem_init_std)
    if config.planner == "mppi":
        return dict(common, temperature=config.mppi_temperature, noise_std=config.mppi_noise_std,
                    smoothing=config.mppi_smoothing)
    return common


@dataclass
class MPCController:
    """A planner on the model as a :class:`~adaptrl.sampling.Controller`: one jitted
    :func:`~adaptrl.planners.batched_plan` call per real step for all environments; the carry is
    every environment's warm-start plan. With one particle each call plans with one ensemble member
    drawn uniformly from the call's key. Records the plans' predicted returns."""

    plan: Any  # jitted (params, states, obs, key) -> (actions, states, info)
    init_state: Any  # (batch) -> PlanState batch
    params: Any
    predicted: list
    members: int = 1

    def init(self, batch: int, key: jax.Array) -> PlanState:
        return self.init_state(batch)

    def act(self, carry: PlanState, obs: np.ndarray, key: jax.Array) -> tuple[np.ndarray, PlanState]:
        member = jax.random.randint(jax.random.fold_in(key, 7), (), 0, self.members)
        params = {**self.params, "member": member}
        action, carry, info = self.plan(params, carry, jnp.asarray(obs), key)
        self.predicted.append(info["predicted_return"])
        return np.asarray(action), carry


class MBMPC:
    """MB-MPC of one configuration (module docstring), an
    :class:`~adaptrl.algorithms.base.Algorithm`."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.headline = {"return": "AverageReturn", "valid": "Model-ValidLoss"}
        self.curve = {"real return (MPC)": "AverageReturn"}
        self.env = make(config.env, **config.env_options)
        self.mb = ModelBased(config, self.env)
        self.planner = make_planner(config.planner, **planner_settings(config))
        spec = self.env.spec
        low = jnp.asarray(spec.policy_action_low, jnp.float32)
        high = jnp.asarray(spec.policy_action_high, jnp.float32)
        planner, step = self.planner, self.mb.planner_step()
        self._plan = jax.jit(lambda params, states, obs, key: batched_plan(
            planner, step, params, states, obs, key, low, high))
        self._init_states = lambda batch: jax.vmap(lambda _: planner.init(spec.act_dim, low, high))(
            jnp.arange(batch))

    def close(self) -> None:
        self.env.close()

    def controller(self, state: ModelBasedState) -> MPCController:
        return MPCController(self._plan, self._init_states, self.mb.planner_params(state), [],
                             self.config.model_members)

    # ----------------------------------------------------------------- the Algorithm protocol
    def init(self, key: jax.Array) -> ModelBasedState:
        return self.mb.init(key)

    def iteration(self, state: ModelBasedState, itr: int, key: jax.Array) -> IterationOutput:
        c = self.config
        collect_key, fit_key = jax.random.split(key)
        start = time.perf_counter()
        if itr == 0:
            controller = self.mb.random_controller()
            traj, stats = self.mb.collect(controller, c.initial_random_steps, collect_key)
        else:
            controller = self.controller(state)
            traj, stats = self.mb.collect(controller, c.real_steps_per_iter, collect_key)
        sampling = time.perf_counter() - start
        row = return_metrics(traj)
        row.update(plan_diagnostics(traj, controller, c.plan_horizon, c.plan_discount))
        state, model_metrics = self.mb.absorb(state, traj, itr, fit_key)
        row.update(model_metrics)
        planning = stats["PolicyExecTime"] if itr > 0 else 0.0
        row.update({"Time-EnvSampling": sampling - planning, "Time-Planning": planning})
        return IterationOutput(state, row, traj.num_env_steps)

    def non_finite(self, state: ModelBasedState, metrics: Mapping[str, float]) -> str | None:
        bad = [k for k in ("Model-TrainLoss", "Model-ValidLoss") if not math.isfinite(metrics.get(k, 0.0))]
        if bad:
            return f"non-finite {', '.join(bad)}"
        return None if tree_is_finite(state.model.params) else "non-finite model parameters"

    def write_outputs(self, run_dir: Path, state: ModelBasedState) -> list[Path]:
        return []

    def evaluate(self, state: ModelBasedState, *, tasks: int = 10, adapt_steps: int | None = None,
                 rollouts: int | None = None, seed: int = 0) -> dict[str, Any]:
        """MPC on ``tasks`` fresh real episodes (``rollouts`` is ignored: one episode each);
        the mean return with a 95 % interval across episodes."""
        controller = self.controller(state)
        traj, _ = self.mb.collect(controller, tasks * self.config.horizon, jax.random.PRNGKey(seed))
        returns = np.asarray(traj.rewards).sum(-1).ravel()
        return {"adapt_steps": 0, "tasks": len(returns), "seed": seed, "rollouts": 1,
                "rows": [eval_row(0, returns)], "result": traj}


def plan_diagnostics(traj: Trajectories, controller: Any, horizon: int, discount: float) -> dict[str, float]:
    """Model bias of MPC (thesis ch. 3, over-optimism): the mean return the planner predicted for
    its chosen plans (``Plan-PredictedReturn``) next to the discounted return the real system
    gave over the same ``horizon`` steps (``Plan-RealizedReturn``, windows entirely inside an
    episode's real steps). NaN for a controller without predictions (the random one)."""
    predicted = getattr(controller, "predicted", None)
    if not predicted:
        return {"Plan-PredictedReturn": math.nan, "Plan-RealizedReturn": math.nan}
    rewards, mask = np.asarray(traj.rewards)[:, 0], np.asarray(traj.mask)[:, 0]  # [N, T]
    steps = len(predicted)
    pred = np.stack([np.asarray(p) for p in predicted], axis=1)[:, :steps]  # [N, T']
    weights = discount ** np.arange(horizon)
    t_max = rewards.shape[1] - horizon + 1
    if t_max < 1:
        return {"Plan-PredictedReturn": math.nan, "Plan-RealizedReturn": math.nan}
    windows = np.stack([rewards[:, t:t + horizon] @ weights for t in range(t_max)], axis=1)
    inside = np.stack([mask[:, t:t + horizon].min(-1) for t in range(t_max)], axis=1) > 0
    inside &= np.arange(t_max)[None] < steps
    if pred.shape[1] < t_max:
        pred = np.pad(pred, ((0, 0), (0, t_max - pred.shape[1])))
    pred = pred[:, :t_max]
    if not inside.any():
        return {"Plan-PredictedReturn": math.nan, "Plan-RealizedReturn": math.nan}
    return {"Plan-PredictedReturn": float(pred[inside].mean()),
            "Plan-RealizedReturn": float(windows[inside].mean())}


#: Thesis code's MB-MPC baseline (docs/model-based.md, "Presets").
MB_MPC_PAPER = dict(planner="random_shooting", plan_candidates=1000, plan_horizon=10,
                    real_steps_per_iter=4000, initial_random_steps=5000, model_members=5,
                    model_hidden_sizes=(512, 512),
                    model_max_epochs=200, model_batch_size=500, model_lr=1e-3, model_weight_norm=True,
                    buffer_size=100_000, horizon=200, checkpoint_every=1)


register(AlgorithmSpec(
    name="mb-mpc",
    description="model predictive control on a learned dynamics ensemble (thesis §5.5.2 baseline)",
    composition=dict(planner="random_shooting", plan_candidates=500, plan_horizon=10,
                     real_steps_per_iter=2000, initial_random_steps=2000, model_members=5,
                     model_hidden_sizes=(200, 200),
                     model_max_epochs=50, model_batch_size=256, iterations=20),
    build=MBMPC,
    paper_settings=lambda env: dict(MB_MPC_PAPER),
    paper="Clavera 2020 (thesis) §5.5.2, App. B",
    settings=("run", "model", "planner"),
    reported_return=lambda config: "AverageReturn",
))
