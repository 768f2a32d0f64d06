"""The meta-training loop, its run directory, and meta-testing.

``train(config, run_dir)`` runs the iterations of :mod:`adaptrl.meta.learner` and writes the run
directory of design.md::

    run_dir/config.yaml        every resolved hyperparameter
    run_dir/progress.csv       one row per iteration, the original ProMP key names
    run_dir/tensorboard/       TensorBoard event files (same scalars)
    run_dir/checkpoints/       latest.pkl, every ``checkpoint_every`` iterations and on Ctrl-C
    run_dir/plots/             learning curve (and, for the point envs, the exploration picture)

All randomness of iteration i (tasks, resets, action noise) comes from ``fold_in(key(seed), i)``,
so a run resumed from its checkpoint writes exactly the rows an uninterrupted run would have
written (timing columns aside). A non-finite loss or parameter stops the run with
:class:`TrainingDiverged`; the last good checkpoint is kept.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from adaptrl.envs import VectorEnv, make
from adaptrl.errors import AdaptrlError, ConfigError
from adaptrl.experiment.checkpoints import has_checkpoint, load_checkpoint, save_checkpoint
from adaptrl.experiment.config import TrainConfig, config_from_dict
from adaptrl.meta.batch import process_trajectories, return_stats, stack_steps
from adaptrl.meta.learner import LearnerState, MetaLearner, tree_is_finite
from adaptrl.policies import per_task
from adaptrl.sampling import Sampler, Trajectories

CONFIG_FILE = "config.yaml"
PROGRESS_FILE = "progress.csv"
TIME_KEYS = ("Time-Sampling", "Time-SampleProc", "Time-InnerStep", "Time-OuterStep", "ItrTime", "Time",
             "Time-ControlVariate", "Time-GradStats")


class TrainingDiverged(AdaptrlError):
    """A loss or the parameters became NaN/inf."""


@dataclass
class Experiment:
    """The pieces of one configuration: environment, sampler and learner."""

    config: TrainConfig
    env: VectorEnv
    sampler: Sampler
    learner: MetaLearner

    @classmethod
    def build(cls, config: TrainConfig, rollouts_per_task: int | None = None) -> Experiment:
        env = make(config.env, **config.env_options)
        learner = MetaLearner(config, env.spec.obs_dim, env.spec.act_dim)
        sampler = Sampler(env, learner.policy, rollouts_per_task or config.rollouts_per_task,
                          config.horizon)
        return cls(config, env, sampler, learner)

    def close(self) -> None:
        self.env.close()

    def process(self, traj: Trajectories):
        c = self.config
        return process_trajectories(traj, gamma=c.discount, lam=c.gae_lambda, baseline=c.baseline,
                                    normalize=c.normalize_advantages)


def iteration_key(seed: int, itr: int) -> jax.Array:
    """The key of iteration ``itr``: everything random in that iteration derives from it."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), itr + 1)


def init_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0)


def task_seed(key: jax.Array) -> int:
    return int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))


@dataclass
class AdaptationResult:
    """Per-step trajectories of one meta-test: ``trajectories[k]`` sampled with θ_k."""

    tasks: dict
    trajectories: list[Trajectories] = field(default_factory=list)
    batches: list = field(default_factory=list)
    cv_params: Any = None
    cv_loss: float = math.nan
    cv_explained_variance: float = math.nan


