"""Gradient-based meta-RL as an :class:`~adaptrl.algorithms.base.Algorithm`.

Every meta-RL recipe (ProMP, MAML, E-MAML, LVC, DiCE, TMAML) is this algorithm with another
composition: a simulator (:mod:`adaptrl.envs`), a policy (:mod:`adaptrl.policies`), the
:class:`~adaptrl.sampling.Sampler` and the :class:`~adaptrl.meta.learner.MetaLearner`. One
iteration (ProMP Alg. 1):

1. sample ``tasks_per_iter`` tasks;
2. K + 1 sampling rounds, adapting θ_k → θ_{k+1} per task after each of the first K
   (:func:`sample_and_adapt`; with a TMAML control variate, each batch first updates it);
3. the outer update on the K + 1 stacked batches (:meth:`MetaLearner.update`).

Its metrics are the original ProMP code's ``progress.csv`` keys (``Step_k-AverageReturn`` …,
``LossBefore``, ``LossAfter``, ``MeanKL``, ``KLInner``, timing keys). ``evaluate`` is meta-testing:
fresh tasks, any number of adaptation steps, per-step returns with 95 % intervals across tasks, with
the training adaptation or another inner optimizer (the original meta-tester's Adam).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from adaptrl.algorithms.base import IterationOutput
from adaptrl.analysis.statistics import eval_row, flatten, gradient_statistics
from adaptrl.envs import VectorEnv, make
from adaptrl.envs.device import CORNERS
from adaptrl.errors import ConfigError
from adaptrl.meta.adaptation import check_inner_options
from adaptrl.meta.batch import StepBatch, process_trajectories, return_stats, stack_steps
from adaptrl.meta.config import TrainConfig
from adaptrl.meta.learner import LearnerState, MetaLearner, tree_is_finite
from adaptrl.policies import per_task
from adaptrl.sampling import Sampler, Trajectories

TIME_KEYS = ("Time-Sampling", "Time-SampleProc", "Time-InnerStep", "Time-OuterStep", "ItrTime", "Time",
             "Time-ControlVariate", "Time-GradStats")
"""The timing columns of ``progress.csv`` (they differ between otherwise identical runs)."""

#: The per-environment settings of ProMP's paper runs (ProMP App. D; the released run scripts'
#: sweeps, docs/algorithms.md). Keys are canonical family names; ``promp`` entries apply to ProMP only.
PROMP_PAPER_ENV_SETTINGS: dict[str, dict[str, Any]] = {
    "PointCorners": dict(inner_steps=3, horizon=100),
    "PointMomentum": dict(inner_steps=3, horizon=200, promp=dict(hidden_sizes=(128, 128))),
    "HalfCheetahRandDirec": dict(horizon=100),
    "HalfCheetahRandVel": dict(horizon=100),
    "AntRandDirec": dict(horizon=100),
    "AntRandDirec2D": dict(horizon=100),
    "AntRandGoal": dict(horizon=200, inner_steps=2),
    "Walker2DRandDirec": dict(horizon=200),
    "Walker2DRandVel": dict(horizon=200),
    "HumanoidRandDirec": dict(horizon=200, hidden_sizes=(128, 128)),
    "HumanoidRandDirec2D": dict(horizon=200, hidden_sizes=(128, 128)),
    "HopperRandParams": dict(horizon=200, inner_lr=0.05,
                             promp=dict(outer_steps=3, adaptive_kl=True, kl_coef=1e-3, target_kl=1e-2)),
    "Walker2DRandParams": dict(horizon=200, inner_lr=0.05,
                               promp=dict(outer_steps=3, adaptive_kl=True, kl_coef=1e-3, target_kl=1e-2)),
}


def promp_paper_settings(env: str, *, promp: bool = False) -> dict[str, Any]:
    """The ProMP paper's settings for canonical family ``env`` (``promp``: ProMP's own extras)."""
    settings = dict(PROMP_PAPER_ENV_SETTINGS.get(env, {}))
    algo_specific = settings.pop("promp", {})
    if promp:
        settings.update(algo_specific)
    return settings


def task_seed(key: jax.Array) -> int:
    """A numpy seed drawn from ``key`` (task distributions sample with numpy)."""
    return int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))


@dataclass
class AdaptationResult:
    """Per-step trajectories of one meta-test: ``trajectories[k]`` sampled with θ_k."""

    tasks: dict
    trajectories: list[Trajectories] = field(default_factory=list)
    task_params: Any = None  # θ_K per task (leading task axis)
    step_params: list[Any] = field(default_factory=list)  # θ_0 … θ_K per task (θ_0: θ broadcast)
    batches: list[StepBatch] = field(default_factory=list)
    cv_params: Any = None
    cv_loss: float = math.nan
    cv_explained_variance: float = math.nan


class MetaRL:
    """Gradient-based meta-RL of one :class:`~adaptrl.meta.config.TrainConfig` (module docstring)."""

    def __init__(self, config: TrainConfig, env: VectorEnv, sampler: Sampler, learner: MetaLearner):
        self.config, self.env, self.sampler, self.learner = config, env, sampler, learner
        k = config.inner_steps
        self.headline = ({"pre": "Step_0-AverageReturn", "post": f"Step_{k}-AverageReturn"} if k
                         else {"return": "Step_0-AverageReturn"})
        self.curve = {"pre-update (step 0)" if k else "return": "Step_0-AverageReturn",
                      **{f"after {i} adaptation step{'s' if i > 1 else ''}": f"Step_{i}-AverageReturn"
                         for i in range(1, k + 1)}}

    @classmethod
    def build(cls, config: TrainConfig, rollouts_per_task: int | None = None) -> MetaRL:
        env = make(config.env, **config.env_options)
        learner = MetaLearner(config, env.spec.obs_dim, env.spec.act_dim)
        sampler = Sampler(env, learner.policy, rollouts_per_task or config.rollouts_per_task,
                          config.horizon)
        return cls(config, env, sampler, learner)

    def close(self) -> None:
        self.env.close()

    def process(self, traj: Trajectories) -> StepBatch:
        c = self.config
        return process_trajectories(traj, gamma=c.discount, lam=c.gae_lambda, baseline=c.baseline,
                                    normalize=c.normalize_advantages)

    # ----------------------------------------------------------------- the Algorithm protocol
    def init(self, key: jax.Array) -> LearnerState:
        return self.learner.init(key)

    def iteration(self, state: LearnerState, itr: int, key: jax.Array,
                  sim_params: Any = None) -> IterationOutput:
        """One meta-iteration: tasks, K+1 sampling rounds with adaptation, the outer update.

        ``sim_params`` are a device simulator's parameters (a learned model's weights, when the
        environment is a :class:`~adaptrl.models.simulator.ModelVectorEnv`: MB-MPO's meta-step)."""
        config = self.config
        task_key, sample_key = jax.random.split(key)
        tasks = self.env.sample_tasks(config.tasks_per_iter, seed=task_seed(task_key))
        timings: dict[str, float] = {}
        result = sample_and_adapt(self, state.meta_params, tasks, sample_key, config.inner_steps, timings,
                                  cv_params=state.cv_params, sim_params=sim_params)
        state = state._replace(cv_params=result.cv_params)
        row: dict[str, float] = {}
        steps = 0
        for k, traj in enumerate(result.trajectories):
            row.update(return_stats(traj, f"Step_{k}-"))
            steps += traj.num_env_steps
        row["NumDiverged"] = float(self.sampler.stats.get("NumDiverged", 0))
        if self.learner.control_variate is not None:
            row["CVLoss"] = result.cv_loss
            row["CVExplainedVariance"] = result.cv_explained_variance
        if config.grad_stats_every and itr % config.grad_stats_every == 0:
            start = time.perf_counter()
            row.update(training_gradient_stats(self, state, tasks, jax.random.fold_in(key, 11)))
            timings["Time-GradStats"] = time.perf_counter() - start
        start = time.perf_counter()
        new_state, info = self.learner.update(state, stack_steps(result.batches))
        jax.block_until_ready(new_state.meta_params)
        timings["Time-OuterStep"] = time.perf_counter() - start
        row.update(info)
        for key_name in TIME_KEYS[:4]:
            row[key_name] = timings.get(key_name, 0.0)
        for key_name in ("Time-ControlVariate", "Time-GradStats"):
            if key_name in timings:
                row[key_name] = timings[key_name]
        return IterationOutput(new_state, row, steps)

    def non_finite(self, state: LearnerState, metrics: Mapping[str, float]) -> str | None:
        bad = [k for k, v in metrics.items() if k.startswith("Loss") and not math.isfinite(v)]
        if bad:
            return f"non-finite {', '.join(bad)}"
        return None if tree_is_finite(state.meta_params) else "non-finite meta-parameters"

    def write_outputs(self, run_dir: Path, state: LearnerState) -> list[Path]:
        """For the 2-D point envs, the picture of ProMP Fig. 5."""
        if self.config.env in ("PointCorners", "PointMomentum"):
            return [exploration_picture(run_dir, self.config, state)]
        return []

    def evaluate(self, state: LearnerState, *, tasks: int = 40, adapt_steps: int | None = None,
                 rollouts: int | None = None, seed: int = 0, inner_optimizer: str = "sgd",
                 inner_lr: float | None = None, inner_grad_norm: str | None = None) -> dict[str, Any]:
        """Meta-test on fresh tasks: adapt ``adapt_steps`` times (any K, not only the training K)
        and return per-step mean returns with 95 % Student-t confidence intervals across tasks
        (mean ± t_(M−1)·sd/√M of the per-task mean returns; undefined, NaN, for one task).

        The adaptation is the training one unless ``inner_optimizer`` (``adam``: the original
        meta-tester's Adam, :data:`~adaptrl.meta.adaptation.INNER_OPTIMIZERS`), ``inner_lr`` (a
        scalar α replacing the run's) or ``inner_grad_norm`` (replacing the run's
        ``inner_grad_norm``) say otherwise; then the report's ``adaptation`` holds the three
        settings used (absent for the training adaptation; a value equal to the run's counts as
        the run's)."""
        steps = self.config.inner_steps if adapt_steps is None else int(adapt_steps)
        if steps < 0:
            raise ConfigError(f"--adapt-steps must be ≥ 0, got {steps}.")
        if tasks < 1:
            raise ConfigError(f"--tasks must be ≥ 1, got {tasks}.")
        check_inner_options(inner_optimizer, inner_lr, inner_grad_norm)
        learned = "inner_lr" in state.meta_params
        if inner_lr is not None and not learned and float(inner_lr) == float(self.config.inner_lr):
            inner_lr = None  # the run's own step size: the training adaptation's code path
        if inner_grad_norm == self.config.inner_grad_norm:
            inner_grad_norm = None
        exp = self if rollouts is None else MetaRL.build(self.config, rollouts_per_task=rollouts)
        exp_rollouts = exp.sampler.rollouts_per_task
        try:
            task_key, sample_key = jax.random.split(jax.random.PRNGKey(seed))
            task_batch = exp.env.sample_tasks(tasks, seed=task_seed(task_key))
            result = sample_and_adapt(exp, state.meta_params, task_batch, sample_key, steps,
                                      cv_params=state.cv_params, inner_optimizer=inner_optimizer,
                                      inner_lr=inner_lr, inner_grad_norm=inner_grad_norm)
        finally:
            if exp is not self:
                exp.close()
        rows = [eval_row(k, np.asarray(traj.returns()).mean(axis=1))  # one mean return per task
                for k, traj in enumerate(result.trajectories)]
        report = {"tasks": tasks, "adapt_steps": steps, "seed": seed, "rollouts": exp_rollouts,
                  "rows": rows, "result": result}
        if inner_optimizer != "sgd" or inner_lr is not None or inner_grad_norm is not None:
            report["adaptation"] = {
                "inner_optimizer": inner_optimizer,
                "inner_lr": float(inner_lr) if inner_lr is not None else
                ("learned" if learned else float(self.config.inner_lr)),
                "inner_grad_norm": inner_grad_norm or self.config.inner_grad_norm}
        return report


