"""The one training loop: any :class:`~adaptrl.algorithms.base.Algorithm` into a run directory.

``train(config, run_dir)`` builds the configuration's algorithm from the registry and runs
:func:`run_loop`, which owns everything that is not the algorithm (:mod:`adaptrl.experiment.rundir`
for the files): ``config.yaml``, ``progress.csv`` and TensorBoard (one row per iteration:
``Itr``, ``n_timesteps``, the algorithm's metrics, ``ItrTime``, ``Time``), the progress bar with the
algorithm's headline metrics, checkpoints every ``checkpoint_every`` iterations and on Ctrl-C,
``--resume``, the NaN stop and callbacks. SIGTERM is handled as Ctrl-C while it runs.

All randomness of iteration i comes from ``fold_in(key(seed), i + 1)``
(:mod:`adaptrl.experiment.seeding`), so a run resumed from its checkpoint writes exactly the rows
an uninterrupted run would have written (timing columns aside). A non-finite loss or parameter
stops the run with :class:`TrainingDiverged`; the last good checkpoint is kept.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptrl.algorithms import ALGORITHMS, Algorithm
from adaptrl.errors import AdaptrlError, ConfigError
from adaptrl.experiment.checkpoints import read_checkpoint, restore_state, save_checkpoint
from adaptrl.experiment.rundir import ProgressWriter, prepare_run_dir, write_run_config
from adaptrl.experiment.seeding import init_key, iteration_key
from adaptrl.meta.config import TrainConfig

Callback = Callable[[dict[str, float]], None]


class TrainingDiverged(AdaptrlError):
    """A loss or the parameters became NaN/inf."""


@dataclass
class TrainResult:
    run_dir: Path
    state: Any
    rows: list[dict[str, float]]
    interrupted: bool = False
    headline: Mapping[str, str] = field(default_factory=dict)
    """The algorithm's progress-bar metrics (label → ``progress.csv`` key)."""


def build_algorithm(config: TrainConfig) -> Algorithm:
    """The algorithm of ``config`` (its recipe in :data:`~adaptrl.algorithms.ALGORITHMS`)."""
    return ALGORITHMS.get(config.algo).build(config)


def restore(algorithm: Algorithm, config: TrainConfig, run_dir: str | Path, iteration: int | None = None
            ) -> tuple[Any, dict[str, Any]]:
    """The algorithm state and checkpoint metadata of ``run_dir`` (checked against ``config``): its
    latest checkpoint, or its snapshot after ``iteration`` iterations (``snapshot_every``)."""
    arrays, meta = read_checkpoint(run_dir, iteration)
    if int(meta["seed"]) != config.seed:
        raise ConfigError(f"checkpoint seed {meta['seed']} differs from config seed {config.seed}.")
    state = restore_state(algorithm.init(init_key(config.seed)), arrays, where=f"{run_dir} checkpoint")
    return state, meta


def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False, show_progress: bool = True,
          callback: Callback | None = None, tensorboard: bool = True, make_plots: bool = True) -> TrainResult:
    """Train ``config`` into ``run_dir`` (fresh, or continued from its checkpoint); see
    :func:`run_loop`."""
    algorithm = build_algorithm(config)
    try:
        return run_loop(algorithm, config, run_dir, resume=resume, show_progress=show_progress,
                        callbacks=[callback] if callback is not None else [], tensorboard=tensorboard,
                        make_plots=make_plots)
    finally:
        algorithm.close()


