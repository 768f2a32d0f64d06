"""Evaluating a trained run: load its configuration and latest checkpoint, and let its algorithm
evaluate (for meta-RL: meta-test on fresh tasks, :meth:`~adaptrl.algorithms.meta_rl.MetaRL.evaluate`).

A meta-test's memory is estimated before anything is sampled (:func:`check_eval_memory`); a size
that does not fit is one :class:`~adaptrl.errors.ConfigError` naming the largest ``--tasks`` that
does. (The tasks are not split into chunks that fit: the sampler draws one batch's noise and start
states from one key, so a task's trajectories depend on how many tasks share its batch, and a
chunked evaluation would not reproduce the unchunked one.)
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from adaptrl import memory
from adaptrl.algorithms.meta_rl import MetaRL
from adaptrl.errors import ConfigError
from adaptrl.experiment.rundir import load_run_config
from adaptrl.experiment.trainer import build_algorithm, restore
from adaptrl.meta.adaptation import check_inner_options
from adaptrl.meta.config import TrainConfig


def load_run(run_dir: str | Path) -> tuple[TrainConfig, Any, dict[str, Any]]:
    """Config, algorithm state and checkpoint metadata of a run directory (nothing is trained, so
    the training batch's memory is not checked)."""
    config = load_run_config(run_dir)
    with memory.no_training_check():
        algorithm = build_algorithm(config)
    try:
        state, meta = restore(algorithm, config, run_dir)
    finally:
        algorithm.close()
    return config, state, meta


def evaluate(run_dir: str | Path, *, tasks: int = 40, adapt_steps: int | None = None,
             rollouts: int | None = None, seed: int | None = None, inner_optimizer: str = "sgd",
             inner_lr: float | None = None, inner_grad_norm: str | None = None,
             iteration: int | None = None) -> dict[str, Any]:
    """Evaluate the latest checkpoint of ``run_dir``, or its snapshot after ``iteration``
    iterations (``snapshot_every``; default seed: the run's seed + 1,000,003, so evaluation tasks
    differ from training tasks).

    ``inner_optimizer``, ``inner_lr`` and ``inner_grad_norm`` change a meta-RL run's adaptation
    (:meth:`~adaptrl.algorithms.meta_rl.MetaRL.evaluate`; ``adam``: the original meta-tester's);
    the defaults are the training adaptation. Other algorithms take only the defaults."""
    if int(tasks) < 1:
        raise ConfigError(f"--tasks must be ≥ 1, got {tasks}.")
    if rollouts is not None and int(rollouts) < 1:
        raise ConfigError(f"--rollouts must be ≥ 1 (omit it for the training value), got {rollouts}.")
    check_inner_options(inner_optimizer, inner_lr, inner_grad_norm)
    adaptation = {"inner_optimizer": inner_optimizer, "inner_lr": inner_lr,
                  "inner_grad_norm": inner_grad_norm}
    changed = inner_optimizer != "sgd" or inner_lr is not None or inner_grad_norm is not None
    config = load_run_config(run_dir)
    with memory.no_training_check():  # the meta-test's own sizes are checked instead
        algorithm = build_algorithm(config)
        try:
            if changed and not isinstance(algorithm, MetaRL):
                raise ConfigError(f"--inner-optimizer, --inner-lr and --inner-grad-norm change the "
                                  f"adaptation of gradient-based meta-RL runs; {run_dir} is a "
                                  f"{config.algo} run.")
            check_eval_memory(algorithm, tasks=int(tasks), adapt_steps=adapt_steps, rollouts=rollouts)
            state, meta = restore(algorithm, config, run_dir, iteration)
            seed = config.seed + 1_000_003 if seed is None else seed
            report = algorithm.evaluate(state, tasks=tasks, adapt_steps=adapt_steps, rollouts=rollouts,
                                        seed=seed, **(adaptation if changed else {}))
        finally:
            algorithm.close()
    return {"run_dir": str(run_dir), "iteration": int(meta["iteration"]), "snapshot": iteration is not None,
            **report}


def check_eval_memory(algorithm: Any, *, tasks: int, adapt_steps: int | None = None,
                      rollouts: int | None = None, command: str = "adaptrl eval",
                      alternatives: str = "--rollouts or --adapt-steps") -> None:
    """A :class:`ConfigError` before anything is sampled when meta-testing ``tasks`` tasks would not
    fit in memory: K + 1 sampling rounds of ``tasks × rollouts × horizon`` held together, and the
    adaptation steps between them (:func:`adaptrl.memory.estimate_batch_bytes`, phase ``eval``).
    ``command`` and ``alternatives`` word the message (``adaptrl video`` adapts the same way).
    Algorithms other than gradient-based meta-RL are left to the sampler's own check."""
    if not isinstance(algorithm, MetaRL):
        return
    steps = algorithm.config.inner_steps if adapt_steps is None else int(adapt_steps)
    if steps < 0:
        return  # MetaRL.evaluate says what is wrong
    shape = algorithm.learner.batch_shape(
        tasks=tasks, rollouts=rollouts or algorithm.sampler.rollouts_per_task,
        horizon=algorithm.sampler.horizon, inner_steps=steps)
    memory.check_fits(shape, "eval", request=f"{command} --tasks {tasks}", vary="tasks", label="--tasks",
                      alternatives=alternatives)


ADAPTATION_KEYS = ("inner_optimizer", "inner_lr", "inner_grad_norm")
"""The meta-test adaptation settings a report's ``adaptation`` holds when it is not the training one."""


def eval_path(run_dir: str | Path, report: dict[str, Any]) -> Path:
    """``run_dir/eval_kK_tasksN_seedS.csv``: evaluations with other settings do not overwrite
    each other (the same settings give the same numbers). A meta-test adaptation other than the
    training one (the report's ``adaptation``) adds its three settings,
    ``eval_kK_tasksN_seedS_OPTIMIZER_lrLR_gradnorm-NORM.csv`` (``lrlearned``: a learned step size);
    a snapshot's evaluation (``--iteration N``) starts ``eval_itrN_``."""
    prefix = f"eval_itr{report['iteration']}" if report.get("snapshot") else "eval"
    name = f"{prefix}_k{report['adapt_steps']}_tasks{report['tasks']}_seed{report['seed']}"
    adaptation = report.get("adaptation")
    if adaptation:
        lr = adaptation["inner_lr"]
        lr_text = lr if isinstance(lr, str) else f"{lr:g}"
        name += f"_{adaptation['inner_optimizer']}_lr{lr_text}_gradnorm-{adaptation['inner_grad_norm']}"
    return Path(run_dir) / f"{name}.csv"


def write_eval(run_dir: str | Path, report: dict[str, Any]) -> Path:
    """:func:`eval_path`: one row per adaptation step, each with the checkpoint's iteration, the
    number of tasks, rollouts per task and the seed it was measured with (and, for an adaptation
    other than the training one, its ``inner_optimizer``, ``inner_lr`` and ``inner_grad_norm``);
    the interval is a Student-t 95 % interval across tasks (empty for one task)."""
    path = eval_path(run_dir, report)
    context = {key: report[key] for key in ("iteration", "tasks", "rollouts", "seed")}
    if report.get("adaptation"):
        context.update({key: report["adaptation"][key] for key in ADAPTATION_KEYS})
    rows = [{**row, **context} for row in report["rows"]]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