def sample_and_adapt(exp: MetaRL, meta_params: dict, tasks: dict, key: jax.Array, steps: int,
                     timings: dict[str, float] | None = None, cv_params: Any = None,
                     sim_params: Any = None, sample_final: bool = True, *, inner_optimizer: str = "sgd",
                     inner_lr: float | None = None, inner_grad_norm: str | None = None) -> AdaptationResult:
    """Sample with θ_0 = θ, adapt ``steps`` times (one fresh batch per step), sample with θ_K
    (not with ``sample_final=False``: then only θ_K is wanted, ``result.task_params``).
    ``result.step_params[k]`` holds every task's θ_k, k = 0 … ``steps`` (θ_0 = θ per task).

    ``sim_params`` go to every :meth:`~adaptrl.sampling.Sampler.collect` (a device simulator's
    parameters, e.g. a learned model's; ``None``: its defaults).

    With a control variate (TMAML) and its ``cv_params``, every step's batch first updates the
    control variate and gets its baselines (before the inner step uses them); the updated
    parameters are returned in the result.

    ``inner_optimizer``, ``inner_lr`` and ``inner_grad_norm`` choose a meta-test adaptation
    (:meth:`~adaptrl.meta.learner.MetaLearner.adapt_tasks_with`: e.g. ``adam``, its state kept per
    task across the steps); the defaults are the training step."""
    timings = timings if timings is not None else {}
    control_variate = exp.learner.control_variate if cv_params is not None else None
    m = len(next(iter(tasks.values())))
    task_params = per_task(meta_params["policy"], m)
    opt_state = exp.learner.init_inner_optimizer(inner_optimizer, task_params)
    result = AdaptationResult(tasks, cv_params=cv_params, step_params=[task_params])
    keys = jax.random.split(key, steps + 1)

    def timed(name: str, start: float) -> None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    for k in range(steps + 1 if sample_final else steps):
        start = time.perf_counter()
        traj = exp.sampler.collect(task_params, tasks, keys[k], sim_params=sim_params)
        timed("Time-Sampling", start)
        start = time.perf_counter()
        batch = exp.process(traj)
        timed("Time-SampleProc", start)
        if control_variate is not None:
            start = time.perf_counter()
            result.cv_params, batch, cv_stats = control_variate.attach(
                result.cv_params, batch, jax.random.fold_in(keys[k], 7))
            result.cv_loss, result.cv_explained_variance = cv_stats["loss"], cv_stats["explained_variance"]
            timed("Time-ControlVariate", start)
        if k < steps:
            start = time.perf_counter()
            task_params, opt_state = jax.block_until_ready(exp.learner.adapt_tasks_with(
                inner_optimizer, meta_params, task_params, opt_state, batch, step_size=inner_lr,
                grad_norm=inner_grad_norm))
            timed("Time-InnerStep", start)
            result.step_params.append(task_params)
        result.trajectories.append(traj)
        result.batches.append(batch)
    result.task_params = task_params
    return result