def run_loop(algorithm: Algorithm, config: Any, run_dir: str | Path, *, resume: bool = False,
             show_progress: bool = True, callbacks: list[Callback] = (), tensorboard: bool = True,
             make_plots: bool = True) -> TrainResult:
    """Run ``config.iterations`` iterations of ``algorithm`` into ``run_dir``.

    ``config`` needs ``seed``, ``iterations``, ``checkpoint_every``, ``snapshot_every``, ``algo``,
    ``env`` and ``to_yaml()``. Each ``callbacks`` entry is called after every iteration with the logged row.
    Ctrl-C writes a checkpoint of the last completed iteration and returns with
    ``interrupted=True``."""
    run_dir = Path(run_dir)
    if resume:
        state, meta = restore(algorithm, config, run_dir)
        write_run_config(config, run_dir)
        start_itr, n_timesteps = int(meta["iteration"]), int(meta["n_timesteps"])
        time_used = float(meta["time"])
        writer = ProgressWriter(run_dir, keep_rows=start_itr, tensorboard=tensorboard)
    else:
        prepare_run_dir(config, run_dir)
        state = algorithm.init(init_key(config.seed))
        start_itr, n_timesteps, time_used = 0, 0, 0.0
        writer = ProgressWriter(run_dir, keep_rows=None, tensorboard=tensorboard)
    rows: list[dict[str, float]] = []
    interrupted = False

    # (state, completed iterations, env steps, seconds): replaced in one assignment after an
    # iteration's row is written, so an interrupt at any point checkpoints a consistent state.
    committed = (state, start_itr, n_timesteps, time_used)

    def snapshot_due(done_itr: int) -> bool:
        return config.snapshot_every > 0 and done_itr > 0 and done_itr % config.snapshot_every == 0

    def checkpoint() -> None:
        done_state, done_itr, done_steps, done_time = committed
        save_checkpoint(run_dir, done_state, {"iteration": done_itr, "seed": config.seed,
                                              "n_timesteps": done_steps, "time": done_time},
                        snapshot=snapshot_due(done_itr))

    progress = _progress_bar(show_progress, f"{config.algo} on {config.env}", config.iterations, start_itr,
                             algorithm.headline)
    previous_sigterm = _sigterm_as_interrupt()
    try:
        for itr in range(start_itr, config.iterations):
            start = time.perf_counter()
            key = iteration_key(config.seed, itr)
            new_state, metrics, steps = algorithm.iteration(committed[0], itr, key)
            problem = algorithm.non_finite(new_state, metrics)
            if problem is not None:
                raise TrainingDiverged(
                    f"iteration {itr}: {problem} after the outer update; training stopped. The last good "
                    "checkpoint is kept; lower the step sizes (outer_lr, inner_lr, max_kl) and retry.")
            elapsed = time.perf_counter() - start
            row = {"Itr": itr, "n_timesteps": committed[2] + steps, **metrics, "ItrTime": elapsed,
                   "Time": committed[3] + elapsed}
            writer.write(row)
            committed = (new_state, itr + 1, committed[2] + steps, committed[3] + elapsed)
            rows.append(row)
            for callback in callbacks:
                callback(row)
            if ((itr + 1) % config.checkpoint_every == 0 or itr + 1 == config.iterations
                    or snapshot_due(itr + 1)):
                checkpoint()
            progress.advance(row)
    except KeyboardInterrupt:
        interrupted = True
        checkpoint()
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        progress.stop()
        writer.close()
    state = committed[0]
    if make_plots and rows and not interrupted:
        write_plots(run_dir, algorithm, state)
    return TrainResult(run_dir, state, rows, interrupted, dict(algorithm.headline))


def _sigterm_as_interrupt() -> Any:
    """While the loop runs, SIGTERM (what cluster schedulers send before killing a job) is handled
    as Ctrl-C: the last completed iteration is checkpointed. Returns the previous handler (None
    when not in the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    return signal.signal(signal.SIGTERM, interrupt)


def write_plots(run_dir: Path, algorithm: Algorithm, state: Any) -> list[Path]:
    """The learning curve (the algorithm's :attr:`~adaptrl.algorithms.base.Algorithm.curve`
    columns on one axis) and the algorithm's own pictures (e.g. ProMP Fig. 5's)."""
    from adaptrl import plots

    curve = plots.plot_learning_curve(run_dir, list(algorithm.curve.values()), list(algorithm.curve),
                                      run_dir / "plots" / "learning_curve.png")
    return [curve, *algorithm.write_outputs(run_dir, state)]


class _Progress:
    """The progress display: a rich bar on a terminal; one plain line per iteration otherwise
    (stdout redirected to a log file, e.g. a cluster job), so a log shows progress as it happens."""

    def __init__(self, progress, task_id, headline: Mapping[str, str], plain_total: int | None = None,
                 title: str = ""):
        self.progress, self.task_id, self.headline = progress, task_id, headline
        self.plain_total, self.title = plain_total, title

    def advance(self, row: dict[str, float]) -> None:
        shown = "  ".join(f"{label} {row.get(key, math.nan):9.2f}" for label, key in self.headline.items())
        if self.plain_total is not None:
            print(f"{self.title}: itr {int(row['Itr']) + 1}/{self.plain_total}  {shown}  "
                  f"({row.get('ItrTime', math.nan):.1f} s)", flush=True)
        if self.progress is None:
            return
        self.progress.update(self.task_id, advance=1, description=f"itr {int(row['Itr'])}  {shown}")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _progress_bar(show: bool, title: str, total: int, start_itr: int,
                  headline: Mapping[str, str]) -> _Progress:
    if not show:
        return _Progress(None, None, headline)
    if not sys.stdout.isatty():
        return _Progress(None, None, headline, plain_total=total, title=title)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), transient=False)
    progress.start()
    task_id = progress.add_task(title, total=total, completed=start_itr)
    return _Progress(progress, task_id, headline)