def sample_and_adapt(exp: Experiment, meta_params: dict, tasks: dict, key: jax.Array, steps: int,
                     timings: dict[str, float] | None = None, cv_params: Any = None) -> AdaptationResult:
    """Sample with θ_0 = θ, adapt ``steps`` times (one fresh batch per step), sample with θ_K.

    With a control variate (TMAML) and its ``cv_params``, every step's batch first updates the
    control variate and gets its baselines (before the inner step uses them); the updated
    parameters are returned in the result."""
    timings = timings if timings is not None else {}
    control_variate = exp.learner.control_variate if cv_params is not None else None
    m = len(next(iter(tasks.values())))
    task_params = per_task(meta_params["policy"], m)
    result = AdaptationResult(tasks, cv_params=cv_params)
    keys = jax.random.split(key, steps + 1)
    for k in range(steps + 1):
        start = time.perf_counter()
        traj = exp.sampler.collect(task_params, tasks, keys[k])
        timings["Time-Sampling"] = timings.get("Time-Sampling", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        batch = exp.process(traj)
        timings["Time-SampleProc"] = timings.get("Time-SampleProc", 0.0) + time.perf_counter() - start
        if control_variate is not None:
            start = time.perf_counter()
            result.cv_params, batch, cv_stats = control_variate.attach(
                result.cv_params, batch, jax.random.fold_in(keys[k], 7))
            result.cv_loss, result.cv_explained_variance = cv_stats["loss"], cv_stats["explained_variance"]
            timings["Time-ControlVariate"] = timings.get("Time-ControlVariate", 0.0) + \
                time.perf_counter() - start
        if k < steps:
            start = time.perf_counter()
            task_params = jax.block_until_ready(exp.learner.adapt_tasks(meta_params, task_params, batch))
            timings["Time-InnerStep"] = timings.get("Time-InnerStep", 0.0) + time.perf_counter() - start
        result.trajectories.append(traj)
        result.batches.append(batch)
    return result


class ProgressWriter:
    """``progress.csv`` with a fixed header (the first row's keys) plus TensorBoard scalars."""

    def __init__(self, run_dir: Path, keep_rows: int | None, tensorboard: bool = True):
        self.path = run_dir / PROGRESS_FILE
        self.header: list[str] | None = None
        if keep_rows is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                self.header = rows[0]
                with open(self.path, "w", newline="") as f:
                    csv.writer(f).writerows(rows[: keep_rows + 1])
        elif self.path.exists():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, row: dict[str, float]) -> None:
        if self.header is None:
            self.header = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.header)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_format(row.get(k, "")) for k in self.header])
        if self.tb is not None:
            step = int(row["Itr"])
            for key, value in row.items():
                if key != "Itr" and isinstance(value, int | float) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _check_finite(state: LearnerState, info: dict[str, float], itr: int) -> None:
    bad = [k for k, v in info.items() if not math.isfinite(v)]
    if bad or not tree_is_finite(state.meta_params):
        what = f"non-finite {', '.join(bad)}" if bad else "non-finite meta-parameters"
        raise TrainingDiverged(
            f"iteration {itr}: {what} after the outer update; training stopped. The last good "
            "checkpoint is kept; lower the step sizes (outer_lr, inner_lr, max_kl) and retry.")


def prepare_run_dir(config: TrainConfig, run_dir: str | Path) -> Path:
    """Create a fresh run directory; refuse to overwrite an existing run."""
    run_dir = Path(run_dir)
    if (run_dir / PROGRESS_FILE).exists() or has_checkpoint(run_dir):
        raise ConfigError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                          "or choose another --out.")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(config.to_yaml())
    return run_dir


def load_run_config(run_dir: str | Path) -> TrainConfig:
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory ({CONFIG_FILE} is missing).")
    return config_from_dict(yaml.safe_load(path.read_text()) or {})


@dataclass
class TrainResult:
    run_dir: Path
    state: LearnerState
    rows: list[dict[str, float]]
    interrupted: bool = False


def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False, show_progress: bool = True,
          callback: Callable[[dict[str, float]], None] | None = None, tensorboard: bool = True,
          make_plots: bool = True) -> TrainResult:
    """Meta-train ``config`` into ``run_dir`` (fresh, or continued from its checkpoint).

    ``callback(row)`` is called after every iteration with the logged row. Ctrl-C writes a
    checkpoint of the last completed iteration and returns with ``interrupted=True``.
    """
    run_dir = Path(run_dir)
    exp = Experiment.build(config)
    try:
        if resume:
            ckpt = load_checkpoint(run_dir)
            if int(ckpt["seed"]) != config.seed:
                raise ConfigError(f"checkpoint seed {ckpt['seed']} differs from config seed {config.seed}.")
            state = LearnerState(*_restore(exp.learner.init(init_key(config.seed)), ckpt["state"]))
            start_itr, n_timesteps, time_used = int(ckpt["iteration"]), int(ckpt["n_timesteps"]), \
                float(ckpt["time"])
            writer = ProgressWriter(run_dir, keep_rows=start_itr, tensorboard=tensorboard)
        else:
            prepare_run_dir(config, run_dir)
            state = exp.learner.init(init_key(config.seed))
            start_itr, n_timesteps, time_used = 0, 0, 0.0
            writer = ProgressWriter(run_dir, keep_rows=None, tensorboard=tensorboard)
        rows: list[dict[str, float]] = []
        interrupted = False

        # (state, completed iterations, env steps, seconds): replaced in one assignment after an
        # iteration's row is written, so an interrupt at any point checkpoints a consistent state.
        committed = (state, start_itr, n_timesteps, time_used)

        def checkpoint() -> None:
            done_state, done_itr, done_steps, done_time = committed
            save_checkpoint(run_dir, {"state": tuple(done_state), "iteration": done_itr, "seed": config.seed,
                                      "n_timesteps": done_steps, "time": done_time})

        progress = _progress_bar(show_progress, config, start_itr)
        try:
            for itr in range(start_itr, config.iterations):
                start = time.perf_counter()
                row, new_state, steps = _iteration(exp, committed[0], itr)
                _check_finite(new_state, {k: v for k, v in row.items() if k.startswith("Loss")}, itr)
                elapsed = time.perf_counter() - start
                row = {"Itr": itr, "n_timesteps": committed[2] + steps, **row, "ItrTime": elapsed,
                       "Time": committed[3] + elapsed}
                writer.write(row)
                committed = (new_state, itr + 1, committed[2] + steps, committed[3] + elapsed)
                rows.append(row)
                if callback is not None:
                    callback(row)
                if (itr + 1) % config.checkpoint_every == 0 or itr + 1 == config.iterations:
                    checkpoint()
                progress.advance(row, config.inner_steps)
        except KeyboardInterrupt:
            interrupted = True
            checkpoint()
        finally:
            progress.stop()
            writer.close()
    finally:
        exp.close()
    state = committed[0]
    if make_plots and rows and not interrupted:
        write_plots(run_dir, config, state)
    return TrainResult(run_dir, state, rows, interrupted)