def sample_meta_gradients(exp: MetaRL, state: LearnerState, tasks: dict, key: jax.Array, num_batches: int,
                          on_batch: Callable[[], None] | None = None,
                          cv_explained_variance: list[float] | None = None) -> np.ndarray:
    """``[B, P]`` meta-gradients of ``exp``'s learner at ``state`` on ``num_batches`` independent
    batches for the same ``tasks`` (each batch: K + 1 fresh sampling rounds with adaptation).

    A control variate starts every batch from ``state.cv_params`` (its per-batch update is
    discarded), so the B estimates are independent given the state. With a control variate, the
    explained variance of Ψ̃ by its baselines (last sampling round) is appended to
    ``cv_explained_variance`` for each batch."""
    grads = []
    for b in range(num_batches):
        result = sample_and_adapt(exp, state.meta_params, tasks, jax.random.fold_in(key, b),
                                  exp.config.inner_steps, cv_params=state.cv_params)
        grads.append(flatten(exp.learner.meta_gradient(state.meta_params, stack_steps(result.batches))))
        if cv_explained_variance is not None and exp.learner.control_variate is not None:
            cv_explained_variance.append(result.cv_explained_variance)
        if on_batch is not None:
            on_batch()
    return np.stack(grads)


def training_gradient_stats(exp: MetaRL, state: LearnerState, tasks: dict,
                            key: jax.Array) -> dict[str, float]:
    """The ``progress.csv`` columns of ``grad_stats_every`` (ProMP Fig. 4): statistics of
    ``grad_stats_batches`` meta-gradients resampled at the current parameters on this iteration's
    tasks (the original ProMP code's ``Meta-GradientRStd`` etc.)."""
    stats = gradient_statistics(sample_meta_gradients(exp, state, tasks, key, exp.config.grad_stats_batches))
    return {"Meta-GradientRStd": stats["rsd"], "Meta-GradientRStdSE": stats["rsd_se"],
            "Meta-GradientRStdCoord": stats["rsd_coordinate"],
            "Meta-GradientStd": stats["std"], "Meta-GradientNorm": stats["mean_norm"],
            "Meta-GradientCos": stats["cos_to_mean"]}