def _restore(template: LearnerState, saved: Any) -> tuple:
    """Put saved numpy leaves back into the structure of a freshly built state."""
    leaves = jax.tree_util.tree_leaves(saved)
    treedef = jax.tree_util.tree_structure(tuple(template))
    if treedef.num_leaves != len(leaves):
        raise ConfigError("checkpoint does not match this configuration (different parameter structure).")
    restored = jax.tree_util.tree_unflatten(treedef, leaves)
    return tuple(jax.tree_util.tree_map(lambda t, x: np.asarray(x, dtype=np.asarray(t).dtype),
                                        tuple(template), restored))


def _iteration(exp: Experiment, state: LearnerState, itr: int):
    """One meta-iteration: tasks, K+1 sampling rounds with adaptation, the outer update."""
    config = exp.config
    key = iteration_key(config.seed, itr)
    task_key, sample_key = jax.random.split(key)
    tasks = exp.env.sample_tasks(config.tasks_per_iter, seed=task_seed(task_key))
    timings: dict[str, float] = {}
    result = sample_and_adapt(exp, state.meta_params, tasks, sample_key, config.inner_steps, timings,
                              cv_params=state.cv_params)
    state = state._replace(cv_params=result.cv_params)
    row: dict[str, float] = {}
    steps = 0
    for k, traj in enumerate(result.trajectories):
        row.update(return_stats(traj, f"Step_{k}-"))
        steps += traj.num_env_steps
    row["NumDiverged"] = float(exp.sampler.stats.get("NumDiverged", 0))
    if exp.learner.control_variate is not None:
        row["CVLoss"] = result.cv_loss
        row["CVExplainedVariance"] = result.cv_explained_variance
    if config.grad_stats_every and itr % config.grad_stats_every == 0:
        from adaptrl.analysis.gradients import training_gradient_stats

        start = time.perf_counter()
        row.update(training_gradient_stats(exp, state, tasks, jax.random.fold_in(key, 11)))
        timings["Time-GradStats"] = time.perf_counter() - start
    start = time.perf_counter()
    new_state, info = exp.learner.update(state, stack_steps(result.batches))
    jax.block_until_ready(new_state.meta_params)
    timings["Time-OuterStep"] = time.perf_counter() - start
    row.update(info)
    for key_name in TIME_KEYS[:4]:
        row[key_name] = timings.get(key_name, 0.0)
    for key_name in ("Time-ControlVariate", "Time-GradStats"):
        if key_name in timings:
            row[key_name] = timings[key_name]
    return row, new_state, steps


class _Progress:
    def __init__(self, progress, task_id):
        self.progress, self.task_id = progress, task_id

    def advance(self, row: dict[str, float], inner_steps: int) -> None:
        if self.progress is None:
            return
        pre, post = row.get("Step_0-AverageReturn", math.nan), row.get(f"Step_{inner_steps}-AverageReturn",
                                                                          math.nan)
        self.progress.update(self.task_id, advance=1,
                             description=f"itr {int(row['Itr'])}  pre {pre:9.2f}  post {post:9.2f}")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _progress_bar(show: bool, config: TrainConfig, start_itr: int) -> _Progress:
    if not show:
        return _Progress(None, None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), transient=False)
    progress.start()
    task_id = progress.add_task(f"{config.algo} on {config.env}", total=config.iterations,
                                completed=start_itr)
    return _Progress(progress, task_id)


# ------------------------------------------------------------------------------ meta-testing
def load_run(run_dir: str | Path) -> tuple[TrainConfig, LearnerState, dict[str, Any]]:
    """Config, learner state and checkpoint metadata of a run directory."""
    config = load_run_config(run_dir)
    ckpt = load_checkpoint(run_dir)
    env = make(config.env, **config.env_options)
    try:
        learner = MetaLearner(config, env.spec.obs_dim, env.spec.act_dim)
        state = LearnerState(*_restore(learner.init(init_key(config.seed)), ckpt["state"]))
    finally:
        env.close()
    return config, state, ckpt


def evaluate(run_dir: str | Path, *, tasks: int = 40, adapt_steps: int | None = None,
             rollouts: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """Meta-test the latest checkpoint on fresh tasks: adapt ``adapt_steps`` times (any K, not
    only the training K) and return per-step mean returns with 95 % confidence intervals across
    tasks (normal approximation: mean ± 1.96·sd/√M of the per-task mean returns)."""
    config, state, ckpt = load_run(run_dir)
    steps = config.inner_steps if adapt_steps is None else int(adapt_steps)
    if steps < 0:
        raise ConfigError(f"--adapt-steps must be ≥ 0, got {steps}.")
    if tasks < 1:
        raise ConfigError(f"--tasks must be ≥ 1, got {tasks}.")
    seed = config.seed + 1_000_003 if seed is None else seed
    exp = Experiment.build(config, rollouts_per_task=rollouts)
    try:
        key = jax.random.PRNGKey(seed)
        task_key, sample_key = jax.random.split(key)
        task_batch = exp.env.sample_tasks(tasks, seed=task_seed(task_key))
        result = sample_and_adapt(exp, state.meta_params, task_batch, sample_key, steps,
                                  cv_params=state.cv_params)
    finally:
        exp.close()
    rows = []
    for k, traj in enumerate(result.trajectories):
        per_task_return = np.asarray(traj.returns()).mean(axis=1)
        mean = float(per_task_return.mean())
        sd = float(per_task_return.std(ddof=1)) if tasks > 1 else 0.0
        half = 1.96 * sd / math.sqrt(tasks)
        rows.append({"step": k, "mean_return": mean, "std_across_tasks": sd,
                     "ci95_low": mean - half, "ci95_high": mean + half})
    return {"run_dir": str(run_dir), "iteration": int(ckpt["iteration"]), "tasks": tasks,
            "adapt_steps": steps, "seed": seed, "rows": rows, "result": result}


def write_eval(run_dir: str | Path, report: dict[str, Any]) -> Path:
    path = Path(run_dir) / f"eval_k{report['adapt_steps']}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(report["rows"][0]))
        writer.writeheader()
        writer.writerows(report["rows"])
    return path


# ------------------------------------------------------------------------------------- plots
def write_plots(run_dir: Path, config: TrainConfig, state: LearnerState) -> list[Path]:
    """Learning curve, and for the 2-D point envs the picture of ProMP Fig. 5."""
    from adaptrl import plots

    out = [plots.plot_runs([run_dir], out=run_dir / "plots" / "learning_curve.png")]
    if config.env in ("PointCorners", "PointMomentum"):
        out.append(exploration_picture(run_dir, config, state))
    return out


def exploration_picture(run_dir: Path, config: TrainConfig, state: LearnerState) -> Path:
    """One task per corner: pre-update trajectories of every step and post-update ones."""
    from adaptrl import plots
    from adaptrl.envs.device import CORNERS

    exp = Experiment.build(config, rollouts_per_task=min(config.rollouts_per_task, 5))
    try:
        tasks = {"goal": np.asarray(CORNERS, dtype=exp.env.sample_tasks(1, 0)["goal"].dtype)}
        result = sample_and_adapt(exp, state.meta_params, tasks, jax.random.PRNGKey(config.seed + 7),
                                  config.inner_steps, cv_params=state.cv_params)
    finally:
        exp.close()
    trajs = result.trajectories
    xy = [np.asarray(t.observations)[..., :2] for t in trajs]
    radius = float(config.env_options.get("radius", 0.5 if config.env == "PointCorners" else 2.0))
    return plots.plot_point_exploration(
        xy[:-1], xy[-1], [np.asarray(t.mask) for t in trajs[:-1]], np.asarray(trajs[-1].mask),
        tasks["goal"], run_dir / "plots" / "exploration.png", goal_radius=radius,
        title=f"{config.algo} on {config.env}: pre-update exploration and post-update trajectories")