EXPLORATION_CSV = "exploration.csv"
"""Per-corner success of the exploration picture, next to it in ``plots/``."""

CORNER_REACHED_RADIUS = 0.5
"""A PointCorners trajectory *reaches* its goal when some step comes within this distance of the
corner. The reward itself has no goal region (it pays progress towards the goal outside the
start's L1 ball, docs/environments.md), so this is the picture's own criterion."""


def success_radius(config: TrainConfig) -> float:
    """The goal region of the exploration picture: :data:`CORNER_REACHED_RADIUS` on PointCorners,
    the sparse reward's radius (default 2) on PointMomentum, where the reward is max(r − d, 0)."""
    if config.env == "PointCorners":
        return CORNER_REACHED_RADIUS
    return float(config.env_options.get("radius", 2.0))


def exploration_picture(run_dir: Path, config: TrainConfig, state: LearnerState) -> Path:
    """ProMP Fig. 5 for the 2-D point envs: one task per corner, ``rollouts_per_task`` trajectories
    per adaptation step (5 of them drawn), written to ``plots/exploration.png``; the post-update
    success of each corner (:func:`adaptrl.plots.goal_success`, goal region :func:`success_radius`)
    goes to ``plots/exploration.csv`` (columns ``goal_x, goal_y, rollouts, reached_fraction,
    final_distance, reached``; a corner counts as reached when at least half its trajectories
    enter the goal region). Returns the PNG's path."""
    from adaptrl import plots

    exp = MetaRL.build(config)
    try:
        tasks = {"goal": np.asarray(CORNERS, dtype=exp.env.sample_tasks(1, 0)["goal"].dtype)}
        result = sample_and_adapt(exp, state.meta_params, tasks, jax.random.PRNGKey(config.seed + 7),
                                  config.inner_steps, cv_params=state.cv_params)
    finally:
        exp.close()
    trajs = result.trajectories
    xy = [np.asarray(t.observations)[..., :2] for t in trajs]
    radius = success_radius(config)
    reached, final_distance = plots.goal_success(xy[-1], np.asarray(trajs[-1].mask), tasks["goal"], radius)
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    with open(plots_dir / EXPLORATION_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["goal_x", "goal_y", "rollouts", "reached_fraction", "final_distance", "reached"])
        for goal, fraction, distance in zip(tasks["goal"], reached, final_distance, strict=True):
            writer.writerow([f"{goal[0]:g}", f"{goal[1]:g}", xy[-1].shape[1], f"{fraction:.4f}",
                             f"{distance:.4f}", int(fraction >= 0.5)])
    return plots.plot_point_exploration(
        xy[:-1], xy[-1], [np.asarray(t.mask) for t in trajs[:-1]], np.asarray(trajs[-1].mask),
        tasks["goal"], plots_dir / "exploration.png", goal_radius=radius,
        title=f"{config.algo} on {config.env}: pre-update exploration and post-update trajectories")


def build(config: TrainConfig) -> MetaRL:
    """The builder every meta-RL recipe registers."""
    return MetaRL.build(config)
